import { createKms, type Kms, runWithEncryptionContext, ValidationError } from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";

/**
 * Lookups on fields bound to the ambient scope (`Label`: `@kms.context(scope: tenantId)`). The
 * operand is sealed under the scope's tenant, the rows searched are every tenant's: an equality
 * matches the scope's rows only, but an exclusion would match every other tenant's rows, the
 * excluded value included, unless the where pins `tenantId` to the scope's.
 */
export function describeScopeExclusions(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`exclusions on scope-bound fields on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    const extend = (keyId: string) => {
      const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
      // Applied after the extension, so it sees each query the extension lets through.
      const queries: string[] = [];
      const watched = prisma.$extends({
        query: {
          $allModels: {
            $allOperations({ model, operation, args, query }) {
              queries.push(`${model}.${operation}`);
              return query(args);
            },
          },
        },
      });
      return { prisma: watched, queries };
    };
    let prisma: ReturnType<typeof extend>["prisma"];
    let queries: string[];
    /** Label ids by tenant: [the SHARED code, the tenant's own]. */
    const ids: Record<string, [number, number]> = {};
    let ownerId: number;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      ({ prisma, queries } = extend((await kms.createKey()).keyMetadata.keyId));
      ownerId = (await prisma.user.create({ data: { tenantId: "t1", email: "o@x" } })).id;
      for (const tenantId of ["tA", "tB"]) {
        await runWithEncryptionContext({ tenantId }, async () => {
          const shared = await prisma.label.create({
            data: { tenantId, code: "SHARED", phone: "555", ownerId },
          });
          const own = await prisma.label.create({
            data: { tenantId, code: `own-${tenantId}`, phone: `666-${tenantId}` },
          });
          ids[tenantId] = [shared.id, own.id];
        });
      }
      queries.length = 0;
    });
    afterEach(async () => {
      await db.close();
    });

    const asA = <T>(run: () => Promise<T>): Promise<T> =>
      runWithEncryptionContext({ tenantId: "tA" }, async () => await run());
    const idsOf = (where: Record<string, unknown>) =>
      asA(() =>
        prisma.label.findMany({
          where: where as never,
          select: { id: true },
          orderBy: { id: "asc" },
        }),
      ).then((rows) => rows.map((r) => r.id));

    const refused: [string, () => Promise<unknown>][] = [
      ["not", () => idsOf({ code: { not: "SHARED" } })],
      ["notIn", () => idsOf({ code: { notIn: ["SHARED"] } })],
      ["NOT", () => idsOf({ NOT: { code: "SHARED" } })],
      ["NOT as a list", () => idsOf({ NOT: [{ code: "SHARED" }] })],
      ["not: { equals }", () => idsOf({ code: { not: { equals: "SHARED" } } })],
      ["in under NOT", () => idsOf({ NOT: { code: { in: ["SHARED"] } } })],
      ["blind index not", () => idsOf({ phone: { not: "555" } })],
      ["blind index notIn", () => idsOf({ phone: { notIn: ["555"] } })],
      ["blind index under NOT", () => idsOf({ NOT: { phone: "555" } })],
      ["count", () => asA(() => prisma.label.count({ where: { code: { not: "SHARED" } } }))],
      [
        "deleteMany",
        () => asA(() => prisma.label.deleteMany({ where: { code: { notIn: ["SHARED"] } } })),
      ],
      [
        "updateMany",
        () =>
          asA(() =>
            prisma.label.updateMany({
              where: { NOT: { code: "SHARED" } },
              data: { ownerId: null },
            }),
          ),
      ],
      // A pin that does not confine the lookup: in a sibling branch, to another tenant, loose.
      [
        "a tenant in a sibling OR branch",
        () => idsOf({ OR: [{ tenantId: "tA" }, { code: { not: "SHARED" } }] }),
      ],
      ["another tenant pinned", () => idsOf({ tenantId: "tB", code: { not: "SHARED" } })],
      [
        "a tenant filtered by in",
        () => idsOf({ tenantId: { in: ["tA"] }, code: { not: "SHARED" } }),
      ],
      // Relation filters that negate: the user's labels are of any tenant.
      [
        "none",
        () => asA(() => prisma.user.findMany({ where: { labels: { none: { code: "SHARED" } } } })),
      ],
      [
        "every",
        () => asA(() => prisma.user.findMany({ where: { labels: { every: { code: "SHARED" } } } })),
      ],
    ];
    test.each(refused)(
      "%s is refused before any query, and acts on no other tenant's rows",
      async (_label, run) => {
        const error = await run().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^Label\.(code|phone) is sealed under the ambient context's tenantId, and .* would also match every other tenantId's rows holding the excluded value/,
        );
        expect(queries).toEqual([]);
        expect(await db.prisma.label.count()).toBe(4);
      },
    );

    test("equality, in, null tests and exclusions confined to the scope's tenant run", async () => {
      const [sharedA, ownA] = ids.tA as [number, number];
      const [sharedB, ownB] = ids.tB as [number, number];
      expect(await idsOf({ code: "SHARED" })).toEqual([sharedA]);
      expect(await idsOf({ code: { in: ["SHARED", "own-tA"] } })).toEqual([sharedA, ownA]);
      expect(await idsOf({ phone: "555" })).toEqual([sharedA]);
      expect(await idsOf({ tenantId: "tA", code: { not: "SHARED" } })).toEqual([ownA]);
      expect(await idsOf({ tenantId: { equals: "tA" }, phone: { notIn: ["555"] } })).toEqual([
        ownA,
      ]);
      expect(await idsOf({ AND: [{ tenantId: "tA" }], NOT: { code: "SHARED" } })).toEqual([ownA]);
      expect(await idsOf({ tenantId: "tA", OR: [{ code: { not: "SHARED" } }] })).toEqual([ownA]);
      // The pin inside the negation confines what it excludes: every row but tA's SHARED one.
      expect(await idsOf({ NOT: { tenantId: "tA", code: "SHARED" } })).toEqual([
        ownA,
        sharedB,
        ownB,
      ]);
      // A null test compares no ciphertext; like findMany({}), it returns every tenant's rows.
      expect(await idsOf({ phone: { not: null } })).toEqual([sharedA, ownA, sharedB, ownB]);
      expect(await idsOf({})).toEqual([sharedA, ownA, sharedB, ownB]);
      const owners = (labels: Record<string, unknown>) =>
        asA(() =>
          prisma.user.findMany({ where: { labels: labels as never }, select: { id: true } }),
        ).then((rows) => rows.map((r) => r.id));
      expect(await owners({ none: { tenantId: "tA", code: "SHARED" } })).toEqual([]);
      expect(await owners({ some: { code: "SHARED" } })).toEqual([ownerId]);
      const deleted = await asA(() =>
        prisma.label.deleteMany({ where: { tenantId: "tA", code: { notIn: ["SHARED"] } } }),
      );
      expect(deleted.count).toBe(1);
      const left = await db.prisma.label.findMany({ select: { id: true }, orderBy: { id: "asc" } });
      expect(left.map((r) => r.id)).toEqual([sharedA, sharedB, ownB]);
    });
  });
}
