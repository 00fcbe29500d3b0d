//! What the gateway knows about one statement: the output of
//! [`crate::classify`] and the input of [`crate::decide`].

use std::collections::BTreeMap;
use std::fmt;

/// One statement's facts. Wrapper statements (`EXPLAIN`, `PREPARE`,
/// `DECLARE … CURSOR`) carry their own kind here and the wrapped statement's
/// facts in [`StatementFacts::inner`]; rules are checked against both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatementFacts {
    pub kind: Kind,
    /// Every relation named anywhere in the statement (CTE names excluded),
    /// deduplicated, in order of first appearance.
    pub tables: Vec<TableName>,
    /// Column names read (last identifier part: `p.amount` → `amount`).
    pub columns_read: Vec<String>,
    /// Column names written by INSERT/UPDATE/MERGE/COPY FROM.
    pub columns_written: Vec<String>,
    /// `*`, `t.*`, INSERT or COPY without a column list, or MERGE: every
    /// column of the tables may be touched, so every column matcher matches.
    pub all_columns: bool,
    /// Functions called anywhere, lowercased, as written (`pg_catalog.pg_read_file`
    /// stays qualified; matchers also try the last part).
    pub functions: Vec<String>,
    /// Kinds of data-modifying statements nested in this one
    /// (`WITH d AS (DELETE …) SELECT …` is a select that also deletes);
    /// kind matchers see these too.
    pub nested_kinds: Vec<Kind>,
    /// UPDATE or DELETE (also a nested one) without a WHERE clause.
    pub missing_where: bool,
    /// Bounds implied on columns by WHERE clauses; see [`ColumnBounds`].
    pub bounds: ColumnBounds,
    /// Run-time parameters this statement sets or resets: `SET`, `RESET`,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config(…)`, `DISCARD ALL`,
    /// `UPDATE pg_settings`.
    pub parameters: Vec<Parameter>,
    /// The statement an `EXPLAIN`, `PREPARE` or `DECLARE CURSOR` wraps.
    pub inner: Option<Box<StatementFacts>>,
    /// Prepared statements this statement runs: `EXECUTE name`, and the
    /// `EXECUTE` inside `EXPLAIN ANALYZE EXECUTE name` or `CREATE TABLE t
    /// AS EXECUTE name`. The relay judges what they run.
    pub executes: Vec<String>,
    /// Why the statement was not understood (only for [`Kind::Unparsed`]).
    pub unparsed_reason: Option<String>,
    /// A plain `SELECT` that reads and returns rows and does nothing else:
    /// no function calls, no row locks (`FOR UPDATE`/`SHARE`), no `INTO`,
    /// no data-modifying `WITH`, no parameter changes, no `EXECUTE`. The
    /// relay may run such a statement while its audit record is being
    /// written, holding its results back until the record is durable.
    /// (What a view, an operator or a type it reads calls is not visible
    /// here; the gateway reads the database's catalog for such code, see
    /// its `relay::hidden`.)
    pub read_only: bool,
    /// What of the statement outlasts its transaction; see [`Lasting`].
    pub lasting: Lasting,
    /// [`StatementFacts::lasting`] if every function the statement names is
    /// a built-in one that is not volatile and runs no SQL text of its own
    /// (`count`, `lower`, `now`), which the gateway learns from the
    /// database's catalog (its `relay::hidden`): such a call changes
    /// nothing.
    pub lasting_if_calls_are_stable_builtins: Lasting,
    /// PostgreSQL's grammar rejects the string: the server's message and
    /// position, answered with SQLSTATE 42601 (only for [`Kind::Unparsed`]).
    pub syntax_error: Option<SyntaxError>,
    /// The statement may change how the server reads the SQL that follows
    /// in a way the gateway cannot follow (or cannot be shown not to): set
    /// `client_encoding` to an encoding whose characters can contain ASCII
    /// bytes (see [`unreadable_client_encoding`]). The two would disagree
    /// about where a literal ends. Always refused. (Turning
    /// `standard_conforming_strings` off is not: the gateway reads string
    /// literals as the server reports it reads them.)
    pub weakens_reading: bool,
    /// `set_config($n, …)`: settings named by a bind parameter, known only
    /// when a portal of the statement runs (see
    /// [`StatementFacts::with_binds`]). Until then the statement may set
    /// `client_encoding`, and [`Parameter::Bound`] matches every parameter
    /// matcher.
    pub bound_settings: Vec<BoundSetting>,
    /// `set_config('client_encoding', $n, …)`: the encoding is bind
    /// parameter `n`, known only when a portal of the statement runs
    /// (psycopg sets it so). Until then the statement may set one the
    /// gateway cannot read.
    pub bound_encodings: Vec<u16>,
}

