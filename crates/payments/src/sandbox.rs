//! The embedded sandbox provider: behaves like a real one, with its state in
//! its own tables (`sandbox_charges`, `sandbox_webhooks`). Buyers pay on a
//! hosted page with Stripe-style test cards; outcomes reach Entrada only as
//! signed Standard Webhooks POSTed to the configured URL, at least once,
//! with backoff, and (when configured) sometimes twice and out of order, so
//! the receiving side is exercised the way a real provider would.

use crate::domain::{Outcome, PaymentsError, ProviderError, ProviderEvent, TestCard, WebhookError};
use crate::provider::{CreateRequest, CreatedCheckout, PaymentProvider, RefundRequest};
use crate::signature;
use entrada_primitives::ids::PaymentId;
use entrada_primitives::{Currency, Money, Secret, SharedClock};
use entrada_storage::{Db, Run, Script, WriteError};
use futures::StreamExt as _;
use http::HeaderMap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// The sandbox's settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SandboxConfig {
    /// Signs outgoing webhooks; the receiving side verifies with the same.
    pub webhook_secret: Secret<String>,
    /// Where this deployment is reachable, without a trailing slash: the
    /// checkout pages live under it and webhooks are POSTed to
    /// `{public_base_url}/api/v1/payments/webhooks/sandbox`.
    pub public_base_url: String,
    /// When set to `n`, every n-th webhook is delivered twice, and each
    /// delivery run sends newest first (out of order). Off in production,
    /// on in tests, so consumers prove they are idempotent.
    #[serde(default)]
    pub duplicate_every: Option<u32>,
}

impl SandboxConfig {
    pub fn new(webhook_secret: Secret<String>, public_base_url: impl Into<String>) -> Self {
        Self { webhook_secret, public_base_url: public_base_url.into(), duplicate_every: None }
    }

    fn base(&self) -> &str {
        self.public_base_url.trim_end_matches('/')
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/api/v1/payments/webhooks/sandbox", self.base())
    }
}

/// A charge as the checkout page shows it.
#[derive(Debug, Clone)]
pub struct ChargeView {
    pub payment_id: PaymentId,
    pub amount: Money,
    pub description: String,
    pub return_url: String,
    /// open | pending | succeeded | failed | refunded
    pub status: String,
}

/// The result of paying on the checkout page.
#[derive(Debug, Clone)]
pub struct PayResult {
    /// pending | succeeded | failed
    pub status: &'static str,
    pub decline_code: Option<&'static str>,
    pub return_url: String,
}

pub struct Sandbox {
    db: Db,
    clock: SharedClock,
    cfg: SandboxConfig,
    http: reqwest::Client,
    /// Rung when a webhook is queued, so the delivery loop does not wait
    /// for its next poll.
    pub(crate) wake: Arc<Notify>,
}

/// Outgoing webhooks in one delivery run, at most.
const DELIVERY_BATCH: i64 = 200;
/// Webhooks in flight at once.
const DELIVERY_CONCURRENCY: usize = 32;

impl Sandbox {
    pub fn new(db: Db, clock: SharedClock, cfg: SandboxConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { db, clock, cfg, http, wake: Arc::new(Notify::new()) }
    }

    /// The charge behind a checkout page.
    pub async fn charge(&self, payment_id: PaymentId) -> Result<Option<ChargeView>, PaymentsError> {
        let row: Option<(i64, String, String, String, String)> = sqlx::query(
            "SELECT amount_minor, currency, description, return_url, status FROM sandbox_charges WHERE payment_id = $1",
        )
        .bind(payment_id.to_db())
        .optional(&mut self.db.read())
        .await?;
        let Some((minor, currency, description, return_url, status)) = row else { return Ok(None) };
        let currency =
            Currency::parse(&currency).map_err(|_| PaymentsError::Corrupt("sandbox_charges.currency".into()))?;
        Ok(Some(ChargeView { payment_id, amount: Money::new(minor, currency), description, return_url, status }))
    }

