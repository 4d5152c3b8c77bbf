/**
 * Request members the SDK's serializer would alter on the way to AWS (dropping `null` and
 * `undefined` map entries and list items, spreading a string given as a map, UTF-8 encoding a
 * string given as a blob) are refused before any call, with the error core itself gives for the
 * same request, so that the call fails instead of running as a different one.
 */
import { createKms, type Kms, type KmsError, ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AwsKms, awsKms } from "../src/index.ts";
import { b64, StubEndpoint } from "./stub-endpoint.ts";

let core: Kms;
let stub: StubEndpoint;
let kms: AwsKms;
let keyId: string;
let hmacKeyId: string;
let ciphertextBlob: Uint8Array;

beforeAll(async () => {
  core = await createKms();
  keyId = (await core.createKey()).keyMetadata.keyId;
  hmacKeyId = (await core.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata.keyId;
  ciphertextBlob = (await core.encrypt({ keyId, plaintext: new Uint8Array([1]) })).ciphertextBlob;
  stub = new StubEndpoint(core);
  kms = awsKms(stub.client());
});
afterAll(() => core.close());

async function failure(promise: Promise<unknown>): Promise<KmsError> {
  return promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (error: KmsError) => error,
  );
}

/** The same request to core and through AWS: the same error, and nothing on the wire. */
async function refusedAsByCore(
  call: (
    target: Pick<Kms, "encrypt" | "decrypt" | "generateDataKey" | "verifyMac">,
  ) => Promise<unknown>,
): Promise<KmsError> {
  const before = stub.calls.length;
  const expected = await failure(call(core));
  const error = await failure(call(kms));
  expect(error).toBeInstanceOf(ValidationError);
  expect(error.message).toBe(expected.message);
  expect(stub.calls.length).toBe(before);
  return error;
}

describe("encryption context", () => {
  // The SDK dropped null and undefined pairs, sent a Map as no pairs and a string as one pair per
  // character: a ciphertext bound to { TenantId: undefined } was bound to nothing and decrypted
  // without a tenant. Numbers and objects went out as they were, for AWS to refuse.
  const junk: [string, unknown][] = [
    ["an undefined value", { TenantId: undefined, Table: "users" }],
    ["a null value", { TenantId: null }],
    ["a number value", { TenantId: 7 }],
    ["an object value", { TenantId: { id: "acme" } }],
    ["null", null],
    ["a string", "TenantId=acme"],
    ["an array", ["acme"]],
    ["a Map", new Map([["TenantId", "acme"]])],
  ];

  it.each(junk)("%s is refused by encrypt, decrypt and generateDataKey", async (_, context) => {
    const encryptionContext = context as Record<string, string>;
    const plaintext = new Uint8Array([1, 2, 3]);
    const error = await refusedAsByCore((target) =>
      target.encrypt({ keyId, plaintext, encryptionContext }),
    );
    expect(error.message).toMatch(/^"encryptionContext" /);
    await refusedAsByCore((target) => target.decrypt({ ciphertextBlob, encryptionContext }));
    await refusedAsByCore((target) =>
      target.generateDataKey({ keyId, keySpec: "AES_256", encryptionContext }),
    );
    await expect(
      kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256", encryptionContext }),
    ).rejects.toThrow(error.message);
  });

  it("a decrypt naming a null pair does not open data encrypted without it", async () => {
    const error = await failure(
      kms.decrypt({ ciphertextBlob, encryptionContext: { TenantId: null as unknown as string } }),
    );
    expect(error.message).toBe('"encryptionContext" value for key "TenantId" must be a string');
  });

  it("keys reach the wire verbatim, __proto__ included", async () => {
    const encryptionContext = JSON.parse('{"__proto__":"acme","TenantId":"t"}') as Record<
      string,
      string
    >;
    const encrypted = await kms.encrypt({
      keyId,
      plaintext: new Uint8Array([1]),
      encryptionContext,
    });
    expect(Object.keys(stub.last.body.EncryptionContext as object)).toEqual([
      "__proto__",
      "TenantId",
    ]);
    await expect(
      kms.decrypt({
        ciphertextBlob: encrypted.ciphertextBlob,
        encryptionContext: { TenantId: "t" },
      }),
    ).rejects.toThrow();
  });

  // The check read each value once and the copy read it again, so an accessor or Proxy
  // answering "acme" then undefined passed as a string and reached the SDK as undefined, which
  // it dropped: the ciphertext was bound to no tenant at all.
  it.each([
    [
      "an accessor",
      () => {
        let reads = 0;
        return Object.defineProperty({}, "TenantId", {
          enumerable: true,
          get: () => (reads++ === 0 ? "acme" : undefined),
        });
      },
    ],
    [
      "a Proxy",
      () => {
        let reads = 0;
        return new Proxy({ TenantId: "acme" } as Record<string, unknown>, {
          get: (target, key) => (reads++ === 0 ? target[key as string] : undefined),
        });
      },
    ],
  ])("%s is read once: the pair that was checked is the pair sent", async (_, make) => {
    await kms.encrypt({
      keyId,
      plaintext: new Uint8Array([1]),
      encryptionContext: make() as Record<string, string>,
    });
    expect(stub.last.body.EncryptionContext).toEqual({ TenantId: "acme" });
  });
});

