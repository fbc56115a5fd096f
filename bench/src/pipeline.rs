//! `entrada-bench pipeline`: tickets minted per second end to end on the embedded chain —
//! buyers purchase through the HTTP API (hold → order → sandbox payment → tickets issued) while
//! the app's own mint worker batches the new tickets onto the embedded chain; the clock runs
//! from the first purchase to the last token confirmed.

use crate::{Backend, post, start};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct PipelineArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    #[arg(long, env = "ENTRADA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Tickets to sell and mint.
    #[arg(long, default_value_t = 5_000)]
    tickets: u64,
    /// Tickets per order.
    #[arg(long, default_value_t = 10)]
    per_order: u64,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline: u64,
}

pub async fn pipeline(a: PipelineArgs) {
    let server = start(a.backend, a.postgres_url.as_deref()).await;
    let base = server.base.clone();
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.clients * 2).build().unwrap();
    let cfg = &server.app.config.chain;
    println!(
        "# mint pipeline benchmark — backend {:?}, {} tickets, {} per order, {} buyers, batches of {} or {} ms",
        a.backend, a.tickets, a.per_order, a.clients, cfg.batch_size, cfg.batch_window_ms
    );

    let reg = |email: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"email": email, "password": "benchmark password", "display_name": "Bench"});
            let (s, b) = post(&http, &format!("{base}/api/v1/auth/register"), None, body).await;
            assert_eq!(s, 201, "{b}");
            b["access_token"].as_str().unwrap().to_owned()
        }
    };
    let org_token = reg("bench-org@example.com".into()).await;
    let body = json!({"name": "Bench", "slug": "bench"});
    let (_, org) = post(&http, &format!("{base}/api/v1/organizations"), Some(&org_token), body).await;
    let org = org["id"].as_str().unwrap().to_owned();
    let start_at = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = json!({"name": "Mint Night", "venue": {"name": "Bench Arena"}, "timezone": "UTC",
        "starts_at": rfc(start_at), "ends_at": rfc(start_at + time::Duration::hours(4)),
        "capacity": a.tickets, "currency": "EUR"});
    let (s, ev) = post(&http, &format!("{base}/api/v1/organizations/{org}/events"), Some(&org_token), body).await;
    assert_eq!(s, 201, "{ev}");
    let event = ev["id"].as_str().unwrap().to_owned();
    let body =
        json!({"name": "General", "price": {"amount_minor": 4500, "currency": "EUR"}, "max_per_order": a.per_order});
    let (s, tt) = post(&http, &format!("{base}/api/v1/events/{event}/ticket-types"), Some(&org_token), body).await;
    assert_eq!(s, 201, "{tt}");
    let tt = tt["id"].as_str().unwrap().to_owned();
    for step in ["publish", "open-sales"] {
        post(&http, &format!("{base}/api/v1/events/{event}/{step}"), Some(&org_token), json!({})).await;
    }
    let mut buyers = Vec::new();
    for i in 0..a.clients {
        buyers.push(reg(format!("bench-buyer{i}@example.com")).await);
    }

    let orders = a.tickets / a.per_order;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.deadline);
    let mut tasks = Vec::new();
    for token in buyers {
        let (http, base, event, tt, next) = (http.clone(), base.clone(), event.clone(), tt.clone(), next.clone());
        let qty = a.per_order;
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < orders && Instant::now() < deadline {
                let hold = json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": qty}]});
                let (s, hold) = post(&http, &format!("{base}/api/v1/holds"), Some(&token), hold).await;
                assert_eq!(s, 201, "{hold}");
                let (s, order) =
                    post(&http, &format!("{base}/api/v1/orders"), Some(&token), json!({"hold_id": hold["id"]})).await;
                assert_eq!(s, 201, "{order}");
                let url = order["checkout_url"].as_str().unwrap();
                let (s, paid) = post(&http, url, None, json!({"card": "4242424242424242"})).await;
                assert_eq!(s, 200, "{paid}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let paid_at = started.elapsed();
    let want = i64::try_from(orders * a.per_order).unwrap();
    let db = server.app.db.reader();
    let mut confirmed = 0;
    // A benchmark may poll: it measures time, it asserts nothing about it.
    while Instant::now() < deadline {
        (confirmed,) = sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM chain_tokens WHERE state = 'confirmed'")
            .fetch_one(db)
            .await
            .unwrap();
        if confirmed >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done_at = started.elapsed();
    let (txs, gas): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(gas_used), 0) FROM chain_transactions WHERE kind = 'mint_batch' \
         AND state = 'confirmed'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(confirmed, want, "every ticket minted before the deadline");
    let secs = done_at.as_secs_f64();
    println!(
        "\n| tickets | mint transactions | purchases done (s) | last token confirmed (s) | tickets minted/s end to end | drain after the last purchase (s) | gas/ticket |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {want} | {txs} | {:.2} | {secs:.2} | {:.0} | {:.2} | {:.0} |",
        paid_at.as_secs_f64(),
        want as f64 / secs,
        (done_at - paid_at).as_secs_f64(),
        gas as f64 / want as f64
    );
    server.stop().await;
}
