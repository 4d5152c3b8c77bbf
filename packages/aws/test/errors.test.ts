/**
 * Error mapping and malformed answers, from canned AWS responses through the real SDK.
 */

import { inspect } from "node:util";
import type { KMSClient } from "@aws-sdk/client-kms";
import {
  AccessDeniedError,
  AlreadyExistsError,
  ConflictError,
  DisabledError,
  DryRunOperationError,
  IncorrectKeyError,
  InvalidAliasNameError,
  InvalidArnError,
  InvalidCiphertextError,
  InvalidGrantIdError,
  InvalidGrantTokenError,
  InvalidKeyUsageError,
  InvalidMacError,
  InvalidMarkerError,
  InvalidSignatureError,
  InvalidStateError,
  isKmsError,
  type KmsError,
  KmsInternalError,
  LimitExceededError,
  MalformedPolicyDocumentError,
  NotFoundError,
  TagError,
  UnsupportedOperationError,
  ValidationError,
} from "@kms/core";
import { describe, expect, it } from "vitest";
import { type AwsKms, awsKms, toKmsError } from "../src/index.ts";
import { type Answer, awsError, b64, StubEndpoint } from "./stub-endpoint.ts";

const KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab";
const KEY_ARN = `arn:aws:kms:eu-west-1:111122223333:key/${KEY_ID}`;
const SECRET = new Uint8Array(32).fill(0xa7);

/** An AwsKms whose endpoint gives `answer` to every call. */
function answering(answer: Answer | ((body: Readonly<Record<string, unknown>>) => Answer)): {
  kms: AwsKms;
  stub: StubEndpoint;
} {
  const stub = new StubEndpoint();
  stub.answer = (call) => (typeof answer === "function" ? answer(call.body) : answer);
  return { kms: awsKms(stub.client()), stub };
}

async function failure(promise: Promise<unknown>): Promise<KmsError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isKmsError(error)) throw new Error(`expected a KmsError, got ${String(error)}`);
  return error;
}

const encryptCall = (kms: AwsKms) => kms.encrypt({ keyId: "alias/app", plaintext: SECRET });

describe("AWS exceptions core has a class for", () => {
  it.each([
    ["AccessDeniedException", AccessDeniedError],
    ["AlreadyExistsException", AlreadyExistsError],
    ["ConflictException", ConflictError],
    ["DisabledException", DisabledError],
    ["DryRunOperationException", DryRunOperationError],
    ["IncorrectKeyException", IncorrectKeyError],
    ["InvalidAliasNameException", InvalidAliasNameError],
    ["InvalidArnException", InvalidArnError],
    ["InvalidCiphertextException", InvalidCiphertextError],
    ["InvalidGrantIdException", InvalidGrantIdError],
    ["InvalidGrantTokenException", InvalidGrantTokenError],
    ["InvalidKeyUsageException", InvalidKeyUsageError],
    ["InvalidMarkerException", InvalidMarkerError],
    ["KMSInternalException", KmsInternalError],
    ["KMSInvalidMacException", InvalidMacError],
    ["KMSInvalidSignatureException", InvalidSignatureError],
    ["KMSInvalidStateException", InvalidStateError],
    ["LimitExceededException", LimitExceededError],
    ["MalformedPolicyDocumentException", MalformedPolicyDocumentError],
    ["NotFoundException", NotFoundError],
    ["TagException", TagError],
    ["UnsupportedOperationException", UnsupportedOperationError],
    ["ValidationException", ValidationError],
  ] as const)("%s → %o", async (type, ErrorClass) => {
    const message = `AWS says: ${type} for alias/app`;
    const status = type === "KMSInternalException" ? 500 : 400;
    const error = await failure(encryptCall(answering(awsError(type, message, status)).kms));
    expect(error).toBeInstanceOf(ErrorClass);
    expect(error.code).toBe(type);
    expect(error.message).toBe(message);
    expect(isKmsError(error)).toBe(true);
    const cause = error.cause as Error & { $metadata: { httpStatusCode: number } };
    expect(cause).toBeInstanceOf(Error);
    expect(cause.name).toBe(type);
    expect(cause.message).toBe(message);
    expect(cause.$metadata.httpStatusCode).toBe(status);
  });

  it("reads the exception name from a namespaced __type without the header", async () => {
    const answer: Answer = {
      status: 400,
      body: { __type: "com.amazonaws.kms#NotFoundException", message: "Key 'x' does not exist" },
    };
    const error = await failure(encryptCall(answering(answer).kms));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error.message).toBe("Key 'x' does not exist");
  });
});

