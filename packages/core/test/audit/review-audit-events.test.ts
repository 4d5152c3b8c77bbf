/**
 * Audit events, found in adversarial review: what a call records must be complete (no
 * encryption-context pair dropped for its name), must hash as it is stored (whatever the caller
 * passes as a request id), and must never carry a secret of any operation.
 */
import { createDecipheriv, createPrivateKey, generateKeyPairSync } from "node:crypto";
import {
  type AuditEvent,
  createKms,
  type KeySpec,
  type KeyUsage,
  MemoryAuditSink,
  MemoryKeyStore,
  ValidationError,
  verifyAuditLog,
} from "@kms/core";
import { describe, expect, test } from "vitest";
import { redact } from "../../src/audit/audit-event.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x51 + i);
const ALICE = "arn:aws:iam::111122223333:user/alice";

async function audited() {
  const sink = new MemoryAuditSink();
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), audit: sink });
  return { sink, store, kms };
}

function last(sink: MemoryAuditSink, eventName: string): AuditEvent {
  const found = sink.events.filter((e) => e.eventName === eventName).at(-1);
  if (found === undefined) throw new Error(`no ${eventName} event`);
  return found;
}

describe("an encryption context is recorded whole, whatever its keys are named", () => {
  // Names the redaction drops as fields (SECRET_FIELDS), chosen here as context keys.
  const context = {
    message: "order-17",
    signature: "v2",
    plaintext: "yes",
    mac: "m",
    grantTokens: "g",
    tenant: "alice",
  };

  test("Encrypt, Decrypt and ReEncrypt keep every pair", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: new Uint8Array(4),
      encryptionContext: context,
    });
    expect(last(sink, "Encrypt").requestParameters?.encryptionContext).toStrictEqual(context);
    await kms.decrypt({ ciphertextBlob, encryptionContext: context });
    expect(last(sink, "Decrypt").requestParameters?.encryptionContext).toStrictEqual(context);
    await kms.reEncrypt({
      ciphertextBlob,
      sourceEncryptionContext: context,
      destinationKeyId: keyId,
      destinationEncryptionContext: { ...context, tenant: "bob" },
    });
    const re = last(sink, "ReEncrypt").requestParameters;
    expect(re?.sourceEncryptionContext).toStrictEqual(context);
    expect(re?.destinationEncryptionContext).toStrictEqual({ ...context, tenant: "bob" });
    // The fields themselves are still left out.
    expect(last(sink, "Encrypt").requestParameters).not.toHaveProperty("plaintext");
    expect(last(sink, "Decrypt").requestParameters).not.toHaveProperty("ciphertextBlob");
  });

  test("CreateGrant records the grant's constraints as they were given", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const constraints = { encryptionContextSubset: { mac: "x", signature: "y", tenant: "a" } };
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Decrypt"],
      constraints,
    });
    expect(last(sink, "CreateGrant").requestParameters?.constraints).toStrictEqual(constraints);
    const equals = { encryptionContextEquals: { message: "only" } };
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
      constraints: equals,
    });
    expect(last(sink, "CreateGrant").requestParameters?.constraints).toStrictEqual(equals);
  });

  test("a context value that is bytes (a refused call) is still left out", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const secret = Uint8Array.from([7, 7, 7, 7]);
    await expect(
      kms.encrypt({
        keyId,
        plaintext: new Uint8Array(4),
        encryptionContext: { message: secret } as unknown as Record<string, string>,
      }),
    ).rejects.toThrow();
    expect(last(sink, "Encrypt").requestParameters?.encryptionContext).toStrictEqual({});
  });
});

describe("a request id that is not a string", () => {
  test("a BigInt fails its own call only, and is recorded as invalid", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const plaintext = new Uint8Array(3);
    // Issued together, so that the three events share one group-commit batch.
    const results = await Promise.allSettled([
      kms.encrypt({ keyId, plaintext }, { requestId: "first" }),
      kms.encrypt({ keyId, plaintext }, { requestId: 5n as unknown as string }),
      kms.encrypt({ keyId, plaintext }, { requestId: "third" }),
    ]);
    expect(results.map((r) => r.status)).toStrictEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(ValidationError);
    // The refused call settles first (it awaits nothing): compare without the order.
    expect(
      sink.events
        .slice(-3)
        .map((e) => e.requestID)
        .sort(),
    ).toStrictEqual(["(invalid requestId)", "first", "third"].sort());
  });

  test("an object with toJSON does not make the stored trail read as edited", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await expect(
      kms.encrypt(
        { keyId, plaintext: new Uint8Array(3) },
        { requestId: new Date(0) as unknown as string },
      ),
    ).rejects.toBeInstanceOf(ValidationError);
    await kms.describeKey({ keyId });
    // What every persistent sink stores: the events' JSON.
    const stored = JSON.parse(JSON.stringify(sink.events)) as unknown[];
    expect(verifyAuditLog(stored)).toMatchObject({ ok: true, count: 3 });
  });
});

