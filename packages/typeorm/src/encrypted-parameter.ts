import { ValidationError } from "@kms/core";
import { FindOperator, type FindOptionsWhere, type ObjectLiteral, type Repository } from "typeorm";
import { type EncryptedWhereOptions, encryptedWhere } from "./encrypted-where.ts";
import { describe } from "./internal/entity-descriptor.ts";
import { isObjectWhere } from "./internal/object-where.ts";
import { Sealed } from "./internal/sealed.ts";

/**
 * The stored form of one lookup value, for hand-written QueryBuilder conditions:
 * `qb.where("u.emailIndex = :e", { e: await encryptedParameter(repo, "email", "a@b.c") })`.
 * Returns the deterministic ciphertext, or the blind index (compare it with the index column).
 * Only for condition strings: an object where (`findBy({ emailIndex: … })`) refuses a bare
 * string on a blind index column; give the property to `encryptedWhere` there. A column of an
 * embedded class is named by its property path (`"address.street"`). While a migration is under
 * way a value may have several stored forms, which one parameter cannot carry: use
 * `encryptedParameters` then (it works at any time).
 * @throws ValidationException as `encryptedWhere`, when `value` is null or an operator, and when
 *   the value has several stored forms (a migration under way).
 */
export async function encryptedParameter<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: (keyof T & string) | `${keyof T & string}.${string}`,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<string | Uint8Array> {
  const { forms, name, legacy } = await parameterForms(repository, property, value, options);
  if (forms.length > 1 || legacy) {
    throw new ValidationError(
      `${name} has several stored forms while a migration is under way (previousKeyIds, legacyPlaintext): one parameter would miss the rows holding the others; compare all of them with encryptedParameters(), "… IN (:...values)"`,
    );
  }
  return forms[0] as string | Uint8Array;
}

/**
 * Every stored form of one lookup value, for hand-written QueryBuilder conditions that must find
 * rows during a migration too (`previousKeyIds`, `legacyPlaintext`): the current form first, then
 * the others, `qb.where("u.email IN (:...e)", { e: await encryptedParameters(repo, "email", v) })`.
 * One form outside migrations. For a blind-indexed property these are its indexes (compare them
 * with the index column): legacy plaintext rows have none yet and are not matched by them; look
 * such a property up with `encryptedWhere` (`qb.where(await encryptedWhere(…))`), which matches
 * them on the property's column.
 * @throws ValidationException as `encryptedParameter`, but not for several forms.
 */
export async function encryptedParameters<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: (keyof T & string) | `${keyof T & string}.${string}`,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<(string | Uint8Array)[]> {
  return (await parameterForms(repository, property, value, options)).forms;
}

/**
 * The stored forms of `value` in the column `property` is compared on, through `encryptedWhere`
 * (which reads the context from the where, the option or the scope); `legacy` when a
 * blind-indexed value also has a legacy form (matched on another column).
 */
async function parameterForms<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: string,
  value: unknown,
  options: EncryptedWhereOptions,
): Promise<{ forms: (string | Uint8Array)[]; name: string; legacy: boolean }> {
  const d = describe(repository.metadata);
  if (d === undefined || !d.byPath.has(property)) {
    throw new ValidationError(
      `"${property}" is not an encrypted property of ${repository.metadata.name}`,
    );
  }
  const name = `${d.model}.${property}`;
  const single = () =>
    new ValidationError(`"value" of ${name} must be a single value (not null or an operator)`);
  if (value === null || value instanceof FindOperator) throw single();
  // `{ address: { street: value } }` for "address.street".
  const where = property
    .split(".")
    .reduceRight<unknown>((inner, key) => ({ [key]: inner }), value) as FindOptionsWhere<T>;
  const rewritten: unknown = await encryptedWhere(repository, [where], options);
  // Two alternatives: the index, and legacy rows on the property's own column.
  const legacy = Array.isArray(rewritten) && rewritten.length > 1;
  let out: unknown = Array.isArray(rewritten) ? rewritten[0] : rewritten;
  while (isObjectWhere(out) && !(out instanceof Sealed)) out = Object.values(out)[0];
  if (out instanceof Sealed) return { forms: [out.stored], name, legacy };
  if (out instanceof FindOperator && out.type === "in" && Array.isArray(out.value)) {
    const values: unknown[] = out.value;
    if (values.every((v) => v instanceof Sealed)) {
      return { forms: values.map((v) => (v as Sealed).stored), name, legacy };
    }
  }
  throw single();
}
