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

/** `k=v` pairs (split at the first "="), each key at most once. */
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
    context[key] = pair.slice(at + 1);
  }
  return context;
}
