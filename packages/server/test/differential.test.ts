/**
 * Differential: random valid requests sent through the real KMSClient and made directly on the
 * same Kms (as the same principal) answer member for member alike, PascalCase against
 * camelCase. Ciphertexts and ECDSA signatures are randomized, so those are checked by crossing
 * over instead: what one side made, the other side decrypts or verifies.
 */
import {
  CreateKeyCommand,
  type CreateKeyCommandInput,
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  type KMSClient,
  KMSServiceException,
  ListResourceTagsCommand,
  SignCommand,
  VerifyCommand,
} from "@aws-sdk/client-kms";
import {
  type CallOptions,
  isKmsError,
  type KeySpec,
  type KeyUsage,
  type Kms,
  type SigningAlgorithm,
} from "@kms/core";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, type Harness, startHarness } from "./support/harness.ts";

let h: Harness;
let kms: Kms;
let alice: KMSClient;
let symmetric: { keyId: string; arn: string; alias: string };
let signing: { rsa: string; ecc: string };
const AS_ALICE: CallOptions = { principal: ALICE.principal };

beforeAll(async () => {
  h = await startHarness();
  kms = h.kms;
  alice = h.client(ALICE);
  const key = (await kms.createKey({}, AS_ALICE)).keyMetadata;
  await kms.createAlias({ aliasName: "alias/differential", targetKeyId: key.keyId }, AS_ALICE);
  symmetric = { keyId: key.keyId, arn: key.arn, alias: "alias/differential" };
  const rsa = await kms.createKey({ keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" }, AS_ALICE);
  const ecc = await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }, AS_ALICE);
  signing = { rsa: rsa.keyMetadata.keyId, ecc: ecc.keyMetadata.keyId };
});
afterAll(async () => {
  await h.close();
});

type Outcome<T> = { ok: true; value: T } | { ok: false; code: string; message: string };

async function direct<T>(call: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    if (!isKmsError(error)) throw error;
    return { ok: false, code: error.code, message: error.message };
  }
}

async function viaServer<T>(call: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    if (!(error instanceof KMSServiceException)) throw error;
    return { ok: false, code: error.name, message: error.message };
  }
}

/** Both failed alike, or both succeeded (then the values are returned for comparison). */
function bothOrNeither<A, B>(core: Outcome<A>, wire: Outcome<B>): [A, B] | undefined {
  if (!core.ok || !wire.ok) {
    expect(wire.ok ? "succeeded" : { code: wire.code, message: wire.message }).toEqual(
      core.ok ? "succeeded" : { code: core.code, message: core.message },
    );
    return undefined;
  }
  return [core.value, wire.value];
}

const wireName = (field: string): string =>
  field === "awsAccountId" ? "AWSAccountId" : field.charAt(0).toUpperCase() + field.slice(1);

/**
 * Every member of core's answer is in the SDK's under its wire name with an equal value, and the
 * SDK's answer has nothing more. `skip`: members compared otherwise (randomized bytes).
 */
function expectSameMembers(core: object, wire: object, skip: readonly string[] = []): void {
  const coreEntries = Object.entries(core).filter(([, v]) => v !== undefined);
  const wireKeys = Object.keys(wire).filter(
    (k) => k !== "$metadata" && (wire as Record<string, unknown>)[k] !== undefined,
  );
  expect(wireKeys.sort()).toEqual(coreEntries.map(([k]) => wireName(k)).sort());
  for (const [field, value] of coreEntries) {
    if (skip.includes(field)) continue;
    const other = (wire as Record<string, unknown>)[wireName(field)];
    if (value instanceof Date) {
      expect(other, field).toBeInstanceOf(Date);
      expect((other as Date).getTime(), field).toBe(value.getTime());
    } else if (value instanceof Uint8Array) {
      expect(Buffer.from(other as Uint8Array).equals(Buffer.from(value)), field).toBe(true);
    } else if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      expectSameMembers(value, other as object);
    } else {
      expect(other, field).toEqual(value);
    }
  }
}

