//! The inspector: statement rules on the way in, card-number masking
//! on the way out, for one connection.
//!
//! In: every simple Query (each of its statements), every Parse, and what
//! SQL `EXECUTE` runs are classified (through the cache) and decided with
//! the configured rules; a refusal never reaches the server (see
//! [`ClientVerdict::Statement`]). A FunctionCall (fast path) is refused: it names a
//! function by OID, which no rule can judge.
//!
//! Out: DataRows are masked with the row shape of the result they belong to
//! (simple query, or the portal being executed: statement descriptions are
//! kept per statement and combined with Bind's result formats per portal,
//! since Execute does not resend RowDescription); COPY data, errors,
//! notices and notifications are scanned for card numbers. A row whose
//! shape is unknown or cannot be masked ends the request with an error and
//! everything up to ReadyForQuery is suppressed: nothing unmasked is sent.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use foldhash::HashMap;
use hoop_policy::{
    decide, mask_data_row, mask_error_or_notice, mask_notification, Classified, ClassifyCache,
    ColumnPolicy, CopyMasker, Decision, Identity, Kind, MaskFailure, PolicyContext, RowShape,
    RuleSet, StatementFacts, StringLiterals,
};

use super::gate::{sql_text, Calls, RunsEarly, StatementInfo};
use super::refusal::Refusal;
use super::state::{About, ConnectionState, Pending, PortalDescription, Prepared, TextProblem};
use super::verdict::{ClientVerdict, ServerVerdict};
use crate::protocol::backend::{
    put_copy_data, put_data_row, put_error, put_error_response, put_function_call_response,
    put_notice_response, put_notification_response, Backend, Severity,
};
use crate::protocol::frontend::{Bind, Frontend};
use crate::protocol::Frame;

/// Statements kept by the per-connection classification cache.
const CACHE_CAPACITY: usize = 1024;

/// Rule recorded when `EXECUTE` names a statement the gateway has not seen
/// prepared.
const UNKNOWN_PREPARED_RULE: &str = "unknown-prepared-statement";

/// invalid_sql_statement_name: what the server answers for `EXECUTE` of a
/// name that does not exist.
const SQLSTATE_INVALID_SQL_STATEMENT_NAME: &str = "26000";

/// SQLSTATE for results the gateway refuses to pass on because it could not
/// mask them.
const SQLSTATE_MASKING_FAILED: &str = "XX000";

pub struct Inspector {
    identity: Identity,
    context: PolicyContext,
    rules: Arc<RuleSet>,
    columns: ColumnPolicy,
    cache: ClassifyCache,
    /// Verdicts already reached, keyed by the classification the cache
    /// returned (held here, so its address is not reused while it is a
    /// key): a statement of a shape seen before, or a prepared statement
    /// executed again, is not decided again. Only verdicts that depend on
    /// nothing but the classification are kept (no `EXECUTE`, `PREPARE` or
    /// `DEALLOCATE`, whose verdicts read the session's prepared statements).
    verdicts: HashMap<usize, (Arc<Classified>, Judged)>,
    /// Row shapes made this session (see [`Shapes`]).
    shapes: Shapes,
    // What the session holds (statements, portals, their descriptions and
    // shapes) is the connection state's, read and changed through it.

    // Server side, in the order the server answers (the statements and
    // portals the server holds, and their shapes, are `ConnectionState`'s).
    copy: Option<CopyMasker>,
    /// A result could not be masked: its error has been sent, everything
    /// else up to ReadyForQuery is dropped.
    suppressing: bool,
}

/// A reviewer's replacement that would prepare, deallocate or declare
/// (change what the session's names mean) is refused, by the review hub
/// when the reviewer submits it and by the relay before it runs: it stands
/// in for one statement, and what it does to the names is not followed,
/// so later statements would be judged on names whose meaning the gateway
/// does not know.
pub(crate) fn replacement_changes_names(classified: &Classified) -> Option<Decision> {
    classified
        .statements
        .iter()
        .any(|facts| {
            matches!(
                facts.kind,
                Kind::Prepare { .. } | Kind::Deallocate { .. } | Kind::DeclareCursor { .. }
            )
        })
        .then(|| {
            Decision::block(
                "replacement-changes-names",
                "a replacement statement may not prepare, deallocate or declare; \
                 approve, deny, or replace it with another statement",
            )
        })
}

/// Where the values of a statement's bind parameters come from, for a
/// setting named by one (`set_config($1, …)`, see
/// [`StatementFacts::bound_settings`]).
#[derive(Debug, Clone, Copy)]
enum Binds<'a> {
    /// None: a simple Query (the server knows no `$1` there), or a
    /// reviewer's replacement: as any setting.
    None,
    /// Known when a portal runs, and judged then (a Parse).
    Later,
    /// The Bind body of the portal that runs.
    Portal(Option<&'a [u8]>),
}

