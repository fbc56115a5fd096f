//! Check-in over real HTTP on the backend the test run selects (SQLite by
//! default, PostgreSQL with `ENTRADA_TEST_DB=postgres`): enrolment, holder
//! credentials, online and offline scans, races, conflicts and attendance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use entrada_checkin::{Checkin, CheckinConfig, router};
use entrada_primitives::auth::AuthState;
use entrada_primitives::clock::rfc3339;
use entrada_primitives::ids::{SessionId, UserId};
use entrada_primitives::{Clock, ManualClock, PlatformRole, Principal};
use entrada_storage::testing::{TestDb, fresh};
use serde_json::{Value, json};
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// Doors open 18:30, the show starts 20:00 and ends 23:00; tests scan at 19:00.
const START: OffsetDateTime = datetime!(2030-06-01 19:00 UTC);

struct App {
    base: String,
    http: reqwest::Client,
    clock: ManualClock,
    tdb: TestDb,
}

/// Stands in for the gateway's authentication layer: `x-test-user` names the
/// caller, `x-test-role` optionally their platform role.
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
    let checkin = Checkin::new(tdb.db.clone(), Arc::new(clock.clone()), CheckinConfig::default());
    let (routes, _openapi) = router(checkin).split_for_parts();
    let app = routes.layer(axum::middleware::from_fn(test_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { base, http: reqwest::Client::new(), clock, tdb }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    bytes: Vec<u8>,
}

impl Reply {
    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!((self.status, self.body["code"].as_str()), (status, Some(code)), "{}", self.body);
        &self.body
    }

    #[track_caller]
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }
}

/// Who sends a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    User(UserId),
    Device(&'a str),
}

/// An event with two zones, two gates, a printable floor type and a
/// phone-only type that admits everywhere.
struct Fixture {
    organizer: UserId,
    fan: UserId,
    event: String,
    org: String,
    north: String,
    vip_gate: String,
    ga: String,
    vip: String,
}

