//! The policy inspector: statement rules on the way in, card-number masking
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

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use hoop_policy::{
    decide, mask_data_row, mask_error_or_notice, mask_notification, Classified, ClassifyCache,
    ColumnPolicy, CopyMasker, Decision, Identity, Kind, MaskFailure, PolicyContext, RowShape,
    RuleSet, StatementFacts,
};

use super::gate::StatementInfo;
use super::state::{ConnectionState, Pending, PortalDescription};
use super::verdict::{ClientVerdict, ServerVerdict};
use crate::protocol::{put_error, take_cstr, take_i16, take_i32, Frame, Severity};

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

pub struct PolicyInspector {
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
    /// SQL `PREPARE name AS …`: the PREPARE's facts (they include the
    /// prepared statement), so `EXECUTE name` is judged on what it runs.
    sql_prepared: HashMap<String, Arc<StatementFacts>>,

    // Client side, in the order the client sends (the relay may still hold
    // a Parse or Bind back, so this is not read from the connection state).
    /// Statement name → the statement the client last prepared under it.
    prepared: HashMap<Vec<u8>, Prepared>,
    /// Portal name → what the client bound under it.
    bound: HashMap<Vec<u8>, Bound>,
    /// Numbers the Parses, so a portal knows which statement of a name it
    /// was bound to.
    parses: u64,
    /// Counts the statements the client asked to run (Query, Execute,
    /// FunctionCall). SQL and the protocol share one namespace of portals:
    /// any statement may close a portal and declare a cursor of the same
    /// name (`CLOSE p; DECLARE p CURSOR …`, or a function doing so), so
    /// what the gateway knows of a portal's rows holds only until another
    /// statement runs.
    runs: u64,

    // Server side, in the order the server answers (the statements and
    // portals the server holds, and their shapes, are `ConnectionState`'s).
    copy: Option<CopyMasker>,
    /// A result could not be masked: its error has been sent, everything
    /// else up to ReadyForQuery is dropped.
    suppressing: bool,
}

/// A statement the client prepared with Parse.
struct Prepared {
    /// Which Parse made it (see [`Bound::statement`]).
    parse: u64,
    /// Its text, as the client sent it.
    sql: Bytes,
    /// A rule sends it to review: its Parse and Binds are held back with
    /// the Execute, so nothing of them reaches the server (no transaction,
    /// no locks) until the review is decided.
    needs_review: bool,
    /// The client asked the server to describe it: its row description
    /// arrives before the rows of any later Execute of a portal bound to it.
    described: bool,
}

/// A portal the client bound.
struct Bound {
    /// The statement it was bound to and the Parse that made it:
    /// PostgreSQL runs the portal's own copy of the statement, whatever
    /// the name means by the time it is executed (the unnamed statement is
    /// replaced by every Parse of it).
    statement: (Vec<u8>, u64),
    /// That statement's text (`None`: no statement of that name was
    /// prepared with Parse).
    sql: Option<Bytes>,
    /// The Bind body (parameters for the record, formats for a reviewer's
    /// replacement).
    bind: Bytes,
    /// Its row description arrives before its rows: the client or the
    /// gateway asked for it.
    described: bool,
    /// [`PolicyInspector::runs`] when the above was last true: once
    /// another statement ran, the name may be a different portal.
    known_at: u64,
}

