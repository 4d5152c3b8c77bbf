/**
 * What the golden-store generators share: the refusal to overwrite committed vectors, a Kms on a
 * memory store under a fixed root key and clock, and the store snapshot the tests open.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKms, type Kms, MemoryKeyStore } from "../src/index.ts";
import { ManualClock } from "../src/testing/manual-clock.ts";
import { toJson } from "./vector-json.ts";

/** Exits when any of `names` exists in `out`, unless run with --force: golden files are history. */
export function refuseToOverwrite(out: string, names: readonly string[]): void {
  if (names.some((name) => existsSync(join(out, name))) && !process.argv.includes("--force")) {
    console.error(`golden vectors exist in ${out}; they must not be regenerated (see README.md)`);
    process.exit(1);
  }
}

/** A Kms on a fresh memory store under `rootKeyHex`, its clock at 2026-01-01. */
export async function goldenKms(
  rootKeyHex: string,
): Promise<{ kms: Kms; store: MemoryKeyStore; clock: ManualClock }> {
  const store = new MemoryKeyStore();
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const kms = await createKms({
    store,
    clock,
    rootKey: new Uint8Array(Buffer.from(rootKeyHex, "hex")),
  });
  return { kms, store, clock };
}

/**
 * Writes root-key.hex, store.json (every key, alias and the root-key id) and `operationsFile`
 * holding `operations`; returns how many keys the store held.
 */
export async function writeGoldenStore(
  out: string,
  rootKeyHex: string,
  store: MemoryKeyStore,
  operationsFile: string,
  operations: unknown,
): Promise<number> {
  const snapshot = {
    format: "kms-golden-store/v1",
    keys: await store.listKeys({ limit: 1000 }),
    aliases: await store.listAliases({ limit: 1000 }),
    settings: { "root-key-id": await store.getSetting("root-key-id") },
  };
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "root-key.hex"), `${rootKeyHex}\n`);
  writeFileSync(join(out, "store.json"), toJson(snapshot));
  writeFileSync(join(out, operationsFile), toJson(operations));
  return snapshot.keys.length;
}
