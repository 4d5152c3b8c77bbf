import type { InputJsonValue, Types } from "@prisma/client/runtime/client";
import type { SpecValueType } from "./field-types.ts";

/**
 * Compile-time typing of inputs. Prisma's generated input types say `string` for a `String`
 * column the extension writes from a number, a date or JSON. For each model with a typed field
 * the extension's type declares a `model` component overriding the operations that take data
 * or a `where` (Prisma lets a model component replace a built-in operation of the same name).
 * Each override is the signature Prisma builds itself (`Exact` arguments, `GetResult` results,
 * the fluent API) with the typed fields of `data` (nested writes included) and `where` retyped.
 * Nothing here exists at runtime: no model component is registered, the query hook does the work.
 *
 * `select`, `include`, `omit` and the result are read from the delegate the method is called on
 * (`this`), so extensions applied after this one (result fields, and selecting them) are still
 * seen. Without a delegate (`ReturnType<typeof prisma.user.findFirst>`, a destructured method)
 * they are the model's types in the client this extension returns, which is also where `data`,
 * `where`, the global `omit` options and the other models of the fluent API come from.
 */

/** Prisma's Decimal (and decimal.js values): what the runtime serializes through `toString()`. */
export interface DecimalLike {
  toFixed(): string;
  isNaN(): boolean;
}

/** What a write accepts for each declared field type (what the runtime serializes). */
export interface FieldInputTypes {
  string: string;
  bytes: Uint8Array;
  number: number;
  boolean: boolean;
  date: Date;
  bigint: bigint;
  decimal: string | number | DecimalLike;
  /**
   * Prisma's own input type for Json columns (serialized with JSON.stringify, so `toJSON` and
   * undefined properties behave as there). A top-level `null` is the column's SQL NULL, allowed
   * where the column is optional.
   */
  json: InputJsonValue;
}

/** The JS type a write accepts for a field declared with `spec` (`null` is Prisma's own). */
export type FieldInputType<Spec> = FieldInputTypes[SpecValueType<Spec>];

/**
 * The operations overridden, each with the argument keys holding data (create or update) of the
 * model. `where` is retyped in every one that has it; aggregate and groupBy keep Prisma's types
 * (the runtime refuses encrypted fields there).
 */
interface DataKeys {
  create: "data";
  createMany: "data";
  createManyAndReturn: "data";
  update: "data";
  updateMany: "data";
  updateManyAndReturn: "data";
  upsert: "create" | "update";
  delete: never;
  deleteMany: never;
  findUnique: never;
  findUniqueOrThrow: never;
  findFirst: never;
  findFirstOrThrow: never;
  findMany: never;
  count: never;
}
type TypedOperation = keyof DataKeys;
/** Operations whose arguments may be left out (Prisma's `{} extends Args`). */
type OptionalArgsOperation = "deleteMany" | "findFirst" | "findFirstOrThrow" | "findMany" | "count";

/** The typed fields of the model whose payload is P. */
type FieldsOf<Map, P> = P extends { name: infer N extends keyof Map }
  ? Map[N]
  : Record<never, never>;

/** The payload of the model a relation field points at (`Post[]` or `User | null`). */
type Related<P, K> = P extends { objects: infer O }
  ? K extends keyof O
    ? NonNullable<O[K]> extends readonly (infer E)[]
      ? E
      : NonNullable<O[K]>
    : never
  : never;

/**
 * One typed field's input `V` (data or filter): the scalar (`string`, or `Uint8Array` for a
 * Bytes column) becomes the declared JS type `J`, at the top, in lists and under the operators
 * `Ops`; `null`, optionality, the `never` of Prisma's `XOR` and the other operators stay.
 */
type Retyped<V, J, Ops> = V extends string | Uint8Array
  ? J
  : V extends null | undefined
    ? V
    : V extends readonly unknown[]
      ? { [I in keyof V]: Retyped<V[I], J, Ops> }
      : V extends object
        ? { [K in keyof V]: K extends Ops ? Retyped<V[K], J, Ops> : V[K] }
        : V;

