//! Masking at the plan's output: `hoop.mask_column` calls evaluated by the
//! top plan node are moved into a node above it.
//!
//! The rewrite ([`crate::masking`]) puts `hoop.mask_column(col, relid,
//! attnum)` around every read of a masked column; in `SELECT id, card_number
//! FROM t` the top plan node (the scan) evaluates it once per row. Once the
//! plan is finished, each `hoop.mask_column(x, relid, attnum)` that is a
//! whole output column of the top plan node (under binary-compatible
//! relabelings only) is replaced by `x`, and a `HoopMask` custom scan node is
//! put above the top node. It applies the very same decision
//! ([`crate::masking::kept_decision`]) and masking ([`crate::masking::mask_datum`])
//! to those columns of every row, so every row leaves the plan exactly as
//! the function would have produced it.
//!
//! Why this shows nothing the function would not:
//!
//! - Only the top node's own output columns are changed. Nothing in a plan
//!   reads them but the node above: quals, sort keys, join, grouping and
//!   window expressions are evaluated below or inside the top node (and sort
//!   and group column numbers refer to its input), and they keep their own
//!   `mask_column` calls; so does every other node, and so does whatever a
//!   node stores (sorts, hashes, materializations, spilled to disk or not).
//!   The only new place a raw value exists is the hand-off of one row from
//!   the top node to HoopMask, in the backend's memory.
//! - HoopMask is the plan's top, so every consumer of a `SELECT`'s rows gets
//!   them masked: the client (and the gateway, which sees the same row
//!   description: names, types, table and column numbers are copied), `CREATE
//!   TABLE AS`/`SELECT INTO`, `COPY (…) TO` and `COPY t TO`, cursors
//!   (scrollable ones read backward and rewound through it, WITH HOLD ones
//!   store its output), SPI and PL/pgSQL, SQL functions, `EXPLAIN ANALYZE`.
//!   Other commands (`INSERT … SELECT`, `UPDATE`, `RETURNING` …) keep the
//!   function: only `SELECT` plans are changed.
//! - It lives in the plan, so it travels with prepared statements, cached
//!   plans and portals; the decision is taken while the plan runs, per row
//!   and column, from the session state at that moment, as the function's.
//!   It is only ever added at the very top of a statement's plan (never
//!   inside a parallel worker's part of it).
//! - It fails closed like the function: when the policies cannot be read it
//!   raises the same 55000 error, and a masking error stops the statement.
//!
//! The gain: the top node often needs no projection at all any more (a scan
//! returns the table's rows as they are), no fmgr call per value, and the
//! masked value is written into a buffer the node reuses row after row
//! instead of a palloc per value that the per-tuple memory reset frees again.

use crate::masking::{self, CallSite};
use crate::nodes::{list_length, list_nth, node_tag};
use crate::policy;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_int, c_void, CStr};

/// The name the node is registered and shown under (EXPLAIN: `Custom Scan (HoopMask)`).
const NODE_NAME: &CStr = c"HoopMask";

/// `CUSTOMPATH_SUPPORT_BACKWARD_SCAN` (nodes/extensible.h, the same in 15, 17, 18).
const SUPPORT_BACKWARD_SCAN: u32 = 0x0001;

/// A method table Postgres reads (never writes) through a pointer.
struct Methods<T>(T);
// SAFETY: immutable, and a backend runs hoop on one thread.
unsafe impl<T> Sync for Methods<T> {}

static PLAN_METHODS: Methods<pg_sys::CustomScanMethods> = Methods(pg_sys::CustomScanMethods {
    CustomName: NODE_NAME.as_ptr(),
    CreateCustomScanState: Some(create_state),
});

static EXEC_METHODS: Methods<pg_sys::CustomExecMethods> = Methods(pg_sys::CustomExecMethods {
    CustomName: NODE_NAME.as_ptr(),
    BeginCustomScan: Some(begin),
    ExecCustomScan: Some(exec),
    EndCustomScan: Some(end),
    ReScanCustomScan: Some(rescan),
    MarkPosCustomScan: None,
    RestrPosCustomScan: None,
    EstimateDSMCustomScan: None,
    InitializeDSMCustomScan: None,
    ReInitializeDSMCustomScan: None,
    InitializeWorkerCustomScan: None,
    ShutdownCustomScan: None,
    ExplainCustomScan: Some(explain),
});