impl PolicyInspector {
    pub fn new(identity: Identity, rules: Arc<RuleSet>, columns: ColumnPolicy) -> PolicyInspector {
        // Statements of one shape share a classification unless their
        // literals bound a column some predicate rule reads.
        let cache =
            ClassifyCache::new(CACHE_CAPACITY).with_predicate_columns(rules.predicate_columns());
        let context = PolicyContext {
            protected_tables: columns.protected_tables().clone(),
        };
        PolicyInspector {
            identity,
            context,
            rules,
            columns,
            cache,
            verdicts: HashMap::new(),
            sql_prepared: HashMap::new(),
            prepared: HashMap::new(),
            bound: HashMap::new(),
            parses: 0,
            runs: 0,
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
    ) -> Result<PolicyInspector, hoop_policy::MaskFailure> {
        let columns = ColumnPolicy::new(
            masked.unwrap_or_default(),
            unmask,
            policy.content_masker.clone(),
            policy.token_key.as_deref(),
        )?;
        Ok(PolicyInspector::new(
            identity,
            Arc::clone(&policy.rules),
            columns,
        ))
    }

    /// Decides a query string (a simple Query, or the text of a Parse).
    fn decide_sql(&mut self, sql: &[u8]) -> Judged {
        let Ok(sql) = std::str::from_utf8(sql) else {
            return Judged {
                decision: Decision::block(
                    hoop_policy::UNPARSED_RULE,
                    format!(
                        "statement not understood by the gateway (it is not valid UTF-8; \
                         use client_encoding UTF8); gateway rule \"{}\"",
                        hoop_policy::UNPARSED_RULE
                    ),
                ),
                kind: "unparsed".to_owned(),
                tables: Vec::new(),
                read_only: false,
            };
        };
        let classified = self.cache.classify(sql);
        if let Some((_, judged)) = self.verdicts.get(&(Arc::as_ptr(&classified) as usize)) {
            return judged.clone();
        }
        let mut worst = Decision::Allow;
        // PREPAREs become visible to later EXECUTEs of the same string, but
        // are remembered only if the whole string may run.
        let mut prepared_here: Vec<(String, Arc<StatementFacts>)> = Vec::new();
        // PREPAREs (`Some` facts) and DEALLOCATEs (`None`; no name: ALL),
        // in the order the string has them.
        let mut changes: Vec<(Option<String>, Option<Arc<StatementFacts>>)> = Vec::new();
        // Cursors declared: a portal of the protocol by that name is gone.
        let mut declared: Vec<String> = Vec::new();
        for facts in &classified.statements {
            let mut decision = decide(facts, &self.identity, &self.context, &self.rules);
            // `EXECUTE name`, also inside `EXPLAIN ANALYZE EXECUTE name` and
            // `CREATE TABLE t AS EXECUTE name`: judged on what it runs.
            for name in facts.levels().flat_map(|level| &level.executes) {
                let executed = self.executed_facts(&prepared_here, name);
                decision = worse(decision, self.decide_executed(name, executed));
            }
            match &facts.kind {
                Kind::Prepare { name } => {
                    let facts = Arc::new(facts.clone());
                    prepared_here.push((name.clone(), Arc::clone(&facts)));
                    changes.push((Some(name.clone()), Some(facts)));
                }
                Kind::Deallocate { name } => changes.push((name.clone(), None)),
                Kind::DeclareCursor { name, .. } => declared.push(name.clone()),
                _ => {}
            }
            worst = worse(worst, decision);
        }
        if worst == Decision::Allow {
            for name in declared {
                self.bound.remove(name.as_bytes());
            }
            // SQL and the protocol share one namespace of prepared
            // statements: a name prepared in SQL is no longer a Parse's.
            for change in changes {
                match change {
                    (Some(name), Some(facts)) => {
                        self.prepared.remove(name.as_bytes());
                        self.sql_prepared.insert(name, facts);
                    }
                    (Some(name), None) => {
                        self.prepared.remove(name.as_bytes());
                        self.sql_prepared.remove(&name);
                    }
                    (None, _) => {
                        self.prepared.clear();
                        self.sql_prepared.clear();
                    }
                }
            }
        }
        let judged = Judged::of(worst, &classified.statements);
        self.remember(&classified, &judged);
        judged
    }

    /// Keeps a verdict that depends on nothing but `classified` (see
    /// [`PolicyInspector::verdicts`]).
    fn remember(&mut self, classified: &Arc<Classified>, judged: &Judged) {
        let session_dependent = classified.statements.iter().any(|facts| {
            facts.levels().any(|level| {
                !level.executes.is_empty()
                    || matches!(level.kind, Kind::Prepare { .. } | Kind::Deallocate { .. })
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

    /// What `EXECUTE name` runs: a statement prepared in SQL (earlier in
    /// this string, or before), or one prepared with Parse.
    fn executed_facts(
        &mut self,
        prepared_here: &[(String, Arc<StatementFacts>)],
        name: &str,
    ) -> Option<Vec<StatementFacts>> {
        if let Some((_, facts)) = prepared_here.iter().rev().find(|(n, _)| n == name) {
            return Some(vec![facts.as_ref().clone()]);
        }
        if let Some(facts) = self.sql_prepared.get(name) {
            return Some(vec![facts.as_ref().clone()]);
        }
        let query = &self.prepared.get(name.as_bytes())?.sql;
        let sql = std::str::from_utf8(query).ok()?;
        Some(self.cache.classify(sql).statements.clone())
    }

    fn decide_executed(&self, name: &str, executed: Option<Vec<StatementFacts>>) -> Decision {
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
    /// hold it for review), with the portal's parameters for the record.
    fn execute(&mut self, portal: &[u8]) -> StatementInfo {
        let bound = self.bound.get(portal);
        let bind = bound.map(|b| b.bind.clone());
        // A portal bound to a statement prepared in SQL (`PREPARE name AS
        // …`, judged then): judged again on what it runs, as `EXECUTE name`.
        let prepared_in_sql = bound
            .filter(|b| b.sql.is_none())
            .and_then(|b| std::str::from_utf8(&b.statement.0).ok())
            .and_then(|name| Some((name.to_owned(), self.sql_prepared.get(name)?.clone())));
        let sql = bound.and_then(|b| b.sql.clone());
        // Its shape is known by its rows if the portal was described, or the
        // very statement it was bound to (not a later one of the same name).
        // Nothing else ran since (see `runs`).
        let described = bound.is_some_and(|b| {
            b.known_at == self.runs
                && (b.described
                    || self
                        .prepared
                        .get(&b.statement.0)
                        .is_some_and(|p| p.parse == b.statement.1 && p.described))
        });
        // This Execute runs; the portal it runs is still this one after,
        // described now (by the client's Describe or the gateway's).
        self.runs += 1;
        if let Some(bound) = self.bound.get_mut(portal) {
            bound.known_at = self.runs;
            bound.described = true;
        }
        let (sql, judged) = match (sql, prepared_in_sql) {
            (Some(sql), _) => {
                let text = String::from_utf8_lossy(&sql).into_owned();
                let classified = self.cache.classify(&text);
                let judged = match self.verdicts.get(&(Arc::as_ptr(&classified) as usize)) {
                    Some((_, judged)) => judged.clone(),
                    None => {
                        let decision =
                            classified
                                .statements
                                .iter()
                                .fold(Decision::Allow, |worst, facts| {
                                    worse(
                                        worst,
                                        decide(facts, &self.identity, &self.context, &self.rules),
                                    )
                                });
                        let judged = Judged::of(decision, &classified.statements);
                        self.remember(&classified, &judged);
                        judged
                    }
                };
                (text, judged)
            }
            (None, Some((name, facts))) => {
                let decision = self.decide_executed(&name, Some(vec![facts.as_ref().clone()]));
                // Its kind and tables are the prepared statement's.
                let runs = facts.inner.as_deref().unwrap_or(facts.as_ref());
                (
                    format!("-- Execute of statement \"{name}\" (prepared in SQL)"),
                    Judged::of(decision, std::slice::from_ref(runs)),
                )
            }
            // A cursor declared in SQL (judged then), fetched by portal name.
            (None, None) => (
                format!(
                    "-- Execute of portal \"{}\"",
                    String::from_utf8_lossy(portal)
                ),
                Judged {
                    decision: Decision::Allow,
                    kind: "fetch".to_owned(),
                    tables: Vec::new(),
                    read_only: false,
                },
            ),
        };
        let describe_portal = (!described).then(|| portal.to_vec());
        StatementInfo {
            params: bind.as_deref().map(bind_params).unwrap_or_default(),
            sql,
            kind: judged.kind,
            tables: judged.tables,
            decision: judged.decision,
            read_only: judged.read_only,
            describe_portal,
            bind,
        }
    }

    /// A NoticeResponse of the upstream login, masked like any other.
    pub(crate) fn mask_notice(&mut self, frame: &Frame) -> ServerVerdict {
        self.mask_error(frame)
    }

    fn forget_statement(&mut self, name: &[u8]) {
        self.prepared.remove(name);
    }

    fn forget_portal(&mut self, name: &[u8]) {
        self.bound.remove(name);
    }

    /// The verdict on a frame carrying values (DataRow, FunctionCallResponse)
    /// once masked: as it came, its masked body under the same tag, or the
    /// request ended with an error when it could not be masked.
    fn masked_value(
        &mut self,
        tag: u8,
        masked: Result<Option<Vec<u8>>, MaskFailure>,
    ) -> ServerVerdict {
        match masked {
            Ok(None) => ServerVerdict::Forward,
            Ok(Some(body)) => {
                let mut out = BytesMut::new();
                put_frame(&mut out, tag, &body);
                ServerVerdict::Replace(out)
            }
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
        &self,
        state: &'s mut ConnectionState,
    ) -> Result<Option<&'s RowShape>, MaskFailure> {
        if let Some(Pending::Query(_)) = state.front() {
            if state.simple_shape.is_none() {
                if let Some(raw) = &state.simple_row_description {
                    state.simple_shape = Some(RowShape::from_row_description(raw, &self.columns)?);
                }
            }
            return Ok(state.simple_shape.as_ref());
        }
        let columns = &self.columns;
        state.execute_shape(|description, formats| match description {
            PortalDescription::Own(raw) => raw
                .map(|raw| RowShape::from_row_description(raw, columns))
                .transpose(),
            PortalDescription::Statement(raw) => raw
                .map(|raw| {
                    RowShape::from_row_description(raw, columns)?.with_result_formats(formats)
                })
                .transpose(),
        })
    }

    fn mask_copy(&mut self, frame: &Frame) -> ServerVerdict {
        let copy = self
            .copy
            .get_or_insert_with(|| CopyMasker::new(&self.columns, false));
        let chunks = copy.mask_copy_data(frame.body());
        if chunks.len() == 1 && matches!(chunks[0], std::borrow::Cow::Borrowed(_)) {
            return ServerVerdict::Forward;
        }
        let mut out = BytesMut::new();
        for chunk in chunks {
            put_frame(&mut out, b'd', &chunk);
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
            put_frame(&mut out, b'd', &chunk);
        }
        out.extend_from_slice(frame.as_bytes());
        Some(out)
    }

    fn mask_error(&mut self, frame: &Frame) -> ServerVerdict {
        let masker = self.columns.content_masker();
        let masked = match frame.tag() {
            b'A' => mask_notification(masker, frame.body()),
            _ => mask_error_or_notice(masker, frame.body()),
        };
        match masked {
            Ok(None) => ServerVerdict::Forward,
            Ok(Some(body)) => {
                let mut out = BytesMut::new();
                put_frame(&mut out, frame.tag(), &body);
                ServerVerdict::Replace(out)
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed message from the database was not forwarded");
                if frame.tag() == b'E' {
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

/// A decision with what the record says about the statement.
#[derive(Clone)]
struct Judged {
    decision: Decision,
    /// Most specific kind of each statement, `;`-separated.
    kind: String,
    /// Every table named, `schema.table`, first appearance first.
    tables: Vec<String>,
    /// Every statement is a plain read (see [`StatementInfo::read_only`]).
    read_only: bool,
}

impl Judged {
    fn of(decision: Decision, statements: &[StatementFacts]) -> Judged {
        let kind = statements
            .iter()
            .map(|facts| facts.kind.names().pop().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(";");
        let mut tables: Vec<String> = Vec::new();
        for table in statements.iter().flat_map(|facts| &facts.tables) {
            let table = table.to_string();
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        Judged {
            decision,
            kind,
            tables,
            read_only: !statements.is_empty() && statements.iter().all(|facts| facts.read_only),
        }
    }

    fn into_info(self, sql: &[u8]) -> StatementInfo {
        StatementInfo {
            sql: String::from_utf8_lossy(sql).into_owned(),
            params: Vec::new(),
            kind: self.kind,
            tables: self.tables,
            decision: self.decision,
            read_only: self.read_only,
            describe_portal: None,
            bind: None,
        }
    }
}

/// Bind parameters for the record: text ones as text, binary ones only
/// described (their type is not known here, and decoding guesses could
/// print a card number stored as a number).
fn bind_params(body: &[u8]) -> Vec<Option<String>> {
    let parse = || -> Option<Vec<Option<String>>> {
        let (_, rest) = take_cstr(body)?;
        let (_, rest) = take_cstr(rest)?;
        let (n_formats, mut rest) = take_i16(rest)?;
        let mut formats = Vec::with_capacity(n_formats.max(0) as usize);
        for _ in 0..n_formats.max(0) {
            let (format, tail) = take_i16(rest)?;
            formats.push(format);
            rest = tail;
        }
        let (n_params, mut rest) = take_i16(rest)?;
        let mut params = Vec::with_capacity(n_params.max(0) as usize);
        for index in 0..n_params.max(0) as usize {
            let (len, tail) = take_i32(rest)?;
            if len < 0 {
                params.push(None);
                rest = tail;
                continue;
            }
            let value = tail.get(..len as usize)?;
            rest = &tail[len as usize..];
            let format = match formats.len() {
                0 => 0,
                1 => formats[0],
                _ => *formats.get(index)?,
            };
            params.push(Some(if format == 0 {
                String::from_utf8_lossy(value).into_owned()
            } else {
                format!("<binary, {} bytes>", value.len())
            }));
        }
        Some(params)
    };
    parse().unwrap_or_else(|| vec![Some("<malformed Bind>".to_owned())])
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

fn put_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 5);
    out.put_u8(tag);
    out.put_u32((body.len() + 4) as u32);
    out.extend_from_slice(body);
}

fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    take_cstr(body).unwrap_or((b"", b""))
}

/// The inspector's two directions and the reviewer's replacement check.
impl PolicyInspector {
    /// The text of a statement the client prepared (protocol Parse).
    pub(crate) fn prepared_sql(&self, name: &[u8]) -> Option<&[u8]> {
        self.prepared.get(name).map(|p| &p.sql[..])
    }

    pub(crate) fn client_frame(&mut self, frame: &Frame) -> ClientVerdict {
        let body = frame.body();
        match frame.tag() {
            b'Q' => {
                // A simple Query drops the unnamed statement and portal
                // (as `ConnectionState` does, and the server).
                self.forget_statement(b"");
                self.forget_portal(b"");
                self.runs += 1;
                let (sql, _) = cstr(body);
                let judged = self.decide_sql(sql);
                return ClientVerdict::Statement(Box::new(judged.into_info(sql)));
            }
            b'P' => {
                let (name, rest) = cstr(body);
                let (sql, _) = cstr(rest);
                let judged = self.decide_sql(sql);
                // Blocked statements are refused when prepared; reviewed
                // ones are held when executed, with their parameters.
                if matches!(judged.decision, Decision::Block { .. }) {
                    return ClientVerdict::Statement(Box::new(judged.into_info(sql)));
                }
                self.parses += 1;
                let needs_review = matches!(judged.decision, Decision::Review { .. });
                self.prepared.insert(
                    name.to_vec(),
                    Prepared {
                        parse: self.parses,
                        sql: Bytes::copy_from_slice(sql),
                        needs_review,
                        described: false,
                    },
                );
                if needs_review {
                    return ClientVerdict::Defer;
                }
            }
            b'B' => {
                let (portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                let prepared = self.prepared.get(statement);
                let needs_review = prepared.is_some_and(|p| p.needs_review);
                self.bound.insert(
                    portal.to_vec(),
                    Bound {
                        statement: (statement.to_vec(), prepared.map_or(0, |p| p.parse)),
                        sql: prepared.map(|p| p.sql.clone()),
                        bind: Bytes::copy_from_slice(body),
                        described: false,
                        known_at: self.runs,
                    },
                );
                if needs_review {
                    return ClientVerdict::Defer;
                }
            }
            b'D' => {
                if let Some((&kind, rest)) = body.split_first() {
                    let (name, _) = cstr(rest);
                    if kind == b'S' {
                        if let Some(prepared) = self.prepared.get_mut(name) {
                            prepared.described = true;
                        }
                    } else if let Some(bound) = self.bound.get_mut(name) {
                        bound.described = true;
                        bound.known_at = self.runs;
                    }
                }
            }
            b'E' => {
                let (portal, _) = cstr(body);
                return ClientVerdict::Statement(Box::new(self.execute(portal)));
            }
            b'C' => {
                if let Some((&kind, rest)) = body.split_first() {
                    let (name, _) = cstr(rest);
                    if kind == b'S' {
                        self.forget_statement(name);
                    } else {
                        self.forget_portal(name);
                    }
                }
            }
            b'F' => {
                self.runs += 1;
                // Refused by the shipped rule `function-call-protocol`
                // unless the operator switched it off (and no rule about
                // functions applies: any of them matches a FunctionCall).
                let facts = StatementFacts {
                    kind: Kind::FunctionCall,
                    ..StatementFacts::default()
                };
                let decision = decide(&facts, &self.identity, &self.context, &self.rules);
                let judged = Judged::of(decision, std::slice::from_ref(&facts));
                return ClientVerdict::Statement(Box::new(
                    judged.into_info(b"-- fast-path FunctionCall"),
                ));
            }
            _ => {}
        }
        ClientVerdict::Forward
    }

    /// A reviewer's replacement statement, about to run instead of the
    /// held request (`tag`: its message type): `Err` is the refusal when
    /// the rules block it, or when nothing can stand in for the request.
    pub(crate) fn check_replacement(&mut self, tag: u8, sql: &str) -> Result<(), BytesMut> {
        // A FunctionCall's client waits for a FunctionCallResponse, which
        // no statement produces.
        let decision = if tag == b'F' {
            Decision::block(
                "function-call-protocol",
                "a fast-path function call cannot be replaced by a statement; \
                 approve or deny it",
            )
        } else {
            self.decide_sql(sql.as_bytes()).decision
        };
        // A replacement that would itself need review is allowed: the
        // reviewer who wrote it approved it. A blocked one never runs.
        match decision {
            Decision::Block { message, .. } => {
                let mut out = BytesMut::new();
                put_error(
                    &mut out,
                    Severity::Error,
                    hoop_policy::SQLSTATE_INSUFFICIENT_PRIVILEGE,
                    &format!("the reviewer's replacement statement is refused: {message}"),
                );
                Err(out)
            }
            Decision::Allow | Decision::Review { .. } => Ok(()),
        }
    }

    pub(crate) fn server_frame(
        &mut self,
        state: &mut ConnectionState,
        frame: &Frame,
    ) -> ServerVerdict {
        if self.suppressing {
            return match frame.tag() {
                b'Z' => {
                    self.suppressing = false;
                    ServerVerdict::Forward
                }
                b'N' | b'A' => self.mask_error(frame),
                _ => ServerVerdict::Drop,
            };
        }
        match frame.tag() {
            b'D' => {
                let shape = match self.current_shape(state) {
                    Ok(Some(shape)) => shape,
                    Ok(None) => {
                        return self
                            .fail(&"a row arrived whose description the gateway does not know")
                    }
                    Err(problem) => return self.fail(&problem),
                };
                let masked = mask_data_row(shape, frame.body());
                self.masked_value(frame.tag(), masked)
            }
            b'd' => self.mask_copy(frame),
            b'V' => {
                let binary = !matches!(
                    state.front(),
                    Some(Pending::FunctionCall { binary: false, .. })
                );
                let masked = hoop_policy::mask_function_result(&self.columns, frame.body(), binary);
                self.masked_value(frame.tag(), masked)
            }
            b'H' | b'W' => {
                let binary = frame.body().first() == Some(&1);
                self.copy = Some(CopyMasker::new(&self.columns, binary));
                ServerVerdict::Forward
            }
            b'c' => match self.finish_copy(frame) {
                Some(out) => ServerVerdict::Replace(out),
                None => ServerVerdict::Forward,
            },
            b'E' | b'N' | b'A' => {
                let held = if frame.tag() == b'E' {
                    self.copy.take().map(|mut c| c.finish()).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let verdict = self.mask_error(frame);
                if held.is_empty() {
                    return verdict;
                }
                let mut out = BytesMut::new();
                for chunk in held {
                    put_frame(&mut out, b'd', &chunk);
                }
                match verdict {
                    ServerVerdict::Forward => out.extend_from_slice(frame.as_bytes()),
                    ServerVerdict::Replace(bytes) => out.extend_from_slice(&bytes),
                    _ => {}
                }
                ServerVerdict::Replace(out)
            }
            b'Z' => {
                self.copy = None;
                ServerVerdict::Forward
            }
            _ => ServerVerdict::Forward,
        }
    }
}
