/**
 * Found in adversarial review: a row of the trail re-spelled so that it parses to the event the
 * chain covers, while other readers of the table see something else.
 */
import { createKms, KmsInternalError } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

describe.skipIf(target.skipReason !== undefined)("PostgresAuditSink: stored text", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("refuses a row that parses to its chained event but is not the text the sink wrote", async () => {
    const schema = randomSchema("audit_text");
    cleanups.push(() => dropSchema(schema));
    const kms = await createKms({
      store: await PostgresKeyStore.open({ connectionString: target.url!, schema }),
      audit: await PostgresAuditSink.open({ connectionString: target.url!, schema }),
      rootKey: new Uint8Array(32).fill(7),
    });
    cleanups.push(() => kms.close());
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.encrypt({ keyId, plaintext: new Uint8Array(4) });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });

    const sql = new pg.Client({ connectionString: target.url! });
    await sql.connect();
    cleanups.push(() => sql.end());
    const { rows } = await sql.query<{ event: string }>(
      `SELECT event FROM "${schema}".kms_audit_events WHERE sequence = 1`,
    );
    // Readers that keep the first of two members would see a Decrypt here.
    const forged = rows[0]!.event.replace('"eventName":', '"eventName":"Decrypt","eventName":');
    expect(JSON.parse(forged)).toStrictEqual(JSON.parse(rows[0]!.event));
    await sql.query(`UPDATE "${schema}".kms_audit_events SET event = $1 WHERE sequence = 1`, [
      forged,
    ]);

    const failure = await kms.audit.verify().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(KmsInternalError);
    expect((failure as Error).message).toMatch(
      /the stored event at sequence 1 is not the text this sink writes/,
    );
    // The untouched row still reads.
    expect((await kms.audit.events({ limit: 1 }))[0]?.eventName).toBe("CreateKey");
  });
});