// The same symbols pg_sys binds, declared without pgrx's error boundary: the
// child plan's errors pass through unchanged (see `hooks::next`), and the
// per-row calls cost no setjmp.
unsafe extern "C-unwind" {
    #[link_name = "ExecInitNode"]
    fn raw_exec_init_node(
        plan: *mut pg_sys::Plan,
        estate: *mut pg_sys::EState,
        eflags: c_int,
    ) -> *mut pg_sys::PlanState;
    #[link_name = "ExecEndNode"]
    fn raw_exec_end_node(node: *mut pg_sys::PlanState);
    #[link_name = "ExecReScan"]
    fn raw_exec_rescan(node: *mut pg_sys::PlanState);
    #[link_name = "slot_getsomeattrs_int"]
    fn raw_slot_getsomeattrs_int(slot: *mut pg_sys::TupleTableSlot, attnum: c_int);
    #[link_name = "ExecStoreVirtualTuple"]
    fn raw_exec_store_virtual_tuple(
        slot: *mut pg_sys::TupleTableSlot,
    ) -> *mut pg_sys::TupleTableSlot;
    #[link_name = "MemoryContextReset"]
    fn raw_memory_context_reset(context: pg_sys::MemoryContext);
    #[link_name = "MemoryContextAlloc"]
    fn raw_memory_context_alloc(context: pg_sys::MemoryContext, size: usize) -> *mut c_void;
}

/// Registers the node (plans are copied and may be written out and read
/// back by name); called once from `_PG_init`.
pub(crate) fn register() {
    unsafe { pg_sys::RegisterCustomScanMethods(&PLAN_METHODS.0) };
}

/// The `hoop.mask_column` call `expr` is, under relabelings: (the call, the
/// place holding it).
unsafe fn mask_call(
    mask_column_fn: pg_sys::Oid,
    slot: *mut *mut pg_sys::Expr,
) -> Option<(*mut pg_sys::FuncExpr, *mut *mut pg_sys::Expr)> {
    let mut slot = slot;
    loop {
        let node = *slot as *mut pg_sys::Node;
        if node.is_null() {
            return None;
        }
        match node_tag(node) {
            pg_sys::NodeTag::T_RelabelType => {
                slot = &raw mut (*(node as *mut pg_sys::RelabelType)).arg;
            }
            pg_sys::NodeTag::T_FuncExpr => {
                let func = node as *mut pg_sys::FuncExpr;
                return ((*func).funcid == mask_column_fn && list_length((*func).args) == 3)
                    .then_some((func, slot));
            }
            _ => return None,
        }
    }
}

/// A non-null `Const` of `hoop.mask_column`'s argument `n`.
unsafe fn const_arg(func: *mut pg_sys::FuncExpr, n: usize) -> Option<pg_sys::Datum> {
    let arg = list_nth((*func).args, n) as *mut pg_sys::Node;
    if arg.is_null() || node_tag(arg) != pg_sys::NodeTag::T_Const {
        return None;
    }
    let c = arg as *mut pg_sys::Const;
    (!(*c).constisnull).then_some((*c).constvalue)
}

