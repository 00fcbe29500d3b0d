//! `classify(sql)`: what each statement of a query string does, read with
//! PostgreSQL's own grammar.
//!
//! The string is parsed once by libpg_query (the `pg_query` crate: the
//! PostgreSQL 18 parser compiled in), so statements are split, comments,
//! dollar quoting, `E''`/`U&''` strings and quoted identifiers are read
//! exactly as the server reads them: there is no second grammar an attacker
//! could make disagree with the server's. A string the grammar rejects is
//! one [`Kind::Unparsed`] statement carrying the server's own message and
//! cursor position ([`SyntaxError`]); the relay answers it with 42601 and
//! never forwards it, as the server would have refused it anyway.
//!
//! Facts come from two passes over each statement's parse tree:
//! - its top node says the kind (and, for `EXPLAIN`, `PREPARE`, `DECLARE`,
//!   the wrapped statement, classified on its own);
//! - a generic walk over the whole tree (as JSON, so no node type can be
//!   forgotten: a call inside `LIMIT`, a `CREATE RULE` action, a trigger's
//!   `WHEN` are all visited) collects relations, functions, columns,
//!   parameters set, nested data-modifying statements and the bounds WHERE
//!   clauses put on the relations they name.
//!
//! This replaced a classifier built on sqlparser, a second grammar that
//! refused much of PostgreSQL's and could read a statement differently from
//! the server; nothing in the gateway uses sqlparser any more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::Arc;

use pg_query::protobuf::{DiscardMode, ObjectType, VariableSetKind};
use serde_json::Value;

use crate::bounds;
use crate::facts::{
    unreadable_client_encoding, weakens_reading, BoundSetting, ColumnBounds, CopyDirection,
    CopyTarget, DdlObject, DdlVerb, Interval, Kind, Lasting, Parameter, SettingValue,
    StatementFacts, SyntaxError, TableName,
};

/// Every statement of one query string, in order. An empty string (or only
/// comments and semicolons) has no statements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Classified {
    pub statements: Vec<StatementFacts>,
    /// Some fact other than a bound was read from a literal's value (a
    /// `set_config` name, a `table_to_xml` table, an EXPLAIN option):
    /// statements that differ only in literals may have different facts,
    /// so the shape cache keeps out.
    pub(crate) literal_dependent: bool,
    /// Columns a literal bounds somewhere in the string (`amount < 5`).
    pub(crate) bound_columns: BTreeSet<String>,
}

impl Classified {
    /// Whether any statement was not understood.
    pub fn has_unparsed(&self) -> bool {
        self.statements.iter().any(|s| s.kind == Kind::Unparsed)
    }

    /// PostgreSQL's grammar rejected the string.
    pub fn syntax_error(&self) -> Option<&SyntaxError> {
        self.statements.iter().find_map(|s| s.syntax_error.as_ref())
    }
}

/// Statements at least this long may hold parse trees deep enough that
/// decoding, walking and dropping them (one Rust recursion per tree level,
/// about 1.5 KiB of stack per level in release builds and ten times that in
/// debug builds) would overflow the caller's stack — a tokio worker has
/// 2 MiB, and `SELECT 1+1+…` with 1,500 terms, which the parser accepts,
/// needs more. A tree level takes at least two bytes of SQL, so shorter
/// statements are classified where they are.
const SHALLOW_STATEMENT_LEN: usize = if cfg!(debug_assertions) { 96 } else { 1024 };

/// The stack longer statements are classified on, on a thread of their
/// own: the parser sizes its own depth limit (at most 2 MiB of C stack)
/// from the real bounds of the thread it runs on, and the Rust side gets
/// the rest. Only the pages used are ever touched.
const DEEP_STACK: usize = 256 * 1024 * 1024;

/// Runs `work` where a parse tree of any depth the parser produces fits;
/// `None` when no thread could be started for it (fail closed).
fn with_room_for<R: Send>(sql: &str, work: impl FnOnce() -> R + Send) -> Option<R> {
    if sql.len() < SHALLOW_STATEMENT_LEN {
        return Some(work());
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("hoop-classify".to_owned())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, work)
            .ok()?
            .join()
            .ok()
    })
}

/// Classifies every statement of `sql` (a simple Query's string, a Parse's
/// text, or a prepared statement's text).
pub fn classify(sql: &str) -> Classified {
    classify_in(sql, StringLiterals::Standard)
}

/// How the server reads ordinary string literals (`'…'`): its
/// `standard_conforming_strings`, as it reports it. The gateway reads
/// every text the way the server will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StringLiterals {
    /// `on` (the default): a backslash is an ordinary character in `'…'`.
    #[default]
    Standard,
    /// `off`: a backslash escapes in `'…'` too, as in `E'…'`.
    Escaped,
}

impl StringLiterals {
    /// As the server reports `standard_conforming_strings` (`on` or `off`).
    pub fn reported(value: &str) -> StringLiterals {
        if value == "on" {
            StringLiterals::Standard
        } else {
            StringLiterals::Escaped
        }
    }

    fn parser_options(self) -> pg_query::ParserOptions {
        match self {
            StringLiterals::Standard => pg_query::ParserOptions::DEFAULT,
            StringLiterals::Escaped => {
                pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
                    | pg_query::ParserOptions::DISABLE_ESCAPE_STRING_WARNING
            }
        }
    }
}

/// Whether `sql` reads alike whatever `standard_conforming_strings` is:
/// it has no backslash (the only character the setting changes the
/// meaning of; a `U&'…'` string is refused by the server when it is off),
/// or both readings make the same statements.
pub fn reads_alike_in_both(sql: &str) -> bool {
    !sql.contains('\\')
        || statement_key_here(sql, StringLiterals::Standard)
            == statement_key_here(sql, StringLiterals::Escaped)
}

/// [`classify`] for a session whose string literals are read `strings`.
pub fn classify_in(sql: &str, strings: StringLiterals) -> Classified {
    with_room_for(sql, || classify_here(sql, strings)).unwrap_or_else(|| {
        refused(
            SQLSTATE_TOO_COMPLEX,
            "the gateway could not classify this statement (no thread for it); try again",
        )
    })
}

/// A statement that ends a failed transaction: the only kind PostgreSQL
/// runs there (`IsTransactionExitStmt`); every other is answered with 25P02.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionExit {
    /// `ROLLBACK`/`ABORT` (also `AND CHAIN`) and `ROLLBACK TO SAVEPOINT`:
    /// the same in a failed transaction as in a healthy one.
    Rollback,
    /// `COMMIT`/`END` (`chain`: `AND CHAIN`) and `PREPARE TRANSACTION`: in a
    /// failed transaction they roll it back (command tag `ROLLBACK`), as
    /// `ROLLBACK` (`AND CHAIN`) would.
    Commit { chain: bool },
}

/// What PostgreSQL does with `sql` in a failed transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFailedTransaction {
    /// It does not parse: the syntax error is reported (first).
    Unparsed,
    /// No statement at all (`;`, a comment): nothing to refuse.
    Empty,
    /// The first of its `usize` statements ends the block.
    Ends(TransactionExit, usize),
    /// Its first statement is refused: 25P02.
    Refused,
}

/// Reads `sql` as PostgreSQL does in a failed transaction block.
pub fn in_failed_transaction(sql: &str, strings: StringLiterals) -> InFailedTransaction {
    use pg_query::protobuf::TransactionStmtKind as K;
    use pg_query::NodeEnum;
    let Some(Ok(parsed)) = with_room_for(sql, || pg_query::parse(sql, strings.parser_options()))
    else {
        return InFailedTransaction::Unparsed;
    };
    let stmts = &parsed.protobuf.stmts;
    let Some(first) = stmts.first() else {
        return InFailedTransaction::Empty;
    };
    let Some(NodeEnum::TransactionStmt(first)) =
        first.stmt.as_ref().and_then(|node| node.node.as_ref())
    else {
        return InFailedTransaction::Refused;
    };
    let exit = match K::try_from(first.kind) {
        Ok(K::TransStmtRollback | K::TransStmtRollbackTo) => TransactionExit::Rollback,
        Ok(K::TransStmtCommit) => TransactionExit::Commit { chain: first.chain },
        Ok(K::TransStmtPrepare) => TransactionExit::Commit { chain: false },
        _ => return InFailedTransaction::Refused,
    };
    InFailedTransaction::Ends(exit, stmts.len())
}

/// One statement the gateway refuses before any rule, with this SQLSTATE.
fn refused(sqlstate: &'static str, message: &str) -> Classified {
    Classified {
        statements: vec![StatementFacts {
            kind: Kind::Unparsed,
            unparsed_reason: Some(message.to_owned()),
            syntax_error: Some(SyntaxError {
                sqlstate,
                message: message.to_owned(),
                position: None,
            }),
            ..StatementFacts::default()
        }],
        literal_dependent: false,
        bound_columns: BTreeSet::new(),
    }
}

fn classify_here(sql: &str, strings: StringLiterals) -> Classified {
    let parsed = match pg_query::parse(sql, strings.parser_options()) {
        Ok(parsed) => parsed,
        Err(error) => return rejected(sql, &error),
    };
    let mut literal_dependent = false;
    let statements: Vec<StatementFacts> = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_deref())
        .map(|stmt| match serde_json::to_value(stmt) {
            Ok(tree) => facts_of(&tree, &mut literal_dependent),
            // Serializing a tree the parser built cannot fail; if it ever
            // did, nothing is known about the statement: refuse it.
            Err(error) => StatementFacts::unparsed(format!("parse tree: {error}")),
        })
        .collect();
    let bound_columns = statements
        .iter()
        .flat_map(|facts: &StatementFacts| facts.levels())
        .flat_map(|level| level.bounds.relations.values())
        .flat_map(|columns| columns.keys().cloned())
        .collect();
    Classified {
        statements,
        literal_dependent,
        bound_columns,
    }
}

