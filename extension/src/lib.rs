//! hoop, the in-database half of hoop: masks card-number columns declared
//! with `hoop_mask()`, refuses protected tables to connections that did not
//! come through the hoop gateway, and blocks tampering in gateway sessions.
//!
//! - [`guc`]: every `hoop.*` parameter.
//! - [`session`]: `hoop.session`, the gateway's signed token, verified here.
//! - [`policy`]: which tables are protected and which columns masked (catalog + cache).
//! - [`declare`]: `hoop_mask()`, `hoop_unmask()`, `hoop_protect()` (SQL API in `sql/`).
//! - [`masking`]: the query rewrite and the masking functions it inserts.
//! - [`output`]: the plan node that masks a `SELECT`'s output columns.
//! - [`hooks`]: post-parse-analyze, planner, executor and utility hooks.
//! - [`scope`]: what a hook holds across the next hook, unwound when an ERROR passes.
//! - [`nodes`]: reading node trees and lists.
//! - [`compat`]: every difference between Postgres 15, 17 and 18.
//! - [`error`]: the one error type, with its SQLSTATEs.

use pgrx::prelude::*;

mod compat;
mod declare;
mod error;
mod guc;
mod hooks;
mod masking;
mod nodes;
mod output;
mod policy;
mod scope;
mod session;

::pgrx::pg_module_magic!();

extension_sql_file!("../../sql/001_catalog.sql", name = "catalog", bootstrap);
extension_sql_file!("../../sql/002_api.sql", name = "api", finalize);

/// Refuses to load outside `shared_preload_libraries` (as pgaudit does): hooks
/// installed late, in one backend only, would fail open everywhere else.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        error::HoopError::NotPreloaded.report();
    }
    guc::register();
    policy::register_invalidation_callbacks();
    scope::register();
    output::register();
    hooks::install();
}

#[cfg(any(test, feature = "pg_test"))]
mod testing;

/// Configuration for `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let keys = format!(
            "hoop.trusted_keys = '{}'",
            crate::testing::signer().trusted_key_entry()
        );
        vec![
            "shared_preload_libraries = 'hoop'",
            Box::leak(keys.into_boxed_str()),
        ]
    }
}
