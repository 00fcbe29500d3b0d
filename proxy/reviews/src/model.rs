//! What a review is: the request the gateway files, the review as stored
//! and shown, each reviewer's decision, and the outcome the held statement
//! gets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hoop_common::time::Timestamp;

/// What the gateway knows about a held statement when it asks for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRequest {
    /// OIDC subject of the requester.
    pub subject: String,
    pub groups: Vec<String>,
    pub session_id: String,
    /// Mapped database role.
    pub role: String,
    /// The statement with card-number literals masked: what reviewers see
    /// and what is stored.
    pub sql_masked: String,
    /// The statement with literals normalized, for matching grants. Never
    /// stored: only its SHA-256 is.
    pub normalized_sql: String,
    /// Name of the rule that said `review`.
    pub rule: String,
    /// The rule's message: why a person must look at this.
    pub reason: String,
    pub tables: Vec<String>,
    pub client_addr: String,
}

/// Where a review stands. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Denied,
    Modified,
    Expired,
    Withdrawn,
}

impl ReviewStatus {
    pub const ALL: [ReviewStatus; 6] = [
        ReviewStatus::Pending,
        ReviewStatus::Approved,
        ReviewStatus::Denied,
        ReviewStatus::Modified,
        ReviewStatus::Expired,
        ReviewStatus::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Denied => "denied",
            ReviewStatus::Modified => "modified",
            ReviewStatus::Expired => "expired",
            ReviewStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn is_final(self) -> bool {
        self != ReviewStatus::Pending
    }
}

impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ReviewStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown review status {text:?} (expected pending, approved, denied, modified, expired or withdrawn)"
                )
            })
    }
}

/// What one reviewer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Approve,
    Deny,
    Modify,
}

/// One reviewer's decision, kept on the review in the order made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewerDecision {
    pub reviewer: String,
    pub action: DecisionKind,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The replacement statement (`modify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The grant asked for (`approve`), as written (`"30m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_for: Option<String>,
}

/// A review as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    pub status: ReviewStatus,
    pub subject: String,
    pub groups: Vec<String>,
    pub session_id: String,
    pub role: String,
    pub client_addr: String,
    pub rule: String,
    /// Why the rule holds the statement.
    pub reason: String,
    /// The held statement, card numbers masked.
    pub sql: String,
    /// The reviewer's replacement, when modified (the original stays in `sql`).
    #[serde(default)]
    pub modified_sql: Option<String>,
    pub tables: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default)]
    pub decided_at: Option<Timestamp>,
    /// Distinct approvers needed.
    pub min_approvals: u32,
    #[serde(default)]
    pub decisions: Vec<ReviewerDecision>,
    /// Until when the requester may rerun the same statement under the same
    /// rule without a new review.
    #[serde(default)]
    pub grant_until: Option<Timestamp>,
    #[serde(default)]
    pub withdrawn_reason: Option<String>,
    /// SHA-256 (hex) of the normalized statement, to match grants.
    pub sql_fingerprint: String,
}

impl Review {
    /// Reviewers whose approval counts now: those who approved after the
    /// last modification, plus the one who modified (a modification is its
    /// author's approval of the new text).
    pub fn current_approvers(&self) -> Vec<String> {
        let mut approvers: Vec<String> = Vec::new();
        for decision in &self.decisions {
            match decision.action {
                DecisionKind::Modify => approvers = vec![decision.reviewer.clone()],
                DecisionKind::Approve => {
                    if !approvers.contains(&decision.reviewer) {
                        approvers.push(decision.reviewer.clone());
                    }
                }
                DecisionKind::Deny => {}
            }
        }
        approvers
    }

    /// What the held statement gets, once the review is final.
    pub fn outcome(&self) -> Option<ReviewOutcome> {
        let last = self.decisions.last();
        let last_of = |kind: DecisionKind| self.decisions.iter().rev().find(|d| d.action == kind);
        match self.status {
            ReviewStatus::Pending => None,
            ReviewStatus::Approved => Some(ReviewOutcome::Approved {
                reviewers: self.current_approvers(),
            }),
            ReviewStatus::Denied => {
                let deny = last_of(DecisionKind::Deny).or(last);
                Some(ReviewOutcome::Denied {
                    reviewer: deny.map(|d| d.reviewer.clone()).unwrap_or_default(),
                    reason: deny.and_then(|d| d.reason.clone()),
                })
            }
            ReviewStatus::Modified => Some(ReviewOutcome::Modified {
                reviewer: last_of(DecisionKind::Modify)
                    .map(|d| d.reviewer.clone())
                    .unwrap_or_default(),
                reviewers: self.current_approvers(),
                sql: self.modified_sql.clone().unwrap_or_default(),
            }),
            // A withdrawn review has nobody waiting; should a ticket still
            // look, the statement must not run.
            ReviewStatus::Expired | ReviewStatus::Withdrawn => Some(ReviewOutcome::Expired),
        }
    }
}

/// What happens to the held statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum ReviewOutcome {
    /// Forward the statement as it is.
    Approved { reviewers: Vec<String> },
    /// Refuse it: ErrorResponse 42501 naming the reviewer and the reason.
    Denied {
        reviewer: String,
        reason: Option<String>,
    },
    /// Run `sql` instead (it passed the policy check when it was submitted).
    Modified {
        reviewer: String,
        reviewers: Vec<String>,
        sql: String,
    },
    /// Nobody decided in time: ErrorResponse 57014 "review expired".
    Expired,
}

/// A grant that let a statement through without a new review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantUse {
    /// The review whose approval carried the grant.
    pub review_id: String,
    pub until: Timestamp,
    pub approvers: Vec<String>,
}

/// A duration as reviews show it (`5m`, `1h 30m`): whole seconds, at least one.
pub(crate) fn format_duration(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs().max(1))).to_string()
}
