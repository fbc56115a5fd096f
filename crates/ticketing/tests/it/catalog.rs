//! The catalog over real HTTP: organizations, events, ticket types, quotas,
//! the lifecycle, the public listing and the guards, on the backend the test
//! run selects (SQLite by default, PostgreSQL with `ENTRADA_TEST_DB`).
#![allow(clippy::unwrap_used)]

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use entrada_primitives::auth::AuthState;
use entrada_primitives::ids::{SessionId, UserId};
use entrada_primitives::{ManualClock, PlatformRole, Principal};
use entrada_storage::testing::{TestDb, fresh};
use entrada_ticketing::catalog::{Catalog, router};
use serde_json::{Value, json};
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const START: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

struct App {
    base: String,
    http: reqwest::Client,
    clock: ManualClock,
    catalog: Catalog,
    tdb: TestDb,
}

/// Stands in for the gateway's authentication layer: `x-test-user` names
/// the caller, `x-test-role` optionally their platform role.
async fn test_auth(mut req: Request, next: Next) -> Response {
    let user = req.headers().get("x-test-user").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<UserId>().ok());
    if let Some(user_id) = user {
        let role = req
            .headers()
            .get("x-test-role")
            .and_then(|v| v.to_str().ok())
            .and_then(PlatformRole::parse)
            .unwrap_or(PlatformRole::Fan);
        req.extensions_mut().insert(AuthState::Authenticated(Principal {
            user_id,
            role,
            session_id: SessionId::new(),
        }));
    }
    next.run(req).await
}

async fn spawn() -> App {
    let tdb = fresh().await;
    let clock = ManualClock::new(START);
    let catalog = Catalog::new(tdb.db.clone(), Arc::new(clock.clone()));
    let (routes, _openapi) = router(catalog.clone()).split_for_parts();
    let app = routes.layer(axum::middleware::from_fn(test_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { base, http: reqwest::Client::new(), clock, catalog, tdb }
}

struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// Asserts a problem response with this status and code; returns the body.
    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!((self.status, self.body["code"].as_str()), (status, Some(code)), "{}", self.body);
        &self.body
    }

    /// Asserts a validation failure naming `field`.
    #[track_caller]
    fn invalid(&self, field: &str) {
        self.problem(422, "validation_failed");
        assert_eq!(self.body["errors"][0]["field"], field, "{}", self.body);
    }

    #[track_caller]
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }
}

impl App {
    async fn user(&self, name: &str) -> UserId {
        let id = UserId::new();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, display_name, platform_role, email_verified, created_at) \
             VALUES ($1, $2, 'x', $3, 'fan', TRUE, 0)",
        )
        .bind(id.to_db())
        .bind(format!("{name}-{id}@example.com"))
        .bind(name)
        .execute(&mut *self.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
        id
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        user: Option<UserId>,
        role: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.header("x-test-user", u.to_string());
        }
        if let Some(r) = role {
            req = req.header("x-test-role", r);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body }
    }

    async fn get(&self, path: &str, user: Option<UserId>) -> Reply {
        self.send("GET", path, user, None, None).await
    }

    async fn post(&self, path: &str, user: UserId, body: Value) -> Reply {
        self.send("POST", path, Some(user), None, Some(body)).await
    }

    async fn patch(&self, path: &str, user: UserId, body: Value) -> Reply {
        self.send("PATCH", path, Some(user), None, Some(body)).await
    }

    async fn org(&self, owner: UserId, name: &str) -> String {
        let r = self.post("/api/v1/organizations", owner, json!({ "name": name })).await;
        r.ok(201)["id"].as_str().unwrap().to_owned()
    }

    async fn event(&self, user: UserId, org: &str, body: Value) -> Value {
        self.post(&format!("/api/v1/organizations/{org}/events"), user, body).await.ok(201).clone()
    }

    /// Adds a ticket type and returns its id.
    async fn ticket_type(&self, user: UserId, event: &str, body: Value) -> String {
        let r = self.post(&format!("/api/v1/events/{event}/ticket-types"), user, body).await;
        r.ok(201)["id"].as_str().unwrap().to_owned()
    }

    /// Marks `n` places of a quota as taken, as the sale's guarded update does.
    async fn take(&self, quota: &str, n: i64) {
        let r = sqlx::query("UPDATE quotas SET used = used + $1 WHERE id = $2 AND used + $1 <= size")
            .bind(n)
            .bind(quota)
            .execute(&mut *self.tdb.db.writer().await.unwrap())
            .await
            .unwrap();
        assert_eq!(r.rows_affected(), 1);
    }

    async fn count(&self, sql: &str, arg: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(arg)
            .fetch_one(self.tdb.db.reader())
            .await
            .unwrap();
        n
    }
}