/// A setting named by a bind parameter: `set_config($name, value, …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSetting {
    /// The bind parameter (1-based) that names it.
    pub name: u16,
    pub value: SettingValue,
}

/// The value a [`BoundSetting`] is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Literal(String),
    /// A bind parameter (1-based).
    Bound(u16),
    /// Anything else: not known.
    Other,
}

/// Whether setting `name` to `value` (`None`: a value the gateway cannot
/// know) may make the server read SQL in a way the gateway cannot follow:
/// a client encoding the gateway cannot read
/// ([`unreadable_client_encoding`]).
pub fn weakens_reading(name: &str, value: Option<&str>) -> bool {
    name.trim().eq_ignore_ascii_case("client_encoding")
        && value.is_none_or(unreadable_client_encoding)
}

/// Whether `name` names (or may name: the gateway errs on the side of
/// refusing) a client encoding whose multibyte characters can contain
/// bytes below 0x80: Shift JIS, Big5, GBK, UHC, GB18030, JOHAB and
/// Shift JIS 2004, by any alias PostgreSQL accepts. In them a character's
/// second byte can be `\`, a letter or a digit, so a text the gateway reads
/// as UTF-8 could end a string literal elsewhere than where the server,
/// converting it from that encoding, does. PostgreSQL's server encodings
/// and every other client encoding keep bytes below 0x80 for ASCII alone.
///
/// PostgreSQL looks names up after dropping every character but letters
/// and digits, in any case (`Shift_JIS`, `s-jis`; a byte above 0x7F too,
/// in a UTF-8 locale), and so does this.
pub fn unreadable_client_encoding(name: &str) -> bool {
    let clean: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(
        clean.as_str(),
        "sjis"
            | "shiftjis"
            | "mskanji"
            | "win932"
            | "windows932"
            | "shiftjis2004"
            | "big5"
            | "win950"
            | "windows950"
            | "gbk"
            | "win936"
            | "windows936"
            | "uhc"
            | "win949"
            | "windows949"
            | "gb18030"
            | "johab"
    )
}

/// What the parser says about a string it rejects: the same message and
/// cursor position the server would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 42601 (syntax_error), or 54001 (statement_too_complex) for a tree
    /// deeper than the parser allows.
    pub sqlstate: &'static str,
    pub message: String,
    /// 1-based character position in the query string, as in the `P`
    /// field of an ErrorResponse.
    pub position: Option<u32>,
}

impl StatementFacts {
    /// Every function named, at every level (see [`StatementFacts::functions`]).
    pub fn calls(&self) -> impl Iterator<Item = &str> {
        self.levels()
            .flat_map(|facts| facts.functions.iter().map(String::as_str))
    }

    /// These facts and every wrapped statement's, outermost first.
    pub fn levels(&self) -> impl Iterator<Item = &StatementFacts> {
        std::iter::successors(Some(self), |facts| facts.inner.as_deref())
    }

    /// Whether running the statement may create or change code that later
    /// statements run without naming it (an operator's function, a view,
    /// a trigger; see the gateway's `relay::hidden`): anything that names
    /// a function, and any statement but a plain read or write, transaction
    /// control, or one that reads or sets session state.
    pub fn may_change_code(&self) -> bool {
        self.levels().any(|facts| !facts.functions.is_empty())
            || self.may_change_code_if_calls_are_builtins()
    }

    /// [`StatementFacts::may_change_code`] if every function the statement
    /// names is a built-in one that runs no SQL text of its own: no
    /// built-in function creates code.
    pub fn may_change_code_if_calls_are_builtins(&self) -> bool {
        self.levels().any(|facts| {
            !facts.nested_kinds.is_empty()
                || !facts.executes.is_empty()
                || !matches!(
                    facts.kind,
                    Kind::Select
                        | Kind::Insert
                        | Kind::Update
                        | Kind::Delete
                        | Kind::Merge
                        | Kind::Copy { .. }
                        | Kind::Truncate
                        | Kind::Transaction
                        | Kind::Set
                        | Kind::SetRole
                        | Kind::Show
                        | Kind::Listen
                        | Kind::Notify
                        | Kind::Unlisten
                        | Kind::Discard
                        | Kind::Deallocate { .. }
                        | Kind::DeclareCursor { .. }
                        | Kind::Cursor
                        | Kind::Lock
                        | Kind::Prepare { .. }
                        | Kind::Explain { analyze: false }
                )
        })
    }

