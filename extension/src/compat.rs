//! Every difference between the Postgres versions hoop supports (15, 17, 18),
//! and nowhere else: the rest of the crate calls these and never tests a
//! `pgNN` feature itself.

use pgrx::pg_sys;
use std::ffi::c_void;

/// A node mutator callback, as Postgres 16+ declares it.
pub(crate) type Mutator =
    unsafe extern "C-unwind" fn(node: *mut pg_sys::Node, context: *mut c_void) -> *mut pg_sys::Node;

/// `expression_tree_mutator`: Postgres 15 declares the callback without
/// arguments (`Node *(*)()`), 16+ as `tree_mutator_callback` behind a macro.
///
/// # Safety
/// `node` is a valid expression tree (or null) and `mutator` accepts `context`.
#[cfg(feature = "pg15")]
pub(crate) unsafe fn expression_tree_mutator(
    node: *mut pg_sys::Node,
    mutator: Mutator,
    context: *mut c_void,
) -> *mut pg_sys::Node {
    // SAFETY: the C function calls the pointer with exactly (Node *, void *).
    let untyped =
        std::mem::transmute::<Mutator, unsafe extern "C-unwind" fn() -> *mut pg_sys::Node>(mutator);
    pg_sys::expression_tree_mutator(node, Some(untyped), context)
}

#[cfg(any(feature = "pg17", feature = "pg18"))]
pub(crate) unsafe fn expression_tree_mutator(
    node: *mut pg_sys::Node,
    mutator: Mutator,
    context: *mut c_void,
) -> *mut pg_sys::Node {
    pg_sys::expression_tree_mutator_impl(node, Some(mutator), context)
}

/// `query_tree_mutator`, see [`expression_tree_mutator`].
///
/// # Safety
/// `query` is a valid `Query`.
#[cfg(feature = "pg15")]
pub(crate) unsafe fn query_tree_mutator(
    query: *mut pg_sys::Query,
    mutator: Mutator,
    context: *mut c_void,
    flags: i32,
) -> *mut pg_sys::Query {
    // SAFETY: as in `expression_tree_mutator`.
    let untyped =
        std::mem::transmute::<Mutator, unsafe extern "C-unwind" fn() -> *mut pg_sys::Node>(mutator);
    pg_sys::query_tree_mutator(query, Some(untyped), context, flags)
}

#[cfg(any(feature = "pg17", feature = "pg18"))]
pub(crate) unsafe fn query_tree_mutator(
    query: *mut pg_sys::Query,
    mutator: Mutator,
    context: *mut c_void,
    flags: i32,
) -> *mut pg_sys::Query {
    pg_sys::query_tree_mutator_impl(query, Some(mutator), context, flags)
}

/// Whether `role` owns relation `relid` (`pg_class_ownercheck` became
/// `object_ownercheck` in Postgres 16).
#[cfg(feature = "pg15")]
pub(crate) unsafe fn owns_relation(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::pg_class_ownercheck(relid, role)
}

#[cfg(any(feature = "pg17", feature = "pg18"))]
pub(crate) unsafe fn owns_relation(relid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::object_ownercheck(pg_sys::RelationRelationId, relid, role)
}

// ---------------------------------------------------------------------------
// ExecutorCheckPerms_hook: (rangeTable, ereport) in 15, (rangeTable,
// rtePermInfos, ereport) since 16. The version-neutral check lives in
// hooks/executor.rs; this only adapts the signature and chains.

static mut PREV_CHECK_PERMS: pg_sys::ExecutorCheckPerms_hook_type = None;

/// The version-neutral check: (range table, whether to raise the error).
pub(crate) type CheckRangeTable = unsafe fn(*mut pg_sys::List, bool) -> bool;
static mut CHECK_RANGE_TABLE: Option<CheckRangeTable> = None;

/// Installs `check` as the executor permission hook; call once from `_PG_init`.
pub(crate) unsafe fn install_check_perms_hook(check: CheckRangeTable) {
    CHECK_RANGE_TABLE = Some(check);
    PREV_CHECK_PERMS = pg_sys::ExecutorCheckPerms_hook;
    pg_sys::ExecutorCheckPerms_hook = Some(check_perms_hook);
}

unsafe fn check_range_table(range_table: *mut pg_sys::List, ereport: bool) -> bool {
    match CHECK_RANGE_TABLE {
        Some(check) => check(range_table, ereport),
        None => true,
    }
}

#[cfg(feature = "pg15")]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_perms_hook(
    range_table: *mut pg_sys::List,
    ereport: bool,
) -> bool {
    if !check_range_table(range_table, ereport) {
        return false;
    }
    match PREV_CHECK_PERMS {
        Some(prev) => prev(range_table, ereport),
        None => true,
    }
}

#[cfg(any(feature = "pg17", feature = "pg18"))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_perms_hook(
    range_table: *mut pg_sys::List,
    perm_infos: *mut pg_sys::List,
    ereport: bool,
) -> bool {
    if !check_range_table(range_table, ereport) {
        return false;
    }
    match PREV_CHECK_PERMS {
        Some(prev) => prev(range_table, perm_infos, ereport),
        None => true,
    }
}

/// The pid a session token of this process must name: the backend's own,
/// or, in a parallel worker, its leader's (the worker inherits the leader's
/// `hoop.session`). The lock-group leader is the same field in every version.
pub(crate) unsafe fn session_pid() -> i32 {
    let proc_ = pg_sys::MyProc;
    if pg_sys::ParallelWorkerNumber >= 0 && !proc_.is_null() {
        let leader = (*proc_).lockGroupLeader;
        if !leader.is_null() {
            return (*leader).pid;
        }
    }
    pg_sys::MyProcPid
}