/// What a review grant matches on: the statement as PostgreSQL's grammar
/// reads it — its parse tree with every source position dropped — so
/// whitespace and comments do not count and everything else does (a
/// literal, a `--` comment that now ends elsewhere and lets code through,
/// a dollar-quoted body). A string the grammar rejects (it never runs) is
/// keyed by its text with whitespace collapsed.
pub fn statement_key(sql: &str) -> String {
    statement_key_in(sql, StringLiterals::Standard)
}

/// [`statement_key`] for a session whose string literals are read
/// `strings`. A text with a backslash read with escapes is keyed apart
/// (`escaped:`): a grant for it read as standard is not one for it read so.
pub fn statement_key_in(sql: &str, strings: StringLiterals) -> String {
    if strings == StringLiterals::Escaped && sql.contains('\\') {
        return format!("escaped:{}", statement_key_here(sql, strings));
    }
    statement_key_here(sql, StringLiterals::Standard)
}

fn statement_key_here(sql: &str, strings: StringLiterals) -> String {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(object) => {
                object.retain(|name, _| {
                    !(name.ends_with("location")
                        || matches!(
                            name.as_str(),
                            "stmt_len"
                                | "list_start"
                                | "list_end"
                                | "rexpr_list_start"
                                | "rexpr_list_end"
                        ))
                });
                object.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let key = with_room_for(sql, || {
        let parsed = pg_query::parse(sql, strings.parser_options()).ok()?;
        let mut tree = serde_json::to_value(&parsed.protobuf.stmts).ok()?;
        strip(&mut tree);
        Some(format!("pg18:{tree}"))
    })
    .flatten();
    match key {
        Some(key) => key,
        None => {
            let collapsed = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("text:{}", collapsed.trim_end_matches([';', ' ']))
        }
    }
}

/// The facts of `SET name = …`, without writing SQL: what a setting passed
/// some other way (the `options` startup parameter) is judged as.
pub fn setting_facts(name: &str) -> StatementFacts {
    let name = name.trim().to_lowercase();
    StatementFacts {
        kind: kind_for_parameter(&name),
        parameters: vec![Parameter::Named(name)],
        ..StatementFacts::default()
    }
}

/// The classification of a string the grammar rejects: one statement with
/// the server's message and position.
fn rejected(sql: &str, parse_error: &pg_query::Error) -> Classified {
    let error = syntax_error(sql, parse_error);
    Classified {
        statements: vec![StatementFacts {
            kind: Kind::Unparsed,
            unparsed_reason: Some(error.message.clone()),
            syntax_error: Some(error),
            ..StatementFacts::default()
        }],
        literal_dependent: false,
        bound_columns: BTreeSet::new(),
    }
}

const SQLSTATE_SYNTAX_ERROR: &str = "42601";
const SQLSTATE_TOO_COMPLEX: &str = "54001";

/// libpg_query's error for `sql`: the `pg_query` crate keeps only the
/// message, so the C entry point is called again for the cursor position
/// (only ever on a string that failed to parse).
fn syntax_error(sql: &str, parse_error: &pg_query::Error) -> SyntaxError {
    #[repr(C)]
    struct PgQueryError {
        message: *mut c_char,
        funcname: *mut c_char,
        filename: *mut c_char,
        lineno: c_int,
        cursorpos: c_int,
        context: *mut c_char,
    }
    #[repr(C)]
    struct PgQueryParseResult {
        parse_tree: *mut c_char,
        stderr_buffer: *mut c_char,
        error: *mut PgQueryError,
    }
    extern "C" {
        fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
        fn pg_query_free_parse_result(result: PgQueryParseResult);
    }
    let Ok(input) = CString::new(sql) else {
        return SyntaxError {
            sqlstate: SQLSTATE_SYNTAX_ERROR,
            message: "invalid message format: the statement contains a zero byte".to_owned(),
            position: None,
        };
    };
    // SAFETY: `input` is a valid NUL-terminated string that outlives the
    // call; the result is read before it is freed, and freed exactly once
    // with the library's own function. The struct layouts are those of
    // libpg_query's pg_query.h, which the linked library was built from.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let error = if result.error.is_null() {
            // The grammar accepts it, yet its tree could not be produced
            // or read (deeper than the parser's stack allows on the way
            // out): refused, with what the first attempt said.
            let message = match parse_error {
                pg_query::Error::Parse(message) => message.clone(),
                _ => "statement too complex for the gateway to classify".to_owned(),
            };
            SyntaxError {
                sqlstate: SQLSTATE_TOO_COMPLEX,
                message,
                position: None,
            }
        } else {
            let error = &*result.error;
            let message = if error.message.is_null() {
                "syntax error".to_owned()
            } else {
                CStr::from_ptr(error.message).to_string_lossy().into_owned()
            };
            SyntaxError {
                sqlstate: if message.starts_with("stack depth limit exceeded") {
                    SQLSTATE_TOO_COMPLEX
                } else {
                    SQLSTATE_SYNTAX_ERROR
                },
                message,
                position: u32::try_from(error.cursorpos).ok().filter(|p| *p > 0),
            }
        };
        pg_query_free_parse_result(result);
        error
    }
}

// ---------------------------------------------------------------------------
// Reading the JSON form of the parse tree.

/// A node written as `{"node": {"Tag": body}}`.
fn tagged(value: &Value) -> Option<(&str, &Value)> {
    let node = value.as_object()?.get("node")?.as_object()?;
    if node.len() != 1 {
        return None;
    }
    node.iter().next().map(|(tag, body)| (tag.as_str(), body))
}

fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.get(name).filter(|v| !v.is_null())
}

fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, name: &str) -> i64 {
    value.get(name).and_then(Value::as_i64).unwrap_or(0)
}

fn flag(value: &Value, name: &str) -> bool {
    value.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    value
        .get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The text of a `String` node.
fn string_node(value: &Value) -> Option<&str> {
    match tagged(value) {
        Some(("String", body)) => body.get("sval").and_then(Value::as_str),
        _ => None,
    }
}

/// A qualified name written as a list of `String` nodes.
fn name_parts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(string_node)
        .map(str::to_owned)
        .collect()
}

/// An untagged `RangeVar` (a struct field rather than a `Node`).
fn is_range_var(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("relname") && o.contains_key("relpersistence"))
}

/// An untagged `SelectStmt` (the branches of a UNION, INTERSECT, EXCEPT).
fn is_select_stmt(value: &Value) -> bool {
    value.as_object().is_some_and(|o| {
        o.contains_key("larg") && o.contains_key("target_list") && o.contains_key("values_lists")
    })
}

/// An untagged `ObjectWithArgs` (`CREATE CAST … WITH FUNCTION f(…)`,
/// `ALTER FUNCTION f(…)`).
fn is_object_with_args(value: &Value) -> bool {
    value.as_object().is_some_and(|o| {
        o.contains_key("objname") && o.contains_key("objargs") && o.contains_key("args_unspecified")
    })
}

/// An untagged `FuncCall` (`CALL`'s call).
fn is_func_call(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("funcname") && o.contains_key("agg_star"))
}

fn table_of(parts: &[String]) -> Option<TableName> {
    match parts {
        [] => None,
        [table] => Some(TableName {
            schema: "public".to_owned(),
            name: table.clone(),
            schema_assumed: true,
        }),
        [.., schema, table] => Some(TableName {
            schema: schema.clone(),
            name: table.clone(),
            schema_assumed: false,
        }),
    }
}

// ---------------------------------------------------------------------------
// One statement.

/// Facts of one statement node.
fn facts_of(node: &Value, literal_dependent: &mut bool) -> StatementFacts {
    let Some((tag, body)) = tagged(node) else {
        return StatementFacts::default();
    };
    let inner = |name: &str, literal_dependent: &mut bool| {
        field(body, name)
            .map(|query| facts_of(query, literal_dependent))
            .unwrap_or_default()
    };
    match tag {
        "ExplainStmt" => {
            // An option's value is a literal (`ANALYZE 0`, `ANALYZE 1`). EXPLAIN
            // has no shape (`shape_key`); this holds should it get one.
            *literal_dependent |= list(body, "options")
                .iter()
                .any(|option| matches!(tagged(option), Some(("DefElem", d)) if field(d, "arg").is_some()));
            let analyze = list(body, "options").iter().any(|option| {
                matches!(tagged(option), Some(("DefElem", d))
                    if text(d, "defname").eq_ignore_ascii_case("analyze")
                        && !field(d, "arg").is_some_and(is_false_option))
            });
            wrapper(Kind::Explain { analyze }, inner("query", literal_dependent))
        }
        "PrepareStmt" => wrapper(
            Kind::Prepare {
                name: text(body, "name").to_owned(),
            },
            inner("query", literal_dependent),
        ),
        "DeclareCursorStmt" => wrapper(
            Kind::DeclareCursor {
                name: text(body, "portalname").to_owned(),
                // CURSOR_OPT_BINARY
                binary: int(body, "options") & 0x0001 != 0,
            },
            inner("query", literal_dependent),
        ),
        "VariableSetStmt" => {
            // `SET standard_conforming_strings = 1` and `= 0` differ in a
            // literal the decision depends on. SET has no shape
            // (`shape_key`); this holds should it get one.
            *literal_dependent = true;
            set_facts(body)
        }
        "AlterSystemStmt" | "AlterRoleSetStmt" | "AlterDatabaseSetStmt" => {
            let mut facts = plain(tag, body, literal_dependent);
            if let Some(set) = field(body, "setstmt") {
                let name = set_parameter_name(set);
                // A later session's client encoding is checked when it
                // starts too.
                let value = (int(set, "kind") == VariableSetKind::VarSetValue as i64)
                    .then(|| set_value(set))
                    .flatten();
                facts.weakens_reading |= weakens_reading(&name, value.as_deref());
                facts.parameters.push(Parameter::Named(name));
            }
            facts
        }
        "DiscardStmt" => {
            let mut facts = plain(tag, body, literal_dependent);
            if int(body, "target") == DiscardMode::DiscardAll as i64 {
                // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT: it
                // would drop the mapped role and act as the gateway's login role.
                facts.parameters = ["session_authorization", "role", "all"]
                    .into_iter()
                    .map(|p| Parameter::Named(p.to_owned()))
                    .collect();
            }
            facts
        }
        _ => plain(tag, body, literal_dependent),
    }
}

