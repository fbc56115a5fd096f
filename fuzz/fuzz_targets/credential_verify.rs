//! Fuzzes the QR payload parser and verifier: arbitrary text, and arbitrary bytes behind the QR prefix, must be
//! refused or verified without a panic, single and batch alike.
#![no_main]

use entrada_credential::{KeyRing, QR_PREFIX, SigningKey, VerifyContext, key_id, verify, verify_batch};
use libfuzzer_sys::fuzz_target;

const BASE45: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

fn base45(bytes: &[u8]) -> String {
    let mut out = String::from(QR_PREFIX);
    for chunk in bytes.chunks(2) {
        let (mut v, n) = match *chunk {
            [a, b] => (usize::from(a) * 256 + usize::from(b), 3),
            [a] => (usize::from(a), 2),
            _ => continue,
        };
        for _ in 0..n {
            out.push(char::from(BASE45[v % 45]));
            v /= 45;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let issuer = SigningKey::from_bytes(&[0x01; 32]);
    let mut ring = KeyRing::new();
    ring.insert([0x22; 16], &key_id(&issuer.verifying_key()), issuer.verifying_key());
    let ctx = VerifyContext { event_id: [0x22; 16], keys: &ring, now: 1_780_000_007 };
    // The same bytes twice: as raw text, and as the payload under a well-formed prefix and base45, which reaches
    // the CBOR and COSE parsers far more often than random text does.
    let text = String::from_utf8_lossy(data);
    let encoded = base45(data);
    let a = verify(&text, &ctx);
    let b = verify(&encoded, &ctx);
    let batch = verify_batch(&[&text, &encoded], &ctx);
    assert_eq!(batch, vec![a, b]);
});