describe("AWS exceptions without a message", () => {
  // AWS answers a failed decryption with {"__type":"InvalidCiphertextException"} and nothing
  // else; the SDK then gives the exception its placeholder message "UnknownError".
  it.each([
    ["InvalidCiphertextException", InvalidCiphertextError, 400],
    ["KMSInvalidSignatureException", InvalidSignatureError, 400],
    ["ThrottlingException", KmsInternalError, 400],
    ["DependencyTimeoutException", KmsInternalError, 503],
  ] as const)(
    "%s → the message names the operation and the exception",
    async (type, ErrorClass, status) => {
      const { kms } = answering({ status, body: { __type: type } });
      const error = await failure(kms.decrypt({ ciphertextBlob: SECRET }));
      expect(error).toBeInstanceOf(ErrorClass);
      expect(error.message).toBe(`AWS KMS Decrypt failed with ${type}`);
      expect((error.cause as Error).name).toBe(type);
    },
  );
});

describe("AWS exceptions core has no class for", () => {
  // Faults on AWS's side or quotas the caller cannot fix by changing the request, after the
  // SDK's own retries; and names that are core's internal codes, not AWS exceptions.
  it.each([
    ["DependencyTimeoutException", 500],
    ["KeyUnavailableException", 500],
    ["CustomKeyStoreInvalidStateException", 400],
    ["XksProxyUriUnreachableException", 400],
    ["ThrottlingException", 400],
    ["RootKeyError", 500],
    ["KeyStoreConflictError", 500],
    ["constructor", 400],
    ["toString", 400],
  ])("%s → KmsInternalError naming it", async (type, status) => {
    const error = await failure(encryptCall(answering(awsError(type, "try later", status)).kms));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.code).toBe("KMSInternalException");
    expect(error.clientFault).toBe(false);
    expect(error.message).toBe(`AWS KMS Encrypt failed with ${type}: try later`);
    expect((error.cause as Error).name).toBe(type);
  });

  it("a transport failure → KmsInternalError naming only its class, the original as cause", async () => {
    const stub = new StubEndpoint();
    stub.answer = () => {
      throw Object.assign(new Error("connect ECONNREFUSED 10.0.0.1:443"), { code: "ECONNREFUSED" });
    };
    const error = await failure(encryptCall(awsKms(stub.client())));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe("AWS KMS Encrypt could not be completed (Error); see cause");
    expect((error.cause as Error).message).toMatch(/ECONNREFUSED/);
  });

  it("an unparseable response with a data key in it: the message carries none of it", async () => {
    const truncated = `{"KeyId":"${KEY_ARN}","Plaintext":"${b64(SECRET)}","CiphertextBlob":"AQ`;
    const { kms } = answering({ status: 200, body: truncated });
    const error = await failure(kms.generateDataKey({ keyId: "alias/app", keySpec: "AES_256" }));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe(
      "AWS KMS GenerateDataKey could not be completed (SyntaxError); see cause",
    );
  });
});

describe("an answer the SDK could not read", () => {
  // A data key where a JSON string should be: V8's message quotes the text around the fault, and
  // the SDK hides the whole answer on its error ($response, $responseBodyText).
  const unquoted = `{"KeyId":"${KEY_ARN}","Plaintext":${b64(SECRET)},"CiphertextBlob":"AQ=="}`;

  it("is not in the error, its cause, or anything they hold, hidden or not", async () => {
    const stub = new StubEndpoint();
    stub.answer = () => ({ status: 200, body: unquoted });
    const client = stub.client();
    // What the SDK threw, for the proof that it holds the key.
    let thrown: unknown;
    client.middlewareStack.add(
      (next) => async (args) => {
        try {
          return await next(args);
        } catch (e) {
          thrown = e;
          throw e;
        }
      },
      { step: "initialize", name: "recordError" },
    );
    const error = await failure(
      awsKms(client).generateDataKey({ keyId: "alias/app", keySpec: "AES_256" }),
    );
    const fragment = b64(SECRET).slice(0, 8);
    const everything = (value: unknown): string =>
      inspect(value, { showHidden: true, depth: Number.POSITIVE_INFINITY, getters: true });
    expect(everything(thrown)).toContain(fragment);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe(
      "AWS KMS GenerateDataKey could not be completed (SyntaxError); see cause",
    );
    expect(everything(error)).not.toContain(fragment);
    const cause = error.cause as Error & { $metadata?: { httpStatusCode?: number } };
    expect(cause.name).toBe("SyntaxError");
    expect(cause.$metadata?.httpStatusCode).toBe(200);
  });

  it("toKmsError withholds it too, and keeps every other error as it is", () => {
    const unread = Object.defineProperty(
      new SyntaxError(`..."Plaintext":p6enp6en"...`),
      "$response",
      {
        value: { body: unquoted },
      },
    );
    const mapped = toKmsError(unread, "Decrypt");
    expect((mapped.cause as Error).name).toBe("SyntaxError");
    expect(inspect(mapped, { showHidden: true, depth: 10 })).not.toContain("p6enp6en");
    const network = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    expect(toKmsError(network).cause).toBe(network);
  });
});

