//! Reviews in table `hoop_reviews` of a database every gateway shares.
//! Each change is one transaction (row locked, audit recorded, row
//! written, `pg_notify` sent on commit); a separate connection LISTENs, so a
//! decision made through gateway B wakes the ticket gateway A waits on.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{broadcast, Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{record, Change, GrantKey, ReviewChange, Store};
use crate::audit::ReviewAuditSink;
use crate::decide::Update;
use crate::error::HubError;
use crate::model::{Review, ReviewStatus};
use hoop_common::time::Timestamp;

const SCHEMA: &str = include_str!("../../sql/schema.sql");

/// The NOTIFY channel; payloads are `{"id": …, "status": …}`.
const CHANNEL: &str = "hoop_reviews";

/// Serializes schema creation between gateways starting together.
const SCHEMA_LOCK: i64 = 0x686f_6f70_7276; // "hooprv"

pub(crate) struct PostgresStore {
    config: tokio_postgres::Config,
    // One connection, reconnected when lost; transactions need it alone.
    client: Mutex<Option<Client>>,
    changes: broadcast::Sender<ReviewChange>,
}

fn pg_error(context: &str, error: tokio_postgres::Error) -> HubError {
    match error.as_db_error() {
        Some(db) => HubError::Store(format!(
            "{context}: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => HubError::Store(format!("{context}: {error}")),
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, HubError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_error("cannot connect to the review store", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("review store connection ended: {e}");
        }
    });
    Ok(client)
}

fn parse_review(text: &str) -> Result<Review, HubError> {
    serde_json::from_str(text)
        .map_err(|e| HubError::Store(format!("unreadable review in hoop_reviews: {e}")))
}

fn to_json(review: &Review) -> Result<String, HubError> {
    serde_json::to_string(review).map_err(|e| HubError::Store(format!("cannot encode review: {e}")))
}

fn change_payload(review: &Review) -> String {
    serde_json::json!({"id": review.id, "status": review.status}).to_string()
}

impl PostgresStore {
    pub(crate) async fn connect(
        config: tokio_postgres::Config,
        changes: broadcast::Sender<ReviewChange>,
    ) -> Result<PostgresStore, HubError> {
        let mut client = connect(&config).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("cannot create hoop_reviews", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(|e| pg_error("cannot create hoop_reviews", e))?;
        tx.batch_execute(SCHEMA)
            .await
            .map_err(|e| pg_error("cannot create hoop_reviews", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("cannot create hoop_reviews", e))?;
        Ok(PostgresStore {
            config,
            client: Mutex::new(Some(client)),
            changes,
        })
    }

    /// The connection, reconnected if it was lost.
    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, HubError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.config).await?);
        }
        Ok(guard)
    }

    /// LISTENs on its own connection and turns notifications into hub
    /// changes; reconnects after a second when the connection is lost.
    /// Returns once the first LISTEN is in place (or failed), so no change
    /// made right after the hub opens can go unheard.
    pub(crate) async fn spawn_listener(&self) -> Result<JoinHandle<()>, HubError> {
        let config = self.config.clone();
        let changes = self.changes.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                if let Err(e) = listen(&config, &changes, &mut ready).await {
                    if let Some(first) = ready.take() {
                        let _ = first.send(Err(e));
                        return;
                    }
                    tracing::warn!("review change listener: {e}; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        match ready_rx.await {
            Ok(Ok(())) => Ok(task),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HubError::Store(
                "review change listener stopped before it started".into(),
            )),
        }
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    changes: &broadcast::Sender<ReviewChange>,
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), HubError>>>,
) -> Result<(), HubError> {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_error("cannot connect to the review store", e))?;
    let forward = changes.clone();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(note)) if note.channel() == CHANNEL => {
                    match serde_json::from_str::<ReviewChange>(note.payload()) {
                        Ok(change) => {
                            let _ = forward.send(change);
                        }
                        Err(e) => tracing::warn!("unreadable review notification: {e}"),
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(pg_error("review change listener", e)),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| pg_error("cannot LISTEN for review changes", e))?;
    if let Some(first) = ready.take() {
        let _ = first.send(Ok(()));
    }
    // Keeps `client` alive while the connection delivers notifications.
    match driver.await {
        Ok(result) => result,
        Err(e) => Err(HubError::Store(format!(
            "review change listener stopped: {e}"
        ))),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create(&self, update: Update, audit: &dyn ReviewAuditSink) -> Result<(), HubError> {
        let review = &update.review;
        let json = to_json(review)?;
        let mut guard = self.client().await?;
        let client = guard
            .as_mut()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let fail = |e| pg_error("cannot store the review", e);
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute(
            "INSERT INTO hoop_reviews (id, status, subject, role, rule, sql_fingerprint, created_at, expires_at, grant_until, review)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)",
            &[
                &review.id,
                &review.status.as_str(),
                &review.subject,
                &review.role,
                &review.rule,
                &review.sql_fingerprint,
                &review.created_at.system_time(),
                &review.expires_at.system_time(),
                &review.grant_until.map(Timestamp::system_time),
                &json,
            ],
        )
        .await
        .map_err(fail)?;
        record(audit, update.events).await?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &change_payload(review)],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    async fn update(
        &self,
        id: &str,
        change: Change<'_>,
        audit: &dyn ReviewAuditSink,
    ) -> Result<Review, HubError> {
        let mut guard = self.client().await?;
        let client = guard
            .as_mut()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let fail = |e| pg_error("cannot update the review", e);
        let tx = client.transaction().await.map_err(fail)?;
        let row = tx
            .query_opt(
                "SELECT review::text FROM hoop_reviews WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(fail)?
            .ok_or_else(|| HubError::NotFound(id.to_owned()))?;
        let current = parse_review(row.get(0))?;
        // Dropping the transaction without commit rolls it back.
        let Some(update) = change(&current)? else {
            return Ok(current);
        };
        let review = update.review;
        let json = to_json(&review)?;
        record(audit, update.events).await?;
        tx.execute(
            "UPDATE hoop_reviews SET status = $2, grant_until = $3, review = $4::text::jsonb WHERE id = $1",
            &[&id, &review.status.as_str(), &review.grant_until.map(Timestamp::system_time), &json],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &change_payload(&review)],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(review)
    }

    async fn get(&self, id: &str) -> Result<Option<Review>, HubError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let row = client
            .query_opt(
                "SELECT review::text FROM hoop_reviews WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| pg_error("cannot read the review", e))?;
        row.map(|row| parse_review(row.get(0))).transpose()
    }

    async fn list(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<Review>, HubError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let status = status.map(ReviewStatus::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT review::text FROM hoop_reviews WHERE ($1::text IS NULL OR status = $1)
                 ORDER BY created_at DESC, id DESC LIMIT $2",
                &[&status, &limit],
            )
            .await
            .map_err(|e| pg_error("cannot list reviews", e))?;
        rows.iter().map(|row| parse_review(row.get(0))).collect()
    }

    async fn overdue(&self, now: Timestamp) -> Result<Vec<String>, HubError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let now: SystemTime = now.system_time();
        let rows = client
            .query(
                "SELECT id FROM hoop_reviews WHERE status = 'pending' AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(|e| pg_error("cannot list overdue reviews", e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn find_grant(
        &self,
        key: &GrantKey<'_>,
        now: Timestamp,
    ) -> Result<Option<Review>, HubError> {
        let guard = self.client().await?;
        let client = guard
            .as_ref()
            .ok_or_else(|| HubError::Store("not connected".into()))?;
        let row = client
            .query_opt(
                "SELECT review::text FROM hoop_reviews
                 WHERE status = 'approved' AND subject = $1 AND role = $2 AND rule = $3
                   AND sql_fingerprint = $4 AND grant_until > $5
                 ORDER BY grant_until DESC LIMIT 1",
                &[
                    &key.subject,
                    &key.role,
                    &key.rule,
                    &key.sql_fingerprint,
                    &now.system_time(),
                ],
            )
            .await
            .map_err(|e| pg_error("cannot look for a grant", e))?;
        row.map(|row| parse_review(row.get(0))).transpose()
    }
}
