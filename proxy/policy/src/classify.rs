//! `classify(sql)`: what each statement of a query string does.
//!
//! The string is tokenized once with sqlparser's PostgreSQL tokenizer —
//! which is what makes comments (nested ones too), dollar quoting, `E''` and
//! `U&''` strings and quoted identifiers harmless: they become tokens, not
//! text to pattern-match — then split at top-level semicolons, and each piece
//! is parsed on its own, so one statement sqlparser does not know cannot hide
//! the others. A piece that does not parse gets a last look at its leading
//! keywords (`DO`, `ALTER SYSTEM`, `GRANT role TO …`, which sqlparser does not
//! parse) and is otherwise [`Kind::Unparsed`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    self, AssignmentTarget, CopySource, Expr, FromTable, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Select, SelectItem,
    SetExpr, Statement, TableFactor, TableObject, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::bounds;
use crate::facts::{
    ColumnBounds, CopyDirection, CopyTarget, DdlObject, DdlVerb, Interval, Kind, Parameter,
    StatementFacts, TableName,
};

/// Every statement of one query string, in order. An empty string (or only
/// comments and semicolons) has no statements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Classified {
    pub statements: Vec<StatementFacts>,
}

impl Classified {
    /// Whether any statement was not understood.
    pub fn has_unparsed(&self) -> bool {
        self.statements.iter().any(|s| s.kind == Kind::Unparsed)
    }
}

/// Classifies every statement of `sql` (a simple Query's string, a Parse's
/// text, or a prepared statement's text).
pub fn classify(sql: &str) -> Classified {
    let dialect = PostgreSqlDialect {};
    let tokens = match Tokenizer::new(&dialect, sql).tokenize() {
        Ok(tokens) => tokens,
        Err(error) => {
            return Classified {
                statements: vec![StatementFacts::unparsed(format!("tokenizer: {error}"))],
            }
        }
    };
    let statements = split_statements(tokens)
        .into_iter()
        .map(|piece| classify_piece(&dialect, piece))
        .collect();
    Classified { statements }
}

/// Pieces between top-level semicolons that hold more than whitespace and
/// comments. Semicolons inside strings, dollar quotes and comments are part
/// of those tokens, so they never split.
fn split_statements(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut pieces = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        match token {
            Token::SemiColon => pieces.push(std::mem::take(&mut current)),
            Token::EOF => {}
            other => current.push(other),
        }
    }
    pieces.push(current);
    pieces
        .into_iter()
        .filter(|piece| piece.iter().any(|t| !matches!(t, Token::Whitespace(_))))
        .collect()
}

fn classify_piece(dialect: &PostgreSqlDialect, piece: Vec<Token>) -> StatementFacts {
    let words = leading_words(&piece);
    match Parser::new(dialect).with_tokens(piece).parse_statements() {
        Ok(statements) if statements.len() == 1 => facts_of(&statements[0]),
        Ok(statements) => StatementFacts::unparsed(format!(
            "expected one statement, parsed {}",
            statements.len()
        )),
        Err(error) => fallback_facts(&words)
            .unwrap_or_else(|| StatementFacts::unparsed(format!("parser: {error}"))),
    }
}

/// The first few unquoted words of a piece, uppercased, comments skipped.
fn leading_words(piece: &[Token]) -> Vec<String> {
    piece
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .take(3)
        .map(|t| match t {
            Token::Word(word) if word.quote_style.is_none() => word.value.to_ascii_uppercase(),
            _ => String::new(),
        })
        .collect()
}

