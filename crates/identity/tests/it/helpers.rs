//! The test app: identity's router served on port 0 behind a stand-in for
//! the gateway's authentication layer, with typed helpers.

use axum::extract::Request;
use axum::middleware::Next;
use entrada_identity::{Identity, IdentityConfig, PasswordCost};
use entrada_primitives::{ManualClock, SharedClock};
use entrada_storage::DomainEvent;
use entrada_storage::testing::{TestDb, fresh};
use serde_json::{Value, json};
use std::sync::Arc;

pub const ISSUER: &str = "http://issuer.test";
pub const PASSWORD: &str = "correct horse battery";

pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub svc: Identity,
    pub tdb: TestDb,
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {:#}", self.body);
        self.body
    }

    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {:#}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {:#}", self.body);
        assert_eq!(self.body["code"], code, "body: {:#}", self.body);
    }
}

/// A registered user's credentials.
pub struct Session {
    pub id: String,
    pub token: String,
    pub refresh: String,
}

pub fn config() -> IdentityConfig {
    IdentityConfig { issuer: ISSUER.into(), password_cost: PasswordCost::Fast, ..IdentityConfig::default() }
}

pub async fn spawn_app() -> App {
    let tdb = fresh().await;
    let clock = ManualClock::new(time::macros::datetime!(2030-01-01 00:00 UTC));
    let shared: SharedClock = Arc::new(clock.clone());
    let svc = Identity::start(tdb.db.clone(), shared, config()).await.unwrap();
    let (router, _openapi) = entrada_identity::http::router(svc.clone()).split_for_parts();
    let auth = svc.clone();
    // Stands in for the gateway: verify the bearer token, leave an AuthState.
    let router = router.layer(axum::middleware::from_fn(move |mut req: Request, next: Next| {
        let auth = auth.clone();
        async move {
            let header =
                req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let state = auth.authenticate(header.as_deref()).await;
            req.extensions_mut().insert(state);
            next.run(req).await
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    App { base: format!("http://{addr}"), http: reqwest::Client::new(), clock, svc, tdb }
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let content_type =
            headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Resp { status, content_type, body, headers }
    }

    fn auth(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Self::auth(self.http.get(self.url(path)), token)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Self::auth(self.http.post(self.url(path)), token).json(&body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Self::auth(self.http.put(self.url(path)), token).json(&body)).await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Resp {
        self.send(self.http.post(self.url(path)).header("content-type", "application/json").body(body)).await
    }

    pub async fn register(&self, email: &str) -> Session {
        let body = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD, "display_name": "Test User"}),
            )
            .await
            .expect(201);
        session(&body)
    }

    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.post("/api/v1/auth/login", None, json!({"email": email, "password": password})).await
    }

    /// The one-time token of the newest event of this kind for the address,
    /// read from the outbox as the mail consumer would.
    pub async fn mailed_token(&self, event_type: &str, email: &str) -> Option<String> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id DESC")
            .bind(event_type)
            .fetch_all(self.tdb.db.reader())
            .await
            .unwrap();
        rows.into_iter().find_map(|(p,)| match serde_json::from_str::<DomainEvent>(&p).unwrap() {
            DomainEvent::EmailVerificationRequested { email: e, token, .. }
            | DomainEvent::PasswordResetRequested { email: e, token, .. }
                if e == email =>
            {
                Some(token)
            }
            _ => None,
        })
    }

    pub async fn count_events(&self, event_type: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(self.tdb.db.reader())
            .await
            .unwrap();
        n
    }

    /// Audit actions recorded for an object, oldest first.
    pub async fn audit_actions(&self, object_id: &str) -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT action FROM audit_log WHERE object_id = $1 ORDER BY id")
            .bind(object_id)
            .fetch_all(self.tdb.db.reader())
            .await
            .unwrap();
        rows.into_iter().map(|(a,)| a).collect()
    }

    /// Every text the database holds in the identity and platform tables,
    /// to check that no secret was stored in clear.
    pub async fn stored_text(&self) -> String {
        let mut all = String::new();
        for sql in [
            "SELECT digest FROM refresh_tokens",
            "SELECT digest FROM one_time_tokens",
            "SELECT details FROM audit_log",
            "SELECT password_hash FROM users",
        ] {
            let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(self.tdb.db.reader()).await.unwrap();
            for (r,) in rows {
                all.push_str(&r);
                all.push('\n');
            }
        }
        all
    }
}

pub fn session(body: &Value) -> Session {
    Session {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        token: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}
