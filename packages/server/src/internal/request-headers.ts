import { ProtocolError } from "./protocol-error.ts";

/**
 * Headers whose value the server interprets or that SigV4 binds to what it interprets. Node keeps
 * only the first of some duplicates (content-type, host, authorization) and joins others with
 * ", " (x-amz-target): a second copy could make the signed value differ from the one acted on,
 * so a request carrying any of these twice is refused outright.
 */
const SINGLE_VALUED: ReadonlySet<string> = new Set([
  "authorization",
  "content-length",
  "content-type",
  "host",
  "transfer-encoding",
  "x-amz-content-sha256",
  "x-amz-date",
  "x-amz-security-token",
  "x-amz-target",
]);

/** A request's headers as received (from `rawHeaders`), by lowercased name, in arrival order. */
export class RequestHeaders {
  readonly #values = new Map<string, string[]>();

  /** @throws ProtocolError (IncompleteSignatureException) for a duplicated single-valued header. */
  constructor(rawHeaders: readonly string[]) {
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toLowerCase();
      const list = this.#values.get(name);
      if (list === undefined) this.#values.set(name, [rawHeaders[i + 1]!]);
      else if (SINGLE_VALUED.has(name)) {
        throw new ProtocolError(
          "IncompleteSignatureException",
          `the request carries the ${name} header more than once`,
        );
      } else list.push(rawHeaders[i + 1]!);
    }
  }

  /** Every value of a header, in arrival order; empty when absent. */
  all(name: string): readonly string[] {
    return this.#values.get(name) ?? [];
  }

  /** The value of a single-valued header, or undefined when absent. */
  one(name: string): string | undefined {
    return this.#values.get(name)?.[0];
  }

  has(name: string): boolean {
    return this.#values.has(name);
  }
}
