import { ValidationError } from "@kms/core";
import type { AnnotatedField, AnnotatedModel } from "../schema-descriptor.ts";

/**
 * Reads the models of a schema.prisma text with the documentation Prisma attaches to them and
 * to their fields, by the rules of Prisma's own schema grammar (the `datamodel.pest` grammar of
 * prisma-engines and its parser, as shipped in Prisma 7), so that schema text sees exactly the
 * annotations the `kms-prisma-types` generator reads from Prisma's DMMF:
 *
 * - A comment block is a run of `///`, `//` and `/* … *\/` comments, one after another or on
 *   lines of their own; a blank line ends it. Its `///` and `/* *\/` comments are documentation,
 *   its `//` comments are not.
 * - Inside a model, a block documents the next field, across blank lines and `@@` lines; a
 *   later block replaces it, and one with no field after it documents nothing. A `///` or
 *   `/* *\/` comment after a field on its line is added to the field's documentation.
 * - At the top level, a block documents the model (or enum) right below it: a blank line in
 *   between detaches it. A block right above a datasource or generator is kept for the next
 *   model or enum (Prisma's parser hands it on).
 * - What follows `{` on a block's first line, and a comment after an `@@` attribute, are
 *   nobody's documentation.
 *
 * Annotation text that ends up on no model or field Prisma reads would be silently ignored by
 * both routes (a field written in plaintext, a model bound to no tenant): every comment holding
 * `@kms.` must be documentation of a model or of a model's field, or the schema is refused.
 *
 * Each field also carries its native type (`@db.Char(8)`, after the datasource's name), and
 * each model the datasource's provider, as the DMMF gives them to the generator.
 * @throws ValidationException listing each such comment by line, with the reason.
 */
export function readSchemaText(schema: string): AnnotatedModel[] {
  const reader = new SchemaReader(schema);
  const items = reader.top();
  const modelNames = new Set(
    items.flatMap((i) => (i.kind === "block" && isModelKeyword(i.keyword) ? [i.name] : [])),
  );
  const enumNames = new Set(
    items.flatMap((i) => (i.kind === "block" && i.keyword === "enum" ? [i.name] : [])),
  );
  const datasource = datasourceOf(items);
  const models: AnnotatedModel[] = [];
  let pending: Comment[] | undefined;
  for (const [i, item] of items.entries()) {
    if (item.kind === "comments") {
      const next = items[i + 1];
      if (next?.kind === "block") {
        if (pending !== undefined) drop(pending, REPLACED);
        pending = item.comments;
      } else if (next?.kind === "empty") {
        drop(item.comments, DETACHED);
      } else {
        drop(item.comments, `no model follows it`);
      }
      continue;
    }
    if (item.kind !== "block") continue;
    if (item.keyword === "datasource" || item.keyword === "generator") {
      // A comment above one is kept for the next model (see above); those inside go nowhere.
      dropContents(item, `it is inside ${item.keyword} ${item.name}`);
      continue;
    }
    const doc = pending;
    pending = undefined;
    if (!isModelKeyword(item.keyword)) {
      const what = item.keyword === "enum" ? "enum" : "composite type";
      const reason = `it documents ${what} ${item.name}, which @kms/prisma does not read`;
      if (doc !== undefined) drop(doc, reason);
      dropContents(item, reason);
      continue;
    }
    models.push({
      name: item.name,
      doc: documentation(doc, undefined),
      // Without a datasource there are no native types; `@db.` is what one would be read as.
      fields: modelFields(item, modelNames, enumNames, datasource.name ?? "db"),
      ...(datasource.provider === undefined ? {} : { provider: datasource.provider }),
      ...(datasource.name === undefined ? {} : { datasource: datasource.name }),
    });
  }
  if (pending !== undefined) drop(pending, `no model follows it`);
  reader.refuseStrays();
  return models;
}

