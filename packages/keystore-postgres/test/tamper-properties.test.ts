/**
 * Property tests for a writer of the PostgreSQL schema (SQL injection, a compromised replica
 * promoted to primary, a DBA) who does not hold the root key: the PostgreSQL counterpart of
 * keystore-sqlite's tamper-properties.test.ts and public-key-tamper.test.ts. Cases come from a
 * seeded PRNG (`@kms/tooling/random`), and every failure names its seed, so it replays.
 *
 * What the design promises (docs/THREAT-MODEL.md "Write access to the key store", FORMAT.md §4
 * and §4.1):
 * - every key record (its version rows, material, public keys, state, rotation, tags, policy
 *   and grants) and every alias carries a record seal, a MAC under the root key. A record a
 *   writer changed in any way is refused as a whole: every use of that key (or alias) fails
 *   with RootKeyError naming its ARN (or name) and the store, so no tampered material is used,
 *   no forged grant or policy is obeyed, and no wrong plaintext comes back. Every record left
 *   intact works exactly as in the untampered store (checked against a Kms over a pristine
 *   copy of the schema). Which records changed is read from the schema after each tamper;
 * - a seal cannot vouch for a record that is gone: a deleted key or alias is unknown;
 * - behind the seal, material is AES-256-GCM under the root key with AAD
 *   `kms/wrap/v1|<keyId>|<version>`, and a stored public key is checked against the private
 *   material;
 * - the audit trail is a hash chain; edits, deletions and reorderings of rows are reported by
 *   `kms.audit.verify()`.
 *
 * - the store decodes its JSON columns (tags, grants) itself: junk there is a KmsInternalError
 *   naming the key, never a bare SyntaxError or a record that breaks StoredKey's types;
 * - no table holds key material, data keys or plaintexts in the clear.
 *
 * Every check runs on a fresh Kms over a fresh copy of a prepared schema: the HSM caches
 * unwrapped material per key version, and the store caches records, so a Kms that read before
 * the tampering would not notice it.
 */

import { randomBytes } from "node:crypto";
import {
  type AuditEvent,
  createKms,
  hashAuditEvent,
  isKmsError,
  type KeySpec,
  type KeyUsage,
  Kms,
  type KmsErrorCode,
  MemoryKeyStore,
  type StoredKey,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { SeededRandom } from "@kms/tooling/random";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, test, vi } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import {
  dumpSchema,
  leakIn,
  materialSecrets,
  pkcs8Secrets,
  type Secret,
  unwrap,
} from "./fixtures/at-rest-scan.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const encoder = new TextEncoder();
const context = { purpose: "tamper-test" };
const root = randomBytes(32);
const seeds = (base: number, count: number): number[] =>
  Array.from({ length: count }, (_, i) => base + i);

// Each seeded test runs dozens of cases, each with its own Kms and connections: well within a
// minute alone, but CI runs every package's suite at once on two cores.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 120_000 });

/** The key-store tables a tamperer edits and the reset copies back (kms_changes is left be). */
const STORE_TABLES = ["kms_keys", "kms_key_versions", "kms_aliases", "kms_settings"] as const;

if (target.skipReason !== undefined) {
  // Say in the test report, not only on stderr, what to set to run these.
  test.skip(`PostgreSQL tamper properties: ${target.skipReason}`, () => {});
}

