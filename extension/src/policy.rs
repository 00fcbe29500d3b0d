//! Which relations are protected and which columns are masked: read from the
//! extension's catalog (`hoop.masked_column_rules`, `hoop.protected_table_rules`)
//! and cached per backend until a relcache or catalog invalidation arrives.
//!
//! The catalog is read through SPI with [`internal`] set, so the extension's
//! own hooks ignore the lookup queries (pgaudit's `internalStatement`).

use hoop_common::mask::Strategy;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// A masked column of a relation.
#[derive(Debug, Clone)]
pub(crate) struct MaskedColumn {
    pub(crate) attnum: i16,
    pub(crate) column: String,
    pub(crate) strategy: Strategy,
}

/// The policy of one protected relation. Names are those of the relation the
/// policy was declared on (the root, for a partition).
#[derive(Debug, Clone)]
pub(crate) struct RelationPolicy {
    /// The table the policy was declared on (itself, or a partition's root).
    pub(crate) root: pg_sys::Oid,
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
    }
}

/// Forgets every cached policy (a relation's policy or its names changed).
pub(crate) fn forget_policies() {
    POLICIES.with(|cache| *cache.borrow_mut() = Cached::Unknown);
    bump_generation();
}

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Changes whenever a policy or the session changes, so per-call caches of a
/// masking decision know when to decide again.
pub(crate) fn generation() -> u64 {
    GENERATION.with(|generation| generation.get())
}

pub(crate) fn bump_generation() {
    GENERATION.with(|generation| generation.set(generation.get().wrapping_add(1)));
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
            let loader = lookup_function(c"_load_policies", &[]);
            let owned_by_hoop = |f: pg_sys::Oid| {
                f != pg_sys::InvalidOid
                    && pg_sys::getExtensionOfObject(pg_sys::ProcedureRelationId, f) == ext
            };
            if owned_by_hoop(mask_column_fn) && owned_by_hoop(mask_row_fn) && owned_by_hoop(loader)
            {
                Some(Extension {
                    mask_column_fn,
                    mask_row_fn,
                })
            } else {
                None
            }
        }
    };
    EXTENSION.with(|cache| *cache.borrow_mut() = Cached::Known(found));
    found
}

fn load_policies() -> HashMap<pg_sys::Oid, Rc<RelationPolicy>> {
    let mut policies: HashMap<pg_sys::Oid, RelationPolicy> = HashMap::new();
    let rows = as_internal(|| {
        with_snapshot(|| {
            Spi::connect(|client| -> Result<Vec<_>, pgrx::spi::Error> {
                let table = client.select(
                    "SELECT relid, schema_name, table_name, attnum, column_name, strategy, root FROM hoop._load_policies()",
                    None,
                    &[],
                )?;
                let mut rows = Vec::new();
                for row in table {
                    rows.push((
                        row.get::<pg_sys::Oid>(1)?,
                        row.get::<String>(2)?,
                        row.get::<String>(3)?,
                        row.get::<i16>(4)?,
                        row.get::<String>(5)?,
                        row.get::<String>(6)?,
                        row.get::<pg_sys::Oid>(7)?,
                    ));
                }
                Ok(rows)
            })
        })
    });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // Fail closed: without its policies hoop cannot say what is safe.
            pgrx::error!("hoop: cannot read the masking policies: {e}");
        }
    };
    for (relid, schema, table, attnum, column, strategy, root) in rows {
        let (Some(relid), Some(schema), Some(table)) = (relid, schema, table) else {
            continue;
        };
        let policy = policies.entry(relid).or_insert_with(|| RelationPolicy {
            root: root.unwrap_or(relid),
            schema,
            table,
            masked: Vec::new(),
        });
        if let (Some(attnum), Some(column), Some(strategy)) = (attnum, column, strategy) {
            let strategy = strategy.parse::<Strategy>().unwrap_or(Strategy::Redact);
            policy.masked.push(MaskedColumn {
                attnum,
                column,
                strategy,
            });
        }
    }
    policies
        .into_iter()
        .map(|(relid, policy)| (relid, Rc::new(policy)))
        .collect()
}

fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    unsafe {
        if pg_sys::ActiveSnapshotSet() {
            f()
        } else {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            let result = f();
            pg_sys::PopActiveSnapshot();
            result
        }
    }
}

fn policies() -> Option<Policies> {
    if let Cached::Known(known) = POLICIES.with(|cache| cache.borrow().clone()) {
        return Some(known);
    }
    extension()?;
    if LOADING.with(|loading| loading.replace(true)) {
        // A lookup while loading (an invalidation arrived mid-load): the
        // load in progress will answer.
        return None;
    }
    let loaded = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Rc::new(load_policies())))
        .finally(|| LOADING.with(|loading| loading.set(false)))
        .execute();
    POLICIES.with(|cache| *cache.borrow_mut() = Cached::Known(loaded.clone()));
    Some(loaded)
}

/// The policy of `relid`, or `None` when it is not protected.
pub(crate) fn lookup(relid: pg_sys::Oid) -> Option<Rc<RelationPolicy>> {
    policies()?.get(&relid).cloned()
}

/// Whether any relation at all is protected in this database.
pub(crate) fn any_protected() -> bool {
    policies().is_some_and(|all| !all.is_empty())
}
