import { isIPv6 } from "node:net";
import { ValidationError } from "@kms/core";

/**
 * The `allowedHosts` option, read once: which `Host` header values a request may carry. Names are
 * compared as clients write them in `Host`, which is what SigV4 signs: ASCII case folded, one
 * trailing dot dropped, IPv6 literals in brackets and in their canonical form. A name without a
 * port accepts every port. A client leaves the port out for its scheme's default (the AWS SDK signs
 * `kms.internal` for `https://kms.internal`, and `kms.internal:8443` for port 8443), so an entry
 * with port 443 or 80 also accepts the name without one: behind a proxy that ends TLS, the server
 * cannot tell which of the two the client meant.
 */
export interface AllowedHosts {
  /** Whether a request's `Host` header, as received, names an allowed host. */
  accepts(host: string): boolean;
}

interface HostName {
  /** Lowercase, without a trailing dot; an IPv6 literal in brackets, canonical. */
  readonly name: string;
  /** The decimal port, without leading zeros; undefined when the value has none. */
  readonly port: string | undefined;
}

/** Ports a client omits from `Host`: 443 for https, 80 for http. */
const DEFAULT_PORTS = ["443", "80"] as const;
/** RFC 1035's bound on a name in text form, without the trailing dot. */
const MAX_NAME_LENGTH = 253;
/** Labels of a name as URLs carry them (internationalized names in their xn-- form). */
const REG_NAME =
  /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * `host`, `host:port` or `[ipv6]` / `[ipv6]:port`, normalized; undefined for anything else (a path,
 * user info, a zone id, an empty or out-of-range port, a bare IPv6 address).
 */
function parseHost(value: string): HostName | undefined {
  let name: string;
  let rest: string;
  if (value.startsWith("[")) {
    const close = value.indexOf("]");
    const address = value.slice(1, close);
    // A zone id ("%eth0") means nothing to another machine, and URLs cannot carry one unescaped.
    if (close < 0 || address.includes("%") || !isIPv6(address)) return undefined;
    // WHATWG URL writes an IPv6 address in RFC 5952 form: [0:0:0:0:0:0:0:1] is [::1], as the
    // SDK, which builds the Host header from a URL, would send it.
    name = new URL(`http://[${address}]/`).hostname;
    rest = value.slice(close + 1);
  } else {
    const colon = value.indexOf(":");
    name = colon < 0 ? value : value.slice(0, colon);
    rest = colon < 0 ? "" : value.slice(colon);
    name = name.toLowerCase();
    if (name.endsWith(".")) name = name.slice(0, -1);
    if (name.length > MAX_NAME_LENGTH || !REG_NAME.test(name)) return undefined;
  }
  if (rest === "") return { name, port: undefined };
  if (!/^:[0-9]{1,5}$/.test(rest)) return undefined;
  const port = Number(rest.slice(1));
  if (port < 1 || port > 65_535) return undefined;
  return { name, port: String(port) };
}

/**
 * Checks one `allowedHosts` entry on its own, for code that takes the names before it makes a
 * server (a command line, a config file) and wants to refuse a bad one in its own terms. The
 * grammar and the message are those `createKmsServer` and `createKmsRequestHandler` apply.
 * @param argument what the message calls the value (`"--allowed-host"`, `"allowedHosts[0]"`).
 * @throws ValidationError naming `argument` and the value, for anything but a string that is
 *   `name`, `name:port`, `[ipv6]` or `[ipv6]:port`.
 */
export function assertAllowedHost(value: unknown, argument: string): void {
  allowedHost(value, argument);
}

function allowedHost(value: unknown, argument: string): HostName {
  const parsed = typeof value === "string" ? parseHost(value) : undefined;
  if (parsed === undefined) {
    const got = typeof value === "string" ? JSON.stringify(value) : typeof value;
    throw new ValidationError(
      `"${argument}" must be a host name as a Host header carries it — name, name:port, ` +
        `[ipv6] or [ipv6]:port, internationalized names in their xn-- form — got ${got}`,
    );
  }
  return parsed;
}

/**
 * @throws ValidationError for a value that is not a non-empty array of host names, each `name`,
 *   `name:port`, `[ipv6]` or `[ipv6]:port`.
 */
export function parseAllowedHosts(value: unknown): AllowedHosts {
  // A single string is the likeliest slip; iterated, it would allow its characters one by one.
  if (!Array.isArray(value) || value.length === 0) {
    throw new ValidationError(
      `"allowedHosts" expected a non-empty array of host names (["kms.internal", "kms.internal:8443"]), ` +
        "or to be left out to accept any Host",
    );
  }
  const anyPort = new Set<string>();
  const withPort = new Set<string>();
  // Indexed, not forEach: a hole in a sparse array is an entry missing, not one to skip.
  for (let i = 0; i < value.length; i++) {
    const parsed = allowedHost(value[i], `allowedHosts[${i}]`);
    if (parsed.port === undefined) anyPort.add(parsed.name);
    else withPort.add(`${parsed.name}:${parsed.port}`);
  }
  return {
    accepts(host) {
      const parsed = parseHost(host);
      if (parsed === undefined) return false;
      if (anyPort.has(parsed.name)) return true;
      if (parsed.port !== undefined) return withPort.has(`${parsed.name}:${parsed.port}`);
      return DEFAULT_PORTS.some((port) => withPort.has(`${parsed.name}:${port}`));
    },
  };
}
