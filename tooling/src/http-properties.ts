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
