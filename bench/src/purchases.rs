//! `entrada-bench purchases`: completed purchases per second for one event
//! (hold → order → sandbox payment → signed webhook → tickets issued).

use crate::h1::Conn;
use crate::{PurchaseArgs, ceiling_commits, ceiling_healthz, pct, post, start};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub async fn purchases(args: PurchaseArgs) {
    let server = start(args.backend, args.postgres_url.as_deref()).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().unwrap();
    let base = server.base.clone();
    println!("# purchases benchmark — backend {:?}, {} tickets, {} clients", args.backend, args.tickets, args.clients);

    let rps = ceiling_healthz(&base, args.clients, args.ceiling_seconds).await;
    let commits = ceiling_commits(&server.app.db, args.clients.min(16), args.ceiling_seconds).await;

    // Setup: an organizer, an on-sale event of `tickets` seats, the buyers.
    let (_, org_user) = post(
        &http,
        &format!("{base}/api/v1/auth/register"),
        None,
        json!({"email": "bench-org@example.com", "password": "benchmark password", "display_name": "Bench"}),
    )
    .await;
    let org_token = org_user["access_token"].as_str().unwrap().to_owned();
    let (_, org) = post(
        &http,
        &format!("{base}/api/v1/organizations"),
        Some(&org_token),
        json!({"name": "Bench", "slug": "bench"}),
    )
    .await;
    let org = org["id"].as_str().unwrap().to_owned();
    let start_at = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (s, ev) = post(
        &http,
        &format!("{base}/api/v1/organizations/{org}/events"),
        Some(&org_token),
        json!({
            "name": "Bench Night", "description": "",
            "venue": {"name": "Bench Arena", "address": "", "city": "Madrid", "country": "ES"},
            "timezone": "Europe/Madrid",
            "starts_at": rfc(start_at), "ends_at": rfc(start_at + time::Duration::hours(4)),
            "capacity": args.tickets, "currency": "EUR"
        }),
    )
    .await;
    assert_eq!(s, 201, "{ev}");
    let event = ev["id"].as_str().unwrap().to_owned();
    let (s, tt) = post(
        &http,
        &format!("{base}/api/v1/events/{event}/ticket-types"),
        Some(&org_token),
        json!({"name": "General", "price": {"amount_minor": 4500, "currency": "EUR"}, "min_per_order": 1,
               "max_per_order": 10, "zones": [], "printable": false, "quota_ids": []}),
    )
    .await;
    assert_eq!(s, 201, "{tt}");
    let tt = tt["id"].as_str().unwrap().to_owned();
    post(&http, &format!("{base}/api/v1/events/{event}/publish"), Some(&org_token), json!({})).await;
    post(&http, &format!("{base}/api/v1/events/{event}/open-sales"), Some(&org_token), json!({})).await;

    let mut tokens = Vec::new();
    for i in 0..args.clients {
        let (s, u) = post(
            &http,
            &format!("{base}/api/v1/auth/register"),
            None,
            json!({"email": format!("buyer{i}@example.com"), "password": "benchmark password", "display_name": "Buyer"}),
        )
        .await;
        assert_eq!(s, 201, "{u}");
        tokens.push(u["access_token"].as_str().unwrap().to_owned());
    }

    // The sale.
    eprintln!("sale: starting");
    let attempts = args.tickets + args.extra;
    let next = Arc::new(AtomicU64::new(0));
    let sold = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut conns = Vec::with_capacity(tokens.len());
    for _ in &tokens {
        conns.push(Conn::open(addr).await.unwrap());
    }
    let hold_body =
        serde_json::to_vec(&json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": 1}]})).unwrap();
    let hold_body: Arc<[u8]> = hold_body.into();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (token, mut conn) in tokens.into_iter().zip(conns) {
        let (base, hold_body) = (base.clone(), hold_body.clone());
        let (next, sold, refused, latencies) = (next.clone(), sold.clone(), refused.clone(), latencies.clone());
        let bearer = format!("Bearer {token}");
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < attempts {
                let t = Instant::now();
                let a = conn.post("/api/v1/holds", Some(&bearer), &hold_body).await.unwrap();
                if a.status == 409 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
                let hold: Created = serde_json::from_slice(&a.body).unwrap();
                let body = format!(r#"{{"hold_id":"{}"}}"#, hold.id);
                let a = conn.post("/api/v1/orders", Some(&bearer), body.as_bytes()).await.unwrap();
                assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
                let order: Placed = serde_json::from_slice(&a.body).unwrap();
                let checkout = order.checkout_url.strip_prefix(&base).expect("a checkout on this server");
                let a = conn.post(checkout, None, br#"{"card":"4242424242424242"}"#).await.unwrap();
                assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
                sold.fetch_add(1, Ordering::Relaxed);
                local.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            latencies.lock().unwrap().extend(local);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = t0.elapsed();

    // Completed means tickets issued: wait (bounded) for the webhook and
    // outbox pipeline to turn every payment into tickets.
    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    let mut issued = 0i64;
    while Instant::now() < deadline {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tickets").fetch_one(server.app.db.reader()).await.unwrap();
        issued = n;
        if n as u64 >= sold.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let completed = t0.elapsed();
    let (used, size): (i64, i64) =
        sqlx::query_as("SELECT used, size FROM quotas WHERE event_id = $1 AND is_capacity = TRUE")
            .bind(&event)
            .fetch_one(server.app.db.reader())
            .await
            .unwrap();

    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| pct(&l, p);
    let sold = sold.load(Ordering::Relaxed);
    let oversold = issued - size;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| ceiling: trivial endpoint (GET /healthz) | {rps:.0} req/s |");
    println!("| ceiling: raw single-row commits | {commits:.0} commits/s |");
    println!("| purchases accepted (hold + order + pay) | {:.0} /s |", sold as f64 / accepted.as_secs_f64());
    println!("| purchases completed (tickets issued) | {:.0} /s |", issued as f64 / completed.as_secs_f64());
    println!("| purchase latency p50 / p99 (3 requests) | {:.1} / {:.1} ms |", pct(0.5), pct(0.99));
    println!("| sold / refused / attempts | {sold} / {} / {attempts} |", refused.load(Ordering::Relaxed));
    println!("| tickets issued / capacity / quota used | {issued} / {size} / {used} |");
    println!("| oversold | {} |", oversold.max(0));
    assert!(oversold <= 0, "OVERSOLD by {oversold}");
    assert_eq!(issued as u64, sold, "every accepted purchase has its ticket");

    server.stop().await;
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Placed {
    checkout_url: String,
}