describe.skipIf(target.skipReason !== undefined)("PostgreSQL store tampering (seeded)", () => {
  /** The prepared store, never written after beforeAll; a Kms over it is the oracle. */
  const base = randomSchema("tamper_base");
  /** Reset from `base` before every case, then tampered with. */
  const work = randomSchema("tamper_work");
  let sql: pg.Client;
  let pristine: Kms;
  /** The work store's description, which refusals name. */
  let workName: string;
  const fixture: FixtureKey[] = [];

  type KeyKind = "symmetric" | "hmac" | "ecc" | "rsa";
  interface FixtureKey {
    readonly keyId: string;
    readonly arn: string;
    readonly kind: KeyKind;
    readonly versions: readonly number[];
    readonly alias: string;
    /** Symmetric keys: a ciphertext under each version. RSA: one OAEP ciphertext. */
    readonly ciphertexts: ReadonlyMap<number, { blob: Uint8Array; plaintext: Uint8Array }>;
    readonly mac?: { readonly message: Uint8Array; readonly mac: Uint8Array };
    readonly publicKey?: Uint8Array;
    /** ECC: a signature over `message` by the other ECC key, to pass off as this key's. */
    readonly forged?: Uint8Array;
  }
  const message = encoder.encode("pay 100 to alice");

  const openStore = (schema: string) =>
    PostgresKeyStore.open({ connectionString: target.url!, schema, listen: false });
  const openKms = async (schema: string, rootKey: Uint8Array = root) =>
    createKms({ store: await openStore(schema), rootKey: Uint8Array.from(rootKey), audit: false });

  beforeAll(async () => {
    sql = new pg.Client({ connectionString: target.url! });
    await sql.connect();
    const kms = await openKms(base);
    let n = 0;
    const add = async (
      kind: KeyKind,
      keySpec: KeySpec,
      keyUsage: KeyUsage,
      rotations = 0,
    ): Promise<FixtureKey> => {
      const { keyId, arn } = (await kms.createKey({ keySpec, keyUsage })).keyMetadata;
      const alias = `alias/fixture-${n++}`;
      await kms.createAlias({ aliasName: alias, targetKeyId: keyId });
      const ciphertexts = new Map<number, { blob: Uint8Array; plaintext: Uint8Array }>();
      for (let version = 1; version <= rotations + 1; version++) {
        if (version > 1) await kms.rotateKeyOnDemand({ keyId });
        if (kind !== "symmetric") continue;
        const plaintext = encoder.encode(`key ${keyId} version ${version}`);
        const { ciphertextBlob } = await kms.encrypt({
          keyId,
          plaintext,
          encryptionContext: context,
        });
        ciphertexts.set(version, { blob: ciphertextBlob, plaintext });
      }
      let extra: Partial<FixtureKey> = {};
      if (kind === "hmac") {
        const { mac } = await kms.generateMac({ keyId, message, macAlgorithm: "HMAC_SHA_256" });
        extra = { mac: { message, mac } };
      }
      if (kind === "ecc" || kind === "rsa") {
        extra = { publicKey: (await kms.getPublicKey({ keyId })).publicKey };
      }
      if (kind === "rsa") {
        const plaintext = encoder.encode(`rsa ${keyId}`);
        const { ciphertextBlob } = await kms.encrypt({
          keyId,
          plaintext,
          encryptionAlgorithm: "RSAES_OAEP_SHA_256",
        });
        ciphertexts.set(1, { blob: ciphertextBlob, plaintext });
      }
      const key: FixtureKey = {
        keyId,
        arn,
        kind,
        versions: Array.from({ length: rotations + 1 }, (_, i) => i + 1),
        alias,
        ciphertexts,
        ...extra,
      };
      fixture.push(key);
      return key;
    };
    // Symmetric keys with 1, 3 and 2 versions, so rows move between versions of one key as
    // well as between keys; two ECC keys, so a public key can be swapped for one of the same
    // curve; an HMAC and an RSA key, whose material is no AES key.
    for (const rotations of [0, 2, 1]) {
      await add("symmetric", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", rotations);
    }
    await add("hmac", "HMAC_256", "GENERATE_VERIFY_MAC");
    const ecc = [
      await add("ecc", "ECC_NIST_P256", "SIGN_VERIFY"),
      await add("ecc", "ECC_NIST_P256", "SIGN_VERIFY"),
    ];
    await add("rsa", "RSA_2048", "ENCRYPT_DECRYPT");
    for (const [i, key] of ecc.entries()) {
      const other = ecc[1 - i]!;
      const { signature } = await kms.sign({
        keyId: other.keyId,
        message,
        signingAlgorithm: "ECDSA_SHA_256",
      });
      fixture[fixture.indexOf(key)] = { ...key, forged: signature };
    }
    await kms.close();
    pristine = await openKms(base);
    const store = await openStore(work);
    workName = store.description;
    await store.close();
  });

  afterAll(async () => {
    await pristine?.close();
    await sql?.end();
    await dropSchema(base);
    await dropSchema(work);
  });

  async function resetWork(): Promise<void> {
    const tables = STORE_TABLES.map((t) => `"${work}".${t}`).join(", ");
    await sql.query(`BEGIN; TRUNCATE ${tables}`);
    try {
      for (const t of STORE_TABLES) {
        await sql.query(`INSERT INTO "${work}".${t} SELECT * FROM "${base}".${t}`);
      }
      await sql.query("COMMIT");
    } catch (error) {
      await sql.query("ROLLBACK");
      throw error;
    }
  }

  // ---- what the schema now holds, as far as the checks need to know ----

  /**
   * A record after tampering, next to the prepared one: unchanged (the store's `revision`
   * counter and the seal itself aside), changed, or no longer there.
   */
  type RecordState = "intact" | "altered" | "gone";
  interface Model {
    readonly keys: ReadonlyMap<string, RecordState>;
    readonly aliases: ReadonlyMap<string, RecordState>;
    /** A key whose row the store itself cannot decode (junk tags): opening the Kms fails. */
    readonly undecodable: string | undefined;
  }

  const freshModel = (): Model => ({
    keys: new Map(fixture.map((k) => [k.keyId, "intact"])),
    aliases: new Map(fixture.map((k) => [k.alias, "intact"])),
    undecodable: undefined,
  });

  /** What a foreign root key sees: no record is sealed under a root key it holds. */
  const foreignModel = (): Model => ({
    keys: new Map(fixture.map((k) => [k.keyId, "altered"])),
    aliases: new Map(fixture.map((k) => [k.alias, "altered"])),
    undecodable: undefined,
  });

  /** Each record of `schema` as comparable text, by key id and by alias name. */
  async function recordsOf(schema: string): Promise<Map<string, string>> {
    // jsonb spells equal rows alike (key order, numbers); `revision` is the store's
    // compare-and-set counter, which the seal does not cover.
    const { rows } = await sql.query<{ name: string; record: string }>(
      `SELECT k.key_id AS name,
              ((to_jsonb(k) - 'revision' - 'seal') || jsonb_build_object('versions',
                 (SELECT coalesce(jsonb_agg(to_jsonb(v) ORDER BY v.version), '[]'::jsonb)
                  FROM "${schema}".kms_key_versions v WHERE v.key_id = k.key_id)))::text AS record
       FROM "${schema}".kms_keys k
       UNION ALL
       SELECT a.alias_name, (to_jsonb(a) - 'seal')::text FROM "${schema}".kms_aliases a`,
    );
    return new Map(rows.map((r) => [r.name, r.record]));
  }

  /**
   * The model of the tampered schema, read from it rather than predicted by the mutations, so
   * that tampers which cancel out or write a value the record already had are followed exactly.
   * (runCase checks it against what the mutations say they changed.)
   */
  async function modelOf(): Promise<Model> {
    const before = await recordsOf(base);
    const after = await recordsOf(work);
    const stateOf = (name: string): RecordState => {
      const now = after.get(name);
      if (now === undefined) return "gone";
      return now === before.get(name) ? "intact" : "altered";
    };
    let undecodable: string | undefined;
    const store = await openStore(work);
    try {
      for (const key of fixture) {
        if (after.has(key.keyId) && (await store.getKey(key.keyId).then(() => false, isKmsError))) {
          undecodable ??= key.keyId;
        }
      }
    } finally {
      await store.close();
    }
    return {
      keys: new Map(fixture.map((k) => [k.keyId, stateOf(k.keyId)])),
      aliases: new Map(fixture.map((k) => [k.alias, stateOf(k.alias)])),
      undecodable,
    };
  }

  interface Mutation {
    readonly description: string;
    /** Key ids and alias names it writes; no other record may come out changed. */
    readonly writes: readonly string[];
    /** Whether every record it writes is certain to differ afterwards. */
    readonly changes: boolean;
    apply(): Promise<void>;
  }

  const allRows = (): { keyId: string; version: number }[] =>
    fixture.flatMap((k) => k.versions.map((version) => ({ keyId: k.keyId, version })));

  async function readColumn(keyId: string, version: number, column: string): Promise<Buffer> {
    const { rows } = await sql.query<Record<string, Buffer>>(
      `SELECT ${column} FROM "${work}".kms_key_versions WHERE key_id = $1 AND version = $2`,
      [keyId, version],
    );
    const value = rows[0]?.[column];
    if (value === undefined) throw new Error(`no row ${keyId} v${version}`);
    return value;
  }

  async function writeColumn(
    keyId: string,
    version: number,
    column: string,
    bytes: Buffer | null,
  ): Promise<void> {
    const { rowCount } = await sql.query(
      `UPDATE "${work}".kms_key_versions SET ${column} = $1 WHERE key_id = $2 AND version = $3`,
      [bytes, keyId, version],
    );
    if (rowCount !== 1) throw new Error(`no row ${keyId} v${version}`);
  }

  function flipMutation(r: SeededRandom): Mutation {
    const { keyId, version } = r.pick(allRows());
    const where = r.int(2 ** 30);
    const mask = 1 + r.int(255);
    return {
      description: `flip byte ${where} mod length of ${keyId} v${version} with ${mask}`,
      writes: [keyId],
      changes: true,
      async apply() {
        const bytes = Buffer.from(await readColumn(keyId, version, "wrapped_material"));
        bytes[where % bytes.length]! ^= mask;
        await writeColumn(keyId, version, "wrapped_material", bytes);
      },
    };
  }

  function swapMutation(r: SeededRandom): Mutation {
    const rows = allRows();
    const a = r.int(rows.length);
    let b = r.int(rows.length - 1);
    if (b >= a) b++;
    const x = rows[a]!;
    const y = rows[b]!;
    return {
      description: `swap wrapped material of ${x.keyId} v${x.version} and ${y.keyId} v${y.version}`,
      // Two versions of one key change one record; of two keys, both.
      writes: [x.keyId, y.keyId],
      changes: true,
      async apply() {
        const wx = await readColumn(x.keyId, x.version, "wrapped_material");
        const wy = await readColumn(y.keyId, y.version, "wrapped_material");
        await writeColumn(x.keyId, x.version, "wrapped_material", wy);
        await writeColumn(y.keyId, y.version, "wrapped_material", wx);
      },
    };
  }

  /**
   * Files a version row under another key or another version of its own key: in place of an
   * existing version, or as a new version that current_version then points to. The source
   * record loses a version, the target holds material that is not its own.
   */
  function moveMutation(r: SeededRandom): Mutation {
    const source = r.pick(allRows());
    const target = r.pick(fixture);
    const versions = target.versions.filter(
      (v) => target.keyId !== source.keyId || v !== source.version,
    );
    const append = versions.length === 0 || r.int(2) === 1;
    const version = append ? Math.max(...target.versions) + 1 : r.pick(versions);
    return {
      description: `move ${source.keyId} v${source.version} to ${target.keyId} v${version}${append ? " (new current version)" : " (replacing it)"}`,
      writes: [source.keyId, target.keyId],
      changes: true,
      async apply() {
        if (!append) {
          await sql.query(
            `DELETE FROM "${work}".kms_key_versions WHERE key_id = $1 AND version = $2`,
            [target.keyId, version],
          );
        }
        const { rowCount } = await sql.query(
          `UPDATE "${work}".kms_key_versions SET key_id = $1, version = $2
           WHERE key_id = $3 AND version = $4`,
          [target.keyId, version, source.keyId, source.version],
        );
        if (rowCount !== 1) throw new Error("row not moved");
        if (append) {
          await sql.query(`UPDATE "${work}".kms_keys SET current_version = $1 WHERE key_id = $2`, [
            version,
            target.keyId,
          ]);
        }
      },
    };
  }

  /** A flipped, swapped or removed public_key of an asymmetric key's version 1. */
  function publicKeyMutation(r: SeededRandom): Mutation {
    const asymmetric = fixture.filter((k) => k.publicKey !== undefined);
    const key = r.pick(asymmetric);
    const how = r.pick(["flip", "swap", "null"] as const);
    const other = r.pick(asymmetric.filter((k) => k !== key));
    const where = r.int(2 ** 30);
    const mask = 1 + r.int(255);
    return {
      description: `${how} public key of ${key.keyId}${how === "swap" ? ` with ${other.keyId}` : ""}`,
      writes: how === "swap" ? [key.keyId, other.keyId] : [key.keyId],
      changes: true,
      async apply() {
        const mine = await readColumn(key.keyId, 1, "public_key");
        if (how === "flip") {
          const bytes = Buffer.from(mine);
          bytes[where % bytes.length]! ^= mask;
          await writeColumn(key.keyId, 1, "public_key", bytes);
        } else if (how === "swap") {
          const theirs = await readColumn(other.keyId, 1, "public_key");
          await writeColumn(key.keyId, 1, "public_key", theirs);
          await writeColumn(other.keyId, 1, "public_key", mine);
        } else {
          await writeColumn(key.keyId, 1, "public_key", null);
        }
      },
    };
  }

  /** Per column of kms_keys: values a writer might put there besides another key's. */
  const JUNK: Readonly<Record<string, readonly unknown[]>> = {
    key_spec: ["HMAC_512", "RSA_4096", "SYMMETRIC_DEFAULT", "NOPE"],
    key_usage: ["SIGN_VERIFY", "ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "NOPE"],
    key_state: ["Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable", "x"],
    origin: ["EXTERNAL", "AWS_KMS", "x"],
    current_version: [0, -1, 2, 99, 2 ** 31 - 1],
    deletion_date: [0, null, 8.64e15],
    pending_window_in_days: [null, 0, 7],
    rotation_enabled: [true, false],
    rotation_period_in_days: [0, 1, 90],
    next_rotation_at: [null, 0],
    on_demand_rotations: [0, 10_000],
    tags: ["[]", "{", "null", '[{"tagKey":1}]', '"x"'],
    description: ["", "\u0000"],
    created_at: [0, -1],
    multi_region: [true, false],
    revision: [0, 1, 1_000_000],
  };
  /** Per column of kms_key_versions (material and public key have their own mutations). */
  const VERSION_JUNK: Readonly<Record<string, readonly unknown[]>> = {
    key_material_id: ["", "0".repeat(64)],
    rotation_type: [null, "AUTOMATIC", "ON_DEMAND", "x"],
    created_at: [0, -1],
  };

  /**
   * Changes one column: copied from another key, or a junk value. Either may be the value the
   * column already held (or `revision`, which the seal leaves to the store), so the record may
   * come out unchanged.
   */
  function metadataMutation(r: SeededRandom): Mutation {
    const key = r.pick(fixture);
    const other = r.pick(fixture.filter((k) => k !== key));
    const table = r.int(4) === 0 ? "kms_key_versions" : "kms_keys";
    const junk = table === "kms_keys" ? JUNK : VERSION_JUNK;
    const column = r.pick(Object.keys(junk));
    const copy = r.int(2) === 0;
    const value = r.pick(junk[column]!);
    const version = r.pick(key.versions);
    return {
      description: `${table}.${column} of ${key.keyId}${table === "kms_key_versions" ? ` v${version}` : ""} ${copy ? `copied from ${other.keyId}` : `set to ${JSON.stringify(value)}`}`,
      writes: [key.keyId],
      changes: false,
      async apply() {
        const where =
          table === "kms_keys" ? "key_id = $2" : `key_id = $2 AND version = ${String(version)}`;
        const { rowCount } = copy
          ? await sql.query(
              `UPDATE "${work}".${table} SET ${column} =
                 (SELECT ${column} FROM "${work}".${table} WHERE key_id = $1 LIMIT 1)
               WHERE ${where}`,
              [other.keyId, key.keyId],
            )
          : await sql.query(`UPDATE "${work}".${table} SET ${column} = $1 WHERE ${where}`, [
              value,
              key.keyId,
            ]);
        if (rowCount !== 1) throw new Error("no row changed");
      },
    };
  }

  /** Aliases, sealed like keys: repointed, dangling, deleted or renamed. */
  function aliasMutation(r: SeededRandom): Mutation {
    const key = r.pick(fixture);
    const other = r.pick(fixture.filter((k) => k !== key));
    const how = r.pick(["repoint", "dangle", "delete", "steal"] as const);
    return {
      description: `${how} ${key.alias}${how === "repoint" || how === "steal" ? ` (${other.keyId})` : ""}`,
      writes: how === "steal" ? [key.alias, other.alias] : [key.alias],
      changes: true,
      async apply() {
        const table = `"${work}".kms_aliases`;
        if (how === "repoint") {
          await sql.query(`UPDATE ${table} SET target_key_id = $1 WHERE alias_name = $2`, [
            other.keyId,
            key.alias,
          ]);
        } else if (how === "dangle") {
          await sql.query(`UPDATE ${table} SET target_key_id = $1 WHERE alias_name = $2`, [
            "00000000-0000-4000-8000-000000000000",
            key.alias,
          ]);
        } else if (how === "delete") {
          await sql.query(`DELETE FROM ${table} WHERE alias_name = $1`, [key.alias]);
        } else {
          // The other key's alias now names this key and this key's alias is gone.
          await sql.query(`DELETE FROM ${table} WHERE alias_name = $1`, [key.alias]);
          await sql.query(`UPDATE ${table} SET target_key_id = $1 WHERE alias_name = $2`, [
            key.keyId,
            other.alias,
          ]);
        }
      },
    };
  }

  /**
   * A key row deleted outright (its versions go by cascade). A seal cannot vouch for a record
   * that is not there: the key is simply unknown, as if it had never existed.
   */
  function deleteKeyMutation(r: SeededRandom): Mutation {
    const key = r.pick(fixture);
    return {
      description: `delete key row ${key.keyId}`,
      writes: [key.keyId],
      changes: true,
      async apply() {
        await sql.query(`DELETE FROM "${work}".kms_keys WHERE key_id = $1`, [key.keyId]);
      },
    };
  }

  // ---- the checks ----

  type Expected =
    | { readonly kind: "succeed" }
    | { readonly kind: "fail"; readonly code: KmsErrorCode; readonly names: readonly string[] };
  const succeed: Expected = { kind: "succeed" };
  const fail = (code: KmsErrorCode, ...names: string[]): Expected => ({
    kind: "fail",
    code,
    names,
  });

  /**
   * Every use of a key by id (FORMAT.md §4.1): an altered record fails with a RootKeyError
   * naming the key's ARN and the store, whichever part of it was changed and whichever version
   * the use needs; a key that is gone is not found (`gone`: the code the use answers an unknown
   * key with); an intact key works.
   */
  function byKey(
    model: Model,
    key: FixtureKey,
    gone: KmsErrorCode = "NotFoundException",
  ): Expected {
    const state = model.keys.get(key.keyId);
    if (state === "altered") return fail("RootKeyError", key.arn, workName);
    // Decryption failures stay generic (no oracle): only NotFoundException names the key.
    if (state === "gone") return fail(gone, ...(gone === "NotFoundException" ? [key.keyId] : []));
    return succeed;
  }

  /** A use through the key's alias: the alias record is checked first, then the key's. */
  function byAlias(model: Model, key: FixtureKey, gone?: KmsErrorCode): Expected {
    const state = model.aliases.get(key.alias);
    if (state === "altered") return fail("RootKeyError", `alias ${key.alias}`, workName);
    if (state === "gone") return fail("NotFoundException", key.alias);
    return byKey(model, key, gone);
  }

  /**
   * Runs `use`. It must fail with exactly the expected KMS error, whose message names what
   * `expected` lists, or succeed and pass `check`. Never a non-KMS error.
   */
  async function expectOutcome<T>(
    where: string,
    expected: Expected,
    use: () => Promise<T>,
    check: (result: T) => Promise<void> | void,
  ): Promise<void> {
    let result: T;
    try {
      result = await use();
    } catch (error) {
      tally.failed++;
      expect(isKmsError(error), `${where}: not a KMS error: ${String(error)}`).toBe(true);
      if (expected.kind === "succeed") {
        expect.fail(`${where}: failed on an untouched record: ${String(error)}`);
      }
      expect((error as { code: string }).code, `${where}: ${String(error)}`).toBe(expected.code);
      for (const name of expected.names) {
        expect((error as Error).message, `${where}: the message names ${name}`).toContain(name);
      }
      return;
    }
    expect(expected.kind, `${where}: succeeded on a tampered record`).toBe("succeed");
    tally.succeeded++;
    await check(result);
  }

  /**
   * Uses that failed and succeeded in the current test: a property whose uses all failed, or
   * all succeeded, would have checked little.
   */
  const tally = { failed: 0, succeeded: 0 };
  const expectBothOutcomes = () => {
    expect(tally.failed, "some uses were refused").toBeGreaterThan(0);
    expect(tally.succeeded, "some uses succeeded and were checked").toBeGreaterThan(0);
  };
  beforeEach(() => {
    tally.failed = 0;
    tally.succeeded = 0;
  });

  const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

  /** A blob the tampered Kms made decrypts, on the pristine store, under `keyId` to `plaintext`. */
  async function pristineOpens(
    where: string,
    keyId: string,
    blob: Uint8Array,
    plaintext: Uint8Array | undefined,
  ): Promise<void> {
    const back = await pristine.decrypt({ ciphertextBlob: blob, keyId }).catch((error: unknown) => {
      throw new Error(`${where}: the pristine store cannot open the result: ${String(error)}`);
    });
    if (plaintext !== undefined) expect(same(back.plaintext, plaintext), where).toBe(true);
  }

  async function checkAllUses(kms: Kms, model: Model, label: string): Promise<void> {
    for (const key of fixture) {
      const at = (what: string) => `${label}: ${what} on ${key.kind} ${key.keyId}`;
      const byId = byKey(model, key);
      await expectOutcome(
        at("describeKey"),
        byId,
        () => kms.describeKey({ keyId: key.keyId }),
        (r) => expect(r.keyMetadata.arn, at("describeKey")).toBe(key.arn),
      );
      switch (key.kind) {
        case "symmetric": {
          for (const [version, { blob, plaintext }] of key.ciphertexts) {
            // A ciphertext names its key; an unknown one is an invalid ciphertext (no oracle).
            await expectOutcome(
              at(`decrypt v${version}`),
              byKey(model, key, "InvalidCiphertextException"),
              () => kms.decrypt({ ciphertextBlob: blob, encryptionContext: context }),
              (r) => expect(same(r.plaintext, plaintext), at("decrypt")).toBe(true),
            );
            // With the alias as the expected key: a repointed alias must not change the answer.
            await expectOutcome(
              at(`decrypt v${version} via its alias`),
              byAlias(model, key, "InvalidCiphertextException"),
              () =>
                kms.decrypt({ ciphertextBlob: blob, encryptionContext: context, keyId: key.alias }),
              (r) => expect(same(r.plaintext, plaintext), at("decrypt via alias")).toBe(true),
            );
            await expectOutcome(
              at(`reEncrypt v${version} to itself`),
              // The destination is resolved first: a gone key is not found.
              byId,
              () =>
                kms.reEncrypt({
                  ciphertextBlob: blob,
                  sourceEncryptionContext: context,
                  destinationKeyId: key.keyId,
                }),
              (r) => pristineOpens(at("reEncrypt"), key.keyId, r.ciphertextBlob, plaintext),
            );
          }
          const plaintext = encoder.encode(`fresh under ${key.keyId}`);
          await expectOutcome(
            at("encrypt"),
            byId,
            () => kms.encrypt({ keyId: key.keyId, plaintext }),
            (r) => pristineOpens(at("encrypt"), key.keyId, r.ciphertextBlob, plaintext),
          );
          await expectOutcome(
            at("encrypt via alias"),
            byAlias(model, key),
            () => kms.encrypt({ keyId: key.alias, plaintext }),
            (r) => pristineOpens(at("encrypt via alias"), key.keyId, r.ciphertextBlob, plaintext),
          );
          await expectOutcome(
            at("generateDataKey"),
            byId,
            () => kms.generateDataKey({ keyId: key.keyId, keySpec: "AES_256" }),
            (r) => pristineOpens(at("generateDataKey"), key.keyId, r.ciphertextBlob, r.plaintext),
          );
          await expectOutcome(
            at("generateDataKeyWithoutPlaintext"),
            byId,
            () => kms.generateDataKeyWithoutPlaintext({ keyId: key.keyId, keySpec: "AES_256" }),
            (r) =>
              pristineOpens(
                at("generateDataKeyWithoutPlaintext"),
                key.keyId,
                r.ciphertextBlob,
                undefined,
              ),
          );
          break;
        }
        case "hmac": {
          const { message: msg, mac } = key.mac!;
          await expectOutcome(
            at("generateMac"),
            byId,
            () => kms.generateMac({ keyId: key.keyId, message: msg, macAlgorithm: "HMAC_SHA_256" }),
            // HMAC is deterministic: the same MAC as before proves the same material.
            (r) => expect(same(r.mac, mac), at("generateMac")).toBe(true),
          );
          await expectOutcome(
            at("verifyMac"),
            byId,
            () =>
              kms.verifyMac({
                keyId: key.keyId,
                message: msg,
                mac,
                macAlgorithm: "HMAC_SHA_256",
              }),
            (r) => expect(r.macValid).toBe(true),
          );
          break;
        }
        case "ecc": {
          await expectOutcome(
            at("sign"),
            byId,
            () => kms.sign({ keyId: key.keyId, message, signingAlgorithm: "ECDSA_SHA_256" }),
            async (r) => {
              const verified = await pristine.verify({
                keyId: key.keyId,
                message,
                signature: r.signature,
                signingAlgorithm: "ECDSA_SHA_256",
              });
              expect(verified.signatureValid, at("sign")).toBe(true);
            },
          );
          // The other key's signature passed off as this key's never verifies: refused as
          // invalid by an intact key, and an altered one is not consulted at all.
          const forgery = byId.kind === "succeed" ? fail("KMSInvalidSignatureException") : byId;
          await expectOutcome(
            at("verify a forged signature"),
            forgery,
            () =>
              kms.verify({
                keyId: key.keyId,
                message,
                signature: key.forged!,
                signingAlgorithm: "ECDSA_SHA_256",
              }),
            () => expect.fail(at("a forged signature verified")),
          );
          await expectOutcome(
            at("getPublicKey"),
            byId,
            () => kms.getPublicKey({ keyId: key.keyId }),
            (r) => expect(same(r.publicKey, key.publicKey!), at("getPublicKey")).toBe(true),
          );
          break;
        }
        case "rsa": {
          const { blob, plaintext } = key.ciphertexts.get(1)!;
          await expectOutcome(
            at("RSA decrypt"),
            byId,
            () =>
              kms.decrypt({
                keyId: key.keyId,
                ciphertextBlob: blob,
                encryptionAlgorithm: "RSAES_OAEP_SHA_256",
              }),
            (r) => expect(same(r.plaintext, plaintext), at("RSA decrypt")).toBe(true),
          );
          await expectOutcome(
            at("RSA encrypt"),
            byId,
            () =>
              kms.encrypt({
                keyId: key.keyId,
                plaintext,
                encryptionAlgorithm: "RSAES_OAEP_SHA_256",
              }),
            async (r) => {
              const back = await pristine.decrypt({
                keyId: key.keyId,
                ciphertextBlob: r.ciphertextBlob,
                encryptionAlgorithm: "RSAES_OAEP_SHA_256",
              });
              expect(same(back.plaintext, plaintext), at("RSA encrypt")).toBe(true);
            },
          );
          await expectOutcome(
            at("getPublicKey"),
            byId,
            () => kms.getPublicKey({ keyId: key.keyId }),
            (r) => expect(same(r.publicKey, key.publicKey!), at("getPublicKey")).toBe(true),
          );
          break;
        }
      }
    }
  }

  /** The model agrees with the mutations: only what they wrote changed, and what must, did. */
  function checkModel(model: Model, applied: readonly Mutation[], label: string): void {
    const written = new Set(applied.flatMap((m) => m.writes));
    for (const [name, state] of [...model.keys, ...model.aliases]) {
      if (state !== "intact") expect(written.has(name), `${label}: ${name} is ${state}`).toBe(true);
    }
    const only = applied.length === 1 ? applied[0]! : undefined;
    if (only?.changes === true) {
      for (const name of only.writes) {
        const state = model.keys.get(name) ?? model.aliases.get(name);
        expect(state, `${label}: ${name} was changed`).not.toBe("intact");
      }
    }
  }

  async function runCase(
    seed: number,
    make: (r: SeededRandom) => Mutation | readonly Mutation[],
  ): Promise<Model> {
    await resetWork();
    const r = new SeededRandom(seed);
    const made = make(r);
    const mutations = Array.isArray(made) ? made : [made as Mutation];
    const label = `seed ${seed}: ${mutations.map((m) => m.description).join("; ")}`;
    const applied: Mutation[] = [];
    const skipped: string[] = [];
    await sql.query("BEGIN");
    try {
      for (const mutation of mutations) {
        await sql.query("SAVEPOINT tamper");
        try {
          await mutation.apply();
          applied.push(mutation);
        } catch (error) {
          // In a compound case an earlier tamper may have moved the row a later one names.
          if (mutations.length === 1) throw error;
          await sql.query("ROLLBACK TO SAVEPOINT tamper");
          skipped.push(mutation.description);
        }
      }
      await sql.query("COMMIT");
    } catch (error) {
      await sql.query("ROLLBACK");
      throw new Error(`${label}: could not tamper`, { cause: error });
    }
    const where = skipped.length === 0 ? label : `${label} (not applied: ${skipped.join("; ")})`;
    const model = await modelOf();
    checkModel(model, applied, where);
    if (model.undecodable !== undefined) {
      // The Kms reads the first page of keys when it opens: a row the store cannot decode
      // stops it there, with the store's error naming the key.
      const error: unknown = await openKms(work).then(
        (kms) => kms.close().then(() => expect.fail(`${where}: opened over an undecodable row`)),
        (e: unknown) => e,
      );
      expect(error, where).toMatchObject({ code: "KMSInternalException" });
      expect((error as Error).message, where).toContain(model.undecodable);
      return model;
    }
    const kms = await openKms(work);
    try {
      await checkAllUses(kms, model, where);
    } finally {
      await kms.close();
    }
    return model;
  }

  /** Runs the seeds; every case must leave some key intact beside the ones it changed. */
  async function runSeeds(
    base: number,
    count: number,
    make: (r: SeededRandom) => Mutation | readonly Mutation[],
  ): Promise<void> {
    for (const seed of seeds(base, count)) {
      const model = await runCase(seed, make);
      const intact = [...model.keys.values()].filter((s) => s === "intact");
      expect(intact.length, `seed ${seed}: some key is left intact`).toBeGreaterThan(0);
    }
  }

  describe("sealed key records: material, public keys, metadata, aliases", () => {
    test("the untouched copy works for every key (control)", async () => {
      const model = await runCase(1, () => ({
        description: "no change",
        writes: [],
        changes: false,
        apply: async () => {},
      }));
      const states = [...model.keys.values(), ...model.aliases.values()];
      expect(states).toStrictEqual(states.map(() => "intact"));
    });

    test("a flipped byte in one version's wrapped material fails every use of that key with RootKeyError; other keys work", async () => {
      await runSeeds(10_000, 20, flipMutation);
      expectBothOutcomes();
    });

    test("wrapped material swapped between two versions fails every use of the key(s) holding them; other keys work", async () => {
      await runSeeds(20_000, 20, swapMutation);
      expectBothOutcomes();
    });

    test("a version row moved to another key or version fails every use of both keys, never used", async () => {
      await runSeeds(30_000, 20, moveMutation);
      expectBothOutcomes();
    });

    test("a flipped, swapped or removed public key fails every use of its key: no forgery verifies, none is handed out", async () => {
      await runSeeds(40_000, 20, publicKeyMutation);
      expectBothOutcomes();
    });

    test("changed metadata or aliases fail every use of the record with RootKeyError; a deleted key is unknown", async () => {
      await runSeeds(50_000, 40, (r) =>
        r.pick([metadataMutation, metadataMutation, aliasMutation, deleteKeyMutation])(r),
      );
      expectBothOutcomes();
    });

    test("several tampers at once: every changed record is refused, every intact one works", async () => {
      const kinds = [
        flipMutation,
        swapMutation,
        moveMutation,
        publicKeyMutation,
        metadataMutation,
        aliasMutation,
      ];
      // The model is read from the schema, so tampers that undo each other (a swap swapped
      // back) are followed exactly: compound cases get the same strict rule.
      await runSeeds(60_000, 20, (r) =>
        Array.from({ length: 2 + r.int(3) }, () => r.pick(kinds)(r)),
      );
      expectBothOutcomes();
    });
  });

  /**
   * The JSON columns (tags, grants) are decoded by the store itself: junk there must come out of
   * the store as a KmsInternalError naming the key, like any other store failure, not as a bare
   * SyntaxError or TypeError, and never as a record that breaks StoredKey's types.
   */
  test("junk in the JSON columns is a KmsInternalError from the store, or a well-typed record", async () => {
    const JSON_JUNK: Readonly<Record<"tags" | "grants", readonly string[]>> = {
      tags: ["{", "", "null", '"x"', "[1]", "[null]", '[{"tagKey":1,"tagValue":"v"}]', "{}", "[]"],
      grants: [
        "{",
        "null",
        '"x"',
        "[1]",
        "{}",
        '[{"grantId":7}]',
        '[{"grantId":"g","granteePrincipal":"p","issuingPrincipal":"p","operations":"Decrypt","createdAt":0}]',
        "[]",
      ],
    };
    const isString = (v: unknown) => typeof v === "string";
    for (const seed of seeds(65_000, 24)) {
      const r = new SeededRandom(seed);
      const key = r.pick(fixture);
      const column = r.pick(["tags", "grants"] as const);
      const value = r.pick(JSON_JUNK[column]);
      const label = `seed ${seed}: ${column} of ${key.keyId} set to ${JSON.stringify(value)}`;
      await resetWork();
      await sql.query(`UPDATE "${work}".kms_keys SET ${column} = $1 WHERE key_id = $2`, [
        value,
        key.keyId,
      ]);
      const store = await openStore(work);
      try {
        for (const [what, read] of [
          ["getKey", () => store.getKey(key.keyId)],
          [
            "listKeys",
            () =>
              store.listKeys({ limit: 100 }).then((ks) => ks.find((k) => k.keyId === key.keyId)),
          ],
        ] as const) {
          const outcome = await read().catch((error: unknown) => error);
          if (outcome instanceof Error) {
            expect(isKmsError(outcome), `${label}: ${what}: ${String(outcome)}`).toBe(true);
            expect(outcome.message, `${label}: ${what} names the key`).toContain(key.keyId);
            continue;
          }
          const record = outcome as StoredKey;
          expect(Array.isArray(record.tags), `${label}: ${what} tags`).toBe(true);
          for (const tag of record.tags) {
            expect(isString(tag.tagKey) && isString(tag.tagValue), `${label}: ${what}`).toBe(true);
          }
          if (record.grants !== undefined) {
            expect(Array.isArray(record.grants), `${label}: ${what} grants`).toBe(true);
            for (const g of record.grants) {
              expect(
                isString(g.grantId) &&
                  isString(g.granteePrincipal) &&
                  isString(g.issuingPrincipal) &&
                  Array.isArray(g.operations) &&
                  g.operations.every(isString) &&
                  typeof g.createdAt === "number",
                `${label}: ${what} grant ${JSON.stringify(g)}`,
              ).toBe(true);
            }
          }
        }
      } finally {
        await store.close();
      }
    }
  });

  describe("the root-key check (kms_settings)", () => {
    /** The setting names core's SoftwareHsm keeps (see ROOT_KEY_SETTINGS). */
    const FIRST = "root-key-id";
    const successorOf = (id: string) => `root-key-successor/${id}`;
    const retiredOf = (id: string) => `root-key-retired/${id}`;
    const foreign = randomBytes(32);

    /** The id core records for a root key, read from a scratch store it was opened on. */
    async function rootKeyIdOf(rootKey: Uint8Array): Promise<string> {
      const store = new MemoryKeyStore();
      await createKms({ store, rootKey: Uint8Array.from(rootKey), audit: false });
      return (await store.getSetting(FIRST))!;
    }

    type Setting = readonly [name: string, value: string | undefined];
    interface RootCase {
      readonly description: string;
      readonly settings: (ids: { real: string; foreign: string; junk: string }) => Setting[];
      /** Whether the store's own root key may still open it (otherwise: RootKeyError). */
      readonly realOpens: boolean;
    }
    const CASES: readonly RootCase[] = [
      { description: "id replaced by junk", settings: (i) => [[FIRST, i.junk]], realOpens: false },
      { description: "id removed", settings: () => [[FIRST, undefined]], realOpens: true },
      {
        description: "id replaced by a foreign root key's",
        settings: (i) => [[FIRST, i.foreign]],
        realOpens: false,
      },
      {
        description: "a foreign root key recorded as the successor",
        settings: (i) => [[successorOf(i.real), i.foreign]],
        realOpens: true,
      },
      {
        description: "a foreign successor, and the real key marked retired",
        settings: (i) => [
          [successorOf(i.real), i.foreign],
          [retiredOf(i.real), i.foreign],
        ],
        // Planted plain markers without the sealed one are ignored (FORMAT §4.2): the real key
        // opens rather than every instance being locked out.
        realOpens: true,
      },
      {
        description: "a successor chain that loops back",
        settings: (i) => [
          [successorOf(i.real), i.foreign],
          [successorOf(i.foreign), i.real],
        ],
        realOpens: true,
      },
    ];

    /**
     * Whatever the check says, the records are still sealed (and their material wrapped) under
     * the real root key: a foreign root key that gets past the check reads no record (each is
     * sealed under a root key it does not hold), and the real one either is refused or works
     * as before. Which settings are changed comes from
     * the table; the junk id and the order of the two openings come from the seed.
     */
    test("every tamper is a RootKeyError at open or use, or leaves the real key working", async () => {
      const real = await rootKeyIdOf(root);
      const foreignId = await rootKeyIdOf(foreign);
      for (const seed of seeds(70_000, 12)) {
        const r = new SeededRandom(seed);
        const rootCase = CASES[seed % CASES.length]!;
        const junk = Buffer.from(Array.from({ length: 8 }, () => r.int(256))).toString("hex");
        const foreignFirst = r.int(2) === 1;
        const label = `seed ${seed}: ${rootCase.description}${foreignFirst ? " (foreign root opens first)" : ""}`;
        await resetWork();
        for (const [name, value] of rootCase.settings({ real, foreign: foreignId, junk })) {
          await sql.query(`DELETE FROM "${work}".kms_settings WHERE name = $1`, [name]);
          if (value !== undefined) {
            await sql.query(`INSERT INTO "${work}".kms_settings (name, value) VALUES ($1, $2)`, [
              name,
              value,
            ]);
          }
        }
        const attempts: { rootKey: Uint8Array; model: Model; who: string }[] = [
          { rootKey: root, model: freshModel(), who: "real root key" },
          { rootKey: foreign, model: foreignModel(), who: "foreign root key" },
        ];
        if (foreignFirst) attempts.reverse();
        for (const { rootKey, model, who } of attempts) {
          const opened = await openKms(work, rootKey).catch((error: unknown) => error);
          if (rootKey === root) {
            // A foreign key that opened first records itself where the id was missing, which
            // locks the real key out: denial of service, which THREAT-MODEL.md concedes.
            const realOpens =
              rootCase.realOpens && !(foreignFirst && rootCase.description === "id removed");
            expect(opened instanceof Kms, `${label}: the real root key opens`).toBe(realOpens);
          }
          if (!(opened instanceof Kms)) {
            expect(isKmsError(opened), `${label}: ${who}: ${String(opened)}`).toBe(true);
            expect((opened as { code: string }).code, `${label}: ${who}`).toBe("RootKeyError");
            continue;
          }
          try {
            await checkAllUses(opened, model, `${label}: ${who}`);
          } finally {
            await opened.close();
          }
        }
      }
    });
  });
});

describe.skipIf(target.skipReason !== undefined)(
  "PostgreSQL store tampering: grants and key policies",
  () => {
    const schema = randomSchema("tamper_grants");
    const owner = "arn:aws:iam::000000000000:role/owner";
    const grantee = "arn:aws:iam::000000000000:role/grantee";
    /** Another account: the default key policy does not let it in either. */
    const mallory = "arn:aws:iam::111111111111:role/mallory";
    const grantContext = { purpose: "grants" };
    const ownerOnly = JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { AWS: owner }, Action: "kms:*", Resource: "*" }],
    });
    let sql: pg.Client;
    let keyId: string;
    let keyArn: string;
    /** The store's description, which refusals name. */
    let storeName: string;
    let otherKeyId: string;
    let blob: Uint8Array;
    const plaintext = encoder.encode("granted secret");
    let original: { policy: string; grants: string };

    const openKms = async () => {
      const store = await PostgresKeyStore.open({
        connectionString: target.url!,
        schema,
        listen: false,
      });
      storeName = store.description;
      return createKms({ store, rootKey: Uint8Array.from(root), audit: false });
    };

    beforeAll(async () => {
      sql = new pg.Client({ connectionString: target.url! });
      await sql.connect();
      const kms = await openKms();
      const as = { principal: owner };
      ({ keyId, arn: keyArn } = (await kms.createKey({ policy: ownerOnly }, as)).keyMetadata);
      // A key whose policy and grants a tamperer can copy: it lets mallory do everything.
      otherKeyId = (
        await kms.createKey(
          {
            policy: ownerOnly.replace(JSON.stringify(owner), JSON.stringify([owner, mallory])),
          },
          as,
        )
      ).keyMetadata.keyId;
      await kms.createGrant(
        {
          keyId,
          granteePrincipal: grantee,
          operations: ["Decrypt"],
          constraints: { encryptionContextEquals: grantContext },
        },
        as,
      );
      await kms.createGrant(
        { keyId: otherKeyId, granteePrincipal: mallory, operations: ["Decrypt", "Encrypt"] },
        { principal: mallory },
      );
      blob = (await kms.encrypt({ keyId, plaintext, encryptionContext: grantContext }, as))
        .ciphertextBlob;
      await kms.close();
      const { rows } = await sql.query<{ policy: string; grants: string }>(
        `SELECT policy, grants FROM "${schema}".kms_keys WHERE key_id = $1`,
        [keyId],
      );
      original = rows[0]!;
    });

    afterAll(async () => {
      await sql?.end();
      await dropSchema(schema);
    });

    async function restore(): Promise<void> {
      await sql.query(
        `UPDATE "${schema}".kms_keys SET policy = $1, grants = $2 WHERE key_id = $3`,
        [original.policy, original.grants, keyId],
      );
    }

    type Use = "decrypt" | "encrypt";
    /** Who may do what before any tampering: the owner everything, the grantee only Decrypt. */
    const allowedBefore = (principal: string, use: Use): boolean =>
      principal === owner || (principal === grantee && use === "decrypt");

    /**
     * Each principal's Decrypt and Encrypt: `"allowed"` (and correct), or the code of the KMS
     * error that refused it.
     */
    async function accessMatrix(kms: Kms, label: string): Promise<Map<string, string>> {
      const outcomes = new Map<string, string>();
      for (const principal of [owner, grantee, mallory]) {
        for (const use of ["decrypt", "encrypt"] as const) {
          const where = `${label}: ${use} as ${principal}`;
          const outcome = await (use === "decrypt"
            ? kms
                .decrypt({ ciphertextBlob: blob, encryptionContext: grantContext }, { principal })
                .then((r) => expect(Buffer.from(r.plaintext).equals(plaintext), where).toBe(true))
            : kms.encrypt({ keyId, plaintext }, { principal }).then(() => undefined)
          ).then(
            () => "allowed",
            (error: unknown) => {
              expect(isKmsError(error), `${where}: not a KMS error: ${String(error)}`).toBe(true);
              if ((error as { code: string }).code === "RootKeyError") {
                expect((error as Error).message, `${where}: names the key`).toContain(
                  `key ${keyArn} in key store ${storeName} `,
                );
              }
              return (error as { code: string }).code;
            },
          );
          outcomes.set(`${use} as ${principal}`, outcome);
        }
      }
      return outcomes;
    }

    /** Every cell of the matrix refused as an altered record: the key is not used by anyone. */
    function expectAllRefused(matrix: ReadonlyMap<string, string>, label: string): void {
      expect(matrix.size, label).toBe(6);
      for (const [cell, outcome] of matrix)
        expect(outcome, `${label}: ${cell}`).toBe("RootKeyError");
    }

    test("control: the stored policy and grant allow exactly what they say", async () => {
      await restore();
      const kms = await openKms();
      try {
        const matrix = await accessMatrix(kms, "control");
        for (const principal of [owner, grantee, mallory]) {
          for (const use of ["decrypt", "encrypt"] as const) {
            expect(matrix.get(`${use} as ${principal}`), `${use} as ${principal}`).toBe(
              allowedBefore(principal, use) ? "allowed" : "AccessDeniedException",
            );
          }
        }
      } finally {
        await kms.close();
      }
    });

    /**
     * Corrupted policy or grant text (a byte flipped, or truncated) fails closed: grants the
     * store cannot decode stop the Kms from opening (KMSInternalException naming the key);
     * anything else no longer matches the record seal, so every call on the key is refused with
     * RootKeyError. Never opened up to a principal that had no access, never answered with
     * garbage.
     */
    test("corrupted policy or grant text never widens access: the key is refused (seeded)", async () => {
      let refusedAtOpen = 0;
      let refusedAtUse = 0;
      for (const seed of seeds(80_000, 30)) {
        const r = new SeededRandom(seed);
        const column = r.pick(["policy", "grants"] as const);
        const text = Buffer.from(original[column]);
        const how = r.pick(["flip", "truncate"] as const);
        const at = r.int(text.length);
        if (how === "flip") text[at]! ^= 1 << r.int(7);
        const value = how === "flip" ? text.toString("latin1") : text.subarray(0, at).toString();
        const label = `seed ${seed}: ${how} ${column} at ${at}`;
        await restore();
        await sql.query(`UPDATE "${schema}".kms_keys SET ${column} = $1 WHERE key_id = $2`, [
          value,
          keyId,
        ]);
        const opened = await openKms().catch((error: unknown) => error);
        if (!(opened instanceof Kms)) {
          expect(column, `${label}: only undecodable grants stop the Kms opening`).toBe("grants");
          expect(opened, label).toMatchObject({ code: "KMSInternalException" });
          expect((opened as Error).message, label).toContain(`key ${keyId}: the stored grants`);
          refusedAtOpen++;
          continue;
        }
        try {
          expectAllRefused(await accessMatrix(opened, label), label);
          refusedAtUse++;
        } finally {
          await opened.close();
        }
      }
      // Both paths were taken, so neither check above is vacuous.
      expect(refusedAtOpen, "some grants could not be decoded").toBeGreaterThan(0);
      expect(refusedAtUse, "some corruptions were refused by the seal").toBeGreaterThan(0);
    });

    /**
     * A well-formed grant or policy written by the store writer, even one copied from another
     * key where the KMS itself put it, is not part of this key's sealed record: the key is
     * refused as a whole (RootKeyError for every principal, the owner included), so the forged
     * access is never obeyed, while the key the text came from keeps working.
     */
    async function refusedAfter(tamper: string, values: unknown[]): Promise<void> {
      await restore();
      await sql.query(tamper, values);
      const kms = await openKms();
      try {
        expectAllRefused(await accessMatrix(kms, tamper), tamper);
        const other = await kms.encrypt({ keyId: otherKeyId, plaintext }, { principal: mallory });
        expect(other.keyId).toContain(otherKeyId);
      } finally {
        await kms.close();
      }
    }

    test("a grant for another account written into the grants column is refused", async () => {
      const forged = [
        ...(JSON.parse(original.grants) as { grantId: string }[]),
        {
          grantId: "f".repeat(64),
          granteePrincipal: mallory,
          issuingPrincipal: owner,
          operations: ["Decrypt"],
          createdAt: 0,
        },
      ];
      await refusedAfter(`UPDATE "${schema}".kms_keys SET grants = $1 WHERE key_id = $2`, [
        JSON.stringify(forged),
        keyId,
      ]);
    });

    test("another key's policy copied over this key's is refused", async () => {
      await refusedAfter(
        `UPDATE "${schema}".kms_keys SET policy = (SELECT policy FROM "${schema}".kms_keys
         WHERE key_id = $1) WHERE key_id = $2`,
        [otherKeyId, keyId],
      );
    });

    test("another key's grants copied over this key's are refused", async () => {
      await refusedAfter(
        `UPDATE "${schema}".kms_keys SET grants = (SELECT grants FROM "${schema}".kms_keys
         WHERE key_id = $1) WHERE key_id = $2`,
        [otherKeyId, keyId],
      );
    });

    test("a removed policy is refused, not replaced by the default one", async () => {
      await refusedAfter(`UPDATE "${schema}".kms_keys SET policy = NULL WHERE key_id = $1`, [
        keyId,
      ]);
    });
  },
);