impl Binds<'_> {
    fn apply(self, facts: &StatementFacts) -> StatementFacts {
        match self {
            Binds::None => facts.clone(),
            Binds::Later => facts.deferring_binds(),
            Binds::Portal(body) => {
                let parameters = body
                    .and_then(Bind::from_body)
                    .and_then(|bind| bind.parameters())
                    .unwrap_or_default();
                // Text format only: a binary value's reading depends on
                // its type.
                facts.with_binds(|n| match parameters.get(usize::from(n).checked_sub(1)?)? {
                    (0, Some(value)) => std::str::from_utf8(value).ok().map(str::to_owned),
                    _ => None,
                })
            }
        }
    }
}

/// What a statement does to the session's names once it runs.
enum NameChange {
    /// `PREPARE name AS …`: SQL and the protocol share one namespace of
    /// prepared statements, so a name prepared in SQL is no longer a
    /// Parse's.
    Prepare(String, Arc<StatementFacts>),
    /// `DEALLOCATE name` (`None`: `ALL`).
    Deallocate(Option<String>),
    /// `DECLARE name CURSOR …`: a portal of the protocol by that name is
    /// gone.
    Declare(String),
}

impl NameChange {
    fn of(facts: &StatementFacts) -> Option<NameChange> {
        match &facts.kind {
            Kind::Prepare { name } => {
                Some(NameChange::Prepare(name.clone(), Arc::new(facts.clone())))
            }
            Kind::Deallocate { name } => Some(NameChange::Deallocate(name.clone())),
            Kind::DeclareCursor { name, .. } => Some(NameChange::Declare(name.clone())),
            _ => None,
        }
    }

    /// Makes the changes of a statement about to be sent, in order: now, or
    /// once a reviewer approves it (denied, or replaced by a reviewer's
    /// text, the relay undoes them; see
    /// `ConnectionState::statement_refused` and `statement_replaced`), and
    /// they hold once the server completes the statement.
    fn apply(changes: impl IntoIterator<Item = NameChange>, state: &mut ConnectionState) {
        for change in changes {
            match change {
                NameChange::Prepare(name, facts) => {
                    state.prepare(name.as_bytes(), Prepared::Sql(facts));
                }
                NameChange::Deallocate(name) => {
                    state.deallocate(name.as_deref().map(str::as_bytes));
                }
                NameChange::Declare(name) => state.declare_cursor(name.as_bytes()),
            }
        }
    }
}

impl Inspector {
    pub fn new(identity: Identity, rules: Arc<RuleSet>, columns: ColumnPolicy) -> Inspector {
        // Statements of one shape share a classification unless their
        // literals bound a column some predicate rule reads.
        let cache =
            ClassifyCache::new(CACHE_CAPACITY).with_predicate_columns(rules.predicate_columns());
        let context = PolicyContext {
            protected_tables: columns.protected_tables().clone(),
        };
        Inspector {
            identity,
            context,
            rules,
            columns,
            cache,
            verdicts: HashMap::default(),
            shapes: Shapes::default(),
            copy: None,
            suppressing: false,
        }
    }

    /// The inspector for one session: `masked` is what
    /// [`crate::upstream::load_masked_columns`] read (`None`: the database
    /// has no hoop extension, so only content detection applies).
    pub fn for_session(
        policy: &crate::config::Policy,
        identity: Identity,
        unmask: &[String],
        masked: Option<&[hoop_policy::MaskedColumn]>,
    ) -> Result<Inspector, hoop_policy::MaskFailure> {
        let columns = ColumnPolicy::new(
            masked.unwrap_or_default(),
            unmask,
            policy.content_masker.clone(),
            policy.token_key.as_deref(),
        )?;
        Ok(Inspector::new(identity, Arc::clone(&policy.rules), columns))
    }

    /// Decides a query string (a simple Query, or the text of a Parse, as
    /// [`ConnectionState::read_text`] read it; `runs`: it is a Query, whose
    /// `PREPARE`, `DEALLOCATE` and `DECLARE` statements change the session
    /// once it is sent).
    fn decide_sql(
        &mut self,
        sql: Result<&str, &TextProblem>,
        state: &mut ConnectionState,
        runs: bool,
        binds: Binds<'_>,
    ) -> Judged {
        let sql = match sql {
            Ok(sql) => sql,
            Err(problem) => {
                let reason = match problem {
                    TextProblem::Invalid(encoding) => format!("it is not valid {encoding}"),
                    TextProblem::Encoding(encoding) => format!(
                        "it has non-ASCII text in client_encoding {encoding}, which the gateway \
                         does not read; use client_encoding UTF8"
                    ),
                    TextProblem::Unsettled => "it follows a statement of the same pipeline \
                         (no Sync between) that may have changed client_encoding or \
                         standard_conforming_strings, which the server reports only at the \
                         Sync, and its non-ASCII text or backslashes would read differently \
                         if it did; send it after a Sync, or that text as a parameter"
                        .to_owned(),
                };
                return Judged {
                    decision: Decision::block(
                        hoop_policy::UNPARSED_RULE,
                        format!(
                            "statement not understood by the gateway ({reason}); \
                             gateway rule \"{}\"",
                            hoop_policy::UNPARSED_RULE
                        ),
                    ),
                    kind: "unparsed".into(),
                    tables: Arc::new([]),
                    runs_early: RunsEarly::Never,
                    changes_code: false,
                    calls: None,
                };
            }
        };
        // A Parse's text comes again with each Execute of it.
        let classified = if matches!(binds, Binds::Later) {
            self.cache.classify_prepared(sql, state.reading.strings)
        } else {
            self.cache.classify_in(sql, state.reading.strings)
        };
        self.judge(&classified, state, runs, binds)
    }