impl App {
    async fn exec(&self, sql: &str, binds: &[&str]) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(&mut *self.tdb.db.writer().await.unwrap()).await.unwrap();
    }

    async fn count(&self, sql: &str, bind: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(bind)
            .fetch_one(self.tdb.db.reader())
            .await
            .unwrap();
        n
    }

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

    async fn send(&self, method: &str, path: &str, who: As<'_>, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        match who {
            As::Nobody => {}
            As::User(u) => req = req.header("x-test-user", u.to_string()),
            As::Device(t) => req = req.header("authorization", format!("Device {t}")),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, bytes }
    }

    /// An organization, an event and its zones, gates and ticket types.
    async fn fixture(&self) -> Fixture {
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
        self.new_event(&event, &org).await;
        let zone = |name: &str| json!({ "name": name });
        let floor =
            self.send("POST", &format!("/api/v1/events/{event}/zones"), As::User(organizer), Some(zone("floor"))).await;
        let floor = floor.ok(201)["id"].as_str().unwrap().to_owned();
        let vipz =
            self.send("POST", &format!("/api/v1/events/{event}/zones"), As::User(organizer), Some(zone("vip"))).await;
        let vipz = vipz.ok(201)["id"].as_str().unwrap().to_owned();
        let gate = |name: &str, zone: &str| json!({ "name": name, "zone_id": zone });
        let north = self
            .send("POST", &format!("/api/v1/events/{event}/gates"), As::User(organizer), Some(gate("North", &floor)))
            .await;
        let north = north.ok(201)["id"].as_str().unwrap().to_owned();
        let vip_gate = self
            .send("POST", &format!("/api/v1/events/{event}/gates"), As::User(organizer), Some(gate("VIP door", &vipz)))
            .await;
        let vip_gate = vip_gate.ok(201)["id"].as_str().unwrap().to_owned();
        let ga = self.ticket_type(&event, "General admission", "[\"floor\"]", true).await;
        let vip = self.ticket_type(&event, "VIP", "[]", false).await;
        Fixture { organizer, fan, event, org, north, vip_gate, ga, vip }
    }

    async fn new_event(&self, event: &str, org: &str) {
        let ms = |t: OffsetDateTime| (t.unix_timestamp() * 1000).to_string();
        sqlx::query(
            "INSERT INTO events (id, organization_id, name, venue_name, timezone, starts_at, ends_at, doors_open_at, \
             capacity, currency, status, created_at, updated_at) \
             VALUES ($1, $2, 'Show', 'Arena', 'UTC', $3, $4, $5, 1000, 'EUR', 'on_sale', 0, 0)",
        )
        .bind(event)
        .bind(org)
        .bind(ms(datetime!(2030-06-01 20:00 UTC)).parse::<i64>().unwrap())
        .bind(ms(datetime!(2030-06-01 23:00 UTC)).parse::<i64>().unwrap())
        .bind(ms(datetime!(2030-06-01 18:30 UTC)).parse::<i64>().unwrap())
        .execute(&mut *self.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
    }

    async fn ticket_type(&self, event: &str, name: &str, zones: &str, printable: bool) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO ticket_types (id, event_id, name, price_minor, currency, zones, printable, created_at) \
             VALUES ($1, $2, $3, 2500, 'EUR', $4, $5, 0)",
        )
        .bind(&id)
        .bind(event)
        .bind(name)
        .bind(zones)
        .bind(printable)
        .execute(&mut *self.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
        id
    }

    /// A paid ticket of `ticket_type` held by `holder`.
    async fn ticket(&self, f: &Fixture, event: &str, ticket_type: &str, holder: UserId) -> String {
        let (hold, order, pos, ticket) = (
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
            uuid::Uuid::now_v7().to_string(),
        );
        let h = holder.to_db();
        self.exec(
            "INSERT INTO holds (id, event_id, user_id, status, expires_at, created_at) VALUES ($1, $2, $3, 'converted', 0, 0)",
            &[&hold, event, &h],
        )
        .await;
        self.exec(
            "INSERT INTO orders (id, event_id, organization_id, buyer_id, hold_id, status, total_minor, currency, \
             payment_deadline, created_at) VALUES ($1, $2, $3, $4, $5, 'paid', 2500, 'EUR', 0, 0)",
            &[&order, event, &f.org, &h, &hold],
        )
        .await;
        self.exec(
            "INSERT INTO order_positions (id, order_id, ticket_type_id, price_minor, currency, position) \
             VALUES ($1, $2, $3, 2500, 'EUR', 0)",
            &[&pos, &order, ticket_type],
        )
        .await;
        let serial: (i64,) = sqlx::query_as("SELECT COUNT(*) + 1 FROM tickets WHERE event_id = $1")
            .bind(event)
            .fetch_one(self.tdb.db.reader())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO tickets (id, event_id, ticket_type_id, order_id, position_id, serial, holder_id, status, \
             generation, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'valid', 1, 0)",
        )
        .bind(&ticket)
        .bind(event)
        .bind(ticket_type)
        .bind(&order)
        .bind(&pos)
        .bind(serial.0)
        .bind(&h)
        .execute(&mut *self.tdb.db.writer().await.unwrap())
        .await
        .unwrap();
        ticket
    }

    /// Creates and enrols a device for `gates`; returns (device id, token).
    async fn device(&self, by: UserId, event: &str, gates: &[&str]) -> (String, String) {
        let r = self
            .send(
                "POST",
                &format!("/api/v1/events/{event}/devices"),
                As::User(by),
                Some(json!({"name": "Scanner", "gate_ids": gates})),
            )
            .await;
        let b = r.ok(201);
        assert!(b["enrolment_qr_svg"].as_str().unwrap().contains("<svg"));
        let code = b["enrolment_code"].as_str().unwrap().to_owned();
        let e = self.send("POST", "/api/v1/scanner/enrol", As::Nobody, Some(json!({"code": code}))).await;
        let e = e.ok(201);
        (e["device_id"].as_str().unwrap().to_owned(), e["device_token"].as_str().unwrap().to_owned())
    }

    /// Registers a holder device key and returns it with the credential bytes.
    async fn rotating(&self, holder: UserId, ticket: &str) -> (SigningKey, Vec<u8>) {
        let key = SigningKey::from_bytes(&entrada_primitives::token::random_bytes::<32>());
        let pk = B64.encode(key.verifying_key().as_bytes());
        self.send(
            "POST",
            &format!("/api/v1/tickets/{ticket}/device-key"),
            As::User(holder),
            Some(json!({"public_key": pk})),
        )
        .await
        .ok(204);
        let c = self.send("GET", &format!("/api/v1/tickets/{ticket}/credential"), As::User(holder), None).await;
        let c = c.ok(200);
        assert_eq!(c["kind"], "rotating");
        (key, B64.decode(c["credential"].as_str().unwrap()).unwrap())
    }

    /// The QR text the holder's phone shows right now.
    fn qr(&self, key: &SigningKey, credential: &[u8]) -> String {
        let step = entrada_credential::time_step(self.clock.now().unix_timestamp());
        entrada_credential::encode_rotating(credential, step, &entrada_credential::prove(credential, key, step))
    }

    async fn scan(&self, token: &str, payload: &str, gate: &str, nonce: &str) -> Value {
        self.scan_dir(token, payload, gate, nonce, "in").await
    }

    async fn scan_dir(&self, token: &str, payload: &str, gate: &str, nonce: &str, direction: &str) -> Value {
        let r = self
            .send(
                "POST",
                "/api/v1/scanner/scan",
                As::Device(token),
                Some(json!({"payload": payload, "gate_id": gate, "nonce": nonce, "direction": direction})),
            )
            .await;
        r.ok(200).clone()
    }
}

