import "reflect-metadata";
import { execFile, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createKms } from "@kms/core";
import { bearer } from "@kms/demo-shared/testing";
import { createKmsSigner, signRequest, verifyMessage } from "@kms/http-signatures";
import { KmsService } from "@kms/nestjs";
import type { INestApplication } from "@nestjs/common";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ADMIN_KEY_ALIAS,
  ADMIN_KEY_ID,
  type DemoKms,
  WEBHOOK_KEY_ALIAS,
  WEBHOOK_KEY_ID,
} from "../src/kms.ts";
import { createApp } from "../src/server.ts";
import { DEMO_KMS } from "../src/tokens.ts";
import type { Backend } from "./backends.ts";

const ADA = {
  ssn: "123-45-6789",
  name: "Ada Lovelace",
  note: "allergic to penicillin",
  vitals: { bpm: 72, bp: "120/80" },
};
const ALAN = { ssn: "987-65-4321", name: "Alan Turing", note: null, vitals: null };
/** Clinic B's patient shares Ada's SSN: deterministic ciphertexts must still differ by clinic. */
const GRACE = {
  ssn: ADA.ssn,
  name: "Grace Hopper",
  note: "night shifts only",
  vitals: { bpm: 64 },
};
const PLAINTEXTS = [
  ADA.ssn,
  ADA.name,
  ADA.note,
  "120/80",
  ALAN.ssn,
  ALAN.name,
  GRACE.name,
  GRACE.note,
  "Lovelace",
  "ada lovelace",
];

const json = { "content-type": "application/json" };
/** The form of every id the API answers: a random UUID. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const execFileAsync = promisify(execFile);
/** `pnpm --filter @kms/demo-nest-typeorm admin`. */
const ADMIN_SCRIPT = fileURLToPath(new URL("../scripts/admin.ts", import.meta.url));
/** `pnpm --filter @kms/demo-nest-typeorm stored`. */
const STORED_SCRIPT = fileURLToPath(new URL("../scripts/show-stored.ts", import.meta.url));

function expectProblem(res: request.Response, status: number, type: string): void {
  expect(res.status).toBe(status);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(JSON.parse(res.text)).toMatchObject({ type: `https://kms.dev/problems/${type}`, status });
}

