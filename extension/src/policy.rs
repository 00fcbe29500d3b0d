//! Which relations are protected and which columns are masked: read from the
//! extension's catalog (`hoop.masked_column_rules`, `hoop.protected_table_rules`)
//! and cached per backend until a relcache or catalog invalidation arrives.
//!
//! The tables are read with catalog scans (see [`scan_table`]), never through
//! SPI: a lookup runs no query, so no hook sees it and no snapshot is taken.

use crate::nodes::list_length;
use hoop_common::mask::Strategy;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::FromDatum;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A masked column of a relation.
#[derive(Debug, Clone)]
pub(crate) struct MaskedColumn {
    pub(crate) attnum: i16,
    pub(crate) column: String,
    pub(crate) strategy: Strategy,
}

/// The policy of one protected relation. Names are those of the relation the
/// policy was declared on (for a partition or an inheritance child: the
/// table it inherits the policy from).
#[derive(Debug, Clone)]
pub(crate) struct RelationPolicy {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) masked: Vec<MaskedColumn>,
}

impl RelationPolicy {
    pub(crate) fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub(crate) fn masked_column(&self, attnum: i16) -> Option<&MaskedColumn> {
        self.masked.iter().find(|column| column.attnum == attnum)
    }
}

/// Object ids of the installed extension in this database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extension {
    pub(crate) mask_column_fn: pg_sys::Oid,
    pub(crate) mask_row_fn: pg_sys::Oid,
    /// `hoop.masked_column_rules` and `hoop.protected_table_rules`.
    masked_rules: pg_sys::Oid,
    protected_rules: pg_sys::Oid,
}

#[derive(Clone)]
enum Cached<T> {
    Unknown,
    Known(T),
}

/// Every protected relation of this database, by OID.
type Policies = Rc<HashMap<pg_sys::Oid, Rc<RelationPolicy>>>;

thread_local! {
    static EXTENSION: RefCell<Cached<Option<Extension>>> = const { RefCell::new(Cached::Unknown) };
    static POLICIES: RefCell<Cached<Policies>> =
        const { RefCell::new(Cached::Unknown) };
    static INTERNAL_DEPTH: Cell<u32> = const { Cell::new(0) };
    static LOADING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the extension is running one of its own catalog queries; hooks
/// then do nothing but chain.
pub(crate) fn internal() -> bool {
    INTERNAL_DEPTH.with(|depth| depth.get() > 0)
}

/// Runs `f` as an internal statement (see [`internal`]), restoring the depth
/// even when `f` raises an error.
pub(crate) fn as_internal<R>(f: impl FnOnce() -> R) -> R {
    INTERNAL_DEPTH.with(|depth| depth.set(depth.get() + 1));
    PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .finally(|| INTERNAL_DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1))))
        .execute()
}

/// Registers the invalidation callbacks; called once from `_PG_init`.
pub(crate) fn register_invalidation_callbacks() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as _,
            Some(syscache_callback),
            pg_sys::Datum::from(0),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as _,
            Some(syscache_callback),
            pg_sys::Datum::from(0),
        );
        // A role that gains or loses SUPERUSER changes whether it sees raw
        // values: masking decisions kept by running queries are made again.
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::AUTHOID as _,
            Some(role_callback),
            pg_sys::Datum::from(0),
        );
    }
}

/// Forgets every cached policy (a relation's policy or its names changed).
pub(crate) fn forget_policies() {
    POLICIES.with(|cache| *cache.borrow_mut() = Cached::Unknown);
    bump_generation();
}

/// Read on every masked value: a plain static (one relaxed load), not a
/// thread-local, which costs a `__tls_get_addr` call in a shared library.
/// A backend runs hoop on one thread; the atomic only makes that safe Rust.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Changes whenever a policy or the session changes, so per-call caches of a
/// masking decision know when to decide again.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

pub(crate) fn bump_generation() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    // Relcache invalidations are rare in steady state and the policy table is
    // small: reloading all of it is simpler than tracking which relation a
    // new policy was declared for.
    forget_policies();
}

#[pg_guard]
unsafe extern "C-unwind" fn syscache_callback(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    EXTENSION.with(|cache| *cache.borrow_mut() = Cached::Unknown);
    forget_policies();
}

#[pg_guard]
unsafe extern "C-unwind" fn role_callback(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    bump_generation();
}

unsafe fn lookup_function(name: &CStr, arg_types: &[pg_sys::Oid]) -> pg_sys::Oid {
    let mut names = std::ptr::null_mut();
    names = pg_sys::lappend(
        names,
        pg_sys::makeString(pg_sys::pstrdup(c"hoop".as_ptr())).cast(),
    );
    names = pg_sys::lappend(
        names,
        pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast(),
    );
    pg_sys::LookupFuncName(names, arg_types.len() as i32, arg_types.as_ptr(), true)
}

