//! The statement gate: what must happen, asynchronously, before a statement
//! may reach the server.
//!
//! - Its audit record is written durably (no access without a record); when
//!   the store cannot take it, the statement is refused with SQLSTATE 58000
//!   and an alert is logged.
//! - A statement the rules send to review is held: the review is filed,
//!   the client gets a NoticeResponse naming it, and the statement waits for
//!   the decision (approve → it runs; deny → 42501 naming the reviewer and
//!   the reason; modify → the reviewer's SQL runs instead; expiry → 57014).
//!   A CancelRequest withdraws the review; so does dropping the wait (the
//!   client left), through [`ReviewTicket`]'s drop.
//! - A blocked statement is recorded with its refusal.
//!
//! The relay keeps relaying server messages while a statement is held: the
//! gate hands it owned futures ([`AdmissionFuture`]) to poll in its loop.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hoop_audit::{
    Action, AuditStore, RecordedDecision as AuditDecision, SessionIds, StatementBegin,
    StatementHandle, StatementOutcome, Timestamp,
};
use hoop_common::mask::Masker;
use hoop_policy::Decision;
use hoop_reviews::{ReviewHub, ReviewOutcome, ReviewRequest, ReviewTicket};
use tokio::sync::watch;

use super::refusal::Refusal;
use crate::protocol::frontend::Bind;

/// SQLSTATE when the audit trail cannot take a statement's record.
const SQLSTATE_AUDIT_UNAVAILABLE: &str = "58000";
/// SQLSTATE of a cancelled or expired hold (as for a cancelled statement).
const SQLSTATE_QUERY_CANCELED: &str = "57014";

/// SQLSTATE of a denial or a block.
const SQLSTATE_INSUFFICIENT_PRIVILEGE: &str = "42501";

/// What the inspector knows about a statement the client wants run.
#[derive(Debug)]
pub struct StatementInfo {
    /// The text as the server reads it (UTF-8, but for a text the gateway
    /// could not decode: as sent). Never logged; masked before it is
    /// recorded.
    pub sql: Bytes,
    /// How the server reads its string literals (a review grant is for the
    /// text read so).
    pub strings: hoop_policy::StringLiterals,
    pub kind: Arc<str>,
    pub tables: Arc<[String]>,
    pub decision: Decision,
    /// Whether it may run while its record is written, its results held
    /// back until the record is durable.
    pub runs_early: RunsEarly,
    /// Whether it may create or change code that later statements run
    /// without naming it (see [`super::hidden`]).
    pub changes_code: bool,
    /// The functions it names, if any, with what `runs_early` and
    /// `changes_code` are where they are built-in ones (see
    /// [`StatementInfo::weigh_calls`]).
    pub calls: Option<Arc<Calls>>,
    /// Execute only: ask the server to describe this portal (its name and
    /// record in the session state) before running it (the masker needs
    /// the row shape).
    pub describe_portal: Option<(Vec<u8>, u64)>,
    /// Execute only: the Bind body of the portal, so a reviewer's
    /// replacement runs with the same parameters and result formats, and
    /// the record has them (see [`StatementInfo::params`]).
    pub bind: Option<Bytes>,
}

/// When a statement may run while its record is being written, its
/// results held back until the record is durable (see
/// [`hoop_policy::Lasting`]): if the record cannot be written, the session
/// ends and the server rolls back what the statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunsEarly {
    /// Never: it is recorded before it is sent.
    #[default]
    Never,
    /// Always: nothing of it outlasts its transaction unless that commits,
    /// in a transaction block or not (a plain read, `BEGIN`).
    Always,
    /// Inside a transaction block, where its changes wait for a `COMMIT`,
    /// which is recorded before it is sent (a plain `UPDATE`).
    InBlock,
}

impl RunsEarly {
    /// For one query string's statements.
    pub fn of(statements: &[hoop_policy::StatementFacts]) -> RunsEarly {
        RunsEarly::of_lasting(statements.iter().map(|facts| facts.lasting).collect())
    }