/// Moves the `hoop.mask_column` calls that are whole output columns of a
/// finished `SELECT` plan's top node into a HoopMask node put above it.
pub(crate) unsafe fn mask_at_output(planned: *mut pg_sys::PlannedStmt) {
    if planned.is_null()
        || policy::internal()
        || (*planned).commandType != pg_sys::CmdType::CMD_SELECT
        || !(*planned).utilityStmt.is_null()
        || (*planned).planTree.is_null()
    {
        return;
    }
    let top = (*planned).planTree;
    let tlist = (*top).targetlist;
    // Cheap first: most plans have no mask_column call among their outputs.
    let Some(ext) = policy::extension() else {
        return;
    };
    let mut private: *mut pg_sys::List = std::ptr::null_mut();
    for n in 0..list_length(tlist) {
        let entry = list_nth(tlist, n) as *mut pg_sys::TargetEntry;
        let Some((func, holder)) = mask_call(ext.mask_column_fn, &raw mut (*entry).expr) else {
            continue;
        };
        let (Some(relid), Some(attnum)) = (const_arg(func, 1), const_arg(func, 2)) else {
            continue;
        };
        // The value the function would have been given, now the output.
        *holder = list_nth((*func).args, 0) as *mut pg_sys::Expr;
        private = pg_sys::lappend_int(private, n as c_int);
        private = pg_sys::lappend_int(private, relid.value() as u32 as c_int);
        private = pg_sys::lappend_int(private, attnum.value() as i16 as c_int);
    }
    if private.is_null() {
        return;
    }
    (*planned).planTree = mask_node(top, private);
}

/// The HoopMask node over `child`, masking the columns `private` lists
/// (triples: 0-based output column, relid, attnum).
unsafe fn mask_node(child: *mut pg_sys::Plan, private: *mut pg_sys::List) -> *mut pg_sys::Plan {
    let node =
        pg_sys::palloc0(std::mem::size_of::<pg_sys::CustomScan>()) as *mut pg_sys::CustomScan;
    // Costs, rows, width, parallel safety (and Postgres 18's disabled-node
    // count) as the child's: nothing is planned after this node is added.
    (*node).scan.plan = *child;
    let plan = &mut (*node).scan.plan;
    plan.type_ = pg_sys::NodeTag::T_CustomScan;
    plan.parallel_aware = false;
    plan.async_capable = false;
    // Not inside any parallel part of the plan, where ids must be unique.
    plan.plan_node_id = i32::MAX;
    plan.qual = std::ptr::null_mut();
    plan.lefttree = child;
    plan.righttree = std::ptr::null_mut();
    plan.initPlan = std::ptr::null_mut();
    plan.extParam = pg_sys::bms_copy((*child).extParam);
    plan.allParam = pg_sys::bms_copy((*child).allParam);
    // Output columns: the child's, by position (INDEX_VAR over the scan
    // tuple, which is the child's row: OUTER_VAR over its target list, so
    // EXPLAIN VERBOSE shows where each comes from).
    let mut tlist = std::ptr::null_mut();
    let mut scan_tlist = std::ptr::null_mut();
    for n in 0..list_length((*child).targetlist) {
        let entry = list_nth((*child).targetlist, n) as *mut pg_sys::TargetEntry;
        let expr = (*entry).expr as *mut pg_sys::Node;
        let (type_oid, typmod, collation) = (
            pg_sys::exprType(expr),
            pg_sys::exprTypmod(expr),
            pg_sys::exprCollation(expr),
        );
        let resno = (n + 1) as pg_sys::AttrNumber;
        let from_child = pg_sys::makeVar(pg_sys::OUTER_VAR, resno, type_oid, typmod, collation, 0);
        let scan_entry = pg_sys::flatCopyTargetEntry(entry);
        (*scan_entry).expr = from_child as *mut pg_sys::Expr;
        (*scan_entry).resno = resno;
        scan_tlist = pg_sys::lappend(scan_tlist, scan_entry.cast());
        let from_scan = pg_sys::makeVar(pg_sys::INDEX_VAR, resno, type_oid, typmod, collation, 0);
        let out_entry = pg_sys::flatCopyTargetEntry(entry);
        (*out_entry).expr = from_scan as *mut pg_sys::Expr;
        tlist = pg_sys::lappend(tlist, out_entry.cast());
    }
    plan.targetlist = tlist;
    (*node).scan.scanrelid = 0;
    (*node).flags = if pg_sys::ExecSupportsBackwardScan(child) {
        SUPPORT_BACKWARD_SCAN
    } else {
        0
    };
    (*node).custom_plans = std::ptr::null_mut();
    (*node).custom_exprs = std::ptr::null_mut();
    (*node).custom_private = private;
    (*node).custom_scan_tlist = scan_tlist;
    (*node).custom_relids = std::ptr::null_mut();
    (*node).methods = &PLAN_METHODS.0;
    node as *mut pg_sys::Plan
}

