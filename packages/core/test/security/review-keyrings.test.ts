/**
 * Adversarial review of the keyrings (docs/FORMAT.md §5.3) and of their use of the data-key
 * cache (§5.9). The provider info of an encrypted data key is unauthenticated until the data key
 * is known, so nothing may trust it: not the decrypt policy's `allowedKeyIds`, not the keyring.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createKms,
  DataKeyCache,
  decryptMessage,
  encryptMessage,
  InvalidCiphertextError,
  type Kms,
  KmsKeyring,
  type KmsLike,
  RawRsaKeyring,
  ValidationError,
} from "../../src/index.ts";

const LOCAL_USER = "arn:aws:iam::000000000000:user/carol";
/** Another account's principal: the default key policy refuses it every KMS call. */
const OUTSIDER = "arn:aws:iam::111122223333:user/mallory";
const plaintext = randomBytes(200);
const context = { tenant: "acme" };

let kms: Kms;
let keyA: string;
let arnA: string;
let keyB: string;

beforeAll(async () => {
  kms = await createKms();
  const a = (await kms.createKey({ description: "the decryptor's key" })).keyMetadata;
  keyA = a.keyId;
  arnA = a.arn;
  keyB = (await kms.createKey({ description: "another key the decryptor can use" })).keyMetadata
    .keyId;
});

/**
 * A sender that wraps under key B but writes key A's ARN as the copy's provider info. The header
 * tag cannot stop it: the sender holds the data key and computes the tag itself.
 */
function mislabelled(): KmsLike {
  return {
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: (r, o) => kms.decrypt(r, o),
    generateDataKey: async (r, o) => ({ ...(await kms.generateDataKey(r, o)), keyId: arnA }),
  } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
}

async function mislabelledMessage(): Promise<Uint8Array> {
  const message = await encryptMessage(plaintext, {
    keyring: new KmsKeyring({ kms: mislabelled(), keyIds: [keyB] }),
    encryptionContext: context,
  });
  // The header claims key A (the provider info is written in clear).
  expect(Buffer.from(message).includes(arnA)).toBe(true);
  expect(Buffer.from(message).includes(keyB)).toBe(false);
  return message;
}