describe("text a refused call carries is bounded in its event", () => {
  test("a huge description is cut with a note; the call fails; the trail verifies", async () => {
    const { sink, kms } = await audited();
    const description = "d".repeat(3_000_000);
    await expect(kms.createKey({ description })).rejects.toMatchObject({
      code: "ValidationException",
    });
    const event = last(sink, "CreateKey");
    const recorded = event.requestParameters?.description;
    expect(typeof recorded).toBe("string");
    expect((recorded as string).length).toBeLessThan(300 * 1024);
    expect(recorded).toMatch(/…\[truncated from 3000000 characters\]$/);
    expect(JSON.stringify(event).length).toBeLessThan(300 * 1024);
    expect(verifyAuditLog(JSON.parse(JSON.stringify(sink.events)) as unknown[])).toMatchObject({
      ok: true,
    });
  });

  test("an encryption context with a huge number of pairs is bounded too", async () => {
    const { sink, kms } = await audited();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const encryptionContext = Object.fromEntries(
      Array.from({ length: 100_000 }, (_, i) => [`k${i}`, "v".repeat(32)]),
    );
    await expect(
      kms.encrypt({ keyId, plaintext: new Uint8Array(1), encryptionContext }),
    ).rejects.toMatchObject({ code: "ValidationException" });
    expect(JSON.stringify(last(sink, "Encrypt")).length).toBeLessThan(300 * 1024);
  });

  test("a sparse array claiming 2^32 - 1 elements, or a million small values, cost little", () => {
    // Directly: the facade's request snapshot refuses such arrays before the event is built,
    // but the event must not depend on that.
    const zeros = { extra: Array.from({ length: 20 }, () => new Array(50_000).fill(0)) };
    expect(JSON.stringify(redact(zeros)).length).toBeLessThan(700 * 1024);
    const holes: unknown[] = [];
    holes.length = 2 ** 32 - 1;
    holes[5] = { tagKey: "a", tagValue: "b" };
    expect(redact({ tags: holes })).toStrictEqual({ tags: [{ tagKey: "a", tagValue: "b" }] });
  });

  test("a huge request id is cut with a note", async () => {
    const { sink, kms } = await audited();
    await kms.listKeys({}, { requestId: "r".repeat(100_000) });
    const id = last(sink, "ListKeys").requestID;
    expect(id.length).toBeLessThan(9 * 1024);
    expect(id).toMatch(/^r+…\[truncated from 100000 characters\]$/);
  });
});

/** Raw material of a key version (FORMAT §4), recovered with the root key. */
function unwrap(keyId: string, version: number, wrapped: Uint8Array): Buffer {
  const w = Buffer.from(wrapped);
  const decipher = createDecipheriv("aes-256-gcm", ROOT, w.subarray(9, 21));
  decipher.setAAD(Buffer.from(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]);
}

/** The secret parts of material: raw bytes, or the private fields of a PKCS#8 key. */
function secretParts(spec: KeySpec, material: Buffer): Buffer[] {
  if (spec === "SYMMETRIC_DEFAULT" || spec.startsWith("HMAC_") || spec.startsWith("ML_DSA_")) {
    return [material];
  }
  const jwk = createPrivateKey({ key: material, format: "der", type: "pkcs8" }).export({
    format: "jwk",
  });
  return [jwk.d, jwk.p, jwk.q, jwk.dp, jwk.dq, jwk.qi]
    .filter((v): v is string => typeof v === "string")
    .map((v) => Buffer.from(v, "base64url"));
}

/** Renderings of the first 16 bytes of `secret` that a JSON event could hold. */
function forms(secret: Uint8Array): string[] {
  const head = Buffer.from(secret).subarray(0, 16);
  const b64 = Buffer.from(secret).subarray(0, 15);
  return [
    head.toString("hex"),
    head.toString("hex").toUpperCase(),
    b64.toString("base64"),
    b64.toString("base64url"),
    [...head.subarray(0, 8)].join(","),
  ];
}

