//! The one model of a session: the prepared statements and portals it
//! holds, each with what every part of the gateway needs of it (its SQL or
//! facts, whether it goes to review, its row description and the row shape
//! the masker makes of it), the transaction status, and the queue of
//! requests still awaiting their answers (so pipelining, errors-until-Sync
//! and idleness are known). The inspector, the masker and the
//! recorder read and change this state; none keeps a copy of it.
//!
//! # Two orders, one model
//!
//! The inspector must judge a client's message when it arrives (client
//! order), while the server answers later (server order), and a rule may
//! hold messages back for review meanwhile. So statements and portals are
//! *records* with ids, and names map to them:
//!
//! - a Parse or Bind makes a new record at once, under its name, in the
//!   client's order; the record it replaced is kept until the server has
//!   answered, since the server may refuse the new one (`42P05` for a named
//!   statement that exists, `42P03` for a portal, any error in its text) or
//!   skip it (an earlier error in its batch), and the name then still means
//!   the old one (see [`ConnectionState::on_server_frame`]);
//! - every request queued for the server names the records it is about
//!   (resolved in the client's order: [`About`]), so an answer attaches to
//!   the very statement or portal it describes, whatever its name means by
//!   then (the unnamed statement is replaced by every Parse; SQL shares the
//!   names: `CLOSE p; DECLARE p CURSOR …`);
//! - a Close is followed the same way: skipped, the name means the closed
//!   record again; and what a client sends after an error and before its
//!   Sync is skipped without an answer, which the state knows from the
//!   error ([`ConnectionState::skipped_by_server`]);
//! - a message that depends on a name whose Parse, Bind or Close was sent
//!   in an earlier batch (a Sync between them) and is still unanswered
//!   waits until the server has answered ([`ConnectionState::must_wait`]):
//!   within one batch a failed message makes the server skip what depends
//!   on it, across batches it does not, and the gateway would otherwise
//!   judge a statement the server does not run, or refuse one it does.
//!
//! - a simple Query drops the unnamed statement and portal and may
//!   prepare statements in SQL, which holds once the server ran it: one the
//!   gateway refuses, or the server ignores (it does while skipping to
//!   Sync), leaves them as they were; a name its `DEALLOCATE` or `DECLARE
//!   … CURSOR` drops is gone once that statement completes, and means what
//!   it meant if it does not (an earlier statement of the string failed);
//!   so does a `PREPARE`, `DEALLOCATE` or `DECLARE … CURSOR` sent with
//!   Parse, when a portal of it is executed.
//!
//! `the_model_judges_what_the_server_runs_under_random_pipelines` (tests
//! below) checks this against a simulated server over 100,000 random
//! pipelined batches of extended-protocol messages and simple Queries
//! (`BEGIN`, `COMMIT`, `ROLLBACK`, `PREPARE`, `DEALLOCATE`, reads; failed
//! transaction blocks included; Parses of reads, `PREPARE` and
//! `DEALLOCATE`): every Execute judged on what the server
//! runs, every row description given for it that statement's, no Bind
//! refused that the server would take, and no message left waiting once
//! every answer is in.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;

use crate::encoding::DecodeError;
use crate::protocol::backend::{error_summary, Backend, IDLE, IN_TRANSACTION};
use crate::protocol::frontend::{Frontend, Target};
use hoop_policy::{RowShape, StatementFacts, StringLiterals};

/// Names a statement or portal record for as long as it is kept.
pub(crate) type RecordId = u64;

/// What a statement name holds.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    /// Prepared with Parse: its text as the server read it (decoded from
    /// the client encoding, its string literals read `strings`: what the
    /// server holds, whatever the session's settings are by the time it
    /// runs), and whether a rule sends it to review (its Parse and Binds are
    /// then held back with the Execute, so nothing of them reaches the
    /// server until the review is decided).
    Parse {
        sql: Bytes,
        strings: StringLiterals,
        needs_review: bool,
    },
    /// Prepared in SQL (`PREPARE name AS …`, judged then): its facts (they
    /// include the statement it prepares).
    Sql(Arc<StatementFacts>),
}

/// A prepared statement.
#[derive(Debug)]
pub(crate) struct Statement {
    name: Vec<u8>,
    pub prepared: Prepared,
    /// A Describe of it was sent: its description arrives before the rows
    /// of any later Execute of a portal bound to it.
    described: bool,
    /// The server's answer to a Describe of it: a RowDescription body, or
    /// `None` for NoData.
    description: Option<Option<Bytes>>,
    fate: Fate,
}

/// A portal: bound with Bind, or a cursor (declared in SQL, opened by a
/// function) the gateway knows only by its name.
#[derive(Debug)]
pub(crate) struct Portal {
    name: Vec<u8>,
    /// The statement record it was bound to (PostgreSQL runs the portal's
    /// own copy, whatever the name means by the time it is executed).
    /// `None`: a cursor.
    pub statement: Option<RecordId>,
    /// The Bind body (parameters for the record, formats for a reviewer's
    /// replacement); `None`: a cursor.
    pub bind: Option<Bytes>,
    result_formats: Vec<i16>,
    /// Its row description arrives before its rows: the client or the
    /// gateway asked for it.
    described: bool,
    /// [`ConnectionState::runs`] when the above was last true: SQL and the
    /// protocol share one namespace of portals, so once another statement
    /// ran, the name may be another portal.
    known_at: u64,
    /// The answer to a Describe of the portal itself (its result formats
    /// applied): a RowDescription body, or `None` for NoData.
    description: Option<Option<Bytes>>,
    /// The shape of its rows, once the masker made it; `None` inside: no rows.
    shape: Option<Option<Arc<RowShape>>>,
    /// Id of the request that made it, once sent: a transaction's end
    /// (ReadyForQuery idle) closes the portals made before it.
    sent: Option<u64>,
    fate: Fate,
}

/// Whether the server has taken a record yet.
#[derive(Debug, Clone, Copy, Default)]
struct Fate {
    /// The server answered its Parse or Bind (or it needs none).
    confirmed: bool,
    /// The server refused or skipped its Parse or Bind: it never was.
    refused: bool,
    /// While its Parse or Bind is unanswered: what its name meant before.
    /// Once refused: what its name means instead.
    replaced: Option<RecordId>,
    /// [`ConnectionState::batch`] when it was made.
    batch: u64,
}

impl Fate {
    /// Made in a batch before `batch`, and the server has not said yet
    /// whether it took it.
    fn open_before(&self, batch: u64) -> bool {
        !self.confirmed && !self.refused && self.batch < batch
    }
}

trait Named {
    fn name(&self) -> &[u8];
    fn fate(&mut self) -> &mut Fate;
    fn fate_ref(&self) -> &Fate;
}

impl Named for Statement {
    fn name(&self) -> &[u8] {
        &self.name
    }
    fn fate(&mut self) -> &mut Fate {
        &mut self.fate
    }
    fn fate_ref(&self) -> &Fate {
        &self.fate
    }
}

impl Named for Portal {
    fn name(&self) -> &[u8] {
        &self.name
    }
    fn fate(&mut self) -> &mut Fate {
        &mut self.fate
    }
    fn fate_ref(&self) -> &Fate {
        &self.fate
    }
}

/// Records by id, and what each name means now.
#[derive(Debug)]
struct Records<T> {
    by_id: HashMap<RecordId, T>,
    names: HashMap<Vec<u8>, RecordId>,
    next: RecordId,
    /// Records kept before unused ones are looked for again.
    collect_at: usize,
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records {
            by_id: HashMap::default(),
            names: HashMap::default(),
            next: 0,
            collect_at: COLLECT_AT,
        }
    }
}

/// Records kept, beyond those with names, before unused ones are dropped.
const COLLECT_AT: usize = 64;

impl<T: Named> Records<T> {
    /// Puts `record` under its name; what the name meant is kept as what a
    /// refusal of the new one restores.
    fn insert(&mut self, mut record: T, batch: u64, confirmed: bool) -> RecordId {
        let id = self.next;
        self.next += 1;
        let replaced = self.names.insert(record.name().to_vec(), id);
        *record.fate() = Fate {
            confirmed,
            refused: false,
            replaced: if confirmed { None } else { replaced },
            batch,
        };
        self.by_id.insert(id, record);
        id
    }

    fn current(&self, name: &[u8]) -> Option<RecordId> {
        self.names.get(name).copied()
    }

    fn get(&self, id: RecordId) -> Option<&T> {
        self.by_id.get(&id)
    }

    fn get_mut(&mut self, id: RecordId) -> Option<&mut T> {
        self.by_id.get_mut(&id)
    }

    fn named(&self, name: &[u8]) -> Option<&T> {
        self.get(self.current(name)?)
    }

    fn confirm(&mut self, id: RecordId) {
        if let Some(record) = self.by_id.get_mut(&id) {
            *record.fate() = Fate {
                confirmed: true,
                replaced: None,
                ..*record.fate()
            };
        }
    }

    /// The server refused or skipped the record's Parse or Bind: its name
    /// means what it meant before (`restore`), or nothing. The record stays
    /// while something refers to it (a pending answer, a portal).
    fn refused(&mut self, id: RecordId, restore: bool) {
        let Some(record) = self.by_id.get(&id) else {
            return;
        };
        let fate = *record.fate_ref();
        let name = record.name().to_vec();
        let before = fate
            .replaced
            .filter(|r| restore && self.by_id.contains_key(r));
        if self.names.get(&name) == Some(&id) {
            match before {
                Some(before) => self.names.insert(name, before),
                None => self.names.remove(&name),
            };
        }
        // Records made after it under the same name restore what it
        // restored.
        for record in self.by_id.values_mut() {
            if record.fate().replaced == Some(id) {
                record.fate().replaced = before;
            }
        }
        if let Some(record) = self.by_id.get_mut(&id) {
            *record.fate() = Fate {
                refused: true,
                replaced: before,
                ..fate
            };
        }
    }

