import { AsyncLocalStorage } from "node:async_hooks";
import {
  ConflictError,
  type DataKeyCache,
  type DataKeyCacheLimits,
  type DataKeyStore,
  type EncryptionContext,
  FieldEncryptionEngine,
  type FieldEncryptionEngineOptions,
  type KmsLike,
  ValidationError,
} from "@kms/core";
import { Prisma } from "@prisma/client/extension";
// The runtime entry point the generated client imports and re-exports `Decimal` from as
// `Prisma.Decimal`: resolved the same way, it is the same class (the browser entry point loads
// another copy of it under Node).
import { Decimal } from "@prisma/client/runtime/client";
import type {
  FieldEncryptionExtension,
  FieldTypeMap,
  TypedSchemaDescriptor,
} from "./field-types.ts";
import {
  andClauses,
  Codec,
  type ColumnsOf,
  CURSOR_UNIQUE,
  clone,
  type FormChoice,
  type GlobalOmit,
  isObject,
  type Json,
  keysWithin,
  lowerFirst,
  READS,
  reject,
  reshapes,
  type Strip,
} from "./internal/codec.ts";
import { RelationGuard } from "./internal/relation-guard.ts";
import { ResultFieldRegistry } from "./internal/result-fields.ts";
import {
  type DataKeyCall,
  PrismaDataKeyStore,
  runDataKeyCall,
  transactionEnded,
} from "./prisma-data-key-store.ts";
import {
  type ColumnType,
  checkColumnTypes,
  type ModelDescriptor,
  parseSchema,
  type SchemaDescriptor,
} from "./schema-descriptor.ts";

type TransactionMethod = (this: unknown, ...args: unknown[]) => Promise<unknown>;
type ExtendsMethod = (this: unknown, extension: unknown) => unknown;

/**
 * One interactive `$transaction` call: a transaction, or a savepoint nested in one (Prisma 7
 * runs `tx.$transaction` as a savepoint of `tx`'s transaction, under the same id).
 */
interface TransactionFrame {
  /** The call this one is nested in; undefined for a transaction of its own. */
  readonly parent: TransactionFrame | undefined;
  /**
   * The transaction scopes the call's queries ran under (one, as a rule): ended by a
   * transaction, a savepoint begun in each by a nested call.
   */
  readonly scopes: Set<string>;
}

// biome-ignore lint/complexity/noBannedTypes: the empty map (no typed fields) is the default.
export interface FieldEncryptionOptions<Map extends FieldTypeMap = {}> {
  readonly kms: KmsLike;
  /** The KMS key for new data keys, or a function of the value's context (one key per tenant). */
  readonly keyId: string | ((context: EncryptionContext) => string);
  /**
   * The schema.prisma text (annotations are read from it), or a descriptor: from `defineModels`,
   * or the typed one the `@kms/prisma` generator emits (it also types the extended client).
   */
  readonly schema: string | SchemaDescriptor | TypedSchemaDescriptor<Map>;
  /** Where wrapped data keys live; default: the `dataKeyModel` table through the base client. */
  readonly dataKeyStore?: DataKeyStore;
  /** Model holding wrapped data keys when no dataKeyStore is given; default "KmsDataKey". */
  readonly dataKeyModel?: string;
  readonly cache?: DataKeyCacheLimits;
  /** One DataKeyCache shared with encryptMessage or other engines; not with `cache`. */
  readonly dataKeyCache?: DataKeyCache;
  /**
   * Read unprefixed (legacy plaintext) values as they are, for migrations. Default false. While
   * on, equality lookups also match the legacy rows, by the value itself, sent in clear.
   */
  readonly legacyPlaintext?: boolean;
  /**
   * KMS keys the values were written under before `keyId`: data keys are unwrapped only under
   * `keyId` or one of these (a value under any other KMS key is InvalidCiphertextException), and
   * deterministic values and blind indexes under them still match lookups. After switching
   * `keyId` or re-pointing an alias it names, list the former key on the application's client
   * and on the job's engine until the job has moved the rows (README, "Reads while the job
   * runs"). Not with `engine` (give it to that engine).
   */
  readonly previousKeyIds?: FieldEncryptionEngineOptions["previousKeyIds"];
  /** Use an existing engine (shares its caches) instead of building one. */
  readonly engine?: FieldEncryptionEngine;
}

