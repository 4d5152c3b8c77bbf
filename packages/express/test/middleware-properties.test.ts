/**
 * Property tests of the Express middleware over real sockets. The middleware faces whatever a
 * client sends, so requests are written with Node's http.request from raw header pairs (which
 * allows duplicated fields and latin1 bytes a fetch client would refuse), and every answer is
 * checked from the wire: a failure must be a documented problem+json that never reaches the
 * handler, a success must carry a signature that verifies, and the ambient encryption context
 * must be the request's own tenant even when requests interleave.
 *
 * Cases come from a seeded PRNG (fast-check is not a dependency of this package): set
 * KMS_PROPERTY_SEED to replay another run; every reported counterexample names its seed and case.
 */

import type { Server } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { createKms, currentEncryptionContext, type EncryptionContext, type Kms } from "@kms/core";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  createKmsSigner,
  createKmsVerifier,
  MemoryNonceStore,
  type MessageSigner,
  type MessageVerifier,
  type RequestMessage,
  signRequest,
  VERIFICATION_CHECKS,
  type VerificationResult,
  verifyMessage,
} from "@kms/http-signatures";
import {
  ALNUM,
  attemptRaw,
  CaseRandom,
  charMutation,
  describeRequest,
  FIELD_CHARS,
  Findings,
  fieldRecord,
  type HeaderPair,
  INPUT_MUTATIONS,
  junkField,
  METHODS,
  marker,
  mutateInput,
  PATH_CHARS,
  type RawRequest,
  type RawResponse,
  randomPath,
  randomQuery,
  replaceHeader,
  sendRaw,
  caseRandom as sharedCaseRandom,
  stripOws,
  TENANT_CHARS,
  TENANT_RULE,
  tenantCase,
  tenantOf,
  VISIBLE_CHARS,
  wellFormedPair,
} from "@kms/tooling/http-properties";
import express, { type NextFunction, type Request, type Response } from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  captureRawBody,
  kmsContext,
  kmsContextOf,
  type SignResponseOptions,
  signResponse,
  type VerifySignatureOptions,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const SEED = Number(process.env.KMS_PROPERTY_SEED ?? 20_261_204) >>> 0;
const BODY_LIMIT = 2048;
const ANSWER_TIMEOUT_MS = 2000;
const PROBLEM_BASE = "https://kms.dev/problems/";

const DOCUMENTED_CHECKS: ReadonlySet<string> = new Set(VERIFICATION_CHECKS);

const caseRandom = (property: number, index: number): CaseRandom =>
  sharedCaseRandom(SEED, property, index);
const send = (port: number, request: RawRequest): Promise<RawResponse> =>
  sendRaw(port, request, ANSWER_TIMEOUT_MS);
const attempt = (port: number, request: RawRequest) => attemptRaw(port, request, ANSWER_TIMEOUT_MS);
// --- the problem+json contract -----------------------------------------------------------

interface ExpectedProblem {
  readonly status: number;
  /** The `type` suffix after the problem base, or a check name for 401. */
  readonly type: string;
}

/** Every way `res` departs from the documented problem answer (empty when it conforms). */
function problemViolations(
  res: RawResponse,
  method: string,
  expected: ExpectedProblem | undefined,
  markers: readonly string[],
): string[] {
  const out: string[] = [];
  if (![400, 401, 413].includes(res.status)) out.push(`status ${res.status}`);
  if (expected !== undefined && res.status !== expected.status) {
    out.push(`status ${res.status}, expected ${expected.status}`);
  }
  if (!/^application\/problem\+json(;|$)/.test(res.headers["content-type"] ?? "")) {
    out.push(`content-type ${res.headers["content-type"]}`);
  }
  if (res.status === 401 && res.headers["www-authenticate"] !== "Signature") {
    out.push(`www-authenticate ${res.headers["www-authenticate"]}`);
  }
  const text = res.body.toString("latin1");
  for (const mark of markers) if (text.includes(mark)) out.push(`body echoes ${mark}`);
  if (method === "HEAD") return out;
  let problem: Record<string, unknown>;
  try {
    problem = JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  } catch {
    return [...out, `body is not JSON: ${text.slice(0, 120)}`];
  }
  const { type, title, status, detail, check } = problem;
  if (typeof type !== "string" || !type.startsWith(PROBLEM_BASE)) out.push(`type ${type}`);
  if (typeof title !== "string" || title.length === 0) out.push(`title ${title}`);
  if (typeof detail !== "string" || detail.length === 0) out.push(`detail ${detail}`);
  if (status !== res.status) out.push(`body status ${status} on a ${res.status}`);
  if (res.status === 401) {
    if (typeof check !== "string" || !DOCUMENTED_CHECKS.has(check)) {
      out.push(`check ${check}`);
    } else if (type !== `${PROBLEM_BASE}signature/${check}`) {
      out.push(`type ${type} for check ${check}`);
    }
  } else if (
    type !== `${PROBLEM_BASE}signature/body` &&
    type !== `${PROBLEM_BASE}context/tenant-missing`
  ) {
    out.push(`type ${type} on a ${res.status}`);
  }
  if (expected !== undefined) {
    const wanted =
      expected.status === 401
        ? `${PROBLEM_BASE}signature/${expected.type}`
        : `${PROBLEM_BASE}${expected.type}`;
    if (expected.type !== "*" && type !== wanted) out.push(`type ${type}, expected ${wanted}`);
  }
  return out;
}

// --- keys, policies and the apps under test -------------------------------------------------

