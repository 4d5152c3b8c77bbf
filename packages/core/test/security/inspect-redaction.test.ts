import { Console } from "node:console";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { format, inspect, stripVTControlCharacters } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  DataKeyCache,
  decryptMessage,
  encryptMessage,
  type Keyring,
  type Kms,
  KmsKeyring,
  MultiKeyring,
  RawAesKeyring,
  RawRsaKeyring,
} from "../../src/index.ts";

// Results that carry secret bytes print them as "[redacted: N bytes]" under util.inspect
// (console.log, loggers' pretty printers, chai's messages), while code sees the same object as
// before: same keys, same JSON, same bytes, same deep equality.

const INSPECT = Symbol.for("nodejs.util.inspect.custom");
const SECRET_TEXT = "attack at dawn, table 7";

interface Case {
  readonly name: string;
  readonly result: object;
  /** The member holding the secret bytes. */
  readonly field: string;
  /** Object.keys of the result, exactly as before redaction. */
  readonly keys: readonly string[];
  /** Top-level non-secret string members that must still print as they are. */
  readonly visible: readonly string[];
  /** A non-secret byte member whose bytes must still print (at full depth). */
  readonly visibleBytes?: string;
  /** The secret as text, when it is text (a decrypted message). */
  readonly secretText?: string;
}

let kms: Kms;
const cases: Case[] = [];

function member(result: object, name: string): unknown {
  return (result as Record<string, unknown>)[name];
}

function bytesOf(result: object, name: string): Uint8Array {
  const value = member(result, name);
  if (!(value instanceof Uint8Array)) throw new Error(`${name} is not a Uint8Array`);
  return value;
}

/**
 * Decimal, hex and base64 renderings of the secret's start and, when long, of its middle (a
 * private key's start is a DER header, and an RSA key's modulus, early on, is public).
 */
function secretForms(secret: Uint8Array): string[] {
  const b = Buffer.from(secret);
  const windows = [b.subarray(0, 8)];
  const middle = b.length >> 1;
  if (b.length >= 64) windows.push(b.subarray(middle, middle + 8));
  const forms: string[] = [b.toString("base64"), b.toString("base64url")];
  if (b.length >= 15) forms.push(b.subarray(0, 15).toString("base64"));
  for (const w of windows) {
    forms.push(
      [...w].join(", "),
      [...w].join(","),
      w.toString("hex"),
      w.toString("hex").toUpperCase(),
      [...w].map((x) => x.toString(16).padStart(2, "0")).join(" "),
    );
  }
  return forms;
}

function expectRedacted(text: string, c: Case, where: string): void {
  const plain = stripVTControlCharacters(text);
  // inspect pads and wraps long byte arrays: decimal runs are also looked for without spaces.
  const compact = plain.replace(/\s+/g, "");
  const secret = bytesOf(c.result, c.field);
  for (const form of secretForms(secret)) {
    expect(plain.includes(form), `${where}: the secret as ${form}`).toBe(false);
    expect(compact.includes(form.replace(/\s+/g, "")), `${where}: ${form} (compact)`).toBe(false);
  }
  if (c.secretText !== undefined) expect(plain).not.toContain(c.secretText);
  expect(plain).toContain(`${c.field}: [redacted: ${secret.length} bytes]`);
}

/** What inspect printed for the result before: the same members, the secret replaced. */
function standIn(c: Case): object {
  const length = bytesOf(c.result, c.field).length;
  const placeholder = {
    [INSPECT]: (_depth: number, options: { stylize(text: string, style: string): string }) =>
      options.stylize(`[redacted: ${length} bytes]`, "special"),
  };
  return { ...c.result, [c.field]: placeholder };
}

function captureConsole(colorMode: boolean): { console: Console; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    console: new Console({ stdout: stream, stderr: stream, colorMode }),
    text: () => chunks.join(""),
  };
}