/// `EXPLAIN (ANALYZE false)`, `off`, `0`.
fn is_false_option(arg: &Value) -> bool {
    match tagged(arg) {
        Some(("Boolean", b)) => !flag(b, "boolval"),
        Some(("Integer", i)) => int(i, "ival") == 0,
        Some(("String", s)) => matches!(
            text(s, "sval").to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        ),
        _ => false,
    }
}

/// A wrapper statement: its own kind, what the wrapped statement touches
/// (so `kinds = ["explain_analyze"]` and `tables = […]` can meet in one
/// rule), and the wrapped statement's facts.
fn wrapper(kind: Kind, inner: StatementFacts) -> StatementFacts {
    StatementFacts {
        kind,
        tables: inner.tables.clone(),
        columns_read: inner.columns_read.clone(),
        columns_written: inner.columns_written.clone(),
        all_columns: inner.all_columns,
        functions: inner.functions.clone(),
        missing_where: inner.missing_where,
        bounds: inner.bounds.clone(),
        parameters: inner.parameters.clone(),
        inner: Some(Box::new(inner)),
        ..StatementFacts::default()
    }
}

/// `SET`, `RESET`, `SET ROLE`, `SET SESSION AUTHORIZATION`, `SET TIME ZONE`,
/// `SET TRANSACTION`.
fn set_facts(body: &Value) -> StatementFacts {
    if int(body, "kind") == VariableSetKind::VarSetMulti as i64 {
        // SET TRANSACTION …, SET SESSION CHARACTERISTICS AS TRANSACTION …
        return StatementFacts {
            kind: Kind::Transaction,
            ..StatementFacts::default()
        };
    }
    let name = set_parameter_name(body);
    // SET … TO DEFAULT and RESET restore the server's default (the gateway
    // refuses changing it with ALTER SYSTEM/ROLE/DATABASE … SET).
    let sets_value = int(body, "kind") == VariableSetKind::VarSetValue as i64
        || int(body, "kind") == VariableSetKind::VarSetCurrent as i64;
    let weakens = sets_value && weakens_reading(&name, set_value(body).as_deref());
    StatementFacts {
        kind: kind_for_parameter(&name),
        parameters: vec![Parameter::Named(name)],
        weakens_reading: weakens,
        ..StatementFacts::default()
    }
}

/// The single constant a `SET name = value` gives, as text (`None` for a
/// list, `FROM CURRENT`, or anything else).
fn set_value(set: &Value) -> Option<String> {
    let [arg] = list(set, "args") else {
        return None;
    };
    let (_, constant) = tagged(arg).filter(|(tag, _)| *tag == "AConst")?;
    let val = constant.get("val")?.as_object()?;
    let (kind, inner) = val.iter().next()?;
    match kind.as_str() {
        "Sval" => inner.get("sval")?.as_str().map(str::to_owned),
        "Ival" => Some(
            inner
                .get("ival")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        ),
        "Boolval" => Some(
            if inner
                .get("boolval")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                "on".to_owned()
            } else {
                "off".to_owned()
            },
        ),
        "Fval" => inner.get("fval")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The parameter a `VariableSetStmt` sets: lowercased (GUC names are
/// case-insensitive, quoted or not); `all` for `RESET ALL`.
fn set_parameter_name(set: &Value) -> String {
    if int(set, "kind") == VariableSetKind::VarResetAll as i64 {
        return "all".to_owned();
    }
    text(set, "name").trim().to_lowercase()
}

/// `SET role = x` is `SET ROLE x` in PostgreSQL; likewise for
/// `session_authorization`.
fn kind_for_parameter(name: &str) -> Kind {
    match name {
        "role" => Kind::SetRole,
        "session_authorization" => Kind::SessionAuthorization,
        _ => Kind::Set,
    }
}

/// A statement whose facts come from walking all of it.
fn plain(tag: &str, body: &Value, literal_dependent: &mut bool) -> StatementFacts {
    let mut walker = Walker::default();
    let mut facts = StatementFacts {
        kind: kind_of(tag, body),
        ..StatementFacts::default()
    };
    match tag {
        "SelectStmt" => walker.select(body),
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
            facts.missing_where = walker.data_modification(tag, body, true);
        }
        "CopyStmt" => {
            let columns = name_parts(list(body, "attlist"));
            if columns.is_empty() && field(body, "relation").is_some() {
                walker.all_columns = true;
            }
            if flag(body, "is_from") {
                walker.columns_written.extend(columns);
            } else {
                walker.columns_read.extend(columns);
            }
            walker.walk_fields(body, &[]);
        }
        "DropStmt" => {
            let table_like = [
                ObjectType::ObjectTable,
                ObjectType::ObjectView,
                ObjectType::ObjectMatview,
                ObjectType::ObjectSequence,
                ObjectType::ObjectForeignTable,
            ];
            if table_like
                .iter()
                .any(|t| *t as i64 == int(body, "remove_type"))
            {
                for object in list(body, "objects") {
                    if let Some(("List", items)) = tagged(object) {
                        walker.add_named_table(&name_parts(list(items, "items")));
                    }
                }
            }
            walker.walk_fields(body, &[]);
        }
        "CommentStmt" => {
            if int(body, "objtype") == ObjectType::ObjectTable as i64 {
                if let Some(("List", items)) = field(body, "object").and_then(tagged) {
                    walker.add_named_table(&name_parts(list(items, "items")));
                }
            }
        }
        "ExecuteStmt" => {
            walker.executes.push(text(body, "name").to_owned());
            walker.walk_fields(body, &[]);
        }
        "CreateTrigStmt" | "CreateEventTrigStmt" => {
            // The function the trigger will run is called, later, by every
            // write to the table (every DDL command, for an event trigger).
            walker.add_function_name(list(body, "funcname"));
            walker.walk_fields(body, &[]);
        }
        _ => walker.walk_fields(body, &[]),
    }
    // A view or rule over pg_settings is a way to UPDATE it under another
    // name (`CREATE TEMP VIEW v AS SELECT * FROM pg_settings; UPDATE v …`),
    // which no later statement shows: it could set any parameter.
    if matches!(tag, "ViewStmt" | "RuleStmt" | "CreateFunctionStmt")
        && walker.tables.iter().any(|t| t.name == "pg_settings")
    {
        walker.parameters.push(Parameter::Unknown);
    }
    *literal_dependent |= walker.literal_dependent;
    walker.finish(&mut facts);
    // A read_only statement but for the functions it calls.
    let plain_read = tag == "SelectStmt"
        && facts.kind == Kind::Select
        && facts.nested_kinds.is_empty()
        && facts.parameters.is_empty()
        && facts.executes.is_empty()
        && !facts.weakens_reading
        && !has_key(body, "locking_clause");
    facts.read_only = plain_read && facts.functions.is_empty();
    facts.lasting = lasting(tag, body, &facts, plain_read, facts.functions.is_empty());
    facts.lasting_if_calls_are_stable_builtins = lasting(tag, body, &facts, plain_read, true);
    facts
}

/// See [`Lasting`]; `facts` are the statement's own, `plain_read` what
/// makes it [`StatementFacts::read_only`] but its calls, `inert_calls`
/// whether those change nothing (none, or see
/// [`StatementFacts::lasting_if_calls_are_stable_builtins`]).
fn lasting(
    tag: &str,
    body: &Value,
    facts: &StatementFacts,
    plain_read: bool,
    inert_calls: bool,
) -> Lasting {
    use pg_query::protobuf::TransactionStmtKind as K;
    if plain_read && inert_calls {
        return Lasting::Nothing;
    }
    if tag == "TransactionStmt" {
        let kind = int(body, "kind");
        return if kind == K::TransStmtBegin as i64 || kind == K::TransStmtStart as i64 {
            Lasting::Begins
        } else if kind == K::TransStmtSavepoint as i64
            || kind == K::TransStmtRelease as i64
            || kind == K::TransStmtRollbackTo as i64
        {
            Lasting::Nothing
        } else if kind == K::TransStmtRollback as i64 {
            Lasting::RollsBack {
                chain: flag(body, "chain"),
            }
        } else {
            // COMMIT, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED.
            Lasting::Maybe
        };
    }
    let changes_rows = matches!(
        (tag, &facts.kind),
        ("InsertStmt", Kind::Insert)
            | ("UpdateStmt", Kind::Update)
            | ("DeleteStmt", Kind::Delete)
            | ("MergeStmt", Kind::Merge)
            | ("SelectStmt", Kind::Select)
    );
    if changes_rows
        && inert_calls
        && facts.nested_kinds.is_empty()
        && facts.parameters.is_empty()
        && facts.executes.is_empty()
        && !facts.weakens_reading
    {
        Lasting::UntilCommit
    } else {
        Lasting::Maybe
    }
}

/// Whether `key` appears, with a value (not null, not an empty list),
/// anywhere in `value`.
fn has_key(value: &Value, key: &str) -> bool {
    let present = |item: &Value| !item.is_null() && item.as_array().is_none_or(|a| !a.is_empty());
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(name, item)| (name == key && present(item)) || has_key(item, key)),
        Value::Array(items) => items.iter().any(|item| has_key(item, key)),
        _ => false,
    }
}

