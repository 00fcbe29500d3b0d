//! The gateway writes these names and the extension reads them (or the other
//! way round); a typo on one side would silently disable enforcement, so they
//! live in one place.

/// Extension name, as in `CREATE EXTENSION hoop`.
pub const EXTENSION: &str = "hoop";

/// Schema holding the extension's functions and catalog views.
pub const SCHEMA: &str = "hoop";

/// The signed session token the gateway sets on each upstream connection.
pub const GUC_SESSION: &str = "hoop.session";

/// Public keys allowed to sign sessions: `kid:base64(public key)` entries.
pub const GUC_TRUSTED_KEYS: &str = "hoop.trusted_keys";

/// Roles that are not gateway sessions and keep ordinary access (e.g. the
/// gateway's own maintenance role).
pub const GUC_EXEMPT_ROLES: &str = "hoop.exempt_roles";

/// Whether superusers are held to the same rules as everybody else.
pub const GUC_ENFORCE_SUPERUSER: &str = "hoop.enforce_superuser";

/// Key for the `pan_token` masking strategy.
pub const GUC_TOKEN_KEY: &str = "hoop.token_key";

/// Utility commands refused for gateway sessions.
pub const GUC_BLOCKED_COMMANDS: &str = "hoop.blocked_commands";

/// Declared masked columns. Columns: `schema_name`, `table_name`,
/// `column_name`, `strategy`, `declared_by`, `declared_at`.
pub const MASKED_COLUMNS_VIEW: &str = "hoop.masked_columns";