    /// For one query string's statements, whose calls are all of built-in
    /// functions that are not volatile and run no SQL of their own.
    fn of_stable_builtin_calls(statements: &[hoop_policy::StatementFacts]) -> RunsEarly {
        RunsEarly::of_lasting(
            statements
                .iter()
                .map(|facts| facts.lasting_if_calls_are_stable_builtins)
                .collect(),
        )
    }

    fn of_lasting(lasting: Vec<hoop_policy::Lasting>) -> RunsEarly {
        use hoop_policy::Lasting;
        if lasting.is_empty() {
            RunsEarly::Never
        } else if Lasting::waits_for_commit(&lasting, false) {
            RunsEarly::Always
        } else if Lasting::waits_for_commit(&lasting, true) {
            RunsEarly::InBlock
        } else {
            RunsEarly::Never
        }
    }
}

/// The functions a query string's statements name, and what they change
/// where the database's catalog shows them to be built-in ones (see
/// [`super::hidden::HiddenCode::calls_are_builtins`]).
#[derive(Debug)]
pub struct Calls {
    names: Vec<String>,
    /// [`StatementInfo::runs_early`] where they are also not volatile.
    runs_early: RunsEarly,
    /// [`StatementInfo::changes_code`] where they are.
    changes_code: bool,
}

impl Calls {
    /// For one query string's statements (`None`: they name none).
    pub fn of(statements: &[hoop_policy::StatementFacts]) -> Option<Arc<Calls>> {
        let names: Vec<String> = statements
            .iter()
            .flat_map(|facts| facts.calls())
            .map(str::to_owned)
            .collect();
        (!names.is_empty()).then(|| {
            Arc::new(Calls {
                names,
                runs_early: RunsEarly::of_stable_builtin_calls(statements),
                changes_code: statements
                    .iter()
                    .any(hoop_policy::StatementFacts::may_change_code_if_calls_are_builtins),
            })
        })
    }
}

impl StatementInfo {
    /// The text, as [`StatementInfo::sql`] says.
    pub fn text(&self) -> Cow<'_, str> {
        sql_text(&self.sql)
    }

    /// The Execute's parameters in text form (binary ones described, not
    /// decoded), read in `encoding`; `None` is NULL. Masked before they are
    /// recorded. Made only for the record and for a review: a statement
    /// that is neither forwards without them.
    pub fn params(&self, encoding: &str) -> Vec<Option<String>> {
        self.bind
            .as_deref()
            .map(|body| bind_params(body, encoding))
            .unwrap_or_default()
    }

    /// Weighs the functions the statement names as the session's catalog
    /// reading knows them: calls of built-in functions create no code, and
    /// those of built-in ones that are not volatile change nothing, so the
    /// statement may run early as it would without them. Anything else
    /// keeps the judgement that counts every call as possibly anything.
    pub fn weigh_calls(&mut self, hidden: &super::hidden::HiddenCode) {
        let Some(calls) = &self.calls else {
            return;
        };
        if hidden.calls_are_builtins(&calls.names) {
            self.changes_code = calls.changes_code;
            if hidden.calls_are_stable_builtins(&calls.names) {
                self.runs_early = calls.runs_early;
            }
        }
    }
}

/// What becomes of a statement.
pub enum Admission {
    /// Send it on; complete this record when it ends (`None`: not recorded).
    Forward(Option<StatementHandle>),
    /// Refuse it (already recorded).
    Refuse(Refusal),
    /// Held for review: send the client this notice now, then wait on `then`.
    Hold {
        notice: String,
        then: AdmissionFuture,
    },
    /// A reviewer's replacement runs instead (the relay checks it against
    /// the rules once more).
    Replace {
        sql: String,
        record: Option<StatementHandle>,
    },
}

pub type AdmissionFuture = Pin<Box<dyn Future<Output = Admission> + Send>>;

/// Who the session is, for records and reviews.
#[derive(Debug, Clone)]
pub struct GateSession {
    pub session_id: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub role: String,
    pub client_addr: String,
}

