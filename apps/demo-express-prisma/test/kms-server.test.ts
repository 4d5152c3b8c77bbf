/**
 * The demo against a KMS server, as `KMS_ENDPOINT=… pnpm … start` runs it: @kms/server on
 * loopback over a core Kms, the demo's own `openDemoKms` reading the environment, and the API
 * driven over HTTP. Nothing is stubbed between them: every KMS call goes through the AWS SDK,
 * SigV4 and HTTP. The scenarios run against the in-process KMS too, with the same expected
 * responses, so a remote error that maps differently fails here.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createKms, type Kms } from "@kms/core";
import { bearer, TENANTS } from "@kms/demo-shared/testing";
import { createKmsServer } from "@kms/server";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { createApp } from "../src/app.ts";
import { type DemoDatabase, openDatabase } from "../src/database.ts";
import { type DemoKms, openDemoKms } from "../src/kms.ts";
import { recordsClient, scheduleTenantKeyDeletion, tenantKeyAlias } from "../src/records.ts";
import { KmsEndpointError } from "../src/remote-kms.ts";
import { WalkthroughStoppedError, walkthrough } from "../src/walkthrough.ts";
import { KMS_FAULT, NOT_IN_CLINIC, PATIENT_ID, SHREDDED, UNDECRYPTABLE } from "./problems.ts";

const appRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The demo's identity on the server: a role in the server KMS's account (000000000000). */
const DEMO_PRINCIPAL = "arn:aws:iam::000000000000:role/demo-records";
const ACCESS_KEY_ID = "AKIADEMORECORDS00001";
const SECRET_ACCESS_KEY = "demo-records-secret-0123456789abcdef";

const ann = { ssn: "401-11-1111", name: "Ann Alpha", note: "alpha-note", vitals: { bp: "121/81" } };
const bob = { ssn: "503-33-3333", name: "Bob Bravo", note: "bravo-note", vitals: { bp: "131/91" } };

type Body = { id: string } & Record<string, unknown>;

/** The KMS server the remote runs talk to: a core Kms behind @kms/server on 127.0.0.1. */
interface KmsServer {
  readonly kms: Kms;
  readonly server: Server;
  readonly endpoint: string;
}