/**
 * A Prisma Client extension that encrypts annotated fields on the way in and decrypts them on
 * the way out: `prisma.$extends(fieldEncryption({ kms, keyId, schema }))`. Only the client it
 * returns encrypts; the base client reads and writes raw ciphertext.
 * @throws ValidationException when applied, for a descriptor registered under another model's
 *   name or a context column that is not String, Int, BigInt, Float or an enum; from queries,
 *   when a filter cannot run on ciphertext (incl. `not`/`notIn`/`NOT` on a field bound to the
 *   ambient scope without its tenant column pinned), when context values are missing, when a
 *   value is already ciphertext, when a nested write's form is ambiguous, or when the query goes
 *   through a relation the descriptor does not list; InvalidCiphertextException when a stored
 *   value does not decrypt (tampered, moved, under a KMS key that is neither `keyId` nor in
 *   `previousKeyIds`, or plaintext in strict mode).
 *
 * Typed results: the field type map `Map` (inferred from a typed descriptor passed as `schema`,
 * or given as `fieldEncryption<Map>(…)`) makes the extended client's results carry each
 * field's declared JS type (a `type: json` column is `JsonValue`, not `string`).
 * Typed inputs: with the client known, `data` (nested writes too) and `where` accept the
 * declared JS types. `Client` is inferred when the call is written inside `$extends(…)`; a type
 * argument for `Map` stops that inference, so name the client too: `fieldEncryption<Map,
 * typeof base>(…)`.
 */