/// The installed extension, or `None` when `CREATE EXTENSION hoop` has not
/// run (completely) in this database: then nothing is protected here.
pub(crate) fn extension() -> Option<Extension> {
    if let Cached::Known(known) = EXTENSION.with(|cache| cache.borrow().clone()) {
        return known;
    }
    let found = unsafe {
        if !pg_sys::IsTransactionState() {
            return None;
        }
        let ext = pg_sys::get_extension_oid(c"hoop".as_ptr(), true);
        if ext == pg_sys::InvalidOid {
            None
        } else {
            let mask_column_fn = lookup_function(
                c"mask_column",
                &[pg_sys::TEXTOID, pg_sys::OIDOID, pg_sys::INT2OID],
            );
            let mask_row_fn =
                lookup_function(c"mask_row", &[pg_sys::ANYELEMENTOID, pg_sys::OIDOID]);
            let owned_by_hoop = |class: pg_sys::Oid, object: pg_sys::Oid| {
                object != pg_sys::InvalidOid && pg_sys::getExtensionOfObject(class, object) == ext
            };
            let schema = pg_sys::get_namespace_oid(c"hoop".as_ptr(), true);
            let masked_rules = pg_sys::get_relname_relid(c"masked_column_rules".as_ptr(), schema);
            let protected_rules =
                pg_sys::get_relname_relid(c"protected_table_rules".as_ptr(), schema);
            let functions = [mask_column_fn, mask_row_fn];
            let tables = [masked_rules, protected_rules];
            if functions
                .iter()
                .all(|&f| owned_by_hoop(pg_sys::ProcedureRelationId, f))
                && tables
                    .iter()
                    .all(|&t| owned_by_hoop(pg_sys::RelationRelationId, t))
            {
                Some(Extension {
                    mask_column_fn,
                    mask_row_fn,
                    masked_rules,
                    protected_rules,
                })
            } else {
                None
            }
        }
    };
    EXTENSION.with(|cache| *cache.borrow_mut() = Cached::Known(found));
    found
}

/// Every row of one of hoop's tables, read the way the catalog caches read
/// Postgres's own catalogs: a system-table scan of the latest committed rows
/// (and this transaction's own), with the table's lock released as soon as
/// it is read. No SPI, no transaction snapshot (`SET TRANSACTION ISOLATION
/// LEVEL` still works after a lookup), nothing of hoop left in `pg_locks`,
/// and no permission check (the tables are not readable by PUBLIC; the
/// extension itself reads them).
///
/// `SnapshotSelf` rather than an MVCC snapshot: hoop's tables are not system
/// catalogs, and an MVCC scan of them in a SERIALIZABLE transaction would
/// take predicate locks, making the session's own serialization conflicts
/// depend on hoop's bookkeeping.
unsafe fn scan_table(relid: pg_sys::Oid, mut each: impl FnMut(&TableRow)) {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    let relation = pg_sys::table_open(relid, lock);
    let scan = pg_sys::systable_beginscan(
        relation,
        pg_sys::InvalidOid,
        false,
        &raw mut pg_sys::SnapshotSelfData,
        0,
        std::ptr::null_mut(),
    );
    loop {
        let tuple = pg_sys::systable_getnext(scan);
        if tuple.is_null() {
            break;
        }
        each(&TableRow {
            tuple,
            desc: (*relation).rd_att,
        });
    }
    pg_sys::systable_endscan(scan);
    pg_sys::table_close(relation, lock);
}

