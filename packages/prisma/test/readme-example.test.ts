// The README's Example, run as written (the database in a temporary directory instead of
// ./app.db, its tables made by test/prisma/sqlite.sql), so the documentation cannot rot. Its
// `Patient` model is in the test schema as the README writes it.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms } from "@kms/core";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { readmeDrift } from "@kms/tooling/readme";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import Database from "better-sqlite3";
import { afterAll, expect, it } from "vitest";
import { fieldEncryption } from "../src/index.ts";
// Keeps better-sqlite3's statements reachable (README, Caveats).
import "./backends.ts";
import { PrismaClient } from "./generated/client.ts";

const dir = mkdtempSync(join(tmpdir(), "kms-prisma-readme-"));
const file = join(dir, "app.db");
const setup = new Database(file);
retainSqliteHandle(setup);
setup.exec(readFileSync(new URL("prisma/sqlite.sql", import.meta.url), "utf8"));
setup.close();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("runs the Example: ciphertext in the database, plaintext through the extended client", async () => {
  const kms = await createKms(); // or any KmsLike (server, AWS KMS wrapper)
  const { keyMetadata } = await kms.createKey();
  const base = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: `file:${file}` }) });
  // Use only this client. The base client reads and writes raw ciphertext.
  const prisma = base.$extends(
    fieldEncryption({
      kms,
      keyId: keyMetadata.keyId,
      schema: readFileSync(new URL("prisma/schema.prisma", import.meta.url), "utf8"),
    }),
  );

  await prisma.patient.create({
    data: {
      tenantId: "clinic-1",
      ssn: "123-45-6789",
      email: "Ann@Example.com",
      chart: { bp: "120/80" } as never, // schema text: inputs typed `string`, see Typed results
    },
  });
  const bySsn = await prisma.patient.findUnique({
    where: { tenantId_ssn: { tenantId: "clinic-1", ssn: "123-45-6789" } },
  });
  const byEmail = await prisma.patient.findMany({
    where: { tenantId: "clinic-1", email: " ann@example.com" },
  }); // blind index

  expect(bySsn).toMatchObject({ email: "Ann@Example.com", chart: { bp: "120/80" } });
  expect(byEmail.map((p) => p.ssn)).toEqual(["123-45-6789"]);
  // "Stored (SQLite, read with the driver)": never plaintext.
  const raw = new Database(file, { readonly: true });
  retainSqliteHandle(raw);
  const stored = raw.prepare(`SELECT * FROM "Patient"`).get() as Record<string, unknown>;
  raw.close();
  for (const column of ["ssn", "email", "chart"]) {
    expect(String(stored[column]), column).toMatch(/^kms1:[A-Za-z0-9_-]+$/);
  }
  expect(stored.emailIdx).toMatch(/^[A-Za-z0-9_-]{22}$/);
  expect(stored.tenantId).toBe("clinic-1");
  await base.$disconnect();
});

it("is the README's Example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/prisma",
    blocks: 1,
    adapted: [
      // A temporary database, and the schema read from the test's own directory.
      'const base = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: "file:app.db" }) });',
      'schema: readFileSync("prisma/schema.prisma", "utf8"),',
      // A test module exports nothing.
      "export const prisma = base.$extends(",
    ],
  });
  expect(drift).toEqual([]);
});

it("holds the README's schema: its models are the test schema's, line for line", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const schema = squash(readFileSync(new URL("prisma/schema.prisma", import.meta.url), "utf8"));
  const [block] = [...readme.matchAll(/^```prisma\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? "");
  expect(block).toBeDefined();
  const models = (block as string).split(/\n\s*\n/).filter((model) => model.trim() !== "");
  expect(models).toHaveLength(2);
  for (const model of models) expect(schema, model).toContain(squash(model));
});

function squash(text: string): string {
  return text.replace(/\s+/g, "");
}
