//! Calling the next hook without catching its errors.
//!
//! pgrx wraps every `pg_sys` function in a boundary that turns a Postgres
//! ERROR into a Rust panic and raises a new ERROR later from what it copied:
//! the CONTEXT, the statement position, the schema/table/column/constraint
//! names and the internal query are lost on the way. A hook that only passes
//! an error on must not change it, so the previous hook or the `standard_*`
//! function is called here directly, as C does: an ERROR longjmps through
//! the calling hook unchanged.
//!
//! A caller must hold nothing that needs dropping across these calls (plain
//! values and pointers only): a longjmp runs no destructors. State the caller
//! set up before the call is unwound by [`crate::scope`].

use pgrx::pg_sys;
use std::ffi::{c_char, c_int};

// The same symbols pg_sys binds, declared without pgrx's error boundary.
unsafe extern "C-unwind" {
    #[link_name = "standard_ProcessUtility"]
    fn raw_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
    #[link_name = "standard_planner"]
    fn raw_standard_planner(
        parse: *mut pg_sys::Query,
        query_string: *const c_char,
        cursor_options: c_int,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt;
    #[link_name = "standard_ExecutorStart"]
    fn raw_standard_executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int);
}

/// The previous ProcessUtility hook, or `standard_ProcessUtility`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn process_utility(
    previous: pg_sys::ProcessUtility_hook_type,
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let next = previous.unwrap_or(raw_standard_process_utility);
    next(
        pstmt,
        query_string,
        read_only_tree,
        context,
        params,
        query_env,
        dest,
        qc,
    )
}

/// The previous planner hook, or `standard_planner`.
pub(crate) unsafe fn planner(
    previous: pg_sys::planner_hook_type,
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    let next = previous.unwrap_or(raw_standard_planner);
    next(parse, query_string, cursor_options, bound_params)
}

/// The previous ExecutorStart hook, or `standard_ExecutorStart`.
pub(crate) unsafe fn executor_start(
    previous: pg_sys::ExecutorStart_hook_type,
    query_desc: *mut pg_sys::QueryDesc,
    eflags: c_int,
) {
    let next = previous.unwrap_or(raw_standard_executor_start);
    next(query_desc, eflags)
}
