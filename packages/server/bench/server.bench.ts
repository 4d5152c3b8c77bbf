/**
 * `pnpm bench` for @kms/server: what the network hop costs. The same Kms is called in the
 * process (`kms.encrypt`, …) and through `KMSClient` → `createKmsServer` on 127.0.0.1 over the
 * SDK's default HTTP handler (a keep-alive agent: the bench counts the server's connections and
 * fails if that stops holding), one call at a time and 16 calls in flight.
 *
 * Then the remote Encrypt is taken apart, each part beside the remote call it belongs to:
 * (a) the SDK's own request bytes sent with bare node:http to a handler that answers a canned
 * Encrypt response; (b) SigV4 verification of that request, through the server's internal
 * verifier; (c) the SDK against that canned handler, so (c) − (a) is the SDK's client-side cost;
 * (d) the server's JSON work on the request and response (UTF-8 and duplicate-member checks,
 * base64, shapes), also internal; (e) the SDK's request replayed with bare node:http to the KMS
 * server, so (e) − (a) is the server handler's cost.
 *
 * Client and server share this process, as they share the 2-core machine: in the remote figures
 * the SDK's work and the server's run on one event loop, one after the other. A shared machine
 * makes one run noise, so each case is measured right after its baseline, over several rounds,
 * and reported as the median ratio with its range.
 * `node bench/server.bench.ts` (KMS_BENCH_ROUNDS, default 7; KMS_BENCH_QUICK=1 for a smoke run).
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import {
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
} from "@aws-sdk/client-kms";
import { type CallOptions, createKms } from "@kms/core";
import { type BenchCase, compare } from "@kms/tooling/bench";
import { createKmsServer } from "../src/index.ts";
import { parseJsonBody } from "../src/internal/json-body.ts";
import { OPERATIONS } from "../src/internal/operations.ts";
import { RequestHeaders } from "../src/internal/request-headers.ts";
import { decode, encode } from "../src/internal/shapes.ts";
import { checkSignatureClaim, verifySignature } from "../src/internal/sigv4.ts";
import { resolveSettings } from "../src/request-handler.ts";

const quick = process.env.KMS_BENCH_QUICK === "1";
const rounds = quick ? 1 : Number(process.env.KMS_BENCH_ROUNDS ?? 7);
const seconds = quick ? 0.1 : 0.5;
const IN_FLIGHT = 16;

const REGION = "eu-west-1";
const ACCOUNT = "111122223333";
const CALLER = {
  accessKeyId: "AKIABENCH0000000001",
  secretAccessKey: "bench/Secret+Key0000000000000000000000001",
  principal: `arn:aws:iam::${ACCOUNT}:user/bench`,
} as const;
const credentials = {
  [CALLER.accessKeyId]: { secretAccessKey: CALLER.secretAccessKey, principal: CALLER.principal },
};

// The default Kms a server would run: key policy evaluated, hash-chained in-memory audit trail.
const kms = await createKms({ region: REGION, account: ACCOUNT });
const { keyId } = (await kms.createKey()).keyMetadata;
const plaintext = globalThis.crypto.getRandomValues(new Uint8Array(1024));
const encryptionContext = { tenant: "acme", table: "patients" };
// What the server passes for this caller, so both paths do the same authorization and audit.
const callOptions: CallOptions = { principal: CALLER.principal, sourceIp: "127.0.0.1" };

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });
}

const server = createKmsServer({ kms, credentials });
let kmsServerConnections = 0;
let kmsServerRequests = 0;
server.on("connection", () => {
  kmsServerConnections++;
});
server.on("request", () => {
  kmsServerRequests++;
});
const kmsPort = await listen(server);
// As the README's client: nothing but endpoint, region and credentials, so the SDK's default
// HTTP handler (keep-alive agent, 50 sockets) and retry strategy are what is measured.
const client = new KMSClient({
  endpoint: `http://127.0.0.1:${kmsPort}`,
  region: REGION,
  credentials: { accessKeyId: CALLER.accessKeyId, secretAccessKey: CALLER.secretAccessKey },
});

const sealed = await kms.encrypt({ keyId, plaintext, encryptionContext }, callOptions);
const ciphertextBlob = sealed.ciphertextBlob;

/** Fails the run when a path returns something other than what it was asked for. */
function check(what: string, ok: boolean): void {
  if (!ok) throw new Error(`bench: ${what}`);
}
const sameBytes = (a: Uint8Array | undefined, b: Uint8Array): boolean =>
  a !== undefined && Buffer.from(a).equals(Buffer.from(b));

