//! Evidence for an auditor: a directory that stands on its own.
//!
//! - `records.jsonl`: one chain entry per line, with the fields PCI DSS
//!   10.2.2 asks for pulled out (`user`, `event_type`, `time`, `success`,
//!   `origin`, `resource`, and the masked statement text in `sql`), plus the
//!   exact `payload`, `prev_hash` and `hash` the chain is built from;
//! - `checkpoints.jsonl`: the signed checkpoints that fall in the window;
//! - `checkpoint-keys.txt`: the public keys (`key_id:base64`);
//! - `manifest.json`: the window and where each chain starts in it;
//! - `README.md`: what each field means.
//!
//! [`verify_export`] recomputes everything from these files alone, and
//! checks that the convenience fields still say what the payload says.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainHash, Entry};
use crate::checkpoint::{Checkpoint, CheckpointKeys, CheckpointKind};
use crate::error::{AuditError, Result};
use crate::record::{Event, Record};
use crate::verify::{verify_chains, Problem, VerifyReport, WindowStart};
use hoop_common::time::Timestamp;

pub(crate) const RECORDS_FILE: &str = "records.jsonl";
pub(crate) const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub(crate) const KEYS_FILE: &str = "checkpoint-keys.txt";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
const README_FILE: &str = "README.md";
const FORMAT: &str = "hoop-audit-export/1";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFilter {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: u64,
    pub chains: BTreeMap<String, WindowStart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: String,
    created_at: Timestamp,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    chains: BTreeMap<String, WindowStart>,
}

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ExportLine {
    instance: String,
    seq: u64,
    time: Timestamp,
    event_type: String,
    session_id: Option<String>,
    /// OIDC subject of the session (or the reader, the reviewer…).
    user: Option<String>,
    /// Client address of the session, or the gateway instance.
    origin: Option<String>,
    /// `true`/`false` where the record has an outcome, else `null`.
    success: Option<bool>,
    /// Tables touched, or the review id / session concerned.
    resource: Vec<String>,
    /// Masked SQL of a statement.
    sql: Option<String>,
    /// The canonical payload exactly as hashed.
    payload: String,
    prev_hash: ChainHash,
    hash: ChainHash,
}

/// Who and where, from the session starts seen so far.
#[derive(Default)]
struct SessionIndex {
    sessions: HashMap<(String, String), (String, String)>,
}

impl ExportLine {
    fn from_entry(entry: &Entry, index: &mut SessionIndex) -> ExportLine {
        let mut line = ExportLine {
            instance: entry.instance.clone(),
            seq: entry.seq,
            time: entry.time,
            event_type: entry.kind.clone(),
            session_id: entry.session_id.clone(),
            user: None,
            origin: None,
            success: None,
            resource: Vec::new(),
            sql: None,
            payload: entry.payload.clone(),
            prev_hash: entry.prev_hash,
            hash: entry.hash,
        };
        if let (Some(session), Ok(Record::SessionStart(start))) =
            (&entry.session_id, entry.record())
        {
            index.sessions.insert(
                (entry.instance.clone(), session.clone()),
                (start.identity.subject.clone(), start.client_addr.clone()),
            );
        }
        if let Some(session) = &entry.session_id {
            if let Some((user, origin)) = index
                .sessions
                .get(&(entry.instance.clone(), session.clone()))
            {
                line.user = Some(user.clone());
                line.origin = Some(origin.clone());
            }
        }
        match entry.record() {
            Ok(Record::Statement(statement)) => {
                line.resource = statement.tables;
                line.sql = Some(statement.sql);
                line.success = Some(statement.decision.action == crate::record::Action::Allow);
            }
            Ok(Record::StatementEnd(end)) => line.success = Some(end.outcome.succeeded()),
            Ok(Record::Event(event)) => describe_event(&event, &entry.instance, &mut line),
            _ => {}
        }
        if line.origin.is_none() {
            line.origin = Some(entry.instance.clone());
        }
        line
    }

