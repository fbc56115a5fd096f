// The browser verifier answers every shared vector exactly as the Rust verifier (crates/credential) does.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as base45 from './base45';
import { decode as cborDecode, encodeInt } from './cbor';
import { hex, proofMessage, rotatingQr, sha256, timeStep } from './proof';
import { decodePresentation, unhex, verify } from './verify';

interface Vector {
  name: string;
  description: string;
  qr: string;
  now: number;
  event_id: string;
  keys: { event_id: string; kid: string; public_key: string }[];
  expect: string;
  claims?: Record<string, unknown>;
  kid?: string;
  proof_step?: number | null;
  credential_hash?: string;
}
interface Vectors {
  holder_seed: string;
  other_holder_seed: string;
  step_seconds: number;
  vectors: Vector[];
}

const file = fileURLToPath(new URL('../../../crates/credential/vectors/vectors.json', import.meta.url));
const vectors = JSON.parse(readFileSync(file, 'utf8')) as Vectors;

const ctx = (v: Vector) => ({
  event_id: v.event_id,
  now: v.now,
  keys: v.keys.map((k) => ({ kid: k.kid, event_id: k.event_id, public_key: unhex(k.public_key) })),
});

async function holderKey(seed: string): Promise<CryptoKey> {
  const pkcs8 = unhex('302e020100300506032b657004220420' + seed);
  return crypto.subtle.importKey('pkcs8', pkcs8 as BufferSource, { name: 'Ed25519' }, false, ['sign']);
}

describe('shared credential vectors', () => {
  it('covers every rejection code', () => {
    const codes = new Set(vectors.vectors.map((v) => v.expect));
    expect(codes.size).toBe(12);
    expect(vectors.step_seconds).toBe(15);
  });
  for (const v of vectors.vectors) {
    it(`${v.name}: ${v.description}`, async () => {
      const out = await verify(v.qr, ctx(v));
      if (v.expect === 'ok') {
        expect(out).toEqual({
          ok: true,
          verified: {
            claims: { ...v.claims, holder_key: v.claims?.holder_key ?? null },
            kid: v.kid,
            credential_hash: v.credential_hash,
            proof_step: v.proof_step ?? null,
          },
        });
      } else {
        expect(out).toEqual({ ok: false, reason: v.expect });
      }
    });
  }
});

describe('proof computation', () => {
  it('re-signing a vector credential at its step reproduces the vector QR byte for byte', async () => {
    const v = vectors.vectors.find((x) => x.name === 'rotating_ok')!;
    const { credential } = decodePresentation(v.qr);
    const qr = await rotatingQr(credential, await holderKey(vectors.holder_seed), v.proof_step!);
    expect(qr).toBe(v.qr);
  });
  it('a proof made by another device key is refused as bad_proof', async () => {
    const v = vectors.vectors.find((x) => x.name === 'rotating_ok')!;
    const { credential } = decodePresentation(v.qr);
    const qr = await rotatingQr(credential, await holderKey(vectors.other_holder_seed), v.proof_step!);
    expect(await verify(qr, ctx(v))).toEqual({ ok: false, reason: 'bad_proof' });
  });
  it('a QR shown a step later is still accepted, two steps later is stale, a minute later is skew', async () => {
    const v = vectors.vectors.find((x) => x.name === 'rotating_ok')!;
    const at = (dt: number) => verify(v.qr, { ...ctx(v), now: v.now + dt });
    expect((await at(15)).ok).toBe(true);
    expect(await at(30)).toEqual({ ok: false, reason: 'stale_proof' });
    expect(await at(60)).toEqual({ ok: false, reason: 'clock_skew' });
  });
  it('steps floor toward negative infinity and the message is 68 bytes', async () => {
    expect(timeStep(1780000007)).toBe(118666667);
    expect(timeStep(-1)).toBe(-1);
    expect(timeStep(14)).toBe(0);
    const msg = proofMessage(await sha256(new Uint8Array()), -2n);
    expect(msg.length).toBe(68);
    expect(hex(msg.subarray(60))).toBe('fffffffffffffffe');
  });
});

describe('base45 and CBOR', () => {
  it('encodes and decodes the RFC 9285 examples', () => {
    const t = new TextEncoder();
    expect(base45.encode(t.encode('AB'))).toBe('BB8');
    expect(base45.encode(t.encode('Hello!!'))).toBe('%69 VD92EX0');
    expect(base45.encode(t.encode('base-45'))).toBe('UJCLQE7W581');
    expect(new TextDecoder().decode(base45.decode('QED8WEX0')!)).toBe('ietf!');
  });
  it('refuses text that is not base45', () => {
    expect(base45.decode('GGW')).toBeNull();
    expect(base45.decode('A')).toBeNull();
    expect(base45.decode('ab')).toBeNull();
    expect(base45.decode('::')).toBeNull();
  });
  it('round-trips random bytes through base45', () => {
    for (let n = 0; n < 64; n++) {
      const b = crypto.getRandomValues(new Uint8Array(n));
      expect(base45.decode(base45.encode(b))).toEqual(b);
    }
  });
  it('decodes RFC 8949 appendix A items and refuses trailing bytes and truncation', () => {
    expect(cborDecode(unhex('1903e8'))).toEqual({ t: 'int', v: 1000n });
    expect(cborDecode(unhex('3903e7'))).toEqual({ t: 'int', v: -1000n });
    expect(cborDecode(unhex('1bffffffffffffffff'))).toEqual({ t: 'int', v: 18446744073709551615n });
    expect(cborDecode(unhex('6449455446'))).toEqual({ t: 'text', v: 'IETF' });
    expect(cborDecode(unhex('83010203')).t).toBe('array');
    expect(cborDecode(unhex('9f018202039f0405ffff')).t).toBe('array');
    expect(cborDecode(unhex('a201020304'))).toEqual({
      t: 'map',
      v: [
        [{ t: 'int', v: 1n }, { t: 'int', v: 2n }],
        [{ t: 'int', v: 3n }, { t: 'int', v: 4n }],
      ],
    });
    expect(cborDecode(unhex('d24101'))).toEqual({ t: 'tag', tag: 18n, v: { t: 'bytes', v: Uint8Array.of(1) } });
    expect(() => cborDecode(unhex('0101'))).toThrow();
    expect(() => cborDecode(unhex('8301'))).toThrow();
    expect(() => cborDecode(unhex('5a0000ffff'))).toThrow();
  });
  it('encodes integers with shortest heads', () => {
    expect(hex(encodeInt(23n))).toBe('17');
    expect(hex(encodeInt(24n))).toBe('1818');
    expect(hex(encodeInt(118666667n))).toBe('1a0712b5ab');
    expect(hex(encodeInt(-1n))).toBe('20');
    expect(hex(encodeInt(-500n))).toBe('3901f3');
  });
});
