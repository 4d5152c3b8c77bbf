/**
 * A small benchmark harness: every case runs in the same process as its baseline, and results
 * are reported as ops/s and as a ratio to that baseline, never as absolute pass/fail timings.
 */
export interface BenchCase {
  readonly name: string;
  /** Runs one operation; may be async. */
  readonly run: () => unknown;
  /** Bytes processed per operation, to print MB/s. */
  readonly bytes?: number;
}

export interface BenchResult {
  readonly name: string;
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
  const opsPerSecond = ops / ((now - start) / 1000);
  return {
    name: c.name,
    opsPerSecond,
    mbPerSecond: c.bytes === undefined ? undefined : (opsPerSecond * c.bytes) / 1e6,
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
