//! Stripe over its REST wire format (no SDK): Checkout Sessions to take
//! money, Refunds to give it back, `Stripe-Signature` webhooks for outcomes.
//!
//! A small client on reqwest rather than async-stripe: we use three calls,
//! and the SDK is a pre-release that costs minutes of build.

use crate::domain::{Outcome, ProviderError, ProviderEvent, WebhookError};
use crate::provider::{CreateRequest, CreatedCheckout, PaymentProvider, RefundRequest};
use crate::signature;
use entrada_primitives::ids::PaymentId;
use entrada_primitives::{Currency, Money, Secret};
use http::HeaderMap;
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;

/// Stripe's settings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StripeConfig {
    /// `https://api.stripe.com` unless a test points it elsewhere.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `sk_…`; sent only as the bearer token, never logged.
    pub secret_key: Secret<String>,
    /// `whsec_…`; verifies incoming webhooks.
    pub webhook_secret: Secret<String>,
}

pub fn default_api_base() -> String {
    "https://api.stripe.com".to_owned()
}

pub struct Stripe {
    cfg: StripeConfig,
    http: reqwest::Client,
}

impl Stripe {
    pub fn new(cfg: StripeConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { cfg, http }
    }

    async fn post_form(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let body = serde_urlencoded::to_string(form).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let url = format!("{}{path}", self.cfg.api_base.trim_end_matches('/'));
        let res = self
            .http
            .post(&url)
            .bearer_auth(self.cfg.secret_key.expose())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("idempotency-key", idempotency_key)
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("stripe {path}: {}", e.without_url())))?;
        let status = res.status();
        let json: Value = res
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("stripe {path}: unreadable answer: {e}")))?;
        if status.is_success() {
            return Ok(json);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Unavailable(format!("stripe {path}: HTTP {}", status.as_u16())));
        }
        let code = json["error"]["code"]
            .as_str()
            .or_else(|| json["error"]["type"].as_str())
            .unwrap_or("stripe_error")
            .to_owned();
        Err(ProviderError::Rejected { code })
    }
}

/// Appends `payment` and `status` to the buyer's return URL.
fn with_query(url: &str, payment_id: PaymentId, status: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}payment={payment_id}&status={status}")
}

#[async_trait::async_trait]
impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_payment(&self, req: &CreateRequest) -> Result<CreatedCheckout, ProviderError> {
        let pid = req.payment_id.to_string();
        let form = [
            ("mode", "payment".to_owned()),
            ("line_items[0][price_data][currency]", req.amount.currency.as_str().to_ascii_lowercase()),
            ("line_items[0][price_data][unit_amount]", req.amount.minor.to_string()),
            ("line_items[0][price_data][product_data][name]", req.description.clone()),
            ("line_items[0][quantity]", "1".to_owned()),
            ("success_url", with_query(&req.return_url, req.payment_id, "succeeded")),
            ("cancel_url", with_query(&req.return_url, req.payment_id, "cancelled")),
            ("client_reference_id", pid.clone()),
            ("metadata[payment_id]", pid.clone()),
            ("metadata[reference]", req.reference.clone()),
            ("payment_intent_data[metadata][payment_id]", pid.clone()),
        ];
        let v = self.post_form("/v1/checkout/sessions", &pid, &form).await?;
        let id = v["id"].as_str().ok_or_else(|| ProviderError::Unavailable("session without id".into()))?;
        let url = v["url"].as_str().ok_or_else(|| ProviderError::Unavailable("session without url".into()))?;
        Ok(CreatedCheckout {
            provider_ref: id.to_owned(),
            capture_ref: v["payment_intent"].as_str().map(str::to_owned),
            checkout_url: url.to_owned(),
        })
    }

    async fn refund(&self, req: &RefundRequest) -> Result<String, ProviderError> {
        let form = [("payment_intent", req.capture_ref.clone()), ("amount", req.amount.minor.to_string())];
        let v = self.post_form("/v1/refunds", &req.idempotency_key, &form).await?;
        v["id"].as_str().map(str::to_owned).ok_or_else(|| ProviderError::Unavailable("refund without id".into()))
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<ProviderEvent, WebhookError> {
        signature::stripe_verify(self.cfg.webhook_secret.expose().as_bytes(), headers, body, now.unix_timestamp())?;
        parse_event(body)
    }
}

