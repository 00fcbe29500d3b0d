//! The gateway's policy engine: pure functions the relay calls, no I/O.
//!
//! Per statement (simple Query string, Parse text, or the text behind a SQL
//! `EXECUTE`):
//!
//! 1. [`classify`] (or [`ClassifyCache::classify`]) → [`Classified`]: one
//!    [`StatementFacts`] per statement — kind, tables, columns, functions,
//!    missing WHERE, bounds per relation and column, parameters set,
//!    prepared statements executed — read with PostgreSQL's own grammar
//!    (pg_query); a string the grammar rejects is one statement with a
//!    [`SyntaxError`]. [`setting_facts`] judges a setting given outside SQL
//!    (the `options` startup parameter) as `SET` would be;
//!    [`statement_key`] is what review grants match on.
//! 2. [`decide_all`] / [`decide`] with the caller's [`Identity`],
//!    [`PolicyContext`] and [`RuleSet`] (the shipped `hoop-defaults`, as
//!    [`DefaultRules`] selects them, then the operator's) → [`Decision`]; a
//!    refusal's [`Decision::client_error`] is the SQLSTATE and message to
//!    send, [`Decision::position`] the syntax error's position.
//!
//! Per server message, on the way to the client (bodies without the tag and
//! length):
//!
//! 3. RowDescription → [`RowShape::from_row_description`] (with a
//!    [`ColumnPolicy`] built from `hoop.masked_columns` and the session's
//!    unmask set); Bind's result formats → [`RowShape::with_result_formats`].
//! 4. DataRow → [`mask_data_row`]; ErrorResponse/NoticeResponse →
//!    [`mask_error_or_notice`]; NotificationResponse → [`mask_notification`];
//!    CopyData → [`CopyMasker`]. `None` means forward untouched; an error
//!    means fail closed.
//! 5. Audit text → [`mask_sql_text`].

/// What the gateway knows about a statement.
mod facts;

/// SQL text → statement facts (PostgreSQL's own grammar, via pg_query),
/// and the cache in front of it.
mod classify;

/// Bounds WHERE clauses put on columns; threshold predicates.
mod bounds;

/// Rules as configuration, validation, the shipped default rule set.
mod rules;

/// Facts + identity + rules → allow, block or review.
mod decide;

/// Glob matching for rule matchers.
mod glob;

/// Masking DataRow, ErrorResponse, NoticeResponse, NotificationResponse and
/// CopyData bodies.
mod masking;

/// Bounds-checked reading of message bodies.
mod wire;

pub use classify::{
    classify, classify_in, in_failed_transaction, reads_alike_in_both, setting_facts,
    statement_key, statement_key_in, Classified, ClassifyCache, InFailedTransaction,
    StringLiterals, TransactionExit,
};
pub use decide::{
    decide, decide_all, Decision, Identity, PolicyContext, CLIENT_ENCODING_RULE, DEFAULT_RULE,
    FAILED_TRANSACTION_RULE, IN_FAILED_TRANSACTION_MESSAGE, SQLSTATE_INSUFFICIENT_PRIVILEGE,
    SQLSTATE_IN_FAILED_TRANSACTION, SQLSTATE_SYNTAX_ERROR, SYNTAX_ERROR_RULE, UNPARSED_RULE,
};
pub use facts::{
    is_kind_name, Bound, BoundSetting, ColumnBounds, CopyDirection, CopyTarget, DdlObject, DdlVerb,
    Interval, Kind, Lasting, Parameter, SettingValue, StatementFacts, SyntaxError, TableName,
    KIND_NAMES,
};
pub use facts::{unreadable_client_encoding, weakens_reading};
pub use masking::{
    mask_data_row, mask_error_or_notice, mask_function_result, mask_notification, mask_sql_text,
    ColumnPolicy, CopyMasker, MaskFailure, MaskedColumn, RowShape,
};
pub use rules::{
    default_rules, Action, DefaultRules, RuleConfig, RuleError, RuleSet, DEFAULT_RULES_TOML,
    DEFAULT_RULE_SET,
};
