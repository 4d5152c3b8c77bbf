/**
 * The demo against a KMS server, as `KMS_ENDPOINT=… pnpm … start` runs it: @kms/server on
 * loopback over a core Kms, the demo configured by `configFromEnv`, and the API driven over
 * HTTP. Nothing is stubbed between them: every KMS call (data keys, webhook MACs, key
 * provisioning, shredding) goes through the AWS SDK, SigV4 and HTTP. The HTTP and attack suites
 * run here unchanged, and one scenario's answers are compared with the in-process KMS's.
 */
import "reflect-metadata";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { KmsInternalError } from "@kms/core";
import { bearer } from "@kms/demo-shared/testing";
import { createKmsSigner, signRequest } from "@kms/http-signatures";
import { KmsService } from "@kms/nestjs";
import type { INestApplication } from "@nestjs/common";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { configFromEnv } from "../src/config.ts";
import {
  ADMIN_KEY_ALIAS,
  ADMIN_KEY_ID,
  type DemoKms,
  ensureKey,
  WEBHOOK_KEY_ALIAS,
  WEBHOOK_KEY_ID,
} from "../src/kms.ts";
import { KmsEndpointError, type RemoteKmsConfig, remoteKms } from "../src/remote-kms.ts";
import { createApp } from "../src/server.ts";
import { tenantKeyAlias } from "../src/tenant-keys.service.ts";
import { DEMO_KMS } from "../src/tokens.ts";
import { describeAdversarial } from "./adversarial.behaviour.ts";
import {
  ACCESS_KEY_ID,
  type Backend,
  DEMO_PRINCIPAL,
  onKmsServer,
  SECRET_ACCESS_KEY,
  sqliteBackend,
} from "./backends.ts";
import { describeDemo } from "./demo.behaviour.ts";

describeDemo("demo-nest-typeorm on SQLite with a KMS server", onKmsServer(sqliteBackend));
describeAdversarial(
  "demo-nest-typeorm under attack on SQLite with a KMS server",
  onKmsServer(sqliteBackend),
);

const ADA = { ssn: "123-45-6789", name: "Ada Lovelace", note: "penicillin", vitals: { bpm: 72 } };
const GRACE = { ssn: ADA.ssn, name: "Grace Hopper", note: "night shifts", vitals: null };
const PLAINTEXTS = [ADA.ssn, ADA.name, ADA.note, GRACE.name, GRACE.note];
/** Members that differ from run to run whichever KMS answers. */
const VOLATILE = new Set(["createdAt", "receivedAt", "deletionDate"]);

