/**
 * A small benchmark harness: every case runs in the same process as its baseline, and results
 * are reported as ops/s and as a ratio to that baseline, never as absolute pass/fail timings.
 *
 * `compare` times each case in one window after the other (a quick picture of absolute speed);
 * `interleaved` times two cases in alternating short slices and is what a target ratio should
 * be read from: on a shared machine, load that comes and goes then falls on both sides.
 *
 * The raw node:crypto AES-256-GCM baseline the crypto benches measure against, and the row of
 * three string columns the field-encryption benches encrypt, live here too, so that every bench
 * times the same baseline on the same data.
 */
import { createCipheriv, createDecipheriv, type KeyObject, randomFillSync } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export interface BenchCase {
  readonly name: string;
  /** Runs one operation; may be async. */
  readonly run: () => unknown;
  /** Bytes processed per operation, to print MB/s. */
  readonly bytes?: number;
  /**
   * Values one operation handles (3 for a row of three encrypted columns); ops/s are then
   * reported per value, so a case that handles a row compares with one that handles a value.
   * Default 1.
   */
  readonly values?: number;
}

export interface BenchResult {
  readonly name: string;
  /** Per value when the case says how many values an operation handles. */
  readonly opsPerSecond: number;
  readonly mbPerSecond: number | undefined;
}

const quick = process.env.KMS_BENCH_QUICK === "1";

async function timeCase(c: BenchCase, seconds: number): Promise<BenchResult> {
  const probe = c.run();
  const isAsync = probe instanceof Promise;
  if (isAsync) await probe;
  const warmupEnd = performance.now() + seconds * 250;
  while (performance.now() < warmupEnd) {
    if (isAsync) await c.run();
    else c.run();
  }
  let ops = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 16; i++) {
      if (isAsync) await c.run();
      else c.run();
    }
    ops += 16;
    now = performance.now();
  }
  const calls = ops / ((now - start) / 1000);
  return {
    name: c.name,
    opsPerSecond: calls * (c.values ?? 1),
    mbPerSecond: c.bytes === undefined ? undefined : (calls * c.bytes) / 1e6,
  };
}

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2);
}

/** Measures the baseline and each case, then prints one line each with its ratio. */
export async function compare(
  title: string,
  baseline: BenchCase,
  cases: readonly BenchCase[],
  options: { seconds?: number } = {},
): Promise<BenchResult[]> {
  const seconds = options.seconds ?? (quick ? 0.2 : 1);
  const base = await timeCase(baseline, seconds);
  const results = [base];
  for (const c of cases) results.push(await timeCase(c, seconds));
  console.log(`\n${title}`);
  for (const r of results) {
    const ratio = r.opsPerSecond / base.opsPerSecond;
    const mb = r.mbPerSecond === undefined ? "" : `  ${fmt(r.mbPerSecond)} MB/s`;
    console.log(
      `  ${r.name.padEnd(44)} ${fmt(r.opsPerSecond).padStart(12)} ops/s${mb}  ${(ratio * 100).toFixed(1).padStart(6)}% of ${base.name}`,
    );
  }
  return results;
}

// --- interleaved slices -----------------------------------------------------------------------

/** Slice pairs per `interleaved` comparison: KMS_BENCH_SLICES, default 40 (6 when quick). */
export const INTERLEAVED_SLICES: number = Number(process.env.KMS_BENCH_SLICES ?? (quick ? 6 : 40));
/** Shortest slice; a slice always holds at least one operation. */
const SLICE_MS = 50;

let collect: (() => void) | undefined;
/**
 * A full collection, outside the timed slices. Without it a major collection of either side's
 * garbage lands in whichever slice runs when the heap fills, at random on either side (at 1 MiB
 * messages this spread ratios over 0.5–5×). Collected before each slice, each side pays for what
 * it makes within its slice and neither for the other's; garbage left at a slice's end is paid
 * by nobody. That favours whichever side leaves more of its garbage unpaid: not always the one
 * that makes more (a clear 10,000-row Prisma findMany, whose slice of three or four calls fits
 * in a fresh heap, paid almost none; the encrypted one paid its own in full, and the ratio read
 * 4.2–4.5× against 3.4–3.6× in steady state). `interleaved`'s `collect: false` measures that
 * steady state. Set up on first use, so that merely importing this module changes no V8 flag.
 */
function collectGarbage(): void {
  if (collect === undefined) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  }
  collect();
}

