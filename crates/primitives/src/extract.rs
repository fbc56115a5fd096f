//! Request extractors whose rejections are problem+json, so malformed input
//! never produces axum's plain-text errors.

use crate::problem::Problem;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A JSON body; also a JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|_| {
            Problem::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body could not be read or is too large",
            )
        })?;
        parse_object(&bytes).map(Json)
    }
}

/// The body of a request whose body is optional: nothing (or only
/// whitespace) is `T::default()`, anything else must be a JSON object of `T`
/// with the same problems as [`Json`]. Handlers take the raw `Bytes` and call
/// this, because [`Json`] insists on a JSON content type that a client
/// sending no body does not set.
pub fn optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_object(bytes) }
}

fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Every request body of this API is a JSON object. serde would also
    // accept a struct written as an array of its fields in order, which
    // no client means to send; refuse it rather than guess.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::unprocessable("invalid_body", "the body must be a JSON object, not an array"));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(rej) => Err(json_rejection(rej)),
    }
}

/// `application/json` or any `application/*+json`, as axum's own extractor.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as application/json",
    )
}

fn json_rejection(rej: JsonRejection) -> Problem {
    match rej {
        JsonRejection::JsonSyntaxError(e) => {
            Problem::bad_request("malformed_json", format!("the body is not valid JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => {
            Problem::unprocessable("invalid_body", format!("the body does not match the schema: {}", source_text(&e)))
        }
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::BytesRejection(_) => Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body could not be read or is too large",
        ),
        other => Problem::bad_request("malformed_json", other.body_text()),
    }
}

/// The innermost message of an extractor error (serde's own wording, which
/// names the field and position), without axum's prefix.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed id is a 404 `not_found`, because an id that
/// cannot parse names nothing, exactly like an unknown one.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(Problem::not_found("not_found", format!("no such resource ({})", e.body_text())))
            }
            Err(e) => Err(Problem::internal(e.body_text())),
        }
    }
}

/// Query parameters with problem+json rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(Problem::bad_request("invalid_query", e.body_text()))
            }
            Err(e) => Err(Problem::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, Problem> {
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(Problem::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An optional `Idempotency-Key` header, validated when present.
#[derive(Debug, Clone)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(None)),
            Some(v) => {
                let s = v.to_str().map_err(|_| {
                    Problem::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
                Ok(Self(Some(IdempotencyKey::parse(s)?)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::optional_json;
    use axum::http::StatusCode;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Body {
        reason: Option<String>,
    }

    /// An optional body may be absent, but what is sent is held to the same
    /// rules as a required one: an object of the schema, never an array.
    #[test]
    fn optional_bodies_default_when_empty_and_are_checked_otherwise() {
        assert_eq!(optional_json::<Body>(b"").unwrap(), Body::default());
        assert_eq!(optional_json::<Body>(b" \n").unwrap(), Body::default());
        assert_eq!(optional_json::<Body>(br#"{"reason":"x"}"#).unwrap(), Body { reason: Some("x".into()) });
        let array = optional_json::<Body>(br#"["x"]"#).unwrap_err();
        assert_eq!((array.status, array.code.as_ref()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
        let wrong_type = optional_json::<Body>(br#"{"reason":1}"#).unwrap_err();
        assert_eq!((wrong_type.status, wrong_type.code.as_ref()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
        let malformed = optional_json::<Body>(b"{").unwrap_err();
        assert_eq!((malformed.status, malformed.code.as_ref()), (StatusCode::BAD_REQUEST, "malformed_json"));
    }
}
