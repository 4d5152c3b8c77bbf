/**
 * Shared parts of the raw-socket property suites of the HTTP adapters (express, nestjs):
 * seeded request generators, a client that sends exactly the given field lines, and a
 * collector of findings. Test code only.
 */
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import http from "node:http";
import { expect } from "vitest";
import { mulberry32 } from "./random.ts";

// --- seeded randomness ---------------------------------------------------------------------

/** Seeded choices by range, for request generators; one seed reproduces a whole case. */
export class CaseRandom {
  readonly next: () => number;

  constructor(seed: number) {
    this.next = mulberry32(seed);
  }

  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  bool(p = 0.5): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    const value = items[this.int(0, items.length - 1)];
    if (value === undefined) throw new Error("pick from an empty list");
    return value;
  }

  string(alphabet: string, min: number, max: number): string {
    let out = "";
    for (let n = this.int(min, max); n > 0; n--) out += alphabet[this.int(0, alphabet.length - 1)];
    return out;
  }

  bytes(min: number, max: number): Buffer {
    const out = Buffer.alloc(this.int(min, max));
    for (let i = 0; i < out.length; i++) out[i] = this.int(0, 255);
    return out;
  }
}

/** An independent stream per (property, case), so one case replays without the others. */
export const caseRandom = (seed: number, property: number, index: number): CaseRandom =>
  new CaseRandom(seed ^ Math.imul(property * 65_536 + index + 1, 0x9e3779b1));

export const range = (from: number, to: number): string =>
  String.fromCharCode(...Array.from({ length: to - from + 1 }, (_, i) => from + i));
export const LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789";
export const ALNUM = `ABCDEFGHIJKLMNOPQRSTUVWXYZ${LOWER_ALNUM}`;
export const TENANT_CHARS = `${ALNUM}._:-`;
export const LATIN1_HIGH = range(0x80, 0xff);
// Everything Node lets a field value carry on the wire: HTAB, SP, visible ASCII and obs-text.
export const FIELD_CHARS = `\t${range(0x20, 0x7e)}${LATIN1_HIGH}`;
export const VISIBLE_CHARS = `${range(0x21, 0x7e)}${LATIN1_HIGH}`;
// Path characters the WHATWG parser leaves alone (no percent-encoding, no backslash).
export const PATH_CHARS = `${ALNUM}-_~!$&'()*+,;=:@`;

/** A token that cannot occur in any problem text by chance. */
export const marker = (r: CaseRandom): string => `zq${r.string(LOWER_ALNUM, 14, 14)}`;

export const stripOws = (value: string): string => value.replace(/^[ \t]+|[ \t]+$/g, "");

// --- raw HTTP --------------------------------------------------------------------------------

export type HeaderPair = readonly [name: string, value: string];

export interface RawRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: readonly HeaderPair[];
  readonly body?: Buffer | undefined;
  /** Transfer-Encoding: chunked, written in pieces, instead of Content-Length. */
  readonly chunked?: boolean | undefined;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly distinct: IncomingMessage["headersDistinct"];
  readonly body: Buffer;
}

/** Sends exactly the given field lines (duplicates and latin1 bytes included), no agent. */
export function sendRaw(
  port: number,
  request: RawRequest,
  timeoutMs: number,
): Promise<RawResponse> {
  const headers: string[] = [];
  for (const [name, value] of request.headers) headers.push(name, value);
  const body = request.body;
  if (body !== undefined) {
    headers.push(
      ...(request.chunked
        ? ["transfer-encoding", "chunked"]
        : ["content-length", `${body.length}`]),
    );
  }
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      method: request.method,
      path: request.path,
      headers,
      setHost: false,
      agent: false,
    });
    req.on("error", reject);
    // A response that never ends is a finding (a hung client), not a test timeout.
    req.setTimeout(timeoutMs, () => req.destroy(new Error("no answer within the timeout")));
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          distinct: res.headersDistinct,
          body: Buffer.concat(chunks),
        }),
      );
    });
    if (body !== undefined && request.chunked) {
      const cut = Math.floor(body.length / 2);
      if (cut > 0) req.write(body.subarray(0, cut));
      req.end(body.subarray(cut));
    } else {
      req.end(body);
    }
  });
}

