/**
 * `pnpm bench` for @kms/express: Express 5 hello-world req/s with and without verifySignature +
 * signResponse, measured with autocannon over loopback in one run. Each server runs in its own
 * worker thread (its own event loop), and besides req/s the bench reads that thread's own CPU
 * time (`process.threadCpuUsage`) per request: on a shared machine req/s swings with whatever
 * else runs, while server CPU per request is the cost itself. Requests are pre-signed once and
 * replayed (no nonce store), so the figure is the server's verify + sign cost.
 *
 * Variants: baseline (no middleware); HMAC with a local secret; HMAC with an in-process @kms/core
 * Kms key (GenerateMac / VerifyMac); ECDSA P-256 with a Kms key (Sign, and local verification
 * with its public key). Every variant serves the same handler. The Kms variants write their audit
 * trail as a deployment does, to a JSONL file (`JsonlAuditSink`, in a temporary directory removed
 * at the end), not to the default in-memory trail: that one keeps the newest 10,000 events (up
 * to 12,500 before it trims) on the heap, which a long run then collects over and over.
 *
 * The "floor" line is measured in the main thread of the same run: only the crypto calls the
 * hmac-local variant cannot avoid per request (HMAC-SHA256 verification of the request's
 * signature base, HMAC-SHA256 of the response's, SHA-256 of the response body for
 * Content-Digest), made through the package as that server makes them, over the bases and body
 * its probe really produced (read back by verifying them), with nothing else around them.
 */
import type { AddressInfo } from "node:net";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";

type Variant = "baseline" | "hmac-local" | "hmac-kms" | "ecdsa-p256-kms";
const ALL: Variant[] = ["baseline", "hmac-local", "hmac-kms", "ecdsa-p256-kms"];
// KMS_BENCH_VARIANTS=baseline,hmac-local narrows the run (e.g. under node --cpu-prof).
const VARIANTS = (process.env.KMS_BENCH_VARIANTS?.split(",") as Variant[] | undefined) ?? ALL;
const quick = process.env.KMS_BENCH_QUICK === "1";
const seconds = quick ? 1 : 5;
const rounds = quick ? 1 : 5;
const PATH = "/hello?name=bench";

