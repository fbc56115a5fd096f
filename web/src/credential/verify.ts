/**
 * The EN1 credential verifier, a port of crates/credential (docs/credential.md) for the scanner app's offline
 * mode. It checks in the same order and answers the same codes; the shared vectors in
 * crates/credential/vectors/vectors.json prove it. Pure apart from WebCrypto (SHA-256, Ed25519).
 */
import * as base45 from './base45';
import { type Cbor, CborError, concat, decode as cborDecode, encodeBytes } from './cbor';
import { hex, proofMessage, sha256, timeStep } from './proof';

export const QR_PREFIX = 'EN1:';

export type Rejection =
  | 'malformed'
  | 'wrong_algorithm'
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_event'
  | 'not_yet_valid'
  | 'expired'
  | 'missing_proof'
  | 'bad_proof'
  | 'stale_proof'
  | 'clock_skew';

/** The signed claims, ids as 32 lower-case hex digits (UUID bytes), keys as hex. */
export interface Claims {
  ticket_id: string;
  event_id: string;
  ticket_type_id: string;
  zones: string[];
  generation: number;
  not_before: number;
  expires_at: number;
  issued_at: number;
  holder_key: string | null;
}

export interface Verified {
  claims: Claims;
  kid: string;
  credential_hash: string;
  proof_step: number | null;
}

export type Outcome = { ok: true; verified: Verified } | { ok: false; reason: Rejection };

/** A trusted issuing key: its 8-byte kid (hex), the one event it signs for, its 32-byte public key. */
export interface RingKey {
  kid: string;
  event_id: string;
  public_key: Uint8Array;
}

export interface VerifyContext {
  /** The gate's event id, 32 hex digits. */
  event_id: string;
  keys: RingKey[];
  /** The verifier's time, unix seconds. */
  now: number;
}

class Reject extends Error {
  constructor(readonly reason: Rejection) {
    super(reason);
  }
}
const fail = (reason: Rejection): never => {
  throw new Reject(reason);
};

/**
 * The encodings of the eight small-order points of edwards25519, canonical and not: a key or R equal to one of
 * these is refused, as ed25519-dalek's `verify_strict` and `is_weak` do (WebCrypto does not check this).
 */
const SMALL_ORDER = new Set([
  '0100000000000000000000000000000000000000000000000000000000000000',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  '0000000000000000000000000000000000000000000000000000000000000080',
  '0000000000000000000000000000000000000000000000000000000000000000',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85',
  '0100000000000000000000000000000000000000000000000000000000000080',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
]);

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

function i64(v: Cbor | undefined): bigint {
  if (!v || v.t !== 'int' || v.v < I64_MIN || v.v > I64_MAX) return fail('malformed');
  return v.v;
}
function bytes(v: Cbor | undefined, len?: number): Uint8Array {
  if (!v || v.t !== 'bytes' || (len !== undefined && v.v.length !== len)) return fail('malformed');
  return v.v;
}

/** An integer-keyed map without duplicate keys. */
function intMap(v: Cbor | undefined): Map<bigint, Cbor> {
  if (!v || v.t !== 'map') return fail('malformed');
  const out = new Map<bigint, Cbor>();
  for (const [k, val] of v.v) {
    const key = i64(k);
    if (out.has(key)) fail('malformed');
    out.set(key, val);
  }
  return out;
}
function take(m: Map<bigint, Cbor>, k: bigint): Cbor | undefined {
  const v = m.get(k);
  m.delete(k);
  return v;
}

interface Presentation {
  credential: Uint8Array;
  proof: { step: bigint; sig: Uint8Array } | null;
}

