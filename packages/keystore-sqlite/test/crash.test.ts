import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms, RootKeySource } from "@kms/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";
import { prepare, retain } from "../src/internal/retain.ts";

const WORKER = fileURLToPath(new URL("./fixtures/crash-worker.ts", import.meta.url));

interface Acknowledged {
  step: "ready" | "createKey" | "encrypt" | "rotateKeyOnDemand";
  keyId?: string;
  ciphertext?: string;
  plaintext?: string;
  encryptionContext?: Record<string, string>;
}

/**
 * Runs the worker until it has acknowledged at least `minSteps` steps and a random while
 * longer, then kill -9s it. Returns the complete lines it wrote before dying.
 */
async function runAndKill(
  path: string,
  rootKey: Uint8Array,
  minSteps: number,
): Promise<Acknowledged[]> {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--no-warnings", WORKER, path, Buffer.from(rootKey).toString("hex")],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => {
    child.on("close", (code, signal) => resolve(signal ?? code));
  });

  const started = Date.now();
  while (stdout.split("\n").length - 1 < minSteps) {
    if (child.exitCode !== null || Date.now() - started > 60_000) {
      throw new Error(`worker stopped early or stalled: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // A random extra moment, so the kill lands anywhere in a write: mid-transaction, mid-fsync,
  // between commit and acknowledgement.
  await new Promise((resolve) => setTimeout(resolve, randomInt(0, 400)));
  child.kill("SIGKILL");
  expect(await exited).toBe("SIGKILL");

  // A line without its newline was being written when the kill came: not acknowledged.
  const lines = stdout.split("\n").slice(0, -1);
  return lines.map((line) => JSON.parse(line) as Acknowledged);
}

describe("SqliteKeyStore under kill -9", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-crash-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps every acknowledged key and ciphertext across 5 kill -9 rounds", async () => {
    const path = join(dir, "keys.db");
    const rootKey = new Uint8Array(randomBytes(32));
    const acknowledged: Acknowledged[] = [];
    for (let round = 0; round < 5; round++) {
      acknowledged.push(...(await runAndKill(path, rootKey, 10 + randomInt(30))));
    }

    const keyIds = new Set(acknowledged.filter((a) => a.step === "createKey").map((a) => a.keyId!));
    const ciphertexts = acknowledged.filter((a) => a.step === "encrypt");
    const rotations = acknowledged.filter((a) => a.step === "rotateKeyOnDemand");
    expect(keyIds.size).toBeGreaterThanOrEqual(5);
    expect(ciphertexts.length).toBeGreaterThanOrEqual(5);

    const store = SqliteKeyStore.open({ path });
    const kms = await createKms({ store, rootKey: RootKeySource.fromBytes(rootKey) });
    try {
      for (const keyId of keyIds) {
        const { keyMetadata } = await kms.describeKey({ keyId });
        expect(keyMetadata.keyId).toBe(keyId);
        expect(keyMetadata.keyState).toBe("Enabled");
      }
      for (const ack of ciphertexts) {
        const { plaintext, keyId } = await kms.decrypt({
          ciphertextBlob: new Uint8Array(Buffer.from(ack.ciphertext!, "base64")),
          encryptionContext: ack.encryptionContext!,
        });
        expect(Buffer.from(plaintext).toString("base64")).toBe(ack.plaintext);
        expect(keyId).toContain(ack.keyId!);
      }
      // Every acknowledged rotation is still there: at least that many versions past the first.
      const rotationsPerKey = new Map<string, number>();
      for (const r of rotations)
        rotationsPerKey.set(r.keyId!, (rotationsPerKey.get(r.keyId!) ?? 0) + 1);
      for (const [keyId, count] of rotationsPerKey) {
        expect((await store.getKey(keyId))?.versions.length).toBeGreaterThanOrEqual(1 + count);
      }
    } finally {
      await kms.close();
    }

    const raw = retain(new Database(path, { readonly: true }));
    try {
      expect(prepare(raw, "PRAGMA integrity_check").pluck().get()).toBe("ok");
    } finally {
      raw.close();
    }
  }, 180_000);
});

describe("SqliteKeyStore file contents", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-scan-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function fileBytes(path: string): Promise<Buffer> {
    const parts = await Promise.all(
      [path, `${path}-wal`].map((p) => readFile(p).catch(() => Buffer.alloc(0))),
    );
    return Buffer.concat(parts);
  }

  function expectAbsent(haystack: Buffer, secret: Uint8Array, what: string): void {
    const raw = Buffer.from(secret);
    for (const [encoding, needle] of [
      ["raw", raw],
      ["hex", Buffer.from(raw.toString("hex"))],
      ["HEX", Buffer.from(raw.toString("hex").toUpperCase())],
      ["base64", Buffer.from(raw.toString("base64"))],
      ["base64url", Buffer.from(raw.toString("base64url"))],
    ] as const) {
      expect(haystack.indexOf(needle), `${what} found in the file as ${encoding}`).toBe(-1);
    }
  }

  it("never writes a plaintext data key or the root key to the database or its WAL", async () => {
    const path = join(dir, "keys.db");
    const rootKey = new Uint8Array(randomBytes(32));
    const store = SqliteKeyStore.open({ path });
    const kms = await createKms({ store, rootKey: RootKeySource.fromBytes(rootKey) });
    const dataKeys: Uint8Array[] = [];
    const keyIds: string[] = [];
    try {
      for (let k = 0; k < 4; k++) {
        const { keyMetadata } = await kms.createKey();
        keyIds.push(keyMetadata.keyId);
        if (k % 2 === 1) await kms.rotateKeyOnDemand({ keyId: keyMetadata.keyId });
        for (let d = 0; d < 5; d++) {
          const { plaintext } = await kms.generateDataKey({
            keyId: keyMetadata.keyId,
            keySpec: d % 2 === 0 ? "AES_256" : "AES_128",
            encryptionContext: { table: "orders", row: String(d) },
          });
          dataKeys.push(Uint8Array.from(plaintext));
        }
      }

      // Scanned while open (everything still in the WAL) and again after close (checkpointed).
      for (const phase of ["open", "closed"]) {
        if (phase === "closed") await kms.close();
        const bytes = await fileBytes(path);
        // The scan reads real content: the key ids are stored as text.
        for (const keyId of keyIds) expect(bytes.indexOf(Buffer.from(keyId))).toBeGreaterThan(-1);
        dataKeys.forEach((dataKey, i) => {
          expectAbsent(bytes, dataKey, `data key ${i} (${phase})`);
        });
        expectAbsent(bytes, rootKey, `root key (${phase})`);
      }
    } finally {
      await kms.close().catch(() => {});
    }
  });
});
