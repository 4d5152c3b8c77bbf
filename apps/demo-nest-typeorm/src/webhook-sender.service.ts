import {
  createKmsSigner,
  createKmsVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { KmsService } from "@kms/nestjs";
import { Inject, Injectable, Logger } from "@nestjs/common";
import { HttpAdapterHost } from "@nestjs/core";
import { DEFAULT_WEBHOOK_TIMEOUT_MS, type DemoConfig } from "./config.ts";
import { WEBHOOK_KEY_ALIAS, WEBHOOK_KEY_ID } from "./kms.ts";
import { DEMO_CONFIG } from "./tokens.ts";

const RECEIPT_COMPONENTS = [
  "@status",
  "content-digest",
  { component: "signature", key: "sig1", req: true },
] as const;

/**
 * Largest receiver answer read, for its receipt: `{"received":"<uuid>"}` is 50 bytes. The answer
 * is read inline in `POST /patients`, so a receiver must not make it buffer without bound.
 */
export const MAX_ANSWER_BYTES = 64 * 1024;

/** The receiver's answer ran past {@link MAX_ANSWER_BYTES}. */
class AnswerTooLargeError extends Error {
  override readonly name = "AnswerTooLargeError";
}

/**
 * `response`'s body, read as it arrives and given up past `limit` bytes: the connection is
 * dropped rather than read to its end. Content-Length is the receiver's word, so it only lets
 * an answer be refused early, never read past the limit.
 * @throws AnswerTooLargeError past `limit`; the fetch's abort reason when its signal fires.
 */
async function boundedBody(response: Response, limit: number): Promise<Uint8Array> {
  if (Number(response.headers.get("content-length") ?? 0) > limit) {
    await response.body?.cancel();
    throw new AnswerTooLargeError(`content-length over ${limit} bytes`);
  }
  if (response.body === null) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > limit) {
      await reader.cancel();
      throw new AnswerTooLargeError(`over ${limit} bytes`);
    }
    chunks.push(value);
  }
  const body = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/** What the sender learned from one delivery. */
export interface WebhookDelivery {
  readonly url: string;
  /** HTTP status of the receiver's answer, or null when it could not be reached. */
  readonly status: number | null;
  /** The receiver signed its answer, bound to our request, with the shared webhook key. */
  readonly receiptVerified: boolean;
  /** Why the receipt did not verify or the delivery failed (never a secret). */
  readonly problem?: string;
}

export interface PatientCreatedEvent {
  readonly event: "patient.created";
  readonly tenantId: string;
  /** The patient's public id (its recordId, a UUID). */
  readonly patientId: string;
}

/**
 * Sends webhooks signed per RFC 9421 (hmac-sha256 under a KMS HMAC key that never leaves the
 * KMS, Content-Digest, a nonce, a 60 s expiry) and checks that the receiver's answer is signed
 * and bound to this very request, so both directions are authenticated. Redirects are not
 * followed: fetch would re-send the signed request, signature and nonce included, to whatever
 * origin the Location names, which could replay it to the receiver. A 3xx is a failed delivery.
 * So is a delivery that takes longer than `webhookTimeoutMs` from connecting to the answer's
 * last byte, or an answer longer than {@link MAX_ANSWER_BYTES}: the delivery runs inside
 * `POST /patients`, which a slow or endless receiver would otherwise hold open, and a huge
 * answer would be buffered whole.
 */
@Injectable()
export class WebhookSender {
  readonly #kms: KmsService;
  readonly #config: DemoConfig;
  readonly #adapterHost: HttpAdapterHost;
  readonly #logger = new Logger(WebhookSender.name);

  constructor(
    @Inject(KmsService) kms: KmsService,
    @Inject(DEMO_CONFIG) config: DemoConfig,
    @Inject(HttpAdapterHost) adapterHost: HttpAdapterHost,
  ) {
    this.#kms = kms;
    this.#config = config;
    this.#adapterHost = adapterHost;
  }