// biome-ignore lint/complexity/noBannedTypes: the empty map (no typed fields) is the default.
export function fieldEncryption<Map extends FieldTypeMap = {}, Client = unknown>(
  options: FieldEncryptionOptions<Map>,
): FieldEncryptionExtension<Map, Client> {
  const models = typeof options.schema === "string" ? parseSchema(options.schema) : options.schema;
  if (models === undefined || typeof models !== "object") {
    throw new ValidationError(`"schema" expected schema.prisma text or a descriptor`);
  }
  for (const [key, model] of Object.entries(models)) {
    // Values are bound to the descriptor's name: one registered under another model's key
    // would bind both models' values under one name, and a value copied from one model's
    // column into the other's would decrypt there.
    const name: unknown = isObject(model) ? model.name : undefined;
    if (name !== key) {
      throw new ValidationError(
        `"schema": the descriptor under "${key}" is model ${typeof name === "string" ? `"${name}"` : "without a name"}: give each model its own descriptor, under its own name`,
      );
    }
  }
  const dataKeyModel = options.dataKeyModel ?? "KmsDataKey";
  if (
    models[dataKeyModel] !== undefined &&
    Object.keys(models[dataKeyModel].encrypted).length > 0
  ) {
    throw new ValidationError(`"${dataKeyModel}" holds data keys and cannot have encrypted fields`);
  }
  const extension = Prisma.defineExtension((client) => {
    // The `$extends` of the client this one is applied to: Prisma's, unless an instance of this
    // extension is applied to the client already (its client component's, which every client
    // made from it inherits). A second one would see the first's ciphertext as values to encrypt
    // and its own results as values to decrypt: refused here, before any query.
    const baseExtends = (client as unknown as { $extends: ExtendsMethod }).$extends;
    if (extendsOfInstances.has(baseExtends)) {
      throw new ValidationError(
        "fieldEncryption is already applied to this client (or to one it was made from): apply it once per chain of $extends; one instance covers every model of its schema",
      );
    }
    // Only the client knows its columns' types (`checkAgainst` lists names): a configuration
    // that puts ciphertext in an enum or Int column, or names a column the model lacks, is
    // refused here, before any query.
    checkColumnTypes(models, (model) => columnsOf(client, model));
    // Prisma hands out one delegate object per model and client: a PrismaDataKeyStore built on
    // it (this one, or one the application passes) is this client's, whose transactions it joins.
    const dataKeyDelegate = (
      client as unknown as Record<string, ConstructorParameters<typeof PrismaDataKeyStore>[0]>
    )[lowerFirst(dataKeyModel)];
    const store =
      options.dataKeyStore ??
      new PrismaDataKeyStore(
        dataKeyDelegate ?? reject(`the client has no "${dataKeyModel}" model for data keys`),
      );
    const engine =
      options.engine ??
      new FieldEncryptionEngine({
        kms: options.kms,
        keyId: options.keyId,
        dataKeyStore: store,
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.dataKeyCache === undefined ? {} : { dataKeyCache: options.dataKeyCache }),
        ...(options.legacyPlaintext === undefined
          ? {}
          : { legacyPlaintext: options.legacyPlaintext }),
        ...(options.previousKeyIds === undefined ? {} : { previousKeyIds: options.previousKeyIds }),
      });
    // Asked for every key of a query: one test per model.
    const columnTests = new Map<string, ((column: string) => boolean) | undefined>();
    const isColumnOf: ColumnsOf = (model) => {
      if (!columnTests.has(model)) {
        const columnType = columnsOf(client, model);
        columnTests.set(
          model,
          columnType === undefined ? undefined : (column) => columnType(column) !== undefined,
        );
      }
      return columnTests.get(model);
    };
    const resultFields = new ResultFieldRegistry(client);
    const durable = new Codec(
      engine,
      models,
      {},
      (text) => new Decimal(text),
      globalOmitOf(client),
      isColumnOf,
      (model) => resultFields.of(model),
    );
    const relations = new RelationGuard(models, isColumnOf);
    // Interactive transactions: the query hook records each transaction's scope in the frame
    // of the `$transaction` call that runs it, and that call ends the scope once Prisma has
    // committed or rolled back, so keys made inside a committed transaction serve later writers.
    // A `tx.$transaction` nested in it runs as a savepoint of the same transaction (same id):
    // its frame reports the savepoint instead, so that its rollback drops the keys made inside
    // it and its commit (a release) leaves them to the outer transaction's outcome.
    const frames = new AsyncLocalStorage<TransactionFrame>();
    /** The frame of each transaction client handed to a `$transaction` callback. */
    const framesOfClients = new WeakMap<object, TransactionFrame>();
    const baseTransaction = (client as unknown as { $transaction: TransactionMethod }).$transaction;
    const enter = (frame: TransactionFrame | undefined, transactionScope: string): void => {
      if (frame === undefined || frame.scopes.has(transactionScope)) return;
      // The savepoints around this one began first.
      enter(frame.parent, transactionScope);
      frame.scopes.add(transactionScope);
      if (frame.parent !== undefined) engine.beginTransactionSavepoint(transactionScope);
    };
    // A query in an interactive transaction reads and makes data keys on the connection the
    // transaction holds (see PrismaDataKeyStore), never on a second one from a pool that
    // transactions may hold whole: when the transaction's end reaches the engine through the
    // `$transaction` below (a frame is open). The store learns what it needs of each query here.
    const dataKeyCall = (params: object): DataKeyCall => {
      const tx = (
        params as { __internalParams?: { transaction?: { kind?: string; id?: unknown } } }
      ).__internalParams?.transaction;
      const frame = frames.getStore();
      if (tx?.kind === "itx" && frame !== undefined) {
        const scope = itxScope(tx.id);
        return {
          transaction: tx,
          scope,
          rolledBack: () => engine.endTransactionScope(scope, "rollback"),
        };
      }
      const enclosing = new Set<string>();
      for (let f = frame; f !== undefined; f = f.parent) for (const s of f.scopes) enclosing.add(s);
      return { transaction: undefined, enclosing };
    };
    const joiningTransactions =
      <P extends object, R>(hook: (params: P) => Promise<R>) =>
      (params: P): Promise<R> =>
        runDataKeyCall(dataKeyDelegate, dataKeyCall(params), () => hook(params));
    // Every client made from this one comes from here, with Prisma's client component merging:
    // the result fields of every extension applied after this one are recorded before Prisma
    // applies it (a function extension applies its objects through here too).
    const $extends: ExtendsMethod = function (this: unknown, extension: unknown): unknown {
      resultFields.add(extension);
      return baseExtends.call(this, extension);
    };
    extendsOfInstances.add($extends);
    return client.$extends({
      name: "@kms/prisma",
      client: {
        $extends,
        $transaction(this: unknown, ...args: unknown[]): Promise<unknown> {
          const callback = args[0];
          // The array form runs in one batch with no callback: nothing to scope.
          if (typeof callback !== "function") return baseTransaction.apply(this, args);
          // Called on a transaction client (`tx.$transaction`): nested in that client's frame.
          const parent =
            typeof this === "object" && this !== null ? framesOfClients.get(this) : undefined;
          const frame: TransactionFrame = { parent, scopes: new Set() };
          const run = (tx: unknown): unknown => {
            if (typeof tx === "object" && tx !== null) framesOfClients.set(tx, frame);
            return (callback as (tx: unknown) => unknown)(tx);
          };
          const end = (outcome: "commit" | "rollback"): void => {
            for (const scope of frame.scopes) {
              if (parent === undefined) {
                engine.endTransactionScope(scope, outcome);
                transactionEnded(dataKeyDelegate, scope);
              } else {
                engine.endTransactionSavepoint(
                  scope,
                  outcome === "commit" ? "release" : "rollback",
                );
              }
            }
          };
          return frames
            .run(frame, () => baseTransaction.apply(this, [run, ...args.slice(1)]))
            .then(
              (value) => {
                end("commit");
                return value;
              },
              (error: unknown) => {
                end("rollback");
                throw error;
              },
            );
        },
      },
      query: {
        $allModels: {
          // A data key is read or made on the connection of the query's interactive transaction.
          $allOperations: joiningTransactions(async (params) => {
            const { model: modelName, operation, args, query, ...rest } = params;
            // Before anything else: a model the descriptor leaves out is not walked at all.
            relations.check(modelName, operation, args);
            const model = durable.model(modelName);
            if (model === undefined) return query(args);
            // Inside an interactive transaction the data key row may share the transaction
            // (SQLite has one connection): keys created there must not outlive it.
            const internal = (
              rest as {
                __internalParams?: {
                  transaction?: { kind?: string; id?: unknown };
                  args?: unknown;
                };
              }
            ).__internalParams;
            const tx = internal?.transaction;
            let codec = durable;
            if (tx?.kind === "itx") {
              const transactionScope = itxScope(tx.id);
              enter(frames.getStore(), transactionScope);
              codec = durable.withOptions({ transactionScope });
            }
            const args0 = clone(args ?? {}) as Json;
            // A unique input takes one value: while a migration is under way a value may have
            // several stored forms, and the query then runs with each in turn (`eachForm`).
            const choices: FormChoice[] | undefined = UNIQUE_INPUTS.has(operation) ? [] : undefined;
            if (isObject(args0.where)) await codec.where(model, args0.where, undefined, choices);
            const whereCtx = isObject(args0.where)
              ? codec.context(model, [args0.where, ...andClauses(model, args0.where)])
              : undefined;
            // A cursor is a unique filter: its encrypted fields are rewritten like the where's.
            if (isObject(args0.cursor)) {
              await codec.where(model, args0.cursor, whereCtx, CURSOR_UNIQUE);
            }
            const execute = async (a: Json): Promise<unknown> => {
              switch (operation) {
                case "create":
                  if (isObject(a.data))
                    await codec.writeData(model, a.data, codec.context(model, [a.data]));
                  break;
                case "createMany":
                case "createManyAndReturn":
                  for (const item of Array.isArray(a.data) ? a.data : [a.data]) {
                    if (isObject(item))
                      await codec.writeData(model, item, codec.context(model, [item]));
                  }
                  break;
                case "update":
                case "updateMany":
                case "updateManyAndReturn":
                  if (isObject(a.data)) {
                    const where = (a.where as Json | undefined) ?? {};
                    const sources = [a.data, where, ...andClauses(model, where)];
                    let ctx = codec.context(model, sources);
                    const rowSources: Json[] = [];
                    const unpinned =
                      operation === "update"
                        ? codec.unpinnedColumns(model, a.data, ctx, sources)
                        : [];
                    if (unpinned.length > 0) {
                      // A batch takes one statement per call: a second one (the read below) goes
                      // out with a later call, outside this batch's transaction.
                      if (tx?.kind === "batch") {
                        reject(
                          `${model.name} binds encrypted fields to ${unpinned.join(", ")}: inside a batch $transaction an update cannot read its row's first; give ${unpinned.join(", ")} as an exact equality in where`,
                        );
                      }
                      // The row's own context columns (an update with empty data reads the unique
                      // row, locking it inside a transaction). The where is the rewritten one: a
                      // branch pinning its own tenant may look up an encrypted field, whose
                      // plaintext must not reach the database.
                      const select = Object.fromEntries(unpinned.map((k) => [k, true]));
                      const row = (await query({
                        where: a.where,
                        data: {},
                        select,
                      } as typeof args)) as Json;
                      ctx ??= codec.context(model, [row]);
                      rowSources.push(row);
                      // Outside a transaction the read and the write are two statements: the
                      // write matches the row only while it still holds what was read, so a row
                      // moved to another tenant in between fails the update (Prisma's "record not
                      // found") instead of taking values sealed under the tenant it left.
                      const pins = Object.fromEntries(unpinned.map((k) => [k, row[k]]));
                      const and = (a.where as Json | undefined)?.AND;
                      a.where = { ...(a.where as Json), AND: [and ?? [], pins].flat() };
                    }
                    await codec.writeData(model, a.data, ctx, where, rowSources);
                  }
                  break;
                case "upsert":
                  // The created row holds its `create` data only: Prisma copies nothing from the
                  // where into it, so a tenant or recordId given only there would seal values under
                  // a column the row leaves null (or at its default), where they never decrypt.
                  if (isObject(a.create)) {
                    await codec.writeData(model, a.create, codec.context(model, [a.create]));
                  }
                  if (isObject(a.update)) {
                    const where = (a.where as Json | undefined) ?? {};
                    await codec.writeData(
                      model,
                      a.update,
                      codec.context(model, [a.update, where, ...andClauses(model, where)]),
                      where,
                    );
                  }
                  break;
                case "aggregate":
                case "groupBy": {
                  // The where and cursor were rewritten above: a lookup there compares ciphertext
                  // for equality, as findMany's does. Everywhere else (by, _count, _sum, _avg, _min,
                  // _max, having, orderBy) a field is grouped or computed over. Only names count:
                  // a string value equal to a field's name does not use the field.
                  const named = new Set<string>();
                  for (const [key, value] of Object.entries(a)) {
                    if (key === "by") {
                      for (const f of [value].flat()) if (typeof f === "string") named.add(f);
                    } else if (key !== "where" && key !== "cursor") {
                      keysWithin(value, named);
                    }
                  }
                  for (const key of Object.keys(model.encrypted)) {
                    if (named.has(key)) {
                      reject(
                        `${model.name}.${key} is encrypted: ${operation} cannot compute over ciphertext`,
                      );
                    }
                  }
                  break;
                }
              }
              codec.refuseCiphertextOrder(model, a);
              await codec.relationWheres(model, a);
              const writesRows = WRITES_RETURNING_ROWS.has(operation);
              const returnsRows = writesRows || READS.has(operation);
              // A count's select names the columns whose non-null values it counts: it reads no
              // value, so it needs no context column (an added one would be counted and returned).
              const strip =
                operation === "count"
                  ? undefined
                  : codec.prepareRead(model, a, returnsRows, writesRows);
              const result = await query(a as typeof args);
              let rowStrip = strip;
              if (strip !== undefined && reshapes(strip) && isObject(internal?.args)) {
                // Prisma 7 shapes the result fields of other extensions, once the hooks have
                // returned, by the arguments the innermost one gave `query`, which it keeps on
                // the request parameters each hook is handed (no public API). Given them without
                // what this hook added (what hooks inside it added stays), it hides a column
                // added here behind a field that needs it, as without this extension, instead
                // of taking it for asked; on a release that keeps them elsewhere the column
                // merely stays hidden (see `prepareRead`).
                const restored = codec.restoreShape(model, internal.args, strip, returnsRows);
                internal.args = restored.args;
                rowStrip = restored.strip;
              }
              if (returnsRows) {
                // The fluent API (`user.findUnique(…).posts()`) hands the hook the related
                // records already unwrapped along dataPath ["select", "posts", …].
                const dataPath = (internal as { dataPath?: unknown } | undefined)?.dataPath;
                let target: ModelDescriptor | undefined = model;
                let targetStrip: Strip | undefined = rowStrip;
                if (Array.isArray(dataPath)) {
                  for (let i = 1; i < dataPath.length && target !== undefined; i += 2) {
                    const relation = String(dataPath[i]);
                    const next: string | undefined = target.relations[relation];
                    targetStrip = targetStrip?.relations[relation];
                    target = next === undefined ? undefined : codec.model(next);
                  }
                }
                if (target !== undefined) await codec.readResult(target, result, targetStrip);
              }
              return result;
            };
            if (choices === undefined || choices.length === 0) return execute(args0);
            // A delete's row is found by a read first: the same query, as a findUnique (the hook's
            // second argument, Prisma's own request parameters, keeps it in the transaction).
            const read = (a: Json): Promise<unknown> =>
              (query as unknown as (a: unknown, params: unknown) => Promise<unknown>)(a, {
                ...internal,
                action: "findUnique",
                clientMethod: `${lowerFirst(model.name)}.findUnique`,
                dataPath: [],
                unpacker: undefined,
                argsMapper: undefined,
              });
            return eachForm(
              model.name,
              operation,
              choices,
              args0,
              execute,
              (a) => query(a as typeof args),
              read,
              tx,
            );
          }),
        },
      },
    });
  });
  // The declared result types are carried by the return type alone (see field-types.ts).
  return extension as unknown as FieldEncryptionExtension<Map, Client>;
}

