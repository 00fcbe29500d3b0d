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