  /** The receiver: WEBHOOK_URL, or this server's own /webhooks/patient-created. */
  target(): string {
    if (this.#config.webhookUrl !== undefined) return this.#config.webhookUrl;
    const address = this.#adapterHost.httpAdapter.getHttpServer().address() as {
      port: number;
    } | null;
    if (address === null) throw new Error("the server is not listening: set WEBHOOK_URL");
    return `http://127.0.0.1:${address.port}/webhooks/patient-created`;
  }

  async send(event: PatientCreatedEvent): Promise<WebhookDelivery> {
    const kms = this.#kms.kms;
    const url = this.target();
    const body = new TextEncoder().encode(JSON.stringify(event));
    const headers = { "content-type": "application/json" };
    const request = { method: "POST", url, headers, body };
    const signer = createKmsSigner({
      kms,
      keyId: WEBHOOK_KEY_ALIAS,
      algorithm: "hmac-sha256",
      publishedKeyId: WEBHOOK_KEY_ID,
    });
    const signed = {
      ...headers,
      ...(await signRequest(request, { signer, nonce: true, expiresIn: 60 })),
    };
    const timeoutMs = this.#config.webhookTimeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS;
    // One deadline for connecting, the headers and the body alike.
    const signal = AbortSignal.timeout(timeoutMs);
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: signed,
        body,
        redirect: "manual",
        signal,
      });
    } catch (error) {
      if (signal.aborted) return this.#timedOut(url, null, timeoutMs);
      // The cause names hosts and ports of the receiver's network: the operator's log gets it,
      // the API client only learns that the delivery failed.
      this.#logger.warn(
        `webhook delivery to ${url} failed: ${String((error as Error).cause ?? error)}`,
      );
      return {
        url,
        status: null,
        receiptVerified: false,
        problem: "the receiver could not be reached",
      };
    }
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      // The Location is the receiver's business (and may name internal hosts): logged only.
      this.#logger.warn(
        `webhook delivery to ${url} answered ${response.status} to ${response.headers.get("location") ?? "no Location"}; not followed`,
      );
      return {
        url,
        status: response.status,
        receiptVerified: false,
        problem: "the receiver answered a redirect, which signed webhooks do not follow",
      };
    }
    let answer: Uint8Array;
    try {
      answer = await boundedBody(response, MAX_ANSWER_BYTES);
    } catch (error) {
      if (error instanceof AnswerTooLargeError) {
        this.#logger.warn(`webhook delivery to ${url}: answer ${error.message}; not read`);
        return {
          url,
          status: response.status,
          receiptVerified: false,
          problem: `the receiver's answer exceeds ${MAX_ANSWER_BYTES} bytes`,
        };
      }
      if (signal.aborted) return this.#timedOut(url, response.status, timeoutMs);
      this.#logger.warn(
        `webhook delivery to ${url}: answer broken off: ${String((error as Error).cause ?? error)}`,
      );
      return {
        url,
        status: response.status,
        receiptVerified: false,
        problem: "the receiver's answer broke off",
      };
    }
    const receipt = await verifyMessage(
      { status: response.status, headers: response.headers, body: answer },
      {
        keyLookup: (keyId) =>
          keyId === WEBHOOK_KEY_ID
            ? createKmsVerifier({ kms, keyId: WEBHOOK_KEY_ALIAS, algorithm: "hmac-sha256" })
            : undefined,
        // Bound to our request's own signature: a receipt for another delivery does not pass.
        requiredComponents: RECEIPT_COMPONENTS,
        contentDigest: "required",
      },
      { ...request, headers: signed },
    );
    return receipt.ok
      ? { url, status: response.status, receiptVerified: true }
      : {
          url,
          status: response.status,
          receiptVerified: false,
          problem: `receipt signature: ${receipt.check}: ${receipt.detail}`,
        };
  }

  /** A delivery over its deadline; `status` when the receiver sent its headers in time. */
  #timedOut(url: string, status: number | null, timeoutMs: number): WebhookDelivery {
    this.#logger.warn(
      `webhook delivery to ${url}: no complete answer within ${timeoutMs} ms; given up`,
    );
    return {
      url,
      status,
      receiptVerified: false,
      problem: `the receiver did not answer completely within ${timeoutMs} ms`,
    };
  }
}
