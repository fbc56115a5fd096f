//! Property tests: arbitrary input never panics, and no mutation of a valid QR payload verifies.

use entrada_credential::{QR_PREFIX, decode, verify, verify_batch};
use proptest::prelude::*;

use crate::fixtures::*;

/// The raw bytes under a QR text's base45.
fn raw(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let body = text.strip_prefix(QR_PREFIX).expect("prefixed").as_bytes();
    let digit = |c: u8| b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".iter().position(|&a| a == c).expect("base45");
    for chunk in body.chunks(3) {
        let v = chunk.iter().rev().fold(0usize, |acc, &c| acc * 45 + digit(c));
        if chunk.len() == 3 {
            out.extend([(v >> 8) as u8, v as u8]);
        } else {
            out.push(v as u8);
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
    let mut out = String::from(QR_PREFIX);
    for chunk in bytes.chunks(2) {
        let (mut v, n) = match *chunk {
            [a, b] => (usize::from(a) * 256 + usize::from(b), 3),
            [a] => (usize::from(a), 2),
            _ => unreachable!(),
        };
        for _ in 0..n {
            out.push(char::from(alphabet[v % 45]));
            v /= 45;
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
    Truncate { len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let n = bytes.len();
    match *m {
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Set { at, value } => bytes[at % n] = value,
        Mutation::Insert { at, value } => bytes.insert(at % (n + 1), value),
        Mutation::Remove { at } => {
            bytes.remove(at % n);
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
    }
    bytes
}

/// Whether a mutated envelope still says the same thing: same credential bytes and same proof. Such a mutation
/// (only possible where CBOR allows two encodings of the envelope) may verify; any other must not.
fn same_meaning(original: &str, mutated: &str) -> bool {
    decode(mutated).ok() == decode(original).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary strings never panic the verifier and never verify.
    #[test]
    fn arbitrary_text_is_refused_without_panic(s in ".*") {
        let ring = ring();
        prop_assert!(verify(&s, &ctx(&ring, NOW)).is_err());
    }

    /// Arbitrary bytes behind the right prefix never panic the verifier and never verify.
    #[test]
    fn arbitrary_payload_is_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let ring = ring();
        prop_assert!(verify(&text(&bytes), &ctx(&ring, NOW)).is_err());
    }

    /// Any one or two mutations of a valid rotating or static payload's bytes are refused, without panic,
    /// and batch verification agrees.
    #[test]
    fn mutated_payloads_never_verify(
        rotating in any::<bool>(),
        first in mutation(),
        second in proptest::option::of(mutation()),
    ) {
        let ring = ring();
        let ctx = ctx(&ring, NOW);
        let valid = if rotating {
            shown_at(&credential(), NOW)
        } else {
            entrada_credential::encode_static(&entrada_credential::issue(&static_claims(), &issuer(), &kid()))
        };
        prop_assert!(verify(&valid, &ctx).is_ok());
        let mut bytes = apply(raw(&valid), &first);
        if let Some(second) = &second
            && !bytes.is_empty()
        {
            bytes = apply(bytes, second);
        }
        let mutated = text(&bytes);
        let single = verify(&mutated, &ctx);
        if !same_meaning(&valid, &mutated) {
            prop_assert!(single.is_err(), "a mutated payload verified: {:?}", single);
        }
        let batch = verify_batch(&[&valid, &mutated, &valid], &ctx);
        prop_assert_eq!(&batch[1], &single);
        prop_assert!(batch[0].is_ok() && batch[2].is_ok());
    }

    /// Mutating the QR text itself (not just the bytes under it) is refused too.
    #[test]
    fn mutated_text_never_verifies(at in any::<usize>(), c in any::<char>()) {
        let ring = ring();
        let valid = shown_at(&credential(), NOW);
        let mut chars: Vec<char> = valid.chars().collect();
        let at = at % chars.len();
        prop_assume!(chars[at] != c);
        chars[at] = c;
        let mutated: String = chars.into_iter().collect();
        let result = verify(&mutated, &ctx(&ring, NOW));
        if !same_meaning(&valid, &mutated) {
            prop_assert!(result.is_err());
        }
    }

    /// Any number of forgeries anywhere in a batch (a bad issuer signature, a bad proof, or both) are found, and
    /// every item gets exactly its one-by-one answer: the search that skips verifying a half known to fail never
    /// accepts a forgery nor refuses a good item.
    #[test]
    fn forgeries_anywhere_in_a_batch_are_found(kinds in proptest::collection::vec(0u8..4, 1..48)) {
        let ring = ring();
        let ctx = ctx(&ring, NOW);
        let good = credential();
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        let step = entrada_credential::time_step(NOW);
        let bad_proof = |cred: &[u8]| {
            let mut proof = entrada_credential::prove(cred, &holder(), step);
            proof[5] ^= 0x40;
            entrada_credential::encode_rotating(cred, step, &proof)
        };
        let texts: Vec<String> = kinds
            .iter()
            .map(|k| match k {
                0 => shown_at(&good, NOW),
                1 => shown_at(&forged, NOW),
                2 => bad_proof(&good),
                _ => bad_proof(&forged),
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = verify_batch(&refs, &ctx);
        for ((text, kind), result) in refs.iter().zip(&kinds).zip(&batch) {
            prop_assert_eq!(result, &verify(text, &ctx));
            prop_assert_eq!(result.is_ok(), *kind == 0);
        }
    }
}
