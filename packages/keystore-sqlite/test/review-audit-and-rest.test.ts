/**
 * Found in adversarial review of the SQLite audit sink and store: how durable an acknowledged
 * event is when the sink opens an existing file, rows re-spelled so that they parse to a chained
 * event, and what the file holds after keys of every spec were created, used and rotated with
 * the trail in the same file.
 */
import { createDecipheriv, createPrivateKey, generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, type KeySpec, type KeyUsage, KmsInternalError } from "@kms/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { retainSqliteHandle, SqliteAuditSink, SqliteKeyStore } from "../src/index.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x61 + i);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-sqlite-review-"));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await rm(dir, { recursive: true, force: true });
});

describe("SqliteAuditSink on a file it opens", () => {
  /** The connection the sink opened, caught as it sets its pragmas. */
  function openCapturing(path: string): { sink: SqliteAuditSink; db: Database.Database } {
    const exec = vi.spyOn(Database.prototype, "exec");
    const sink = new SqliteAuditSink({ path });
    const db = exec.mock.contexts[0] as Database.Database;
    exec.mockRestore();
    return { sink, db };
  }

  test("commits with synchronous FULL, also when the file is already in WAL mode", async () => {
    const path = join(dir, "audit.db");
    const first = openCapturing(path);
    expect(first.db.pragma("synchronous", { simple: true })).toBe(2);
    await first.sink.close();
    // Reopened: SQLite as better-sqlite3 builds it starts a WAL file's connection at NORMAL
    // (SQLITE_DEFAULT_WAL_SYNCHRONOUS=1), where a power cut can lose acknowledged events.
    const second = openCapturing(path);
    expect(second.db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(second.db.pragma("synchronous", { simple: true })).toBe(2);
    await second.sink.close();
  });

  test("a row re-spelled to parse to its chained event (a member given twice) is refused", async () => {
    const path = join(dir, "audit.db");
    const kms = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey: Uint8Array.from(ROOT),
      audit: new SqliteAuditSink({ path }),
    });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.encrypt({ keyId, plaintext: new Uint8Array(4) });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });

    const db = retainSqliteHandle(new Database(path));
    const row = db
      .prepare<[], { event: string }>("SELECT event FROM kms_audit_events WHERE sequence = 1")
      .get()!;
    // Readers that keep the first of two members would see a Decrypt by someone else.
    const forged = row.event.replace('"eventName":', '"eventName":"Decrypt","eventName":');
    expect(JSON.parse(forged)).toStrictEqual(JSON.parse(row.event));
    db.prepare("UPDATE kms_audit_events SET event = ? WHERE sequence = 1").run(forged);
    db.close();

    const failure = await kms.audit.verify().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(KmsInternalError);
    expect((failure as Error).message).toMatch(
      /the stored event at sequence 1 is not the text this sink writes/,
    );
    await kms.close();
  });
});

