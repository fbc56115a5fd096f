/**
 * The scanner's offline decisions and its upload queue, as pure functions over plain data so they are tested
 * without a browser. The signature checks come from ../credential/verify; the entry rules the server applies
 * with its database (revocations, zones, one entry per ticket) are applied here to the bundle and to what this
 * device admitted itself. The server re-decides every uploaded scan and reports collisions as conflicts.
 */
import type { Outcome, RingKey } from '../credential/verify';
import { unb64url } from '../api/client';
import { hex } from '../credential/proof';

export interface BundleKey {
  kid: string;
  x: string;
}
export interface Bundle {
  event_id: string;
  keys: BundleKey[];
  gates: { id: string; name: string; zone_id: string; zone_name: string }[];
  ticket_types: { id: string; name: string; zones: string[]; reentry: boolean; max_entries: number }[];
  revocations: { ticket_id: string; min_generation: number; cancelled: boolean }[];
  next_cursor: number;
  doors_open_at?: string | null;
  doors_close_at: string;
}

/** A scan decided on the device and waiting for upload; the nonce makes a re-upload idempotent. */
export interface QueuedScan {
  nonce: string;
  payload: string;
  gate_id: string;
  scanned_at: string;
  admitted: boolean;
}

export interface LocalVerdict {
  ok: boolean;
  reason: string;
  ticket_id?: string;
  ticket_type?: string;
}

/** UUID text (with or without dashes) as the 32 hex digits the verifier uses. */
export const uuidHex = (id: string): string => id.replace(/-/g, '').toLowerCase();

export function ring(bundle: Bundle): RingKey[] {
  const event_id = uuidHex(bundle.event_id);
  return bundle.keys.map((k) => ({ kid: hex(unb64url(k.kid)), event_id, public_key: unb64url(k.x) }));
}

/** Merges a bundle delta (revocations since the cursor) into the stored bundle. */
export function mergeBundle(old: Bundle | undefined, delta: Bundle): Bundle {
  if (!old || old.event_id !== delta.event_id) return delta;
  const byTicket = new Map(old.revocations.map((r) => [r.ticket_id, r]));
  for (const r of delta.revocations) byTicket.set(r.ticket_id, r);
  return { ...delta, revocations: [...byTicket.values()] };
}

/**
 * What the gate shows for a credential verified on the device: the signature outcome first, then the ticket's
 * revocation, the gate's zone, the doors at `nowMs`, and entries this device already admitted (`used`: ticket id hex
 * → count), in the order of the server's `ticket_check`.
 */
export function decide(
  outcome: Outcome,
  bundle: Bundle,
  gateId: string,
  used: Map<string, number>,
  nowMs: number,
): LocalVerdict {
  if (!outcome.ok) return { ok: false, reason: outcome.reason };
  const c = outcome.verified.claims;
  const ticket_id = c.ticket_id;
  const type = bundle.ticket_types.find((t) => uuidHex(t.id) === c.ticket_type_id);
  const base = { ticket_id, ...(type ? { ticket_type: type.name } : {}) };
  const rev = bundle.revocations.find((r) => uuidHex(r.ticket_id) === ticket_id);
  if (rev?.cancelled) return { ok: false, reason: 'cancelled', ...base };
  if (rev && c.generation < rev.min_generation) return { ok: false, reason: 'superseded_generation', ...base };
  const gate = bundle.gates.find((g) => g.id === gateId);
  const zones = type ? type.zones : c.zones;
  if (gate && zones.length > 0 && !zones.includes(gate.zone_name)) return { ok: false, reason: 'wrong_zone', ...base };
  // The doors, as the server checks them: before opening, and from closing on.
  if (bundle.doors_open_at && nowMs < Date.parse(bundle.doors_open_at)) return { ok: false, reason: 'not_yet_open', ...base };
  if (nowMs >= Date.parse(bundle.doors_close_at)) return { ok: false, reason: 'closed', ...base };
  const max = type ? (type.reentry ? Math.max(1, type.max_entries) : 1) : 1;
  if ((used.get(ticket_id) ?? 0) >= max) return { ok: false, reason: 'already_used', ...base };
  return { ok: true, reason: 'ok', ...base };
}

/** The next upload: at most `max` queued scans, oldest first. */
export function nextBatch(queue: QueuedScan[], max = 500): QueuedScan[] {
  return [...queue].sort((a, b) => a.scanned_at.localeCompare(b.scanned_at)).slice(0, max);
}

export interface UploadVerdict {
  nonce: string;
  ok: boolean;
  reason: string;
  conflict: boolean;
  ticket_id?: string | null;
}

/** After an upload: which nonces leave the queue (every answered one) and which scans collided. */
export function applyUpload(
  queue: QueuedScan[],
  verdicts: UploadVerdict[],
): { remaining: QueuedScan[]; conflicts: UploadVerdict[] } {
  const answered = new Set(verdicts.map((v) => v.nonce));
  return {
    remaining: queue.filter((q) => !answered.has(q.nonce)),
    conflicts: verdicts.filter((v) => v.conflict),
  };
}
