/**
 * IAM policy variables: `${aws:username}`, `${kms:EncryptionContext:tenant}`,
 * `${aws:PrincipalTag/team, 'none'}` in condition values (String and Arn operators) and in
 * Resource / NotResource, for "2012-10-17" policies. A variable is replaced, once, by the
 * request's value for that condition key; `${*}`, `${?}` and `${$}` stand for the literal
 * characters. A key that is absent or multi-valued has no value: the default after the comma
 * is used, and without one the policy value matches nothing (so a positive operator is false
 * and a negated one true — a Deny with StringNotEquals still applies, an Allow never widens).
 */

/**
 * Escape marker in resolved glob patterns: the character after it is literal. Substituted
 * values are data, never wildcards: a tenant named `*` must not match every tenant. U+E000 is
 * a private-use code point; a resolved value that contains it is escaped too.
 */
export const GLOB_ESCAPE = "\u{E000}";

type TemplatePart =
  | { readonly text: string; readonly literal: boolean }
  | { readonly key: string; readonly fallback?: string };

export interface PolicyTemplate {
  readonly parts: readonly TemplatePart[];
}

/** A policy value as parsed: plain text, or a template with variables. */
export type PolicyValue = string | PolicyTemplate;

const KEY = /^[A-Za-z0-9:/_.+=@-]+$/;

/**
 * Parses the variables in `text`. Returns `text` unchanged when it has none, the template
 * otherwise, or a problem description for malformed syntax (unclosed brace, empty name,
 * unquoted or unterminated default).
 */
export function parseTemplate(text: string): PolicyValue | { readonly problem: string } {
  if (!text.includes("${")) return text;
  const parts: TemplatePart[] = [];
  let at = 0;
  while (at < text.length) {
    const open = text.indexOf("${", at);
    if (open === -1) {
      parts.push({ text: text.slice(at), literal: false });
      break;
    }
    if (open > at) parts.push({ text: text.slice(at, open), literal: false });
    const variable = readVariable(text, open + 2);
    if ("problem" in variable) return variable;
    parts.push(variable.part);
    at = variable.end;
  }
  return { parts };
}

function readVariable(
  text: string,
  start: number,
): { readonly part: TemplatePart; readonly end: number } | { readonly problem: string } {
  // The default may contain `}` inside its quotes, so the closing brace is found by scanning.
  let i = start;
  let name = "";
  while (i < text.length && text[i] !== "}" && text[i] !== ",") name += text[i++];
  if (i === text.length) return { problem: `variable "\${${name}" has no closing brace` };
  const key = name.trim();
  if (key === "") return { problem: `variable "\${${name}}" is empty` };
  let fallback: string | undefined;
  if (text[i] === ",") {
    i++;
    while (text[i] === " ") i++;
    if (text[i] !== "'")
      return { problem: `default of variable "\${${key}, …}" must be quoted with '` };
    i++;
    let value = "";
    for (;;) {
      if (i >= text.length) return { problem: `default of variable "\${${key}, …}" is not closed` };
      if (text[i] === "'") {
        if (text[i + 1] === "'") {
          value += "'";
          i += 2;
          continue;
        }
        i++;
        break;
      }
      value += text[i++];
    }
    while (text[i] === " ") i++;
    if (text[i] !== "}") return { problem: `variable "\${${key}, …}" has no closing brace` };
    fallback = value;
  }
  const end = i + 1;
  if (fallback === undefined && (key === "*" || key === "?" || key === "$")) {
    return { part: { text: key, literal: true }, end };
  }
  if (!KEY.test(key)) return { problem: `variable "\${${key}}" is not a condition key name` };
  return { part: fallback === undefined ? { key } : { key, fallback }, end };
}

function escapeGlob(text: string): string {
  let out = "";
  for (const c of text) {
    out += c === "*" || c === "?" || c === GLOB_ESCAPE ? GLOB_ESCAPE + c : c;
  }
  return out;
}

/**
 * The value of `template` for a request (`lookup` gives a condition key's values), or
 * undefined when a variable without default has no single value. `glob`: the result is a
 * pattern for StringLike / ArnLike / Resource, where substituted text must stay literal.
 */
function resolveTemplate(
  template: PolicyTemplate,
  lookup: (key: string) => readonly string[] | undefined,
  glob: boolean,
): string | undefined {
  let out = "";
  for (const part of template.parts) {
    let text: string;
    let literal: boolean;
    if ("key" in part) {
      const values = lookup(part.key);
      const single = values?.length === 1 ? values[0] : undefined;
      if (single === undefined && part.fallback === undefined) return undefined;
      text = single ?? (part.fallback as string);
      literal = true;
    } else {
      text = part.text;
      literal = part.literal;
    }
    out += glob && literal ? escapeGlob(text) : text;
  }
  return out;
}

/** The condition keys the variables in `values` name. */
export function variableKeys(values: readonly PolicyValue[] | undefined): string[] {
  const keys: string[] = [];
  for (const value of values ?? []) {
    if (typeof value === "string") continue;
    for (const part of value.parts) if ("key" in part) keys.push(part.key);
  }
  return keys;
}

/** Resolves a list of policy values, dropping those without a value. */
export function resolveValues(
  values: readonly PolicyValue[],
  lookup: (key: string) => readonly string[] | undefined,
  glob: boolean,
): string[] {
  const out: string[] = [];
  for (const value of values) {
    const resolved = typeof value === "string" ? value : resolveTemplate(value, lookup, glob);
    if (resolved !== undefined) out.push(resolved);
  }
  return out;
}