fn kind_of(tag: &str, body: &Value) -> Kind {
    use DdlObject as O;
    use DdlVerb::{Alter, Comment, Create, Drop};
    let ddl = |verb, object| Kind::Ddl { verb, object };
    let object = |name: &str| object_of(int(body, name));
    match tag {
        "SelectStmt" if field(body, "into_clause").is_some() => ddl(Create, O::Table),
        "SelectStmt" => Kind::Select,
        "InsertStmt" => Kind::Insert,
        "UpdateStmt" => Kind::Update,
        "DeleteStmt" => Kind::Delete,
        "MergeStmt" => Kind::Merge,
        "CopyStmt" => {
            let direction = if flag(body, "is_from") {
                CopyDirection::From
            } else {
                CopyDirection::To
            };
            let target = match (flag(body, "is_program"), text(body, "filename").is_empty()) {
                (true, _) => CopyTarget::Program,
                (false, false) => CopyTarget::File,
                (false, true) if direction == CopyDirection::From => CopyTarget::Stdin,
                (false, true) => CopyTarget::Stdout,
            };
            Kind::Copy { direction, target }
        }
        "TruncateStmt" => Kind::Truncate,
        "CreateRoleStmt" => Kind::CreateRole,
        "AlterRoleStmt" | "AlterRoleSetStmt" => Kind::AlterRole,
        "DropRoleStmt" => Kind::DropRole,
        "GrantStmt" | "GrantRoleStmt" if flag(body, "is_grant") => Kind::Grant,
        "GrantStmt" | "GrantRoleStmt" => Kind::Revoke,
        "AlterDefaultPrivilegesStmt" => match field(body, "action") {
            Some(action) if !flag(action, "is_grant") => Kind::Revoke,
            _ => Kind::Grant,
        },
        "ReassignOwnedStmt" | "DropOwnedStmt" => Kind::OwnedObjects,
        "AlterSystemStmt" => Kind::AlterSystem,
        "CreateExtensionStmt" => Kind::CreateExtension,
        "LoadStmt" => Kind::Load,
        "DoStmt" => Kind::Do,
        "CallStmt" => Kind::Call,
        "ExecuteStmt" => Kind::Execute {
            name: text(body, "name").to_owned(),
        },
        "DeallocateStmt" => Kind::Deallocate {
            name: (!flag(body, "isall")).then(|| text(body, "name").to_owned()),
        },
        "FetchStmt" | "ClosePortalStmt" => Kind::Cursor,
        "TransactionStmt" | "ConstraintsSetStmt" => Kind::Transaction,
        "VariableShowStmt" => Kind::Show,
        "ListenStmt" => Kind::Listen,
        "NotifyStmt" => Kind::Notify,
        "UnlistenStmt" => Kind::Unlisten,
        "DiscardStmt" => Kind::Discard,
        "LockStmt" => Kind::Lock,
        "VacuumStmt" | "ClusterStmt" | "ReindexStmt" | "CheckPointStmt" | "RefreshMatViewStmt" => {
            Kind::Maintenance
        }
        "CreateStmt" | "CreateForeignTableStmt" => ddl(Create, O::Table),
        "CreateTableAsStmt" => ddl(Create, object("objtype")),
        "ViewStmt" => ddl(Create, O::View),
        "IndexStmt" => ddl(Create, O::Index),
        "CreateSchemaStmt" => ddl(Create, O::Schema),
        "CreatedbStmt" => ddl(Create, O::Database),
        "DropdbStmt" => ddl(Drop, O::Database),
        "AlterDatabaseStmt" | "AlterDatabaseSetStmt" | "AlterDatabaseRefreshCollStmt" => {
            ddl(Alter, O::Database)
        }
        "CreateFunctionStmt" if flag(body, "is_procedure") => ddl(Create, O::Procedure),
        "CreateFunctionStmt" => ddl(Create, O::Function),
        "AlterFunctionStmt" => ddl(Alter, object("objtype")),
        "CreateSeqStmt" => ddl(Create, O::Sequence),
        "AlterSeqStmt" => ddl(Alter, O::Sequence),
        "DefineStmt" => ddl(Create, object("kind")),
        "CompositeTypeStmt" | "CreateEnumStmt" | "CreateRangeStmt" => ddl(Create, O::Type),
        "AlterEnumStmt" | "AlterTypeStmt" => ddl(Alter, O::Type),
        "CreateDomainStmt" => ddl(Create, O::Domain),
        "AlterDomainStmt" => ddl(Alter, O::Domain),
        "CreatePolicyStmt" => ddl(Create, O::Policy),
        "AlterPolicyStmt" => ddl(Alter, O::Policy),
        "CreateForeignServerStmt" => ddl(Create, O::Server),
        "AlterForeignServerStmt" => ddl(Alter, O::Server),
        "CreateTrigStmt" | "CreateEventTrigStmt" => ddl(Create, O::Trigger),
        "AlterEventTrigStmt" => ddl(Alter, O::Trigger),
        "AlterExtensionStmt" | "AlterExtensionContentsStmt" => ddl(Alter, O::Extension),
        "AlterTableStmt" => ddl(Alter, object("objtype")),
        "RenameStmt" => ddl(Alter, object("rename_type")),
        "AlterObjectSchemaStmt" | "AlterOwnerStmt" => ddl(Alter, object("object_type")),
        "DropStmt" => ddl(Drop, object("remove_type")),
        "CommentStmt" => ddl(Comment, object("objtype")),
        "SecLabelStmt" => ddl(Comment, object("objtype")),
        "RuleStmt" => ddl(Create, O::Other),
        other if other.starts_with("Create") || other.starts_with("Define") => {
            ddl(Create, O::Other)
        }
        other if other.starts_with("Import") => ddl(Create, O::Other),
        other if other.starts_with("Alter") || other.starts_with("ReplicaIdentity") => {
            ddl(Alter, O::Other)
        }
        other if other.starts_with("Drop") => ddl(Drop, O::Other),
        _ => Kind::Other,
    }
}

fn object_of(object_type: i64) -> DdlObject {
    use DdlObject as O;
    let Ok(object_type) = ObjectType::try_from(object_type as i32) else {
        return O::Other;
    };
    match object_type {
        ObjectType::ObjectTable | ObjectType::ObjectForeignTable => O::Table,
        ObjectType::ObjectView => O::View,
        ObjectType::ObjectMatview => O::MaterializedView,
        ObjectType::ObjectIndex => O::Index,
        ObjectType::ObjectSchema => O::Schema,
        ObjectType::ObjectDatabase => O::Database,
        ObjectType::ObjectFunction | ObjectType::ObjectRoutine | ObjectType::ObjectAggregate => {
            O::Function
        }
        ObjectType::ObjectProcedure => O::Procedure,
        ObjectType::ObjectTrigger | ObjectType::ObjectEventTrigger => O::Trigger,
        ObjectType::ObjectSequence => O::Sequence,
        ObjectType::ObjectType => O::Type,
        ObjectType::ObjectDomain => O::Domain,
        ObjectType::ObjectPolicy => O::Policy,
        ObjectType::ObjectForeignServer => O::Server,
        ObjectType::ObjectExtension => O::Extension,
        _ => O::Other,
    }
}

// ---------------------------------------------------------------------------
// The walk.

/// One entry of a FROM list, as WHERE clauses refer to it.
struct FromItem {
    /// The alias, or the relation's name when it has none; `None` for an
    /// unaliased subquery or join.
    name: Option<String>,
    /// Where the relation is named (its `RangeVar` location), for a real
    /// relation; `None` for subqueries, functions, VALUES, CTE references.
    location: Option<i64>,
}

/// A bind parameter's number, as is or through a cast that keeps its text
/// (see [`Walker::exact_string`]).
fn exact_param(value: &Value) -> Option<u16> {
    match tagged(value)? {
        ("ParamRef", param) => u16::try_from(int(param, "number")).ok(),
        ("TypeCast", cast) if exact_cast(cast) => exact_param(field(cast, "arg")?),
        _ => None,
    }
}

/// A cast that passes a string on unchanged: to `text`, `varchar` or
/// `name` (qualified or not), without a length or array bounds.
fn exact_cast(cast: &Value) -> bool {
    let Some(type_name) = field(cast, "type_name") else {
        return false;
    };
    let names = name_parts(list(type_name, "names"));
    list(type_name, "typmods").is_empty()
        && list(type_name, "array_bounds").is_empty()
        && matches!(
            names.iter().map(String::as_str).collect::<Vec<_>>()[..],
            ["text" | "varchar" | "name"] | ["pg_catalog", "text" | "varchar" | "name"]
        )
}

/// Walks one statement (subqueries, CTEs, expressions, utility statement
/// parts) and collects what rules match on.
#[derive(Default)]
struct Walker {
    /// A `set_config()` that may set a client encoding the gateway cannot
    /// read.
    weakens_reading: bool,
    /// `set_config($n, …)`s.
    bound_settings: Vec<BoundSetting>,
    /// `set_config('client_encoding', $n, …)`s.
    bound_encodings: Vec<u16>,
    tables: Vec<TableName>,
    functions: Vec<String>,
    columns_read: Vec<String>,
    columns_written: Vec<String>,
    all_columns: bool,
    parameters: Vec<Parameter>,
    /// Data-modifying statements nested in the walked one (`WITH d AS (DELETE …)`).
    nested_kinds: Vec<Kind>,
    nested_missing_where: bool,
    executes: Vec<String>,
    /// CTE names visible where the walk is.
    ctes: Vec<String>,
    /// Bounds a query block's WHERE puts on one of its FROM relations, by
    /// the location of the relation's name; taken when the walk reaches it.
    pending_bounds: HashMap<i64, BTreeMap<String, Interval>>,
    /// Per relation (`schema.table`), the hull of the bounds of every place
    /// it is read.
    bounds: BTreeMap<String, BTreeMap<String, Interval>>,
    literal_dependent: bool,
    /// Inside `SELECT … FROM pg_settings WHERE name = 'x'`: the setting
    /// its rows are (see [`PinnedSetting`]).
    pinned_setting: Option<PinnedSetting>,
}

