import "reflect-metadata";
import { randomUUID } from "node:crypto";
import { request as httpRequest } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { bearer } from "@kms/demo-shared/testing";
import { createKmsSigner, signRequest } from "@kms/http-signatures";
import type { INestApplication } from "@nestjs/common";
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
import { type Backend, sqliteBackend } from "./backends.ts";

/** The public name instance A answers to besides its loopback address (a proxy's Host). */
const PUBLIC_AUTHORITY = "records.example.test";
/** Instance B's data key cache lifetime: short, so that the test can outwait it. */
const B_DATA_KEY_MAX_AGE_MS = 1_500;

interface Answer {
  readonly status: number;
  readonly text: string;
}

interface SignedRequest {
  readonly method: "POST" | "DELETE";
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string;
}

/**
 * Sends `message` to the server on `port` with `host` in the Host field: what someone replaying
 * a captured request to another instance sends (fetch does not let Host be chosen).
 */
function sendWithHost(port: number, host: string, message: SignedRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: message.method,
        path: message.path,
        headers: { ...message.headers, host },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on("error", reject);
    req.end(message.body);
  });
}

/**
 * Two instances over one data dir (records and keys), as the README's `WEBHOOK_URL` setup runs
 * them: A also answers to a public authority, B caches data keys briefly.
 */
