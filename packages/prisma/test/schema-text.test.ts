import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createKms, ValidationError } from "@kms/core";
import { SeededRandom as Rng } from "@kms/tooling/random";
import { beforeAll, describe, expect, test } from "vitest";
import { fieldEncryption, parseSchema, type SchemaDescriptor } from "../src/index.ts";
import { readSchemaText } from "../src/internal/schema-text.ts";
import { GENERATOR_SOURCES, runPrismaGenerate } from "./generate-client.ts";

/**
 * Schema text and the `kms-prisma-types` generator must read the same annotations: one reads
 * the text itself, the other the documentation Prisma's own parser attaches (the DMMF). A
 * corpus of comment layouts Prisma accepts is run through both, and through a generator that
 * dumps the DMMF's documentation, and they must agree on every model and field.
 */

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "generated", "layouts");

const HEADER = `generator kms {
  provider = "node ../../../src/generator.ts"
  output   = "./kms"
}

generator docs {
  provider        = "node ../../prisma/docs-generator.ts"
  output          = "./docs.json"
  previewFeatures = ["views"]
}
`;

/**
 * Layouts Prisma accepts, each with its own model names. `@kms.` text sits only where Prisma
 * attaches it; `STRAY…` markers sit where it attaches nothing (see the stray tests below), and
 * `D…` markers are documentation for the raw comparison.
 */
const LAYOUTS: readonly string[] = [
  // Prisma hands a comment above a datasource on to the next model.
  `/// @kms.context(tenantId)
datasource db {
  provider = "sqlite" // D-plain
}

model Leaked {
  id       Int    @id
  tenantId String
  /// @kms.encrypted
  note     String
}`,
  // The reviewer's layouts: a trailing doc comment, a blank line, a // line between the doc
  // comment and the field, a doc comment above an @@ line, // lines around the model's.
  `// Patients of a clinic.
/// @kms.context(tenantId)
// (tenant-scoped)
model Patient {
  id        Int    @id @default(autoincrement())
  tenantId  String
  ssn       String /// @kms.encrypted(deterministic)
  /// @kms.encrypted

  note      String
  /// @kms.encrypted
  // free text, may contain PHI
  diagnosis String
  /// @kms.encrypted
  @@index([tenantId])
  phone     String
  /// D1 line one
  /// @kms.encrypted(type: json)
  chart     String? /// D2 trailing line
}`,
  // A later block replaces a pending one; a comment after @@ and one at the end go nowhere.
  `model Replaced {
  id Int @id
  /// STRAY1 replaced by the // block below

  // D-plain
  a String
  /// STRAY2 replaced by the block below

  /// @kms.encrypted
  b String
  @@map("replaced") /// STRAY3 after an attribute
  /// STRAY4 with no field after it
}`,
  // /* */ comments are documentation too, before a field on its line, after it, over lines;
  // indented after another comment of its block, Prisma cuts the spaces instead of "/*".
  `/* @kms.context(tenantId) */
model Blocks {
  id       Int    @id
  tenantId String
  /* @kms.encrypted(deterministic) */ a String
  b String /* @kms.encrypted */
  /**
   * @kms.encrypted
   */
  c String
  /// D3
    /* D4 indented */
  d String
  /// D5
/* D6 flush */
  e String
}`,
  // Line breaks: \\r\\n and a lone \\r.
  "model Crlf {\r\n  id Int @id\r\n  /// @kms.encrypted\r\n  a String\r\n  b String /// @kms.encrypted(deterministic)\r\n}",
  "model Cr {\r  id Int @id\r  /// @kms.encrypted\r  a String\r}",
  // Tabs and a no-break space are the grammar's whitespace.
  "model Spaces {\n\tid Int @id\n\t/// @kms.encrypted\n\ta\tString\n\u00a0/// D7\n\u00a0b String\n  c String   ?   /// @kms.encrypted\n}",
  // A blank (or blank-looking) line detaches a comment from the model below; a comment after a
  // model's closing brace documents the next model.
  `/// STRAY5 a blank line below

model Detached {
  id Int @id
  // STRAY6 a // comment is no documentation
  a String
}
/// STRAY7 a line of spaces below
${"   "}
model Detached2 {
  id Int @id
} /// @kms.context(tenantId)
model AfterBrace {
  id       Int    @id
  tenantId String
  /// @kms.encrypted
  a        String
}`,
  // Enums take the comment above them, and their values theirs.
  `/// STRAY8 documents the enum
enum Colour {
  /// STRAY9 documents a value
  RED
  BLUE /// STRAY10 documents a value
}
/// @kms.context(scope: clinic)
model AfterEnum {
  id Int @id
  /// @kms.encrypted
  a  String
}`,
  // Views are models in the DMMF.
  `/// @kms.context(tenantId)
view Report {
  id       Int    @unique
  tenantId String
  /// @kms.encrypted
  summary  String
}`,
  // Comment-like text inside strings is no comment; text after "{" is nobody's documentation.
  `model Strings { /// STRAY11 on the opening line
  id Int @id
  a  String @default("/* no */ // no \\" // no") /// D8
  /// @kms.encrypted
  b  String @default("}")
  /// STRAY12 Prisma leaves Unsupported fields out
  c  Unsupported("circle")?
}`,
  // Relations: foreign keys, names and the relation back.
  `model Org {
  id      Int      @id
  members Member[] @relation("Staff") /// D9
}

/// @kms.context(orgId)
model Member {
  id    Int    @id
  orgId Int
  org   Org    @relation("Staff", fields: [orgId], references: [id]) /// D10
  /// @kms.encrypted(deterministic)
  email String
  /// @kms.blindIndex(of: email, bytes: 8, normalize: "trim,lowercase")
  emailIndex String?
}`,
];

