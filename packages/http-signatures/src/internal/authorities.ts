/**
 * `VerificationPolicy.authorities`: the `host[:port]`s a server answers to. The authority a
 * received request names is the client's word (its Host field, `:authority`, or a forwarded
 * host the framework trusts), so without such a list a signature made for another service that
 * shares the key verifies here when the client names that service.
 */
import { ValidationError } from "@kms/core";
import { BoundedCache } from "./bounded-cache.ts";

/** One configured authority: a canonical host, and a port (undefined: the scheme's default). */
interface ListedAuthority {
  readonly hostname: string;
  readonly port: number | undefined;
}

// `host[:port]`: an IP literal or a name, then an optional decimal port.
const ENTRY = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/?#@[\]\\]+)(?::([0-9]+))?$/;

const DEFAULT_PORTS: Readonly<Record<string, number>> = { "http:": 80, "https:": 443 };

// Entries come from configuration and are few; a policy's list is read on every verification,
// so each entry is parsed once. Bounded, as any cache of strings a caller hands in, and evicting:
// a cache that stopped taking entries once full would parse the server's own list on every call
// after 256 other strings had passed through.
const parsedEntries = new BoundedCache<string, ListedAuthority>(256);

function parseEntry(entry: unknown): ListedAuthority {
  if (typeof entry === "string") {
    const known = parsedEntries.get(entry);
    if (known !== undefined) return known;
  }
  const match = typeof entry === "string" ? ENTRY.exec(entry) : null;
  const [, host = "", port] = match ?? [];
  let hostname: string | undefined;
  if (match !== null) {
    try {
      hostname = new URL(`http://${host}/`).hostname;
    } catch {
      hostname = undefined;
    }
  }
  if (
    hostname === undefined ||
    hostname === "" ||
    (port !== undefined && (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65_535))
  ) {
    throw new ValidationError(
      `"authorities" entries must be host[:port] with a port from 1 to 65535, got ${JSON.stringify(typeof entry === "string" ? entry.slice(0, 100) : typeof entry)}`,
    );
  }
  const parsed: ListedAuthority = {
    hostname,
    port: port === undefined ? undefined : Number(port),
  };
  parsedEntries.set(entry as string, parsed);
  return parsed;
}

/**
 * Checks a policy's `authorities` before any message is read, so a misconfigured list fails
 * every verification alike rather than refusing some requests as forged.
 * @throws ValidationException when the list is not a non-empty array of `host[:port]` strings.
 */
export function assertAuthorities(authorities: unknown): void {
  if (authorities === undefined) return;
  if (!Array.isArray(authorities) || authorities.length === 0) {
    throw new ValidationError('"authorities" must be a non-empty array of host[:port] strings');
  }
  for (const entry of authorities) parseEntry(entry);
}

/**
 * Whether `url`'s authority is one of `authorities`. Hosts compare in the canonical form the
 * URL parser gives them (lower case, IDNA, IPv6 compressed); an entry without a port stands for
 * the scheme's default port (80 for http, 443 for https), so `api.example.com` matches
 * `https://api.example.com/` and `api.example.com:443` does too.
 */
export function isListedAuthority(
  url: Pick<URL, "port" | "protocol" | "hostname">,
  authorities: readonly string[],
): boolean {
  const explicit = url.port === "" ? undefined : Number(url.port);
  const port = explicit ?? DEFAULT_PORTS[url.protocol];
  for (const entry of authorities) {
    const listed = parseEntry(entry);
    if (listed.hostname !== url.hostname) continue;
    if (listed.port === undefined ? explicit === undefined : listed.port === port) return true;
  }
  return false;
}
