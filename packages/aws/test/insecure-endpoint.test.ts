/**
 * A KMSClient whose endpoint is plain HTTP to another machine would send plaintexts and data keys
 * in clear: awsKms refuses every call through it, before anything reaches the transport, unless
 * `allowInsecureEndpoint`. Real KMSClients, configured as users configure them; the transport is
 * the stub, which records whatever reaches it (nothing, for a refused call).
 */
import { KMSClient } from "@aws-sdk/client-kms";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type AwsKms, awsKms } from "../src/index.ts";
import { StubEndpoint } from "./stub-endpoint.ts";

let core: Kms;
let keyId: string;
let hmacKeyId: string;
let signingKeyId: string;
let ciphertextBlob: Uint8Array;

beforeAll(async () => {
  core = await createKms();
  keyId = (await core.createKey()).keyMetadata.keyId;
  hmacKeyId = (await core.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata.keyId;
  signingKeyId = (await core.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
    .keyMetadata.keyId;
  ciphertextBlob = (await core.encrypt({ keyId, plaintext: new Uint8Array([1]) })).ciphertextBlob;
});
afterAll(() => core.close());
afterEach(() => {
  vi.unstubAllEnvs();
});

const message = (where: string): string =>
  `the KMSClient's endpoint ${where} is plain HTTP to another machine: plaintexts and data keys would cross the network unencrypted; use https://, or pass allowInsecureEndpoint: true to awsKms if the network is trusted`;

/** Every call awsKms makes, with a request the stub's Kms would answer. */
const CALLS: readonly [string, (kms: AwsKms) => Promise<unknown>][] = [
  ["encrypt", (kms) => kms.encrypt({ keyId, plaintext: new Uint8Array([1]) })],
  ["decrypt", (kms) => kms.decrypt({ ciphertextBlob })],
  ["generateDataKey", (kms) => kms.generateDataKey({ keyId, keySpec: "AES_256" })],
  [
    "generateDataKeyWithoutPlaintext",
    (kms) => kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256" }),
  ],
  [
    "sign",
    (kms) =>
      kms.sign({
        keyId: signingKeyId,
        message: new Uint8Array([1]),
        signingAlgorithm: "ECDSA_SHA_256",
      }),
  ],
  [
    "verify",
    (kms) =>
      kms.verify({
        keyId: signingKeyId,
        message: new Uint8Array([1]),
        signature: new Uint8Array(64),
        signingAlgorithm: "ECDSA_SHA_256",
      }),
  ],
  [
    "generateMac",
    (kms) =>
      kms.generateMac({
        keyId: hmacKeyId,
        message: new Uint8Array([1]),
        macAlgorithm: "HMAC_SHA_256",
      }),
  ],
  [
    "verifyMac",
    (kms) =>
      kms.verifyMac({
        keyId: hmacKeyId,
        message: new Uint8Array([1]),
        mac: new Uint8Array(32),
        macAlgorithm: "HMAC_SHA_256",
      }),
  ],
  ["getPublicKey", (kms) => kms.getPublicKey({ keyId: signingKeyId })],
  ["describeKey", (kms) => kms.describeKey({ keyId })],
  ["createKey", (kms) => kms.createKey({ description: "refused" })],
  ["createAlias", (kms) => kms.createAlias({ aliasName: "alias/refused", targetKeyId: keyId })],
  ["scheduleKeyDeletion", (kms) => kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 })],
  ["cancelKeyDeletion", (kms) => kms.cancelKeyDeletion({ keyId })],
  ["enableKey", (kms) => kms.enableKey({ keyId })],
];