const clientSecret = Buffer.alloc(32, 0x31);
const serverSecret = Buffer.alloc(32, 0x53);
const clientSigner = createHmacSigner(clientSecret, { keyId: "client-1" });
const clientVerifier = createHmacVerifier(clientSecret);
const serverSigner = createHmacSigner(serverSecret, { keyId: "server" });
const serverVerifier = createHmacVerifier(serverSecret);

let kms: Kms;
let clientKmsKey: string;
let serverKmsKey: string;
let kmsClientSigner: MessageSigner;
let kmsServerVerifier: MessageVerifier;

/** Handler invocations by x-case-id: a failing request must never add one. */
const reached = new Set<string>();

let verifyServer: Server;
let verifyPort: number;
let contextServer: Server;
let contextPort: number;
let responseServer: Server;
let responsePort: number;

/** Records the handler run, then answers what it saw so the client can compare. */
function echoHandler(req: Request, res: Response): void {
  reached.add(req.get("x-case-id") ?? "");
  res.json({
    method: req.method,
    originalUrl: req.originalUrl,
    tenant: currentEncryptionContext()?.tenant ?? null,
  });
}

const contextSeen = new Map<string, (EncryptionContext | undefined)[]>();

/** Reads the ambient context before and after each awaited step the client asked for. */
async function contextHandler(req: Request, res: Response): Promise<void> {
  const id = req.get("x-case-id") ?? "";
  reached.add(id);
  const seen = [currentEncryptionContext()];
  for (const step of (req.get("x-steps") ?? "").split(",").filter((s) => s !== "")) {
    if (step === "immediate") await new Promise((resolve) => setImmediate(resolve));
    else if (step === "microtask") await Promise.resolve();
    else await sleep(Number(step));
    seen.push(currentEncryptionContext());
  }
  contextSeen.set(id, seen);
  res.json({
    id,
    seen,
    ofRequest: kmsContextOf(req)?.encryptionContext ?? null,
    principal: kmsContextOf(req)?.principal ?? null,
  });
}

const failingSyncSigner: MessageSigner = {
  algorithm: "hmac-sha256",
  keyId: "down",
  sign: () => Promise.reject(new Error("HSM offline")),
  signSync: () => {
    throw new Error("HSM offline");
  },
};
const failingAsyncSigner: MessageSigner = {
  algorithm: "hmac-sha256",
  keyId: "down",
  sign: () => Promise.reject(new Error("KMS unreachable")),
};

const OUTCOMES = [
  "json",
  "send-string",
  "send-buffer",
  "chunks",
  "empty",
  "no-content",
  "not-modified",
  "send-status",
  "redirect",
  "throw",
  "reject",
  "next-error",
  "next",
  "write-then-throw",
  "write-head",
  "flush-headers",
] as const;
type Outcome = (typeof OUTCOMES)[number];

/** A handler whose behaviour and content follow the case's seed (query `seed`, `mark`). */
async function outcomeHandler(req: Request, res: Response, next: NextFunction): Promise<void> {
  reached.add(req.get("x-case-id") ?? "");
  const r = new CaseRandom(Number(req.query.seed));
  const mark = String(req.query.mark);
  const text = (): string => `${mark} ${r.string(`${ALNUM} é€🙂\n"<>`, 0, 120)}`;
  switch (req.params.outcome as Outcome) {
    case "json":
      res.status(r.pick([200, 201, 202, 400, 404, 409])).json({ mark, n: r.int(0, 1e6) });
      return;
    case "send-string":
      res.send(text());
      return;
    case "send-buffer":
      res.send(Buffer.concat([Buffer.from(mark), r.bytes(0, 300)]));
      return;
    case "chunks": {
      res.type(r.pick(["text/plain", "application/octet-stream"]));
      for (let n = r.int(1, 5); n > 0; n--) {
        const kind = r.int(0, 2);
        if (kind === 0) res.write(text());
        else if (kind === 1) res.write(r.bytes(0, 64));
        else res.write(Buffer.from(text()).toString("hex"), "hex");
        if (r.bool(0.3)) await new Promise((resolve) => setImmediate(resolve));
      }
      if (r.bool()) res.end(text());
      else res.end();
      return;
    }
    case "empty":
      res.status(r.pick([200, 201, 202])).end();
      return;
    case "no-content":
      if (r.bool()) res.status(204).send(text());
      else res.status(204).end();
      return;
    case "not-modified":
      if (r.bool()) res.status(304).send(text());
      else res.status(304).end();
      return;
    case "send-status":
      res.sendStatus(r.pick([200, 201, 403, 418, 503]));
      return;
    case "redirect":
      res.redirect(r.pick([301, 302, 303, 307]), `/elsewhere?m=${mark}`);
      return;
    case "throw":
      throw new Error(`boom ${mark}`);
    case "reject":
      await sleep(1);
      throw new Error(`later boom ${mark}`);
    case "next-error":
      next(new Error(`passed on ${mark}`));
      return;
    case "next":
      next();
      return;
    case "write-then-throw":
      res.write(text());
      throw new Error(`boom after write ${mark}`);
    case "write-head":
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(text());
      return;
    case "flush-headers":
      res.status(200).type("text/plain");
      res.flushHeaders();
      res.end(text());
      return;
  }
}

/** The README's policy (with replay protection), over sync, async and KMS-backed keys. */
function requestPolicy(): VerifySignatureOptions {
  return {
    keyLookup: (id) => {
      if (id === "client-1") return clientVerifier;
      // An asynchronous lookup and a KMS verifier take the middleware's promise paths.
      if (id === "client-async") return Promise.resolve(clientVerifier);
      if (id === "client-kms") {
        return createKmsVerifier({ kms, keyId: clientKmsKey, algorithm: "hmac-sha256" });
      }
      return undefined;
    },
    requiredComponents: ["@method", "@target-uri"],
    contentDigest: "required",
    nonceStore: new MemoryNonceStore(),
    bodyLimit: BODY_LIMIT,
  };
}