/** The app over HTTP on one backend: tenants, lookups, isolation, stored bytes, webhooks. */
export function describeDemo(label: string, open: () => Promise<Backend>): void {
  describe(label, () => {
    let backend: Backend;
    let app: INestApplication;
    let origin: string;
    const ids: Record<string, string> = {};

    beforeAll(async () => {
      backend = await open();
      app = await createApp(backend.config);
      await app.listen(0, "127.0.0.1");
      origin = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
    });

    afterAll(async () => {
      await app?.close();
      await backend?.close();
    });

    async function create(tenant: string, body: object): Promise<request.Response> {
      return request(origin)
        .post("/patients")
        .set({ ...json, authorization: bearer(tenant) })
        .send(body);
    }

    describe("patients", () => {
      it("creates patients for two clinics and returns the decrypted values", async () => {
        for (const [key, tenant, body] of [
          ["ada", "clinic-a", ADA],
          ["alan", "clinic-a", ALAN],
          ["grace", "clinic-b", GRACE],
        ] as const) {
          const res = await create(tenant, body);
          expect(res.status).toBe(201);
          expect(res.body).toMatchObject({ ...body, tenantId: tenant });
          ids[key] = res.body.id;
        }
      });

      it("lists only the requesting clinic's patients", async () => {
        const a = await request(origin).get("/patients").set("authorization", bearer("clinic-a"));
        expect(a.status).toBe(200);
        expect(a.body.map((p: { name: string }) => p.name)).toEqual([ADA.name, ALAN.name]);
        const b = await request(origin).get("/patients").set("authorization", bearer("clinic-b"));
        expect(b.body).toMatchObject([{ ...GRACE, id: ids.grace, tenantId: "clinic-b" }]);
      });

      it("finds a patient by SSN (deterministic) within the clinic only", async () => {
        const a = await request(origin)
          .get(`/patients?ssn=${ADA.ssn}`)
          .set("authorization", bearer("clinic-a"));
        expect(a.body).toMatchObject([{ id: ids.ada, ...ADA }]);
        // Same SSN, other clinic: its own patient, not Ada.
        const b = await request(origin)
          .get(`/patients?ssn=${ADA.ssn}`)
          .set("authorization", bearer("clinic-b"));
        expect(b.body).toMatchObject([{ id: ids.grace, name: GRACE.name }]);
        const none = await request(origin)
          .get(`/patients?ssn=${ALAN.ssn}`)
          .set("authorization", bearer("clinic-b"));
        expect(none.body).toEqual([]);
      });

      it("finds a patient by name through the blind index (trimmed, case-insensitive)", async () => {
        const res = await request(origin)
          .get("/patients")
          .query({ name: "  ADA lovelace " })
          .set("authorization", bearer("clinic-a"));
        expect(res.body).toMatchObject([{ id: ids.ada }]);
        const other = await request(origin)
          .get("/patients")
          .query({ name: "ada lovelace" })
          .set("authorization", bearer("clinic-b"));
        expect(other.body).toEqual([]);
      });

      it("reads its own patient by id", async () => {
        const res = await request(origin)
          .get(`/patients/${ids.ada}`)
          .set("authorization", bearer("clinic-a"));
        expect(res.status).toBe(200);
        expect(res.body).toMatchObject(ADA);
      });

      it("refuses another clinic's row with 403 problem+json even though the query returned it", async () => {
        // GET /patients/:id does not filter by tenant on purpose: the row comes back from the
        // database, and decryption in clinic B's context fails.
        const res = await request(origin)
          .get(`/patients/${ids.ada}`)
          .set("authorization", bearer("clinic-b"));
        expectProblem(res, 403, "kms/InvalidCiphertextException");
        for (const secret of PLAINTEXTS) expect(res.text).not.toContain(secret);
        const back = await request(origin)
          .get(`/patients/${ids.grace}`)
          .set("authorization", bearer("clinic-a"));
        expectProblem(back, 403, "kms/InvalidCiphertextException");
      });

      it("takes the clinic of the token, whatever x-tenant-id says", async () => {
        const res = await request(origin)
          .get("/patients")
          .set({ authorization: bearer("clinic-b"), "x-tenant-id": "clinic-a" });
        expect(res.body.map((p: { name: string }) => p.name)).toEqual([GRACE.name]);
        const own = await request(origin)
          .get(`/patients/${ids.ada}`)
          .set({ authorization: bearer("clinic-b"), "x-tenant-id": "clinic-a" });
        expect(own.status).toBe(403);
      });

      it("answers 401 problem+json without a clinic's token, and creates no KMS key", async () => {
        const keys = backend.kmsServer?.kms ?? app.get(KmsService).core;
        const aliases = async () => (await keys.listAliases({})).aliases.map((a) => a.aliasName);
        const before = await aliases();
        for (const headers of [
          {},
          // What used to choose the clinic, and the user format the old stand-in accepted.
          { "x-tenant-id": "clinic-a" },
          { "x-tenant-id": "clinic-new" },
          { authorization: "Bearer nurse@clinic-a" },
          { authorization: "Bearer not-a-token-of-any-clinic" },
        ]) {
          for (const res of [
            await request(origin).get("/patients").set(headers),
            await request(origin)
              .post("/patients")
              .set({ ...json, ...headers })
              .send({ ...GRACE, ssn: "999-99-9999" }),
            await request(origin).get(`/patients/${ids.ada}`).set(headers),
            await request(origin).get("/webhooks/events").set(headers),
          ]) {
            expectProblem(res, 401, "demo/unauthenticated");
            expect(res.headers["www-authenticate"]).toBe('Bearer realm="clinics"');
            for (const secret of PLAINTEXTS) expect(res.text).not.toContain(secret);
          }
        }
        expect(await aliases()).toEqual(before);
        expect(before).not.toContain("alias/demo-clinic/clinic-new");
      });

      it("validates input and refuses a duplicate SSN in one clinic", async () => {
        expectProblem(
          await create("clinic-a", { ...ADA, ssn: "123456789" }),
          400,
          "demo/invalid-input",
        );
        expectProblem(await create("clinic-a", { ...ADA, vitals: [1] }), 400, "demo/invalid-input");
        expectProblem(
          await create("clinic-a", { ...ADA, name: "Ada again" }),
          409,
          "demo/conflict",
        );
        expectProblem(
          await request(origin).get("/patients/abc").set("authorization", bearer("clinic-a")),
          400,
          "demo/invalid-input",
        );
        expectProblem(
          await request(origin)
            .get("/patients/00000000-0000-4000-8000-000000000000")
            .set("authorization", bearer("clinic-a")),
          404,
          "demo/not-found",
        );
      });

      it("names each patient by its random recordId: no answer counts another clinic's patients", async () => {
        // The autoincrement id counted every clinic's patients: the gap between two of clinic
        // A's ids was the number clinic B created in between.
        const rows = await backend.raw(
          'SELECT id, "recordId", "tenantId" FROM patients ORDER BY id',
        );
        expect(rows.map((row) => row.recordId)).toEqual([ids.ada, ids.alan, ids.grace]);
        for (const id of Object.values(ids)) expect(id).toMatch(UUID);
        const answers = [
          await request(origin).get("/patients").set("authorization", bearer("clinic-a")),
          await request(origin)
            .get(`/patients/${ids.alan}`)
            .set("authorization", bearer("clinic-a")),
          await request(origin)
            .get(`/patients/${String(ids.alan).toUpperCase()}`)
            .set("authorization", bearer("clinic-a")),
        ];
        for (const res of answers) {
          expect(res.status).toBe(200);
          for (const patient of [res.body].flat() as Record<string, unknown>[]) {
            expect(Object.keys(patient).sort()).toEqual([
              "createdAt",
              "id",
              "name",
              "note",
              "ssn",
              "tenantId",
              "vitals",
            ]);
            expect(patient.id).toMatch(UUID);
          }
        }
        // The row ids address nothing, PostgreSQL's int4 overflow included (it answered 500).
        for (const id of ["1", "2", "2147483648", "9".repeat(15), `${ids.alan}0`]) {
          expectProblem(
            await request(origin).get(`/patients/${id}`).set("authorization", bearer("clinic-a")),
            400,
            "demo/invalid-input",
          );
        }
      });

      it("never stores plaintext: the driver sees kms1: ciphertext only", async () => {
        const rows = await backend.raw("SELECT * FROM patients ORDER BY id");
        expect(rows).toHaveLength(3);
        const dump = JSON.stringify(rows);
        for (const secret of PLAINTEXTS) expect(dump).not.toContain(secret);
        for (const row of rows) {
          for (const column of ["ssn", "name", "note", "vitals", "identity"]) {
            const stored = row[column];
            if (stored === null) continue;
            expect(stored).toMatch(/^kms1:[A-Za-z0-9_-]+$/);
          }
          expect(row.nameIndex).toMatch(/^[A-Za-z0-9_\-+/=]+$/);
        }
        const [ada, , grace] = rows;
        // Equal SSNs of two clinics: different ciphertexts (different keys and context).
        expect(ada?.ssn).not.toBe(grace?.ssn);
      });

      it("`pnpm stored` prints every encrypted column as the driver reads it", () => {
        const { dataDir, databaseUrl } = backend.config;
        const env = { ...process.env, DEMO_DATA_DIR: dataDir, DATABASE_URL: databaseUrl ?? "" };
        const printed = execFileSync(process.execPath, [STORED_SCRIPT], { env, encoding: "utf8" });
        for (const [key, tenant] of [
          ["ada", "clinic-a"],
          ["alan", "clinic-a"],
          ["grace", "clinic-b"],
        ] as const) {
          expect(printed).toContain(`patient ${ids[key]} (${tenant})`);
        }
        for (const column of ["ssn", "name", "note", "identity"]) {
          const values = [...printed.matchAll(new RegExp(`^ {2}${column} +(.*)$`, "gm"))];
          expect(
            values.map((match) => match[1]),
            column,
          ).toHaveLength(3);
          for (const [, value] of values) expect(value, column).toMatch(/^(kms1:\S+|null)$/);
        }
        for (const secret of PLAINTEXTS) expect(printed).not.toContain(secret);
      });

      it("wraps each clinic's data keys under that clinic's own KMS key", async () => {
        const admin = app.get<DemoKms>(DEMO_KMS).keys;
        const arnOf = async (tenant: string) =>
          (await admin.describeKey({ keyId: `alias/demo-clinic/${tenant}` })).keyMetadata.arn;
        const expected: Record<string, string> = {
          "clinic-a": await arnOf("clinic-a"),
          "clinic-b": await arnOf("clinic-b"),
        };
        expect(expected["clinic-a"]).not.toBe(expected["clinic-b"]);
        const keys = await backend.raw("SELECT * FROM kms_data_keys");
        const perClinic = new Map<string, number>();
        for (const key of keys) {
          const context = JSON.parse(String(key.encryptionContext)) as { tenant: string };
          // The row's recordId is bound into the values, not into their data keys: the KMS and
          // its key policies see the clinic alone.
          expect(context).toEqual({ tenant: context.tenant });
          expect(key.kmsKeyId).toBe(expected[context.tenant]);
          perClinic.set(context.tenant, (perClinic.get(context.tenant) ?? 0) + 1);
        }
        expect([...perClinic.keys()].sort()).toEqual(["clinic-a", "clinic-b"]);
        // One randomized and one stable (SIV, blind index) data key per clinic, not one per row.
        for (const count of perClinic.values()) expect(count).toBeLessThanOrEqual(2);
      });
    });

    describe("signed webhooks", () => {
      function signer() {
        return createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: WEBHOOK_KEY_ALIAS,
          algorithm: "hmac-sha256",
          publishedKeyId: WEBHOOK_KEY_ID,
        });
      }

      async function signed(body: string, options: { signer?: ReturnType<typeof signer> } = {}) {
        const url = `${origin}/webhooks/patient-created`;
        const added = await signRequest(
          { method: "POST", url, headers: json, body },
          { signer: options.signer ?? signer(), nonce: true, expiresIn: 60 },
        );
        return { url, headers: { ...json, ...added } as Record<string, string>, body };
      }

      async function post(message: { url: string; headers: Record<string, string>; body: string }) {
        const response = await fetch(message.url, {
          method: "POST",
          headers: message.headers,
          body: message.body,
        });
        return { status: response.status, headers: response.headers, text: await response.text() };
      }

      /** The events the receiver accepted, as each clinic lists its own. */
      /** The events the receiver accepted, as each clinic lists its own, clinic A's first. */
      async function events(): Promise<{ id: string; patientId: string; tenantId: string }[]> {
        const of = async (tenant: string) =>
          (await request(origin).get("/webhooks/events").set("authorization", bearer(tenant)))
            .body as { id: string; patientId: string; tenantId: string }[];
        const [a, b] = [await of("clinic-a"), await of("clinic-b")];
        expect(new Set(a.map((e) => e.tenantId))).not.toContain("clinic-b");
        expect(new Set(b.map((e) => e.tenantId))).not.toContain("clinic-a");
        return [...a, ...b];
      }

      function expectRefused(
        res: { status: number; text: string; headers: Headers },
        check: string,
      ) {
        expect(res.status).toBe(401);
        expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
        expect(JSON.parse(res.text)).toMatchObject({
          type: `https://kms.dev/problems/signature/${check}`,
          check,
        });
      }

      it("POST /patients delivered a signed webhook that the receiver verified and recorded", async () => {
        const res = await create("clinic-b", { ...ALAN, ssn: "555-55-5555" });
        expect(res.status).toBe(201);
        expect(res.body.webhook).toEqual({
          url: `${origin}/webhooks/patient-created`,
          status: 200,
          receiptVerified: true,
        });
        const received = await events();
        expect(received).toContainEqual(
          expect.objectContaining({
            event: "patient.created",
            tenantId: "clinic-b",
            patientId: res.body.id,
            signatureKeyId: WEBHOOK_KEY_ID,
            signatureLabel: "sig1",
          }),
        );
        // One event per created patient, nothing else.
        expect(received.map((e) => e.patientId).sort()).toEqual(
          [ids.ada, ids.alan, ids.grace, res.body.id].sort(),
        );
        // Each event is named by a random id of its own, never the row id counting every
        // clinic's events.
        for (const event of received) {
          expect(event.id).toMatch(UUID);
          expect(Object.keys(event).sort()).toEqual([
            "event",
            "id",
            "patientId",
            "receivedAt",
            "signatureKeyId",
            "signatureLabel",
            "tenantId",
          ]);
        }
        const stored = await backend.raw('SELECT "eventId" FROM webhook_events');
        expect(stored.map((row) => row.eventId).sort()).toEqual(received.map((e) => e.id).sort());
      });

      it("accepts a correctly signed request and signs its answer, bound to that request", async () => {
        const message = await signed(
          JSON.stringify({
            event: "patient.created",
            tenantId: "clinic-a",
            patientId: randomUUID(),
          }),
        );
        const res = await post(message);
        expect(res.status).toBe(200);
        // The receipt names the event by its random id.
        const { received } = JSON.parse(res.text) as { received: string };
        expect(received).toMatch(UUID);
        expect((await events()).map((event) => event.id)).toContain(received);
        const { createKmsVerifier } = await import("@kms/http-signatures");
        const kms = app.get(KmsService).kms;
        const policy = {
          keyLookup: (id: string) =>
            id === WEBHOOK_KEY_ID
              ? createKmsVerifier({ kms, keyId: WEBHOOK_KEY_ALIAS, algorithm: "hmac-sha256" })
              : undefined,
          requiredComponents: [{ component: "signature", key: "sig1", req: true }],
        };
        const response = {
          status: res.status,
          headers: res.headers,
          body: new TextEncoder().encode(res.text),
        };
        const req = { method: "POST", url: message.url, headers: message.headers };
        expect(await verifyMessage(response, policy, req)).toMatchObject({ ok: true });
        // The same receipt does not vouch for another request.
        const other = await signed("{}");
        expect(
          await verifyMessage(response, policy, { ...req, headers: other.headers }),
        ).toMatchObject({ ok: false, check: "signature" });
      });

      it("refuses a tampered body with 401 and records nothing", async () => {
        const before = (await events()).length;
        const patientId = randomUUID();
        const message = await signed(
          JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId }),
        );
        const tampered = {
          ...message,
          body: message.body.replace(patientId, randomUUID()),
        };
        expectRefused(await post(tampered), "content-digest");
        // Recomputing Content-Digest does not help: the signature covers it.
        const { computeContentDigest } = await import("@kms/http-signatures");
        const redigested = {
          ...tampered,
          headers: {
            ...tampered.headers,
            "content-digest": computeContentDigest(new TextEncoder().encode(tampered.body), [
              "sha-256",
            ]),
          },
        };
        expectRefused(await post(redigested), "signature");
        expect(await events()).toHaveLength(before);
      });

      it("refuses unsigned, replayed, foreign-key and retargeted requests with 401", async () => {
        const before = (await events()).length;
        const body = JSON.stringify({
          event: "patient.created",
          tenantId: "clinic-a",
          patientId: randomUUID(),
        });
        expectRefused(
          await post({ url: `${origin}/webhooks/patient-created`, headers: json, body }),
          "signature-missing",
        );

        const once = await signed(body);
        expect((await post(once)).status).toBe(200);
        expectRefused(await post(once), "replay");

        // Right keyid, wrong key: an attacker's own HMAC key.
        const foreign = await createKms();
        const { keyId } = (
          await foreign.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
        ).keyMetadata;
        const forged = await signed(body, {
          signer: createKmsSigner({
            kms: foreign,
            keyId,
            algorithm: "hmac-sha256",
            publishedKeyId: WEBHOOK_KEY_ID,
          }),
        });
        expectRefused(await post(forged), "signature");
        await foreign.close();

        // Without an expiry (the route requires one).
        const url = `${origin}/webhooks/patient-created`;
        const lasting = await signRequest(
          { method: "POST", url, headers: json, body },
          { signer: signer(), nonce: true },
        );
        expectRefused(await post({ url, headers: { ...json, ...lasting }, body }), "expires");

        // Signed for another URL (@target-uri), replayed here.
        const elsewhere = await signed(body);
        const moved = await signRequest(
          { method: "POST", url: `${origin}/webhooks/other`, headers: json, body },
          { signer: signer(), nonce: true, expiresIn: 60 },
        );
        expectRefused(await post({ ...elsewhere, headers: { ...json, ...moved } }), "signature");
        expect(await events()).toHaveLength(before + 1);
      });
    });

    describe("crypto-shredding (signed admin calls)", () => {
      async function admin(
        method: "DELETE" | "POST",
        path: string,
        key: { alias: string; id: string } = { alias: ADMIN_KEY_ALIAS, id: ADMIN_KEY_ID },
      ): Promise<request.Response> {
        const url = `${origin}${path}`;
        const signer = createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: key.alias,
          algorithm: "hmac-sha256",
          publishedKeyId: key.id,
        });
        const headers = await signRequest(
          { method, url, headers: {} },
          { signer, nonce: true, expiresIn: 60 },
        );
        return method === "DELETE"
          ? request(origin).delete(path).set(headers)
          : request(origin).post(path).set(headers);
      }

      /** `pnpm --filter @kms/demo-nest-typeorm admin …` on PORT `port`, with this app's KMS. */
      async function adminScript(port: string, ...args: string[]) {
        const { dataDir, databaseUrl, kms } = backend.config;
        const env: NodeJS.ProcessEnv = { ...process.env, DEMO_DATA_DIR: dataDir, PORT: port };
        delete env.KMS_ROOT_KEY;
        if (databaseUrl !== undefined) env.DATABASE_URL = databaseUrl;
        if (kms !== undefined) {
          env.KMS_ENDPOINT = kms.endpoint;
          env.AWS_REGION = kms.region;
          env.AWS_ACCESS_KEY_ID = kms.accessKeyId;
          env.AWS_SECRET_ACCESS_KEY = kms.secretAccessKey;
        }
        // Asynchronous: the script's request is answered by this very process.
        return execFileAsync(process.execPath, [ADMIN_SCRIPT, ...args], { env }).then(
          ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
          (error: { code: number; stdout: string; stderr: string }) => error,
        );
      }

      it("`pnpm admin shred|restore` signs the same calls from the command line", async () => {
        const port = new URL(origin).port;
        const shred = await adminScript(port, "shred", "clinic-b");
        expect(shred).toMatchObject({ code: 0, stderr: "" });
        expect(shred.stdout).toMatch(/^200 \{"clinic":"clinic-b","keyState":"PendingDeletion",/);
        expectProblem(
          await request(origin).get("/patients").set("authorization", bearer("clinic-b")),
          409,
          "kms/KMSInvalidStateException",
        );
        const restore = await adminScript(port, "restore", "clinic-b");
        expect(restore).toMatchObject({ code: 0, stderr: "" });
        expect(restore.stdout).toBe('200 {"clinic":"clinic-b","keyState":"Enabled"}\n');
        const back = await request(origin)
          .get("/patients")
          .set("authorization", bearer("clinic-b"));
        expect(back.status).toBe(200);
      });

      it("`pnpm admin` with no demo on PORT says so and exits 1, without a stack", async () => {
        // A port that was free a moment ago: nothing answers there.
        const probe = createServer().listen(0, "127.0.0.1");
        await once(probe, "listening");
        const { port } = probe.address() as AddressInfo;
        await new Promise((resolve) => probe.close(resolve));
        const result = await adminScript(String(port), "shred", "clinic-b");
        expect(result.code).toBe(1);
        expect(result.stderr).toMatch(
          new RegExp(`^admin: no demo answered at http://127\\.0\\.0\\.1:${port}/admin/`),
        );
        expect(result.stderr).not.toMatch(/\n\s+at /);
        const b = await request(origin).get("/patients").set("authorization", bearer("clinic-b"));
        expect(b.status).toBe(200);
      });

      it("refuses an unsigned admin call", async () => {
        const res = await request(origin).delete("/admin/clinics/clinic-b/key");
        expectProblem(res, 401, "signature/signature-missing");
        const list = await request(origin)
          .get("/patients")
          .set("authorization", bearer("clinic-b"));
        expect(list.status).toBe(200);
      });

      it("refuses an admin call signed with the webhook key, which every webhook peer holds", async () => {
        const webhookKey = { alias: WEBHOOK_KEY_ALIAS, id: WEBHOOK_KEY_ID };
        const res = await admin("DELETE", "/admin/clinics/clinic-b/key", webhookKey);
        expect(res.status).toBe(401);
        expect(JSON.parse(res.text)).toMatchObject({ status: 401 });
        // Nor may the admin key pass for the webhook key (published under its name).
        const posing = await admin("DELETE", "/admin/clinics/clinic-b/key", {
          alias: ADMIN_KEY_ALIAS,
          id: WEBHOOK_KEY_ID,
        });
        expect(posing.status).toBe(401);
        const list = await request(origin)
          .get("/patients")
          .set("authorization", bearer("clinic-b"));
        expect(list.status).toBe(200);
      });

      it("refuses a replayed admin call (replay), before it reaches the KMS", async () => {
        const path = "/admin/clinics/clinic-b/key";
        const url = `${origin}${path}`;
        const signer = createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: ADMIN_KEY_ALIAS,
          algorithm: "hmac-sha256",
          publishedKeyId: ADMIN_KEY_ID,
        });
        const headers = await signRequest(
          { method: "DELETE", url, headers: {} },
          { signer, nonce: true, expiresIn: 60 },
        );
        expect((await request(origin).delete(path).set(headers)).status).toBe(200);
        expectProblem(await request(origin).delete(path).set(headers), 401, "signature/replay");
        expect((await admin("POST", `${path}/restore`)).body).toEqual({
          clinic: "clinic-b",
          keyState: "Enabled",
        });
      });

      it("makes one clinic's records unreadable, leaves the other's, and can be undone", async () => {
        const shred = await admin("DELETE", "/admin/clinics/clinic-b/key");
        expect(shred.status).toBe(200);
        expect(shred.body).toMatchObject({ clinic: "clinic-b", keyState: "PendingDeletion" });

        const b = await request(origin).get("/patients").set("authorization", bearer("clinic-b"));
        expectProblem(b, 409, "kms/KMSInvalidStateException");
        for (const secret of PLAINTEXTS) expect(b.text).not.toContain(secret);
        expectProblem(
          await create("clinic-b", { ...ALAN, ssn: "111-11-1111" }),
          409,
          "kms/KMSInvalidStateException",
        );
        const a = await request(origin).get("/patients").set("authorization", bearer("clinic-a"));
        expect(a.status).toBe(200);
        expect(a.body.map((p: { name: string }) => p.name)).toEqual([ADA.name, ALAN.name]);

        const restore = await admin("POST", "/admin/clinics/clinic-b/key/restore");
        expect(restore.body).toEqual({ clinic: "clinic-b", keyState: "Enabled" });
        const back = await request(origin)
          .get("/patients")
          .set("authorization", bearer("clinic-b"));
        expect(back.status).toBe(200);
        expect(back.body.map((p: { name: string }) => p.name)).toContain(GRACE.name);
      });
    });
  });
}