const REPLACED = `another comment block follows it before anything it could document, and Prisma keeps only the last`;
const DETACHED = `a blank line separates it from the block below, and Prisma attaches a comment only to the block right below it`;

/**
 * Whether text holds what reads as an annotation in any letter case: `@KMS.encrypted` is no
 * annotation, and the annotation reader refuses it, rather than leave the field in plaintext.
 */
function holdsAnnotation(text: string): boolean {
  return /@kms\./i.test(text);
}

function isModelKeyword(keyword: Keyword): boolean {
  // Views are models in the DMMF too (`previewFeatures = ["views"]`).
  return keyword === "model" || keyword === "view";
}

/** One comment as Prisma's grammar splits them, and whether some model or field took it. */
interface Comment {
  readonly line: number;
  readonly raw: string;
  /** The documentation it adds; undefined for a `//` comment. */
  readonly doc: string | undefined;
  attached: boolean;
  /** Why it documents nothing Prisma hands the generator (the first reason found). */
  dropped?: string;
}

type Keyword = "model" | "view" | "type" | "enum" | "datasource" | "generator";

type TopItem =
  | { readonly kind: "comments"; readonly comments: Comment[] }
  | { readonly kind: "empty" }
  | { readonly kind: "invalid" }
  | {
      readonly kind: "block";
      readonly keyword: Keyword;
      readonly name: string;
      readonly contents: readonly BlockItem[];
    };

type BlockItem =
  | { readonly kind: "comments"; readonly comments: Comment[] }
  /** A field (enum value, key = value) or, with `attribute`, an `@@` line. */
  | {
      readonly kind: "line";
      readonly attribute: boolean;
      readonly name: string;
      /** The declaration after the name, up to the trailing comment. */
      readonly code: string;
      readonly trailing: Comment | undefined;
    };

function drop(comments: readonly Comment[], reason: string): void {
  for (const c of comments) if (!c.attached) c.dropped ??= reason;
}

/** Every comment inside a block whose contents document nothing @kms/prisma reads. */
function dropContents(block: Extract<TopItem, { kind: "block" }>, reason: string): void {
  for (const item of block.contents) {
    if (item.kind === "comments") drop(item.comments, reason);
    else if (item.trailing !== undefined) drop([item.trailing], reason);
  }
}

/** Prisma's documentation of a field or model: its block's doc comments, then the trailing one. */
function documentation(block: readonly Comment[] | undefined, trailing: Comment | undefined) {
  const lines: string[] = [];
  for (const c of [...(block ?? []), ...(trailing === undefined ? [] : [trailing])]) {
    if (c.doc === undefined) continue;
    c.attached = true;
    lines.push(c.doc);
  }
  // Multi-line `/* */` documentation spans lines too: one line per line, as the DMMF's text
  // split on "\n" gives them.
  return lines.length === 0 ? [] : lines.join("\n").split("\n");
}

/**
 * The schema's datasource: its name, which native type attributes start with (`@db.` for
 * `datasource db`), and its provider as the DMMF's `activeProvider` names it; both undefined
 * when the schema has none.
 */
function datasourceOf(items: readonly TopItem[]): {
  name: string | undefined;
  provider: string | undefined;
} {
  for (const item of items) {
    if (item.kind !== "block" || item.keyword !== "datasource") continue;
    let provider: string | undefined;
    for (const line of item.contents) {
      if (line.kind !== "line" || line.attribute || line.name !== "provider") continue;
      provider = /^[\t\p{Zs}]*=[\t\p{Zs}]*"([^"]*)"/u.exec(line.code)?.[1];
    }
    // `postgres` is another spelling of `postgresql`, which the DMMF uses.
    if (provider === "postgres" || provider === "prisma+postgres") provider = "postgresql";
    return { name: item.name, provider };
  }
  return { name: undefined, provider: undefined };
}

/**
 * A field's native type attribute (`@db.VarChar(255)`) as the generator writes the DMMF's
 * (`VarChar(255)`, arguments separated by ", "), or undefined when it has none.
 */