fn event_body() -> Value {
    json!({
        "name": "Concierto de Primavera",
        "description": "Una noche de música.",
        "venue": { "name": "Sala Grande", "address": "Calle Mayor 1", "city": "Madrid", "country": "ES" },
        "timezone": "Europe/Madrid",
        "starts_at": "2030-03-01T20:00:00Z",
        "ends_at": "2030-03-01T23:00:00Z",
        "doors_open_at": "2030-03-01T19:00:00Z",
        "capacity": 100,
        "currency": "EUR",
        "resale_policy": { "price_cap_bps": 11000, "royalty_bps": 500, "fee_bps": 300 }
    })
}

fn ticket_body(name: &str, price: i64) -> Value {
    json!({ "name": name, "price": { "amount_minor": price, "currency": "EUR" }, "max_per_order": 6, "zones": ["pista"] })
}

/// Sets a (possibly nested, dot-separated) field of a JSON object.
fn with(mut body: Value, path: &str, value: Value) -> Value {
    let mut cur = &mut body;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = value;
    body
}

/// An organizer creates an organization, a draft event and a ticket type,
/// publishes it and opens sales; fans then see it with prices and
/// availability, and each step is audited and announced.
#[tokio::test]
async fn organizer_creates_publishes_and_opens_an_event() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Conciertos Ana").await;

    let r = app.get(&format!("/api/v1/organizations/{org}"), Some(ana)).await;
    assert_eq!(r.ok(200)["slug"], "conciertos-ana");

    let ev = app.event(ana, &org, event_body()).await;
    assert_eq!(ev["status"], "draft");
    assert_eq!(ev["resale_policy"]["price_cap_bps"], 11000);
    assert_eq!(ev["resale_policy"]["transfers_allowed"], true);
    let id = ev["id"].as_str().unwrap().to_owned();

    // Drafts are invisible to the public and to the listing.
    app.get(&format!("/api/v1/events/{id}"), None).await.problem(404, "not_found");
    assert_eq!(app.get("/api/v1/events", None).await.ok(200)["items"].as_array().unwrap().len(), 0);
    app.get(&format!("/api/v1/events/{id}"), Some(ana)).await.ok(200);

    // The capacity quota exists from the start.
    let quotas = app.get(&format!("/api/v1/events/{id}/quotas"), Some(ana)).await.ok(200).clone();
    assert_eq!(quotas["items"][0]["is_capacity"], true);
    assert_eq!(quotas["items"][0]["size"], 100);

    app.post(&format!("/api/v1/events/{id}/publish"), ana, json!({})).await.problem(422, "no_ticket_types");
    let tt = app.ticket_type(ana, &id, ticket_body("General", 2500)).await;

    let r = app.post(&format!("/api/v1/events/{id}/publish"), ana, json!({})).await;
    assert_eq!(r.ok(200)["status"], "published");
    let public = app.get(&format!("/api/v1/events/{id}"), None).await.ok(200).clone();
    assert_eq!(public["ticket_types"][0]["id"], tt.as_str());
    assert_eq!(public["ticket_types"][0]["price"], json!({ "amount_minor": 2500, "currency": "EUR" }));
    assert_eq!(public["ticket_types"][0]["available"], 100);
    assert_eq!(public["ticket_types"][0]["on_sale_now"], false);

    let r = app.post(&format!("/api/v1/events/{id}/open-sales"), ana, json!({})).await;
    assert_eq!(r.ok(200)["status"], "on_sale");
    assert_eq!(r.body["ticket_types"][0]["on_sale_now"], true);
    let r = app.post(&format!("/api/v1/events/{id}/close-sales"), ana, json!({})).await;
    assert_eq!(r.ok(200)["status"], "sales_closed");
    assert_eq!(r.body["ticket_types"][0]["on_sale_now"], false);

    let listing = app.get("/api/v1/events", None).await.ok(200).clone();
    assert_eq!(listing["items"][0]["id"], id.as_str());

    for action in
        ["organization.created", "event.created", "ticket_type.created", "event.published", "event.sales_opened"]
    {
        assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", action).await, 1, "{action}");
    }
    for ev in ["organization.created", "event.published"] {
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = $1", ev).await, 1, "{ev}");
    }
    let members =
        app.count("SELECT COUNT(*) FROM org_members WHERE role = 'owner' AND organization_id = $1", &org).await;
    assert_eq!(members, 1);
}

