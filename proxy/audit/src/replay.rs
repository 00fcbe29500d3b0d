//! `hoop audit replay`: a session as a timeline a person reads — who, from
//! where, each statement with its decision, outcome and recorded rows.

use std::fmt::Write as _;

use crate::chain::Entry;
use crate::record::{Action, Event, Record, RecordedDecision, StatementOutcome};

/// Renders the session's entries (any order; sorted by chain position).
pub(crate) fn render(session_id: &str, entries: &[Entry]) -> String {
    let mut entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.session_id.as_deref() == Some(session_id))
        .collect();
    entries.sort_by(|a, b| (&a.instance, a.seq).cmp(&(&b.instance, b.seq)));
    let mut out = String::new();
    let _ = writeln!(out, "Session {session_id}");
    for entry in entries {
        let record = match entry.record() {
            Ok(record) => record,
            Err(error) => {
                let _ = writeln!(
                    out,
                    "\n[{} #{}] unreadable {} entry: {error}",
                    entry.instance, entry.seq, entry.kind
                );
                continue;
            }
        };
        let _ = render_record(&mut out, entry, record);
    }
    out
}

fn render_record(out: &mut String, entry: &Entry, record: Record) -> std::fmt::Result {
    let at = format!("[{} #{}]", entry.instance, entry.seq);
    match record {
        Record::SessionStart(start) => {
            let identity = &start.identity;
            writeln!(out, "  gateway    {}", entry.instance)?;
            writeln!(
                out,
                "  subject    {} (issuer {})",
                identity.subject, identity.issuer
            )?;
            if let Some(client_id) = &identity.client_id {
                writeln!(out, "  client id  {client_id}")?;
            }
            writeln!(out, "  groups     {}", identity.groups.join(", "))?;
            writeln!(
                out,
                "  from       {} (application {})",
                start.client_addr,
                start.application_name.as_deref().unwrap_or("-")
            )?;
            writeln!(
                out,
                "  role       {} on database {}",
                start.role, start.database
            )?;
            writeln!(out, "  started    {}  {at}", start.started_at)?;
        }
        Record::SessionEnd(end) => {
            let reason = serde_json::to_value(end.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            writeln!(
                out,
                "\nended {} ({reason}{})  {at}",
                end.ended_at,
                end.detail.map(|d| format!(": {d}")).unwrap_or_default()
            )?;
        }
        Record::Statement(statement) => {
            writeln!(
                out,
                "\n#{} {} {}{}  {at}",
                statement.sequence,
                statement.received_at,
                statement.kind,
                if statement.tables.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", statement.tables.join(", "))
                }
            )?;
            writeln!(
                out,
                "    sql       {}",
                statement.sql.replace('\n', "\n              ")
            )?;
            if let Some(executed) = &statement.executed_sql {
                writeln!(
                    out,
                    "    ran       {}",
                    executed.replace('\n', "\n              ")
                )?;
            }
            for (index, param) in statement.params.iter().enumerate() {
                writeln!(
                    out,
                    "    ${:<8} {}",
                    index + 1,
                    param
                        .as_deref()
                        .map(|p| format!("'{p}'"))
                        .unwrap_or_else(|| "NULL".into())
                )?;
            }
            writeln!(
                out,
                "    decision  {}",
                describe_decision(&statement.decision)
            )?;
        }
        Record::StatementEnd(end) => {
            writeln!(
                out,
                "    outcome   {}  (#{} completed)  {at}",
                describe_outcome(&end.outcome),
                end.sequence
            )?;
            if !end.outcome.result_rows.is_empty() {
                writeln!(out, "    rows      {}", end.outcome.columns.join(" | "))?;
                for row in &end.outcome.result_rows {
                    let cells: Vec<&str> =
                        row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                    writeln!(out, "              {}", cells.join(" | "))?;
                }
            }
        }
        Record::Event(event) => {
            writeln!(out, "    event     {}  {at}", describe_event(&event))?;
        }
    }
    Ok(())
}

fn describe_decision(decision: &RecordedDecision) -> String {
    let mut text = match decision.action {
        Action::Allow => "allow".to_owned(),
        Action::Block => "BLOCK".to_owned(),
        Action::Review => "review".to_owned(),
    };
    if let Some(rule) = &decision.rule {
        let _ = write!(text, " (rule {rule})");
    }
    if let Some(review) = &decision.review_id {
        let _ = write!(text, ", review {review}");
    }
    if let Some(reviewer) = &decision.reviewer {
        let _ = write!(text, " approved by {reviewer}");
    }
    if let Some(reason) = &decision.reason {
        let _ = write!(text, ": {reason}");
    }
    text
}

fn describe_outcome(outcome: &StatementOutcome) -> String {
    let duration = format!("{:.3} ms", outcome.duration_us as f64 / 1000.0);
    match (&outcome.sqlstate, &outcome.command_tag) {
        (Some(state), _) => format!(
            "ERROR {state}: {}, {duration}",
            outcome.message.as_deref().unwrap_or("")
        ),
        (None, tag) => format!(
            "{}{}, {duration}",
            tag.as_deref().unwrap_or("OK"),
            outcome
                .rows
                .map(|r| format!(", {r} rows"))
                .unwrap_or_default()
        ),
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::ReviewCreated {
            review_id,
            rule,
            sequence,
            ..
        } => {
            format!("review {review_id} created for #{sequence} (rule {rule})")
        }
        Event::GrantUsed { grant, detail, .. } => {
            format!(
                "grant used: {grant}{}",
                detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        }
        other => serde_json::to_string(other).unwrap_or_else(|_| other.kind().to_owned()),
    }
}