/// `SELECT set_config(name, 'v', false) FROM pg_settings WHERE name = 'x'`
/// (how pg_dump sets a parameter the server may not have: no row, no
/// error): the only rows the call sees are those its WHERE keeps, so the
/// parameter it sets is `x`. Read only for exactly that shape: one
/// relation named `pg_settings`, a WHERE that is one `=` (unqualified,
/// read as PostgreSQL's, as predicate rules read it) between its `name`
/// column and a string literal, and a `set_config` of that column in the
/// same query block (not in a subquery, whose `name` may be another's).
#[derive(Debug, Clone)]
struct PinnedSetting {
    /// How the block refers to the relation (`pg_settings`, or its alias).
    relation: String,
    /// Whether `pg_catalog.pg_settings.name` names the column too (no alias).
    qualified: bool,
    /// The parameter, lowercased.
    name: String,
}

impl PinnedSetting {
    /// Whether `expr` is the relation's `name` column.
    fn is_name_column(&self, expr: &Value) -> bool {
        let Some(("ColumnRef", column)) = tagged(expr) else {
            return false;
        };
        let parts: Vec<&str> = list(column, "fields")
            .iter()
            .map(|part| match tagged(part) {
                Some(("String", s)) => text(s, "sval"),
                _ => "",
            })
            .collect();
        match parts[..] {
            ["name"] => true,
            [relation, "name"] => relation == self.relation,
            ["pg_catalog", "pg_settings", "name"] => self.qualified,
            _ => false,
        }
    }
}

