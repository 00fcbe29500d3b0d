//! Declaring policies: the Rust half of `hoop_mask()`, `hoop_unmask()`,
//! `hoop_protect()` and `hoop_unprotect()` (the SQL half is in
//! sql/002_api.sql). Checks run as the caller; the catalog is then written
//! through the `hoop._store_*` functions as the bootstrap superuser, since
//! ordinary roles cannot write hoop's tables.

use crate::compat;
use crate::error::{self, HoopError};
use crate::masking::{masker, parse_strategy};
use crate::policy;
use crate::session::role_name;
use hoop_common::mask::Strategy;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

fn require_extension() {
    if policy::extension().is_none() {
        HoopError::NotInstalled.report();
    }
}

unsafe fn qualified_table_name(relid: pg_sys::Oid) -> Option<String> {
    let name = pg_sys::get_rel_name(relid);
    if name.is_null() {
        return None;
    }
    let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
    let schema = if schema.is_null() {
        String::from("?")
    } else {
        CStr::from_ptr(schema).to_string_lossy().into_owned()
    };
    Some(format!(
        "{schema}.{}",
        CStr::from_ptr(name).to_string_lossy()
    ))
}

/// The table's name, after checking it is a table the caller may declare on.
fn checked_table(relid: pg_sys::Oid) -> String {
    unsafe {
        let Some(table) = qualified_table_name(relid) else {
            HoopError::InvalidDeclaration {
                message: format!("relation with OID {} does not exist", relid.to_u32()),
                hint: None,
            }
            .report();
        };
        let kind = pg_sys::get_rel_relkind(relid) as u8;
        if kind != pg_sys::RELKIND_RELATION && kind != pg_sys::RELKIND_PARTITIONED_TABLE {
            HoopError::InvalidDeclaration {
                message: format!("{table} is not a table"),
                hint: Some(
                    "Declare masking on the table a view reads from; views are masked through it."
                        .into(),
                ),
            }
            .report();
        }
        if !pg_sys::superuser() && !compat::owns_relation(relid, pg_sys::GetUserId()) {
            HoopError::NotOwner { table }.report();
        }
        table
    }
}

fn caller() -> String {
    unsafe { role_name(pg_sys::GetUserId()) }
}

