//! Verification throughput on one core: rotating and static credentials one by one and in batches, beside the
//! raw Ed25519 ceiling (single and batch) measured in the same run.
//!
//! `cargo bench -p entrada-credential --bench verify` (figures are elements per second).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer};
use entrada_credential::{
    Claims, KeyRing, SigningKey, VerifyContext, encode_rotating, encode_static, issue, key_id, prove, time_step,
    verify, verify_batch,
};
use std::hint::black_box;

const NOW: i64 = 1_780_000_007;
const EVENT: [u8; 16] = [0x22; 16];
const BATCH: usize = 64;
const GATE: usize = 256;

fn claims(n: u8, holder: Option<[u8; 32]>) -> Claims {
    Claims {
        ticket_id: [n; 16],
        event_id: EVENT,
        ticket_type_id: [0x33; 16],
        zones: vec!["FLOOR".into()],
        generation: 1,
        not_before: NOW - 3_600,
        expires_at: NOW + 3_600,
        holder_key: holder,
        issued_at: NOW - 86_400,
    }
}

fn bench(c: &mut Criterion) {
    let issuer = SigningKey::from_bytes(&[1; 32]);
    let kid = key_id(&issuer.verifying_key());
    let mut ring = KeyRing::new();
    ring.insert(EVENT, &kid, issuer.verifying_key());
    let ctx = VerifyContext { event_id: EVENT, keys: &ring, now: NOW };
    let step = time_step(NOW);
    // Distinct tickets and devices, as at a real gate.
    let rotating: Vec<String> = (0..BATCH as u8)
        .map(|n| {
            let device = SigningKey::from_bytes(&[n.wrapping_add(100); 32]);
            let cred = issue(&claims(n, Some(device.verifying_key().to_bytes())), &issuer, &kid);
            encode_rotating(&cred, step, &prove(&cred, &device, step))
        })
        .collect();
    let statics: Vec<String> =
        (0..BATCH as u8).map(|n| encode_static(&issue(&claims(n, None), &issuer, &kid))).collect();
    assert!(rotating.iter().chain(&statics).all(|t| verify(t, &ctx).is_ok()));

    let mut group = c.benchmark_group("ceiling");
    let msg = [7u8; 120];
    let sig = issuer.sign(&msg);
    let key = issuer.verifying_key();
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_verify_strict", |b| b.iter(|| key.verify_strict(black_box(&msg), &sig).is_ok()));
    let keys: Vec<_> = (0..BATCH as u8).map(|n| SigningKey::from_bytes(&[n; 32])).collect();
    let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(&msg)).collect();
    let publics: Vec<_> = keys.iter().map(SigningKey::verifying_key).collect();
    let msgs: Vec<&[u8]> = vec![&msg[..]; BATCH];
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("ed25519_verify_batch_64", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&msgs), &sigs, &publics).is_ok())
    });
    group.finish();

    let mut group = c.benchmark_group("credential");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_rotating", |b| b.iter(|| verify(black_box(&rotating[0]), &ctx).is_ok()));
    group.bench_function("verify_static", |b| b.iter(|| verify(black_box(&statics[0]), &ctx).is_ok()));
    let rotating_refs: Vec<&str> = rotating.iter().map(String::as_str).collect();
    let static_refs: Vec<&str> = statics.iter().map(String::as_str).collect();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("verify_batch_64_rotating", |b| b.iter(|| verify_batch(black_box(&rotating_refs), &ctx)));
    group.bench_function("verify_batch_64_static", |b| b.iter(|| verify_batch(black_box(&static_refs), &ctx)));
    group.finish();

    // A gate's upload as the server sees it: 256 rotating QR texts, all good or 2 % (5) with a forged issuer
    // signature, verified in chunks of different sizes. Larger chunks amortise more curve arithmetic per signature,
    // but every chunk with a forgery has to be searched.
    for forgeries in [false, true] {
        let gate: Vec<String> = (0..GATE)
            .map(|n| {
                let device = SigningKey::from_bytes(&[(n % 251) as u8 + 1; 32]);
                let mut c = claims((n % 256) as u8, Some(device.verifying_key().to_bytes()));
                c.ticket_type_id[0] = (n / 256) as u8;
                let mut cred = issue(&c, &issuer, &kid);
                if forgeries && n % 50 == 7 {
                    let last = cred.len() - 1;
                    cred[last] ^= 1;
                }
                encode_rotating(&cred, step, &prove(&cred, &device, step))
            })
            .collect();
        let gate_refs: Vec<&str> = gate.iter().map(String::as_str).collect();
        let refused = verify_batch(&gate_refs, &ctx).iter().filter(|r| r.is_err()).count();
        let forged = if forgeries { (0..GATE).filter(|n| n % 50 == 7).count() } else { 0 };
        assert_eq!(refused, forged, "the forged ones, and only they, are refused");
        let mut group = c.benchmark_group(if forgeries { "gate_256_with_2pc_forged" } else { "gate_256_clean" });
        group.throughput(Throughput::Elements(GATE as u64));
        for chunk in [4, 8, 16, 32, 64, 256] {
            group.bench_function(format!("chunks_of_{chunk}"), |b| {
                b.iter(|| gate_refs.chunks(chunk).map(|c| verify_batch(black_box(c), &ctx).len()).sum::<usize>())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
