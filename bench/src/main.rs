//! `entrada-bench purchases`: completed purchases per second for one event
//! (hold → order → sandbox payment → signed webhook → tickets issued), with
//! the machine's ceilings measured in the same run: a trivial HTTP endpoint's
//! requests per second and raw database commits per second.
//!
//! Everything runs on 127.0.0.1, bounded by count and by a deadline, and
//! stops by itself. Run it in release mode:
//!
//! ```text
//! cargo run --release -p entrada-bench -- purchases --backend sqlite
//! cargo run --release -p entrada-bench -- purchases --backend postgres --postgres-url postgres://…/postgres
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{Parser, ValueEnum};
use entrada_gateway::{App, Config};
use entrada_primitives::{Secret, SharedClock, SystemClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Completed purchases per second for one event.
    Purchases(PurchaseArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(clap::Args)]
struct PurchaseArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// An admin URL of a PostgreSQL server (a fresh database is created on it).
    #[arg(long, env = "ENTRADA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Tickets on sale (the event's capacity) = purchases to complete.
    #[arg(long, default_value_t = 6000)]
    tickets: u64,
    /// Extra attempts beyond the capacity, which must all be refused.
    #[arg(long, default_value_t = 500)]
    extra: u64,
    /// Concurrent buyers (connections).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds for each ceiling measurement.
    #[arg(long, default_value_t = 3)]
    ceiling_seconds: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Purchases(a) => purchases(a).await,
    }
}

struct Server {
    app: App,
    base: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(args: &PurchaseArgs) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = match args.backend {
        Backend::Sqlite => format!("sqlite://{}/entrada.db", dir.path().display()),
        Backend::Postgres => {
            let admin = args.postgres_url.clone().expect("--postgres-url or ENTRADA_BENCH_POSTGRES_URL");
            sqlx::any::install_default_drivers();
            let name = format!("entrada_bench_{}", uuid::Uuid::now_v7().simple());
            let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.unwrap();
            pool.close().await;
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut c = Config::default();
    c.data_dir = dir.path().to_path_buf();
    c.database.url = Secret::new(url);
    c.database.max_connections = 32;
    c.server.public_url = base.clone();
    // Fast hashing only so that registering the buyers does not dominate
    // setup; logins are not part of the measured path.
    c.identity.password_cost = "fast".into();
    c.rate_limit.per_ip_per_second = 0;
    c.rate_limit.auth_per_ip_per_minute = 0;
    c.payments.sandbox_webhook_secret = Secret::new("whsec_bench".into());
    let clock: SharedClock = Arc::new(SystemClock);
    let app = App::build(c, clock).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    let handle = tokio::spawn(async move {
        served
            .serve(listener, true, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Server { app, base, _dir: dir, stop: Some(tx), handle }
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await.unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn purchases(args: PurchaseArgs) {
    let server = start(&args).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().unwrap();
    let base = server.base.clone();
    println!("# purchases benchmark — backend {:?}, {} tickets, {} clients", args.backend, args.tickets, args.clients);

    // Ceiling 1: a trivial endpoint, same server, same client.
    let rps = {
        let n = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs(args.ceiling_seconds);
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let (http, url, n) = (http.clone(), format!("{base}/healthz"), n.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    http.get(&url).send().await.unwrap().bytes().await.unwrap();
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        n.load(Ordering::Relaxed) as f64 / args.ceiling_seconds as f64
    };

    // Ceiling 2: raw single-row commits on the same database and pool.
    let commits = {
        let db = &server.app.db;
        sqlx::query("CREATE TABLE bench_commits (id BIGINT PRIMARY KEY, at BIGINT NOT NULL)")
            .execute(db.writer())
            .await
            .unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs(args.ceiling_seconds);
        let mut tasks = Vec::new();
        for w in 0..args.clients.min(16) as i64 {
            let (db, n) = (db.clone(), n.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0i64;
                while Instant::now() < end {
                    let mut tx = db.begin().await.unwrap();
                    sqlx::query("INSERT INTO bench_commits (id, at) VALUES ($1, $2)")
                        .bind(w * 1_000_000_000 + i)
                        .bind(i)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    i += 1;
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        n.load(Ordering::Relaxed) as f64 / args.ceiling_seconds as f64
    };

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
    let attempts = args.tickets + args.extra;
    let next = Arc::new(AtomicU64::new(0));
    let sold = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens {
        let (http, base, event, tt) = (http.clone(), base.clone(), event.clone(), tt.clone());
        let (next, sold, refused, latencies) = (next.clone(), sold.clone(), refused.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < attempts {
                let t = Instant::now();
                let (s, hold) = post(
                    &http,
                    &format!("{base}/api/v1/holds"),
                    Some(&token),
                    json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": 1}]}),
                )
                .await;
                if s == 409 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                assert_eq!(s, 201, "{hold}");
                let (s, order) =
                    post(&http, &format!("{base}/api/v1/orders"), Some(&token), json!({"hold_id": hold["id"]})).await;
                assert_eq!(s, 201, "{order}");
                let (s, paid) =
                    post(&http, order["checkout_url"].as_str().unwrap(), None, json!({"card": "4242424242424242"}))
                        .await;
                assert_eq!(s, 200, "{paid}");
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
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0.0);
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

    let Server { stop, handle, .. } = server;
    if let Some(s) = stop {
        let _ = s.send(());
    }
    let _ = handle.await;
}