impl Walker {
    fn walk(&mut self, value: &Value) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| self.walk(item)),
            Value::Object(object) => {
                if let Some((tag, body)) = tagged(value) {
                    self.node(tag, body);
                } else if is_range_var(value) {
                    self.range_var(value);
                } else if is_func_call(value) {
                    self.func_call(value);
                } else if is_select_stmt(value) {
                    self.select(value);
                } else if is_object_with_args(value) {
                    self.add_function_name(list(value, "objname"));
                    self.walk_fields(value, &[]);
                } else {
                    object.values().for_each(|child| self.walk(child));
                }
            }
            _ => {}
        }
    }

    /// Walks every field of a node body except `skip`.
    fn walk_fields(&mut self, body: &Value, skip: &[&str]) {
        if let Some(object) = body.as_object() {
            for (name, child) in object {
                if !skip.contains(&name.as_str()) {
                    self.walk(child);
                }
            }
        }
    }

    fn node(&mut self, tag: &str, body: &Value) {
        match tag {
            "RangeVar" => self.range_var(body),
            "FuncCall" => self.func_call(body),
            "ColumnRef" => match list(body, "fields").last().and_then(tagged) {
                Some(("AStar", _)) => self.all_columns = true,
                Some(("String", s)) => self.columns_read.push(text(s, "sval").to_owned()),
                _ => {}
            },
            "AStar" => self.all_columns = true,
            // A function named, not called, by a statement that makes it
            // run later or elsewhere (a cast, DROP/ALTER/GRANT … FUNCTION):
            // rules about functions see it too.
            "ObjectWithArgs" => {
                self.add_function_name(list(body, "objname"));
                self.walk_fields(body, &[]);
            }
            // CREATE OPERATOR/AGGREGATE/TYPE name their support functions
            // as options (`PROCEDURE = pg_read_file`): an operator would
            // call it under another name.
            "DefElem" if is_function_option(text(body, "defname")) => {
                if let Some(arg) = field(body, "arg") {
                    match tagged(arg) {
                        Some(("TypeName", name)) => self.add_function_name(list(name, "names")),
                        Some(("List", name)) => self.add_function_name(list(name, "items")),
                        Some(("String", _)) => self.add_function_name(std::slice::from_ref(arg)),
                        _ => {}
                    }
                }
                self.walk_fields(body, &[]);
            }
            "ExecuteStmt" => {
                self.executes.push(text(body, "name").to_owned());
                self.walk_fields(body, &[]);
            }
            "SelectStmt" => self.select(body),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.data_modification(tag, body, false);
            }
            _ => self.walk_fields(body, &[]),
        }
    }

    fn range_var(&mut self, body: &Value) {
        let schema = text(body, "schemaname");
        let name = text(body, "relname");
        if name.is_empty() {
            return;
        }
        if schema.is_empty() && self.ctes.iter().any(|cte| cte == name) {
            return;
        }
        let table = if schema.is_empty() {
            table_of(&[name.to_owned()])
        } else {
            table_of(&[schema.to_owned(), name.to_owned()])
        };
        let Some(table) = table else {
            return;
        };
        let bounds = self
            .pending_bounds
            .remove(&int(body, "location"))
            .unwrap_or_default();
        self.add_table(table, bounds);
    }

    /// A relation read in a place no WHERE bounds (named by a utility
    /// statement, a function argument, …).
    fn add_named_table(&mut self, parts: &[String]) {
        if let Some(table) = table_of(parts) {
            self.add_table(table, BTreeMap::new());
        }
    }

    fn add_table(&mut self, table: TableName, bounds: BTreeMap<String, Interval>) {
        let key = table.qualified();
        match self.bounds.get_mut(&key) {
            Some(existing) => *existing = bounds::hull(existing, &bounds),
            None => {
                self.bounds.insert(key, bounds);
            }
        }
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
    }

    fn func_call(&mut self, body: &Value) {
        let parts = name_parts(list(body, "funcname"));
        let name = parts.join(".").to_lowercase();
        let last = parts.last().map(|p| p.to_lowercase()).unwrap_or_default();
        let args = list(body, "args");
        match last.as_str() {
            "set_config" => {
                let (parameter, pinned) = self.set_config_parameter(args);
                let value = args.get(1);
                match &parameter {
                    // `set_config('client_encoding', $1, …)`: judged on
                    // the value bound.
                    Parameter::Named(name)
                        if !pinned
                            && name == "client_encoding"
                            && value.and_then(exact_param).is_some() =>
                    {
                        self.bound_encodings.extend(value.and_then(exact_param));
                    }
                    Parameter::Named(name) => {
                        let value = value.and_then(|a| self.exact_string(a));
                        self.weakens_reading |= weakens_reading(name, value.as_deref())
                            // Named by the rows a WHERE keeps: the fixed
                            // reading rule does not take `=` on trust, so a
                            // value that could name a client encoding the
                            // gateway cannot read weakens it whatever the
                            // name.
                            || (pinned && value.as_deref().is_none_or(unreadable_client_encoding));
                    }
                    Parameter::Bound(name) => {
                        let value = match value {
                            Some(a) => match (self.exact_string(a), exact_param(a)) {
                                (Some(text), _) => SettingValue::Literal(text),
                                (None, Some(n)) => SettingValue::Bound(n),
                                (None, None) => SettingValue::Other,
                            },
                            None => SettingValue::Other,
                        };
                        self.bound_settings
                            .push(BoundSetting { name: *name, value });
                    }
                    Parameter::Unknown => {}
                }
                self.parameters.push(parameter);
            }
            // Whole tables by name: a read of every row and column.
            "table_to_xml" | "table_to_xmlschema" | "table_to_xml_and_xmlschema" => {
                self.all_columns = true;
                if let Some(table) = args.first().and_then(|a| self.string_literal(a)) {
                    self.add_named_table(&relation_name_parts(&table));
                }
            }
            // SQL text run by the function: when it is a literal, what it
            // reads is read by this statement (rules about tables, columns,
            // functions and parameters see it; the shipped rules still
            // review these functions).
            "query_to_xml" | "query_to_xmlschema" | "query_to_xml_and_xmlschema" | "ts_stat" => {
                if let Some(query) = args.first().and_then(|a| self.string_literal(a)) {
                    self.merge_dynamic(&query);
                }
            }
            _ => {}
        }
        self.functions.push(name);
        self.walk_fields(body, &["funcname"]);
    }

    /// Adds the facts of SQL text a function runs. The server parses it
    /// when the function runs, with `standard_conforming_strings` as it is
    /// then (a statement before it may have changed it): where the two
    /// readings differ, the facts of both.
    fn merge_dynamic(&mut self, sql: &str) {
        let mut classified = classify(sql);
        if sql.contains('\\') {
            let escaped = classify_in(sql, StringLiterals::Escaped);
            classified.statements.extend(escaped.statements);
        }
        self.literal_dependent = true;
        for facts in &classified.statements {
            for level in facts.levels() {
                for table in &level.tables {
                    let bounds = level
                        .bounds
                        .relations
                        .get(&table.qualified())
                        .cloned()
                        .unwrap_or_default();
                    self.add_table(table.clone(), bounds);
                }
                self.functions.extend(level.functions.iter().cloned());
                self.columns_read.extend(level.columns_read.iter().cloned());
                self.columns_written
                    .extend(level.columns_written.iter().cloned());
                self.all_columns |= level.all_columns;
                self.parameters.extend(level.parameters.iter().cloned());
                self.executes.extend(level.executes.iter().cloned());
                self.nested_missing_where |= level.missing_where;
                self.nested_kinds.extend(level.nested_kinds.iter().cloned());
                if level.kind != Kind::Select {
                    self.nested_kinds.push(level.kind.clone());
                }
            }
        }
    }

    fn add_function_name(&mut self, parts: &[Value]) {
        let name = name_parts(parts).join(".").to_lowercase();
        if !name.is_empty() {
            self.functions.push(name);
        }
    }

    /// The parameter a `set_config(setting_name, new_value, is_local)` call
    /// sets: the first argument, or the one named `setting_name`; anything
    /// but a string literal could be any parameter, but for the `name`
    /// column a WHERE pins (then `true`: see [`PinnedSetting`]).
    fn set_config_parameter(&mut self, args: &[Value]) -> (Parameter, bool) {
        let named = args.iter().find_map(|arg| match tagged(arg) {
            Some(("NamedArgExpr", named))
                if text(named, "name").eq_ignore_ascii_case("setting_name") =>
            {
                field(named, "arg")
            }
            _ => None,
        });
        let positional = args
            .first()
            .filter(|arg| !matches!(tagged(arg), Some(("NamedArgExpr", _))));
        let Some(arg) = named.or(positional) else {
            return (Parameter::Unknown, false);
        };
        if let Some(name) = self.exact_string(arg) {
            return (Parameter::Named(name.trim().to_lowercase()), false);
        }
        if let Some(pinned) = self
            .pinned_setting
            .as_ref()
            .filter(|p| p.is_name_column(arg))
        {
            return (Parameter::Named(pinned.name.clone()), true);
        }
        let parameter = exact_param(arg).map_or(Parameter::Unknown, Parameter::Bound);
        (parameter, false)
    }

    /// A string literal whose text reaches the function as written: as
    /// is, or cast to `text`, `varchar` or `name` without a length (a cast
    /// to `varchar(27)` or `char(27)` cuts `'standard_conforming_stringsX'`
    /// to a name the literal does not read as).
    fn exact_string(&mut self, value: &Value) -> Option<String> {
        match tagged(value)? {
            ("AConst", _) => self.string_literal(value),
            ("TypeCast", cast) if exact_cast(cast) => self.exact_string(field(cast, "arg")?),
            _ => None,
        }
    }

    /// A string literal's text (any quoting: the scanner has decoded it),
    /// through casts.
    fn string_literal(&mut self, value: &Value) -> Option<String> {
        match tagged(value)? {
            ("AConst", constant) => {
                let text = constant.get("val")?.get("Sval")?.get("sval")?.as_str()?;
                self.literal_dependent = true;
                Some(text.to_owned())
            }
            ("TypeCast", cast) => self.string_literal(field(cast, "arg")?),
            _ => None,
        }
    }

    /// Makes the names of a WITH clause visible as the walk goes: each
    /// CTE sees the ones before it (all of them, and itself, if recursive).
    fn with_clause(&mut self, with: Option<&Value>) {
        let Some(with) = with else {
            return;
        };
        let recursive = flag(with, "recursive");
        let ctes: Vec<(&str, &Value)> = list(with, "ctes")
            .iter()
            .filter_map(|cte| match tagged(cte) {
                Some(("CommonTableExpr", body)) => Some((text(body, "ctename"), body)),
                _ => None,
            })
            .collect();
        if recursive {
            self.ctes
                .extend(ctes.iter().map(|(name, _)| (*name).to_owned()));
        }
        for (name, body) in ctes {
            self.walk_fields(body, &[]);
            if !recursive {
                self.ctes.push(name.to_owned());
            }
        }
    }

    fn select(&mut self, body: &Value) {
        let pinned = self.pinned_setting_of(body);
        let outer = std::mem::replace(&mut self.pinned_setting, pinned);
        self.select_block(body);
        self.pinned_setting = outer;
    }

    /// See [`PinnedSetting`].
    fn pinned_setting_of(&mut self, body: &Value) -> Option<PinnedSetting> {
        let [from] = list(body, "from_clause") else {
            return None;
        };
        let ("RangeVar", relation) = tagged(from)? else {
            return None;
        };
        let schema = text(relation, "schemaname");
        if text(relation, "relname") != "pg_settings" || !matches!(schema, "" | "pg_catalog") {
            return None;
        }
        // Not a CTE of that name (visible, or this block's own).
        let own_ctes = field(body, "with_clause").map_or(&[][..], |with| list(with, "ctes"));
        let cte = |name: &str| name == "pg_settings";
        if schema.is_empty()
            && (self.ctes.iter().any(|name| cte(name))
                || own_ctes.iter().any(|c| {
                    matches!(tagged(c), Some(("CommonTableExpr", c)) if cte(text(c, "ctename")))
                }))
        {
            return None;
        }
        let alias = field(relation, "alias").map(|a| text(a, "aliasname"));
        let mut pinned = PinnedSetting {
            relation: alias.unwrap_or("pg_settings").to_owned(),
            qualified: alias.is_none(),
            name: String::new(),
        };
        let ("AExpr", equality) = tagged(field(body, "where_clause")?)? else {
            return None;
        };
        let [operator] = list(equality, "name") else {
            return None;
        };
        if int(equality, "kind") != pg_query::protobuf::AExprKind::AexprOp as i64
            || !matches!(tagged(operator), Some(("String", s)) if text(s, "sval") == "=")
        {
            return None;
        }
        let (left, right) = (field(equality, "lexpr")?, field(equality, "rexpr")?);
        let literal = if pinned.is_name_column(left) {
            right
        } else if pinned.is_name_column(right) {
            left
        } else {
            return None;
        };
        pinned.name = self.exact_string(literal)?.trim().to_lowercase();
        Some(pinned)
    }

    fn select_block(&mut self, body: &Value) {
        let visible = self.ctes.len();
        self.with_clause(field(body, "with_clause"));
        let from = list(body, "from_clause");
        if !from.is_empty() {
            let mut items = Vec::new();
            for entry in from {
                self.add_from_item(entry, &mut items);
            }
            self.bind_bounds(&items, field(body, "where_clause"));
        }
        self.walk_fields(body, &["with_clause"]);
        self.ctes.truncate(visible);
    }

    /// INSERT, UPDATE, DELETE, MERGE; returns whether it is an UPDATE or
    /// DELETE without WHERE.
    fn data_modification(&mut self, tag: &str, body: &Value, top: bool) -> bool {
        let visible = self.ctes.len();
        self.with_clause(field(body, "with_clause"));
        let mut missing_where = false;
        let kind = match tag {
            "InsertStmt" => {
                let columns = self.target_names(list(body, "cols"));
                if columns.is_empty() {
                    self.all_columns = true;
                }
                self.columns_written.extend(columns);
                Kind::Insert
            }
            "UpdateStmt" => {
                let columns = self.target_names(list(body, "target_list"));
                self.columns_written.extend(columns);
                let relation = field(body, "relation");
                if relation.is_some_and(|r| text(r, "relname") == "pg_settings") {
                    // UPDATE pg_settings SET setting = … is SET by another name.
                    self.parameters.push(Parameter::Unknown);
                }
                self.filtered_items(relation, list(body, "from_clause"), body);
                missing_where = field(body, "where_clause").is_none();
                Kind::Update
            }
            "DeleteStmt" => {
                self.filtered_items(field(body, "relation"), list(body, "using_clause"), body);
                missing_where = field(body, "where_clause").is_none();
                Kind::Delete
            }
            _ => {
                self.all_columns = true;
                Kind::Merge
            }
        };
        if !top {
            self.nested_kinds.push(kind);
            self.nested_missing_where |= missing_where;
        }
        // The target is always a table: a CTE of the same name cannot be
        // written to, so `WITH payments AS (…) DELETE FROM payments`
        // deletes from the real one.
        if let Some(target) = field(body, "relation") {
            let shadowing = std::mem::take(&mut self.ctes);
            self.range_var(target);
            self.ctes = shadowing;
        }
        self.walk_fields(body, &["with_clause", "relation"]);
        self.ctes.truncate(visible);
        missing_where
    }

    /// The target relation and FROM/USING list of an UPDATE or DELETE,
    /// bound by its WHERE.
    fn filtered_items(&mut self, relation: Option<&Value>, from: &[Value], body: &Value) {
        let mut items = Vec::new();
        if let Some(relation) = relation {
            // The target, never a CTE (see `data_modification`).
            items.push(self.relation_item_in(relation, &[]));
        }
        for entry in from {
            self.add_from_item(entry, &mut items);
        }
        self.bind_bounds(&items, field(body, "where_clause"));
    }

    /// Column names of INSERT's column list or UPDATE's SET list
    /// (`a[1:5]`, `j['k']`, `c.f`: the column is `a`, `j`, `c`).
    fn target_names(&self, targets: &[Value]) -> Vec<String> {
        targets
            .iter()
            .filter_map(|target| match tagged(target) {
                Some(("ResTarget", t)) => Some(text(t, "name").to_owned()),
                _ => None,
            })
            .filter(|name| !name.is_empty())
            .collect()
    }

    fn relation_item(&self, relation: &Value) -> FromItem {
        self.relation_item_in(relation, &self.ctes)
    }

    fn relation_item_in(&self, relation: &Value, ctes: &[String]) -> FromItem {
        let schema = text(relation, "schemaname");
        let name = text(relation, "relname");
        let alias = field(relation, "alias").map(|a| text(a, "aliasname").to_owned());
        let is_cte = schema.is_empty() && ctes.iter().any(|cte| cte == name);
        FromItem {
            name: Some(alias.unwrap_or_else(|| name.to_owned())),
            location: (!is_cte).then(|| int(relation, "location")),
        }
    }

    fn add_from_item(&self, entry: &Value, items: &mut Vec<FromItem>) {
        match tagged(entry) {
            Some(("RangeVar", relation)) => items.push(self.relation_item(relation)),
            Some(("JoinExpr", join)) => {
                let mut inner = Vec::new();
                if let Some(left) = field(join, "larg") {
                    self.add_from_item(left, &mut inner);
                }
                if let Some(right) = field(join, "rarg") {
                    self.add_from_item(right, &mut inner);
                }
                match field(join, "alias") {
                    // An aliased join hides the names inside it.
                    Some(alias) => items.push(FromItem {
                        name: Some(text(alias, "aliasname").to_owned()),
                        location: None,
                    }),
                    None => items.extend(inner),
                }
            }
            Some((_, other)) => items.push(FromItem {
                name: field(other, "alias").map(|a| text(a, "aliasname").to_owned()),
                location: None,
            }),
            None => {}
        }
    }

    /// Binds the comparisons of a WHERE clause to the FROM items they name:
    /// `x.amount` to the item called `x`, an unqualified column only when
    /// the block reads exactly one item.
    fn bind_bounds(&mut self, items: &[FromItem], where_clause: Option<&Value>) {
        let Some(where_clause) = where_clause else {
            return;
        };
        let mut per_item: Vec<BTreeMap<String, Interval>> = vec![BTreeMap::new(); items.len()];
        // Bounds come from literals; which columns they bound is recorded in
        // `Classified::bound_columns`. A number beyond `f64` bounds nothing,
        // where a smaller one of the same shape would.
        let mut beyond_range = false;
        let conjuncts = bounds::conjuncts(where_clause, &mut beyond_range);
        self.literal_dependent |= beyond_range;
        for conjunct in conjuncts {
            let target = match conjunct.qualifier.as_deref() {
                Some(qualifier) => {
                    let mut named = items
                        .iter()
                        .enumerate()
                        .filter(|(_, item)| item.name.as_deref() == Some(qualifier));
                    match (named.next(), named.next()) {
                        (Some((index, _)), None) => Some(index),
                        _ => None,
                    }
                }
                None if items.len() == 1 => Some(0),
                None => None,
            };
            if let Some(index) = target {
                bounds::narrow(&mut per_item[index], conjunct.column, conjunct.interval);
            }
        }
        for (item, bounds) in items.iter().zip(per_item) {
            if let (Some(location), false) = (item.location, bounds.is_empty()) {
                if location >= 0 {
                    self.pending_bounds.insert(location, bounds);
                }
            }
        }
    }

    fn finish(self, facts: &mut StatementFacts) {
        facts.tables = self.tables;
        facts.functions = dedup(self.functions);
        facts.columns_read = dedup(self.columns_read);
        facts.columns_written = dedup(self.columns_written);
        facts.all_columns = self.all_columns;
        // A parameter the gateway cannot name could be client_encoding.
        facts.weakens_reading |=
            self.weakens_reading || self.parameters.contains(&Parameter::Unknown);
        facts.bound_settings = self.bound_settings;
        facts.bound_encodings = self.bound_encodings;
        facts.parameters.extend(self.parameters);
        facts.missing_where |= self.nested_missing_where;
        facts.bounds = ColumnBounds {
            relations: self.bounds,
        };
        facts.nested_kinds = self.nested_kinds;
        facts.executes = self.executes;
    }
}

