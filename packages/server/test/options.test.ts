/**
 * Junk options for both public entry points: each is refused with ValidationError when the
 * handler or server is made, never with a TypeError, and never accepted to fail later.
 */
import { createKms, type Kms, ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKmsRequestHandler, createKmsServer, type KmsServerOptions } from "../src/index.ts";
import { ALICE, REGION } from "./support/harness.ts";

let kms: Kms;
beforeAll(async () => {
  kms = await createKms({ region: REGION, account: "111122223333" });
});
afterAll(async () => {
  await kms.close();
});

const credential = { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal };

describe.each([
  ["createKmsRequestHandler", createKmsRequestHandler],
  ["createKmsServer", createKmsServer],
] as const)("%s", (_name, create) => {
  const make = (options: Record<string, unknown>) => () =>
    create({
      kms,
      credentials: { [ALICE.accessKeyId]: credential },
      ...options,
    } as unknown as KmsServerOptions);

  it.each([
    // A Map's entries are invisible to Object.entries: the server would know no access key.
    ["credentials as a Map", { credentials: new Map([[ALICE.accessKeyId, credential]]) }],
    ["credentials as an array", { credentials: [credential] }],
    ["a credential that is null", { credentials: { [ALICE.accessKeyId]: null } }],
    ["a Symbol maxBodyBytes", { maxBodyBytes: Symbol("big") }],
    ["a Symbol clockSkewSeconds", { clockSkewSeconds: Symbol("skew") }],
    // X-Amz-Date has 1-second precision: below one second, requests signed a moment ago fail.
    ["a clockSkewSeconds of 0", { clockSkewSeconds: 0 }],
    ["a clockSkewSeconds of 0.5", { clockSkewSeconds: 0.5 }],
    ["a clockSkewSeconds of 1.5", { clockSkewSeconds: 1.5 }],
    ["a clockSkewSeconds over an hour", { clockSkewSeconds: 3601 }],
    ["a negative clockSkewSeconds", { clockSkewSeconds: -1 }],
    ["a NaN clockSkewSeconds", { clockSkewSeconds: Number.NaN }],
    ["a string clockSkewSeconds", { clockSkewSeconds: "300" }],
    ["a string maxBodyBytes", { maxBodyBytes: "4096" }],
    ["a bigint maxBodyBytes", { maxBodyBytes: 4096n }],
    ["a kms without identity", { kms: { encrypt: (): undefined => undefined } }],
    [
      "a kms with a null identity",
      { kms: { encrypt: (): undefined => undefined, identity: null } },
    ],
    ["a numeric region", { region: 5 }],
    ["a now that is not a function", { now: 5 }],
    ["a string insecureHttp", { insecureHttp: "yes" }],
    ["an onRefused that is not a function", { onRefused: "console" }],
    // An empty list would refuse every request; a string would be read character by character.
    ["an empty allowedHosts", { allowedHosts: [] }],
    ["an allowedHosts that is a string", { allowedHosts: "kms.internal" }],
    ["an allowedHosts that is a Set", { allowedHosts: new Set(["kms.internal"]) }],
    ["a number in allowedHosts", { allowedHosts: ["kms.internal", 5] }],
    ["null in allowedHosts", { allowedHosts: [null] }],
    // biome-ignore lint/suspicious/noSparseArray: the hole is the junk under test
    ["a hole in allowedHosts", { allowedHosts: [, "kms.internal"] }],
    ["an empty allowedHosts entry", { allowedHosts: [""] }],
    ["an IPv6 allowedHosts entry without brackets", { allowedHosts: ["::1"] }],
    ["an IPv6 allowedHosts entry with a zone", { allowedHosts: ["[fe80::1%eth0]"] }],
    ["an allowedHosts entry with a scheme", { allowedHosts: ["https://kms.internal"] }],
    ["an allowedHosts entry with a path", { allowedHosts: ["kms.internal/"] }],
    ["an allowedHosts entry with an empty label", { allowedHosts: ["kms..internal"] }],
    ["an allowedHosts entry with port 0", { allowedHosts: ["kms.internal:0"] }],
    ["an allowedHosts entry with port 65536", { allowedHosts: ["kms.internal:65536"] }],
    ["an allowedHosts entry with an empty port", { allowedHosts: ["kms.internal:"] }],
    ["a non-ASCII allowedHosts entry", { allowedHosts: ["bücher.example"] }],
    // Core refuses it on every call, as the client's ValidationException.
    [
      "a principal longer than core accepts",
      { credentials: { [ALICE.accessKeyId]: { ...credential, principal: "p".repeat(2049) } } },
    ],
  ])("refuses %s with ValidationError", (_what, options) => {
    expect(make(options)).toThrow(ValidationError);
  });

  it.each([1, 3600])("accepts a clockSkewSeconds of %i", (clockSkewSeconds) => {
    expect(make({ clockSkewSeconds })).not.toThrow();
  });

  it("names the rule for clockSkewSeconds", () => {
    expect(make({ clockSkewSeconds: 0 })).toThrow(
      '"clockSkewSeconds" must be an integer from 1 to 3600, got 0',
    );
  });

  it("accepts allowedHosts in every form a Host header takes", () => {
    expect(
      make({
        allowedHosts: ["kms.internal", "KMS.internal.", "kms:8443", "127.0.0.1", "[::1]:4599"],
      }),
    ).not.toThrow();
    expect(make({ allowedHosts: ["xn--bcher-kva.example"] })).not.toThrow();
  });

  it("names the allowedHosts entry at fault", () => {
    expect(make({ allowedHosts: ["kms.internal", "::1"] })).toThrow(
      /^"allowedHosts\[1\]" must be a host name as a Host header carries it .* got "::1"$/,
    );
  });

  it("accepts a principal of core's largest length", () => {
    const principal = "p".repeat(2048);
    expect(
      make({ credentials: { [ALICE.accessKeyId]: { ...credential, principal } } }),
    ).not.toThrow();
  });

  it("accepts credentials in an object without a prototype", () => {
    const credentials = Object.assign(Object.create(null) as object, {
      [ALICE.accessKeyId]: credential,
    });
    expect(make({ credentials })).not.toThrow();
  });
});
