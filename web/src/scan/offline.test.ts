// The scanner's offline rules and upload queue decide as the gate should, using the shared vectors' credentials.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { b64url } from '../api/client';
import { unhex, verify } from '../credential/verify';
import { applyUpload, type Bundle, decide, mergeBundle, nextBatch, type QueuedScan, ring } from './offline';

const file = fileURLToPath(new URL('../../../crates/credential/vectors/vectors.json', import.meta.url));
const vectors = JSON.parse(readFileSync(file, 'utf8')) as {
  vectors: { name: string; qr: string; now: number; event_id: string; keys: { kid: string; public_key: string }[] }[];
};
const v = vectors.vectors.find((x) => x.name === 'rotating_ok')!;
const uuid = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
const TICKET = uuid('11111111111111111111111111111111');
const TYPE = uuid('33333333333333333333333333333333');
const NOW = v.now * 1000;

function bundle(extra: Partial<Bundle> = {}): Bundle {
  return {
    event_id: uuid(v.event_id),
    keys: v.keys.map((k) => ({ kid: b64url(unhex(k.kid)), x: b64url(unhex(k.public_key)) })),
    gates: [
      { id: 'g1', name: 'Puerta 1', zone_id: 'z1', zone_name: 'FLOOR' },
      { id: 'g2', name: 'VIP', zone_id: 'z2', zone_name: 'VIP' },
    ],
    ticket_types: [{ id: TYPE, name: 'General', zones: ['FLOOR', 'NORTH-STAND'], reentry: false, max_entries: 1 }],
    revocations: [],
    next_cursor: 1,
    doors_close_at: '2030-01-01T00:00:00Z',
    doors_open_at: '2026-05-01T00:00:00Z',
    ...extra,
  };
}

async function outcome(b: Bundle) {
  return verify(v.qr, { event_id: v.event_id, keys: ring(b), now: v.now });
}

describe('offline decisions', () => {
  it('admits a valid credential once at a gate of its zone, then says already_used', async () => {
    const b = bundle();
    const used = new Map<string, number>();
    const first = decide(await outcome(b), b, 'g1', used, NOW);
    expect(first).toMatchObject({ ok: true, reason: 'ok', ticket_type: 'General' });
    used.set(first.ticket_id!, 1);
    expect(decide(await outcome(b), b, 'g1', used, NOW)).toMatchObject({ ok: false, reason: 'already_used' });
  });
  it('refuses a gate of another zone, a cancelled ticket and a superseded generation', async () => {
    const b = bundle();
    expect(decide(await outcome(b), b, 'g2', new Map(), NOW)).toMatchObject({ ok: false, reason: 'wrong_zone' });
    const cancelled = bundle({ revocations: [{ ticket_id: TICKET, min_generation: 0, cancelled: true }] });
    expect(decide(await outcome(cancelled), cancelled, 'g1', new Map(), NOW).reason).toBe('cancelled');
    const gifted = bundle({ revocations: [{ ticket_id: TICKET, min_generation: 3, cancelled: false }] });
    expect(decide(await outcome(gifted), gifted, 'g1', new Map(), NOW).reason).toBe('superseded_generation');
  });
  it('refuses before the doors open and from their closing on', async () => {
    const b = bundle({ doors_open_at: new Date(NOW + 60_000).toISOString() });
    expect(decide(await outcome(b), b, 'g1', new Map(), NOW).reason).toBe('not_yet_open');
    const closed = bundle({ doors_close_at: new Date(NOW).toISOString() });
    expect(decide(await outcome(closed), closed, 'g1', new Map(), NOW).reason).toBe('closed');
  });
  it('passes the verifier rejection through', async () => {
    const b = bundle({ keys: [] });
    expect(decide(await outcome(b), b, 'g1', new Map(), NOW)).toEqual({ ok: false, reason: 'unknown_key' });
  });
  it('merges revocation deltas over the stored bundle', () => {
    const old = bundle({ revocations: [{ ticket_id: TICKET, min_generation: 1, cancelled: false }] });
    const delta = bundle({ next_cursor: 9, revocations: [{ ticket_id: TICKET, min_generation: 4, cancelled: false }] });
    const merged = mergeBundle(old, delta);
    expect(merged.revocations).toEqual([{ ticket_id: TICKET, min_generation: 4, cancelled: false }]);
    expect(merged.next_cursor).toBe(9);
  });
});

describe('upload queue', () => {
  const q = (n: number): QueuedScan => ({
    nonce: `n${n}`,
    payload: 'EN1:x',
    gate_id: 'g1',
    scanned_at: new Date(Date.UTC(2030, 0, 1, 0, 0, n)).toISOString(),
    admitted: true,
  });
  it('uploads oldest first in batches of at most 500', () => {
    const queue = Array.from({ length: 600 }, (_, i) => q(599 - i));
    const batch = nextBatch(queue);
    expect(batch).toHaveLength(500);
    expect(batch[0]!.nonce).toBe('n0');
  });
  it('drops answered scans, keeps unanswered ones, and reports conflicts', () => {
    const { remaining, conflicts } = applyUpload(
      [q(1), q(2), q(3)],
      [
        { nonce: 'n1', ok: true, reason: 'ok', conflict: false },
        { nonce: 'n2', ok: false, reason: 'already_used', conflict: true },
      ],
    );
    expect(remaining.map((x) => x.nonce)).toEqual(['n3']);
    expect(conflicts.map((x) => x.nonce)).toEqual(['n2']);
  });
});