/// Every invalid event field is refused with 422 `validation_failed` naming
/// the field; broken JSON and missing login get their own codes.
#[tokio::test]
async fn event_input_is_validated_field_by_field() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let path = format!("/api/v1/organizations/{org}/events");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", json!("  "), "name"),
        ("venue.name", json!(""), "venue.name"),
        ("venue.country", json!("Spain"), "venue.country"),
        ("timezone", json!("Madrid"), "timezone"),
        ("timezone", json!("europe/madrid"), "timezone"),
        ("starts_at", json!("tomorrow"), "starts_at"),
        ("ends_at", json!("2030-03-01T20:00:00Z"), "ends_at"),
        ("ends_at", json!("2030-03-01T19:00:00Z"), "ends_at"),
        ("doors_open_at", json!("2030-03-01T20:30:00Z"), "doors_open_at"),
        ("capacity", json!(0), "capacity"),
        ("capacity", json!(1_000_001), "capacity"),
        ("currency", json!("eur"), "currency"),
        ("currency", json!("EURO"), "currency"),
        ("resale_policy.royalty_bps", json!(10_001), "resale_policy.royalty_bps"),
        ("resale_policy.fee_bps", json!(-1), "resale_policy.fee_bps"),
        ("resale_policy.fee_bps", json!(9_600), "resale_policy.fee_bps"),
        ("resale_policy.price_cap_bps", json!(0), "resale_policy.price_cap_bps"),
        ("resale_policy.price_cap_minor", json!(5000), "resale_policy.price_cap_minor"),
        ("resale_policy.freeze_minutes_before_doors", json!(-5), "resale_policy.freeze_minutes_before_doors"),
        ("resale_policy.max_resales_per_ticket", json!(5000), "resale_policy.max_resales_per_ticket"),
        ("resale_policy.resale_opens_at", json!("2030-02-01T00:00:00Z"), "resale_policy.resale_closes_at"),
        ("resale_policy.export_after", json!("soon"), "resale_policy.export_after"),
    ];
    for (field, value, named) in cases {
        let mut body = with(event_body(), field, value);
        if field == "resale_policy.resale_opens_at" {
            body = with(body, "resale_policy.resale_closes_at", json!("2030-01-15T00:00:00Z"));
        }
        app.post(&path, ana, body).await.invalid(named);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE organization_id = $1", &org).await, 0);

    let res = app
        .http
        .post(format!("{}{path}", app.base))
        .header("x-test-user", ana.to_string())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "malformed_json");
    app.post(&path, ana, with(event_body(), "capacity", json!("many"))).await.problem(422, "invalid_body");
    app.post(&path, ana, with(event_body(), "colour", json!("red"))).await.problem(422, "invalid_body");
    app.send("POST", &path, None, None, Some(event_body())).await.problem(401, "unauthenticated");
    app.post("/api/v1/organizations", ana, json!({ "name": "" })).await.invalid("name");
    app.post("/api/v1/organizations", ana, json!({ "name": "X", "slug": "Bad Slug" })).await.invalid("slug");
}

