/** Base45 (RFC 9285), as in crates/credential/src/base45.rs: 2 bytes to 3 characters, least significant first. */
export const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:';

export function encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 2) {
    if (i + 1 < bytes.length) {
      let v = bytes[i]! * 256 + bytes[i + 1]!;
      for (let k = 0; k < 3; k++) {
        out += ALPHABET[v % 45];
        v = Math.floor(v / 45);
      }
    } else {
      let v = bytes[i]!;
      for (let k = 0; k < 2; k++) {
        out += ALPHABET[v % 45];
        v = Math.floor(v / 45);
      }
    }
  }
  return out;
}

/** `null` for a character outside the alphabet, a dangling character, or a group too large for its bytes. */
export function decode(text: string): Uint8Array | null {
  const out: number[] = [];
  const digit = (c: string): number => ALPHABET.indexOf(c);
  for (let i = 0; i < text.length; i += 3) {
    const group = text.slice(i, i + 3);
    const ds = [...group].map(digit);
    if (ds.some((d) => d < 0)) return null;
    if (ds.length === 3) {
      const v = ds[0]! + ds[1]! * 45 + ds[2]! * 45 * 45;
      if (v > 0xffff) return null;
      out.push(v >> 8, v & 0xff);
    } else if (ds.length === 2) {
      const v = ds[0]! + ds[1]! * 45;
      if (v > 0xff) return null;
      out.push(v);
    } else {
      return null;
    }
  }
  return Uint8Array.from(out);
}