/// Maps a verified Stripe event to an outcome. Events we do not act on are
/// `Ignored` (acknowledged, so Stripe stops resending them).
pub fn parse_event(body: &[u8]) -> Result<ProviderEvent, WebhookError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| WebhookError::MalformedWebhook)?;
    let event_id = v["id"].as_str().ok_or(WebhookError::MalformedWebhook)?.to_owned();
    let event_type = v["type"].as_str().ok_or(WebhookError::MalformedWebhook)?.to_owned();
    let obj = &v["data"]["object"];
    if !obj.is_object() {
        return Err(WebhookError::MalformedWebhook);
    }
    let metadata_pid = obj["metadata"]["payment_id"].as_str().and_then(|s| PaymentId::from_db(s).ok());
    let money = |amount: &Value| match (amount.as_i64(), obj["currency"].as_str()) {
        (Some(m), Some(c)) => Currency::parse(&c.to_ascii_uppercase()).ok().map(|c| Money::new(m, c)),
        _ => None,
    };
    let obj_id = obj["id"].as_str().map(str::to_owned);
    let mut ev = ProviderEvent {
        event_id,
        event_type: event_type.clone(),
        payment_id: metadata_pid,
        provider_ref: None,
        capture_ref: None,
        amount: None,
        outcome: Outcome::Ignored,
    };
    match event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            ev.payment_id =
                ev.payment_id.or_else(|| obj["client_reference_id"].as_str().and_then(|s| PaymentId::from_db(s).ok()));
            ev.provider_ref = obj_id;
            ev.capture_ref = obj["payment_intent"].as_str().map(str::to_owned);
            ev.amount = money(&obj["amount_total"]);
            // `unpaid` means a delayed method (bank debit): the money follows
            // in `async_payment_succeeded`.
            ev.outcome = match obj["payment_status"].as_str() {
                Some("paid") | Some("no_payment_required") => Outcome::Succeeded,
                _ => Outcome::Pending,
            };
        }
        "checkout.session.async_payment_failed" => {
            ev.provider_ref = obj_id;
            ev.outcome = Outcome::Failed { reason: "async_payment_failed".into() };
        }
        "payment_intent.succeeded" => {
            ev.capture_ref = obj_id;
            ev.amount = money(&obj["amount_received"]);
            ev.outcome = Outcome::Succeeded;
        }
        "payment_intent.payment_failed" => {
            ev.capture_ref = obj_id;
            let err = &obj["last_payment_error"];
            let reason = err["decline_code"].as_str().or_else(|| err["code"].as_str()).unwrap_or("payment_failed");
            ev.outcome = Outcome::Failed { reason: reason.to_owned() };
        }
        "charge.refunded" => {
            ev.capture_ref = obj["payment_intent"].as_str().map(str::to_owned);
            ev.amount = money(&obj["amount_refunded"]);
            // Only full refunds are modelled; a partial one (made in the
            // dashboard) is acknowledged and left for a human.
            ev.outcome = if obj["refunded"].as_bool() == Some(true) {
                let refund_ref = obj["refunds"]["data"][0]["id"].as_str().map(str::to_owned);
                Outcome::Refunded { refund_ref }
            } else {
                tracing::warn!(event = %ev.event_id, "partial Stripe refund ignored");
                Outcome::Ignored
            };
        }
        _ => {}
    }
    Ok(ev)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_keep_existing_queries() {
        let p = PaymentId::new();
        assert_eq!(
            with_query("https://x/back", p, "succeeded"),
            format!("https://x/back?payment={p}&status=succeeded")
        );
        assert_eq!(
            with_query("https://x/b?a=1", p, "cancelled"),
            format!("https://x/b?a=1&payment={p}&status=cancelled")
        );
    }

    #[test]
    fn unknown_events_are_ignored_and_garbage_is_malformed() {
        let ev = parse_event(br#"{"id":"evt_1","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#).unwrap();
        assert_eq!(ev.outcome, Outcome::Ignored);
        assert_eq!(parse_event(b"{}"), Err(WebhookError::MalformedWebhook));
        assert_eq!(parse_event(br#"{"id":"evt_1","type":"x","data":{}}"#), Err(WebhookError::MalformedWebhook));
    }
}
