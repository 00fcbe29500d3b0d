//! The one error type of the extension: every refusal knows its SQLSTATE and
//! says what a person can do about it.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoopError {
    /// The library was loaded some other way than `shared_preload_libraries`.
    NotPreloaded,
    /// A protected table was touched without a usable gateway session.
    NoGatewaySession { table: String, reason: String },
    /// A command that gateway sessions may not run.
    Blocked { command: String, why: String },
    /// `hoop_mask()` and friends: the caller neither owns the table nor is superuser.
    NotOwner { table: String },
    /// A declaration that names something unusable.
    InvalidDeclaration {
        message: String,
        hint: Option<String>,
    },
    /// A column declared masked that hoop cannot mask (not a text type).
    UnsupportedColumnType { column: String, type_name: String },
    /// The extension's SQL objects are not installed in this database.
    NotInstalled,
    /// Masking could not be done; nothing is returned instead (fail closed).
    MaskingFailed { target: String, why: String },
    /// How a value may be shown cannot be told: the masking policies cannot
    /// be read at this moment. Nothing is returned instead (fail closed).
    PolicyUnreadable { target: String },
    /// A plan reads a masked table in a way the rewrite could not reach.
    Unmaskable { table: String, why: String },
    /// Something this session may not read, whatever its privileges.
    Hidden { what: String, why: String },
}

impl HoopError {
    pub(crate) fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            HoopError::NotPreloaded
            | HoopError::NotInstalled
            | HoopError::MaskingFailed { .. }
            | HoopError::PolicyUnreadable { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            HoopError::NoGatewaySession { .. }
            | HoopError::Blocked { .. }
            | HoopError::Unmaskable { .. }
            | HoopError::Hidden { .. }
            | HoopError::NotOwner { .. } => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            HoopError::InvalidDeclaration { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            HoopError::UnsupportedColumnType { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            HoopError::NotPreloaded => {
                "hoop must be loaded via shared_preload_libraries".to_string()
            }
            HoopError::NoGatewaySession { table, .. } => format!(
                "hoop: access to protected table {table} requires a session through the hoop gateway"
            ),
            HoopError::Blocked { command, .. } => {
                format!("hoop: {command} is not allowed in a gateway session")
            }
            HoopError::NotOwner { table } => format!(
                "hoop: only the owner of table {table} or a superuser may change its masking policy"
            ),
            HoopError::InvalidDeclaration { message, .. } => format!("hoop: {message}"),
            HoopError::UnsupportedColumnType { column, type_name } => format!(
                "hoop: column {column} has type {type_name}; only text, varchar and char columns can be masked"
            ),
            HoopError::NotInstalled => {
                "hoop: the extension is not installed in this database (CREATE EXTENSION hoop)"
                    .to_string()
            }
            HoopError::MaskingFailed { target, why } => {
                format!("hoop: cannot mask {target}: {why}")
            }
            HoopError::PolicyUnreadable { target } => format!(
                "hoop: cannot mask {target}: the masking policies cannot be read at this point"
            ),
            HoopError::Hidden { what, .. } => format!("hoop: {what} cannot be read by this session"),
            HoopError::Unmaskable { table, .. } => format!(
                "hoop: masked table {table} is read through an inlined SQL function, which hoop cannot mask"
            ),
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            HoopError::NoGatewaySession { reason, .. } => Some(reason.clone()),
            HoopError::Blocked { why, .. }
            | HoopError::Unmaskable { why, .. }
            | HoopError::Hidden { why, .. } => Some(why.clone()),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            HoopError::NotPreloaded => Some(
                "Add hoop to shared_preload_libraries in postgresql.conf and restart the server."
                    .to_string(),
            ),
            HoopError::NoGatewaySession { .. } => Some(
                "Connect through the hoop gateway; direct connections may only be used by roles listed in hoop.exempt_roles."
                    .to_string(),
            ),
            HoopError::Blocked { .. } => Some(
                "Gateway sessions run with the role their identity maps to; ask an administrator if this command is needed."
                    .to_string(),
            ),
            HoopError::InvalidDeclaration { hint, .. } => hint.clone(),
            HoopError::MaskingFailed { .. } => Some(
                "Set hoop.token_key (at least 16 bytes) for pan_token, or choose another strategy."
                    .to_string(),
            ),
            _ => None,
        }
    }

    /// Raises this error as a Postgres `ERROR`; does not return.
    pub(crate) fn report(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.message(), "hoop");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// A message for the server log only (never sent to the client).
pub(crate) fn log_server_only(message: String) {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        message,
        "hoop",
    )
    .report(PgLogLevel::LOG_SERVER_ONLY);
}

/// A notice for the client.
pub(crate) fn notice(message: String) {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        message,
        "hoop",
    )
    .report(PgLogLevel::NOTICE);
}
