//! Every change to a review, as pure functions from the review as stored to
//! the review as it should be stored, plus the audit events that must be
//! recorded before the change is. The stores apply them atomically.

use std::time::Duration;

use crate::audit::ReviewEvent;
use crate::auth::Reviewer;
use crate::error::HubError;
use crate::model::{DecisionKind, Review, ReviewStatus, ReviewerDecision};
use hoop_common::time::Timestamp;

use crate::model::format_duration;

/// A review to store and the events to record first.
#[derive(Debug)]
pub(crate) struct Update {
    pub review: Review,
    pub events: Vec<ReviewEvent>,
}

/// What a reviewer asks for.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Approve {
        reason: Option<String>,
        grant_for: Option<Duration>,
    },
    Deny {
        reason: Option<String>,
    },
    Modify {
        sql: String,
        reason: Option<String>,
    },
}

/// The part of the configuration decisions depend on.
pub(crate) struct Rules<'a> {
    pub reviewer_groups: &'a [String],
}

/// Checks that `reviewer` may see and decide reviews at all.
pub(crate) fn check_reviewer(reviewer: &Reviewer, rules: &Rules<'_>) -> Result<(), HubError> {
    if reviewer
        .groups
        .iter()
        .any(|group| rules.reviewer_groups.contains(group))
    {
        Ok(())
    } else {
        Err(HubError::NotReviewer {
            subject: reviewer.subject.clone(),
            groups: rules.reviewer_groups.join(", "),
        })
    }
}

/// Applies one reviewer's decision. `policy` vets a replacement statement.
pub(crate) fn decide(
    review: &Review,
    reviewer: &Reviewer,
    action: &Action,
    now: Timestamp,
    rules: &Rules<'_>,
    policy: &dyn Fn(&str, &Review) -> Result<(), String>,
) -> Result<Update, HubError> {
    check_reviewer(reviewer, rules)?;
    if reviewer.subject == review.subject {
        return Err(HubError::OwnReview(reviewer.subject.clone()));
    }
    if review.status != ReviewStatus::Pending {
        return Err(HubError::NotPending {
            id: review.id.clone(),
            status: review.status,
        });
    }
    if now >= review.expires_at {
        return Err(HubError::Expired(review.id.clone()));
    }
    let mut next = review.clone();
    let decision = |action: DecisionKind, reason: &Option<String>| ReviewerDecision {
        reviewer: reviewer.subject.clone(),
        action,
        at: now,
        reason: reason.clone(),
        sql: None,
        grant_for: None,
    };
    let event = match action {
        Action::Approve { reason, grant_for } => {
            if review.current_approvers().contains(&reviewer.subject) {
                return Err(HubError::AlreadyApproved {
                    id: review.id.clone(),
                    reviewer: reviewer.subject.clone(),
                });
            }
            let grant_text = grant_for.map(format_duration);
            next.decisions.push(ReviewerDecision {
                grant_for: grant_text.clone(),
                ..decision(DecisionKind::Approve, reason)
            });
            let approvals = next.current_approvers().len() as u32;
            if approvals >= next.min_approvals {
                finish_approval(&mut next, now);
            }
            ReviewEvent::Approved {
                review_id: review.id.clone(),
                reviewer: reviewer.subject.clone(),
                reason: reason.clone(),
                grant_for: grant_text,
                approvals,
                required: next.min_approvals,
            }
        }
        Action::Deny { reason } => {
            next.decisions.push(decision(DecisionKind::Deny, reason));
            next.status = ReviewStatus::Denied;
            next.decided_at = Some(now);
            ReviewEvent::Denied {
                review_id: review.id.clone(),
                reviewer: reviewer.subject.clone(),
                reason: reason.clone(),
            }
        }
        Action::Modify { sql, reason } => {
            check_replacement(sql)?;
            policy(sql, review).map_err(HubError::Blocked)?;
            next.decisions.push(ReviewerDecision {
                sql: Some(sql.clone()),
                ..decision(DecisionKind::Modify, reason)
            });
            next.modified_sql = Some(sql.clone());
            let approvals = next.current_approvers().len() as u32;
            if approvals >= next.min_approvals {
                finish_approval(&mut next, now);
            }
            ReviewEvent::Modified {
                review_id: review.id.clone(),
                reviewer: reviewer.subject.clone(),
                reason: reason.clone(),
                original_sql: review.sql.clone(),
                sql: sql.clone(),
                approvals,
                required: next.min_approvals,
            }
        }
    };
    Ok(Update {
        review: next,
        events: vec![event],
    })
}