describe("no operation that carries a secret puts it in the trail", () => {
  test("sign, verify, MACs, data key pairs, shared secrets, RSA encryption, random bytes", async () => {
    const { sink, store, kms } = await audited();
    const secrets: Uint8Array[] = [];
    const create = async (keySpec: KeySpec, keyUsage: KeyUsage) => {
      const keyId = (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
      return keyId;
    };
    const message = Uint8Array.from({ length: 48 }, (_, i) => (i * 37 + 11) & 0xff);
    secrets.push(message);

    const ecc = await create("ECC_NIST_P256", "SIGN_VERIFY");
    const { signature } = await kms.sign({
      keyId: ecc,
      message,
      signingAlgorithm: "ECDSA_SHA_256",
    });
    secrets.push(signature);
    await kms.verify({ keyId: ecc, message, signature, signingAlgorithm: "ECDSA_SHA_256" });
    const ed = await create("ECC_NIST_EDWARDS25519", "SIGN_VERIFY");
    const signed = await kms.sign({ keyId: ed, message, signingAlgorithm: "ED25519_SHA_512" });
    secrets.push(signed.signature);
    const mlDsa = await create("ML_DSA_44", "SIGN_VERIFY");
    const pq = await kms.sign({ keyId: mlDsa, message, signingAlgorithm: "ML_DSA_SHAKE_256" });
    secrets.push(pq.signature);

    const hmac = await create("HMAC_256", "GENERATE_VERIFY_MAC");
    const { mac } = await kms.generateMac({ keyId: hmac, message, macAlgorithm: "HMAC_SHA_256" });
    secrets.push(mac);
    await kms.verifyMac({ keyId: hmac, message, mac, macAlgorithm: "HMAC_SHA_256" });

    const symmetric = await create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
    await kms.rotateKeyOnDemand({ keyId: symmetric });
    const pair = await kms.generateDataKeyPair({ keyId: symmetric, keyPairSpec: "ECC_NIST_P256" });
    secrets.push(pair.privateKeyPlaintext, pair.privateKeyCiphertextBlob);
    const pairOnly = await kms.generateDataKeyPairWithoutPlaintext({
      keyId: symmetric,
      keyPairSpec: "ECC_NIST_EDWARDS25519",
    });
    secrets.push(pairOnly.privateKeyCiphertextBlob);
    const opened = await kms.decrypt({ ciphertextBlob: pairOnly.privateKeyCiphertextBlob });
    secrets.push(opened.plaintext);

    const agreement = await create("ECC_NIST_P256", "KEY_AGREEMENT");
    const peer = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const { sharedSecret } = await kms.deriveSharedSecret({
      keyId: agreement,
      keyAgreementAlgorithm: "ECDH",
      publicKey: new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" })),
    });
    secrets.push(sharedSecret);

    const rsa = await create("RSA_2048", "ENCRYPT_DECRYPT");
    const rsaPlaintext = Uint8Array.from({ length: 32 }, (_, i) => (i * 91 + 5) & 0xff);
    const rsaBlob = await kms.encrypt({
      keyId: rsa,
      plaintext: rsaPlaintext,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    await kms.decrypt({
      keyId: rsa,
      ciphertextBlob: rsaBlob.ciphertextBlob,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    secrets.push(rsaPlaintext, rsaBlob.ciphertextBlob);
    const random = await kms.generateRandom({ numberOfBytes: 64 });
    secrets.push(random.plaintext);

    // Refused calls are audited too, with their requests: a MAC that does not verify, a
    // signature under the wrong key.
    await kms
      .verifyMac({
        keyId: hmac,
        message,
        mac: signature.subarray(0, 32),
        macAlgorithm: "HMAC_SHA_256",
      })
      .catch(() => undefined);
    await kms
      .verify({
        keyId: ecc,
        message,
        signature: signed.signature,
        signingAlgorithm: "ECDSA_SHA_256",
      })
      .catch(() => undefined);

    for (const key of await store.listKeys({ limit: 100 })) {
      for (const v of key.versions) {
        secrets.push(...secretParts(key.keySpec, unwrap(key.keyId, v.version, v.wrappedMaterial)));
      }
    }
    expect(secrets.length).toBeGreaterThan(20);
    const text = JSON.stringify(sink.events);
    for (const secret of secrets) {
      for (const form of forms(secret)) {
        expect(text.includes(form), `a secret appears in the trail as ${form}`).toBe(false);
      }
    }
    expect(verifyAuditLog(JSON.parse(text) as unknown[])).toMatchObject({ ok: true });
  });
});
