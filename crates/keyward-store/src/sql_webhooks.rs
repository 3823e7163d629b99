// The webhook store (keyward-core's `webhooks.rs`), `include!`d at the end of `sql.rs` and so
// compiled once per backend like the rest: the same statements, through `query` and
// `query_scalar`, on SQLite and PostgreSQL.

use keyward_core::webhooks::{
    AttemptRecord, ClaimedDelivery, DeliveryRecord, DeliveryState, EventType, ExpiringKey,
    NewDelivery, NewWebhook, WebhookRecord, WebhookSecret, WebhookStore,
};
use keyward_core::{DeliveryId, WebhookId};

/// `' key.created key.revoked '`: LIKE finds a subscriber by `'% name %'`.
fn stored_events(events: &[EventType]) -> String {
    let names: Vec<&str> = events.iter().map(|event| event.as_str()).collect();
    format!(" {} ", names.join(" "))
}

fn events_of(stored: &str) -> Vec<EventType> {
    stored
        .split_whitespace()
        .filter_map(EventType::parse)
        .collect()
}

fn webhook_from_row(row: &DbRow) -> StoreResult<WebhookRecord> {
    let events: String = get(row, "events")?;
    Ok(WebhookRecord {
        id: WebhookId::from_stored(get(row, "id")?),
        owner: Owner {
            user_id: UserId::from_stored(get(row, "user_id")?),
            tenant_id: TenantId::from_stored(get(row, "tenant_id")?),
        },
        url: get(row, "url")?,
        events: events_of(&events),
        created_at: Timestamp(get(row, "created_at")?),
    })
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn insert_webhook(&self, webhook: NewWebhook, max_per_user: u32) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // As for keys: the count and the insert are one statement, after the owner's lock.
        lock_owner(&mut tx, &webhook.owner).await?;
        let inserted = query(
            "INSERT INTO webhooks (id, tenant_id, user_id, url, events, secret, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE (SELECT COUNT(*) FROM webhooks WHERE user_id = $3 AND tenant_id = $2) < $8",
        )
        .bind(webhook.id.as_str())
        .bind(webhook.owner.tenant_id.as_str())
        .bind(webhook.owner.user_id.as_str())
        .bind(&webhook.url)
        .bind(stored_events(&webhook.events))
        .bind(webhook.secret.expose())
        .bind(webhook.created_at.seconds())
        .bind(i64::from(max_per_user))
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn list_webhooks(&self, owner: &Owner) -> StoreResult<Vec<WebhookRecord>> {
        query(
            "SELECT id, tenant_id, user_id, url, events, created_at FROM webhooks \
             WHERE user_id = $1 AND tenant_id = $2 ORDER BY seq",
        )
        .bind(owner.user_id.as_str())
        .bind(owner.tenant_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?
        .iter()
        .map(webhook_from_row)
        .collect()
    }

    async fn find_webhook(
        &self,
        owner: &Owner,
        id: &WebhookId,
    ) -> StoreResult<Option<WebhookRecord>> {
        query(
            "SELECT id, tenant_id, user_id, url, events, created_at FROM webhooks \
             WHERE id = $1 AND user_id = $2 AND tenant_id = $3",
        )
        .bind(id.as_str())
        .bind(owner.user_id.as_str())
        .bind(owner.tenant_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(webhook_from_row)
        .transpose()
    }

    async fn delete_webhook(&self, owner: &Owner, id: &WebhookId) -> StoreResult<bool> {
        // The deliveries and their attempts go with it (ON DELETE CASCADE): a pending one is
        // never sent, and an attempt in flight records nothing (its lease is gone).
        let deleted =
            query("DELETE FROM webhooks WHERE id = $1 AND user_id = $2 AND tenant_id = $3")
                .bind(id.as_str())
                .bind(owner.user_id.as_str())
                .bind(owner.tenant_id.as_str())
                .execute(&self.pool)
                .await
                .map_err(map_error)?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn subscribed_webhooks(
        &self,
        owner: &Owner,
        event: EventType,
    ) -> StoreResult<Vec<WebhookId>> {
        let rows: Vec<String> = query_scalar(
            "SELECT id FROM webhooks WHERE user_id = $1 AND tenant_id = $2 AND events LIKE $3 \
             ORDER BY seq",
        )
        .bind(owner.user_id.as_str())
        .bind(owner.tenant_id.as_str())
        .bind(format!("% {} %", event.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(rows.into_iter().map(WebhookId::from_stored).collect())
    }

    async fn insert_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for delivery in deliveries {
            query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, \
                 attempt_count, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
            )
            .bind(delivery.id.as_str())
            .bind(delivery.webhook_id.as_str())
            .bind(delivery.event.as_str())
            .bind(&delivery.payload)
            .bind(delivery.created_at.seconds())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn list_deliveries(
        &self,
        webhook: &WebhookId,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = query(
            "SELECT id, event, status, created_at, next_attempt_at FROM webhook_deliveries \
             WHERE webhook_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(webhook.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let status: String = get(row, "status")?;
            deliveries.push(DeliveryRecord {
                id: DeliveryId::from_stored(get(row, "id")?),
                event: get(row, "event")?,
                state: DeliveryState::parse(&status).ok_or_else(|| {
                    StoreError::Other(format!("unknown delivery status {status:?}"))
                })?,
                created_at: Timestamp(get(row, "created_at")?),
                next_attempt_at: ts(get(row, "next_attempt_at")?),
                attempts: Vec::new(),
            });
        }
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let attempts = query(
            "SELECT delivery_id, at, status_code, error, duration_ms FROM webhook_attempts \
             WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1 \
               ORDER BY seq DESC LIMIT $2) \
             ORDER BY seq",
        )
        .bind(webhook.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        for row in &attempts {
            let delivery_id: String = get(row, "delivery_id")?;
            let status_code: Option<i64> = get(row, "status_code")?;
            let attempt = AttemptRecord {
                at: Timestamp(get(row, "at")?),
                status_code: status_code.and_then(|code| u16::try_from(code).ok()),
                error: get(row, "error")?,
                duration_ms: get(row, "duration_ms")?,
            };
            if let Some(delivery) = deliveries
                .iter_mut()
                .find(|delivery| delivery.id.as_str() == delivery_id)
            {
                delivery.attempts.push(attempt);
            }
        }
        Ok(deliveries)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        lease: &str,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        // A read first: an idle instance polls without writing (on SQLite an UPDATE takes the
        // write lock even when it matches nothing).
        let due: Option<String> = query_scalar(
            "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
        )
        .bind(now.seconds())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        // The outer conditions repeat the inner ones: on PostgreSQL, an UPDATE that waited for
        // another instance's claim of a row re-checks them on the new row and skips it, so each
        // row is leased to one instance; SQLite runs one writer at a time.
        let claimed = query(
            "UPDATE webhook_deliveries SET lease = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $3 \
                   AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY next_attempt_at LIMIT $4) \
               AND status = 'pending' AND next_attempt_at <= $3 \
               AND (lease_until IS NULL OR lease_until <= $3)",
        )
        .bind(lease)
        .bind(lease_until.seconds())
        .bind(now.seconds())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        query(
            "SELECT webhook_deliveries.id, webhook_deliveries.webhook_id, \
               webhook_deliveries.payload, webhook_deliveries.attempt_count, \
               webhooks.url, webhooks.secret \
             FROM webhook_deliveries JOIN webhooks ON webhooks.id = webhook_deliveries.webhook_id \
             WHERE webhook_deliveries.lease = $1 ORDER BY webhook_deliveries.seq",
        )
        .bind(lease)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?
        .iter()
        .map(|row| {
            let attempts: i64 = get(row, "attempt_count")?;
            Ok(ClaimedDelivery {
                id: DeliveryId::from_stored(get(row, "id")?),
                webhook_id: WebhookId::from_stored(get(row, "webhook_id")?),
                url: get(row, "url")?,
                secret: WebhookSecret::from_stored(get(row, "secret")?),
                payload: get(row, "payload")?,
                attempts_made: u32::try_from(attempts).unwrap_or(u32::MAX),
                lease: lease.to_owned(),
            })
        })
        .collect()
    }

    async fn record_attempt(
        &self,
        delivery: &DeliveryId,
        lease: &str,
        attempt: &AttemptRecord,
        state: DeliveryState,
        next_attempt_at: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let updated = query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
               attempt_count = attempt_count + 1, lease = NULL, lease_until = NULL \
             WHERE id = $3 AND lease = $4",
        )
        .bind(state.as_str())
        .bind(next_attempt_at.map(Timestamp::seconds))
        .bind(delivery.as_str())
        .bind(lease)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        query(
            "INSERT INTO webhook_attempts (delivery_id, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(delivery.as_str())
        .bind(attempt.at.seconds())
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn prune_deliveries(&self, before: Timestamp) -> StoreResult<u64> {
        let deleted =
            query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
                .bind(before.seconds())
                .execute(&self.pool)
                .await
                .map_err(map_error)?;
        Ok(deleted.rows_affected())
    }

    async fn claim_expiring_keys(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExpiringKey>> {
        // Driven from the webhooks subscribed to `key.expiring` (few), so that without any
        // the scan reads no key at all.
        let sql = concat!(
            "SELECT DISTINCT api_keys.id, api_keys.tenant_id, api_keys.user_id, api_keys.name, \
               api_keys.expires_at \
             FROM webhooks JOIN api_keys ON api_keys.user_id = webhooks.user_id \
               AND api_keys.tenant_id = webhooks.tenant_id \
             WHERE webhooks.events LIKE '% key.expiring %' \
               AND api_keys.revoked_at IS NULL \
               AND api_keys.expires_at > $1 AND api_keys.expires_at <= $2 \
               AND NOT EXISTS (SELECT 1 FROM key_expiry_notices \
                   WHERE key_expiry_notices.key_id = api_keys.id) \
               AND ",
            owner_enabled!(),
            " ORDER BY api_keys.expires_at LIMIT $3"
        );
        let candidates = query(sql)
            .bind(now.seconds())
            .bind(until.seconds())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        let mut claimed = Vec::new();
        for row in &candidates {
            let key = ExpiringKey {
                id: KeyId::from_stored(get(row, "id")?),
                owner: Owner {
                    user_id: UserId::from_stored(get(row, "user_id")?),
                    tenant_id: TenantId::from_stored(get(row, "tenant_id")?),
                },
                name: get(row, "name")?,
                expires_at: Timestamp(get(row, "expires_at")?),
            };
            // Whichever instance inserts the notice sends it.
            let inserted = query(
                "INSERT INTO key_expiry_notices (key_id, notified_at) VALUES ($1, $2) \
                 ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key.id.as_str())
            .bind(now.seconds())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
            if inserted.rows_affected() == 1 {
                claimed.push(key);
            }
        }
        Ok(claimed)
    }
}
