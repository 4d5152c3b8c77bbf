/**
 * ECDSA signature encodings: KMS (like AWS KMS) returns and accepts DER `ECDSA-Sig-Value`,
 * RFC 9421 sends the fixed-width r||s concatenation. This is encoding only, no arithmetic.
 */
import { ValidationError } from "@kms/core";

function readLength(der: Uint8Array, pos: number): [length: number, next: number] {
  const first = der[pos];
  if (first === undefined) throw new ValidationError('"signature" DER is truncated');
  if (first < 0x80) return [first, pos + 1];
  if (first !== 0x81) throw new ValidationError('"signature" DER length form is not allowed');
  const len = der[pos + 1];
  if (len === undefined || len < 0x80)
    throw new ValidationError('"signature" DER length is not minimal');
  return [len, pos + 2];
}

function readInteger(
  der: Uint8Array,
  pos: number,
  size: number,
): [value: Uint8Array, next: number] {
  if (der[pos] !== 0x02) throw new ValidationError('"signature" DER expected an INTEGER');
  const [len, start] = readLength(der, pos + 1);
  const end = start + len;
  if (len === 0 || end > der.length)
    throw new ValidationError('"signature" DER INTEGER is truncated');
  let bytes = der.subarray(start, end);
  if ((bytes[0] as number) & 0x80) throw new ValidationError('"signature" DER INTEGER is negative');
  if (bytes.length > 1 && bytes[0] === 0 && !((bytes[1] as number) & 0x80)) {
    throw new ValidationError('"signature" DER INTEGER is not minimally encoded');
  }
  while (bytes.length > 0 && bytes[0] === 0) bytes = bytes.subarray(1);
  if (bytes.length > size)
    throw new ValidationError(`"signature" DER INTEGER exceeds ${size} bytes`);
  const out = new Uint8Array(size);
  out.set(bytes, size - bytes.length);
  return [out, end];
}

/**
 * DER `SEQUENCE { r INTEGER, s INTEGER }` → r||s, each left-padded to `size` bytes.
 * @throws ValidationException when the DER is malformed or a value is too large.
 */
export function derToRaw(der: Uint8Array, size: number): Uint8Array {
  if (der[0] !== 0x30) throw new ValidationError('"signature" DER expected a SEQUENCE');
  const [len, start] = readLength(der, 1);
  if (start + len !== der.length) throw new ValidationError('"signature" DER length mismatch');
  const [r, afterR] = readInteger(der, start, size);
  const [s, afterS] = readInteger(der, afterR, size);
  if (afterS !== der.length) throw new ValidationError('"signature" DER has trailing bytes');
  const out = new Uint8Array(size * 2);
  out.set(r, 0);
  out.set(s, size);
  return out;
}

function encodeInteger(raw: Uint8Array): number[] {
  let i = 0;
  while (i < raw.length - 1 && raw[i] === 0) i++;
  const bytes = Array.from(raw.subarray(i));
  if ((bytes[0] as number) & 0x80) bytes.unshift(0);
  return [0x02, bytes.length, ...bytes];
}

/**
 * r||s → DER `ECDSA-Sig-Value`.
 * @throws ValidationException when the raw signature is not `2 × size` bytes.
 */
export function rawToDer(raw: Uint8Array, size: number): Uint8Array {
  if (raw.length !== size * 2) {
    throw new ValidationError(`"signature" expected ${size * 2} bytes, got ${raw.length}`);
  }
  const body = [...encodeInteger(raw.subarray(0, size)), ...encodeInteger(raw.subarray(size))];
  const header = body.length < 0x80 ? [0x30, body.length] : [0x30, 0x81, body.length];
  return Uint8Array.from([...header, ...body]);
}
