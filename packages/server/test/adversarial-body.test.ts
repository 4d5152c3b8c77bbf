/**
 * What the server accepts as a body and as a blob, read as an attacker would: every request here
 * is correctly signed, so only the JSON and base64 readers stand between it and the Kms. One
 * body, one meaning: no byte string has two base64 spellings, no member two values, and no
 * invalid UTF-8 is quietly turned into U+FFFD.
 */
import { CreateKeyCommand, type KMSClient } from "@aws-sdk/client-kms";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { parseJsonBody } from "../src/internal/json-body.ts";
import { OPERATIONS } from "../src/internal/operations.ts";
import { decode } from "../src/internal/shapes.ts";
import { ALICE, type Harness, REGION, startHarness } from "./support/harness.ts";
import type { RawResponse } from "./support/raw-http.ts";
import { signedCall } from "./support/signed-call.ts";

let h: Harness;
let alice: KMSClient;
let keyId: string;
beforeAll(async () => {
  h = await startHarness();
  alice = h.client(ALICE);
  keyId = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
});
afterAll(async () => {
  await h.close();
});

const call = (operation: string, body: string | Buffer): Promise<RawResponse> =>
  signedCall(h.port, REGION, operation, body);

function expectSerialization(res: RawResponse, what: string, mentions?: string): void {
  expect(res.status, `${what} → ${res.body}`).toBe(400);
  expect(res.json.__type, `${what} → ${res.body}`).toBe("SerializationException");
  if (mentions !== undefined) expect(res.json.message, what).toContain(mentions);
}

/** Encrypts `plaintext` (a base64 spelling) and decrypts it again: what the server read. */
async function roundTrip(plaintext: string): Promise<RawResponse | string> {
  const encrypted = await call("Encrypt", `{"KeyId":"${keyId}","Plaintext":"${plaintext}"}`);
  if (encrypted.status !== 200) return encrypted;
  const decrypted = await call(
    "Decrypt",
    JSON.stringify({ CiphertextBlob: encrypted.json.CiphertextBlob }),
  );
  expect(decrypted.status).toBe(200);
  return decrypted.json.Plaintext as string;
}