/// Kinds of statements sqlparser cannot parse but whose leading keywords
/// alone say what they are — all of them ones rules refuse or review, so a
/// misreading can only make the gateway stricter.
fn fallback_facts(words: &[String]) -> Option<StatementFacts> {
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let kind = match (word(0), word(1)) {
        ("DO", _) => Kind::Do,
        ("ALTER", "SYSTEM") => Kind::AlterSystem,
        ("GRANT", _) => Kind::Grant,
        ("REVOKE", _) => Kind::Revoke,
        ("REASSIGN", "OWNED") | ("DROP", "OWNED") => Kind::OwnedObjects,
        ("CREATE", "ROLE" | "USER" | "GROUP") => Kind::CreateRole,
        ("ALTER", "ROLE" | "USER" | "GROUP") => Kind::AlterRole,
        ("DROP", "ROLE" | "USER" | "GROUP") => Kind::DropRole,
        ("CREATE", "EXTENSION") => Kind::CreateExtension,
        ("LOAD", _) => Kind::Load,
        ("ALTER", "DATABASE") => Kind::Ddl {
            verb: DdlVerb::Alter,
            object: DdlObject::Database,
        },
        ("DROP", "DATABASE") => Kind::Ddl {
            verb: DdlVerb::Drop,
            object: DdlObject::Database,
        },
        _ => return None,
    };
    let parameters = match kind {
        // ALTER SYSTEM SET role … / ALTER ROLE … SET role: settings, unknown which.
        Kind::AlterSystem | Kind::AlterRole => vec![Parameter::Unknown],
        _ => Vec::new(),
    };
    Some(StatementFacts {
        kind,
        parameters,
        ..StatementFacts::default()
    })
}