    /// Judges `classified` (a statement kept from before of its shape is
    /// not judged again) and, if it `runs` now (a Query, or an Execute of
    /// a Parse), makes the changes its statements make to the session's
    /// names. A setting named by a bind parameter is judged on `binds`.
    fn judge(
        &mut self,
        classified: &Arc<Classified>,
        state: &mut ConnectionState,
        runs: bool,
        binds: Binds<'_>,
    ) -> Judged {
        if let Some((_, judged)) = self.verdicts.get(&(Arc::as_ptr(classified) as usize)) {
            return judged.clone();
        }
        let mut worst = Decision::Allow;
        // PREPAREs become visible to later EXECUTEs of the same string, but
        // are remembered only if the whole string may run.
        let mut prepared_here: Vec<(String, Arc<StatementFacts>)> = Vec::new();
        // What its statements do to the session's names, in order.
        let mut changes: Vec<NameChange> = Vec::new();
        // What its `EXECUTE`s run, for the tables of its record.
        let mut ran: Vec<StatementFacts> = Vec::new();
        for facts in &classified.statements {
            let bound;
            let facts = if !facts.reads_binds() {
                facts
            } else {
                bound = binds.apply(facts);
                &bound
            };
            let mut decision = decide(facts, &self.identity, &self.context, &self.rules);
            // `EXECUTE name`, also inside `EXPLAIN ANALYZE EXECUTE name` and
            // `CREATE TABLE t AS EXECUTE name`: judged on what the name
            // means now (which a PREPARE since a Parse of it may have
            // changed; such verdicts are never kept, see `remember`).
            for name in facts.levels().flat_map(|level| &level.executes) {
                let executed = self.executed_facts(state, &prepared_here, name);
                decision = worse(decision, self.decide_executed(name, executed.as_deref()));
                ran.extend(executed.into_iter().flatten());
            }
            if let Some(change) = NameChange::of(facts) {
                if let NameChange::Prepare(name, facts) = &change {
                    prepared_here.push((name.clone(), Arc::clone(facts)));
                }
                changes.push(change);
            }
            worst = worse(worst, decision);
        }
        if runs && !matches!(worst, Decision::Block { .. }) {
            NameChange::apply(changes, state);
        }
        let mut judged = Judged::of(worst, &classified.statements);
        judged.add_tables(&ran);
        self.remember(classified, &judged);
        judged
    }

    /// Keeps a verdict that depends on nothing but `classified` (see
    /// [`Inspector::verdicts`]).
    fn remember(&mut self, classified: &Arc<Classified>, judged: &Judged) {
        let session_dependent = classified.statements.iter().any(|facts| {
            // Judged on the portal's parameters (a Parse's verdict leaves
            // them out: kept, it would stand for every portal).
            facts.has_bound_settings()
                || facts.levels().any(|level| {
                    !level.executes.is_empty()
                        || matches!(
                            level.kind,
                            Kind::Prepare { .. }
                                | Kind::Deallocate { .. }
                                | Kind::DeclareCursor { .. }
                        )
                })
        });
        // Only what the classification cache keeps (it holds the other
        // reference): a statement too long for it is not kept here either.
        if session_dependent || Arc::strong_count(classified) < 2 {
            return;
        }
        if self.verdicts.len() >= CACHE_CAPACITY {
            self.verdicts.clear();
        }
        self.verdicts.insert(
            Arc::as_ptr(classified) as usize,
            (Arc::clone(classified), judged.clone()),
        );
    }

    /// What `EXECUTE name` runs: a statement prepared in SQL earlier in
    /// this string, or one the session holds (prepared in SQL or with Parse).
    fn executed_facts(
        &mut self,
        state: &ConnectionState,
        prepared_here: &[(String, Arc<StatementFacts>)],
        name: &str,
    ) -> Option<Vec<StatementFacts>> {
        if let Some((_, facts)) = prepared_here.iter().rev().find(|(n, _)| n == name) {
            return Some(vec![facts.as_ref().clone()]);
        }
        match &state.statement(name.as_bytes())?.1.prepared {
            Prepared::Sql(facts) => Some(vec![facts.as_ref().clone()]),
            Prepared::Parse { sql, strings, .. } => {
                let sql = std::str::from_utf8(sql).ok()?;
                Some(
                    self.cache
                        .classify_prepared(sql, *strings)
                        .statements
                        .clone(),
                )
            }
        }
    }

