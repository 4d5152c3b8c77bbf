/**
 * Property-based tamper detection for the hash-chained audit trail, on a JSONL file written
 * through the `createKms` facade.
 *
 * What the design promises (audit-chain.ts, docs/POLICY.md "Hash chain", README "Policies,
 * grants and audit"): an edited, deleted, inserted or reordered event is reported at its index
 * by `verifyAuditLog`; removed *trailing* events only against a head recorded elsewhere
 * (`expectedHead` / `kms.audit.head()`), because the events left are a valid chain on their own.
 * JsonlAuditSink is a single-writer sink, so the recorded head lives in the writing Kms's memory:
 * the Kms that wrote the file can detect truncation, a freshly started one cannot.
 *
 * Each mutation is checked through both verification paths: the facade (`kms.audit.verify()` on
 * the Kms that wrote the trail, which holds the head) and the exported `verifyAuditLog` over
 * the file's lines from the genesis hash, with the recorded head. The exported path also has
 * to name the exact index; the oracle for that is "the first position where the stored events
 * stop being the original chain".
 */
import { createDecipheriv } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import {
  type AuditHead,
  type AuditLogVerification,
  createKms,
  isKmsError,
  JsonlAuditSink,
  type Kms,
  MemoryKeyStore,
  verifyAuditLog,
} from "@kms/core";
import fc from "fast-check";
import { describe, expect, test } from "vitest";

const ALICE = "arn:aws:iam::111122223333:user/alice";

type Context = Readonly<Record<string, string>>;

type Op =
  | { readonly kind: "createKey" }
  | { readonly kind: "encrypt"; readonly key: number; readonly plaintext: Uint8Array }
  | { readonly kind: "encryptWithContext"; readonly key: number; readonly context: Context }
  | { readonly kind: "decrypt" }
  | { readonly kind: "reEncrypt"; readonly key: number }
  | { readonly kind: "generateDataKey"; readonly key: number; readonly withoutPlaintext: boolean }
  | { readonly kind: "describeKey"; readonly key: number }
  | { readonly kind: "denied"; readonly key: number }
  | { readonly kind: "badDecrypt"; readonly blob: Uint8Array }
  | { readonly kind: "generateRandom"; readonly numberOfBytes: number }
  | { readonly kind: "rotate"; readonly key: number };

const keyIndex = fc.nat({ max: 7 });

