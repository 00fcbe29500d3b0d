//! Every configuration parameter of the extension, and its registration.

use hoop_common::names;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{CStr, CString};

/// The command tags refused in gateway sessions by default (SET ROLE, SET
/// SESSION AUTHORIZATION, set_config, COPY … PROGRAM and server-file COPY are
/// refused by the code itself, since their tags are shared with harmless
/// commands).
pub(crate) const DEFAULT_BLOCKED_COMMANDS: &CStr = c"ALTER SYSTEM, CREATE EXTENSION, ALTER EXTENSION, DROP EXTENSION, CREATE ROLE, ALTER ROLE, DROP ROLE, LOAD, DISCARD ALL";

pub(crate) static TRUSTED_KEYS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub(crate) static SESSION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub(crate) static EXEMPT_ROLES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub(crate) static ENFORCE_SUPERUSER: GucSetting<bool> = GucSetting::<bool>::new(false);
pub(crate) static TOKEN_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub(crate) static BLOCKED_COMMANDS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_BLOCKED_COMMANDS));

fn cname(name: &'static str) -> &'static CStr {
    // The names are compile-time constants of `hoop_common::names`.
    Box::leak(
        CString::new(name)
            .expect("GUC names hold no NUL")
            .into_boxed_c_str(),
    )
}

/// Registers every `hoop.*` parameter; called once from `_PG_init`.
pub(crate) fn register() {
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            cname(names::GUC_TRUSTED_KEYS),
            c"Public keys of the hoop gateway whose session tokens are accepted.",
            c"Comma- or space-separated kid:base64(Ed25519 public key) entries; several keys may be listed during a rotation. Reloadable.",
            &TRUSTED_KEYS,
            GucContext::Sighup,
            GucFlags::default(),
            Some(crate::session::check_trusted_keys),
            Some(crate::session::assign_trusted_keys),
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            cname(names::GUC_SESSION),
            c"Signed hoop gateway session token for this backend.",
            c"Set by the hoop gateway after connecting. Once set, it can only be replaced by another valid token for the same backend.",
            &SESSION,
            GucContext::Userset,
            GucFlags::SUPERUSER_ONLY
                | GucFlags::NO_SHOW_ALL
                | GucFlags::NO_RESET_ALL
                | GucFlags::DISALLOW_IN_FILE
                | GucFlags::DISALLOW_IN_AUTO_FILE
                | GucFlags::NOT_WHILE_SEC_REST,
            Some(crate::session::check_session),
            Some(crate::session::assign_session),
            Some(crate::session::show_session),
        );
    }
    GucRegistry::define_string_guc(
        cname(names::GUC_EXEMPT_ROLES),
        c"Roles that may use protected tables without a gateway session (still masked, always logged).",
        c"Comma-separated role names; members of these roles are exempt too. Reloadable.",
        &EXEMPT_ROLES,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        cname(names::GUC_ENFORCE_SUPERUSER),
        c"Treat superusers like every other role (session required, values masked).",
        c"Off by default: superusers need no gateway session and see raw values; every such access is logged.",
        &ENFORCE_SUPERUSER,
        GucContext::Suset,
        GucFlags::default(),
    );
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            cname(names::GUC_TOKEN_KEY),
            c"Secret key for the pan_token masking strategy (at least 16 bytes).",
            c"Without it, columns masked with pan_token cannot be read (fail closed).",
            &TOKEN_KEY,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            Some(check_token_key),
            Some(assign_token_key),
            Some(show_token_key),
        );
    }
    GucRegistry::define_string_guc(
        cname(names::GUC_BLOCKED_COMMANDS),
        c"Command tags refused in gateway sessions.",
        c"Comma-separated command tags (e.g. ALTER SYSTEM, CREATE EXTENSION). SET ROLE, SET SESSION AUTHORIZATION, set_config on protected parameters and COPY with PROGRAM or a server file are always refused.",
        &BLOCKED_COMMANDS,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// The current value of a string parameter, empty when unset.
pub(crate) fn string_value(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|value| value.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The token key bytes, when one is configured.
pub(crate) fn token_key() -> Option<Vec<u8>> {
    TOKEN_KEY
        .get()
        .map(|key| key.into_bytes())
        .filter(|key| !key.is_empty())
}

/// Role names listed in `hoop.exempt_roles`.
pub(crate) fn exempt_roles() -> Vec<String> {
    split_list(&string_value(&EXEMPT_ROLES))
}

/// Command tags listed in `hoop.blocked_commands`, upper-cased.
pub(crate) fn blocked_commands() -> Vec<String> {
    split_list(&string_value(&BLOCKED_COMMANDS))
        .into_iter()
        .map(|tag| {
            tag.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
        })
        .collect()
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|item| item.trim().trim_matches('"').to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_token_key(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = if newval.is_null() || (*newval).is_null() {
        &[][..]
    } else {
        CStr::from_ptr(*newval).to_bytes()
    };
    if value.is_empty() || value.len() >= hoop_common::mask::MIN_TOKEN_KEY_LEN {
        return true;
    }
    crate::session::guc_check_error(
        pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        &format!(
            "{} must be at least {} bytes long",
            names::GUC_TOKEN_KEY,
            hoop_common::mask::MIN_TOKEN_KEY_LEN
        ),
    );
    false
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_token_key(
    _newval: *const std::ffi::c_char,
    _extra: *mut std::ffi::c_void,
) {
    // Cached maskers and masking decisions were built with the old key.
    crate::policy::bump_generation();
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_token_key() -> *const std::ffi::c_char {
    if token_key().is_some() {
        c"********".as_ptr()
    } else {
        c"".as_ptr()
    }
}