/** One slice's speed, per value, by the wall clock and by this thread's CPU time. */
export interface SliceSpeed {
  readonly wall: number;
  readonly cpu: number;
}

/**
 * Values/s of `c` over one slice of at least `ms`, after an untimed full collection unless
 * `collectFirst` is false (see `interleaved`'s `collect`).
 */
export async function slice(
  c: BenchCase,
  ms: number = SLICE_MS,
  collectFirst = true,
): Promise<SliceSpeed> {
  if (collectFirst) collectGarbage();
  const run = c.run;
  let ops = 0;
  const cpuStart = process.threadCpuUsage();
  const start = performance.now();
  let now = start;
  do {
    const result = run();
    if (result instanceof Promise) await result;
    ops += 1;
    now = performance.now();
  } while (now - start < ms);
  const cpu = process.threadCpuUsage(cpuStart);
  const values = ops * (c.values ?? 1);
  return { wall: (values * 1000) / (now - start), cpu: (values * 1e6) / (cpu.user + cpu.system) };
}

/** Median and quartiles of a set of per-pair ratios. */
export interface RatioSpread {
  readonly median: number;
  readonly lower: number;
  readonly upper: number;
}

/** `a`'s speed over `b`'s (per value), by the wall clock and by the main thread's CPU time. */
export interface InterleavedRatio {
  readonly wall: RatioSpread;
  readonly cpu: RatioSpread;
  /** Slice pairs measured. */
  readonly pairs: number;
}

function median(sorted: readonly number[]): number {
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median and quartiles (nearest rank) of `ratios`. */
export function spreadOf(ratios: readonly number[]): RatioSpread {
  if (ratios.length === 0) return { median: Number.NaN, lower: Number.NaN, upper: Number.NaN };
  const sorted = [...ratios].sort((p, q) => p - q);
  const at = (q: number): number => sorted[Math.round(q * (sorted.length - 1))]!;
  return { median: median(sorted), lower: at(0.25), upper: at(0.75) };
}

/**
 * `a`'s speed over `b`'s, timed in alternating slices (a b, b a, …) of at least 50 ms, each
 * after an untimed full collection, instead of in windows one after the other, so that load
 * which comes and goes falls on both sides of most pairs. Each pair gives two ratios: by the
 * wall clock and by the main thread's CPU time, which a loaded machine's waits for a core leave
 * out (GC work on helper threads is left out too). Two untimed pairs warm both sides up first.
 * Ratios are per value (`BenchCase.values`).
 *
 * `collect: false` forces no collection: each side then runs on the heap the other left, as
 * code in a long-running process does, and pays the collections that fall in its slices. With
 * slices long enough to hold many collections (`sliceMs` of a few hundred ms), that is the
 * steady-state cost, garbage included. Forced collections give steadier ratios but are not
 * neutral: a side whose few operations per slice fit in a fresh heap pays almost no collection,
 * one that outgrows it pays its own in full.
 */
export async function interleaved(
  a: BenchCase,
  b: BenchCase,
  options: { slices?: number; sliceMs?: number; collect?: boolean } = {},
): Promise<InterleavedRatio> {
  const slices = options.slices ?? INTERLEAVED_SLICES;
  const ms = options.sliceMs ?? SLICE_MS;
  const collect = options.collect ?? true;
  for (let i = 0; i < 2; i++) {
    await slice(a, ms, collect);
    await slice(b, ms, collect);
  }
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < slices; i++) {
    let x: SliceSpeed;
    let y: SliceSpeed;
    if (i % 2 === 0) {
      x = await slice(a, ms, collect);
      y = await slice(b, ms, collect);
    } else {
      y = await slice(b, ms, collect);
      x = await slice(a, ms, collect);
    }
    wall.push(x.wall / y.wall);
    cpu.push(x.cpu / y.cpu);
  }
  return { wall: spreadOf(wall), cpu: spreadOf(cpu), pairs: slices };
}

/**
 * `interleaved` options for a steady-state ratio: no forced collection, slices long enough (400
 * ms) that the collections falling at their edges are a small part of them.
 */
export const STEADY_STATE = { collect: false, sliceMs: 400 } as const;

/** "1.23× [1.10–1.31]": median [lower quartile–upper quartile]. */
export function formatSpread(s: RatioSpread): string {
  return `${s.median.toFixed(2)}× [${s.lower.toFixed(2)}–${s.upper.toFixed(2)}]`;
}

/** "wall 1.23× [1.10–1.31], CPU 1.20× [1.15–1.26]". */
export function formatInterleaved(r: InterleavedRatio): string {
  return `wall ${formatSpread(r.wall)}, CPU ${formatSpread(r.cpu)}`;
}

