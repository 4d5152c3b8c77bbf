import type { ParseArgsOptionsConfig } from "node:util";
import type { EncryptionContext } from "@kms/core";
import { UsageError } from "./usage.ts";

/** What `parseArgs` returns for `values` with options only known at run time. */
export type ParsedValues = Readonly<
  Record<string, string | boolean | (string | boolean)[] | undefined>
>;

export function stringOption(values: ParsedValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

export function requiredOption(values: ParsedValues, name: string, command: string): string {
  const value = stringOption(values, name);
  if (value === undefined || value === "") {
    throw new UsageError(`${command}: --${name} is required`, command);
  }
  return value;
}

export function stringsOption(values: ParsedValues, name: string): string[] {
  const value = values[name];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

export function booleanOption(values: ParsedValues, name: string): boolean | undefined {
  const value = values[name];
  return typeof value === "boolean" ? value : undefined;
}

/** A decimal integer option; range checks are left to the KMS, which names the rule. */
export function integerOption(
  values: ParsedValues,
  name: string,
  command: string,
): number | undefined {
  const text = stringOption(values, name);
  if (text === undefined) return undefined;
  if (!/^[0-9]{1,15}$/.test(text)) {
    throw new UsageError(`${command}: --${name} expected a whole number, got "${text}"`, command);
  }
  return Number(text);
}

/**
 * `k=v` pairs (split at the first "="), each key at most once. Every key is kept as given,
 * `__proto__` too: assigned, it would set the object's prototype instead, and the pair would be
 * gone — from the message (`--context`) or from the policy (`--require-context`, then not
 * applied).
 */
export function contextOption(
  values: ParsedValues,
  name: string,
  command: string,
): EncryptionContext | undefined {
  const pairs = stringsOption(values, name);
  if (pairs.length === 0) return undefined;
  const context: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0) {
      throw new UsageError(`${command}: --${name} expected key=value, got "${pair}"`, command);
    }
    const key = pair.slice(0, at);
    if (Object.hasOwn(context, key)) {
      throw new UsageError(`${command}: --${name} names "${key}" twice`, command);
    }
    // A plain object (core refuses other prototypes), with an own property whatever the key.
    Object.defineProperty(context, key, {
      value: pair.slice(at + 1),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return context;
}

/**
 * Refuses arguments that have no UTF-8 form. Only a caller of `runCli` can pass them (the OS
 * hands the bin decoded bytes), and every file-system and encoding layer below would replace a
 * lone surrogate with U+FFFD: `--out "a\ud800"` would write `a\ufffd` and report success.
 */
export function checkWellFormed(argv: readonly unknown[]): void {
  argv.forEach((arg, i) => {
    if (typeof arg !== "string") {
      throw new UsageError(`argument ${i + 1} expected a string, got ${typeof arg}`);
    }
    if (!(arg as unknown as { isWellFormed(): boolean }).isWellFormed()) {
      throw new UsageError(
        `argument ${i + 1} is not well-formed Unicode (a lone surrogate has no UTF-8 form)`,
      );
    }
  });
}

/** What `parseArgs({ tokens: true })` reports for each option occurrence. */
interface OptionToken {
  readonly kind: string;
  readonly name?: string;
  readonly value?: string | undefined;
}

/** Options whose empty value means something (an empty description). */
const EMPTY_ALLOWED: ReadonlySet<string> = new Set(["description"]);

/**
 * The rules parseArgs does not enforce. A single-valued option given twice keeps only its last
 * value, so `--key A --key B` would encrypt under B alone while the user may expect both. An
 * empty value would fall back to a default (`--data-dir ""` → ./.kms) or reach the KMS as a
 * validation error about some other argument name.
 */
export function checkOptionTokens(
  tokens: readonly OptionToken[],
  options: ParseArgsOptionsConfig,
  command: string,
): void {
  const seen = new Set<string>();
  for (const token of tokens) {
    if (token.kind !== "option" || token.name === undefined) continue;
    const option = options[token.name];
    if (option?.type !== "string") continue;
    if (token.value === "" && !EMPTY_ALLOWED.has(token.name)) {
      throw new UsageError(`${command}: --${token.name} expected a value, got ""`, command);
    }
    if (option.multiple === true) continue;
    if (seen.has(token.name)) {
      throw new UsageError(`${command}: --${token.name} given more than once`, command);
    }
    seen.add(token.name);
  }
}
