import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { createKms, type Kms } from "@kms/core";
import { bearer, TENANTS } from "@kms/demo-shared/testing";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { databaseTarget } from "@kms/tooling/databases";
import Database from "better-sqlite3";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { createApp } from "../src/app.ts";
import { type DemoDatabase, openDatabase } from "../src/database.ts";
import type { PrismaClient } from "../src/generated/sqlite/client.ts";
import { inProcessKms } from "../src/kms.ts";
import { clinicKeyId, type RecordsDb, recordsClient, tenantKeyAlias } from "../src/records.ts";
import { walkthrough } from "../src/walkthrough.ts";
import { NOT_IN_CLINIC, PATIENT_ID, SHREDDED, UNAUTHENTICATED, UNDECRYPTABLE } from "./problems.ts";

const postgres = databaseTarget("postgres");
const backends: [string, string | undefined, boolean][] = [
  ["SQLite", undefined, false],
  ["PostgreSQL", postgres.url, postgres.skipReason !== undefined],
];

describe.each(backends)("demo records API on %s", (_name, url, skip) => {
  let dir: string;
  let database: DemoDatabase;
  let kms: Kms;
  let server: Server;
  let engine: ReturnType<typeof recordsClient>["engine"];
  let base: string;
  let schema: string;

  beforeEach(async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), "demo-express-prisma-"));
    schema = `demo_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    database = await openDatabase({
      url,
      sqlitePath: join(dir, "records.db"),
      postgresSchema: schema,
    });
    kms = await createKms();
    const client = recordsClient(database.base, kms);
    engine = client.engine;
    server = createApp({ db: client.db, kms, tenants: TENANTS }).listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    if (skip) return;
    await new Promise((resolve) => server.close(resolve));
    await database.close();
    await kms.close();
    rmSync(dir, { recursive: true, force: true });
    if (url !== undefined) {
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  });

  /** A JSON response body: the tests know the API's shapes. */
  type Body = { id: string; [key: string]: unknown } & Record<string, unknown>;

  /** A request as `tenant` (its bearer token), or with `headers` alone. */
  async function call(
    tenant: string | { readonly headers: Record<string, string> },
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Body }> {
    const headers: Record<string, string> =
      typeof tenant === "string" ? { authorization: bearer(tenant) } : { ...tenant.headers };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(body === undefined
        ? {}
        : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? ({} as Body) : (JSON.parse(text) as Body),
    };
  }

  const ann = {
    ssn: "123-45-6789",
    name: "Ann Example",
    note: "Allergic",
    vitals: { bp: "120/80" },
  };

  test.skipIf(skip)("stores ciphertext and returns plaintext", async () => {
    const created = await call("clinic-a", "POST", "/patients", ann);
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ id: expect.stringMatching(PATIENT_ID), ...ann });
    const stored = (await database.storedPatient(created.body.id)) as Record<string, unknown>;
    for (const column of ["ssn", "ssnOfRecord", "name", "note", "vitals"]) {
      expect(String(stored[column]).startsWith("kms1:"), column).toBe(true);
    }
    expect(JSON.stringify(stored)).not.toMatch(/Ann|123-45|Allergic|120\/80/);
    expect((await call("clinic-a", "GET", `/patients/${created.body.id}`)).body).toEqual(
      created.body,
    );
  });

  test.skipIf(skip)(
    "looks up by SSN within a clinic only, and enforces uniqueness per clinic",
    async () => {
      const a = await call("clinic-a", "POST", "/patients", ann);
      const b = await call("clinic-b", "POST", "/patients", { ...ann, name: "Other clinic" });
      expect(b.status).toBe(201);
      expect((await call("clinic-a", "GET", "/patients?ssn=123-45-6789")).body).toEqual([a.body]);
      expect((await call("clinic-b", "GET", "/patients?ssn=123-45-6789")).body).toEqual([b.body]);
      expect((await call("clinic-a", "GET", "/patients?ssn=000-00-0000")).body).toEqual([]);
      expect((await call("clinic-a", "POST", "/patients", ann)).status).toBe(409);
      expect((await call("clinic-b", "GET", `/patients/${a.body.id}`)).status).toBe(404);
      expect((await call("clinic-b", "DELETE", `/patients/${a.body.id}`)).status).toBe(404);
    },
  );

  test.skipIf(skip)("updates and deletes", async () => {
    const a = await call("clinic-a", "POST", "/patients", ann);
    const patched = await call("clinic-a", "PATCH", `/patients/${a.body.id}`, {
      note: "No allergies",
      vitals: { bp: "110/70" },
    });
    expect(patched.body).toMatchObject({ note: "No allergies", vitals: { bp: "110/70" } });
    expect(String((await database.storedPatient(a.body.id))?.note)).not.toContain("No allergies");
    expect((await call("clinic-a", "DELETE", `/patients/${a.body.id}`)).status).toBe(204);
    expect((await call("clinic-a", "GET", `/patients/${a.body.id}`)).status).toBe(404);
  });

  test.skipIf(skip)("null clears the note and the vitals, on POST and on PATCH", async () => {
    const a = await call("clinic-a", "POST", "/patients", ann);
    const cleared = await call("clinic-a", "PATCH", `/patients/${a.body.id}`, {
      note: null,
      vitals: null,
    });
    expect(cleared).toEqual({ status: 200, body: { ...a.body, note: null, vitals: null } });
    const stored = await database.storedPatient(a.body.id);
    expect([stored?.note, stored?.vitals]).toEqual([null, null]);
    expect((await call("clinic-a", "GET", `/patients/${a.body.id}`)).body).toEqual(cleared.body);
    // Set again after being cleared.
    const set = await call("clinic-a", "PATCH", `/patients/${a.body.id}`, { vitals: ann.vitals });
    expect(set.body).toEqual({ ...cleared.body, vitals: ann.vitals });
    // On POST, null is no vitals, as leaving the field out is.
    const b = await call("clinic-a", "POST", "/patients", {
      ...ann,
      ssn: "123-45-6780",
      vitals: null,
    });
    expect(b).toEqual({
      status: 201,
      body: { ...b.body, ...ann, ssn: "123-45-6780", vitals: null },
    });
  });

  test.skipIf(skip)(
    "a request without its clinic's token gets 401 and no KMS key is created",
    async () => {
      const unauthorized = { status: 401, body: UNAUTHENTICATED };
      for (const headers of [
        {},
        // The header that used to choose the clinic chooses nothing now.
        { "x-tenant-id": "clinic-a" },
        { "x-tenant-id": "clinic-x" },
        { authorization: "Bearer not-a-token-of-any-clinic" },
        { authorization: `Basic ${Buffer.from("clinic-a:x").toString("base64")}` },
      ]) {
        expect(await call({ headers }, "GET", "/patients"), JSON.stringify(headers)).toEqual(
          unauthorized,
        );
        expect(await call({ headers }, "POST", "/patients", ann)).toEqual(unauthorized);
      }
      expect((await kms.listKeys({ limit: 100 })).keys).toEqual([]);
      // A clinic's own token works, whatever x-tenant-id says.
      const own = await call(
        { headers: { authorization: bearer("clinic-a"), "x-tenant-id": "clinic-b" } },
        "POST",
        "/patients",
        ann,
      );
      expect(own.status).toBe(201);
      expect((await call("clinic-a", "GET", "/patients")).body).toEqual([own.body]);
      expect((await call("clinic-b", "GET", "/patients")).body).toEqual([]);
      expect((await kms.listAliases({ limit: 100 })).aliases.map((a) => a.aliasName)).toEqual([
        tenantKeyAlias("clinic-a"),
        tenantKeyAlias("clinic-b"),
      ]);
    },
  );

  test.skipIf(skip)("rejects bad input with 400", async () => {
    expect((await call("clinic-a", "POST", "/patients", { ...ann, ssn: "123" })).status).toBe(400);
    expect((await call("clinic-a", "POST", "/patients", { ssn: ann.ssn })).status).toBe(400);
    expect((await call("clinic-a", "POST", "/patients", "{not json")).status).toBe(400);
    expect((await call("clinic-a", "GET", "/patients?ssn=abc")).status).toBe(400);
    expect((await call("clinic-a", "GET", "/patients/abc")).status).toBe(400);
  });

  test.skipIf(skip)(
    "a value copied across clinics fails; a deleted clinic key shreds only that clinic",
    async () => {
      const a = await call("clinic-a", "POST", "/patients", ann);
      const b = await call("clinic-b", "POST", "/patients", { ...ann, name: "B" });
      await database.overwriteStored(
        b.body.id,
        "name",
        (await database.storedPatient(a.body.id))?.name,
      );
      const tampered = await call("clinic-b", "GET", `/patients/${b.body.id}`);
      expect(tampered).toEqual({ status: 403, body: UNDECRYPTABLE });
      await call("clinic-b", "DELETE", `/patients/${b.body.id}`);
      await call("clinic-b", "POST", "/patients", { ...ann, name: "B2" });
      // ScheduleKeyDeletion takes a key id, not an alias (as in AWS).
      const { keyMetadata } = await kms.describeKey({ keyId: tenantKeyAlias("clinic-b") });
      await kms.scheduleKeyDeletion({ keyId: keyMetadata.keyId, pendingWindowInDays: 7 });
      engine.clearCache();
      expect(await call("clinic-b", "GET", "/patients")).toEqual({ status: 410, body: SHREDDED });
      expect((await call("clinic-a", "GET", "/patients")).body).toEqual([a.body]);
    },
  );

  // Patient tables of earlier releases, which `CREATE TABLE IF NOT EXISTS` would keep.
  const oldTables: [string, string][] = [
    ["recordId", `"ssn" TEXT NOT NULL, "name" TEXT NOT NULL`],
    ["ssnOfRecord", `"recordId" TEXT NOT NULL, "ssn" TEXT NOT NULL, "name" TEXT NOT NULL`],
  ];
  test.skipIf(skip).each(oldTables)(
    "a Patient table from before %s is refused with a message to drop it",
    async (column, columns) => {
      const create = `CREATE TABLE "Patient" ("id" INTEGER PRIMARY KEY, "tenantId" TEXT NOT NULL, ${columns})`;
      const refused = new RegExp(
        `the Patient table in .* predates the ${column} column: drop it \\(or use a fresh DEMO_DATA_DIR\\)`,
      );
      if (url === undefined) {
        const path = join(dir, "old.db");
        const old = retainSqliteHandle(new Database(path));
        old.exec(create);
        old.close();
        await expect(openDatabase({ url, sqlitePath: path })).rejects.toThrow(refused);
        return;
      }
      const oldSchema = `${schema}_old`;
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        await admin.query(`CREATE SCHEMA "${oldSchema}"`);
        await admin.query(`SET search_path TO "${oldSchema}"`);
        await admin.query(create);
        await expect(
          openDatabase({ url, sqlitePath: join(dir, "unused.db"), postgresSchema: oldSchema }),
        ).rejects.toThrow(refused);
      } finally {
        await admin.query(`DROP SCHEMA IF EXISTS "${oldSchema}" CASCADE`);
        await admin.end();
      }
    },
  );

  test.skipIf(skip)(
    "the walkthrough prints what is stored beside what the API returns",
    async () => {
      const lines: string[] = [];
      await walkthrough(database, inProcessKms(kms, "in-process (memory)"), (line) =>
        lines.push(line),
      );
      expect(lines[0]).toBe("KMS: in-process (memory)");
      // Each step is its title, then the JSON it shows: every step's own answer is checked,
      // so that one step's refusal cannot stand in for another's.
      const step = (title: RegExp): unknown => {
        const entry = lines.find((line) => title.test(line.split("\n")[0] ?? ""));
        if (entry === undefined) throw new Error(`no step ${title}`);
        return JSON.parse(entry.slice(entry.indexOf("\n") + 1));
      };
      expect(step(/^POST \/patients as clinic-a-\w+ → 201$/)).toMatchObject({
        name: "Ann Example",
        ssn: "123-45-6789",
      });
      const stored = step(/^What the database stores/) as Record<string, unknown>;
      for (const column of ["ssn", "ssnOfRecord", "name", "note", "vitals"]) {
        expect(String(stored[column]), column).toMatch(/^kms1:/);
      }
      expect(step(/^GET \/patients\/[0-9a-f-]{36} as clinic-b-\w+ → 404$/)).toEqual(NOT_IN_CLINIC);
      expect(step(/^GET \/patients with a token of no clinic → 401$/)).toEqual(UNAUTHENTICATED);
      expect(step(/^clinic-a-\w+'s encrypted name copied into .* → 403$/)).toEqual(UNDECRYPTABLE);
      expect(step(/^Ann's encrypted name copied into Bob's row .* → 403$/)).toEqual(UNDECRYPTABLE);
      expect(step(/^Ann's and Bob's encrypted SSNs swapped .* → 403$/)).toEqual(UNDECRYPTABLE);
      expect(step(/^clinic-b-\w+'s KMS key scheduled for deletion .* → 410$/)).toEqual(SHREDDED);
      // Bob's name and both SSNs, put back after the tampering, read as before.
      expect(step(/^…while clinic-a-\w+ still reads its records → 200$/)).toMatchObject([
        { name: "Ann Example", ssn: "123-45-6789" },
        { name: "Bob Example", ssn: "987-65-4321" },
      ]);
    },
  );

  test.skipIf(skip)(
    "an error whose message repeats a plaintext SSN reaches neither the answer nor the log",
    async () => {
      const ssn = "987-65-4320";
      let thrown: unknown;
      // The base client, without the encryption extension (the client a route might use by
      // mistake): Prisma refuses `vitals` (an object, for a String column), and its validation
      // error prints the whole `data` it was given, the SSN in plaintext.
      const unencrypted = {
        patient: {
          create: (args: Parameters<PrismaClient["patient"]["create"]>[0]) =>
            database.base.patient.create(args).catch((error: unknown) => {
              thrown = error;
              throw error;
            }),
        },
      } as unknown as RecordsDb;
      const faulty = createApp({ db: unencrypted, kms, tenants: TENANTS }).listen(0, "127.0.0.1");
      await once(faulty, "listening");
      const logged: unknown[][] = [];
      const spies = (["error", "warn", "log", "info"] as const).map((level) =>
        vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
          logged.push(args);
        }),
      );
      try {
        const response = await fetch(
          `http://127.0.0.1:${(faulty.address() as AddressInfo).port}/patients`,
          {
            method: "POST",
            headers: { authorization: bearer("clinic-a"), "content-type": "application/json" },
            body: JSON.stringify({ ...ann, ssn }),
          },
        );
        const text = await response.text();
        // The error did hold the plaintext: the assertions below are not vacuous.
        expect((thrown as Error).constructor.name).toBe("PrismaClientValidationError");
        expect((thrown as Error).message).toContain(ssn);
        const written = inspect(logged, { depth: null });
        for (const plaintext of [ssn, ann.name, ann.note]) {
          expect(text).not.toContain(plaintext);
          expect(written).not.toContain(plaintext);
        }

        expect(response.status).toBe(500);
        const requestId = response.headers.get("x-request-id");
        expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
        expect(response.headers.get("content-type")).toMatch(/^application\/problem\+json/);
        expect(JSON.parse(text)).toEqual({
          type: "https://kms.dev/problems/demo/internal",
          title: "Internal error",
          status: 500,
          detail: "the server failed; its log names this request id",
          requestId,
        });
        expect(logged).toEqual([
          [`internal error (request ${requestId}, POST /patients): PrismaClientValidationError`],
        ]);
      } finally {
        for (const spy of spies) spy.mockRestore();
        await new Promise((resolve) => faulty.close(resolve));
      }
    },
  );

  test.skipIf(skip)(
    "each request's KMS context comes from @kms/express: its id in the answer, the KMS audit trail and the log; its route as a pattern",
    async () => {
      // The clinic's first request provisions its key, under the id kmsContext chose (not the
      // client's x-request-id, which would let a client file its calls under another id).
      const created = await fetch(`${base}/patients`, {
        method: "POST",
        headers: {
          authorization: bearer("clinic-a"),
          "content-type": "application/json",
          "x-request-id": "chosen-by-the-client",
        },
        body: JSON.stringify(ann),
      });
      expect(created.status).toBe(201);
      const requestId = created.headers.get("x-request-id");
      expect(requestId).toMatch(
        /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      );
      const events = await kms.audit.events();
      const ofRequest = events.filter((event) => event.requestID === requestId);
      // The field engine's data-key loads too (the record's data key, the stable key behind the
      // SSN's lookups): they run inside the request's scope, so they carry its id.
      expect(ofRequest.map((event) => event.eventName)).toEqual([
        "DescribeKey",
        "CreateKey",
        "CreateAlias",
        "GenerateDataKey",
        "GenerateDataKey",
      ]);
      expect(events.filter((event) => event.requestID === "chosen-by-the-client")).toEqual([]);
      // Every request gets an id of its own.
      const read = await fetch(`${base}/patients`, {
        headers: { authorization: bearer("clinic-a") },
      });
      const second = read.headers.get("x-request-id");
      expect(second).toMatch(/^[0-9a-f-]{36}$/);
      expect(second).not.toBe(requestId);
      expect((await kms.audit.events()).filter((e) => e.requestID === second)).toMatchObject([
        { eventName: "DescribeKey" },
      ]);

      // A fault is logged under the answer's id, with the route Express matched: the pattern,
      // never the patient id of the path.
      const broken = {
        patient: {
          findFirst: () => Promise.reject(new TypeError("the database went away")),
        },
      } as unknown as RecordsDb;
      const faulty = createApp({ db: broken, kms, tenants: TENANTS }).listen(0, "127.0.0.1");
      await once(faulty, "listening");
      const logged = vi.spyOn(console, "error").mockImplementation(() => {});
      try {
        const response = await fetch(
          `http://127.0.0.1:${(faulty.address() as AddressInfo).port}/patients/00000000-0000-4000-8000-000000004711`,
          { headers: { authorization: bearer("clinic-a") } },
        );
        expect(response.status).toBe(500);
        const id = response.headers.get("x-request-id");
        expect(id).toMatch(/^[0-9a-f-]{36}$/);
        expect(await response.json()).toMatchObject({ requestId: id });
        expect(logged.mock.calls).toEqual([
          [`internal error (request ${id}, GET /patients/{:id}): TypeError`],
        ]);
      } finally {
        logged.mockRestore();
        await new Promise((resolve) => faulty.close(resolve));
      }
    },
  );
});

test("a value whose context names no clinic gets no key, rather than a shared one", () => {
  expect(clinicKeyId({ tenantId: "clinic-a", clinic: "clinic-a" })).toBe(
    tenantKeyAlias("clinic-a"),
  );
  for (const context of [{}, { clinic: "clinic-a" }, { tenantId: "" }]) {
    expect(() => clinicKeyId(context), JSON.stringify(context)).toThrow(
      expect.objectContaining({ code: "ValidationException" }),
    );
  }
});
