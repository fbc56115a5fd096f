//! `Idempotency-Key` on creating requests: the same key with the same body
//! replays the first response; the same key with a different body is a 422
//! `idempotency_key_reused`; a request still running under the key is a 409
//! `idempotency_key_in_flight`.
//!
//! Keys are scoped by caller (a user id, or the client IP for anonymous
//! calls) and route, so two callers never collide. A 5xx is not stored: the
//! key is released so the client can retry.

use crate::db::Db;
use entrada_primitives::Problem;
use entrada_primitives::extract::IdempotencyKey;
use http::StatusCode;
use serde_json::Value;
use sha2_digest::hash_hex;
use std::future::Future;

mod sha2_digest {
    pub fn hash_hex(bytes: &[u8]) -> String {
        entrada_primitives::token::digest(&String::from_utf8_lossy(bytes))
    }
}

enum Begin {
    Proceed,
    Replay(StatusCode, Value),
}

async fn begin(db: &Db, scope: &str, key: &str, hash: &str, now_ms: i64) -> Result<Begin, Problem> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(now_ms)
    .execute(&mut *db.writer().await.map_err(Problem::internal)?)
    .await
    .map_err(Problem::internal)?;
    if inserted.rows_affected() == 1 {
        return Ok(Begin::Proceed);
    }
    let row: Option<(String, Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT request_hash, status, response FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *db.writer().await.map_err(Problem::internal)?)
            .await
            .map_err(Problem::internal)?;
    match row {
        None => Err(Problem::conflict("idempotency_key_in_flight", "retry the request")),
        Some((h, _, _)) if h != hash => Err(Problem::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )),
        Some((_, Some(status), Some(body))) => {
            let status = StatusCode::from_u16(status as u16).map_err(Problem::internal)?;
            let body = serde_json::from_str(&body).map_err(Problem::internal)?;
            Ok(Begin::Replay(status, body))
        }
        Some(_) => Err(Problem::conflict(
            "idempotency_key_in_flight",
            "a request with this Idempotency-Key is still being processed",
        )),
    }
}

/// The outcome of an idempotent call: a status and a JSON body, either
/// freshly produced or replayed.
pub struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

/// Runs `f` at most once per (scope, key, body). Without a key it simply
/// runs `f`. Problems with a 4xx status are stored and replayed like
/// successes, as Stripe does.
pub async fn run<F, Fut>(
    db: &Db,
    now_ms: i64,
    scope: &str,
    key: Option<&IdempotencyKey>,
    request_body: &[u8],
    f: F,
) -> Result<Outcome, Problem>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), Problem>>,
{
    let Some(key) = key else {
        let (status, body) = f().await?;
        return Ok(Outcome { status, body, replayed: false });
    };
    let hash = hash_hex(request_body);
    match begin(db, scope, key.as_str(), &hash, now_ms).await? {
        Begin::Replay(status, body) => {
            if status.is_success() {
                Ok(Outcome { status, body, replayed: true })
            } else {
                Err(problem_from_body(status, body))
            }
        }
        Begin::Proceed => {
            let result = f().await;
            let (status, body) = match &result {
                Ok((s, b)) => (*s, b.clone()),
                Err(p) if p.status.is_client_error() => (p.status, p.body()),
                Err(_) => {
                    let _ = sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
                        .bind(scope)
                        .bind(key.as_str())
                        .execute(&mut *db.writer().await.map_err(Problem::internal)?)
                        .await;
                    return result.map(|(status, body)| Outcome { status, body, replayed: false });
                }
            };
            sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE scope = $3 AND key = $4")
                .bind(i64::from(status.as_u16()))
                .bind(body.to_string())
                .bind(scope)
                .bind(key.as_str())
                .execute(&mut *db.writer().await.map_err(Problem::internal)?)
                .await
                .map_err(Problem::internal)?;
            result.map(|(status, body)| Outcome { status, body, replayed: false })
        }
    }
}

fn problem_from_body(status: StatusCode, body: Value) -> Problem {
    let code = body.get("code").and_then(Value::as_str).unwrap_or("error").to_owned();
    let detail = body.get("detail").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut p = Problem::new(status, code, detail);
    if let Value::Object(m) = body {
        for (k, v) in m {
            if !matches!(k.as_str(), "type" | "title" | "status" | "code" | "detail") {
                p.extra.insert(k, v);
            }
        }
    }
    p
}
