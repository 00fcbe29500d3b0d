//! `decide(facts, identity, context, rules)`: allow, block or review.
//!
//! **The most restrictive matching rule wins**: if any `block` rule matches,
//! the statement is blocked; otherwise if any `review` rule matches, it needs
//! review; otherwise if any `allow` rule matches (or nothing matches and the
//! rule set's default is allow) it runs. Among rules of the winning action the
//! first in configuration order names the decision. So the order of rules
//! never weakens anything: an `allow` rule cannot switch off a `block` rule
//! above or below it — use `groups`/`except_groups` to scope rules instead.
//!
//! A string PostgreSQL's grammar rejects is answered before any rule, with
//! the server's own SQLSTATE (42601), message and position: it could not
//! run anyway, so no rule can send it on or hold it. Any other statement
//! the gateway could not read ([`Kind::Unparsed`]) is refused unless a
//! `review` rule matches it: `allow` rules never let it through.

use std::collections::HashSet;

use crate::classify::Classified;
use crate::facts::{Kind, Parameter, StatementFacts, TableName};
use crate::glob::glob_match;
use crate::rules::{Action, Rule, RuleSet};

/// Who sent the statement, as the gateway authenticated them: rules match
/// on its subject and groups.
pub use hoop_common::identity::Identity;

/// What the relay knows about the database that rules refer to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyContext {
    /// `schema.table` of every table with a masked column (from
    /// `hoop.masked_columns`; see [`crate::ColumnPolicy::protected_tables`]).
    pub protected_tables: HashSet<String>,
}

/// The outcome for one statement (or one query string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused: the client gets `sqlstate` (42501 for rules, 42601 for a
    /// syntax error, with the `position` the server would report).
    Block {
        rule: String,
        message: String,
        sqlstate: &'static str,
        position: Option<u32>,
    },
    Review {
        rule: String,
        message: String,
    },
}

/// Rule name of the refusal for statements the gateway did not understand.
pub const UNPARSED_RULE: &str = "unparsed-statement";

/// Rule name recorded for strings PostgreSQL's grammar rejects.
pub const SYNTAX_ERROR_RULE: &str = "syntax-error";

/// The fixed refusal of statements that set `client_encoding` to an
/// encoding the gateway cannot read (see
/// [`crate::unreadable_client_encoding`]), or may: not a rule either.
pub const CLIENT_ENCODING_RULE: &str = "readable-client-encoding";

/// Recorded for a statement sent into a transaction a refusal failed: the
/// gateway answers it as PostgreSQL answers any statement in a failed
/// transaction ([`SQLSTATE_IN_FAILED_TRANSACTION`]), not a rule either.
pub const FAILED_TRANSACTION_RULE: &str = "failed-transaction";

/// SQLSTATE of a statement in a failed transaction: in_failed_sql_transaction.
pub const SQLSTATE_IN_FAILED_TRANSACTION: &str = "25P02";

/// PostgreSQL's message for it, word for word.
pub const IN_FAILED_TRANSACTION_MESSAGE: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// SQLSTATE of a string PostgreSQL's grammar rejects: syntax_error.
pub const SQLSTATE_SYNTAX_ERROR: &str = "42601";

/// Rule name of the refusal when no rule matched and the default is not allow.
pub const DEFAULT_RULE: &str = "default";

/// SQLSTATE of every policy refusal: insufficient_privilege.
pub const SQLSTATE_INSUFFICIENT_PRIVILEGE: &str = "42501";

impl Decision {
    /// A policy refusal (42501).
    pub fn block(rule: impl Into<String>, message: impl Into<String>) -> Decision {
        Decision::Block {
            rule: rule.into(),
            message: message.into(),
            sqlstate: SQLSTATE_INSUFFICIENT_PRIVILEGE,
            position: None,
        }
    }

    /// Where in the query string the error is (1-based characters), for
    /// the ErrorResponse's `P` field.
    pub fn position(&self) -> Option<u32> {
        match self {
            Decision::Block { position, .. } => *position,
            _ => None,
        }
    }

