//! What `hoop reviews list|show|approve|deny|modify` do once the command
//! line is parsed: call the admin API with the reviewer's bearer token and
//! return the text to print. Errors carry an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 1 | anything else (unexpected answer, server error) |
//! | 2 | bad arguments (unknown status, bad URL) |
//! | 3 | the admin server cannot be reached |
//! | 4 | not authorized: no valid token (401), not a reviewer or your own review (403) |
//! | 5 | no such review (404) |
//! | 6 | the review is no longer pending, or already approved by you (409) |
//! | 7 | refused: invalid input or a blocked modification (422) |

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::{Review, ReviewStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin server at {base}: {message}")]
    Unreachable { base: String, message: String },
    /// The API refused, with its own message.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the admin server: {0}")]
    Protocol(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Api { status, .. } => match status {
                401 | 403 => 4,
                404 => 5,
                409 => 6,
                422 => 7,
                _ => 1,
            },
            CliError::Protocol(_) => 1,
        }
    }
}

/// `hoop reviews list [--status S]`: a table, newest first.
pub async fn cli_list(base: &str, token: &str, status: Option<&str>) -> Result<String, CliError> {
    if let Some(status) = status {
        status.parse::<ReviewStatus>().map_err(CliError::Usage)?;
    }
    let path = match status {
        Some(status) => format!("/api/reviews?status={status}"),
        None => "/api/reviews".to_owned(),
    };
    let answer = request(base, token, reqwest::Method::GET, &path, None).await?;
    let reviews: Vec<Review> = serde_json::from_value(answer["reviews"].clone())
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    Ok(format_list(&reviews))
}

/// `hoop reviews show ID`: every detail of one review.
pub async fn cli_show(base: &str, token: &str, id: &str) -> Result<String, CliError> {
    let review = review_at(
        base,
        token,
        reqwest::Method::GET,
        &review_path(id, "")?,
        None,
    )
    .await?;
    Ok(format_review(&review))
}

/// `hoop reviews approve ID [--reason R] [--grant-for 30m]`.
pub async fn cli_approve(
    base: &str,
    token: &str,
    id: &str,
    reason: Option<&str>,
    grant_for: Option<&str>,
) -> Result<String, CliError> {
    let body = json!({"reason": reason, "grant_for": grant_for});
    let review = review_at(
        base,
        token,
        reqwest::Method::POST,
        &review_path(id, "/approve")?,
        Some(body),
    )
    .await?;
    Ok(decided("approve", &review))
}

/// `hoop reviews deny ID [--reason R]`.
pub async fn cli_deny(
    base: &str,
    token: &str,
    id: &str,
    reason: Option<&str>,
) -> Result<String, CliError> {
    let body = json!({ "reason": reason });
    let review = review_at(
        base,
        token,
        reqwest::Method::POST,
        &review_path(id, "/deny")?,
        Some(body),
    )
    .await?;
    Ok(decided("deny", &review))
}

/// `hoop reviews modify ID --sql "…" [--reason R]`.
pub async fn cli_modify(
    base: &str,
    token: &str,
    id: &str,
    sql: &str,
    reason: Option<&str>,
) -> Result<String, CliError> {
    let body = json!({"sql": sql, "reason": reason});
    let review = review_at(
        base,
        token,
        reqwest::Method::POST,
        &review_path(id, "/modify")?,
        Some(body),
    )
    .await?;
    Ok(decided("modify", &review))
}

fn review_path(id: &str, action: &str) -> Result<String, CliError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CliError::Usage(format!(
            "{id:?} is not a review id (like r-0123456789abcdef)"
        )));
    }
    Ok(format!("/api/reviews/{id}{action}"))
}

async fn review_at(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Review, CliError> {
    let answer = request(base, token, method, path, body).await?;
    serde_json::from_value(answer).map_err(|e| CliError::Protocol(e.to_string()))
}

async fn request(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let base = base.trim().trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    let mut builder = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token.trim());
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.map_err(|e| {
        if e.is_builder() {
            CliError::Usage(format!("bad admin URL {base:?}: {}", e.without_url()))
        } else {
            CliError::Unreachable {
                base: base.clone(),
                message: e.without_url().to_string(),
            }
        }
    })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| CliError::Protocol(e.without_url().to_string()))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| printable(&text, 300));
        return Err(CliError::Api {
            status: status.as_u16(),
            message,
        });
    }
    if value.is_null() {
        return Err(CliError::Protocol(format!(
            "not JSON: {}",
            printable(&text, 200)
        )));
    }
    Ok(value)
}