describe("blobs", () => {
  it("a string plaintext is refused rather than sent as its UTF-8 bytes", async () => {
    const error = await refusedAsByCore((target) =>
      target.encrypt({ keyId, plaintext: "078-05-1120" as unknown as Uint8Array }),
    );
    expect(error.message).toBe('"plaintext" expected a Uint8Array, got string(11)');
  });

  it("a base64 string ciphertext is refused rather than decrypted as its UTF-8 bytes", async () => {
    const error = await failure(
      kms.decrypt({ ciphertextBlob: b64(ciphertextBlob) as unknown as Uint8Array }),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toMatch(/^"ciphertextBlob" expected a Uint8Array, got string\(/);
  });

  it.each([
    ["message", { message: "payload", mac: new Uint8Array(32) }],
    ["mac", { message: new Uint8Array(1), mac: "AAAA" }],
    ["mac", { message: new Uint8Array(1), mac: new ArrayBuffer(32) }],
  ])("verifyMac refuses a %s that is not a Uint8Array", async (name, members) => {
    const before = stub.calls.length;
    const error = await failure(
      kms.verifyMac({
        keyId: hmacKeyId,
        macAlgorithm: "HMAC_SHA_256",
        ...(members as unknown as { message: Uint8Array; mac: Uint8Array }),
      }),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toMatch(new RegExp(`^"${name}" expected a Uint8Array`));
    expect(stub.calls.length).toBe(before);
  });

  it("sign and verify refuse a string message or signature", async () => {
    const base = { keyId, signingAlgorithm: "ECDSA_SHA_256" } as const;
    await expect(
      kms.sign({ ...base, message: "m" as unknown as Uint8Array }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      kms.verify({ ...base, message: new Uint8Array(1), signature: "s" as unknown as Uint8Array }),
    ).rejects.toThrow('"signature" expected a Uint8Array, got string(1)');
  });

  it("a view into a larger buffer sends only its own bytes", async () => {
    const buffer = new Uint8Array([9, 9, 1, 2, 3, 9]);
    await kms.encrypt({ keyId, plaintext: buffer.subarray(2, 5) });
    expect(stub.last.body.Plaintext).toBe(b64(new Uint8Array([1, 2, 3])));
  });
});

describe("grant tokens", () => {
  it.each([
    ["a null token", [null], '"grantTokens[0]" expected a string, got null'],
    ["a string", "token", '"grantTokens" expected an array of strings, got string(5)'],
  ])("%s is refused rather than dropped or split", async (_, grantTokens, message) => {
    const before = stub.calls.length;
    const error = await failure(
      kms.encrypt({
        keyId,
        plaintext: new Uint8Array(1),
        grantTokens: grantTokens as unknown as string[],
      }),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toBe(message);
    expect(stub.calls.length).toBe(before);
  });
});
