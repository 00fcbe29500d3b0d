//! Just-in-time approvals for hoop: a statement the policy sends to review
//! is held while a person approves, denies or modifies it.
//!
//! The relay files a [`ReviewRequest`] with [`ReviewHub::request`], tells
//! the client [`ReviewTicket::notice`], and awaits [`ReviewTicket::wait`]
//! for a [`ReviewOutcome`]; dropping the ticket withdraws the review.
//! Reviewers decide through [`router`] (JSON API and the `/reviews` page) or
//! the CLI helpers in [`cli`]. Every change is recorded through a
//! [`ReviewAuditSink`] before it is applied.

/// `[reviews]` configuration.
pub mod config;

/// Requests, reviews, decisions, outcomes, grants.
pub mod model;

/// The one error type, with its HTTP status.
pub mod error;

/// Events for the audit chain, and the sink trait the gateway implements.
pub mod audit;

/// Bearer-token authentication of reviewers (the gateway implements it).
pub mod auth;

/// Pure transitions: approve, deny, modify, expire, withdraw.
mod decide;

/// Memory and Postgres stores behind one trait.
mod store;

/// The hub and the tickets the relay waits on.
mod hub;

/// Webhook notifications (JSON or Slack).
pub mod notify;

/// The review API, the event stream and the `/reviews` page.
mod http;

/// Helpers behind `hoop reviews list|show|approve|deny|modify`.
pub mod cli;

pub use audit::{AuditSinkError, MemoryAuditSink, ReviewAuditSink, ReviewEvent};
pub use auth::{AuthError, Reviewer, ReviewerAuth};
pub use config::{ReviewsConfig, StoreKind, WebhookConfig, WebhookFormat, WebhookUrl};
pub use error::HubError;
/// Timestamps as reviews carry them (microseconds, RFC 3339): hoop's one kind.
pub use hoop_common::time::Timestamp;
pub use http::router;
pub use hub::{PolicyCheck, ReviewHub, ReviewTicket};
pub use model::{
    DecisionKind, GrantUse, Review, ReviewOutcome, ReviewRequest, ReviewStatus, ReviewerDecision,
};
pub use store::ReviewChange;
