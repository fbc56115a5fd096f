//! `entrada-bench scans`: fully verified, durably recorded check-in scans per
//! second, through the batch API (many gates uploading batches at once) and
//! one scan per request (saturated, then at half that rate for the latency),
//! with a realistic mix: mostly valid first scans, some duplicates (a
//! screenshot shown again at another gate), some forgeries (a flipped byte in
//! the issuer's signature) and some stale proofs (a capture 30 seconds old).
//!
//! Setup goes through the real API: an organizer, an event on sale, tickets
//! bought in orders of 100 through hold → order → sandbox payment, zones,
//! gates, enrolled scanner devices; every holder registers a phone key and
//! fetches each ticket's credential, and the bench computes the rotating
//! proof as the phone app would. It ends by checking that every valid ticket
//! was admitted exactly once.

use crate::h1::Pool;
use crate::{Backend, Server, ceiling_commits, ceiling_healthz, pct, post, start};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ScanArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// An admin URL of a PostgreSQL server (a fresh database is created on it).
    #[arg(long, env = "ENTRADA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Tickets first scanned through the batch API.
    #[arg(long, default_value_t = 40_000)]
    batch_tickets: usize,
    /// Tickets first scanned one per request, at full load.
    #[arg(long, default_value_t = 16_000)]
    single_tickets: usize,
    /// Tickets first scanned one per request at half the measured rate.
    #[arg(long, default_value_t = 10_000)]
    half_tickets: usize,
    /// Gates, one enrolled scanner device each, spread over two zones.
    #[arg(long, default_value_t = 16)]
    gates: usize,
    /// Scans per batch request.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Concurrent connections of the one-scan-per-request phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Holders (fan accounts, each with one phone key).
    #[arg(long, default_value_t = 32)]
    holders: usize,
    /// Per cent of tickets scanned a second time (already_used).
    #[arg(long, default_value_t = 5)]
    duplicates: usize,
    /// Per cent of extra scans with a flipped signature byte (bad_signature).
    #[arg(long, default_value_t = 2)]
    forged: usize,
    /// Per cent of extra scans with a 30-second-old proof (stale_proof).
    #[arg(long, default_value_t = 2)]
    stale: usize,
    /// Offered rate of the last phase; half the measured one-per-request
    /// throughput unless given.
    #[arg(long)]
    half_rate: Option<f64>,
    /// Seconds for each ceiling measurement.
    #[arg(long, default_value_t = 3)]
    ceiling_seconds: u64,
    /// Give up a load phase after this many seconds (the proofs of a phase
    /// are computed just before it and stay fresh for 30 seconds).
    #[arg(long, default_value_t = 25)]
    phase_deadline: u64,
}

/// A ticket as the holder's phone has it.
struct Ticket {
    credential: Vec<u8>,
    holder: usize,
}

/// One scan to send.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Valid,
    Duplicate,
    Forged,
    Stale,
}

struct Item {
    kind: Kind,
    ticket: usize,
    device: usize,
    /// The QR text, except for stale proofs (made when sent, 30 s old).
    payload: Option<String>,
}

struct Gate {
    id: String,
    token: String,
}

/// A tiny deterministic generator: the mix is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The phone's QR for `step`.
fn qr(t: &Ticket, keys: &[SigningKey], step: i64) -> String {
    let proof = entrada_credential::prove(&t.credential, &keys[t.holder], step);
    entrada_credential::encode_rotating(&t.credential, step, &proof)
}