/** The outcome of a send, connection failures included: they are findings, not test errors. */
export async function attemptRaw(
  port: number,
  request: RawRequest,
  timeoutMs: number,
): Promise<RawResponse | { readonly error: string }> {
  try {
    return await sendRaw(port, request, timeoutMs);
  } catch (error) {
    return { error: String(error) };
  }
}

export function fieldRecord(pairs: readonly HeaderPair[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    out[key] = [...(out[key] ?? []), value];
  }
  return out;
}

/** What a client shows when reporting a case: values cut short, bytes escaped. */
export function describeRequest(request: RawRequest): string {
  const cut = (s: string): string => (s.length > 80 ? `${s.slice(0, 80)}…(${s.length})` : s);
  return JSON.stringify({
    method: request.method,
    path: cut(request.path),
    headers: request.headers.map(([n, v]) => `${n}: ${cut(v)}`),
    body: request.body === undefined ? undefined : cut(request.body.toString("latin1")),
    chunked: request.chunked,
  }).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Collects property violations by kind, so one run reports every failing kind (with its first
 * counterexample) rather than stopping at the first case.
 */
export class Findings {
  readonly #seed: number;
  readonly #kinds = new Map<string, { count: number; first: string }>();

  constructor(seed: number) {
    this.#seed = seed;
  }

  add(kind: string, counterexample: string): void {
    const known = this.#kinds.get(kind);
    if (known === undefined) this.#kinds.set(kind, { count: 1, first: counterexample });
    else known.count++;
  }

  expectNone(property: string): void {
    const report = [...this.#kinds]
      .map(([kind, { count, first }]) => `■ ${kind} (×${count}), first:\n${first}`)
      .join("\n\n");
    expect(this.#kinds.size, `${property}, seed ${this.#seed}:\n\n${report}`).toBe(0);
  }
}

// The default tenant resolver's rule: the oracle for "a valid tenant".
export const TENANT_RULE = /^[A-Za-z0-9._:-]{1,128}$/;

// --- generators ----------------------------------------------------------------------------

export interface TenantCase {
  readonly label: string;
  /** Field lines of the tenant header, in order (none: the header is absent). */
  readonly lines: readonly string[];
}

/** The tenant the documented rule takes from these lines, or undefined for a refusal. */
export function tenantOf(lines: readonly string[]): string | undefined {
  // Repeated lines reach the application joined with ", ", which no valid tenant contains.
  if (lines.length !== 1) return undefined;
  const value = stripOws(lines[0] as string);
  return TENANT_RULE.test(value) ? value : undefined;
}

export function tenantCase(r: CaseRandom): TenantCase {
  const valid = (min: number, max: number): string => r.string(TENANT_CHARS, min, max);
  switch (r.int(0, 11)) {
    case 0:
      return { label: "missing", lines: [] };
    case 1:
      return { label: "empty", lines: [""] };
    case 2:
      return { label: "valid", lines: [valid(1, 24)] };
    case 3:
      return { label: "valid, 128 chars", lines: [valid(128, 128)] };
    case 4:
      return { label: "too long", lines: [valid(129, 4000)] };
    case 5:
      return {
        label: "latin1",
        lines: [`${valid(0, 8)}${r.string(LATIN1_HIGH, 1, 3)}${valid(0, 8)}`],
      };
    case 6:
      return {
        label: "separators",
        lines: [
          `${valid(0, 6)}${r.pick([",", '"', ";", " ", ", ", "\t", "=", "/"])}${valid(1, 6)}`,
        ],
      };
    case 7:
      return { label: "duplicated", lines: [valid(1, 12), valid(1, 12)] };
    case 8:
      return {
        label: "OWS around",
        lines: [`${r.pick([" ", "\t", " \t"])}${valid(1, 16)}${r.pick(["", " ", "\t "])}`],
      };
    case 9:
      return { label: "random bytes", lines: [r.string(FIELD_CHARS, 0, 60)] };
    case 10:
      return { label: "whitespace only", lines: [r.pick([" ", "\t", "  \t "])] };
    default:
      return {
        label: "valid with separators",
        lines: [`${valid(1, 4)}:${valid(1, 4)}.${valid(1, 4)}`],
      };
  }
}

export const METHODS = [
  "GET",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
  "HEAD",
  "PROPFIND",
  "SEARCH",
  "PURGE",
];

export const COMPONENT_IDS = [
  '"@method"',
  '"@target-uri"',
  '"@authority"',
  '"@path"',
  '"@query"',
  '"@query-param";name="q"',
  '"@status"',
  '"@signature-params"',
  '"@method";req',
  '"content-digest"',
  '"content-type"',
  '"content-type";sf',
  '"x-tenant-id"',
  '"x-tenant-id";bs',
  '"x-secret"',
  '"x-absent"',
  '"signature";key="sig1"',
];

export const FRAGMENTS = [
  "sig1",
  "sig1=",
  "sig2=",
  "=",
  "(",
  ")",
  "()",
  '"@method"',
  '"@target-uri"',
  '"x-tenant-id"',
  ";created=",
  ";expires=",
  ";keyid=",
  '"client-1"',
  ";nonce=",
  ";alg=",
  ":",
  "::",
  ":AAAA:",
  ",",
  ", ",
  '"',
  "\\",
  "?1",
  "*",
  "\t",
  "é",
  "ÿ",
  "1.5",
  "-1",
  "9999999999999999",
  ";",
  "==",
];

export function junkField(r: CaseRandom): string {
  if (r.bool(0.05)) return r.string(FIELD_CHARS, 200, 1500);
  let out = "";
  for (let n = r.int(0, 14); n > 0; n--) {
    out += r.bool(0.7) ? r.pick(FRAGMENTS) : r.string(FIELD_CHARS, 1, 5);
  }
  return out;
}

/** Signature fields that parse, so the checks after parsing are reached too. */
export function wellFormedPair(r: CaseRandom, now: number): { input: string; signature: string } {
  const label = r.pick(["sig1", "sig1", "sig1", "sig2", "a"]);
  const ids = Array.from({ length: r.int(0, 5) }, () => r.pick(COMPONENT_IDS));
  let params = "";
  if (r.bool(0.9)) params += `;created=${r.pick([now, now - 5, now - 100_000, now + 1000])}`;
  if (r.bool(0.2)) params += `;expires=${r.pick([now + 60, now - 600])}`;
  if (r.bool(0.7)) params += `;nonce="${r.string(ALNUM, 1, 16)}"`;
  if (r.bool(0.85)) {
    params += `;keyid="${r.pick(["client-1", "client-async", "client-kms", "nobody"])}"`;
  }
  if (r.bool(0.1)) params += `;alg="${r.pick(["hmac-sha256", "ed25519", "rot13"])}"`;
  if (r.bool(0.1)) params += ';tag="t"';
  const signatureLabel = r.bool(0.9) ? label : r.pick(["sig1", "sig2"]);
  return {
    input: `${label}=(${ids.join(" ")})${params}`,
    signature: `${signatureLabel}=:${r.bytes(0, 48).toString("base64")}:`,
  };
}

/** `invalidEscapes`: some segments start with a `%` escape that is not hex. */
export function randomPath(r: CaseRandom, invalidEscapes = true): string {
  const segments = Array.from({ length: r.int(1, 4) }, () => {
    // A segment of dots only is a dot-segment, which property 2 covers on its own.
    const s = r.string(PATH_CHARS, 1, 10);
    return r.bool(0.1)
      ? `%${r.string(invalidEscapes ? "0123456789ABCDEFabcdefzZ" : "0123456789ABCDEFabcdef", 2, 2)}${s}`
      : s;
  });
  return `/r/${segments.join("/")}`;
}

export function randomQuery(r: CaseRandom): string {
  if (r.bool(0.4)) return "";
  const pairs = Array.from(
    { length: r.int(0, 4) },
    () =>
      `${r.string(`${ALNUM}%/?:@`, 0, 6)}${r.bool(0.8) ? "=" : ""}${r.string(`${ALNUM}%/?:@,;'`, 0, 10)}`,
  );
  return `?${pairs.join(r.pick(["&", "&&", ";"]))}`;
}

// --- mutations of a signed request ----------------------------------------------------------

export const replaceHeader = (
  headers: readonly HeaderPair[],
  name: string,
  value: string | undefined,
): HeaderPair[] =>
  headers.flatMap(([n, v]): HeaderPair[] =>
    n !== name ? [[n, v]] : value === undefined ? [] : [[n, value]],
  );

export /** One char replaced, inserted or deleted at a random position at or after `from`. */
function charMutation(r: CaseRandom, text: string, from: number, alphabet: string): string {
  for (;;) {
    const at = r.int(from, text.length);
    const ch = r.pick([...alphabet]);
    const op = r.int(0, 2);
    const out =
      op === 0 && at < text.length
        ? text.slice(0, at) + ch + text.slice(at + 1)
        : op === 1 || at >= text.length
          ? text.slice(0, at) + ch + text.slice(at)
          : text.slice(0, at) + text.slice(at + 1);
    if (out !== text) return out;
  }
}

/** The Signature-Input field with `edit` applied to the member's parameters or inner list. */
function editInput(request: RawRequest, edit: (input: string) => string): RawRequest {
  const input = request.headers.find(([n]) => n === "signature-input")?.[1] ?? "";
  const changed = edit(input);
  if (changed === input) throw new Error(`the mutation left ${input} unchanged`);
  return { ...request, headers: replaceHeader(request.headers, "signature-input", changed) };
}

/** Mutations of the Signature-Input parameters and component list (created, expires, …). */
export const INPUT_MUTATIONS = [
  "created",
  "expires",
  "keyid",
  "alg",
  "nonce",
  "components",
] as const;
export type InputMutation = (typeof INPUT_MUTATIONS)[number];

/**
 * The signed `request` with its Signature-Input changed in one respect. Every parameter is in
 * the signature base (`@signature-params`), so each must be refused.
 */
export function mutateInput(r: CaseRandom, request: RawRequest, kind: InputMutation): RawRequest {
  switch (kind) {
    case "created":
      return editInput(request, (input) =>
        input.replace(
          /;created=(\d+)/,
          (_, n: string) => `;created=${Number(n) + r.pick([-1, 1, -30, 7, 3600])}`,
        ),
      );
    case "expires":
      return editInput(request, (input) =>
        /;expires=\d+/.test(input)
          ? r.bool()
            ? input.replace(
                /;expires=(\d+)/,
                (_, n: string) => `;expires=${Number(n) + r.pick([-1, 1, 60])}`,
              )
            : input.replace(/;expires=\d+/, "")
          : input.replace(/;created=(\d+)/, (m, n: string) => `${m};expires=${Number(n) + 120}`),
      );
    case "keyid":
      return editInput(request, (input) =>
        input.replace(/;keyid="([^"]*)"/, (_, id: string) => {
          const others = ["client-1", "client-async", "client-kms", "nobody", ""].filter(
            (k) => k !== id,
          );
          return `;keyid="${r.pick(others)}"`;
        }),
      );
    case "alg":
      return editInput(request, (input) =>
        /;alg="/.test(input)
          ? input.replace(/;alg="[^"]*"/, r.pick(["", ';alg="ed25519"', ';alg="hmac-sha512"']))
          : `${input};alg="hmac-sha256"`,
      );
    case "nonce":
      return editInput(request, (input) =>
        input.replace(
          /;nonce="([^"]*)"/,
          (_, nonce: string) => `;nonce="${charMutation(r, nonce, 0, ALNUM)}"`,
        ),
      );
    case "components":
      return editInput(request, (input) =>
        input.replace(/\(([^)]*)\)/, (_, list: string) => {
          const ids = list.split(" ");
          if (r.bool()) ids.splice(r.int(0, ids.length - 1), 1);
          else {
            const at = r.int(0, ids.length - 2);
            [ids[at], ids[at + 1]] = [ids[at + 1] as string, ids[at] as string];
          }
          return `(${ids.join(" ")})`;
        }),
      );
  }
}
