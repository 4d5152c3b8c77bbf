/**
 * JSON data: the values whose JSON text stands for them alone, so that reading the text back
 * gives an equal value and no two different values share a text. `JSON.stringify` writes many
 * other values too, by dropping or rewriting what JSON has no form for (`{ a: undefined }` as
 * `{}`, a Map as `{}`, NaN as `null`, an object as what its `toJSON()` returns). A json field
 * would lose those silently, and a deterministic value or a blind index would match values that
 * differ. FORMAT §6.3, §6.5.
 */

/** Levels of nested objects and arrays; MySQL's JSON type stops at 100, V8's stack near 4000. */
export const MAX_JSON_DEPTH = 512;
/** Values (members, elements and the value itself); also ends a walk of a huge shared graph. */
export const MAX_JSON_VALUES = 1_000_000;

/**
 * Why a value is not JSON data: what was found, where (`$`, `$.<member 2>[0]`) and what JSON does
 * with it.
 */
export interface NotJsonData {
  readonly found: string;
  readonly path: string;
  readonly why: string;
}

/**
 * The JSON text of `value`, byte for byte what `JSON.stringify(value)` writes, when `value` is
 * JSON data: `null`, a boolean, a finite number (`-0` writes as `0`, as it is equal to it), a
 * string, an array (prototype `Array.prototype`, of any realm) without holes and without members
 * other than its elements, or a plain object (prototype `Object.prototype`, of any realm, or
 * `null`) whose own members are all enumerable and string-keyed, each of them JSON data in turn,
 * at most MAX_JSON_DEPTH levels deep and MAX_JSON_VALUES values in all. Getters are read once.
 * @returns the text, or where and why `value` is not JSON data. A path counts members by their
 * position and never names them: member names are data too (a map keyed by email address).
 * @throws what a getter of `value` throws.
 */
export function jsonDataText(value: unknown): string | NotJsonData {
  try {
    return new JsonWriter().write(value);
  } catch (error) {
    if (error instanceof Refusal) return error.reason();
    throw error;
  }
}

/** Where a value sits in its parent: what JSON does with undefined there differs. */
type Slot = "top" | "element" | "member";

/**
 * Thrown inside the walk only, to leave it in one step; never escapes jsonDataText. Each
 * object and array it passes on the way out adds the step to the member it was writing, so
 * the walk keeps no path while it succeeds.
 */
class Refusal {
  readonly found: string;
  readonly why: string;
  /** The path from the inside out, each step as pathText writes it. */
  readonly steps: string[] = [];
  constructor(found: string, why: string) {
    this.found = found;
    this.why = why;
  }

  reason(): NotJsonData {
    return { found: this.found, path: pathText(this.steps.reverse()), why: this.why };
  }
}

const isEnumerable = Object.prototype.propertyIsEnumerable;

class JsonWriter {
  #values = 0;
  /** The objects and arrays being written. */
  readonly #open = new Set<object>();

  write(value: unknown, slot: Slot = "top"): string {
    this.#values += 1;
    if (this.#values > MAX_JSON_VALUES) {
      throw new Refusal(
        `more than ${MAX_JSON_VALUES} values`,
        "too large to index or store as one",
      );
    }
    switch (typeof value) {
      case "string":
        return JSON.stringify(value);
      case "number":
        if (!Number.isFinite(value))
          throw new Refusal("NaN or ±Infinity", "JSON writes them as null");
        // For a finite number JSON.stringify writes ToString(n), as String does.
        return String(value);
      case "boolean":
        return value ? "true" : "false";
      case "object":
        if (value === null) return "null";
        return Array.isArray(value) ? this.#array(value) : this.#object(value);
      case "bigint":
        throw new Refusal("a bigint", "JSON has no form for it");
      default:
        throw new Refusal(
          value === undefined ? "undefined" : `a ${typeof value}`,
          slot === "element"
            ? "JSON writes it as null"
            : slot === "member"
              ? "JSON leaves the member out"
              : "JSON has no form for it",
        );
    }
  }

  #array(array: readonly unknown[]): string {
    this.#enter(array);
    const proto: unknown = Object.getPrototypeOf(array);
    if (proto !== Array.prototype && !isRealmPrototype(proto, "Array")) refuseInstance(array);
    refuseToJson(array);
    refuseNonElements(array);
    let out = "[";
    let i = 0;
    try {
      for (; i < array.length; i++) {
        const item = array[i];
        out += i === 0 ? this.write(item, "element") : `,${this.write(item, "element")}`;
      }
    } catch (error) {
      if (error instanceof Refusal) error.steps.push(elementStep(i));
      throw error;
    }
    this.#open.delete(array);
    return `${out}]`;
  }

  #object(object: object): string {
    this.#enter(object);
    const proto: unknown = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null && !isRealmPrototype(proto, "Object")) {
      refuseInstance(object);
    }
    refuseToJson(object);
    const keys = Object.keys(object);
    if (Object.getOwnPropertySymbols(object).length > 0) {
      throw new Refusal("a symbol-keyed member", "JSON leaves it out");
    }
    const names = Object.getOwnPropertyNames(object);
    if (names.length !== keys.length) {
      // Counted among all own string-keyed members, in key order, the hidden one included.
      const hidden = names.findIndex((name) => !isEnumerable.call(object, name));
      throw refusalAt(
        memberStep(hidden),
        new Refusal("a non-enumerable member", "JSON leaves it out"),
      );
    }
    let out = "{";
    let i = 0;
    try {
      for (; i < keys.length; i++) {
        const key = keys[i] as string;
        const item = this.write((object as Record<string, unknown>)[key], "member");
        out += `${i === 0 ? "" : ","}${JSON.stringify(key)}:${item}`;
      }
    } catch (error) {
      if (error instanceof Refusal) error.steps.push(memberStep(i));
      throw error;
    }
    this.#open.delete(object);
    return `${out}}`;
  }

  #enter(container: object): void {
    // Found where it first closes, as JSON.stringify finds it: a walk that waited for the depth
    // limit would write a wide cycle (an ORM entity and its back-references) up to a million
    // values first, and name the size, not the cycle.
    if (this.#open.has(container)) throw new Refusal("a cycle", "JSON cannot write it");
    if (this.#open.size >= MAX_JSON_DEPTH) {
      throw new Refusal(
        `nesting deeper than ${MAX_JSON_DEPTH} levels`,
        "too deep to index or store",
      );
    }
    this.#open.add(container);
  }
}