/// Options of CREATE OPERATOR, CREATE AGGREGATE and CREATE TYPE whose value
/// is a function the object will call.
fn is_function_option(name: &str) -> bool {
    name.ends_with("func")
        || matches!(
            name,
            "function"
                | "procedure"
                | "restrict"
                | "join"
                | "input"
                | "output"
                | "receive"
                | "send"
                | "typmod_in"
                | "typmod_out"
                | "analyze"
                | "subscript"
                | "canonical"
                | "subtype_diff"
        )
}

/// `'public.payments'`, `'"Payments"'` as a regclass literal names them.
fn relation_name_parts(text: &str) -> Vec<String> {
    text.split('.')
        .map(|part| {
            let part = part.trim();
            match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(quoted) => quoted.to_owned(),
                None => part.to_lowercase(),
            }
        })
        .collect()
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// The cache.

/// A bounded map that keeps every recently used entry: lookups hit the
/// current generation first, then the previous one (promoting the entry);
/// when the current one is full it becomes the previous one and the oldest
/// generation is dropped. No bookkeeping per hit, never more than twice
/// `generation_size` entries.
struct Generations {
    current: HashMap<Arc<str>, Arc<Classified>>,
    previous: HashMap<Arc<str>, Arc<Classified>>,
    generation_size: usize,
}