/// Ticket types are checked against their event: price in the event
/// currency and not negative, sane order limits and sale window, and only
/// shared quotas of the same event.
#[tokio::test]
async fn ticket_type_input_is_validated() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let ev = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    let other = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    let other_quota =
        app.post(&format!("/api/v1/events/{other}/quotas"), ana, json!({ "name": "Q", "size": 5 })).await.ok(201)["id"]
            .clone();
    let quotas = app.get(&format!("/api/v1/events/{ev}/quotas"), Some(ana)).await.ok(200).clone();
    let capacity_quota = quotas["items"][0]["id"].clone();
    let path = format!("/api/v1/events/{ev}/ticket-types");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", json!(""), "name"),
        ("price.amount_minor", json!(-1), "price.amount_minor"),
        ("price.currency", json!("USD"), "price.currency"),
        ("price.currency", json!("usd"), "price.currency"),
        ("min_per_order", json!(0), "min_per_order"),
        ("max_per_order", json!(101), "max_per_order"),
        ("sale_starts_at", json!("2030-02-01T00:00:00Z"), "sale_ends_at"),
        ("sale_ends_at", json!("not a time"), "sale_ends_at"),
        ("quota_ids", json!([other_quota]), "quota_ids"),
        ("quota_ids", json!([capacity_quota]), "quota_ids"),
    ];
    for (field, value, named) in cases {
        let mut body = with(ticket_body("T", 100), field, value);
        if field == "sale_starts_at" {
            body = with(body, "sale_ends_at", json!("2030-01-20T00:00:00Z"));
        }
        app.post(&path, ana, body).await.invalid(named);
    }
    let body = with(with(ticket_body("T", 100), "min_per_order", json!(4)), "max_per_order", json!(3));
    app.post(&path, ana, body).await.invalid("max_per_order");
    // Free tickets are fine.
    let tt = app.ticket_type(ana, &ev, ticket_body("Invitación", 0)).await;
    app.patch(&format!("/api/v1/ticket-types/{tt}"), ana, json!({ "max_per_order": 0 })).await.invalid("max_per_order");
    let r =
        app.patch(&format!("/api/v1/ticket-types/{tt}"), ana, json!({ "name": "Invitado", "printable": true })).await;
    assert_eq!(r.ok(200)["ticket_types"][0]["name"], "Invitado");
    assert_eq!(r.body["ticket_types"][0]["printable"], true);
}

/// An organizer of one organization cannot see or change another's
/// organization, events, ticket types or quotas: every such call is a 404,
/// as if the object did not exist; a viewer member may read but not write.
#[tokio::test]
async fn other_organizations_are_invisible_and_viewers_read_only() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let bob = app.user("bob").await;
    let org_a = app.org(ana, "A").await;
    let org_b = app.org(bob, "B").await;
    let ev = app.event(ana, &org_a, event_body()).await["id"].as_str().unwrap().to_owned();
    let tt = app.ticket_type(ana, &ev, ticket_body("General", 1000)).await;
    let quota = app.post(&format!("/api/v1/events/{ev}/quotas"), ana, json!({ "name": "Q", "size": 10 })).await.ok(201)
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.get(&format!("/api/v1/organizations/{org_a}"), Some(bob)).await.problem(404, "not_found");
    app.get(&format!("/api/v1/organizations/{org_a}/events"), Some(bob)).await.problem(404, "not_found");
    app.post(&format!("/api/v1/organizations/{org_a}/events"), bob, event_body()).await.problem(404, "not_found");
    app.get(&format!("/api/v1/events/{ev}"), Some(bob)).await.problem(404, "not_found");
    app.patch(&format!("/api/v1/events/{ev}"), bob, json!({ "name": "Mine" })).await.problem(404, "not_found");
    app.post(&format!("/api/v1/events/{ev}/publish"), bob, json!({})).await.problem(404, "not_found");
    app.post(&format!("/api/v1/events/{ev}/cancel"), bob, json!({})).await.problem(404, "not_found");
    app.post(&format!("/api/v1/events/{ev}/ticket-types"), bob, ticket_body("X", 1)).await.problem(404, "not_found");
    app.patch(&format!("/api/v1/ticket-types/{tt}"), bob, json!({ "name": "X" })).await.problem(404, "not_found");
    app.get(&format!("/api/v1/events/{ev}/quotas"), Some(bob)).await.problem(404, "not_found");
    app.post(&format!("/api/v1/events/{ev}/quotas"), bob, json!({ "name": "Q", "size": 1 }))
        .await
        .problem(404, "not_found");
    app.patch(&format!("/api/v1/quotas/{quota}"), bob, json!({ "size": 1 })).await.problem(404, "not_found");
    // Bob's own organization is untouched by all this and his id cannot reach Ana's.
    assert_eq!(app.get(&format!("/api/v1/organizations/{org_b}/events"), Some(bob)).await.ok(200)["items"], json!([]));
    app.get("/api/v1/events/not-a-uuid", None).await.problem(404, "not_found");

    // A viewer member reads drafts and quotas, but cannot write.
    let vic = app.user("vic").await;
    let mut tx = app.tdb.db.begin().await.unwrap();
    entrada_identity::membership::set(
        &mut tx,
        org_a.parse().unwrap(),
        vic,
        entrada_identity::membership::OrgRole::Viewer,
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.get(&format!("/api/v1/events/{ev}"), Some(vic)).await.ok(200);
    app.get(&format!("/api/v1/events/{ev}/quotas"), Some(vic)).await.ok(200);
    app.patch(&format!("/api/v1/events/{ev}"), vic, json!({ "name": "X" })).await.problem(403, "forbidden");

    // Support reads any organization; an admin may act on it.
    app.send("GET", &format!("/api/v1/events/{ev}/quotas"), Some(bob), Some("support"), None).await.ok(200);
    app.send("PATCH", &format!("/api/v1/events/{ev}"), Some(bob), Some("support"), Some(json!({ "name": "X" })))
        .await
        .problem(404, "not_found");
    let r = app
        .send("PATCH", &format!("/api/v1/events/{ev}"), Some(bob), Some("admin"), Some(json!({ "name": "Fixed" })))
        .await;
    assert_eq!(r.ok(200)["name"], "Fixed");
}

