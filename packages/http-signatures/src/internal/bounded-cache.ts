/**
 * A map of at most `limit` entries that forgets the oldest one to make room. For caches of what
 * clients send (a Host field, a signature label): one that stopped taking entries once full
 * would be filled for good by the first few distinct values a client chose, and every value
 * after them, the server's own included, would never be cached again. Keys are kept as given:
 * copy a string cut from a request (`detachedString`) before it is set.
 */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #limit: number;

  constructor(limit: number) {
    this.#limit = limit;
  }

  get(key: K): V | undefined {
    return this.#entries.get(key);
  }

  has(key: K): boolean {
    return this.#entries.has(key);
  }

  set(key: K, value: V): void {
    const entries = this.#entries;
    if (!entries.has(key) && entries.size >= this.#limit) {
      // A Map iterates in insertion order: its first key is the oldest.
      const [oldest] = entries.keys();
      entries.delete(oldest as K);
    }
    entries.set(key, value);
  }

  get size(): number {
    return this.#entries.size;
  }
}
