//! The wallet against a real database on the backend the test run selects
//! (SQLite by default, PostgreSQL with `ENTRADA_TEST_DB=postgres`), over real
//! HTTP for the endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod custody;
mod export;
mod links;
mod metadata;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use entrada_primitives::auth::AuthState;
use entrada_primitives::ids::{SessionId, UserId};
use entrada_primitives::{ManualClock, PlatformRole, Principal};
use entrada_storage::Db;
use entrada_storage::testing::{TestDb, fresh};
use entrada_wallet::{Custody, MasterKeys, Wallet, WalletConfig};
use serde_json::Value;
use std::sync::Arc;
use time::macros::datetime;

pub const PUBLIC_URL: &str = "https://tickets.example.com";
pub const CHAIN_ID: u64 = 31337;

pub fn clock() -> ManualClock {
    ManualClock::new(datetime!(2030-06-01 19:00 UTC))
}

/// A user row, which custodial keys reference.
pub async fn user(db: &Db, name: &str) -> UserId {
    let id = UserId::new();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, platform_role, email_verified, created_at) \
         VALUES ($1, $2, 'x', $3, 'fan', TRUE, 0)",
    )
    .bind(id.to_db())
    .bind(format!("{name}-{id}@example.com"))
    .bind(name)
    .execute(&mut *db.writer().await.unwrap())
    .await
    .unwrap();
    id
}

/// The wallet's router on a random port with a manual clock.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub tdb: TestDb,
    pub wallet: Wallet,
}

/// Stands in for the gateway's authentication layer: `x-test-user` names the caller.
async fn test_auth(mut req: Request, next: Next) -> Response {
    let user = req.headers().get("x-test-user").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<UserId>().ok());
    if let Some(user_id) = user {
        req.extensions_mut().insert(AuthState::Authenticated(Principal {
            user_id,
            role: PlatformRole::Fan,
            session_id: SessionId::new(),
        }));
    }
    next.run(req).await
}

