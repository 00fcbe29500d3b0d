//! `hoop.session`: verifying the gateway's signed token and keeping its claims
//! for this backend.
//!
//! The GUC machinery drives this: the check hook verifies a new value (and
//! refuses to clear or downgrade an established session), the assign hook
//! makes it current (also when a transaction rollback restores an older
//! value). Expiry and role binding are re-checked on every use, and every
//! token is re-verified when `hoop.trusted_keys` changes.
//!
//! Once a valid token has been set, the backend stays a *gateway backend* for
//! the rest of its life: blocking applies, and neither superuser status nor
//! `hoop.exempt_roles` grants access any more, even after the token expires.

use crate::compat;
use hoop_common::names;
use hoop_common::token::{SessionClaims, TrustedKeys};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr};
use std::rc::Rc;

/// A token verified in this backend, with the role it was bound to.
#[derive(Debug)]
pub(crate) struct VerifiedSession {
    token: String,
    pub(crate) claims: SessionClaims,
    /// The role that was current when the token was set; `InvalidOid` in a
    /// parallel worker, which trusts its leader's check.
    role_oid: pg_sys::Oid,
}

#[derive(Debug, Clone)]
enum SessionState {
    None,
    Verified(Rc<VerifiedSession>),
    /// In a parallel worker: the leader's token, verified on first use (the
    /// worker restores hoop.session before hoop.trusted_keys).
    Pending(String),
    Rejected(String),
}

/// How many verified tokens are remembered, so that a rollback restoring an
/// earlier token finds it verified.
const VERIFIED_CACHE: usize = 8;

thread_local! {
    static STATE: RefCell<SessionState> = const { RefCell::new(SessionState::None) };
    static GATEWAY_BACKEND: Cell<bool> = const { Cell::new(false) };
    static VERIFIED: RefCell<Vec<Rc<VerifiedSession>>> = const { RefCell::new(Vec::new()) };
    static KEYS: RefCell<TrustedKeys> = RefCell::new(TrustedKeys::default());
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a valid gateway session was ever established in this backend.
pub(crate) fn is_gateway_backend() -> bool {
    GATEWAY_BACKEND.with(|flag| flag.get())
}

/// The current session if it is usable right now: verified, not expired,
/// and still running as the role it was issued for.
pub(crate) fn current() -> Option<Rc<VerifiedSession>> {
    let mut state = STATE.with(|state| state.borrow().clone());
    if let SessionState::Pending(token) = &state {
        let verified = KEYS.with(|keys| {
            keys.borrow()
                .verify(token, unsafe { compat::session_pid() }, now_unix())
        });
        state = match verified {
            Ok(claims) => SessionState::Verified(Rc::new(VerifiedSession {
                token: token.clone(),
                claims,
                role_oid: pg_sys::InvalidOid,
            })),
            Err(e) => SessionState::Rejected(e.to_string()),
        };
        STATE.with(|current| *current.borrow_mut() = state.clone());
        crate::policy::bump_generation();
    }
    let SessionState::Verified(session) = state else {
        return None;
    };
    if session.claims.exp <= now_unix() {
        return None;
    }
    let in_worker = unsafe { pg_sys::ParallelWorkerNumber >= 0 };
    if !in_worker && unsafe { pg_sys::GetOuterUserId() } != session.role_oid {
        return None;
    }
    Some(session)
}

/// Why there is no usable session, for error details.
pub(crate) fn why_no_session() -> String {
    let state = STATE.with(|state| state.borrow().clone());
    match state {
        SessionState::None => format!("{} is not set in this connection", names::GUC_SESSION),
        SessionState::Rejected(reason) => reason,
        SessionState::Pending(_) => format!("{} has not been verified yet", names::GUC_SESSION),
        SessionState::Verified(session) => {
            if session.claims.exp <= now_unix() {
                format!(
                    "the gateway session {} expired at {} (unix time)",
                    session.claims.sid, session.claims.exp
                )
            } else {
                format!(
                    "the gateway session {} was issued for role {}, which is no longer the current role",
                    session.claims.sid, session.claims.role
                )
            }
        }
    }
}

/// Reports a GUC check failure with its own SQLSTATE and message.
pub(crate) unsafe fn guc_check_error(code: PgSqlErrorCode, message: &str) {
    pg_sys::GUC_check_errcode(code as i32);
    let text = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(text.as_ptr());
}

unsafe fn guc_string<'a>(value: *const c_char) -> &'a str {
    if value.is_null() {
        ""
    } else {
        CStr::from_ptr(value).to_str().unwrap_or("\u{fffd}")
    }
}

fn remember(session: Rc<VerifiedSession>) {
    VERIFIED.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.retain(|known| known.token != session.token);
        if cache.len() >= VERIFIED_CACHE {
            cache.remove(0);
        }
        cache.push(session);
    });
}