function nativeTypeOf(code: string, datasource: string): string | undefined {
  // A string argument (`@default("@db.Char(2)")`) holds no attribute.
  const bare = code.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  // The grammar lets spaces in between the parts (`@db.Char (8)`).
  const space = "[\\t\\p{Zs}]*";
  const found = new RegExp(
    `@${space}${datasource}${space}\\.${space}([A-Za-z]\\w*)(?:${space}\\(([^)]*)\\))?`,
    "u",
  ).exec(bare);
  if (found === null) return undefined;
  const [, name, args] = found as unknown as [string, string, string | undefined];
  const list = (args ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
  return list.length === 0 ? name : `${name}(${list.join(", ")})`;
}

function modelFields(
  model: Extract<TopItem, { kind: "block" }>,
  modelNames: ReadonlySet<string>,
  enumNames: ReadonlySet<string>,
  datasource: string,
): AnnotatedField[] {
  const fields: AnnotatedField[] = [];
  let pending: Comment[] | undefined;
  for (const item of model.contents) {
    if (item.kind === "comments") {
      if (pending !== undefined) drop(pending, REPLACED);
      pending = item.comments;
      continue;
    }
    if (item.attribute) {
      if (item.trailing !== undefined) {
        drop([item.trailing], `a comment after an @@ attribute documents nothing`);
      }
      continue;
    }
    const block = pending;
    pending = undefined;
    const type = FIELD_TYPE.exec(item.code);
    if (type === null) {
      // Prisma refuses a field without a type, and with it the comment it took.
      drop([...(block ?? []), ...(item.trailing === undefined ? [] : [item.trailing])], INVALID);
      continue;
    }
    const [, typeName, list, optional] = type as unknown as [string, string, unknown, unknown];
    if (typeName === "Unsupported") {
      // `Unsupported("circle")`: a column the client never reads or writes, left out of the DMMF.
      const comments = [...(block ?? []), ...(item.trailing === undefined ? [] : [item.trailing])];
      drop(comments, `Prisma leaves Unsupported fields out of its client`);
      continue;
    }
    const code = item.code;
    // `@relation(fields: [tenantId], references: [id])`: the columns holding the foreign key.
    const columns = /@relation\([^)]*\bfields\s*:\s*\[([^\]]*)\]/.exec(code)?.[1];
    const foreignKey = columns
      ?.split(",")
      .map((f) => f.trim())
      .filter((f) => f !== "");
    // `@relation("Watchers", …)` or `@relation(name: "Watchers", …)`; Prisma's default is the
    // two model names in order joined by "To".
    const args = /@relation\(([^)]*)\)/.exec(code)?.[1] ?? "";
    const named = (/^\s*"([^"]*)"/.exec(args) ?? /\bname\s*:\s*"([^"]*)"/.exec(args))?.[1];
    const nativeType = nativeTypeOf(code, datasource);
    const relationName = !modelNames.has(typeName)
      ? undefined
      : (named ?? [model.name, typeName].sort().join("To"));
    fields.push({
      name: item.name,
      type: typeName,
      optional: optional !== undefined,
      ...(list === undefined ? {} : { list: true }),
      doc: documentation(block, item.trailing),
      ...(foreignKey === undefined ? {} : { foreignKey }),
      ...(relationName === undefined ? {} : { relationName }),
      // A type that is neither a model nor an enum is a scalar or a composite type (`type X {}`).
      ...(modelNames.has(typeName) ? {} : { isEnum: enumNames.has(typeName) }),
      ...(nativeType === undefined ? {} : { nativeType }),
    });
  }
  if (pending !== undefined) drop(pending, `no field follows it in model ${model.name}`);
  return fields;
}

const INVALID = `it is on a line Prisma cannot read`;