    /// Pays an open charge with a test card and queues the outcome webhook:
    /// the charge is read, then moved from `open` by a guard in the same
    /// write as the webhook, so of two concurrent payments one wins and the
    /// other is told the charge is no longer payable.
    pub async fn pay(&self, payment_id: PaymentId, card: &str) -> Result<PayResult, PaymentsError> {
        let now = self.clock.now_ms();
        let row: Option<(String, String, String, i64, String)> = sqlx::query(
            "SELECT id, status, return_url, amount_minor, currency FROM sandbox_charges WHERE payment_id = $1",
        )
        .bind(payment_id.to_db())
        .optional(&mut self.db.read())
        .await?;
        let Some((charge_id, status, return_url, minor, currency)) = row else {
            return Err(PaymentsError::NotFound);
        };
        let card = TestCard::parse(card).ok_or(PaymentsError::Invalid("card", "not a sandbox test card number"))?;
        if status != "open" {
            return Err(PaymentsError::NotPayable);
        }
        let (new_status, event_type) = match card {
            TestCard::Succeeds => ("succeeded", "payment.succeeded"),
            TestCard::Declined | TestCard::InsufficientFunds => ("failed", "payment.failed"),
            TestCard::PendingThenSucceeds => ("pending", "payment.pending"),
        };
        let mut script = self.db.script();
        let moved = script.push_guard(
            sqlx::query(
                "UPDATE sandbox_charges SET status = $1, card_last4 = $2, decline_code = $3, updated_at = $4                  WHERE id = $5 AND status = 'open'",
            )
            .bind(new_status)
            .bind(card.last4())
            .bind(card.decline_code())
            .bind(now)
            .bind(charge_id.clone()),
        );
        let data = json!({
            "payment_id": payment_id.to_db(),
            "charge_id": charge_id,
            "amount_minor": minor,
            "currency": currency,
            "reason": card.decline_code(),
        });
        self.enqueue(&mut script, event_type, data, now).await?;
        match self.db.write(script).await {
            Ok(_) => {}
            Err(WriteError::Guard(at)) if at == moved => return Err(PaymentsError::NotPayable),
            Err(e) => return Err(sqlx::Error::from(e).into()),
        }
        self.wake.notify_one();
        Ok(PayResult { status: new_status, decline_code: card.decline_code(), return_url })
    }

    /// Adds one webhook to `script` (twice when the duplicate knob says so).
    async fn enqueue(&self, script: &mut Script, event_type: &str, data: Value, now: i64) -> Result<(), PaymentsError> {
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let payload = json!({
            "id": event_id,
            "type": event_type,
            "created": now.div_euclid(1000),
            "data": data,
        })
        .to_string();
        let copies = match self.cfg.duplicate_every {
            Some(n) if n > 0 => {
                let (count,): (i64,) = sqlx::query("SELECT COUNT(DISTINCT event_id) FROM sandbox_webhooks")
                    .one(&mut self.db.read())
                    .await?;
                if (count + 1) % i64::from(n) == 0 { 2 } else { 1 }
            }
            _ => 1,
        };
        for _ in 0..copies {
            script.push(
                sqlx::query(
                    "INSERT INTO sandbox_webhooks (event_id, payload, due_at, attempts, created_at) \
                     VALUES ($1, $2, $3, 0, $3)",
                )
                .bind(event_id.clone())
                .bind(payload.clone())
                .bind(now),
            );
        }
        Ok(())
    }

    /// One delivery run: POSTs every webhook due now, then settles pending
    /// charges (their success webhook goes out on the following run, so a
    /// pending state is observable). Returns how many deliveries succeeded.
    ///
    /// No transaction is held across a POST: the receiver is often this very
    /// process and needs the (single, on SQLite) writer connection.
    pub async fn deliver_due(&self) -> Result<usize, PaymentsError> {
        let now = self.clock.now_ms();
        let order = if self.cfg.duplicate_every.is_some() { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, event_id, payload, attempts FROM sandbox_webhooks \
             WHERE delivered_at IS NULL AND due_at <= $1 ORDER BY id {order} LIMIT $2"
        );
        let due: Vec<(i64, String, String, i64)> =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(DELIVERY_BATCH).all(&mut self.db.read()).await?;
        let url = self.cfg.webhook_url();
        // Deliveries go out concurrently, like a real provider's; without it
        // the round trip of one webhook bounds the whole sale's completion
        // rate. Outcomes are recorded afterwards in one transaction.
        let outcomes: Vec<(i64, i64, Option<String>)> = futures::stream::iter(due)
            .map(|(row_id, event_id, payload, attempts)| {
                let url = url.clone();
                async move {
                    let ts = self.clock.now().unix_timestamp();
                    let sig = signature::standard_sign(
                        self.cfg.webhook_secret.expose().as_bytes(),
                        &event_id,
                        ts,
                        payload.as_bytes(),
                    );
                    let res = self
                        .http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &event_id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sig)
                        .body(payload)
                        .send()
                        .await;
                    let failure = match res {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(err) = &failure {
                        tracing::warn!(event_id, attempts = attempts + 1, error = %err, "sandbox webhook delivery failed; will retry");
                    }
                    (row_id, attempts, failure)
                }
            })
            .buffer_unordered(DELIVERY_CONCURRENCY)
            .collect()
            .await;
        let after = self.clock.now_ms();
        let mut delivered = 0;
        let mut script = self.db.script();
        for (row_id, attempts, failure) in outcomes {
            match failure {
                None => {
                    script.push(
                        sqlx::query(
                            "UPDATE sandbox_webhooks SET delivered_at = $1, attempts = attempts + 1 WHERE id = $2",
                        )
                        .bind(after)
                        .bind(row_id),
                    );
                    delivered += 1;
                }
                Some(err) => {
                    // Exponential backoff from 1 s, capped at 10 minutes.
                    let backoff = if attempts >= 10 { 600_000 } else { 1000 * (1_i64 << attempts) };
                    script.push(
                        sqlx::query(
                            "UPDATE sandbox_webhooks SET attempts = attempts + 1, due_at = $1, last_error = $2 \
                             WHERE id = $3",
                        )
                        .bind(after + backoff)
                        .bind(err.chars().take(300).collect::<String>())
                        .bind(row_id),
                    );
                }
            }
        }
        if !script.is_empty() {
            self.db.write(script).await.map_err(sqlx::Error::from)?;
        }
        self.settle(now).await?;
        Ok(delivered)
    }

