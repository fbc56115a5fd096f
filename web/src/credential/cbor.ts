/**
 * A small CBOR (RFC 8949) decoder and the few encoders the credential needs. Integers decode as `bigint` so
 * 64-bit values survive; maps keep their entries in order (duplicates are kept, so callers can refuse them).
 */

export type Cbor =
  | { t: 'int'; v: bigint }
  | { t: 'bytes'; v: Uint8Array }
  | { t: 'text'; v: string }
  | { t: 'array'; v: Cbor[] }
  | { t: 'map'; v: [Cbor, Cbor][] }
  | { t: 'tag'; tag: bigint; v: Cbor }
  | { t: 'simple'; v: number }
  | { t: 'float'; v: number };

export class CborError extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new CborError('truncated');
    return this.buf[this.pos++]!;
  }
  take(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw new CborError('truncated');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  uint(n: number): bigint {
    let v = 0n;
    for (const b of this.take(n)) v = (v << 8n) | BigInt(b);
    return v;
  }
}

const MAX_DEPTH = 32;

/** The head's argument: `null` for an indefinite length (additional info 31). */
function argument(r: Reader, info: number): bigint | null {
  if (info < 24) return BigInt(info);
  if (info === 24) return r.uint(1);
  if (info === 25) return r.uint(2);
  if (info === 26) return r.uint(4);
  if (info === 27) return r.uint(8);
  if (info === 31) return null;
  throw new CborError('reserved additional information');
}

function length(v: bigint | null, r: Reader): number {
  if (v === null) throw new CborError('indefinite');
  if (v > BigInt(r.buf.length)) throw new CborError('truncated');
  return Number(v);
}

function item(r: Reader, depth: number): Cbor | 'break' {
  if (depth > MAX_DEPTH) throw new CborError('too deep');
  const ib = r.byte();
  const major = ib >> 5;
  const info = ib & 0x1f;
  if (ib === 0xff) return 'break';
  switch (major) {
    case 0: {
      const a = argument(r, info);
      if (a === null) throw new CborError('indefinite integer');
      return { t: 'int', v: a };
    }
    case 1: {
      const a = argument(r, info);
      if (a === null) throw new CborError('indefinite integer');
      return { t: 'int', v: -1n - a };
    }
    case 2:
    case 3: {
      const a = argument(r, info);
      let bytes: Uint8Array;
      if (a === null) {
        const parts: Uint8Array[] = [];
        for (;;) {
          const chunk = item(r, depth + 1);
          if (chunk === 'break') break;
          if (chunk.t !== (major === 2 ? 'bytes' : 'text')) throw new CborError('bad chunk');
          parts.push(chunk.t === 'bytes' ? chunk.v : new TextEncoder().encode(chunk.v as string));
        }
        bytes = concat(...parts);
      } else {
        bytes = r.take(length(a, r)).slice();
      }
      if (major === 2) return { t: 'bytes', v: bytes };
      try {
        return { t: 'text', v: utf8.decode(bytes) };
      } catch {
        throw new CborError('invalid utf-8');
      }
    }
    case 4: {
      const a = argument(r, info);
      const v: Cbor[] = [];
      if (a === null) {
        for (;;) {
          const x = item(r, depth + 1);
          if (x === 'break') break;
          v.push(x);
        }
      } else {
        const n = length(a, r);
        for (let i = 0; i < n; i++) v.push(must(item(r, depth + 1)));
      }
      return { t: 'array', v };
    }
    case 5: {
      const a = argument(r, info);
      const v: [Cbor, Cbor][] = [];
      if (a === null) {
        for (;;) {
          const k = item(r, depth + 1);
          if (k === 'break') break;
          v.push([k, must(item(r, depth + 1))]);
        }
      } else {
        const n = length(a, r);
        for (let i = 0; i < n; i++) v.push([must(item(r, depth + 1)), must(item(r, depth + 1))]);
      }
      return { t: 'map', v };
    }
    case 6: {
      const a = argument(r, info);
      if (a === null) throw new CborError('indefinite tag');
      return { t: 'tag', tag: a, v: must(item(r, depth + 1)) };
    }
    default: {
      if (info < 24) return { t: 'simple', v: info };
      if (info === 24) return { t: 'simple', v: r.byte() };
      if (info === 25) return { t: 'float', v: half(r.uint(2)) };
      if (info === 26) return { t: 'float', v: new DataView(r.take(4).slice().buffer).getFloat32(0) };
      if (info === 27) return { t: 'float', v: new DataView(r.take(8).slice().buffer).getFloat64(0) };
      throw new CborError('unexpected break');
    }
  }
}

function half(bits: bigint): number {
  const h = Number(bits);
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (mant + 1024) * 2 ** (exp - 25);
}

function must(x: Cbor | 'break'): Cbor {
  if (x === 'break') throw new CborError('unexpected break');
  return x;
}

/** Decodes exactly one item filling all of `bytes` (trailing bytes are an error). */
export function decode(bytes: Uint8Array): Cbor {
  const r = new Reader(bytes);
  const v = must(item(r, 0));
  if (r.pos !== bytes.length) throw new CborError('trailing bytes');
  return v;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A shortest-form head (RFC 8949 §4.2.1). */
export function head(major: number, arg: bigint): Uint8Array {
  const m = major << 5;
  if (arg < 24n) return Uint8Array.of(m | Number(arg));
  const sizes: [number, number][] = [
    [24, 1],
    [25, 2],
    [26, 4],
    [27, 8],
  ];
  for (const [info, n] of sizes) {
    if (arg < 1n << BigInt(8 * n)) {
      const out = new Uint8Array(1 + n);
      out[0] = m | info;
      for (let i = 0; i < n; i++) out[n - i] = Number((arg >> BigInt(8 * i)) & 0xffn);
      return out;
    }
  }
  throw new CborError('argument too large');
}

export function encodeBytes(b: Uint8Array): Uint8Array {
  return concat(head(2, BigInt(b.length)), b);
}

export function encodeInt(v: bigint): Uint8Array {
  return v >= 0n ? head(0, v) : head(1, -1n - v);
}