/** A field's type after its name: `String`, `String?`, `Tag[]`, `Unsupported("…")`. */
const FIELD_TYPE =
  /^[\t\p{Zs}]*([\p{L}\p{N}][\p{L}\p{N}_-]*)(?:\("(?:[^"\\]|\\.)*"\))?(?:[\t\p{Zs}]*(\[\]))?(?:[\t\p{Zs}]*(\?))?/u;

const UTF8 = new TextEncoder();
const UTF8_DECODER = new TextDecoder();
const IDENTIFIER = /[\p{L}\p{N}][\p{L}\p{N}_-]*/uy;
const KEYWORDS: readonly Keyword[] = ["model", "type", "view", "enum", "datasource", "generator"];

/** The characters Rust's `trim` removes (Unicode White_Space), which JavaScript's differ from. */
const RUST_SPACE =
  "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const LEADING_SPACE = new RegExp(`^[${RUST_SPACE}]+`, "u");
const TRAILING_SPACE = new RegExp(`[${RUST_SPACE}]+$`, "u");

/**
 * A recursive-descent reading of the parts of the grammar that decide where comments go.
 * Where Prisma's parser reports an error (a line it cannot read), this skips the same text as
 * its error recovery does: such a schema never reaches an application, and annotation text in
 * it is refused as documenting nothing.
 */
class SchemaReader {
  readonly #src: string;
  #pos = 0;
  readonly #lineStarts: number[] = [0];
  readonly #comments: Comment[] = [];
  /** Text Prisma reads as no comment at all (`{` lines, lines it cannot read) holding `@kms.`. */
  readonly #strays: { line: number; raw: string; reason: string }[] = [];

  constructor(src: string) {
    this.#src = src;
    for (let i = 0; i < src.length; i++) {
      const c = src[i];
      if (c === "\n" || (c === "\r" && src[i + 1] !== "\n")) this.#lineStarts.push(i + 1);
    }
  }