    /// The rule behind a refusal.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow => None,
            Decision::Block { rule, .. } | Decision::Review { rule, .. } => Some(rule),
        }
    }

    /// What the client is told when the statement does not run: `None` for
    /// `Allow`. Until approvals exist a `Review` is refused too, saying so.
    pub fn client_error(&self) -> Option<(&'static str, String)> {
        match self {
            Decision::Allow => None,
            Decision::Block {
                message, sqlstate, ..
            } => Some((*sqlstate, message.clone())),
            Decision::Review { message, .. } => Some((
                SQLSTATE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "{message}; this connection cannot hold statements for review, \
                     so it was refused"
                ),
            )),
        }
    }

    fn severity(&self) -> u8 {
        match self {
            Decision::Allow => 0,
            Decision::Review { .. } => 1,
            Decision::Block { .. } => 2,
        }
    }
}

/// Decides one statement. See the module documentation for how rules combine.
pub fn decide(
    facts: &StatementFacts,
    identity: &Identity,
    context: &PolicyContext,
    rules: &RuleSet,
) -> Decision {
    if let Some(error) = &facts.syntax_error {
        return Decision::Block {
            rule: SYNTAX_ERROR_RULE.to_owned(),
            message: error.message.clone(),
            sqlstate: error.sqlstate,
            position: error.position,
        };
    }
    let mut first_of = [None::<&Rule>; 3];
    for rule in &rules.rules {
        let slot = &mut first_of[action_index(rule.action)];
        if slot.is_none() && applies_to(rule, identity) && matches(rule, facts, context) {
            *slot = Some(rule);
        }
    }
    let [allow, review, block] = first_of;
    if let Some(rule) = block {
        return refusal(Action::Block, rule);
    }
    // After the block rules (a statement they refuse keeps their name),
    // before anything that could let it run. At any level: what EXPLAIN
    // ANALYZE, PREPARE (then EXECUTE) and DECLARE (then FETCH) wrap runs.
    // A setting named by a bind parameter not yet known could be it.
    if facts
        .levels()
        .any(|level| level.weakens_reading || level.reads_binds())
    {
        return Decision::block(
            CLIENT_ENCODING_RULE,
            format!(
                "client_encoding cannot be set through the gateway to an encoding whose \
                 characters can contain ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, \
                 SHIFT_JIS_2004), nor by a statement that does not name it and its value: the \
                 gateway would read the statements that follow differently from the server; use \
                 UTF8 or another encoding; gateway rule \"{CLIENT_ENCODING_RULE}\""
            ),
        );
    }
    if let Some(rule) = review {
        return refusal(Action::Review, rule);
    }
    if facts.kind == Kind::Unparsed {
        let reason = facts.unparsed_reason.as_deref().unwrap_or("unknown syntax");
        return Decision::block(
            UNPARSED_RULE,
            format!(
                "statement not understood by the gateway ({reason}); \
                 gateway rule \"{UNPARSED_RULE}\""
            ),
        );
    }
    match (allow, rules.default_action) {
        (Some(_), _) | (None, Action::Allow) => Decision::Allow,
        (None, action) => {
            let message =
                format!("no gateway rule allows this statement; gateway rule \"{DEFAULT_RULE}\"");
            let rule = DEFAULT_RULE.to_owned();
            if action == Action::Review {
                Decision::Review { rule, message }
            } else {
                Decision::block(rule, message)
            }
        }
    }
}

/// Decides every statement of a query string; the most restrictive decision
/// wins (the first block, else the first review). A refused query string
/// runs none of its statements.
pub fn decide_all(
    classified: &Classified,
    identity: &Identity,
    context: &PolicyContext,
    rules: &RuleSet,
) -> Decision {
    let mut worst = Decision::Allow;
    for facts in &classified.statements {
        let decision = decide(facts, identity, context, rules);
        if decision.severity() > worst.severity() {
            worst = decision;
        }
    }
    worst
}

fn action_index(action: Action) -> usize {
    match action {
        Action::Allow => 0,
        Action::Review => 1,
        Action::Block => 2,
    }
}

fn refusal(action: Action, rule: &Rule) -> Decision {
    let name = rule.name.clone();
    let what = match action {
        Action::Review => "statement requires review",
        _ => "statement blocked",
    };
    let message = match &rule.message {
        Some(text) => format!("{text} ({what} by gateway rule \"{name}\")"),
        None => format!("{what} by gateway rule \"{name}\""),
    };
    match action {
        Action::Review => Decision::Review {
            rule: name,
            message,
        },
        _ => Decision::block(name, message),
    }
}