/** A model's create or update data (or a list of them); `Also` names wrapper keys holding data. */
type Data<X, P, Map, Also extends string = never> = X extends readonly unknown[]
  ? { [I in keyof X]: Data<X[I], P, Map, Also> }
  : X extends object
    ? {
        [K in keyof X]: K extends keyof FieldsOf<Map, P>
          ? Retyped<X[K], FieldInputType<FieldsOf<Map, P>[K]>, "set"> // `{ set }` of an update
          : K extends keyof (P extends { objects: infer O } ? O : never)
            ? Nested<X[K], Related<P, K>, Map>
            : K extends Also
              ? Data<X[K], P, Map>
              : X[K];
      }
    : X;

/** `Keys` of each element of X (an object or a list of them) hold data of model P. */
type Holding<X, P, Map, Keys extends string> = X extends readonly unknown[]
  ? { [I in keyof X]: Holding<X[I], P, Map, Keys> }
  : X extends object
    ? { [K in keyof X]: K extends Keys ? Data<X[K], P, Map> : X[K] }
    : X;

/** A relation field's nested writes (the shapes the runtime walks, see codec.nestedWrites). */
type Nested<X, P, Map> = X extends object
  ? {
      [K in keyof X]: K extends "create"
        ? Data<X[K], P, Map>
        : K extends "connectOrCreate"
          ? Holding<X[K], P, Map, "create">
          : K extends "createMany"
            ? Holding<X[K], P, Map, "data">
            : K extends "upsert"
              ? Holding<X[K], P, Map, "create" | "update">
              : K extends "update" | "updateMany"
                ? // To-one: the data itself or { where, data }; to-many: { where, data }.
                  Data<X[K], P, Map, "data">
                : X[K];
    }
  : X;

/**
 * A `where` of model P: its typed fields, through AND/OR/NOT. On a typed field the shorthand
 * equality and `equals`, `in`, `notIn`, `not` (what runs on ciphertext) take the declared JS
 * type; the other operators keep Prisma's types. Relation filters (`some`, `is`, …) keep
 * Prisma's types: retyping the related models' `where` too made TypeScript give up on unions
 * (TS2590) for filters as plain as `OR: [{ score: { not: 7 } }]`.
 */
type Where<X, P, Map> = X extends readonly unknown[]
  ? { [I in keyof X]: Where<X[I], P, Map> }
  : X extends object
    ? {
        [K in keyof X]: K extends keyof FieldsOf<Map, P>
          ? Retyped<X[K], FieldInputType<FieldsOf<Map, P>[K]>, "equals" | "in" | "notIn" | "not">
          : K extends "AND" | "OR" | "NOT"
            ? Where<X[K], P, Map>
            : X[K];
      }
    : X;

/**
 * An operation's arguments (`Args`, from the delegate's model types) with `data` and `where`
 * replaced by their retyped form from the model types `Fixed` (of the client the extension
 * returns). Retyping the delegate's own types cost about 80 ms of type checking per call, as
 * they are inferred afresh at every call; `data` and `where` do not depend on result extensions,
 * so the fixed ones are the same types, computed once. Exported for declaration files only.
 */
export type TypedArgs<Args, Fixed, Map, Op extends TypedOperation> = {
  [K in keyof Args]: K extends DataKeys[Op] | "where" ? TypedInput<Fixed, Map, Op, K> : Args[K];
};

/** The retyped `data` or `where` of an operation of model types `Fixed`. */
type TypedInput<Fixed, Map, Op extends TypedOperation, K> = K extends keyof ArgsOf<Fixed, Op>
  ? K extends "where"
    ? Where<ArgsOf<Fixed, Op>[K], PayloadOf<Fixed>, Map>
    : Data<ArgsOf<Fixed, Op>[K], PayloadOf<Fixed>, Map>
  : never;

/**
 * A model delegate's types, under a symbol key (Prisma's `DynamicModelExtensionThis`): the typed
 * operations read them from `this`. Exported for declaration files only.
 */
