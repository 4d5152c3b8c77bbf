/** Keyrings, multi-key messages and the decrypt policy (docs/FORMAT.md §5.3, §5.7). */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createDecryptStream,
  createKms,
  decryptMessage,
  decryptTransformStream,
  encryptMessage,
  InvalidCiphertextError,
  type Kms,
  KmsInternalError,
  KmsKeyring,
  type KmsLike,
  MultiKeyring,
  RawAesKeyring,
  RawRsaKeyring,
  ValidationError,
} from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

let kms: Kms;
let keyA: string;
let keyB: string;
let arnA: string;
const context = { tenant: "acme" };
const plaintext = randomBytes(1000);

beforeAll(async () => {
  kms = await createKms();
  const a = await kms.createKey({ description: "a" });
  keyA = a.keyMetadata.keyId;
  arnA = a.keyMetadata.arn;
  keyB = (await kms.createKey({ description: "b" })).keyMetadata.keyId;
  await kms.createAlias({ aliasName: "alias/msg-a", targetKeyId: keyA });
});

async function roundTrip(
  message: Uint8Array,
  keyring: ConstructorParameters<typeof MultiKeyring>[0]["generator"],
): Promise<void> {
  const out = await decryptMessage(message, { keyring: keyring!, encryptionContext: context });
  expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
}