/// Lifecycle moves outside the documented graph are refused with 409
/// `invalid_transition`; cancelled and ended events are frozen; `ended` is
/// derived from the clock.
#[tokio::test]
async fn lifecycle_refuses_undocumented_moves() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let ev = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    app.ticket_type(ana, &ev, ticket_body("General", 1000)).await;
    let go = |action: &'static str| {
        let path = format!("/api/v1/events/{ev}/{action}");
        let app = &app;
        async move { app.post(&path, ana, json!({})).await }
    };
    go("open-sales").await.problem(409, "invalid_transition");
    go("close-sales").await.problem(409, "invalid_transition");
    go("publish").await.ok(200);
    assert_eq!(go("publish").await.problem(409, "invalid_transition")["event_status"], "published");
    go("close-sales").await.problem(409, "invalid_transition");
    go("open-sales").await.ok(200);
    go("open-sales").await.problem(409, "invalid_transition");
    go("publish").await.problem(409, "invalid_transition");

    // Past its end the event reads as ended and nothing moves it.
    app.clock.set(datetime!(2030-03-01 23:00 UTC));
    let r = app.get(&format!("/api/v1/events/{ev}"), None).await;
    assert_eq!(r.ok(200)["status"], "ended");
    assert_eq!(r.body["ticket_types"][0]["on_sale_now"], false);
    assert_eq!(go("cancel").await.problem(409, "invalid_transition")["event_status"], "ended");
    go("close-sales").await.problem(409, "invalid_transition");
    app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "name": "Late" })).await.problem(409, "event_closed");
    assert_eq!(app.get("/api/v1/events", None).await.ok(200)["items"], json!([]));

    // Cancelling is possible from any live state and is final.
    app.clock.set(START);
    let ev2 = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/events/{ev2}/cancel"), ana, json!({})).await;
    assert_eq!(r.ok(200)["status"], "cancelled");
    app.post(&format!("/api/v1/events/{ev2}/publish"), ana, json!({})).await.problem(409, "invalid_transition");
    app.post(&format!("/api/v1/events/{ev2}/cancel"), ana, json!({})).await.problem(409, "invalid_transition");
    app.post(&format!("/api/v1/events/{ev2}/ticket-types"), ana, ticket_body("X", 1))
        .await
        .problem(409, "event_closed");
    app.clock.set(datetime!(2031-01-01 00:00 UTC));
    assert_eq!(app.get(&format!("/api/v1/events/{ev2}"), Some(ana)).await.ok(200)["status"], "cancelled");
}

