//! Webhook notifications: a POST per new review, JSON or Slack-compatible,
//! sent in the background with a timeout and a bounded number of retries.
//! A failing webhook is logged; it never holds up or fails a review.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{WebhookConfig, WebhookFormat};
use crate::model::Review;

pub(crate) struct Notifier {
    client: reqwest::Client,
    url: String,
    format: WebhookFormat,
    retries: u32,
}

impl Notifier {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Notifier, String> {
        let url = config.resolve_url().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("`reviews.webhook`: cannot build the HTTP client: {e}"))?;
        Ok(Notifier {
            client,
            url,
            format: config.format,
            retries: config.retries.min(10),
        })
    }

    /// Sends the "review created" notice in the background.
    pub(crate) fn review_created(&self, review: &Review, decision_url: &str) {
        let body = webhook_payload(self.format, review, decision_url);
        let client = self.client.clone();
        let url = self.url.clone();
        let retries = self.retries;
        let review_id = review.id.clone();
        tokio::spawn(async move {
            deliver(&client, &url, &body, retries, &review_id).await;
        });
    }
}

async fn deliver(client: &reqwest::Client, url: &str, body: &Value, retries: u32, review_id: &str) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 0..=retries {
        let failure = match client.post(url).json(body).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(review = %review_id, "webhook delivered");
                return;
            }
            Ok(response) => {
                let status = response.status();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !retryable {
                    tracing::warn!(review = %review_id, "webhook refused the notification: HTTP {status}");
                    return;
                }
                format!("HTTP {status}")
            }
            // The URL may be a secret (Slack): log the error without it.
            Err(e) => e.without_url().to_string(),
        };
        if attempt == retries {
            tracing::warn!(review = %review_id, attempts = attempt + 1, "webhook notification failed: {failure}");
            return;
        }
        tracing::debug!(review = %review_id, "webhook attempt {} failed: {failure}; retrying", attempt + 1);
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// The body POSTed for a new review.
///
/// `json`: `{"event": "review.created", "review": {…the review as the API
/// shows it…}, "decision_url": "…"}`.
/// `slack`: `{"text": "…", "blocks": […]}` for a Slack incoming webhook
/// (every user-supplied text escaped, so a statement cannot ping a channel).
pub fn webhook_payload(format: WebhookFormat, review: &Review, decision_url: &str) -> Value {
    match format {
        WebhookFormat::Json => json!({
            "event": "review.created",
            "review": review,
            "decision_url": decision_url,
        }),
        WebhookFormat::Slack => slack_payload(review, decision_url),
    }
}

fn slack_payload(review: &Review, decision_url: &str) -> Value {
    let tables = if review.tables.is_empty() {
        "-".to_owned()
    } else {
        review.tables.join(", ")
    };
    let text = format!(
        "hoop: review {} needed: {} wants to run a statement held by rule {} ({})",
        review.id,
        slack_escape(&review.subject),
        slack_escape(&review.rule),
        slack_escape(&truncate(&review.reason, 200)),
    );
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(&truncate(value, 500)))});
    // Backticks would end the code block early.
    let sql = truncate(&review.sql, 2_800).replace('`', "\u{02cb}");
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": "Statement held for review"}}),
        json!({"type": "section", "fields": [
            field("Who", &review.subject),
            field("Rule", &review.rule),
            field("Role", &review.role),
            field("Tables", &tables),
            field("Review", &review.id),
            field("Expires", &review.expires_at.to_string()),
        ]}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Why:* {}", slack_escape(&truncate(&review.reason, 1_000)))}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", slack_escape(&sql))}}),
    ];
    // Slack buttons need an absolute URL (set `reviews.public_url`).
    if decision_url.starts_with("https://") || decision_url.starts_with("http://") {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open review"},
            "url": decision_url,
            "style": "primary",
        }]}));
    }
    json!({"text": text, "blocks": blocks})
}

/// Slack's three control characters; escaping `<` also defuses
/// `<!channel>` and link syntax in attacker-written text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReviewStatus;
    use hoop_common::time::Timestamp;

    fn review() -> Review {
        Review {
            id: "r-00ff".into(),
            status: ReviewStatus::Pending,
            subject: "agent <!channel>".into(),
            groups: vec![],
            session_id: "s".into(),
            role: "payments_admin".into(),
            client_addr: "127.0.0.1:1".into(),
            rule: "big-reads".into(),
            reason: "amount > 10000 needs review".into(),
            sql: "SELECT * FROM payments WHERE note = '```<b>'".into(),
            modified_sql: None,
            tables: vec!["public.payments".into()],
            created_at: Timestamp::now(),
            expires_at: Timestamp::now(),
            decided_at: None,
            min_approvals: 1,
            decisions: vec![],
            grant_until: None,
            withdrawn_reason: None,
            sql_fingerprint: "x".into(),
        }
    }

    #[test]
    fn json_payload_carries_the_review_and_the_link() {
        let body = webhook_payload(WebhookFormat::Json, &review(), "https://a/reviews#r-00ff");
        assert_eq!(body["event"], "review.created");
        assert_eq!(body["review"]["id"], "r-00ff");
        assert_eq!(body["review"]["status"], "pending");
        assert_eq!(body["decision_url"], "https://a/reviews#r-00ff");
    }

    #[test]
    fn slack_payload_escapes_attacker_text_and_links_the_page() {
        let body = webhook_payload(WebhookFormat::Slack, &review(), "https://a/reviews#r-00ff");
        let text = body.to_string();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"));
        assert_eq!(
            text.matches("```").count(),
            2,
            "only the code block's own fences: {text}"
        );
        assert!(body["text"].as_str().is_some_and(|t| t.contains("r-00ff")));
        let blocks = body["blocks"].as_array().expect("blocks");
        let actions = blocks.last().expect("an actions block");
        assert_eq!(actions["elements"][0]["url"], "https://a/reviews#r-00ff");
        let relative = webhook_payload(WebhookFormat::Slack, &review(), "/reviews#r-00ff");
        assert!(relative["blocks"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["type"] != "actions")));
    }
}
