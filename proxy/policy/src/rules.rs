//! Rules as configuration: what operators write under `[[rules]]`, how it is
//! checked, and the rule set hoop ships ([`DEFAULT_RULE_SET`]), which the
//! operator can switch off as a whole or rule by rule, or exempt groups
//! from ([`DefaultRules`], `[policy.default_rules]`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounds::Threshold;
use crate::facts::is_kind_name;

/// What a matching rule does with a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    /// Hold the statement for a person to approve.
    Review,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
        }
    }
}

/// One rule as written in the configuration. Every matcher that is given
/// must match (AND); a list matcher matches when any of its entries does
/// (OR); a matcher left out matches everything. Unknown fields are an error,
/// so a misspelt matcher can never silently widen a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Named in every refusal and audit record; unique within a rule set.
    pub name: String,
    pub action: Action,
    /// Told to the client when the rule refuses a statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Statement kind names (see [`crate::KIND_NAMES`] and `ddl_<verb>_<object>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Table globs: `public.pay*`; without a dot, the table name in any schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Column name globs, read or written; `*` and column-less INSERT/COPY match all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Function name globs (`dblink*`), checked against the name as written
    /// and its last part (`pg_catalog.pg_read_file` matches `pg_read_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// `true`: only UPDATE/DELETE without WHERE; `false`: only statements with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_where: Option<bool>,
    /// `amount > 10000`: the statement may read a row with amount above 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// Parameter globs set by SET/RESET/set_config (`role`, `hoop.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_parameters: Vec<String>,
    /// Only statements touching a table with a masked column.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected_tables_only: bool,
    /// Identity groups the rule applies to; empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Identity groups the rule never applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_groups: Vec<String>,
}

/// A rule set that failed validation: which rule, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule's name, or its position (`rule #3`) when the name is the problem.
    pub rule: String,
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {:?}, field `{}`: {}",
            self.rule, self.field, self.problem
        )
    }
}

impl std::error::Error for RuleError {}

/// A validated, compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) message: Option<String>,
    pub(crate) kinds: Vec<String>,
    pub(crate) tables: Vec<String>,
    pub(crate) columns: Vec<String>,
    pub(crate) functions: Vec<String>,
    pub(crate) missing_where: Option<bool>,
    pub(crate) predicate: Option<Threshold>,
    pub(crate) set_parameters: Vec<String>,
    pub(crate) protected_tables_only: bool,
    pub(crate) groups: Vec<String>,
    pub(crate) except_groups: Vec<String>,
}

/// Validated rules in configuration order, and what happens to a statement
/// no rule matches. See [`crate::decide`] for how they combine.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) default_action: Action,
}

impl RuleSet {
    /// Validates `rules`. Statements no rule matches are allowed (the
    /// database's own privileges and the extension still apply); see
    /// [`RuleSet::with_default_action`] for an allow-list.
    pub fn new(rules: Vec<RuleConfig>) -> Result<RuleSet, RuleError> {
        let mut seen = HashSet::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, config) in rules.into_iter().enumerate() {
            let rule = compile(index, config)?;
            if !seen.insert(rule.name.clone()) {
                return Err(RuleError {
                    rule: rule.name,
                    field: "name",
                    problem: "another rule has the same name".to_owned(),
                });
            }
            compiled.push(rule);
        }
        Ok(RuleSet {
            rules: compiled,
            default_action: Action::Allow,
        })
    }

    /// The shipped rules ([`default_rules`]) followed by `extra`.
    pub fn with_defaults(extra: Vec<RuleConfig>) -> Result<RuleSet, RuleError> {
        RuleSet::configured(&DefaultRules::default(), extra)
    }

    /// The shipped rules as `defaults` selects and scopes them, followed by
    /// the operator's `extra` rules.
    pub fn configured(
        defaults: &DefaultRules,
        extra: Vec<RuleConfig>,
    ) -> Result<RuleSet, RuleError> {
        let mut rules = defaults.rules()?;
        rules.extend(extra);
        RuleSet::new(rules)
    }

    /// Columns predicate rules are about (see
    /// [`crate::ClassifyCache::with_predicate_columns`]).
    pub fn predicate_columns(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .filter_map(|rule| rule.predicate.as_ref())
            .map(|predicate| predicate.column().to_owned())
            .collect()
    }

    /// What happens to statements no rule matches. `Block` turns the rule
    /// set into an allow-list (then only `allow` rules let statements through).
    pub fn with_default_action(mut self, action: Action) -> RuleSet {
        self.default_action = action;
        self
    }

    /// Rule names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.name.as_str())
    }
}

