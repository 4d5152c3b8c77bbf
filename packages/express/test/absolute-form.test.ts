/**
 * Absolute-form request targets (`GET http://a.example/orders/42 HTTP/1.1`, RFC 9112 §3.2.2)
 * through verifySignature and Express's router, over raw sockets so every byte of the request
 * line is the test's own. Node keeps the absolute form in `req.url` / `req.originalUrl`, and
 * Express's router parses it with Node's legacy `url.parse`; a signature must verify only when
 * the handler that runs is the one for the signed path, host and scheme.
 */
import type { Server } from "node:http";
import { connect } from "node:net";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
} from "@kms/http-signatures";
import { mulberry32 } from "@kms/tooling/random";
import express, { type Request, type Response } from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifySignature } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const SECRET = new Uint8Array(32).fill(0x42);
const client = createHmacSigner(SECRET, { keyId: "client" });
const COMPONENTS: readonly ComponentSpec[] = [
  "@method",
  "@target-uri",
  "@authority",
  "@scheme",
  "@path",
  "@query",
];
const SEED = Number(process.env.KMS_PROPERTY_SEED ?? 20_261_204) >>> 0;

/** What the handler that ran saw; the test compares it with what was signed. */
interface Handled {
  readonly route: string;
  readonly path: string;
  readonly hostname: string | undefined;
  readonly protocol: string;
}

interface Answer {
  readonly status: number;
  readonly handled?: Handled;
  readonly type?: string;
}

let server: Server;
let port: number;

beforeAll(async () => {
  const app = express();
  app.use(
    verifySignature({
      keyLookup: (id) => (id === "client" ? createHmacVerifier(SECRET) : undefined),
      requiredComponents: ["@method", "@path", "@authority", "@scheme"],
    }),
  );
  const answer = (route: string) => (req: Request, res: Response) => {
    const handled: Handled = {
      route,
      path: req.path,
      hostname: req.hostname,
      protocol: req.protocol,
    };
    res.json(handled);
  };
  const api = express.Router();
  api.get("/orders/:id", answer("api-orders"));
  app.use("/api", api);
  app.get("/orders/:id", answer("orders"));
  app.get("/admin/{*rest}", answer("admin"));
  app.get("/q/it's", answer("quoted"));
  app.get("/q/:name", answer("q-param"));
  app.use(answer("fallback"));
  let origin: string;
  ({ server, origin } = await listen(app));
  port = Number(new URL(origin).port);
});
afterAll(() => close(server));

/** Sends the request line and fields byte for byte (latin1) and reads the whole answer. */
function sendRaw(target: string, fields: Record<string, string>): Promise<Answer> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const finish = (): void => {
      const text = Buffer.concat(chunks).toString("latin1");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const body = text.slice(text.indexOf("\r\n\r\n") + 4);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        parsed = undefined;
      }
      const record = (parsed ?? {}) as Partial<Handled> & { type?: string };
      resolve({
        status,
        ...(typeof record.route === "string" ? { handled: record as Handled } : {}),
        ...(typeof record.type === "string" ? { type: record.type } : {}),
      });
    };
    socket.setTimeout(2000, () => socket.destroy());
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("close", finish);
    socket.on("error", () => undefined);
    let head = `GET ${target} HTTP/1.1\r\n`;
    for (const [name, value] of Object.entries(fields)) head += `${name}: ${value}\r\n`;
    socket.end(Buffer.from(`${head}connection: close\r\n\r\n`, "latin1"));
  });
}

async function signatureFor(url: string): Promise<Record<string, string>> {
  return signRequest(
    { method: "GET", url, headers: {} },
    { signer: client, components: COMPONENTS },
  );
}