    fn entry(&self) -> Entry {
        Entry {
            instance: self.instance.clone(),
            seq: self.seq,
            time: self.time,
            kind: self.event_type.clone(),
            session_id: self.session_id.clone(),
            payload: self.payload.clone(),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

fn describe_event(event: &Event, instance: &str, line: &mut ExportLine) {
    match event {
        Event::LoginFailed {
            client_addr,
            subject,
            user_name,
            database,
            ..
        } => {
            line.user = subject.clone().or_else(|| user_name.clone());
            line.origin = Some(client_addr.clone());
            line.success = Some(false);
            line.resource = database.iter().cloned().collect();
        }
        Event::ConfigReloaded { ok, .. } => line.success = Some(*ok),
        Event::ReviewCreated { review_id, .. }
        | Event::ReviewExpired { review_id }
        | Event::ReviewWithdrawn { review_id, .. } => line.resource = vec![review_id.clone()],
        Event::ReviewDecided {
            review_id,
            reviewer,
            outcome,
            ..
        } => {
            line.user = Some(reviewer.clone());
            line.resource = vec![review_id.clone()];
            line.success = Some(*outcome != crate::record::ReviewOutcome::Denied);
        }
        Event::GrantUsed { subject, grant, .. } => {
            line.user = Some(subject.clone());
            line.resource = vec![grant.clone()];
        }
        Event::AuditRead { reader, action, .. } => {
            line.user = Some(reader.clone());
            line.resource = vec![format!("audit:{action}")];
            line.origin = Some(instance.to_owned());
        }
        _ => {}
    }
}

/// Writes an export of `entries` (one contiguous run per chain) and the
/// checkpoints that fall inside it.
pub(crate) fn write_export(
    dir: &Path,
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    keys: &CheckpointKeys,
    filter: &ExportFilter,
) -> Result<ExportSummary> {
    fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    let mut chains: BTreeMap<String, (WindowStart, u64)> = BTreeMap::new();
    for entry in entries {
        chains
            .entry(entry.instance.clone())
            .and_modify(|(_, last)| *last = (*last).max(entry.seq))
            .or_insert((
                WindowStart {
                    first_seq: entry.seq,
                    prev_hash: entry.prev_hash,
                },
                entry.seq,
            ));
    }

    let records_path = dir.join(RECORDS_FILE);
    let mut records = BufWriter::new(
        fs::File::create(&records_path).map_err(|e| AuditError::io(&records_path, e))?,
    );
    let mut index = SessionIndex::default();
    for entry in entries {
        let line = ExportLine::from_entry(entry, &mut index);
        write_json_line(&mut records, &line).map_err(|e| AuditError::io(&records_path, e))?;
    }
    records
        .flush()
        .map_err(|e| AuditError::io(&records_path, e))?;

    let included: Vec<&Checkpoint> = checkpoints
        .iter()
        .filter(|c| match chains.get(&c.instance) {
            Some((start, last)) => {
                let before_window = start.first_seq - 1;
                (c.length > before_window && c.length <= *last)
                    || (c.kind == CheckpointKind::PurgeAnchor && c.length == before_window)
            }
            None => false,
        })
        .collect();
    let checkpoints_path = dir.join(CHECKPOINTS_FILE);
    let mut out = BufWriter::new(
        fs::File::create(&checkpoints_path).map_err(|e| AuditError::io(&checkpoints_path, e))?,
    );
    for checkpoint in &included {
        write_json_line(&mut out, checkpoint).map_err(|e| AuditError::io(&checkpoints_path, e))?;
    }
    out.flush()
        .map_err(|e| AuditError::io(&checkpoints_path, e))?;

    write_file(&dir.join(KEYS_FILE), &keys.to_text())?;
    let windows: BTreeMap<String, WindowStart> = chains
        .into_iter()
        .map(|(instance, (start, _))| (instance, start))
        .collect();
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        created_at: Timestamp::now(),
        since: filter.since,
        until: filter.until,
        chains: windows.clone(),
    };
    let manifest_text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| AuditError::Malformed(format!("manifest: {e}")))?;
    write_file(&dir.join(MANIFEST_FILE), &manifest_text)?;
    write_file(&dir.join(README_FILE), EXPORT_README)?;
    Ok(ExportSummary {
        records: entries.len() as u64,
        checkpoints: included.len() as u64,
        chains: windows,
    })
}

/// What an export directory holds, read back.
pub(crate) struct LoadedExport {
    pub entries: Vec<Entry>,
    pub checkpoints: Vec<Checkpoint>,
    pub windows: BTreeMap<String, WindowStart>,
    /// Lines whose convenience fields disagree with their payload.
    pub inconsistent: Vec<Problem>,
}

pub(crate) fn read_export(dir: &Path) -> Result<LoadedExport> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_text =
        fs::read_to_string(&manifest_path).map_err(|e| AuditError::io(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&manifest_text)
        .map_err(|e| AuditError::Malformed(format!("{}: {e}", manifest_path.display())))?;
    if manifest.format != FORMAT {
        return Err(AuditError::Malformed(format!(
            "unknown export format {:?}",
            manifest.format
        )));
    }

    let records_path = dir.join(RECORDS_FILE);
    let records_text =
        fs::read_to_string(&records_path).map_err(|e| AuditError::io(&records_path, e))?;
    let mut entries = Vec::new();
    let mut inconsistent = Vec::new();
    let mut index = SessionIndex::default();
    for (number, text) in records_text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: ExportLine = serde_json::from_str(text).map_err(|e| {
            AuditError::Malformed(format!(
                "{} line {}: {e}",
                records_path.display(),
                number + 1
            ))
        })?;
        let entry = line.entry();
        if ExportLine::from_entry(&entry, &mut index) != line {
            inconsistent.push(Problem::Altered {
                instance: line.instance.clone(),
                seq: line.seq,
            });
        }
        entries.push(entry);
    }

