import { FindOperator } from "typeorm";

/** A where object, or the object given for one of its embeddeds or relations. */
export type Where = Record<string, unknown>;

/** An object where (`{ street }` for an embedded, a relation's), not a value or an operator. */
export function isObjectWhere(value: unknown): value is Where {
  return (
    typeof value === "object" &&
    value !== null &&
    !(value instanceof FindOperator) &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    !(value instanceof Date)
  );
}