const bytes = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Context keys and values as AWS allows them, with the odd character SDK and JSON must carry. */
const text = fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 });
const context = fc.option(fc.dictionary(text, text, { maxKeys: 4 }), { nil: undefined });
const keyRef = fc.constantFrom<"keyId" | "arn" | "alias">("keyId", "arn", "alias");

describe("the server answers as the Kms does", () => {
  it("Encrypt, then Decrypt crossed over", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 0, maxLength: 300 }),
        context,
        keyRef,
        async (plaintext, encryptionContext, ref) => {
          const keyId = symmetric[ref];
          const ctx = encryptionContext === undefined ? {} : { encryptionContext };
          const core = await direct(() => kms.encrypt({ keyId, plaintext, ...ctx }, AS_ALICE));
          const wire = await viaServer(() =>
            alice.send(
              new EncryptCommand({
                KeyId: keyId,
                Plaintext: plaintext,
                EncryptionContext: encryptionContext,
              }),
            ),
          );
          const both = bothOrNeither(core, wire);
          if (both === undefined) return;
          const [c, w] = both;
          expectSameMembers(c, w, ["ciphertextBlob"]);
          const byCore = await kms.decrypt({ ciphertextBlob: w.CiphertextBlob!, ...ctx }, AS_ALICE);
          const byServer = await alice.send(
            new DecryptCommand({
              CiphertextBlob: c.ciphertextBlob,
              EncryptionContext: encryptionContext,
            }),
          );
          expect(bytes(byCore.plaintext)).toBe(bytes(plaintext));
          expect(bytes(byServer.Plaintext!)).toBe(bytes(plaintext));
          expectSameMembers(byCore, byServer, ["plaintext"]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("GenerateDataKey with KeySpec or NumberOfBytes, valid or not", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.option(fc.constantFrom("AES_256", "AES_128", "AES_512"), { nil: undefined }),
        fc.option(fc.oneof(fc.integer({ min: 1, max: 1024 }), fc.integer({ min: -3, max: 2000 })), {
          nil: undefined,
        }),
        context,
        async (keySpec, numberOfBytes, encryptionContext) => {
          const request = {
            keyId: symmetric.keyId,
            ...(keySpec !== undefined ? { keySpec: keySpec as "AES_256" } : {}),
            ...(numberOfBytes !== undefined ? { numberOfBytes } : {}),
            ...(encryptionContext !== undefined ? { encryptionContext } : {}),
          };
          const core = await direct(() => kms.generateDataKey(request, AS_ALICE));
          const wire = await viaServer(() =>
            alice.send(
              new GenerateDataKeyCommand({
                KeyId: symmetric.keyId,
                KeySpec: keySpec as "AES_256" | undefined,
                NumberOfBytes: numberOfBytes,
                EncryptionContext: encryptionContext,
              }),
            ),
          );
          const both = bothOrNeither(core, wire);
          if (both === undefined) return;
          const [c, w] = both;
          expectSameMembers(c, w, ["ciphertextBlob", "plaintext"]);
          expect(w.Plaintext!.length).toBe(c.plaintext.length);
          const ctx = encryptionContext === undefined ? {} : { encryptionContext };
          const unwrapped = await kms.decrypt(
            { ciphertextBlob: w.CiphertextBlob!, ...ctx },
            AS_ALICE,
          );
          expect(bytes(unwrapped.plaintext)).toBe(bytes(w.Plaintext!));
        },
      ),
      { numRuns: 40 },
    );
  });

  it("Sign and Verify crossed over", async () => {
    const algorithms: Record<"rsa" | "ecc", SigningAlgorithm[]> = {
      rsa: ["RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "ECDSA_SHA_256"],
      ecc: ["ECDSA_SHA_256", "ECDSA_SHA_384", "RSASSA_PSS_SHA_256"],
    };
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<"rsa" | "ecc">("rsa", "ecc"),
        fc.nat(2),
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        async (kind, index, message) => {
          const keyId = signing[kind];
          const signingAlgorithm = algorithms[kind][index]!;
          const core = await direct(() => kms.sign({ keyId, message, signingAlgorithm }, AS_ALICE));
          const wire = await viaServer(() =>
            alice.send(
              new SignCommand({
                KeyId: keyId,
                Message: message,
                SigningAlgorithm: signingAlgorithm,
              }),
            ),
          );
          const both = bothOrNeither(core, wire);
          if (both === undefined) return;
          const [c, w] = both;
          expectSameMembers(c, w, ["signature"]);
          const byCore = await kms.verify(
            { keyId, message, signature: w.Signature!, signingAlgorithm },
            AS_ALICE,
          );
          const byServer = await alice.send(
            new VerifyCommand({
              KeyId: keyId,
              Message: message,
              Signature: c.signature,
              SigningAlgorithm: signingAlgorithm,
            }),
          );
          expect(byCore.signatureValid).toBe(true);
          expectSameMembers(byCore, byServer);
        },
      ),
      { numRuns: 20 },
    );
  });

  it("CreateKey with random descriptions and tags", async () => {
    const tag = fc.record({
      TagKey: fc.string({ unit: "grapheme", minLength: 0, maxLength: 10 }),
      TagValue: fc.string({ unit: "grapheme", maxLength: 10 }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.option(fc.string({ unit: "grapheme", maxLength: 40 }), { nil: undefined }),
        fc.option(fc.array(tag, { maxLength: 4 }), { nil: undefined }),
        fc.constantFrom<CreateKeyCommandInput>(
          {},
          { KeySpec: "HMAC_384", KeyUsage: "GENERATE_VERIFY_MAC" },
          { KeySpec: "ECC_NIST_P384", KeyUsage: "KEY_AGREEMENT" },
          { KeySpec: "RSA_3072", KeyUsage: "ENCRYPT_DECRYPT" },
          { KeySpec: "HMAC_256" },
        ),
        async (description, tags, spec) => {
          const core = await direct(() =>
            kms.createKey(
              {
                ...(description !== undefined ? { description } : {}),
                ...(tags !== undefined
                  ? { tags: tags.map((t) => ({ tagKey: t.TagKey, tagValue: t.TagValue })) }
                  : {}),
                ...(spec.KeySpec !== undefined ? { keySpec: spec.KeySpec as KeySpec } : {}),
                ...(spec.KeyUsage !== undefined ? { keyUsage: spec.KeyUsage as KeyUsage } : {}),
              },
              AS_ALICE,
            ),
          );
          const wire = await viaServer(() =>
            alice.send(new CreateKeyCommand({ Description: description, Tags: tags, ...spec })),
          );
          const both = bothOrNeither(core, wire);
          if (both === undefined) return;
          const [c, w] = both;
          const cm = c.keyMetadata;
          const wm = w.KeyMetadata!;
          // Two keys: their ids, ARNs, creation times and material ids differ by construction.
          const own = ["keyId", "arn", "creationDate", "currentKeyMaterialId"];
          expectSameMembers(cm, wm, own);
          expect(wm.Arn).toBe(`${cm.arn.slice(0, cm.arn.lastIndexOf("/") + 1)}${wm.KeyId}`);
          const coreTags = await kms.listResourceTags({ keyId: cm.keyId }, AS_ALICE);
          const wireTags = await alice.send(new ListResourceTagsCommand({ KeyId: wm.KeyId! }));
          expect(wireTags.Tags ?? []).toEqual(
            coreTags.tags.map((t) => ({ TagKey: t.tagKey, TagValue: t.tagValue })),
          );
        },
      ),
      { numRuns: 30 },
    );
  });
});