/** `EN1:` + base45 of `[credential]` or `[credential, step, proof(64)]`; anything else is malformed. */
export function decodePresentation(text: string): Presentation {
  if (!text.startsWith(QR_PREFIX)) fail('malformed');
  const raw = base45.decode(text.slice(QR_PREFIX.length)) ?? fail('malformed');
  let v: Cbor;
  try {
    v = cborDecode(raw);
  } catch (e) {
    if (e instanceof CborError) return fail('malformed');
    throw e;
  }
  if (v.t !== 'array' || (v.v.length !== 1 && v.v.length !== 3)) return fail('malformed');
  const credential = bytes(v.v[0]);
  if (v.v.length === 1) return { credential, proof: null };
  return { credential, proof: { step: i64(v.v[1]), sig: bytes(v.v[2], 64) } };
}

interface Envelope {
  kid: Uint8Array;
  protectedBytes: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
}

const EDDSA = -8n;

/** COSE_Sign1 (tag 18), canonical bytes, nothing but alg and kid in the protected header, attached payload. */
function coseSign1(credential: Uint8Array): { env: Envelope; alg: Cbor | undefined } {
  let v: Cbor;
  try {
    v = cborDecode(credential);
  } catch (e) {
    if (e instanceof CborError) return fail('malformed');
    throw e;
  }
  if (v.t !== 'tag' || v.tag !== 18n || v.v.t !== 'array' || v.v.v.length !== 4) return fail('malformed');
  const [p, u, pl, s] = v.v.v as [Cbor, Cbor, Cbor, Cbor];
  const protectedBytes = bytes(p);
  if (u.t !== 'map') return fail('malformed');
  const detached = pl.t === 'simple' && pl.v === 22;
  if (!detached && pl.t !== 'bytes') fail('malformed');
  const signature = bytes(s);
  // The protected header as coset reads it: int or text labels, no duplicates, typed known labels.
  let alg: Cbor | undefined;
  let kid: Uint8Array = new Uint8Array();
  let extra = false;
  if (protectedBytes.length > 0) {
    let h: Cbor;
    try {
      h = cborDecode(protectedBytes);
    } catch (e) {
      if (e instanceof CborError) return fail('malformed');
      throw e;
    }
    if (h.t !== 'map') return fail('malformed');
    const seen = new Set<string>();
    for (const [k, val] of h.v) {
      if (k.t !== 'int' && k.t !== 'text') fail('malformed');
      const label = k.t === 'int' ? `i${k.v}` : `t${k.v}`;
      if (seen.has(label)) fail('malformed');
      seen.add(label);
      if (k.t === 'int' && k.v === 1n) {
        if (val.t !== 'int' && val.t !== 'text') fail('malformed');
        alg = val;
      } else if (k.t === 'int' && k.v === 4n) {
        kid = bytes(val);
      } else if (k.t === 'int' && (k.v === 5n || k.v === 6n)) {
        // iv / partial iv: coset keeps them as byte strings; only a non-empty one counts as present.
        if (bytes(val).length > 0) extra = true;
      } else {
        extra = true;
      }
    }
  }
  const payload = detached ? null : (pl as { t: 'bytes'; v: Uint8Array }).v;
  // Re-encoding what was decoded must give the same bytes: one signed credential, one hash.
  const canonical = concat(
    Uint8Array.of(0xd2, 0x84),
    encodeBytes(protectedBytes),
    Uint8Array.of(0xa0),
    payload ? encodeBytes(payload) : Uint8Array.of(0xf6),
    encodeBytes(signature),
  );
  if (!equal(canonical, credential) || u.v.length > 0 || extra || payload === null) fail('malformed');
  return { env: { kid, protectedBytes, payload: payload!, signature }, alg };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function ed25519Verify(publicKey: Uint8Array, sig: Uint8Array, msg: Uint8Array): Promise<boolean> {
  if (sig.length !== 64 || SMALL_ORDER.has(hex(sig.subarray(0, 32))) || SMALL_ORDER.has(hex(publicKey))) {
    return false;
  }
  try {
    const key = await crypto.subtle.importKey('raw', publicKey as BufferSource, { name: 'Ed25519' }, false, [
      'verify',
    ]);
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, sig as BufferSource, msg as BufferSource);
  } catch {
    return false;
  }
}

