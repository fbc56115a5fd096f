//! RFC 9457 problem details: the one error shape of the HTTP API.
//!
//! Every context maps its domain errors to a [`Problem`] with a stable,
//! machine-readable `code` (snake_case, never reworded once published). The
//! `type` URI is derived from the code. Internal errors are logged with their
//! cause and shown only as `internal`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const TYPE_BASE: &str = "https://entrada.dev/problems/";

/// The members every problem carries; extensions never overwrite them.
const RESERVED: [&str; 5] = ["type", "title", "status", "code", "detail"];

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub detail: Option<String>,
    /// Extra members, such as `errors` for field-level validation failures.
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

/// The code a response carried, left in the response extensions so the
/// request log and metrics can record it without parsing the body.
#[derive(Debug, Clone)]
pub struct ProblemCode(pub Cow<'static, str>);

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self { status, code: code.into(), detail: Some(detail.into()), extra: Map::new(), retry_after: None }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn gone(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut p = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down");
        p.retry_after = Some(retry_after);
        p
    }

    /// A field-level validation failure (422 `validation_failed`), naming the
    /// field so a client can show the message beside it.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Self::unprocessable("validation_failed", format!("{field}: {message}"));
        p.extra.insert("errors".into(), serde_json::json!([{ "field": field, "message": message }]));
        p
    }

    /// An unexpected failure: the cause goes to the log, the client sees only
    /// `internal`. Never put secrets in `cause`.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: Cow::Borrowed("internal"),
            detail: Some("an unexpected error occurred; it has been logged".into()),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        p.retry_after = Some(1);
        p
    }

    /// Adds an extension member. The RFC 9457 members (`type`, `title`,
    /// `status`, `detail`) and `code` are reserved: clients rely on `status`
    /// being the HTTP status number, so an extension may never replace them.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The JSON body, as sent.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(format!("{TYPE_BASE}{}", self.code)));
        m.insert("title".into(), Value::String(self.status.canonical_reason().unwrap_or("Error").to_owned()));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        m.insert("code".into(), Value::String(self.code.to_string()));
        if let Some(d) = &self.detail {
            m.insert("detail".into(), Value::String(d.clone()));
        }
        for (k, v) in &self.extra {
            if !RESERVED.contains(&k.as_str()) {
                m.insert(k.clone(), v.clone());
            }
        }
        Value::Object(m)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res.extensions_mut().insert(ProblemCode(self.code));
        res
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_type_code_status_and_extra_members() {
        let p = Problem::invalid_field("name", "must not be empty");
        let b = p.body();
        assert_eq!(b["type"], "https://entrada.dev/problems/validation_failed");
        assert_eq!(b["status"], 422);
        assert_eq!(b["code"], "validation_failed");
        assert_eq!(b["errors"][0]["field"], "name");
    }

    #[test]
    fn extensions_never_replace_the_standard_members() {
        let b = Problem::conflict("invalid_transition", "no").with("status", "on_sale").with("code", "x").body();
        assert_eq!(b["status"], 409);
        assert_eq!(b["code"], "invalid_transition");
    }

    #[test]
    fn internal_hides_the_cause() {
        let p = Problem::internal("db password is swordfish");
        assert!(!p.body().to_string().contains("swordfish"));
    }
}
