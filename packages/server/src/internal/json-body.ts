import { findRepeatedJsonName } from "@kms/core";
import { ProtocolError } from "./protocol-error.ts";

/**
 * `fatal`: Buffer#toString reads each invalid UTF-8 sequence as U+FFFD, so that bodies with
 * different bytes (and signatures) would carry one meaning. `ignoreBOM`: a byte order mark is
 * kept in the text, for JSON.parse to refuse (RFC 8259 §8.1: senders must not add one).
 */
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function serialization(message: string): ProtocolError {
  return new ProtocolError("SerializationException", message);
}

/**
 * The request body as JSON text → value: UTF-8 only, and no object naming a member twice.
 * @throws ProtocolError SerializationException.
 */
export function parseJsonBody(body: Uint8Array): unknown {
  let text: string;
  try {
    text = UTF8.decode(body);
  } catch {
    throw serialization("the request body is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text, integersExactly);
  } catch (error) {
    // A reviver runs recursively: a body nested thousands deep exhausts the stack.
    throw serialization(
      error instanceof RangeError
        ? "the request body is nested too deeply"
        : "the request body is not valid JSON",
    );
  }
  // JSON.parse keeps the last of two equal names, other readers (a proxy, a log pipeline, another
  // SDK) the first: they would disagree on which key, context or policy a signed request named.
  const repeated = findRepeatedJsonName(text)?.name;
  if (repeated !== undefined) {
    const shown = repeated.length > 64 ? `${repeated.slice(0, 64)}…` : repeated;
    throw serialization(
      `the request body names ${JSON.stringify(shown)} more than once in an object`,
    );
  }
  return json;
}

/**
 * JSON.parse rounds `4.0000000000000001` to 4, which a reader that keeps decimals (a proxy, a
 * log pipeline, another SDK) sees as a fraction. A number whose text is not an integer but which
 * parsed to one becomes NaN, so that an integer member refuses it as it refuses `4.5`; every
 * other number is left as parsed.
 */
function integersExactly(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== "number" || !Number.isInteger(value) || context?.source === undefined) {
    return value;
  }
  return isIntegerText(context.source) ? value : Number.NaN;
}

/** Whether a JSON number token denotes an integer exactly: `4.0` and `0.4e1` do, `4.01` not. */
function isIntegerText(source: string): boolean {
  const m = /^-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(source);
  if (m === null) return false;
  const digits = m[1]! + (m[2] ?? "");
  // Where the decimal point falls in `digits` once the exponent is applied.
  const point = m[1]!.length + Number(m[3] ?? 0);
  return /^0*$/.test(digits.slice(Math.max(point, 0)));
}