    /// These facts with their [`BoundSetting`]s named by the portal's
    /// parameters: `value(n)` is bind parameter `n` in text form, `None`
    /// when it is NULL, binary or missing (then the setting could be any,
    /// as for `set_config(expr, …)`). Only this level's: a wrapped
    /// statement's parameters are not the portal's.
    pub fn with_binds(&self, value: impl Fn(u16) -> Option<String>) -> StatementFacts {
        let mut facts = self.clone();
        for setting in std::mem::take(&mut facts.bound_settings) {
            let Some(name) = value(setting.name) else {
                facts.weakens_reading = true;
                replace_bound(&mut facts.parameters, setting.name, Parameter::Unknown);
                continue;
            };
            let name = name.trim().to_lowercase();
            let set_to = match &setting.value {
                SettingValue::Literal(text) => Some(text.clone()),
                SettingValue::Bound(n) => value(*n),
                SettingValue::Other => None,
            };
            facts.weakens_reading |= weakens_reading(&name, set_to.as_deref());
            replace_bound(&mut facts.parameters, setting.name, Parameter::Named(name));
        }
        for n in std::mem::take(&mut facts.bound_encodings) {
            facts.weakens_reading |= weakens_reading("client_encoding", value(n).as_deref());
        }
        facts
    }

    /// Whether this level reads the portal's parameters
    /// ([`StatementFacts::with_binds`]).
    pub fn reads_binds(&self) -> bool {
        !self.bound_settings.is_empty() || !self.bound_encodings.is_empty()
    }

    /// These facts as a Parse judges them: what a setting named by a bind
    /// parameter does is judged when a portal of the statement runs
    /// ([`StatementFacts::with_binds`]), so it is left out here. Only this
    /// level's, as there.
    pub fn deferring_binds(&self) -> StatementFacts {
        let mut facts = self.clone();
        for setting in std::mem::take(&mut facts.bound_settings) {
            facts
                .parameters
                .retain(|p| *p != Parameter::Bound(setting.name));
        }
        facts.bound_encodings.clear();
        facts
    }

    /// Whether any level names a setting, or a client encoding, by a bind
    /// parameter.
    pub fn has_bound_settings(&self) -> bool {
        self.levels().any(StatementFacts::reads_binds)
    }

    pub(crate) fn unparsed(reason: String) -> StatementFacts {
        StatementFacts {
            kind: Kind::Unparsed,
            unparsed_reason: Some(reason),
            ..StatementFacts::default()
        }
    }
}

/// What of a statement outlasts its transaction when that does not commit.
/// The relay may run a statement whose every effect waits for a commit
/// while its audit record is being written (its results held back until
/// the record is durable): if the record cannot be written, the session
/// ends and the server rolls its transaction back, so nothing unrecorded
/// takes effect. A `COMMIT` is always recorded before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lasting {
    /// It may do something no rollback undoes (or the gateway cannot tell).
    #[default]
    Maybe,
    /// Nothing, in a transaction block or not: a plain read
    /// ([`StatementFacts::read_only`]), `SAVEPOINT`, `RELEASE`,
    /// `ROLLBACK TO`.
    Nothing,
    /// Its changes, until its transaction commits: a plain `INSERT`,
    /// `UPDATE`, `DELETE`, `MERGE` or locking `SELECT` (no function calls,
    /// no data-modifying `WITH`, no parameter changes, no `EXECUTE`). Only
    /// inside a transaction block is that later than the statement itself.
    /// (As with [`StatementFacts::read_only`], what runs unseen, such as a
    /// trigger or a column default, is not weighed here.)
    UntilCommit,
    /// `BEGIN`, `START TRANSACTION`: opens a transaction block.
    Begins,
    /// `ROLLBACK` (`AND CHAIN`: opens the next block at once).
    RollsBack { chain: bool },
}