    fn decide_executed(&self, name: &str, executed: Option<&[StatementFacts]>) -> Decision {
        let Some(executed) = executed else {
            // Every way of preparing a statement passes the gateway, so an
            // unknown name does not exist (or was prepared where the gateway
            // cannot see, inside a DO block): refuse rather than guess, with
            // the server's own answer for a name that does not exist.
            return Decision::Block {
                rule: UNKNOWN_PREPARED_RULE.to_owned(),
                message: format!("prepared statement \"{name}\" does not exist"),
                sqlstate: SQLSTATE_INVALID_SQL_STATEMENT_NAME,
                position: None,
            };
        };
        executed.iter().fold(Decision::Allow, |worst, facts| {
            worse(
                worst,
                decide(facts, &self.identity, &self.context, &self.rules),
            )
        })
    }

    /// An Execute: the statement its portal runs, judged now (a rule may
    /// hold it for review), with the portal's parameters for the record. A
    /// `PREPARE`, `DEALLOCATE` or `DECLARE … CURSOR` sent with Parse
    /// changes the session's names when a portal of it runs, as in a Query.
    fn execute(&mut self, portal: &[u8], state: &mut ConnectionState) -> (StatementInfo, About) {
        let executed = state.execute(portal);
        let strings = match &executed.prepared {
            Some(Prepared::Parse { strings, .. }) => *strings,
            _ => StringLiterals::Standard,
        };
        let (sql, judged) = match &executed.prepared {
            Some(Prepared::Parse { sql, strings, .. }) => {
                let classified = self.cache.classify_prepared(&sql_text(sql), *strings);
                let binds = Binds::Portal(executed.bind.as_deref());
                (sql.clone(), self.judge(&classified, state, true, binds))
            }
            // A portal bound to a statement prepared in SQL (`PREPARE name
            // AS …`, judged then): judged again on what it runs, as
            // `EXECUTE name`.
            Some(Prepared::Sql(facts)) => {
                let name =
                    String::from_utf8_lossy(executed.statement_name.as_deref().unwrap_or_default())
                        .into_owned();
                let decision = self.decide_executed(&name, Some(std::slice::from_ref(facts)));
                // Its kind and tables are the prepared statement's.
                let runs = facts.inner.as_deref().unwrap_or(facts.as_ref());
                (
                    format!("-- Execute of statement \"{name}\" (prepared in SQL)").into(),
                    Judged::of(decision, std::slice::from_ref(runs)),
                )
            }
            // A cursor declared in SQL or opened by a function (judged
            // then), fetched by portal name.
            None => (
                format!(
                    "-- Execute of portal \"{}\"",
                    String::from_utf8_lossy(portal)
                )
                .into(),
                Judged {
                    decision: Decision::Allow,
                    kind: "fetch".into(),
                    tables: Arc::new([]),
                    runs_early: RunsEarly::Never,
                    // What it runs was judged when it was opened.
                    changes_code: false,
                    calls: None,
                },
            ),
        };
        let describe_portal = (!executed.described).then(|| (portal.to_vec(), executed.portal));
        let info = StatementInfo {
            strings,
            sql,
            kind: judged.kind,
            tables: judged.tables,
            decision: judged.decision,
            runs_early: judged.runs_early,
            changes_code: judged.changes_code,
            calls: judged.calls,
            describe_portal,
            bind: executed.bind,
        };
        (info, About::Portal(executed.portal))
    }

    /// A NoticeResponse of the upstream login, masked like any other.
    pub(crate) fn mask_notice(&mut self, frame: &Frame) -> ServerVerdict {
        match Backend::read(frame) {
            Ok(message) => self.mask_report(&message),
            Err(_) => ServerVerdict::Drop,
        }
    }

    /// The verdict on a message carrying values (DataRow,
    /// FunctionCallResponse) once masked: as it came, its masked body
    /// written by `put`, or the request ended with an error when it could
    /// not be masked.
    fn masked_value(
        &mut self,
        put: fn(&mut BytesMut, &[u8]),
        masked: Result<Option<Vec<u8>>, MaskFailure>,
    ) -> ServerVerdict {
        match masked {
            Ok(body) => rewritten(put, body),
            Err(e) => self.fail(&e),
        }
    }

    /// Starts suppressing the rest of the request; the client gets this error.
    fn fail(&mut self, problem: &dyn std::fmt::Display) -> ServerVerdict {
        tracing::warn!(%problem, "result could not be masked; request ended with an error");
        self.suppressing = true;
        self.copy = None;
        let mut out = BytesMut::new();
        put_error(
            &mut out,
            Severity::Error,
            SQLSTATE_MASKING_FAILED,
            &format!("the gateway could not mask this result, so it was not sent: {problem}"),
        );
        ServerVerdict::Replace(out)
    }