/// An organizer creates a device for a gate, the device exchanges its one-time code for a token, the code cannot
/// be reused or used after 24 hours, and a revoked device is refused at once.
#[tokio::test]
async fn enrolment_is_one_time_and_revocation_is_immediate() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (device, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    app.send("GET", "/api/v1/scanner/bundle", As::Device(&token), None).await.ok(200);

    // The code is single use.
    let r = app
        .send(
            "POST",
            &format!("/api/v1/events/{}/devices", f.event),
            As::User(f.organizer),
            Some(json!({"name": "B", "gate_ids": [f.north]})),
        )
        .await;
    let code = r.ok(201)["enrolment_code"].as_str().unwrap().to_owned();
    app.send("POST", "/api/v1/scanner/enrol", As::Nobody, Some(json!({"code": code}))).await.ok(201);
    app.send("POST", "/api/v1/scanner/enrol", As::Nobody, Some(json!({"code": code})))
        .await
        .problem(401, "invalid_enrolment_code");
    // And expires.
    let r = app
        .send(
            "POST",
            &format!("/api/v1/events/{}/devices", f.event),
            As::User(f.organizer),
            Some(json!({"name": "C", "gate_ids": [f.north]})),
        )
        .await;
    let late = r.ok(201)["enrolment_code"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::hours(25));
    app.send("POST", "/api/v1/scanner/enrol", As::Nobody, Some(json!({"code": late})))
        .await
        .problem(401, "invalid_enrolment_code");
    app.clock.set(START);

    // Unknown gates and strangers are refused.
    app.send(
        "POST",
        &format!("/api/v1/events/{}/devices", f.event),
        As::User(f.organizer),
        Some(json!({"name": "D", "gate_ids": ["nope"]})),
    )
    .await
    .problem(422, "validation_failed");
    app.send(
        "POST",
        &format!("/api/v1/events/{}/devices", f.event),
        As::User(f.fan),
        Some(json!({"name": "D", "gate_ids": [f.north]})),
    )
    .await
    .problem(404, "not_found");
    app.send("DELETE", &format!("/api/v1/events/{}/devices/{device}", f.event), As::User(f.fan), None)
        .await
        .problem(404, "not_found");

    app.send("DELETE", &format!("/api/v1/events/{}/devices/{device}", f.event), As::User(f.organizer), None)
        .await
        .ok(204);
    app.send("GET", "/api/v1/scanner/bundle", As::Device(&token), None).await.problem(401, "device_revoked");
    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let c = app.send("GET", &format!("/api/v1/tickets/{t}/credential"), As::User(f.fan), None).await;
    let qr = c.ok(200)["qr_text"].as_str().unwrap().to_owned();
    app.send(
        "POST",
        "/api/v1/scanner/scan",
        As::Device(&token),
        Some(json!({"payload": qr, "gate_id": f.north, "nonce": "n"})),
    )
    .await
    .problem(401, "device_revoked");
    app.send("GET", "/api/v1/scanner/bundle", As::Device("made-up"), None).await.problem(401, "invalid_device_token");
    let audited = app
        .count("SELECT COUNT(*) FROM audit_log WHERE object_id = $1 AND action LIKE 'checkin.device_%'", &device)
        .await;
    assert_eq!(audited, 3, "created, enrolled, revoked");
}

/// A fan's login (or any bearer token) cannot call the scanner API: it needs a device token.
#[tokio::test]
async fn a_fan_token_cannot_scan() {
    let app = spawn().await;
    let f = app.fixture().await;
    let r = app
        .send(
            "POST",
            "/api/v1/scanner/scan",
            As::User(f.fan),
            Some(json!({"payload": "EN1:X", "gate_id": f.north, "nonce": "1"})),
        )
        .await;
    r.problem(401, "device_token_required");
    let r = app
        .http
        .get(format!("{}/api/v1/scanner/bundle", app.base))
        .header("authorization", "Bearer eyJhbGciOi.x.y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "device_token_required");
}

/// A rotating credential admits once; the next scan says `already_used` with when and where; re-sending the same
/// nonce replays the original verdict; a screenshot replayed 40 seconds later is `stale_proof`.
#[tokio::test]
async fn admits_once_then_already_used() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    let qr = app.qr(&key, &cred);

    let v = app.scan(&token, &qr, &f.north, "a1").await;
    assert_eq!((v["ok"].as_bool(), v["reason"].as_str()), (Some(true), Some("ok")), "{v}");
    assert_eq!(v["display"]["ticket_type"], "General admission");
    assert_eq!(v["display"]["holder_display_name"], "Ana");

    app.clock.advance(Duration::seconds(5));
    let qr2 = app.qr(&key, &cred);
    let again = app.scan(&token, &qr2, &f.north, "a2").await;
    assert_eq!(again["reason"], "already_used", "{again}");
    assert_eq!(again["first_used_at"], rfc3339(START));
    assert_eq!(again["first_gate"], "North");
    assert_eq!(again["first_gate_id"], f.north.as_str());

    // The same nonce replays the first answer exactly.
    let replay = app.scan(&token, &qr2, &f.north, "a1").await;
    assert_eq!(replay, v);
    assert_eq!(app.count("SELECT COUNT(*) FROM scans WHERE ticket_id = $1", &t).await, 2);

    app.clock.advance(Duration::seconds(40));
    let stale = app.scan(&token, &qr, &f.north, "a3").await;
    assert_eq!(stale["reason"], "stale_proof", "{stale}");

    // A forged payload is refused with the verifier's reason, never a 500.
    let mut forged = qr2.clone();
    forged.truncate(forged.len() - 3);
    let bad = app.scan(&token, &forged, &f.north, "a4").await;
    assert_eq!(bad["ok"], false);
    let garbage = app.scan(&token, "hello", &f.north, "a5").await;
    assert_eq!(garbage["reason"], "malformed");
}

