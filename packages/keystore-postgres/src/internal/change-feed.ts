import type { StoredAlias, StoredKey } from "@kms/core";
import pg from "pg";
import { TYPES } from "./rows.ts";

export interface ChangeFeedOptions {
  readonly pool: pg.Pool;
  /** How to open the dedicated LISTEN connection; undefined: poll only. */
  readonly listenConfig: pg.ClientConfig | undefined;
  readonly channel: string;
  /**
   * `SELECT counter, subject FROM <schema>.kms_changes`: how many changes committed, and the
   * record (`k:<key id>`, `a:<alias name>`) the last one touched.
   */
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

/** What the change trigger (migration 4) sends: the counter, in decimal, and nothing else. */
const COUNTER_PAYLOAD = /^[0-9]{1,15}$/;

/**
 * The cache of key and alias records, and what keeps it honest: every invalidation comes from
 * reading the store-wide change counter (and the record the last change touched) from the
 * database, every `maxStalenessMs / 2` and whenever a notification says the counter moved, so
 * writes by other instances reach the cache within milliseconds. A cached record is served only
 * while the last read that succeeded was sent less than `maxStalenessMs` ago, so no record
 * older than that bound is ever returned, even when the database is unreachable or every
 * notification is lost: then reads go to the database and fail.
 *
 * A notification is only a hint to read sooner, never trusted for what it says: any role that
 * can connect to the database may NOTIFY on the channel, and a forged payload that emptied the
 * cache would send every instance's every read to the database. Reads run one at a time, and
 * notifications that arrive meanwhile share one read after it, so a flood of them costs each
 * instance one small query at a time and empties no cache.
 *
 * Reads record the generation before querying and cache their result only if no invalidation
 * happened meanwhile, so a slow read cannot put back a record that a counter read just evicted.
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
  /** The counter read in flight, if any. */
  #reading: Promise<void> | undefined;
  /** A read queued behind it, which every request made meanwhile joins. */
  #queued: Promise<void> | undefined;
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
   * Reads the change counter (see #sync), first listening again if the LISTEN connection was
   * lost. Errors are swallowed: the cache simply goes stale and stops serving until a read
   * succeeds again.
   */
  async poll(): Promise<void> {
    if (this.#closed) return;
    if (this.#listener === undefined && this.#options.listenConfig !== undefined) {
      await this.#connectListener().catch(() => {});
    }
    await this.#sync();
  }

  /**
   * A read of the change counter that starts after this call: the one in flight started too
   * early to see what prompted the call, so the request joins the read queued behind it.
   */
  #sync(): Promise<void> {
    if (this.#queued !== undefined) return this.#queued;
    if (this.#reading === undefined) return this.#startRead();
    const queued = this.#reading.then(() => {
      this.#queued = undefined;
      return this.#startRead();
    });
    this.#queued = queued;
    return queued;
  }

  #startRead(): Promise<void> {
    const read = this.#readChanges().finally(() => {
      if (this.#reading === read) this.#reading = undefined;
    });
    this.#reading = read;
    return read;
  }

  /**
   * Every committed change bumps the counter by exactly one and records the record it touched,
   * in commit order. A counter one past the last one seen therefore names the only change since,
   * and just that record goes; any other new value (several changes, a counter never seen
   * before, a schema restored from a backup) means changes this cache cannot name, and it all
   * goes.
   */
  async #readChanges(): Promise<void> {
    if (this.#closed) return;
    try {
      const sentAt = performance.now();
      const { rows } = await this.#options.pool.query<{ counter: number; subject: string | null }>({
        text: this.#options.counterSql,
        types: TYPES,
      });
      const counter = rows[0]?.counter ?? 0;
      const subject = rows[0]?.subject ?? null;
      if (counter !== this.#seen) {
        if (this.#seen >= 0 && counter === this.#seen + 1 && subject?.startsWith("k:")) {
          this.invalidateKey(subject.slice(2));
        } else if (this.#seen >= 0 && counter === this.#seen + 1 && subject?.startsWith("a:")) {
          this.invalidateAlias(subject.slice(2));
        } else {
          this.#clear();
        }
        this.#seen = counter;
      }
      this.#syncedAt = sentAt;
    } catch {
      // Left stale on purpose: #fresh() turns false and reads bypass the cache.
    }
  }

  #onNotification(message: pg.Notification): void {
    const payload = message.payload ?? "";
    // Not what the trigger sends: someone else's NOTIFY, which the next poll makes moot anyway.
    if (!COUNTER_PAYLOAD.test(payload)) return;
    // A counter this cache already accounts for needs no read, forged or not.
    if (this.#seen >= 0 && Number(payload) <= this.#seen) return;
    void this.#sync();
  }

  async #connectListener(): Promise<void> {
    const config = this.#options.listenConfig;
    if (config === undefined || this.#closed) return;
    this.#connecting ??= (async () => {
      const client = new pg.Client(config);
      const lost = (): void => {
        if (this.#listener === client) this.#listener = undefined;
        // Notifications sent while we were not listening are gone. The next poll would notice
        // their changes, but a clean cache need not wait for it.
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
