/**
 * `pnpm bench` for @kms/express: Express 5 hello-world req/s with and without verifySignature +
 * signResponse, measured with autocannon over loopback in one run. Each server runs in its own
 * worker thread (its own event loop) so the load generator does not share its CPU time.
 * Keys live in an in-process @kms/core Kms (HMAC_256, ECC_NIST_P256). Requests are pre-signed
 * once and replayed, so the figure is the server's verify + sign cost (no nonce store).
 */
import type { AddressInfo } from "node:net";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";

type Variant = "baseline" | "hmac-kms" | "hmac-local" | "ecdsa-p256-kms";
const VARIANTS: Variant[] = ["baseline", "hmac-kms", "hmac-local", "ecdsa-p256-kms"];
const seconds = process.env.KMS_BENCH_QUICK === "1" ? 1 : 5;

async function serve(variant: Variant): Promise<void> {
  const { randomBytes } = await import("node:crypto");
  const { default: express } = await import("express");
  const { createKms } = await import("@kms/core");
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
      const kms = await createKms();
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
  app.get("/", (_req, res) => {
    res.type("text/plain").send("hello world");
  });
  const server = app.listen(0, "127.0.0.1", async () => {
    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}/`;
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
}

async function start(variant: Variant): Promise<Target> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { variant } });
  const { url, headers } = await new Promise<{ url: string; headers: Record<string, string> }>(
    (resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    },
  );
  const probe = await fetch(url, { headers });
  if (probe.status !== 200) throw new Error(`${variant}: probe answered ${probe.status}`);
  return { worker, url, headers };
}

async function load(variant: Variant, target: Target, duration: number): Promise<number> {
  const { default: autocannon } = await import("autocannon");
  const { url, headers } = target;
  const result = await autocannon({ url, headers, connections: 10, duration });
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${variant}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  }
  return result.requests.average;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

if (isMainThread) {
  // Variants are interleaved over several rounds and the median kept, so a burst of load from
  // elsewhere on the machine skews one sample rather than one variant.
  const rounds = process.env.KMS_BENCH_QUICK === "1" ? 1 : 3;
  const targets = new Map<Variant, Target>();
  for (const v of VARIANTS) targets.set(v, await start(v));
  for (const v of VARIANTS) await load(v, targets.get(v)!, 1); // warm-up
  const samples = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) samples.get(v)!.push(await load(v, targets.get(v)!, seconds));
  }
  for (const t of targets.values()) await t.worker.terminate();
  const results = new Map(VARIANTS.map((v) => [v, median(samples.get(v)!)]));
  const base = results.get("baseline") ?? 1;
  console.log(
    `\nExpress 5 hello world, autocannon 10 connections, ${rounds} × ${seconds} s per variant (median), loopback`,
  );
  for (const [v, rps] of results) {
    const ratio = rps / base;
    const cost = v === "baseline" ? "" : `  cost ${((1 - ratio) * 100).toFixed(1)}%`;
    console.log(
      `  ${v.padEnd(16)} ${Math.round(rps).toLocaleString("en-US").padStart(8)} req/s  ${(ratio * 100).toFixed(1).padStart(5)}% of baseline${cost}`,
    );
  }
} else {
  await serve((workerData as { variant: Variant }).variant);
}
