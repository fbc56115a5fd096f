/** The holder proof (docs/credential.md): every 15 s the device signs the credential hash and the time step. */
import * as base45 from './base45';
import { concat, encodeBytes, encodeInt, head } from './cbor';

export const STEP_SECONDS = 15;
const DOMAIN = new TextEncoder().encode('entrada/credential-proof/v1');

/** `floor(unix_seconds / 15)`, flooring toward negative infinity. */
export function timeStep(unixSeconds: number): number {
  return Math.floor(Math.floor(unixSeconds) / STEP_SECONDS);
}

/** `"entrada/credential-proof/v1" || 0x00 || hash (32) || step (i64 big-endian)`: 68 bytes. */
export function proofMessage(credentialHash: Uint8Array, step: bigint): Uint8Array {
  const s = new Uint8Array(8);
  new DataView(s.buffer).setBigInt64(0, step);
  return concat(DOMAIN, Uint8Array.of(0), credentialHash, s);
}

export async function sha256(b: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', b as BufferSource));
}

export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** The rotating QR text: `EN1:` + base45([credential, step, proof]), shortest-form heads as the Rust encoder. */
export function encodeRotating(credential: Uint8Array, step: bigint, proof: Uint8Array): string {
  return 'EN1:' + base45.encode(concat(head(4, 3n), encodeBytes(credential), encodeInt(step), encodeBytes(proof)));
}

/** The static QR text: `EN1:` + base45([credential]). */
export function encodeStatic(credential: Uint8Array): string {
  return 'EN1:' + base45.encode(concat(head(4, 1n), encodeBytes(credential)));
}

/** Signs the proof for `step` with the device's private key and returns the QR text to show. */
export async function rotatingQr(credential: Uint8Array, privateKey: CryptoKey, step: number): Promise<string> {
  const hash = await sha256(credential);
  const sig = new Uint8Array(
    await crypto.subtle.sign({ name: 'Ed25519' }, privateKey, proofMessage(hash, BigInt(step)) as BufferSource),
  );
  return encodeRotating(credential, BigInt(step), sig);
}