/**
 * Allowed, denied and failed calls of several shapes, so that lines differ in length, fields
 * (errorCode, additionalEventData, encryption context with JSON-escaped characters) and order.
 */
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.constant<Op>({ kind: "createKey" }),
  fc.record({
    kind: fc.constant("encrypt" as const),
    key: keyIndex,
    plaintext: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  fc.record({
    kind: fc.constant("encryptWithContext" as const),
    key: keyIndex,
    context: fc.dictionary(
      fc.string({ minLength: 1, maxLength: 8 }),
      fc.string({ minLength: 0, maxLength: 12 }),
      { minKeys: 1, maxKeys: 3 },
    ),
  }),
  fc.constant<Op>({ kind: "decrypt" }),
  fc.record({ kind: fc.constant("reEncrypt" as const), key: keyIndex }),
  fc.record({
    kind: fc.constant("generateDataKey" as const),
    key: keyIndex,
    withoutPlaintext: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("describeKey" as const), key: keyIndex }),
  fc.record({ kind: fc.constant("denied" as const), key: keyIndex }),
  fc.record({
    kind: fc.constant("badDecrypt" as const),
    blob: fc.uint8Array({ minLength: 1, maxLength: 80 }),
  }),
  fc.record({
    kind: fc.constant("generateRandom" as const),
    numberOfBytes: fc.integer({ min: 1, max: 64 }),
  }),
  fc.record({ kind: fc.constant("rotate" as const), key: keyIndex }),
);

const opsArb = fc.array(opArb, { minLength: 1, maxLength: 10 });

interface Trail {
  readonly dir: string;
  readonly path: string;
  readonly kms: Kms;
  /** The file exactly as the sink wrote it. */
  readonly bytes: Buffer;
  /** One JSON line per event, without the newline. */
  readonly lines: readonly string[];
  /** Recorded by the writing Kms: what a deployment keeps elsewhere to detect truncation. */
  readonly head: AuditHead;
  readonly root: Uint8Array;
  readonly store: MemoryKeyStore;
  /** Everything the trail must never contain: returned plaintexts, data keys, blobs. */
  readonly returned: Uint8Array[];
}

/**
 * Runs `ops` through a Kms auditing to a fresh JSONL file. Failures are expected for some ops
 * (denied, garbage blobs) and are audited like successes; anything but a KmsError is a bug.
 */
async function buildTrail(ops: readonly Op[], extra?: (kms: Kms, t: Trail) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "kms-audit-props-"));
  const path = join(dir, "audit.jsonl");
  const root = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const store = new MemoryKeyStore();
  const kms = await createKms({
    store,
    rootKey: Uint8Array.from(root),
    audit: new JsonlAuditSink(path),
  });
  const returned: Uint8Array[] = [];
  const keys: string[] = [(await kms.createKey()).keyMetadata.keyId];
  const blobs: Uint8Array[] = [];
  const keyOf = (i: number): string => keys[i % keys.length]!;
  const expectKmsFailure = async (p: Promise<unknown>): Promise<void> => {
    const error = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    if (error !== undefined && !isKmsError(error)) throw error;
  };
  for (const op of ops) {
    switch (op.kind) {
      case "createKey":
        keys.push((await kms.createKey()).keyMetadata.keyId);
        break;
      case "encrypt": {
        const { ciphertextBlob } = await kms.encrypt({
          keyId: keyOf(op.key),
          plaintext: op.plaintext,
        });
        blobs.push(ciphertextBlob);
        returned.push(ciphertextBlob);
        break;
      }
      case "encryptWithContext": {
        const plaintext = globalThis.crypto.getRandomValues(new Uint8Array(24));
        returned.push(plaintext);
        // Contexts from fast-check may be invalid (e.g. too long, lone surrogates): audited too.
        await expectKmsFailure(
          kms.encrypt({ keyId: keyOf(op.key), plaintext, encryptionContext: { ...op.context } }),
        );
        break;
      }
      case "decrypt":
      case "reEncrypt": {
        const blob = blobs[blobs.length - 1];
        if (blob === undefined) {
          await kms.describeKey({ keyId: keyOf(0) });
        } else if (op.kind === "decrypt") {
          returned.push((await kms.decrypt({ ciphertextBlob: blob })).plaintext);
        } else {
          const moved = await kms.reEncrypt({ ciphertextBlob: blob, destinationKeyId: keyOf(0) });
          returned.push(moved.ciphertextBlob);
        }
        break;
      }
      case "generateDataKey":
        if (op.withoutPlaintext) {
          const dk = await kms.generateDataKeyWithoutPlaintext({
            keyId: keyOf(op.key),
            keySpec: "AES_256",
          });
          returned.push(dk.ciphertextBlob);
        } else {
          const dk = await kms.generateDataKey({ keyId: keyOf(op.key), keySpec: "AES_256" });
          returned.push(dk.plaintext, dk.ciphertextBlob);
        }
        break;
      case "describeKey":
        await kms.describeKey({ keyId: keyOf(op.key) });
        break;
      case "denied":
        await expectKmsFailure(
          kms.encrypt(
            { keyId: keyOf(op.key), plaintext: new Uint8Array(20) },
            { principal: ALICE },
          ),
        );
        break;
      case "badDecrypt":
        await expectKmsFailure(kms.decrypt({ ciphertextBlob: op.blob }));
        break;
      case "generateRandom":
        returned.push((await kms.generateRandom({ numberOfBytes: op.numberOfBytes })).plaintext!);
        break;
      case "rotate":
        await expectKmsFailure(kms.rotateKeyOnDemand({ keyId: keyOf(op.key) }));
        break;
    }
  }
  const partial: Trail = {
    dir,
    path,
    kms,
    bytes: Buffer.alloc(0),
    lines: [],
    head: { sequence: -1, hash: "" },
    root,
    store,
    returned,
  };
  if (extra !== undefined) await extra(kms, partial);
  const bytes = await readFile(path);
  const text = bytes.toString("utf8");
  const head = await kms.audit.head();
  if (head === undefined) throw new Error("the trail is empty");
  return { ...partial, bytes, lines: text.slice(0, -1).split("\n"), head };
}

