/**
 * Properties of the `kms` command under hostile input: random and adversarial command lines,
 * file ends that collide, are links or do not exist, messages broken at every stage, and round
 * trips across frame boundaries. The many cases run `runCli` in-process; a few spawn the bin.
 *
 * Every random case draws from its own generator seeded by (SEED, property, case), so a failure
 * names what to replay: KMS_PROPERTY_SEED=<seed> npx vitest run test/properties.test.ts
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "@kms/tooling/random";
import { afterAll, beforeAll, describe, expect, it, test } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import { runCli } from "../src/index.ts";
import {
  Collector,
  initializedWorkspace,
  plaintext,
  type RunResult,
  run,
  workspace,
} from "./helpers.ts";

const SEED = Number(process.env.KMS_PROPERTY_SEED ?? 20_261_204) >>> 0;
const random = (property: number, index: number): SeededRandom =>
  new SeededRandom(SEED, property, index);
const replay = (property: number, index: number): string =>
  `seed ${SEED}, property ${property}, case ${index}`;

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
afterAll(() => ws.dispose());

/** Every plaintext this file encrypts starts with it, so a leak of any of them is found. */
const MARKER = "PROP-SECRET-PAYLOAD";
/** Plaintext snippets that must never appear on stderr (nor on stdout unless it is the data). */
const secretSnippets: Buffer[] = [];
function secretData(size: number): Buffer {
  const data = plaintext(size, MARKER);
  if (size >= 96) secretSnippets.push(Buffer.from(data.subarray(size - 40, size - 8)));
  return data;
}

interface Recorded {
  readonly label: string;
  readonly result: RunResult;
  /** `--out -` on decrypt: stdout is the data, partial data included (README, Security notes). */
  readonly stdoutIsData: boolean;
}
const recorded: Recorded[] = [];

const STACK_FRAME = /^\s+at .*(:\d+:\d+\)?|<anonymous>|native)/m;

/** What every `kms` run must look like, whatever it was given. */
function expectShape(label: string, argv: readonly string[], result: RunResult): void {
  expect([0, 1, 2], `${label}: exit code`).toContain(result.code);
  expect(result.err, `${label}: stack trace on stderr`).not.toMatch(STACK_FRAME);
  // Quoted arguments are escaped: a newline or a terminal escape in one cannot forge a line.
  expect(result.err, `${label}: raw control character on stderr`).not.toMatch(/[^\P{Cc}\n]/u);
  if (result.code === 2) {
    expect(result.err, `${label}: usage error`).toMatch(/^kms: [^\n]+\n\nUsage: kms /);
    expect(result.out, `${label}: stdout of a usage error`).toBe("");
  }
  // Without --progress, a failure is one line: the exception name and its message (an internal
  // failure adds its cause on a second line).
  if (result.code === 1 && !argv.includes("--progress")) {
    expect(result.err, `${label}: failure line`).toMatch(
      /^[A-Za-z]*(Exception|Error): [^\n]*\n( {2}caused by [^\n]*\n)?$/,
    );
  }
}

function outIsStdout(argv: readonly string[]): boolean {
  const at = argv.indexOf("--out");
  return (at !== -1 && argv[at + 1] === "-") || argv.includes("--out=-");
}