describe("KmsKeyring", () => {
  it("a message under two KMS keys decrypts with either keyring alone", async () => {
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA, keyB] }),
      encryptionContext: context,
    });
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [keyA] }));
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [keyB] }));
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [arnA] }));
    await roundTrip(message, new KmsKeyring({ kms, keyIds: ["alias/msg-a"] }));
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [] })); // discovery
  });

  it("binds the copy to the context inside KMS and still decrypts after rotation", async () => {
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA] }),
      encryptionContext: context,
    });
    await kms.rotateKeyOnDemand({ keyId: keyA });
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [keyA] }));
  });

  it("fails generically when the keyring's key made no copy, or the key is disabled", async () => {
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA] }),
      encryptionContext: context,
    });
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms, keyIds: [keyB] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const other = await createKms(); // same key ids cannot exist there
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms: other, keyIds: [] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const c = (await kms.createKey()).keyMetadata.keyId;
    const underC = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [c] }),
    });
    await kms.disableKey({ keyId: c });
    await expect(
      decryptMessage(underC, { keyring: new KmsKeyring({ kms, keyIds: [c] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("works over any KmsLike (a wrapper that only forwards the three calls)", async () => {
    const calls: string[] = [];
    const wrapper = {
      encrypt: (r, o) => {
        calls.push("encrypt");
        return kms.encrypt(r, o);
      },
      decrypt: (r, o) => {
        calls.push("decrypt");
        return kms.decrypt(r, o);
      },
      generateDataKey: (r, o) => {
        calls.push("generateDataKey");
        return kms.generateDataKey(r, o);
      },
    } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    const keyring = new KmsKeyring({ kms: wrapper, keyIds: [keyA, keyB] });
    const message = await encryptMessage(plaintext, { keyring, encryptionContext: context });
    await roundTrip(message, keyring);
    expect(calls).toEqual(["generateDataKey", "encrypt", "decrypt"]);
  });

  it("reports an unreachable KMS as the outage it is, not as an invalid message", async () => {
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA, keyB] }),
      encryptionContext: context,
    });
    const over = (decrypt: KmsLike["decrypt"]): KmsLike =>
      ({
        encrypt: (r, o) => kms.encrypt(r, o),
        generateDataKey: (r, o) => kms.generateDataKey(r, o),
        decrypt,
      }) as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    const failing = (error: unknown): KmsLike => over(() => Promise.reject(error));
    const internal = new KmsInternalError("AWS KMS Decrypt failed with ServiceUnavailable");
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms: failing(internal), keyIds: [] }) }),
    ).rejects.toBe(internal);
    const network = new TypeError("fetch failed");
    const thrown = await decryptMessage(message, {
      keyring: new KmsKeyring({ kms: failing(network), keyIds: [keyA] }),
    }).catch((error: unknown) => error);
    expect(thrown).toBeInstanceOf(KmsInternalError);
    expect((thrown as KmsInternalError).cause).toBe(network);

    // One copy's outage does not hide another copy that opens.
    let calls = 0;
    const flaky = over((r, o) => (++calls === 1 ? Promise.reject(internal) : kms.decrypt(r, o)));
    await roundTrip(message, new KmsKeyring({ kms: flaky, keyIds: [keyA, keyB] }));
    expect(calls).toBe(2);

    // Refusals stay generic: the copy is simply not this keyring's.
    const denied = failing(new AccessDeniedError("not allowed"));
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms: denied, keyIds: [] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("tries every configured alias, in order, for a copy it cannot match by id", async () => {
    await kms.createAlias({ aliasName: "alias/msg-b", targetKeyId: keyB });
    const underB = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyB] }),
      encryptionContext: context,
    });
    const pinned: (string | undefined)[] = [];
    const counting = {
      ...kms,
      generateDataKey: kms.generateDataKey.bind(kms),
      encrypt: kms.encrypt.bind(kms),
      decrypt: (r, o) => {
        pinned.push(r.keyId);
        return kms.decrypt(r, o);
      },
    } as KmsLike;
    // The first alias names key A, which KMS refuses for B's copy; the second one opens it.
    const aliases = new KmsKeyring({ kms: counting, keyIds: ["alias/msg-a", "alias/msg-b"] });
    await roundTrip(underB, aliases);
    expect(pinned).toEqual(["alias/msg-a", "alias/msg-b"]);
    // Only the aliases that resolve to another key: the copy stays closed.
    await expect(
      decryptMessage(underB, { keyring: new KmsKeyring({ kms, keyIds: ["alias/msg-a"] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    // A copy matched by id is tried first, before any alias call.
    const underAB = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA, keyB] }),
      encryptionContext: context,
    });
    pinned.length = 0;
    await roundTrip(underAB, new KmsKeyring({ kms: counting, keyIds: ["alias/msg-a", keyB] }));
    expect(pinned).toHaveLength(1);
    expect(pinned[0]).toMatch(new RegExp(`:key/${keyB}$`));
  });

  it("refuses to encrypt with a discovery keyring and rejects bad options", async () => {
    await expect(
      encryptMessage(plaintext, { keyring: new KmsKeyring({ kms, keyIds: [] }) }),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(() => new KmsKeyring({ kms: {} as KmsLike, keyIds: [] })).toThrow(ValidationError);
    expect(() => new KmsKeyring({ kms, keyIds: [""] })).toThrow(ValidationError);
  });
});