/// Facts of one parsed statement.
fn facts_of(statement: &Statement) -> StatementFacts {
    match statement {
        Statement::Explain {
            analyze,
            statement,
            options,
            ..
        } => {
            let analyze_option = options.iter().flatten().any(|option| {
                option.name.value.eq_ignore_ascii_case("analyze")
                    && !option.arg.as_ref().is_some_and(is_false_literal)
            });
            wrapper(
                Kind::Explain {
                    analyze: *analyze || analyze_option,
                },
                facts_of(statement),
            )
        }
        Statement::Prepare {
            name, statement, ..
        } => wrapper(
            Kind::Prepare {
                name: normalize_ident(name),
            },
            facts_of(statement),
        ),
        Statement::Declare { stmts } => {
            let Some(cursor) = stmts.iter().find(|d| d.for_query.is_some()) else {
                return plain(Kind::Other, statement);
            };
            let name = cursor
                .names
                .first()
                .map(normalize_ident)
                .unwrap_or_default();
            let inner = cursor
                .for_query
                .as_ref()
                .map(|query| facts_of(&Statement::Query(query.clone())))
                .unwrap_or_default();
            wrapper(
                Kind::DeclareCursor {
                    name,
                    binary: cursor.binary.unwrap_or(false),
                },
                inner,
            )
        }
        Statement::Set(set) => set_facts(set),
        Statement::Reset(reset) => {
            let (kind, parameter) = match &reset.reset {
                ast::Reset::ALL => (Kind::Set, "all".to_owned()),
                ast::Reset::SessionAuthorization => (
                    Kind::SessionAuthorization,
                    "session_authorization".to_owned(),
                ),
                ast::Reset::ConfigurationParameter(name) => {
                    let name = parameter_name(name);
                    (kind_for_parameter(&name), name)
                }
            };
            StatementFacts {
                kind,
                parameters: vec![Parameter::Named(parameter)],
                ..StatementFacts::default()
            }
        }
        Statement::Discard { object_type } => {
            let mut facts = plain(Kind::Discard, statement);
            if matches!(object_type, ast::DiscardObject::ALL) {
                // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT: it
                // would drop the mapped role and act as the gateway's login role.
                facts.parameters = ["session_authorization", "role", "all"]
                    .into_iter()
                    .map(|p| Parameter::Named(p.to_owned()))
                    .collect();
            }
            facts
        }
        Statement::StartTransaction { statements, .. } if !statements.is_empty() => {
            StatementFacts::unparsed("procedural block".to_owned())
        }
        other => plain(kind_of(other), other),
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

/// A statement whose facts come from walking all of it.
fn plain(kind: Kind, statement: &Statement) -> StatementFacts {
    let mut walker = Walker::default();
    let _ = statement.visit(&mut walker);
    let mut facts = StatementFacts {
        kind,
        ..StatementFacts::default()
    };
    walker.add_statement_specifics(statement, &mut facts);
    walker.finish(&mut facts);
    facts
}

fn kind_of(statement: &Statement) -> Kind {
    use DdlObject as O;
    use DdlVerb::{Alter, Comment, Create, Drop};
    let ddl = |verb, object| Kind::Ddl { verb, object };
    match statement {
        Statement::Query(query) => match query.body.as_ref() {
            SetExpr::Select(select) if select.into.is_some() => ddl(Create, O::Table),
            _ => Kind::Select,
        },
        Statement::Insert(_) => Kind::Insert,
        Statement::Update(_) => Kind::Update,
        Statement::Delete(_) => Kind::Delete,
        Statement::Merge(_) => Kind::Merge,
        Statement::Copy { to, target, .. } => Kind::Copy {
            direction: if *to {
                CopyDirection::To
            } else {
                CopyDirection::From
            },
            target: match target {
                ast::CopyTarget::Stdin => CopyTarget::Stdin,
                ast::CopyTarget::Stdout => CopyTarget::Stdout,
                ast::CopyTarget::File { .. } => CopyTarget::File,
                ast::CopyTarget::Program { .. } => CopyTarget::Program,
            },
        },
        Statement::Truncate(_) => Kind::Truncate,
        Statement::CreateTable(_) | Statement::CreateVirtualTable { .. } => ddl(Create, O::Table),
        Statement::CreateView(view) if view.materialized => ddl(Create, O::MaterializedView),
        Statement::CreateView(_) => ddl(Create, O::View),
        Statement::CreateIndex(_) => ddl(Create, O::Index),
        Statement::CreateSchema { .. } => ddl(Create, O::Schema),
        Statement::CreateDatabase { .. } => ddl(Create, O::Database),
        Statement::CreateFunction(_) => ddl(Create, O::Function),
        Statement::CreateProcedure { .. } => ddl(Create, O::Procedure),
        Statement::CreateTrigger(_) => ddl(Create, O::Trigger),
        Statement::CreateSequence { .. } => ddl(Create, O::Sequence),
        Statement::CreateType { .. } => ddl(Create, O::Type),
        Statement::CreateDomain(_) => ddl(Create, O::Domain),
        Statement::CreatePolicy(_) => ddl(Create, O::Policy),
        Statement::CreateServer(_) => ddl(Create, O::Server),
        Statement::CreateCollation(_)
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateSecret { .. }
        | Statement::CreateConnector(_)
        | Statement::CreateMacro { .. }
        | Statement::CreateStage { .. }
        | Statement::CreateFileFormat { .. }
        | Statement::CreateWarehouse(_) => ddl(Create, O::Other),
        Statement::AlterTable(_) | Statement::RenameTable(_) => ddl(Alter, O::Table),
        Statement::AlterSchema(_) => ddl(Alter, O::Schema),
        Statement::AlterIndex { .. } => ddl(Alter, O::Index),
        Statement::AlterView { .. } => ddl(Alter, O::View),
        Statement::AlterFunction(_) => ddl(Alter, O::Function),
        Statement::AlterType(_) => ddl(Alter, O::Type),
        Statement::AlterPolicy(_) => ddl(Alter, O::Policy),
        Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::AlterConnector { .. }
        | Statement::AlterSession { .. } => ddl(Alter, O::Other),
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Role | ObjectType::User => Kind::DropRole,
            ObjectType::Table => ddl(Drop, O::Table),
            ObjectType::View => ddl(Drop, O::View),
            ObjectType::MaterializedView => ddl(Drop, O::MaterializedView),
            ObjectType::Index => ddl(Drop, O::Index),
            ObjectType::Schema => ddl(Drop, O::Schema),
            ObjectType::Database => ddl(Drop, O::Database),
            ObjectType::Sequence => ddl(Drop, O::Sequence),
            ObjectType::Type => ddl(Drop, O::Type),
            _ => ddl(Drop, O::Other),
        },
        Statement::DropFunction(_) => ddl(Drop, O::Function),
        Statement::DropProcedure { .. } => ddl(Drop, O::Procedure),
        Statement::DropTrigger(_) => ddl(Drop, O::Trigger),
        Statement::DropDomain(_) => ddl(Drop, O::Domain),
        Statement::DropPolicy(_) => ddl(Drop, O::Policy),
        Statement::DropExtension(_) => ddl(Drop, O::Extension),
        Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropSecret { .. }
        | Statement::DropConnector { .. } => ddl(Drop, O::Other),
        Statement::Comment { object_type, .. } => match object_type {
            ast::CommentObject::Table => ddl(Comment, O::Table),
            _ => ddl(Comment, O::Other),
        },
        Statement::CreateRole(_) | Statement::CreateUser(_) => Kind::CreateRole,
        Statement::AlterRole { .. } | Statement::AlterUser(_) => Kind::AlterRole,
        Statement::Grant(_) => Kind::Grant,
        Statement::Revoke(_) | Statement::Deny(_) => Kind::Revoke,
        Statement::CreateExtension(_) => Kind::CreateExtension,
        Statement::Load { .. } => Kind::Load,
        Statement::Call(_) => Kind::Call,
        Statement::Execute {
            name: Some(name), ..
        } => Kind::Execute {
            name: parameter_name(name),
        },
        Statement::Deallocate { name, .. } => Kind::Deallocate {
            name: if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
                None
            } else {
                Some(normalize_ident(name))
            },
        },
        Statement::Fetch { .. } | Statement::Close { .. } => Kind::Cursor,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Kind::Transaction,
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. } => Kind::Show,
        Statement::LISTEN { .. } => Kind::Listen,
        Statement::NOTIFY { .. } => Kind::Notify,
        Statement::UNLISTEN { .. } => Kind::Unlisten,
        Statement::Lock(_) | Statement::LockTables { .. } => Kind::Lock,
        Statement::Vacuum(_) | Statement::Analyze(_) => Kind::Maintenance,
        _ => Kind::Other,
    }
}

