//! Masking: the query rewrite and the functions it inserts.
//!
//! Every `Var` that reads a masked column of a table is replaced by
//! `hoop.mask_column(var, relid, attnum)`, and every whole-row `Var` of such a
//! table by `hoop.mask_row(var, relid)`. The rewrite runs after parse analysis
//! and again before planning (views and rules are expanded in between); it
//! does not depend on who runs the query. Whether a value is shown raw is
//! decided by the functions on every call, from the session state at that
//! moment, so a cached plan can never carry one session's rights into another.
//! When a finished `SELECT` plan's top node calls `mask_column` for a whole
//! output column, the call moves into a node above it that decides and masks
//! with the same code ([`kept_decision`], [`mask_datum`]); see [`crate::output`].

use crate::compat;
use crate::error::HoopError;
use crate::guc;
use crate::nodes::{list_length, list_nth, list_ptrs, node_tag};
use crate::policy::{self, Extension, MaskedColumn, RelationPolicy};
use crate::scope;
use crate::session;
use hoop_common::mask::{Masker, Strategy};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::AnyElement;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CStr};

unsafe fn copy_node<T>(node: *mut T) -> *mut T {
    pg_sys::copyObjectImpl(node as *const c_void) as *mut T
}

unsafe fn strip_relabel(mut node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    while !node.is_null() && node_tag(node) == pg_sys::NodeTag::T_RelabelType {
        node = (*(node as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
    }
    node
}

unsafe fn const_oid(node: *mut pg_sys::Node) -> Option<pg_sys::Oid> {
    if node.is_null() || node_tag(node) != pg_sys::NodeTag::T_Const {
        return None;
    }
    let c = node as *mut pg_sys::Const;
    if (*c).constisnull {
        return None;
    }
    Some(pg_sys::Oid::from((*c).constvalue.value() as u32))
}

unsafe fn const_int2(node: *mut pg_sys::Node) -> Option<i16> {
    if node.is_null() || node_tag(node) != pg_sys::NodeTag::T_Const {
        return None;
    }
    let c = node as *mut pg_sys::Const;
    if (*c).constisnull {
        return None;
    }
    Some((*c).constvalue.value() as i16)
}

unsafe fn make_oid_const(value: pg_sys::Oid) -> *mut pg_sys::Node {
    pg_sys::makeConst(
        pg_sys::OIDOID,
        -1,
        pg_sys::InvalidOid,
        4,
        pg_sys::Datum::from(value.to_u32()),
        false,
        true,
    ) as *mut pg_sys::Node
}

unsafe fn make_int2_const(value: i16) -> *mut pg_sys::Node {
    pg_sys::makeConst(
        pg_sys::INT2OID,
        -1,
        pg_sys::InvalidOid,
        2,
        pg_sys::Datum::from(value),
        false,
        true,
    ) as *mut pg_sys::Node
}

unsafe fn list_of(items: &[*mut pg_sys::Node]) -> *mut pg_sys::List {
    let mut list = std::ptr::null_mut();
    for item in items {
        list = pg_sys::lappend(list, (*item).cast());
    }
    list
}

// ---------------------------------------------------------------------------
// Detection: is there anything to rewrite or check at all?

#[derive(Default)]
struct Detection {
    masked_relation: bool,
    set_config_call: bool,
}

#[pg_guard]
unsafe extern "C-unwind" fn detect_walker(node: *mut pg_sys::Node, context: *mut c_void) -> bool {
    if node.is_null() {
        return false;
    }
    let found = &mut *(context as *mut Detection);
    match node_tag(node) {
        pg_sys::NodeTag::T_Query => {
            return pg_sys::query_tree_walker(
                node as *mut pg_sys::Query,
                Some(detect_walker),
                context,
                pg_sys::QTW_EXAMINE_RTES_BEFORE as i32,
            );
        }
        pg_sys::NodeTag::T_RangeTblEntry => {
            let rte = node as *mut pg_sys::RangeTblEntry;
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                && policy::lookup((*rte).relid).is_some_and(|p| !p.masked.is_empty())
            {
                found.masked_relation = true;
                scope::record_seen((*rte).relid);
            }
            return false;
        }
        pg_sys::NodeTag::T_FuncExpr
            if (*(node as *mut pg_sys::FuncExpr)).funcid
                == pg_sys::Oid::from(pg_sys::F_SET_CONFIG) =>
        {
            found.set_config_call = true;
        }
        _ => {}
    }
    pg_sys::expression_tree_walker(node, Some(detect_walker), context)
}

// ---------------------------------------------------------------------------
// Planning guard: relations the rewrite saw while a statement was planned.
//
// The planner can bring in a table the rewrite never saw: a set-returning SQL
// function with a SQL-standard body (BEGIN ATOMIC) is inlined from its stored
// query tree, without parse analysis. The final plan is checked against what
// the rewrite saw, and such a plan is refused rather than run unmasked.

/// Refuses a finished plan that reads a masked table the rewrite never saw.
pub(crate) unsafe fn check_plan(planned: *mut pg_sys::PlannedStmt, seen: &HashSet<pg_sys::Oid>) {
    if planned.is_null() || policy::internal() {
        return;
    }
    let rtable = (*planned).rtable;
    // Inheritance children and partitions the planner expanded: range-table
    // index of the child -> index of its parent (1-based, as in the plan).
    let parents: HashMap<u32, u32> = list_ptrs((*planned).appendRelations)
        .map(|info| {
            let info = info as *mut pg_sys::AppendRelInfo;
            ((*info).child_relid, (*info).parent_relid)
        })
        .collect();
    // A relation read through a parent the rewrite saw is covered by it.
    let covered = |mut index: u32| loop {
        let rte = list_nth(rtable, index as usize - 1) as *mut pg_sys::RangeTblEntry;
        if seen.contains(&(*rte).relid) {
            return true;
        }
        match parents.get(&index) {
            Some(&parent) if parent != index => index = parent,
            _ => return false,
        }
    };
    for (at, rte) in list_ptrs(rtable).enumerate() {
        let rte = rte as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || covered(at as u32 + 1) {
            continue;
        }
        let Some(policy) = policy::lookup((*rte).relid) else {
            continue;
        };
        if policy.masked.is_empty() {
            continue;
        }
        HoopError::Unmaskable {
            table: policy.qualified_name(),
            why: "a set-returning SQL function with a BEGIN ATOMIC body is inlined by the planner without parse analysis; write its body as a string (AS $$ … $$) instead".to_string(),
        }
        .report();
    }
}

// ---------------------------------------------------------------------------
// The rewrite.

struct Frame {
    rtable: *mut pg_sys::List,
    /// `EXCLUDED` of INSERT … ON CONFLICT: the row being inserted, not stored data.
    excluded_rel: i32,
}

struct Rewriter {
    ext: Extension,
    frames: Vec<Frame>,
    refuse_set_config: bool,
}

impl Rewriter {
    unsafe fn push(&mut self, query: *mut pg_sys::Query) {
        let on_conflict = (*query).onConflict;
        let excluded_rel = if on_conflict.is_null() {
            0
        } else {
            (*on_conflict).exclRelIndex
        };
        self.frames.push(Frame {
            rtable: (*query).rtable,
            excluded_rel,
        });
    }

    /// The relation and attribute a `Var` reads, when it reads a table directly.
    unsafe fn resolve(&self, var: *mut pg_sys::Var) -> Option<(pg_sys::Oid, i16)> {
        let levels = (*var).varlevelsup as usize;
        if levels >= self.frames.len() {
            return None;
        }
        let frame = &self.frames[self.frames.len() - 1 - levels];
        let varno = (*var).varno;
        if varno <= 0 || varno == frame.excluded_rel || varno as usize > list_length(frame.rtable) {
            return None;
        }
        let rte = list_nth(frame.rtable, varno as usize - 1) as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
            return None;
        }
        Some(((*rte).relid, (*var).varattno))
    }

    /// Whether `func` is already exactly the wrapper this rewrite would put
    /// around its argument (the second hook sees the first hook's work).
    unsafe fn is_wrapper(&self, func: *mut pg_sys::FuncExpr) -> bool {
        let args = (*func).args;
        if (*func).funcid == self.ext.mask_column_fn && list_length(args) == 3 {
            let arg = strip_relabel(list_nth(args, 0) as *mut pg_sys::Node);
            if arg.is_null() || node_tag(arg) != pg_sys::NodeTag::T_Var {
                return false;
            }
            let Some((relid, attnum)) = self.resolve(arg as *mut pg_sys::Var) else {
                return false;
            };
            return const_oid(list_nth(args, 1) as *mut pg_sys::Node) == Some(relid)
                && const_int2(list_nth(args, 2) as *mut pg_sys::Node) == Some(attnum);
        }
        if (*func).funcid == self.ext.mask_row_fn && list_length(args) == 2 {
            let arg = list_nth(args, 0) as *mut pg_sys::Node;
            if arg.is_null() || node_tag(arg) != pg_sys::NodeTag::T_Var {
                return false;
            }
            let Some((relid, 0)) = self.resolve(arg as *mut pg_sys::Var) else {
                return false;
            };
            return const_oid(list_nth(args, 1) as *mut pg_sys::Node) == Some(relid);
        }
        false
    }

    unsafe fn wrap(&self, var: *mut pg_sys::Var) -> Option<*mut pg_sys::Node> {
        let (relid, attnum) = self.resolve(var)?;
        let policy = policy::lookup(relid)?;
        if policy.masked.is_empty() {
            return None;
        }
        let copy = copy_node(var);
        let collation = (*var).varcollid;
        if attnum == 0 {
            let func = pg_sys::makeFuncExpr(
                self.ext.mask_row_fn,
                (*var).vartype,
                list_of(&[copy as *mut pg_sys::Node, make_oid_const(relid)]),
                pg_sys::InvalidOid,
                pg_sys::InvalidOid,
                pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
            );
            (*func).location = (*var).location;
            return Some(func as *mut pg_sys::Node);
        }
        policy.masked_column(attnum)?;
        let var_type = (*var).vartype;
        let arg = if var_type == pg_sys::TEXTOID {
            copy as *mut pg_sys::Node
        } else {
            pg_sys::makeRelabelType(
                copy as *mut pg_sys::Expr,
                pg_sys::TEXTOID,
                -1,
                collation,
                pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
            ) as *mut pg_sys::Node
        };
        let func = pg_sys::makeFuncExpr(
            self.ext.mask_column_fn,
            pg_sys::TEXTOID,
            list_of(&[arg, make_oid_const(relid), make_int2_const(attnum)]),
            collation,
            collation,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        (*func).location = (*var).location;
        if var_type == pg_sys::TEXTOID {
            Some(func as *mut pg_sys::Node)
        } else {
            Some(pg_sys::makeRelabelType(
                func as *mut pg_sys::Expr,
                var_type,
                (*var).vartypmod,
                collation,
                pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
            ) as *mut pg_sys::Node)
        }
    }

    /// Rewrites one query level. With `in_place`, `query` itself is modified
    /// (the hooks' own query); nested queries are copied, as mutators do.
    unsafe fn rewrite_query(
        &mut self,
        query: *mut pg_sys::Query,
        in_place: bool,
    ) -> *mut pg_sys::Query {
        // WITH CHECK OPTION and row-security quals are the administrator's
        // access rules, not output: they keep seeing real values.
        let check_options = (*query).withCheckOptions;
        let security_quals: Vec<*mut pg_sys::List> = list_ptrs((*query).rtable)
            .map(|rte| (*(rte as *mut pg_sys::RangeTblEntry)).securityQuals)
            .collect();
        self.push(query);
        let context = self as *mut Rewriter as *mut c_void;
        let flags = if in_place {
            pg_sys::QTW_DONT_COPY_QUERY as i32
        } else {
            0
        };
        let result = compat::query_tree_mutator(query, mask_mutator, context, flags);
        self.frames.pop();
        (*result).withCheckOptions = check_options;
        for (n, quals) in security_quals.into_iter().enumerate() {
            if n < list_length((*result).rtable) {
                (*(list_nth((*result).rtable, n) as *mut pg_sys::RangeTblEntry)).securityQuals =
                    quals;
            }
        }
        result
    }
}

/// Parameters that gateway sessions may not change through `set_config()`.
pub(crate) fn is_protected_parameter(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name == "role" || name == "session_authorization" || name.starts_with("hoop.")
}

unsafe fn check_set_config(func: *mut pg_sys::FuncExpr) {
    let args = (*func).args;
    let name_arg = if list_length(args) > 0 {
        strip_relabel(list_nth(args, 0) as *mut pg_sys::Node)
    } else {
        std::ptr::null_mut()
    };
    let name = if !name_arg.is_null() && node_tag(name_arg) == pg_sys::NodeTag::T_Const {
        let c = name_arg as *mut pg_sys::Const;
        if (*c).constisnull {
            None
        } else {
            let text = pg_sys::text_to_cstring((*c).constvalue.cast_mut_ptr());
            Some(CStr::from_ptr(text).to_string_lossy().into_owned())
        }
    } else {
        None
    };
    let value_arg = if list_length(args) > 1 {
        strip_relabel(list_nth(args, 1) as *mut pg_sys::Node)
    } else {
        std::ptr::null_mut()
    };
    let constant_value = !value_arg.is_null() && node_tag(value_arg) == pg_sys::NodeTag::T_Const;
    match name {
        // Every role can read pg_stat_activity's application_name: a value
        // computed inside the statement (from a table) would publish data
        // the session itself only sees masked.
        Some(name)
            if name.trim().eq_ignore_ascii_case("application_name") && !constant_value =>
        {
            HoopError::Blocked {
                command: "set_config('application_name', <computed value>, …)".to_string(),
                why: "application_name is shown to every role in pg_stat_activity; in a gateway session it may only be set to a literal".to_string(),
            }
            .report()
        }
        Some(name) if !is_protected_parameter(&name) => {}
        Some(name) => HoopError::Blocked {
            command: format!("set_config('{name}', …)"),
            why: "role, session_authorization and hoop.* parameters cannot be changed in a gateway session"
                .to_string(),
        }
        .report(),
        None => HoopError::Blocked {
            command: "set_config() with a computed parameter name".to_string(),
            why: "gateway sessions may call set_config() only with a literal parameter name".to_string(),
        }
        .report(),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn mask_mutator(
    node: *mut pg_sys::Node,
    context: *mut c_void,
) -> *mut pg_sys::Node {
    if node.is_null() {
        return node;
    }
    let rewriter = &mut *(context as *mut Rewriter);
    match node_tag(node) {
        pg_sys::NodeTag::T_Query => {
            return rewriter.rewrite_query(node as *mut pg_sys::Query, false) as *mut pg_sys::Node;
        }
        pg_sys::NodeTag::T_Var => {
            if let Some(wrapped) = rewriter.wrap(node as *mut pg_sys::Var) {
                return wrapped;
            }
        }
        pg_sys::NodeTag::T_FuncExpr => {
            let func = node as *mut pg_sys::FuncExpr;
            if rewriter.refuse_set_config
                && (*func).funcid == pg_sys::Oid::from(pg_sys::F_SET_CONFIG)
            {
                check_set_config(func);
            }
            if rewriter.is_wrapper(func) {
                return copy_node(node);
            }
        }
        pg_sys::NodeTag::T_OnConflictExpr => {
            // The arbiter (ON CONFLICT (col)) must keep naming the real column
            // so the unique index is found; only the update part reads data.
            let original = node as *mut pg_sys::OnConflictExpr;
            let copy = copy_node(original);
            (*copy).onConflictSet =
                mask_mutator((*original).onConflictSet as *mut pg_sys::Node, context)
                    as *mut pg_sys::List;
            (*copy).onConflictWhere = mask_mutator((*original).onConflictWhere, context);
            return copy as *mut pg_sys::Node;
        }
        _ => {}
    }
    compat::expression_tree_mutator(node, mask_mutator, context)
}

/// Rewrites `query` in place: masks every read of a masked column and, in
/// gateway sessions, refuses `set_config()` on protected parameters.
pub(crate) unsafe fn rewrite(query: *mut pg_sys::Query) {
    // A utility statement's parse tree holds no range table to mask (the
    // queries inside EXPLAIN, DECLARE and CREATE TABLE AS are masked when
    // they are planned); and transaction control may arrive in an aborted
    // transaction, where no catalog can be read.
    if query.is_null() || policy::internal() || (*query).commandType == pg_sys::CmdType::CMD_UTILITY
    {
        return;
    }
    let gateway = session::is_gateway_backend();
    if !gateway && !policy::any_protected() {
        return;
    }
    let mut found = Detection::default();
    detect_walker(
        query as *mut pg_sys::Node,
        &mut found as *mut Detection as *mut c_void,
    );
    let refuse_set_config = gateway && found.set_config_call;
    if !found.masked_relation && !refuse_set_config {
        return;
    }
    let Some(ext) = policy::extension() else {
        return;
    };
    let mut rewriter = Rewriter {
        ext,
        frames: Vec::new(),
        refuse_set_config,
    };
    rewriter.rewrite_query(query, true);
}

// ---------------------------------------------------------------------------
// The decision, made on every call.

/// Whether the current session may see `column` of `policy` unmasked: a valid
/// gateway session whose token lists it, or (outside gateway backends) a
/// superuser when `hoop.enforce_superuser` is off. The superuser test uses the
/// session's role, not a SECURITY DEFINER function's owner. Never while a
/// materialized view is filled: it is read later by others, as stored.
pub(crate) fn may_see_raw(policy: &RelationPolicy, column: &MaskedColumn) -> bool {
    if scope::filling_matview() {
        return false;
    }
    if let Some(session) = session::current() {
        return session
            .claims
            .may_unmask(&policy.schema, &policy.table, &column.column);
    }
    if session::is_gateway_backend() {
        return false;
    }
    !guc::ENFORCE_SUPERUSER.get() && unsafe { pg_sys::superuser_arg(pg_sys::GetOuterUserId()) }
}

type MaskerCache = (Option<Vec<u8>>, HashMap<Strategy, Masker>);

thread_local! {
    /// Maskers by strategy, for the token key they were built with.
    static MASKERS: RefCell<MaskerCache> =
        RefCell::new((None, HashMap::new()));
}

/// The masker for `strategy` with the current `hoop.token_key`; errors (fail
/// closed) when `pan_token` has no usable key.
pub(crate) fn masker(strategy: Strategy, target: &str) -> Masker {
    let key = guc::token_key();
    let cached = MASKERS.with(|cache| {
        let cache = cache.borrow();
        if cache.0 == key {
            cache.1.get(&strategy).cloned()
        } else {
            None
        }
    });
    if let Some(masker) = cached {
        return masker;
    }
    let masker = match Masker::new(strategy, key.as_deref()) {
        Ok(masker) => masker,
        Err(e) => HoopError::MaskingFailed {
            target: target.to_string(),
            why: e.to_string(),
        }
        .report(),
    };
    MASKERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != key {
            *cache = (key, HashMap::new());
        }
        cache.1.insert(strategy, masker.clone());
    });
    masker
}

/// How a masked column is shown to the current session.
enum Shown {
    /// As stored: the session may see it, or the column is not masked (not
    /// protected, or its policy was removed since the plan was made).
    /// `until`: the expiry of the session that grants it.
    Raw {
        until: Option<i64>,
    },
    Masked(Masker),
}

/// Everything a masking decision depends on besides the session's expiry:
/// while these are unchanged, the decision stands. Policy, session and
/// token-key changes, and role attribute changes, bump the generation.
#[derive(Clone, Copy, PartialEq, Eq)]
struct DecisionInputs {
    relid: pg_sys::Oid,
    attnum: i16,
    generation: u64,
    outer_user: pg_sys::Oid,
    enforce_superuser: bool,
    token_key: usize,
    filling_matview: bool,
}

impl DecisionInputs {
    fn now(relid: pg_sys::Oid, attnum: i16) -> DecisionInputs {
        unsafe extern "C-unwind" {
            // miscadmin.h; cannot raise an error, so called without pgrx's boundary.
            #[link_name = "GetOuterUserId"]
            fn outer_user_id() -> pg_sys::Oid;
        }
        DecisionInputs {
            relid,
            attnum,
            generation: policy::generation(),
            outer_user: unsafe { outer_user_id() },
            // Read directly: `GucSetting::get` checks the calling thread
            // through a thread-local, on every masked value.
            enforce_superuser: unsafe { *guc::ENFORCE_SUPERUSER.as_ptr() },
            token_key: unsafe { *guc::TOKEN_KEY.as_ptr() } as usize,
            filling_matview: scope::filling_matview(),
        }
    }
}

/// Decides how column `attnum` of `relid` is shown now. Fails closed: when
/// the policies cannot be read, this raises an error rather than take the
/// column for an unprotected one.
fn decide(relid: pg_sys::Oid, attnum: i16) -> Shown {
    let policy = match policy::lookup_or_unreadable(relid) {
        Ok(Some(policy)) => policy,
        Ok(None) => return Shown::Raw { until: None },
        Err(policy::Unreadable) => HoopError::PolicyUnreadable {
            target: format!("column {attnum} of relation {}", relid.to_u32()),
        }
        .report(),
    };
    let Some(column) = policy.masked_column(attnum) else {
        return Shown::Raw { until: None };
    };
    if may_see_raw(&policy, column) {
        return Shown::Raw {
            until: session::current().map(|s| s.claims.exp),
        };
    }
    let name = format!("column {}.{}", policy.qualified_name(), column.column);
    Shown::Masked(masker(column.strategy, &name))
}

/// One call site's decision, kept in its `FmgrInfo` (`fn_extra`) for as long
/// as the expression lives: one execution of a query, or a PL/pgSQL
/// expression for a transaction. A query calls `mask_column` once per row,
/// so the policy is read once per query and column, not once per value.
pub(crate) struct CallSite {
    inputs: DecisionInputs,
    shown: Shown,
}

// A call site lives in palloc'd memory, freed with its memory context and
// never dropped: it must own nothing that needs dropping.
const _: () = assert!(!std::mem::needs_drop::<CallSite>());
const _: () = assert!(std::mem::align_of::<CallSite>() <= pg_sys::MAXIMUM_ALIGNOF as usize);

impl CallSite {
    /// The masker to apply, or `None` when the value is shown as stored.
    pub(crate) fn masker(&self) -> Option<&Masker> {
        match &self.shown {
            Shown::Raw { .. } => None,
            Shown::Masked(masker) => Some(masker),
        }
    }

    /// Whether the decision still stands. An expired session only ever
    /// takes rights away (its backend stays a gateway backend, see
    /// [`session`]), so only a raw decision needs the clock.
    fn stands(&self, inputs: &DecisionInputs) -> bool {
        self.inputs == *inputs
            && match self.shown {
                Shown::Raw { until: Some(exp) } => exp > session::now_unix(),
                _ => true,
            }
    }
}

/// The decision for column `attnum` of `relid` now: the one kept at `kept`
/// while it stands, else made again (into `kept`, or, when null, into a new
/// one allocated in `context`). The caller keeps the pointer returned.
#[inline]
pub(crate) unsafe fn kept_decision(
    kept: *mut CallSite,
    context: pg_sys::MemoryContext,
    relid: pg_sys::Oid,
    attnum: i16,
) -> *mut CallSite {
    let inputs = DecisionInputs::now(relid, attnum);
    if !kept.is_null() && (*kept).stands(&inputs) {
        return kept;
    }
    decide_again(kept, context, inputs)
}

/// [`kept_decision`] when the kept one does not stand (once per query and
/// column, or after a policy or session change).
#[cold]
#[inline(never)]
unsafe fn decide_again(
    kept: *mut CallSite,
    context: pg_sys::MemoryContext,
    inputs: DecisionInputs,
) -> *mut CallSite {
    let decided = CallSite {
        inputs,
        shown: decide(inputs.relid, inputs.attnum),
    };
    let site = if kept.is_null() {
        pg_sys::MemoryContextAlloc(context, std::mem::size_of::<CallSite>()) as *mut CallSite
    } else {
        kept
    };
    // Plain data (see `needs_drop` above): overwriting drops nothing.
    site.write(decided);
    site
}

/// `value` (a text datum) masked into a new text datum, written into the
/// varlena `allocate(size)` gives (`size` bytes, header included): a fresh
/// palloc for the function, a buffer reused row after row for the output
/// masking node ([`crate::output`]).
#[inline(always)]
pub(crate) unsafe fn mask_datum(
    value: pg_sys::Datum,
    masker: &Masker,
    mut allocate: impl FnMut(usize) -> *mut pg_sys::varlena,
) -> pg_sys::Datum {
    use pgrx::varlena::{
        set_varsize_4b, varatt_is_1b_e, varatt_is_4b_c, vardata_any, varsize_any_exhdr,
    };
    let mut text = value.cast_mut_ptr::<pg_sys::varlena>();
    // Values stored inline (the usual card number) are read in place; only
    // compressed or out-of-line values need detoasting.
    if varatt_is_1b_e(text) || varatt_is_4b_c(text) {
        text = detoast(text);
    }
    let len = varsize_any_exhdr(text);
    let bytes = std::slice::from_raw_parts(vardata_any(text) as *const u8, len);
    if masker.keeps_length() {
        // The usual strategies: masked straight into the datum returned.
        // Nothing that needs dropping is alive across `allocate`, which
        // calls palloc directly (an out-of-memory ERROR passes straight
        // through).
        let out = allocate(pg_sys::VARHDRSZ + len);
        set_varsize_4b(out, (pg_sys::VARHDRSZ + len) as i32);
        let body = std::slice::from_raw_parts_mut((out as *mut u8).add(pg_sys::VARHDRSZ), len);
        if masker.mask_value_to_slice(bytes, body) {
            return pg_sys::Datum::from(out);
        }
    }
    let mut masked = Vec::with_capacity(len.max(64));
    masker.mask_value_into(bytes, &mut masked);
    // pan_token and redact (other lengths). Were `allocate` to raise an
    // out-of-memory ERROR, the vector would be leaked, nothing else.
    let size = pg_sys::VARHDRSZ + masked.len();
    let out = allocate(size);
    set_varsize_4b(out, size as i32);
    std::ptr::copy_nonoverlapping(
        masked.as_ptr(),
        (out as *mut u8).add(pg_sys::VARHDRSZ),
        masked.len(),
    );
    pg_sys::Datum::from(out)
}

unsafe extern "C-unwind" {
    // The same symbol pg_sys binds, without pgrx's error boundary (run once
    // per masked value): an out-of-memory ERROR passes straight through.
    #[link_name = "palloc"]
    fn raw_palloc(size: usize) -> *mut c_void;
}

/// A compressed or out-of-line value, detoasted (in the current memory
/// context). Kept out of [`mask_datum`]: pgrx's error boundary around the
/// call needs a large stack frame that inline values should not pay for.
#[cold]
#[inline(never)]
unsafe fn detoast(text: *mut pg_sys::varlena) -> *mut pg_sys::varlena {
    pg_sys::pg_detoast_datum_packed(text)
}

/// A fresh varlena of `size` bytes in the current memory context.
pub(crate) fn palloc_varlena(size: usize) -> *mut pg_sys::varlena {
    unsafe { raw_palloc(size) as *mut pg_sys::varlena }
}

// `hoop.mask_column(value text, relid oid, attnum int2) RETURNS text`: the
// value of a masked column as the current session may see it. Inserted by
// the rewrite into every read of a masked column, so it runs once per value
// read: it is written against fmgr directly (no argument or result
// conversion beyond the text itself), decides once per call site (see
// [`CallSite`]), and masks straight into the datum it returns; a value shown
// raw is returned as the very datum it was given. Calling it directly
// reveals nothing the caller did not pass in.
extension_sql!(
    r#"
CREATE FUNCTION hoop.mask_column(value text, relid oid, attnum int2) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'hoop_mask_column';
"#,
    name = "mask_column",
);

#[no_mangle]
pub extern "C" fn pg_finfo_hoop_mask_column() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn hoop_mask_column(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let args = (*fcinfo).args.as_slice(3);
    let value = args[0].value;
    let relid = pg_sys::Oid::from(args[1].value.value() as u32);
    let attnum = args[2].value.value() as i16;
    let flinfo = (*fcinfo).flinfo;
    // Called without an FmgrInfo (never by the executor): nowhere to keep
    // the decision beyond this call.
    let (kept, context) = if flinfo.is_null() {
        (std::ptr::null_mut(), pg_sys::CurrentMemoryContext)
    } else {
        ((*flinfo).fn_extra as *mut CallSite, (*flinfo).fn_mcxt)
    };
    let site = kept_decision(kept, context, relid, attnum);
    if !flinfo.is_null() {
        (*flinfo).fn_extra = site as *mut c_void;
    }
    match (*site).masker() {
        None => value,
        Some(masker) => mask_datum(value, masker, palloc_varlena),
    }
}

/// A whole row of a protected table with its masked columns masked (for
/// `SELECT t FROM t`, `row_to_json(t)`, `to_jsonb(t)`, `hstore(t)` …).
#[pg_extern(stable, strict, parallel_safe)]
fn mask_row(row: AnyElement, relid: pg_sys::Oid) -> AnyElement {
    let policy = match policy::lookup_or_unreadable(relid) {
        Ok(Some(policy)) => policy,
        Ok(None) => return row,
        Err(policy::Unreadable) => HoopError::PolicyUnreadable {
            target: format!("a row of relation {}", relid.to_u32()),
        }
        .report(),
    };
    let hidden: Vec<(i16, Masker)> = policy
        .masked
        .iter()
        .filter(|column| !may_see_raw(&policy, column))
        .map(|column| {
            let name = format!("column {}.{}", policy.qualified_name(), column.column);
            (column.attnum, masker(column.strategy, &name))
        })
        .collect();
    if hidden.is_empty() {
        return row;
    }
    unsafe {
        let header =
            pg_sys::pg_detoast_datum(row.datum().cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let type_id = pgrx::heap_tuple_header_get_type_id(header);
        let typmod = pgrx::heap_tuple_header_get_typmod(header);
        let tupdesc = pg_sys::lookup_rowtype_tupdesc(type_id, typmod);
        let natts = (*tupdesc).natts as usize;
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::heap_tuple_header_get_datum_length(header) as u32,
            t_data: header,
            ..Default::default()
        };
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![false; natts];
        pg_sys::heap_deform_tuple(&mut tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        for (attnum, masker) in &hidden {
            let index = (*attnum as usize).wrapping_sub(1);
            if index >= natts || nulls[index] {
                continue;
            }
            let raw = pg_sys::text_to_cstring(values[index].cast_mut_ptr());
            let masked = masker.mask_value(&CStr::from_ptr(raw).to_string_lossy());
            let masked = std::ffi::CString::new(masked.replace('\0', "")).unwrap_or_default();
            values[index] = pg_sys::Datum::from(pg_sys::cstring_to_text(masked.as_ptr()));
        }
        let formed = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        let datum = pg_sys::HeapTupleHeaderGetDatum((*formed).t_data);
        if (*tupdesc).tdrefcount >= 0 {
            pg_sys::DecrTupleDescRefCount(tupdesc);
        }
        AnyElement::from_polymorphic_datum(datum, false, row.oid()).unwrap_or(row)
    }
}

/// Masks `value` as a card number with `strategy` (the same code the gateway runs).
#[pg_extern(stable, strict, parallel_safe)]
fn mask_pan(value: &str, strategy: default!(&str, "'pan_last4'")) -> String {
    masker(parse_strategy(strategy), "with hoop.mask_pan()").mask_value(value)
}

/// Masks every card number found in free text with `strategy`.
#[pg_extern(stable, strict, parallel_safe)]
fn mask_text(value: &str, strategy: default!(&str, "'pan_last4'")) -> String {
    masker(parse_strategy(strategy), "with hoop.mask_text()")
        .mask_text(value)
        .into_owned()
}

/// Whether `value` contains something that looks like a card number.
#[pg_extern(immutable, strict, parallel_safe)]
fn contains_pan(value: &str) -> bool {
    hoop_common::pan::contains_pan(value.as_bytes())
}

pub(crate) fn parse_strategy(name: &str) -> Strategy {
    match name.parse::<Strategy>() {
        Ok(strategy) => strategy,
        Err(_) => HoopError::InvalidDeclaration {
            message: format!("unknown masking strategy {name:?}"),
            hint: Some(format!(
                "Use one of: {}.",
                Strategy::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        .report(),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::*;
    use pgrx::prelude::*;

    const PAN: &str = "4111111111111111";

    #[pg_test]
    fn gateway_session_sees_masked_values_everywhere() {
        masked_table();
        start_session(&[]);
        assert_eq!(
            one_text("SELECT card_number FROM cards").as_deref(),
            Some("************1111")
        );
        // Filtering on the real number infers nothing.
        assert_eq!(
            one_text(&format!(
                "SELECT count(*)::text FROM cards WHERE card_number = '{PAN}'"
            ))
            .as_deref(),
            Some("0")
        );
        let json = one_text("SELECT row_to_json(c)::text FROM cards c").unwrap();
        assert!(
            !json.contains(PAN) && json.contains("************1111"),
            "{json}"
        );
        let whole = one_text("SELECT c::text FROM cards c").unwrap();
        assert!(!whole.contains(PAN), "{whole}");
        let derived = one_text(
            "SELECT reverse(card_number) || substr(card_number, 1, 6) || upper(card_number) FROM (SELECT * FROM cards) s",
        )
        .unwrap();
        assert!(!derived.contains("411111"), "{derived}");
        let agg = one_text("SELECT string_agg(card_number, ',') FROM cards").unwrap();
        assert_eq!(agg, "************1111");
        let cte =
            one_text("WITH x AS (SELECT card_number AS c FROM cards) SELECT c FROM x").unwrap();
        assert_eq!(cte, "************1111");
        let sub = one_text("SELECT (SELECT card_number FROM cards LIMIT 1)").unwrap();
        assert_eq!(sub, "************1111");
    }

    #[pg_test]
    fn views_and_functions_are_masked() {
        masked_table();
        run("CREATE VIEW card_view AS SELECT id, card_number FROM cards");
        run("CREATE FUNCTION card_of(int) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$ DECLARE r text; BEGIN SELECT card_number INTO r FROM cards WHERE id = $1; RETURN r; END $$");
        run("CREATE FUNCTION cards_sql() RETURNS SETOF text LANGUAGE sql AS $$ SELECT card_number FROM cards $$");
        start_session(&[]);
        assert_eq!(
            one_text("SELECT card_number FROM card_view").as_deref(),
            Some("************1111")
        );
        assert_eq!(
            one_text("SELECT card_of(1)").as_deref(),
            Some("************1111")
        );
        assert_eq!(
            one_text("SELECT * FROM cards_sql()").as_deref(),
            Some("************1111")
        );
        // The view's definition stays as written.
        let definition = one_text("SELECT pg_get_viewdef('card_view'::regclass)").unwrap();
        assert!(!definition.contains("mask_column"), "{definition}");
    }

    #[pg_test]
    fn unmask_claim_shows_raw_and_writes_still_work() {
        masked_table();
        start_session(&["public.cards.card_number"]);
        assert_eq!(
            one_text("SELECT card_number FROM cards").as_deref(),
            Some(PAN)
        );
        run("INSERT INTO cards VALUES (2, '5555555555554444', 'Bob', 'n2')");
        run("UPDATE cards SET card_number = '378282246310005' WHERE id = 2");
        run("INSERT INTO cards VALUES (2, '6011111111111117', 'Bob', 'n2') ON CONFLICT (id) DO UPDATE SET card_number = EXCLUDED.card_number");
        assert_eq!(
            one_text("SELECT card_number FROM cards WHERE id = 2").as_deref(),
            Some("6011111111111117")
        );
    }

    #[pg_test]
    fn replacing_the_token_changes_what_a_prepared_plan_shows() {
        masked_table();
        run("CREATE FUNCTION first_card() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT card_number FROM cards LIMIT 1); END $$");
        start_session(&["public.cards.card_number"]);
        assert_eq!(one_text("SELECT first_card()").as_deref(), Some(PAN));
        assert_eq!(one_text("SELECT first_card()").as_deref(), Some(PAN));
        // Same backend, same cached plan, new token without the unmask claim.
        start_session(&[]);
        assert_eq!(
            one_text("SELECT first_card()").as_deref(),
            Some("************1111")
        );
    }

    #[pg_test]
    fn varchar_and_other_strategies() {
        run("CREATE TABLE v (id int, pan varchar(19), pan2 char(16))");
        run("INSERT INTO v VALUES (1, '4111111111111111', '5555555555554444')");
        run("SELECT hoop_mask('v', 'pan', 'pan_bin_last4')");
        run("SELECT hoop_mask('v', 'pan2', 'redact')");
        start_session(&[]);
        assert_eq!(
            one_text("SELECT pan::text FROM v").as_deref(),
            Some("411111******1111")
        );
        let redacted = one_text("SELECT pan2::text FROM v").unwrap();
        assert!(!redacted.contains("5555"), "{redacted}");
        assert_eq!(
            one_text("SELECT pg_typeof(pan)::text FROM v").as_deref(),
            Some("character varying")
        );
    }

    #[pg_test]
    fn mask_functions_use_common_code() {
        assert_eq!(
            one_text("SELECT hoop.mask_pan('4111 1111 1111 1111')").as_deref(),
            Some("**** **** **** 1111")
        );
        assert_eq!(
            one_text("SELECT hoop.mask_pan('4111111111111111', 'pan_bin_last4')").as_deref(),
            Some("411111******1111")
        );
        let text = one_text("SELECT hoop.mask_text('card 4111111111111111 paid')").unwrap();
        assert!(!text.contains(PAN), "{text}");
        expect_error(
            "SELECT hoop.mask_pan('4111111111111111', 'pan_token')",
            "55000",
        );
        expect_error("SELECT hoop.mask_pan('4111111111111111', 'rot13')", "22023");
    }

    #[pg_test]
    fn mask_column_decides_per_call_site_and_fails_closed() {
        masked_table();
        start_session(&[]);
        let call = "SELECT hoop.mask_column(card_number, 'public.cards'::regclass, 2::int2) FROM public.cards";
        // Called directly: masked for this session, raw for a column that
        // is not masked, and nothing else is revealed.
        assert_eq!(one_text(call).as_deref(), Some("************1111"));
        assert_eq!(
            one_text(
                "SELECT hoop.mask_column('4111111111111111', 'public.cards'::regclass, 3::int2)"
            )
            .as_deref(),
            Some(PAN)
        );
        // A policy that cannot be read is never taken for "not protected".
        crate::policy::pretend_unreadable(true);
        let unreadable = std::panic::catch_unwind(|| {
            (
                sql_error(&format!(
                    "SELECT hoop.mask_column('{PAN}', 'public.cards'::regclass, 2::int2)"
                )),
                sql_error(
                    "SELECT hoop.mask_row(c, 'public.cards'::regclass)::text FROM public.cards c",
                ),
            )
        });
        crate::policy::pretend_unreadable(false);
        let (column, row) = unreadable.expect("no panic");
        for failure in [column, row] {
            let (state, message) = failure.expect("unreadable policy: an error, not a value");
            assert_eq!(state, "55000", "{message}");
            assert!(message.contains("cannot be read"), "{message}");
        }
        // Readable again: masked as before.
        assert_eq!(one_text(call).as_deref(), Some("************1111"));
    }

    #[pg_test]
    fn superuser_without_session_sees_raw_unless_enforced() {
        masked_table();
        assert_eq!(
            one_text("SELECT card_number FROM cards").as_deref(),
            Some(PAN)
        );
        run("SET hoop.enforce_superuser = on");
        expect_error("SELECT card_number FROM cards", "42501");
    }
}