interface Demo {
  readonly app: INestApplication;
  readonly origin: string;
  call(
    method: string,
    path: string,
    options?: { tenant?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; body: unknown }>;
  /** A request signed with the webhook key, as `scripts/admin.ts` and the sender sign. */
  sign(
    method: string,
    path: string,
    body?: string,
  ): Promise<{ url: string; headers: Record<string, string> }>;
}

async function startDemo(backend: Backend): Promise<Demo> {
  const app = await createApp(backend.config);
  await app.listen(0, "127.0.0.1");
  const origin = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
  return {
    app,
    origin,
    async call(method, path, options = {}) {
      const response = await fetch(`${origin}${path}`, {
        method,
        headers: {
          ...(options.tenant === undefined ? {} : { authorization: bearer(options.tenant) }),
          ...(options.body === undefined ? {} : { "content-type": "application/json" }),
          ...options.headers,
        },
        ...(options.body === undefined
          ? {}
          : {
              body: typeof options.body === "string" ? options.body : JSON.stringify(options.body),
            }),
      });
      const text = await response.text();
      return { status: response.status, body: text === "" ? null : JSON.parse(text) };
    },
    async sign(method, path, body) {
      const url = `${origin}${path}`;
      const headers: Record<string, string> =
        body === undefined ? {} : { "content-type": "application/json" };
      // Admin routes take the admin key only; everything else signed here is a webhook.
      const admin = path.startsWith("/admin/");
      const signer = createKmsSigner({
        kms: app.get(KmsService).kms,
        keyId: admin ? ADMIN_KEY_ALIAS : WEBHOOK_KEY_ALIAS,
        algorithm: "hmac-sha256",
        publishedKeyId: admin ? ADMIN_KEY_ID : WEBHOOK_KEY_ID,
      });
      const added = await signRequest(
        { method, url, headers, ...(body === undefined ? {} : { body }) },
        { signer, nonce: true, expiresIn: 60 },
      );
      return { url, headers: { ...headers, ...added } };
    },
  };
}

/** `value` without what differs between any two runs: times, the port, random key ids. */
function stable(value: unknown, origin: string): unknown {
  const text = JSON.stringify(value)
    .replaceAll(origin, "<origin>")
    .replace(/key\/[0-9a-f-]{36}/g, "key/<id>")
    // Patients' and events' ids: random UUIDs.
    .replace(/"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"/g, '"<uuid>"');
  return JSON.parse(text, (key, member) => (VOLATILE.has(key) ? "<volatile>" : member));
}

/**
 * One pass through what the demo shows, answer by answer: two clinics, the cross-clinic read,
 * what is stored, a signed and a tampered webhook, crypto-shredding and its undoing.
 */
async function scenario(backend: Backend): Promise<[string, number, unknown][]> {
  const demo = await startDemo(backend);
  const steps: [string, number, unknown][] = [];
  const step = async (label: string, answer: Promise<{ status: number; body: unknown }>) => {
    const { status, body } = await answer;
    steps.push([label, status, stable(body, demo.origin)]);
    return body;
  };
  try {
    const ada = await step(
      "create in A",
      demo.call("POST", "/patients", { tenant: "clinic-a", body: ADA }),
    );
    await step("create in B", demo.call("POST", "/patients", { tenant: "clinic-b", body: GRACE }));
    await step("list A", demo.call("GET", "/patients", { tenant: "clinic-a" }));
    await step("B by SSN", demo.call("GET", `/patients?ssn=${ADA.ssn}`, { tenant: "clinic-b" }));
    const adaId = (ada as { id: string }).id;
    await step("A's row as B", demo.call("GET", `/patients/${adaId}`, { tenant: "clinic-b" }));

    const rows = await backend.raw('SELECT ssn, name, note, vitals, "nameIndex" FROM patients');
    const dump = JSON.stringify(rows);
    steps.push([
      "stored",
      rows.length,
      {
        ciphertextOnly: rows.every((row) =>
          ["ssn", "name", "note"].every((column) => /^kms1:/.test(String(row[column]))),
        ),
        plaintexts: PLAINTEXTS.filter((secret) => dump.includes(secret)),
      },
    ]);

    const event = JSON.stringify({
      event: "patient.created",
      tenantId: "clinic-a",
      patientId: adaId,
    });
    const hook = await demo.sign("POST", "/webhooks/patient-created", event);
    await step(
      "signed webhook",
      demo.call("POST", "/webhooks/patient-created", { headers: hook.headers, body: event }),
    );
    const forged = await demo.sign("POST", "/webhooks/patient-created", event);
    await step(
      "tampered webhook",
      demo.call("POST", "/webhooks/patient-created", {
        headers: forged.headers,
        body: event.replace(adaId, "00000000-0000-4000-8000-000000000000"),
      }),
    );
    await step("events", demo.call("GET", "/webhooks/events", { tenant: "clinic-a" }));

    const shred = await demo.sign("DELETE", "/admin/clinics/clinic-b/key");
    await step("shred B", demo.call("DELETE", "/admin/clinics/clinic-b/key", shred));
    await step("list B shredded", demo.call("GET", "/patients", { tenant: "clinic-b" }));
    await step("list A", demo.call("GET", "/patients", { tenant: "clinic-a" }));
    const restore = await demo.sign("POST", "/admin/clinics/clinic-b/key/restore");
    await step("restore B", demo.call("POST", "/admin/clinics/clinic-b/key/restore", restore));
    await step("list B restored", demo.call("GET", "/patients", { tenant: "clinic-b" }));
  } finally {
    await demo.app.close();
    await backend.close();
  }
  return steps;
}

describe("one scenario, in-process and against a KMS server", () => {
  test("gets the same answers, and they are the demo's", async () => {
    const inProcess = await scenario(await sqliteBackend());
    const remote = await scenario(await onKmsServer(sqliteBackend)());
    expect(remote).toEqual(inProcess);
    expect(inProcess.map(([label, status]) => [label, status])).toEqual([
      ["create in A", 201],
      ["create in B", 201],
      ["list A", 200],
      ["B by SSN", 200],
      ["A's row as B", 403],
      ["stored", 2],
      ["signed webhook", 200],
      ["tampered webhook", 401],
      ["events", 200],
      ["shred B", 200],
      ["list B shredded", 409],
      ["list A", 200],
      ["restore B", 200],
      ["list B restored", 200],
    ]);
    const answers = new Map(inProcess.map(([label, , body]) => [label, body]));
    expect(answers.get("create in A")).toMatchObject({
      ...ADA,
      webhook: { status: 200, receiptVerified: true },
    });
    expect(answers.get("A's row as B")).toMatchObject({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
    });
    expect(answers.get("stored")).toEqual({ ciphertextOnly: true, plaintexts: [] });
    expect(answers.get("tampered webhook")).toMatchObject({ check: "content-digest" });
    expect(answers.get("list B shredded")).toMatchObject({
      type: "https://kms.dev/problems/kms/KMSInvalidStateException",
    });
    expect(answers.get("list B restored")).toMatchObject([GRACE]);
  });
});

describe("the demo pointed at a KMS server", () => {
  let backend: Backend;

  beforeEach(async () => {
    backend = await onKmsServer(sqliteBackend)();
  });
  afterEach(async () => {
    await backend.close();
  });

  function server() {
    if (backend.kmsServer === undefined) throw new Error("no KMS server");
    return backend.kmsServer;
  }

  function remote(): RemoteKmsConfig {
    if (backend.config.kms === undefined) throw new Error("no KMS server");
    return backend.config.kms;
  }

  test("KMS_ENDPOINT and the access key configure it; the region defaults to the server's", () => {
    const env = {
      KMS_ENDPOINT: "http://127.0.0.1:4599",
      AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
    };
    expect(configFromEnv(env).kms).toEqual({
      endpoint: "http://127.0.0.1:4599",
      region: "local",
      accessKeyId: ACCESS_KEY_ID,
      secretAccessKey: SECRET_ACCESS_KEY,
    });
    expect(configFromEnv({ ...env, AWS_REGION: "eu-west-1" }).kms?.region).toBe("eu-west-1");
    expect(configFromEnv({ ...env, KMS_ENDPOINT: "" }).kms).toBeUndefined();
    expect(configFromEnv({}).kms).toBeUndefined();
  });

  test("a KMS_ENDPOINT without an access key, or that is not an http(s) URL, is refused at start", () => {
    const missing = new KmsEndpointError(
      "KMS_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an access key of the server's credentials file",
    );
    const endpoint = "http://127.0.0.1:4599";
    expect(() => configFromEnv({ KMS_ENDPOINT: endpoint })).toThrow(missing);
    expect(() =>
      configFromEnv({ KMS_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: ACCESS_KEY_ID }),
    ).toThrow(missing);
    for (const bad of ["127.0.0.1:4599", "localhost:4599", "ftp://127.0.0.1:4599"]) {
      expect(() =>
        configFromEnv({
          KMS_ENDPOINT: bad,
          AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
          AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
        }),
      ).toThrow(
        new KmsEndpointError(
          "KMS_ENDPOINT must be an http:// or https:// URL, such as http://127.0.0.1:4599",
        ),
      );
    }
  });

  test("every KMS call reaches the server as the access key's principal; no key store is opened", async () => {
    // A data dir that does not exist yet: only records.db goes there.
    const dataDir = join(backend.config.dataDir, "not-yet");
    const config = { ...backend.config, dataDir };
    const first = await startDemo({ ...backend, config });
    expect(first.app.get<DemoKms>(DEMO_KMS).description).toBe(
      `KMS server at ${server().endpoint} (region local), as ${ACCESS_KEY_ID}`,
    );
    const created = await first.call("POST", "/patients", { tenant: "clinic-a", body: ADA });
    await first.app.close();
    expect(created).toMatchObject({
      status: 201,
      body: { webhook: { status: 200, receiptVerified: true } },
    });
    const { id } = created.body as { id: string };

    // Restarted, with a cold data-key cache: the data key is unwrapped by the server.
    const second = await startDemo({ ...backend, config });
    const read = await second.call("GET", `/patients/${id}`, { tenant: "clinic-a" });
    expect(read).toMatchObject({ status: 200, body: ADA });
    const shred = await second.sign("DELETE", "/admin/clinics/clinic-a/key");
    expect(await second.call("DELETE", "/admin/clinics/clinic-a/key", shred)).toMatchObject({
      status: 200,
      body: { clinic: "clinic-a", keyState: "PendingDeletion" },
    });
    await second.app.close();

    // Read before the test's own calls below, which run as the account root.
    const events = await server().kms.audit.events();
    const clinicKey = (await server().kms.describeKey({ keyId: tenantKeyAlias("clinic-a") }))
      .keyMetadata;
    const webhookKey = (await server().kms.describeKey({ keyId: WEBHOOK_KEY_ALIAS })).keyMetadata;
    expect(clinicKey.keyState).toBe("PendingDeletion");
    expect(webhookKey).toMatchObject({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" });
    expect(events.map((e) => e.eventName)).toEqual(
      expect.arrayContaining([
        "DescribeKey",
        "CreateKey",
        "CreateAlias",
        "GenerateDataKey",
        "Decrypt",
        "GenerateMac",
        "VerifyMac",
        "ScheduleKeyDeletion",
      ]),
    );
    expect(new Set(events.map((e) => e.userIdentity.arn))).toEqual(new Set([DEMO_PRINCIPAL]));
    // AWS KMS's ScheduleKeyDeletion takes a key id or ARN, never an alias.
    const scheduled = events.find((e) => e.eventName === "ScheduleKeyDeletion");
    expect(scheduled?.requestParameters).toMatchObject({ keyId: clinicKey.keyId });
    expect(existsSync(join(dataDir, "records.db"))).toBe(true);
    expect(existsSync(join(dataDir, "kms.db"))).toBe(false);
    expect(existsSync(join(dataDir, "root.key"))).toBe(false);
  });

  test("a server that does not answer, or refuses the signature, stops the start with a KMS error", async () => {
    const wrongRegion = { ...backend.config, kms: { ...remote(), region: "eu-west-1" } };
    await expect(createApp(wrongRegion)).rejects.toThrow(KmsInternalError);
    const wrongSecret = { ...backend.config, kms: { ...remote(), secretAccessKey: "not-it" } };
    await expect(createApp(wrongSecret)).rejects.toThrow(KmsInternalError);
    await server().close();
    await expect(createApp(backend.config)).rejects.toThrow(KmsInternalError);
  });

  test("a server that stops answering later gets requests an opaque 500, not a leak", async () => {
    const demo = await startDemo(backend);
    try {
      await server().close();
      const answer = await demo.call("POST", "/patients", { tenant: "clinic-c", body: ADA });
      expect(answer).toEqual({
        status: 500,
        body: {
          type: "https://kms.dev/problems/kms/internal",
          title: "Key management failure",
          status: 500,
          detail: "the key management service failed; see the server logs",
        },
      });
    } finally {
      await demo.app.close();
    }
  });

  test("two instances on one server share the webhook key: one delivers to the other", async () => {
    const other = await sqliteBackend();
    const receiver = await startDemo({ ...other, config: { ...other.config, kms: remote() } });
    const sender = await startDemo({
      ...backend,
      config: { ...backend.config, webhookUrl: `${receiver.origin}/webhooks/patient-created` },
    });
    try {
      const created = await sender.call("POST", "/patients", { tenant: "clinic-a", body: ADA });
      expect(created).toMatchObject({
        status: 201,
        body: {
          webhook: {
            url: `${receiver.origin}/webhooks/patient-created`,
            status: 200,
            receiptVerified: true,
          },
        },
      });
      expect(await receiver.call("GET", "/webhooks/events", { tenant: "clinic-a" })).toMatchObject({
        status: 200,
        body: [{ tenantId: "clinic-a", signatureKeyId: WEBHOOK_KEY_ID }],
      });
    } finally {
      await sender.app.close();
      await receiver.app.close();
      await other.close();
    }
  });

  test("a key another process names first is used, and the one created meanwhile retired", async () => {
    const kms = remoteKms(remote());
    try {
      const alias = tenantKeyAlias("clinic-race");
      let theirs = "";
      const ours = await ensureKey(kms.keys, alias, async () => {
        // The other process: between our DescribeKey and our CreateAlias.
        theirs = (await kms.keys.createKey({ description: "theirs" })).keyMetadata.keyId;
        await kms.keys.createAlias({ aliasName: alias, targetKeyId: theirs });
        return kms.keys.createKey({ description: "ours" });
      });
      expect(ours).toBe(theirs);
      const keys = (await server().kms.listKeys({})).keys.map((k) => k.keyId);
      const states = await Promise.all(
        keys.map(async (keyId) => (await server().kms.describeKey({ keyId })).keyMetadata),
      );
      expect(states.filter((k) => k.description === "ours").map((k) => k.keyState)).toEqual([
        "PendingDeletion",
      ]);
    } finally {
      await kms.close();
    }
  });
});