describe("toKmsError", () => {
  it("returns KmsErrors as they are and wraps non-errors", () => {
    const own = new NotFoundError("gone");
    expect(toKmsError(own)).toBe(own);
    const wrapped = toKmsError("boom", "Sign");
    expect(wrapped).toBeInstanceOf(KmsInternalError);
    expect(wrapped.message).toBe("AWS KMS Sign could not be completed (string); see cause");
    expect(wrapped.cause).toBe("boom");
  });

  it("maps an SDK-shaped exception by its name", () => {
    const sdk = Object.assign(new Error("Key is disabled"), {
      name: "DisabledException",
      $fault: "client",
    });
    const mapped = toKmsError(sdk, "Decrypt");
    expect(mapped).toBeInstanceOf(DisabledError);
    expect(mapped.cause).toBe(sdk);
  });
});

const ENCRYPT_OK = {
  CiphertextBlob: b64(SECRET),
  KeyId: KEY_ARN,
  EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
};
const DECRYPT_OK = { ...ENCRYPT_OK, Plaintext: b64(SECRET), KeyMaterialId: "m-1" };
const DATA_KEY_OK = { CiphertextBlob: b64(SECRET), Plaintext: b64(SECRET), KeyId: KEY_ARN };
const SIGN_OK = { KeyId: KEY_ARN, Signature: b64(SECRET), SigningAlgorithm: "ECDSA_SHA_256" };
const VERIFY_OK = { KeyId: KEY_ARN, SignatureValid: true, SigningAlgorithm: "ECDSA_SHA_256" };
const MAC_OK = { KeyId: KEY_ARN, Mac: b64(SECRET), MacAlgorithm: "HMAC_SHA_256" };
const VERIFY_MAC_OK = { KeyId: KEY_ARN, MacValid: true, MacAlgorithm: "HMAC_SHA_256" };
const PUBLIC_KEY_OK = {
  KeyId: KEY_ARN,
  PublicKey: b64(SECRET),
  CustomerMasterKeySpec: "ECC_NIST_P256",
  KeySpec: "ECC_NIST_P256",
  KeyUsage: "SIGN_VERIFY",
  SigningAlgorithms: ["ECDSA_SHA_256"],
};

const message = new Uint8Array([1, 2, 3]);
type Call = (kms: AwsKms) => Promise<unknown>;
const CALLS: Record<string, [Call, Record<string, unknown>]> = {
  Encrypt: [encryptCall, ENCRYPT_OK],
  Decrypt: [(kms) => kms.decrypt({ ciphertextBlob: SECRET }), DECRYPT_OK],
  GenerateDataKey: [
    (kms) => kms.generateDataKey({ keyId: KEY_ID, keySpec: "AES_256" }),
    DATA_KEY_OK,
  ],
  GenerateDataKeyWithoutPlaintext: [
    (kms) => kms.generateDataKeyWithoutPlaintext({ keyId: KEY_ID, keySpec: "AES_256" }),
    { CiphertextBlob: b64(SECRET), KeyId: KEY_ARN },
  ],
  Sign: [(kms) => kms.sign({ keyId: KEY_ID, message, signingAlgorithm: "ECDSA_SHA_256" }), SIGN_OK],
  Verify: [
    (kms) =>
      kms.verify({ keyId: KEY_ID, message, signature: message, signingAlgorithm: "ECDSA_SHA_256" }),
    VERIFY_OK,
  ],
  GenerateMac: [
    (kms) => kms.generateMac({ keyId: KEY_ID, message, macAlgorithm: "HMAC_SHA_256" }),
    MAC_OK,
  ],
  VerifyMac: [
    (kms) => kms.verifyMac({ keyId: KEY_ID, message, mac: message, macAlgorithm: "HMAC_SHA_256" }),
    VERIFY_MAC_OK,
  ],
  GetPublicKey: [(kms) => kms.getPublicKey({ keyId: KEY_ID }), PUBLIC_KEY_OK],
};

