import type { StoredAlias, StoredKey } from "@kms/core";
import pg from "pg";
import { TYPES } from "./rows.ts";

export interface ChangeFeedOptions {
  readonly pool: pg.Pool;
  /** How to open the dedicated LISTEN connection; undefined: poll only. */
  readonly listenConfig: pg.ClientConfig | undefined;
  readonly channel: string;
  /** `SELECT counter FROM <schema>.kms_changes`. */
  readonly counterSql: string;
  readonly maxStalenessMs: number;
  readonly cacheSize: number;
}

/** The longest delay setTimeout and setInterval accept. */
const MAX_TIMER_MS = 2_147_483_647;

/** Keeps at most `limit` entries, evicting the least recently used. */
function remember<V>(cache: Map<string, V>, limit: number, id: string, value: V): void {
  if (limit === 0) return;
  cache.delete(id);
  cache.set(id, value);
  if (cache.size > limit) cache.delete(cache.keys().next().value!);
}

function recall<V>(cache: Map<string, V>, id: string): V | undefined {
  const hit = cache.get(id);
  if (hit !== undefined) {
    cache.delete(id);
    cache.set(id, hit);
  }
  return hit;
}

/**
 * The cache of key and alias records, and what keeps it honest: writes by other instances reach
 * it by LISTEN/NOTIFY within milliseconds, and a poll of the store-wide change counter every
 * `maxStalenessMs / 2` catches anything the notifications missed (a dropped LISTEN connection,
 * a notification queue overflow). A cached record is served only while the last poll that
 * succeeded was sent less than `maxStalenessMs` ago, so no record older than that bound is ever
 * returned, even when the database is unreachable: then reads go to the database and fail.
 *
 * Reads record the generation before querying and cache their result only if no invalidation
 * happened meanwhile, so a slow read cannot put back a record that a notification just evicted.
 */
export class ChangeFeed {
  readonly #options: ChangeFeedOptions;
  readonly #keys = new Map<string, StoredKey>();
  readonly #aliases = new Map<string, StoredAlias>();
  #generation = 0;
  /** Highest change counter whose effects the cache already accounts for. */
  #seen = -1;
  /** performance.now() when the last successful poll was sent. */
  #syncedAt = Number.NEGATIVE_INFINITY;
  #listener: pg.Client | undefined;
  #connecting: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #closed = false;

  constructor(options: ChangeFeedOptions) {
    this.#options = options;
  }

  /** Connects the listener and takes the first poll; call once before serving reads. */
  async start(): Promise<void> {
    await this.#connectListener();
    await this.poll();
    // Node fires a longer setInterval every millisecond instead (TimeoutOverflowWarning).
    const interval = Math.min(
      MAX_TIMER_MS,
      Math.max(1, Math.floor(this.#options.maxStalenessMs / 2)),
    );
    this.#timer = setInterval(() => void this.poll(), interval);
    this.#timer.unref();
  }

  get generation(): number {
    return this.#generation;
  }

  /** Whether cached records may be served now. */
  #fresh(): boolean {
    return performance.now() - this.#syncedAt < this.#options.maxStalenessMs;
  }

  key(keyId: string): StoredKey | undefined {
    return this.#fresh() ? recall(this.#keys, keyId) : undefined;
  }

  alias(aliasName: string): StoredAlias | undefined {
    return this.#fresh() ? recall(this.#aliases, aliasName) : undefined;
  }

  /** Caches a record read while `generation` was current, unless something changed since. */
  putKey(key: StoredKey, generation: number): void {
    if (generation === this.#generation && !this.#closed) {
      remember(this.#keys, this.#options.cacheSize, key.keyId, key);
    }
  }

  putAlias(alias: StoredAlias, generation: number): void {
    if (generation === this.#generation && !this.#closed) {
      remember(this.#aliases, this.#options.cacheSize, alias.aliasName, alias);
    }
  }

  invalidateKey(keyId: string): void {
    this.#generation++;
    this.#keys.delete(keyId);
  }

  invalidateAlias(aliasName: string): void {
    this.#generation++;
    this.#aliases.delete(aliasName);
  }

  #clear(): void {
    this.#generation++;
    this.#keys.clear();
    this.#aliases.clear();
  }

  /**
   * Reads the change counter; a value the notifications have not accounted for means some were
   * missed (or are still in flight), and the whole cache goes. Errors are swallowed: the cache
   * simply goes stale and stops serving until a poll succeeds again.
   */
  async poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    try {
      if (this.#listener === undefined && this.#options.listenConfig !== undefined) {
        await this.#connectListener().catch(() => {});
      }
      const sentAt = performance.now();
      const { rows } = await this.#options.pool.query<{ counter: number }>({
        text: this.#options.counterSql,
        types: TYPES,
      });
      const counter = rows[0]?.counter ?? 0;
      if (counter !== this.#seen) {
        this.#clear();
        this.#seen = counter;
      }
      this.#syncedAt = sentAt;
    } catch {
      // Left stale on purpose: #fresh() turns false and reads bypass the cache.
    } finally {
      this.#polling = false;
    }
  }

  #onNotification(message: pg.Notification): void {
    const payload = message.payload ?? "";
    const space = payload.indexOf(" ");
    const counter = Number(payload.slice(0, space));
    const subject = payload.slice(space + 1);
    if (subject.startsWith("k:")) this.invalidateKey(subject.slice(2));
    else if (subject.startsWith("a:")) this.invalidateAlias(subject.slice(2));
    else this.#clear();
    if (!Number.isSafeInteger(counter) || (this.#seen >= 0 && counter <= this.#seen)) return;
    // Every committed change bumps the counter by one and notifies, in commit order, so on one
    // connection n follows n - 1. Any other n, or any n while #seen is unknown (a new LISTEN
    // connection), means changes committed that this cache never heard of: the ones made while
    // no connection was listening. Taking n as seen without clearing would let the next poll,
    // reading n too, keep records those changes made stale, and serve them without bound.
    if (counter !== this.#seen + 1 || this.#seen < 0) this.#clear();
    this.#seen = counter;
  }

  async #connectListener(): Promise<void> {
    const config = this.#options.listenConfig;
    if (config === undefined || this.#closed) return;
    this.#connecting ??= (async () => {
      const client = new pg.Client(config);
      const lost = (): void => {
        if (this.#listener === client) this.#listener = undefined;
        // Notifications sent while we were not listening are gone: start from a clean cache.
        this.#clear();
        this.#seen = -1;
        client.end().catch(() => {});
      };
      client.on("error", lost);
      client.on("end", lost);
      client.on("notification", (message) => this.#onNotification(message));
      try {
        await client.connect();
        await client.query(`LISTEN "${this.#options.channel}"`);
      } catch (error) {
        client.removeAllListeners("end");
        await client.end().catch(() => {});
        throw error;
      }
      if (this.#closed) {
        client.removeAllListeners("end");
        await client.end().catch(() => {});
        return;
      }
      this.#listener = client;
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#clear();
    await this.#connecting?.catch(() => {});
    const listener = this.#listener;
    this.#listener = undefined;
    if (listener !== undefined) {
      listener.removeAllListeners("end");
      listener.removeAllListeners("error");
      listener.on("error", () => {});
      await listener.end().catch(() => {});
    }
  }
}