/// The same ticket scanned by 10 concurrent requests at 10 devices: exactly one admission.
#[tokio::test]
async fn concurrent_scans_admit_exactly_once() {
    let app = Arc::new(spawn().await);
    let f = app.fixture().await;
    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    let qr = app.qr(&key, &cred);
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(app.device(f.organizer, &f.event, &[&f.north]).await.1);
    }
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (app, qr, gate) = (app.clone(), qr.clone(), f.north.clone());
        tasks.push(tokio::spawn(async move { app.scan(&token, &qr, &gate, &format!("race-{i}")).await }));
    }
    let mut oks = 0;
    for t in tasks {
        let v = t.await.unwrap();
        if v["ok"] == true {
            oks += 1;
        } else {
            assert_eq!(v["reason"], "already_used", "{v}");
        }
    }
    assert_eq!(oks, 1);
    assert_eq!(app.count("SELECT entries FROM admissions WHERE ticket_id = $1", &t).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM scans WHERE ticket_id = $1", &t).await, 10);
}

/// The same batch uploaded 5 times records each scan once and answers the same each time.
#[tokio::test]
async fn reuploading_a_batch_records_each_scan_once() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (device, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let mut scans = Vec::new();
    for i in 0..5 {
        let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
        let (key, cred) = app.rotating(f.fan, &t).await;
        scans.push(json!({"payload": app.qr(&key, &cred), "gate_id": f.north, "nonce": format!("b{i}")}));
    }
    let body = json!({ "scans": scans });
    let first = app.send("POST", "/api/v1/scanner/scans", As::Device(&token), Some(body.clone())).await;
    let first = first.ok(200).clone();
    assert!(first["verdicts"].as_array().unwrap().iter().all(|v| v["ok"] == true), "{first}");
    for _ in 0..4 {
        let again = app.send("POST", "/api/v1/scanner/scans", As::Device(&token), Some(body.clone())).await;
        assert_eq!(again.ok(200), &first);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM scans WHERE device_id = $1", &device).await, 5);
    assert_eq!(app.count("SELECT COUNT(*) FROM admissions WHERE event_id = $1", &f.event).await, 5);

    // Five concurrent uploads of a fresh batch (nonce order reversed in some) still record each scan once.
    let (device2, token2) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let mut scans2 = Vec::new();
    for i in 0..5 {
        let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
        let (key, cred) = app.rotating(f.fan, &t).await;
        scans2.push(json!({"payload": app.qr(&key, &cred), "gate_id": f.north, "nonce": format!("c{i}")}));
    }
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for k in 0..5 {
        let mut s = scans2.clone();
        if k % 2 == 1 {
            s.reverse();
        }
        let (app, token) = (app.clone(), token2.clone());
        tasks.push(tokio::spawn(async move {
            app.send("POST", "/api/v1/scanner/scans", As::Device(&token), Some(json!({ "scans": s }))).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.ok(200)["verdicts"].as_array().unwrap().iter().all(|v| v["ok"] == true), "{}", r.body);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM scans WHERE device_id = $1", &device2).await, 5);

    // Too many scans or bad times are 422, not 500.
    let many: Vec<Value> =
        (0..501).map(|i| json!({"payload": "x", "gate_id": f.north, "nonce": format!("m{i}")})).collect();
    app.send("POST", "/api/v1/scanner/scans", As::Device(&token), Some(json!({"scans": many})))
        .await
        .problem(422, "validation_failed");
    app.send(
        "POST",
        "/api/v1/scanner/scans",
        As::Device(&token),
        Some(json!({"scans": [{"payload": "x", "gate_id": f.north, "nonce": "t", "scanned_at": "yesterday"}]})),
    )
    .await
    .problem(422, "validation_failed");
}

/// Two devices admit the same ticket offline; at upload the second admission is recorded as a conflict, visible
/// in the conflicts list and the stats, and an offline admission colliding with an online one too.
#[tokio::test]
async fn offline_collisions_are_recorded_as_conflicts() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (dev_a, a) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let (_, b) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    let at_a = app.clock.now();
    let qr_a = app.qr(&key, &cred);
    app.clock.advance(Duration::seconds(20));
    let at_b = app.clock.now();
    let qr_b = app.qr(&key, &cred);
    // Both upload ten minutes later.
    app.clock.advance(Duration::minutes(10));
    let offline = |qr: &str, at: OffsetDateTime, nonce: &str| json!({"scans": [{"payload": qr, "gate_id": f.north, "nonce": nonce, "offline": true, "scanned_at": rfc3339(at)}]});
    let ra = app.send("POST", "/api/v1/scanner/scans", As::Device(&a), Some(offline(&qr_a, at_a, "oa"))).await;
    assert_eq!(ra.ok(200)["verdicts"][0]["ok"], true, "{}", ra.body);
    let rb = app.send("POST", "/api/v1/scanner/scans", As::Device(&b), Some(offline(&qr_b, at_b, "ob"))).await;
    let vb = &rb.ok(200)["verdicts"][0];
    assert_eq!((vb["reason"].as_str(), vb["conflict"].as_bool()), (Some("already_used"), Some(true)), "{vb}");
    // Re-uploading does not record the conflict twice.
    app.send("POST", "/api/v1/scanner/scans", As::Device(&b), Some(offline(&qr_b, at_b, "ob"))).await.ok(200);

    // An online admission, then an offline one of the same ticket uploaded later.
    let t2 = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key2, cred2) = app.rotating(f.fan, &t2).await;
    let early = app.clock.now();
    let early_qr = app.qr(&key2, &cred2);
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.scan(&a, &app.qr(&key2, &cred2), &f.north, "online").await["ok"], true);
    let rc = app.send("POST", "/api/v1/scanner/scans", As::Device(&b), Some(offline(&early_qr, early, "oc"))).await;
    assert_eq!(rc.ok(200)["verdicts"][0]["conflict"], true);

    let c =
        app.send("GET", &format!("/api/v1/events/{}/checkin/conflicts", f.event), As::User(f.organizer), None).await;
    let list = c.ok(200)["conflicts"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["ticket_id"], t.as_str());
    assert_eq!(list[0]["first_gate_id"], f.north.as_str());
    assert_eq!(list[0]["scanned_at"], rfc3339(at_b));
    let s = app.send("GET", &format!("/api/v1/events/{}/checkin/stats", f.event), As::User(f.organizer), None).await;
    assert_eq!(s.ok(200)["conflicts"], 2);
    app.send("GET", &format!("/api/v1/events/{}/checkin/conflicts", f.event), As::User(f.fan), None)
        .await
        .problem(404, "not_found");
    let _ = dev_a;
}

/// A generation bump (gift, resale) makes the old QR `superseded_generation` at once online, and the next bundle
/// sync names the ticket; a cancelled ticket answers `cancelled`.
#[tokio::test]
async fn superseded_and_cancelled_tickets_do_not_admit() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let full = app.send("GET", "/api/v1/scanner/bundle?include_tickets=true", As::Device(&token), None).await;
    let cursor = full.ok(200)["next_cursor"].as_i64().unwrap();
    assert_eq!(full.body["keys"].as_array().unwrap().len(), 0, "no credential issued yet");

    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    app.exec("UPDATE tickets SET generation = 2 WHERE id = $1", &[&t]).await;
    let v = app.scan(&token, &app.qr(&key, &cred), &f.north, "g1").await;
    assert_eq!(v["reason"], "superseded_generation", "{v}");

    let c = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (ckey, ccred) = app.rotating(f.fan, &c).await;
    app.exec("UPDATE tickets SET status = 'cancelled' WHERE id = $1", &[&c]).await;
    let v = app.scan(&token, &app.qr(&ckey, &ccred), &f.north, "c1").await;
    assert_eq!(v["reason"], "cancelled", "{v}");
    app.send("GET", &format!("/api/v1/tickets/{c}/credential"), As::User(f.fan), None)
        .await
        .problem(409, "ticket_not_valid");

    let inc = app.send("GET", &format!("/api/v1/scanner/bundle?cursor={cursor}"), As::Device(&token), None).await;
    let b = inc.ok(200);
    let revs = b["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 2, "{b}");
    assert!(revs.iter().any(|r| r["ticket_id"] == t.as_str() && r["min_generation"] == 2 && r["cancelled"] == false));
    assert!(revs.iter().any(|r| r["ticket_id"] == c.as_str() && r["cancelled"] == true));
    assert_eq!(b["keys"].as_array().unwrap().len(), 1);
    assert_eq!(b["ticket_types"].as_array().unwrap().len(), 2);
    let next = b["next_cursor"].as_i64().unwrap();
    let none = app.send("GET", &format!("/api/v1/scanner/bundle?cursor={next}"), As::Device(&token), None).await;
    assert_eq!(none.ok(200)["revocations"].as_array().unwrap().len(), 0);
    assert_eq!(none.body["next_cursor"], next);
    let full = app.send("GET", "/api/v1/scanner/bundle?include_tickets=true", As::Device(&token), None).await;
    let ids = full.ok(200)["valid_ticket_ids"].as_array().unwrap().clone();
    assert_eq!(ids, vec![json!(t)]);
}

/// Zones, doors and events are enforced: a floor ticket at the VIP door is `wrong_zone`; before the doors open
/// `not_yet_open`; after they close `closed`; another event's device says `wrong_event`.
#[tokio::test]
async fn zone_doors_and_event_rules() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, token) = app.device(f.organizer, &f.event, &[&f.north, &f.vip_gate]).await;
    // Credentials are fetched well before the doors open.
    app.clock.set(datetime!(2030-06-01 17:00 UTC));
    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    let vt = app.ticket(&f, &f.event, &f.vip, f.fan).await;
    let (vkey, vcred) = app.rotating(f.fan, &vt).await;
    app.clock.set(START);

    let v = app.scan(&token, &app.qr(&key, &cred), &f.vip_gate, "z1").await;
    assert_eq!(v["reason"], "wrong_zone", "{v}");
    // A VIP ticket (no zone list) passes anywhere.
    assert_eq!(app.scan(&token, &app.qr(&vkey, &vcred), &f.vip_gate, "z2").await["ok"], true);

    app.clock.set(datetime!(2030-06-01 18:00 UTC));
    let v = app.scan(&token, &app.qr(&key, &cred), &f.north, "d1").await;
    assert_eq!(v["reason"], "not_yet_open", "{v}");

    app.send(
        "PUT",
        &format!("/api/v1/events/{}/checkin/settings", f.event),
        As::User(f.organizer),
        Some(json!({"doors_close_at": "2030-06-01T19:30:00Z"})),
    )
    .await
    .ok(200);
    app.clock.set(datetime!(2030-06-01 19:45 UTC));
    let v = app.scan(&token, &app.qr(&key, &cred), &f.north, "d2").await;
    assert_eq!(v["reason"], "closed", "{v}");
    app.send(
        "PUT",
        &format!("/api/v1/events/{}/checkin/settings", f.event),
        As::User(f.organizer),
        Some(json!({"doors_close_at": "soon"})),
    )
    .await
    .problem(422, "validation_failed");

    // A gate the device is not enrolled for.
    let (_, north_only) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let v = app.scan(&north_only, &app.qr(&vkey, &vcred), &f.vip_gate, "g1").await;
    assert_eq!(v["reason"], "gate_not_assigned");

    // Event B's device scanning event A's ticket.
    let other = uuid::Uuid::now_v7().to_string();
    app.new_event(&other, &f.org).await;
    let zone = app
        .send("POST", &format!("/api/v1/events/{other}/zones"), As::User(f.organizer), Some(json!({"name": "floor"})))
        .await;
    let zone = zone.ok(201)["id"].as_str().unwrap().to_owned();
    let gate = app
        .send(
            "POST",
            &format!("/api/v1/events/{other}/gates"),
            As::User(f.organizer),
            Some(json!({"name": "B", "zone_id": zone})),
        )
        .await;
    let gate = gate.ok(201)["id"].as_str().unwrap().to_owned();
    let (_, other_token) = app.device(f.organizer, &other, &[&gate]).await;
    // Give event B an issuing key too.
    let bt = app.ticket(&f, &other, &app.ticket_type(&other, "B", "[]", false).await, f.fan).await;
    app.rotating(f.fan, &bt).await;
    app.clock.set(START);
    let v = app.scan(&other_token, &app.qr(&key, &cred), &gate, "e1").await;
    assert_eq!(v["reason"], "wrong_event", "{v}");
}