/// Enough approvals: approved (or modified), with a grant when every
/// current approver asked for one (the shortest wins) and the text was not
/// modified — a grant covers the statement the requester wrote, nothing else.
fn finish_approval(review: &mut Review, now: Timestamp) {
    review.decided_at = Some(now);
    if review.modified_sql.is_some() {
        review.status = ReviewStatus::Modified;
        return;
    }
    review.status = ReviewStatus::Approved;
    let approvers = review.current_approvers();
    let grants: Vec<Option<Duration>> = review
        .decisions
        .iter()
        .filter(|d| d.action == DecisionKind::Approve && approvers.contains(&d.reviewer))
        .map(|d| {
            d.grant_for
                .as_deref()
                .and_then(|text| humantime::parse_duration(text).ok())
        })
        .collect();
    if !grants.is_empty() && grants.iter().all(Option::is_some) {
        review.grant_until = grants.into_iter().flatten().min().map(|d| now.plus(d));
    }
}

/// What a replacement statement must be before policy even looks at it.
fn check_replacement(sql: &str) -> Result<(), HubError> {
    if sql.trim().is_empty() {
        return Err(HubError::Invalid(
            "the replacement statement is empty".into(),
        ));
    }
    if sql.len() > 1_000_000 {
        return Err(HubError::Invalid(
            "the replacement statement is longer than 1 MB".into(),
        ));
    }
    // The replacement is stored (and shared between gateways) as written, so
    // it must not hold a card number (PCI DSS 3.5.1).
    if hoop_common::pan::contains_pan(sql.as_bytes()) {
        return Err(HubError::Invalid(
            "the replacement statement contains a card number; it would be stored readable, so it is refused".into(),
        ));
    }
    Ok(())
}

/// Pending past its expiry → expired. `None`: nothing to change.
pub(crate) fn expire(review: &Review, now: Timestamp) -> Option<Update> {
    if review.status != ReviewStatus::Pending || now < review.expires_at {
        return None;
    }
    let mut next = review.clone();
    next.status = ReviewStatus::Expired;
    next.decided_at = Some(now);
    Some(Update {
        review: next,
        events: vec![ReviewEvent::Expired {
            review_id: review.id.clone(),
        }],
    })
}

