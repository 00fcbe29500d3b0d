//! `hoop audit sessions`: one summary per session, filtered by time,
//! subject and table. Pure: works on entries from a store or an export.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::chain::Entry;
use crate::record::{Action, EndReason, Record};
use hoop_common::time::Timestamp;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// Sessions that started at or after this time.
    pub since: Option<Timestamp>,
    /// Sessions that started before this time.
    pub until: Option<Timestamp>,
    /// OIDC subject.
    pub subject: Option<String>,
    /// Sessions with at least one statement on this table (`schema.table`,
    /// or the bare table name).
    pub table: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub instance: String,
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    pub groups: Vec<String>,
    pub client_addr: String,
    pub application_name: Option<String>,
    pub role: String,
    pub database: String,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<EndReason>,
    pub statements: u64,
    pub blocked: u64,
    pub reviewed: u64,
    pub failed: u64,
    pub tables: BTreeSet<String>,
}

pub(crate) fn summarize(entries: &[Entry], filter: &SessionFilter) -> Vec<SessionSummary> {
    let mut sessions: BTreeMap<(String, String), SessionSummary> = BTreeMap::new();
    for entry in entries {
        let Some(session_id) = &entry.session_id else {
            continue;
        };
        let key = (entry.instance.clone(), session_id.clone());
        match entry.record() {
            Ok(Record::SessionStart(start)) => {
                sessions.insert(
                    key,
                    SessionSummary {
                        session_id: start.session_id,
                        instance: entry.instance.clone(),
                        issuer: start.identity.issuer,
                        subject: start.identity.subject,
                        client_id: start.identity.client_id,
                        groups: start.identity.groups,
                        client_addr: start.client_addr,
                        application_name: start.application_name,
                        role: start.role,
                        database: start.database,
                        started_at: start.started_at,
                        ended_at: None,
                        end_reason: None,
                        statements: 0,
                        blocked: 0,
                        reviewed: 0,
                        failed: 0,
                        tables: BTreeSet::new(),
                    },
                );
            }
            Ok(Record::SessionEnd(end)) => {
                if let Some(summary) = sessions.get_mut(&key) {
                    summary.ended_at = Some(end.ended_at);
                    summary.end_reason = Some(end.reason);
                }
            }
            Ok(Record::Statement(statement)) => {
                if let Some(summary) = sessions.get_mut(&key) {
                    summary.statements += 1;
                    match statement.decision.action {
                        Action::Allow => {}
                        Action::Block => summary.blocked += 1,
                        Action::Review => summary.reviewed += 1,
                    }
                    summary.tables.extend(statement.tables);
                }
            }
            Ok(Record::StatementEnd(end)) => {
                if let Some(summary) = sessions.get_mut(&key) {
                    if !end.outcome.succeeded() {
                        summary.failed += 1;
                    }
                }
            }
            Ok(Record::Event(_)) | Err(_) => {}
        }
    }
    let mut summaries: Vec<SessionSummary> = sessions
        .into_values()
        .filter(|s| filter.since.is_none_or(|since| s.started_at >= since))
        .filter(|s| filter.until.is_none_or(|until| s.started_at < until))
        .filter(|s| filter.subject.as_ref().is_none_or(|sub| &s.subject == sub))
        .filter(|s| {
            filter.table.as_ref().is_none_or(|wanted| {
                s.tables.iter().any(|table| {
                    table == wanted || table.rsplit('.').next() == Some(wanted.as_str())
                })
            })
        })
        .collect();
    summaries.sort_by(|a, b| (a.started_at, &a.session_id).cmp(&(b.started_at, &b.session_id)));
    summaries
}