beforeAll(async () => {
  kms = await createKms();
  const hmacKey = async (): Promise<string> =>
    (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })).keyMetadata
      .keyId;
  clientKmsKey = await hmacKey();
  serverKmsKey = await hmacKey();
  kmsClientSigner = createKmsSigner({
    kms,
    keyId: clientKmsKey,
    algorithm: "hmac-sha256",
    publishedKeyId: "client-kms",
  });
  kmsServerVerifier = createKmsVerifier({ kms, keyId: serverKmsKey, algorithm: "hmac-sha256" });

  // Properties 1 and 2: the README's stack, with a parser that captures and one that does not.
  const verifyApp = express();
  verifyApp.use("/json", express.json({ verify: captureRawBody }));
  verifyApp.use("/consumed", express.text({ type: () => true }));
  verifyApp.use(verifySignature(requestPolicy()));
  verifyApp.use(signResponse({ signer: serverSigner }));
  // The signed requests here cover x-tenant-id whenever they send it.
  verifyApp.use(kmsContext({ tenantHeader: "x-tenant-id" }));
  verifyApp.use(echoHandler);
  ({ server: verifyServer } = await listen(verifyApp));
  verifyPort = portOf(verifyServer);

  // Property 3: kmsContext alone, behind a stand-in authentication that may set req.user.
  const contextApp = express();
  contextApp.use((req, _res, next) => {
    const tenantId = req.get("x-test-user-tenant");
    if (tenantId !== undefined) {
      (req as unknown as { user: object }).user = {
        id: `user-${req.get("x-case-id")}`,
        tenantId,
      };
    }
    next();
  });
  contextApp.use(kmsContext({ tenantHeader: "x-tenant-id" }));
  contextApp.use(contextHandler);
  ({ server: contextServer } = await listen(contextApp));
  contextPort = portOf(contextServer);

  // Property 4: every handler outcome under a local, a KMS, a digest-less and failing signers.
  const responseApp = express();
  responseApp.use(verifySignature(requestPolicy()));
  const outcomes = express.Router();
  outcomes.all("/:outcome", outcomeHandler);
  const signers: Record<string, SignResponseOptions> = {
    ok: { signer: serverSigner },
    kms: {
      signer: createKmsSigner({ kms, keyId: serverKmsKey, algorithm: "hmac-sha256" }),
    },
    nodigest: { signer: serverSigner, digest: false },
    "fail-sync": { signer: failingSyncSigner },
    "fail-async": { signer: failingAsyncSigner },
  };
  for (const [mount, options] of Object.entries(signers)) {
    responseApp.use(`/${mount}`, signResponse(options), outcomes);
  }
  ({ server: responseServer } = await listen(responseApp));
  responsePort = portOf(responseServer);
});

afterAll(async () => {
  await Promise.all([close(verifyServer), close(contextServer), close(responseServer)]);
  await kms.close();
});

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("not listening");
  return address.port;
}

const originOf = (port: number): string => `http://127.0.0.1:${port}`;

// --- property 1 ------------------------------------------------------------------------------

interface FuzzCase {
  readonly request: RawRequest;
  readonly expected: ExpectedProblem;
  readonly markers: readonly string[];
}