async function kmsCases(): Promise<void> {
  const symmetric = (await kms.createKey()).keyMetadata.keyId;
  const rsa = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }))
    .keyMetadata.keyId;
  const agreement = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }))
    .keyMetadata.keyId;
  const text = new TextEncoder().encode(SECRET_TEXT);

  const { ciphertextBlob } = await kms.encrypt({ keyId: symmetric, plaintext: text });
  const decrypted = await kms.decrypt({ ciphertextBlob });
  cases.push({
    name: "decrypt (symmetric)",
    result: decrypted,
    field: "plaintext",
    keys: ["plaintext", "keyId", "encryptionAlgorithm", "keyMaterialId"],
    visible: [decrypted.keyId, decrypted.keyMaterialId!, "SYMMETRIC_DEFAULT"],
    secretText: SECRET_TEXT,
  });

  const rsaBlob = await kms.encrypt({
    keyId: rsa,
    plaintext: text,
    encryptionAlgorithm: "RSAES_OAEP_SHA_256",
  });
  const rsaDecrypted = await kms.decrypt({
    keyId: rsa,
    ciphertextBlob: rsaBlob.ciphertextBlob,
    encryptionAlgorithm: "RSAES_OAEP_SHA_256",
  });
  cases.push({
    name: "decrypt (RSAES_OAEP_SHA_256)",
    result: rsaDecrypted,
    field: "plaintext",
    keys: ["plaintext", "keyId", "encryptionAlgorithm", "keyMaterialId"],
    visible: [rsaDecrypted.keyId, rsaDecrypted.keyMaterialId!, "RSAES_OAEP_SHA_256"],
    secretText: SECRET_TEXT,
  });

  const dataKey = await kms.generateDataKey({ keyId: symmetric, keySpec: "AES_256" });
  cases.push({
    name: "generateDataKey",
    result: dataKey,
    field: "plaintext",
    keys: ["ciphertextBlob", "plaintext", "keyId", "keyMaterialId"],
    visible: [dataKey.keyId, dataKey.keyMaterialId!],
    visibleBytes: "ciphertextBlob",
  });

  const pair = await kms.generateDataKeyPair({ keyId: symmetric, keyPairSpec: "RSA_2048" });
  cases.push({
    name: "generateDataKeyPair",
    result: pair,
    field: "privateKeyPlaintext",
    keys: [
      "privateKeyCiphertextBlob",
      "privateKeyPlaintext",
      "publicKey",
      "keyId",
      "keyPairSpec",
      "keyMaterialId",
    ],
    visible: [pair.keyId, pair.keyMaterialId!, "RSA_2048"],
    visibleBytes: "publicKey",
  });

  cases.push({
    name: "generateRandom",
    result: await kms.generateRandom({ numberOfBytes: 32 }),
    field: "plaintext",
    keys: ["plaintext"],
    visible: [],
  });

  const peer = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const shared = await kms.deriveSharedSecret({
    keyId: agreement,
    keyAgreementAlgorithm: "ECDH",
    publicKey: new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" })),
  });
  cases.push({
    name: "deriveSharedSecret",
    result: shared,
    field: "sharedSecret",
    keys: ["keyId", "sharedSecret", "keyAgreementAlgorithm", "keyOrigin"],
    visible: [shared.keyId, "ECDH", "AWS_KMS"],
  });
}