/// One session's gate.
pub struct Gate {
    audit: AuditStore,
    reviews: ReviewHub,
    /// `[audit] record_statements` (on unless turned off for benchmarking).
    record_statements: bool,
    record_rows: usize,
    masker: Masker,
    session: Arc<GateSession>,
    /// The session's id as its records carry it (masked once).
    ids: Arc<SessionIds>,
    /// Statement attempts on this session: 1, 2, 3 …
    sequence: u64,
    /// Counts CancelRequests carrying this session's key.
    cancel: watch::Receiver<u64>,
    /// Outcomes to record, not yet handed to the store (see
    /// [`Gate::complete`]).
    finished: Vec<(StatementHandle, StatementOutcome)>,
}

/// Everything a record needs, owned by the future that writes it.
struct Pending {
    audit: AuditStore,
    session: Arc<GateSession>,
    ids: Arc<SessionIds>,
    sequence: u64,
    received_at: Timestamp,
    sql: String,
    params: Vec<Option<String>>,
    kind: Arc<str>,
    tables: Arc<[String]>,
    record: bool,
    masker: Masker,
}

impl Gate {
    pub fn new(
        audit: AuditStore,
        reviews: ReviewHub,
        record_statements: bool,
        record_rows: usize,
        masker: Masker,
        session: GateSession,
        cancel: watch::Receiver<u64>,
    ) -> Gate {
        let ids = Arc::new(audit.session_ids(&session.session_id));
        Gate {
            audit,
            reviews,
            record_statements,
            record_rows,
            masker,
            session: Arc::new(session),
            ids,
            sequence: 0,
            cancel,
            finished: Vec::new(),
        }
    }

    /// Whether each statement gets its own audit record.
    pub fn records(&self) -> bool {
        self.record_statements
    }

    /// How many result rows per statement the audit keeps (0: none, and no
    /// rows need decoding).
    pub fn record_rows(&self) -> usize {
        if self.record_statements {
            self.record_rows
        } else {
            0
        }
    }

    /// What must happen before `info`'s statement may run. `None`: forward
    /// it now, nothing to record or wait for.
    /// `encoding`: the client encoding in force (the Execute's
    /// parameters are read in it).
    pub fn admit(&mut self, info: StatementInfo, encoding: &str) -> Option<AdmissionFuture> {
        if !self.record_statements && info.decision == Decision::Allow {
            return None;
        }
        // Outcomes go to the store before the next statement's record, as
        // they were reached.
        self.send_finished();
        self.sequence += 1;
        let pending = Pending {
            audit: self.audit.clone(),
            session: self.session.clone(),
            ids: self.ids.clone(),
            sequence: self.sequence,
            received_at: Timestamp::now(),
            sql: self.masker.mask_text(&info.text()).into_owned(),
            params: info
                .params(encoding)
                .into_iter()
                .map(|p| p.map(|p| self.masker.mask_text(&p).into_owned()))
                .collect(),
            kind: info.kind,
            tables: info.tables,
            record: self.record_statements,
            masker: self.masker.clone(),
        };
        Some(match info.decision {
            Decision::Allow => Box::pin(async move {
                match pending
                    .begin(audit_decision(Action::Allow, None, None))
                    .await
                {
                    Ok(handle) => Admission::Forward(handle),
                    Err(refusal) => Admission::Refuse(refusal),
                }
            }),
            Decision::Block {
                rule,
                message,
                sqlstate,
                position,
            } => Box::pin(async move {
                // A syntax error's message quotes the statement (`at or near
                // "…"`): masked like the statement itself.
                let message = pending.masker.mask_text(&message).into_owned();
                let syntax = rule == hoop_policy::SYNTAX_ERROR_RULE;
                let decision = audit_decision(Action::Block, Some(rule), Some(message.clone()));
                let mut refusal = Refusal::new(sqlstate, message).at(position);
                if syntax {
                    refusal = refusal.syntax_error();
                }
                pending.refuse_with(decision, refusal).await
            }),
            Decision::Review { rule, message } => {
                let request = ReviewRequest {
                    subject: self.session.subject.clone(),
                    groups: self.session.groups.clone(),
                    session_id: self.session.session_id.clone(),
                    role: self.session.role.clone(),
                    sql_masked: pending.sql.clone(),
                    normalized_sql: normalize(&sql_text(&info.sql), info.strings),
                    rule,
                    reason: message,
                    tables: pending.tables.to_vec(),
                    client_addr: self.session.client_addr.clone(),
                };
                // Cancels from now on end this hold (earlier ones do not:
                // they were for statements that are over).
                let mut cancel = self.cancel.clone();
                cancel.borrow_and_update();
                Box::pin(hold(self.reviews.clone(), request, pending, cancel))
            }
        })
    }

