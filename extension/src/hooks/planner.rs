//! planner_hook: by planning time the rewriter has expanded views and rules,
//! whose bodies post_parse_analyze never saw; the same rewrite runs again
//! (already-masked references are left alone). The finished plan's output
//! columns are then masked by a node at its top ([`crate::output`]).

use crate::hooks::next;
use crate::masking;
use crate::output;
use crate::scope;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::c_char;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

pub(crate) unsafe fn install() {
    PREVIOUS = pg_sys::planner_hook;
    pg_sys::planner_hook = Some(planner);
}

#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    scope::begin_planning();
    masking::rewrite(parse);
    // An ERROR in planning passes through unchanged; scope unwinds the record.
    let planned = next::planner(PREVIOUS, parse, query_string, cursor_options, bound_params);
    let seen = scope::end_planning();
    masking::check_plan(planned, &seen);
    // The masking calls among the outputs move to a node above the plan.
    output::mask_at_output(planned);
    planned
}
