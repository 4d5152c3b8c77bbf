import { createDecipheriv, randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  isKmsError,
  type Kms,
  type KmsError,
  MemoryKeyStore,
  type StoredKey,
} from "../../src/index.ts";

// Secrets: the root key, every backing key's raw material, and every data key handed out. The
// test recovers raw material on its own, with the known root key and docs/FORMAT.md §4, so that
// it can look for it where it must never be.

const root = randomBytes(32);
let store: MemoryKeyStore;
let kms: Kms;
const dataKeys: Uint8Array[] = [];
const dataKeyBlobs: Uint8Array[] = [];
const materials: Uint8Array[] = [];
const errors: KmsError[] = [];

function unwrap(keyId: string, version: number, w: Uint8Array): Uint8Array {
  const decipher = createDecipheriv("aes-256-gcm", root, w.subarray(9, 21));
  decipher.setAAD(new TextEncoder().encode(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return new Uint8Array(
    Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]),
  );
}

function secrets(): Uint8Array[] {
  return [root, ...materials, ...dataKeys];
}

/** Finds a 16-byte run of `secret` (its start or its end) inside `haystack`. */
function containsSecret(haystack: Uint8Array, secret: Uint8Array): boolean {
  const h = Buffer.from(haystack);
  return h.indexOf(secret.subarray(0, 16)) !== -1 || h.indexOf(secret.subarray(-16)) !== -1;
}

/** Text renderings a secret could take in a log line or a serialized object. */
function textForms(secret: Uint8Array): string[] {
  const b = Buffer.from(secret);
  return [
    b.subarray(0, 16).toString("hex"),
    b.subarray(0, 16).toString("hex").toUpperCase(),
    b.subarray(0, 15).toString("base64"),
    b.subarray(0, 15).toString("base64url"),
    [...b.subarray(0, 8)].join(","),
    [...b.subarray(0, 8)].join(", "),
  ];
}

function expectNoSecretInText(text: string, where: string): void {
  // inspect() pads and wraps long byte arrays, so decimal lists are also matched without spaces.
  const compact = text.replace(/\s+/g, "");
  for (const secret of secrets()) {
    for (const form of textForms(secret)) {
      if (text.includes(form) || compact.includes(form)) {
        throw new Error(`${where} contains secret bytes (as "${form}")`);
      }
    }
  }
}

/** Walks every field of a record: byte fields are scanned as bytes, strings as text. */
function scanValue(value: unknown, path: string): number {
  if (value instanceof Uint8Array) {
    for (const secret of secrets()) {
      if (containsSecret(value, secret)) throw new Error(`${path} contains secret bytes`);
    }
    return 1;
  }
  if (typeof value === "string") {
    expectNoSecretInText(value, path);
    return 0;
  }
  if (Array.isArray(value)) {
    return value.reduce<number>((n, item, i) => n + scanValue(item, `${path}[${i}]`), 0);
  }
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).reduce<number>((n, [k, v]) => n + scanValue(v, `${path}.${k}`), 0);
  }
  return 0;
}

async function collectError(action: Promise<unknown>): Promise<void> {
  const error = await action.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isKmsError(error)) throw new Error(`expected a KmsError, got ${String(error)}`);
  errors.push(error);
}

