//! Cross-cutting HTTP layers: bearer-token authentication, per-IP rate
//! limits, request metrics and problem+json for everything axum would
//! otherwise answer in plain text (unknown route, wrong method, panic).

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use entrada_primitives::Problem;
use entrada_primitives::auth::{AuthState, Principal};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

/// Verifies access tokens; implemented by identity, a stand-in in tests.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    async fn verify(&self, token: &str) -> Result<Principal, &'static str>;
}

/// The gateway's per-request work, in one layer, outermost first:
///
/// 1. per-IP rate limits ([`RateLimits`]), answering 429 before anything
///    else is done;
/// 2. request metrics by route template (`record_metrics`): every answer
///    from here on is counted, with its latency;
/// 3. authentication (`auth_state`): reads `Authorization: Bearer …` and
///    leaves an [`AuthState`] for the `AuthUser` / `MaybeAuthUser`
///    extractors;
/// 4. problem+json for what a framework extractor answered in plain text
///    (`problem_for_plain_errors`).
///
/// One layer instead of four: each `from_fn` layer clones the service
/// inside it and boxes its future for every request.
pub struct Edge {
    pub limits: Arc<RateLimits>,
    pub verifier: Arc<dyn TokenVerifier>,
}

pub async fn edge(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    if let Some(refused) = edge.limits.refuse(&req) {
        return refused;
    }
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let state = auth_state(edge.verifier.as_ref(), req.headers()).await;
    req.extensions_mut().insert(state);
    let res = problem_for_plain_errors(next.run(req).await);
    record_metrics(method, route, res.status(), start);
    res
}

/// What the request's `Authorization` header makes of its caller. A
/// missing header is anonymous; a bad token is remembered so that even
/// optional-auth routes refuse it.
async fn auth_state(verifier: &dyn TokenVerifier, headers: &HeaderMap) -> AuthState {
    match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => AuthState::Anonymous,
        Some(Ok(v)) => match v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            Some(token) => match verifier.verify(token.trim()).await {
                Ok(p) => AuthState::Authenticated(p),
                Err(code) => AuthState::Rejected(code),
            },
            None => AuthState::Rejected("invalid_token"),
        },
        Some(Err(_)) => AuthState::Rejected("invalid_token"),
    }
}

/// Per-client-IP limits: one for the whole API, a stricter one for the
/// authentication routes (password guessing, account creation).
///
/// Process-local, like pretix's and most gateways' first line: with several
/// processes behind a balancer the effective limit is N times higher; the
/// scaled mode puts the shared counter in PostgreSQL or NATS KV.
pub struct RateLimits {
    api: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    pub fn new(per_second: u32, burst: u32, auth_per_minute: u32) -> Self {
        let api = NonZeroU32::new(per_second).map(|ps| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(ps);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(ps).allow_burst(burst))
        });
        let auth = NonZeroU32::new(auth_per_minute).map(|pm| DefaultKeyedRateLimiter::keyed(Quota::per_minute(pm)));
        Self { api, auth }
    }

    /// Forgets idle clients so memory stays bounded.
    pub fn prune(&self) {
        if let Some(l) = &self.api {
            l.retain_recent();
        }
        if let Some(l) = &self.auth {
            l.retain_recent();
        }
    }
}

impl RateLimits {
    /// The 429 for a request over its client's limit, if it is.
    fn refuse(&self, req: &Request) -> Option<Response> {
        let path = req.uri().path();
        if !path.starts_with("/api/") {
            return None;
        }
        let ip =
            req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Some(l) = &self.api
            && l.check_key(&ip).is_err()
        {
            metrics::counter!("http_rate_limited_total", "scope" => "api").increment(1);
            return Some(Problem::too_many_requests(1).into_response());
        }
        if path.starts_with("/api/v1/auth/")
            && let Some(l) = &self.auth
            && l.check_key(&ip).is_err()
        {
            metrics::counter!("http_rate_limited_total", "scope" => "auth").increment(1);
            return Some(Problem::too_many_requests(60).into_response());
        }
        None
    }
}

/// Counts an answer and its latency by route template (never by raw path,
/// which would make a time series per ticket id).
fn record_metrics(method: String, route: String, status: StatusCode, start: Instant) {
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(),
        "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
}

/// The last line of the problem+json guarantee: an error that a framework
/// extractor answered in plain text (a raw `Bytes` body over the size limit,
/// say) is rewritten as a problem whose code follows from its status, so no
/// route can leak axum's wording or content type.
fn problem_for_plain_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == entrada_primitives::problem::PROBLEM_JSON.as_bytes());
    if is_problem {
        return res;
    }
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body could not be read or is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send the body as application/json"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this route does not accept that method"),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), "a plain-text server error was turned into a problem");
            ("internal", "unexpected server error")
        }
        _ => ("bad_request", "the request cannot be read"),
    };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut problem = Problem::new(status, code, detail).into_response();
    for (name, value) in &parts.headers {
        problem.headers_mut().entry(name.clone()).or_insert_with(|| value.clone());
    }
    problem
}

pub async fn not_found() -> Problem {
    Problem::not_found("not_found", "no such route")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// A panic in a handler becomes a logged 500 problem, never a dropped
/// connection.
pub fn panic_to_problem(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    Problem::internal(format!("handler panicked: {msg}")).into_response()
}