fn applies_to(rule: &Rule, identity: &Identity) -> bool {
    let member = |groups: &[String]| groups.iter().any(|g| identity.groups.contains(g));
    (rule.groups.is_empty() || member(&rule.groups)) && !member(&rule.except_groups)
}

/// A rule matches a statement when all its matchers match one level of it
/// (the statement itself, or what an EXPLAIN/PREPARE/DECLARE wraps).
fn matches(rule: &Rule, facts: &StatementFacts, context: &PolicyContext) -> bool {
    facts
        .levels()
        .any(|level| matches_level(rule, level, context))
}

fn matches_level(rule: &Rule, facts: &StatementFacts, context: &PolicyContext) -> bool {
    if !rule.kinds.is_empty() {
        let kinds = std::iter::once(&facts.kind).chain(&facts.nested_kinds);
        let mut names = kinds.flat_map(Kind::names);
        if !names.any(|name| rule.kinds.contains(&name)) {
            return false;
        }
    }
    if !rule.tables.is_empty() && !facts.tables.iter().any(|table| table_matches(rule, table)) {
        return false;
    }
    if rule.protected_tables_only
        && !facts
            .tables
            .iter()
            .any(|table| context.protected_tables.contains(&table.qualified()))
    {
        return false;
    }
    if !rule.columns.is_empty() && !facts.all_columns {
        let mut columns = facts.columns_read.iter().chain(&facts.columns_written);
        if !columns.any(|column| {
            let column = column.to_lowercase();
            rule.columns.iter().any(|p| glob_match(p, &column))
        }) {
            return false;
        }
    }
    // A FunctionCall names its function by OID: it may be any function.
    if !rule.functions.is_empty()
        && facts.kind != Kind::FunctionCall
        && !facts.functions.iter().any(|function| {
            let last = function.rsplit('.').next().unwrap_or(function);
            rule.functions
                .iter()
                .any(|p| glob_match(p, function) || glob_match(p, last))
        })
    {
        return false;
    }
    if let Some(missing) = rule.missing_where {
        let is_filtered_write = matches!(facts.kind, Kind::Update | Kind::Delete)
            || facts
                .nested_kinds
                .iter()
                .any(|k| matches!(k, Kind::Update | Kind::Delete));
        if !is_filtered_write || facts.missing_where != missing {
            return false;
        }
    }
    if let Some(threshold) = &rule.predicate {
        // Bounds count only on the relations the rule is about (all of
        // them when it names none): a bound on another relation's column
        // of the same name says nothing about these.
        let mut relations = facts
            .tables
            .iter()
            .filter(|table| rule.tables.is_empty() || table_matches(rule, table))
            .peekable();
        let may_match = if relations.peek().is_none() {
            threshold.may_match(&facts.bounds.get(threshold.column()))
        } else {
            relations.any(|table| {
                threshold.may_match(&facts.bounds.of(&table.qualified(), threshold.column()))
            })
        };
        if !may_match {
            return false;
        }
    }
    if !rule.set_parameters.is_empty()
        && !facts.parameters.iter().any(|parameter| match parameter {
            Parameter::Unknown | Parameter::Bound(_) => true,
            Parameter::Named(name) => rule.set_parameters.iter().any(|p| glob_match(p, name)),
        })
    {
        return false;
    }
    // A statement the gateway did not understand has no tables, functions or
    // parameters to match; only rules that name it (or match everything) do.
    if facts.kind == Kind::Unparsed
        && (!rule.tables.is_empty()
            || !rule.columns.is_empty()
            || rule.protected_tables_only
            || rule.predicate.is_some())
    {
        return false;
    }
    true
}

fn table_matches(rule: &Rule, table: &TableName) -> bool {
    let qualified = table.qualified().to_lowercase();
    let bare = table.name.to_lowercase();
    rule.tables.iter().any(|pattern| {
        if pattern.contains('.') {
            glob_match(pattern, &qualified)
        } else {
            glob_match(pattern, &bare)
        }
    })
}