    /// The server skipped the Close of `id`: its name means it again,
    /// unless a later Parse or Bind took the name, which then replaced it.
    fn reopened(&mut self, id: RecordId) {
        let Some(name) = self.by_id.get(&id).map(|r| r.name().to_vec()) else {
            return;
        };
        // What it closed, in the server's terms: a record whose own Parse
        // or Bind was refused since stands for what the name meant instead.
        let mut id = Some(id);
        while let Some(fate) = id.and_then(|r| self.by_id.get(&r)).map(|r| *r.fate_ref()) {
            if !fate.refused {
                break;
            }
            id = fate.replaced;
        }
        let Some(id) = id else {
            return;
        };
        match self.names.get(&name).copied() {
            None => {
                self.names.insert(name, id);
            }
            // The records made under the name since the Close: the first
            // of them replaced nothing then, and replaces `id` now (what
            // its refusal restores).
            Some(mut later) => {
                while let Some(fate) = self.by_id.get_mut(&later).map(|r| r.fate()) {
                    if fate.confirmed || fate.refused {
                        break;
                    }
                    match fate.replaced {
                        Some(before) => later = before,
                        None => {
                            fate.replaced = Some(id);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Drops the records no name means, none replaced, and `in_use` does
    /// not need.
    fn collect(&mut self, in_use: impl Fn(RecordId) -> bool) {
        let replaced: Vec<RecordId> = self
            .by_id
            .values_mut()
            .filter_map(|r| r.fate().replaced)
            .collect();
        let names = &self.names;
        self.by_id.retain(|id, record| {
            names.get(record.name()) == Some(id) || replaced.contains(id) || in_use(*id)
        });
        self.collect_at = self.by_id.len() * 2 + COLLECT_AT;
    }

    fn must_collect(&self) -> bool {
        self.by_id.len() > self.collect_at
    }
}

/// The records a client message is about, resolved in the client's order
/// (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum About {
    #[default]
    Nothing,
    Statement(RecordId),
    Portal(RecordId),
}

impl About {
    fn statement(self) -> Option<RecordId> {
        match self {
            About::Statement(id) => Some(id),
            _ => None,
        }
    }

    fn portal(self) -> Option<RecordId> {
        match self {
            About::Portal(id) => Some(id),
            _ => None,
        }
    }
}

/// Where a portal's row description comes from.
pub(crate) enum PortalDescription<'a> {
    /// A Describe of the portal: its result formats are applied.
    Own(Option<&'a Bytes>),
    /// A Describe of the very statement it was bound to: every column in
    /// text format; the portal's result formats still apply.
    Statement(Option<&'a Bytes>),
}

/// A request sent to the server whose response has not fully arrived. The
/// front of the queue is what the next server message answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    Query(Instant),
    Parse(Option<RecordId>),
    /// A Parse the gateway sent of a client's text its copy of
    /// PostgreSQL's grammar rejected, so the server's own error answers it
    /// (see `Relay::refuse_syntax_error`); this ErrorResponse frame answers
    /// in its place when the server's answer is not its grammar's.
    SyntaxCheck(Bytes),
    /// An Execute the gateway sent of its reading check (see
    /// `Relay::check_reading`): it fails unless the server still reads
    /// text as the gateway read the client's message behind it. Its row
    /// and completion are not for the client; its error becomes this
    /// ErrorResponse frame.
    ReadingCheck(Bytes),
    Bind(Option<RecordId>),
    Describe {
        target: Target,
        record: Option<RecordId>,
        origin: DescribeOrigin,
    },
    Execute(Option<RecordId>),
    /// A Close (or a Describe of a subtype the server refuses): the record
    /// it closed, and the batch it was sent in. The server may skip it (an
    /// earlier error in its batch): then the name means that record again.
    Close(Option<(Target, RecordId, u64)>),
    Sync(Instant),
    /// `binary`: the call asked for its result in binary format.
    FunctionCall {
        started: Instant,
        binary: bool,
    },
}

/// Who sent a Describe, and so who its answer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DescribeOrigin {
    Client,
    /// Sent by the gateway before an Execute whose row description it did
    /// not know; the answer is for the masker only.
    Gateway,
    /// Sent instead of a refused request: a Describe of a statement that
    /// does not exist, so the server fails (and aborts a transaction, skips
    /// to Sync) exactly as if the refused statement had failed there, without
    /// anything of it reaching the server. Its answer is replaced by this
    /// ErrorResponse frame.
    Refusal(Bytes),
    /// Sent to fail the server's transaction the way a refusal answered by
    /// the gateway alone failed it for the client (see
    /// [`ConnectionState::failed_here`]): its answer is for nobody.
    FailTransaction,
}

impl Pending {
    /// Requests answered by ReadyForQuery.
    fn ends_with_ready(&self) -> Option<Instant> {
        match self {
            Pending::Query(t) | Pending::Sync(t) | Pending::FunctionCall { started: t, .. } => {
                Some(*t)
            }
            _ => None,
        }
    }
}

/// What a message sent to the server asks of it, as the state queues it
/// (read from the message once, kept while the message waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Query,
    Parse,
    Bind,
    /// `None`: a subtype the server refuses.
    Describe(Option<Target>),
    Execute,
    Close,
    Sync,
    Flush,
    /// `binary`: the call asked for its result in binary format.
    FunctionCall {
        binary: bool,
    },
    Terminate,
    /// Anything else (COPY data, a type the server refuses).
    Other,
}

impl Request {
    pub fn of(message: &Frontend<'_>) -> Request {
        match message {
            Frontend::Query { .. } => Request::Query,
            Frontend::Parse(_) => Request::Parse,
            Frontend::Bind(_) => Request::Bind,
            Frontend::Describe { target, .. } => Request::Describe(*target),
            Frontend::Execute { .. } => Request::Execute,
            Frontend::Close { .. } => Request::Close,
            Frontend::Sync => Request::Sync,
            Frontend::Flush => Request::Flush,
            Frontend::FunctionCall { binary_result } => Request::FunctionCall {
                binary: *binary_result,
            },
            Frontend::Terminate => Request::Terminate,
            Frontend::CopyData(_)
            | Frontend::CopyDone
            | Frontend::CopyFail
            | Frontend::Unexpected(_) => Request::Other,
        }
    }
}

/// What an Execute runs, as the client's order has it (see
/// [`ConnectionState::execute`]).
pub(crate) struct Executed {
    pub portal: RecordId,
    /// What its statement was prepared as (`None`: a cursor).
    pub prepared: Option<Prepared>,
    /// The statement's name, for a statement prepared in SQL.
    pub statement_name: Option<Vec<u8>>,
    pub bind: Option<Bytes>,
    /// Its rows' description arrives before them (else the gateway asks
    /// for it).
    pub described: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ConnectionState {
    statements: Records<Statement>,
    portals: Records<Portal>,
    /// Counts the statements the client asked to run (Query, Execute,
    /// FunctionCall); see [`Portal::known_at`].
    runs: u64,
    /// Counts the batches sent to the server (each Sync, Query and
    /// FunctionCall sent ends one, the gateway's own included); see
    /// [`ConnectionState::must_wait`].
    batch: u64,
    /// From the last ReadyForQuery: [`IDLE`], `IN_TRANSACTION` or `FAILED_TRANSACTION`.
    pub transaction_status: u8,
    /// RowDescription of the simple-query result currently streaming.
    pub simple_row_description: Option<Bytes>,
    /// Its shape, once the masker made it.
    pub simple_shape: Option<Arc<RowShape>>,
    /// After a refused extended-protocol message: client messages are
    /// dropped until the next Sync (as the server would skip them after an
    /// error), so nothing of the refused statement reaches the server.
    pub discarding_until_sync: bool,
    /// The Sync that ends the discarding is answered by the gateway with a
    /// ReadyForQuery of this status instead of being forwarded: the refusal
    /// was answered without the server (see [`ConnectionState::at_sync_point`]).
    pub sync_answered_here: Option<u8>,
    /// No extended-protocol message has been sent since the last Sync (or
    /// Query, FunctionCall): with nothing pending either, the server has no
    /// work of the client's open, so a refusal there can be answered by the
    /// gateway alone without changing what the statements around it do.
    pub at_sync_point: bool,
    /// A refusal answered by the gateway alone failed the client's
    /// transaction block: the client was told its transaction failed
    /// (ReadyForQuery `E`) while the server's is still healthy. Until the
    /// client ends the block, the gateway answers as PostgreSQL answers in a
    /// failed transaction (the relay's `in_failed_transaction`).
    pub failed_here: bool,
    pending: VecDeque<Entry>,
    /// Id of the next request queued (ids only grow).
    next_id: u64,
    /// The server reported an error in the extended protocol and skips the
    /// client's messages until the next Sync, which the client has not sent
    /// yet: what it sends meanwhile is skipped without an answer (the
    /// error's SQLSTATE and message, for their records).
    server_skipping: Option<(String, String)>,
    /// What the statement being judged (a simple Query, or an Execute of
    /// a `PREPARE`, `DEALLOCATE` or `DECLARE` sent with Parse) did to the
    /// session's names: sent with it.
    unsent: Effects,
    /// Per Query or such Execute sent (by request id), what it did to the
    /// session's names, until its answers say what of it happened.
    running: VecDeque<(u64, Effects)>,
    /// What the server reported of how it reads the client's text.
    pub reading: Reading,
    /// Id of the last Query, Execute or FunctionCall sent: any statement
    /// may change `client_encoding` or `standard_conforming_strings` (a
    /// function can call `set_config`).
    statement_sent: Option<u64>,
    /// Id of the last Sync, Query or FunctionCall sent. Each is answered by
    /// ReadyForQuery, and the server reports the settings its statements
    /// changed just before that (PostgreSQL 14 and later), not earlier.
    ready_asked: Option<u64>,
    /// Id of the last request ReadyForQuery answered.
    ready_through: Option<u64>,
    /// The relay sent a reading check right before the message being
    /// judged (see [`ConnectionState::needs_reading_check`]), so it is read
    /// as last reported even though the encoding is not settled.
    pub reading_checked: bool,
}

/// What a session's server reported of how it reads the client's text:
/// its encodings and `standard_conforming_strings`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    client: String,
    server: String,
    /// How ordinary string literals are read.
    pub strings: StringLiterals,
}

/// Why the gateway cannot read a client's text as the server will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextProblem {
    /// Not valid in the encoding it is read in, which the server would
    /// refuse too.
    Invalid(String),
    /// Non-ASCII text in an encoding the gateway does not read (see
    /// [`crate::encoding`]).
    Encoding(String),
    /// Text after a statement of the same batch that reads differently
    /// if that statement changed `client_encoding` (non-ASCII text) or
    /// `standard_conforming_strings` (a backslash in a literal), which the
    /// server reports only at the batch's Sync.
    Unsettled,
}

impl Reading {
    /// Notes a reported setting.
    pub fn note(&mut self, name: &[u8], value: &[u8]) {
        let value = || String::from_utf8_lossy(value).into_owned();
        match name {
            b"client_encoding" => self.client = value(),
            b"server_encoding" => self.server = value(),
            b"standard_conforming_strings" => {
                self.strings = StringLiterals::reported(&value());
            }
            _ => {}
        }
    }

    /// A statement that fails (division by zero) unless the server reads
    /// text as reported: its client encoding and string literals. ASCII
    /// without backslashes, so any reading reads it alike; its operators
    /// and functions are pg_catalog's. `None` where a reported value is not
    /// a plain name.
    pub fn check_sql(&self) -> Option<String> {
        let plain = !self.client.is_empty()
            && self
                .client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let strings = match self.strings {
            StringLiterals::Standard => "on",
            StringLiterals::Escaped => "off",
        };
        plain.then(|| {
            format!(
                "SELECT 1 OPERATOR(pg_catalog./) \
                 (pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) '{}' \
                 AND pg_catalog.current_setting('standard_conforming_strings') \
                 OPERATOR(pg_catalog.=) '{strings}')::pg_catalog.int4",
                self.client
            )
        })
    }

    /// The encoding the server reads the client's text in: the client's,
    /// or for SQL_ASCII (no conversion) the server's own.
    pub fn encoding(&self) -> &str {
        if self.client == "SQL_ASCII" {
            &self.server
        } else {
            &self.client
        }
    }
}

/// Whether `text` reads differently if the server's `client_encoding` or
/// `standard_conforming_strings` changed: it has bytes above 0x7F, or a
/// backslash that string literals read differently either way.
fn reading_matters(text: &[u8]) -> bool {
    !text.is_ascii()
        || (text.contains(&b'\\')
            && std::str::from_utf8(text).is_ok_and(|t| !hoop_policy::reads_alike_in_both(t)))
}

/// What a simple Query, or an Execute of a portal whose statement is a
/// `PREPARE`, `DEALLOCATE` or `DECLARE … CURSOR` sent with Parse, does to
/// the session's names, which holds only if the server runs it: a Query
/// drops the unnamed statement and portal (these were the ones it
/// dropped), its `PREPARE`s make statements, and its `DEALLOCATE`s and
/// `DECLARE … CURSOR`s drop names, in order (each holds once its statement
/// completes).
#[derive(Debug, Default)]
struct Effects {
    unnamed_statement: Option<RecordId>,
    unnamed_portal: Option<RecordId>,
    prepares: VecDeque<RecordId>,
    drops: VecDeque<Dropped>,
}

impl Effects {
    fn is_empty(&self) -> bool {
        self.unnamed_statement.is_none()
            && self.unnamed_portal.is_none()
            && self.prepares.is_empty()
            && self.drops.is_empty()
    }
}

/// A name a statement of a Query dropped, with what it meant.
#[derive(Debug)]
enum Dropped {
    /// `DEALLOCATE name` (one statement at most) or `DEALLOCATE ALL`.
    Statements(Vec<RecordId>),
    /// `DECLARE name CURSOR …`: the portal the name meant, if any.
    Portal(Option<RecordId>),
}

impl Dropped {
    fn records(&self) -> impl Iterator<Item = (Target, RecordId)> + '_ {
        let (target, ids) = match self {
            Dropped::Statements(ids) => (Target::Statement, &ids[..]),
            Dropped::Portal(id) => (Target::Portal, id.as_slice()),
        };
        ids.iter().map(move |id| (target, *id))
    }
}

/// A queued request: its id (the relay ties audit records to it) and
/// whether the gateway sent it on its own (its Parse/Bind/CloseComplete
/// answer is for the gateway, not the client).
#[derive(Debug)]
struct Entry {
    id: u64,
    pending: Pending,
    silent: bool,
}

/// What a client frame started, for metrics and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    Statement,
    Nothing,
}