/// Text from the API is attacker-controlled: no terminal escape sequences
/// reach the reviewer's terminal, and long text is cut.
fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        out.push(if c.is_control() && c != '\n' {
            '\u{fffd}'
        } else {
            c
        });
    }
    out
}

fn one_line(text: &str, max_chars: usize) -> String {
    printable(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        max_chars,
    )
}

fn format_list(reviews: &[Review]) -> String {
    if reviews.is_empty() {
        return "no reviews\n".to_owned();
    }
    let rows: Vec<[String; 6]> = reviews
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.to_string(),
                r.created_at.to_string(),
                one_line(&r.subject, 24),
                one_line(&r.rule, 24),
                one_line(&r.sql, 60),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "CREATED", "SUBJECT", "RULE", "STATEMENT"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

fn format_review(review: &Review) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "{name:<12} {}", printable(value, 2_000));
    };
    field("review", &review.id);
    field("status", review.status.as_str());
    field("who", &review.subject);
    field("groups", &review.groups.join(", "));
    field("role", &review.role);
    field("from", &review.client_addr);
    field("session", &review.session_id);
    field("rule", &review.rule);
    field("why", &review.reason);
    field("tables", &review.tables.join(", "));
    field("created", &review.created_at.to_string());
    field("expires", &review.expires_at.to_string());
    field(
        "approvals",
        &format!(
            "{} of {} ({})",
            review.current_approvers().len(),
            review.min_approvals,
            review.current_approvers().join(", ")
        ),
    );
    if let Some(until) = review.grant_until {
        field("grant until", &until.to_string());
    }
    if let Some(reason) = &review.withdrawn_reason {
        field("withdrawn", reason);
    }
    let _ = writeln!(
        out,
        "\nstatement (masked):\n  {}",
        printable(&review.sql, 20_000).replace('\n', "\n  ")
    );
    if let Some(sql) = &review.modified_sql {
        let _ = writeln!(
            out,
            "\nreplacement:\n  {}",
            printable(sql, 20_000).replace('\n', "\n  ")
        );
    }
    if !review.decisions.is_empty() {
        out.push_str("\ndecisions:\n");
        for d in &review.decisions {
            let _ = write!(
                out,
                "  {}  {}  {:?}",
                d.at,
                printable(&d.reviewer, 200),
                d.action
            );
            if let Some(grant) = &d.grant_for {
                let _ = write!(out, "  grant {grant}");
            }
            if let Some(reason) = &d.reason {
                let _ = write!(out, "  \"{}\"", one_line(reason, 500));
            }
            out.push('\n');
        }
    }
    out
}

fn decided(action: &str, review: &Review) -> String {
    match review.status {
        ReviewStatus::Pending => format!(
            "{action} recorded on review {}: {} of {} approvals so far; still pending\n",
            review.id,
            review.current_approvers().len(),
            review.min_approvals
        ),
        status => {
            let mut text = format!("review {} is {status}", review.id);
            if let Some(until) = review.grant_until {
                let _ = write!(text, "; grant until {until}");
            }
            text.push('\n');
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_http_status() {
        let api = |status| CliError::Api {
            status,
            message: String::new(),
        };
        assert_eq!(api(401).exit_code(), 4);
        assert_eq!(api(403).exit_code(), 4);
        assert_eq!(api(404).exit_code(), 5);
        assert_eq!(api(409).exit_code(), 6);
        assert_eq!(api(422).exit_code(), 7);
        assert_eq!(api(503).exit_code(), 1);
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
    }

    #[test]
    fn terminal_escapes_never_reach_the_terminal() {
        assert_eq!(printable("a\u{1b}[31mred", 100), "a\u{fffd}[31mred");
        assert_eq!(one_line("SELECT\n  1", 100), "SELECT 1");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_url() {
        assert!(review_path("r-00ff", "/approve").is_ok());
        assert!(matches!(review_path("../x", ""), Err(CliError::Usage(_))));
    }
}