impl Lasting {
    /// Whether nothing of `statements` (one query string) outlasts the
    /// transaction it leaves open unless that commits, when they start
    /// inside a transaction block (`in_block`) or not.
    pub fn waits_for_commit(statements: &[Lasting], mut in_block: bool) -> bool {
        for lasting in statements {
            match lasting {
                Lasting::Maybe => return false,
                Lasting::Nothing => {}
                Lasting::UntilCommit if !in_block => return false,
                Lasting::UntilCommit => {}
                Lasting::Begins => in_block = true,
                Lasting::RollsBack { chain } => in_block = *chain,
            }
        }
        true
    }
}

/// Fine-grained statement kind. Rules match on the names listed by
/// [`Kind::names`]; the full vocabulary is [`KIND_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy {
        direction: CopyDirection,
        target: CopyTarget,
    },
    Ddl {
        verb: DdlVerb,
        object: DdlObject,
    },
    Truncate,
    CreateRole,
    AlterRole,
    DropRole,
    Grant,
    Revoke,
    /// `REASSIGN OWNED`, `DROP OWNED`.
    OwnedObjects,
    AlterSystem,
    /// `SET ROLE`, `RESET ROLE`, `SET role = …`.
    SetRole,
    /// `SET SESSION AUTHORIZATION`, `RESET SESSION AUTHORIZATION`.
    SessionAuthorization,
    /// `SET`/`RESET` of an ordinary parameter (named in `parameters`).
    Set,
    CreateExtension,
    Load,
    /// `DO` — an anonymous code block: dynamic SQL the gateway cannot see into.
    Do,
    Call,
    Prepare {
        name: String,
    },
    /// `EXECUTE name`: the relay resolves `name` to the prepared text.
    Execute {
        name: String,
    },
    /// `DEALLOCATE name`; `None` for `DEALLOCATE ALL`.
    Deallocate {
        name: Option<String>,
    },
    DeclareCursor {
        name: String,
        binary: bool,
    },
    /// `FETCH`, `MOVE`, `CLOSE`.
    Cursor,
    Transaction,
    Explain {
        analyze: bool,
    },
    Show,
    Listen,
    Notify,
    Unlisten,
    Discard,
    Lock,
    /// `VACUUM`, `ANALYZE`.
    Maintenance,
    #[default]
    Other,
    /// The fast-path FunctionCall message: a function named by OID, with
    /// arguments, outside any statement. Which function is not known, so
    /// every rule about functions matches it.
    FunctionCall,
    /// Rejected by PostgreSQL's grammar (answered with 42601 as the server
    /// would), or otherwise unreadable (not UTF-8): never forwarded.
    Unparsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// `COPY … TO`: data leaves the database.
    To,
    /// `COPY … FROM`: data enters the database.
    From,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyTarget {
    Stdin,
    Stdout,
    /// A program run by the server.
    Program,
    /// A file on the server.
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlVerb {
    Create,
    Alter,
    Drop,
    Comment,
}

impl DdlVerb {
    pub(crate) const ALL: [DdlVerb; 4] = [
        DdlVerb::Create,
        DdlVerb::Alter,
        DdlVerb::Drop,
        DdlVerb::Comment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DdlVerb::Create => "create",
            DdlVerb::Alter => "alter",
            DdlVerb::Drop => "drop",
            DdlVerb::Comment => "comment",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlObject {
    Table,
    View,
    MaterializedView,
    Index,
    Schema,
    Database,
    Function,
    Procedure,
    Trigger,
    Sequence,
    Type,
    Domain,
    Policy,
    Server,
    Extension,
    Other,
}

impl DdlObject {
    pub(crate) const ALL: [DdlObject; 16] = [
        DdlObject::Table,
        DdlObject::View,
        DdlObject::MaterializedView,
        DdlObject::Index,
        DdlObject::Schema,
        DdlObject::Database,
        DdlObject::Function,
        DdlObject::Procedure,
        DdlObject::Trigger,
        DdlObject::Sequence,
        DdlObject::Type,
        DdlObject::Domain,
        DdlObject::Policy,
        DdlObject::Server,
        DdlObject::Extension,
        DdlObject::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DdlObject::Table => "table",
            DdlObject::View => "view",
            DdlObject::MaterializedView => "materialized_view",
            DdlObject::Index => "index",
            DdlObject::Schema => "schema",
            DdlObject::Database => "database",
            DdlObject::Function => "function",
            DdlObject::Procedure => "procedure",
            DdlObject::Trigger => "trigger",
            DdlObject::Sequence => "sequence",
            DdlObject::Type => "type",
            DdlObject::Domain => "domain",
            DdlObject::Policy => "policy",
            DdlObject::Server => "server",
            DdlObject::Extension => "extension",
            DdlObject::Other => "other",
        }
    }
}

/// Every kind name a rule may use that is not a `ddl_<verb>[_<object>]`
/// name (those are listed by [`is_kind_name`]).
pub const KIND_NAMES: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "dml",
    "copy",
    "copy_to",
    "copy_from",
    "copy_stdin",
    "copy_stdout",
    "copy_program",
    "copy_file",
    "ddl",
    "truncate",
    "role",
    "create_role",
    "alter_role",
    "drop_role",
    "grant",
    "revoke",
    "owned_objects",
    "alter_system",
    "set_role",
    "session_authorization",
    "set",
    "create_extension",
    "load",
    "do",
    "call",
    "prepare",
    "execute",
    "deallocate",
    "declare_cursor",
    "cursor",
    "transaction",
    "explain",
    "explain_analyze",
    "show",
    "listen",
    "notify",
    "unlisten",
    "discard",
    "lock",
    "maintenance",
    "other",
    "function_call",
    "unparsed",
];

/// Whether `name` is a kind name rules may use: one of [`KIND_NAMES`],
/// `ddl_<verb>` or `ddl_<verb>_<object>` (verbs: create, alter, drop,
/// comment; objects: see [`DdlObject::as_str`]).
pub fn is_kind_name(name: &str) -> bool {
    if KIND_NAMES.contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("ddl_") else {
        return false;
    };
    DdlVerb::ALL.iter().any(|verb| {
        rest == verb.as_str()
            || rest
                .strip_prefix(verb.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|object| DdlObject::ALL.iter().any(|o| o.as_str() == object))
    })
}

impl Kind {
    /// The names this kind answers to, most specific last: `COPY … TO
    /// PROGRAM` is `copy`, `copy_to` and `copy_program`; `DROP DATABASE` is
    /// `ddl`, `ddl_drop` and `ddl_drop_database`.
    pub fn names(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            Kind::Select => &["select"],
            Kind::Insert => &["dml", "insert"],
            Kind::Update => &["dml", "update"],
            Kind::Delete => &["dml", "delete"],
            Kind::Merge => &["dml", "merge"],
            Kind::Copy { direction, target } => {
                let mut names = vec!["copy".to_owned()];
                names.push(
                    match direction {
                        CopyDirection::To => "copy_to",
                        CopyDirection::From => "copy_from",
                    }
                    .to_owned(),
                );
                names.push(
                    match target {
                        CopyTarget::Stdin => "copy_stdin",
                        CopyTarget::Stdout => "copy_stdout",
                        CopyTarget::Program => "copy_program",
                        CopyTarget::File => "copy_file",
                    }
                    .to_owned(),
                );
                return names;
            }
            Kind::Ddl { verb, object } => {
                return vec![
                    "ddl".to_owned(),
                    format!("ddl_{}", verb.as_str()),
                    format!("ddl_{}_{}", verb.as_str(), object.as_str()),
                ];
            }
            Kind::Truncate => &["ddl", "truncate"],
            Kind::CreateRole => &["role", "create_role"],
            Kind::AlterRole => &["role", "alter_role"],
            Kind::DropRole => &["role", "drop_role"],
            Kind::Grant => &["role", "grant"],
            Kind::Revoke => &["role", "revoke"],
            Kind::OwnedObjects => &["role", "owned_objects"],
            Kind::AlterSystem => &["alter_system"],
            Kind::SetRole => &["set_role"],
            Kind::SessionAuthorization => &["session_authorization"],
            Kind::Set => &["set"],
            Kind::CreateExtension => &["create_extension"],
            Kind::Load => &["load"],
            Kind::Do => &["do"],
            Kind::Call => &["call"],
            Kind::Prepare { .. } => &["prepare"],
            Kind::Execute { .. } => &["execute"],
            Kind::Deallocate { .. } => &["deallocate"],
            Kind::DeclareCursor { .. } => &["declare_cursor"],
            Kind::Cursor => &["cursor"],
            Kind::Transaction => &["transaction"],
            Kind::Explain { analyze: false } => &["explain"],
            Kind::Explain { analyze: true } => &["explain", "explain_analyze"],
            Kind::Show => &["show"],
            Kind::Listen => &["listen"],
            Kind::Notify => &["notify"],
            Kind::Unlisten => &["unlisten"],
            Kind::Discard => &["discard"],
            Kind::Lock => &["lock"],
            Kind::Maintenance => &["maintenance"],
            Kind::Other => &["other"],
            Kind::FunctionCall => &["function_call"],
            Kind::Unparsed => &["unparsed"],
        };
        fixed.iter().map(|name| (*name).to_owned()).collect()
    }

    /// Whether this kind answers to `name` (see [`Kind::names`]).
    pub fn is(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }
}