    /// Records how a forwarded statement ended. Not awaited: the client
    /// already has its answer, and the record rides with the next commit
    /// someone waits for. A store that fails for a while (the statement's
    /// begin record is already durable) gets it again with its next
    /// batches, for about half a minute, before an alert gives up on it
    /// (see `hoop_audit`'s writer).
    ///
    /// Handed to the store by [`Gate::send_finished`], which the relay
    /// calls once what the client is owed has gone out: handing a record
    /// over wakes the writer's thread, which would otherwise delay the
    /// answer it completes. The next statement's admission, and the gate's
    /// drop, send whatever is left.
    pub fn complete(&mut self, handle: StatementHandle, outcome: StatementOutcome) {
        self.finished.push((handle, outcome));
    }

    /// Hands the outcomes [`Gate::complete`] took to the store.
    pub fn send_finished(&mut self) {
        for (handle, outcome) in self.finished.drain(..) {
            self.audit.complete_statement_nowait(&handle, &outcome);
        }
    }
}

impl Drop for Gate {
    /// No outcome taken is lost, however the session ends.
    fn drop(&mut self) {
        self.send_finished();
    }
}

fn audit_decision(action: Action, rule: Option<String>, reason: Option<String>) -> AuditDecision {
    AuditDecision {
        action,
        rule,
        reason,
        review_id: None,
        reviewer: None,
    }
}

impl Pending {
    /// Writes the statement's record; `Err` is the refusal to send when the
    /// audit trail cannot take it.
    async fn begin(self, decision: AuditDecision) -> Result<Option<StatementHandle>, Refusal> {
        self.begin_as(decision, None).await
    }

    /// Consumes the pending statement: its fields move into the record
    /// rather than being copied for it.
    async fn begin_as(
        self,
        decision: AuditDecision,
        executed_sql: Option<String>,
    ) -> Result<Option<StatementHandle>, Refusal> {
        if !self.record {
            return Ok(None);
        }
        let begin = StatementBegin {
            session_id: self.session.session_id.clone(),
            sequence: self.sequence,
            received_at: self.received_at,
            sql: self.sql,
            params: self.params,
            kind: self.kind.to_string(),
            tables: self.tables.to_vec(),
            decision,
            executed_sql,
        };
        match self.audit.begin_statement_of(&self.ids, &begin).await {
            Ok(handle) => Ok(Some(handle)),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    sequence = self.sequence,
                    "ALERT: the audit trail cannot record a statement; it was refused"
                );
                Err(Refusal::new(
                    SQLSTATE_AUDIT_UNAVAILABLE,
                    "the gateway cannot record this statement in its audit trail, so it was \
                     not run; try again later",
                ))
            }
        }
    }

    /// Records a statement that does not run, with the error the client
    /// gets, and returns that error.
    async fn refuse(self, decision: AuditDecision, code: &str, message: &str) -> Admission {
        self.refuse_with(decision, Refusal::new(code, message))
            .await
    }

    /// [`Pending::refuse`] with the refusal made.
    async fn refuse_with(self, decision: AuditDecision, refusal: Refusal) -> Admission {
        let audit = self.audit.clone();
        match self.begin(decision).await {
            Ok(Some(handle)) => {
                if let Err(e) = audit.complete_statement(&handle, &refusal.outcome()).await {
                    tracing::error!(error = %e, "ALERT: cannot record a refusal's outcome in the audit trail");
                }
                Admission::Refuse(refusal)
            }
            Ok(None) => Admission::Refuse(refusal),
            // Refused either way; the audit's own error says why.
            Err(audit_error) => Admission::Refuse(audit_error),
        }
    }
}