/// Availability per ticket type is the tightest of its quotas, and
/// `on_sale_now` follows the event status and each type's sale window.
#[tokio::test]
async fn availability_is_the_minimum_over_quotas_and_windows_follow_the_clock() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let ev = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    let front = app
        .post(&format!("/api/v1/events/{ev}/quotas"), ana, json!({ "name": "Front", "size": 30 }))
        .await
        .ok(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = app.ticket_type(ana, &ev, with(ticket_body("Front A", 5000), "quota_ids", json!([front]))).await;
    let early = with(
        with(ticket_body("Early", 3000), "sale_starts_at", json!("2030-01-10T00:00:00Z")),
        "sale_ends_at",
        json!("2030-01-20T00:00:00Z"),
    );
    let b = app.ticket_type(ana, &ev, early).await;
    let c = app.ticket_type(ana, &ev, ticket_body("General", 2000)).await;
    // A quota created later can group existing (never sold) types.
    let pair = app
        .post(
            &format!("/api/v1/events/{ev}/quotas"),
            ana,
            json!({ "name": "Pair", "size": 50, "ticket_type_ids": [b, c] }),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(pair["available"], 50);
    let quotas = app.get(&format!("/api/v1/events/{ev}/quotas"), Some(ana)).await.ok(200).clone();
    let capacity = quotas["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(quotas["items"][0]["ticket_type_ids"].as_array().unwrap().len(), 3);

    app.take(&capacity, 60).await;
    app.take(&front, 25).await;
    let pair_id = pair["id"].as_str().unwrap().to_owned();
    app.take(&pair_id, 45).await;
    app.post(&format!("/api/v1/events/{ev}/publish"), ana, json!({})).await.ok(200);
    app.post(&format!("/api/v1/events/{ev}/open-sales"), ana, json!({})).await.ok(200);

    let avail = |v: &Value, id: &str| -> (i64, bool) {
        let t = v["ticket_types"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap().clone();
        (t["available"].as_i64().unwrap(), t["on_sale_now"].as_bool().unwrap())
    };
    let view = app.get(&format!("/api/v1/events/{ev}"), None).await.ok(200).clone();
    assert_eq!(avail(&view, &a), (5, true)); // min(100-60, 30-25)
    assert_eq!(avail(&view, &b), (5, false)); // min(40, 50-45), window not open yet
    assert_eq!(avail(&view, &c), (5, true));
    let quotas = app.get(&format!("/api/v1/events/{ev}/quotas"), Some(ana)).await.ok(200).clone();
    assert_eq!(quotas["items"][0]["used"], 60);
    assert_eq!(quotas["items"][0]["available"], 40);

    app.clock.set(datetime!(2030-01-10 00:00 UTC));
    let view = app.get(&format!("/api/v1/events/{ev}"), None).await.ok(200).clone();
    assert!(avail(&view, &b).1);
    app.clock.set(datetime!(2030-01-20 00:00 UTC));
    let view = app.get(&format!("/api/v1/events/{ev}"), None).await.ok(200).clone();
    assert!(!avail(&view, &b).1);
    assert!(avail(&view, &a).1);

    // Once a type has been held, its quota membership is frozen.
    sqlx::query("INSERT INTO holds (id, event_id, user_id, status, expires_at, created_at) VALUES ('h1', $1, $2, 'active', 0, 0)")
        .bind(&ev)
        .bind(ana.to_db())
        .execute(&mut *app.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
    sqlx::query("INSERT INTO hold_items (hold_id, ticket_type_id, quantity) VALUES ('h1', $1, 1)")
        .bind(&a)
        .execute(&mut *app.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
    app.patch(&format!("/api/v1/ticket-types/{a}"), ana, json!({ "quota_ids": [] }))
        .await
        .problem(409, "quota_membership_locked");
    app.post(&format!("/api/v1/events/{ev}/quotas"), ana, json!({ "name": "Late", "size": 5, "ticket_type_ids": [a] }))
        .await
        .problem(409, "quota_membership_locked");
    // A price change is still fine.
    let r = app
        .patch(
            &format!("/api/v1/ticket-types/{a}"),
            ana,
            json!({ "price": { "amount_minor": 5500, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(avail(r.ok(200), &a).0, 5);
}

/// Capacity and quota sizes never drop below what is sold or held, and the
/// currency is fixed once ticket types are priced in it.
#[tokio::test]
async fn resizing_never_goes_below_what_is_used() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let ev = app.event(ana, &org, event_body()).await["id"].as_str().unwrap().to_owned();
    let r = app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "currency": "USD", "doors_open_at": null })).await;
    assert_eq!(r.ok(200)["currency"], "USD");
    assert_eq!(r.body["doors_open_at"], Value::Null);
    app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "currency": "EUR" })).await.ok(200);
    app.ticket_type(ana, &ev, ticket_body("General", 1000)).await;
    app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "currency": "USD" })).await.problem(409, "currency_locked");

    let quotas = app.get(&format!("/api/v1/events/{ev}/quotas"), Some(ana)).await.ok(200).clone();
    let capacity = quotas["items"][0]["id"].as_str().unwrap().to_owned();
    app.take(&capacity, 40).await;
    let p = app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "capacity": 39 })).await;
    assert_eq!(p.problem(409, "capacity_below_sold")["used"], 40);
    let r = app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "capacity": 40, "name": "Aforo reducido" })).await;
    assert_eq!(r.ok(200)["capacity"], 40);
    assert_eq!(r.body["ticket_types"][0]["available"], 0);
    let quotas = app.get(&format!("/api/v1/events/{ev}/quotas"), Some(ana)).await.ok(200).clone();
    assert_eq!(quotas["items"][0]["size"], 40);
    app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "capacity": 0 })).await.invalid("capacity");
    app.patch(&format!("/api/v1/events/{ev}"), ana, json!({ "ends_at": "2030-03-01T19:00:00Z" }))
        .await
        .invalid("ends_at");
    app.patch(&format!("/api/v1/quotas/{capacity}"), ana, json!({ "size": 500 })).await.invalid("size");

    let q =
        app.post(&format!("/api/v1/events/{ev}/quotas"), ana, json!({ "name": "Q", "size": 10 })).await.ok(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    app.take(&q, 7).await;
    assert_eq!(
        app.patch(&format!("/api/v1/quotas/{q}"), ana, json!({ "size": 6 })).await.problem(409, "quota_below_used")["used"],
        7
    );
    app.patch(&format!("/api/v1/quotas/{q}"), ana, json!({ "size": -1 })).await.invalid("size");
    let r = app.patch(&format!("/api/v1/quotas/{q}"), ana, json!({ "size": 7, "name": "Exacto" })).await;
    assert_eq!(
        (r.ok(200)["size"].as_i64(), r.body["available"].as_i64(), r.body["name"].as_str()),
        (Some(7), Some(0), Some("Exacto"))
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "quota.updated").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "event.updated").await, 3);
}