    /// Pending charges succeed (the `4000000000000077` card).
    async fn settle(&self, now: i64) -> Result<(), PaymentsError> {
        // Look before taking the (single, on SQLite) writer: this runs on
        // every delivery tick and there is usually nothing to settle.
        let (any,): (i64,) = sqlx::query("SELECT COUNT(*) FROM sandbox_charges WHERE status = 'pending'")
            .one(&mut self.db.read())
            .await?;
        if any == 0 {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let pending: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT id, payment_id, amount_minor, currency FROM sandbox_charges WHERE status = 'pending' ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let settled = !pending.is_empty();
        for (charge_id, payment_id, minor, currency) in pending {
            sqlx::query(
                "UPDATE sandbox_charges SET status = 'succeeded', updated_at = $1 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(&charge_id)
            .execute(&mut *tx)
            .await?;
            let data = json!({
                "payment_id": payment_id,
                "charge_id": charge_id,
                "amount_minor": minor,
                "currency": currency,
                "reason": null,
            });
            let mut script = Script::on(&tx);
            self.enqueue(&mut script, "payment.succeeded", data, now).await?;
            script.run(&mut tx).await?;
        }
        tx.commit().await?;
        if settled {
            self.wake.notify_one();
        }
        Ok(())
    }
}

fn storage(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("sandbox storage: {e}"))
}

#[async_trait::async_trait]
impl PaymentProvider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn create_payment(&self, req: &CreateRequest) -> Result<CreatedCheckout, ProviderError> {
        let now = self.clock.now_ms();
        let charge_id = format!("ch_{}", uuid::Uuid::now_v7().simple());
        let mut script = self.db.script();
        script.push(
            sqlx::query(
                "INSERT INTO sandbox_charges (id, payment_id, reference, amount_minor, currency, description, \
                 return_url, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $8) \
                 ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(charge_id.clone())
            .bind(req.payment_id.to_db())
            .bind(req.reference.clone())
            .bind(req.amount.minor)
            .bind(req.amount.currency.as_str())
            .bind(req.description.clone())
            .bind(req.return_url.clone())
            .bind(now),
        );
        let id = if self.db.write(script).await.map_err(storage)?[0] == 1 {
            charge_id
        } else {
            // Idempotent by payment id: a repeated request gets the first charge.
            let (id,): (String,) = sqlx::query_as("SELECT id FROM sandbox_charges WHERE payment_id = $1")
                .bind(req.payment_id.to_db())
                .fetch_one(self.db.reader())
                .await
                .map_err(storage)?;
            id
        };
        Ok(CreatedCheckout {
            provider_ref: id.clone(),
            capture_ref: Some(id),
            checkout_url: format!("{}/sandbox/checkout/{}", self.cfg.base(), req.payment_id),
        })
    }