    /// The shape of the rows the server is sending now.
    /// The shape of the rows now arriving: the simple Query's result set,
    /// or the portal an Execute runs (from a Describe of the portal, or of
    /// the very statement it was bound to, with the portal's result
    /// formats), made once and kept in the connection state. `None`: not
    /// known (a row then cannot be masked, and is not sent).
    fn current_shape<'s>(
        &mut self,
        state: &'s mut ConnectionState,
    ) -> Result<Option<&'s RowShape>, MaskFailure> {
        if let Some(Pending::Query(_)) = state.front() {
            if state.simple_shape.is_none() {
                if let Some(raw) = &state.simple_row_description {
                    state.simple_shape = Some(self.shapes.shape(raw, None, &self.columns)?);
                }
            }
            return Ok(state.simple_shape.as_deref());
        }
        let (columns, shapes) = (&self.columns, &mut self.shapes);
        state.execute_shape(|description, formats| match description {
            PortalDescription::Own(raw) => {
                raw.map(|raw| shapes.shape(raw, None, columns)).transpose()
            }
            PortalDescription::Statement(raw) => raw
                .map(|raw| shapes.shape(raw, Some(formats), columns))
                .transpose(),
        })
    }

    fn mask_copy(&mut self, data: &[u8]) -> ServerVerdict {
        let copy = self
            .copy
            .get_or_insert_with(|| CopyMasker::new(&self.columns, false));
        let chunks = copy.mask_copy_data(data);
        if chunks.len() == 1 && matches!(chunks[0], Cow::Borrowed(_)) {
            return ServerVerdict::Forward;
        }
        let mut out = BytesMut::new();
        for chunk in chunks {
            put_copy_data(&mut out, &chunk);
        }
        if out.is_empty() {
            ServerVerdict::Drop
        } else {
            ServerVerdict::Replace(out)
        }
    }

    /// What the COPY masker still holds, framed, followed by `frame`.
    fn finish_copy(&mut self, frame: &Frame) -> Option<BytesMut> {
        let mut copy = self.copy.take()?;
        let held = copy.finish();
        if held.is_empty() {
            return None;
        }
        let mut out = BytesMut::new();
        for chunk in held {
            put_copy_data(&mut out, &chunk);
        }
        out.extend_from_slice(frame.as_bytes());
        Some(out)
    }

    /// An ErrorResponse, NoticeResponse or NotificationResponse with the
    /// card numbers in its fields masked.
    fn mask_report(&mut self, message: &Backend<'_>) -> ServerVerdict {
        let masker = self.columns.content_masker();
        let (masked, put): (_, fn(&mut BytesMut, &[u8])) = match message {
            Backend::NotificationResponse(body) => {
                (mask_notification(masker, body), put_notification_response)
            }
            Backend::ErrorResponse(body) => {
                (mask_error_or_notice(masker, body), put_error_response)
            }
            Backend::NoticeResponse(body) => {
                (mask_error_or_notice(masker, body), put_notice_response)
            }
            _ => return ServerVerdict::Forward,
        };
        match masked {
            Ok(body) => rewritten(put, body),
            Err(e) => {
                tracing::warn!(error = %e, "malformed message from the database was not forwarded");
                if matches!(message, Backend::ErrorResponse(_)) {
                    let mut out = BytesMut::new();
                    put_error(
                        &mut out,
                        Severity::Error,
                        SQLSTATE_MASKING_FAILED,
                        "the database reported an error the gateway could not read",
                    );
                    ServerVerdict::Replace(out)
                } else {
                    ServerVerdict::Drop
                }
            }
        }
    }
}

/// A message as it came (`None`), or its masked body written by `put`.
fn rewritten(put: fn(&mut BytesMut, &[u8]), body: Option<Vec<u8>>) -> ServerVerdict {
    match body {
        None => ServerVerdict::Forward,
        Some(body) => {
            let mut out = BytesMut::new();
            put(&mut out, &body);
            ServerVerdict::Replace(out)
        }
    }
}

/// The row shapes made lately, by the RowDescription they were read from
/// (and the portal's result formats, for a statement's description): a
/// statement run again, as a simple Query or in a new portal, answers with
/// the same description, and its shape is not read again. The session's
/// column policy does not change, so a description always makes the same
/// shape. A description that cannot be read is not kept (it fails again).
#[derive(Default)]
struct Shapes {
    made: Vec<MadeShape>,
    /// Where the next shape goes once `made` is full.
    next: usize,
}

struct MadeShape {
    description: Bytes,
    /// `None`: the description carries the formats (a portal's own).
    formats: Option<Vec<i16>>,
    shape: Arc<RowShape>,
}