unsafe fn current_database_name() -> String {
    let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
    if name.is_null() {
        String::new()
    } else {
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

pub(crate) unsafe fn role_name(role: pg_sys::Oid) -> String {
    let name = pg_sys::GetUserNameFromId(role, true);
    if name.is_null() {
        format!("role {}", role.to_u32())
    } else {
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// Verifies `token` for this backend: signature, expiry, pid, database and
/// (outside parallel workers) the current role.
unsafe fn verify_new_token(token: &str) -> Result<VerifiedSession, (PgSqlErrorCode, String)> {
    let pid = compat::session_pid();
    let claims = KEYS
        .with(|keys| keys.borrow().verify(token, pid, now_unix()))
        .map_err(|e| {
            (
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                e.to_string(),
            )
        })?;
    if pg_sys::InitializingParallelWorker || pg_sys::ParallelWorkerNumber >= 0 {
        return Ok(VerifiedSession {
            token: token.to_string(),
            claims,
            role_oid: pg_sys::InvalidOid,
        });
    }
    if !pg_sys::IsTransactionState() {
        return Err((
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "{} must be set with SET after the connection is established",
                names::GUC_SESSION
            ),
        ));
    }
    let database = current_database_name();
    if claims.db != database {
        return Err((
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "the hoop session token was issued for database {:?}, not {:?}",
                claims.db, database
            ),
        ));
    }
    let role = pg_sys::GetUserId();
    let current_role = role_name(role);
    if claims.role != current_role {
        return Err((
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "the hoop session token was issued for role {:?}, but the current role is {:?}; the gateway sets the role before the session",
                claims.role, current_role
            ),
        ));
    }
    Ok(VerifiedSession {
        token: token.to_string(),
        claims,
        role_oid: role,
    })
}

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn check_session(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let token = if newval.is_null() {
        ""
    } else {
        guc_string(*newval)
    };
    if token.is_empty() {
        if is_gateway_backend() && !pg_sys::InitializingParallelWorker {
            guc_check_error(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                &format!(
                    "{} cannot be cleared or reset once a gateway session is established; it can only be replaced by another valid token",
                    names::GUC_SESSION
                ),
            );
            return false;
        }
        return true;
    }
    if pg_sys::InitializingParallelWorker {
        // The leader verified this value; it is checked again on first use,
        // once hoop.trusted_keys has been restored too.
        return true;
    }
    match verify_new_token(token) {
        Ok(session) => {
            remember(Rc::new(session));
            true
        }
        Err((code, message)) => {
            guc_check_error(code, &message);
            false
        }
    }
}

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn assign_session(newval: *const c_char, _extra: *mut c_void) {
    let token = guc_string(newval);
    let state = if token.is_empty() {
        SessionState::None
    } else if pg_sys::InitializingParallelWorker || pg_sys::ParallelWorkerNumber >= 0 {
        SessionState::Pending(token.to_string())
    } else {
        let known =
            VERIFIED.with(|cache| cache.borrow().iter().find(|s| s.token == token).cloned());
        match known {
            Some(session) => {
                GATEWAY_BACKEND.with(|flag| flag.set(true));
                SessionState::Verified(session)
            }
            None => SessionState::Rejected(format!(
                "{} holds a token that was not verified in this backend",
                names::GUC_SESSION
            )),
        }
    };
    STATE.with(|current| *current.borrow_mut() = state);
    crate::policy::bump_generation();
}

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn show_session() -> *const c_char {
    // Never shown, not even to superusers: hoop.session_info() shows the claims.
    let state = STATE.with(|state| state.borrow().clone());
    match state {
        SessionState::None => c"".as_ptr(),
        _ => c"********".as_ptr(),
    }
}

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn check_trusted_keys(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let text = if newval.is_null() {
        ""
    } else {
        guc_string(*newval)
    };
    match TrustedKeys::parse(text) {
        Ok(_) => true,
        Err(e) => {
            guc_check_error(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                &e.to_string(),
            );
            false
        }
    }
}

#[pgrx::pg_guard]
pub(crate) unsafe extern "C-unwind" fn assign_trusted_keys(
    newval: *const c_char,
    _extra: *mut c_void,
) {
    let keys = TrustedKeys::parse(guc_string(newval)).unwrap_or_default();
    let pid = compat::session_pid();
    let now = now_unix();
    // Sessions signed by a key that was removed stop working at once.
    VERIFIED.with(|cache| {
        cache
            .borrow_mut()
            .retain(|session| keys.verify(&session.token, pid, now).is_ok())
    });
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if let SessionState::Verified(session) = &*state {
            if let Err(e) = keys.verify(&session.token, pid, now) {
                *state = SessionState::Rejected(e.to_string());
            }
        }
    });
    KEYS.with(|current| *current.borrow_mut() = keys);
    crate::policy::bump_generation();
}