fn set_facts(set: &ast::Set) -> StatementFacts {
    let named = |names: Vec<String>| -> StatementFacts {
        let kind = names
            .iter()
            .map(|n| kind_for_parameter(n))
            .find(|k| *k != Kind::Set)
            .unwrap_or(Kind::Set);
        StatementFacts {
            kind,
            parameters: names.into_iter().map(Parameter::Named).collect(),
            ..StatementFacts::default()
        }
    };
    match set {
        ast::Set::SingleAssignment { variable, .. } => named(vec![parameter_name(variable)]),
        ast::Set::ParenthesizedAssignments { variables, .. } => {
            named(variables.iter().map(parameter_name).collect())
        }
        ast::Set::MultipleAssignments { assignments } => named(
            assignments
                .iter()
                .map(|a| parameter_name(&a.name))
                .collect(),
        ),
        ast::Set::SetSessionAuthorization(_) => named(vec!["session_authorization".to_owned()]),
        ast::Set::SetRole { .. } => named(vec!["role".to_owned()]),
        ast::Set::SetTimeZone { .. } => named(vec!["timezone".to_owned()]),
        ast::Set::SetNames { .. } | ast::Set::SetNamesDefault {} => {
            named(vec!["client_encoding".to_owned()])
        }
        ast::Set::SetTransaction { .. } => StatementFacts {
            kind: Kind::Transaction,
            ..StatementFacts::default()
        },
        ast::Set::SetSessionParam(_) => StatementFacts {
            kind: Kind::Set,
            parameters: vec![Parameter::Unknown],
            ..StatementFacts::default()
        },
    }
}