/// The scans of one phase over `tickets` (indexes into all tickets), in
/// sending order, with every rotating proof made for the next time step (the
/// verifier accepts one step either side, so they stay valid for 30 seconds).
async fn plan(
    args: &ScanArgs,
    all: &Arc<Vec<Ticket>>,
    keys: &Arc<Vec<SigningKey>>,
    tickets: std::ops::Range<usize>,
    seed: u64,
) -> Vec<Item> {
    let mut rng = Rng(seed | 1);
    let n = tickets.len();
    let devices = args.gates;
    // (sort key, item): first scans in ticket order, duplicates about a
    // fifth of the phase later, forgeries and stale proofs anywhere.
    let mut keyed: Vec<(usize, Item)> = Vec::with_capacity(n * 11 / 10);
    for (i, t) in tickets.clone().enumerate() {
        keyed.push((i * 4, Item { kind: Kind::Valid, ticket: t, device: 0, payload: None }));
    }
    for _ in 0..n * args.duplicates / 100 {
        let i = rng.below(n);
        let at = (i + n / 5).min(n.saturating_sub(1)) * 4 + 1;
        keyed.push((at, Item { kind: Kind::Duplicate, ticket: tickets.start + i, device: 0, payload: None }));
    }
    for _ in 0..n * args.forged / 100 {
        let i = rng.below(n);
        keyed.push((
            rng.below(n) * 4 + 2,
            Item { kind: Kind::Forged, ticket: tickets.start + i, device: 0, payload: None },
        ));
    }
    for _ in 0..n * args.stale / 100 {
        let i = rng.below(n);
        keyed.push((
            rng.below(n) * 4 + 3,
            Item { kind: Kind::Stale, ticket: tickets.start + i, device: 0, payload: None },
        ));
    }
    keyed.sort_by_key(|(k, _)| *k);
    let mut items: Vec<Item> = keyed.into_iter().map(|(_, i)| i).collect();
    for (i, item) in items.iter_mut().enumerate() {
        item.device = i % devices;
    }
    // The phones' proofs, on every core.
    let step = entrada_credential::time_step(unix_now()) + 1;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunk = items.len().div_ceil(threads).max(1);
    let mut parts = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(chunk.min(items.len()));
        parts.push(std::mem::replace(&mut items, rest));
    }
    let mut handles = Vec::new();
    for mut part in parts {
        let (all, keys) = (all.clone(), keys.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            for item in &mut part {
                let t = &all[item.ticket];
                item.payload = match item.kind {
                    Kind::Valid | Kind::Duplicate => Some(qr(t, &keys, step)),
                    Kind::Forged => {
                        // The last byte of a COSE_Sign1 is the issuer's signature.
                        let mut forged = t.credential.clone();
                        if let Some(b) = forged.last_mut() {
                            *b ^= 0x01;
                        }
                        let proof = entrada_credential::prove(&forged, &keys[t.holder], step);
                        Some(entrada_credential::encode_rotating(&forged, step, &proof))
                    }
                    Kind::Stale => None,
                };
            }
            part
        }));
    }
    for h in handles {
        items.extend(h.await.unwrap());
    }
    items
}

fn scan_body(item: &Item, all: &[Ticket], keys: &[SigningKey], gates: &[Gate], nonce: u64) -> Value {
    let payload = match &item.payload {
        Some(p) => p.clone(),
        // A capture made 30 seconds ago: two steps behind.
        None => qr(&all[item.ticket], keys, entrada_credential::time_step(unix_now()) - 2),
    };
    json!({"payload": payload, "gate_id": gates[item.device].id, "nonce": format!("n{nonce}")})
}

/// What one phase measured.
#[derive(Default)]
struct Outcome {
    scans: usize,
    seconds: f64,
    /// Per request, milliseconds, sorted.
    latencies: Vec<f64>,
    reasons: BTreeMap<String, u64>,
    expected: BTreeMap<String, u64>,
    errors: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.scans as f64 / self.seconds
    }
    fn p(&self, q: f64) -> f64 {
        pct(&self.latencies, q)
    }
}

fn expected(items: &[Item]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in items {
        let reason = match i.kind {
            Kind::Valid => "ok",
            Kind::Duplicate => "already_used",
            Kind::Forged => "bad_signature",
            Kind::Stale => "stale_proof",
        };
        *m.entry(reason.to_owned()).or_insert(0) += 1;
    }
    m
}

