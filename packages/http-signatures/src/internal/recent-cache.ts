/**
 * A tiny identity cache holding the last few keys strongly. Per-request objects (a request's
 * headers, its message view) are looked up several times within one request; a WeakMap keyed
 * by them would do, but V8 keeps WeakMap entries with young keys alive through scavenges, so
 * at thousands of requests per second every request's data is promoted to the old generation
 * and garbage collection comes to dominate (measured: about 10× the cost of plain properties).
 * Holding the last `size` keys costs nothing comparable and serves the verify-then-sign pattern.
 */
export class RecentCache<K extends object, V> {
  readonly #keys: (K | undefined)[];
  readonly #values: (V | undefined)[];
  #next = 0;

  constructor(size: number) {
    this.#keys = new Array<K | undefined>(size).fill(undefined);
    this.#values = new Array<V | undefined>(size).fill(undefined);
  }

  get(key: K): V | undefined {
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) if (keys[i] === key) return this.#values[i];
    return undefined;
  }

  /** Forgets `key`, so the next `get` misses. */
  delete(key: K): void {
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === key) {
        keys[i] = undefined;
        this.#values[i] = undefined;
      }
    }
  }

  set(key: K, value: V): void {
    const i = this.#next;
    this.#keys[i] = key;
    this.#values[i] = value;
    this.#next = (i + 1) % this.#keys.length;
  }
}