beforeAll(async () => {
  store = new MemoryKeyStore();
  kms = await createKms({ store, rootKey: Uint8Array.from(root) });
  const a = (await kms.createKey({ description: "a" })).keyMetadata.keyId;
  const b = (await kms.createKey({ description: "b" })).keyMetadata.keyId;
  await kms.createAlias({ aliasName: "alias/leak-test", targetKeyId: b });
  await kms.rotateKeyOnDemand({ keyId: a });
  await kms.rotateKeyOnDemand({ keyId: a });
  const context = { tenant: "acme" };
  for (const keyId of [a, b, "alias/leak-test"]) {
    for (const request of [
      { keySpec: "AES_256" as const },
      { keySpec: "AES_128" as const, encryptionContext: context },
      { numberOfBytes: 64, encryptionContext: context },
      { numberOfBytes: 1024 },
    ]) {
      const { plaintext, ciphertextBlob } = await kms.generateDataKey({ keyId, ...request });
      dataKeys.push(Uint8Array.from(plaintext));
      dataKeyBlobs.push(ciphertextBlob);
    }
  }
  for (const record of await store.listKeys({ limit: 100 })) {
    for (const v of record.versions)
      materials.push(unwrap(record.keyId, v.version, v.wrappedMaterial));
  }

  // Errors raised while handling secrets: each must be free of them.
  const blob = dataKeyBlobs[1]!;
  const tampered = Uint8Array.from(blob);
  tampered[40]! ^= 1;
  const dataKey = dataKeys[1]!;
  const oversized = new Uint8Array(4097);
  for (let i = 0; i < oversized.length; i += dataKey.length)
    oversized.set(dataKey.subarray(0, Math.min(dataKey.length, oversized.length - i)), i);
  await collectError(kms.decrypt({ ciphertextBlob: blob }));
  await collectError(kms.decrypt({ ciphertextBlob: blob, encryptionContext: { tenant: "evil" } }));
  await collectError(kms.decrypt({ ciphertextBlob: tampered, encryptionContext: context }));
  await collectError(kms.decrypt({ ciphertextBlob: blob, encryptionContext: context, keyId: b }));
  await collectError(kms.encrypt({ keyId: a, plaintext: oversized }));
  await collectError(kms.encrypt({ keyId: a, plaintext: dataKey, encryptionContext: { "": "x" } }));
  await collectError(kms.generateDataKey({ keyId: a, numberOfBytes: 2048 }));
  await collectError(
    kms.reEncrypt({
      ciphertextBlob: tampered,
      destinationKeyId: b,
      sourceEncryptionContext: context,
    }),
  );
  await kms.disableKey({ keyId: a });
  await collectError(kms.decrypt({ ciphertextBlob: blob, encryptionContext: context }));
  await collectError(kms.encrypt({ keyId: a, plaintext: dataKey }));
  await kms.enableKey({ keyId: a });
  const otherRoot = await createKms({ store, rootKey: randomBytes(32) }).catch((e: unknown) => e);
  if (isKmsError(otherRoot)) errors.push(otherRoot);
});

describe("key material and data keys never leave in the clear", () => {
  it("the test recovered every backing key's material and every data key", () => {
    expect(materials).toHaveLength(4);
    expect(dataKeys).toHaveLength(12);
    expect(errors.length).toBeGreaterThanOrEqual(11);
  });

  it("no store record holds raw material or a data key, in any byte or text field", async () => {
    let byteFields = 0;
    for (const record of await store.listKeys({ limit: 100 })) {
      byteFields += scanValue(record satisfies StoredKey, `key ${record.keyId}`);
    }
    expect(byteFields).toBe(4);
    scanValue(await store.listAliases({ limit: 100 }), "aliases");
    for (const name of ["root-key-id", "root-key-kdf"]) {
      const setting = await store.getSetting(name);
      if (setting !== undefined) scanValue(setting, `setting ${name}`);
    }
  });

  it("no 32-byte window of any wrapped material equals a data key or the material itself", async () => {
    for (const record of await store.listKeys({ limit: 100 })) {
      for (const v of record.versions) {
        const w = Buffer.from(v.wrappedMaterial);
        for (let at = 0; at + 32 <= w.length; at++) {
          const window = w.subarray(at, at + 32);
          for (const secret of [...dataKeys, ...materials]) {
            expect(window.equals(Buffer.from(secret.subarray(0, 32)))).toBe(false);
          }
        }
      }
    }
  });

  it("an encrypted data key blob contains neither its data key nor any material", () => {
    for (const blob of dataKeyBlobs) {
      for (const secret of [root, ...materials, ...dataKeys]) {
        expect(containsSecret(blob, secret)).toBe(false);
      }
    }
  });

  it("inspect, JSON and string forms of the Kms reveal nothing", () => {
    const renderings = [
      inspect(kms),
      inspect(kms, { showHidden: true, depth: Number.POSITIVE_INFINITY, getters: true }),
      JSON.stringify(kms),
      String(kms),
      inspect(store, { showHidden: true, depth: Number.POSITIVE_INFINITY }),
    ];
    for (const [i, text] of renderings.slice(0, 4).entries())
      expectNoSecretInText(text, `rendering ${i}`);
    // The store's own rendering shows wrapped bytes (that is what it stores) but never material.
    for (const secret of [root, ...materials, ...dataKeys]) {
      for (const form of textForms(secret)) expect(renderings[4]).not.toContain(form);
    }
  });

  it("errors carry no secret in message, stack, cause, JSON or inspect output", () => {
    for (const error of errors) {
      const where = `${error.name} (${error.message})`;
      expectNoSecretInText(error.message, where);
      expectNoSecretInText(String(error.stack), `${where} stack`);
      expectNoSecretInText(JSON.stringify(error), `${where} JSON`);
      expectNoSecretInText(
        inspect(error, { showHidden: true, depth: Number.POSITIVE_INFINITY }),
        `${where} inspect`,
      );
    }
  });

  it("decryption failures share one generic message", () => {
    const messages = new Set(
      errors.filter((e) => e.code === "InvalidCiphertextException").map((e) => e.message),
    );
    expect(messages.size).toBe(1);
  });
});