  top(): TopItem[] {
    const items: TopItem[] = [];
    for (;;) {
      this.#skipSpace();
      if (this.#pos >= this.#src.length) return items;
      const start = this.#pos;
      const block = this.#declaration();
      if (block !== undefined) {
        items.push(block);
        continue;
      }
      this.#pos = start;
      const comments = this.#commentBlock();
      if (comments !== undefined) {
        items.push({ kind: "comments", comments });
        continue;
      }
      if (this.#emptyLines()) {
        items.push({ kind: "empty" });
        continue;
      }
      this.#invalid(start, this.#arbitraryBlock() ? this.#pos : this.#lineEnd());
      items.push({ kind: "invalid" });
    }
  }

  refuseStrays(): void {
    const strays = [
      ...this.#strays,
      ...this.#comments
        .filter((c) => !c.attached && holdsAnnotation(c.raw))
        .map((c) => ({
          line: c.line,
          raw: c.raw,
          reason:
            c.doc === undefined
              ? `a // comment is no documentation: annotations go in /// comments`
              : (c.dropped ?? `Prisma attaches it to no model or field`),
        })),
    ].sort((a, b) => a.line - b.line);
    if (strays.length === 0) return;
    const list = strays
      .map((s) => `line ${s.line} (${JSON.stringify(s.raw.trim().slice(0, 80))}): ${s.reason}`)
      .join("; ");
    throw new ValidationError(
      `schema: @kms annotations that would be ignored, as Prisma documents no model or field with them: ${list}`,
    );
  }

  /** `model|type|view|enum|datasource|generator Name {` … `}`, or undefined (position kept). */
  #declaration(): TopItem | undefined {
    const start = this.#pos;
    // What a declaration that turns out unterminated noted is noted again as the text is reread.
    const noted = [this.#comments.length, this.#strays.length] as const;
    const fail = () => {
      this.#pos = start;
      this.#comments.length = noted[0];
      this.#strays.length = noted[1];
      return undefined;
    };
    // Keywords are matched as prefixes, as the grammar does (`modelUser {` declares User).
    const keyword = KEYWORDS.find((k) => this.#src.startsWith(k, start));
    if (keyword === undefined) return undefined;
    this.#pos += keyword.length;
    this.#skipSpace();
    const name = this.#identifier();
    if (name === undefined || !this.#blockOpen()) return fail();
    const contents = this.#blockContents();
    if (contents === undefined) return fail();
    return { kind: "block", keyword, name, contents };
  }

  /** `{` and the rest of its line (which Prisma ignores), then the line break. */
  #blockOpen(): boolean {
    this.#skipSpace();
    if (this.#src[this.#pos] !== "{") return false;
    const start = this.#pos;
    this.#pos = this.#lineEnd();
    if (!this.#newline()) return false;
    const rest = this.#src.slice(start + 1, this.#pos);
    if (holdsAnnotation(rest)) {
      this.#strays.push({
        line: this.#lineOf(start),
        raw: rest,
        reason: `text after "{" documents nothing: put the annotation on a line of its own above the block`,
      });
    }
    return true;
  }

  /** A block's items up to its `}`; undefined when the text ends first. */
  #blockContents(): BlockItem[] | undefined {
    const items: BlockItem[] = [];
    for (;;) {
      this.#skipSpace();
      if (this.#pos >= this.#src.length) return undefined;
      if (this.#src[this.#pos] === "}") {
        this.#pos++;
        return items;
      }
      const start = this.#pos;
      const line = this.#line();
      if (line !== undefined) {
        items.push(line);
        continue;
      }
      this.#pos = start;
      const comments = this.#commentBlock();
      if (comments !== undefined) {
        items.push({ kind: "comments", comments });
        continue;
      }
      if (this.#emptyLines()) continue;
      // A line that is none of these (Prisma: "not a valid field or attribute definition").
      this.#invalid(start, this.#lineEnd());
    }
  }

  /**
   * A field, enum value or `key = value` line (`name …`), or an `@@` attribute line: its code up
   * to a trailing comment, the comment, then the line break. Undefined when it is none.
   */
  #line(): BlockItem | undefined {
    const attribute = this.#src.startsWith("@@", this.#pos);
    let name = "";
    if (attribute) this.#pos += 2;
    else {
      const id = this.#identifier();
      if (id === undefined) return undefined;
      name = id;
    }
    const codeStart = this.#pos;
    const src = this.#src;
    let i = this.#pos;
    while (i < src.length) {
      const c = src[i];
      if (c === "\n" || c === "\r") break;
      if (c === '"') {
        i = this.#stringEnd(i);
        if (i === -1) return undefined;
        continue;
      }
      if (c === "/" && (src[i + 1] === "/" || src[i + 1] === "*")) break;
      i++;
    }
    const code = src.slice(codeStart, i);
    this.#pos = i;
    let trailing: Comment | undefined;
    if (src[i] === "/") {
      trailing = this.#comment();
      if (trailing === undefined) return undefined;
    }
    this.#skipSpace();
    if (!this.#newline()) return undefined;
    return { kind: "line", attribute, name, code, trailing };
  }

  /** The index after the string literal opening at `i`, or -1 where the grammar has none. */
  #stringEnd(i: number): number {
    const src = this.#src;
    for (let j = i + 1; j < src.length; j++) {
      const c = src.charCodeAt(j);
      if (c === 0x5c) {
        // A backslash escapes any one character.
        j++;
      } else if (c === 0x22) {
        return j + 1;
      } else if (c < 0x20) {
        return -1;
      }
    }
    return -1;
  }

  /** `comment_block`: comments, each followed by at most one line break. */
  #commentBlock(): Comment[] | undefined {
    const out: Comment[] = [];
    for (;;) {
      const comment = this.#comment();
      if (comment === undefined) break;
      out.push(comment);
      this.#newline();
    }
    return out.length === 0 ? undefined : out;
  }

  /**
   * One `///`, `//` or `/* *\/` comment after optional spaces. A `/* *\/` comment's text keeps
   * those spaces and Prisma cuts two bytes off each end before trimming: its two first bytes
   * are spaces, not `/*`, when it follows another comment of its block indented.
   */
  #comment(): Comment | undefined {
    const start = this.#pos;
    this.#skipSpace();
    const at = this.#pos;
    const src = this.#src;
    let doc: string | undefined;
    if (src.startsWith("///", at)) {
      this.#pos = this.#lineEnd();
      doc = src.slice(at + 3, this.#pos).replace(LEADING_SPACE, "");
    } else if (src.startsWith("//", at)) {
      this.#pos = this.#lineEnd();
    } else if (src.startsWith("/*", at)) {
      const end = src.indexOf("*/", at + 2);
      if (end === -1) {
        this.#pos = start;
        return undefined;
      }
      this.#pos = end + 2;
      const bytes = UTF8.encode(src.slice(start, this.#pos));
      doc = UTF8_DECODER.decode(bytes.subarray(2, bytes.length - 2))
        .replace(LEADING_SPACE, "")
        .replace(TRAILING_SPACE, "");
    } else {
      this.#pos = start;
      return undefined;
    }
    const comment: Comment = {
      line: this.#lineOf(at),
      raw: src.slice(at, this.#pos),
      doc,
      attached: false,
    };
    this.#comments.push(comment);
    return comment;
  }

  /** `identifier { … }` without a keyword: Prisma refuses it; skipped to its first `}`. */
  #arbitraryBlock(): boolean {
    const start = this.#pos;
    const noted = this.#strays.length;
    const close =
      this.#identifier() !== undefined && this.#blockOpen()
        ? this.#src.indexOf("}", this.#pos)
        : -1;
    // The caller notes the whole block, `{` line included.
    this.#strays.length = noted;
    if (close === -1) {
      this.#pos = start;
      return false;
    }
    this.#pos = close + 1;
    return true;
  }

  /** Skips text Prisma cannot read up to `end` (and a line break), noting annotations in it. */
  #invalid(start: number, end: number): void {
    this.#pos = end;
    this.#newline();
    const raw = this.#src.slice(start, end);
    if (holdsAnnotation(raw)) {
      this.#strays.push({ line: this.#lineOf(start), raw, reason: INVALID });
    }
  }

  #emptyLines(): boolean {
    let any = false;
    for (;;) {
      const start = this.#pos;
      this.#skipSpace();
      if (!this.#newline()) {
        this.#pos = start;
        return any;
      }
      any = true;
    }
  }

  #identifier(): string | undefined {
    IDENTIFIER.lastIndex = this.#pos;
    const match = IDENTIFIER.exec(this.#src);
    if (match === null) return undefined;
    this.#pos += match[0].length;
    return match[0];
  }

  /** Spaces and tabs: the grammar's whitespace, which never includes a line break. */
  #skipSpace(): void {
    const src = this.#src;
    while (this.#pos < src.length && isSpace(src.charCodeAt(this.#pos))) this.#pos++;
  }

  #newline(): boolean {
    const src = this.#src;
    if (src.startsWith("\r\n", this.#pos)) this.#pos += 2;
    else if (src[this.#pos] === "\n" || src[this.#pos] === "\r") this.#pos++;
    else return false;
    return true;
  }

  /** The index of the end of the current line (its line break, or the end of the text). */
  #lineEnd(): number {
    const src = this.#src;
    let i = this.#pos;
    while (i < src.length && src[i] !== "\n" && src[i] !== "\r") i++;
    return i;
  }

  #lineOf(pos: number): number {
    let lo = 0;
    let hi = this.#lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.#lineStarts[mid] as number) <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  }
}

/** The grammar's WHITESPACE: a tab or a Unicode space separator (category Zs). */
function isSpace(code: number): boolean {
  return code === 0x09 || SPACE_SEPARATOR.test(String.fromCharCode(code));
}
const SPACE_SEPARATOR = /\p{Zs}/u;
