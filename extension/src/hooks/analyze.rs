//! post_parse_analyze_hook: sees every query Postgres parses — top level,
//! SPI and PL/pgSQL, SQL function bodies, inlined set-returning functions —
//! and applies the masking rewrite (and the set_config() check) to it.

use crate::masking;
use crate::scope;
use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREVIOUS: pg_sys::post_parse_analyze_hook_type = None;

pub(crate) unsafe fn install() {
    PREVIOUS = pg_sys::post_parse_analyze_hook;
    pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
}

#[pg_guard]
unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    if let Some(previous) = PREVIOUS {
        previous(pstate, query, jstate);
    }
    // A view's stored definition stays as written (pg_dump shows it as
    // written); it is masked when a query using it is planned.
    if !scope::defining_view() {
        masking::rewrite(query);
    }
}