describe("KmsKeyring trusts no provider info before KMS confirms it", () => {
  it("discovery: a copy made under another key but labelled with an allowed key's ARN does not pass allowedKeyIds", async () => {
    const message = await mislabelledMessage();
    await expect(
      decryptMessage(message, {
        keyring: new KmsKeyring({ kms, keyIds: [] }),
        policy: { allowedKeyIds: [arnA] },
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    // Honest copies under the allowed key still decrypt in discovery mode.
    const honest = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA] }),
      encryptionContext: context,
    });
    const out = await decryptMessage(honest, {
      keyring: new KmsKeyring({ kms, keyIds: [] }),
      policy: { allowedKeyIds: [arnA] },
    });
    expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
  });

  it("discovery: each KMS Decrypt is pinned to the copy's provider info", async () => {
    const pinned: (string | undefined)[] = [];
    const recording = {
      encrypt: (r, o) => kms.encrypt(r, o),
      generateDataKey: (r, o) => kms.generateDataKey(r, o),
      decrypt: (r, o) => {
        pinned.push(r.keyId);
        return kms.decrypt(r, o);
      },
    } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    const honest = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA] }),
    });
    await decryptMessage(honest, { keyring: new KmsKeyring({ kms: recording, keyIds: [] }) });
    expect(pinned).toEqual([arnA]);
  });

  it("strict: a KMS answer for another key than the copy names is refused (KmsLike that drops the pin)", async () => {
    const message = await mislabelledMessage();
    // A KmsLike that does not forward KeyId (an older adapter, a proxy): KMS then decrypts the
    // copy under whichever key made it. The keyring must still compare the answer's key id.
    const unpinned = {
      encrypt: (r, o) => kms.encrypt(r, o),
      generateDataKey: (r, o) => kms.generateDataKey(r, o),
      decrypt: (r, o) => {
        const { keyId: _dropped, ...rest } = r;
        return kms.decrypt(rest, o);
      },
    } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms: unpinned, keyIds: [keyA] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      decryptMessage(message, { keyring: new KmsKeyring({ kms: unpinned, keyIds: [] }) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});

describe("KmsKeyring identity separates callers, so a shared DataKeyCache never bypasses KMS authorization", () => {
  it("decrypt: a principal KMS refuses gets no data key another principal's keyring cached", async () => {
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA] }),
      encryptionContext: context,
    });
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const allowed = new KmsKeyring({
      kms,
      keyIds: [keyA],
      callOptions: { principal: LOCAL_USER },
    });
    await decryptMessage(message, { keyring: allowed, dataKeyCache: cache });
    const outsider = new KmsKeyring({ kms, keyIds: [keyA], callOptions: { principal: OUTSIDER } });
    // Without the cache, KMS refuses the outsider.
    await expect(decryptMessage(message, { keyring: outsider })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await expect(
      decryptMessage(message, { keyring: outsider, dataKeyCache: cache }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("encrypt: a principal KMS refuses is not handed another principal's cached data key", async () => {
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyA], callOptions: { principal: LOCAL_USER } }),
      encryptionContext: context,
      dataKeyCache: cache,
    });
    await expect(
      encryptMessage(plaintext, {
        keyring: new KmsKeyring({ kms, keyIds: [keyA], callOptions: { principal: OUTSIDER } }),
        encryptionContext: context,
        dataKeyCache: cache,
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  it("grant tokens and call options other than the request id are part of the identity", () => {
    const base = new KmsKeyring({ kms, keyIds: [keyA], callOptions: { principal: LOCAL_USER } });
    const sameCaller = new KmsKeyring({
      kms,
      keyIds: [keyA],
      callOptions: { principal: LOCAL_USER, requestId: "req-2" },
    });
    // Only the request id differs: caching across requests of one caller keeps working.
    expect(sameCaller.identity).toBe(base.identity);
    const variants = [
      new KmsKeyring({ kms, keyIds: [keyA] }),
      new KmsKeyring({ kms, keyIds: [keyA], callOptions: { principal: OUTSIDER } }),
      new KmsKeyring({
        kms,
        keyIds: [keyA],
        callOptions: { principal: LOCAL_USER, sourceIp: "10.0.0.1" },
      }),
      new KmsKeyring({
        kms,
        keyIds: [keyA],
        callOptions: { principal: LOCAL_USER, viaService: "s3.amazonaws.com" },
      }),
      new KmsKeyring({
        kms,
        keyIds: [keyA],
        callOptions: { principal: LOCAL_USER },
        grantTokens: ["token"],
      }),
    ];
    const identities = new Set([base.identity, ...variants.map((k) => k.identity)]);
    expect(identities.size).toBe(1 + variants.length);
  });

  it("call options mutated after construction neither change the calls nor the identity", async () => {
    const callOptions: { principal: string } = { principal: LOCAL_USER };
    const keyring = new KmsKeyring({ kms, keyIds: [keyA], callOptions });
    const identity = keyring.identity;
    callOptions.principal = OUTSIDER;
    expect(keyring.identity).toBe(identity);
    await expect(encryptMessage(plaintext, { keyring })).resolves.toBeInstanceOf(Uint8Array);
  });

  it.each([
    ["grant tokens that are not an array", { grantTokens: 5 }],
    ["grant tokens given as one string (would spread into characters)", { grantTokens: "tok" }],
    ["a grant token that is not a string", { grantTokens: [1] }],
    ["call options that are not an object", { callOptions: "carol" }],
    ["a principal JSON cannot serialize", { callOptions: { principal: 1n } }],
    ["a principal that is not a string", { callOptions: { principal: 7 } }],
  ])("refuses %s with a ValidationError, as junk input anywhere in core", (_, junk) => {
    // The identity is built from these: it must neither throw a raw TypeError nor let two
    // different values serialize alike.
    expect(() => new KmsKeyring({ kms, keyIds: [keyA], ...junk } as never)).toThrow(
      ValidationError,
    );
  });
});

describe("KmsKeyring never leaves a refused data key in memory", () => {
  it("zeroes a generated data key of the wrong length before refusing it", async () => {
    let handedOut: Uint8Array | undefined;
    const shortKeys = {
      encrypt: (r, o) => kms.encrypt(r, o),
      decrypt: (r, o) => kms.decrypt(r, o),
      generateDataKey: async (r, o) => {
        const generated = await kms.generateDataKey({ ...r, keySpec: "AES_128" }, o);
        handedOut = generated.plaintext;
        return generated;
      },
    } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
    await expect(
      encryptMessage(plaintext, { keyring: new KmsKeyring({ kms: shortKeys, keyIds: [keyA] }) }),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(handedOut).toHaveLength(16);
    expect(handedOut!.every((b) => b === 0)).toBe(true);
  });
});

describe("RawRsaKeyring", () => {
  it("opens a copy only at the modulus's length: one with its leading 00 byte dropped is refused", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const keyring = new RawRsaKeyring({ keyNamespace: "escrow", keyName: "rsa", privateKey });
    const request = { encryptionContext: {}, suiteId: 0x0578 };
    // One copy in 256 starts with 00 (the integer is shorter than the modulus).
    for (;;) {
      const made = await keyring.encryptDataKey({ ...request });
      const copy = made.encryptedDataKeys[0]!;
      if (copy.ciphertext[0] !== 0) continue;
      const shortened = { ...copy, ciphertext: copy.ciphertext.subarray(1) };
      expect(
        await keyring.decryptDataKey({ ...request, encryptedDataKeys: [shortened] }),
      ).toBeUndefined();
      expect(await keyring.decryptDataKey({ ...request, encryptedDataKeys: [copy] })).toEqual(
        made.dataKey,
      );
      break;
    }
  });

  it("refuses a public key that does not belong to its private key (it could not decrypt its own copies)", () => {
    const mine = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const theirs = generateKeyPairSync("rsa", { modulusLength: 2048 });
    expect(
      () =>
        new RawRsaKeyring({
          keyNamespace: "escrow",
          keyName: "rsa",
          privateKey: mine.privateKey,
          publicKey: theirs.publicKey,
        }),
    ).toThrow(ValidationError);
    // The matching pair, in any form, is fine.
    for (const publicKey of [
      mine.publicKey,
      mine.publicKey.export({ type: "spki", format: "pem" }) as string,
      mine.privateKey,
    ]) {
      expect(
        () =>
          new RawRsaKeyring({
            keyNamespace: "escrow",
            keyName: "rsa",
            privateKey: mine.privateKey,
            publicKey,
          }),
      ).not.toThrow();
    }
  });
});