/// The client's side: what its messages make of the session, in the order
/// it sends them (before the relay holds any back).
impl ConnectionState {
    pub fn new() -> ConnectionState {
        ConnectionState {
            transaction_status: IDLE,
            at_sync_point: true,
            ..Default::default()
        }
    }

    /// Whether `message` must wait for the server's answers before it is
    /// judged: it depends on a name whose Parse, Bind or Close was sent in
    /// an earlier batch and is unanswered (see the module documentation).
    /// The server has been sent a Sync since, so its answers are on their
    /// way.
    pub fn must_wait(&self, message: &Frontend<'_>) -> bool {
        let batch = self.batch;
        // A Close of the name, sent in an earlier batch, unanswered.
        let closing = |target: Target, name: &[u8]| {
            self.pending.iter().any(|e| match e.pending {
                Pending::Close(Some((t, id, sent))) => {
                    t == target
                        && sent < batch
                        && match t {
                            Target::Statement => self.statements.get(id).map(|r| r.name()),
                            Target::Portal => self.portals.get(id).map(|r| r.name()),
                        } == Some(name)
                }
                _ => false,
            })
        };
        // A Query sent before (so in an earlier batch) and unanswered
        // dropped the unnamed statement or portal, unless the server
        // ignores it (skipping to Sync after an error), or the name by a
        // `DEALLOCATE` or `DECLARE` that may not complete.
        let query_dropped = |target: Target, name: &[u8]| {
            self.running.iter().any(|(_, effects)| {
                let unnamed = match target {
                    Target::Statement => effects.unnamed_statement.is_some(),
                    Target::Portal => effects.unnamed_portal.is_some(),
                };
                (name.is_empty() && unnamed)
                    || effects
                        .drops
                        .iter()
                        .flat_map(Dropped::records)
                        .any(|(t, id)| {
                            t == target
                                && match t {
                                    Target::Statement => self.statements.get(id).map(|r| r.name()),
                                    Target::Portal => self.portals.get(id).map(|r| r.name()),
                                } == Some(name)
                        })
            })
        };
        let statement_open = |name: &[u8]| {
            self.statements
                .named(name)
                .is_some_and(|s| s.fate.open_before(batch))
                || closing(Target::Statement, name)
                || query_dropped(Target::Statement, name)
        };
        let portal_open = |name: &[u8]| {
            self.portals
                .named(name)
                .is_some_and(|p| p.fate.open_before(batch))
                || closing(Target::Portal, name)
                || query_dropped(Target::Portal, name)
        };
        match message {
            Frontend::Bind(bind) => statement_open(bind.statement),
            Frontend::Execute { portal, .. } => portal_open(portal),
            Frontend::Describe {
                target: Some(Target::Statement),
                name,
            } => statement_open(name),
            Frontend::Describe {
                target: Some(Target::Portal),
                name,
            } => portal_open(name),
            // SQL reaches either namespace (`EXECUTE`, `FETCH`).
            Frontend::Query { .. } => {
                self.statements
                    .by_id
                    .values()
                    .any(|s| s.fate.open_before(batch))
                    || self
                        .portals
                        .by_id
                        .values()
                        .any(|p| p.fate.open_before(batch))
                    || self.pending.iter().any(
                        |e| matches!(e.pending, Pending::Close(Some((_, _, sent))) if sent < batch),
                    )
            }
            _ => false,
        }
    }

    /// Whether `message` carries SQL text that must wait until the server
    /// has answered the statements sent before it: it reads differently if
    /// one of them changed `client_encoding` or
    /// `standard_conforming_strings` ([`reading_matters`]), and the server
    /// reports that with the ReadyForQuery that is on its way. Where none
    /// is (a statement of the same batch, the Sync not sent yet), waiting
    /// would wait forever: see [`ConnectionState::needs_reading_check`].
    pub fn must_wait_for_reading(&self, message: &Frontend<'_>) -> bool {
        !self.reading_settled()
            && self.reading_reported_soon()
            && message.sql().is_some_and(reading_matters)
    }

    /// Whether `message` carries SQL text that reads differently if a
    /// statement sent before it, in this batch, changed how the server
    /// reads text: no report can come before the batch's Sync, so the
    /// relay sends a check that fails the batch unless the server still
    /// reads text as last reported (`Relay::check_reading`). Not where
    /// the server skips the message anyway (an error earlier in the batch).
    pub fn needs_reading_check(&self, message: &Frontend<'_>) -> bool {
        !self.reading_settled()
            && self.server_skipping.is_none()
            && message.sql().is_some_and(reading_matters)
    }

    /// Records the Execute of a reading check (see
    /// [`Pending::ReadingCheck`]).
    pub fn on_reading_check(&mut self, error: Bytes) {
        self.push(Pending::ReadingCheck(error));
    }

    /// Every statement sent has been answered with its ReadyForQuery, so
    /// what was last reported is how the next message is read.
    fn reading_settled(&self) -> bool {
        self.statement_sent
            .is_none_or(|sent| self.ready_through.is_some_and(|ready| ready >= sent))
    }

    /// A ReadyForQuery is on its way after the last statement sent.
    fn reading_reported_soon(&self) -> bool {
        self.statement_sent
            .is_some_and(|sent| self.ready_asked.is_some_and(|asked| asked >= sent))
    }

