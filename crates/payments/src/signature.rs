//! Webhook signatures: the Standard Webhooks scheme the sandbox uses and
//! Stripe's `Stripe-Signature` scheme. Pure functions over headers and the
//! raw body; callers verify before they parse anything.

use crate::domain::{WEBHOOK_TOLERANCE_SECS, WebhookError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for p in parts {
        m.update(p);
    }
    m
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::InvalidSignature)
}

fn check_fresh(ts: i64, now_secs: i64) -> Result<(), WebhookError> {
    if (now_secs - ts).abs() > WEBHOOK_TOLERANCE_SECS {
        return Err(WebhookError::StaleWebhook);
    }
    Ok(())
}

/// The `webhook-signature` value for a Standard Webhooks message:
/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn standard_sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let tag = mac(secret, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Verifies a Standard Webhooks delivery (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`, which may list several space-separated signatures)
/// and returns the message id. The signature is checked before the
/// timestamp's age, so an attacker cannot learn anything from `stale_webhook`.
pub fn standard_verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<String, WebhookError> {
    let id = header(headers, "webhook-id")?;
    let ts_text = header(headers, "webhook-timestamp")?;
    let sigs = header(headers, "webhook-signature")?;
    let ts: i64 = ts_text.parse().map_err(|_| WebhookError::InvalidSignature)?;
    let m = mac(secret, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
    let ok = sigs.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|b64| match STANDARD.decode(b64) {
        Ok(tag) => m.clone().verify_slice(&tag).is_ok(),
        Err(_) => false,
    });
    if !ok {
        return Err(WebhookError::InvalidSignature);
    }
    check_fresh(ts, now_secs)?;
    Ok(id.to_owned())
}

/// The `Stripe-Signature` value Stripe would send: `t=<ts>,v1=<hex>`.
pub fn stripe_sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let tag = mac(secret, &[ts.as_bytes(), b".", body]).finalize().into_bytes();
    format!("t={ts},v1={}", hex::encode(tag))
}

/// Verifies Stripe's scheme: HMAC-SHA256 over `"{t}.{body}"` keyed with the
/// whole `whsec_…` string, hex encoded; any of several `v1` entries may
/// match (Stripe sends one per active secret during rotation); `v0` entries
/// are ignored.
pub fn stripe_verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), WebhookError> {
    let value = header(headers, "stripe-signature")?;
    let mut ts_text = None;
    let mut v1 = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => ts_text = Some(t),
            Some(("v1", s)) => v1.push(s),
            _ => {}
        }
    }
    let ts_text = ts_text.ok_or(WebhookError::InvalidSignature)?;
    let ts: i64 = ts_text.parse().map_err(|_| WebhookError::InvalidSignature)?;
    let m = mac(secret, &[ts_text.as_bytes(), b".", body]);
    let ok = v1.iter().any(|h| match hex::decode(h) {
        Ok(tag) => m.clone().verify_slice(&tag).is_ok(),
        Err(_) => false,
    });
    if !ok {
        return Err(WebhookError::InvalidSignature);
    }
    check_fresh(ts, now_secs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn std_headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn standard_webhooks_round_trip_and_refusals() {
        let body = br#"{"type":"payment.succeeded"}"#;
        let sig = standard_sign(b"secret", "evt_1", 1_700_000_000, body);
        let h = std_headers("evt_1", 1_700_000_000, &sig);
        assert_eq!(standard_verify(b"secret", &h, body, 1_700_000_100).as_deref(), Ok("evt_1"));
        // several signatures, one valid
        let h2 = std_headers("evt_1", 1_700_000_000, &format!("v1,AAAA {sig}"));
        assert!(standard_verify(b"secret", &h2, body, 1_700_000_000).is_ok());
        assert_eq!(standard_verify(b"other", &h, body, 1_700_000_000), Err(WebhookError::InvalidSignature));
        assert_eq!(
            standard_verify(b"secret", &h, br#"{"type":"payment.refunded"}"#, 1_700_000_000),
            Err(WebhookError::InvalidSignature)
        );
        assert_eq!(standard_verify(b"secret", &h, body, 1_700_000_301), Err(WebhookError::StaleWebhook));
        assert_eq!(standard_verify(b"secret", &HeaderMap::new(), body, 0), Err(WebhookError::InvalidSignature));
    }

    #[test]
    fn stripe_round_trip_with_several_v1_entries() {
        let body = b"{}";
        let sig = stripe_sign(b"whsec_x", 100, body);
        let mut h = HeaderMap::new();
        let both = format!("{sig},v1=00ff,v0=abc");
        h.insert("stripe-signature", HeaderValue::from_str(&both).unwrap());
        assert_eq!(stripe_verify(b"whsec_x", &h, body, 100), Ok(()));
        assert_eq!(stripe_verify(b"whsec_y", &h, body, 100), Err(WebhookError::InvalidSignature));
        assert_eq!(stripe_verify(b"whsec_x", &h, body, 401), Err(WebhookError::StaleWebhook));
    }
}
