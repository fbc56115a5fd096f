/**
 * The holder side of a ticket: one Ed25519 device key made with WebCrypto (private part non-extractable, kept
 * in IndexedDB), registered per ticket with the server, and the signed credential stored on the device so the
 * rotating QR works with no network.
 */
import { b64url, must, unb64url } from '../api/client';
import { rotatingQr, encodeStatic, timeStep } from '../credential/proof';
import { Store } from '../lib/idb';
import { api } from './session';

const db = new Store('entrada-fan', ['keys', 'credentials']);

interface DeviceKey {
  privateKey: CryptoKey;
  publicKey: string;
}
export interface StoredCredential {
  ticket_id: string;
  generation: number;
  kind: string;
  credential: string;
  public_key: string;
  expires_at: string;
}

export async function deviceKey(): Promise<DeviceKey> {
  const have = await db.get<DeviceKey>('keys', 'device');
  if (have) return have;
  const pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  const key = { privateKey: pair.privateKey, publicKey: b64url(raw) };
  await db.put('keys', 'device', key);
  return key;
}

/**
 * The ticket's credential for `generation`: the stored one when it is current and made for this device's key,
 * else the device key is registered and a fresh credential fetched and stored. Offline, the stored one.
 */
export async function credentialFor(ticketId: string, generation: number | null): Promise<StoredCredential> {
  const key = await deviceKey();
  const stored = await db.get<StoredCredential>('credentials', ticketId);
  const fresh =
    stored &&
    stored.public_key === key.publicKey &&
    (generation === null || stored.generation === generation) &&
    Date.parse(stored.expires_at) > Date.now();
  if (fresh && (!navigator.onLine || generation !== null)) return stored;
  if (!navigator.onLine) {
    if (stored) return stored;
    throw new Error('offline');
  }
  const path = { params: { path: { id: ticketId } } };
  must(await api.POST('/api/v1/tickets/{id}/device-key', { ...path, body: { public_key: key.publicKey } }));
  const c = must(await api.GET('/api/v1/tickets/{id}/credential', path));
  const out: StoredCredential = {
    ticket_id: ticketId,
    generation: c.generation,
    kind: c.kind,
    credential: c.credential,
    public_key: key.publicKey,
    expires_at: c.expires_at,
  };
  await db.put('credentials', ticketId, out);
  return out;
}

/** The QR text to show now: the credential plus this step's proof (or the static text). */
export async function qrText(c: StoredCredential, nowMs = Date.now()): Promise<{ text: string; step: number }> {
  const step = timeStep(nowMs / 1000);
  const bytes = unb64url(c.credential);
  if (c.kind !== 'rotating') return { text: encodeStatic(bytes), step };
  const key = await deviceKey();
  return { text: await rotatingQr(bytes, key.privateKey, step), step };
}

export async function forgetCredentials(): Promise<void> {
  await db.clear('credentials');
}