// Every member a core response requires, per operation (KeyMaterialId and the algorithm
// lists are optional in core; CustomerMasterKeySpec falls back to KeySpec).
const REQUIRED: [string, string][] = Object.entries({
  Encrypt: ["CiphertextBlob", "KeyId", "EncryptionAlgorithm"],
  Decrypt: ["Plaintext", "KeyId", "EncryptionAlgorithm"],
  GenerateDataKey: ["CiphertextBlob", "Plaintext", "KeyId"],
  GenerateDataKeyWithoutPlaintext: ["CiphertextBlob", "KeyId"],
  Sign: ["KeyId", "Signature", "SigningAlgorithm"],
  Verify: ["KeyId", "SignatureValid", "SigningAlgorithm"],
  GenerateMac: ["KeyId", "Mac", "MacAlgorithm"],
  VerifyMac: ["KeyId", "MacValid", "MacAlgorithm"],
  GetPublicKey: ["KeyId", "PublicKey", "KeySpec", "KeyUsage"],
}).flatMap(([operation, members]) =>
  members.map((member): [string, string] => [operation, member]),
);

describe("malformed answers", () => {
  it.each(Object.keys(CALLS))("%s: the complete canned answer is accepted", async (operation) => {
    const [call, ok] = CALLS[operation]!;
    const { kms, stub } = answering({ status: 200, body: ok });
    await expect(call(kms)).resolves.toBeDefined();
    expect(stub.last.operation).toBe(operation);
  });

  it.each(REQUIRED)("%s without %s → KmsInternalError naming it", async (operation, member) => {
    const [call, ok] = CALLS[operation]!;
    const { [member]: _dropped, ...body } = ok;
    const error = await failure(call(answering({ status: 200, body }).kms));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe(`AWS KMS ${operation} response lacks "${member}"`);
    // The response may hold a plaintext or data key: it is not kept as the cause.
    expect(error.cause).toBeUndefined();
    expect(error.message).not.toContain(b64(SECRET));
  });

  it("a scalar algorithm core does not know → KmsInternalError", async () => {
    const { kms } = answering({
      status: 200,
      body: { ...ENCRYPT_OK, EncryptionAlgorithm: "SM2PKE" },
    });
    const error = await failure(encryptCall(kms));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe(
      'AWS KMS Encrypt response member "EncryptionAlgorithm" has a value @kms/core does not know',
    );
  });

  it("a key spec core does not know → KmsInternalError", async () => {
    const body = { ...PUBLIC_KEY_OK, KeySpec: "SM2", CustomerMasterKeySpec: "SM2" };
    const error = await failure(
      answering({ status: 200, body }).kms.getPublicKey({ keyId: KEY_ID }),
    );
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toMatch(/"KeySpec" has a value @kms\/core does not know/);
  });

  it("getPublicKey keeps the algorithms core knows and fills the deprecated spec", async () => {
    const { CustomerMasterKeySpec: _absent, ...rest } = PUBLIC_KEY_OK;
    const body = {
      ...rest,
      KeySpec: "ECC_NIST_EDWARDS25519",
      SigningAlgorithms: ["ED25519_SHA_512", "FUTURE_ALGORITHM", "ED25519_PH_SHA_512"],
    };
    const response = await answering({ status: 200, body }).kms.getPublicKey({ keyId: KEY_ID });
    expect(response).toStrictEqual({
      keyId: KEY_ARN,
      publicKey: SECRET,
      customerMasterKeySpec: "ECC_NIST_EDWARDS25519",
      keySpec: "ECC_NIST_EDWARDS25519",
      keyUsage: "SIGN_VERIFY",
      signingAlgorithms: ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
    });
  });

  it("a member of the wrong type → KmsInternalError", async () => {
    const { kms } = answering({ status: 200, body: { ...VERIFY_OK, SignatureValid: "true" } });
    const error = await failure(CALLS.Verify![0](kms));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe('AWS KMS Verify response member "SignatureValid" is not a boolean');
  });

  it.each(["Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"])(
    "%s: KeyMaterialId is read, and one that is not a string → KmsInternalError",
    async (operation) => {
      const [call, ok] = CALLS[operation]!;
      const answer = await call(
        answering({ status: 200, body: { ...ok, KeyMaterialId: "m-2" } }).kms,
      );
      expect(answer).toMatchObject({ keyMaterialId: "m-2" });
      const error = await failure(
        call(answering({ status: 200, body: { ...ok, KeyMaterialId: 7 } }).kms),
      );
      expect(error).toBeInstanceOf(KmsInternalError);
      expect(error.message).toBe(
        `AWS KMS ${operation} response member "KeyMaterialId" is not a string`,
      );
    },
  );

  it("SignatureValid false is an invalid signature, never a success", async () => {
    const { kms } = answering({ status: 200, body: { ...VERIFY_OK, SignatureValid: false } });
    const error = await failure(CALLS.Verify![0](kms));
    expect(error).toBeInstanceOf(InvalidSignatureError);
  });

  it("MacValid false is an invalid MAC, never a success", async () => {
    const { kms } = answering({ status: 200, body: { ...VERIFY_MAC_OK, MacValid: false } });
    const error = await failure(CALLS.VerifyMac![0](kms));
    expect(error).toBeInstanceOf(InvalidMacError);
  });

  it.each([
    [{ keySpec: "AES_256" as const }, 16],
    [{ keySpec: "AES_128" as const }, 32],
    [{ numberOfBytes: 48 }, 32],
  ])("a data key of the wrong length for %o → KmsInternalError", async (size, got) => {
    const body = { ...DATA_KEY_OK, Plaintext: b64(SECRET.subarray(0, got)) };
    const error = await failure(
      answering({ status: 200, body }).kms.generateDataKey({ keyId: KEY_ID, ...size }),
    );
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toMatch(new RegExp(`returned a ${got}-byte data key`));
  });
});