/// Runs `f` as the bootstrap superuser (the owner of hoop's catalog), with
/// hoop's own hooks quiet.
fn as_catalog_owner<R>(f: impl FnOnce() -> R) -> R {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    // On error the transaction abort restores the user id.
    let result = policy::as_internal(f);
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

fn store(sql: &str, args: &[DatumWithOid]) -> Option<String> {
    as_catalog_owner(|| Spi::get_one_with_args::<String>(sql, args)).unwrap_or_else(|e| {
        pgrx::error!("hoop: cannot update the masking catalog: {e}");
    })
}

fn changed(relid: pg_sys::Oid) {
    unsafe {
        if pg_sys::get_rel_relkind(relid) != 0 {
            pg_sys::CacheInvalidateRelcacheByRelid(relid);
        }
    }
    policy::forget_policies();
}

/// For the event triggers: whether a dropped or altered table has a policy
/// row, so that DROP and ALTER TABLE of every other table touch nothing of
/// hoop's (no write, no lock left behind).
#[pg_extern(name = "_declared", stable, parallel_safe)]
fn declared(relid: pg_sys::Oid) -> bool {
    policy::declared(relid)
}

#[pg_extern(name = "_declare_mask", volatile)]
fn declare_mask(relid: pg_sys::Oid, column: &str, strategy: &str) {
    require_extension();
    let strategy = parse_strategy(strategy);
    let table = checked_table(relid);
    let qualified = format!("{table}.{column}");
    if strategy == Strategy::PanToken {
        // Fail now rather than on every read.
        masker(strategy, &format!("column {qualified}"));
    }
    let attnum = unsafe {
        let name = CString::new(column).unwrap_or_default();
        pg_sys::get_attnum(relid, name.as_ptr())
    };
    if attnum <= 0 {
        HoopError::InvalidDeclaration {
            message: format!("column {column:?} of {table} does not exist"),
            hint: None,
        }
        .report();
    }
    unsafe {
        let type_id = pg_sys::get_atttype(relid, attnum);
        let base = pg_sys::getBaseType(type_id);
        if base != pg_sys::TEXTOID && base != pg_sys::VARCHAROID && base != pg_sys::BPCHAROID {
            let type_name = CStr::from_ptr(pg_sys::format_type_be(type_id))
                .to_string_lossy()
                .into_owned();
            HoopError::UnsupportedColumnType {
                column: qualified,
                type_name,
            }
            .report();
        }
    }
    let who = caller();
    let previous = store(
        "SELECT hoop._store_mask($1, $2, $3, $4, $5)",
        &[
            relid.into(),
            attnum.into(),
            column.into(),
            strategy.as_str().into(),
            who.as_str().into(),
        ],
    );
    changed(relid);
    error::log_server_only(format!(
        "hoop: policy change by {who}: {qualified} masked with {} (was {})",
        strategy.as_str(),
        previous.as_deref().unwrap_or("unmasked")
    ));
}

#[pg_extern(name = "_declare_unmask", volatile)]
fn declare_unmask(relid: pg_sys::Oid, column: &str) {
    require_extension();
    let table = checked_table(relid);
    let who = caller();
    let previous = store(
        "SELECT hoop._drop_mask($1, $2, $3)",
        &[relid.into(), column.into(), who.as_str().into()],
    );
    changed(relid);
    match previous {
        Some(strategy) => error::log_server_only(format!(
            "hoop: policy change by {who}: {table}.{column} no longer masked (was {strategy})"
        )),
        None => error::notice(format!("hoop: column {column} of {table} was not masked")),
    }
}

#[pg_extern(name = "_declare_protect", volatile)]
fn declare_protect(relid: pg_sys::Oid) {
    require_extension();
    let table = checked_table(relid);
    let who = caller();
    store(
        "SELECT hoop._store_protect($1, $2)",
        &[relid.into(), who.as_str().into()],
    );
    changed(relid);
    error::log_server_only(format!("hoop: policy change by {who}: {table} protected"));
}

#[pg_extern(name = "_declare_unprotect", volatile)]
fn declare_unprotect(relid: pg_sys::Oid) {
    require_extension();
    let table = checked_table(relid);
    let who = caller();
    let still_masked = store(
        "SELECT hoop._drop_protect($1, $2)",
        &[relid.into(), who.as_str().into()],
    );
    changed(relid);
    error::log_server_only(format!(
        "hoop: policy change by {who}: {table} no longer explicitly protected"
    ));
    if still_masked.as_deref() == Some("masked") {
        error::notice(format!(
            "hoop: {table} stays protected while it has masked columns (hoop_unmask them first)"
        ));
    }
}

/// Called by the trigger on hoop's catalog tables, so every change (also a
/// restore or a manual edit by a superuser) reaches every backend's cache
/// and every cached plan.
#[pg_extern(name = "_invalidate_relation", volatile, strict)]
fn invalidate_relation(relid: pg_sys::Oid) {
    changed(relid);
}

/// The verified claims of this backend's session as JSON, or NULL (see
/// `hoop.session_info()`).
#[pg_extern(name = "_session_claims", stable)]
fn session_claims() -> Option<pgrx::JsonB> {
    crate::session::current_claims_json().map(pgrx::JsonB)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn declarations_are_listed_recorded_and_follow_renames() {
        masked_table();
        assert_eq!(
            one_text("SELECT schema_name || '.' || table_name || '.' || column_name || ':' || strategy FROM hoop.masked_columns").as_deref(),
            Some("public.cards.card_number:pan_last4")
        );
        run("SELECT hoop_mask('cards', 'card_number', 'redact')");
        assert_eq!(
            one_text("SELECT strategy FROM hoop.masked_columns").as_deref(),
            Some("redact")
        );
        run("ALTER TABLE cards RENAME COLUMN card_number TO pan");
        run("ALTER TABLE cards RENAME TO cards2");
        assert_eq!(
            one_text("SELECT table_name || '.' || column_name FROM hoop.masked_columns").as_deref(),
            Some("cards2.pan")
        );
        assert_eq!(
            one_text("SELECT string_agg(action, ',' ORDER BY id) FROM hoop.policy_history")
                .as_deref(),
            Some("mask,mask")
        );
        run("SELECT hoop_unmask('cards2', 'pan')");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM hoop.masked_columns").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn only_text_columns_and_owners() {
        masked_table();
        expect_error("SELECT hoop_mask('cards', 'id', 'pan_last4')", "42804");
        expect_error("SELECT hoop_mask('cards', 'nope', 'pan_last4')", "22023");
        expect_error("SELECT hoop_mask('cards', 'note', 'rot13')", "22023");
        expect_error(
            "ALTER TABLE cards ALTER COLUMN card_number TYPE bytea USING card_number::bytea",
            "42804",
        );
        run("CREATE ROLE hoop_test_stranger");
        run("GRANT SELECT ON cards TO hoop_test_stranger");
        run("SET ROLE hoop_test_stranger");
        expect_error("SELECT hoop_unmask('cards', 'card_number')", "42501");
        expect_error(
            "INSERT INTO hoop.masked_column_rules VALUES ('cards', 3, 'note', 'redact', 'x')",
            "42501",
        );
        run("RESET ROLE");
    }

    #[pg_test]
    fn drops_remove_policies() {
        masked_table();
        run("SELECT hoop_mask('cards', 'note', 'redact')");
        run("ALTER TABLE cards DROP COLUMN note");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM hoop.masked_column_rules").unwrap(),
            Some(1)
        );
        run("DROP TABLE cards");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM hoop.masked_column_rules").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn statistics_never_hold_raw_values() {
        masked_table();
        run("INSERT INTO cards SELECT g, '4111111111111111', 'x', 'y' FROM generate_series(2, 200) g");
        run("ANALYZE cards");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM pg_stats WHERE tablename = 'cards' AND attname = 'card_number'").unwrap(),
            Some(0)
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'cards' AND attname = 'holder'"
            )
            .unwrap(),
            Some(1)
        );
    }

    #[pg_test]
    fn protected_table_needs_a_session_or_an_exemption() {
        run("CREATE TABLE secrets (id int)");
        run("SELECT hoop_protect('secrets')");
        run("CREATE ROLE hoop_test_agent");
        run("GRANT SELECT ON secrets TO hoop_test_agent");
        run("SET ROLE hoop_test_agent");
        let message = expect_error("SELECT * FROM secrets", "42501");
        assert!(
            message.contains("public.secrets") && message.contains("gateway"),
            "{message}"
        );
        expect_error(
            "CREATE TEMP VIEW sv AS SELECT * FROM secrets; SELECT * FROM sv",
            "42501",
        );
        start_session(&[]);
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM secrets").unwrap(),
            Some(0)
        );
    }
}