// ---------------------------------------------------------------------------
// Execution.

/// One masked output column while the plan runs.
#[derive(Clone, Copy)]
struct MaskedOutput {
    /// 0-based position in the row.
    index: usize,
    relid: pg_sys::Oid,
    attnum: i16,
    /// The decision, kept as `hoop.mask_column` keeps it in `fn_extra`.
    site: *mut CallSite,
    /// The masked value of the current row, rewritten for each row: what a
    /// node returns is only valid until it is called again.
    buffer: *mut pg_sys::varlena,
    capacity: usize,
}

/// The node's state: palloc'd, never dropped, so plain data only.
#[repr(C)]
struct MaskState {
    css: pg_sys::CustomScanState,
    columns: *mut MaskedOutput,
    column_count: usize,
    natts: usize,
}

const _: () = assert!(!std::mem::needs_drop::<MaskState>());
const _: () = assert!(!std::mem::needs_drop::<MaskedOutput>());

#[pg_guard]
unsafe extern "C-unwind" fn create_state(_plan: *mut pg_sys::CustomScan) -> *mut pg_sys::Node {
    let state = pg_sys::palloc0(std::mem::size_of::<MaskState>()) as *mut MaskState;
    (*state).css.ss.ps.type_ = pg_sys::NodeTag::T_CustomScanState;
    (*state).css.methods = &EXEC_METHODS.0;
    state as *mut pg_sys::Node
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    node: *mut pg_sys::CustomScanState,
    estate: *mut pg_sys::EState,
    eflags: c_int,
) {
    let state = node as *mut MaskState;
    let plan = (*node).ss.ps.plan as *mut pg_sys::CustomScan;
    let child = raw_exec_init_node((*plan).scan.plan.lefttree, estate, eflags);
    (*node).ss.ps.lefttree = child;
    let private = (*plan).custom_private;
    let count = list_length(private) / 3;
    let columns =
        pg_sys::palloc0(count.max(1) * std::mem::size_of::<MaskedOutput>()) as *mut MaskedOutput;
    for n in 0..count {
        let at = |k: usize| (*(*private).elements.add(3 * n + k)).int_value;
        columns.add(n).write(MaskedOutput {
            index: at(0) as usize,
            relid: pg_sys::Oid::from(at(1) as u32),
            attnum: at(2) as i16,
            site: std::ptr::null_mut(),
            buffer: std::ptr::null_mut(),
            capacity: 0,
        });
    }
    (*state).columns = columns;
    (*state).column_count = count;
    (*state).natts = list_length((*plan).scan.plan.targetlist);
}

/// The next row of the child with the masked columns masked.
#[pg_guard]
unsafe extern "C-unwind" fn exec(
    node: *mut pg_sys::CustomScanState,
) -> *mut pg_sys::TupleTableSlot {
    let state = node as *mut MaskState;
    let child = (*node).ss.ps.lefttree;
    // ExecProcNode (an inline function in C).
    if !(*child).chgParam.is_null() {
        raw_exec_rescan(child);
    }
    let slot = ((*child).ExecProcNode.unwrap_unchecked())(child);
    if slot.is_null() || (*slot).tts_flags & pg_sys::TTS_FLAG_EMPTY as u16 != 0 {
        return std::ptr::null_mut();
    }
    let natts = (*state).natts;
    if ((*slot).tts_nvalid as usize) < natts {
        raw_slot_getsomeattrs_int(slot, natts as c_int);
    }
    // Detoasting allocates: in the per-tuple memory, reset row by row (a
    // no-op when nothing was allocated, the usual case).
    let per_tuple = (*(*node).ss.ps.ps_ExprContext).ecxt_per_tuple_memory;
    if !(*per_tuple).isReset {
        raw_memory_context_reset(per_tuple);
    }
    let result = (*node).ss.ps.ps_ResultTupleSlot;
    // ExecClearTuple (inline in C): the result slot is virtual.
    if let Some(clear) = (*(*result).tts_ops).clear {
        clear(result);
    }
    // A few columns: a loop, not two calls to memcpy.
    for n in 0..natts {
        *(*result).tts_values.add(n) = *(*slot).tts_values.add(n);
        *(*result).tts_isnull.add(n) = *(*slot).tts_isnull.add(n);
    }
    let query_memory = (*(*node).ss.ps.state).es_query_cxt;
    let saved = pg_sys::CurrentMemoryContext;
    pg_sys::CurrentMemoryContext = per_tuple;
    for n in 0..(*state).column_count {
        let column = &mut *(*state).columns.add(n);
        if *(*result).tts_isnull.add(column.index) {
            continue; // hoop.mask_column is STRICT
        }
        column.site =
            masking::kept_decision(column.site, query_memory, column.relid, column.attnum);
        let Some(masker) = (*column.site).masker() else {
            continue;
        };
        let value = *(*result).tts_values.add(column.index);
        let masked = masking::mask_datum(value, masker, |size| {
            if size > column.capacity {
                let capacity = size.max(64).next_power_of_two();
                column.buffer =
                    raw_memory_context_alloc(query_memory, capacity) as *mut pg_sys::varlena;
                column.capacity = capacity;
            }
            column.buffer
        });
        *(*result).tts_values.add(column.index) = masked;
    }
    pg_sys::CurrentMemoryContext = saved;
    raw_exec_store_virtual_tuple(result)
}