/// The claims of the current usable session, as JSON, for `hoop.session_info()`.
pub(crate) fn current_claims_json() -> Option<serde_json::Value> {
    current().map(|session| {
        let claims = &session.claims;
        let value = serde_json::json!({
            "session_id": claims.sid,
            "subject": claims.sub,
            "groups": claims.groups,
            "role": claims.role,
            "database": claims.db,
            "unmask": claims.unmask,
            "issued_at": claims.iat,
            "expires_at": claims.exp,
        });
        value
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::testing::*;
    use pgrx::prelude::*;

    fn set(token: &str) -> Option<(String, String)> {
        sql_error(&format!(
            "SET hoop.session = '{}'",
            token.replace('\'', "''")
        ))
    }

    #[pg_test]
    fn valid_token_is_accepted_and_described() {
        let role = current_user();
        assert_eq!(set(&token(&role, &[])), None);
        assert_eq!(
            one_text("SELECT (hoop.session_info()).subject").as_deref(),
            Some("agent-7")
        );
        assert_eq!(
            one_text("SELECT (hoop.session_info()).role").as_deref(),
            Some(role.as_str())
        );
        assert_eq!(
            one_text("SELECT current_setting('hoop.session')").as_deref(),
            Some("********")
        );
        let shown =
            Spi::get_one::<i64>("SELECT count(*) FROM pg_settings WHERE name = 'hoop.session'")
                .unwrap();
        assert_eq!(shown, Some(0));
    }

    #[pg_test]
    fn bad_tokens_are_refused() {
        let role = current_user();
        let mut expired = claims(&role, &[]);
        expired.iat = crate::testing::now() - 120;
        expired.exp = crate::testing::now() - 60;
        let message = set(&signer().sign(&expired)).expect("expired token accepted");
        assert_eq!(message.0, "28000");
        assert!(message.1.contains("expired"), "{}", message.1);

        let mut other_pid = claims(&role, &[]);
        other_pid.pid += 1;
        assert_eq!(
            set(&signer().sign(&other_pid)).map(|e| e.0).as_deref(),
            Some("28000")
        );

        assert_eq!(
            set(&untrusted_signer().sign(&claims(&role, &[])))
                .map(|e| e.0)
                .as_deref(),
            Some("28000")
        );
        assert_eq!(set("garbage").map(|e| e.0).as_deref(), Some("28000"));

        // Altered claims: swap the payload of one valid token into another's signature.
        let good = token(&role, &[]);
        let more = token(&role, &["public.cards.card_number"]);
        let payload = more.split('.').nth(1).unwrap();
        let signature = good.split('.').nth(2).unwrap();
        assert_eq!(
            set(&format!("hoop1.{payload}.{signature}"))
                .map(|e| e.0)
                .as_deref(),
            Some("28000")
        );

        let wrong_role = claims("someone_else", &[]);
        assert_eq!(
            set(&signer().sign(&wrong_role)).map(|e| e.0).as_deref(),
            Some("42501")
        );

        // Nothing was established by any of these.
        assert_eq!(one_text("SELECT (hoop.session_info()).subject"), None);
    }

    #[pg_test]
    fn established_session_cannot_be_cleared_only_replaced() {
        let role = current_user();
        assert_eq!(set(&token(&role, &[])), None);
        assert!(!expect_error("RESET hoop.session", "42501").is_empty());
        expect_error("SET hoop.session = ''", "42501");
        expect_error("SET hoop.session TO DEFAULT", "42501");
        expect_error("SELECT set_config('hoop.session', '', false)", "42501");
        expect_error("SET hoop.session = 'garbage'", "28000");
        let mut replacement = claims(&role, &[]);
        replacement.sid = "fedcba9876543210fedcba9876543210".into();
        assert_eq!(set(&signer().sign(&replacement)), None);
        assert_eq!(
            one_text("SELECT (hoop.session_info()).session_id").as_deref(),
            Some("fedcba9876543210fedcba9876543210")
        );
    }

    #[pg_test]
    fn gateway_session_blocks_tampering() {
        run("CREATE ROLE hoop_test_other");
        start_session(&[]);
        expect_error("SET ROLE hoop_test_other", "42501");
        expect_error("RESET ROLE", "42501");
        expect_error("SET SESSION AUTHORIZATION hoop_test_other", "42501");
        expect_error(
            "SELECT set_config('role', 'hoop_test_other', false)",
            "42501",
        );
        expect_error(
            "SELECT set_config(lower('ROLE'), 'hoop_test_other', false)",
            "42501",
        );
        expect_error("SET hoop.enforce_superuser = off", "42501");
        expect_error("ALTER SYSTEM SET work_mem = '1MB'", "42501");
        expect_error("CREATE EXTENSION IF NOT EXISTS plpgsql", "42501");
        expect_error("CREATE ROLE hoop_test_new", "42501");
        expect_error("ALTER ROLE hoop_test_other SUPERUSER", "42501");
        expect_error("DROP ROLE hoop_test_other", "42501");
        expect_error("COPY (SELECT 1) TO PROGRAM 'true'", "42501");
        expect_error("COPY (SELECT 1) TO '/tmp/hoop-test-out'", "42501");
        expect_error("LOAD 'hoop'", "42501");
        expect_error("CREATE FUNCTION f_setrole() RETURNS int LANGUAGE sql SET role = 'hoop_test_other' AS 'SELECT 1'", "42501");
        // Ordinary settings and work go on.
        run("SET work_mem = '8MB'");
        assert_eq!(
            one_text("SELECT set_config('application_name', 'x', false)").as_deref(),
            Some("x")
        );
    }
}