pub async fn spawn() -> App {
    let tdb = fresh().await;
    let clock = clock();
    let custody = Custody::new(tdb.db.clone(), Arc::new(clock.clone()), MasterKeys::generate("k1"));
    let config = WalletConfig {
        fee_recipient: Some("0x00000000000000000000000000000000000000fe".parse().unwrap()),
        ..WalletConfig::new(PUBLIC_URL, CHAIN_ID)
    };
    let wallet = Wallet::new(tdb.db.clone(), Arc::new(clock.clone()), custody, config);
    let (routes, _openapi) = entrada_wallet::router(wallet.clone()).split_for_parts();
    let app = routes.layer(axum::middleware::from_fn(test_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { base, http: reqwest::Client::new(), clock, tdb, wallet }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub bytes: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!((self.status, self.body["code"].as_str()), (status, Some(code)), "{}", self.body);
        &self.body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// An organization with an owner, a fan, an on-sale event and one ticket type.
pub struct Fixture {
    pub organizer: UserId,
    pub fan: UserId,
    pub org: String,
    pub event: String,
    pub ticket_type: String,
}

impl App {
    pub fn db(&self) -> &Db {
        &self.tdb.db
    }

    pub async fn exec(&self, sql: &str, binds: &[&str]) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(&mut *self.tdb.db.writer().await.unwrap()).await.unwrap();
    }

    pub async fn count(&self, sql: &str, bind: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).bind(bind).fetch_one(self.db().reader()).await.unwrap();
        n
    }

    pub async fn user(&self, name: &str) -> UserId {
        user(self.db(), name).await
    }

    pub async fn send(&self, method: &str, path: &str, who: Option<UserId>, body: Option<Value>) -> Reply {
        self.send_with(method, path, who, body, &[]).await
    }

    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        who: Option<UserId>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(u) = who {
            req = req.header("x-test-user", u.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.unwrap()).await
    }

    pub async fn send_bytes(&self, method: &str, path: &str, who: Option<UserId>, ct: &str, bytes: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("content-type", ct).body(bytes);
        if let Some(u) = who {
            req = req.header("x-test-user", u.to_string());
        }
        reply(req.send().await.unwrap()).await
    }

    pub async fn fixture(&self) -> Fixture {
        let organizer = self.user("Olga").await;
        let fan = self.user("Ana").await;
        let org = uuid::Uuid::now_v7().to_string();
        let event = uuid::Uuid::now_v7().to_string();
        self.exec(
            "INSERT INTO organizations (id, name, slug, created_by, created_at) VALUES ($1, 'Org', $1, $2, 0)",
            &[&org, &organizer.to_db()],
        )
        .await;
        self.exec(
            "INSERT INTO org_members (organization_id, user_id, role, created_at) VALUES ($1, $2, 'owner', 0)",
            &[&org, &organizer.to_db()],
        )
        .await;
        sqlx::query(
            "INSERT INTO events (id, organization_id, name, description, venue_name, venue_city, timezone, starts_at, \
             ends_at, capacity, currency, status, resale_royalty_bps, export_allowed, created_at, updated_at) \
             VALUES ($1, $2, 'Summer <Show>', '', 'Arena', 'Lisbon', 'UTC', $3, $4, 1000, 'EUR', 'on_sale', 500, TRUE, 0, 0)",
        )
        .bind(&event)
        .bind(&org)
        .bind(1_906_574_400_000i64) // 2030-06-01T20:00:00Z
        .bind(1_906_585_200_000i64)
        .execute(&mut *self.db().writer().await.unwrap())
        .await
        .unwrap();
        let ticket_type = self.ticket_type(&event, "General admission").await;
        Fixture { organizer, fan, org, event, ticket_type }
    }

    pub async fn ticket_type(&self, event: &str, name: &str) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        self.exec(
            "INSERT INTO ticket_types (id, event_id, name, price_minor, currency, created_at) \
             VALUES ($1, $2, $3, 2500, 'EUR', 0)",
            &[&id, event, name],
        )
        .await;
        id
    }

    /// A paid ticket held by `holder`; returns (ticket id, serial).
    pub async fn ticket(&self, f: &Fixture, holder: UserId) -> (String, i64) {
        let (hold, order, pos, ticket) = (
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
        );
        let h = holder.to_db();
        self.exec(
            "INSERT INTO holds (id, event_id, user_id, status, expires_at, created_at) \
             VALUES ($1, $2, $3, 'converted', 0, 0)",
            &[&hold, &f.event, &h],
        )
        .await;
        self.exec(
            "INSERT INTO orders (id, event_id, organization_id, buyer_id, hold_id, status, total_minor, currency, \
             payment_deadline, created_at) VALUES ($1, $2, $3, $4, $5, 'paid', 2500, 'EUR', 0, 0)",
            &[&order, &f.event, &f.org, &h, &hold],
        )
        .await;
        self.exec(
            "INSERT INTO order_positions (id, order_id, ticket_type_id, price_minor, currency, position) \
             VALUES ($1, $2, $3, 2500, 'EUR', 0)",
            &[&pos, &order, &f.ticket_type],
        )
        .await;
        let serial = self.count("SELECT COUNT(*) + 1 FROM tickets WHERE event_id = $1", &f.event).await;
        sqlx::query(
            "INSERT INTO tickets (id, event_id, ticket_type_id, order_id, position_id, serial, holder_id, status, \
             generation, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'valid', 1, 0)",
        )
        .bind(&ticket)
        .bind(&f.event)
        .bind(&f.ticket_type)
        .bind(&order)
        .bind(&pos)
        .bind(serial)
        .bind(&h)
        .execute(&mut *self.db().writer().await.unwrap())
        .await
        .unwrap();
        (ticket, serial)
    }
}

async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.unwrap().to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body, bytes, headers }
}