#[pg_guard]
unsafe extern "C-unwind" fn end(node: *mut pg_sys::CustomScanState) {
    let child = (*node).ss.ps.lefttree;
    if !child.is_null() {
        raw_exec_end_node(child);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::CustomScanState) {
    let child = (*node).ss.ps.lefttree;
    // A child whose parameters changed rescans itself when next called.
    if !child.is_null() && (*child).chgParam.is_null() {
        raw_exec_rescan(child);
    }
}

/// EXPLAIN: which output columns are masked (names only).
#[pg_guard]
unsafe extern "C-unwind" fn explain(
    node: *mut pg_sys::CustomScanState,
    _ancestors: *mut pg_sys::List,
    es: *mut pg_sys::ExplainState,
) {
    let state = node as *mut MaskState;
    let tlist = (*(*node).ss.ps.plan).targetlist;
    let mut names = Vec::new();
    for n in 0..(*state).column_count {
        let column = &*(*state).columns.add(n);
        let entry = list_nth(tlist, column.index) as *mut pg_sys::TargetEntry;
        let name = if (*entry).resname.is_null() {
            format!("column {}", column.index + 1)
        } else {
            CStr::from_ptr((*entry).resname)
                .to_string_lossy()
                .into_owned()
        };
        names.push(name);
    }
    let text = std::ffi::CString::new(names.join(", ")).unwrap_or_default();
    pg_sys::ExplainPropertyText(c"Masked Columns".as_ptr(), text.as_ptr(), es);
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::*;
    use pgrx::prelude::*;

    const PAN: &str = "4111111111111111";
    const MASKED: &str = "************1111";

    /// The first column of every row `sql` returns (FETCH and EXPLAIN too).
    fn rows(sql: &str) -> Vec<Option<String>> {
        Spi::connect_mut(|client| {
            client
                .update(sql, None, &[])
                .expect(sql)
                .map(|row| row.get::<String>(1).expect(sql))
                .collect()
        })
    }

    fn plan_of(sql: &str) -> String {
        rows(&format!("EXPLAIN (COSTS OFF) {sql}"))
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[pg_test]
    fn output_columns_are_masked_by_the_node_for_every_consumer() {
        masked_table();
        run("INSERT INTO public.cards VALUES (2, NULL, 'Bob', 'n2')");
        start_session(&[]);
        let plan = plan_of("SELECT id, card_number FROM public.cards");
        assert!(plan.contains("HoopMask"), "{plan}");
        assert_eq!(
            one_text("SELECT card_number FROM public.cards WHERE id = 1").as_deref(),
            Some(MASKED)
        );
        // STRICT, as the function: NULL stays NULL.
        assert_eq!(
            one_text("SELECT card_number FROM public.cards WHERE id = 2"),
            None
        );
        // Whatever the top node: a set-returning function in the select
        // list (ProjectSet), grouping by the key (Agg).
        for sql in [
            "SELECT card_number, generate_series(1, 2) FROM public.cards WHERE id = 1",
            "SELECT card_number FROM public.cards WHERE id = 1 GROUP BY id",
        ] {
            assert!(plan_of(sql).contains("HoopMask"), "{sql}");
            let shown = rows(sql);
            assert!(
                !shown.is_empty() && shown.iter().all(|v| v.as_deref() == Some(MASKED)),
                "{sql}: {shown:?}"
            );
        }
        // CREATE TABLE AS and SELECT INTO store what the node outputs.
        run("CREATE TABLE public.copied AS SELECT id, card_number FROM public.cards");
        run("SELECT id, card_number INTO public.copied2 FROM public.cards");
        for table in ["copied", "copied2"] {
            assert_eq!(
                one_text(&format!(
                    "SELECT card_number FROM public.{table} WHERE id = 1"
                ))
                .as_deref(),
                Some(MASKED),
                "{table}"
            );
        }
        // A scrollable cursor: forward, backward and rewound (a rescan).
        run("DECLARE c SCROLL CURSOR FOR SELECT card_number FROM public.cards WHERE id = 1");
        let masked = vec![Some(MASKED.to_string())];
        assert_eq!(rows("FETCH NEXT FROM c"), masked);
        assert_eq!(rows("FETCH PRIOR FROM c"), vec![]);
        assert_eq!(rows("FETCH ABSOLUTE 1 FROM c"), masked);
        assert_eq!(rows("FETCH BACKWARD ALL FROM c"), vec![]);
        assert_eq!(rows("FETCH FORWARD ALL FROM c"), masked);
        run("CLOSE c");
    }

    #[pg_test]
    fn a_prepared_plan_follows_the_session_and_fails_closed() {
        masked_table();
        run("PREPARE p AS SELECT card_number FROM public.cards WHERE id = 1");
        start_session(&["public.cards.card_number"]);
        assert_eq!(one_text("EXECUTE p").as_deref(), Some(PAN));
        start_session(&[]);
        assert_eq!(one_text("EXECUTE p").as_deref(), Some(MASKED));
        // Policies that cannot be read: an error, never the raw value.
        crate::policy::pretend_unreadable(true);
        let unreadable = std::panic::catch_unwind(|| sql_error("EXECUTE p"));
        crate::policy::pretend_unreadable(false);
        let (state, message) = unreadable
            .expect("no panic")
            .expect("unreadable policy: an error, not a value");
        assert_eq!(state, "55000", "{message}");
        assert_eq!(one_text("EXECUTE p").as_deref(), Some(MASKED));
    }

    #[pg_test]
    fn long_values_and_other_strategies_through_the_node() {
        masked_table();
        // Long enough to be compressed: masked from the detoasted value.
        run(&format!(
            "INSERT INTO public.cards VALUES (3, repeat('{PAN}', 1000), 'Cy', 'n3')"
        ));
        run("CREATE TABLE public.v (id int, pan varchar(19), secret text)");
        run("INSERT INTO public.v VALUES (1, '4111111111111111', '5555555555554444')");
        run("SELECT hoop_mask('public.v', 'pan', 'pan_bin_last4')");
        run("SELECT hoop_mask('public.v', 'secret', 'redact')");
        start_session(&[]);
        let long = one_text("SELECT card_number FROM public.cards WHERE id = 3").unwrap();
        assert_eq!(long.len(), 16_000);
        assert!(long.ends_with("1111") && long[..15_996].bytes().all(|b| b == b'*'));
        let plan = plan_of("SELECT pan, secret FROM public.v");
        assert!(plan.contains("HoopMask"), "{plan}");
        assert_eq!(
            one_text("SELECT pan::text FROM public.v").as_deref(),
            Some("411111******1111")
        );
        let redacted = one_text("SELECT secret FROM public.v").unwrap();
        assert!(!redacted.contains("5555"), "{redacted}");
        assert_eq!(
            one_text("SELECT pg_typeof(pan)::text FROM public.v").as_deref(),
            Some("character varying")
        );
    }
}