/// Files the review (or uses a live grant) and waits for the decision.
async fn hold(
    hub: ReviewHub,
    request: ReviewRequest,
    pending: Pending,
    cancel: watch::Receiver<u64>,
) -> Admission {
    let rule = request.rule.clone();
    let reason = request.reason.clone();
    let decided = review_decision(rule.clone(), reason.clone());
    match hub.check_grant(&request).await {
        Ok(Some(grant)) => {
            let decision = decided(&grant.review_id, Some(grant.approvers.join(", ")));
            return match pending.begin(decision).await {
                Ok(handle) => Admission::Forward(handle),
                Err(refusal) => Admission::Refuse(refusal),
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "ALERT: cannot look up review grants; statement refused");
            let decision = audit_decision(Action::Review, Some(rule.clone()), Some(reason.clone()));
            let message = format!(
                "the statement needs review (rule \"{rule}\"), but the gateway cannot reach its \
                 review store, so it was not run; try again later"
            );
            return pending
                .refuse(decision, SQLSTATE_AUDIT_UNAVAILABLE, &message)
                .await;
        }
    }
    let ticket = match hub.request(request).await {
        Ok(ticket) => ticket,
        Err(e) => {
            tracing::error!(error = %e, "ALERT: cannot file a review; statement refused");
            let decision = audit_decision(Action::Review, Some(rule.clone()), Some(reason.clone()));
            let message = format!(
                "the statement needs review (rule \"{rule}\"), but the gateway cannot file the \
                 review, so it was not run; try again later"
            );
            return pending
                .refuse(decision, SQLSTATE_AUDIT_UNAVAILABLE, &message)
                .await;
        }
    };
    Admission::Hold {
        notice: ticket.notice().to_owned(),
        then: Box::pin(await_decision(ticket, pending, cancel, decided)),
    }
}

/// The audit decision of a reviewed statement, given the review and who decided.
fn review_decision(
    rule: String,
    reason: String,
) -> impl Fn(&str, Option<String>) -> AuditDecision + Send {
    move |review_id, reviewer| AuditDecision {
        action: Action::Review,
        rule: Some(rule.clone()),
        reason: Some(reason.clone()),
        review_id: Some(review_id.to_owned()),
        reviewer,
    }
}