async function dispose(trail: Trail): Promise<void> {
  await trail.kms.close();
  await rm(trail.dir, { recursive: true, force: true });
}

/**
 * The file's events the way JsonlAuditSink reads them (blank lines skipped), except that a line
 * that is not JSON stays in place as its raw text, so verifyAuditLog reports it as malformed at
 * its index instead of the whole read failing.
 */
function parseLines(text: string): unknown[] {
  const out: unknown[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      out.push(line);
    }
  }
  return out;
}

const joinLines = (lines: readonly string[]): string =>
  lines.length === 0 ? "" : `${lines.join("\n")}\n`;

/**
 * Index where a line-level mutation must be reported: the first position whose line is not the
 * original line there. Undefined when the mutated lines are a prefix of the original ones.
 */
function firstDivergence(
  original: readonly string[],
  mutated: readonly string[],
): number | undefined {
  for (let i = 0; i < mutated.length; i++) if (mutated[i] !== original[i]) return i;
  return undefined;
}

/** kms.audit.verify(), with a read failure (a line that is not JSON) as a KmsError result. */
async function facadeVerify(kms: Kms): Promise<AuditLogVerification | { readonly thrown: true }> {
  try {
    return await kms.audit.verify();
  } catch (error) {
    // A loud failure is a report too, but only as a KMS error: never a raw SyntaxError.
    expect(isKmsError(error), String(error)).toBe(true);
    return { thrown: true };
  }
}

function reported(result: AuditLogVerification | { readonly thrown: true }): boolean {
  return "thrown" in result || !result.ok;
}

/**
 * Writes `text` over the trail; verifyAuditLog (from genesis, with the recorded head) must report
 * it at `index`, and kms.audit.verify() on the writing Kms must report it at all.
 */
async function expectReportedAt(trail: Trail, text: string | Buffer, index: number) {
  await writeFile(trail.path, text);
  const exported = verifyAuditLog(parseLines(text.toString()), { expectedHead: trail.head });
  expect(exported).toMatchObject({ ok: false, index });
  const facade = await facadeVerify(trail.kms);
  expect(reported(facade), JSON.stringify(facade)).toBe(true);
}

