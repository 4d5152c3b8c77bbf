import "reflect-metadata";
import { once } from "node:events";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { bearer } from "@kms/demo-shared/testing";
import type { INestApplication } from "@nestjs/common";
import request from "supertest";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/server.ts";
import { MAX_ANSWER_BYTES } from "../src/webhook-sender.service.ts";
import { type Backend, sqliteBackend } from "./backends.ts";

/** Short, so that a stalled receiver costs the test little; far above a loopback round trip. */
const TIMEOUT_MS = 1_500;
/** What the huge answer would be, sent in 1 MiB chunks as fast as the sender reads them. */
const HUGE_MIB = 256;

type Behaviour = "huge" | "huge-declared" | "stalled-body" | "no-headers";

/** A receiver that answers each delivery as `behaviour` says, and counts what it sent. */
interface Hostile {
  behaviour: Behaviour;
  /** Bytes of body written by the current answer before the sender hung up. */
  sent: number;
  /** Resolves when the current delivery's connection closes. */
  closed: Promise<void>;
}

function answer(hostile: Hostile, res: ServerResponse): void {
  switch (hostile.behaviour) {
    case "huge": {
      res.writeHead(200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(1 << 20, 0x20);
      const pump = (): void => {
        while (hostile.sent < HUGE_MIB << 20 && !res.destroyed) {
          hostile.sent += chunk.byteLength;
          if (!res.write(chunk)) {
            res.once("drain", pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    case "huge-declared":
      res.writeHead(200, { "content-type": "application/json", "content-length": HUGE_MIB << 20 });
      res.write("{");
      hostile.sent = 1;
      return;
    case "stalled-body":
      // Headers, the first byte of the body, and never the rest.
      res.writeHead(200, { "content-type": "application/json" });
      res.write("{");
      hostile.sent = 1;
      return;
    case "no-headers":
      return;
  }
}

describe("a hostile webhook receiver", () => {
  const hostile: Hostile = { behaviour: "huge", sent: 0, closed: Promise.resolve() };
  let receiver: Server;
  let webhookUrl: string;
  let backend: Backend;
  let app: INestApplication;
  let ssn = 100;

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      req.resume();
      hostile.closed = once(res, "close").then(() => undefined);
      answer(hostile, res);
    });
    receiver.listen(0, "127.0.0.1");
    await once(receiver, "listening");
    webhookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    backend = await sqliteBackend();
    app = await createApp({ ...backend.config, webhookUrl, webhookTimeoutMs: TIMEOUT_MS });
    await app.listen(0, "127.0.0.1");
  });

  beforeEach(() => {
    hostile.sent = 0;
  });

  afterAll(async () => {
    await app?.close();
    await backend?.close();
    receiver?.closeAllConnections();
    receiver?.close();
  });

  /** POST /patients, answered with the patient and the delivery report, and how long it took. */
  async function createPatient(): Promise<{ status: number; webhook: unknown; ms: number }> {
    const started = performance.now();
    ssn += 1;
    const res = await request(app.getHttpServer())
      .post("/patients")
      .set({ "content-type": "application/json", authorization: bearer("clinic-a") })
      .send({ name: "Ada Lovelace", ssn: `123-45-6${ssn}` });
    return { status: res.status, webhook: res.body.webhook, ms: performance.now() - started };
  }

  it("an answer past the cap is a failed delivery, given up at the cap, not read to its end", async () => {
    hostile.behaviour = "huge";
    const { status, webhook } = await createPatient();
    expect(status).toBe(201);
    expect(webhook).toEqual({
      url: webhookUrl,
      status: 200,
      receiptVerified: false,
      problem: `the receiver's answer exceeds ${MAX_ANSWER_BYTES} bytes`,
    });
    await hostile.closed;
    // The sender hung up: at most what was in flight (socket buffers) left the receiver.
    expect(hostile.sent).toBeLessThan(HUGE_MIB << 20);
  });

  it("a Content-Length past the cap is refused before the body is read", async () => {
    hostile.behaviour = "huge-declared";
    const { status, webhook } = await createPatient();
    expect(status).toBe(201);
    expect(webhook).toMatchObject({
      status: 200,
      receiptVerified: false,
      problem: `the receiver's answer exceeds ${MAX_ANSWER_BYTES} bytes`,
    });
    await hostile.closed;
  });

  it("an answer that stops mid-body is a failed delivery after the timeout", async () => {
    hostile.behaviour = "stalled-body";
    const { status, webhook, ms } = await createPatient();
    expect(status).toBe(201);
    expect(webhook).toEqual({
      url: webhookUrl,
      status: 200,
      receiptVerified: false,
      problem: `the receiver did not answer completely within ${TIMEOUT_MS} ms`,
    });
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(ms).toBeLessThan(TIMEOUT_MS + 3_000);
    // The sender closed the connection it gave up on.
    await hostile.closed;
  });

  it("a receiver that never answers is a failed delivery after the timeout", async () => {
    hostile.behaviour = "no-headers";
    const { status, webhook, ms } = await createPatient();
    expect(status).toBe(201);
    expect(webhook).toEqual({
      url: webhookUrl,
      status: null,
      receiptVerified: false,
      problem: `the receiver did not answer completely within ${TIMEOUT_MS} ms`,
    });
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(ms).toBeLessThan(TIMEOUT_MS + 3_000);
    await hostile.closed;
  });
});
