import { type KeyStore, MemoryKeyStore } from "@kms/core";
import { afterEach, describe, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { rootKeyRotationScenario } from "./fixtures/rotation-scenario.ts";

/** A MemoryKeyStore shared by several "instances": close() must not end it for the others. */
function sharedMemory(): () => Promise<KeyStore> {
  const store = new MemoryKeyStore();
  const shared = new Proxy(store, {
    get: (target, name) =>
      name === "close"
        ? async () => {}
        : (Reflect.get(target, name) as unknown as { bind?: unknown }) instanceof Function
          ? (Reflect.get(target, name) as (...args: unknown[]) => unknown).bind(target)
          : Reflect.get(target, name),
  });
  return async () => shared;
}

describe("rotateRootKey", () => {
  it("re-wraps a memory store online, resumes after an interruption, retires the old key", async () => {
    await rootKeyRotationScenario(sharedMemory());
  });

  describe.skipIf(target.skipReason !== undefined)("on PostgreSQL", () => {
    const schemas: string[] = [];
    afterEach(async () => {
      for (const schema of schemas.splice(0)) await dropSchema(schema);
    });

    it("re-wraps a shared PostgreSQL store the same way", async () => {
      const schema = randomSchema("rot");
      schemas.push(schema);
      await rootKeyRotationScenario(() =>
        PostgresKeyStore.open({ connectionString: target.url!, schema }),
      );
    });
  });
});