/** JSON.stringify writes what a toJSON() returns, an array's as much as an object's. */
function refuseToJson(container: object): void {
  if (typeof (container as { toJSON?: unknown }).toJSON === "function") {
    throw new Refusal("a toJSON() method", "JSON writes what it returns instead of the object");
  }
}

/**
 * JSON.stringify writes an array's elements and nothing else: a member beside them (`list.extra
 * = 1`, the `index` and `input` of a RegExp match, a symbol-keyed one) would be lost without a
 * word, and the array would match the same array without it. Enumerable and symbol-keyed
 * members only: Object.keys has a fast path for arrays, while listing non-enumerable members
 * too (getOwnPropertyNames) costs ten times the walk of a long array, for members that no
 * JSON.parse, literal or array method makes.
 */
function refuseNonElements(array: readonly unknown[]): void {
  if (Object.getOwnPropertySymbols(array).length > 0) {
    throw new Refusal("a symbol-keyed member", "JSON leaves it out");
  }
  const keys = Object.keys(array);
  const { length } = array;
  // Keys list the elements first, ascending, then the other members: with as many keys as
  // elements and the last element's last among them, every element is there and nothing else.
  if (keys.length === length && (length === 0 || keys[length - 1] === String(length - 1))) return;
  for (let i = 0; i < keys.length; i++) {
    if (!isElementKey(keys[i] as string, length)) {
      throw refusalAt(
        memberStep(i),
        new Refusal("a member that is not an element", "JSON writes only an array's elements"),
      );
    }
  }
  // Only elements, and fewer keys than `length`: a hole, or an element made non-enumerable (which
  // JSON.stringify writes all the same). A hole is no own member; `i in array` would find an
  // element of Array.prototype there, which JSON.stringify would write in its place.
  for (let i = 0; i < length; i++) {
    if (!Object.hasOwn(array, i)) {
      throw refusalAt(elementStep(i), new Refusal("a hole", "JSON writes it as null"));
    }
  }
}

function refusalAt(step: string, refusal: Refusal): Refusal {
  refusal.steps.push(step);
  return refusal;
}

/** `0`…`length - 1` as written by String(i): "01", "-0" and "1e3" name members, not elements. */
function isElementKey(name: string, length: number): boolean {
  const index = Number(name);
  return Number.isInteger(index) && index >= 0 && index < length && String(index) === name;
}

/**
 * Whether `proto` is Object.prototype or Array.prototype of another realm: a plain object or
 * array made in a vm context, or by structuredClone under Jest, which JSON.stringify writes as
 * itself and which was taken before. A class cannot pass for it: its constructor is not native.
 */
function isRealmPrototype(proto: unknown, name: "Object" | "Array"): boolean {
  if (typeof proto !== "object" || proto === null) return false;
  const ctor: unknown = Object.getOwnPropertyDescriptor(proto, "constructor")?.value;
  if (typeof ctor !== "function" || (ctor as { prototype?: unknown }).prototype !== proto) {
    return false;
  }
  const above: unknown = Object.getPrototypeOf(proto);
  const parentOk = name === "Object" ? above === null : isRealmPrototype(above, "Object");
  return (
    parentOk && Function.prototype.toString.call(ctor) === `function ${name}() { [native code] }`
  );
}

function refuseInstance(object: object): never {
  if (object instanceof Date) throw new Refusal("a Date", "JSON writes it as a string");
  const name = constructorName(object);
  throw new Refusal(
    name === undefined ? "an object with a custom prototype" : `an instance of ${name}`,
    "JSON writes only plain objects and arrays as themselves",
  );
}

/** The name of a class is code, not data: it may appear in a message. */
function constructorName(object: object): string | undefined {
  const ctor: unknown = (Object.getPrototypeOf(object) as { constructor?: unknown } | null)
    ?.constructor;
  // An object literal's prototype is no class of its own: "custom prototype" says more.
  const name = typeof ctor === "function" && ctor !== Object ? ctor.name : "";
  return name === "" || name.length > 64 ? undefined : name;
}

/** An element, by its index. */
function elementStep(index: number): string {
  return `[${index}]`;
}

/**
 * A member, by its position from 1 among the own string-keyed members in key order (the order of
 * Object.keys, in which JSON.stringify writes them; an array's elements count). Never by its
 * name: the names of a json value are part of the plaintext, which no message carries.
 */
function memberStep(index: number): string {
  return `.<member ${index + 1}>`;
}

/**
 * `$`, `$[0]`, `$.<member 2>.<member 1>[0]`; the path cut to its first 16 steps, which keeps a
 * message short when a value is refused for its depth.
 */
function pathText(steps: readonly string[]): string {
  const out = `$${steps.slice(0, 16).join("")}`;
  return steps.length > 16 ? `${out}…` : out;
}