/** The outputs the SDK hands back, as the client's middleware sees them. */
function sdkOutputs(client: KMSClient): Record<string, unknown>[] {
  const outputs: Record<string, unknown>[] = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      outputs.push(result.output as unknown as Record<string, unknown>);
      return result;
    },
    { step: "initialize", name: "sdkOutputs" },
  );
  return outputs;
}

const zeroed = (value: unknown): boolean =>
  value instanceof Uint8Array && value.length > 0 && value.every((byte) => byte === 0);

describe("the SDK's copy of a plaintext or data key", () => {
  const cases: [string, (kms: AwsKms) => Promise<unknown>, Record<string, unknown>][] = [
    ["Decrypt", CALLS.Decrypt![0], DECRYPT_OK],
    ["GenerateDataKey", CALLS.GenerateDataKey![0], DATA_KEY_OK],
  ];

  it.each(cases)("%s: is zeroed after a good answer", async (_, call, ok) => {
    const stub = new StubEndpoint();
    stub.answer = () => ({ status: 200, body: ok });
    const client = stub.client();
    const outputs = sdkOutputs(client);
    const response = (await call(awsKms(client))) as { plaintext: Uint8Array };
    expect(response.plaintext).toEqual(SECRET);
    expect(zeroed(outputs[0]?.Plaintext)).toBe(true);
  });

  it.each(
    cases.flatMap(([operation, call, ok]) =>
      REQUIRED.filter(([op, member]) => op === operation && member !== "Plaintext").map(
        ([, member]): [string, string, typeof call, Record<string, unknown>] => [
          operation,
          member,
          call,
          ok,
        ],
      ),
    ),
  )("%s without %s: is zeroed too", async (_, member, call, ok) => {
    const { [member]: _dropped, ...body } = ok;
    const stub = new StubEndpoint();
    stub.answer = () => ({ status: 200, body });
    const client = stub.client();
    const outputs = sdkOutputs(client);
    await expect(call(awsKms(client))).rejects.toBeInstanceOf(KmsInternalError);
    expect(zeroed(outputs[0]?.Plaintext)).toBe(true);
  });

  it("as Buffers (a mocked client, an SDK with a custom base64Decoder): the caller's copy is not zeroed", async () => {
    // Buffer#slice is a view: a "copy" made with it was zeroed with the SDK's, and the caller
    // sealed data under an all-zero data key.
    const client = {
      send: async () => ({
        CiphertextBlob: Buffer.from(SECRET),
        Plaintext: Buffer.from(SECRET),
        KeyId: KEY_ARN,
        EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      }),
    };
    const kms = awsKms(client as unknown as KMSClient);
    for (const response of [
      await kms.generateDataKey({ keyId: KEY_ID, keySpec: "AES_256" }),
      await kms.decrypt({ ciphertextBlob: SECRET }),
    ]) {
      expect(response.plaintext).toEqual(SECRET);
      expect(response.plaintext.constructor).toBe(Uint8Array);
      expect(response.plaintext.buffer.byteLength).toBe(SECRET.length);
    }
  });

  it("a data key of the wrong length: is zeroed too", async () => {
    const stub = new StubEndpoint();
    stub.answer = () => ({
      status: 200,
      body: { ...DATA_KEY_OK, Plaintext: b64(SECRET.subarray(0, 16)) },
    });
    const client = stub.client();
    const outputs = sdkOutputs(client);
    await expect(CALLS.GenerateDataKey![0](awsKms(client))).rejects.toThrow(/16-byte data key/);
    expect(zeroed(outputs[0]?.Plaintext)).toBe(true);
  });

  it("an answer arriving after timeoutMs: is zeroed when it arrives", async () => {
    const stub = new StubEndpoint();
    let release: (answer: Answer) => void = () => {};
    stub.answer = () =>
      new Promise<Answer>((resolve) => {
        release = resolve;
      });
    const client = stub.client();
    const outputs = sdkOutputs(client);
    const error = await failure(CALLS.Decrypt![0](awsKms(client, { timeoutMs: 20 })));
    expect(error.message).toBe("AWS KMS Decrypt did not complete within 20 ms");
    release({ status: 200, body: DECRYPT_OK });
    await expect.poll(() => outputs.length).toBe(1);
    await expect.poll(() => zeroed(outputs[0]?.Plaintext)).toBe(true);
  });
});

