import { fileURLToPath } from "node:url";
import { createKms } from "@kms/core";
import { startWorkerProcess } from "@kms/tooling/worker-process";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const WORKER = fileURLToPath(new URL("./fixtures/hammer-worker.ts", import.meta.url));

interface KeyAcks {
  writes: number;
  rotations: number;
  lastTag?: string;
  descriptions: string[];
}
interface Report {
  acks: Record<string, KeyAcks>;
  ciphertexts: { keyId: string; blob: string; text: string; context: Record<string, string> }[];
  aliasTargets: string[];
  errors: Record<string, number>;
}

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore across processes", () => {
  let schema: string;
  afterEach(async () => {
    await dropSchema(schema);
  });

  it("loses no update when four processes hammer the same keys through the facade", async () => {
    schema = randomSchema("mp");
    const store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    const kms = await createKms({ store, rootKey: new Uint8Array(32).fill(5) });
    const keyIds: string[] = [];
    for (let i = 0; i < 3; i++) keyIds.push((await kms.createKey()).keyMetadata.keyId);
    await kms.createAlias({ aliasName: "alias/hammer", targetKeyId: keyIds[0]! });

    const processes = 4;
    const opsEach = 120;
    const workers = Array.from({ length: processes }, (_, w) =>
      startWorkerProcess<Report>(WORKER, [
        target.url!,
        schema,
        String(w),
        String(opsEach),
        keyIds.join(","),
      ]),
    );
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const reports = await Promise.all(workers.map((w) => w.result));

    let checkedCiphertexts = 0;
    for (const keyId of keyIds) {
      const final = await store.getKey(keyId);
      expect(final).toBeDefined();
      const writes = reports.reduce((sum, r) => sum + r.acks[keyId]!.writes, 0);
      const rotations = reports.reduce((sum, r) => sum + r.acks[keyId]!.rotations, 0);
      // Every acknowledged write is one revision: none lost, none applied twice.
      expect(final!.revision).toBe(1 + writes);
      expect(final!.rotation.onDemandRotations).toBe(rotations);
      expect(final!.versions.map((v) => v.version)).toStrictEqual(
        Array.from({ length: 1 + rotations }, (_, i) => i + 1),
      );
      expect(final!.currentVersion).toBe(1 + rotations);
      expect(new Set(final!.versions.map((v) => v.keyMaterialId)).size).toBe(1 + rotations);
      // Each worker's own tag holds the value of its last acknowledged tagResource.
      reports.forEach((r, w) => {
        const expected = r.acks[keyId]!.lastTag;
        const tag = final!.tags.find((t) => t.tagKey === `w${w}`);
        expect(tag?.tagValue).toBe(expected);
      });
      const descriptions = reports.flatMap((r) => r.acks[keyId]!.descriptions);
      if (descriptions.length > 0) expect(descriptions).toContain(final!.description);
    }

    // Every acknowledged ciphertext still decrypts, whatever rotations and disables followed.
    for (const keyId of keyIds) await kms.enableKey({ keyId });
    for (const report of reports) {
      for (const c of report.ciphertexts) {
        const { plaintext } = await kms.decrypt({
          ciphertextBlob: new Uint8Array(Buffer.from(c.blob, "base64")),
          encryptionContext: c.context,
        });
        expect(new TextDecoder().decode(plaintext)).toBe(c.text);
        checkedCiphertexts++;
      }
    }
    const alias = await store.getAlias("alias/hammer");
    const targets = reports.flatMap((r) => r.aliasTargets);
    if (targets.length > 0) expect(targets).toContain(alias?.targetKeyId);

    // The run means something only if the processes really raced and wrote.
    const totalWrites = reports.reduce(
      (sum, r) => sum + Object.values(r.acks).reduce((s, a) => s + a.writes, 0),
      0,
    );
    expect(totalWrites).toBeGreaterThan(processes * opsEach * 0.3);
    expect(checkedCiphertexts).toBeGreaterThan(0);
    console.log(
      `multi-process: ${totalWrites} acknowledged writes, ${checkedCiphertexts} ciphertexts decrypted, refusals ${JSON.stringify(
        reports.map((r) => r.errors),
      )}`,
    );
    await kms.close();
  }, 120_000);
});