async function envelopeCases(): Promise<void> {
  const aes = new RawAesKeyring({
    keyNamespace: "ns",
    keyName: "aes",
    wrappingKey: randomBytes(32),
  });
  const pem = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const rsa = new RawRsaKeyring({
    keyNamespace: "ns",
    keyName: "rsa",
    publicKey: pem.publicKey,
    privateKey: pem.privateKey,
  });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const viaKms = new KmsKeyring({ kms, keyIds: [keyId] });
  const multi = new MultiKeyring({ generator: aes, children: [rsa] });

  const message = await encryptMessage(new TextEncoder().encode(SECRET_TEXT), {
    keyring: aes,
    encryptionContext: { tenant: "acme" },
  });
  const opened = await decryptMessage(message, { keyring: aes });
  cases.push({
    name: "decryptMessage",
    result: opened,
    field: "plaintext",
    keys: [
      "suite",
      "messageId",
      "encryptionContext",
      "frameLength",
      "encryptedDataKeys",
      "plaintext",
    ],
    visible: [opened.suite, "acme"],
    visibleBytes: "messageId",
    secretText: SECRET_TEXT,
  });

  const keyrings: [string, Keyring, string][] = [
    ["RawAesKeyring", aes, "aes"],
    ["RawRsaKeyring", rsa, "rsa"],
    ["KmsKeyring", viaKms, keyId],
    ["MultiKeyring", multi, "rsa"],
  ];
  for (const [name, keyring, info] of keyrings) {
    cases.push({
      name: `${name}.encryptDataKey`,
      result: await keyring.encryptDataKey({ encryptionContext: { a: "b" }, suiteId: 0x0578 }),
      field: "dataKey",
      keys: ["dataKey", "encryptedDataKeys"],
      visible: [info],
    });
  }

  const cache = new DataKeyCache({ maxAgeMs: 60_000 });
  const cached = await aes.encryptDataKey({ encryptionContext: {}, suiteId: 0x0578 });
  cache.put("entry", cached, { messages: 0, bytes: 0 });
  const taken = cache.take("entry", { messages: 1, bytes: 1 });
  if (taken === undefined) throw new Error("the cache lost its entry");
  cases.push({
    name: "DataKeyCache.take",
    result: taken,
    field: "dataKey",
    keys: ["dataKey", "encryptedDataKeys"],
    visible: ["aes"],
  });
}

beforeAll(async () => {
  kms = await createKms();
  await kmsCases();
  await envelopeCases();
});

// Each test iterates `cases`, filled in beforeAll: a name per case in the failure messages.
function eachCase(run: (c: Case) => void): () => void {
  return () => {
    expect(cases.length).toBe(12);
    for (const c of cases) {
      try {
        run(c);
      } catch (error) {
        throw new Error(`${c.name}: ${(error as Error).message}`, { cause: error });
      }
    }
  };
}

describe("results with secret bytes print them redacted", () => {
  it(
    "util.inspect, %o and depth 0 show neither the bytes nor the value, and name the field",
    eachCase((c) => {
      expectRedacted(inspect(c.result), c, "inspect");
      expectRedacted(format("%o", c.result), c, "%o");
      expectRedacted(format("%O", c.result), c, "%O");
      expectRedacted(inspect(c.result, { depth: 0 }), c, "depth 0");
      expectRedacted(inspect(c.result, { depth: null, showHidden: true }), c, "showHidden");
      expectRedacted(inspect(c.result, { colors: true }), c, "colors");
    }),
  );

  it(
    "inside other objects too",
    eachCase((c) => {
      expectRedacted(inspect({ response: c.result }), c, "nested");
      expectRedacted(inspect([c.result, { deeper: [c.result] }], { depth: 5 }), c, "in arrays");
      expectRedacted(inspect(new Map([["r", c.result]])), c, "Map");
    }),
  );

  it(
    "every other member prints as inspect prints it, under the caller's options and depth",
    eachCase((c) => {
      const options = [
        {},
        { depth: 0 },
        { depth: null },
        { colors: true },
        { compact: false, breakLength: 40 },
        { showHidden: true },
        { sorted: true, maxArrayLength: 3 },
      ];
      for (const o of options) expect(inspect(c.result, o)).toBe(inspect(standIn(c), o));
      expect(format("%o", c.result)).toBe(format("%o", standIn(c)));
      // Past the depth limit the result is cut off like any object.
      expect(inspect({ a: { b: c.result } }, { depth: 1 })).toBe("{ a: { b: [Object] } }");
      const text = inspect(c.result);
      for (const value of c.visible) expect(text).toContain(value);
      if (c.visibleBytes !== undefined) {
        const bytes = bytesOf(c.result, c.visibleBytes);
        const shown = [...bytes.subarray(0, 8)].join(",");
        expect(
          inspect(c.result, { breakLength: Number.POSITIVE_INFINITY }).replace(/\s+/g, ""),
        ).toContain(shown);
      }
    }),
  );

  it(
    "console.log through a stream redacts, with and without colors",
    eachCase((c) => {
      for (const colorMode of [false, true]) {
        const captured = captureConsole(colorMode);
        captured.console.log(c.result);
        captured.console.log("%o", c.result);
        captured.console.info(c.result);
        // console.dir turns custom inspectors off unless told otherwise (see the next test).
        captured.console.dir(c.result, { customInspect: true });
        expectRedacted(captured.text(), c, `console (colors ${colorMode})`);
      }
    }),
  );

  it(
    "the bytes print when asked for: the field itself, customInspect: false, console.dir",
    eachCase((c) => {
      const secret = bytesOf(c.result, c.field);
      const head = Buffer.from(secret.subarray(0, 8));
      // A Uint8Array prints as decimals, a Buffer (decryptMessage's plaintext) as hex.
      const printed = (text: string): boolean => {
        const compact = text.replace(/\s+/g, "");
        return compact.includes([...head].join(",")) || compact.includes(head.toString("hex"));
      };
      expect(printed(inspect(secret))).toBe(true);
      // customInspect: false opts out of every custom inspector, this one included; console.dir
      // sets it unless its options say otherwise. The README says so.
      expect(printed(inspect(c.result, { customInspect: false }))).toBe(true);
      const captured = captureConsole(false);
      captured.console.dir(c.result);
      expect(printed(captured.text())).toBe(true);
    }),
  );
});