interface Operation {
  readonly title: string;
  readonly local: () => Promise<unknown>;
  readonly remote: () => Promise<unknown>;
}

const operations: Operation[] = [
  {
    title: "Encrypt 1 KiB with an encryption context",
    local: () => kms.encrypt({ keyId, plaintext, encryptionContext }, callOptions),
    remote: () =>
      client.send(
        new EncryptCommand({
          KeyId: keyId,
          Plaintext: plaintext,
          EncryptionContext: encryptionContext,
        }),
      ),
  },
  {
    title: "Decrypt 1 KiB with an encryption context",
    local: () => kms.decrypt({ ciphertextBlob, encryptionContext }, callOptions),
    remote: () =>
      client.send(
        new DecryptCommand({
          CiphertextBlob: ciphertextBlob,
          EncryptionContext: encryptionContext,
        }),
      ),
  },
  {
    title: "GenerateDataKey AES_256 with an encryption context",
    local: () => kms.generateDataKey({ keyId, keySpec: "AES_256", encryptionContext }, callOptions),
    remote: () =>
      client.send(
        new GenerateDataKeyCommand({
          KeyId: keyId,
          KeySpec: "AES_256",
          EncryptionContext: encryptionContext,
        }),
      ),
  },
];

// Both paths must really do the work before they are timed.
const remoteSealed = await client.send(
  new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: encryptionContext }),
);
const remoteOpened = await client.send(
  new DecryptCommand({
    CiphertextBlob: remoteSealed.CiphertextBlob,
    EncryptionContext: encryptionContext,
  }),
);
check(
  "a remote Encrypt then Decrypt returns the plaintext",
  sameBytes(remoteOpened.Plaintext, plaintext),
);
const localOpened = await kms.decrypt({ ciphertextBlob, encryptionContext }, callOptions);
check("an in-process decrypt returns the plaintext", sameBytes(localOpened.plaintext, plaintext));
const remoteKey = await operations[2]!.remote();
check(
  "a remote GenerateDataKey returns 32 bytes",
  (remoteKey as { Plaintext?: Uint8Array }).Plaintext?.length === 32,
);

const median = (xs: readonly number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
function spread(xs: readonly number[], digits: number): string {
  const sorted = [...xs].sort((a, b) => a - b);
  return `${(sorted[0] ?? Number.NaN).toFixed(digits)}–${(sorted[sorted.length - 1] ?? Number.NaN).toFixed(digits)}`;
}
const fmt = (n: number): string => Math.round(n).toLocaleString("en-US");

/** The same call `IN_FLIGHT` times at once; the harness counts one op per batch. */
function batch(run: () => Promise<unknown>): () => Promise<unknown> {
  return () => Promise.all(Array.from({ length: IN_FLIGHT }, run));
}

/**
 * Interleaved rounds of in-process against remote; prints the medians of calls/s, of time per
 * call remote ÷ in-process, and of the time the hop adds per call.
 */
async function hop(op: Operation, inFlight: boolean): Promise<void> {
  const mode = inFlight ? `${IN_FLIGHT} calls in flight` : "one call at a time";
  const callsPerOp = inFlight ? IN_FLIGHT : 1;
  const local: number[] = [];
  const remote: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const [base, result] = await compare(
      `${op.title}, ${mode} (round ${round}/${rounds}; ops are ${callsPerOp === 1 ? "calls" : `batches of ${callsPerOp}`})`,
      { name: "in-process Kms", run: inFlight ? batch(op.local) : op.local },
      [{ name: "KMSClient → createKmsServer", run: inFlight ? batch(op.remote) : op.remote }],
      { seconds },
    );
    if (base !== undefined && result !== undefined) {
      local.push(base.opsPerSecond * callsPerOp);
      remote.push(result.opsPerSecond * callsPerOp);
    }
  }
  const slowdown = local.map((l, i) => l / (remote[i] ?? Number.NaN));
  const added = local.map((l, i) => 1e6 / (remote[i] ?? Number.NaN) - 1e6 / l);
  console.log(`\n${op.title}, ${mode}: median of ${rounds} rounds`);
  console.log(
    `  in-process ${fmt(median(local))} calls/s (${spread(local, 0)}); ` +
      `remote ${fmt(median(remote))} calls/s (${spread(remote, 0)})`,
  );
  console.log(
    `  time per call, remote ÷ in-process: ${median(slowdown).toFixed(1)}× (range ${spread(slowdown, 1)}); ` +
      `the hop adds ${median(added).toFixed(0)} µs per call (range ${spread(added, 0)})`,
  );
}