describe("raw keyrings", () => {
  it("AES: a copy unwraps only with the same key bytes, namespace, name and context", async () => {
    const key = randomBytes(32);
    const keyring = new RawAesKeyring({ keyNamespace: "ns", keyName: "n", wrappingKey: key });
    const message = await encryptMessage(plaintext, { keyring, encryptionContext: context });
    await roundTrip(
      message,
      new RawAesKeyring({ keyNamespace: "ns", keyName: "n", wrappingKey: key }),
    );
    for (const wrong of [
      new RawAesKeyring({ keyNamespace: "ns", keyName: "n", wrappingKey: randomBytes(32) }),
      new RawAesKeyring({ keyNamespace: "ns2", keyName: "n", wrappingKey: key }),
      new RawAesKeyring({ keyNamespace: "ns", keyName: "n2", wrappingKey: key }),
    ]) {
      await expect(decryptMessage(message, { keyring: wrong })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });

  it("AES: binds the copy to the context when called directly, before and after a message", async () => {
    const keyring = aesKeyring("direct");
    const ctx = { tenant: "acme" };
    const wrapped = await keyring.encryptDataKey({ encryptionContext: ctx, suiteId: 1 });
    // A message in between must not leave a stale context encoding behind for `ctx`.
    await decryptMessage(await encryptMessage(plaintext, { keyring, encryptionContext: ctx }), {
      keyring,
    });
    const request = { suiteId: 1, encryptedDataKeys: wrapped.encryptedDataKeys };
    const opened = await keyring.decryptDataKey({ ...request, encryptionContext: ctx });
    expect(Buffer.from(opened!).equals(Buffer.from(wrapped.dataKey))).toBe(true);
    const mutated: Record<string, string> = ctx;
    mutated.tenant = "other";
    expect(await keyring.decryptDataKey({ ...request, encryptionContext: mutated })).toBe(
      undefined,
    );
  });

  it("AES: validates its options", () => {
    expect(
      () => new RawAesKeyring({ keyNamespace: "ns", keyName: "n", wrappingKey: randomBytes(16) }),
    ).toThrow(ValidationError);
    expect(
      () => new RawAesKeyring({ keyNamespace: "", keyName: "n", wrappingKey: randomBytes(32) }),
    ).toThrow(ValidationError);
    expect(
      () => new RawAesKeyring({ keyNamespace: "kms", keyName: "n", wrappingKey: randomBytes(32) }),
    ).toThrow(ValidationError);
  });

  it("RSA: senders need only the public key; the private key decrypts", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const sender = new RawRsaKeyring({ keyNamespace: "escrow", keyName: "rsa-1", publicKey });
    const message = await encryptMessage(plaintext, {
      keyring: sender,
      encryptionContext: context,
    });
    await expect(decryptMessage(message, { keyring: sender })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await roundTrip(
      message,
      new RawRsaKeyring({
        keyNamespace: "escrow",
        keyName: "rsa-1",
        privateKey: privateKey.export({ format: "pem", type: "pkcs8" }) as string,
      }),
    );
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    await expect(
      decryptMessage(message, {
        keyring: new RawRsaKeyring({ keyNamespace: "escrow", keyName: "rsa-1", privateKey: other }),
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey;
    expect(() => new RawRsaKeyring({ keyNamespace: "e", keyName: "x", publicKey: ec })).toThrow(
      ValidationError,
    );
  });
});

describe("MultiKeyring", () => {
  it("a message under a KMS key and a raw AES key decrypts with either alone", async () => {
    const raw = aesKeyring("offline");
    const keyring = new MultiKeyring({
      generator: new KmsKeyring({ kms, keyIds: [keyA] }),
      children: [raw],
    });
    const message = await encryptMessage(plaintext, { keyring, encryptionContext: context });
    await roundTrip(message, raw);
    await roundTrip(message, new KmsKeyring({ kms, keyIds: [keyA] }));
    await roundTrip(message, keyring);
    const out = await decryptMessage(message, { keyring: raw });
    expect(out.encryptedDataKeys.map((e) => e.providerId)).toEqual(["kms", "test"]);
  });

  it("keeps trying after a child that throws, and re-throws its error when none opens", async () => {
    const raw = aesKeyring("r");
    const broken = {
      identity: "broken",
      encryptDataKey: () => Promise.reject(new Error("down")),
      decryptDataKey: () => Promise.reject(new Error("down")),
    };
    const message = await encryptMessage(plaintext, { keyring: raw, encryptionContext: context });
    await roundTrip(message, new MultiKeyring({ children: [broken, raw] }));
    const onlyBroken = new MultiKeyring({ children: [aesKeyring("other"), broken] });
    // Not a KmsError: wrapped as KmsInternalError (an outage, not an invalid message).
    const error = await decryptMessage(message, { keyring: onlyBroken }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as KmsInternalError).cause).toEqual(new Error("down"));
    expect(() => new MultiKeyring({})).toThrow(ValidationError);
    await expect(
      encryptMessage(plaintext, { keyring: new MultiKeyring({ children: [raw] }) }),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

describe("decrypt policy (violations are AccessDeniedError)", () => {
  let message: Uint8Array;
  const raw = aesKeyring("offline");
  beforeAll(async () => {
    message = await encryptMessage(plaintext, {
      keyring: new MultiKeyring({
        generator: new KmsKeyring({ kms, keyIds: [keyA] }),
        children: [raw],
      }),
      encryptionContext: { tenant: "acme", purpose: "export" },
    });
  });

  it("allowedKeyIds: only copies under the allowed KMS keys are tried", async () => {
    const discovery = new KmsKeyring({ kms, keyIds: [] });
    await expect(
      decryptMessage(message, {
        keyring: discovery,
        policy: { allowedKeyIds: [keyB], allowedKeyNames: [] },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    // The KMS copy is filtered out; the raw copy stays, but this keyring cannot use it.
    await expect(
      decryptMessage(message, { keyring: discovery, policy: { allowedKeyIds: [keyB] } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const ok = await decryptMessage(message, {
      keyring: discovery,
      policy: { allowedKeyIds: [keyA] },
    });
    expect(ok.plaintext.length).toBe(plaintext.length);
    // The raw copy is not a KMS key: with only allowedKeyIds it stays allowed.
    const viaRaw = await decryptMessage(message, {
      keyring: raw,
      policy: { allowedKeyIds: [keyB] },
    });
    expect(viaRaw.plaintext.length).toBe(plaintext.length);
  });

  it("allowedKeyNames: only the named raw keys", async () => {
    await expect(
      decryptMessage(message, {
        keyring: raw,
        policy: { allowedKeyNames: ["test/other"], allowedKeyIds: [] },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const ok = await decryptMessage(message, {
      keyring: raw,
      policy: { allowedKeyNames: ["test/offline"] },
    });
    expect(ok.plaintext.length).toBe(plaintext.length);
  });

  it("requiredEncryptionContext: every pair must be present with its value", async () => {
    await expect(
      decryptMessage(message, {
        keyring: raw,
        policy: { requiredEncryptionContext: { tenant: "globex" } },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      decryptMessage(message, {
        keyring: raw,
        policy: { requiredEncryptionContext: { region: "eu" } },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const ok = await decryptMessage(message, {
      keyring: raw,
      policy: { requiredEncryptionContext: { tenant: "acme" } },
    });
    expect(ok.encryptionContext).toEqual({ tenant: "acme", purpose: "export" });
  });

  it("maxEncryptedDataKeys and signature requirements", async () => {
    await expect(
      decryptMessage(message, { keyring: raw, policy: { maxEncryptedDataKeys: 1 } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      decryptMessage(message, { keyring: raw, policy: { signature: "required" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const signed = await encryptMessage(plaintext, {
      keyring: raw,
      suite: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
    });
    await expect(
      decryptMessage(signed, { keyring: raw, policy: { signature: "forbidden" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      decryptMessage(message, { keyring: raw, policy: { maxEncryptedDataKeys: 0 } }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it.each([
    ["a null policy", { policy: null }],
    ["a misspelt signature rule", { policy: { signature: "Required" } }],
    [
      "allowedKeyNames as one string (would match substrings)",
      { policy: { allowedKeyNames: "test/offline-2" } },
    ],
    ["allowedKeyIds as one string", { policy: { allowedKeyIds: "alias/msg-a" } }],
    ["allowedKeyIds with a non-string", { policy: { allowedKeyIds: [1] } }],
    [
      "requiredEncryptionContext as a Map",
      { policy: { requiredEncryptionContext: new Map([["tenant", "globex"]]) } },
    ],
    [
      "requiredEncryptionContext with a non-string value",
      { policy: { requiredEncryptionContext: { tenant: 1 } } },
    ],
    ["an expected context of null", { encryptionContext: null }],
    ["an expected context as a Map", { encryptionContext: new Map([["tenant", "acme"]]) }],
  ])("rejects %s with ValidationError before any keyring call", async (_name, extra) => {
    let unwraps = 0;
    const counting = {
      identity: raw.identity,
      encryptDataKey: raw.encryptDataKey.bind(raw),
      decryptDataKey: (...args: Parameters<typeof raw.decryptDataKey>) => {
        unwraps++;
        return raw.decryptDataKey(...args);
      },
    };
    const options = { keyring: counting, ...(extra as object) };
    await expect(decryptMessage(message, options)).rejects.toBeInstanceOf(ValidationError);
    expect(() => createDecryptStream(options)).toThrow(ValidationError);
    expect(() => decryptTransformStream(options)).toThrow(ValidationError);
    expect(unwraps).toBe(0);
  });

  it("never calls KMS for a message the policy refuses", async () => {
    let calls = 0;
    const counting = {
      encrypt: (r, o) => kms.encrypt(r, o),
      generateDataKey: (r, o) => kms.generateDataKey(r, o),
      decrypt: (r, o) => {
        calls++;
        return kms.decrypt(r, o);
      },
    } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    await expect(
      decryptMessage(message, {
        keyring: new KmsKeyring({ kms: counting, keyIds: [] }),
        policy: { requiredEncryptionContext: { tenant: "globex" } },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect(calls).toBe(0);
  });
});

describe("U+FEFF at the start of a header string is content, not a byte-order mark (FORMAT §2.6)", () => {
  it("a context key that differs only by a leading U+FEFF is a different key", async () => {
    const raw = aesKeyring("bom");
    const message = await encryptMessage(plaintext, {
      keyring: raw,
      encryptionContext: { tenant: "acme", "\uFEFFtenant": "globex" },
    });
    const out = await decryptMessage(message, { keyring: raw });
    expect(out.encryptionContext).toEqual({ tenant: "acme", "\uFEFFtenant": "globex" });
    // Read as a byte-order mark, the second pair would overwrite the first.
    await expect(
      decryptMessage(message, {
        keyring: raw,
        policy: { requiredEncryptionContext: { tenant: "globex" } },
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      decryptMessage(message, { keyring: raw, encryptionContext: { tenant: "globex" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("round-trips such contexts through KMS and such key names through a raw keyring", async () => {
    const bomContext = { "\uFEFFtenant": "\uFEFFacme" };
    const viaKms = new KmsKeyring({ kms, keyIds: [keyA] });
    const message = await encryptMessage(plaintext, {
      keyring: viaKms,
      encryptionContext: bomContext,
    });
    const out = await decryptMessage(message, { keyring: viaKms, encryptionContext: bomContext });
    expect(out.encryptionContext).toEqual(bomContext);
    const raw = new RawAesKeyring({
      keyNamespace: "\uFEFFtest",
      keyName: "\uFEFFbom",
      wrappingKey: randomBytes(32),
    });
    const rawMessage = await encryptMessage(plaintext, { keyring: raw });
    const rawOut = await decryptMessage(rawMessage, {
      keyring: raw,
      policy: { allowedKeyNames: ["\uFEFFtest/\uFEFFbom"] },
    });
    expect(rawOut.encryptedDataKeys).toEqual([
      { providerId: "\uFEFFtest", providerInfo: "\uFEFFbom" },
    ]);
  });
});

describe("encrypt options", () => {
  it.each([
    ["reserved context key", { encryptionContext: { "kms-message:public-key": "x" } }],
    ["non-string context value", { encryptionContext: { a: 1 as unknown as string } }],
    ["frame length 0", { frameLength: 0 }],
    ["frame length too large", { frameLength: 2 ** 24 + 1 }],
    ["unknown suite", { suite: "AES_128_GCM" as never }],
  ])("rejects %s with ValidationError", async (_name, extra) => {
    await expect(
      encryptMessage(plaintext, { keyring: aesKeyring(), ...extra }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it("rejects a non-Uint8Array plaintext and a missing keyring", async () => {
    await expect(encryptMessage("text" as never, { keyring: aesKeyring() })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(encryptMessage(plaintext, {} as never)).rejects.toBeInstanceOf(ValidationError);
    await expect(decryptMessage(plaintext, {} as never)).rejects.toBeInstanceOf(ValidationError);
  });
});