/// A re-entry ticket needs an exit scan between entries and stops at its maximum; single entry stays single.
#[tokio::test]
async fn reentry_policy_needs_exits_and_stops_at_the_maximum() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (_, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    app.send(
        "PUT",
        &format!("/api/v1/ticket-types/{}/entry-policy", f.vip),
        As::User(f.fan),
        Some(json!({"reentry": true, "max_entries": 2})),
    )
    .await
    .problem(404, "not_found");
    app.send(
        "PUT",
        &format!("/api/v1/ticket-types/{}/entry-policy", f.vip),
        As::User(f.organizer),
        Some(json!({"reentry": true})),
    )
    .await
    .problem(422, "validation_failed");
    app.send(
        "PUT",
        &format!("/api/v1/ticket-types/{}/entry-policy", f.vip),
        As::User(f.organizer),
        Some(json!({"reentry": true, "max_entries": 2})),
    )
    .await
    .ok(200);
    let t = app.ticket(&f, &f.event, &f.vip, f.fan).await;
    let (key, cred) = app.rotating(f.fan, &t).await;
    let scan = |n: &'static str, dir: &'static str| {
        let qr = app.qr(&key, &cred);
        let (app, token, gate) = (&app, token.clone(), f.north.clone());
        async move { app.scan_dir(&token, &qr, &gate, n, dir).await["reason"].as_str().unwrap().to_owned() }
    };
    assert_eq!(scan("r1", "in").await, "ok");
    assert_eq!(scan("r2", "in").await, "already_used");
    assert_eq!(scan("r3", "out").await, "ok");
    assert_eq!(scan("r4", "out").await, "not_inside");
    assert_eq!(scan("r5", "in").await, "ok");
    assert_eq!(scan("r6", "out").await, "ok");
    assert_eq!(scan("r7", "in").await, "already_used");

    let s = app.send("GET", &format!("/api/v1/events/{}/checkin/stats", f.event), As::User(f.organizer), None).await;
    assert_eq!(s.ok(200)["inside"], 0);
}