    async fn refund(&self, req: &RefundRequest) -> Result<String, ProviderError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await.map_err(storage)?;
        let sql = format!(
            "SELECT payment_id, status, refund_id, amount_minor, currency FROM sandbox_charges WHERE id = $1{}",
            self.db.for_update()
        );
        let row: Option<(String, String, Option<String>, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&req.capture_ref)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
        let Some((payment_id, status, refund_id, minor, currency)) = row else {
            return Err(ProviderError::Rejected { code: "resource_missing".into() });
        };
        match (status.as_str(), refund_id) {
            // A full refund exists already: the same answer, no second refund.
            ("refunded", Some(id)) => return Ok(id),
            ("succeeded", _) => {}
            _ => return Err(ProviderError::Rejected { code: "charge_not_refundable".into() }),
        }
        if req.amount.minor != minor || req.amount.currency.as_str() != currency {
            return Err(ProviderError::Rejected { code: "amount_mismatch".into() });
        }
        let refund_id = format!("re_{}", uuid::Uuid::now_v7().simple());
        sqlx::query("UPDATE sandbox_charges SET status = 'refunded', refund_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&refund_id)
            .bind(now)
            .bind(&req.capture_ref)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        let data = json!({
            "payment_id": payment_id,
            "charge_id": req.capture_ref,
            "amount_minor": minor,
            "currency": currency,
            "refund_id": refund_id,
        });
        let mut script = Script::on(&tx);
        self.enqueue(&mut script, "payment.refunded", data, now).await.map_err(storage)?;
        script.run(&mut tx).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        self.wake.notify_one();
        Ok(refund_id)
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<ProviderEvent, WebhookError> {
        let event_id = signature::standard_verify(
            self.cfg.webhook_secret.expose().as_bytes(),
            headers,
            body,
            now.unix_timestamp(),
        )?;
        parse_event(event_id, body)
    }
}

/// Parses a verified sandbox payload.
fn parse_event(event_id: String, body: &[u8]) -> Result<ProviderEvent, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| WebhookError::MalformedWebhook)?;
    let event_type = v["type"].as_str().ok_or(WebhookError::MalformedWebhook)?.to_owned();
    let data = &v["data"];
    let payment_id =
        data["payment_id"].as_str().and_then(|s| PaymentId::from_db(s).ok()).ok_or(WebhookError::MalformedWebhook)?;
    let charge_id = data["charge_id"].as_str().map(str::to_owned);
    let amount = match (data["amount_minor"].as_i64(), data["currency"].as_str().map(Currency::parse)) {
        (Some(m), Some(Ok(c))) => Some(Money::new(m, c)),
        _ => None,
    };
    let outcome = match event_type.as_str() {
        "payment.pending" => Outcome::Pending,
        "payment.succeeded" => Outcome::Succeeded,
        "payment.failed" => Outcome::Failed { reason: data["reason"].as_str().unwrap_or("payment_failed").to_owned() },
        "payment.refunded" => Outcome::Refunded { refund_ref: data["refund_id"].as_str().map(str::to_owned) },
        _ => Outcome::Ignored,
    };
    Ok(ProviderEvent {
        event_id,
        event_type,
        payment_id: Some(payment_id),
        provider_ref: charge_id.clone(),
        capture_ref: charge_id,
        amount,
        outcome,
    })
}

/// The hosted checkout page: self-contained HTML, no external assets.
pub fn checkout_page(c: &ChargeView) -> String {
    let amount = format!("{}.{:02} {}", c.amount.minor / 100, (c.amount.minor % 100).abs(), c.amount.currency);
    let body = if c.status == "open" {
        format!(
            r#"<form method="post" action="/sandbox/checkout/{id}">
<label for="card">Card number</label>
<input id="card" name="card" inputmode="numeric" autocomplete="cc-number" placeholder="4242 4242 4242 4242" required>
<button type="submit">Pay {amount}</button>
</form>
<p class="hint">Test cards: 4242 4242 4242 4242 succeeds; 4000 0000 0000 0002 is declined;
4000 0000 0000 9995 has insufficient funds; 4000 0000 0000 0077 settles later.</p>"#,
            id = c.payment_id,
            amount = escape(&amount),
        )
    } else {
        format!("<p>This payment is {}.</p>", escape(&c.status))
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox checkout</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
.amount{{font-size:2rem;font-weight:600}}input,button{{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}}
.hint{{color:#555;font-size:.85rem}}</style></head>
<body><p>Entrada sandbox payment: no real money moves.</p>
<h1>{description}</h1>
<p class="amount">{amount}</p>
{body}
</body></html>"#,
        description = escape(&c.description),
        amount = escape(&amount),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn checkout_page_escapes_the_description() {
        let c = ChargeView {
            payment_id: PaymentId::new(),
            amount: Money::new(2550, Currency::parse("EUR").unwrap()),
            description: "<script>x</script>".into(),
            return_url: "https://example.org".into(),
            status: "open".into(),
        };
        let html = checkout_page(&c);
        assert!(html.contains("25.50 EUR"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains(r#"name="card""#));
    }

    #[test]
    fn malformed_verified_payloads_are_refused() {
        assert_eq!(parse_event("e".into(), b"not json"), Err(WebhookError::MalformedWebhook));
        assert_eq!(
            parse_event("e".into(), br#"{"type":"payment.succeeded","data":{}}"#),
            Err(WebhookError::MalformedWebhook)
        );
    }
}