impl Shapes {
    /// Enough for the statements a session runs in turn; a scan of a few
    /// short byte strings costs less than reading one description.
    const KEPT: usize = 8;

    fn shape(
        &mut self,
        description: &Bytes,
        formats: Option<&[i16]>,
        columns: &ColumnPolicy,
    ) -> Result<Arc<RowShape>, MaskFailure> {
        let kept = self
            .made
            .iter()
            .find(|made| made.description == description && made.formats.as_deref() == formats);
        if let Some(made) = kept {
            return Ok(Arc::clone(&made.shape));
        }
        let shape = RowShape::from_row_description(description, columns)?;
        let shape = Arc::new(match formats {
            Some(formats) => shape.with_result_formats(formats)?,
            None => shape,
        });
        let made = MadeShape {
            description: description.clone(),
            formats: formats.map(<[i16]>::to_vec),
            shape: Arc::clone(&shape),
        };
        if self.made.len() < Self::KEPT {
            self.made.push(made);
        } else {
            self.made[self.next] = made;
            self.next = (self.next + 1) % Self::KEPT;
        }
        Ok(shape)
    }
}

/// A decision with what the record says about the statement.
#[derive(Clone)]
struct Judged {
    decision: Decision,
    /// Most specific kind of each statement, `;`-separated.
    kind: Arc<str>,
    /// Every table named, `schema.table`, first appearance first.
    tables: Arc<[String]>,
    /// See [`StatementInfo::runs_early`].
    runs_early: RunsEarly,
    /// See [`StatementInfo::changes_code`].
    changes_code: bool,
    /// See [`StatementInfo::calls`].
    calls: Option<Arc<Calls>>,
}