struct TableRow {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl TableRow {
    unsafe fn get<T: FromDatum>(&self, attnum: i32) -> Option<T> {
        let mut is_null = false;
        let datum = pg_sys::heap_getattr(self.tuple, attnum, self.desc, &mut is_null);
        T::from_polymorphic_datum(datum, is_null, pg_sys::InvalidOid)
    }
}

// Columns of hoop.masked_column_rules and hoop.protected_table_rules (sql/001_catalog.sql).
const RULE_RELID: i32 = 1;
const RULE_ATTNUM: i32 = 2;
const RULE_STRATEGY: i32 = 4;

/// The relation and every table that inherits from it, partitions and
/// inheritance children alike, at any depth: a declaration follows the data.
unsafe fn with_inheritors(root: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    unsafe extern "C-unwind" {
        // catalog/pg_inherits.h, not in pgrx's bindings; the same in 15, 17 and 18.
        fn find_all_inheritors(
            parent: pg_sys::Oid,
            lockmode: pg_sys::LOCKMODE,
            numparents: *mut *mut pg_sys::List,
        ) -> *mut pg_sys::List;
    }
    let list = pg_sys::ffi::pg_guard_ffi_boundary(|| {
        find_all_inheritors(root, pg_sys::NoLock as _, std::ptr::null_mut())
    });
    let oids = (0..list_length(list))
        .map(|n| (*(*list).elements.add(n)).oid_value)
        .collect();
    pg_sys::list_free(list);
    oids
}

unsafe fn cstring(ptr: *const std::ffi::c_char) -> Option<String> {
    (!ptr.is_null()).then(|| CStr::from_ptr(ptr).to_string_lossy().into_owned())
}

/// A masked column as declared: its name in the declared table and the strategy.
struct DeclaredColumn {
    name: CString,
    strategy: Strategy,
}

/// Whether `relid` itself has a row in hoop's tables (read directly, not
/// from the cache: the event triggers ask about tables being dropped).
pub(crate) fn declared(relid: pg_sys::Oid) -> bool {
    let Some(ext) = extension() else {
        return false;
    };
    let mut found = false;
    unsafe {
        for table in [ext.masked_rules, ext.protected_rules] {
            scan_table(table, |row| {
                found |= row.get::<pg_sys::Oid>(RULE_RELID) == Some(relid);
            });
        }
    }
    found
}

fn load_policies(ext: &Extension) -> HashMap<pg_sys::Oid, Rc<RelationPolicy>> {
    // (declared table, masked attribute number and strategy; None: protected only)
    let mut rules: Vec<(pg_sys::Oid, Option<(i16, String)>)> = Vec::new();
    unsafe {
        scan_table(ext.masked_rules, |row| {
            if let (Some(relid), Some(attnum), Some(strategy)) = (
                row.get::<pg_sys::Oid>(RULE_RELID),
                row.get::<i16>(RULE_ATTNUM),
                row.get::<String>(RULE_STRATEGY),
            ) {
                rules.push((relid, Some((attnum, strategy))));
            }
        });
        scan_table(ext.protected_rules, |row| {
            if let Some(relid) = row.get::<pg_sys::Oid>(RULE_RELID) {
                rules.push((relid, None));
            }
        });
    }
    let mut policies: HashMap<pg_sys::Oid, RelationPolicy> = HashMap::new();
    for (root, masked) in rules {
        unsafe {
            // A rule whose table is gone (dropped in this transaction) is ignored.
            let Some(table) = cstring(pg_sys::get_rel_name(root)) else {
                continue;
            };
            let Some(schema) = cstring(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(root)))
            else {
                continue;
            };
            let column = match masked {
                Some((attnum, strategy)) => {
                    let name = pg_sys::get_attname(root, attnum, true);
                    // A dropped column keeps its number under a placeholder name.
                    match cstring(name) {
                        Some(text) if !text.starts_with("........pg.dropped.") => {
                            Some(DeclaredColumn {
                                name: CStr::from_ptr(name).to_owned(),
                                strategy: strategy.parse().unwrap_or(Strategy::Redact),
                            })
                        }
                        _ => continue,
                    }
                }
                None => None,
            };
            // The masked column is found by name in each inheritor: its
            // attribute number may differ from the declared table's.
            for relid in with_inheritors(root) {
                let policy = policies.entry(relid).or_insert_with(|| RelationPolicy {
                    schema: schema.clone(),
                    table: table.clone(),
                    masked: Vec::new(),
                });
                if let Some(column) = &column {
                    let attnum = pg_sys::get_attnum(relid, column.name.as_ptr());
                    if attnum != pg_sys::InvalidAttrNumber as i16 {
                        policy.masked.push(MaskedColumn {
                            attnum,
                            column: column.name.to_string_lossy().into_owned(),
                            strategy: column.strategy,
                        });
                    }
                }
            }
        }
    }
    policies
        .into_iter()
        .map(|(relid, policy)| (relid, Rc::new(policy)))
        .collect()
}

fn policies() -> Option<Policies> {
    if let Cached::Known(known) = POLICIES.with(|cache| cache.borrow().clone()) {
        return Some(known);
    }
    // Only a transaction in progress may read the catalog. An aborted one
    // accepts nothing but transaction control (which reads no table), and
    // locks taken then would belong to a resource owner already released.
    if unsafe { !pg_sys::IsTransactionState() } {
        return None;
    }
    let ext = extension()?;
    if LOADING.with(|loading| loading.replace(true)) {
        // A lookup while loading (an invalidation arrived mid-load): the
        // load in progress will answer.
        return None;
    }
    let loaded = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        Rc::new(load_policies(&ext))
    }))
    .finally(|| LOADING.with(|loading| loading.set(false)))
    .execute();
    POLICIES.with(|cache| *cache.borrow_mut() = Cached::Known(loaded.clone()));
    Some(loaded)
}

/// The policy of `relid`, or `None` when it is not protected.
pub(crate) fn lookup(relid: pg_sys::Oid) -> Option<Rc<RelationPolicy>> {
    policies()?.get(&relid).cloned()
}

/// The policies could not be read at this moment (no transaction in
/// progress, or a lookup while they are being loaded): a caller about to
/// show a value must not take this for "not protected".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unreadable;

/// [`lookup`] for a caller that fails closed: `Ok(None)` only when `relid`
/// is known not to be protected.
pub(crate) fn lookup_or_unreadable(
    relid: pg_sys::Oid,
) -> Result<Option<Rc<RelationPolicy>>, Unreadable> {
    Ok(policies().ok_or(Unreadable)?.get(&relid).cloned())
}

/// Tests only: makes the policies unreadable, as while they are being
/// loaded (`true`), or readable again (`false`).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn pretend_unreadable(unreadable: bool) {
    forget_policies();
    LOADING.with(|loading| loading.set(unreadable));
}

/// Whether any relation at all is protected in this database.
pub(crate) fn any_protected() -> bool {
    policies().is_some_and(|all| !all.is_empty())
}