/// A schema-qualified relation name. Unquoted identifiers are lowercased,
/// quoted ones kept exactly, as PostgreSQL resolves them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
    /// The statement did not name a schema; `public` was assumed. The real
    /// table depends on `search_path` (a `pg_catalog` or temporary table of
    /// the same name wins), so rules about unqualified names are best effort.
    pub schema_assumed: bool,
}

impl TableName {
    /// `schema.name`, the form table globs and the protected-table set use.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A run-time parameter a statement sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parameter {
    /// Lowercased name (`role`, `session_authorization`, `hoop.session`,
    /// `all` for `RESET ALL`).
    Named(String),
    /// `set_config(expr, …)` with a name that is not a literal, or an
    /// `UPDATE pg_settings`: could be any parameter, so every parameter
    /// matcher matches.
    Unknown,
    /// `set_config($n, …)`: named by bind parameter `n`, known when a
    /// portal runs (see [`StatementFacts::bound_settings`]); until then, as
    /// [`Parameter::Unknown`].
    Bound(u16),
}

/// Replaces the first `Parameter::Bound(n)` in `parameters` with `by`.
fn replace_bound(parameters: &mut [Parameter], n: u16, by: Parameter) {
    if let Some(p) = parameters.iter_mut().find(|p| **p == Parameter::Bound(n)) {
        *p = by;
    }
}