/**
 * Random layouts besides, with `R…` markers for documentation: comments of every kind before
 * and after fields and models, indented with every kind of whitespace, blank lines, @@ lines and
 * line breaks of every kind between them. A failure reproduces from its seed:
 *   SCHEMA_TEXT_SEED=<seed> npx vitest run test/schema-text.test.ts
 */
const SEED = Number(process.env.SCHEMA_TEXT_SEED ?? 20_260_607);

function randomLayouts(rng: Rng, models: number): string {
  let n = 0;
  const space = () => rng.pick(["", " ", "  ", "\t", "    ", "\u00a0", " \t"]);
  const br = () => rng.pick(["\n", "\n", "\n", "\r\n", "\r"]);
  const comment = (): string =>
    rng.pick<() => string>([
      () => `${space()}/// R${n++}`,
      () => `${space()}///R${n++}`,
      () => `${space()}// R${n++}`,
      () => `${space()}/* R${n++} */`,
      () => `${space()}/* R${n++}${br()}${space()}more */`,
      () => `${space()}/// R${n++} /* x */`,
      () => `${space()}/* R${n++} */ /// R${n++}`,
      () => space(),
      () => `${space()}@@index([id], map: "r${n++}")${rng.pick(["", " // c", ` /// R${n++}`])}`,
    ])();
  const top = () =>
    Array.from({ length: rng.int(3) }, () =>
      rng.pick([`/// R${n++}`, `// R${n++}`, `/* R${n++} */`, "", "  "]),
    ).join(br());
  let text = "";
  for (let m = 0; m < models; m++) {
    text += `${top()}${br()}model Random${m} {${rng.pick(["", " // open", ` /// R${n++}`])}${br()}`;
    text += `  id Int @id${br()}`;
    for (let f = 0; f < 5; f++) {
      for (const line of Array.from({ length: rng.int(4) }, comment)) text += `${line}${br()}`;
      const trailing = rng.pick(["", "", ` /// R${n++}`, ` // R${n++}`, ` /* R${n++} */`]);
      const attribute = rng.pick(["", ' @default("/* // */")']);
      text += `${space()}f${f} String${rng.pick(["", "?", " ?"])}${attribute}${trailing}${br()}`;
    }
    for (const line of Array.from({ length: rng.int(3) }, comment)) text += `${line}${br()}`;
    text += `}${rng.pick(["", ` /// R${n++}`, " // after"])}${br()}`;
  }
  return text;
}

