import "reflect-metadata";
import { type AddressInfo, createServer } from "node:net";
import { bearer } from "@kms/demo-shared/testing";
import type { INestApplication } from "@nestjs/common";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../src/server.ts";
import { type Backend, sqliteBackend } from "./backends.ts";

/** A loopback port that was free a moment ago: nothing listens there. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("a webhook receiver that cannot be reached", () => {
  let backend: Backend;
  let app: INestApplication;
  let port: number;

  beforeAll(async () => {
    port = await closedPort();
    backend = await sqliteBackend();
    app = await createApp({ ...backend.config, webhookUrl: `http://127.0.0.1:${port}/hook` });
    await app.listen(0, "127.0.0.1");
  });

  afterAll(async () => {
    await app?.close();
    await backend?.close();
  });

  it("still creates the patient and reports the failed delivery without the network error", async () => {
    const res = await request(app.getHttpServer())
      .post("/patients")
      .set({ "content-type": "application/json", authorization: bearer("clinic-a") })
      .send({
        name: "Ada Lovelace",
        ssn: "123-45-6789",
        note: "n",
        vitals: { bpm: 72, bp: "120/80" },
      });
    expect(res.status).toBe(201);
    expect(res.body.webhook).toEqual({
      url: `http://127.0.0.1:${port}/hook`,
      status: null,
      receiptVerified: false,
      problem: "the receiver could not be reached",
    });
    expect(res.text).not.toMatch(/ECONNREFUSED|connect /);
  });
});