/** Runs `kms argv` in-process, checks its shape and records it for the secrets scan. */
async function kms(
  label: string,
  argv: readonly string[],
  extra: { stdin?: Buffer; cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const result = await run(argv, { ...opts, ...extra });
  expectShape(label, argv, result);
  recorded.push({
    label,
    result,
    stdoutIsData: argv.includes("decrypt") && outIsStdout(argv),
  });
  return result;
}

/** `.partial` files left anywhere under `dir`. */
function partials(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((name) =>
    name.endsWith(".partial"),
  );
}

let unique = 0;
function fresh(stem: string): string {
  unique += 1;
  return `${stem}-${unique}`;
}

// Three keys, each reachable by id, alias and ARN.
interface KeyRef {
  readonly id: string;
  readonly alias: string;
  readonly arn: string;
}
const keys: KeyRef[] = [];
const refOf = (key: KeyRef, r: SeededRandom): string => r.pick([key.id, key.alias, key.arn]);

/** A 10-frame message (1024-byte frames) and a final frame of 77 bytes, context tenant=a. */
const FRAME = 1024;
const FULL_FRAMES = 10;
const FINAL = 77;
const REGULAR_FRAME_BYTES = 4 + FRAME + 16;
const FINAL_FRAME_BYTES = 4 + 4 + 4 + FINAL + 16;
let message: Buffer;
let messageData: Buffer;
let headerLength: number;

beforeAll(async () => {
  for (let i = 0; i < 3; i += 1) {
    const created = await kms("create-key", ["create-key", "--description", `prop ${i}`]);
    expect(created.code).toBe(0);
    const meta = JSON.parse(created.out) as { keyId: string; arn: string };
    const alias = `alias/prop-${i}`;
    expect((await kms("create-alias", ["create-alias", alias, meta.keyId])).code).toBe(0);
    keys.push({ id: meta.keyId, alias, arn: meta.arn });
  }
  messageData = secretData(FULL_FRAMES * FRAME + FINAL);
  writeFileSync(join(ws.dir, "data"), messageData);
  const sealed = await kms("seal", [
    "encrypt",
    "--key",
    keys[0]!.alias,
    "--in",
    "data",
    "--out",
    "sealed.kms",
    "--context",
    "tenant=a",
    "--frame-size",
    String(FRAME),
  ]);
  expect(sealed.code).toBe(0);
  message = readFileSync(join(ws.dir, "sealed.kms"));
  headerLength = message.length - FULL_FRAMES * REGULAR_FRAME_BYTES - FINAL_FRAME_BYTES;
  expect(headerLength).toBeGreaterThan(100);
});

// ---------------------------------------------------------------------------------------------
// Argument parsing
// ---------------------------------------------------------------------------------------------

type Pair = readonly [flag: string, value: string];

/** Options in random order, each as `--flag=value` or `--flag value` (values that look like a
 * flag need the `=` form), a global option sometimes before the command. */
function render(command: string, pairs: readonly Pair[], r: SeededRandom): string[] {
  const shuffled = [...pairs];
  for (let i = shuffled.length - 1; i > 0; i -= 1) {
    const j = r.int(i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  const before: string[] = [];
  const after: string[] = [];
  for (const [flag, value] of shuffled) {
    const parts =
      value.startsWith("-") && value !== "-"
        ? [`${flag}=${value}`]
        : r.chance(0.5)
          ? [`${flag}=${value}`]
          : [flag, value];
    (flag === "--data-dir" && r.chance(0.5) ? before : after).push(...parts);
  }
  return [...before, command, ...after];
}

const encryptPairs = (out: string): Pair[] => [
  ["--key", keys[0]!.alias],
  ["--in", "data"],
  ["--out", out],
  ["--context", "tenant=a"],
  ["--frame-size", String(FRAME)],
  ["--data-dir", ".kms"],
];
const decryptPairs = (out: string): Pair[] => [
  ["--in", "sealed.kms"],
  ["--out", out],
  ["--context", "tenant=a"],
  ["--allow-key", keys[0]!.id],
  ["--max-frame-size", String(FRAME)],
  ["--data-dir", ".kms"],
];

/** Each turns a valid command line into one the command must refuse as a usage error. */
const MUTATIONS: Record<string, (command: string, pairs: Pair[], r: SeededRandom) => string[]> = {
  "unknown long flag": (c, p, r) => {
    const argv = render(c, p, r);
    const flag = r.pick([
      "--verbose",
      "--force",
      "--kye",
      "--inn",
      "--contexts",
      "--dry-run",
      "--no-key",
      "--no-in",
      "--no-context",
      "--in-place",
      "--KEY",
    ]);
    argv.splice(1 + r.int(argv.length), 0, flag);
    return argv;
  },
  "unknown short flag": (c, p, r) => [...render(c, p, r), r.pick(["-x", "-v", "-k", "-i", "-o"])],
  "missing value at the end": (c, p, r) => {
    const [flag] = r.pick(p);
    return [
      ...render(
        c,
        p.filter(([f]) => f !== flag),
        r,
      ),
      flag,
    ];
  },
  "value that looks like a flag": (c, p, r) => {
    const flag = r.pick(["--in", "--out", "--context", "--frame-size", "--max-frame-size"]);
    const value = r.pick(["-x", "--", "-1", "--key", "-tenant=a", "--out"]);
    return [
      ...render(
        c,
        p.filter(([f]) => f !== flag),
        r,
      ),
      flag,
      value,
    ];
  },
  "empty value": (c, p, r) => {
    const flag = r.pick([
      "--key",
      "--in",
      "--out",
      "--context",
      "--require-context",
      "--allow-key",
      "--frame-size",
      "--max-frame-size",
      "--data-dir",
      "--root-key-file",
      "--principal",
    ]);
    const argv = render(c, p, r);
    return [...argv, ...(r.chance(0.5) ? [`${flag}=`] : [flag, ""])];
  },
  "single-valued option repeated": (c, p, r) => {
    const single = p.filter(([f]) => f !== "--context" && f !== "--allow-key");
    const [flag, value] = r.pick(single);
    const again = r.chance(0.5) ? value : `${value}x`;
    return render(c, [...p, [flag, again]], r);
  },
  "context key repeated": (c, p, r) => {
    const again = r.pick(["tenant=a", "tenant=b", "tenant=", "tenant==a"]);
    return render(c, [...p, ["--context", again]], r);
  },
  "malformed context pair": (c, p, r) => {
    const pair = r.pick([
      "tenant",
      "=a",
      "=",
      "==",
      "=tenant=a",
      "\u00a0",
      "ten\nant",
      "\u001b[2J",
    ]);
    return render(c, [...p.filter(([f]) => f !== "--context"), ["--context", pair]], r);
  },
  "malformed number": (c, p, r) => {
    const flag = c === "encrypt" ? "--frame-size" : "--max-frame-size";
    const value = r.pick([
      "1e3",
      "0x10",
      " 5",
      "5 ",
      "+5",
      "1_000",
      "1.5",
      "\u0661\u0662",
      "9".repeat(16),
      "NaN",
      "Infinity",
      "64k",
    ]);
    return render(c, [...p.filter(([f]) => f !== flag), [flag, value]], r);
  },
  "boolean given a value": (c, p, r) => [
    ...render(c, p, r),
    r.pick(["--progress=yes", "--no-progress=1", "--help=no"]),
  ],
  "extra positional": (c, p, r) => {
    const argv = render(c, p, r);
    argv.splice(1 + r.int(argv.length), 0, r.pick(["extra", "data", "sealed.kms"]));
    // Inserted between a flag and its value, it becomes the value and pushes the value out.
    return argv;
  },
  "positional after --": (c, p, r) => [...render(c, p, r), "--", r.pick(["--key", "x", "-"])],
  "unknown command": (_c, p, r) =>
    render(
      r.pick([
        "encrypts",
        "Encrypt",
        "decrypt-file",
        "",
        " encrypt",
        "enc\nrypt",
        "\u001b]0;x\u0007",
      ]),
      p,
      r,
    ),
  "lone surrogate": (c, p, r) => {
    const argv = render(c, p, r);
    const i = r.int(argv.length);
    const lone = r.pick(["\ud800", "\udbff", "\udc00", "\udfff"]);
    const text = argv[i]!;
    const at = r.int(text.length + 1);
    argv[i] = text.slice(0, at) + lone + text.slice(at);
    return argv;
  },
};

describe("argument parsing", () => {
  it("every option accepts both --flag=value and --flag value, in any order", async () => {
    for (let index = 0; index < 12; index += 1) {
      const r = random(1, index);
      const sealedName = fresh("forms.kms");
      const enc = await kms(replay(1, index), render("encrypt", encryptPairs(sealedName), r));
      expect(enc.code, replay(1, index)).toBe(0);
      const outName = fresh("forms.out");
      const pairs = decryptPairs(outName).map(
        ([f, v]): Pair => (f === "--in" ? [f, sealedName] : [f, v]),
      );
      const dec = await kms(replay(1, index), render("decrypt", pairs, r));
      expect(dec.code, `${replay(1, index)}: ${dec.err}`).toBe(0);
      expect(readFileSync(join(ws.dir, outName)).equals(messageData)).toBe(true);
    }
  });

  const names = Object.keys(MUTATIONS);
  it.each(names)("%s → exit 2, a one-line usage error, nothing written", async (name) => {
    const mutate = MUTATIONS[name]!;
    const property = 2 + names.indexOf(name);
    for (let index = 0; index < 10; index += 1) {
      const r = random(property, index);
      const command = r.pick(["encrypt", "decrypt"]);
      const out = fresh("refused.out");
      const argv = mutate(
        command,
        command === "encrypt" ? encryptPairs(out) : decryptPairs(out),
        r,
      );
      const label = `${name}, ${replay(property, index)}: ${JSON.stringify(argv)}`;
      const result = await kms(label, argv);
      expect(result.code, `${label}\n${result.err}`).toBe(2);
      expect(result.stdout.length, label).toBe(0);
      expect(existsSync(join(ws.dir, out)), label).toBe(false);
    }
  });

  // Named regressions of the properties above: each exited 0 before the fix, doing something
  // other than what the command line asked for.
  it.each([
    ["--key twice encrypts under one key only", ["--key", "alias/prop-1"]],
    ["--out twice writes one of them", ["--out", "other.kms"]],
    ["an empty --data-dir falls back to ./.kms", ["--data-dir", ""]],
  ])("regression: %s → usage error", async (_name, extra) => {
    const out = fresh("regression.kms");
    const argv = ["encrypt", "--key", keys[0]!.alias, "--in", "data", "--out", out, ...extra];
    const result = await kms(_name, argv);
    expect(result.code).toBe(2);
    expect(existsSync(join(ws.dir, out))).toBe(false);
    expect(existsSync(join(ws.dir, "other.kms"))).toBe(false);
  });

  it("regression: an --out with a lone surrogate does not write a U+FFFD name", async () => {
    const result = await kms("lone surrogate out", [
      "encrypt",
      "--key",
      keys[0]!.id,
      "--in",
      "data",
      "--out",
      "lone\ud800.kms",
    ]);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/^kms: argument 7 is not well-formed Unicode/);
    expect(existsSync(join(ws.dir, "lone\ufffd.kms"))).toBe(false);
  });

  it("regression: a usage error is one line, whatever parseArgs or the argument says", async () => {
    const ambiguous = await kms("ambiguous", ["encrypt", "--key", keys[0]!.id, "--in", "-x"]);
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.err.split("\n\nUsage:")[0]).toBe(
      "kms: Option '--in' argument is ambiguous. Did you forget to specify the option argument for '--in'? To specify an option argument starting with a dash use '--in=-XYZ'.",
    );
    const newline = await kms("newline", [
      "decrypt",
      "--in",
      "a",
      "--out",
      "b",
      "--context",
      "x\ny",
    ]);
    expect(newline.err).toMatch(
      /^kms: decrypt: --context expected key=value, got "x\\ny"\n\nUsage: /,
    );
    const terminal = await kms("terminal escape", ["describe-key", "\u001b[2J"]);
    expect(terminal.code).toBe(1);
    expect(terminal.err).toMatch(/^NotFoundException: .*\\u001b\[2J/);
  });

  it("random command lines: exit 0, 1 or 2, never a stack trace, usage errors in one line", async () => {
    const junk = workspace();
    try {
      writeFileSync(join(junk.dir, "data"), secretData(500));
      const pool = [
        "encrypt",
        "decrypt",
        "list-keys",
        "describe-key",
        "create-alias",
        "disable-key",
        "schedule-key-deletion",
        "help",
        "init",
        "--key",
        "--in",
        "--out",
        "--context",
        "--require-context",
        "--allow-key",
        "--frame-size",
        "--max-frame-size",
        "--days",
        "--data-dir",
        "--root-key-file",
        "--principal",
        "--progress",
        "--no-progress",
        "--dev-root-key",
        "--",
        "-",
        "data",
        "junk.out",
        "alias/nope",
        "alias/prop-0",
        "k=v",
        "k==v",
        "=",
        "",
        "0",
        "1024",
        "-1",
        "7",
        "\ud800",
        "\ufffd",
        "x".repeat(10_000),
        "日本=語",
        "--key=",
        "--context=a=b",
        "--out=-",
        "a\nb",
        "\u001b[2J",
        "k=\r\n",
        "--a\nb",
      ];
      for (let index = 0; index < 120; index += 1) {
        const r = random(40, index);
        const argv = Array.from({ length: 1 + r.int(8) }, () => r.pick(pool));
        const label = `${replay(40, index)}: ${JSON.stringify(argv).slice(0, 300)}`;
        const result = await kms(label, argv, { cwd: junk.dir, env: junk.env });
        if (result.code !== 0) expect(result.out, label).toBe("");
      }
    } finally {
      junk.dispose();
    }
  });

  it("huge values: a long context, key or path fails with a named rule, not a crash", async () => {
    const cases: [string[], RegExp][] = [
      [["--context", `k=${"v".repeat(100_000)}`], /^ValidationException: .*8192 bytes/],
      [["--out", `${"o".repeat(5_000)}.kms`], /^Error: ENAMETOOLONG/],
      [Array.from({ length: 3_000 }, (_, i) => `--context=k${i}=v`).flat(), /8192 bytes/],
    ];
    for (const [extra, error] of cases) {
      const argv = ["encrypt", "--key", keys[0]!.id, "--in", "data", ...extra];
      if (!extra.includes("--out")) argv.push("--out", fresh("huge.kms"));
      const result = await kms(`huge ${extra[0]}`, argv);
      expect(result.code).toBe(1);
      expect(result.err).toMatch(error);
    }
    expect(partials(ws.dir)).toEqual([]);
  });

  // Regression: core's KmsKeyring named only non-emptiness when refusing a long key id.
  test("a --key over 2048 characters names the length rule", async () => {
    const result = await kms("long key", [
      "encrypt",
      "--key",
      "k".repeat(3_000),
      "--in",
      "data",
      "--out",
      fresh("long-key.kms"),
    ]);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/2048/);
  });
});

// ---------------------------------------------------------------------------------------------
// File ends
// ---------------------------------------------------------------------------------------------

describe("file handling", () => {
  const encrypt = (input: string, output: string) =>
    kms(`encrypt ${input} → ${output}`, [
      "encrypt",
      "--key",
      keys[1]!.id,
      "--in",
      input,
      "--out",
      output,
    ]);

  it("--in and --out naming one file are refused, by any spelling or link", async () => {
    mkdirSync(join(ws.dir, "same"), { recursive: true });
    const original = secretData(2_000);
    writeFileSync(join(ws.dir, "same", "f"), original);
    symlinkSync("f", join(ws.dir, "same", "f-link"));
    linkSync(join(ws.dir, "same", "f"), join(ws.dir, "same", "f-hard"));
    symlinkSync(join(ws.dir, "same"), join(ws.dir, "same-dir-link"));
    for (const [input, output] of [
      ["same/f", "same/f"],
      ["same/f", "./same/f"],
      ["same/f", "same/../same/f"],
      ["same/f", "same/f/"],
      ["same/f", join(ws.dir, "same", "f")],
      ["same/f-link", "same/f"], // regression: the input's target was replaced by its ciphertext
      ["same/f", "same/f-link"],
      ["same/f", "same/f-hard"],
      ["same-dir-link/f", "same/f"],
    ] as const) {
      for (const command of ["encrypt", "decrypt"]) {
        const argv =
          command === "encrypt"
            ? ["encrypt", "--key", keys[1]!.id, "--in", input, "--out", output]
            : ["decrypt", "--in", input, "--out", output];
        const result = await kms(`${command} ${input} → ${output}`, argv);
        expect(result.code, `${command} ${input} → ${output}`).toBe(2);
        // A trailing slash names a directory, never the file: refused as such, first.
        expect(result.err).toMatch(
          output.endsWith("/")
            ? /^kms: \w+: --out same\/f\/ ends in a slash, which names a directory: /
            : /^kms: \w+: --in and --out name the same file\n/,
        );
      }
    }
    expect(readFileSync(join(ws.dir, "same", "f")).equals(original)).toBe(true);
    expect(lstatSync(join(ws.dir, "same", "f-link")).isSymbolicLink()).toBe(true);
    expect(partials(ws.dir)).toEqual([]);
  });

  // Regression: `kms decrypt --in backup.kms --out app.db` replaced the live file without a word.
  it("an existing --out is refused without --force, before any KMS call, and left as it was", async () => {
    const output = fresh("exists.kms");
    writeFileSync(join(ws.dir, output), "old contents", { mode: 0o644 });
    const before = statSync(join(ws.dir, output));
    const events = async (): Promise<number> =>
      JSON.parse((await kms("audit verify", ["audit", "verify"])).out).events as number;
    const eventsBefore = await events();
    for (const argv of [
      ["encrypt", "--key", keys[1]!.id, "--in", "data", "--out", output],
      ["decrypt", "--in", "sealed.kms", "--out", output, "--allow-key", keys[1]!.alias],
    ]) {
      const result = await kms(`${argv[0]} → existing ${output}`, argv);
      expect(result.code, argv[0]).toBe(2);
      expect(result.err).toMatch(
        new RegExp(`^kms: ${argv[0]}: --out \\S+/${output} exists: pass --force to replace it\n`),
      );
      expect(result.err).toContain("[--force]");
    }
    // Neither the KMS (no GenerateDataKey, no DescribeKey of --allow-key) nor the file was touched.
    expect(await events()).toBe(eventsBefore);
    const after = statSync(join(ws.dir, output));
    expect([after.ino, after.mode & 0o777]).toEqual([before.ino, 0o644]);
    expect(readFileSync(join(ws.dir, output), "utf8")).toBe("old contents");
    expect(partials(ws.dir)).toEqual([]);
  });

  it("with --force, an existing --out is replaced atomically by a new 0600 file (documented)", async () => {
    const output = fresh("exists.kms");
    writeFileSync(join(ws.dir, output), "old contents", { mode: 0o644 });
    const before = statSync(join(ws.dir, output));
    const result = await kms(`encrypt → existing ${output}`, [
      "encrypt",
      "--key",
      keys[1]!.id,
      "--in",
      "data",
      "--out",
      output,
      "--force",
    ]);
    expect(result.code).toBe(0);
    const after = statSync(join(ws.dir, output));
    expect(after.ino).not.toBe(before.ino);
    expect(after.mode & 0o777).toBe(0o600);
    expect(readFileSync(join(ws.dir, output)).includes(Buffer.from("old contents"))).toBe(false);
    const back = await kms("decrypt replaced", ["decrypt", "--in", output, "--out", "-"]);
    expect(back.stdout.equals(messageData)).toBe(true);
  });

  // Regression: the check at the start was all; a file created at --out while the transfer ran
  // was replaced by the final rename.
  it("a file created at --out during the transfer is refused as at the start, and left as it was", async () => {
    /** `kms argv` reading `input` on stdin, someone else creating `output` as it is first read. */
    async function racing(label: string, argv: string[], input: Buffer, output: string) {
      let created = false;
      const stdin = new Readable({
        read() {
          if (!created) {
            created = true;
            writeFileSync(join(ws.dir, output), "theirs", { flag: "wx" });
            this.push(input);
          }
          this.push(null);
        },
      });
      const stdout = new Collector();
      const stderr = new Collector();
      const code = await runCli(argv, {
        stdout: stdout as CliOutput,
        stderr: stderr as CliOutput,
        stdin,
        env: ws.env,
        cwd: ws.dir,
      });
      expect(created, label).toBe(true);
      const result = { code, stdout: stdout.bytes(), out: stdout.text(), err: stderr.text() };
      expectShape(label, argv, result);
      recorded.push({ label, result, stdoutIsData: false });
      return result;
    }
    const events = async (): Promise<number> =>
      JSON.parse((await kms("audit verify", ["audit", "verify"])).out).events as number;
    for (const [argv, input] of [
      [["encrypt", "--key", keys[1]!.id, "--in", "-"], messageData],
      [["decrypt", "--in", "-", "--context", "tenant=a"], message],
    ] as const) {
      const output = fresh("raced");
      const eventsBefore = await events();
      const label = `${argv[0]} → ${output} created meanwhile`;
      const result = await racing(label, [...argv, "--out", output], input, output);
      // Past the check at the start: the KMS was called.
      expect(await events(), label).toBeGreaterThan(eventsBefore);
      expect(result.code, label).toBe(2);
      expect(result.err).toMatch(
        new RegExp(`^kms: ${argv[0]}: --out \\S+/${output} exists: pass --force to replace it\n`),
      );
      expect(readFileSync(join(ws.dir, output), "utf8")).toBe("theirs");
      expect(partials(ws.dir)).toEqual([]);

      const forced = fresh("raced-forced");
      const replaced = await racing(
        `${label}, --force`,
        [...argv, "--out", forced, "--force"],
        input,
        forced,
      );
      expect(replaced.code, label).toBe(0);
      expect(readFileSync(join(ws.dir, forced)).includes(Buffer.from("theirs"))).toBe(false);
    }
    expect(partials(ws.dir)).toEqual([]);
  });

  it("a symlink at --out, dangling or not, needs --force; then it is replaced by the file and its target left alone (documented)", async () => {
    const target = secretData(300);
    writeFileSync(join(ws.dir, "link-target"), target);
    const link = fresh("out-link");
    symlinkSync("link-target", join(ws.dir, link));
    const dangling = fresh("dangling-link");
    symlinkSync("missing-target", join(ws.dir, dangling));
    for (const output of [link, dangling]) {
      const refused = await encrypt("data", output);
      expect(refused.code, output).toBe(2);
      expect(refused.err, output).toContain(`${output} exists: pass --force`);
      expect(lstatSync(join(ws.dir, output)).isSymbolicLink()).toBe(true);
      const forced = await kms(`encrypt --force → ${output}`, [
        "encrypt",
        "--key",
        keys[1]!.id,
        "--in",
        "data",
        "--out",
        output,
        "--force",
      ]);
      expect(forced.code).toBe(0);
      expect(lstatSync(join(ws.dir, output)).isFile()).toBe(true);
    }
    expect(readFileSync(join(ws.dir, "link-target")).equals(target)).toBe(true);
    expect(existsSync(join(ws.dir, "missing-target"))).toBe(false);
  });

  it("--out in a missing directory, or a directory, fails with exit 1 and leaves nothing", async () => {
    mkdirSync(join(ws.dir, "a-dir"), { recursive: true });
    for (const [output, error] of [
      ["no-such-dir/x.kms", /^Error: ENOENT: /],
      ["a-dir", /^Error: EISDIR: /],
      [".", /^Error: EISDIR: /],
      ["data/x.kms", /^Error: ENOTDIR: /],
    ] as const) {
      const result = await encrypt("data", output);
      expect(result.code, output).toBe(1);
      expect(result.err, output).toMatch(error);
      const dec = await kms(`decrypt → ${output}`, [
        "decrypt",
        "--in",
        "sealed.kms",
        "--out",
        output,
      ]);
      expect(dec.code, output).toBe(1);
      expect(dec.err, output).toMatch(error);
    }
    expect(existsSync(join(ws.dir, "no-such-dir"))).toBe(false);
    expect(readdirSync(join(ws.dir, "a-dir"))).toEqual([]);
    expect(partials(ws.dir)).toEqual([]);
  });

  it("--in a directory or a missing file fails with exit 1 and leaves no output", async () => {
    for (const [input, error] of [
      ["a-dir", /^Error: EISDIR: /],
      ["no-such-file", /^Error: ENOENT: .*no-such-file/],
    ] as const) {
      mkdirSync(join(ws.dir, "a-dir"), { recursive: true });
      const output = fresh("from-dir.out");
      const enc = await encrypt(input, output);
      expect(enc.code).toBe(1);
      expect(enc.err).toMatch(error);
      const dec = await kms(`decrypt ${input}`, ["decrypt", "--in", input, "--out", output]);
      expect(dec.code).toBe(1);
      expect(dec.err).toMatch(error);
      expect(existsSync(join(ws.dir, output))).toBe(false);
    }
    expect(partials(ws.dir)).toEqual([]);
  });

  it("stdin to stdout both ways, and encrypt refuses a terminal stdout before any KMS call", async () => {
    const data = secretData(5_000);
    const enc = await kms(
      "pipe encrypt",
      ["encrypt", "--key", keys[2]!.alias, "--in", "-", "--out", "-"],
      {
        stdin: data,
      },
    );
    expect(enc.code).toBe(0);
    const dec = await kms("pipe decrypt", ["decrypt", "--in", "-", "--out", "-"], {
      stdin: enc.stdout,
    });
    expect(dec.stdout.equals(data)).toBe(true);

    const stdout = new Collector(true);
    const stderr = new Collector();
    const code = await runCli(["encrypt", "--key", keys[2]!.id, "--in", "data", "--out", "-"], {
      stdout: stdout as CliOutput,
      stderr: stderr as CliOutput,
      stdin: Readable.from([]),
      env: ws.env,
      cwd: ws.dir,
    });
    expect(code).toBe(2);
    expect(stdout.bytes().length).toBe(0);
    expect(stderr.text()).toMatch(
      /^kms: encrypt: refusing to write binary ciphertext to a terminal\n/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Decryption that fails at any point
// ---------------------------------------------------------------------------------------------

interface Broken {
  readonly kind: string;
  readonly bytes: Buffer;
  readonly flags: string[];
  /** Plaintext bytes that may reach a stdout `--out` before the failure (verified frames). */
  readonly mayRelease: number;
  readonly error: RegExp;
}

const INVALID = /^InvalidCiphertextException: /;
const DENIED = /^AccessDeniedException: /;
const frameStart = (k: number): number => headerLength + k * REGULAR_FRAME_BYTES;

/** One way to make the sealed message fail, with what streaming may release before it does. */
function breakMessage(r: SeededRandom): Broken {
  const bytes = Buffer.from(message);
  const flags = ["--context", "tenant=a"];
  switch (r.int(10)) {
    case 0: {
      const at = r.int(headerLength);
      bytes[at] = bytes[at]! ^ (1 + r.int(255));
      // A changed frame length or key count can be a policy refusal instead (FORMAT §5.7).
      return {
        kind: `header byte ${at}`,
        bytes,
        flags,
        mayRelease: 0,
        error: /^(InvalidCiphertext|AccessDenied)Exception: /,
      };
    }
    case 1: {
      const k = r.int(FULL_FRAMES + 1);
      const size = k < FULL_FRAMES ? REGULAR_FRAME_BYTES : FINAL_FRAME_BYTES;
      const at = frameStart(k) + r.int(size);
      bytes[at] = bytes[at]! ^ (1 + r.int(255));
      return { kind: `frame ${k} byte ${at}`, bytes, flags, mayRelease: k * FRAME, error: INVALID };
    }
    case 2: {
      const cut = r.int(message.length);
      const whole =
        cut <= headerLength ? 0 : Math.floor((cut - headerLength) / REGULAR_FRAME_BYTES);
      return {
        kind: `truncated at ${cut}`,
        bytes: bytes.subarray(0, cut),
        flags,
        mayRelease: Math.min(whole, FULL_FRAMES) * FRAME,
        error: INVALID,
      };
    }
    case 3: {
      const k = r.int(FULL_FRAMES);
      const dropped = Buffer.concat([
        bytes.subarray(0, frameStart(k)),
        bytes.subarray(frameStart(k + 1)),
      ]);
      return {
        kind: `dropped frame ${k}`,
        bytes: dropped,
        flags,
        mayRelease: k * FRAME,
        error: INVALID,
      };
    }
    case 4: {
      const i = r.int(FULL_FRAMES - 1);
      const j = i + 1 + r.int(FULL_FRAMES - 1 - i);
      const frame = (k: number) => bytes.subarray(frameStart(k), frameStart(k + 1));
      const swapped = Buffer.concat([
        bytes.subarray(0, frameStart(i)),
        frame(j),
        bytes.subarray(frameStart(i + 1), frameStart(j)),
        frame(i),
        bytes.subarray(frameStart(j + 1)),
      ]);
      return {
        kind: `frames ${i} and ${j} swapped`,
        bytes: swapped,
        flags,
        mayRelease: i * FRAME,
        error: INVALID,
      };
    }
    case 5: {
      const extra = Buffer.alloc(1 + r.int(64), r.int(256));
      // Trailing bytes are found after the final frame verified: all of it may be out already.
      return {
        kind: `${extra.length} trailing bytes`,
        bytes: Buffer.concat([bytes, extra]),
        flags,
        mayRelease: messageData.length,
        error: INVALID,
      };
    }
    case 6:
      return {
        kind: "wrong --context",
        bytes,
        flags: ["--context", r.pick(["tenant=b", "tenant=A", "tenant=a ", "other=a"])],
        mayRelease: 0,
        error: INVALID,
      };
    case 7:
      return {
        kind: "unmet --require-context",
        bytes,
        flags: ["--require-context", r.pick(["tenant=b", "other=a", "tenant=a=b"])],
        mayRelease: 0,
        error: DENIED,
      };
    case 8:
      return {
        kind: "--allow-key of other keys",
        bytes,
        flags: [
          "--allow-key",
          keys[1]!.alias,
          ...(r.chance(0.5) ? ["--allow-key", keys[2]!.arn] : []),
        ],
        mayRelease: 0,
        error: DENIED,
      };
    default:
      return {
        kind: "--max-frame-size too small",
        bytes,
        flags: ["--max-frame-size", String(1 + r.int(FRAME - 1))],
        mayRelease: 0,
        error: DENIED,
      };
  }
}

describe("a decryption that fails", () => {
  it("leaves no file at --out and on stdout at most the frames verified before it", async () => {
    const kinds = new Set<string>();
    for (let index = 0; index < 90; index += 1) {
      const r = random(50, index);
      const broken = breakMessage(r);
      kinds.add(broken.kind.replace(/[0-9]+/g, "#"));
      const input = r.chance(0.3) ? "-" : fresh("broken.kms");
      if (input !== "-") writeFileSync(join(ws.dir, input), broken.bytes);
      const toStdout = r.chance(0.5);
      const output = toStdout ? "-" : fresh("broken.out");
      const argv = ["decrypt", "--in", input, "--out", output, ...broken.flags];
      const label = `${broken.kind}, ${replay(50, index)}: ${argv.join(" ")}`;
      const result = await kms(label, argv, input === "-" ? { stdin: broken.bytes } : {});
      expect(result.code, `${label}\n${result.err}`).toBe(1);
      expect(result.err, label).toMatch(broken.error);
      if (toStdout) {
        const released = result.stdout;
        expect(released.length, label).toBeLessThanOrEqual(broken.mayRelease);
        expect(released.equals(messageData.subarray(0, released.length)), label).toBe(true);
        // Whole frames only: nothing of a frame leaves before its tag verified.
        if (released.length < messageData.length) expect(released.length % FRAME, label).toBe(0);
      } else {
        expect(result.stdout.length, label).toBe(0);
        expect(existsSync(join(ws.dir, output)), label).toBe(false);
      }
    }
    expect(partials(ws.dir)).toEqual([]);
    // The generator reached every kind of failure at least once.
    expect(new Set([...kinds].map((k) => k.split(" ")[0]))).toEqual(
      new Set([
        "header",
        "frame",
        "dropped",
        "frames",
        "truncated",
        "#",
        "wrong",
        "unmet",
        "--allow-key",
        "--max-frame-size",
      ]),
    );
  });

  it("a frame tampered late in a long message: the verified frames before it stream out", async () => {
    // Longer than one 64 KiB read, so earlier frames are released before the bad one is read.
    const data = secretData(200 * FRAME);
    writeFileSync(join(ws.dir, "long"), data);
    const enc = await kms("long", [
      "encrypt",
      "--key",
      keys[0]!.id,
      "--in",
      "long",
      "--out",
      "long.kms",
      "--frame-size",
      String(FRAME),
    ]);
    expect(enc.code).toBe(0);
    const bytes = readFileSync(join(ws.dir, "long.kms"));
    const header = bytes.length - 199 * REGULAR_FRAME_BYTES - (28 + FRAME);
    const k = 150;
    const at = header + k * REGULAR_FRAME_BYTES + 100;
    bytes[at] = bytes[at]! ^ 0x40;
    writeFileSync(join(ws.dir, "long-tampered.kms"), bytes);
    const result = await kms("late frame", ["decrypt", "--in", "long-tampered.kms", "--out", "-"]);
    expect(result.code).toBe(1);
    expect(result.err).toMatch(INVALID);
    expect(result.stdout.length).toBeGreaterThan(0);
    expect(result.stdout.length).toBeLessThanOrEqual(k * FRAME);
    expect(result.stdout.length % FRAME).toBe(0);
    expect(result.stdout.equals(data.subarray(0, result.stdout.length))).toBe(true);
    const toFile = await kms("late frame to file", [
      "decrypt",
      "--in",
      "long-tampered.kms",
      "--out",
      "long.out",
    ]);
    expect(toFile.code).toBe(1);
    expect(existsSync(join(ws.dir, "long.out"))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

const CONTEXT_KEYS = [
  "tenant",
  "purpose",
  "a",
  "Ключ",
  "日本",
  "emoji😀",
  "with space",
  "-dash",
  "k:v",
  "x.y",
];
const CONTEXT_VALUES = ["a", "", "x=y", "=", "==", "-v", "über", "😀😀", "a b", "1", "tenant=a"];

describe("round trips through real files", () => {
  it("sizes around frame boundaries, several keys and contexts, every decrypt option", async () => {
    const frameSizes = [1, 2, 7, 255, 1024, 4096, 65_536];
    for (let index = 0; index < 40; index += 1) {
      const r = random(60, index);
      const frame = r.pick(frameSizes);
      const k = 1 + r.int(4);
      const size = Math.min(
        r.pick([
          0,
          1,
          frame - 1,
          frame,
          frame + 1,
          k * frame - 1,
          k * frame,
          k * frame + 1,
          r.int(5_000),
        ]),
        frame === 1 ? 64 : 300_000,
      );
      const data = secretData(Math.max(0, size));
      const key = r.pick(keys);
      const context: Record<string, string> = {};
      for (const name of r.some(CONTEXT_KEYS, 3)) context[name] = r.pick(CONTEXT_VALUES);
      const contextPairs = Object.entries(context).map(
        ([n, v]): Pair => ["--context", `${n}=${v}`],
      );
      const label = `${replay(60, index)}: ${data.length} bytes, frame ${frame}, ${JSON.stringify(context)}`;

      const plainName = fresh("plain");
      writeFileSync(join(ws.dir, plainName), data);
      const stdinIn = r.chance(0.2);
      const sealedName = fresh("round.kms");
      const encPairs: Pair[] = [
        ["--key", refOf(key, r)],
        ["--in", stdinIn ? "-" : plainName],
        ["--out", sealedName],
        ...contextPairs,
        ...(frame === 65_536 && r.chance(0.5) ? [] : [["--frame-size", String(frame)] as Pair]),
      ];
      const enc = await kms(label, render("encrypt", encPairs, r), stdinIn ? { stdin: data } : {});
      expect(enc.code, `${label}\n${enc.err}`).toBe(0);
      expect(JSON.parse(enc.out), label).toMatchObject({ plaintextBytes: data.length });

      const decPairs: Pair[] = [["--in", sealedName]];
      const mode = r.int(3);
      if (mode === 0) decPairs.push(...contextPairs);
      if (mode === 1) {
        for (const [n, v] of Object.entries(context)) {
          if (r.chance(0.5)) decPairs.push(["--require-context", `${n}=${v}`]);
        }
      }
      if (r.chance(0.5)) {
        decPairs.push(["--allow-key", refOf(key, r)]);
        if (r.chance(0.5)) decPairs.push(["--allow-key", refOf(r.pick(keys), r)]);
      }
      if (r.chance(0.3)) decPairs.push(["--max-frame-size", String(frame)]);
      const toStdout = r.chance(0.2);
      const outName = fresh("round.out");
      decPairs.push(["--out", toStdout ? "-" : outName]);
      const dec = await kms(label, render("decrypt", decPairs, r));
      expect(dec.code, `${label}\n${dec.err}`).toBe(0);
      if (toStdout) {
        expect(dec.stdout.equals(data), label).toBe(true);
      } else {
        expect(readFileSync(join(ws.dir, outName)).equals(data), label).toBe(true);
        expect(JSON.parse(dec.out), label).toMatchObject({
          plaintextBytes: data.length,
          frameLength: frame,
          encryptionContext: context,
          keys: [key.arn],
        });
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The real bin
// ---------------------------------------------------------------------------------------------

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(packageDir, "src", "bin.ts");

function spawnKms(script: string, args: string[], stdin?: Buffer) {
  // Through sh, so a test can put bytes that are not UTF-8 on the command line.
  const result = spawnSync("sh", ["-c", script, process.execPath, bin, ...args], {
    cwd: ws.dir,
    env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
    ...(stdin === undefined ? {} : { input: stdin }),
    timeout: 30_000,
  });
  const recordedResult: RunResult = {
    code: result.status ?? -1,
    stdout: result.stdout,
    out: result.stdout.toString("utf8"),
    err: result.stderr.toString("utf8"),
  };
  recorded.push({
    label: `bin ${script}`,
    result: recordedResult,
    stdoutIsData: script.includes("--out -"),
  });
  return recordedResult;
}

describe("the bin", () => {
  it("refuses an argument that is not UTF-8 (regression: it became U+FFFD and exited 0)", () => {
    const out = fresh("bin-latin1.kms");
    const result = spawnKms(
      `exec "$0" "$1" encrypt --key "$2" --in data --out "$3" --context "k=$(printf 'caf\\351')"`,
      [keys[0]!.id, out],
    );
    expectShape("bin latin-1", [], result);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/^kms: argument 9 is not valid UTF-8/);
    expect(existsSync(join(ws.dir, out))).toBe(false);

    // Well-formed UTF-8 beyond ASCII (and an empty context value) passes the same check.
    const ok = spawnKms(
      `exec "$0" "$1" encrypt --key "$2" --in data --out "$3" --context "k=café" --context "e="`,
      [keys[0]!.id, out],
    );
    expect(ok.err).toBe("");
    expect(ok.code).toBe(0);
  }, 60_000);

  it("a tampered frame piped through the bin: one error line, a verified prefix at most", () => {
    const bytes = Buffer.from(message);
    bytes[frameStart(3) + 7] = bytes[frameStart(3) + 7]! ^ 1;
    const piped = spawnKms(`exec "$0" "$1" decrypt --in - --out -`, [], bytes);
    expect(piped.code).toBe(1);
    expect(piped.err).toBe(
      "InvalidCiphertextException: the message is not valid or cannot be decrypted with the given keyring and context\n",
    );
    // One pipe read holds the whole message, so the failure may come before any release.
    expect(piped.stdout.length).toBeLessThanOrEqual(3 * FRAME);
    expect(piped.stdout.length % FRAME).toBe(0);
    expect(piped.stdout.equals(messageData.subarray(0, piped.stdout.length))).toBe(true);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

describe("secrets", () => {
  it("no run printed the root key, and none printed plaintext except as requested data", () => {
    // The scan would prove nothing if the runs above had not happened.
    expect(recorded.length).toBeGreaterThan(400);
    expect(recorded.filter((r) => r.result.code === 1).length).toBeGreaterThan(80);
    expect(recorded.filter((r) => r.result.code === 2).length).toBeGreaterThan(100);
    const rootKey = ws.rootKey;
    const keyForms: [string, Buffer][] = [
      ["root key bytes", rootKey],
      ["root key hex", Buffer.from(rootKey.toString("hex"))],
      ["root key HEX", Buffer.from(rootKey.toString("hex").toUpperCase())],
      ["root key base64", Buffer.from(rootKey.toString("base64"))],
    ];
    const plaintextForms: [string, Buffer][] = [
      ["plaintext marker", Buffer.from(MARKER)],
      ...secretSnippets.map((s, i): [string, Buffer] => [`plaintext snippet ${i}`, s]),
    ];
    for (const { label, result, stdoutIsData } of recorded) {
      const err = Buffer.from(result.err);
      for (const [name, secret] of [...keyForms, ...plaintextForms]) {
        expect(err.includes(secret), `${name} on stderr of ${label}`).toBe(false);
      }
      for (const [name, secret] of stdoutIsData ? keyForms : [...keyForms, ...plaintextForms]) {
        expect(result.stdout.includes(secret), `${name} on stdout of ${label}`).toBe(false);
      }
    }
  });
});