async fn await_decision(
    mut ticket: ReviewTicket,
    pending: Pending,
    mut cancel: watch::Receiver<u64>,
    decision: impl Fn(&str, Option<String>) -> AuditDecision + Send,
) -> Admission {
    let id = ticket.id().to_owned();
    let cancelled = async move {
        if cancel.changed().await.is_err() {
            // The session is gone; the relay drops this wait anyway.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(cancelled);
    let outcome = tokio::select! {
        outcome = ticket.wait() => outcome,
        () = &mut cancelled => {
            if let Err(e) = ticket.withdraw("the client cancelled the statement").await {
                tracing::warn!(review = %id, error = %e, "cannot withdraw the review");
            }
            let message = format!(
                "canceling statement due to user request (it was held for review {id}, which is withdrawn)"
            );
            return pending
                .refuse(decision(&id, None), SQLSTATE_QUERY_CANCELED, &message)
                .await;
        }
    };
    match outcome {
        ReviewOutcome::Approved { reviewers } => {
            match pending
                .begin(decision(&id, Some(reviewers.join(", "))))
                .await
            {
                Ok(handle) => Admission::Forward(handle),
                Err(refusal) => Admission::Refuse(refusal),
            }
        }
        ReviewOutcome::Denied { reviewer, reason } => {
            let message = match &reason {
                Some(reason) => {
                    format!("statement denied by reviewer {reviewer} (review {id}): {reason}")
                }
                None => format!("statement denied by reviewer {reviewer} (review {id})"),
            };
            pending
                .refuse(
                    decision(&id, Some(reviewer)),
                    SQLSTATE_INSUFFICIENT_PRIVILEGE,
                    &message,
                )
                .await
        }
        ReviewOutcome::Modified {
            reviewer: _,
            reviewers,
            sql,
        } => {
            let masked = pending.masker.mask_text(&sql).into_owned();
            match pending
                .begin_as(decision(&id, Some(reviewers.join(", "))), Some(masked))
                .await
            {
                Ok(record) => Admission::Replace { sql, record },
                Err(refusal) => Admission::Refuse(refusal),
            }
        }
        ReviewOutcome::Expired => {
            let message = format!(
                "review expired: no reviewer decided on review {id} in time, so the statement \
                 was not run"
            );
            pending
                .refuse(decision(&id, None), SQLSTATE_QUERY_CANCELED, &message)
                .await
        }
    }
}

/// What grants match on: the statement's parse tree without source
/// positions ([`hoop_policy::statement_key`]), never its text, so moving a
/// newline (and with it the end of a `--` comment) makes another statement.
/// Literals stay: a grant covers the same statement, not the same shape.
fn normalize(sql: &str, strings: hoop_policy::StringLiterals) -> String {
    hoop_policy::statement_key_in(sql, strings)
}

/// A statement's text as the gateway keeps it: UTF-8 (the fast check),
/// but for a text it could not decode when it was sent (then read lossily).
pub(super) fn sql_text(sql: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(sql).map_or_else(|_| String::from_utf8_lossy(sql), Cow::Borrowed)
}

/// Bind parameters for the record: text ones as text, binary ones only
/// described (their type is not known here, and decoding guesses could
/// print a card number stored as a number).
fn bind_params(body: &[u8], encoding: &str) -> Vec<Option<String>> {
    let Some(parameters) = Bind::from_body(body).and_then(|bind| bind.parameters()) else {
        return vec![Some("<malformed Bind>".to_owned())];
    };
    parameters
        .into_iter()
        .map(|(format, value)| {
            value.map(|value| {
                if format == 0 {
                    // As the server reads it (the encoding is the one
                    // in force at the Execute; the server converted it
                    // at the Bind).
                    crate::encoding::decode(encoding, value).map_or_else(
                        |_| String::from_utf8_lossy(value).into_owned(),
                        |text| text.into_owned(),
                    )
                } else {
                    format!("<binary, {} bytes>", value.len())
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use hoop_policy::StringLiterals::Standard;

    #[test]
    fn grants_match_the_parse_tree_not_the_text() {
        assert_eq!(
            normalize(
                "  SELECT *\n  FROM payments\tWHERE amount > 10 ;; ",
                Standard
            ),
            normalize("select * from payments /* c */ where amount > 10", Standard)
        );
        assert_ne!(
            normalize("SELECT 1 WHERE a = 'x  y'", Standard),
            normalize("SELECT 2 WHERE a = 'x  y'", Standard)
        );
        assert_ne!(
            normalize("SELECT 1 WHERE a = 'x  y'", Standard),
            normalize("SELECT 1 WHERE a = 'x y'", Standard)
        );
        // Issue 16 item 3: where a `--` comment ends changes the statement.
        assert_ne!(
            normalize(
                "DO $$ BEGIN RAISE NOTICE 'x'; -- RAISE NOTICE 'hidden';\nEND $$",
                Standard
            ),
            normalize(
                "DO $$ BEGIN RAISE NOTICE 'x'; --\nRAISE NOTICE 'hidden'; END $$",
                Standard
            )
        );
        assert_ne!(
            normalize(
                "UPDATE payments SET note = 'x' WHERE id = -1 -- OR id > 0\n",
                Standard
            ),
            normalize(
                "UPDATE payments SET note = 'x' WHERE id = -1 --\n OR id > 0",
                Standard
            )
        );
    }
}
