/**
 * `node bench/authorization.bench.ts`: the cost of authorization and of the audit trail on
 * encrypt at 1 KiB, as ratios to a baseline measured in the same process.
 *
 * - baseline: authorization off, audit events built, chained and handed to a sink that
 *   discards them (the audit pipeline cannot be switched off).
 * - policy: a 10-statement key policy evaluated on every call.
 * - policy + JSONL: the same, with every event appended to a JSONL file (fail-closed: a call
 *   returns only after its event is written).
 *
 * Each is measured calling one at a time and with 32 calls in flight (where group commit
 * batches the JSONL writes).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compare } from "@kms/tooling/bench";
import {
  type AuditEvent,
  type AuditSink,
  createKms,
  JsonlAuditSink,
  type Kms,
} from "../src/index.ts";

class DiscardingSink implements AuditSink {
  readonly description = "discard";
  #last: AuditEvent | undefined;
  async write(events: readonly AuditEvent[]): Promise<void> {
    this.#last = events[events.length - 1];
  }
  async read(): Promise<readonly AuditEvent[]> {
    return [];
  }
  async last(): Promise<AuditEvent | undefined> {
    return this.#last;
  }
  async close(): Promise<void> {}
}

const ACCOUNT = "000000000000";
const ROOT = `arn:aws:iam::${ACCOUNT}:root`;
const CALLER = "arn:aws:iam::111122223333:user/app";

/** Ten statements, the allowing one last, with conditions as real policies carry them. */
function tenStatementPolicy(): string {
  const statements: Record<string, unknown>[] = [
    { Sid: "Admin", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
  ];
  for (let i = 0; i < 7; i++) {
    statements.push({
      Sid: `Other${i}`,
      Effect: "Allow",
      Principal: { AWS: `arn:aws:iam::111122223333:user/other${i}` },
      Action: ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
      Resource: "*",
      Condition: { StringEquals: { "kms:EncryptionContext:tenant": `t${i}` } },
    });
  }
  statements.push({
    Sid: "DenyOutsideNetwork",
    Effect: "Deny",
    Principal: "*",
    Action: "kms:*",
    Resource: "*",
    Condition: {
      NotIpAddress: { "aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"] },
      Bool: { "kms:GrantIsForAWSResource": "false" },
    },
  });
  statements.push({
    Sid: "App",
    Effect: "Allow",
    Principal: { AWS: CALLER },
    Action: ["kms:Encrypt", "kms:Decrypt"],
    Resource: "*",
    Condition: {
      StringEquals: { "kms:EncryptionContext:tenant": "acme" },
      "ForAllValues:StringLike": { "kms:EncryptionContextKeys": ["tenant", "table", "row*"] },
    },
  });
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}

async function setUp(kms: Kms, policy?: string): Promise<string> {
  const { keyMetadata } = await kms.createKey(policy === undefined ? {} : { policy });
  return keyMetadata.keyId;
}

const dir = await mkdtemp(join(tmpdir(), "kms-authz-bench-"));
try {
  const plaintext = globalThis.crypto.getRandomValues(new Uint8Array(1024));
  const encryptionContext = { tenant: "acme", table: "patients" };
  const options = { principal: CALLER, sourceIp: "10.1.2.3" };

  const base = await createKms({ authorization: false, audit: new DiscardingSink() });
  const baseKey = await setUp(base);
  const policed = await createKms({ audit: new DiscardingSink() });
  const policedKey = await setUp(policed, tenStatementPolicy());
  const audited = await createKms({ audit: new JsonlAuditSink(join(dir, "audit.jsonl")) });
  const auditedKey = await setUp(audited, tenStatementPolicy());

  const one = (kms: Kms, keyId: string) => () =>
    kms.encrypt({ keyId, plaintext, encryptionContext }, options);
  const many = (kms: Kms, keyId: string) => () =>
    Promise.all(Array.from({ length: 32 }, one(kms, keyId)));

  // The machine is shared: five interleaved rounds, then the median ratio of each case.
  const rounds = process.env.KMS_BENCH_QUICK === "1" ? 2 : 7;
  for (const [title, make] of [
    ["encrypt 1 KiB, one call at a time", one],
    ["encrypt 1 KiB, 32 calls in flight", many],
  ] as const) {
    const ratios: number[][] = [[], []];
    for (let round = 0; round < rounds; round++) {
      const [b, p, a] = await compare(
        `${title} (round ${round + 1})`,
        { name: "baseline (no policy evaluation)", run: make(base, baseKey) },
        [
          { name: "10-statement key policy", run: make(policed, policedKey) },
          { name: "10-statement policy + JSONL audit", run: make(audited, auditedKey) },
        ],
        { seconds: 0.5 },
      );
      ratios[0]!.push(b!.opsPerSecond / p!.opsPerSecond);
      ratios[1]!.push(p!.opsPerSecond / a!.opsPerSecond);
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const pct = (r: number) => `${((r - 1) * 100).toFixed(1)}%`;
    console.log(
      `\n${title}: authorization adds ${pct(median(ratios[0]!))} to the time per call; ` +
        `JSONL audit adds ${pct(median(ratios[1]!))} on top (medians of ${rounds} rounds)`,
    );
  }
  await audited.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
