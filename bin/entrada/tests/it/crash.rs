//! Crash safety: the real binary is killed (SIGKILL) at random points of a
//! running sale and restarted; afterwards every paid order has exactly its
//! tickets, every captured payment ends in a paid order or a refund, and the
//! quota counter equals the facts.

use crate::helpers::*;
use entrada_gateway::App;
use entrada_primitives::{ManualClock, SharedClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(crate) fn server_env(db_url: &str, data_dir: &std::path::Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ENTRADA_DATABASE__URL", db_url.to_owned()),
        ("ENTRADA_DATA_DIR", data_dir.display().to_string()),
        ("ENTRADA_SERVER__BIND", format!("127.0.0.1:{port}")),
        ("ENTRADA_SERVER__PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("ENTRADA_IDENTITY__PASSWORD_COST", "fast".into()),
        ("ENTRADA_RATE_LIMIT__PER_IP_PER_SECOND", "0".into()),
        ("ENTRADA_RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "0".into()),
        ("ENTRADA_PAYMENTS__SANDBOX_WEBHOOK_SECRET", "whsec_crash_test".into()),
    ]
}

async fn start_server(db_url: &str, data_dir: &std::path::Path, port: u16) -> tokio::process::Child {
    spawn_entrada(&["serve"], &server_env(db_url, data_dir, port)).await
}

/// SIGKILL: no graceful shutdown, no flushing, like a power cut of the
/// process (the database itself survives).
pub(crate) async fn kill(mut child: tokio::process::Child) {
    let _ = child.kill().await;
}

pub(crate) async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Result<(u16, Value), reqwest::Error> {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await?;
    let s = res.status().as_u16();
    Ok((s, res.json().await.unwrap_or(Value::Null)))
}

/// A small deterministic generator, so a failing run can be repeated from
/// its printed seed.
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Kill the server four times at random points during purchases; after the
/// last restart the sale converges with nothing lost and nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_during_purchases_loses_nothing() {
    let seed = std::env::var("ENTRADA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    });
    println!("crash test seed: {seed} (ENTRADA_CRASH_SEED={seed} repeats it)");
    let mut rng = Lcg(seed);
    let (db_url, _db_dir) = entrada_storage::testing::fresh_url().await;
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut server = start_server(&db_url, data.path(), port).await;

    // Organizer, event, buyers.
    let reg = |email: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let (s, b) = post(
                &http,
                format!("{base}/api/v1/auth/register"),
                None,
                json!({"email": email, "password": "crash test password", "display_name": "x"}),
            )
            .await
            .unwrap();
            assert_eq!(s, 201, "{b}");
            b["access_token"].as_str().unwrap().to_owned()
        }
    };
    let org_token = reg("org@example.com".into()).await;
    let (_, org) =
        post(&http, format!("{base}/api/v1/organizations"), Some(&org_token), json!({"name": "C", "slug": "crash"}))
            .await
            .unwrap();
    let org = org["id"].as_str().unwrap().to_owned();
    let starts = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc = |t: time::OffsetDateTime| entrada_primitives::clock::rfc3339(t);
    let (s, ev) = post(
        &http,
        format!("{base}/api/v1/organizations/{org}/events"),
        Some(&org_token),
        json!({"name": "Crash", "venue": {"name": "V"}, "timezone": "UTC", "starts_at": rfc(starts),
               "ends_at": rfc(starts + time::Duration::hours(3)), "capacity": 150, "currency": "EUR"}),
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{ev}");
    let event = ev["id"].as_str().unwrap().to_owned();
    let (_, tt) = post(
        &http,
        format!("{base}/api/v1/events/{event}/ticket-types"),
        Some(&org_token),
        json!({"name": "G", "price": {"amount_minor": 1000, "currency": "EUR"}}),
    )
    .await
    .unwrap();
    let tt = tt["id"].as_str().unwrap().to_owned();
    post(&http, format!("{base}/api/v1/events/{event}/publish"), Some(&org_token), json!({})).await.unwrap();
    post(&http, format!("{base}/api/v1/events/{event}/open-sales"), Some(&org_token), json!({})).await.unwrap();
    let mut fans = Vec::new();
    for i in 0..8 {
        fans.push(reg(format!("fan{i}@example.com")).await);
    }

    let completed = Arc::new(AtomicU64::new(0));
    // Every finished request of any buyer counts as a step; the server is
    // killed at a random step while the other buyers are mid-request.
    let steps = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for token in fans.clone() {
            let (http, base, event, tt) = (http.clone(), base.clone(), event.clone(), tt.clone());
            let (stop, completed) = (stop.clone(), completed.clone());
            let (steps, progress) = (steps.clone(), progress.clone());
            let step = move || {
                steps.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            };
            tasks.push(tokio::spawn(async move {
                // Any transport error means the server died under us: stop.
                while !stop.load(Ordering::Relaxed) {
                    let Ok((s, hold)) = post(
                        &http,
                        format!("{base}/api/v1/holds"),
                        Some(&token),
                        json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": 1}]}),
                    )
                    .await
                    else {
                        return;
                    };
                    step();
                    if s != 201 {
                        continue;
                    }
                    let Ok((s, order)) =
                        post(&http, format!("{base}/api/v1/orders"), Some(&token), json!({"hold_id": hold["id"]}))
                            .await
                    else {
                        return;
                    };
                    step();
                    if s != 201 {
                        continue;
                    }
                    let Some(url) = order["checkout_url"].as_str() else { continue };
                    if post(&http, url.to_owned(), None, json!({"card": "4242424242424242"})).await.is_err() {
                        return;
                    }
                    completed.fetch_add(1, Ordering::Relaxed);
                    step();
                }
            }));
        }
        let target = steps.load(Ordering::SeqCst) + 10 + rng.next(60);
        while steps.load(Ordering::SeqCst) < target {
            progress.notified().await;
        }
        kill(server).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        println!("round {round}: killed after {} purchases", completed.load(Ordering::Relaxed));
        server = start_server(&db_url, data.path(), port).await;
    }
    kill(server).await;

    // The last restart, in-process, two hours later: every due webhook is
    // delivered, every consumer drained, every hold and unpaid order expired.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let mut config = test_config(data.path(), &db_url);
    config.server.public_url = base.clone();
    config.payments.sandbox_webhook_secret = entrada_primitives::Secret::new("whsec_crash_test".into());
    let clock = ManualClock::new(time::OffsetDateTime::now_utc() + time::Duration::hours(2));
    let shared: SharedClock = Arc::new(clock.clone());
    let app = App::build(config, shared).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    let handle = tokio::spawn(async move {
        served
            .serve(listener, false, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    app.settle().await.unwrap();
    app.sales.expire_due().await.unwrap();
    app.settle().await.unwrap();

    let db = app.db.reader();
    // Every captured payment ended in a paid order, or in a refund request
    // for an order that could no longer be honoured.
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM payments p JOIN orders o ON p.reference = 'order:' || o.id \
         WHERE p.status = 'succeeded' AND o.status <> 'paid' AND p.refund_requested_at IS NULL",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "captured payments without a paid order or a refund");
    // Exactly one valid ticket per position of every paid order, none for others.
    let (mismatched,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM orders o WHERE o.status = 'paid' AND \
         (SELECT COUNT(*) FROM order_positions p WHERE p.order_id = o.id) <> \
         (SELECT COUNT(*) FROM tickets t WHERE t.order_id = o.id AND t.status = 'valid')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "paid orders whose tickets do not match their positions");
    let (stray,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE t.status = 'valid' AND o.status <> 'paid'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(stray, 0, "valid tickets of unpaid orders");
    let (pending, active): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM orders WHERE status = 'pending'), (SELECT COUNT(*) FROM holds WHERE status = 'active')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!((pending, active), (0, 0), "everything unpaid expired");
    for q in app.sales.check_inventory(event.parse().unwrap()).await.unwrap() {
        assert!(q.consistent(), "{q:?}");
        assert_eq!(q.used, q.sold, "{q:?}");
    }
    let (paid,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM orders WHERE status = 'paid'").fetch_one(db).await.unwrap();
    assert!(paid > 0, "the sale made progress between crashes");
    println!("after 4 crashes: {paid} paid orders, {} purchases acknowledged", completed.load(Ordering::Relaxed));
    let _ = tx.send(());
    let _ = handle.await;
}