impl Judged {
    fn of(decision: Decision, statements: &[StatementFacts]) -> Judged {
        let kind = statements
            .iter()
            .map(|facts| facts.kind.names().pop().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(";");
        let mut judged = Judged {
            decision,
            kind: kind.into(),
            tables: Arc::new([]),
            runs_early: RunsEarly::of(statements),
            changes_code: statements.iter().any(StatementFacts::may_change_code),
            calls: Calls::of(statements),
        };
        judged.add_tables(statements);
        judged
    }

    /// Adds the tables `statements` read or write that the record does not
    /// name yet.
    fn add_tables(&mut self, statements: &[StatementFacts]) {
        if statements.is_empty() {
            return;
        }
        let mut tables = self.tables.to_vec();
        for table in statements.iter().flat_map(|facts| &facts.tables) {
            let table = table.to_string();
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        self.tables = tables.into();
    }

    /// A refusal of something that is no statement of its own (a Bind).
    fn refused(decision: Decision) -> Judged {
        Judged {
            decision,
            kind: "bind".into(),
            tables: Arc::new([]),
            runs_early: RunsEarly::Never,
            changes_code: false,
            calls: None,
        }
    }

    fn into_info(self, sql: &[u8], strings: StringLiterals) -> StatementInfo {
        StatementInfo {
            strings,
            sql: Bytes::copy_from_slice(sql),
            kind: self.kind,
            tables: self.tables,
            decision: self.decision,
            runs_early: self.runs_early,
            changes_code: self.changes_code,
            calls: self.calls,
            describe_portal: None,
            bind: None,
        }
    }
}

/// The more restrictive of two decisions (the first of equals).
fn worse(a: Decision, b: Decision) -> Decision {
    fn rank(d: &Decision) -> u8 {
        match d {
            Decision::Allow => 0,
            Decision::Review { .. } => 1,
            Decision::Block { .. } => 2,
        }
    }
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

/// The inspector's two directions and the reviewer's replacement check.
impl Inspector {
    /// Judges a client message and records in `state` what it makes of
    /// the session (in the client's order: the relay may still hold it
    /// back); returns what to do with it and the records it is about.
    pub(crate) fn client_frame(
        &mut self,
        message: &Frontend<'_>,
        frame: &Frame,
        state: &mut ConnectionState,
    ) -> (ClientVerdict, About) {
        // A grant for a text is for it read as the server reads it now.
        let strings = state.reading.strings;
        let statement = |judged: Judged, sql: &[u8]| {
            (
                ClientVerdict::Statement(Box::new(judged.into_info(sql, strings))),
                About::Nothing,
            )
        };
        match message {
            // Judged and recorded as the server reads the text (in its
            // client encoding); a refused text is recorded as sent.
            Frontend::Query { sql } => {
                // A simple Query drops the unnamed statement and portal
                // (as the server does).
                state.query();
                let text = state.read_text(sql);
                let judged = self.decide_sql(text.as_deref(), state, true, Binds::None);
                statement(judged, text.as_deref().map_or(sql, str::as_bytes))
            }
            Frontend::Parse(parse) => {
                let text = state.read_text(parse.sql);
                let judged = self.decide_sql(text.as_deref(), state, false, Binds::Later);
                // Blocked statements are refused when prepared; reviewed
                // ones are held when executed, with their parameters.
                let text = match text {
                    Ok(text) if !matches!(judged.decision, Decision::Block { .. }) => text,
                    Ok(text) => return statement(judged, text.as_bytes()),
                    Err(_) => return statement(judged, parse.sql),
                };
                let needs_review = matches!(judged.decision, Decision::Review { .. });
                // Kept as read: later reads of it (an Execute, an EXECUTE
                // in SQL) are of the statement the server holds, whatever
                // the encoding by then.
                let id = state.prepare(
                    parse.name,
                    Prepared::Parse {
                        sql: Bytes::copy_from_slice(text.as_bytes()),
                        strings: state.reading.strings,
                        needs_review,
                    },
                );
                let verdict = if needs_review {
                    ClientVerdict::Defer
                } else {
                    ClientVerdict::Forward
                };
                (verdict, About::Statement(id))
            }
            Frontend::Bind(bind) => {
                // Every way of preparing a statement passes the gateway: a
                // name it does not know is one the server does not hold
                // either (or holds unseen, prepared inside a function).
                let Some((id, prepared)) = state.statement(bind.statement) else {
                    let name = String::from_utf8_lossy(bind.statement);
                    return statement(
                        Judged::refused(self.decide_executed(&name, None)),
                        format!("-- Bind of statement \"{name}\"").as_bytes(),
                    );
                };
                let needs_review = matches!(
                    prepared.prepared,
                    Prepared::Parse {
                        needs_review: true,
                        ..
                    }
                );
                let portal = state.bind(
                    bind.portal,
                    id,
                    Bytes::copy_from_slice(frame.body()),
                    bind.result_formats().collect(),
                );
                let verdict = if needs_review {
                    ClientVerdict::Defer
                } else {
                    ClientVerdict::Forward
                };
                (verdict, About::Portal(portal))
            }
            Frontend::Describe {
                target: Some(target),
                name,
            } => (ClientVerdict::Forward, state.describe(*target, name)),
            Frontend::Execute { portal, .. } => {
                let (info, about) = self.execute(portal, state);
                (ClientVerdict::Statement(Box::new(info)), about)
            }
            Frontend::Close {
                target: Some(target),
                name,
            } => (ClientVerdict::Forward, state.close(*target, name)),
            Frontend::FunctionCall { .. } => {
                state.function_call();
                // Refused by the shipped rule `function-call-protocol`
                // unless the operator switched it off (and no rule about
                // functions applies: any of them matches a FunctionCall).
                let facts = StatementFacts {
                    kind: Kind::FunctionCall,
                    ..StatementFacts::default()
                };
                let decision = decide(&facts, &self.identity, &self.context, &self.rules);
                statement(
                    Judged::of(decision, std::slice::from_ref(&facts)),
                    b"-- fast-path FunctionCall",
                )
            }
            _ => (ClientVerdict::Forward, About::Nothing),
        }
    }

    /// A reviewer's replacement statement, about to run instead of the
    /// held request (`function_call`: a fast-path call): `Err` is the refusal when
    /// the rules block it, or when nothing can stand in for the request.
    pub(crate) fn check_replacement(
        &mut self,
        function_call: bool,
        sql: &str,
        state: &mut ConnectionState,
    ) -> Result<(), Refusal> {
        // A FunctionCall's client waits for a FunctionCallResponse, which
        // no statement produces.
        let decision = if function_call {
            Decision::block(
                "function-call-protocol",
                "a fast-path function call cannot be replaced by a statement; \
                 approve or deny it",
            )
        } else if let Some(refused) = replacement_changes_names(&self.cache.classify(sql)) {
            refused
        } else {
            // Run with the held portal's parameters, and not judged again:
            // a setting named by one is refused.
            // Sent as written, so read as the server will read it.
            let text = state.read_text(sql.as_bytes());
            self.decide_sql(text.as_deref(), state, false, Binds::None)
                .decision
        };
        // A replacement that would itself need review is allowed: the
        // reviewer who wrote it approved it. A blocked one never runs.
        match decision {
            Decision::Block { message, .. } => Err(Refusal::new(
                hoop_policy::SQLSTATE_INSUFFICIENT_PRIVILEGE,
                format!("the reviewer's replacement statement is refused: {message}"),
            )),
            Decision::Allow | Decision::Review { .. } => Ok(()),
        }
    }

    pub(crate) fn server_frame(
        &mut self,
        state: &mut ConnectionState,
        message: &Backend<'_>,
        frame: &Frame,
    ) -> ServerVerdict {
        if self.suppressing {
            return match message {
                Backend::ReadyForQuery { .. } => {
                    self.suppressing = false;
                    ServerVerdict::Forward
                }
                Backend::NoticeResponse(_) | Backend::NotificationResponse(_) => {
                    self.mask_report(message)
                }
                _ => ServerVerdict::Drop,
            };
        }
        match message {
            Backend::DataRow(body) => {
                let shape = match self.current_shape(state) {
                    Ok(Some(shape)) => shape,
                    Ok(None) => {
                        return self
                            .fail(&"a row arrived whose description the gateway does not know")
                    }
                    Err(problem) => return self.fail(&problem),
                };
                let masked = mask_data_row(shape, body);
                self.masked_value(put_data_row, masked)
            }
            Backend::CopyData(data) => self.mask_copy(data),
            Backend::FunctionCallResponse(body) => {
                let binary = !matches!(
                    state.front(),
                    Some(Pending::FunctionCall { binary: false, .. })
                );
                let masked = hoop_policy::mask_function_result(&self.columns, body, binary);
                self.masked_value(put_function_call_response, masked)
            }
            Backend::CopyOutResponse { binary } | Backend::CopyBothResponse { binary } => {
                self.copy = Some(CopyMasker::new(&self.columns, *binary));
                ServerVerdict::Forward
            }
            Backend::CopyDone => match self.finish_copy(frame) {
                Some(out) => ServerVerdict::Replace(out),
                None => ServerVerdict::Forward,
            },
            Backend::ErrorResponse(_)
            | Backend::NoticeResponse(_)
            | Backend::NotificationResponse(_) => {
                let held = if matches!(message, Backend::ErrorResponse(_)) {
                    self.copy.take().map(|mut c| c.finish()).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let verdict = self.mask_report(message);
                if held.is_empty() {
                    return verdict;
                }
                let mut out = BytesMut::new();
                for chunk in held {
                    put_copy_data(&mut out, &chunk);
                }
                match verdict {
                    ServerVerdict::Forward => out.extend_from_slice(frame.as_bytes()),
                    ServerVerdict::Replace(bytes) => out.extend_from_slice(&bytes),
                    ServerVerdict::Drop => {}
                }
                ServerVerdict::Replace(out)
            }
            Backend::ReadyForQuery { .. } => {
                self.copy = None;
                ServerVerdict::Forward
            }
            _ => ServerVerdict::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use hoop_common::mask::{Masker, Strategy};

    fn columns() -> ColumnPolicy {
        let content = Masker::new(Strategy::PanLast4, None).expect("pan_last4 needs no key");
        ColumnPolicy::new(&[], &[], content, None).expect("no columns")
    }

    /// A RowDescription body: one text column per name, of type `text`.
    fn description(names: &[&str]) -> Bytes {
        let mut body = BytesMut::new();
        body.put_i16(names.len() as i16);
        for name in names {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_u32(0); // table
            body.put_i16(0); // column
            body.put_u32(25); // text
            body.put_i16(-1);
            body.put_i32(-1);
            body.put_i16(0); // text format
        }
        body.freeze()
    }

    #[test]
    fn a_description_seen_before_gives_back_the_shape_made_of_it() {
        let columns = columns();
        let mut shapes = Shapes::default();
        let one = description(&["a"]);
        let made = shapes.shape(&one, None, &columns).expect("readable");
        let again = shapes
            .shape(&one.clone(), None, &columns)
            .expect("readable");
        assert!(Arc::ptr_eq(&made, &again));
        // Another portal's formats make another shape of the same description.
        let text = shapes.shape(&one, Some(&[]), &columns).expect("readable");
        let binary = shapes.shape(&one, Some(&[1]), &columns).expect("readable");
        assert!(!Arc::ptr_eq(&made, &text) && !Arc::ptr_eq(&text, &binary));
        assert!(Arc::ptr_eq(
            &binary,
            &shapes.shape(&one, Some(&[1]), &columns).expect("readable")
        ));
        let two = description(&["a", "b"]);
        assert_eq!(
            shapes.shape(&two, None, &columns).expect("readable").len(),
            2
        );
    }

    #[test]
    fn the_oldest_shape_makes_room_and_a_bad_description_is_not_kept() {
        let columns = columns();
        let mut shapes = Shapes::default();
        let first = description(&["c0"]);
        let made = shapes.shape(&first, None, &columns).expect("readable");
        for i in 1..=Shapes::KEPT {
            let name = format!("c{i}");
            shapes
                .shape(&description(&[&name]), None, &columns)
                .expect("readable");
        }
        assert_eq!(shapes.made.len(), Shapes::KEPT);
        let remade = shapes.shape(&first, None, &columns).expect("readable");
        assert!(!Arc::ptr_eq(&made, &remade), "made again once pushed out");
        // Two format codes for one column: refused each time, never kept.
        for _ in 0..2 {
            assert!(shapes.shape(&first, Some(&[0, 0]), &columns).is_err());
        }
        assert!(shapes
            .made
            .iter()
            .all(|m| m.formats.as_deref() != Some(&[0, 0][..])));
    }
}
