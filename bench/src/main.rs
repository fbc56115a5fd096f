//! Load generators that measure Entrada against the ceilings of the same
//! machine, measured in the same run:
//!
//! - `purchases`: completed purchases per second for one event;
//! - `pipeline`: tickets minted per second end to end on the embedded chain;
//! - `scans`: fully verified, durably recorded check-in scans per second,
//!   through the batch API and one scan per request;
//! - `mints`: tickets minted per second by batch size, on the embedded chain
//!   and on anvil over JSON-RPC.
//!
//! Everything runs on 127.0.0.1, bounded by count and by a deadline, and
//! stops by itself. Run it in release mode:
//!
//! ```text
//! cargo run --release -p entrada-bench -- purchases --backend sqlite
//! cargo run --release -p entrada-bench -- scans --backend postgres --postgres-url postgres://…/postgres
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod h1;
mod mints;
mod pipeline;
mod purchases;
mod scans;

/// The same allocator as the `entrada` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, ValueEnum};
use entrada_gateway::{App, Config};
use entrada_primitives::{Secret, SharedClock, SystemClock};
use entrada_storage::Db;
use serde_json::Value;
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
    /// Check-in scans per second: batch API and one scan per request.
    Scans(scans::ScanArgs),
    /// Tickets minted per second end to end: purchases through the API, minted by the app's worker.
    Pipeline(pipeline::PipelineArgs),
    /// Tickets minted per second by batch size, embedded and on anvil.
    Mints(mints::MintArgs),
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
        Cmd::Purchases(a) => purchases::purchases(a).await,
        Cmd::Scans(a) => scans::scans(a).await,
        Cmd::Pipeline(a) => pipeline::pipeline(a).await,
        Cmd::Mints(a) => mints::mints(a).await,
    }
}

struct Server {
    app: App,
    base: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn stop(self) {
        let Server { stop, handle, .. } = self;
        if let Some(s) = stop {
            let _ = s.send(());
        }
        let _ = handle.await;
    }
}

/// The real app, in-process, with its background workers, on 127.0.0.1:0,
/// over a fresh SQLite file or a fresh PostgreSQL database.
async fn start(backend: Backend, postgres_url: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/entrada.db", dir.path().display()),
        Backend::Postgres => {
            let admin = postgres_url.expect("--postgres-url or ENTRADA_BENCH_POSTGRES_URL").to_owned();
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
    let mut c = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
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

/// The `p` quantile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// Ceiling: a trivial endpoint's requests per second, same server, one
/// kept-alive connection per client on the generators' lean client.
async fn ceiling_healthz(base: &str, clients: usize, seconds: u64) -> f64 {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(h1::Conn::open(addr).await.unwrap());
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for mut conn in conns {
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// Ceiling: raw single-row commits per second on the same database and pool.
async fn ceiling_commits(db: &Db, writers: usize, seconds: u64) -> f64 {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_commits (id BIGINT PRIMARY KEY, at BIGINT NOT NULL)")
        .execute(&mut *db.writer().await.unwrap())
        .await
        .unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers as i64 {
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
    n.load(Ordering::Relaxed) as f64 / seconds as f64
}