/** Whether a ratio clears a target; see `verdict`. */
export type Verdict = "met" | "not met" | "unclear";

/**
 * A target verdict that noise cannot flatter. For "at least" targets, "met" needs the LOWER
 * quartile of both the wall-clock and the CPU ratios to clear the target (three pairs in four
 * clear it, on both clocks); "not met" when a median misses it; "unclear" in between. For "at
 * most" targets (a time ratio), the same with the upper quartile.
 */
export function verdict(r: InterleavedRatio, target: number, kind: "atLeast" | "atMost"): Verdict {
  const clears = (x: number): boolean => (kind === "atLeast" ? x >= target : x <= target);
  const spreads = [r.wall, r.cpu];
  if (spreads.some((s) => !clears(s.median))) return "not met";
  if (spreads.every((s) => clears(kind === "atLeast" ? s.lower : s.upper))) {
    return "met";
  }
  return "unclear";
}

// --- raw node:crypto AES-256-GCM baseline -------------------------------------------------------

/** IVs per pool; each refill is one `randomFillSync` call. */
const IVS_PER_POOL = 4096;

/**
 * A source of 12-byte IVs sliced from a pooled CSPRNG buffer of 4096 IVs, refilled with one
 * `randomFillSync` when used up: the KMS draws its own IVs this way, so a baseline that paid a
 * `randomBytes(12)` call per IV would be slower than the KMS for a reason that is not the cipher.
 * Each returned IV is a view into the pool, overwritten by a later refill: copy it to keep it
 * (`sealAesGcm` does). Each call of `createIvPool` makes a pool of its own.
 */
export function createIvPool(): () => Uint8Array {
  const pool = new Uint8Array(12 * IVS_PER_POOL);
  let at = pool.length;
  return () => {
    if (at === pool.length) {
      randomFillSync(pool);
      at = 0;
    }
    at += 12;
    return pool.subarray(at - 12, at);
  };
}

/**
 * Raw AES-256-GCM without AAD, laid out iv ‖ ciphertext ‖ tag (16 bytes). A `KeyObject`
 * imported once is the fastest raw usage; a byte key is imported by node:crypto on every call,
 * as libraries that keep their key as bytes do.
 */
export function sealAesGcm(
  key: KeyObject | Uint8Array,
  iv: Uint8Array,
  plaintext: Uint8Array,
): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([iv, body, cipher.getAuthTag()]);
}

/** Opens what `sealAesGcm` made (a 12-byte IV); throws when the tag does not verify. */
export function openAesGcm(key: KeyObject | Uint8Array, sealed: Uint8Array): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const body = decipher.update(sealed.subarray(12, sealed.length - 16));
  decipher.final();
  return body;
}

// --- the field-encryption row -------------------------------------------------------------------

/** A row of three 32-byte string columns, as an ORM adapter encrypts it. */
export const FIELD_ROW = {
  email: "alice.smith@example.com".padEnd(32, "."),
  ssn: "123-45-6789".padEnd(32, "."),
  note: "prefers contact by email".padEnd(32, "."),
} as const;
/** `FIELD_ROW`'s columns, in the order every bench handles them. */
export const FIELD_NAMES = ["email", "ssn", "note"] as const;
export type FieldName = (typeof FIELD_NAMES)[number];

/** One stored row: each column's value in the binary form and in the text form, in order. */
export interface StoredFieldRow {
  readonly bytes: readonly Uint8Array[];
  readonly text: readonly string[];
}

/**
 * `count` stored rows of `FIELD_ROW`, each sealed with a context object built for its row
 * (`{ tenantId: "t1" }`), as an adapter writes a row: per column, `bytes` then `text`.
 */
export async function storeFieldRows(
  count: number,
  seal: {
    readonly bytes: (field: FieldName, context: { tenantId: string }) => Promise<Uint8Array>;
    readonly text: (field: FieldName, context: { tenantId: string }) => Promise<string>;
  },
): Promise<StoredFieldRow[]> {
  const rows: StoredFieldRow[] = [];
  for (let r = 0; r < count; r++) {
    const context = { tenantId: "t1" };
    const bytes: Uint8Array[] = [];
    const text: string[] = [];
    for (const field of FIELD_NAMES) {
      bytes.push(await seal.bytes(field, context));
      text.push(await seal.text(field, context));
    }
    rows.push({ bytes, text });
  }
  return rows;
}