/// The public listing shows only visible, not yet ended events, ordered by
/// start time, filtered by text and dates, in stable cursor pages.
#[tokio::test]
async fn listing_pages_searches_and_filters() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let org = app.org(ana, "Org").await;
    let mut ids = Vec::new();
    for (i, (name, city)) in
        [("Rock 50%", "Madrid"), ("Jazz", "Sevilla"), ("Pop", "Madrid"), ("Indie", "Bilbao"), ("Ópera", "Madrid")]
            .iter()
            .enumerate()
    {
        let day = 10 + i;
        let body = with(
            with(
                with(with(event_body(), "name", json!(name)), "venue.city", json!(city)),
                "starts_at",
                json!(format!("2030-03-{day}T20:00:00Z")),
            ),
            "ends_at",
            json!(format!("2030-03-{day}T23:00:00Z")),
        );
        let body = with(body, "doors_open_at", Value::Null);
        let id = app.event(ana, &org, body).await["id"].as_str().unwrap().to_owned();
        app.ticket_type(ana, &id, ticket_body("General", 1000)).await;
        app.post(&format!("/api/v1/events/{id}/publish"), ana, json!({})).await.ok(200);
        ids.push(id);
    }
    // A draft never lists.
    app.event(ana, &org, event_body()).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=2&cursor={c}"),
            None => "/api/v1/events?limit=2".to_owned(),
        };
        let page = app.get(&path, None).await.ok(200).clone();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let names = |v: &Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
    };
    let r = app.get("/api/v1/events?q=madrid", None).await;
    assert_eq!(names(r.ok(200)), ["Rock 50%", "Pop", "Ópera"]);
    let r = app.get("/api/v1/events?q=JAZZ", None).await;
    assert_eq!(names(r.ok(200)), ["Jazz"]);
    let r = app.get("/api/v1/events?q=sala%20grande&from=2030-03-12T00:00:00Z&to=2030-03-14T00:00:00Z", None).await;
    assert_eq!(names(r.ok(200)), ["Pop", "Indie"]);
    // `%` is literal text, not a wildcard.
    let r = app.get("/api/v1/events?q=50%25", None).await;
    assert_eq!(names(r.ok(200)), ["Rock 50%"]);
    let r = app.get("/api/v1/events?q=%25", None).await;
    assert_eq!(names(r.ok(200)), ["Rock 50%"]);

    app.get("/api/v1/events?limit=0", None).await.invalid("limit");
    app.get("/api/v1/events?cursor=garbage!", None).await.invalid("cursor");
    app.get("/api/v1/events?from=yesterday", None).await.invalid("from");
    app.get("/api/v1/events?limit=abc", None).await.problem(400, "invalid_query");

    // Members see drafts too, in the organization listing.
    let r = app.get(&format!("/api/v1/organizations/{org}/events"), Some(ana)).await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 6);
}

