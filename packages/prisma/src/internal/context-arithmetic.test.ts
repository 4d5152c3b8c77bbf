import { createKms, FieldEncryptionEngine, MemoryDataKeyStore, ValidationError } from "@kms/core";
import { describe, expect, test } from "vitest";
import { defineModels } from "../schema-descriptor.ts";
import { Codec, type Json } from "./codec.ts";

// An update that computes a context column from its old value (`orgId: { increment: 1 }`) has
// no value to seal under but the old one, while the row moves to the new: the values written
// would never decrypt. Int context columns, as a schema may have them.

const models = defineModels({
  Acct: {
    encrypted: { secret: {}, note: { context: { fromRow: ["rev"] } } },
    relations: { entries: "Entry" },
    context: { fromRow: ["orgId"] },
  },
  Entry: {
    encrypted: { text: {} },
    relations: { acct: "Acct" },
    context: { fromRow: ["orgId"] },
  },
});
const Acct = models.Acct as NonNullable<(typeof models)["Acct"]>;

async function codec(): Promise<Codec> {
  const kms = await createKms();
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
  return new Codec(engine, models, {});
}

const update = (c: Codec, data: Json, where: Json = { id: 1, orgId: 1 }) =>
  c.writeData(Acct, data, c.context(Acct, [data, where]), where);

describe("arithmetic on a context column", () => {
  test.each([
    ["increment", { increment: 1 }],
    ["decrement", { decrement: 1 }],
    ["multiply", { multiply: 2 }],
    ["divide", { divide: 2 }],
  ])("%s of the model's column with the values rewritten is refused", async (op, change) => {
    const c = await codec();
    const data = { orgId: change, secret: "s1", note: "n1", rev: 1 };
    await expect(update(c, data)).rejects.toThrow(ValidationError);
    await expect(update(c, { ...data })).rejects.toThrow(
      `Acct.orgId is written with { ${op} }: the values of secret, note bound to it`,
    );
  });

  test("of a field's own context column, with that field written, is refused", async () => {
    const c = await codec();
    await expect(update(c, { rev: { increment: 1 }, note: "n1" })).rejects.toThrow(
      /Acct\.rev is written with \{ increment \}: the values of note bound to it/,
    );
  });

  test("without the bound values rewritten, it is refused as any change of the column", async () => {
    const c = await codec();
    await expect(update(c, { orgId: { increment: 1 } })).rejects.toThrow(
      /changing orgId would orphan encrypted values bound to it/,
    );
    await expect(update(c, { rev: { increment: 1 } })).rejects.toThrow(
      /changing rev would orphan the values of note/,
    );
  });

  test("before the row is read: an update's unpinned columns refuse it first", async () => {
    const c = await codec();
    const data = { orgId: { increment: 1 }, secret: "s1", note: "n1" };
    expect(() => c.unpinnedColumns(Acct, data, undefined, [data, { id: 1 }])).toThrow(
      /Acct\.orgId is written with \{ increment \}/,
    );
  });

  test("a plain value, { set } and nulls written to every bound field go through", async () => {
    const c = await codec();
    const plain: Json = { orgId: 2, secret: "s", note: "n", rev: 3 };
    await update(c, plain);
    expect(String(plain.secret).startsWith("kms1:")).toBe(true);
    const set: Json = { orgId: { set: 2 }, secret: "s", note: "n", rev: { set: 3 } };
    await update(c, set);
    expect(String(set.note).startsWith("kms1:")).toBe(true);
    // Null binds nothing: the values go, the column is computed.
    const cleared: Json = { orgId: { increment: 1 }, secret: null, note: null };
    await update(c, cleared);
    expect(cleared).toEqual({ orgId: { increment: 1 }, secret: null, note: null });
  });

  test("a row created under one whose column is computed does not take its old value", async () => {
    const c = await codec();
    const data: Json = {
      orgId: { increment: 1 },
      secret: null,
      note: null,
      entries: { create: { text: "t" } },
    };
    await expect(update(c, data)).rejects.toThrow(
      /Entry binds encrypted fields to orgId: include it in the data/,
    );
  });
});