    let checkpoints_path = dir.join(CHECKPOINTS_FILE);
    let checkpoints_text =
        fs::read_to_string(&checkpoints_path).map_err(|e| AuditError::io(&checkpoints_path, e))?;
    let checkpoints = checkpoints_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| AuditError::Malformed(format!("{}: {e}", checkpoints_path.display())))
        })
        .collect::<Result<Vec<Checkpoint>>>()?;
    Ok(LoadedExport {
        entries,
        checkpoints,
        windows: manifest.chains,
        inconsistent,
    })
}

/// Verifies an export offline with the public keys it ships
/// (`checkpoint-keys.txt`). Compare those keys with the ones you trust, or
/// use [`verify_export_with_keys`].
pub fn verify_export(dir: &Path) -> Result<VerifyReport> {
    let keys_path = dir.join(KEYS_FILE);
    let text = fs::read_to_string(&keys_path).map_err(|e| AuditError::io(&keys_path, e))?;
    verify_export_with_keys(dir, &CheckpointKeys::parse(&text)?)
}

/// Verifies an export offline against keys the auditor trusts.
pub fn verify_export_with_keys(dir: &Path, keys: &CheckpointKeys) -> Result<VerifyReport> {
    let loaded = read_export(dir)?;
    Ok(verify_loaded_export(&loaded, keys))
}

pub(crate) fn verify_loaded_export(loaded: &LoadedExport, keys: &CheckpointKeys) -> VerifyReport {
    let mut report = verify_chains(&loaded.entries, &loaded.checkpoints, keys, &loaded.windows);
    // A convenience field edited without its payload: name the first per chain.
    for problem in &loaded.inconsistent {
        if !report
            .problems
            .iter()
            .any(|p| p.instance() == problem.instance())
        {
            report.problems.push(problem.clone());
        }
    }
    report
}

fn write_json_line<T: Serialize>(out: &mut impl std::io::Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| AuditError::io(path, e))
}

const EXPORT_README: &str = r#"# hoop audit export

Produced by `hoop audit export`. Verify it offline with
`hoop audit verify <this directory>`; compare `checkpoint-keys.txt` with the
gateway's published checkpoint key first (or verify with your own copy).

## Files

| file | content |
|---|---|
| `records.jsonl` | one audit record per line, in chain order per gateway instance |
| `checkpoints.jsonl` | Ed25519-signed checkpoints (instance, length, head hash, time, key id) |
| `checkpoint-keys.txt` | public keys, `key_id:base64` |
| `manifest.json` | export window and the first record of each chain in it |

## PCI DSS 10.2.2: where each required detail is

| 10.2.2 detail | field in `records.jsonl` |
|---|---|
| user identification | `user` (OIDC subject of the session; reviewer; audit reader) |
| type of event | `event_type` (`session_start`, `statement`, `statement_end`, `session_end`, `login_failed`, `review_decided`, `audit_read`, …) |
| date and time | `time` (UTC, RFC 3339, microseconds) |
| success or failure | `success` (`statement`: allowed by policy; `statement_end`: executed without error; `login_failed`: false) |
| origination of event | `origin` (client address of the session, else the gateway instance) |
| identity or name of affected data, component, resource | `resource` (tables touched; review id; grant), and `sql`, the statement with card numbers masked |

Every record also carries `payload` (all recorded details as canonical JSON:
identity with issuer and groups, mapped role, bind parameters, decision and
rule, review id and reviewer, command tag, row count, SQLSTATE and message,
duration, recorded result rows), `prev_hash` and `hash`
(`hash = SHA-256(prev_hash || canonical record)`). A statement's outcome is
its own `statement_end` record whose payload names the `begin_seq` of its
`statement` record. Card numbers appear only masked (last four digits).
"#;