/// Pending → withdrawn (the client cancelled or went away).
pub(crate) fn withdraw(review: &Review, reason: &str, now: Timestamp) -> Option<Update> {
    if review.status != ReviewStatus::Pending {
        return None;
    }
    let mut next = review.clone();
    next.status = ReviewStatus::Withdrawn;
    next.decided_at = Some(now);
    next.withdrawn_reason = Some(reason.to_owned());
    Some(Update {
        review: next,
        events: vec![ReviewEvent::Withdrawn {
            review_id: review.id.clone(),
            reason: reason.to_owned(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReviewOutcome;

    fn review(min_approvals: u32) -> Review {
        let now = Timestamp::now();
        Review {
            id: "r-1".into(),
            status: ReviewStatus::Pending,
            subject: "agent-7".into(),
            groups: vec!["payments-admins".into()],
            session_id: "s1".into(),
            role: "payments_admin".into(),
            client_addr: "127.0.0.1:5000".into(),
            rule: "payments-dml".into(),
            reason: "DML on payments needs review".into(),
            sql: "DELETE FROM payments WHERE id = 1".into(),
            modified_sql: None,
            tables: vec!["public.payments".into()],
            created_at: now,
            expires_at: now.plus(Duration::from_secs(300)),
            decided_at: None,
            min_approvals,
            decisions: vec![],
            grant_until: None,
            withdrawn_reason: None,
            sql_fingerprint: "f".into(),
        }
    }

    fn reviewer(subject: &str) -> Reviewer {
        Reviewer {
            subject: subject.into(),
            groups: vec!["reviewers".into()],
        }
    }

    fn run(review: &Review, who: &Reviewer, action: Action) -> Result<Update, HubError> {
        let groups = vec!["reviewers".to_owned()];
        let rules = Rules {
            reviewer_groups: &groups,
        };
        let policy = |sql: &str, _: &Review| {
            if sql.to_lowercase().contains("drop") {
                Err("rule no-ddl blocks DROP".to_owned())
            } else {
                Ok(())
            }
        };
        decide(review, who, &action, Timestamp::now(), &rules, &policy)
    }

    fn approve() -> Action {
        Action::Approve {
            reason: None,
            grant_for: None,
        }
    }

    #[test]
    fn who_may_decide() {
        let r = review(1);
        let outsider = Reviewer {
            subject: "eve".into(),
            groups: vec!["fraud-agents".into()],
        };
        assert!(matches!(
            run(&r, &outsider, approve()),
            Err(HubError::NotReviewer { .. })
        ));
        assert!(matches!(
            run(&r, &reviewer("agent-7"), approve()),
            Err(HubError::OwnReview(_))
        ));
    }

    #[test]
    fn decisions_and_their_outcomes() {
        let r = review(1);
        let approved = run(&r, &reviewer("alice"), approve()).expect("approves");
        assert_eq!(approved.review.status, ReviewStatus::Approved);
        assert_eq!(
            approved.review.outcome(),
            Some(ReviewOutcome::Approved {
                reviewers: vec!["alice".into()]
            })
        );
        let denied = run(
            &r,
            &reviewer("alice"),
            Action::Deny {
                reason: Some("not today".into()),
            },
        )
        .expect("denies");
        assert_eq!(
            denied.review.outcome(),
            Some(ReviewOutcome::Denied {
                reviewer: "alice".into(),
                reason: Some("not today".into())
            })
        );
        let modified = run(
            &r,
            &reviewer("bob"),
            Action::Modify {
                sql: "DELETE FROM payments WHERE id = 1 AND amount < 5".into(),
                reason: None,
            },
        )
        .expect("modifies");
        assert_eq!(modified.review.status, ReviewStatus::Modified);
        assert_eq!(modified.review.sql, r.sql, "the original text is kept");
        assert!(matches!(
            &modified.events[0],
            ReviewEvent::Modified { original_sql, sql, .. } if *original_sql == r.sql && sql.contains("amount < 5")
        ));
    }

    #[test]
    fn a_final_review_cannot_be_decided_again() {
        let approved = run(&review(1), &reviewer("alice"), approve())
            .expect("approves")
            .review;
        assert!(matches!(
            run(&approved, &reviewer("bob"), Action::Deny { reason: None }),
            Err(HubError::NotPending { .. })
        ));
    }

    #[test]
    fn replacement_checks() {
        let r = review(1);
        let modify = |sql: &str| {
            run(
                &r,
                &reviewer("bob"),
                Action::Modify {
                    sql: sql.into(),
                    reason: None,
                },
            )
        };
        assert!(
            matches!(modify("DROP TABLE payments"), Err(HubError::Blocked(m)) if m.contains("no-ddl"))
        );
        assert!(matches!(modify("  "), Err(HubError::Invalid(_))));
        assert!(matches!(
            modify("UPDATE payments SET note = '4111 1111 1111 1111'"),
            Err(HubError::Invalid(m)) if m.contains("card number")
        ));
    }

    #[test]
    fn min_approvals_counts_distinct_people_and_modify_resets() {
        let r = review(2);
        let once = run(&r, &reviewer("alice"), approve())
            .expect("first")
            .review;
        assert_eq!(once.status, ReviewStatus::Pending);
        assert!(matches!(
            run(&once, &reviewer("alice"), approve()),
            Err(HubError::AlreadyApproved { .. })
        ));
        let modified = run(
            &once,
            &reviewer("bob"),
            Action::Modify {
                sql: "SELECT 1".into(),
                reason: None,
            },
        )
        .expect("modify")
        .review;
        assert_eq!(
            modified.status,
            ReviewStatus::Pending,
            "alice approved another text"
        );
        let done = run(&modified, &reviewer("alice"), approve())
            .expect("second")
            .review;
        assert_eq!(done.status, ReviewStatus::Modified);
        assert!(matches!(
            done.outcome(),
            Some(ReviewOutcome::Modified { reviewer, reviewers, sql }) if reviewer == "bob" && reviewers.len() == 2 && sql == "SELECT 1"
        ));
    }

    #[test]
    fn grants_need_every_approver_and_take_the_shortest() {
        let r = review(2);
        let grant = |d: u64| Action::Approve {
            reason: None,
            grant_for: Some(Duration::from_secs(d)),
        };
        let one = run(&r, &reviewer("alice"), grant(3600)).expect("a").review;
        let both = run(&one, &reviewer("bob"), grant(600)).expect("b").review;
        let until = both.grant_until.expect("granted");
        assert!(until <= Timestamp::now().plus(Duration::from_secs(601)));
        let one = run(&r, &reviewer("alice"), grant(3600)).expect("a").review;
        let mixed = run(&one, &reviewer("bob"), approve()).expect("b").review;
        assert_eq!(mixed.grant_until, None);
    }

    #[test]
    fn expiry_and_withdrawal_only_touch_pending_reviews() {
        let mut r = review(1);
        assert!(expire(&r, Timestamp::now()).is_none(), "not yet");
        r.expires_at = Timestamp::now();
        let expired = expire(&r, Timestamp::now().plus(Duration::from_millis(1))).expect("expires");
        assert_eq!(expired.review.status, ReviewStatus::Expired);
        assert!(withdraw(&expired.review, "gone", Timestamp::now()).is_none());
        assert!(matches!(
            run(&r, &reviewer("alice"), approve()),
            Err(HubError::Expired(_))
        ));
    }
}