fn compile(index: usize, config: RuleConfig) -> Result<Rule, RuleError> {
    let name = config.name.trim().to_owned();
    let error = |field: &'static str, problem: String| RuleError {
        rule: if name.is_empty() {
            format!("rule #{}", index + 1)
        } else {
            name.clone()
        },
        field,
        problem,
    };
    if name.is_empty() {
        return Err(error("name", "a rule needs a name".to_owned()));
    }
    if name.chars().any(|c| c.is_control() || c == '"') {
        return Err(error(
            "name",
            "names may not hold quotes or control characters".to_owned(),
        ));
    }
    for kind in &config.kinds {
        if !is_kind_name(kind) {
            return Err(error(
                "kinds",
                format!("unknown statement kind {kind:?} (see the kind list in the README)"),
            ));
        }
    }
    let globs = [
        ("tables", &config.tables),
        ("columns", &config.columns),
        ("functions", &config.functions),
        ("set_parameters", &config.set_parameters),
        ("groups", &config.groups),
        ("except_groups", &config.except_groups),
    ];
    for (field, patterns) in globs {
        if let Some(bad) = patterns.iter().find(|p| p.trim().is_empty()) {
            return Err(error(field, format!("empty pattern {bad:?}")));
        }
    }
    if let Some(bad) = config
        .tables
        .iter()
        .find(|pattern| pattern.matches('.').count() > 1)
    {
        return Err(error(
            "tables",
            format!("{bad:?}: write `schema.table` (a database name cannot be matched)"),
        ));
    }
    let predicate = config
        .predicate
        .as_deref()
        .map(Threshold::parse)
        .transpose()
        .map_err(|problem| error("predicate", problem))?;
    let lower = |patterns: Vec<String>| -> Vec<String> {
        patterns
            .into_iter()
            .map(|p| p.trim().to_lowercase())
            .collect()
    };
    Ok(Rule {
        name: name.clone(),
        action: config.action,
        message: config.message.filter(|m| !m.trim().is_empty()),
        kinds: config.kinds,
        tables: lower(config.tables),
        columns: lower(config.columns),
        functions: lower(config.functions),
        missing_where: config.missing_where,
        predicate,
        set_parameters: lower(config.set_parameters),
        protected_tables_only: config.protected_tables_only,
        groups: config.groups,
        except_groups: config.except_groups,
    })
}

/// The name of the rule set hoop ships, as the README and errors call it.
pub const DEFAULT_RULE_SET: &str = "hoop-defaults";

/// `[policy.default_rules]`: which of the shipped rules apply, to whom.
///
/// ```toml
/// [policy.default_rules]
/// enabled = true                        # false: none of hoop-defaults
/// disable = ["block-server-side-copy"]  # these shipped rules are off
/// exempt_groups = ["break-glass"]       # no shipped rule applies to these groups
/// [policy.default_rules.exempt]          # per rule: groups it does not apply to
/// review-dynamic-sql = ["migrations"]
/// review-ddl-on-protected-tables = ["migrations"]
/// ```
///
/// A rule name that is not a shipped rule is an error naming it, so a
/// misspelling can never leave a rule on that the operator meant to be off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultRules {
    pub enabled: bool,
    pub disable: Vec<String>,
    pub exempt_groups: Vec<String>,
    pub exempt: BTreeMap<String, Vec<String>>,
}

impl Default for DefaultRules {
    fn default() -> DefaultRules {
        DefaultRules {
            enabled: true,
            disable: Vec::new(),
            exempt_groups: Vec::new(),
            exempt: BTreeMap::new(),
        }
    }
}