/// One end of an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

/// The values of one column a statement may read: `None` ends are open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Interval {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
}

/// Intervals implied by the statement's WHERE clauses, per relation read
/// and column. A relation or column missing from the map is unbounded.
///
/// Only conjunctions (`AND`) of comparisons between a column and a numeric
/// literal (`>`, `>=`, `<`, `<=`, `=`, `BETWEEN`, `IN (…)`) bound a column,
/// and a comparison bounds only the relation it names: `x.amount < 5`
/// bounds the FROM item called `x`; an unqualified column bounds a relation
/// only in a query block that reads nothing else. `OR`, `NOT`, parameters
/// and anything else leave it unbounded. Every place a relation is read
/// (subqueries, CTEs, UNION branches, UPDATE/DELETE targets, relations named
/// by utility statements or `table_to_xml`) counts: a column of a relation
/// is bounded only if each of them bounds it, and then by the hull of their
/// intervals. Conservative on purpose.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnBounds {
    /// `schema.table` → column → interval.
    pub relations: BTreeMap<String, BTreeMap<String, Interval>>,
}

impl ColumnBounds {
    /// The interval of `column` (lowercased name) of `table`
    /// (`schema.table`), unbounded when unknown.
    pub fn of(&self, table: &str, column: &str) -> Interval {
        self.relations
            .get(table)
            .and_then(|columns| columns.get(column))
            .copied()
            .unwrap_or_default()
    }

    /// The interval of `column` over every relation the statement reads:
    /// bounded only when each of them bounds it (by the hull); unbounded
    /// when the statement reads no relation.
    pub fn get(&self, column: &str) -> Interval {
        let mut intervals = self.relations.values().map(|c| c.get(column).copied());
        let Some(Some(mut hull)) = intervals.next() else {
            return Interval::default();
        };
        for interval in intervals {
            match interval {
                Some(interval) => hull = hull.hull(&interval),
                None => return Interval::default(),
            }
        }
        hull
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_all_known() {
        let samples = [
            Kind::Copy {
                direction: CopyDirection::To,
                target: CopyTarget::Program,
            },
            Kind::Ddl {
                verb: DdlVerb::Drop,
                object: DdlObject::MaterializedView,
            },
            Kind::Explain { analyze: true },
            Kind::Unparsed,
        ];
        for kind in samples {
            for name in kind.names() {
                assert!(is_kind_name(&name), "{name}");
            }
        }
        assert!(is_kind_name("ddl_drop_database"));
        assert!(is_kind_name("ddl_create"));
        assert!(!is_kind_name("ddl_drop_"));
        assert!(!is_kind_name("ddl_explode_table"));
        assert!(!is_kind_name("copy_everything"));
    }
}