/** Raw material of a key version (docs/FORMAT.md §4), recovered with the root key. */
function unwrap(keyId: string, version: number, wrapped: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", ROOT, wrapped.subarray(9, 21));
  decipher.setAAD(Buffer.from(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(wrapped.subarray(wrapped.length - 16));
  return Buffer.concat([
    decipher.update(wrapped.subarray(21, wrapped.length - 16)),
    decipher.final(),
  ]);
}

/**
 * The secret parts of material: AES and HMAC keys and ML-DSA seeds whole, and the private JWK
 * members of a PKCS#8 key (never the DER as a whole, whose header is fixed and which may end
 * with the public key the store keeps in clear).
 */
function secretParts(keySpec: string, material: Buffer): Buffer[] {
  if (!keySpec.startsWith("RSA_") && !keySpec.startsWith("ECC_")) return [material];
  const jwk = createPrivateKey({ key: material, format: "der", type: "pkcs8" }).export({
    format: "jwk",
  }) as Record<string, string | undefined>;
  return ["d", "p", "q", "dp", "dq", "qi"]
    .map((m) => jwk[m])
    .filter((v): v is string => v !== undefined)
    .map((v) => Buffer.from(v, "base64url"));
}

/** Where `secret` appears in `bytes`: a 16-byte run of it, or a text rendering of one. */
function leak(bytes: Buffer, secret: Uint8Array): string | undefined {
  const s = Buffer.from(secret);
  for (const run of [s.subarray(0, 16), s.subarray(-16)]) {
    if (bytes.indexOf(run) !== -1) return "raw bytes";
    for (const form of [
      run.toString("hex"),
      run.toString("hex").toUpperCase(),
      run.subarray(0, 15).toString("base64"),
      run.subarray(0, 15).toString("base64url"),
    ]) {
      if (bytes.indexOf(form) !== -1) return `text ${form}`;
    }
  }
  return undefined;
}

describe("the file of a store and trail that used keys of every spec", () => {
  const SPECS: readonly { keySpec: KeySpec; keyUsage: KeyUsage }[] = [
    { keySpec: "SYMMETRIC_DEFAULT", keyUsage: "ENCRYPT_DECRYPT" },
    { keySpec: "HMAC_224", keyUsage: "GENERATE_VERIFY_MAC" },
    { keySpec: "HMAC_512", keyUsage: "GENERATE_VERIFY_MAC" },
    { keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" },
    { keySpec: "RSA_3072", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" },
    { keySpec: "ECC_NIST_P384", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ECC_NIST_P521", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ECC_SECG_P256K1", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ECC_NIST_EDWARDS25519", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ML_DSA_44", keyUsage: "SIGN_VERIFY" },
    { keySpec: "ML_DSA_87", keyUsage: "SIGN_VERIFY" },
  ];

  test("holds no material, data key, private key, shared secret, message, MAC or signature", async () => {
    const path = join(dir, "kms.db");
    const kms = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey: Uint8Array.from(ROOT),
      audit: new SqliteAuditSink({ path }),
    });
    const secrets: Uint8Array[] = [ROOT];
    const message = Uint8Array.from({ length: 64 }, (_, i) => (i * 29 + 3) & 0xff);
    secrets.push(message);
    for (const { keySpec, keyUsage } of SPECS) {
      const { keyId } = (await kms.createKey({ keySpec, keyUsage })).keyMetadata;
      if (keySpec === "SYMMETRIC_DEFAULT") {
        await kms.rotateKeyOnDemand({ keyId });
        const dataKey = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
        const pair = await kms.generateDataKeyPair({ keyId, keyPairSpec: "ECC_NIST_P256" });
        secrets.push(dataKey.plaintext, pair.privateKeyPlaintext);
      } else if (keyUsage === "GENERATE_VERIFY_MAC") {
        const algorithm = keySpec === "HMAC_224" ? "HMAC_SHA_224" : "HMAC_SHA_512";
        const { mac } = await kms.generateMac({ keyId, message, macAlgorithm: algorithm });
        secrets.push(mac);
      } else if (keyUsage === "KEY_AGREEMENT") {
        const peer = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
        const { sharedSecret } = await kms.deriveSharedSecret({
          keyId,
          keyAgreementAlgorithm: "ECDH",
          publicKey: new Uint8Array(peer.export({ format: "der", type: "spki" })),
        });
        secrets.push(sharedSecret);
      } else if (keyUsage === "SIGN_VERIFY") {
        const { signingAlgorithms } = (await kms.describeKey({ keyId })).keyMetadata;
        const { signature } = await kms.sign({
          keyId,
          message,
          signingAlgorithm: signingAlgorithms![0]!,
        });
        secrets.push(signature);
      } else {
        const plaintext = Uint8Array.from({ length: 32 }, (_, i) => (i * 53 + 7) & 0xff);
        await kms.encrypt({ keyId, plaintext, encryptionAlgorithm: "RSAES_OAEP_SHA_256" });
        secrets.push(plaintext);
      }
    }

    const db = retainSqliteHandle(new Database(path, { readonly: true }));
    const versions = db
      .prepare<[], { key_id: string; version: number; wrapped_material: Buffer; key_spec: string }>(
        "SELECT v.key_id, v.version, v.wrapped_material, k.key_spec FROM kms_key_versions v JOIN kms_keys k USING (key_id)",
      )
      .all();
    db.close();
    expect(versions).toHaveLength(SPECS.length + 1);
    for (const v of versions) {
      secrets.push(...secretParts(v.key_spec, unwrap(v.key_id, v.version, v.wrapped_material)));
    }

    const scan = (phase: string) => {
      for (const file of [path, `${path}-wal`]) {
        if (!existsSync(file)) continue;
        const bytes = readFileSync(file);
        for (const [i, secret] of secrets.entries()) {
          expect(leak(bytes, secret), `${phase}: secret ${i} in ${file}`).toBeUndefined();
        }
      }
    };
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
    scan("open");
    await kms.close();
    scan("closed");
    // Control: the scan sees what the file holds.
    expect(leak(readFileSync(path), versions[0]!.wrapped_material)).toBe("raw bytes");
  });
});
