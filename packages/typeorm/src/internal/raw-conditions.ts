import { type EntityMetadata, FindOperator } from "typeorm";
import { describe } from "./entity-descriptor.ts";
import { isObjectWhere, type Where } from "./object-where.ts";

// TypeORM inlines a Raw condition's SQL as written. find() brackets each property's condition,
// but update/delete criteria and QueryBuilder.where(object) join a where's properties with a bare
// AND, And() joins its operands so, and QueryBuilder.andWhere appends to a one-property where
// without brackets: an OR at the top of that SQL takes the conditions after it into one branch
// only. Brackets of Not, And or Or do not hold either, against SQL that closes them. Where the
// adapter adds a condition of its own beside the caller's where, Raw there is refused.

/** `condition` is Raw, or an operator holding one (`Not(Raw(…))`, `And(…, Raw(…))`). */
export function holdsRaw(condition: unknown): boolean {
  if (!(condition instanceof FindOperator)) return false;
  const op: FindOperator<unknown> = condition;
  if (op.type === "raw") return true;
  if (op.child !== undefined) return holdsRaw(op.child);
  const inner: unknown = op.value;
  return Array.isArray(inner) && inner.some(holdsRaw);
}

/**
 * The property path of the first column that the object where `where` of `metadata`'s entity
 * compares with Raw SQL (its embeddeds' and relations' wheres included: `address.city`,
 * `owner.region`), undefined when none does. Encrypted and blind index columns are left out:
 * Raw there is refused when TypeORM builds the query, its SQL being plaintext.
 */
export function rawColumnIn(
  metadata: EntityMetadata,
  where: Where,
  prefix = "",
): string | undefined {
  const d = describe(metadata);
  for (const [key, value] of Object.entries(where)) {
    const path = `${prefix}${key}`;
    if (isObjectWhere(value)) {
      const relation = metadata.findRelationWithPropertyPath(path);
      if (relation !== undefined) {
        const inner = rawColumnIn(relation.inverseEntityMetadata, value);
        if (inner !== undefined) return `${path}.${inner}`;
        continue;
      }
      if (metadata.hasEmbeddedWithPropertyPath(path)) {
        const inner = rawColumnIn(metadata, value, `${path}.`);
        if (inner !== undefined) return inner;
        continue;
      }
    }
    if (d?.byPath.has(path) === true || d?.blindIndexes.has(path) === true) continue;
    if (holdsRaw(value)) return path;
  }
  return undefined;
}