for (const op of operations) {
  await hop(op, false);
  await hop(op, true);
}

// --- Where the time of a remote Encrypt goes ---------------------------------------------------

interface Captured {
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  readonly at: number;
}
let captured: Captured | undefined;
let cannedBody = '{"CiphertextBlob":"AAAA","EncryptionAlgorithm":"SYMMETRIC_DEFAULT","KeyId":"k"}';
let cannedHeaders: http.OutgoingHttpHeaders = {};

/** Reads the request in full, as the KMS handler does, then answers the canned response. */
const canned = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    captured ??= { rawHeaders: req.rawHeaders, body: Buffer.concat(chunks), at: Date.now() };
    res.writeHead(200, {
      ...cannedHeaders,
      "Content-Type": "application/x-amz-json-1.1",
      "Content-Length": Buffer.byteLength(cannedBody),
    });
    res.end(cannedBody);
  });
});
const cannedPort = await listen(canned);
const cannedClient = new KMSClient({
  endpoint: `http://127.0.0.1:${cannedPort}`,
  region: REGION,
  credentials: { accessKeyId: CALLER.accessKeyId, secretAccessKey: CALLER.secretAccessKey },
});
await cannedClient.send(
  new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: encryptionContext }),
);
if (captured === undefined) throw new Error("bench: the SDK's Encrypt request was not captured");
const request: Captured = captured;

// The SDK's own request, as bytes on the wire; the Host it signed names the canned server, which
// the KMS server accepts (the host is signed, not compared).
const headerList: [string, string][] = [];
for (let i = 0; i + 1 < request.rawHeaders.length; i += 2) {
  headerList.push([request.rawHeaders[i]!, request.rawHeaders[i + 1]!]);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
function post(
  port: number,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/",
        agent,
        headers: Object.fromEntries(headerList),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(request.body);
  });
}

// Replayed to the KMS server, the captured request must verify; its answer becomes the canned one.
const real = await post(kmsPort);
check(
  `the captured Encrypt request is accepted (HTTP ${real.status}: ${real.body.slice(0, 200)})`,
  real.status === 200,
);
cannedBody = real.body;
cannedHeaders = {
  "x-amzn-RequestId": String(real.headers["x-amzn-requestid"] ?? ""),
  "Cache-Control": "no-store",
};
const fromCanned = await cannedClient.send(
  new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: encryptionContext }),
);
check("the SDK reads the canned response", fromCanned.CiphertextBlob !== undefined);

// The server's own verifier and lookup, its clock pinned to the capture so the date stays valid.
const settings = resolveSettings({ kms, credentials, now: () => request.at });
async function verifyCaptured(): Promise<string> {
  const claim = await checkSignatureClaim(
    { method: "POST", rawPath: "/", rawQuery: "", headers: new RequestHeaders(request.rawHeaders) },
    {
      region: settings.region,
      clockSkewMs: settings.clockSkewMs,
      now: settings.now,
      lookup: settings.lookup,
      allowedHosts: settings.allowedHosts,
    },
  );
  return verifySignature(claim, request.body).principal;
}
check("the verifier accepts the captured request", (await verifyCaptured()) === CALLER.principal);

const encryptSpec = OPERATIONS.get("Encrypt");
if (encryptSpec?.output === undefined) throw new Error("bench: no Encrypt operation");
const { input: encryptInput, output: encryptOutput } = encryptSpec;
const coreResponse = await kms.encrypt({ keyId, plaintext, encryptionContext }, callOptions);
function protocolWork(): string {
  decode(encryptInput, parseJsonBody(request.body));
  return JSON.stringify(encode(encryptOutput, coreResponse));
}

/** The captured request sent again by bare node:http; refuses to count an error answer. */
async function postOk(port: number): Promise<void> {
  const { status, body } = await post(port);
  if (status !== 200) throw new Error(`bench: HTTP ${status} ${body.slice(0, 200)}`);
}