/** The engine's transaction scope of Prisma's interactive transaction `id`. */
function itxScope(id: unknown): string {
  return `itx:${String(id)}`;
}

/** The `$extends` of the clients an instance of the extension was applied to (see above). */
const extendsOfInstances = new WeakSet<ExtendsMethod>();

/**
 * The client's `omit` option (`new PrismaClient({ omit: { user: { tenantId: true } } })`),
 * which Prisma applies to every query returning rows after the query hook has seen its
 * arguments: a context column it omits must be asked for back (`Codec.prepareRead`). Prisma 7
 * keeps it on the client as `_globalOmit` and exposes it through no public API; a client without
 * it omits nothing.
 */
function globalOmitOf(client: unknown): GlobalOmit {
  const omit = isObject(client) ? client._globalOmit : undefined;
  return isObject(omit) ? (omit as GlobalOmit) : {};
}

/**
 * A model's columns from the client's field references (`prisma.user.fields.email`, the public
 * FieldRef with `typeName` and `isList`, one for each scalar field): the type of a column, or
 * undefined for a name that is none. Undefined for a model the client lacks.
 */
function columnsOf(
  client: unknown,
  model: string,
): ((column: string) => ColumnType | undefined) | undefined {
  const delegate = isObject(client) ? client[lowerFirst(model)] : undefined;
  const fields = isObject(delegate) ? delegate.fields : undefined;
  if (!isObject(fields)) return undefined;
  return (column) => {
    // A prototype's member (`toString`) is a function, not a FieldRef.
    const ref = fields[column];
    if (!isObject(ref) || typeof ref.typeName !== "string") return undefined;
    return {
      typeName: ref.typeName,
      isList: ref.isList === true,
      ...(typeof ref.isEnum === "boolean" ? { isEnum: ref.isEnum } : {}),
    };
  };
}