    /// A client's SQL text (a Query's or a Parse's) as the server will read
    /// it, to be parsed with string literals read as
    /// [`Reading::strings`]: ASCII reads alike in every encoding; other
    /// text only once the encoding is settled (see
    /// [`ConnectionState::must_wait_for_reading`]), decoded from it as the
    /// server converts it ([`crate::encoding`]). Before that, a text with a
    /// backslash must read alike whatever `standard_conforming_strings` is.
    pub fn read_text<'t>(&self, text: &'t [u8]) -> Result<Cow<'t, str>, TextProblem> {
        let settled = self.reading_settled() || self.reading_checked;
        if !text.is_ascii() && !settled {
            return Err(TextProblem::Unsettled);
        }
        let encoding = self.reading.encoding();
        let read = crate::encoding::decode(encoding, text).map_err(|e| match e {
            DecodeError::Unsupported => TextProblem::Encoding(encoding.to_owned()),
            DecodeError::Invalid => TextProblem::Invalid(encoding.to_owned()),
        })?;
        if !settled && !hoop_policy::reads_alike_in_both(&read) {
            return Err(TextProblem::Unsettled);
        }
        Ok(read)
    }

    /// A simple Query: it drops the unnamed statement and portal, and runs.
    pub fn query(&mut self) {
        self.unsent = Effects {
            unnamed_statement: self.statements.names.remove(&b""[..]),
            unnamed_portal: self.portals.names.remove(&b""[..]),
            ..Effects::default()
        };
        self.runs += 1;
    }

    /// A fast-path FunctionCall runs (anything, by OID).
    pub fn function_call(&mut self) {
        self.runs += 1;
    }

    /// A statement prepared under `name` (with Parse, unanswered until the
    /// server's ParseComplete; or in SQL, judged then).
    pub fn prepare(&mut self, name: &[u8], prepared: Prepared) -> RecordId {
        let in_sql = matches!(prepared, Prepared::Sql(_));
        let statement = Statement {
            name: name.to_vec(),
            prepared,
            described: false,
            description: None,
            fate: Fate::default(),
        };
        let id = self.statements.insert(statement, self.batch, false);
        if in_sql {
            self.unsent.prepares.push_back(id);
        }
        if self.statements.must_collect() {
            self.collect();
        }
        id
    }

    /// The statement `name` means now.
    pub fn statement(&self, name: &[u8]) -> Option<(RecordId, &Statement)> {
        let id = self.statements.current(name)?;
        Some((id, self.statements.get(id)?))
    }

    /// The statement just judged (a Query or an Execute) is not sent after
    /// all (the gate refused it): nothing of what it did to the session
    /// happened.
    pub fn statement_refused(&mut self) {
        let effects = std::mem::take(&mut self.unsent);
        self.undo(effects);
    }

    /// The statement just judged runs as a reviewer's replacement text: a
    /// Query still drops the unnamed statement and portal, but what its own
    /// `PREPARE`s, `DEALLOCATE`s and `DECLARE`s would have done does not
    /// happen (a replacement that would change names is refused, see
    /// [`crate::relay::inspect::replacement_changes_names`]).
    pub fn statement_replaced(&mut self) {
        let mut effects = std::mem::take(&mut self.unsent);
        self.undo_drops(&mut effects);
        for id in std::mem::take(&mut effects.prepares).into_iter().rev() {
            self.statements.refused(id, true);
        }
        self.unsent = effects;
    }

    /// A Query or Execute the server did not run: its `PREPARE`s made
    /// nothing, its `DEALLOCATE`s and `DECLARE`s dropped nothing, and (a
    /// Query's) the unnamed statement and portal are still there.
    fn undo(&mut self, mut effects: Effects) {
        self.undo_drops(&mut effects);
        for id in effects.prepares.into_iter().rev() {
            self.statements.refused(id, true);
        }
        if let Some(id) = effects.unnamed_statement {
            self.statements.reopened(id);
        }
        if let Some(id) = effects.unnamed_portal {
            self.portals.reopened(id);
        }
    }

    /// `DEALLOCATE name` (`None`: `DEALLOCATE ALL`) in the Query being
    /// judged: the names are gone, unless the statement does not complete
    /// (the server skips it after an earlier one's error, or refuses it in
    /// a failed block), and then they mean what they meant.
    pub fn deallocate(&mut self, name: Option<&[u8]>) {
        let ids = match name {
            Some(name) => self.statements.names.remove(name).into_iter().collect(),
            None => self.statements.names.drain().map(|(_, id)| id).collect(),
        };
        self.unsent.drops.push_back(Dropped::Statements(ids));
    }

    /// `DECLARE name CURSOR …` in the Query being judged: the name is the
    /// cursor's now, unless the statement does not complete (as
    /// [`ConnectionState::deallocate`]; outside a transaction block it
    /// fails unless `WITH HOLD`).
    pub fn declare_cursor(&mut self, name: &[u8]) {
        let id = self.portals.names.remove(name);
        self.unsent.drops.push_back(Dropped::Portal(id));
    }

    /// The names the Query's statements that did not complete dropped
    /// mean again what they meant (latest first).
    fn undo_drops(&mut self, effects: &mut Effects) {
        while let Some(dropped) = effects.drops.pop_back() {
            for (target, id) in dropped.records() {
                match target {
                    Target::Statement => self.statements.reopened(id),
                    Target::Portal => self.portals.reopened(id),
                }
            }
        }
    }

    /// A Bind of `statement` (a record [`ConnectionState::statement`]
    /// found) as `portal`.
    pub fn bind(
        &mut self,
        portal: &[u8],
        statement: RecordId,
        body: Bytes,
        result_formats: Vec<i16>,
    ) -> RecordId {
        let record = Portal {
            name: portal.to_vec(),
            statement: Some(statement),
            bind: Some(body),
            result_formats,
            described: false,
            known_at: self.runs,
            description: None,
            shape: None,
            sent: None,
            fate: Fate::default(),
        };
        let id = self.portals.insert(record, self.batch, false);
        if self.portals.must_collect() {
            self.collect();
        }
        id
    }

    /// The portal `name` means now, made a cursor's record if the gateway
    /// knows none by that name.
    fn portal_or_cursor(&mut self, name: &[u8]) -> RecordId {
        if let Some(id) = self.portals.current(name) {
            return id;
        }
        let cursor = Portal {
            name: name.to_vec(),
            statement: None,
            bind: None,
            result_formats: Vec::new(),
            described: false,
            known_at: self.runs,
            description: None,
            shape: None,
            sent: None,
            fate: Fate::default(),
        };
        self.portals.insert(cursor, self.batch, true)
    }

    /// A Describe: its answer comes before the rows of what it describes.
    pub fn describe(&mut self, target: Target, name: &[u8]) -> About {
        match target {
            Target::Statement => match self.statements.current(name) {
                Some(id) => {
                    if let Some(s) = self.statements.get_mut(id) {
                        s.described = true;
                    }
                    About::Statement(id)
                }
                // The server answers 26000.
                None => About::Nothing,
            },
            Target::Portal => {
                let id = self.portal_or_cursor(name);
                let runs = self.runs;
                if let Some(p) = self.portals.get_mut(id) {
                    p.described = true;
                    p.known_at = runs;
                }
                About::Portal(id)
            }
        }
    }

    /// A Close: the name means nothing from here on (unless the server
    /// skips the Close). Returns the record it closed.
    pub fn close(&mut self, target: Target, name: &[u8]) -> About {
        match target {
            Target::Statement => match self.statements.names.remove(name) {
                Some(id) => About::Statement(id),
                None => About::Nothing,
            },
            Target::Portal => match self.portals.names.remove(name) {
                Some(id) => About::Portal(id),
                None => About::Nothing,
            },
        }
    }

    /// An Execute of `portal`: what it runs, and whether its rows'
    /// description will precede them (the portal was described, or the very
    /// statement it was bound to, and nothing ran since). From here on the
    /// portal counts as described: the client's Describe or the gateway's
    /// goes before this Execute.
    pub fn execute(&mut self, portal: &[u8]) -> Executed {
        let id = self.portal_or_cursor(portal);
        let runs = self.runs;
        self.runs += 1;
        let statements = &self.statements;
        let Some(p) = self.portals.get_mut(id) else {
            unreachable!("portal_or_cursor returns a kept record")
        };
        let statement = p.statement.and_then(|s| statements.get(s));
        let described =
            p.known_at == runs && (p.described || statement.is_some_and(|s| s.described));
        p.described = true;
        p.known_at = self.runs;
        Executed {
            portal: id,
            prepared: statement.map(|s| s.prepared.clone()),
            statement_name: statement
                .filter(|s| matches!(s.prepared, Prepared::Sql(_)))
                .map(|s| s.name.clone()),
            bind: p.bind.clone(),
            described,
        }
    }

    /// Drops the records nothing needs any more: no name means them, no
    /// pending answer and no portal refers to them.
    fn collect(&mut self) {
        let pending = &self.pending;
        let in_pending = |want: &dyn Fn(&Pending) -> bool| pending.iter().any(|e| want(&e.pending));
        // What a Query's unfinished DEALLOCATE or DECLARE may restore.
        let dropped: Vec<(Target, RecordId)> = std::iter::once(&self.unsent)
            .chain(self.running.iter().map(|(_, effects)| effects))
            .flat_map(|effects| effects.drops.iter().flat_map(Dropped::records))
            .collect();
        let dropped = |target: Target, id: RecordId| dropped.contains(&(target, id));
        self.portals.collect(|id| {
            dropped(Target::Portal, id)
                || in_pending(&|p| {
                matches!(p, Pending::Bind(Some(r)) | Pending::Execute(Some(r)) if *r == id)
                    || matches!(p, Pending::Describe { target: Target::Portal, record: Some(r), .. } if *r == id)
                    || matches!(p, Pending::Close(Some((Target::Portal, r, _))) if *r == id)
            })
        });
        let portals = &self.portals.by_id;
        self.statements.collect(|id| {
            dropped(Target::Statement, id)
                || portals.values().any(|p| p.statement == Some(id))
                || in_pending(&|p| {
                    matches!(p, Pending::Parse(Some(r)) if *r == id)
                        || matches!(p, Pending::Describe { target: Target::Statement, record: Some(r), .. } if *r == id)
                        || matches!(p, Pending::Close(Some((Target::Statement, r, _))) if *r == id)
                })
        });
    }
}

/// The server's side: requests in the order they are sent, answers in the
/// order they come.
impl ConnectionState {
    /// No request is waiting for a response.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The request the next server message answers.
    pub fn front(&self) -> Option<&Pending> {
        self.pending.front().map(|e| &e.pending)
    }

    /// Id of the request the next server message answers.
    pub fn front_id(&self) -> Option<u64> {
        self.pending.front().map(|e| e.id)
    }

    /// Whether a statement sent now runs inside the client's transaction
    /// block: the last ReadyForQuery said the block is open and healthy,
    /// nothing the gateway answered failed it, and nothing sent since can
    /// have ended it (no statement or Sync is unanswered, only Parse, Bind,
    /// Describe and Close).
    pub fn in_open_block(&self) -> bool {
        self.transaction_status == IN_TRANSACTION
            && !self.failed_here
            && self.pending.iter().all(|entry| {
                matches!(
                    entry.pending,
                    Pending::Parse(_)
                        | Pending::SyntaxCheck(_)
                        | Pending::Bind(_)
                        | Pending::Describe { .. }
                        | Pending::Close(_)
                )
            })
    }

    /// Id the request sent last got.
    pub fn last_id(&self) -> Option<u64> {
        self.next_id.checked_sub(1)
    }

    /// Whether the request the next server message answers was sent by the
    /// gateway on its own (see [`ConnectionState::mark_last_silent`]).
    pub fn front_is_silent(&self) -> bool {
        self.pending.front().is_some_and(|e| e.silent)
    }

    /// Marks the request just queued as the gateway's own: its completion
    /// message is not for the client.
    pub fn mark_last_silent(&mut self) {
        if let Some(e) = self.pending.back_mut() {
            e.silent = true;
        }
    }

    /// Where an error at the front stops: the front itself when it is a
    /// simple Query or FunctionCall (their own error), else the next Sync,
    /// up to which the server skips everything, a Query or FunctionCall
    /// included (`ignore_till_sync`). `None`: no Sync queued yet.
    pub fn error_skips_to(&self) -> Option<u64> {
        let front = self.pending.front()?;
        if front.pending.ends_with_ready().is_some() {
            return Some(front.id);
        }
        self.pending
            .iter()
            .find(|e| matches!(e.pending, Pending::Sync(_)))
            .map(|e| e.id)
    }

    fn push(&mut self, pending: Pending) {
        self.pending.push_back(Entry {
            id: self.next_id,
            pending,
            silent: false,
        });
        self.next_id += 1;
    }

    /// Records the gateway's own Parse of a text its grammar rejected (see
    /// [`Pending::SyntaxCheck`]); its completion is not for the client.
    pub fn on_syntax_check(&mut self, refusal: Bytes) {
        self.push(Pending::SyntaxCheck(refusal));
        self.mark_last_silent();
    }

    /// Records a Describe the gateway sent itself (see [`DescribeOrigin`]).
    pub fn on_gateway_describe(
        &mut self,
        target: Target,
        record: Option<RecordId>,
        origin: DescribeOrigin,
    ) {
        self.push(Pending::Describe {
            target,
            record,
            origin,
        });
    }

