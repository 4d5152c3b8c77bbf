import "reflect-metadata";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { bearer } from "@kms/demo-shared/testing";
import type { INestApplication } from "@nestjs/common";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../src/server.ts";
import { type Backend, sqliteBackend } from "./backends.ts";

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

// fetch's default (`redirect: "follow"`) re-sends the signed request, signature and nonce
// included, to whatever Location names: another origin could replay it to the receiver.
describe("a webhook receiver that answers a redirect", () => {
  const elsewhere: IncomingHttpHeaders[] = [];
  let other: Server;
  let redirector: Server;
  let backend: Backend;
  let app: INestApplication;
  let webhookUrl: string;

  beforeAll(async () => {
    other = createServer((req, res) => {
      elsewhere.push(req.headers);
      req.resume();
      res.end("{}");
    });
    const otherPort = await listen(other);
    redirector = createServer((req, res) => {
      req.resume();
      res.writeHead(307, { location: `http://127.0.0.1:${otherPort}/collect` }).end();
    });
    webhookUrl = `http://127.0.0.1:${await listen(redirector)}/hook`;
    backend = await sqliteBackend();
    app = await createApp({ ...backend.config, webhookUrl });
    await app.listen(0, "127.0.0.1");
  });

  afterAll(async () => {
    await app?.close();
    await backend?.close();
    other?.close();
    redirector?.close();
  });

  it("is a failed delivery, and the signed request goes nowhere else", async () => {
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
      url: webhookUrl,
      status: 307,
      receiptVerified: false,
      problem: "the receiver answered a redirect, which signed webhooks do not follow",
    });
    expect(elsewhere).toEqual([]);
  });
});
