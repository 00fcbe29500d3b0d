//! The review API, its event stream and the `/reviews` page, as one axum
//! router the gateway merges into its admin server.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/reviews[?status=pending]` | `{"reviews": [review, …]}`, newest first |
//! | `GET /api/reviews/events` | Server-Sent Events: `event: review`, `data: {"id", "status"}` |
//! | `GET /api/reviews/{id}` | one review |
//! | `POST /api/reviews/{id}/approve` | `{"reason": "…", "grant_for": "30m"}` (both optional) |
//! | `POST /api/reviews/{id}/deny` | `{"reason": "…"}` (optional) |
//! | `POST /api/reviews/{id}/modify` | `{"sql": "…", "reason": "…"}` |
//! | `GET /reviews` | the page (plus `/reviews/app.js`, `/reviews/app.css`) |
//!
//! Every API call needs `Authorization: Bearer <token>` of a member of a
//! reviewer group. Errors are `{"error": "…", "status": N}`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::{Reviewer, ReviewerAuth};
use crate::error::HubError;
use crate::hub::ReviewHub;
use crate::model::ReviewStatus;

mod page;

#[derive(Clone)]
struct ApiState {
    hub: ReviewHub,
    auth: Arc<dyn ReviewerAuth>,
}

/// The review routes, ready to be merged into the admin router.
pub fn router(hub: ReviewHub, auth: Arc<dyn ReviewerAuth>) -> Router {
    Router::new()
        .route("/api/reviews", get(list_reviews))
        .route("/api/reviews/events", get(review_events))
        .route("/api/reviews/{id}", get(show_review))
        .route("/api/reviews/{id}/approve", post(approve_review))
        .route("/api/reviews/{id}/deny", post(deny_review))
        .route("/api/reviews/{id}/modify", post(modify_review))
        .merge(page::routes())
        .with_state(ApiState { hub, auth })
}

/// What the API answers when it refuses.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> ApiError {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("review API: {error}");
        }
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message, "status": self.status.as_u16()}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hoop reviews\""),
            );
        }
        api_headers(response)
    }
}

fn api_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn ok_json(value: impl serde::Serialize) -> Response {
    api_headers(Json(value).into_response())
}

/// The caller, who must be a reviewer: 401 without a valid token, 403
/// outside the reviewer groups.
async fn reviewer(state: &ApiState, headers: &HeaderMap) -> Result<Reviewer, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer <token> header is required",
        )
    })?;
    let value = value.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the Authorization header is not text",
        )
    })?;
    let token = match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be \"Bearer <token>\"",
            ))
        }
    };
    let reviewer = state
        .auth
        .authenticate(token)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    state.hub.authorize(&reviewer)?;
    Ok(reviewer)
}

/// Parses a JSON body strictly (unknown fields refused); an empty body is `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the request body is not valid: {e}"),
        )
    })
}

fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    match reason {
        Some(reason) if reason.chars().count() > 2_000 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason is longer than 2000 characters",
        )),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_reviews(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    reviewer(&state, &headers).await?;
    let status = match query.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(text) => Some(
            text.parse::<ReviewStatus>()
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?,
        ),
    };
    let reviews = state.hub.list(status).await?;
    Ok(ok_json(json!({ "reviews": reviews })))
}

async fn show_review(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    reviewer(&state, &headers).await?;
    let review = state.hub.get(&id).await?.ok_or(HubError::NotFound(id))?;
    Ok(ok_json(review))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    reason: Option<String>,
    grant_for: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModifyBody {
    sql: String,
    reason: Option<String>,
}

async fn approve_review(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = reviewer(&state, &headers).await?;
    let request: ApproveBody = body(&bytes)?;
    check_reason(&request.reason)?;
    let review = state
        .hub
        .approve(&id, &who, request.reason, request.grant_for.as_deref())
        .await?;
    Ok(ok_json(review))
}

async fn deny_review(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = reviewer(&state, &headers).await?;
    let request: DenyBody = body(&bytes)?;
    check_reason(&request.reason)?;
    let review = state.hub.deny(&id, &who, request.reason).await?;
    Ok(ok_json(review))
}

async fn modify_review(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = reviewer(&state, &headers).await?;
    let request: ModifyBody = body(&bytes)?;
    check_reason(&request.reason)?;
    let review = state
        .hub
        .modify(&id, &who, request.sql, request.reason)
        .await?;
    Ok(ok_json(review))
}

/// Server-Sent Events: one `review` event per change (id and status only;
/// fetch the review for the rest), `resync` when some were missed.
async fn review_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reviewer(&state, &headers).await?;
    let changes = state.hub.subscribe();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        let event = match changes.recv().await {
            Ok(change) => Event::default()
                .event("review")
                .data(serde_json::to_string(&change).unwrap_or_default()),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<Event, Infallible>(event), changes))
    });
    Ok(api_headers(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
    ))
}
