/**
 * mulberry32: a seeded generator for property tests that cannot use fast-check (packages
 * without it). Small and fast; a failing case is reproduced from its seed alone. Not for
 * anything secret.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Seeded choices for property tests; a failing case is reproduced from its seeds alone. */
export class SeededRandom {
  readonly next: () => number;
  /** Several seeds (e.g. a run seed and a case number) are hashed into one (FNV-1a). */
  constructor(...seeds: number[]) {
    let h = 0x811c9dc5;
    for (const s of seeds) h = Math.imul(h ^ s, 0x01000193) >>> 0;
    this.next = mulberry32(h);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new Error("pick from an empty list");
    return item;
  }
  /** Up to `max` picks (repeats allowed). */
  some<T>(items: readonly T[], max: number): T[] {
    return Array.from({ length: this.int(max + 1) }, () => this.pick(items));
  }
}
