import {
  createKms,
  FieldEncryptionEngine,
  InvalidCiphertextError,
  MemoryDataKeyStore,
  ValidationError,
} from "@kms/core";
import { describe, expect, test } from "vitest";
import { defineModels } from "../schema-descriptor.ts";
import { Codec, type Json } from "./codec.ts";

const models = defineModels({
  Order: {
    encrypted: { memo: {}, note: {} },
    relations: { lines: "Line" },
    context: { fromRow: ["tenantId", "region"] },
  },
  Line: {
    encrypted: { text: {} },
    relations: { order: "Order" },
    context: { fromRow: ["tenantId"] },
  },
});
const Order = models.Order as NonNullable<(typeof models)["Order"]>;
const Line = models.Line as NonNullable<(typeof models)["Line"]>;

async function setup() {
  const kms = await createKms();
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
  const seal = (model: string, field: string, context: Record<string, string>, value: string) =>
    engine.encryptText({ model, field, context }, { type: "string" }, value);
  return { engine, seal, codec: new Codec(engine, models, {}) };
}

describe("reading results: contexts shared between rows", () => {
  test("rows whose context values run together alike each decrypt under their own", async () => {
    const { seal, codec } = await setup();
    // "a" + "bc" and "ab" + "c" read the same joined: each row must still get its own context.
    const rows: Json[] = [];
    for (const [tenantId, region] of [
      ["a", "bc"],
      ["ab", "c"],
      ["a", "bc"],
    ] as const) {
      const context = { tenantId, region };
      rows.push({
        tenantId,
        region,
        memo: await seal("Order", "memo", context, `memo ${tenantId}/${region}`),
        note: await seal("Order", "note", context, `note ${tenantId}/${region}`),
      });
    }
    await codec.readResult(Order, rows, undefined);
    expect(rows.map((r) => [r.memo, r.note])).toEqual([
      ["memo a/bc", "note a/bc"],
      ["memo ab/c", "note ab/c"],
      ["memo a/bc", "note a/bc"],
    ]);
  });

  test("a related row without its context column takes its own parent's, not another's", async () => {
    const { seal, codec } = await setup();
    const order = async (tenantId: string, lines: Json[]): Promise<Json> => ({
      tenantId,
      region: "eu",
      memo: await seal("Order", "memo", { tenantId, region: "eu" }, `order of ${tenantId}`),
      lines,
    });
    const line = async (tenantId: string, own: boolean): Promise<Json> => ({
      ...(own ? { tenantId } : {}),
      text: await seal("Line", "text", { tenantId }, `line of ${tenantId}`),
    });
    const result = [
      await order("t1", [await line("t1", false), await line("t2", true)]),
      await order("t3", [await line("t3", false), await line("t1", true)]),
    ];
    await codec.readResult(Order, result, undefined);
    expect(result.map((o) => [o.memo, (o.lines as Json[]).map((l) => l.text)])).toEqual([
      ["order of t1", ["line of t1", "line of t2"]],
      ["order of t3", ["line of t3", "line of t1"]],
    ]);
  });

  test("a value sealed under another row's context does not decrypt", async () => {
    const { seal, codec } = await setup();
    const rows: Json[] = [
      {
        tenantId: "a",
        region: "bc",
        memo: await seal("Order", "memo", { tenantId: "a", region: "bc" }, "a"),
      },
      // Sealed under the first row's context, but held by a row of another.
      {
        tenantId: "ab",
        region: "c",
        memo: await seal("Order", "memo", { tenantId: "a", region: "bc" }, "moved"),
      },
    ];
    await expect(codec.readResult(Order, rows, undefined)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("a row without its context columns is refused, naming the field", async () => {
    const { seal, codec } = await setup();
    const memo = await seal("Line", "text", { tenantId: "t1" }, "x");
    await expect(codec.readResult(Line, [{ text: memo }], undefined)).rejects.toThrow(
      /^Line\.text came back without tenantId, which it decrypts with: /,
    );
    // Present but null: nothing to decrypt with either.
    await expect(
      codec.readResult(Line, [{ text: memo, tenantId: null }], undefined),
    ).rejects.toThrow(
      new ValidationError("Line.text: cannot decrypt without tenantId in the result"),
    );
  });
});