describe("plain HTTP to another machine is refused", () => {
  it.each(CALLS)("%s fails with ValidationError and sends nothing", async (_name, call) => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client({ endpoint: "http://kms.internal.example:4599" }));
    const error = await call(kms).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({
      code: "ValidationException",
      message: message("http://kms.internal.example:4599"),
    });
    expect(stub.calls).toEqual([]);
  });

  it.each([
    ["a host name", "http://kms.internal.example", "http://kms.internal.example"],
    ["a private IPv4 address", "http://10.0.0.5:4599", "http://10.0.0.5:4599"],
    ["an IPv6 address", "http://[2001:db8::1]:4599", "http://[2001:db8::1]:4599"],
    [
      "a name that only starts like loopback",
      "http://127.0.0.1.example",
      "http://127.0.0.1.example",
    ],
    ["a localhost subdomain", "http://kms.localhost:4599", "http://kms.localhost:4599"],
    ["an EndpointV2 object", { url: new URL("http://10.1.2.3:8080/") }, "http://10.1.2.3:8080"],
  ])("given as %s", async (_name, endpoint, where) => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client({ endpoint }));
    await expect(kms.generateDataKey({ keyId, keySpec: "AES_256" })).rejects.toThrow(
      message(where),
    );
    expect(stub.calls).toEqual([]);
  });

  it("an endpoint provider (resolved only when a call is sent)", async () => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(
      stub.client({
        endpoint: async () => ({ protocol: "http:", hostname: "kms.example", path: "/" }),
      }),
    );
    await expect(kms.decrypt({ ciphertextBlob })).rejects.toThrow(message("http://kms.example"));
    expect(stub.calls).toEqual([]);
  });

  it("an endpoint from the environment (AWS_ENDPOINT_URL_KMS), which the client reads itself", async () => {
    vi.stubEnv("AWS_ENDPOINT_URL_KMS", "http://kms-from-env.example:4599");
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client());
    await expect(kms.encrypt({ keyId, plaintext: new Uint8Array([1]) })).rejects.toThrow(
      message("http://kms-from-env.example:4599"),
    );
    expect(stub.calls).toEqual([]);
  });

  it("refused with timeoutMs too, as the same ValidationError (not a timeout or internal error)", async () => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client({ endpoint: "http://10.0.0.5" }), { timeoutMs: 60_000 });
    await expect(kms.describeKey({ keyId })).rejects.toBeInstanceOf(ValidationError);
    expect(stub.calls).toEqual([]);
  });

  it("constructing does nothing yet: the client still works for the caller's own commands", () => {
    // No network: the client is only built. The check runs per call, on awsKms' own commands.
    const client = new KMSClient({ region: "eu-west-1", endpoint: "http://kms.example:4599" });
    expect(() => awsKms(client)).not.toThrow();
    client.destroy();
  });
});

describe("what is allowed", () => {
  it.each([
    "http://127.0.0.1:4599",
    "http://127.8.9.10",
    "http://localhost:4599",
    "http://LOCALHOST",
    "http://[::1]:4599",
    "http://[0:0:0:0:0:0:0:1]",
    "http://[::ffff:127.0.0.1]:4599",
    "https://kms.internal.example",
    "https://10.0.0.5:4599",
  ])("%s", async (endpoint) => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client({ endpoint }));
    const { keyId: arn } = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    expect(arn).toContain(keyId);
    expect(stub.operations()).toEqual(["GenerateDataKey"]);
  });

  it("AWS's own endpoint (https, from the region)", async () => {
    const stub = new StubEndpoint(core);
    await awsKms(stub.client()).generateDataKey({ keyId, keySpec: "AES_256" });
    expect(stub.operations()).toEqual(["GenerateDataKey"]);
  });

  it.each(CALLS)("%s over plain HTTP with allowInsecureEndpoint: true", async (name, call) => {
    const stub = new StubEndpoint(core);
    const kms = awsKms(stub.client({ endpoint: "http://kms.internal.example:4599" }), {
      allowInsecureEndpoint: true,
    });
    // The stub's Kms answers (or refuses with an AWS error): either way the request was sent.
    await call(kms).catch(() => undefined);
    expect(stub.calls).toHaveLength(1);
    expect(stub.last.operation.toLowerCase()).toBe(name.toLowerCase());
  });

  it.each([
    ["a string", "yes"],
    ["a number", 1],
    ["null", null],
  ])("allowInsecureEndpoint as %s is refused at construction", (_name, value) => {
    const stub = new StubEndpoint(core);
    expect(() =>
      awsKms(stub.client(), { allowInsecureEndpoint: value as unknown as boolean }),
    ).toThrow(ValidationError);
  });
});