/// `SET role = x` is `SET ROLE x` in PostgreSQL; likewise for
/// `session_authorization`. GUC names are case-insensitive, quoted or not.
fn kind_for_parameter(name: &str) -> Kind {
    match name {
        "role" => Kind::SetRole,
        "session_authorization" => Kind::SessionAuthorization,
        _ => Kind::Set,
    }
}

fn parameter_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => ident.value.to_lowercase(),
            ObjectNamePart::Function(_) => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// PostgreSQL's identifier rule: unquoted folds to lower case, quoted is exact.
fn normalize_ident(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

fn object_name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => normalize_ident(ident),
            ObjectNamePart::Function(_) => "?".to_owned(),
        })
        .collect()
}

fn table_name(name: &ObjectName) -> Option<TableName> {
    let parts = object_name_parts(name);
    match parts.as_slice() {
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

fn function_name(name: &ObjectName) -> String {
    object_name_parts(name).join(".").to_lowercase()
}

fn is_false_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Boolean(b) => !b,
            Value::Number(n, _) => n == "0",
            Value::SingleQuotedString(s) => {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "off" | "false" | "0" | "no"
                )
            }
            _ => false,
        },
        Expr::Identifier(ident) => {
            matches!(ident.value.to_ascii_lowercase().as_str(), "off" | "false")
        }
        _ => false,
    }
}

/// A string literal's text (any quoting), through casts and parentheses.
fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s)
            | Value::NationalStringLiteral(s)
            | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::DollarQuotedString(d) => Some(d.value.clone()),
            _ => None,
        },
        Expr::Nested(inner) => string_literal(inner),
        Expr::Cast { expr, .. } => string_literal(expr),
        _ => None,
    }
}

/// The parameter a `set_config(setting_name, new_value, is_local)` call
/// sets: the first argument, or the one named `setting_name`; anything but a
/// string literal could be any parameter.
fn set_config_parameter(args: &[FunctionArg]) -> Parameter {
    let named = args.iter().find_map(|arg| match arg {
        FunctionArg::Named {
            name,
            arg: FunctionArgExpr::Expr(expr),
            ..
        } if name.value.eq_ignore_ascii_case("setting_name") => Some(expr),
        FunctionArg::ExprNamed {
            name: Expr::Identifier(name),
            arg: FunctionArgExpr::Expr(expr),
            ..
        } if name.value.eq_ignore_ascii_case("setting_name") => Some(expr),
        _ => None,
    });
    // Positional arguments come first, so a named `setting_name` is the
    // name whatever the first argument is.
    let positional = match args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))) => Some(expr),
        _ => None,
    };
    named
        .or(positional)
        .and_then(string_literal)
        .map(|name| Parameter::Named(name.trim().to_lowercase()))
        .unwrap_or(Parameter::Unknown)
}

fn is_set_config(name: &str) -> bool {
    name.rsplit('.').next() == Some("set_config")
}

