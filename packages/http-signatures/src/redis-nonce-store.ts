/**
 * A nonce store shared by every instance of an application, on Redis (`SET NX PX`).
 * Import from `@kms/http-signatures/redis`; `redis` (node-redis ≥ 5) is an optional peer.
 */
import { KmsInternalError, ValidationError } from "@kms/core";
import type { NonceStore } from "./nonce-store.ts";

/** The one command used, typed structurally so any node-redis client (or cluster) fits. */
export interface RedisSetClient {
  set(
    key: string,
    value: string,
    options: { condition: "NX"; expiration: { type: "PX"; value: number } },
  ): Promise<string | null | object>;
}

export interface RedisNonceStoreOptions {
  /** Key prefix; default `kms:nonce:`. */
  readonly prefix?: string;
  /**
   * How long a check may wait for Redis, in milliseconds; default 2000. node-redis queues
   * commands while it reconnects (unless the client was created with
   * `disableOfflineQueue: true`), so during an outage a check would otherwise wait until Redis
   * is back, and the request with it. A check that times out fails closed: it rejects (the
   * request is answered 5xx), and the nonce counts as not recorded.
   */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 2000;

/**
 * Nonces in Redis, one key per nonce (`SET key 1 NX PX ttl`), so every instance that shares the
 * server accepts a nonce once. Create the client with `disableOfflineQueue: true`, so that
 * commands fail at once while Redis is unreachable instead of waiting in node-redis's queue;
 * `timeoutMs` bounds the wait either way.
 */
export class RedisNonceStore implements NonceStore {
  readonly #client: RedisSetClient;
  readonly #prefix: string;
  readonly #timeoutMs: number;

  /**
   * @throws ValidationException when the client lacks `set`, or `timeoutMs` is not a positive
   * finite number.
   */
  constructor(client: RedisSetClient, options: RedisNonceStoreOptions = {}) {
    if (typeof client?.set !== "function")
      throw new ValidationError('"client" must be a node-redis client');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new ValidationError('"timeoutMs" must be a positive, finite number of milliseconds');
    }
    this.#client = client;
    this.#prefix = options.prefix ?? "kms:nonce:";
    this.#timeoutMs = timeoutMs;
  }

  /**
   * @throws KmsInternalError (rejects) when Redis does not answer within `timeoutMs`; errors of
   * the client (a refused connection with `disableOfflineQueue`) propagate.
   */
  async checkAndStore(nonce: string, ttlMs: number): Promise<boolean> {
    const reply = this.#client.set(`${this.#prefix}${nonce}`, "1", {
      condition: "NX",
      expiration: { type: "PX", value: Math.max(Math.ceil(ttlMs), 1) },
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new KmsInternalError(
            `the Redis nonce store did not answer within ${this.#timeoutMs} ms; the nonce was not accepted`,
          ),
        );
      }, this.#timeoutMs);
    });
    try {
      // The race handles a late rejection of `reply` too: it is not left unhandled.
      return (await Promise.race([reply, timedOut])) === "OK";
    } finally {
      clearTimeout(timer);
    }
  }
}