/// Slugs are unique (409 `slug_taken`), and a retried creation with the same
/// `Idempotency-Key` returns the first result instead of a second object.
#[tokio::test]
async fn slugs_are_unique_and_creation_is_idempotent() {
    let app = spawn().await;
    let ana = app.user("ana").await;
    let bob = app.user("bob").await;
    app.post("/api/v1/organizations", ana, json!({ "name": "Uno", "slug": "uno-eventos" })).await.ok(201);
    app.post("/api/v1/organizations", bob, json!({ "name": "Otro", "slug": "uno-eventos" }))
        .await
        .problem(409, "slug_taken");

    let send = |body: Value| {
        app.http
            .post(format!("{}/api/v1/organizations", app.base))
            .header("x-test-user", ana.to_string())
            .header("idempotency-key", "k-1")
            .json(&body)
            .send()
    };
    let first: Value = send(json!({ "name": "Dos" })).await.unwrap().json().await.unwrap();
    let second = send(json!({ "name": "Dos" })).await.unwrap();
    assert_eq!(second.status().as_u16(), 201);
    assert_eq!(second.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM organizations WHERE slug = $1", "dos").await, 1);
    let reused = send(json!({ "name": "Tres" })).await.unwrap();
    assert_eq!(reused.status().as_u16(), 422);
}

/// The demo seed creates an on-sale stadium event a month ahead with three
/// priced ticket types and a shared quota, and a second run finds it again.
#[tokio::test]
async fn demo_seed_is_idempotent() {
    let app = spawn().await;
    let owner = app.user("owner").await;
    let ids = app.catalog.seed_demo(owner).await.unwrap();
    let again = app.catalog.seed_demo(owner).await.unwrap();
    assert_eq!(ids, again);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM events WHERE organization_id = $1", &ids.organization_id.to_db()).await,
        1
    );

    let view = app.get(&format!("/api/v1/events/{}", ids.event_id), None).await.ok(200).clone();
    assert_eq!(view["name"], "Noche de Estadio");
    assert_eq!(view["status"], "on_sale");
    assert_eq!(view["capacity"], 60000);
    assert_eq!(view["currency"], "EUR");
    let starts = entrada_primitives::clock::parse_rfc3339(view["starts_at"].as_str().unwrap()).unwrap();
    assert!((starts - START - Duration::days(30)).abs() < Duration::days(1));
    let prices: Vec<i64> =
        view["ticket_types"].as_array().unwrap().iter().map(|t| t["price"]["amount_minor"].as_i64().unwrap()).collect();
    assert_eq!(prices, [4500, 8900, 19900]);
    assert!(view["ticket_types"].as_array().unwrap().iter().all(|t| t["on_sale_now"] == true));
    assert_eq!(view["ticket_types"][2]["available"], 20000);
    assert_eq!(view["ticket_types"][0]["available"], 60000);
    let r = app.get(&format!("/api/v1/organizations/{}", ids.organization_id), Some(owner)).await;
    assert_eq!(r.ok(200)["name"], "Entrada Demo");
    // The service API the sale uses sees the same event.
    let ev = app.catalog.load_event(ids.event_id).await.unwrap().unwrap();
    assert_eq!(ev.details.capacity, 60000);
    let types = app.catalog.load_ticket_types(ids.event_id).await.unwrap();
    assert_eq!(types[1].quota_ids.len(), 2);
    assert_eq!(types[0].quota_ids.len(), 1);
}