/** Writes that return rows (`select`, `include`, `omit`). */
const WRITES_RETURNING_ROWS = new Set([
  "create",
  "update",
  "upsert",
  "delete",
  "createManyAndReturn",
  "updateManyAndReturn",
]);
/** Operations whose where is a unique input (WhereUniqueInput). */
const UNIQUE_INPUTS = new Set(["findUnique", "findUniqueOrThrow", "update", "delete", "upsert"]);
/** Queries per unique lookup at most (every combination of the forms of its values). */
const MAX_FORM_VARIANTS = 16;

/** Prisma's "record not found" (P2025): what a unique lookup under a form that no row holds gives. */
function notFound(error: unknown): boolean {
  return isObject(error) && error.code === "P2025";
}

/**
 * Runs a query whose unique input has values with several stored forms (a migration under way:
 * `previousKeyIds`, `legacyPlaintext`): it looks for the row under every combination of forms,
 * the current forms first. The job only ever moves a row from a previous form to the current
 * one, so a row is found under one combination at most, and a row missed under the current form
 * and then under its previous one (moved between the two) is found by one more try of the
 * current forms. A findUnique then answers null; the others fail with Prisma's not-found error,
 * as they would.
 *
 * Rows found under two combinations are two rows: one created while the migration runs beside
 * an old row holding the same value in its old form, which the unique constraint, comparing
 * stored forms, let through. Picking either would hand one user's row to another (a signup
 * shadowing an account not migrated yet), so the lookup fails with a ConflictError naming the
 * fields, never the value.
 *
 * An update and a delete first find their row with a read (an update with empty data, which
 * changes nothing; a findUnique) and then run once: a failed write may have applied part of its
 * nested writes, so it is never simply repeated. An upsert cannot be made right: the database's
 * unique constraint compares only the form its create writes, so a row under another form would
 * be missed and a second one created. It is refused, as is any such lookup inside a batch
 * $transaction, where no query can be run again.
 * @throws ConflictException when rows hold the value under more than one combination of forms.
 * @throws ValidationException for an upsert or a batch transaction, and with more than 16
 *   combinations of forms.
 */