async function fuzzCase(index: number): Promise<FuzzCase> {
  const r = caseRandom(1, index);
  const id = `p1-${index}`;
  const now = Math.floor(Date.now() / 1000);
  const mark = marker(r);
  const method = r.pick(METHODS);
  const route = r.pick(["raw", "raw", "raw", "json", "consumed", "root", "odd-target"] as const);
  let path: string;
  switch (route) {
    case "raw":
      path = `${randomPath(r)}${randomQuery(r)}`;
      break;
    case "json":
      path = `/json${randomQuery(r)}`;
      break;
    case "consumed":
      path = `/consumed${randomQuery(r)}`;
      break;
    case "root":
      path = `/${randomQuery(r)}`;
      break;
    case "odd-target":
      // Absolute-form, and asterisk-form where HTTP allows it.
      path =
        method === "OPTIONS" && r.bool()
          ? "*"
          : `http://${r.pick(["127.0.0.1", "example.test"])}:${verifyPort}${randomPath(r)}`;
      break;
  }

  let body: Buffer | undefined;
  let contentType: string | undefined;
  if (route === "json") {
    if (r.bool(0.8)) {
      body = Buffer.from(JSON.stringify({ m: mark, n: r.int(0, 1e9) }));
      contentType = "application/json";
    }
  } else if (route === "consumed") {
    if (r.bool(0.8)) {
      body = Buffer.from(`${mark} ${r.string(ALNUM, 0, 100)}`);
      contentType = "text/plain";
    }
  } else {
    const kind = r.int(0, 4);
    if (kind === 1) body = r.bytes(0, 400);
    else if (kind === 2) body = Buffer.from(`${mark}${r.string(FIELD_CHARS, 0, 200)}`, "latin1");
    else if (kind === 3) body = r.bytes(BODY_LIMIT + 1, 3 * BODY_LIMIT);
    else if (kind === 4) body = Buffer.alloc(0);
    if (r.bool(0.6))
      contentType = r.bool()
        ? junkField(r)
        : r.pick(["text/plain", "application/octet-stream", "application/json"]);
  }

  const tenant = tenantCase(r);
  const mode = r.pick([
    "none",
    "junk",
    "well-formed",
    "well-formed",
    "duplicated",
    "half",
    "valid",
  ] as const);
  // A validly signed request only fails when its tenant does; keep those to a refused tenant.
  let tenantLines = tenant.lines;
  const signable = mode === "valid" && route !== "odd-target" && (body?.length ?? 0) <= BODY_LIMIT;
  if (signable) {
    while (tenantOf(tenantLines) !== undefined) tenantLines = tenantCase(r).lines;
  }

  const headers: HeaderPair[] = [
    ["host", `127.0.0.1:${verifyPort}`],
    ["x-case-id", id],
  ];
  for (const line of tenantLines) headers.push(["x-tenant-id", line]);
  if (contentType !== undefined) headers.push(["content-type", contentType]);
  if (r.bool(0.5)) headers.push(["x-secret", mark]);
  if (r.bool(0.3)) headers.push(["authorization", `Bearer ${mark}`]);
  if (r.bool(0.2)) headers.push(["x-request-id", r.string(FIELD_CHARS, 0, 40)]);

  // Shuffled before signing (the order of repeated lines is part of a covered value), so
  // duplicated fields are not always adjacent; Host stays first for readability.
  for (let i = headers.length - 1; i > 1; i--) {
    const j = r.int(1, i);
    [headers[i], headers[j]] = [headers[j] as HeaderPair, headers[i] as HeaderPair];
  }

  if (signable) {
    const signed = await signRequest(
      {
        method,
        url: `${originOf(verifyPort)}${path}`,
        headers: headers.map(([n, v]) => [n, v] as [string, string]),
        body: body ?? new Uint8Array(0),
      },
      {
        signer: clientSigner,
        nonce: true,
        components: [
          "@method",
          "@target-uri",
          "content-digest",
          ...(tenantLines.length > 0 ? ["x-tenant-id"] : []),
          ...(headers.some(([n]) => n === "x-secret") ? ["x-secret"] : []),
        ],
      },
    );
    for (const [name, value] of Object.entries(signed)) headers.push([name, value]);
  } else if (mode !== "none") {
    const lines = (): { input: string; signature: string } =>
      mode === "junk" ? { input: junkField(r), signature: junkField(r) } : wellFormedPair(r, now);
    const first = lines();
    if (mode !== "half" || r.bool()) headers.push(["signature-input", first.input]);
    if (mode !== "half" || !headers.some(([n]) => n === "signature-input")) {
      headers.push(["signature", first.signature]);
    }
    if (mode === "duplicated") {
      const second = r.bool() ? first : lines();
      headers.push(["signature-input", second.input], ["signature", second.signature]);
    }
    if (body !== undefined && r.bool(0.7)) {
      headers.push([
        "content-digest",
        r.pick([computeContentDigest(body), "sha-256=:AA==:", junkField(r)]),
      ]);
      if (r.bool(0.1)) headers.push(["content-digest", computeContentDigest(Buffer.from("x"))]);
    }
  }

  const consumedBody = route === "consumed" && body !== undefined && body.length > 0;
  const selfRead = route !== "json" && route !== "consumed";
  let expected: ExpectedProblem;
  if (consumedBody) expected = { status: 400, type: "signature/body" };
  else if (selfRead && body !== undefined && body.length > BODY_LIMIT) {
    expected = { status: 413, type: "signature/body" };
  } else if (signable) expected = { status: 400, type: "context/tenant-missing" };
  else expected = { status: 401, type: "*" };

  return {
    request: { method, path, headers, body, chunked: body !== undefined && r.bool(0.3) },
    expected,
    markers: [mark],
  };
}

// --- property 2 ------------------------------------------------------------------------------

const SIGNED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const MUTATIONS = [
  "method",
  "path",
  "query",
  "header",
  "authority",
  "body",
  "signature",
  "dot-segment",
  "host-prefix",
  ...INPUT_MUTATIONS,
] as const;
type MutationKind = (typeof MUTATIONS)[number];

interface SignedCase {
  readonly id: string;
  readonly request: RawRequest;
  readonly tenant: string;
  readonly json: boolean;
}

async function signedCase(r: CaseRandom, id: string, port: number): Promise<SignedCase> {
  const json = r.bool(0.3);
  const method = r.pick(SIGNED_METHODS);
  const segments = Array.from({ length: r.int(2, 4) }, () => r.string(`${ALNUM}-_~`, 1, 8));
  const query = r.bool(0.7) ? `?q=${r.string(ALNUM, 0, 6)}&b=${r.string(`${ALNUM},:@`, 0, 6)}` : "";
  const path = `${json ? "/json" : ""}/orders/${segments.join("/")}${query}`;
  const tenant = r.string(TENANT_CHARS, 1, 40);
  const body = json
    ? Buffer.from(JSON.stringify({ s: r.string(ALNUM, 0, 20), n: r.int(0, 1000) }))
    : r.bytes(0, 200);
  const headers: HeaderPair[] = [
    ["host", `127.0.0.1:${port}`],
    ["x-case-id", id],
    [
      "content-type",
      json ? "application/json" : r.pick(["text/plain", "application/octet-stream"]),
    ],
    ["x-tenant-id", tenant],
    ["x-note", r.string(VISIBLE_CHARS, 1, 30)],
  ];
  const components: ComponentSpec[] = [
    "@method",
    "@target-uri",
    "@authority",
    "content-type",
    "x-tenant-id",
    "x-note",
    "content-digest",
  ];
  const signed = await signRequest(
    {
      method,
      url: `${originOf(port)}${path}`,
      headers: headers.map(([n, v]) => [n, v] as [string, string]),
      body,
    },
    { signer: r.bool(0.2) ? kmsClientSigner : clientSigner, nonce: true, components },
  );
  for (const [name, value] of Object.entries(signed)) headers.push([name, value]);
  return { id, request: { method, path, headers, body, chunked: r.bool(0.2) }, tenant, json };
}

