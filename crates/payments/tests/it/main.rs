//! Integration tests of payments: the sandbox end to end over real HTTP,
//! webhook verification and de-duplication, refunds and the ledger, and the
//! Stripe client against a fake Stripe that checks the wire format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sandbox;
mod stripe;

use entrada_payments::{NewPayment, Payments, PaymentsConfig, ProviderConfig, SandboxConfig, StripeConfig};
use entrada_primitives::ids::{OrganizationId, PaymentId};
use entrada_primitives::{Currency, ManualClock, Money, Secret, SharedClock};
use entrada_storage::testing::TestDb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub const SANDBOX_SECRET: &str = "whsec_sandbox_test_secret";
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_test_entrada_fixed_vector";

pub fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap())
}

/// A running payments app: the router served on 127.0.0.1:0, a fresh
/// database, a manual clock.
pub struct App {
    pub payments: Payments,
    pub tdb: TestDb,
    pub clock: ManualClock,
    pub base: String,
    pub http: reqwest::Client,
    pub org: OrganizationId,
    /// While true, the server answers every request with 503 (to test
    /// webhook retries).
    pub outage: Arc<AtomicBool>,
    /// Signalled after each webhook the server has answered, so tests wait
    /// for a delivery instead of polling.
    pub webhook_answered: Arc<tokio::sync::Notify>,
}

pub fn start_time() -> time::OffsetDateTime {
    time::macros::datetime!(2030-03-01 12:00 UTC)
}

async fn serve(
    payments: &Payments,
    listener: tokio::net::TcpListener,
    outage: Arc<AtomicBool>,
    answered: Arc<tokio::sync::Notify>,
) {
    let (router, _api) = payments.router().split_for_parts();
    let router =
        router.layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let outage = outage.clone();
            let answered = answered.clone();
            async move {
                if outage.load(Ordering::SeqCst) {
                    return axum::response::IntoResponse::into_response(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                let is_webhook = req.uri().path().starts_with("/api/v1/payments/webhooks/");
                let res = next.run(req).await;
                if is_webhook {
                    answered.notify_one();
                }
                res
            }
        }));
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
}

/// Starts an app with the sandbox provider.
pub async fn spawn_sandbox(duplicate_every: Option<u32>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let cfg = SandboxConfig {
        webhook_secret: Secret::new(SANDBOX_SECRET.to_owned()),
        public_base_url: base.clone(),
        duplicate_every,
    };
    spawn_with(ProviderConfig::Sandbox(cfg), listener, base).await
}

/// Starts an app with Stripe at `api_base`.
pub async fn spawn_stripe(api_base: String) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = StripeConfig {
        api_base,
        secret_key: Secret::new("sk_test_entrada".to_owned()),
        webhook_secret: Secret::new(STRIPE_WEBHOOK_SECRET.to_owned()),
    };
    spawn_with(ProviderConfig::Stripe(cfg), listener, base).await
}

async fn spawn_with(provider: ProviderConfig, listener: tokio::net::TcpListener, base: String) -> App {
    let tdb = entrada_storage::testing::fresh().await;
    let clock = ManualClock::new(start_time());
    let shared: SharedClock = Arc::new(clock.clone());
    let payments = Payments::new(tdb.db.clone(), shared, PaymentsConfig { provider });
    let outage = Arc::new(AtomicBool::new(false));
    let webhook_answered = Arc::new(tokio::sync::Notify::new());
    serve(&payments, listener, outage.clone(), webhook_answered.clone()).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    App { payments, tdb, clock, base, http, org: OrganizationId::new(), outage, webhook_answered }
}

impl App {
    pub fn new_payment(&self, reference: &str, minor: i64) -> NewPayment {
        NewPayment {
            reference: reference.to_owned(),
            organization_id: self.org,
            amount: eur(minor),
            description: "2 × Standing, Nightjar live".to_owned(),
            return_url: "https://shop.example/return".to_owned(),
        }
    }

    /// Pays on the sandbox checkout page with a JSON post.
    pub async fn pay_json(&self, id: PaymentId, card: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/sandbox/checkout/{id}", self.base))
            .json(&serde_json::json!({ "card": card }))
            .send()
            .await
            .unwrap()
    }

    /// Posts a browser form body (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, url: &str, body: &str) -> reqwest::Response {
        self.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self, id: PaymentId) -> String {
        let (s,): (String,) = sqlx::query_as("SELECT status FROM payments WHERE id = $1")
            .bind(id.to_db())
            .fetch_one(self.tdb.db.reader())
            .await
            .unwrap();
        s
    }

    /// The outbox events (type, payload) in order.
    pub async fn events(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY id")
            .fetch_all(self.tdb.db.reader())
            .await
            .unwrap();
        rows.into_iter().map(|(t, p)| (t, serde_json::from_str(&p).unwrap())).collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(self.tdb.db.reader()).await.unwrap();
        n
    }

    pub async fn balance(&self, account: &str) -> i64 {
        self.payments.balance(account, Currency::parse("EUR").unwrap()).await.unwrap()
    }

    pub fn organizer(&self) -> String {
        format!("organizer:{}", self.org)
    }

    /// Every ledger transaction sums to zero per currency, and so does the
    /// whole ledger.
    pub async fn assert_ledger_balanced(&self) {
        let unbalanced = self
            .count(
                "SELECT COUNT(*) FROM (SELECT transaction_id, currency FROM ledger_entries \
                 GROUP BY transaction_id, currency HAVING SUM(amount_minor) <> 0) AS t",
            )
            .await;
        assert_eq!(unbalanced, 0, "a ledger transaction does not balance");
        let total = self.count("SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM ledger_entries").await;
        assert_eq!(total, 0);
    }

    /// POSTs a raw webhook to our endpoint.
    pub async fn post_webhook(&self, provider: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/api/v1/payments/webhooks/{provider}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.unwrap()
    }

    pub async fn problem_code(res: reqwest::Response) -> (u16, String) {
        let status = res.status().as_u16();
        let v: serde_json::Value = res.json().await.unwrap();
        (status, v["code"].as_str().unwrap_or_default().to_owned())
    }
}