async function eachForm(
  modelName: string,
  operation: string,
  choices: readonly FormChoice[],
  args: Json,
  run: (args: Json) => Promise<unknown>,
  query: (args: Json) => Promise<unknown>,
  read: (args: Json) => Promise<unknown>,
  tx: { kind?: string } | undefined,
): Promise<unknown> {
  const names = [...new Set(choices.map((c) => c.name))].join(", ");
  if (operation === "upsert") {
    reject(
      `${names}: an upsert on a unique key holding an encrypted value cannot run while a migration is under way (previousKeyIds, legacyPlaintext): the value has several stored forms and the database's unique constraint compares only the one the create writes, so a row the migration has not reached yet would be missed and a second one created; find the row with findUnique (which tries every form) and then update or create it, or finish the migration`,
    );
  }
  if (tx?.kind === "batch") {
    reject(
      `${names}: inside a batch $transaction a lookup by a unique key cannot try the several stored forms its value has while a migration is under way (previousKeyIds, legacyPlaintext); use an interactive transaction, or look the row up by another key`,
    );
  }
  let variants: number[][] = [[]];
  for (const choice of choices) {
    variants = variants.flatMap((v) => choice.forms.map((_, i) => [...v, i]));
    if (variants.length > MAX_FORM_VARIANTS) {
      reject(
        `${names}: a unique lookup whose values have ${variants.length}+ combinations of stored forms would take as many queries; look the row up by fewer encrypted values`,
      );
    }
  }
  const use = (variant: readonly number[]) => {
    choices.forEach((c, i) => {
      c.holder[c.key] = c.forms[variant[i] as number];
    });
  };
  const duplicates = (): never => {
    throw new ConflictError(
      `${modelName}: more than one row holds the value looked up by ${names}, in different stored forms: a row written while the migration is under way (previousKeyIds, legacyPlaintext) beside one it has not reached yet; refusing to pick one — resolve the duplicate, then finish the migration`,
    );
  };
  if (operation === "update" || operation === "delete") {
    const field = (choices[0] as FormChoice).field;
    /** Whether a row holds the where under the forms in use: false on not-found, other errors thrown. */
    const probe =
      operation === "update"
        ? async (): Promise<boolean> => {
            try {
              await query({ where: clone(args.where), data: {}, select: { [field]: true } });
              return true;
            } catch (error) {
              if (!notFound(error)) throw error;
              return false;
            }
          }
        : async (): Promise<boolean> =>
            (await read({ where: clone(args.where), select: { [field]: true } })) !== null;
    /** The one combination a row holds the value under; undefined when none does. */
    const locate = async (): Promise<readonly number[] | undefined> => {
      const found: (readonly number[])[] = [];
      for (const variant of variants) {
        use(variant);
        if (await probe()) found.push(variant);
      }
      if (found.length > 1) duplicates();
      if (found.length === 1) return found[0];
      use(variants[0] as number[]);
      return (await probe()) ? variants[0] : undefined;
    };
    // No row under any form: the current one, for Prisma's own not-found error.
    let variant = (await locate()) ?? (variants[0] as number[]);
    for (let tries = 1; ; tries++) {
      use(variant);
      try {
        return await run(clone(args));
      } catch (error) {
        // Not found under the form just read: the job moved the row in between. Any other
        // failure (not found in a nested write, whatever else) stands.
        if (!notFound(error) || tries === 3) throw error;
        const again = await locate();
        if (again === undefined || again.every((i, n) => i === variant[n])) throw error;
        variant = again;
      }
    }
  }
  // findUnique(OrThrow): each combination is itself the read.
  const order = [...variants, variants[0] as number[]];
  let hit: { result: unknown } | undefined;
  let missed: unknown;
  for (const [n, variant] of order.entries()) {
    // The last try repeats the current forms for a row moved meanwhile: only when none was found.
    if (n === variants.length && hit !== undefined) break;
    use(variant);
    try {
      const result = await run(clone(args));
      if (result === null) continue;
      if (hit !== undefined) duplicates();
      hit = { result };
    } catch (error) {
      if (!notFound(error)) throw error;
      missed = error;
    }
  }
  if (hit !== undefined) return hit.result;
  if (operation === "findUnique") return null;
  throw missed;
}