/** The signed request changed in one respect; every one of them must be refused. */
function mutate(r: CaseRandom, base: SignedCase, kind: MutationKind, port: number): RawRequest {
  const { request } = base;
  const [pathPart = "", queryPart] = request.path.split("?") as [string, string | undefined];
  const query = queryPart === undefined ? "" : `?${queryPart}`;
  switch (kind) {
    case "created":
    case "expires":
    case "keyid":
    case "alg":
    case "nonce":
    case "components":
      return mutateInput(r, request, kind);
    case "method":
      return { ...request, method: r.pick(SIGNED_METHODS.filter((m) => m !== request.method)) };
    case "path":
      return { ...request, path: charMutation(r, pathPart, 1, `${PATH_CHARS}./`) + query };
    case "query": {
      const changed = r.bool(0.8) ? charMutation(r, query, 1, `${ALNUM}=&`) : "";
      return { ...request, path: pathPart + (changed === query ? `${query}&x` : changed) };
    }
    case "header": {
      const name = r.pick(["content-type", "x-tenant-id", "x-note"]);
      const current = request.headers.find(([n]) => n === name)?.[1] ?? "";
      const how = r.int(0, 3);
      if (how === 0)
        return { ...request, headers: replaceHeader(request.headers, name, undefined) };
      if (how === 1) return { ...request, headers: [...request.headers, [name, current]] };
      let next: string;
      if (name === "x-tenant-id") {
        do next = r.string(TENANT_CHARS, 1, 40);
        while (next === current);
      } else if (name === "content-type") {
        next = current === "text/plain" ? "text/html" : "text/plain";
      } else {
        next = charMutation(r, current, 0, VISIBLE_CHARS);
      }
      return { ...request, headers: replaceHeader(request.headers, name, next) };
    }
    case "authority":
      return { ...request, headers: replaceHeader(request.headers, "host", `localhost:${port}`) };
    case "body": {
      const body = request.body ?? Buffer.alloc(0);
      if (base.json) {
        const parsed = JSON.parse(body.toString()) as { s: string; n: number };
        return { ...request, body: Buffer.from(JSON.stringify({ ...parsed, n: parsed.n + 1 })) };
      }
      const how = body.length === 0 ? 1 : r.int(0, 2);
      if (how === 0) {
        const copy = Buffer.from(body);
        const at = r.int(0, copy.length - 1);
        copy[at] = (copy[at] as number) ^ r.int(1, 255);
        return { ...request, body: copy };
      }
      if (how === 1) return { ...request, body: Buffer.concat([body, r.bytes(1, 4)]) };
      return { ...request, body: body.subarray(0, r.int(0, body.length - 1)) };
    }
    case "signature": {
      const value = request.headers.find(([n]) => n === "signature")?.[1] ?? "";
      const bytes = Buffer.from(/^sig1=:([^:]*):$/.exec(value)?.[1] ?? "", "base64");
      const at = r.int(0, bytes.length - 1);
      bytes[at] = (bytes[at] as number) ^ (1 << r.int(0, 7));
      return {
        ...request,
        headers: replaceHeader(request.headers, "signature", `sig1=:${bytes.toString("base64")}:`),
      };
    }
    case "dot-segment": {
      // The raw target routes elsewhere; only its WHATWG-normalized form equals the signed one.
      const slashes = [...pathPart.matchAll(/\//g)].map((m) => m.index);
      const at = r.pick(slashes.slice(1));
      const detour = r.pick(["/zz/..", "/zz/%2e%2e", "/.", "/%2E", "/zz/%2E%2e"]);
      return { ...request, path: pathPart.slice(0, at) + detour + pathPart.slice(at) + query };
    }
    case "host-prefix": {
      // The routed path loses its first segment to the Host field; the rebuilt URL is the same.
      const cut = pathPart.indexOf("/", 1);
      return {
        ...request,
        path: pathPart.slice(cut) + query,
        headers: replaceHeader(
          request.headers,
          "host",
          `127.0.0.1:${port}${pathPart.slice(0, cut)}`,
        ),
      };
    }
  }
}

const responsePolicy = (digest: "required" | "if-present") => ({
  keyLookup: (id: string): MessageVerifier | undefined =>
    id === "server" ? serverVerifier : id === serverKmsKey ? kmsServerVerifier : undefined,
  requiredComponents: [
    "@status",
    { component: "@method", req: true },
    { component: "@target-uri", req: true },
    { component: "signature", key: "sig1", req: true },
  ] satisfies ComponentSpec[],
  contentDigest: digest,
});

/** The request as the client sent it, for `;req` components of the response's signature. */
function sentMessage(port: number, request: RawRequest): RequestMessage {
  return {
    method: request.method,
    url: `${originOf(port)}${request.path}`,
    headers: fieldRecord(request.headers),
    body: request.body,
  };
}

function verifyResponse(
  res: RawResponse,
  request: RequestMessage,
  digest: "required" | "if-present",
): Promise<VerificationResult> {
  return verifyMessage(
    { status: res.status, headers: res.distinct, body: res.body },
    responsePolicy(digest),
    request,
  );
}

// --- regressions found by the properties ---------------------------------------------------

/** A validly signed, body-less request for `path`, with a tenant kmsContext accepts. */
async function signedRequest(port: number, method: string, path: string): Promise<RawRequest> {
  const headers: HeaderPair[] = [
    ["host", `127.0.0.1:${port}`],
    ["x-case-id", `regression ${method} ${path}`],
    ["x-tenant-id", "acme"],
  ];
  const fields = await signRequest(
    {
      method,
      url: `${originOf(port)}${path}`,
      headers: headers.map(([n, v]) => [n, v] as [string, string]),
      body: new Uint8Array(0),
    },
    { signer: clientSigner, nonce: true },
  );
  for (const [name, value] of Object.entries(fields)) headers.push([name, value]);
  return { method, path, headers };
}

describe("regressions found by the properties", () => {
  // Property 2, host-prefix (seed 20261204, case 8). The target URI is rebuilt as
  // `${protocol}://${Host}${originalUrl}` with the Host field unchecked, so a request signed for
  // /orders/42 verifies when sent as `Host: <authority>/orders` + `GET /42`: the rebuilt URL is
  // the signed one, but Express routes /42.
  it("refuses a signed request whose Host field took over the first path segment", async () => {
    const signed = await signedRequest(verifyPort, "GET", "/orders/42");
    const res = await send(verifyPort, {
      ...signed,
      path: "/42",
      headers: replaceHeader(signed.headers, "host", `127.0.0.1:${verifyPort}/orders`),
    });
    expect(res.status, `the handler answered ${res.body}`).toBe(401);
  });

  // Property 2, dot-segment (seed 20261204, case 7). WHATWG URL parsing removes dot-segments
  // (%2e too), so the verified @target-uri is /orders/42 while Express routes the raw path.
  it.each(["/orders/x/../42", "/orders/x/%2e%2e/42"])(
    "refuses a signed request sent as %s (routed elsewhere, equal once normalized)",
    async (path) => {
      const signed = await signedRequest(verifyPort, "GET", "/orders/42");
      const res = await send(verifyPort, { ...signed, path });
      expect(res.status, `the handler answered ${res.body}`).toBe(401);
    },
  );

  // Property 4, write-head. writeHead() freezes the headers before signResponse's end(): setting
  // Content-Digest / Signature throws ERR_HTTP_HEADERS_SENT, answerUnsigned throws the same on
  // removeHeader, and the connection is dropped instead of a signed or 500 answer.
  it("answers a handler that calls res.writeHead", async () => {
    const res = await attempt(
      responsePort,
      await signedRequest(responsePort, "GET", "/ok/write-head?seed=1&mark=zqwritehead"),
    );
    expect("error" in res ? res.error : "answered").toBe("answered");
  });

  // The same with an asynchronous (KMS) signer and a body-less answer: the throw happens in a
  // promise callback, so it is an unhandled rejection (a process exit under Node's default
  // --unhandled-rejections=throw) and the client waits forever.
  it("answers a HEAD request to a handler that calls res.writeHead, with a KMS signer", async () => {
    const res = await attempt(
      responsePort,
      await signedRequest(responsePort, "HEAD", "/kms/write-head?seed=1&mark=zqwriteheadkms"),
    );
    expect("error" in res ? res.error : "answered").toBe("answered");
  });

  // Property 4, flush-headers. flushHeaders() puts the status line and headers on the wire
  // before signing: a HEAD request then receives a complete, unsigned 200.
  it("never sends an unsigned 200 after res.flushHeaders()", async () => {
    const res = await send(
      responsePort,
      await signedRequest(responsePort, "HEAD", "/ok/flush-headers?seed=1&mark=zqflush"),
    );
    expect({ status: res.status, signature: res.headers.signature !== undefined }).not.toEqual({
      status: 200,
      signature: false,
    });
  });

  // Seen while checking property 4's HEAD cases: signNodeResponse rewrites a Content-Length that
  // differs from the buffered body, which for HEAD is empty, so HEAD answers Content-Length: 0
  // where RFC 9110 §8.6 allows only the GET response's length.
  it("keeps the GET response's Content-Length on a HEAD response", async () => {
    const path = "/ok/json?seed=7&mark=zqheadlength";
    const get = await send(responsePort, await signedRequest(responsePort, "GET", path));
    const head = await send(responsePort, await signedRequest(responsePort, "HEAD", path));
    expect(get.headers["content-length"]).toBe(`${get.body.length}`);
    expect(head.headers["content-length"]).toBe(get.headers["content-length"]);
  });
});

// --- the properties ----------------------------------------------------------------------------

describe("verifySignature + signResponse + kmsContext on arbitrary requests (property-based)", () => {
  it("answers every failing request with a documented problem+json and never runs the handler", async () => {
    const CASES = 400;
    const findings = new Findings(SEED);
    const counts = new Map<string, number>();
    for (let start = 0; start < CASES; start += 20) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(20, CASES - start) }, (_, k) => fuzzCase(start + k)),
      );
      const answers = await Promise.all(batch.map((c) => attempt(verifyPort, c.request)));
      for (const [k, answer] of answers.entries()) {
        const c = batch[k] as FuzzCase;
        const where = `case ${start + k}: ${describeRequest(c.request)}`;
        if ("error" in answer) {
          findings.add(`no answer (${answer.error})`, where);
          continue;
        }
        const key = `${answer.status} ${answer.headers["content-type"]?.split(";")[0]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        const wrong = problemViolations(answer, c.request.method, c.expected, c.markers);
        if (reached.has(`p1-${start + k}`)) wrong.push("the handler ran");
        if (wrong.length > 0) {
          findings.add(
            wrong[0] as string,
            `${where}\n→ ${wrong.join("; ")}\n→ ${answer.body.toString("latin1").slice(0, 300)}`,
          );
        }
      }
    }
    findings.expectNone("problem+json for failing requests");
    // The generator must reach each documented answer, or the property holds vacuously.
    expect([...counts.keys()].sort()).toEqual([
      "400 application/problem+json",
      "401 application/problem+json",
      "413 application/problem+json",
    ]);
  });

  it("refuses a signed request changed in any one respect, and signs the answer to the unchanged one", async () => {
    const CASES = 300;
    const findings = new Findings(SEED);
    const runCase = async (index: number): Promise<void> => {
      const r = caseRandom(2, index);
      const base = await signedCase(r, `p2-${index}`, verifyPort);
      const kind = MUTATIONS[index % MUTATIONS.length] as MutationKind;
      const mutated = mutate(r, base, kind, verifyPort);
      const where = `case ${index} (${kind}): signed ${describeRequest(base.request)}\n  sent ${describeRequest(mutated)}`;
      const before = reached.has(base.id);
      const refused = await attempt(verifyPort, mutated);
      if ("error" in refused) {
        findings.add(`${kind}: no answer (${refused.error})`, where);
        return;
      }
      const wrong = problemViolations(refused, mutated.method, { status: 401, type: "*" }, []);
      if (reached.has(base.id) !== before) wrong.push("the handler ran");
      if (wrong.length > 0) {
        findings.add(
          `${kind}: accepted (${refused.status})`,
          `${where}\n→ ${wrong.join("; ")}\n→ ${refused.body.toString("latin1").slice(0, 200)}`,
        );
        // Its nonce is spent now: the unchanged request would be a replay.
        return;
      }
      const res = await attempt(verifyPort, base.request);
      if ("error" in res) {
        findings.add(`unchanged request: no answer (${res.error})`, where);
        return;
      }
      if (res.status !== 200 || !reached.has(base.id)) {
        findings.add(
          `unchanged request: ${res.status}`,
          `${where}\n→ ${res.body.toString().slice(0, 200)}`,
        );
        return;
      }
      const seen = JSON.parse(res.body.toString()) as { originalUrl: string; tenant: string };
      if (seen.originalUrl !== base.request.path || seen.tenant !== base.tenant) {
        findings.add(
          "unchanged request: the handler saw another request",
          `${where}\n→ ${JSON.stringify(seen)}`,
        );
      }
      if (res.headers["content-digest"] === undefined)
        findings.add("unchanged request: no Content-Digest", where);
      const verdict = await verifyResponse(res, sentMessage(verifyPort, base.request), "required");
      if (!verdict.ok)
        findings.add(
          `unchanged request: response fails ${verdict.check}`,
          `${where}\n→ ${verdict.detail}`,
        );
    };
    for (let start = 0; start < CASES; start += 15) {
      await Promise.all(
        Array.from({ length: Math.min(15, CASES - start) }, (_, k) => runCase(start + k)),
      );
    }
    findings.expectNone("single mutations of a signed request");
  });
});

describe("kmsContext under interleaved requests (property-based)", () => {
  it("gives each handler exactly its own request's tenant, or refuses it as documented", async () => {
    const CASES = 300;
    const findings = new Findings(SEED);
    let served = 0;
    let refused = 0;
    const runCase = async (index: number): Promise<void> => {
      const r = caseRandom(3, index);
      const id = `p3-${index}`;
      const header = tenantCase(r);
      // Authentication sets req.user.tenantId from one header line (the stand-in's contract).
      const user = r.bool(0.2) ? tenantCase(r) : undefined;
      const userTenant = user?.lines[0];
      const headers: HeaderPair[] = [
        ["host", `127.0.0.1:${contextPort}`],
        ["x-case-id", id],
        [
          "x-steps",
          Array.from({ length: r.int(0, 4) }, () =>
            r.pick(["immediate", "microtask", "0", "1", "3", "7"]),
          ).join(","),
        ],
      ];
      for (const line of header.lines) headers.push(["x-tenant-id", line]);
      if (userTenant !== undefined) headers.push(["x-test-user-tenant", userTenant]);
      // The user's tenant wins, valid or not: a refused one does not fall back to the header.
      const expected =
        userTenant !== undefined
          ? TENANT_RULE.test(stripOws(userTenant))
            ? stripOws(userTenant)
            : undefined
          : tenantOf(header.lines);
      const request: RawRequest = {
        method: r.pick(["GET", "POST"]),
        path: `/ctx/${index}`,
        headers,
      };
      const where = `case ${index} (header ${header.label}${userTenant !== undefined ? `, user ${user?.label}` : ""}): ${describeRequest(request)}`;
      const res = await attempt(contextPort, request);
      if ("error" in res) {
        findings.add(`no answer (${res.error})`, where);
        return;
      }
      if (expected === undefined) {
        refused++;
        const wrong = problemViolations(
          res,
          request.method,
          { status: 400, type: "context/tenant-missing" },
          [],
        );
        if (reached.has(id)) wrong.push("the handler ran");
        if (wrong.length > 0)
          findings.add(`${header.label}: ${wrong[0]}`, `${where}\n→ ${wrong.join("; ")}`);
        return;
      }
      served++;
      if (res.status !== 200) {
        findings.add(
          `${header.label}: ${res.status}`,
          `${where}\n→ ${res.body.toString().slice(0, 200)}`,
        );
        return;
      }
      const own = { tenant: expected };
      const answer = JSON.parse(res.body.toString()) as {
        id: string;
        seen: unknown[];
        ofRequest: unknown;
        principal: unknown;
      };
      const inHandler = contextSeen.get(id);
      const wrong: string[] = [];
      if (answer.id !== id) wrong.push(`answer of ${answer.id}`);
      if (inHandler === undefined || inHandler.length !== answer.seen.length)
        wrong.push("handler record missing");
      for (const seen of [...answer.seen, ...(inHandler ?? []), answer.ofRequest]) {
        if (JSON.stringify(seen) !== JSON.stringify(own)) wrong.push(`saw ${JSON.stringify(seen)}`);
      }
      const principal = userTenant === undefined ? null : `user-${id}`;
      if (answer.principal !== principal)
        wrong.push(`principal ${JSON.stringify(answer.principal)}`);
      if (wrong.length > 0) {
        findings.add(
          `${header.label}: ${wrong[0]}`,
          `${where}\n→ expected ${JSON.stringify(own)}: ${wrong.join("; ")}`,
        );
      }
    };
    // All in flight at once in waves, each with its own awaits, so their continuations interleave.
    for (let start = 0; start < CASES; start += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, CASES - start) }, (_, k) => runCase(start + k)),
      );
    }
    findings.expectNone("per-request encryption context");
    expect(served).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
  });
});

describe("signResponse over arbitrary handler outcomes (property-based)", () => {
  it("sends a response that verifies against its request, or 500 problem+json when signing fails — never an unsigned success", async () => {
    const CASES = 320;
    const findings = new Findings(SEED);
    const outcomesSeen = new Map<string, number>();
    const runCase = async (index: number): Promise<void> => {
      const r = caseRandom(4, index);
      const id = `p4-${index}`;
      const mount = r.pick(["ok", "ok", "kms", "nodigest", "fail-sync", "fail-async"]);
      const outcome = OUTCOMES[index % OUTCOMES.length] as Outcome;
      const method = r.pick(["GET", "GET", "POST", "HEAD"]);
      const mark = marker(r);
      const path = `/${mount}/${outcome}?seed=${r.int(0, 2 ** 31)}&mark=${mark}`;
      const body = method === "POST" ? r.bytes(0, 100) : Buffer.alloc(0);
      const headers: HeaderPair[] = [
        ["host", `127.0.0.1:${responsePort}`],
        ["x-case-id", id],
      ];
      const signed = await signRequest(
        {
          method,
          url: `${originOf(responsePort)}${path}`,
          headers: headers.map(([n, v]) => [n, v] as [string, string]),
          body,
        },
        { signer: clientSigner, nonce: true },
      );
      for (const [name, value] of Object.entries(signed)) headers.push([name, value]);
      const request: RawRequest = {
        method,
        path,
        headers,
        body: method === "POST" ? body : undefined,
      };
      // Grouped by outcome; the method and signer show in the counterexample.
      const label = outcome;
      const where = `case ${index} (${method} /${mount}/${outcome}): ${describeRequest(request)}`;
      const res = await attempt(responsePort, request);
      if ("error" in res) {
        findings.add(`${label}: no answer (${res.error})`, where);
        return;
      }
      const key = `${mount} ${outcome} → ${res.status}`;
      outcomesSeen.set(key, (outcomesSeen.get(key) ?? 0) + 1);
      const signedHeaders = ["signature", "signature-input"].filter(
        (h) => res.headers[h] !== undefined,
      );
      if (mount.startsWith("fail")) {
        const wrong: string[] = [];
        if (res.status !== 500) wrong.push(`status ${res.status}`);
        if (!/^application\/problem\+json(;|$)/.test(res.headers["content-type"] ?? "")) {
          wrong.push(`content-type ${res.headers["content-type"]}`);
        }
        if (signedHeaders.length > 0 || res.headers["content-digest"] !== undefined) {
          wrong.push("signature fields on an unsigned answer");
        }
        if (res.body.toString("latin1").includes(mark)) wrong.push("the handler's body leaked");
        if (method !== "HEAD") {
          try {
            const problem = JSON.parse(res.body.toString()) as Record<string, unknown>;
            if (
              problem.type !== `${PROBLEM_BASE}signature/response-signing` ||
              problem.status !== 500
            ) {
              wrong.push(`problem ${JSON.stringify(problem)}`);
            }
          } catch {
            wrong.push(`body ${res.body.toString().slice(0, 120)}`);
          }
        }
        if (wrong.length > 0)
          findings.add(`${label}: ${wrong[0]}`, `${where}\n→ ${wrong.join("; ")}`);
        return;
      }
      if (signedHeaders.length < 2) {
        findings.add(
          `${label}: unsigned ${res.status}`,
          `${where}\n→ ${JSON.stringify(res.headers)}`,
        );
        return;
      }
      const bodyless = method === "HEAD" || res.status === 204 || res.status === 304;
      const digest = mount === "nodigest" || bodyless ? "if-present" : "required";
      if ((mount === "nodigest" || bodyless) && res.headers["content-digest"] !== undefined) {
        findings.add(`${label}: Content-Digest on a digest-less or body-less response`, where);
      }
      const verdict = await verifyResponse(res, sentMessage(responsePort, request), digest);
      if (!verdict.ok) {
        findings.add(
          `${label}: ${res.status} fails ${verdict.check}`,
          `${where}\n→ ${verdict.detail}`,
        );
      }
    };
    for (let start = 0; start < CASES; start += 16) {
      await Promise.all(
        Array.from({ length: Math.min(16, CASES - start) }, (_, k) => runCase(start + k)),
      );
    }
    findings.expectNone("signed or 500 problem+json responses");
    // Every outcome ran under a working signer and a failing one.
    for (const outcome of OUTCOMES) {
      expect([...outcomesSeen.keys()].some((k) => k.includes(` ${outcome} `))).toBe(true);
    }
  });
});
