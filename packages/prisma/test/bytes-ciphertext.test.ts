import { ValidationError } from "@kms/core";
import { expect } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { schemaText, sqliteTest } from "./backends.ts";

// A Bytes column holds the ciphertext bytes themselves, with no prefix to tell them apart: bytes
// read through the base client and written back through the extension were sealed a second time,
// and reads then returned the first ciphertext instead of the value. FORMAT §6.1 values start
// with a header naming their data key; bytes whose header names a key of the store are refused.

sqliteTest(
  "ciphertext bytes written back are refused; other bytes, header-shaped too, are sealed",
  async ({ db, kms, keyId }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    const avatar = new Uint8Array([1, 2, 3]);
    const user = await prisma.user.create({
      data: { tenantId: "t1", email: "a@example.com", avatar },
    });
    const stored = (await db.prisma.user.findUniqueOrThrow({ where: { id: user.id } })).avatar;
    expect(stored?.length).toBeGreaterThan(avatar.length);

    const again = prisma.user.update({ where: { id: user.id }, data: { avatar: stored } });
    await expect(again).rejects.toThrow(ValidationError);
    await expect(
      prisma.user.update({ where: { id: user.id }, data: { avatar: { set: stored } } }),
    ).rejects.toThrow("User.avatar already holds ciphertext: refusing to encrypt it twice");
    await expect(
      prisma.user.create({ data: { tenantId: "t1", email: "b@example.com", avatar: stored } }),
    ).rejects.toThrow("User.avatar already holds ciphertext");
    expect((await prisma.user.findUniqueOrThrow({ where: { id: user.id } })).avatar).toEqual(
      avatar,
    );

    // Ordinary bytes shaped like a header, whose data key id names no key: a value like any.
    const lookalike = new Uint8Array(64).fill(7);
    lookalike[0] = 0xc1;
    const other = await prisma.user.create({
      data: { tenantId: "t1", email: "c@example.com", avatar: lookalike },
    });
    expect(other.avatar).toEqual(lookalike);
    expect((await prisma.user.findUniqueOrThrow({ where: { id: other.id } })).avatar).toEqual(
      lookalike,
    );
  },
);
