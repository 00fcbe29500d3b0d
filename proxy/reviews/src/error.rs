//! The one error type of the hub, with the HTTP status each case means.

use crate::model::ReviewStatus;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("no review {0:?}")]
    NotFound(String),
    #[error("{subject:?} may not review: it is not in the reviewer group ({groups})")]
    NotReviewer { subject: String, groups: String },
    #[error("{0:?} requested this review and may not decide it")]
    OwnReview(String),
    #[error("review {id} is {status}, no longer pending")]
    NotPending { id: String, status: ReviewStatus },
    #[error("review {0} has expired")]
    Expired(String),
    #[error("{reviewer:?} has already approved review {id}")]
    AlreadyApproved { id: String, reviewer: String },
    /// The request itself is unusable (bad duration, empty SQL …).
    #[error("{0}")]
    Invalid(String),
    /// The replacement statement is one the policy would not let through.
    #[error("the modified statement is blocked by policy: {0}")]
    Blocked(String),
    /// Fail closed: nothing changed because the event could not be recorded.
    #[error("not recorded, so not applied: {0}")]
    Audit(String),
    #[error("review store: {0}")]
    Store(String),
    #[error("{0}")]
    Config(String),
}

impl HubError {
    /// The HTTP status the review API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            HubError::NotFound(_) => 404,
            HubError::NotReviewer { .. } | HubError::OwnReview(_) => 403,
            HubError::NotPending { .. }
            | HubError::Expired(_)
            | HubError::AlreadyApproved { .. } => 409,
            HubError::Invalid(_) | HubError::Blocked(_) => 422,
            HubError::Audit(_) | HubError::Store(_) => 503,
            HubError::Config(_) => 500,
        }
    }
}
