//! Who is deciding: the gateway verifies the reviewer's bearer token (an
//! OIDC JWT) and says which subject and groups it carries.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// An authenticated person (or tool) using the review API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewer {
    pub subject: String,
    pub groups: Vec<String>,
}

/// Why a bearer token was not accepted. The text is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
}

/// Verifies bearer tokens for the review API and page.
#[async_trait]
pub trait ReviewerAuth: Send + Sync {
    async fn authenticate(&self, bearer: &str) -> Result<Reviewer, AuthError>;
}
