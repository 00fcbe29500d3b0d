//! State a hook holds while the next hook runs, and how an ERROR unwinds it.
//!
//! The hooks never catch a Postgres error: the next hook (or `standard_*`)
//! is called through [`crate::hooks::next`], so an ERROR longjmps through
//! hoop's frames exactly as it would through a C extension's, with every
//! field of the error intact. What a hook set up before that call (the
//! CREATE VIEW depth, the planner's record of the relations the rewrite saw)
//! is therefore put back the way Postgres puts back its own state: a mark is
//! taken when each subtransaction starts and restored when it aborts (a
//! PL/pgSQL exception block, `ROLLBACK TO SAVEPOINT`), and everything is
//! cleared when the top-level transaction aborts.

use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};

thread_local! {
    /// CREATE VIEW statements being executed (their query is analyzed then).
    static VIEW_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// One set per planner call in progress: the relations the rewrite saw.
    static PLANNING: RefCell<Vec<HashSet<pg_sys::Oid>>> = const { RefCell::new(Vec::new()) };
    /// The mark taken when each open subtransaction started.
    static MARKS: RefCell<Vec<(pg_sys::SubTransactionId, Mark)>> = const { RefCell::new(Vec::new()) };
}

/// CREATE MATERIALIZED VIEW or REFRESH statements being executed. Read on
/// every masked value, so a plain static rather than a thread-local (a
/// backend runs hoop on one thread; the atomic only makes that safe Rust).
static MATVIEW_DEPTH: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy)]
struct Mark {
    view_depth: u32,
    matview_depth: u32,
    planning: usize,
}

fn mark() -> Mark {
    Mark {
        view_depth: VIEW_DEPTH.with(Cell::get),
        matview_depth: MATVIEW_DEPTH.load(Ordering::Relaxed),
        planning: PLANNING.with(|planning| planning.borrow().len()),
    }
}

fn restore(mark: Mark) {
    VIEW_DEPTH.with(|depth| depth.set(mark.view_depth));
    MATVIEW_DEPTH.store(mark.matview_depth, Ordering::Relaxed);
    PLANNING.with(|planning| planning.borrow_mut().truncate(mark.planning));
}

/// Registers the transaction callbacks; called once from `_PG_init`.
pub(crate) fn register() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    if event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT {
        // Nothing of hoop is on the stack any more: the error left it.
        restore(Mark {
            view_depth: 0,
            matview_depth: 0,
            planning: 0,
        });
    }
    if event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PARALLEL_PRE_COMMIT {
        MARKS.with(|marks| marks.borrow_mut().clear());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    subxact: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_START_SUB => MARKS.with(|marks| marks.borrow_mut().push((subxact, mark()))),
        SUBXACT_EVENT_COMMIT_SUB | SUBXACT_EVENT_ABORT_SUB => MARKS.with(|marks| {
            let mut marks = marks.borrow_mut();
            if let Some(at) = marks.iter().position(|(id, _)| *id == subxact) {
                let (_, saved) = marks[at];
                marks.truncate(at);
                if event == SUBXACT_EVENT_ABORT_SUB {
                    restore(saved);
                }
            }
        }),
        _ => {}
    }
}

/// Marks the start of a CREATE VIEW; [`end_view`] when it returns normally.
pub(crate) fn begin_view() {
    VIEW_DEPTH.with(|depth| depth.set(depth.get() + 1));
}

pub(crate) fn end_view() {
    VIEW_DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
}

/// Whether a CREATE VIEW is being executed.
pub(crate) fn defining_view() -> bool {
    VIEW_DEPTH.with(Cell::get) > 0
}

/// Marks the start of filling a materialized view; [`end_matview`] when it
/// returns normally.
pub(crate) fn begin_matview() {
    MATVIEW_DEPTH.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn end_matview() {
    let depth = MATVIEW_DEPTH.load(Ordering::Relaxed);
    MATVIEW_DEPTH.store(depth.saturating_sub(1), Ordering::Relaxed);
}

/// Whether a materialized view is being filled (CREATE or REFRESH): what it
/// stores is read later by others, so it only ever stores masked values.
pub(crate) fn filling_matview() -> bool {
    MATVIEW_DEPTH.load(Ordering::Relaxed) > 0
}

/// Starts recording, for one planner call, the relations the rewrite sees.
pub(crate) fn begin_planning() {
    PLANNING.with(|planning| planning.borrow_mut().push(HashSet::new()));
}

/// Records that the rewrite saw `relid` in the innermost planner call.
pub(crate) fn record_seen(relid: pg_sys::Oid) {
    PLANNING.with(|planning| {
        if let Some(top) = planning.borrow_mut().last_mut() {
            top.insert(relid);
        }
    });
}

/// Ends the innermost planner call's record and returns it.
pub(crate) fn end_planning() -> HashSet<pg_sys::Oid> {
    PLANNING.with(|planning| planning.borrow_mut().pop().unwrap_or_default())
}