    /// A client message sent on to the server, with the records the
    /// client's order resolved it to.
    pub fn on_client_frame(&mut self, request: Request, about: About, now: Instant) -> Started {
        if self.server_skipping.is_some()
            && matches!(request, Request::Query | Request::FunctionCall { .. })
        {
            // PostgreSQL ignores these too while it skips to the Sync
            // (`ignore_till_sync`): no answer comes, and what a Query would
            // have prepared in SQL, it did not. It still gets an id, so its
            // record is completed (as not run) with the next answer.
            self.statement_refused();
            self.next_id += 1;
            return Started::Statement;
        }
        match request {
            Request::Query | Request::Sync | Request::FunctionCall { .. } => {
                self.at_sync_point = true
            }
            Request::Parse
            | Request::Bind
            | Request::Describe(_)
            | Request::Execute
            | Request::Close => self.at_sync_point = false,
            _ => {}
        }
        let pending = match request {
            Request::Query => {
                self.simple_row_description = None;
                self.simple_shape = None;
                let effects = std::mem::take(&mut self.unsent);
                self.running.push_back((self.next_id, effects));
                Pending::Query(now)
            }
            Request::Parse => Pending::Parse(about.statement()),
            Request::Bind => Pending::Bind(about.portal()),
            Request::Describe(Some(target)) => Pending::Describe {
                target,
                record: match target {
                    Target::Statement => about.statement(),
                    Target::Portal => about.portal(),
                },
                origin: DescribeOrigin::Client,
            },
            // Another subtype: the server answers with an error.
            Request::Describe(None) => Pending::Close(None),
            Request::Close => Pending::Close(match about {
                About::Statement(id) => Some((Target::Statement, id, self.batch)),
                About::Portal(id) => Some((Target::Portal, id, self.batch)),
                About::Nothing => None,
            }),
            Request::Execute => {
                let effects = std::mem::take(&mut self.unsent);
                if self.server_skipping.is_some() {
                    // Skipped by the server (below): its SQL never ran.
                    self.undo(effects);
                } else if !effects.is_empty() {
                    self.running.push_back((self.next_id, effects));
                }
                Pending::Execute(about.portal())
            }
            Request::Sync => Pending::Sync(now),
            Request::FunctionCall { binary } => Pending::FunctionCall {
                started: now,
                binary,
            },
            Request::Flush | Request::Terminate | Request::Other => return Started::Nothing,
        };
        if let Some(portal) = about.portal().and_then(|id| self.portals.get_mut(id)) {
            portal.sent.get_or_insert(self.next_id);
        }
        if pending.ends_with_ready().is_some() {
            self.ready_asked = Some(self.next_id);
        }
        if matches!(
            pending,
            Pending::Query(_) | Pending::Execute(_) | Pending::FunctionCall { .. }
        ) {
            self.statement_sent = Some(self.next_id);
        }
        if self.server_skipping.is_some() {
            // Sent into a batch the server already failed: skipped without
            // an answer, as if the error had come after it.
            match &pending {
                Pending::Sync(_) => self.server_skipping = None,
                other => self.skipped(other),
            }
        }
        self.push(pending);
        if matches!(
            request,
            Request::Query | Request::Sync | Request::FunctionCall { .. }
        ) {
            self.batch += 1;
        }
        match request {
            Request::Query | Request::Execute | Request::FunctionCall { .. } => Started::Statement,
            _ => Started::Nothing,
        }
    }

    /// Updates the state from a server message; returns the duration of a
    /// request that just completed (ReadyForQuery).
    pub fn on_server_frame(&mut self, message: &Backend<'_>, now: Instant) -> Option<Duration> {
        match message {
            Backend::ReadyForQuery { status } => {
                self.transaction_status = *status;
                self.simple_row_description = None;
                self.simple_shape = None;
                let mut took = None;
                let mut ended = None;
                while let Some(e) = self.pending.pop_front() {
                    self.settle(e.id);
                    if let Some(started) = e.pending.ends_with_ready() {
                        took = Some(now.saturating_duration_since(started));
                        ended = Some(e.id);
                        break;
                    }
                }
                if ended.is_some() {
                    self.ready_through = ended;
                }
                if *status == IDLE {
                    // The transaction's end closed the portals made before
                    // it (not those of requests still queued).
                    if let Some(ended) = ended {
                        let Records { by_id, names, .. } = &mut self.portals;
                        names.retain(|_, id| {
                            by_id
                                .get(id)
                                .is_none_or(|p| p.sent.is_none_or(|sent| sent >= ended))
                        });
                    }
                }
                let unnamed = |records: usize, names: usize| records > names;
                if self.pending.is_empty()
                    && (unnamed(self.portals.by_id.len(), self.portals.names.len())
                        || unnamed(self.statements.by_id.len(), self.statements.names.len()))
                {
                    self.collect();
                }
                return took;
            }
            Backend::ParameterStatus { name, value } => self.reading.note(name, value),
            Backend::ParseComplete | Backend::BindComplete | Backend::CloseComplete => {
                match self.pending.pop_front().map(|e| e.pending) {
                    Some(Pending::Parse(Some(id))) => self.statements.confirm(id),
                    Some(Pending::Bind(Some(id))) => self.portals.confirm(id),
                    _ => {}
                }
            }
            Backend::RowDescription(_) | Backend::NoData => {
                let description = match message {
                    Backend::RowDescription(body) => Some(Bytes::copy_from_slice(body)),
                    _ => None,
                };
                match self.pending.front().map(|e| &e.pending) {
                    Some(Pending::Describe { target, record, .. }) => {
                        match (target, record) {
                            (Target::Statement, Some(id)) => {
                                if let Some(s) = self.statements.get_mut(*id) {
                                    s.description = Some(description);
                                }
                            }
                            (Target::Portal, Some(id)) => {
                                if let Some(p) = self.portals.get_mut(*id) {
                                    p.description = Some(description);
                                    p.shape = None;
                                }
                            }
                            _ => {}
                        }
                        self.pending.pop_front();
                    }
                    // A Query's result set (and whatever else streams rows
                    // with a description of their own).
                    _ => {
                        self.simple_row_description = description;
                        self.simple_shape = None;
                    }
                }
            }
            Backend::CommandComplete { tag } if matches!(self.front(), Some(Pending::Query(_))) => {
                self.completed(tag);
            }
            m if m.ends_execute() && matches!(self.front(), Some(Pending::ReadingCheck(_))) => {
                self.pending.pop_front();
            }
            m if m.ends_execute() && matches!(self.front(), Some(Pending::Execute(_))) => {
                if let Backend::CommandComplete { tag } = m {
                    self.completed(tag);
                }
                // What it did not complete did not happen.
                if let Some(e) = self.pending.pop_front() {
                    self.settle(e.id);
                }
            }
            Backend::ErrorResponse(body) => {
                // The front request failed; the server skips everything up
                // to the next Sync. A refused Parse or Bind leaves its name
                // meaning what it meant (a named statement or portal that
                // existed stays; a failed Parse of the unnamed statement
                // dropped the old one first); a skipped one never happened.
                let own = self
                    .pending
                    .front()
                    .is_some_and(|e| e.pending.ends_with_ready().is_some());
                let mut failed = true;
                let mut extended = false;
                while let Some(front) = self.pending.front().filter(|_| !own) {
                    if let Pending::Sync(_) = front.pending {
                        break;
                    }
                    extended = true;
                    if let Some(e) = self.pending.pop_front() {
                        match e.pending {
                            Pending::Parse(Some(id)) if failed => {
                                let unnamed =
                                    self.statements.get(id).is_some_and(|s| s.name.is_empty());
                                self.statements.refused(id, !unnamed);
                            }
                            // Failed, or ignored by the server: its SQL
                            // PREPAREs never ran.
                            Pending::Query(_) | Pending::Execute(_) => self.ignored(e.id),
                            other => self.skipped(&other),
                        }
                    }
                    failed = false;
                }
                // No Sync queued yet: what the client sends until its Sync
                // is skipped too, silently.
                if extended && self.pending.is_empty() {
                    self.server_skipping = Some(error_summary(body));
                }
            }
            _ => {}
        }
        None
    }

    /// A statement of the front request (a Query or an Execute) completed
    /// with `tag`: a `PREPARE` made its statement, and the names a
    /// `DEALLOCATE` or `DECLARE … CURSOR` dropped are gone for good.
    fn completed(&mut self, tag: &[u8]) {
        let front = self.front_id();
        let Some((_, effects)) = self.running.iter_mut().find(|(q, _)| Some(*q) == front) else {
            return;
        };
        match tag {
            b"PREPARE" => {
                if let Some(id) = effects.prepares.pop_front() {
                    self.statements.confirm(id);
                }
            }
            b"DEALLOCATE" | b"DEALLOCATE ALL" | b"DECLARE CURSOR" => {
                effects.drops.pop_front();
            }
            _ => {}
        }
    }

    /// Request `id` ran (up to an error, if any): the `PREPARE`s an error
    /// stopped never made their statements, and the names the statements
    /// it stopped would have dropped mean what they meant.
    fn settle(&mut self, id: u64) {
        if let Some(at) = self.running.iter().position(|(q, _)| *q == id) {
            if let Some((_, mut effects)) = self.running.remove(at) {
                self.undo_drops(&mut effects);
                for id in effects.prepares.into_iter().rev() {
                    self.statements.refused(id, true);
                }
            }
        }
    }

    /// Request `id` (a Query or Execute) failed before any of its
    /// statements completed, or the server ignored it while skipping to
    /// Sync: nothing of what it did to the session happened.
    fn ignored(&mut self, id: u64) {
        if let Some(at) = self.running.iter().position(|(q, _)| *q == id) {
            if let Some((_, effects)) = self.running.remove(at) {
                self.undo(effects);
            }
        }
    }

    /// A request the server skipped (after an error in its batch): a Parse
    /// or Bind never happened, a Close did not close.
    fn skipped(&mut self, pending: &Pending) {
        match *pending {
            Pending::Parse(Some(id)) => self.statements.refused(id, true),
            Pending::Bind(Some(id)) => self.portals.refused(id, true),
            Pending::Close(Some((Target::Statement, id, _))) => self.statements.reopened(id),
            Pending::Close(Some((Target::Portal, id, _))) => self.portals.reopened(id),
            _ => {}
        }
    }

    /// The SQLSTATE and message of the error that makes the server skip
    /// what the client sends until its next Sync (see
    /// [`ConnectionState::server_skipping`]).
    pub fn skipped_by_server(&self) -> Option<(&str, &str)> {
        self.server_skipping
            .as_ref()
            .map(|(code, message)| (code.as_str(), message.as_str()))
    }

    /// Where the description of `portal`'s rows comes from (`None`: not
    /// known — neither the portal nor the statement it was bound to was
    /// described).
    fn portal_description<'a>(&'a self, portal: &'a Portal) -> Option<PortalDescription<'a>> {
        if let Some(own) = &portal.description {
            return Some(PortalDescription::Own(own.as_ref()));
        }
        let statement = self.statements.get(portal.statement?)?;
        Some(PortalDescription::Statement(
            statement.description.as_ref()?.as_ref(),
        ))
    }