const SIGNATURE1 = new TextEncoder().encode('Signature1');

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(0x84, 0x6a), SIGNATURE1, encodeBytes(protectedBytes), Uint8Array.of(0x40), encodeBytes(payload));
}

function readClaims(payload: Uint8Array): Claims {
  let v: Cbor;
  try {
    v = cborDecode(payload);
  } catch (e) {
    if (e instanceof CborError) return fail('malformed');
    throw e;
  }
  const m = intMap(v);
  let holder_key: string | null = null;
  const cnf = take(m, 8n);
  if (cnf) {
    const c = intMap(cnf);
    const key = intMap(take(c, 1n));
    const ok = c.size === 0 && i64(take(key, 1n)) === 1n && i64(take(key, -1n)) === 6n;
    const x = bytes(take(key, -2n), 32);
    if (!ok || key.size !== 0) fail('malformed');
    holder_key = hex(x);
  }
  const zonesV = take(m, -65539n);
  if (!zonesV || zonesV.t !== 'array') return fail('malformed');
  const zones = zonesV.v.map((z) => (z.t === 'text' ? z.v : fail('malformed')));
  const generation = i64(take(m, -65540n));
  if (generation < 0n || generation > 0xffffffffn) fail('malformed');
  const claims: Claims = {
    ticket_id: hex(bytes(take(m, 7n), 16)),
    event_id: hex(bytes(take(m, -65537n), 16)),
    ticket_type_id: hex(bytes(take(m, -65538n), 16)),
    zones,
    generation: Number(generation),
    not_before: Number(i64(take(m, 5n))),
    expires_at: Number(i64(take(m, 4n))),
    holder_key,
    issued_at: Number(i64(take(m, 6n))),
  };
  if (m.size !== 0) fail('malformed');
  return claims;
}

/** The time-step policy, `d = proof step − verifier step`: |d| ≤ 1 ok, −3..−2 stale, anything else skew. */
export function stepPolicy(proofStep: bigint, now: number): Rejection | null {
  const d = proofStep - BigInt(timeStep(now));
  if (d >= -1n && d <= 1n) return null;
  if (d >= -3n && d <= -2n) return 'stale_proof';
  return 'clock_skew';
}

async function run(qr: string, ctx: VerifyContext): Promise<Verified> {
  const presentation = decodePresentation(qr);
  const { env, alg } = coseSign1(presentation.credential);
  if (!alg || alg.t !== 'int' || alg.v !== EDDSA) fail('wrong_algorithm');
  const kid = hex(env.kid);
  const key = ctx.keys.find((k) => k.kid === kid) ?? fail('unknown_key');
  if (!(await ed25519Verify(key.public_key, env.signature, sigStructure(env.protectedBytes, env.payload)))) {
    fail('bad_signature');
  }
  // Only now is the payload trusted enough to read.
  const claims = readClaims(env.payload);
  if (claims.event_id !== ctx.event_id || key.event_id !== ctx.event_id) fail('wrong_event');
  if (ctx.now < claims.not_before) fail('not_yet_valid');
  if (ctx.now >= claims.expires_at) fail('expired');
  const hash = await sha256(presentation.credential);
  let proofStep: number | null = null;
  if (!claims.holder_key) {
    if (presentation.proof) fail('malformed');
  } else {
    const proof = presentation.proof ?? fail('missing_proof');
    const holder = unhex(claims.holder_key);
    if (!(await ed25519Verify(holder, proof.sig, proofMessage(hash, proof.step)))) fail('bad_proof');
    const skew = stepPolicy(proof.step, ctx.now);
    if (skew) fail(skew);
    proofStep = Number(proof.step);
  }
  return { claims, kid, credential_hash: hex(hash), proof_step: proofStep };
}

/** Verifies one QR text; the first failing check gives the reason, in the order of docs/credential.md. */
export async function verify(qr: string, ctx: VerifyContext): Promise<Outcome> {
  try {
    return { ok: true, verified: await run(qr, ctx) };
  } catch (e) {
    if (e instanceof Reject) return { ok: false, reason: e.reason };
    throw e;
  }
}

export function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