impl Generations {
    fn new(generation_size: usize) -> Generations {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_size,
        }
    }

    fn get(&mut self, key: &str) -> Option<Arc<Classified>> {
        if let Some(hit) = self.current.get(key) {
            return Some(Arc::clone(hit));
        }
        let (key, hit) = self.previous.remove_entry(key)?;
        self.insert(key, Arc::clone(&hit));
        Some(hit)
    }

    fn insert(&mut self, key: Arc<str>, value: Arc<Classified>) {
        if self.current.len() >= self.generation_size {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The shape of `sql` for [`ClassifyCache`]: its text with the numeric
/// literals of its data statements replaced by placeholders, so `… WHERE
/// aid = 1` and `… WHERE aid = 2` share a key. Read with PostgreSQL's lexer
/// alone, no parse. `None` when there is no shape worth sharing: nothing
/// replaced, a statement other than a data statement or transaction
/// control, a string the lexer rejects (or holding a zero byte).
///
/// Why statements of one key may share a classification:
///
/// - **Same tokens.** An integer (ICONST) becomes `\0i`, a decimal or an
///   integer beyond 32 bits (FCONST) `\0f`; every other byte is kept,
///   comments, signs and `$1` parameters included. A text the lexer
///   accepts holds no zero byte, so a key says exactly where each replaced
///   literal was and of which kind. Two texts of one key lex to the same
///   tokens but for the values of the replaced literals: the bytes between
///   two replaced literals are the same, the lexer starts them in the same
///   state, and no token before a literal can reach into it (both scans end
///   it where the literal starts). Comments stay because one is not always
///   whitespace: `'a' /* c */`, newline, `'b'` is two strings; without the
///   comment, one.
/// - **Same tree but for those values.** The grammar chooses on token
///   kinds, never on values, and of its actions (PostgreSQL 18's `gram.y`,
///   every `ereport` and every comparison of a value) two read a number:
///   `FLOAT(p)` checks p and picks float4 or float8, `ALTER TABLE … ALTER
///   COLUMN n SET STATISTICS` checks n. The number after `FLOAT (` is kept;
///   ALTER is not a data statement. So two statements of one key both
///   parse or both fail, and their trees differ only in the values of
///   `A_Const`, `Integer` and `Float` nodes and in source positions.
/// - **Only data statements.** Numbers are replaced only in statements
///   that start with SELECT, INSERT, UPDATE, DELETE, WITH or VALUES; a
///   string with any other statement but BEGIN, COMMIT, ROLLBACK and their
///   kin (kept whole; they hold no numbers) has no shape. That keeps out
///   every place a number's value is or could become a fact: `SET` and
///   `ALTER SYSTEM` values, EXPLAIN options, FETCH/MOVE counts, COPY,
///   VACUUM, sequence and storage options, `CONNECTION LIMIT`, and the
///   `;`-separated bodies of `CREATE FUNCTION … BEGIN ATOMIC` and `CREATE
///   RULE … DO (…)` (their strings start with CREATE).
/// - **What a data statement's facts read of a value**: bounds only (a
///   column compared with a number, `bounds::conjuncts`). Which columns are
///   bounded is [`Classified::bound_columns`], and a classification that
///   bounds a column a predicate rule reads is never stored under its
///   shape; one where a literal's value decided that there is no bound (a
///   number beyond `f64`, `1e999`) is `literal_dependent`. Typmods
///   (`varchar(10)`), subscripts, `LIMIT`, `ORDER BY 1`, function
///   arguments and the values an INSERT writes are in the tree but in no
///   fact. String literals are kept, so a `set_config` name, a
///   `query_to_xml` text or `amount < '5'` is part of the key.
/// - A string PostgreSQL rejects is never stored under its shape: its
///   error position moves with the lengths of the literals before it.
///
/// `-1` is `-` and `1`: the sign stays, so `id = -1` and `id = 1` do not
/// share a key (`pg_query::normalize` gave them one).
fn shape_key(sql: &str) -> Option<String> {
    use pg_query::protobuf::Token;
    // Nothing but whitespace has no token, and `scan_tokens` (pg_query
    // 18.1) then builds a slice from a null pointer: undefined behaviour,
    // an abort in a debug build. Such a string has no shape anyway.
    if sql
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c'))
    {
        return None;
    }
    let tokens = pg_query::scan_tokens(sql).ok()?;
    // A placeholder is two bytes: one-digit literals lengthen the key.
    let mut key = String::with_capacity(sql.len() + 8);
    let mut copied = 0;
    let mut statement_start = true;
    let mut data_statement = false;
    // The two tokens before this one, comments left out.
    let mut previous = [Token::Nul; 2];
    for scanned in &tokens {
        let token = Token::try_from(scanned.token).unwrap_or(Token::Nul);
        match token {
            Token::SqlComment | Token::CComment => continue,
            Token::Ascii59 => {
                statement_start = true;
                previous = [Token::Nul; 2];
                continue;
            }
            _ => {}
        }
        if statement_start {
            statement_start = false;
            data_statement = match token {
                Token::Select
                | Token::Insert
                | Token::Update
                | Token::DeleteP
                | Token::With
                | Token::Values => true,
                Token::BeginP
                | Token::Start
                | Token::Commit
                | Token::EndP
                | Token::Rollback
                | Token::AbortP
                | Token::Savepoint
                | Token::Release => false,
                _ => return None,
            };
        }
        let placeholder = match token {
            Token::Iconst => "\0i",
            Token::Fconst => "\0f",
            _ => "",
        };
        let float_precision = previous == [Token::FloatP, Token::Ascii40];
        if data_statement && !placeholder.is_empty() && !float_precision {
            let start = usize::try_from(scanned.start).ok()?;
            key.push_str(sql.get(copied..start)?);
            key.push_str(placeholder);
            copied = usize::try_from(scanned.end).ok()?;
        }
        previous = [previous[1], token];
    }
    if copied == 0 {
        return None;
    }
    key.push_str(sql.get(copied..)?);
    Some(key)
}

/// Classification results, so a statement the client repeats (every
/// pgbench transaction, every poll an agent makes) costs a hash lookup
/// instead of a parse, and a statement *shape* repeated with other numbers
/// (`… WHERE id = 1`, `… WHERE id = 2`) costs a pass of the lexer instead of
/// a full classification.
///
/// Two levels: the exact text, then its shape ([`shape_key`]: the numeric
/// literals of data statements replaced by placeholders). A classification
/// that read a literal's value for a fact a rule can see (a bound on a
/// column some predicate rule is about, a `set_config` name, a
/// `table_to_xml` table, an EXPLAIN option), or that is a syntax error, is
/// never stored under its shape: the next statement of that shape is
/// classified from its own literals. Bounds on other columns are dropped
/// from what the shape keeps, so they are never reused either.
pub struct ClassifyCache {
    exact: Generations,
    shapes: Generations,
    max_statement_len: usize,
    /// Columns predicate rules are about; `None`: every column.
    predicate_columns: Option<BTreeSet<String>>,
}

impl ClassifyCache {
    /// Statements longer than this are classified but not kept: a client
    /// sending huge one-off strings must not make the cache hold them.
    pub const DEFAULT_MAX_STATEMENT_LEN: usize = 16 * 1024;

    /// A cache holding at most `capacity` statements and `capacity` shapes
    /// (at least 2 of each).
    pub fn new(capacity: usize) -> ClassifyCache {
        let generation_size = (capacity / 2).max(1);
        ClassifyCache {
            exact: Generations::new(generation_size),
            shapes: Generations::new(generation_size),
            max_statement_len: Self::DEFAULT_MAX_STATEMENT_LEN,
            predicate_columns: None,
        }
    }

    /// Tells the cache which columns predicate rules read bounds of (see
    /// [`crate::RuleSet::predicate_columns`]): statements whose literals
    /// bound only other columns can share their shape's classification.
    pub fn with_predicate_columns<I, S>(mut self, columns: I) -> ClassifyCache
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.predicate_columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Whether `classified` holds the same facts for every statement of its
    /// shape, once bounds no rule reads are dropped.
    fn shape_independent(&self, classified: &Classified) -> bool {
        // A syntax error's position moves with the literals before it.
        if classified.literal_dependent || classified.has_unparsed() {
            return false;
        }
        match &self.predicate_columns {
            None => classified.bound_columns.is_empty(),
            Some(columns) => classified.bound_columns.is_disjoint(columns),
        }
    }

    /// [`ClassifyCache::classify`] for a session whose string literals
    /// are read `strings`. A text read with escapes that has a backslash
    /// is classified each time (the shapes assume standard strings); any
    /// other reads alike either way.
    pub fn classify_in(&mut self, sql: &str, strings: StringLiterals) -> Arc<Classified> {
        self.classify_text(sql, strings, false)
    }

    /// [`ClassifyCache::classify_in`] for the text of a prepared
    /// statement, which comes again with each of its executions: kept
    /// under its own text even when its shape is known, so the next one
    /// costs a hash lookup.
    pub fn classify_prepared(&mut self, sql: &str, strings: StringLiterals) -> Arc<Classified> {
        self.classify_text(sql, strings, true)
    }

    fn classify_text(
        &mut self,
        sql: &str,
        strings: StringLiterals,
        repeats: bool,
    ) -> Arc<Classified> {
        if strings == StringLiterals::Escaped && sql.contains('\\') {
            return Arc::new(classify_in(sql, strings));
        }
        self.classify_keeping(sql, repeats)
    }

    /// The classification of `sql`, from the cache or freshly made.
    pub fn classify(&mut self, sql: &str) -> Arc<Classified> {
        self.classify_keeping(sql, false)
    }

    /// The classification of `sql`. `repeats`: the very text is expected
    /// again, so it is kept under its text even when its shape is known.
    /// Otherwise a statement of a known shape is not: statements of a
    /// shape mostly differ in their literals (`… WHERE aid = 48213`), and
    /// each would push one that does repeat out of the exact texts.
    fn classify_keeping(&mut self, sql: &str, repeats: bool) -> Arc<Classified> {
        if let Some(hit) = self.exact.get(sql) {
            return hit;
        }
        let keep = sql.len() <= self.max_statement_len;
        let shape = if keep { shape_key(sql) } else { None };
        if let Some(hit) = shape.as_deref().and_then(|shape| self.shapes.get(shape)) {
            if repeats {
                self.exact.insert(Arc::from(sql), Arc::clone(&hit));
            }
            return hit;
        }
        let classified = classify(sql);
        if !keep {
            return Arc::new(classified);
        }
        let classified = match shape {
            Some(shape) if self.shape_independent(&classified) => {
                let shared = Arc::new(without_bounds(classified));
                self.shapes.insert(Arc::from(shape), Arc::clone(&shared));
                shared
            }
            _ => Arc::new(classified),
        };
        self.exact.insert(Arc::from(sql), Arc::clone(&classified));
        classified
    }

    /// Number of statements held (exact texts).
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// Number of statement shapes held.
    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A classification with the bounds of every column dropped (they came
/// from literals that other statements of the same shape do not share).
fn without_bounds(mut classified: Classified) -> Classified {
    fn clear(facts: &mut StatementFacts) {
        facts.bounds = ColumnBounds {
            relations: facts
                .bounds
                .relations
                .keys()
                .map(|table| (table.clone(), BTreeMap::new()))
                .collect(),
        };
        if let Some(inner) = facts.inner.as_deref_mut() {
            clear(inner);
        }
    }
    classified.statements.iter_mut().for_each(clear);
    classified.bound_columns.clear();
    classified
}

impl Default for ClassifyCache {
    fn default() -> ClassifyCache {
        ClassifyCache::new(4096)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_string_without_tokens_has_no_shape() {
        // These reach the lexer's empty result, which pg_query cannot hand
        // back safely (see `shape_key`); a debug build aborts if they do.
        for sql in ["", " ", "\n\t \r", "\x0b\x0c"] {
            assert_eq!(super::shape_key(sql), None, "{sql:?}");
        }
        let mut cache = super::ClassifyCache::new(8);
        assert!(cache.classify("").statements.is_empty());
    }

    use super::shape_key;

    fn same_shape(a: &str, b: &str) -> bool {
        let (a, b) = (shape_key(a), shape_key(b));
        a.is_some() && a == b
    }

    #[test]
    fn statements_differing_in_numbers_share_a_shape() {
        for (a, b) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            ),
            (
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES (3, 1, 40213, -4021, CURRENT_TIMESTAMP);",
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES (10, 1, 99, -1, CURRENT_TIMESTAMP);",
            ),
            (
                "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 1",
                "UPDATE pgbench_accounts SET abalance = abalance + -5 WHERE aid = 2",
            ),
            ("SELECT 1.5 * price", "SELECT 2.25 * price"),
            (
                "SELECT * FROM t ORDER BY 1 LIMIT 10",
                "SELECT * FROM t ORDER BY 2 LIMIT 50",
            ),
            ("SELECT a[1], b::varchar(10)", "SELECT a[2], b::varchar(20)"),
            (
                "BEGIN; DELETE FROM t WHERE id = 1; COMMIT",
                "BEGIN; DELETE FROM t WHERE id = 2; COMMIT",
            ),
            (
                "WITH x AS (SELECT 1) VALUES (2)",
                "WITH x AS (SELECT 3) VALUES (4)",
            ),
        ] {
            assert!(same_shape(a, b), "{a} / {b}");
        }
    }

    #[test]
    fn everything_but_a_data_statements_numbers_stays_in_the_shape() {
        for (a, b) in [
            // Parameters are not literals.
            (
                "SELECT * FROM t WHERE id = $1 LIMIT 5",
                "SELECT * FROM t WHERE id = $2 LIMIT 5",
            ),
            // A sign is a token of its own.
            (
                "SELECT * FROM t WHERE id = -1",
                "SELECT * FROM t WHERE id = 1",
            ),
            // An integer and a decimal are different tokens to the grammar
            // (`varchar(5.5)` is a syntax error).
            ("SELECT x::varchar(5)", "SELECT x::varchar(5.5)"),
            // Beyond 32 bits an integer is a decimal token.
            (
                "SELECT * FROM t WHERE id = 2147483647",
                "SELECT * FROM t WHERE id = 2147483648",
            ),
            // FLOAT(p): the grammar checks p and picks float4 or float8.
            ("SELECT 1, x::float(10)", "SELECT 1, x::float(0)"),
            (
                "SELECT 1, CAST(x AS float /* p */ (10))",
                "SELECT 1, CAST(x AS float /* p */ (60))",
            ),
            // Strings, comments, bit strings.
            (
                "SELECT * FROM t WHERE amount < '5' AND id = 1",
                "SELECT * FROM t WHERE amount < 'x' AND id = 1",
            ),
            ("SELECT 1 -- a", "SELECT 1 -- b"),
            ("SELECT 1 /* 2 */", "SELECT 1 /* 3 */"),
            ("SELECT B'101' + 1", "SELECT B'111' + 1"),
        ] {
            let (key_a, key_b) = (shape_key(a), shape_key(b));
            assert!(key_a.is_some() && key_b.is_some(), "{a} / {b}");
            assert_ne!(key_a, key_b, "{a} / {b}");
        }
    }

    #[test]
    fn only_data_statements_have_shapes() {
        for sql in [
            "SET statement_timeout = 5",
            "SET standard_conforming_strings = 0",
            "SELECT 1; SET statement_timeout = 5",
            "SELECT set_config('statement_timeout', '5', false); RESET ALL",
            "ALTER SYSTEM SET work_mem = 64",
            "ALTER TABLE t ALTER COLUMN 1 SET STATISTICS 100",
            "CREATE TABLE t (a varchar(10), b float(20))",
            "CREATE SEQUENCE s INCREMENT 5",
            "ALTER ROLE r CONNECTION LIMIT 5",
            "FETCH 1 FROM c",
            "MOVE FORWARD 5 IN c",
            "EXPLAIN (ANALYZE 0) SELECT 1",
            "DECLARE c CURSOR FOR SELECT * FROM t WHERE id = 1",
            "PREPARE p AS SELECT * FROM t WHERE id = 1",
            "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
            "VACUUM (PARALLEL 2) t",
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 1",
            "CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; SELECT 2; END",
            "CREATE RULE r AS ON INSERT TO t DO ALSO (DELETE FROM u WHERE id = 1; DELETE FROM v WHERE id = 2)",
            "(SELECT 1)",
            // No number to replace: the exact text is the shape.
            "SELECT * FROM t WHERE name = 'x'",
            "BEGIN; SAVEPOINT s; ROLLBACK TO s; COMMIT",
            "PREPARE TRANSACTION 'x'",
            // The lexer rejects it: classified in full, as today.
            "SELECT 'unterminated",
            "SELECT 1abc",
            "SELECT 1\0",
        ] {
            assert_eq!(shape_key(sql), None, "{sql}");
        }
    }
}