    /// The shape of the rows the request at the front (an Execute) is
    /// returning: made once with `make` from the portal's description (see
    /// [`PortalDescription`]) and its result formats, then kept with the
    /// portal. `None`: not an Execute, or its rows' description is not
    /// known. Called for every DataRow: one lookup once the shape is made.
    pub fn execute_shape<E>(
        &mut self,
        make: impl FnOnce(PortalDescription<'_>, &[i16]) -> Result<Option<Arc<RowShape>>, E>,
    ) -> Result<Option<&RowShape>, E> {
        let Some(Pending::Execute(Some(id))) = self.front() else {
            return Ok(None);
        };
        let id = *id;
        let Some(p) = self.portals.get(id) else {
            return Ok(None);
        };
        if p.shape.is_none() {
            let Some(description) = self.portal_description(p) else {
                return Ok(None);
            };
            let shape = make(description, &p.result_formats)?;
            if let Some(p) = self.portals.get_mut(id) {
                p.shape = Some(shape);
            }
        }
        Ok(self
            .portals
            .get(id)
            .and_then(|p| p.shape.as_ref())
            .and_then(Option::as_deref))
    }

    /// The row description that applies to the rows of the Execute at the
    /// front (their column names; the formats may be the statement's).
    pub fn execute_row_description(&self) -> Option<&Bytes> {
        let Some(Pending::Execute(Some(id))) = self.front() else {
            return None;
        };
        match self.portal_description(self.portals.get(*id)?)? {
            PortalDescription::Own(description) | PortalDescription::Statement(description) => {
                description
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::put_message;
    use crate::protocol::frontend;
    use crate::protocol::split_frame;
    use bytes::BytesMut;

    fn backend(tag: u8, body: &[u8]) -> crate::protocol::Frame {
        let mut b = BytesMut::new();
        put_message(&mut b, tag, body);
        split_frame(&mut b, 1 << 20).unwrap().unwrap()
    }

    /// The client's side and the sending of one message, as the relay does.
    fn client(s: &mut ConnectionState, frame: &crate::protocol::Frame) -> About {
        let now = Instant::now();
        let message = Frontend::read(frame).unwrap();
        assert!(!s.must_wait(&message), "{message:?} would wait");
        let about = match message {
            Frontend::Query { .. } => {
                s.query();
                About::Nothing
            }
            Frontend::Parse(p) => About::Statement(s.prepare(
                p.name,
                Prepared::Parse {
                    sql: Bytes::copy_from_slice(p.sql),
                    strings: StringLiterals::Standard,
                    needs_review: false,
                },
            )),
            Frontend::Bind(b) => {
                let (statement, _) = s.statement(b.statement).expect("statement known");
                About::Portal(s.bind(
                    b.portal,
                    statement,
                    Bytes::new(),
                    b.result_formats().collect(),
                ))
            }
            Frontend::Describe {
                target: Some(t),
                name,
            } => s.describe(t, name),
            Frontend::Execute { portal, .. } => About::Portal(s.execute(portal).portal),
            Frontend::Close {
                target: Some(t),
                name,
            } => s.close(t, name),
            _ => About::Nothing,
        };
        s.on_client_frame(Request::of(&message), about, now);
        about
    }

    fn server(s: &mut ConnectionState, tag: u8, body: &[u8]) -> Option<Duration> {
        let frame = backend(tag, body);
        s.on_server_frame(&Backend::read(&frame).unwrap(), Instant::now())
    }

    fn sql_of(s: &ConnectionState, name: &[u8]) -> Option<Vec<u8>> {
        match &s.statement(name)?.1.prepared {
            Prepared::Parse { sql, .. } => Some(sql.to_vec()),
            Prepared::Sql(_) => None,
        }
    }

    fn bind(portal: &[u8], statement: &[u8]) -> crate::protocol::Frame {
        frontend::bind(&frontend::Bind::empty(portal, statement))
    }

    #[test]
    fn describe_results_attach_to_statements_and_portals() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s1", b"select 1"));
        client(&mut s, &frontend::describe(Target::Statement, b"s1"));
        client(&mut s, &bind(b"p1", b"s1"));
        let executed = client(&mut s, &frontend::execute(b"p1", 0));
        client(&mut s, &frontend::sync());
        assert!(!s.is_idle());
        server(&mut s, b'1', b"");
        server(&mut s, b't', b"\0\0");
        server(&mut s, b'T', b"rowdesc");
        server(&mut s, b'2', b"");
        assert_eq!(s.front(), Some(&Pending::Execute(executed.portal())));
        assert_eq!(
            s.execute_row_description().map(|b| &b[..]),
            Some(&b"rowdesc"[..])
        );
        server(&mut s, b'C', b"SELECT 1\0");
        assert!(server(&mut s, b'Z', b"I").is_some());
        assert!(s.is_idle());
    }

    #[test]
    fn a_portal_keeps_the_statement_it_was_bound_to() {
        let mut s = ConnectionState::new();
        // Described, bound, then replaced by another Parse of the unnamed
        // statement, described too.
        client(&mut s, &frontend::parse(b"", b"select card"));
        client(&mut s, &frontend::describe(Target::Statement, b""));
        client(&mut s, &bind(b"p", b""));
        client(&mut s, &frontend::parse(b"", b"select 1"));
        client(&mut s, &frontend::describe(Target::Statement, b""));
        client(&mut s, &bind(b"q", b""));
        let p = client(&mut s, &frontend::execute(b"p", 0));
        let q = client(&mut s, &frontend::execute(b"q", 0));
        client(&mut s, &frontend::sync());
        for (t, b) in [
            (b'1', &b""[..]),
            (b't', b"\0\0"),
            (b'T', b"card"),
            (b'2', b""),
            (b'1', b""),
            (b't', b"\0\0"),
            (b'T', b"one"),
            (b'2', b""),
        ] {
            server(&mut s, t, b);
        }
        assert_eq!(s.front(), Some(&Pending::Execute(p.portal())));
        assert_eq!(
            s.execute_row_description().map(|b| &b[..]),
            Some(&b"card"[..]),
            "p runs its own copy of the first statement"
        );
        server(&mut s, b'C', b"SELECT 1\0");
        assert_eq!(s.front(), Some(&Pending::Execute(q.portal())));
        assert_eq!(
            s.execute_row_description().map(|b| &b[..]),
            Some(&b"one"[..])
        );
    }

    /// Where a write may run while its record is written: only where the
    /// server said the block is open and nothing unanswered can end it.
    #[test]
    fn a_block_is_open_for_the_next_statement_only_until_a_statement_is_unanswered() {
        let mut s = ConnectionState::new();
        assert!(!s.in_open_block(), "no block yet");
        client(&mut s, &frontend::query(b"begin"));
        assert!(!s.in_open_block(), "BEGIN sent, not answered");
        server(&mut s, b'C', b"BEGIN\0");
        server(&mut s, b'Z', b"T");
        assert!(s.in_open_block());
        // Parse, Bind, Describe and Close cannot end the block.
        client(&mut s, &frontend::parse(b"s", b"update t set a = 1"));
        client(&mut s, &bind(b"p", b"s"));
        client(&mut s, &frontend::describe(Target::Portal, b"p"));
        assert!(s.in_open_block());
        // A statement or Sync sent and not answered might.
        client(&mut s, &frontend::execute(b"p", 0));
        assert!(!s.in_open_block(), "an Execute is unanswered");
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'2', b"");
        server(&mut s, b'n', b"");
        server(&mut s, b'C', b"UPDATE 1\0");
        assert!(!s.in_open_block(), "the Sync is unanswered");
        server(&mut s, b'Z', b"T");
        assert!(s.in_open_block());
        // A failed block is not open, nor one the gateway failed.
        client(&mut s, &frontend::query(b"select 1/0"));
        server(&mut s, b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
        server(&mut s, b'Z', b"E");
        assert!(!s.in_open_block());
        client(&mut s, &frontend::query(b"rollback"));
        server(&mut s, b'C', b"ROLLBACK\0");
        server(&mut s, b'Z', b"I");
        assert!(!s.in_open_block(), "outside a block");
        s.transaction_status = IN_TRANSACTION;
        s.failed_here = true;
        assert!(!s.in_open_block(), "failed by the gateway");
    }

    #[test]
    fn an_error_skips_to_the_next_sync() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"", b"bad"));
        client(&mut s, &bind(b"", b""));
        client(&mut s, &frontend::execute(b"", 0));
        client(&mut s, &frontend::sync());
        // The next batch reads SQL, which may name what that batch made:
        // it waits for the answers.
        let query = frontend::query(b"select 1");
        assert!(s.must_wait(&Frontend::read(&query).unwrap()));
        server(&mut s, b'E', b"SERROR\0\0");
        assert!(!s.is_idle(), "the Sync is still pending");
        server(&mut s, b'Z', b"I");
        assert!(s.is_idle());
        assert!(s.statement(b"").is_none(), "the failed Parse left nothing");
        client(&mut s, &query);
        server(&mut s, b'Z', b"I");
        assert!(s.is_idle());
    }