/// Walks one statement (subqueries, CTEs and expressions included) and
/// collects what rules match on.
#[derive(Default)]
struct Walker {
    tables: Vec<TableName>,
    cte_names: HashSet<String>,
    functions: Vec<String>,
    columns_read: Vec<String>,
    all_columns: bool,
    parameters: Vec<Parameter>,
    /// Bounds of each query block with a FROM clause and of each UPDATE/DELETE.
    scopes: Vec<BTreeMap<String, Interval>>,
    /// Data-modifying statements nested in the walked one (`WITH d AS (DELETE …)`).
    nested_kinds: Vec<Kind>,
    nested_missing_where: bool,
    statement_depth: usize,
    /// The next relation names a table function, not a table.
    skip_relations: usize,
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.cte_names.insert(normalize_ident(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        }) {
            self.all_columns = true;
        }
        if !select.from.is_empty() {
            self.scopes
                .push(bounds::of_where(select.selection.as_ref()));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                self.add_table_function(name, &args.args);
                self.skip_relations += 1;
            }
            TableFactor::Function { name, args, .. } => self.add_table_function(name, args),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if self.skip_relations > 0 {
            self.skip_relations -= 1;
            return ControlFlow::Continue(());
        }
        self.add_table(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(function) => {
                let name = function_name(&function.name);
                if is_set_config(&name) {
                    self.parameters.push(match &function.args {
                        FunctionArguments::List(list) => set_config_parameter(&list.args),
                        _ => Parameter::Unknown,
                    });
                }
                self.functions.push(name);
            }
            Expr::Identifier(ident) => self.columns_read.push(normalize_ident(ident)),
            Expr::CompoundIdentifier(idents) => {
                if let Some(last) = idents.last() {
                    self.columns_read.push(normalize_ident(last));
                }
            }
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => self.all_columns = true,
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.statement_depth += 1;
        let nested = self.statement_depth > 1;
        match statement {
            Statement::Update(update) => {
                self.scopes
                    .push(bounds::of_where(update.selection.as_ref()));
                if nested {
                    self.nested_kinds.push(Kind::Update);
                    self.nested_missing_where |= update.selection.is_none();
                }
            }
            Statement::Delete(delete) => {
                self.scopes
                    .push(bounds::of_where(delete.selection.as_ref()));
                if nested {
                    self.nested_kinds.push(Kind::Delete);
                    self.nested_missing_where |= delete.selection.is_none();
                }
            }
            Statement::Insert(_) if nested => self.nested_kinds.push(Kind::Insert),
            Statement::Merge(_) if nested => self.nested_kinds.push(Kind::Merge),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        self.statement_depth = self.statement_depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

impl Walker {
    /// `SELECT * FROM set_config('role', …)` sets a parameter as well.
    fn add_table_function(&mut self, name: &ObjectName, args: &[FunctionArg]) {
        let name = function_name(name);
        if is_set_config(&name) {
            self.parameters.push(set_config_parameter(args));
        }
        self.functions.push(name);
    }

    fn add_table(&mut self, name: &ObjectName) {
        let Some(table) = table_name(name) else {
            return;
        };
        if table.schema_assumed && self.cte_names.contains(&table.name) {
            return;
        }
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
    }

    /// What the generic walk cannot see: names sqlparser does not mark as
    /// relations, written columns, the WHERE of the statement itself.
    fn add_statement_specifics(&mut self, statement: &Statement, facts: &mut StatementFacts) {
        match statement {
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.add_table(name);
                }
                if insert.columns.is_empty() {
                    self.all_columns = true;
                }
                facts.columns_written = insert
                    .columns
                    .iter()
                    .filter_map(|c| object_name_parts(c).pop())
                    .collect();
            }
            Statement::Update(update) => {
                facts.missing_where = update.selection.is_none();
                for assignment in &update.assignments {
                    match &assignment.target {
                        AssignmentTarget::ColumnName(name) => {
                            facts.columns_written.extend(object_name_parts(name).pop())
                        }
                        AssignmentTarget::Tuple(names) => facts
                            .columns_written
                            .extend(names.iter().filter_map(|n| object_name_parts(n).pop())),
                    }
                }
                if table_name_of_factor(&update.table.relation)
                    .is_some_and(|t| t.name == "pg_settings")
                {
                    // UPDATE pg_settings SET setting = … is SET by another name.
                    self.parameters.push(Parameter::Unknown);
                }
            }
            Statement::Delete(delete) => {
                facts.missing_where = delete.selection.is_none();
                let from = match &delete.from {
                    FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
                };
                for table in from {
                    if let Some(name) = table_name_of_factor(&table.relation) {
                        if !self.tables.contains(&name) {
                            self.tables.push(name);
                        }
                    }
                }
            }
            Statement::Merge(_) => self.all_columns = true,
            Statement::Copy {
                source:
                    CopySource::Table {
                        table_name,
                        columns,
                    },
                to,
                ..
            } => {
                self.add_table(table_name);
                let names: Vec<String> = columns.iter().map(normalize_ident).collect();
                if names.is_empty() {
                    self.all_columns = true;
                }
                if *to {
                    self.columns_read.extend(names);
                } else {
                    facts.columns_written = names;
                }
            }
            Statement::Drop {
                object_type:
                    ObjectType::Table
                    | ObjectType::View
                    | ObjectType::MaterializedView
                    | ObjectType::Sequence,
                names,
                ..
            } => {
                for name in names {
                    self.add_table(name);
                }
            }
            Statement::Comment {
                object_type: ast::CommentObject::Table,
                object_name,
                ..
            } => self.add_table(object_name),
            Statement::Call(function) => self.functions.push(function_name(&function.name)),
            _ => {}
        }
    }

    fn finish(self, facts: &mut StatementFacts) {
        facts.tables = self.tables;
        facts.functions = dedup(self.functions);
        facts.columns_read = dedup(self.columns_read);
        facts.columns_written = dedup(std::mem::take(&mut facts.columns_written));
        facts.all_columns = self.all_columns;
        facts.parameters.extend(self.parameters);
        facts.missing_where |= self.nested_missing_where;
        facts.bounds = ColumnBounds {
            columns: bounds::hull_of_scopes(self.scopes),
        };
        facts.nested_kinds = self.nested_kinds;
    }
}

fn table_name_of_factor(factor: &TableFactor) -> Option<TableName> {
    match factor {
        TableFactor::Table {
            name, args: None, ..
        } => table_name(name),
        _ => None,
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

/// Classification results by statement text, so a statement the client
/// repeats (every pgbench transaction, every poll an agent makes) costs a
/// hash lookup instead of a parse.
///
/// Bounded by two generations: lookups hit the current map first, then the
/// previous one (promoting the entry); when the current map is full it
/// becomes the previous one and the oldest generation is dropped. That keeps
/// every recently used statement, costs no bookkeeping per hit, and never
/// holds more than twice `capacity / 2` entries.
pub struct ClassifyCache {
    current: HashMap<Arc<str>, Arc<Classified>>,
    previous: HashMap<Arc<str>, Arc<Classified>>,
    generation_size: usize,
    max_statement_len: usize,
}

impl ClassifyCache {
    /// Statements longer than this are classified but not kept: a client
    /// sending huge one-off strings must not make the cache hold them.
    pub const DEFAULT_MAX_STATEMENT_LEN: usize = 16 * 1024;

    /// A cache holding at most `capacity` statements (at least 2).
    pub fn new(capacity: usize) -> ClassifyCache {
        ClassifyCache {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_size: (capacity / 2).max(1),
            max_statement_len: Self::DEFAULT_MAX_STATEMENT_LEN,
        }
    }

    /// The classification of `sql`, from the cache or freshly made.
    pub fn classify(&mut self, sql: &str) -> Arc<Classified> {
        if let Some(hit) = self.current.get(sql) {
            return Arc::clone(hit);
        }
        let classified = match self.previous.remove_entry(sql) {
            Some((key, hit)) => {
                self.insert(key, Arc::clone(&hit));
                return hit;
            }
            None => Arc::new(classify(sql)),
        };
        if sql.len() <= self.max_statement_len {
            self.insert(Arc::from(sql), Arc::clone(&classified));
        }
        classified
    }

    /// Number of statements held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&mut self, key: Arc<str>, value: Arc<Classified>) {
        if self.current.len() >= self.generation_size {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }
}

impl Default for ClassifyCache {
    fn default() -> ClassifyCache {
        ClassifyCache::new(4096)
    }
}