async function serve(variant: Variant, auditDir: string): Promise<void> {
  const { randomBytes } = await import("node:crypto");
  const { join } = await import("node:path");
  const { default: express } = await import("express");
  const { createKms, JsonlAuditSink } = await import("@kms/core");
  const hs = await import("@kms/http-signatures");
  const { signResponse, verifySignature } = await import("../src/index.ts");

  const app = express();
  let clientSigner: import("@kms/http-signatures").MessageSigner | undefined;
  if (variant !== "baseline") {
    let signer: import("@kms/http-signatures").MessageSigner;
    let verifier: import("@kms/http-signatures").MessageVerifier;
    if (variant === "hmac-local") {
      const secret = randomBytes(32);
      signer = hs.createHmacSigner(secret, { keyId: "k" });
      verifier = hs.createHmacVerifier(secret);
    } else {
      const kms = await createKms({
        audit: new JsonlAuditSink(join(auditDir, `${variant}.jsonl`)),
      });
      const hmac = variant === "hmac-kms";
      const algorithm = hmac ? "hmac-sha256" : "ecdsa-p256-sha256";
      const { keyId } = (
        await kms.createKey(
          hmac
            ? { keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }
            : { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" },
        )
      ).keyMetadata;
      signer = hs.createKmsSigner({ kms, keyId, algorithm, publishedKeyId: "k" });
      // Asymmetric: verify locally with the KMS public key (the recommended setup).
      verifier = hmac
        ? hs.createKmsVerifier({ kms, keyId, algorithm })
        : await hs.createKmsPublicKeyVerifier({ kms, keyId, algorithm });
    }
    clientSigner = signer;
    app.use(
      verifySignature({
        keyLookup: (id) => (id === "k" ? verifier : undefined),
        requiredComponents: ["@method", "@target-uri"],
        maxAgeSeconds: 3600,
      }),
    );
    app.use(signResponse({ signer }));
  }
  // Realistic but identical across variants: read a query parameter, answer small JSON.
  app.get("/hello", (req, res) => {
    res.json({ hello: req.query.name ?? "world", at: 1_700_000_000 });
  });
  parentPort?.on("message", () => {
    const { user, system } = process.threadCpuUsage();
    parentPort?.postMessage({ cpuMicros: user + system });
  });
  const server = app.listen(0, "127.0.0.1", async () => {
    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}${PATH}`;
    const headers =
      clientSigner === undefined
        ? {}
        : await hs.signRequest({ method: "GET", url }, { signer: clientSigner });
    parentPort?.postMessage({ url, headers });
  });
}

interface Target {
  readonly worker: Worker;
  readonly url: string;
  readonly headers: Record<string, string>;
  /** The probe's response as received, for the floor. */
  readonly response: {
    readonly status: number;
    readonly headers: Headers;
    readonly body: Uint8Array;
  };
}

async function start(variant: Variant, auditDir: string): Promise<Target> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { variant, auditDir } });
  const { url, headers } = await new Promise<{ url: string; headers: Record<string, string> }>(
    (resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    },
  );
  const probe = await fetch(url, { headers });
  if (probe.status !== 200) throw new Error(`${variant}: probe answered ${probe.status}`);
  if (variant !== "baseline" && !probe.headers.has("signature")) {
    throw new Error(`${variant}: the response is not signed`);
  }
  const response = {
    status: probe.status,
    headers: probe.headers,
    body: new Uint8Array(await probe.arrayBuffer()),
  };
  return { worker, url, headers, response };
}

function serverCpu(target: Target): Promise<number> {
  return new Promise((resolve) => {
    target.worker.once("message", (m: { cpuMicros: number }) => resolve(m.cpuMicros));
    target.worker.postMessage("cpu");
  });
}

interface Sample {
  readonly rps: number;
  /** Server thread CPU time per request, µs. */
  readonly cpuPerRequest: number;
}

async function load(variant: Variant, target: Target, duration: number): Promise<Sample> {
  const { default: autocannon } = await import("autocannon");
  const { url, headers } = target;
  const before = await serverCpu(target);
  const result = await autocannon({ url, headers, connections: 10, duration });
  const after = await serverCpu(target);
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${variant}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  }
  return { rps: result.requests.average, cpuPerRequest: (after - before) / result.requests.total };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

/** µs per request of the crypto calls alone; see the header comment. */
async function measureFloor(
  target: Target,
): Promise<{ micros: number; verify: number; sign: number; digest: number }> {
  const { randomBytes } = await import("node:crypto");
  const hs = await import("@kms/http-signatures");
  // The bases the package built for the probe's request and response, read back by verifying
  // them with a verifier that only records its input (the worker's secret stays there).
  const bases: Uint8Array[] = [];
  const recorder: import("@kms/http-signatures").MessageVerifier = {
    algorithm: "hmac-sha256",
    verify: async (base) => bases.push(base) > 0,
  };
  const policy = { keyLookup: () => recorder, maxAgeSeconds: 3600 };
  const request = { method: "GET", url: target.url, headers: target.headers };
  const verified = [
    await hs.verifyMessage(request, policy),
    await hs.verifyMessage(target.response, policy, request),
  ];
  const [requestBase, responseBase] = bases;
  if (verified.some((v) => !v.ok) || requestBase === undefined || responseBase === undefined) {
    throw new Error(`floor: the probe's signatures could not be read back`);
  }
  // The calls the hmac-local server makes per request, on a key of the same kind.
  const secret = randomBytes(32);
  const signer = hs.createHmacSigner(secret, { keyId: "k" });
  const verifier = hs.createHmacVerifier(secret);
  const signSync = signer.signSync!;
  const verifySync = verifier.verifySync!;
  const signature = signSync(requestBase);
  const body = target.response.body;
  const time = (f: () => unknown): number => {
    const n = 200_000;
    for (let i = 0; i < n / 4; i++) f();
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    return Number(process.hrtime.bigint() - start) / 1000 / n;
  };
  // Best of three: the floor is what the machine can do, not what a noisy neighbour allows.
  const best = (f: () => unknown): number => Math.min(time(f), time(f), time(f));
  const verify = best(() => verifySync(requestBase, signature));
  const sign = best(() => signSync(responseBase));
  const digest = best(() => hs.computeContentDigest(body));
  return { micros: verify + sign + digest, verify, sign, digest };
}

if (isMainThread) {
  // Variants are interleaved over several rounds and the median kept, so a burst of load from
  // elsewhere on the machine skews one sample rather than one variant.
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const auditDir = mkdtempSync(join(tmpdir(), "kms-express-bench-"));
  const targets = new Map<Variant, Target>();
  for (const v of VARIANTS) targets.set(v, await start(v, auditDir));
  for (const v of VARIANTS) await load(v, targets.get(v)!, 1); // warm-up
  const samples = new Map<Variant, Sample[]>(VARIANTS.map((v) => [v, []]));
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) samples.get(v)!.push(await load(v, targets.get(v)!, seconds));
  }
  for (const t of targets.values()) await t.worker.terminate();
  rmSync(auditDir, { recursive: true, force: true });
  const hmacLocal = targets.get("hmac-local");
  const floor = hmacLocal === undefined ? undefined : await measureFloor(hmacLocal);
  const rps = new Map(VARIANTS.map((v) => [v, median(samples.get(v)!.map((s) => s.rps))]));
  const cpu = new Map(
    VARIANTS.map((v) => [v, median(samples.get(v)!.map((s) => s.cpuPerRequest))]),
  );
  const baseRps = rps.get("baseline") ?? Number.NaN;
  const baseCpu = cpu.get("baseline") ?? Number.NaN;
  console.log(
    `\nExpress 5 hello world, autocannon 10 connections, ${rounds} × ${seconds} s per variant (median), loopback`,
  );
  console.log(
    `  ${"variant".padEnd(16)} ${"req/s".padStart(8)}  ${"% of base".padStart(9)}  ${"cost".padStart(6)}   ${"server CPU/req".padStart(14)}  ${"cost (CPU)".padStart(10)}`,
  );
  for (const v of VARIANTS) {
    const r = rps.get(v) ?? 0;
    const c = cpu.get(v) ?? 0;
    const base = v === "baseline";
    // Cost as a share of req/s: 1 - rps/base; from CPU, the same quantity is 1 - base/cpu.
    const cost = base ? "" : `${((1 - r / baseRps) * 100).toFixed(1)}%`;
    const cpuCost = base ? "" : `${((1 - baseCpu / c) * 100).toFixed(1)}%`;
    console.log(
      `  ${v.padEnd(16)} ${Math.round(r).toLocaleString("en-US").padStart(8)}  ${((r / baseRps) * 100).toFixed(1).padStart(8)}%  ${cost.padStart(6)}   ${`${c.toFixed(1)} µs`.padStart(14)}  ${cpuCost.padStart(10)}`,
    );
  }
  if (floor !== undefined && VARIANTS.includes("baseline")) {
    // The best any HMAC verify + sign could do: baseline CPU plus the primitives and nothing else.
    const c = baseCpu + floor.micros;
    console.log(
      `  ${"floor (hmac)".padEnd(16)} ${"".padStart(8)}  ${((baseCpu / c) * 100).toFixed(1).padStart(8)}%  ${"".padStart(6)}   ${`${c.toFixed(1)} µs`.padStart(14)}  ${`${((1 - baseCpu / c) * 100).toFixed(1)}%`.padStart(10)}`,
    );
  }
  if (floor !== undefined) {
    console.log(
      `\nfloor: ${floor.micros.toFixed(2)} µs per request = verifySync of the request's base (${floor.verify.toFixed(2)} µs) + signSync of the response's (${floor.sign.toFixed(2)} µs) + computeContentDigest of the body (${floor.digest.toFixed(2)} µs)`,
    );
  }
} else {
  const { variant, auditDir } = workerData as { variant: Variant; auditDir: string };
  await serve(variant, auditDir);
}