    #[test]
    fn what_a_client_sends_after_an_error_and_before_its_sync_is_skipped() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s", b"select 1"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        client(&mut s, &frontend::execute(b"missing", 0));
        // The server's error comes back before the rest of the batch is
        // sent: what follows is skipped without an answer.
        server(&mut s, b'E', b"SERROR\0C34000\0Mportal does not exist\0\0");
        assert_eq!(
            s.skipped_by_server(),
            Some(("34000", "portal does not exist"))
        );
        client(&mut s, &frontend::close(Target::Statement, b"s"));
        client(&mut s, &frontend::parse(b"t", b"select 2"));
        // A simple Query is ignored too: nothing answers it.
        let before = s.last_id();
        s.on_client_frame(Request::Query, About::Nothing, Instant::now());
        assert_ne!(s.last_id(), before, "it has an id of its own");
        client(&mut s, &frontend::sync());
        assert_eq!(s.skipped_by_server(), None);
        server(&mut s, b'Z', b"I");
        assert_eq!(
            sql_of(&s, b"s").as_deref(),
            Some(&b"select 1"[..]),
            "not closed"
        );
        assert!(s.statement(b"t").is_none(), "not prepared");
    }

    #[test]
    fn a_refused_parse_leaves_the_statement_that_was_there() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s", b"select planted"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        // Prepared again under the same name: the server refuses (42P05)
        // and keeps the first.
        client(&mut s, &frontend::parse(b"s", b"select harmless"));
        assert_eq!(sql_of(&s, b"s").as_deref(), Some(&b"select harmless"[..]));
        client(&mut s, &frontend::sync());
        // Bound in the next batch before the answer came: it waits.
        let bind_s = bind(b"", b"s");
        assert!(s.must_wait(&Frontend::read(&bind_s).unwrap()));
        server(&mut s, b'E', b"SERROR\0C42P05\0\0");
        server(&mut s, b'Z', b"I");
        assert_eq!(sql_of(&s, b"s").as_deref(), Some(&b"select planted"[..]));
        assert!(!s.must_wait(&Frontend::read(&bind_s).unwrap()));
    }

    #[test]
    fn a_skipped_parse_of_the_unnamed_statement_never_happened() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"", b"select first"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        // An error, then a Parse the server skips.
        client(&mut s, &frontend::describe(Target::Statement, b"missing"));
        client(&mut s, &frontend::parse(b"", b"select second"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'E', b"SERROR\0C26000\0\0");
        server(&mut s, b'Z', b"I");
        assert_eq!(sql_of(&s, b"").as_deref(), Some(&b"select first"[..]));
    }

    #[test]
    fn a_query_replaced_by_a_reviewer_keeps_only_its_drop_of_the_unnamed() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"", b"select unnamed"));
        client(&mut s, &frontend::parse(b"q", b"select old"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        // `DEALLOCATE q; PREPARE p AS …`, held for review, then replaced by
        // a text that prepares too: the held one's effects are not taken
        // for what the server did.
        s.query();
        s.deallocate(Some(b"q"));
        s.prepare(b"p", Prepared::Sql(Arc::new(StatementFacts::default())));
        s.statement_replaced();
        s.on_client_frame(Request::Query, About::Nothing, Instant::now());
        server(&mut s, b'C', b"DEALLOCATE\0");
        server(&mut s, b'C', b"PREPARE\0");
        server(&mut s, b'Z', b"I");
        assert!(
            s.statement(b"p").is_none(),
            "the replacement is not followed"
        );
        assert_eq!(sql_of(&s, b"q").as_deref(), Some(&b"select old"[..]));
        assert!(s.statement(b"").is_none(), "any Query drops the unnamed");
    }

    #[test]
    fn a_declare_that_does_not_complete_leaves_the_portal_there() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s", b"select 1"));
        client(&mut s, &bind(b"c", b"s"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'2', b"");
        server(&mut s, b'Z', &[IN_TRANSACTION]);
        let bound = s.portals.current(b"c");
        assert!(bound.is_some());
        let declare = |s: &mut ConnectionState| {
            s.query();
            s.declare_cursor(b"c");
            s.on_client_frame(Request::Query, About::Nothing, Instant::now());
        };
        // `DECLARE c CURSOR FOR …` while the portal exists: 42P03.
        declare(&mut s);
        assert!(
            s.portals.current(b"c").is_none(),
            "gone in the client's order"
        );
        assert!(
            s.must_wait(&Frontend::read(&frontend::execute(b"c", 0)).unwrap()),
            "an Execute of it waits for the answer"
        );
        server(&mut s, b'E', b"SERROR\0C42P03\0\0");
        server(&mut s, b'Z', b"E");
        assert_eq!(s.portals.current(b"c"), bound, "the server kept it");
        // Completed, the name is the cursor's.
        declare(&mut s);
        server(&mut s, b'C', b"DECLARE CURSOR\0");
        server(&mut s, b'Z', &[IN_TRANSACTION]);
        assert!(s.portals.current(b"c").is_none());
    }

    #[test]
    fn a_transaction_end_closes_the_portals_made_before_it() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s", b"select 1"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        client(&mut s, &bind(b"p", b"s"));
        client(&mut s, &frontend::sync());
        // Bound again after the Sync, before its answer.
        client(&mut s, &bind(b"p2", b"s"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'2', b"");
        server(&mut s, b'Z', b"I");
        assert!(s.portals.current(b"p").is_none());
        assert!(s.portals.current(b"p2").is_some(), "bound after that Sync");
        server(&mut s, b'2', b"");
        server(&mut s, b'Z', &[IN_TRANSACTION]);
        assert!(s.portals.current(b"p2").is_some(), "still in a transaction");
    }

    #[test]
    fn records_nothing_needs_are_dropped() {
        let mut s = ConnectionState::new();
        client(&mut s, &frontend::parse(b"s", b"select 1"));
        client(&mut s, &frontend::sync());
        server(&mut s, b'1', b"");
        server(&mut s, b'Z', b"I");
        for _ in 0..1000 {
            client(&mut s, &bind(b"", b"s"));
            client(&mut s, &frontend::execute(b"", 0));
            client(&mut s, &frontend::sync());
            server(&mut s, b'2', b"");
            server(&mut s, b'C', b"SELECT 1\0");
            server(&mut s, b'Z', b"I");
        }
        assert!(s.portals.by_id.len() <= 1, "{}", s.portals.by_id.len());
        assert_eq!(s.statements.by_id.len(), 1);
    }

    /// A client that pipelines random batches of Parse, Bind, Describe,
    /// Execute and Close (often several batches before any answer) against
    /// a server that follows PostgreSQL's rules (a named statement or
    /// portal that exists is refused, an unnamed one replaced, an error
    /// skips to Sync, a transaction's end closes the portals, and some
    /// messages fail at random). The model must judge every Execute on the
    /// very statement the server then runs, and a row description it gives
    /// for an Execute's rows must be that statement's. Messages wait where
    /// `must_wait` says, and never once every answer is in.
    #[test]
    fn the_model_judges_what_the_server_runs_under_random_pipelines() {
        for seed in [0x9e37_79b9_7f4a_7c15, 1, 2, 3, 0xdead_beef] {
            simulate_pipelines(seed);
        }
    }

    /// One run of the test above, from `seed`.
    fn simulate_pipelines(seed: u64) {
        use std::collections::{HashMap, VecDeque};

        /// What the server answers one message with, and what it checks.
        enum Sent {
            Parse(Vec<u8>, Vec<u8>),
            Bind(Vec<u8>, Vec<u8>),
            Describe(Target, Vec<u8>),
            /// The portal, and what the model judged it runs (`None`: a
            /// cursor).
            Execute(Vec<u8>, Option<Vec<u8>>),
            Close(Target, Vec<u8>),
            /// The gateway's stand-in for its refusal of a Bind of a
            /// statement it does not know (named): always fails.
            StandIn(Vec<u8>),
            Sync,
            Query(Sql),
        }

        /// The simple Queries the client sends.
        #[derive(Debug, Clone)]
        enum Sql {
            Begin,
            Commit,
            Rollback,
            Select,
            /// `PREPARE name AS …` of this text.
            Prepare(Vec<u8>, Vec<u8>),
            /// `DEALLOCATE name` (`None`: `ALL`).
            Deallocate(Option<Vec<u8>>),
        }

        #[derive(Default)]
        struct Server {
            statements: HashMap<Vec<u8>, Vec<u8>>,
            portals: HashMap<Vec<u8>, Vec<u8>>,
            skipping: bool,
            /// b'T' in a transaction block, b'E' failed in one, else idle.
            block: u8,
        }

        impl Server {
            /// An error: a block fails, and after an extended-protocol
            /// message everything up to Sync is skipped.
            fn error(&mut self, extended: bool) {
                if self.block == b'T' {
                    self.block = b'E';
                }
                self.skipping |= extended;
            }

            /// The status ReadyForQuery reports; outside a block the
            /// implicit transaction ended, and its portals with it.
            fn ready(&mut self) -> u8 {
                match self.block {
                    b'T' | b'E' => self.block,
                    _ => {
                        self.portals.clear();
                        b'I'
                    }
                }
            }
        }

        // The last messages and answers, for a failure's message.
        thread_local!(static TRACE: std::cell::RefCell<VecDeque<String>> = const {
            std::cell::RefCell::new(VecDeque::new())
        });
        let trace = |line: String| {
            TRACE.with(|t| {
                let mut t = t.borrow_mut();
                if t.len() == 80 {
                    t.pop_front();
                }
                t.push_back(line);
            })
        };
        let dump = || TRACE.with(|t| t.borrow().iter().cloned().collect::<Vec<_>>().join("\n"));
        let mut seed = seed;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names: [&[u8]; 3] = [b"", b"a", b"b"];
        let portals: [&[u8]; 3] = [b"", b"p", b"q"];
        let mut state = ConnectionState::new();
        let mut server = Server::default();
        let mut queue: VecDeque<Sent> = VecDeque::new();
        let mut texts = 0u32;
        // The text of each statement prepared in SQL, by its facts.
        let mut prepared_in_sql: HashMap<usize, Vec<u8>> = HashMap::new();
        let (mut executed, mut checked_descriptions, mut waits) = (0, 0, 0);

        // The server answers everything queued, in order; the model reads
        // each answer.
        let answer = |state: &mut ConnectionState,
                      server: &mut Server,
                      queue: &mut VecDeque<Sent>,
                      random: &mut dyn FnMut(u64) -> u64,
                      executed: &mut u32,
                      checked: &mut u32| {
            let read = |state: &mut ConnectionState, tag: u8, body: &[u8]| {
                trace(format!(
                    "  S {} {}",
                    tag as char,
                    String::from_utf8_lossy(body)
                ));
                let frame = backend(tag, body);
                state.on_server_frame(&Backend::read(&frame).unwrap(), Instant::now());
            };
            let error = b"SERROR\0CXX000\0\0";
            while let Some(sent) = queue.pop_front() {
                if server.skipping && !matches!(sent, Sent::Sync) {
                    trace("  S (skips one)".to_owned());
                    continue;
                }
                let fail = random(100) < 4;
                match sent {
                    Sent::Sync => {
                        server.skipping = false;
                        let status = server.ready();
                        read(state, b'Z', &[status]);
                    }
                    Sent::Query(sql) => {
                        // A simple Query drops the unnamed statement and
                        // portal, and runs in the block or in a transaction
                        // of its own.
                        server.statements.remove(&b""[..]);
                        server.portals.remove(&b""[..]);
                        let failed =
                            server.block == b'E' && !matches!(sql, Sql::Commit | Sql::Rollback);
                        let ok = match sql {
                            _ if failed => false,
                            Sql::Begin => {
                                server.block = b'T';
                                true
                            }
                            Sql::Commit | Sql::Rollback => {
                                server.block = b'I';
                                true
                            }
                            Sql::Select => true,
                            Sql::Prepare(name, text) => match server.statements.entry(name) {
                                std::collections::hash_map::Entry::Occupied(_) => false,
                                std::collections::hash_map::Entry::Vacant(free) => {
                                    free.insert(text);
                                    read(state, b'C', b"PREPARE\0");
                                    true
                                }
                            },
                            // 26000 for a statement that does not exist.
                            Sql::Deallocate(Some(name)) => {
                                let dropped = server.statements.remove(&name).is_some();
                                if dropped {
                                    read(state, b'C', b"DEALLOCATE\0");
                                }
                                dropped
                            }
                            Sql::Deallocate(None) => {
                                server.statements.clear();
                                read(state, b'C', b"DEALLOCATE ALL\0");
                                true
                            }
                        };
                        if ok {
                            read(state, b'C', b"OK\0");
                        } else {
                            server.error(false);
                            read(state, b'E', error);
                        }
                        let status = server.ready();
                        read(state, b'Z', &[status]);
                    }
                    Sent::StandIn(statement) => {
                        // Refused only where the server would have refused
                        // it too: no legitimate work is turned away.
                        assert!(
                            !server.statements.contains_key(&statement),
                            "the gateway refused a Bind of {:?}, which the server holds\n{}",
                            String::from_utf8_lossy(&statement),
                            dump()
                        );
                        server.error(true);
                        read(state, b'E', error);
                    }
                    Sent::Parse(name, sql) => {
                        if name.is_empty() {
                            server.statements.remove(&name);
                        }
                        if fail || server.block == b'E' || server.statements.contains_key(&name) {
                            server.error(true);
                            read(state, b'E', error);
                        } else {
                            server.statements.insert(name, sql);
                            read(state, b'1', b"");
                        }
                    }
                    Sent::Bind(portal, statement) => {
                        let exists = !portal.is_empty() && server.portals.contains_key(&portal);
                        match server.statements.get(&statement) {
                            Some(sql) if !fail && !exists && server.block != b'E' => {
                                server.portals.insert(portal, sql.clone());
                                read(state, b'2', b"");
                            }
                            _ => {
                                server.error(true);
                                read(state, b'E', error);
                            }
                        }
                    }
                    Sent::Describe(target, name) => {
                        let found = match target {
                            Target::Statement => server.statements.get(&name),
                            Target::Portal => server.portals.get(&name),
                        };
                        match found.cloned().filter(|_| server.block != b'E') {
                            Some(sql) => {
                                if target == Target::Statement {
                                    read(state, b't', b"\0\0");
                                }
                                read(state, b'T', &sql);
                            }
                            None => {
                                server.error(true);
                                read(state, b'E', error);
                            }
                        }
                    }
                    Sent::Execute(portal, judged) => match server.portals.get(&portal).cloned() {
                        Some(runs) if !fail && server.block != b'E' => {
                            assert_eq!(
                                judged.as_deref(),
                                Some(&runs[..]),
                                "judged {:?}, the server runs {:?}\n{}",
                                judged.as_deref().map(String::from_utf8_lossy),
                                String::from_utf8_lossy(&runs),
                                dump()
                            );
                            if let Some(description) = state.execute_row_description() {
                                assert_eq!(
                                    &description[..],
                                    &runs[..],
                                    "rows described as another statement's"
                                );
                                *checked += 1;
                            }
                            *executed += 1;
                            // SQL that changes names, sent with Parse.
                            let words: Vec<&[u8]> = runs.splitn(4, |b| *b == b' ').collect();
                            let (ok, tag): (bool, &[u8]) = match words[..] {
                                [b"prepare", name, b"as", text] => {
                                    let free = !server.statements.contains_key(name);
                                    if free {
                                        server.statements.insert(name.to_vec(), text.to_vec());
                                    }
                                    (free, b"PREPARE\0")
                                }
                                [b"deallocate", b"all"] => {
                                    server.statements.clear();
                                    (true, b"DEALLOCATE ALL\0")
                                }
                                [b"deallocate", name] => {
                                    (server.statements.remove(name).is_some(), b"DEALLOCATE\0")
                                }
                                _ => (true, b"SELECT 1\0"),
                            };
                            if ok {
                                read(state, b'C', tag);
                            } else {
                                server.error(true);
                                read(state, b'E', error);
                            }
                        }
                        _ => {
                            server.error(true);
                            read(state, b'E', error);
                        }
                    },
                    Sent::Close(target, name) => {
                        match target {
                            Target::Statement => server.statements.remove(&name),
                            Target::Portal => server.portals.remove(&name),
                        };
                        read(state, b'3', b"");
                    }
                }
            }
        };

        for _ in 0..20_000 {
            let batch = 1 + random(6);
            let mut refused = false;
            for _ in 0..batch {
                let mut query_sql = None;
                let pick = random(14);
                let name = names[random(3) as usize].to_vec();
                let portal = portals[random(3) as usize].to_vec();
                let frame = match pick {
                    0..=2 => {
                        texts += 1;
                        let other = ["a", "b"][random(2) as usize];
                        let sql = match random(8) {
                            0 => format!("prepare {other} as prepared {texts}"),
                            1 if random(4) == 0 => "deallocate all".to_owned(),
                            1 => format!("deallocate {other}"),
                            _ => format!("select {texts}"),
                        };
                        frontend::parse(&name, sql.as_bytes())
                    }
                    3..=5 => bind(&portal, &name),
                    6 => frontend::describe(Target::Statement, &name),
                    7 => frontend::describe(Target::Portal, &portal),
                    8..=10 => frontend::execute(&portal, 0),
                    11 if random(2) == 0 => frontend::close(Target::Statement, &name),
                    11 => frontend::close(Target::Portal, &portal),
                    _ => {
                        let sql = match random(7) {
                            0 => Sql::Begin,
                            1 => Sql::Commit,
                            2 => Sql::Rollback,
                            3 => Sql::Select,
                            4 if random(4) == 0 => Sql::Deallocate(None),
                            4 => Sql::Deallocate(Some(names[1 + random(2) as usize].to_vec())),
                            _ => {
                                texts += 1;
                                let name = names[1 + random(2) as usize].to_vec();
                                Sql::Prepare(name, format!("prepared {texts}").into_bytes())
                            }
                        };
                        query_sql = Some(sql);
                        frontend::query(b"a simple query")
                    }
                };
                let message = Frontend::read(&frame).unwrap();
                trace(format!(
                    "C {message:?}{}{}",
                    query_sql
                        .as_ref()
                        .map(|sql| format!(" {sql:?}"))
                        .unwrap_or_default(),
                    if refused { " (discarded)" } else { "" }
                ));
                if refused {
                    // Discarded up to Sync, as after any refusal.
                    continue;
                }
                if state.must_wait(&message) {
                    trace("C (waits)".to_owned());
                    waits += 1;
                    answer(
                        &mut state,
                        &mut server,
                        &mut queue,
                        &mut random,
                        &mut executed,
                        &mut checked_descriptions,
                    );
                    assert!(
                        !state.must_wait(&message),
                        "still waiting with every answer in: {message:?} batch {}\nstatements {:?}\nportals {:?}\n{}",
                        state.batch,
                        state.statements.names.iter().map(|(n, id)| (String::from_utf8_lossy(n).into_owned(), *id, state.statements.get(*id).map(|r| (r.fate, String::from_utf8_lossy(match &r.prepared { Prepared::Parse { sql, .. } => &sql[..], _ => b"sql" }).into_owned())))).collect::<Vec<_>>(),
                        state.portals.names.iter().map(|(n, id)| (String::from_utf8_lossy(n).into_owned(), *id, state.portals.get(*id).map(|r| r.fate))).collect::<Vec<_>>(),
                        dump()
                    );
                }
                let (about, sent) = match message {
                    Frontend::Parse(p) => {
                        let id = state.prepare(
                            p.name,
                            Prepared::Parse {
                                sql: Bytes::copy_from_slice(p.sql),
                                strings: StringLiterals::Standard,
                                needs_review: false,
                            },
                        );
                        (
                            About::Statement(id),
                            Sent::Parse(p.name.to_vec(), p.sql.to_vec()),
                        )
                    }
                    Frontend::Bind(b) => match state.statement(b.statement) {
                        Some((id, _)) => (
                            About::Portal(state.bind(b.portal, id, Bytes::new(), Vec::new())),
                            Sent::Bind(b.portal.to_vec(), b.statement.to_vec()),
                        ),
                        None => {
                            // The gateway refuses it: a stand-in that fails.
                            refused = true;
                            state.on_gateway_describe(
                                Target::Statement,
                                None,
                                DescribeOrigin::FailTransaction,
                            );
                            queue.push_back(Sent::StandIn(b.statement.to_vec()));
                            continue;
                        }
                    },
                    Frontend::Describe {
                        target: Some(t),
                        name,
                    } => (state.describe(t, name), Sent::Describe(t, name.to_vec())),
                    Frontend::Execute { portal, .. } => {
                        let run = state.execute(portal);
                        let judged = match run.prepared {
                            Some(Prepared::Parse { sql, .. }) => {
                                // What the inspector does with SQL that
                                // changes names (`NameChange`).
                                let words: Vec<&[u8]> = sql.splitn(4, |b| *b == b' ').collect();
                                match words[..] {
                                    [b"prepare", name, b"as", text] => {
                                        let facts = Arc::new(StatementFacts::default());
                                        prepared_in_sql
                                            .insert(Arc::as_ptr(&facts) as usize, text.to_vec());
                                        state.prepare(name, Prepared::Sql(facts));
                                    }
                                    [b"deallocate", b"all"] => state.deallocate(None),
                                    [b"deallocate", name] => state.deallocate(Some(name)),
                                    _ => {}
                                }
                                Some(sql.to_vec())
                            }
                            Some(Prepared::Sql(facts)) => prepared_in_sql
                                .get(&(Arc::as_ptr(&facts) as usize))
                                .cloned(),
                            None => None,
                        };
                        (
                            About::Portal(run.portal),
                            Sent::Execute(portal.to_vec(), judged),
                        )
                    }
                    Frontend::Close {
                        target: Some(t),
                        name,
                    } => (state.close(t, name), Sent::Close(t, name.to_vec())),
                    Frontend::Query { .. } => {
                        let sql = query_sql.take().expect("a query's SQL");
                        state.query();
                        match &sql {
                            Sql::Prepare(name, text) => {
                                let facts = Arc::new(StatementFacts::default());
                                prepared_in_sql.insert(Arc::as_ptr(&facts) as usize, text.clone());
                                state.prepare(name, Prepared::Sql(facts));
                            }
                            Sql::Deallocate(name) => state.deallocate(name.as_deref()),
                            _ => {}
                        }
                        (About::Nothing, Sent::Query(sql))
                    }
                    other => unreachable!("{other:?}"),
                };
                state.on_client_frame(Request::of(&message), about, Instant::now());
                queue.push_back(sent);
            }
            trace("C Sync".to_owned());
            state.on_client_frame(Request::Sync, About::Nothing, Instant::now());
            queue.push_back(Sent::Sync);
            // Often the client goes on before the answers come.
            if random(3) == 0 {
                answer(
                    &mut state,
                    &mut server,
                    &mut queue,
                    &mut random,
                    &mut executed,
                    &mut checked_descriptions,
                );
                assert!(state.is_idle());
            }
        }
        answer(
            &mut state,
            &mut server,
            &mut queue,
            &mut random,
            &mut executed,
            &mut checked_descriptions,
        );
        // The run exercised what it is about.
        eprintln!(
            "{executed} executes, {checked_descriptions} row descriptions checked, {waits} waits"
        );
        assert!(executed > 150, "{executed} executes ran");
        assert!(
            checked_descriptions > 50,
            "{checked_descriptions} row descriptions checked"
        );
        assert!(waits > 10, "{waits} waits");
        assert!(state.portals.by_id.len() < 64 && state.statements.by_id.len() < 64);
    }
}