export interface DelegateTypes<T> {
  [key: symbol]: { types: T };
}

/**
 * The model's types in the client's type map: the bound of the delegate's types, and what they
 * are when no delegate is at hand (`ReturnType<typeof prisma.user.findFirst>`).
 */
type ModelOf<TypeMap, Model> = TypeMap extends { model: infer M }
  ? Model extends keyof M
    ? M[Model]
    : never
  : never;

type NameOf<T> = T extends { payload: { name: infer N extends string } } ? N : never;

type ArgsOf<T, Op extends TypedOperation> = T extends {
  operations: { [K in Op]: { args: infer A } };
}
  ? A
  : never;

type PayloadOf<T> = T extends { payload: infer P extends Types.Payload } ? P : never;

type GlobalOmitOf<TypeMap> = TypeMap extends { globalOmitOptions: infer G } ? G : never;

/**
 * Prisma's `DynamicModelExtensionFnResult` with the model's payload from `T`. The fluent API
 * (`prisma.user.findUnique(…).posts()`) is Prisma's own on the client's type map: a named type
 * map keeps the declaration files of code that exports such results small.
 */
type Result<TypeMap, T, A, Op extends TypedOperation> = Op extends
  | "findUnique"
  | "findUniqueOrThrow"
  | "findFirst"
  | "findFirstOrThrow"
  | "create"
  | "update"
  | "upsert"
  | "delete"
  ? Types.Extensions.DynamicModelExtensionFluentApi<
      TypeMap & Types.Extensions.TypeMapDef,
      NameOf<T>,
      Op,
      Types.Extensions.DynamicModelExtensionFnResultNull<Op>
    > &
      Types.Public.PrismaPromise<
        | Types.Result.GetResult<PayloadOf<T>, A, Op, GlobalOmitOf<TypeMap>>
        | Types.Extensions.DynamicModelExtensionFnResultNull<Op>
      >
  : Types.Public.PrismaPromise<Types.Result.GetResult<PayloadOf<T>, A, Op, GlobalOmitOf<TypeMap>>>;

/**
 * An operation as Prisma declares it (`DynamicModelExtensionOperationFn`), except that its
 * arguments accept the declared JS types of the typed fields.
 */
type TypedOperationFn<
  TypeMap,
  Map,
  Model,
  Op extends TypedOperation,
> = Op extends OptionalArgsOperation
  ? <
      T extends ModelOf<TypeMap, Model>,
      A extends TypedArgs<ArgsOf<T, Op>, ModelOf<TypeMap, Model>, Map, Op>,
    >(
      // biome-ignore lint/suspicious/noConfusingVoidType: `this` of an unbound call is void.
      this: DelegateTypes<T> | void,
      args?: Types.Utils.Exact<A, TypedArgs<ArgsOf<T, Op>, ModelOf<TypeMap, Model>, Map, Op>>,
    ) => Result<TypeMap, T, A, Op>
  : <
      T extends ModelOf<TypeMap, Model>,
      A extends TypedArgs<ArgsOf<T, Op>, ModelOf<TypeMap, Model>, Map, Op>,
    >(
      // biome-ignore lint/suspicious/noConfusingVoidType: `this` of an unbound call is void.
      this: DelegateTypes<T> | void,
      args: Types.Utils.Exact<A, TypedArgs<ArgsOf<T, Op>, ModelOf<TypeMap, Model>, Map, Op>>,
    ) => Result<TypeMap, T, A, Op>;

/**
 * The extension's `model` component: the typed operations of every model with a typed field
 * (nothing for a map without one). `TypeMap`: the type map of the client the extension returns.
 */
export type TypedModelOperations<Map, TypeMap> = {
  [Model in keyof Map as keyof Map[Model] extends never ? never : Uncapitalize<Model & string>]: {
    [Op in TypedOperation]: () => TypedOperationFn<TypeMap, Map, Model, Op>;
  };
};