/// The attendance numbers: entries per minute per gate and zone, inside count, rejections by reason; staff may
/// read them and enrol devices, but not change the rules.
#[tokio::test]
async fn stats_count_entries_rejections_and_staff_can_read_them() {
    let app = spawn().await;
    let f = app.fixture().await;
    let staff = app.user("Sam").await;
    let email: (String,) = sqlx::query_as("SELECT email FROM users WHERE id = $1")
        .bind(staff.to_db())
        .fetch_one(app.tdb.db.reader())
        .await
        .unwrap();
    app.send("GET", &format!("/api/v1/events/{}/checkin/stats", f.event), As::User(staff), None)
        .await
        .problem(404, "not_found");
    app.send(
        "POST",
        &format!("/api/v1/events/{}/staff", f.event),
        As::User(f.organizer),
        Some(json!({"email": email.0.to_uppercase()})),
    )
    .await
    .ok(201);
    app.send(
        "POST",
        &format!("/api/v1/events/{}/staff", f.event),
        As::User(f.organizer),
        Some(json!({"email": "nobody@example.com"})),
    )
    .await
    .problem(422, "unknown_user");
    let (_, token) = app.device(staff, &f.event, &[&f.north, &f.vip_gate]).await;
    app.send("POST", &format!("/api/v1/events/{}/zones", f.event), As::User(staff), Some(json!({"name": "x"})))
        .await
        .problem(404, "not_found");

    for i in 0..3 {
        let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
        let (k, c) = app.rotating(f.fan, &t).await;
        assert_eq!(app.scan(&token, &app.qr(&k, &c), &f.north, &format!("s{i}")).await["ok"], true);
        if i == 0 {
            app.scan(&token, &app.qr(&k, &c), &f.north, "dup").await;
            app.scan(&token, &app.qr(&k, &c), &f.vip_gate, "zone").await;
        }
    }
    app.clock.advance(Duration::minutes(1));
    let t = app.ticket(&f, &f.event, &f.vip, f.fan).await;
    let (k, c) = app.rotating(f.fan, &t).await;
    app.scan(&token, &app.qr(&k, &c), &f.vip_gate, "v").await;

    let s = app.send("GET", &format!("/api/v1/events/{}/checkin/stats", f.event), As::User(staff), None).await;
    let s = s.ok(200);
    assert_eq!(s["inside"], 4);
    assert_eq!(s["admitted_tickets"], 4);
    let gates = s["entries_per_minute_by_gate"].as_array().unwrap();
    assert_eq!(gates.len(), 2, "{s}");
    assert_eq!((gates[0]["name"].as_str(), gates[0]["entries"].as_i64()), (Some("North"), Some(3)));
    assert_eq!(gates[0]["minute"], "2030-06-01T19:00:00Z");
    assert_eq!((gates[1]["name"].as_str(), gates[1]["entries"].as_i64()), (Some("VIP door"), Some(1)));
    let zones = s["entries_per_minute_by_zone"].as_array().unwrap();
    assert_eq!((zones[0]["name"].as_str(), zones[0]["entries"].as_i64()), (Some("floor"), Some(3)));
    let rej: Vec<(String, i64)> = s["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_owned(), r["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(rej, vec![("already_used".to_owned(), 1), ("wrong_zone".to_owned(), 1)]);
    assert_eq!(s["conflicts"], 0);

    // The stream pushes the same numbers.
    let mut res = app
        .http
        .get(format!("{}/api/v1/events/{}/checkin/stream", app.base, f.event))
        .header("x-test-user", staff.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        text.push_str(&String::from_utf8_lossy(&res.chunk().await.unwrap().unwrap()));
    }
    assert!(text.starts_with("event: stats\n"), "{text}");
    assert!(text.contains("\"inside\":4"), "{text}");
}

/// Holder credentials: only the holder gets them, a phone-only type needs a device key first, the printable
/// type's PNG QR decodes with zbarimg to a credential that verifies with the published keys, and rotating keys
/// keep old credentials valid until the old key is retired.
#[tokio::test]
async fn holder_credentials_and_the_printed_qr() {
    let app = spawn().await;
    let f = app.fixture().await;
    let other = app.user("Eve").await;
    let vt = app.ticket(&f, &f.event, &f.vip, f.fan).await;
    app.send("GET", &format!("/api/v1/tickets/{vt}/credential"), As::User(f.fan), None)
        .await
        .problem(409, "device_key_required");
    app.send("GET", &format!("/api/v1/tickets/{vt}/credential"), As::User(other), None).await.problem(404, "not_found");
    app.send("GET", &format!("/api/v1/tickets/{vt}/qr.png"), As::User(f.fan), None).await.problem(409, "not_printable");
    app.send(
        "POST",
        &format!("/api/v1/tickets/{vt}/device-key"),
        As::User(f.fan),
        Some(json!({"public_key": "short"})),
    )
    .await
    .problem(422, "validation_failed");
    app.send(
        "POST",
        &format!("/api/v1/tickets/{vt}/device-key"),
        As::User(other),
        Some(json!({"public_key": B64.encode(SigningKey::from_bytes(&[7u8; 32]).verifying_key().as_bytes())})),
    )
    .await
    .problem(404, "not_found");
    app.send("GET", &format!("/api/v1/tickets/{vt}/credential"), As::Nobody, None)
        .await
        .problem(401, "unauthenticated");

    let t = app.ticket(&f, &f.event, &f.ga, f.fan).await;
    app.send("GET", &format!("/api/v1/tickets/{t}/qr.png"), As::User(other), None).await.problem(404, "not_found");
    let svg = app.send("GET", &format!("/api/v1/tickets/{t}/qr.svg"), As::User(f.fan), None).await;
    assert_eq!(svg.status, 200);
    assert!(String::from_utf8_lossy(&svg.bytes).contains("<svg"));
    let png = app.send("GET", &format!("/api/v1/tickets/{t}/qr.png"), As::User(f.fan), None).await;
    assert_eq!(png.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qr.png");
    std::fs::write(&file, &png.bytes).unwrap();
    let out = std::process::Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&file)
        .output()
        .expect("zbarimg (Debian zbar-tools) must be installed");
    assert!(out.status.success(), "zbarimg failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap().trim_end().to_owned();
    assert!(text.starts_with("EN1:"), "{text}");

    let keys = app.send("GET", &format!("/api/v1/events/{}/keys", f.event), As::Nobody, None).await;
    let keys = keys.ok(200)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    let event_bytes = uuid::Uuid::parse_str(&f.event).unwrap().into_bytes();
    let ring_of = |keys: &[Value]| {
        let mut ring = entrada_credential::KeyRing::new();
        for k in keys {
            let x: [u8; 32] = B64.decode(k["x"].as_str().unwrap()).unwrap().try_into().unwrap();
            ring.insert(
                event_bytes,
                &B64.decode(k["kid"].as_str().unwrap()).unwrap(),
                VerifyingKey::from_bytes(&x).unwrap(),
            );
        }
        ring
    };
    let ring = ring_of(&keys);
    let now = app.clock.now().unix_timestamp();
    let ctx = entrada_credential::VerifyContext { event_id: event_bytes, keys: &ring, now };
    let verified = entrada_credential::verify(&text, &ctx).expect("the decoded QR verifies");
    assert_eq!(uuid::Uuid::from_bytes(verified.claims.ticket_id).to_string(), t);
    assert_eq!(verified.claims.zones, vec!["floor".to_owned()]);
    assert_eq!(verified.claims.generation, 1);
    assert_eq!(verified.claims.holder_key, None);

    // Rotation: the new key signs, the old one still verifies until retired.
    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();
    app.send("POST", &format!("/api/v1/events/{}/keys/rotate", f.event), As::User(f.fan), None)
        .await
        .problem(404, "not_found");
    app.send("POST", &format!("/api/v1/events/{}/keys/rotate", f.event), As::User(f.organizer), None).await.ok(201);
    let (_, token) = app.device(f.organizer, &f.event, &[&f.north]).await;
    let (key, cred) = app.rotating(f.fan, &vt).await;
    let c = app.send("GET", &format!("/api/v1/tickets/{vt}/credential"), As::User(f.fan), None).await;
    assert_ne!(c.ok(200)["kid"].as_str(), Some(old_kid.as_str()));
    let v = app.scan(&token, &text, &f.north, "old-key").await;
    assert_eq!(v["ok"], true, "{v}");
    app.send(
        "POST",
        &format!("/api/v1/events/{}/keys/{}/retire", f.event, c.body["kid"].as_str().unwrap()),
        As::User(f.organizer),
        None,
    )
    .await
    .problem(409, "key_in_use");
    app.send("POST", &format!("/api/v1/events/{}/keys/{old_kid}/retire", f.event), As::User(f.organizer), None)
        .await
        .ok(204);
    let v = app.scan(&token, &text, &f.north, "retired").await;
    assert_eq!(v["reason"], "unknown_key", "{v}");
    assert_eq!(app.scan(&token, &app.qr(&key, &cred), &f.north, "new-key").await["ok"], true);
}

/// A first admission decided from a read, outside the writer, is written with its scan row only while the facts it
/// was decided on still hold: a ticket cancelled, refunded, re-issued or admitted meanwhile skips that part of the
/// script (the scan is then decided again inside a transaction) and the rest of the script is written.
#[tokio::test]
async fn a_stale_admission_plan_skips_only_its_own_scan() {
    use entrada_checkin::store::{NewScan, push_first_entry, push_scan};
    let app = spawn().await;
    let f = app.fixture().await;
    let db = &app.tdb.db;
    let tickets = [
        app.ticket(&f, &f.event, &f.ga, f.fan).await,
        app.ticket(&f, &f.event, &f.ga, f.fan).await,
        app.ticket(&f, &f.event, &f.ga, f.fan).await,
        app.ticket(&f, &f.event, &f.ga, f.fan).await,
        app.ticket(&f, &f.event, &f.ga, f.fan).await,
    ];
    let [reissued, cancelled, refunded, admitted, fine] = &tickets;
    app.exec("UPDATE tickets SET generation = 2 WHERE id = $1", &[reissued]).await;
    app.exec("UPDATE tickets SET status = 'cancelled' WHERE id = $1", &[cancelled]).await;
    app.exec(
        "UPDATE orders SET status = 'refunded' WHERE id = (SELECT order_id FROM tickets WHERE id = $1)",
        &[refunded],
    )
    .await;
    app.exec(
        "INSERT INTO admissions (ticket_id, event_id, entries, inside, first_used_at, first_gate_id, last_at, \
         last_gate_id) VALUES ($1, $2, 1, TRUE, 500, $3, 500, $3)",
        &[admitted, &f.event, &f.north],
    )
    .await;

    // One plan for the five, each decided on generation 1 with no admission.
    let nonces = ["n-reissued", "n-cancelled", "n-refunded", "n-admitted", "n-fine"];
    let mut script = db.script();
    let mut firsts = Vec::new();
    for (ticket, nonce) in tickets.iter().zip(nonces) {
        firsts.push(push_first_entry(&mut script, ticket, &f.event, &f.north, 1_000, 1));
        push_scan(
            &mut script,
            &NewScan {
                device_id: "device-1",
                nonce,
                event_id: &f.event,
                gate_id: &f.north,
                zone_id: None,
                ticket_id: Some(ticket),
                direction: "in",
                ok: true,
                reason: "ok",
                offline: false,
                scanned_at: 1_000,
                recorded_at: 1_000,
                verdict: "{}",
            },
        );
    }
    let changed = db.write(script).await.unwrap();
    let written: Vec<u64> = firsts.iter().map(|at| changed[*at]).collect();
    assert_eq!(written, vec![0, 0, 0, 0, 1], "only the ticket still as read is admitted");
    for (ticket, nonce) in tickets.iter().zip(nonces) {
        let recorded = app.count("SELECT COUNT(*) FROM scans WHERE nonce = $1", nonce).await;
        assert_eq!(recorded, i64::from(ticket == fine), "{nonce}");
    }
    let first_used = app.count("SELECT first_used_at FROM admissions WHERE ticket_id = $1", admitted).await;
    assert_eq!(first_used, 500, "the earlier admission stands");
    assert_eq!(app.count("SELECT COUNT(*) FROM admissions WHERE event_id = $1", &f.event).await, 2);
}