describe("blobs: strict, canonical base64", () => {
  it.each([
    ["whitespace before", " AAAA"],
    ["whitespace inside", "AA AA"],
    ["a trailing newline", "AAAA\\n"],
    ["CRLF inside (MIME line breaks)", "AAAA\\r\\nAAAA"],
    ["missing padding", "AAA"],
    ["missing padding, two", "AA"],
    ["a lone character", "A"],
    ["the URL-safe alphabet", "-_-_"],
    ["URL-safe mixed in", "AA-A"],
    ["trailing garbage", "AAAA!"],
    ["padding with nothing to pad", "AAAA="],
    ["data after padding", "AA==AAAA"],
    ["too much padding", "A==="],
    ["only padding", "===="],
    ["a NUL", "AAAA\\u0000"],
    ["non-zero padding bits before ==", "AB=="],
    ["non-zero padding bits before =", "AAB="],
    ["non-zero padding bits, another", "QR=="],
  ])("refuses %s (%s) with SerializationException", async (_what, blob) => {
    const res = await call("Encrypt", `{"KeyId":"${keyId}","Plaintext":"${blob}"}`);
    expectSerialization(res, blob, "EncryptRequest.Plaintext");
  });

  it("reads an empty string as an empty blob, which core then judges", async () => {
    const res = await call("Encrypt", `{"KeyId":"${keyId}","Plaintext":""}`);
    expect(res.json.__type).toBe("ValidationException");
  });

  it("accepts exactly one spelling of every byte string", async () => {
    // Spellings drawn near the canonical one: the right length and alphabet, any final
    // character, so that non-zero padding bits come up often.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const spelling = fc
      .tuple(fc.uint8Array({ minLength: 1, maxLength: 20 }), fc.nat(63))
      .map(([bytes, last]) => {
        const canonical = Buffer.from(bytes).toString("base64");
        const pad = canonical.indexOf("=");
        const at = pad < 0 ? canonical.length - 1 : pad - 1;
        return `${canonical.slice(0, at)}${alphabet[last]}${canonical.slice(at + 1)}`;
      });
    await fc.assert(
      fc.asyncProperty(spelling, async (sent) => {
        const read = await roundTrip(sent);
        if (typeof read === "string") {
          // Accepted: then the bytes read spell back to exactly what was sent.
          expect(read).toBe(sent);
        } else {
          expectSerialization(read, sent, "EncryptRequest.Plaintext");
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe("JSON: one body, one meaning", () => {
  it.each([
    ["a top-level member", '{"NumberOfBytes":4,"NumberOfBytes":1000}', "GenerateRandom"],
    [
      "a member spelled with an escape",
      '{"NumberOfBytes":4,"Number\\u004ffBytes":8}',
      "GenerateRandom",
    ],
    [
      "an encryption context key",
      '{"KeyId":"K","Plaintext":"AAAA","EncryptionContext":{"Tenant":"a","Tenant":"b"}}',
      "Encrypt",
    ],
    ["a tag member", '{"Tags":[{"TagKey":"a","TagValue":"b","TagKey":"c"}]}', "CreateKey"],
    [
      "__proto__ twice",
      '{"KeyId":"K","Plaintext":"AAAA","EncryptionContext":{"__proto__":"a","__proto__":"b"}}',
      "Encrypt",
    ],
  ])(
    "refuses a repeated name in %s: JSON.parse keeps the last, other readers the first",
    async (_what, template, operation) => {
      const res = await call(operation, template.replace('"K"', JSON.stringify(keyId)));
      expectSerialization(res, template, "more than once");
    },
  );

  it("accepts equal names in different objects, and equal values in arrays", async () => {
    const tags = await call(
      "CreateKey",
      '{"Tags":[{"TagKey":"a","TagValue":"x"},{"TagKey":"b","TagValue":"x"}],"Description":"TagKey"}',
    );
    expect(tags.status, tags.body).toBe(200);
    const context = await call(
      "Encrypt",
      JSON.stringify({
        KeyId: keyId,
        Plaintext: "AAAA",
        EncryptionContext: { KeyId: "KeyId", Plaintext: "a", Tenant: "Tenant" },
      }),
    );
    expect(context.status, context.body).toBe(200);
  });

  it("tells repeated names from unique ones in any generated body", async () => {
    // Keys generated apart from their values, so that escapes, quotes and braces inside strings
    // (which a scanner could mistake for structure) come up.
    const key = fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom("a", '"', "\\", "{", ","));
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(key, fc.string({ maxLength: 6 })), {
          selector: ([k]) => k,
          minLength: 1,
          maxLength: 5,
        }),
        fc.nat(),
        fc.boolean(),
        async (entries, pick, repeat) => {
          const members = entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
          if (repeat) members.push(`${JSON.stringify(entries[pick % entries.length]![0])}:"again"`);
          // A replacer function, because a generated name such as "$`" is a substitution
          // pattern in a replacement string and would splice the body into itself.
          const body = JSON.stringify({ KeyId: keyId, Plaintext: "AAAA" }).replace(
            /}$/,
            () => `,"EncryptionContext":{${members.join(",")}}}`,
          );
          const res = await call("Encrypt", body);
          if (repeat) expectSerialization(res, body, "more than once");
          else expect(res.json.__type, body).not.toBe("SerializationException");
        },
      ),
      { numRuns: 60, examples: [[[["$`", ""]], 0, false]] },
    );
  });

  it("finds repeated names exactly: none in any JSON.stringify output, one wherever added", () => {
    const name = fc.string({ unit: "binary", maxLength: 6 });
    fc.assert(
      fc.property(fc.jsonValue(), name, fc.nat(3), (value, repeated, depth) => {
        const text = JSON.stringify(value);
        const bytes = Buffer.from(text);
        // JSON.stringify writes each own name once: nothing to find, and the same value back.
        expect(parseJsonBody(bytes)).toEqual(JSON.parse(text));
        // The same name twice, the second time escaped, somewhere inside the value.
        const escaped = `"${[...Array(repeated.length).keys()]
          .map((i) => `\\u${repeated.charCodeAt(i).toString(16).padStart(4, "0")}`)
          .join("")}"`;
        const inner = `{${JSON.stringify(repeated)}:${text},${escaped}:null}`;
        const wrapped = `${"[".repeat(depth)}${inner}${"]".repeat(depth)}`;
        expect(() => parseJsonBody(Buffer.from(`{"v":${text},"w":${wrapped}}`))).toThrow(
          "more than once",
        );
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a body that is not UTF-8, rather than reading U+FFFD in its place", async () => {
    const prefix = Buffer.from(
      `{"KeyId":"${keyId}","Plaintext":"AAAA","EncryptionContext":{"Tenant":"`,
    );
    for (const bad of [
      [0xff],
      [0xc3], // a lead byte without its continuation
      [0xc0, 0xaf], // overlong "/"
      [0xed, 0xa0, 0x80], // a surrogate, encoded
      [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
    ]) {
      const body = Buffer.concat([prefix, Buffer.from(bad), Buffer.from('"}}')]);
      expectSerialization(await call("Encrypt", body), `bytes ${bad}`, "UTF-8");
    }
    // The same character as proper UTF-8 is fine.
    const good = Buffer.concat([prefix, Buffer.from("\ufffd"), Buffer.from('"}}')]);
    expect((await call("Encrypt", good)).status).toBe(200);
  });

  it.each([
    ["a byte order mark", "\ufeff{}"],
    ["trailing data", '{"NumberOfBytes":4} {}'],
    ["trailing garbage", '{"NumberOfBytes":4}x'],
    ["a top-level array", '[{"NumberOfBytes":4}]'],
    ["a top-level string", '"{}"'],
    ["a top-level number", "4"],
  ])("refuses %s", async (_what, body) => {
    expectSerialization(await call("GenerateRandom", body), body);
  });

  it.each([
    ["2^53 + 1", "9007199254740993"],
    ["2^64", "18446744073709551616"],
    ["1e400 (Infinity to JSON.parse)", "1e400"],
    ["a fraction", "4.5"],
    ["a fraction that JSON.parse rounds to 4", "4.0000000000000001"],
    ["a fraction that JSON.parse rounds to 0", "1e-400"],
    ["a string", '"4"'],
  ])("refuses %s as an integer, in NumberOfBytes and in Limit", async (_what, number) => {
    expectSerialization(
      await call("GenerateRandom", `{"NumberOfBytes":${number}}`),
      number,
      "GenerateRandomRequest.NumberOfBytes expected an integer",
    );
    expectSerialization(
      await call("ListKeys", `{"Limit":${number}}`),
      number,
      "ListKeysRequest.Limit expected an integer",
    );
  });

  it("reads an integral JSON number as the integer, however it is written", async () => {
    for (const number of ["4.0", "4e0", "0.4e1"]) {
      const res = await call("GenerateRandom", `{"NumberOfBytes":${number}}`);
      expect(res.status, number).toBe(200);
      expect(Buffer.from(res.json.Plaintext as string, "base64"), number).toHaveLength(4);
    }
  });

  it("passes large safe integers on, for core to judge", async () => {
    const res = await call("ListKeys", '{"Limit":9007199254740991}');
    expect(res.json.__type).toBe("ValidationException");
    expect(res.json.message).toContain("limit");
  });

  it.each([
    ["a description", "CreateKey", '{"Description":"a\\ud800"}', "CreateKeyRequest.Description"],
    [
      "a tag key",
      "CreateKey",
      '{"Tags":[{"TagKey":"\\udfff","TagValue":"v"}]}',
      "CreateKeyRequest.Tags[0].TagKey",
    ],
    ["a key id", "DescribeKey", '{"KeyId":"alias/\\udbff"}', "DescribeKeyRequest.KeyId"],
    [
      "a list item",
      "DescribeKey",
      '{"KeyId":"k","GrantTokens":["\\ud800"]}',
      "DescribeKeyRequest.GrantTokens[0]",
    ],
    [
      "a context key",
      "GenerateDataKey",
      '{"KeyId":"k","NumberOfBytes":1,"EncryptionContext":{"\\ud800":"v"}}',
      "GenerateDataKeyRequest.EncryptionContext keys",
    ],
    [
      "a context value",
      "Decrypt",
      '{"CiphertextBlob":"AAAA","EncryptionContext":{"k":"\\udc00"}}',
      "DecryptRequest.EncryptionContext values",
    ],
  ])(
    "refuses a lone surrogate in %s: UTF-8 would read it as U+FFFD",
    async (_what, op, body, at) => {
      expectSerialization(await call(op, body), body, at);
    },
  );

  it("accepts a surrogate pair, escaped or not: it is one character", async () => {
    for (const text of ["\\ud83d\\ude00", "\u{1F600}"]) {
      const res = await call("CreateKey", `{"Description":"${text}"}`);
      expect(res.status, res.body).toBe(200);
      expect((res.json.KeyMetadata as { Description: string }).Description).toBe("\u{1F600}");
    }
  });

  it("keeps a __proto__ context key as data, and binds the ciphertext to it", async () => {
    const body = `{"KeyId":"${keyId}","Plaintext":"AAAA","EncryptionContext":{"__proto__":"x"}}`;
    const encrypted = await call("Encrypt", body);
    expect(encrypted.status, encrypted.body).toBe(200);
    const blob = JSON.stringify(encrypted.json.CiphertextBlob);
    const without = await call("Decrypt", `{"CiphertextBlob":${blob}}`);
    expect(without.json.__type).toBe("InvalidCiphertextException");
    const withIt = await call(
      "Decrypt",
      `{"CiphertextBlob":${blob},"EncryptionContext":{"__proto__":"x"}}`,
    );
    expect(withIt.status, withIt.body).toBe(200);
  });
});

describe("the blobs of a body refused after they were decoded", () => {
  it("are zeroed, as those of a served request are", () => {
    const plaintext = "secret plaintext";
    // Plain Uint8Arrays only: Buffer has a fill of its own, used on the decoder's pooled copy.
    const zeroed: Uint8Array[] = [];
    const fill = Uint8Array.prototype.fill;
    const spy = vi.spyOn(Uint8Array.prototype, "fill").mockImplementation(function (
      this: Uint8Array,
      ...args: Parameters<typeof fill>
    ) {
      zeroed.push(this);
      return fill.apply(this, args);
    });
    try {
      // Plaintext is decoded first; KeyId, after it, refuses the body.
      const body = { Plaintext: Buffer.from(plaintext).toString("base64"), KeyId: 5 };
      expect(() => decode(OPERATIONS.get("Encrypt")!.input, body)).toThrow(
        /EncryptRequest\.KeyId expected a string/,
      );
    } finally {
      spy.mockRestore();
    }
    const copies = zeroed.filter((a) => !Buffer.isBuffer(a) && a.length === plaintext.length);
    expect(copies).toHaveLength(1);
    expect(copies[0]!.every((byte) => byte === 0)).toBe(true);
  });
});