describe.skipIf(target.skipReason !== undefined)(
  "PostgreSQL store: no plaintext key material at rest",
  () => {
    let sql: pg.Client;
    const schemas: string[] = [];

    beforeAll(async () => {
      sql = new pg.Client({ connectionString: target.url! });
      await sql.connect();
    });

    afterAll(async () => {
      await sql?.end();
      for (const schema of schemas) await dropSchema(schema);
    });

    const SPECS: readonly { keySpec: KeySpec; keyUsage: KeyUsage }[] = [
      { keySpec: "SYMMETRIC_DEFAULT", keyUsage: "ENCRYPT_DECRYPT" },
      { keySpec: "HMAC_224", keyUsage: "GENERATE_VERIFY_MAC" },
      { keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" },
      { keySpec: "HMAC_384", keyUsage: "GENERATE_VERIFY_MAC" },
      { keySpec: "HMAC_512", keyUsage: "GENERATE_VERIFY_MAC" },
      { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" },
      { keySpec: "ECC_NIST_P384", keyUsage: "KEY_AGREEMENT" },
      { keySpec: "ECC_NIST_P521", keyUsage: "SIGN_VERIFY" },
      { keySpec: "ECC_SECG_P256K1", keyUsage: "SIGN_VERIFY" },
      { keySpec: "ECC_NIST_EDWARDS25519", keyUsage: "SIGN_VERIFY" },
      { keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" },
      { keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" },
      { keySpec: "RSA_3072", keyUsage: "SIGN_VERIFY" },
      { keySpec: "ML_DSA_44", keyUsage: "SIGN_VERIFY" },
      { keySpec: "ML_DSA_65", keyUsage: "SIGN_VERIFY" },
    ];

    /**
     * Each seed: one key of every spec, then random operations (rotations, data keys and data key
     * pairs, encryptions, MACs and signatures, tags and aliases, deletion and its completion),
     * with the audit trail in the same schema. Then every table is dumped and searched for every
     * secret the test can learn: all material ever stored (unwrapped here with the root key),
     * data keys, data key pairs' private keys, the plaintexts given to Encrypt, the root key.
     */
    test("every table, audit trail included, holds only wrapped material (seeded)", async () => {
      for (const seed of seeds(90_000, 3)) {
        const r = new SeededRandom(seed);
        const schema = randomSchema("at_rest");
        schemas.push(schema);
        const clock = new ManualClock();
        const kms = await createKms({
          store: await PostgresKeyStore.open({ connectionString: target.url!, schema }),
          audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
          rootKey: Uint8Array.from(root),
          clock,
        });
        const secrets: Secret[] = [{ name: "root key", bytes: root, runs: true }];
        /** Every (key, version) ever stored, destroyed ones included. */
        const stored = new Map<
          string,
          { keySpec: string; wrapped: Buffer; keyId: string; v: number }
        >();
        const snapshot = async () => {
          const { rows } = await sql.query<{
            key_id: string;
            version: number;
            wrapped_material: Buffer;
            key_spec: string;
          }>(
            `SELECT v.key_id, v.version, v.wrapped_material, k.key_spec
           FROM "${schema}".kms_key_versions v JOIN "${schema}".kms_keys k USING (key_id)`,
          );
          for (const row of rows) {
            stored.set(`${row.key_id} v${row.version}`, {
              keySpec: row.key_spec,
              wrapped: row.wrapped_material,
              keyId: row.key_id,
              v: row.version,
            });
          }
        };
        const tolerate = async (p: Promise<unknown>) => {
          // Random operations hit wrong-usage and state errors: KMS errors only.
          const error = await p.then(
            () => undefined,
            (e: unknown) => e,
          );
          if (error !== undefined) expect(isKmsError(error), String(error)).toBe(true);
        };
        const keys: string[] = [];
        for (const spec of SPECS) keys.push((await kms.createKey(spec)).keyMetadata.keyId);
        await snapshot();
        for (let step = 0; step < 30; step++) {
          const keyId = r.pick(keys);
          switch (r.int(9)) {
            case 0:
              await tolerate(kms.rotateKeyOnDemand({ keyId }));
              break;
            case 1:
              await tolerate(
                kms
                  .generateDataKey({ keyId, keySpec: r.pick(["AES_128", "AES_256"] as const) })
                  .then((dk) => {
                    secrets.push({
                      name: `data key ${step}`,
                      bytes: Buffer.from(dk.plaintext),
                      runs: true,
                    });
                  }),
              );
              break;
            case 2:
              await tolerate(
                kms
                  .generateDataKeyPair({
                    keyId,
                    keyPairSpec: r.pick(["ECC_NIST_P256", "RSA_2048"] as const),
                  })
                  .then((pair) => {
                    secrets.push(
                      ...pkcs8Secrets(
                        `data key pair ${step}`,
                        Buffer.from(pair.privateKeyPlaintext),
                      ),
                    );
                  }),
              );
              break;
            case 3: {
              const plaintext = randomBytes(16 + r.int(200));
              secrets.push({ name: `plaintext ${step}`, bytes: plaintext, runs: true });
              await tolerate(
                kms
                  .encrypt({ keyId, plaintext })
                  .then((e) => kms.decrypt({ ciphertextBlob: e.ciphertextBlob })),
              );
              break;
            }
            case 4:
              await tolerate(
                kms.generateMac({ keyId, message: randomBytes(16), macAlgorithm: "HMAC_SHA_256" }),
              );
              await tolerate(
                kms.sign({ keyId, message: randomBytes(16), signingAlgorithm: "ECDSA_SHA_256" }),
              );
              break;
            case 5:
              await tolerate(r.int(2) === 0 ? kms.disableKey({ keyId }) : kms.enableKey({ keyId }));
              break;
            case 6:
              await tolerate(
                kms.tagResource({ keyId, tags: [{ tagKey: `t${step}`, tagValue: "v" }] }),
              );
              await tolerate(kms.createAlias({ aliasName: `alias/k${step}`, targetKeyId: keyId }));
              break;
            case 7:
              await tolerate(kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 }));
              break;
            case 8:
              clock.advanceDays(8);
              await kms.runMaintenance();
              break;
          }
          await snapshot();
        }
        for (const [name, s] of stored) {
          secrets.push(
            ...materialSecrets(
              `material of ${name}`,
              s.keySpec,
              unwrap(root, s.keyId, s.v, s.wrapped),
            ),
          );
        }
        const specsSeen = new Set([...stored.values()].map((s) => s.keySpec));
        expect(specsSeen.size, `seed ${seed}: material of every spec was stored`).toBe(
          new Set(SPECS.map((s) => s.keySpec)).size,
        );

        // Control: a secret planted as text in some row is found, so the text forms are searched.
        const canary = randomBytes(32);
        await sql.query(
          `INSERT INTO "${schema}".kms_settings (name, value) VALUES ('canary', $1)`,
          [canary.toString(r.pick(["hex", "base64", "base64url"] as const))],
        );
        const dump = await dumpSchema(sql, schema);
        expect(leakIn(dump, { name: "canary", bytes: canary, runs: true })).toBeDefined();
        await sql.query(`DELETE FROM "${schema}".kms_settings WHERE name = 'canary'`);
        expect(
          dump.indexOf("kms_audit_events"),
          `seed ${seed}: the audit trail is dumped`,
        ).not.toBe(-1);
        for (const secret of secrets) {
          expect(leakIn(dump, secret), `seed ${seed}: ${secret.name} at rest`).toBeUndefined();
        }
        // Control: the scan does see what the store keeps, so a miss above is not a blind scan.
        stored.clear();
        await snapshot();
        for (const [name, s] of stored) {
          expect(dump.indexOf(s.wrapped), `seed ${seed}: wrapped ${name} in the dump`).not.toBe(-1);
          expect(dump.indexOf(s.wrapped.toString("hex")), `seed ${seed}: hex of ${name}`).not.toBe(
            -1,
          );
        }
        await kms.close();
      }
    });
  },
);

describe.skipIf(target.skipReason !== undefined)(
  "PostgresAuditSink: tampered rows (seeded)",
  () => {
    const schema = randomSchema("tamper_audit");
    let sql: pg.Client;
    const events = `"${schema}".kms_audit_events`;

    beforeAll(async () => {
      sql = new pg.Client({ connectionString: target.url! });
      await sql.connect();
      await (await PostgresAuditSink.open({ connectionString: target.url!, schema })).close();
    });

    afterAll(async () => {
      await sql?.end();
      await dropSchema(schema);
    });

    interface Row {
      readonly sequence: number;
      readonly event: string;
    }

    interface AuditMutation {
      readonly description: string;
      /** Leaves every event and their order as they were (only the storage differs). */
      readonly harmless: boolean;
      apply(rows: readonly Row[]): Promise<void>;
    }

    const setEvent = (sequence: number, event: string) =>
      sql.query(`UPDATE ${events} SET event = $1 WHERE sequence = $2`, [event, sequence]);

    /** A printable character other than `c`, for an in-place edit of the JSON text. */
    function otherChar(r: SeededRandom, c: string): string {
      const pool = 'abcdefABCDEF0123456789{}[]":,.- ';
      let pick = r.pick([...pool]);
      while (pick === c) pick = r.pick([...pool]);
      return pick;
    }

    function auditMutation(r: SeededRandom, count: number): AuditMutation {
      const i = r.int(count);
      let j = r.int(count - 1);
      if (j >= i) j++;
      const kind = r.int(9);
      switch (kind) {
        case 0:
          return {
            description: `delete row ${i}`,
            harmless: false,
            apply: async () => {
              await sql.query(`DELETE FROM ${events} WHERE sequence = $1`, [i]);
            },
          };
        case 1:
          return {
            description: `swap the events of rows ${i} and ${j}`,
            harmless: false,
            apply: async (rows) => {
              await setEvent(i, rows[j]!.event);
              await setEvent(j, rows[i]!.event);
            },
          };
        case 2:
          return {
            description: `swap the sequence numbers of rows ${i} and ${j}`,
            harmless: false,
            apply: async () => {
              // Through a free number: the primary key is checked row by row.
              const move = `UPDATE ${events} SET sequence = $2 WHERE sequence = $1`;
              await sql.query(move, [i, 1_000_000]);
              await sql.query(move, [j, i]);
              await sql.query(move, [1_000_000, j]);
            },
          };
        case 3: {
          const at = r.int(2 ** 30);
          return {
            description: `replace character ${at} mod length of row ${i}`,
            harmless: false,
            apply: async (rows) => {
              const text = rows[i]!.event;
              const k = at % text.length;
              await setEvent(i, text.slice(0, k) + otherChar(r, text[k]!) + text.slice(k + 1));
            },
          };
        }
        case 4: {
          const field = r.pick(["requestID", "eventName", "eventTime", "principal"]);
          return {
            description: `edit ${field} of row ${i}, hash left as it was`,
            harmless: false,
            apply: async (rows) => {
              const event = JSON.parse(rows[i]!.event) as Record<string, unknown>;
              event[field] = `${String(event[field])}-edited`;
              await setEvent(i, JSON.stringify(event));
            },
          };
        }
        case 5:
          return {
            description: `edit row ${i} and recompute its own hash (not the rest of the chain)`,
            harmless: false,
            apply: async (rows) => {
              const event = JSON.parse(rows[i]!.event) as AuditEvent & Record<string, unknown>;
              const edited = { ...event, requestID: "forged" } as AuditEvent;
              await setEvent(i, JSON.stringify({ ...edited, hash: hashAuditEvent(edited) }));
            },
          };
        case 6:
          return {
            description: `insert a copy of row ${i} after the last`,
            harmless: false,
            apply: async (rows) => {
              await sql.query(`INSERT INTO ${events} (sequence, event) VALUES ($1, $2)`, [
                count,
                rows[i]!.event,
              ]);
            },
          };
        case 7:
          return {
            description: `delete rows from ${i} on (head row left)`,
            harmless: false,
            apply: async () => {
              await sql.query(`DELETE FROM ${events} WHERE sequence >= $1`, [i]);
            },
          };
        default:
          // The same event as other JSON text (members reordered), or the newest row filed under
          // a larger sequence number: what read() returns does not change, so nothing to report.
          return r.int(2) === 0
            ? {
                description: `re-serialize row ${i} with its members reversed`,
                harmless: true,
                apply: async (rows) => {
                  const event = JSON.parse(rows[i]!.event) as Record<string, unknown>;
                  await setEvent(
                    i,
                    JSON.stringify(Object.fromEntries(Object.entries(event).reverse())),
                  );
                },
              }
            : {
                description: "file the newest row under sequence 1000",
                harmless: true,
                apply: async () => {
                  await sql.query(`UPDATE ${events} SET sequence = 1000 WHERE sequence = $1`, [
                    count - 1,
                  ]);
                },
              };
      }
    }

    /** verify() of a Kms: ok, or a report / KMS error naming the tampering. */
    async function verdict(kms: Kms, where: string): Promise<boolean> {
      const result = await kms.audit.verify().catch((error: unknown) => {
        // A row that is not JSON cannot be read back at all: the sink refuses to return it.
        expect(isKmsError(error), `${where}: not a KMS error: ${String(error)}`).toBe(true);
        return { ok: false as const };
      });
      return result.ok;
    }

    /**
     * Each seed writes a trail of a few calls, tampers with its rows and asks verify(), on the
     * Kms that wrote the trail and on a fresh one that knows only the database. Tampering that
     * changes events or their order must be reported by both; verify() saying ok must mean the
     * events read back are exactly those written.
     */
    test("deleted, reordered or edited rows are reported by kms.audit.verify()", async () => {
      let reported = 0;
      for (const seed of seeds(100_000, 40)) {
        const r = new SeededRandom(seed);
        await sql.query(
          `TRUNCATE ${events}; UPDATE "${schema}".kms_audit_head SET sequence = -1, hash = $$${"0".repeat(64)}$$`,
        );
        const writer = await createKms({
          audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
        });
        const keyId = (await writer.createKey()).keyMetadata.keyId;
        const calls = 2 + r.int(8);
        for (let c = 0; c < calls; c++) {
          await writer.encrypt({ keyId, plaintext: randomBytes(8) }, { requestId: `r${c}` });
        }
        const written = await writer.audit.events();
        expect(await writer.audit.verify(), `seed ${seed}: control`).toMatchObject({ ok: true });
        const { rows } = await sql.query<{ sequence: string; event: string }>(
          `SELECT sequence, event FROM ${events} ORDER BY sequence`,
        );
        const mutation = auditMutation(r, rows.length);
        const label = `seed ${seed}: ${mutation.description} of ${rows.length}`;
        await mutation.apply(
          rows.map((row) => ({ sequence: Number(row.sequence), event: row.event })),
        );

        const fresh = await createKms({
          audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
        });
        try {
          for (const [who, kms] of [
            ["writer", writer],
            ["fresh instance", fresh],
          ] as const) {
            const ok = await verdict(kms, `${label} (${who})`);
            expect(ok, `${label}: ${who}'s verdict`).toBe(mutation.harmless);
            if (ok) {
              expect(await kms.audit.events(), `${label}: ${who} read back`).toEqual(written);
            } else {
              reported++;
            }
          }
        } finally {
          await fresh.close();
          await writer.close();
        }
      }
      expect(reported, "most cases tamper with the chain").toBeGreaterThan(40);
    });

    /**
     * The documented limit (README "Caveats and limits"): the head row lives beside the events,
     * so a writer who cuts the trail and moves the head back is caught only by a Kms that still
     * remembers the head it wrote, or by a head kept elsewhere.
     */
    test("a cut trail with a rewound head row: the writer notices, a fresh instance cannot", async () => {
      await sql.query(
        `TRUNCATE ${events}; UPDATE "${schema}".kms_audit_head SET sequence = -1, hash = $$${"0".repeat(64)}$$`,
      );
      const writer = await createKms({
        audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
      });
      const keyId = (await writer.createKey()).keyMetadata.keyId;
      for (let c = 0; c < 4; c++) await writer.encrypt({ keyId, plaintext: randomBytes(8) });
      const kept = (await writer.audit.events())[2]!;
      await sql.query(`DELETE FROM ${events} WHERE sequence > 2`);
      await sql.query(`UPDATE "${schema}".kms_audit_head SET sequence = 2, hash = $1`, [kept.hash]);
      const fresh = await createKms({
        audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
      });
      try {
        expect(await writer.audit.verify()).toMatchObject({ ok: false, problem: "truncated" });
        expect(await fresh.audit.verify()).toMatchObject({ ok: true, count: 3 });
      } finally {
        await fresh.close();
        await writer.close();
      }
    });
  },
);