const corpus = `${HEADER}\n${LAYOUTS.join("\n")}\n${randomLayouts(new Rng(SEED), 30)}`;

interface DmmfModel {
  readonly name: string;
  readonly doc: string | null;
  readonly fields: readonly { readonly name: string; readonly doc: string | null }[];
}

let dmmf: readonly DmmfModel[];
let generated: SchemaDescriptor;

/** Runs `prisma generate` (offline, as test/generate-client.ts does) when the corpus changed. */
function generateLayouts(): void {
  mkdirSync(out, { recursive: true });
  const schema = join(out, "schema.prisma");
  const hash = createHash("sha256").update(corpus);
  for (const source of GENERATOR_SOURCES) hash.update(readFileSync(join(here, "..", source)));
  const stamp = hash.digest("hex");
  const stampFile = join(out, ".schema-sha256");
  // The outputs too: regenerating the test client (test/generated) removes them.
  const outputs = [stampFile, join(out, "docs.json"), join(out, "kms", "kms-schema.ts")];
  if (outputs.every((f) => existsSync(f)) && readFileSync(stampFile, "utf8") === stamp) return;
  writeFileSync(schema, corpus);
  copyFileSync(join(here, "prisma", "prisma.config.ts"), join(out, "prisma.config.ts"));
  runPrismaGenerate(schema);
  writeFileSync(stampFile, stamp);
}

beforeAll(async () => {
  generateLayouts();
  dmmf = JSON.parse(readFileSync(join(out, "docs.json"), "utf8")) as DmmfModel[];
  const module = (await import(pathToFileURL(join(out, "kms", "kms-schema.ts")).href)) as {
    kmsSchema: SchemaDescriptor;
  };
  generated = module.kmsSchema;
});

describe("schema text reads comments as Prisma does", () => {
  test("every model and field has the documentation Prisma's DMMF gives it", () => {
    const doc = (lines: readonly string[]) => (lines.length === 0 ? null : lines.join("\n"));
    const read = readSchemaText(corpus).map((model) => ({
      name: model.name,
      doc: doc(model.doc),
      fields: model.fields.map((field) => ({ name: field.name, doc: doc(field.doc) })),
    }));
    // The DMMF lists views after models; the order means nothing.
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    expect(read.sort(byName), `seed ${SEED}`).toEqual([...dmmf].sort(byName));
    // The corpus exercises what it claims to: annotations reach Prisma at every layout, and no
    // STRAY marker does.
    const docs = dmmf.flatMap((m) => [m.doc, ...m.fields.map((f) => f.doc)]).join("\n");
    expect(docs).not.toContain("STRAY");
    expect(docs.match(/@kms\./g)?.length).toBe(corpus.match(/@kms\./g)?.length);
    expect(docs.match(/\bR\d+/g)?.length, `seed ${SEED}`).toBeGreaterThan(100);
  });

  test("parseSchema and the kms-prisma-types generator give the same descriptor", () => {
    const parsed = parseSchema(corpus);
    expect(Object.keys(parsed).sort()).toEqual(Object.keys(generated).sort());
    for (const name of Object.keys(generated)) {
      expect({ name, ...parsed[name] }).toEqual({ name, ...generated[name] });
    }
    // The layouts the reviewer found ignored.
    expect(parsed.Patient?.context.fromRow).toEqual(["tenantId"]);
    expect(parsed.Patient?.encryptedNames).toEqual(["ssn", "note", "diagnosis", "phone", "chart"]);
    expect(parsed.Patient?.encrypted.ssn?.mode).toBe("deterministic");
    expect(parsed.Patient?.encrypted.chart?.type).toBe("json");
    expect(parsed.Leaked?.context.fromRow).toEqual(["tenantId"]);
    expect(parsed.Blocks?.encryptedNames).toEqual(["a", "b", "c"]);
    expect(parsed.AfterBrace?.context.fromRow).toEqual(["tenantId"]);
    expect(parsed.Report?.encryptedNames).toEqual(["summary"]);
  });
});