describe("code sees the result as before", () => {
  it(
    "the same keys, JSON, spread, clone and deep equality; the bytes stay a Uint8Array",
    eachCase((c) => {
      const secret = bytesOf(c.result, c.field);
      expect(Object.keys(c.result)).toEqual(c.keys);
      expect(Object.getOwnPropertySymbols(c.result).filter((s) => s !== INSPECT)).toEqual([]);
      expect(Object.getOwnPropertyDescriptor(c.result, INSPECT)?.enumerable).toBe(false);
      expect(Object.isFrozen(c.result) || !Object.isExtensible(c.result)).toBe(false);
      expect(secret).toBeInstanceOf(Uint8Array);

      // A plain copy of the enumerable members is what the result was before.
      const before: Record<string, unknown> = Object.fromEntries(Object.entries(c.result));
      expect(JSON.stringify(c.result)).toBe(JSON.stringify(before));
      // JSON is not redacted: servers send results as JSON.
      expect(JSON.parse(JSON.stringify(c.result))[c.field]).toEqual(
        JSON.parse(JSON.stringify(secret)),
      );

      const spread = { ...c.result };
      expect(Object.keys(spread)).toEqual(c.keys);
      expect(Object.getOwnPropertySymbols(spread)).toEqual([]);
      expect(member(spread, c.field)).toBe(secret);

      const clone = structuredClone(c.result);
      expect(Object.keys(clone)).toEqual(c.keys);
      expect(Object.getOwnPropertySymbols(clone)).toEqual([]);
      expect(Buffer.compare(bytesOf(clone, c.field), secret)).toBe(0);

      expect(c.result).toEqual(before);
      expect(c.result).toStrictEqual(before);
      expect(before).toStrictEqual(c.result);
    }),
  );

  it("results without secrets are left alone", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const other = (await kms.createKey()).keyMetadata.keyId;
    const encrypted = await kms.encrypt({ keyId, plaintext: randomBytes(16) });
    const results: object[] = [
      encrypted,
      await kms.reEncrypt({ ciphertextBlob: encrypted.ciphertextBlob, destinationKeyId: other }),
      await kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256" }),
      await kms.generateDataKeyPairWithoutPlaintext({ keyId, keyPairSpec: "ECC_NIST_P256" }),
    ];
    for (const result of results) {
      expect(Object.getOwnPropertySymbols(result)).toEqual([]);
      expect(inspect(result)).not.toContain("redacted");
    }
  });

  it("an inspector called without an inspect function still redacts", () => {
    const c = cases.find((x) => x.name === "generateDataKey");
    if (c === undefined) throw new Error("no generateDataKey case");
    const custom = (c.result as Record<symbol, (...args: unknown[]) => unknown>)[INSPECT];
    if (typeof custom !== "function") throw new Error("no inspector");
    const text = String(custom.call(c.result));
    expectRedacted(text, c, "no inspect function");
    expect(text).toContain(member(c.result, "keyId") as string);
  });
});
