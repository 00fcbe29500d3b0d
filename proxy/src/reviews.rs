//! The gateway's side of just-in-time approvals: the hub (with the policy that vets a reviewer's
//! replacement statement and the audit chain every change goes through),
//! reviewer authentication with the gateway's own token rules, and
//! `hoop reviews list|show|approve|deny|modify`.
//!
//! Holding, review state, the API, the page and the `[reviews]` section
//! are `hoop-reviews`.

use std::sync::Arc;

use async_trait::async_trait;
use hoop_audit::AuditStore;
use hoop_policy::{PolicyContext, RuleSet};
use hoop_reviews::cli::CliError;
use hoop_reviews::{AuthError, HubError, PolicyCheck, Review, ReviewHub, Reviewer, ReviewerAuth};

use crate::audit::ReviewEventsToAudit;
use crate::auth::{Authenticator, TokenError};
use crate::config::Config;

/// Vets a replacement statement: a modification may not smuggle in a
/// statement the rules block. A replacement that would itself need review
/// is allowed: the reviewer who wrote it is approving it.
/// The rules are the gateway's own (`[[rules]]` after the shipped defaults).
fn policy_check(rules: Arc<RuleSet>) -> PolicyCheck {
    // The relay learns protected tables from the database
    // (`hoop.masked_columns`); the hub has no connection, so rules matching
    // on protected tables do not match here.
    let context = PolicyContext::default();
    Arc::new(move |sql: &str, review: &Review| {
        let identity = hoop_common::identity::Identity {
            subject: review.subject.clone(),
            groups: review.groups.clone(),
            ..Default::default()
        };
        let classified = hoop_policy::classify(sql);
        let decision = crate::relay::inspect::replacement_changes_names(&classified)
            .unwrap_or_else(|| hoop_policy::decide_all(&classified, &identity, &context, &rules));
        match decision {
            hoop_policy::Decision::Block { message, .. } => Err(message),
            hoop_policy::Decision::Allow | hoop_policy::Decision::Review { .. } => Ok(()),
        }
    })
}

/// Opens the review hub; every change it makes is recorded in `audit` first.
pub async fn open_hub(config: &Config, audit: AuditStore) -> Result<ReviewHub, HubError> {
    ReviewHub::open(
        config.reviews.clone(),
        policy_check(config.policy.rules.clone()),
        Arc::new(ReviewEventsToAudit(audit)),
    )
    .await
}

/// Reviewers sign in with the same kind of token agents use: verified by
/// the gateway's [`crate::auth::Authenticator`] (issuer, audience, expiry,
/// algorithms); the groups decide who may review.
pub struct ReviewerTokens(pub Arc<Authenticator>);

#[async_trait]
impl ReviewerAuth for ReviewerTokens {
    async fn authenticate(&self, bearer: &str) -> Result<Reviewer, AuthError> {
        match self.0.verify(bearer).await {
            Ok(verified) => Ok(Reviewer {
                subject: verified.identity.subject,
                groups: verified.identity.groups,
            }),
            Err(TokenError::Expired) => Err(AuthError::Expired),
            Err(e) => Err(AuthError::Invalid(e.to_string())),
        }
    }
}

/// The admin API's base URL for the CLI: `--admin-url`, else
/// `reviews.public_url`, else `http://` + `admin.address` (a wildcard
/// address is reached on loopback).
pub fn admin_base_url(config: &Config, explicit: Option<&str>) -> Result<String, CliError> {
    if let Some(url) = explicit {
        return Ok(url.to_owned());
    }
    if let Some(url) = &config.reviews.public_url {
        return Ok(url.clone());
    }
    let mut addr = config.admin.ok_or_else(|| {
        CliError::Usage(format!(
            "{}: no [admin] address, so there is no review API to call (or pass --admin-url)",
            config.path.display()
        ))
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{addr}"))
}

/// The reviewer's token: `--token`, else `HOOP_TOKEN`.
pub fn reviewer_token(explicit: Option<String>) -> Result<String, CliError> {
    explicit
        .or_else(|| std::env::var("HOOP_TOKEN").ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::Usage(
                "no reviewer token: pass --token or set HOOP_TOKEN \
                 (e.g. HOOP_TOKEN=$(hoop token mint -c hoop.toml --sub alice --group reviewers))"
                    .into(),
            )
        })
}
