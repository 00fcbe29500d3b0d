//! Helpers for the `#[pg_test]`s: a fixed test signing key (its public half
//! is in `hoop.trusted_keys` of the test cluster) and token minting.

use hoop_common::token::{SessionClaims, SessionSigner, TOKEN_VERSION};
use pgrx::pg_sys;

pub(crate) const TEST_KID: &str = "test";
const TEST_SEED: [u8; 32] = [7; 32];
const OTHER_SEED: [u8; 32] = [9; 32];

pub(crate) fn signer() -> SessionSigner {
    SessionSigner::from_seed(TEST_KID, &TEST_SEED)
}

/// A signer whose key is not trusted by the test cluster (same key id).
pub(crate) fn untrusted_signer() -> SessionSigner {
    SessionSigner::from_seed(TEST_KID, &OTHER_SEED)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Claims for this backend, the current role and database, valid 10 minutes.
pub(crate) fn claims(role: &str, unmask: &[&str]) -> SessionClaims {
    let db = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId))
            .to_string_lossy()
            .into_owned()
    };
    SessionClaims {
        v: TOKEN_VERSION,
        kid: TEST_KID.to_string(),
        sid: "0123456789abcdef0123456789abcdef".to_string(),
        sub: "agent-7".to_string(),
        groups: vec!["fraud-agents".to_string()],
        role: role.to_string(),
        db,
        pid: unsafe { pg_sys::MyProcPid },
        unmask: unmask.iter().map(|s| s.to_string()).collect(),
        iat: now() - 5,
        exp: now() + 600,
    }
}

pub(crate) fn token(role: &str, unmask: &[&str]) -> String {
    signer().sign(&claims(role, unmask))
}

/// Runs `sql` in a subtransaction; returns `(sqlstate, message)` when it
/// fails (the subtransaction is rolled back), `None` when it succeeds.
pub(crate) fn sql_error(sql: &str) -> Option<(String, String)> {
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::prelude::*;
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let failure = PgTryBuilder::new(|| {
            Spi::run(sql)
                .map(|_| None)
                .unwrap_or_else(|e| Some(("SPI".to_string(), e.to_string())))
        })
        .catch_others(|caught| match caught {
            CaughtError::PostgresError(report)
            | CaughtError::ErrorReport(report)
            | CaughtError::RustPanic {
                ereport: report, ..
            } => Some((
                sqlstate(report.sql_error_code() as i32),
                report.message().to_string(),
            )),
        })
        .execute();
        if failure.is_some() {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        } else {
            pg_sys::ReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        failure
    }
}

/// The five-character SQLSTATE of an error code.
fn sqlstate(mut code: i32) -> String {
    let mut out = String::new();
    for _ in 0..5 {
        out.push((((code & 0x3f) as u8) + b'0') as char);
        code >>= 6;
    }
    out
}

/// Asserts that `sql` fails with `state`; returns the message.
pub(crate) fn expect_error(sql: &str, state: &str) -> String {
    match sql_error(sql) {
        Some((got, message)) => {
            assert_eq!(got, state, "{sql}: {message}");
            message
        }
        None => panic!("{sql}: succeeded, expected SQLSTATE {state}"),
    }
}

pub(crate) fn one_text(sql: &str) -> Option<String> {
    pgrx::Spi::get_one::<String>(sql).expect(sql)
}

pub(crate) fn run(sql: &str) {
    pgrx::Spi::run(sql).expect(sql)
}

/// A table `public.cards` with one Visa test PAN, masked with pan_last4.
pub(crate) fn masked_table() {
    run("CREATE TABLE public.cards (id int PRIMARY KEY, card_number text, holder varchar(40), note text)");
    run("INSERT INTO public.cards VALUES (1, '4111111111111111', 'Ada', 'n1')");
    run("SELECT hoop_mask('public.cards', 'card_number', 'pan_last4')");
}

pub(crate) fn current_user() -> String {
    one_text("SELECT current_user::text").unwrap_or_default()
}

/// Sets a valid gateway session for the current role.
pub(crate) fn start_session(unmask: &[&str]) {
    let token = token(&current_user(), unmask);
    run(&format!("SET hoop.session = '{token}'"));
}