describe("several instances sharing one data dir", () => {
  let backend: Backend;
  let a: INestApplication;
  let b: INestApplication;
  let portA: number;
  let portB: number;

  const portOf = (app: INestApplication) =>
    (app.getHttpServer().address() as { port: number }).port;

  beforeAll(async () => {
    backend = await sqliteBackend();
    a = await createApp({ ...backend.config, publicAuthorities: [PUBLIC_AUTHORITY] });
    await a.listen(0, "127.0.0.1");
    portA = portOf(a);
    b = await createApp({ ...backend.config, dataKeyMaxAgeMs: B_DATA_KEY_MAX_AGE_MS });
    await b.listen(0, "127.0.0.1");
    portB = portOf(b);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await backend?.close();
  });

  /** A request signed as the webhook sender or the admin script signs it, for `authority`. */
  async function signed(
    authority: string,
    method: "POST" | "DELETE",
    path: string,
    key: "webhook" | "admin",
    body?: string,
  ): Promise<SignedRequest> {
    const [alias, id] =
      key === "webhook" ? [WEBHOOK_KEY_ALIAS, WEBHOOK_KEY_ID] : [ADMIN_KEY_ALIAS, ADMIN_KEY_ID];
    const signer = createKmsSigner({
      kms: a.get<DemoKms>(DEMO_KMS).crypto,
      keyId: alias,
      algorithm: "hmac-sha256",
      publishedKeyId: id,
    });
    const headers: Record<string, string> =
      body === undefined ? {} : { "content-type": "application/json" };
    const url = `http://${authority}${path}`;
    const signature = await signRequest(
      { method, url, headers, ...(body === undefined ? {} : { body }) },
      { signer, nonce: true, expiresIn: 60 },
    );
    return {
      method,
      path,
      headers: { ...headers, ...signature },
      ...(body === undefined ? {} : { body }),
    };
  }

  function webhook(authority: string, patientId = randomUUID()): Promise<SignedRequest> {
    const body = JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId });
    return signed(authority, "POST", "/webhooks/patient-created", "webhook", body);
  }

  async function eventsFor(app: INestApplication, patientId: string): Promise<unknown[]> {
    const res = await fetch(`http://127.0.0.1:${portOf(app)}/webhooks/events`, {
      headers: { authorization: bearer("clinic-a") },
    });
    const events = (await res.json()) as { patientId: string }[];
    return events.filter((event) => event.patientId === patientId);
  }

  function expectRefusedAs(res: Answer, check: string): void {
    expect(res.status, res.text).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({
      type: `https://kms.dev/problems/signature/${check}`,
    });
  }

  it("a webhook signed for one instance, replayed to another with its Host, is refused", async () => {
    const patientId = randomUUID();
    const forB = await webhook(`127.0.0.1:${portB}`, patientId);
    // The delivery B was meant to get: accepted once, a replay to B refused by its nonces.
    expect((await sendWithHost(portB, `127.0.0.1:${portB}`, forB)).status).toBe(200);
    expectRefusedAs(await sendWithHost(portB, `127.0.0.1:${portB}`, forB), "replay");
    // The same capture at A, whose nonces never saw it, naming B as the signature does.
    expectRefusedAs(await sendWithHost(portA, `127.0.0.1:${portB}`, forB), "components");
    expect(await eventsFor(a, patientId)).toHaveLength(1);
  });

  it("an admin call signed for one instance, replayed to another with its Host, is refused", async () => {
    const patients = `http://127.0.0.1:${portA}/patients`;
    const clinicA = { authorization: bearer("clinic-a"), "content-type": "application/json" };
    // Clinic A's first patient makes its key, which the replayed call would schedule for deletion.
    const created = await fetch(patients, {
      method: "POST",
      headers: clinicA,
      body: JSON.stringify({ ssn: "321-54-9876", name: "Kurt Goedel" }),
    });
    expect(created.status).toBe(201);
    // The receiver (here A itself) verified the webhook and signed its receipt.
    expect(((await created.json()) as { webhook: unknown }).webhook).toMatchObject({
      status: 200,
      receiptVerified: true,
    });
    const forB = await signed(
      `127.0.0.1:${portB}`,
      "DELETE",
      "/admin/clinics/clinic-a/key",
      "admin",
    );
    expectRefusedAs(await sendWithHost(portA, `127.0.0.1:${portB}`, forB), "components");
    const keyState = (
      await a.get<DemoKms>(DEMO_KMS).keys.describeKey({ keyId: "alias/demo-clinic/clinic-a" })
    ).keyMetadata.keyState;
    expect(keyState).toBe("Enabled");
    expect((await fetch(patients, { headers: clinicA })).status).toBe(200);
  });

  it("a public authority is accepted by the instance that lists it, and only there", async () => {
    const patientId = randomUUID();
    const viaProxy = await webhook(PUBLIC_AUTHORITY, patientId);
    expectRefusedAs(await sendWithHost(portB, PUBLIC_AUTHORITY, viaProxy), "components");
    expect((await sendWithHost(portA, PUBLIC_AUTHORITY, viaProxy)).status).toBe(200);
    // localhost names this machine's instance as well as 127.0.0.1 does.
    const local = await webhook(`localhost:${portA}`);
    expect((await sendWithHost(portA, `localhost:${portA}`, local)).status).toBe(200);
    expect(await eventsFor(a, patientId)).toHaveLength(1);
  });

  it("shredding through one instance reaches the others within their data key max age", async () => {
    const readB = () =>
      fetch(`http://127.0.0.1:${portB}/patients`, {
        headers: { authorization: bearer("clinic-b") },
      });
    const created = await fetch(`http://127.0.0.1:${portB}/patients`, {
      method: "POST",
      headers: { authorization: bearer("clinic-b"), "content-type": "application/json" },
      body: JSON.stringify({ ssn: "555-44-3333", name: "Grace Hopper", note: "night shifts" }),
    });
    expect(created.status).toBe(201);
    expect((await readB()).status).toBe(200);

    const shred = await signed(
      `127.0.0.1:${portA}`,
      "DELETE",
      "/admin/clinics/clinic-b/key",
      "admin",
    );
    expect((await sendWithHost(portA, `127.0.0.1:${portA}`, shred)).status).toBe(200);
    const shreddedAt = Date.now();
    // At once on the instance that handled the call: it dropped its cached data keys.
    const readA = await fetch(`http://127.0.0.1:${portA}/patients`, {
      headers: { authorization: bearer("clinic-b") },
    });
    expect(readA.status).toBe(409);
    // B's cached data keys age out: past B's max age, B asks the KMS again and is refused.
    await sleep(B_DATA_KEY_MAX_AGE_MS + 100 - (Date.now() - shreddedAt));
    const late = await readB();
    expect(late.status).toBe(409);
    expect(await late.json()).toMatchObject({
      type: "https://kms.dev/problems/kms/KMSInvalidStateException",
    });

    const restore = await signed(
      `127.0.0.1:${portA}`,
      "POST",
      "/admin/clinics/clinic-b/key/restore",
      "admin",
    );
    expect((await sendWithHost(portA, `127.0.0.1:${portA}`, restore)).status).toBe(200);
    expect((await readB()).status).toBe(200);
  });
});