describe("audit trail (JSONL) tamper detection: properties", () => {
  test("an untouched trail verifies through the facade, a restarted Kms and verifyAuditLog", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, async (ops) => {
        const trail = await buildTrail(ops);
        try {
          const count = trail.lines.length;
          expect(trail.head.sequence).toBe(count - 1);
          expect(await trail.kms.audit.verify()).toMatchObject({ ok: true, count });
          expect(
            verifyAuditLog(parseLines(trail.bytes.toString()), { expectedHead: trail.head }),
          ).toMatchObject({ ok: true, count, head: trail.head });
          const restarted = await createKms({
            store: trail.store,
            rootKey: Uint8Array.from(trail.root),
            audit: new JsonlAuditSink(trail.path),
          });
          expect(await restarted.audit.verify()).toMatchObject({ ok: true, count });
          await restarted.close();
        } finally {
          await dispose(trail);
        }
      }),
      { numRuns: 30 },
    );
  });

  test("changing any one byte is reported at its line, or leaves the trail's content unchanged", async () => {
    await fc.assert(
      fc.asyncProperty(
        opsArb,
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 255 }),
        async (ops, where, xor) => {
          const trail = await buildTrail(ops);
          try {
            const at = Math.floor(where * trail.bytes.length);
            const mutated = Buffer.from(trail.bytes);
            mutated[at]! ^= xor;
            const before = parseLines(trail.bytes.toString("utf8"));
            const after = parseLines(mutated.toString("utf8"));
            let line = 0;
            for (let i = 0; i < at; i++) if (trail.bytes[i] === 0x0a) line++;
            if (isDeepStrictEqual(after, before)) {
              // JSON.parse ignores whitespace around a value, so the last line terminator may
              // become a space, tab or CR without changing a single event. Nothing else may.
              expect(at, `byte ${at} changed but every event parsed the same`).toBe(
                trail.bytes.length - 1,
              );
              await writeFile(trail.path, mutated);
              expect(await trail.kms.audit.verify()).toMatchObject({ ok: true });
              return;
            }
            await expectReportedAt(trail, mutated, line);
          } finally {
            await dispose(trail);
          }
        },
      ),
      { numRuns: 120 },
    );
  });

  test("deleting any one line is reported (the last one against the recorded head)", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, fc.nat(), async (ops, pick) => {
        const trail = await buildTrail(ops);
        try {
          const k = pick % trail.lines.length;
          const mutated = trail.lines.filter((_, i) => i !== k);
          // Deleting line k leaves a valid chain up to k; the last line's deletion is truncation.
          await expectReportedAt(trail, joinLines(mutated), k);
          if (k === trail.lines.length - 1) {
            expect(verifyAuditLog(parseLines(joinLines(mutated)))).toMatchObject({ ok: true });
          }
        } finally {
          await dispose(trail);
        }
      }),
      { numRuns: 60 },
    );
  });

  test("swapping any two lines is reported at the first of them", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, fc.nat(), fc.nat(), async (ops, a, b) => {
        const trail = await buildTrail(ops);
        try {
          const i = a % trail.lines.length;
          let j = b % (trail.lines.length - 1);
          if (j >= i) j++;
          const mutated = [...trail.lines];
          [mutated[i], mutated[j]] = [mutated[j]!, mutated[i]!];
          await expectReportedAt(trail, joinLines(mutated), Math.min(i, j));
        } finally {
          await dispose(trail);
        }
      }),
      { numRuns: 60 },
    );
  });

  test("a duplicated line, inserted anywhere, is reported where the chain first breaks", async () => {
    await fc.assert(
      fc.asyncProperty(opsArb, fc.nat(), fc.nat(), async (ops, which, where) => {
        const trail = await buildTrail(ops);
        try {
          const k = which % trail.lines.length;
          const at = where % (trail.lines.length + 1);
          const mutated = [...trail.lines];
          mutated.splice(at, 0, trail.lines[k]!);
          const index = firstDivergence(trail.lines, mutated);
          expect(index).toBeDefined();
          await expectReportedAt(trail, joinLines(mutated), index!);
        } finally {
          await dispose(trail);
        }
      }),
      { numRuns: 60 },
    );
  });

  test("truncating the file at any point inside it is reported (at a line boundary: only against the recorded head)", async () => {
    await fc.assert(
      fc.asyncProperty(
        opsArb,
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        async (ops, where) => {
          const trail = await buildTrail(ops);
          try {
            // Keep at least one byte, and drop at least one byte before the final newline
            // (dropping only the newline leaves every event in place).
            const cut = 1 + Math.floor(where * (trail.bytes.length - 2));
            const mutated = trail.bytes.subarray(0, cut);
            const text = mutated.toString("utf8");
            const kept = text.split("\n").filter((l) => l.trim() !== "");
            const lastComplete = kept[kept.length - 1] === trail.lines[kept.length - 1];
            if (lastComplete) {
              // A cut at a line boundary leaves a shorter valid chain: verifying it on its own
              // (a restarted Kms, no head kept elsewhere) passes by design.
              expect(verifyAuditLog(parseLines(text))).toMatchObject({
                ok: true,
                count: kept.length,
              });
              await expectReportedAt(trail, mutated, kept.length);
              expect(verifyAuditLog(parseLines(text), { expectedHead: trail.head })).toMatchObject({
                problem: "truncated",
              });
            } else {
              // A cut inside a line leaves a line that is not JSON: reported without any head.
              expect(verifyAuditLog(parseLines(text))).toMatchObject({
                ok: false,
                index: kept.length - 1,
                problem: "malformed",
              });
              await expectReportedAt(trail, mutated, kept.length - 1);
            }
          } finally {
            await dispose(trail);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  /**
   * Regression case for the counterexample the line-deletion property found (kept minimal): the
   * facade anchored verification at whatever event the sink returned first (meant only for
   * MemoryAuditSink's capped window), so a JSONL file whose first lines were removed verified as
   * ok. Only a sink that `keepsWindow` may start mid-chain now.
   */
  test("regression: deleting the first line of a JSONL trail is reported by kms.audit.verify()", async () => {
    const trail = await buildTrail([{ kind: "describeKey", key: 0 }]);
    try {
      const mutated = joinLines(trail.lines.slice(1));
      await writeFile(trail.path, mutated);
      expect(verifyAuditLog(parseLines(mutated), { expectedHead: trail.head })).toMatchObject({
        ok: false,
        index: 0,
        problem: "deleted-or-reordered",
      });
      expect(await trail.kms.audit.verify()).toMatchObject({ ok: false, index: 0 });
    } finally {
      await dispose(trail);
    }
  });
});

/** Bytes with enough distinct values that their encodings cannot match trail structure by chance. */
function highEntropy(bytes: Uint8Array): boolean {
  return new Set(bytes).size >= 8;
}

const secretPlaintextArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 256 }).filter(highEntropy),
  // Printable text: a leak would show up as the text itself, not an encoding of it.
  fc
    .string({ minLength: 16, maxLength: 64 })
    .map((s) => new TextEncoder().encode(s))
    .filter(highEntropy),
);

/** Material per docs/FORMAT.md §4, unwrapped independently of the HSM with the known root key. */
function unwrapMaterial(root: Uint8Array, keyId: string, version: number, w: Uint8Array) {
  const decipher = createDecipheriv("aes-256-gcm", root, w.subarray(9, 21));
  decipher.setAAD(new TextEncoder().encode(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return new Uint8Array(
    Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]),
  );
}

/** Where in the file bytes a secret shows up, in any of the forms a serializer could give it. */
function leakedForm(file: Buffer, secret: Uint8Array): string | undefined {
  const b = Buffer.from(secret);
  if (file.indexOf(b) !== -1) return "raw bytes";
  const text = file.toString("utf8");
  const forms: Record<string, string> = {
    hex: b.toString("hex"),
    HEX: b.toString("hex").toUpperCase(),
    base64: b.toString("base64"),
    base64url: b.toString("base64url"),
    "byte list": JSON.stringify(Array.from(b)).slice(1, -1),
    "JSON-escaped text": JSON.stringify(b.toString("utf8")).slice(1, -1),
  };
  for (const [name, form] of Object.entries(forms)) if (text.includes(form)) return name;
  return undefined;
}

describe("audit trail (JSONL) never holds secrets: property", () => {
  test("no plaintext, data key, ciphertext, key material or root key appears in the file", async () => {
    await fc.assert(
      fc.asyncProperty(
        opsArb,
        fc.array(secretPlaintextArb, { minLength: 1, maxLength: 4 }),
        async (ops, plaintexts) => {
          const trail = await buildTrail(ops, async (kms, t) => {
            const keyId = (await kms.createKey()).keyMetadata.keyId;
            await kms.rotateKeyOnDemand({ keyId });
            for (const plaintext of plaintexts) {
              const { ciphertextBlob } = await kms.encrypt({
                keyId,
                plaintext,
                encryptionContext: { purpose: "scan" },
              });
              const decrypted = await kms.decrypt({
                ciphertextBlob,
                encryptionContext: { purpose: "scan" },
              });
              const moved = await kms.reEncrypt({
                ciphertextBlob,
                sourceEncryptionContext: { purpose: "scan" },
                destinationKeyId: keyId,
              });
              await kms.encrypt({ keyId, plaintext }, { principal: ALICE }).catch(() => undefined);
              await kms.encrypt({ keyId, plaintext, dryRun: true }).catch(() => undefined);
              const dataKey = await kms.generateDataKey({ keyId, numberOfBytes: 32 });
              t.returned.push(
                plaintext,
                ciphertextBlob,
                decrypted.plaintext,
                moved.ciphertextBlob,
                dataKey.plaintext,
                dataKey.ciphertextBlob,
              );
            }
          });
          try {
            const secrets: Uint8Array[] = [trail.root, ...trail.returned];
            for (const record of await trail.store.listKeys({ limit: 100 })) {
              for (const v of record.versions) {
                secrets.push(
                  unwrapMaterial(trail.root, record.keyId, v.version, v.wrappedMaterial),
                );
              }
            }
            // Short or low-entropy values returned by random ops (e.g. a 1-byte generateRandom)
            // can coincide with trail text; the secrets under test are the high-entropy ones.
            for (const secret of secrets.filter((s) => s.length >= 16 && highEntropy(s))) {
              const form = leakedForm(trail.bytes, secret);
              expect(form, `secret ${Buffer.from(secret).toString("hex")}`).toBeUndefined();
            }
          } finally {
            await dispose(trail);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
