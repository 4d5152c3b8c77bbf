/**
 * A nonce store shared by every instance of an application, on Redis (`SET NX PX`).
 * Import from `@kms/http-signatures/redis`; `redis` (node-redis ≥ 5) is an optional peer.
 */
import { ValidationError } from "@kms/core";
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
}

export class RedisNonceStore implements NonceStore {
  readonly #client: RedisSetClient;
  readonly #prefix: string;

  /** @throws ValidationException when the client lacks `set`. */
  constructor(client: RedisSetClient, options: RedisNonceStoreOptions = {}) {
    if (typeof client?.set !== "function")
      throw new ValidationError('"client" must be a node-redis client');
    this.#client = client;
    this.#prefix = options.prefix ?? "kms:nonce:";
  }

  async checkAndStore(nonce: string, ttlMs: number): Promise<boolean> {
    const reply = await this.#client.set(`${this.#prefix}${nonce}`, "1", {
      condition: "NX",
      expiration: { type: "PX", value: Math.max(Math.ceil(ttlMs), 1) },
    });
    return reply === "OK";
  }
}