async function startKmsServer(): Promise<KmsServer> {
  const kms = await createKms();
  // Default key and account policies allow every principal of the KMS's account everything,
  // so the demo's role may create its clinics' keys and use them (docs/POLICY.md).
  const server = createKmsServer({
    kms,
    credentials: {
      [ACCESS_KEY_ID]: { secretAccessKey: SECRET_ACCESS_KEY, principal: DEMO_PRINCIPAL },
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { kms, server, endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** The environment `kms serve`'s README section tells a user to set. */
function pointDemoAt(endpoint: string): void {
  vi.stubEnv("KMS_ENDPOINT", endpoint);
  vi.stubEnv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID);
  vi.stubEnv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
  // The server's region is the default; a session token would be refused by the server.
  vi.stubEnv("AWS_REGION", undefined);
  vi.stubEnv("AWS_SESSION_TOKEN", undefined);
}

describe.each([
  ["a KMS server", true],
  ["the in-process KMS", false],
])("the demo on %s", (_name, remote) => {
  let dir: string;
  let kmsServer: KmsServer | undefined;
  let demoKms: DemoKms;
  let database: DemoDatabase;
  let engine: ReturnType<typeof recordsClient>["engine"];
  let app: Server;
  let base: string;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "demo-express-prisma-kms-server-"));
    if (remote) {
      kmsServer = await startKmsServer();
      pointDemoAt(kmsServer.endpoint);
    } else {
      vi.stubEnv("KMS_ENDPOINT", undefined);
    }
    demoKms = await openDemoKms(dir);
    database = await openDatabase({ sqlitePath: join(dir, "records.db") });
    const client = recordsClient(database.base, demoKms.crypto);
    engine = client.engine;
    app = createApp({ db: client.db, kms: demoKms.keys, tenants: TENANTS }).listen(0, "127.0.0.1");
    await new Promise((resolve) => app.once("listening", resolve));
    base = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await new Promise((resolve) => app.close(resolve));
    await database.close();
    await demoKms.close();
    if (kmsServer !== undefined) {
      const { server, kms } = kmsServer;
      await new Promise((resolve) => server.close(resolve));
      await kms.close();
      kmsServer = undefined;
    }
    vi.unstubAllEnvs();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(
    tenant: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Body }> {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: bearer(tenant),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text === "" ? {} : JSON.parse(text)) as Body };
  }

  test("two clinics' records are stored encrypted and read back", async () => {
    const a = await call("clinic-a", "POST", "/patients", ann);
    const b = await call("clinic-b", "POST", "/patients", bob);
    expect(a).toEqual({ status: 201, body: { id: expect.stringMatching(PATIENT_ID), ...ann } });
    expect(b).toEqual({ status: 201, body: { id: expect.stringMatching(PATIENT_ID), ...bob } });
    expect(await call("clinic-a", "GET", `/patients/${a.body.id}`)).toEqual({
      status: 200,
      body: a.body,
    });
    expect((await call("clinic-b", "GET", "/patients")).body).toEqual([b.body]);
    expect((await call("clinic-a", "GET", `/patients?ssn=${ann.ssn}`)).body).toEqual([a.body]);
    for (const [id, patient] of [
      [a.body.id, ann],
      [b.body.id, bob],
    ] as const) {
      const stored = (await database.storedPatient(id)) as Record<string, unknown>;
      for (const column of ["ssn", "ssnOfRecord", "name", "note", "vitals"]) {
        expect(String(stored[column]).startsWith("kms1:"), column).toBe(true);
      }
      const text = JSON.stringify(stored);
      for (const secret of [patient.ssn, patient.name, patient.note, patient.vitals.bp]) {
        expect(text).not.toContain(secret);
      }
    }
    const keyIds = await Promise.all(
      ["clinic-a", "clinic-b"].map(
        async (tenant) =>
          (await demoKms.keys.describeKey({ keyId: tenantKeyAlias(tenant) })).keyMetadata.keyId,
      ),
    );
    expect(new Set(keyIds).size).toBe(2);
  });

  test("another clinic gets 404, and a ciphertext copied across clinics does not decrypt", async () => {
    const a = await call("clinic-a", "POST", "/patients", ann);
    const b = await call("clinic-b", "POST", "/patients", { ...bob, ssn: ann.ssn });
    expect(await call("clinic-b", "GET", `/patients/${a.body.id}`)).toEqual({
      status: 404,
      body: NOT_IN_CLINIC,
    });
    expect(await call("clinic-b", "DELETE", `/patients/${a.body.id}`)).toEqual({
      status: 404,
      body: NOT_IN_CLINIC,
    });
    expect((await call("clinic-b", "GET", `/patients?ssn=${ann.ssn}`)).body).toEqual([b.body]);
    await database.overwriteStored(
      b.body.id,
      "name",
      (await database.storedPatient(a.body.id))?.name,
    );
    expect(await call("clinic-b", "GET", `/patients/${b.body.id}`)).toEqual({
      status: 403,
      body: UNDECRYPTABLE,
    });
    expect((await call("clinic-a", "GET", "/patients")).body).toEqual([a.body]);
  });

  test("a clinic whose key is scheduled for deletion gets 410; the other reads on", async () => {
    const a = await call("clinic-a", "POST", "/patients", ann);
    await call("clinic-b", "POST", "/patients", bob);
    await scheduleTenantKeyDeletion(demoKms.keys, "clinic-b");
    engine.clearCache();
    expect(await call("clinic-b", "GET", "/patients")).toEqual({ status: 410, body: SHREDDED });
    expect(await call("clinic-b", "POST", "/patients", ann)).toEqual({
      status: 410,
      body: SHREDDED,
    });
    expect(await call("clinic-a", "GET", "/patients")).toEqual({ status: 200, body: [a.body] });
  });

  test("the walkthrough says which KMS it talks to, and runs to the end", async () => {
    const lines: string[] = [];
    await walkthrough(database, demoKms, (line) => lines.push(line));
    expect(lines[0]).toBe(
      remote
        ? `KMS: KMS server at ${kmsServer?.endpoint} (region local), as ${ACCESS_KEY_ID}`
        : `KMS: in-process, keys in ${join(dir, "kms.db")}`,
    );
    const text = lines.join("\n");
    expect(text).toContain('"name": "Ann Example"');
    expect(text).toMatch(/"name": "kms1:/);
    expect(text).toMatch(/→ 404/);
    expect(text).toMatch(/InvalidCiphertextException/);
    expect(text).toMatch(/scheduled for deletion → GET \/patients as clinic-b-\w+ → 410/);
    expect(text).toMatch(/still reads its records → 200/);
  });
});

describe("the demo pointed at a KMS server", () => {
  let dir: string;
  let kmsServer: KmsServer;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "demo-express-prisma-kms-server-"));
    kmsServer = await startKmsServer();
    pointDemoAt(kmsServer.endpoint);
  });
  afterEach(async () => {
    await new Promise((resolve) => kmsServer.server.close(resolve));
    await kmsServer.kms.close();
    vi.unstubAllEnvs();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The demo's API on a port of its own, as `pnpm … serve` runs it. */
  async function serveDemo(
    demoKms: DemoKms,
    database: DemoDatabase,
  ): Promise<{ readonly url: string; close(): Promise<void> }> {
    const { db } = recordsClient(database.base, demoKms.crypto);
    const server = createApp({ db, kms: demoKms.keys, tenants: TENANTS }).listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/patients`,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  test("every KMS call reaches the server as the access key's principal; no key store is opened", async () => {
    const database = await openDatabase({ sqlitePath: join(dir, "records.db") });
    try {
      const writer = await openDemoKms(dir);
      const first = await serveDemo(writer, database);
      const created = await fetch(first.url, {
        method: "POST",
        headers: { authorization: bearer("clinic-a"), "content-type": "application/json" },
        body: JSON.stringify(ann),
      });
      await first.close();
      await writer.close();
      expect(created.status).toBe(201);
      const { id } = (await created.json()) as { id: string };

      // Restarted, with a cold data-key cache: the data key is unwrapped by the server.
      const reader = await openDemoKms(dir);
      const second = await serveDemo(reader, database);
      const read = await fetch(`${second.url}/${id}`, {
        headers: { authorization: bearer("clinic-a") },
      });
      await second.close();
      expect(await read.json()).toEqual({ id, ...ann });

      await scheduleTenantKeyDeletion(reader.keys, "clinic-a");
      await reader.close();
      // Read before the test's own calls below, which run as the account root.
      const events = await kmsServer.kms.audit.events();
      const { keyMetadata } = await kmsServer.kms.describeKey({
        keyId: tenantKeyAlias("clinic-a"),
      });
      expect(keyMetadata.keyState).toBe("PendingDeletion");
      expect(events.map((e) => e.eventName)).toEqual(
        expect.arrayContaining([
          "DescribeKey",
          "CreateKey",
          "CreateAlias",
          "GenerateDataKey",
          "Decrypt",
          "ScheduleKeyDeletion",
        ]),
      );
      expect(new Set(events.map((e) => e.userIdentity.arn))).toEqual(new Set([DEMO_PRINCIPAL]));
      // AWS KMS's ScheduleKeyDeletion takes a key id or ARN, never an alias.
      const scheduled = events.find((e) => e.eventName === "ScheduleKeyDeletion");
      expect(scheduled?.requestParameters).toMatchObject({ keyId: keyMetadata.keyId });
      expect(existsSync(join(dir, "kms.db"))).toBe(false);
      expect(existsSync(join(dir, "root.key"))).toBe(false);
    } finally {
      await database.close();
    }
  });

  test("`node src/main.ts` (the start script) walks through against the server, in a data dir it creates", async () => {
    const dataDir = join(dir, "not-yet");
    const { stdout } = await promisify(execFile)(process.execPath, ["src/main.ts", "walkthrough"], {
      cwd: appRoot,
      env: { ...process.env, DEMO_DATA_DIR: dataDir },
    });
    expect(stdout.split("\n")[0]).toBe(
      `KMS: KMS server at ${kmsServer.endpoint} (region local), as ${ACCESS_KEY_ID}`,
    );
    expect(stdout).toMatch(/scheduled for deletion → GET \/patients as clinic-b-\w+ → 410/);
    expect(stdout).toMatch(/still reads its records → 200/);
    expect(existsSync(join(dataDir, "records.db"))).toBe(true);
    expect(existsSync(join(dataDir, "kms.db"))).toBe(false);
    const aliases = (await kmsServer.kms.listAliases({})).aliases.map((a) => a.aliasName);
    expect(aliases.filter((name) => name.startsWith("alias/demo-clinic/"))).toHaveLength(2);
  });

  test("a KMS server that does not answer stops the walkthrough at its first step", async () => {
    await new Promise((resolve) => kmsServer.server.close(resolve));
    const demoKms = await openDemoKms(dir);
    const database = await openDatabase({ sqlitePath: join(dir, "records.db") });
    const lines: string[] = [];
    try {
      const stopped = await walkthrough(database, demoKms, (line) => lines.push(line)).catch(
        (error: unknown) => error,
      );
      expect(stopped).toBeInstanceOf(WalkthroughStoppedError);
      expect((stopped as Error).message).toBe(
        `the walkthrough stopped: creating a patient answered 500; check the KMS (KMS server at ${kmsServer.endpoint} (region local), as ${ACCESS_KEY_ID})`,
      );
      expect(lines.at(-1)).toBe(`POST /patients → 500\n${JSON.stringify(KMS_FAULT, null, 2)}\n`);
    } finally {
      await database.close();
      await demoKms.close();
    }
  });

  test("a KMS_ENDPOINT without an access key, or that is not an http(s) URL, is refused at start", async () => {
    vi.stubEnv("AWS_SECRET_ACCESS_KEY", undefined);
    const missing = await openDemoKms(dir).catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(KmsEndpointError);
    expect((missing as Error).message).toBe(
      "KMS_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an access key of the server's credentials file",
    );
    vi.stubEnv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
    for (const endpoint of ["127.0.0.1:4599", "localhost:4599", "ftp://127.0.0.1:4599"]) {
      vi.stubEnv("KMS_ENDPOINT", endpoint);
      await expect(openDemoKms(dir)).rejects.toThrow(
        new KmsEndpointError(
          "KMS_ENDPOINT must be an http:// or https:// URL, such as http://127.0.0.1:4599",
        ),
      );
    }
  });

  test("a wrong AWS_REGION is refused by the server and answered as an opaque 500, logged here", async () => {
    vi.stubEnv("AWS_REGION", "eu-west-1");
    const demoKms = await openDemoKms(dir);
    const database = await openDatabase({ sqlitePath: join(dir, "records.db") });
    const demo = await serveDemo(demoKms, database);
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      const response = await fetch(demo.url, { headers: { authorization: bearer("clinic-a") } });
      expect(response.status).toBe(500);
      expect(await response.json()).toEqual(KMS_FAULT);
      // The client learns nothing; the operator's log names the fault, under the answer's
      // request id (kmsErrorHandler's log: the stack, then each cause), and no secret.
      const requestId = response.headers.get("x-request-id");
      expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(logged.mock.calls).toEqual([
        [
          expect.stringMatching(
            new RegExp(
              `^\\[request ${requestId}\\] KmsInternalError: AWS KMS DescribeKey failed with InvalidSignatureException: .*region`,
            ),
          ),
        ],
      ]);
      expect(String(logged.mock.calls[0]?.[0])).not.toContain(SECRET_ACCESS_KEY);
    } finally {
      logged.mockRestore();
      await demo.close();
      await database.close();
      await demoKms.close();
    }
  });
});