describe("junk input", () => {
  const methods = [
    "encrypt",
    "decrypt",
    "generateDataKey",
    "generateDataKeyWithoutPlaintext",
    "sign",
    "verify",
    "generateMac",
    "verifyMac",
    "getPublicKey",
  ] as const;

  it.each(methods)(
    "%s refuses a request that is not an object, before any call",
    async (method) => {
      const { kms, stub } = answering({ status: 200, body: {} });
      for (const junk of [undefined, null, 7, "req"]) {
        const call = kms[method] as (request: unknown) => Promise<unknown>;
        const error = await failure(call.call(kms, junk));
        expect(error).toBeInstanceOf(ValidationError);
        expect(error.message).toMatch(/^"request" expected an object/);
      }
      expect(stub.calls).toHaveLength(0);
    },
  );

  it.each([
    [undefined, {}],
    [null, {}],
    [{}, {}],
    [{ send: "no" }, {}],
  ])("awsKms(%o) refuses a non-client", (client, options) => {
    expect(() => awsKms(client as never, options)).toThrow(ValidationError);
  });

  it.each([0, -1, 1.5, Number.NaN, 2 ** 31, "100"])("timeoutMs %o is refused", (timeoutMs) => {
    const client = new StubEndpoint().client();
    expect(() => awsKms(client, { timeoutMs: timeoutMs as number })).toThrow(
      /"timeoutMs" must be an integer from 1 to 2147483647/,
    );
  });
});

describe("timeoutMs", () => {
  it("aborts the request and fails with KmsInternalError at the deadline", async () => {
    const stub = new StubEndpoint();
    let sawAbort = false;
    stub.answer = (_call, signal) =>
      new Promise<Answer>((_, reject) => {
        signal?.addEventListener("abort", () => {
          sawAbort = true;
          reject(Object.assign(new Error("Request aborted"), { name: "AbortError" }));
        });
      });
    const started = performance.now();
    const error = await failure(encryptCall(awsKms(stub.client(), { timeoutMs: 50 })));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(error.message).toBe("AWS KMS Encrypt did not complete within 50 ms");
    expect(sawAbort).toBe(true);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("holds even when the transport ignores the abort signal", async () => {
    const stub = new StubEndpoint();
    let release: (answer: Answer) => void = () => {};
    stub.answer = () =>
      new Promise<Answer>((resolve) => {
        release = resolve;
      });
    const error = await failure(encryptCall(awsKms(stub.client(), { timeoutMs: 30 })));
    expect(error.message).toBe("AWS KMS Encrypt did not complete within 30 ms");
    release({ status: 200, body: ENCRYPT_OK });
  });

  it("does not touch calls that finish in time, nor their errors", async () => {
    const stub = new StubEndpoint();
    stub.answer = (call) =>
      call.body.KeyId === "missing"
        ? awsError("NotFoundException", "no such key")
        : { status: 200, body: ENCRYPT_OK };
    const kms = awsKms(stub.client(), { timeoutMs: 5000 });
    await expect(encryptCall(kms)).resolves.toMatchObject({ keyId: KEY_ARN });
    await expect(kms.encrypt({ keyId: "missing", plaintext: SECRET })).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});
