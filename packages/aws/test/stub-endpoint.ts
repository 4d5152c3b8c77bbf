/**
 * A network-free AWS KMS endpoint for tests: the `requestHandler` of a real KMSClient. It reads
 * the SDK's real JSON 1.1 request (X-Amz-Target, JSON body with base64 blobs) and answers with
 * AWS-shaped JSON, either from an in-process @kms/core Kms through a small translator or from a
 * canned answer. So every test runs the SDK's own serializer, signer and deserializer.
 */
import { KMSClient, type KMSClientConfig } from "@aws-sdk/client-kms";
import { isKmsError, type Kms } from "@kms/core";

export interface WireCall {
  /** From X-Amz-Target, e.g. "Encrypt". */
  readonly operation: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The JSON body exactly as the SDK sent it. */
  readonly body: Readonly<Record<string, unknown>>;
}

export interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a handler receives; the parts of the SDK's HttpRequest the stub reads. */
interface StubRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: unknown;
}

interface StubResponse {
  readonly response: {
    readonly statusCode: number;
    readonly headers: Record<string, string>;
    readonly body: Uint8Array;
  };
}

/** A canned AWS error response, as AWS KMS sends it. */
export function awsError(type: string, message: string, status = 400): Answer {
  return {
    status,
    headers: { "x-amzn-errortype": `${type}:` },
    body: { __type: type, message },
  };
}

export const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

// Members whose values are blobs (base64 on the wire) in the nine KmsLike operations.
const BLOB_MEMBERS = new Set(["Plaintext", "CiphertextBlob", "Message", "Signature", "Mac"]);

const OPERATIONS = {
  Encrypt: "encrypt",
  Decrypt: "decrypt",
  GenerateDataKey: "generateDataKey",
  GenerateDataKeyWithoutPlaintext: "generateDataKeyWithoutPlaintext",
  Sign: "sign",
  Verify: "verify",
  GenerateMac: "generateMac",
  VerifyMac: "verifyMac",
  GetPublicKey: "getPublicKey",
} as const;

/**
 * AWS request → core request: every operation here has only top-level members (maps such as
 * EncryptionContext are values and keep their keys), so renaming the top level is the whole
 * translation.
 */
function toCoreRequest(body: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const request: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(body)) {
    const member = name.charAt(0).toLowerCase() + name.slice(1);
    request[member] =
      BLOB_MEMBERS.has(name) && typeof value === "string"
        ? new Uint8Array(Buffer.from(value, "base64"))
        : value;
  }
  return request;
}

function toAwsResponse(response: object): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [member, value] of Object.entries(response)) {
    const name = member.charAt(0).toUpperCase() + member.slice(1);
    body[name] = value instanceof Uint8Array ? b64(value) : value;
  }
  return body;
}

export class StubEndpoint {
  readonly calls: WireCall[] = [];
  /** When set, answers the next calls instead of the Kms (return undefined to pass through). */
  answer:
    | ((
        call: WireCall,
        signal: AbortSignal | undefined,
      ) => Answer | undefined | Promise<Answer | undefined>)
    | undefined;
  readonly #kms: Kms | undefined;

  constructor(kms?: Kms) {
    this.#kms = kms;
  }

  /** A real KMSClient whose transport is this stub; one attempt, so failures surface at once. */
  client(config: Partial<KMSClientConfig> = {}): KMSClient {
    return new KMSClient({
      region: "eu-west-1",
      credentials: { accessKeyId: "AKIDSTUBEXAMPLE", secretAccessKey: "stub-secret-access-key" },
      maxAttempts: 1,
      requestHandler: {
        handle: (request: StubRequest, options?: { abortSignal?: AbortSignal }) =>
          this.#handle(request, options?.abortSignal),
      },
      ...config,
    });
  }

  get last(): WireCall {
    const call = this.calls.at(-1);
    if (call === undefined) throw new Error("no call reached the stub");
    return call;
  }

  operations(): string[] {
    return this.calls.map((call) => call.operation);
  }

  async #handle(request: StubRequest, signal: AbortSignal | undefined): Promise<StubResponse> {
    const target = request.headers["x-amz-target"] ?? "";
    const [service, operation = ""] = target.split(".");
    if (request.method !== "POST" || request.path !== "/" || service !== "TrentService") {
      throw new Error(`the stub got ${request.method} ${request.path} ${target}`);
    }
    const raw =
      request.body instanceof Uint8Array
        ? new TextDecoder().decode(request.body)
        : String(request.body ?? "");
    const call: WireCall = {
      operation,
      headers: { ...request.headers },
      body: JSON.parse(raw) as Record<string, unknown>,
    };
    this.calls.push(call);
    const answer = (await this.answer?.(call, signal)) ?? (await this.#fromKms(call));
    return {
      response: {
        statusCode: answer.status,
        headers: { "content-type": "application/x-amz-json-1.1", ...answer.headers },
        body: new TextEncoder().encode(
          typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body),
        ),
      },
    };
  }

  async #fromKms(call: WireCall): Promise<Answer> {
    const kms = this.#kms;
    if (kms === undefined) throw new Error(`no Kms and no canned answer for ${call.operation}`);
    if (!Object.hasOwn(OPERATIONS, call.operation)) {
      return awsError("UnknownOperationException", `${call.operation} is not stubbed`);
    }
    const method = OPERATIONS[call.operation as keyof typeof OPERATIONS];
    const request = toCoreRequest(call.body);
    try {
      const handler = kms[method] as (request: unknown) => Promise<object>;
      const response = await handler.call(kms, request);
      return { status: 200, body: toAwsResponse(response) };
    } catch (error) {
      if (!isKmsError(error)) throw error;
      return awsError(error.code, error.message, error.clientFault ? 400 : 500);
    }
  }
}