const remoteEncrypt = operations[0]!.remote;
const PART = {
  kms: "in-process kms.encrypt",
  bare: "(a) bare node:http round trip",
  sigv4: "(b) SigV4 verification",
  sdk: "(c) SDK → canned response",
  json: "(d) JSON, base64, shapes",
  replay: "(e) bare node:http → createKmsServer",
} as const;
const parts: readonly BenchCase[] = [
  { name: PART.kms, run: operations[0]!.local },
  { name: PART.bare, run: () => postOk(cannedPort) },
  { name: PART.sigv4, run: verifyCaptured },
  {
    name: PART.sdk,
    run: () =>
      cannedClient.send(
        new EncryptCommand({
          KeyId: keyId,
          Plaintext: plaintext,
          EncryptionContext: encryptionContext,
        }),
      ),
  },
  { name: PART.json, run: protocolWork },
  // The SDK's request replayed as it is: its X-Amz-Date must stay within the server's 5 minutes
  // of skew, which this section takes well under at 7 rounds (postOk fails loudly past them).
  { name: PART.replay, run: () => postOk(kmsPort) },
];
const shares = new Map<string, number[]>(parts.map((p) => [p.name, []]));
const remoteMicros: number[] = [];
for (let round = 1; round <= rounds; round++) {
  for (const part of parts) {
    const [base, result] = await compare(
      `remote Encrypt 1 KiB, one call at a time, taken apart (round ${round}/${rounds})`,
      { name: "KMSClient → createKmsServer Encrypt", run: remoteEncrypt },
      [part],
      { seconds },
    );
    if (base !== undefined && result !== undefined) {
      remoteMicros.push(1e6 / base.opsPerSecond);
      shares.get(part.name)?.push(base.opsPerSecond / result.opsPerSecond);
    }
  }
}
const remoteMedian = median(remoteMicros);
const share = (name: string): number => median(shares.get(name) ?? []);
const line = (name: string, value: number, range = ""): string =>
  `  ${name.padEnd(40)} ${(value * 100).toFixed(1).padStart(5)}%  ${(value * remoteMedian).toFixed(0).padStart(4)} µs${range}`;
console.log(
  `\nremote Encrypt 1 KiB, one call at a time: ${remoteMedian.toFixed(0)} µs per call ` +
    `(median of ${remoteMicros.length} baselines, range ${spread(remoteMicros, 0)} µs). ` +
    "Each part's time as a share of the remote call measured just before it (medians; µs = " +
    "share × that median):",
);
for (const [name, list] of shares) {
  const percent = list.map((x) => x * 100);
  console.log(line(name, median(list), `  (range ${spread(percent, 1)}%)`));
}
const sdkAndHttp = share(PART.sdk);
const bare = share(PART.bare);
const handler = share(PART.replay) - bare;
const kmsWork = share(PART.kms);
const sigv4 = share(PART.sigv4);
const json = share(PART.json);
console.log("\nthe split:");
console.log(line("HTTP round trip on loopback (a)", bare));
console.log(line("SDK, client side (c − a)", sdkAndHttp - bare));
console.log(line("server handler (e − a)", handler));
console.log(line("  of which the Kms call", kmsWork));
console.log(line("  of which SigV4 verification (b)", sigv4));
console.log(line("  of which JSON, base64, shapes (d)", json));
console.log(line("  of which the rest", handler - kmsWork - sigv4 - json));
console.log(line("not accounted for (1 − c − (e − a))", 1 - sdkAndHttp - handler));

// With keep-alive a connection serves many calls. Sockets left idle past the server's 5 s
// keepAliveTimeout between phases are closed, so each 16-in-flight phase may open 16 again.
console.log(
  `\nthe KMS server accepted ${kmsServerConnections} connections for ${kmsServerRequests} requests`,
);
check(
  `the SDK reuses connections (keep-alive): ${kmsServerConnections} connections for ${kmsServerRequests} requests`,
  kmsServerConnections * 10 <= kmsServerRequests,
);

client.destroy();
cannedClient.destroy();
agent.destroy();
server.closeAllConnections();
canned.closeAllConnections();
await Promise.all([
  new Promise<void>((resolve) => server.close(() => resolve())),
  new Promise<void>((resolve) => canned.close(() => resolve())),
]);
await kms.close();
