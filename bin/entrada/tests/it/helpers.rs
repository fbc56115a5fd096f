//! `spawn_app()` and typed helpers for the black-box tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use entrada_gateway::{App, Config};
use entrada_primitives::{ManualClock, SharedClock};
use serde_json::{Value, json};
use std::sync::Arc;

pub struct TestApp {
    pub base: String,
    pub app: App,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    _db_dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The instant every test starts at: fixed, so tests never depend on the day
/// they run.
pub fn t0() -> time::OffsetDateTime {
    time::macros::datetime!(2030-03-01 12:00 UTC)
}

#[allow(clippy::field_reassign_with_default)]
pub fn test_config(data_dir: &std::path::Path, db_url: &str) -> Config {
    let mut c = Config::default();
    c.data_dir = data_dir.to_path_buf();
    c.database.url = entrada_primitives::Secret::new(db_url.to_owned());
    c.database.max_connections = 8;
    c.identity.password_cost = "fast".into();
    c.rate_limit.per_ip_per_second = 0;
    c.rate_limit.auth_per_ip_per_minute = 0;
    c.payments.sandbox_webhook_secret = entrada_primitives::Secret::new("whsec_test_secret".into());
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on_chain(tweak, |_, _| None).await
}

/// The app over the chain `chain` returns (given the data directory and the test clock), or
/// over the configured one when it returns `None`.
pub async fn spawn_app_on_chain(
    tweak: impl FnOnce(&mut Config),
    chain: impl FnOnce(&std::path::Path, SharedClock) -> Option<Arc<dyn entrada_chain::ChainClient>>,
) -> TestApp {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (db_url, db_dir) = entrada_storage::testing::fresh_url().await;
    let data_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = test_config(data_dir.path(), &db_url);
    config.server.public_url = base.clone();
    tweak(&mut config);
    let clock = ManualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let chain = chain(data_dir.path(), shared.clone());
    let app = App::build_with_chain(config, shared, chain).await.expect("app builds");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    tokio::spawn(async move {
        served
            .serve(listener, false, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    TestApp {
        base,
        app,
        clock,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        data_dir,
        _db_dir: db_dir,
        shutdown: Some(tx),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Resp {
    /// The problem code of an error response.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {:#}", self.body);
        self.body
    }

    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {:#}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {:#}", self.body);
        assert_eq!(self.code(), code, "body: {:#}", self.body);
    }
}

/// A registered user with a valid access token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, content_type, body }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        let mut r = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        let mut r = self.http.patch(self.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: &'static str, ctype: &str) -> Resp {
        let mut r = self.http.post(self.url(path)).header("content-type", ctype).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r).await
    }

    /// Runs webhook delivery and the outbox until nothing moves.
    pub async fn settle(&self) {
        self.app.settle().await.expect("settle");
    }

    pub async fn register(&self, email: &str) -> User {
        let body = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": "correct horse battery", "display_name": email.split('@').next().unwrap()}),
            )
            .await
            .expect(201);
        User {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// An organizer with an organization; returns (user, organization id).
    pub async fn organizer(&self, email: &str) -> (User, String) {
        let u = self.register(email).await;
        let slug = format!("org-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let org = self
            .post("/api/v1/organizations", Some(&u.token), json!({"name": format!("Org of {email}"), "slug": slug}))
            .await
            .expect(201);
        (u, org["id"].as_str().unwrap().to_owned())
    }

    /// An event on sale with one ticket type of `capacity` seats at 25.00 EUR;
    /// returns (event id, ticket type id).
    pub async fn event_on_sale(&self, organizer: &User, org: &str, capacity: i64) -> (String, String) {
        let ev = self
            .post(
                &format!("/api/v1/organizations/{org}/events"),
                Some(&organizer.token),
                json!({
                    "name": "Noche de Prueba",
                    "description": "A test event",
                    "venue": {"name": "Estadio", "address": "Calle 1", "city": "Madrid", "country": "ES"},
                    "timezone": "Europe/Madrid",
                    "starts_at": "2030-04-01T19:00:00Z",
                    "ends_at": "2030-04-01T23:00:00Z",
                    "capacity": capacity,
                    "currency": "EUR"
                }),
            )
            .await
            .expect(201);
        let event_id = ev["id"].as_str().unwrap().to_owned();
        let tt = self
            .post(
                &format!("/api/v1/events/{event_id}/ticket-types"),
                Some(&organizer.token),
                json!({
                    "name": "General",
                    "price": {"amount_minor": 2500, "currency": "EUR"},
                    "min_per_order": 1,
                    "max_per_order": 10,
                    "zones": ["floor"],
                    "printable": false,
                    "quota_ids": []
                }),
            )
            .await
            .expect(201);
        let tt_id = tt["id"].as_str().unwrap().to_owned();
        self.post(&format!("/api/v1/events/{event_id}/publish"), Some(&organizer.token), json!({})).await.expect(200);
        self.post(&format!("/api/v1/events/{event_id}/open-sales"), Some(&organizer.token), json!({}))
            .await
            .expect(200);
        (event_id, tt_id)
    }

    pub async fn hold(&self, fan: &User, event: &str, tt: &str, qty: i64) -> Resp {
        self.post(
            "/api/v1/holds",
            Some(&fan.token),
            json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": qty}]}),
        )
        .await
    }

    pub async fn order(&self, fan: &User, hold_id: &str, key: Option<&str>) -> Resp {
        let mut r =
            self.http.post(self.url("/api/v1/orders")).bearer_auth(&fan.token).json(&json!({"hold_id": hold_id}));
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        self.send(r).await
    }

    /// Pays an order's sandbox checkout with `card`, as the buyer's browser
    /// would (JSON variant).
    pub async fn pay(&self, checkout_url: &str, card: &str) -> Resp {
        self.send(self.http.post(checkout_url).json(&json!({"card": card}))).await
    }

    /// hold → order → pay with the success card → settle; returns the order.
    pub async fn buy(&self, fan: &User, event: &str, tt: &str, qty: i64) -> Value {
        let hold = self.hold(fan, event, tt, qty).await.expect(201);
        let order = self.order(fan, hold["id"].as_str().unwrap(), None).await.expect(201);
        let url = order["checkout_url"].as_str().unwrap().to_owned();
        self.pay(&url, "4242424242424242").await.expect(200);
        self.settle().await;
        self.get(&format!("/api/v1/orders/{}", order["id"].as_str().unwrap()), Some(&fan.token)).await.expect(200)
    }

    /// The mails in the mailbox folder, oldest first, as (template, full text).
    pub fn mailbox(&self) -> Vec<(String, String)> {
        entrada_notify::read_mailbox(&self.data_dir.path().join("mailbox")).unwrap()
    }
}

/// Starts the real `entrada` binary and returns once it has bound its port
/// (it prints "listening" then), without polling or sleeping.
pub async fn spawn_entrada(args: &[&str], envs: &[(&str, String)]) -> tokio::process::Child {
    spawn_entrada_logged(args, envs, None).await
}

/// Like [`spawn_entrada`], keeping the last lines the server prints in `log` so a failing
/// test can show what the server said.
pub async fn spawn_entrada_logged(
    args: &[&str],
    envs: &[(&str, String)],
    log: Option<ServerLog>,
) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_entrada"));
    cmd.args(args).env("ENTRADA_LOG", "error").stdout(std::process::Stdio::piped()).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start entrada");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let keep = |log: &Option<ServerLog>, line: String| {
        if let Some(log) = log {
            let mut log = log.lock().unwrap();
            if log.len() == SERVER_LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    };
    let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let listening = line.contains("listening");
            keep(&log, line);
            if listening {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "entrada did not start listening");
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep(&log, line);
        }
    });
    child
}

/// The tail of what a spawned server printed.
pub type ServerLog = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;
const SERVER_LOG_LINES: usize = 200;