impl DefaultRules {
    /// The shipped rules this selects, with its exemptions added to each
    /// rule's `except_groups`.
    pub fn rules(&self) -> Result<Vec<RuleConfig>, RuleError> {
        let shipped = default_rules();
        let unknown = |field: &'static str, name: &str| RuleError {
            rule: name.to_owned(),
            field,
            problem: format!(
                "{DEFAULT_RULE_SET} has no rule of this name (its rules: {})",
                shipped
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let names: HashSet<&str> = shipped.iter().map(|r| r.name.as_str()).collect();
        if let Some(name) = self.disable.iter().find(|n| !names.contains(n.trim())) {
            return Err(unknown("policy.default_rules.disable", name));
        }
        if let Some(name) = self.exempt.keys().find(|n| !names.contains(n.trim())) {
            return Err(unknown("policy.default_rules.exempt", name));
        }
        let groups = self
            .exempt_groups
            .iter()
            .chain(self.exempt.values().flatten());
        for group in groups {
            if group.trim().is_empty() {
                return Err(RuleError {
                    rule: DEFAULT_RULE_SET.to_owned(),
                    field: "policy.default_rules.exempt_groups",
                    problem: "empty group name".to_owned(),
                });
            }
        }
        if !self.enabled {
            return Ok(Vec::new());
        }
        let disabled: HashSet<&str> = self.disable.iter().map(|n| n.trim()).collect();
        Ok(shipped
            .into_iter()
            .filter(|rule| !disabled.contains(rule.name.as_str()))
            .map(|mut rule| {
                rule.except_groups
                    .extend(self.exempt_groups.iter().cloned());
                let own = self
                    .exempt
                    .iter()
                    .filter(|(name, _)| name.trim() == rule.name)
                    .flat_map(|(_, groups)| groups.iter().cloned());
                rule.except_groups.extend(own);
                rule
            })
            .collect())
    }
}

/// The rule set hoop ships ([`DEFAULT_RULE_SET`]), as the TOML an operator
/// would write; the README shows the same text. See [`default_rules`].
pub const DEFAULT_RULES_TOML: &str = r#"
# Commands no machine identity needs and that would undo hoop's guarantees.
# The fast-path FunctionCall message names a function by OID, which no rule
# can judge (it matches every rule about functions).
[[rules]]
name = "function-call-protocol"
action = "block"
kinds = ["function_call"]
message = "function calls through the fast-path protocol are not allowed through the gateway; call the function in a statement instead"

[[rules]]
name = "block-drop-database"
action = "block"
kinds = ["ddl_drop_database"]

[[rules]]
name = "block-alter-system"
action = "block"
kinds = ["alter_system"]

# CREATE/ALTER/DROP ROLE, GRANT, REVOKE, REASSIGN OWNED, DROP OWNED.
[[rules]]
name = "block-role-commands"
action = "block"
kinds = ["role"]

[[rules]]
name = "block-create-extension"
action = "block"
kinds = ["create_extension"]

# COPY ... TO/FROM PROGRAM and COPY ... TO/FROM a server file.
[[rules]]
name = "block-server-side-copy"
action = "block"
kinds = ["copy_program", "copy_file"]

# SET ROLE, RESET ROLE, SET/RESET SESSION AUTHORIZATION.
[[rules]]
name = "block-identity-change"
action = "block"
kinds = ["set_role", "session_authorization"]

# The same through SET, RESET, set_config(), UPDATE pg_settings, DISCARD ALL.
[[rules]]
name = "block-protected-parameters"
action = "block"
set_parameters = ["role", "session_authorization", "hoop.*"]

[[rules]]
name = "block-load"
action = "block"
kinds = ["load"]

# Server file system and outbound connections.
[[rules]]
name = "block-file-access-functions"
action = "block"
functions = [
  "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir",
  "pg_ls_*dir", "pg_file_*", "pg_logdir_ls", "lo_import", "lo_export",
  "dblink*",
]

# Dynamic SQL: the gateway cannot see what it will run.
[[rules]]
name = "review-dynamic-sql"
action = "review"
kinds = ["do", "call", "ddl_create_function", "ddl_create_procedure"]

[[rules]]
name = "review-dynamic-sql-functions"
action = "review"
functions = ["query_to_xml*", "query_to_xmlschema", "ts_stat"]

# Whole tables, schemas or databases as XML, by name: a read no WHERE
# bounds, of relations a rule about one table may not see.
[[rules]]
name = "review-whole-table-xml"
action = "review"
functions = [
  "table_to_xml*", "schema_to_xml*", "database_to_xml*",
]

# Writes to tables with masked (card number) columns.
[[rules]]
name = "review-dml-on-protected-tables"
action = "review"
kinds = ["dml", "truncate", "copy_from"]
protected_tables_only = true

[[rules]]
name = "review-ddl-on-protected-tables"
action = "review"
kinds = ["ddl"]
protected_tables_only = true
"#;

/// The shipped rules (see [`DEFAULT_RULES_TOML`]).
pub fn default_rules() -> Vec<RuleConfig> {
    #[derive(Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    // The text is a constant the tests parse; failing here would be a build
    // defect, never a problem with anything a user supplied.
    match toml::from_str::<File>(DEFAULT_RULES_TOML) {
        Ok(file) => file.rules,
        Err(problem) => panic!("shipped default rules are malformed: {problem}"),
    }
}
