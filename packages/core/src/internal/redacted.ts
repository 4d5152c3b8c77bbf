/**
 * Results that carry secret bytes (a data key, a decrypted plaintext, a private key, a shared
 * secret) print those bytes as `[redacted: N bytes]` under `util.inspect`, which console.log,
 * loggers' pretty printers and chai's assertion messages go through. Without it,
 * `console.log(await kms.generateDataKey(…))` writes the data key into the log, which reviewers
 * rightly read as key material in logs (AWS's SDK prints such members as
 * "***SensitiveInformation***").
 *
 * The result itself is left as it was for code: the inspector is an own, non-enumerable symbol
 * member, so spread, Object.keys, JSON.stringify, structuredClone, destructuring and deep
 * equality in tests see exactly the members they saw before, and the bytes stay a Uint8Array.
 * Logging the field itself (`console.log(result.plaintext)`) still prints the bytes: that is
 * the caller asking for them.
 */

const INSPECT_CUSTOM = Symbol.for("nodejs.util.inspect.custom");

/** The part of util.inspect's options this module reads; the rest is passed on untouched. */
interface InspectOptionsLike {
  readonly depth?: number | null | undefined;
  readonly stylize?: ((text: string, styleType: string) => string) | undefined;
}

/** util.inspect as Node (and loupe, for chai) hands it to a custom inspector. */
type InspectFunction = (value: unknown, options: InspectOptionsLike) => string;

/** Stands in for a secret member in the copy that is printed instead of the result. */
class RedactedValue {
  readonly text: string;

  constructor(value: unknown) {
    // The length is no secret: the ciphertext or the key spec gives it away anyway, and it tells
    // a reader which value this was.
    this.text = value instanceof Uint8Array ? `[redacted: ${value.length} bytes]` : "[redacted]";
  }

  [INSPECT_CUSTOM](_depth: unknown, options: InspectOptionsLike | undefined): string {
    return typeof options?.stylize === "function"
      ? options.stylize(this.text, "special")
      : this.text;
  }
}

/**
 * The result's own enumerable members, in order, with the secret ones replaced; a plain object,
 * as every result is, so that inspect prints it exactly as it would print the result.
 */
function redactedCopy(
  result: object,
  secret: ReadonlySet<PropertyKey>,
): Record<PropertyKey, unknown> {
  const copy: Record<PropertyKey, unknown> = {};
  for (const key of Reflect.ownKeys(result)) {
    if (!Object.prototype.propertyIsEnumerable.call(result, key)) continue;
    const value = (result as Record<PropertyKey, unknown>)[key];
    // defineProperty, not assignment: a member named "__proto__" would set the prototype.
    Object.defineProperty(copy, key, {
      value: secret.has(key) ? new RedactedValue(value) : value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return copy;
}

/** A one-line form for a caller that invokes the inspector without an inspect function. */
function describeWithoutInspect(copy: Record<PropertyKey, unknown>): string {
  const members = Object.entries(copy).map(([key, value]) => {
    if (value instanceof RedactedValue) return `${key}: ${value.text}`;
    if (typeof value === "string") return `${key}: ${JSON.stringify(value)}`;
    if (typeof value === "object" && value !== null) {
      return `${key}: [${value.constructor?.name ?? "Object"}]`;
    }
    return `${key}: ${String(value)}`;
  });
  return members.length === 0 ? "{}" : `{ ${members.join(", ")} }`;
}

/**
 * A function that gives a result an inspector printing each of `fields` as
 * `[redacted: N bytes]` and every other member as inspect would (with the caller's options and
 * remaining depth), and returns the same object. Make it once per call site: every result then
 * shares one inspector and one property descriptor, so marking a result costs one
 * defineProperty.
 */
export function redactingInspect<K extends string>(
  ...fields: readonly K[]
): <T extends Readonly<Record<K, Uint8Array>>>(result: T) => T {
  const secret: ReadonlySet<PropertyKey> = new Set(fields);
  function inspectRedacted(
    this: object,
    depth: number | null | undefined,
    options: InspectOptionsLike | undefined,
    inspect: InspectFunction | undefined,
  ): string {
    const copy = redactedCopy(this, secret);
    if (typeof inspect !== "function") return describeWithoutInspect(copy);
    // The copy stands where the result stood, so it gets the depth left at that point: nested
    // members are cut off (`[Object]`) exactly where they would have been.
    return inspect(copy, { ...options, depth });
  }
  const descriptor: PropertyDescriptor = {
    value: inspectRedacted,
    enumerable: false,
    writable: false,
    configurable: true,
  };
  return (result) => Object.defineProperty(result, INSPECT_CUSTOM, descriptor);
}

/** The markers the built-in results use, one per secret member's name. */
export const redactPlaintext = redactingInspect("plaintext");
export const redactDataKey = redactingInspect("dataKey");