fn tally(reasons: &Mutex<BTreeMap<String, u64>>, verdicts: &[Value]) {
    let mut r = reasons.lock().unwrap();
    for v in verdicts {
        *r.entry(v["reason"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
    }
}

static NONCE: AtomicU64 = AtomicU64::new(1);

/// Every gate uploads its scans in batches, all gates at once.
async fn batch_phase(
    args: &ScanArgs,
    pool: &Arc<Pool>,
    gates: &Arc<Vec<Gate>>,
    all: &Arc<Vec<Ticket>>,
    keys: &Arc<Vec<SigningKey>>,
    items: Vec<Item>,
) -> Outcome {
    let expected = expected(&items);
    let scans = items.len();
    let mut per_device: Vec<Vec<Item>> = (0..args.gates).map(|_| Vec::new()).collect();
    for i in items {
        per_device[i.device].push(i);
    }
    // Request bodies are serialized before the clock starts (the gates
    // hold them already); stale proofs are made now, 30 s old.
    let mut bodies: Vec<Vec<Vec<u8>>> = Vec::new();
    for items in &per_device {
        let mut mine = Vec::new();
        for chunk in items.chunks(args.batch_size) {
            let scans: Vec<Value> =
                chunk.iter().map(|i| scan_body(i, all, keys, gates, NONCE.fetch_add(1, Ordering::Relaxed))).collect();
            mine.push(serde_json::to_vec(&json!({"scans": scans})).unwrap());
        }
        bodies.push(mine);
    }
    let reasons = Arc::new(Mutex::new(BTreeMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.phase_deadline);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (d, mine) in bodies.into_iter().enumerate() {
        let (pool, token) = (pool.clone(), format!("Device {}", gates[d].token));
        let (reasons, latencies, errors) = (reasons.clone(), latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            for body in mine {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let res = pool.post("/api/v1/scanner/scans", Some(&token), &body).await.unwrap();
                let ok = (200..300).contains(&res.status);
                let v: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
                local.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    eprintln!("batch refused: {v}");
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tally(&reasons, v["verdicts"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
            latencies.lock().unwrap().extend(local);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    let reasons = reasons.lock().unwrap().clone();
    Outcome { scans, seconds, latencies, reasons, expected, errors: errors.load(Ordering::Relaxed) }
}

/// One scan per request: `clients` connections as fast as they are
/// answered (`rate` = None), or an open-loop arrival rate, with latency then
/// counted from each scan's scheduled time so a slow answer cannot hide the
/// queue behind it.
#[allow(clippy::too_many_arguments)]
async fn single_phase(
    args: &ScanArgs,
    pool: &Arc<Pool>,
    gates: &Arc<Vec<Gate>>,
    all: &Arc<Vec<Ticket>>,
    keys: &Arc<Vec<SigningKey>>,
    items: Vec<Item>,
    rate: Option<f64>,
) -> Outcome {
    let expected = expected(&items);
    let scans = items.len();
    let bodies: Arc<Vec<(usize, Vec<u8>)>> = Arc::new(
        items
            .iter()
            .map(|i| {
                let body = scan_body(i, all, keys, gates, NONCE.fetch_add(1, Ordering::Relaxed));
                (i.device, serde_json::to_vec(&body).unwrap())
            })
            .collect(),
    );
    let reasons = Arc::new(Mutex::new(BTreeMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(scans)));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.phase_deadline);
    let tokens: Arc<Vec<String>> = Arc::new(gates.iter().map(|g| format!("Device {}", g.token)).collect());
    let send = {
        let (pool, tokens, bodies) = (pool.clone(), tokens.clone(), bodies.clone());
        let (reasons, errors) = (reasons.clone(), errors.clone());
        move |k: usize| {
            let (pool, tokens, bodies) = (pool.clone(), tokens.clone(), bodies.clone());
            let (reasons, errors) = (reasons.clone(), errors.clone());
            async move {
                let (device, body) = &bodies[k];
                let res = pool.post("/api/v1/scanner/scan", Some(&tokens[*device]), body).await.unwrap();
                let ok = (200..300).contains(&res.status);
                let v: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
                if ok {
                    tally(&reasons, std::slice::from_ref(&v));
                } else {
                    eprintln!("scan refused: {v}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let t0 = Instant::now();
    match rate {
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..args.clients {
                let (next, send, latencies) = (next.clone(), send.clone(), latencies.clone());
                tasks.push(tokio::spawn(async move {
                    let mut local = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= scans || Instant::now() > deadline {
                            break;
                        }
                        let t = Instant::now();
                        send(k).await;
                        local.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    latencies.lock().unwrap().extend(local);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        Some(rate) => {
            let mut tasks = Vec::with_capacity(scans);
            for k in 0..scans {
                let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let (send, latencies) = (send.clone(), latencies.clone());
                tasks.push(tokio::spawn(async move {
                    send(k).await;
                    let ms = due.elapsed().as_secs_f64() * 1000.0;
                    latencies.lock().unwrap().push(ms);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    let reasons = reasons.lock().unwrap().clone();
    Outcome { scans, seconds, latencies, reasons, expected, errors: errors.load(Ordering::Relaxed) }
}

/// Ceiling: strict Ed25519 verifications of a fixed message per second on
/// one thread, and the same through batch verification (64 per batch).
fn ceiling_ed25519(seconds: u64) -> (f64, f64) {
    std::thread::spawn(move || {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key();
        let msg = [42u8; 68];
        let sig = key.sign(&msg);
        let end = Instant::now() + Duration::from_secs_f64(seconds as f64 / 2.0);
        let t0 = Instant::now();
        let mut n = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                assert!(public.verify_strict(&msg, &sig).is_ok());
            }
            n += 64;
        }
        let single = n as f64 / t0.elapsed().as_secs_f64();
        let msgs: Vec<&[u8]> = vec![&msg[..]; 64];
        let sigs = vec![sig; 64];
        let keys = vec![public; 64];
        let end = Instant::now() + Duration::from_secs_f64(seconds as f64 / 2.0);
        let t0 = Instant::now();
        let mut n = 0u64;
        while Instant::now() < end {
            assert!(ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok());
            n += 64;
        }
        (single, n as f64 / t0.elapsed().as_secs_f64())
    })
    .join()
    .unwrap()
}

/// Ceiling: complete verifications of this phase's QR texts (envelope,
/// COSE, claims, issuer signature and holder proof, two Ed25519 signatures
/// each) per second on one thread, in chunks of 16 as the server does.
async fn ceiling_credentials(http: &reqwest::Client, base: &str, event: &str, items: &[Item], seconds: u64) -> f64 {
    let (s, k) = request(http, reqwest::Method::GET, &format!("{base}/api/v1/events/{event}/keys"), "", None).await;
    assert_eq!(s, 200, "{k}");
    let event_bytes = uuid::Uuid::parse_str(event).unwrap().into_bytes();
    let mut ring = entrada_credential::KeyRing::new();
    for key in k["keys"].as_array().unwrap() {
        let kid = B64.decode(key["kid"].as_str().unwrap()).unwrap();
        let x: [u8; 32] = B64.decode(key["x"].as_str().unwrap()).unwrap().try_into().unwrap();
        ring.insert(event_bytes, &kid, ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap());
    }
    let texts: Vec<String> = items.iter().filter_map(|i| i.payload.clone()).take(4096).collect();
    std::thread::spawn(move || {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vctx = entrada_credential::VerifyContext { event_id: event_bytes, keys: &ring, now: unix_now() };
        let end = Instant::now() + Duration::from_secs(seconds);
        let t0 = Instant::now();
        let mut n = 0usize;
        while Instant::now() < end {
            for chunk in texts.chunks(entrada_checkin::VERIFY_CHUNK) {
                n += entrada_credential::verify_batch(chunk, &vctx).len();
            }
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, url);
    if !token.is_empty() {
        r = r.bearer_auth(token);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until the mint pipeline has confirmed `total` tokens; how many it did.
async fn minted_before_doors(db: &entrada_storage::Db, total: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM chain_tokens WHERE state = 'confirmed'")
            .fetch_one(db.reader())
            .await
            .unwrap();
        let n = usize::try_from(n).unwrap_or(0);
        if n >= total || Instant::now() > deadline {
            return n;
        }
    }
}

pub async fn scans(args: ScanArgs) {
    let server = start(args.backend, args.postgres_url.as_deref()).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let base = server.base.clone();
    let total = args.batch_tickets + args.single_tickets + args.half_tickets;
    println!(
        "# check-in scans benchmark — backend {:?}, {total} tickets, {} gates, batches of {}, {} clients one-by-one",
        args.backend, args.gates, args.batch_size, args.clients
    );
    let setup = Instant::now();
    let (event, all, keys, gates) = setup_event(&args, &server, &http, total).await;
    eprintln!("setup: {total} tickets with credentials in {:.1} s", setup.elapsed().as_secs_f64());
    // Doors open days after the sale: every ticket's token is minted by then, so the phases
    // measure check-in with the chain worker doing what it does at the gates (attended marks).
    let minted = minted_before_doors(&server.app.db, total).await;
    eprintln!("tokens minted before the doors open: {minted} of {total}");

    // Ceilings, measured on the idle server before the load.
    let (verify_one, verify_batch) = ceiling_ed25519(args.ceiling_seconds);
    let rps = ceiling_healthz(&base, args.clients, args.ceiling_seconds).await;
    let commits = ceiling_commits(&server.app.db, 16, args.ceiling_seconds).await;

    let b = args.batch_tickets;
    let s = b + args.single_tickets;
    let items = plan(&args, &all, &keys, 0..b, 0x5eed_0001).await;
    let full_verify = ceiling_credentials(&http, &base, &event, &items, args.ceiling_seconds).await;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let pool = Arc::new(Pool::new(addr, args.clients.max(args.gates)).await.unwrap());
    eprintln!("batch phase: starting");
    let batch = batch_phase(&args, &pool, &gates, &all, &keys, items).await;
    eprintln!("batch phase: {:.0} scans/s", batch.rate());
    let items = plan(&args, &all, &keys, b..s, 0x5eed_0002).await;
    eprintln!("single phase: starting");
    let single = single_phase(&args, &pool, &gates, &all, &keys, items, None).await;
    eprintln!("single phase: {:.0} scans/s", single.rate());
    let half_rate = args.half_rate.unwrap_or(single.rate() / 2.0);
    let items = plan(&args, &all, &keys, s..total, 0x5eed_0003).await;
    eprintln!("half-load phase: starting");
    let half = single_phase(&args, &pool, &gates, &all, &keys, items, Some(half_rate)).await;
    eprintln!("half-load phase: {:.0} scans/s offered, {:.0} achieved", half_rate, half.rate());

    // Every valid ticket admitted exactly once, every scan recorded.
    let db = &server.app.db;
    let count = |sql: &'static str| {
        let event = event.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).bind(event).fetch_one(db.reader()).await.unwrap();
            n
        }
    };
    let admitted = count("SELECT COUNT(*) FROM admissions WHERE event_id = $1").await;
    let twice = count("SELECT COUNT(*) FROM admissions WHERE event_id = $1 AND entries <> 1").await;
    let ok_rows = count("SELECT COUNT(*) FROM scans WHERE event_id = $1 AND ok = TRUE").await;
    let scan_rows = count("SELECT COUNT(*) FROM scans WHERE event_id = $1").await;

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| ceiling: Ed25519 strict verify, one core | {verify_one:.0} /s |");
    println!("| ceiling: Ed25519 batch verify (64 per batch), one core | {verify_batch:.0} /s |");
    println!(
        "| ceiling: full credential verification (QR text to verdict, verify_batch by {}), one core | {full_verify:.0} /s |",
        entrada_checkin::VERIFY_CHUNK
    );
    println!("| ceiling: trivial endpoint (GET /healthz) | {rps:.0} req/s |");
    println!("| ceiling: raw single-row commits | {commits:.0} commits/s |");
    println!("| batch API: scans/s ({} gates, {} per batch) | {:.0} |", args.gates, args.batch_size, batch.rate());
    println!(
        "| batch API: request latency p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms |",
        batch.p(0.5),
        batch.p(0.95),
        batch.p(0.99)
    );
    println!("| one per request: scans/s ({} connections) | {:.0} |", args.clients, single.rate());
    println!(
        "| one per request: latency p50 / p95 / p99 | {:.2} / {:.2} / {:.2} ms |",
        single.p(0.5),
        single.p(0.95),
        single.p(0.99)
    );
    println!("| half load: offered / achieved scans/s | {:.0} / {:.0} |", half_rate, half.rate());
    println!(
        "| half load: latency p50 / p95 / p99 | {:.2} / {:.2} / {:.2} ms |",
        half.p(0.5),
        half.p(0.95),
        half.p(0.99)
    );
    println!(
        "| valid tickets admitted / admission rows / with more than one entry | {} / {admitted} / {twice} |",
        total
    );
    println!("| scan rows / of which ok | {scan_rows} / {ok_rows} |");
    println!();
    println!("| verdict | batch API | one per request | half load | expected (all) |");
    println!("|---|---|---|---|---|");
    let mut names: Vec<&String> =
        batch.reasons.keys().chain(single.reasons.keys()).chain(half.reasons.keys()).collect();
    names.extend(batch.expected.keys());
    names.sort();
    names.dedup();
    let mut all_ok = true;
    for n in names {
        let get = |o: &Outcome| o.reasons.get(n).copied().unwrap_or(0);
        let want = |o: &Outcome| o.expected.get(n).copied().unwrap_or(0);
        let (g, w) = (get(&batch) + get(&single) + get(&half), want(&batch) + want(&single) + want(&half));
        all_ok &= g == w;
        println!("| {n} | {} | {} | {} | {w} |", get(&batch), get(&single), get(&half));
    }
    let errors = batch.errors + single.errors + half.errors;
    println!("| (refused requests) | {} | {} | {} | 0 |", batch.errors, single.errors, half.errors);
    let sent = batch.scans + single.scans + half.scans;
    server.stop().await;
    assert_eq!(errors, 0, "requests refused");
    assert_eq!(admitted as usize, total, "every valid ticket admitted");
    assert_eq!(twice, 0, "no ticket admitted twice");
    assert_eq!(ok_rows as usize, total, "one ok scan per ticket");
    assert_eq!(scan_rows as usize, sent, "every scan recorded once");
    assert!(all_ok, "the verdict mix differs from the one sent");
}

/// Organizer, event, zones, gates, devices, holders, tickets bought in
/// orders of 100, phone keys registered and credentials fetched.
async fn setup_event(
    args: &ScanArgs,
    server: &Server,
    http: &reqwest::Client,
    total: usize,
) -> (String, Arc<Vec<Ticket>>, Arc<Vec<SigningKey>>, Arc<Vec<Gate>>) {
    let base = server.base.clone();
    let (_, org_user) = post(
        http,
        &format!("{base}/api/v1/auth/register"),
        None,
        json!({"email": "bench-org@example.com", "password": "benchmark password", "display_name": "Bench"}),
    )
    .await;
    let org_token = org_user["access_token"].as_str().unwrap().to_owned();
    let (_, org) = post(
        http,
        &format!("{base}/api/v1/organizations"),
        Some(&org_token),
        json!({"name": "Bench", "slug": "bench"}),
    )
    .await;
    let org = org["id"].as_str().unwrap().to_owned();
    // Doors are open (no opening time) until the event ends in 30 days.
    let start_at = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (s, ev) = post(
        http,
        &format!("{base}/api/v1/organizations/{org}/events"),
        Some(&org_token),
        json!({
            "name": "Bench Stadium", "description": "",
            "venue": {"name": "Bench Stadium", "address": "", "city": "Madrid", "country": "ES"},
            "timezone": "Europe/Madrid",
            "starts_at": rfc(start_at), "ends_at": rfc(start_at + time::Duration::hours(4)),
            "capacity": total, "currency": "EUR"
        }),
    )
    .await;
    assert_eq!(s, 201, "{ev}");
    let event = ev["id"].as_str().unwrap().to_owned();
    let (s, tt) = post(
        http,
        &format!("{base}/api/v1/events/{event}/ticket-types"),
        Some(&org_token),
        json!({"name": "General", "price": {"amount_minor": 4500, "currency": "EUR"}, "min_per_order": 1,
               "max_per_order": 100, "zones": ["NORTH", "SOUTH"], "printable": false, "quota_ids": []}),
    )
    .await;
    assert_eq!(s, 201, "{tt}");
    let tt = tt["id"].as_str().unwrap().to_owned();
    post(http, &format!("{base}/api/v1/events/{event}/publish"), Some(&org_token), json!({})).await;
    post(http, &format!("{base}/api/v1/events/{event}/open-sales"), Some(&org_token), json!({})).await;

    // Zones, gates and one enrolled device per gate.
    let mut zones = Vec::new();
    for name in ["NORTH", "SOUTH"] {
        let (s, z) =
            post(http, &format!("{base}/api/v1/events/{event}/zones"), Some(&org_token), json!({"name": name})).await;
        assert_eq!(s, 201, "{z}");
        zones.push(z["id"].as_str().unwrap().to_owned());
    }
    let mut gates = Vec::new();
    for g in 0..args.gates {
        let (s, gate) = post(
            http,
            &format!("{base}/api/v1/events/{event}/gates"),
            Some(&org_token),
            json!({"name": format!("Gate {g}"), "zone_id": zones[g % 2]}),
        )
        .await;
        assert_eq!(s, 201, "{gate}");
        let id = gate["id"].as_str().unwrap().to_owned();
        let (s, d) = post(
            http,
            &format!("{base}/api/v1/events/{event}/devices"),
            Some(&org_token),
            json!({"name": format!("Scanner {g}"), "gate_ids": [id]}),
        )
        .await;
        assert_eq!(s, 201, "{d}");
        let (s, e) =
            post(http, &format!("{base}/api/v1/scanner/enrol"), None, json!({"code": d["enrolment_code"]})).await;
        assert_eq!(s, 201, "{e}");
        gates.push(Gate { id, token: e["device_token"].as_str().unwrap().to_owned() });
    }

    // Holders buy the tickets, 100 per order, through the real sale.
    let mut holders = Vec::new();
    for i in 0..args.holders {
        let (s, u) = post(
            http,
            &format!("{base}/api/v1/auth/register"),
            None,
            json!({"email": format!("fan{i}@example.com"), "password": "benchmark password", "display_name": format!("Fan {i}")}),
        )
        .await;
        assert_eq!(s, 201, "{u}");
        holders.push((u["user"]["id"].as_str().unwrap().to_owned(), u["access_token"].as_str().unwrap().to_owned()));
    }
    let orders: Vec<usize> = (0..total.div_ceil(100)).map(|o| (total - o * 100).min(100)).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let orders = Arc::new(orders);
    let mut tasks = Vec::new();
    for (_, token) in holders.clone() {
        let (http, base, event, tt, next, orders) =
            (http.clone(), base.clone(), event.clone(), tt.clone(), next.clone(), orders.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let o = next.fetch_add(1, Ordering::Relaxed);
                let Some(&quantity) = orders.get(o) else { break };
                let (s, hold) = post(
                    &http,
                    &format!("{base}/api/v1/holds"),
                    Some(&token),
                    json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": quantity}]}),
                )
                .await;
                assert_eq!(s, 201, "{hold}");
                let (s, order) =
                    post(&http, &format!("{base}/api/v1/orders"), Some(&token), json!({"hold_id": hold["id"]})).await;
                assert_eq!(s, 201, "{order}");
                let (s, paid) =
                    post(&http, order["checkout_url"].as_str().unwrap(), None, json!({"card": "4242424242424242"}))
                        .await;
                assert_eq!(s, 200, "{paid}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let db = &server.app.db;
    let deadline = Instant::now() + Duration::from_secs(300);
    let rows: Vec<(String, String)> = loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, holder_id FROM tickets WHERE event_id = $1 AND status = 'valid' ORDER BY serial",
        )
        .bind(&event)
        .fetch_all(db.reader())
        .await
        .unwrap();
        if rows.len() >= total || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows.len(), total, "every purchase issued its tickets");

    // Each holder's phone registers its key on each ticket and fetches the credential.
    let keys: Vec<SigningKey> =
        (0..args.holders).map(|_| SigningKey::from_bytes(&entrada_primitives::token::random_bytes::<32>())).collect();
    let holder_of: std::collections::HashMap<String, usize> =
        holders.iter().enumerate().map(|(i, (id, _))| (id.clone(), i)).collect();
    let work: Arc<Vec<(String, usize)>> = Arc::new(rows.into_iter().map(|(t, h)| (t, holder_of[&h])).collect());
    let tokens: Arc<Vec<String>> = Arc::new(holders.into_iter().map(|(_, t)| t).collect());
    let publics: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| B64.encode(k.verifying_key().as_bytes())).collect());
    let credentials: Arc<Mutex<Vec<Option<Vec<u8>>>>> = Arc::new(Mutex::new(vec![None; total]));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, base, work, tokens, publics, credentials, next) = (
            http.clone(),
            base.clone(),
            work.clone(),
            tokens.clone(),
            publics.clone(),
            credentials.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((ticket, holder)) = work.get(k) else { break };
                let token = &tokens[*holder];
                let (s, v) = request(
                    &http,
                    reqwest::Method::POST,
                    &format!("{base}/api/v1/tickets/{ticket}/device-key"),
                    token,
                    Some(json!({"public_key": publics[*holder]})),
                )
                .await;
                assert_eq!(s, 204, "{v}");
                let (s, c) = request(
                    &http,
                    reqwest::Method::GET,
                    &format!("{base}/api/v1/tickets/{ticket}/credential"),
                    token,
                    None,
                )
                .await;
                assert_eq!(s, 200, "{c}");
                assert_eq!(c["kind"], "rotating");
                credentials.lock().unwrap()[k] = Some(B64.decode(c["credential"].as_str().unwrap()).unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let credentials = std::mem::take(&mut *credentials.lock().unwrap());
    let all: Vec<Ticket> = credentials
        .into_iter()
        .zip(work.iter())
        .map(|(c, (_, holder))| Ticket { credential: c.unwrap(), holder: *holder })
        .collect();
    (event, Arc::new(all), Arc::new(keys), Arc::new(gates))
}