const authorityOf = (target: string): string => /^[^:]*:\/\/([^/?#]*)/.exec(target)?.[1] ?? "";

/** The handler's view must be the signed URL's: route path, host and scheme. */
function expectSignedView(answer: Answer, signedUrl: string): void {
  const url = new URL(signedUrl);
  expect(answer.handled, JSON.stringify(answer)).toBeDefined();
  expect(answer.handled?.path).toBe(url.pathname);
  // Express gives the Host field's host as sent; hosts compare case-insensitively.
  expect(answer.handled?.hostname?.toLowerCase()).toBe(url.hostname);
  expect(answer.handled?.protocol).toBe(url.protocol.slice(0, -1));
}

describe("absolute-form request targets on Express", () => {
  it("verifies a signed absolute-form request and runs the handler for the signed path", async () => {
    const url = "http://a.example/orders/42?x=1";
    const answer = await sendRaw(url, { host: "a.example", ...(await signatureFor(url)) });
    expect(answer.status).toBe(200);
    expect(answer.handled?.route).toBe("orders");
    expectSignedView(answer, url);
  });

  it("accepts the same signature in origin form and with the scheme and host in upper case", async () => {
    const url = "http://a.example/orders/42";
    const signature = await signatureFor(url);
    for (const [target, host] of [
      ["/orders/42", "a.example"],
      ["HTTP://A.EXAMPLE/orders/42", "A.EXAMPLE"],
      ["http://a.example/orders/42", "A.example"],
    ] as const) {
      const answer = await sendRaw(target, { host, ...signature });
      expect(answer.status, target).toBe(200);
      expect(answer.handled?.route).toBe("orders");
      expectSignedView(answer, url);
    }
  });

  it("verifies an absolute-form request to a mounted router", async () => {
    const url = "http://a.example:8080/api/orders/7";
    const answer = await sendRaw(url, { host: "a.example:8080", ...(await signatureFor(url)) });
    expect(answer.status).toBe(200);
    expect(answer.handled?.route).toBe("api-orders");
    // Inside the mount Express strips /api from req.path; the signed path is the original one.
    expect(answer.handled?.path).toBe("/orders/7");
  });

  // Each request carries a valid signature for `signed` but a target (or Host) that a URL parser
  // normalizes back to it while the router dispatches elsewhere, or that the application would
  // see with another host or scheme. All must be refused before any handler runs.
  const mutations: [name: string, signed: string, target: string, host: string][] = [
    [
      "a dot segment detour through /admin",
      "http://a.example/orders/42",
      "http://a.example/admin/x/../../orders/42",
      "a.example",
    ],
    [
      "a %2e%2e detour",
      "http://a.example/orders/42",
      "http://a.example/admin/x/%2e%2E/../orders/42",
      "a.example",
    ],
    [
      "backslashes the router reads as slashes",
      "http://a.example/orders/42",
      "http://a.example/admin\\..\\orders/42",
      "a.example",
    ],
    [
      "a quote the router escapes (a different route)",
      "http://a.example/q/it's",
      "http://a.example/q/it's",
      "a.example",
    ],
    [
      "an authority the router splits into the path",
      "http://a.example;x/orders/42",
      "http://a.example;x/orders/42",
      "a.example;x",
    ],
    [
      "a percent-encoded host",
      "http://a.example/orders/42",
      "http://a%2eexample/orders/42",
      "a%2eexample",
    ],
    [
      "a numeric IPv4 host",
      "http://127.0.0.1/orders/42",
      "http://2130706433/orders/42",
      "2130706433",
    ],
    [
      "a Host that differs from the target",
      "http://a.example/orders/42",
      "http://a.example/orders/42",
      "evil.example",
    ],
    [
      "a Host with a path",
      "http://a.example/orders/42",
      "http://a.example/orders/42",
      "a.example/admin",
    ],
    ["userinfo", "http://a.example/orders/42", "http://user@a.example/orders/42", "a.example"],
    ["a fragment", "http://a.example/orders/42", "http://a.example/orders/42#top", "a.example"],
    [
      "an https target on a plain connection",
      "https://a.example/orders/42",
      "https://a.example/orders/42",
      "a.example",
    ],
    [
      "a bad port",
      "http://a.example/orders/42",
      "http://a.example:99999/orders/42",
      "a.example:99999",
    ],
    [
      "a port with a leading zero",
      "http://a.example:80/orders/42",
      "http://a.example:080/orders/42",
      "a.example:080",
    ],
    ["an ftp scheme", "http://a.example/orders/42", "ftp://a.example/orders/42", "a.example"],
  ];

  it.each(mutations)("refuses %s", async (_name, signed, target, host) => {
    const answer = await sendRaw(target, { host, ...(await signatureFor(signed)) });
    expect(answer.handled, `handler ${answer.handled?.route} ran`).toBeUndefined();
    expect(answer.status).toBe(401);
    expect(answer.type).toBe("https://kms.dev/problems/signature/components");
  });

  it("refuses asterisk form and authority form", async () => {
    const signature = await signatureFor("http://a.example/");
    for (const target of ["*", "a.example:80"]) {
      const answer = await sendRaw(target, { host: "a.example", ...signature });
      expect(answer.handled, target).toBeUndefined();
      expect([400, 401]).toContain(answer.status);
    }
  });
});

// --- property: one-character changes of a signed absolute-form target ------------------------

const PATH_ALPHABET = "abcxyz019-._~!$&()*+,;=:@";
const MUTATION_CHARS = [..."/\\.%?#@:;'\"[] \taZ09-_~=&+", "%2e", "%2E", "%2F", "%5C", "\u00e9"];

describe("absolute-form targets under one-character changes (property-based)", () => {
  it("runs a handler only for the signed path, host and scheme", async () => {
    const next = mulberry32(SEED ^ 0xab50);
    const int = (n: number): number => Math.floor(next() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
    const word = (min: number, max: number): string =>
      Array.from({ length: min + int(max - min + 1) }, () => pick([...PATH_ALPHABET])).join("");
    for (let i = 0; i < 250; i++) {
      const host = pick(["a.example", "b.example:8080", "127.0.0.1", "[::1]:9000"]);
      const route = pick(["/orders/", "/admin/", "/q/", "/api/orders/", "/"]);
      const query = int(3) === 0 ? "" : `?${word(0, 6)}`;
      const url = `http://${host}${route}${word(1, 8)}${query}`;
      const signature = await signatureFor(url);
      const kind = int(3);
      const at = int(url.length + 1);
      const ch = pick(MUTATION_CHARS);
      // Every tenth case is sent unchanged: the control that makes the refusals meaningful.
      const target =
        i % 10 === 0
          ? url
          : kind === 0
            ? url.slice(0, at) + ch + url.slice(at)
            : kind === 1
              ? url.slice(0, at) + url.slice(at + 1)
              : url.slice(0, at) + ch + url.slice(at + 1);
      // The Host field either stays or follows a changed authority, so the authority and path
      // rules are reached rather than the Host comparison alone.
      const fieldHost = int(2) === 0 ? host : authorityOf(target) || host;
      const context = `case ${i} (seed ${SEED}): ${JSON.stringify(target)} Host ${fieldHost}`;
      const answer = await sendRaw(target, { host: fieldHost, ...signature });
      if (i % 10 === 0) expect(answer.status, context).toBe(200);
      if (answer.handled === undefined) {
        // Node's parser (400), verification (401), or Express's router, which answers 404 from
        // its final handler before any middleware when url.parse throws (a port like `9Z00`).
        expect([400, 401, 404], context).toContain(answer.status);
        continue;
      }
      expect(answer.status, context).toBe(200);
      const signed = new URL(url);
      expect(answer.handled.hostname?.toLowerCase(), context).toBe(signed.hostname);
      expect(answer.handled.protocol, context).toBe("http");
      // A mounted router strips its prefix from req.path; the original path is what was signed.
      const routedPath =
        answer.handled.route === "api-orders" ? `/api${answer.handled.path}` : answer.handled.path;
      expect(routedPath, context).toBe(signed.pathname);
    }
  });
});