/** A schema of its own for one layout, with an annotation where its marker is. */
function strayed(layout: string, marker: string, annotation: string): string {
  const text = `datasource db {\n  provider = "sqlite"\n}\n${layout}`;
  expect(text).toContain(marker);
  return text.replace(new RegExp(`${marker}\\b[^\\n\\r]*`), annotation);
}

describe("annotations Prisma attaches to nothing are refused", () => {
  const layout = (marker: string) => LAYOUTS.find((l) => l.includes(marker)) as string;
  const cases: [string, string, RegExp][] = [
    ["STRAY1", "@kms.encrypted", /line 6 .*another comment block follows it/],
    ["STRAY2", "@kms.encrypted(deterministic)", /line 10 .*another comment block follows it/],
    ["STRAY3", "@kms.encrypted", /line 14 .*a comment after an @@ attribute documents nothing/],
    ["STRAY4", "@kms.encrypted", /line 15 .*no field follows it in model Replaced/],
    ["STRAY5", "@kms.context(tenantId)", /line 4 .*a blank line separates it/],
    ["STRAY6", "@kms.encrypted", /line 8 .*a \/\/ comment is no documentation/],
    ["STRAY7", "@kms.context(tenantId)", /line 11 .*a blank line separates it/],
    ["STRAY8", "@kms.context(tenantId)", /line 4 .*it documents enum Colour/],
    ["STRAY9", "@kms.encrypted", /line 6 .*it documents enum Colour/],
    ["STRAY10", "@kms.encrypted", /line 8 .*it documents enum Colour/],
    ["STRAY11", "@kms.context(tenantId)", /line 4 .*text after "\{" documents nothing/],
    ["STRAY12", "@kms.encrypted", /line 9 .*Prisma leaves Unsupported fields out/],
  ];
  test.each(cases)("%s → %s", (marker, annotation, reason) => {
    const text = strayed(layout(marker), marker, annotation);
    expect(() => parseSchema(text)).toThrow(ValidationError);
    expect(() => parseSchema(text)).toThrow(reason);
  });

  test("in any letter case: @KMS. where Prisma attaches it to nothing", () => {
    for (const annotation of ["@KMS.encrypted", "@Kms.context(tenantId)", "@kMs.encrypted"]) {
      const text = strayed(layout("STRAY6"), "STRAY6", annotation);
      expect(() => parseSchema(text)).toThrow(/line 8 .*a \/\/ comment is no documentation/);
    }
    const afterBrace = `model A { // @KMS.context(tenantId)\n  id Int @id\n}`;
    expect(() => parseSchema(afterBrace)).toThrow(/line 1 .*text after "\{" documents nothing/);
    const unreadable = `model A {\n  id Int @id\n  + x String /// @Kms.encrypted\n}`;
    expect(() => parseSchema(unreadable)).toThrow(/line 3 .*a line Prisma cannot read/);
  });

  test("inside a datasource or generator block, in a line Prisma cannot read", () => {
    const inBlock = `datasource db {\n  /// @kms.context(tenantId)\n  provider = "sqlite"\n}\nmodel A {\n  id Int @id\n}`;
    expect(() => parseSchema(inBlock)).toThrow(/line 2 .*it is inside datasource db/);
    const unreadable = `model A {\n  id Int @id\n  + x String /// @kms.encrypted\n}`;
    expect(() => parseSchema(unreadable)).toThrow(/line 3 .*a line Prisma cannot read/);
    const unclosed = `model A {\n  id Int @id\n  /* @kms.encrypted\n  x String\n}`;
    expect(() => parseSchema(unclosed)).toThrow(/line 3 .*a line Prisma cannot read/);
  });

  test("every stray is listed, and the extension refuses the schema when it is built", async () => {
    const text = `/// @kms.context(tenantId)\n\nmodel A {\n  id Int @id\n  tenantId String\n  a String // @kms.encrypted\n}`;
    expect(() => parseSchema(text)).toThrow(/line 1 .*; line 6 /);
    const kms = await createKms();
    expect(() => fieldEncryption({ kms, keyId: "alias/none", schema: text })).toThrow(
      ValidationError,
    );
  });
});
