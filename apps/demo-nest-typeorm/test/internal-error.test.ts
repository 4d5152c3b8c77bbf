import "reflect-metadata";
import type { Kms } from "@kms/core";
import { bearer } from "@kms/demo-shared/testing";
import { createKmsSigner, signRequest } from "@kms/http-signatures";
import { databaseTarget } from "@kms/tooling/databases";
import type { INestApplication } from "@nestjs/common";
import { getRepositoryToken } from "@nestjs/typeorm";
import request from "supertest";
import { QueryFailedError, type Repository } from "typeorm";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  ADMIN_KEY_ALIAS,
  ADMIN_KEY_ID,
  type DemoKms,
  WEBHOOK_KEY_ALIAS,
  WEBHOOK_KEY_ID,
} from "../src/kms.ts";
import { Patient } from "../src/patient.entity.ts";
import { PatientsService } from "../src/patients.service.ts";
import { createApp } from "../src/server.ts";
import { DEMO_KMS } from "../src/tokens.ts";
import { WebhookEvent } from "../src/webhook-event.entity.ts";
import { type Backend, postgresBackend, sqliteBackend } from "./backends.ts";

const SSN = "987-65-4320";
const postgres = databaseTarget("postgres");
const backends: [string, () => Promise<Backend>, boolean][] = [
  ["SQLite", sqliteBackend, false],
  ["PostgreSQL", () => postgresBackend(postgres.url as string), postgres.skipReason !== undefined],
];

/** Everything the app writes to stdout and stderr (Nest's logger) while `run` runs. */
async function captured(run: () => Promise<void>): Promise<string> {
  let written = "";
  const capture = (chunk: string | Uint8Array): boolean => {
    written += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    return true;
  };
  const spies = [
    vi.spyOn(process.stdout, "write").mockImplementation(capture),
    vi.spyOn(process.stderr, "write").mockImplementation(capture),
    ...(["error", "warn", "log", "info"] as const).map((level) =>
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        written += `${args.map(String).join(" ")}\n`;
      }),
    ),
  ];
  try {
    await run();
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  return written;
}

describe.each(backends)("an unexpected error on %s", (_name, open, skip) => {
  let backend: Backend;
  let app: INestApplication;
  let origin: string;

  beforeAll(async () => {
    if (skip) return;
    backend = await open();
    app = await createApp(backend.config);
    // Listening on a known port: signatures cover the target URI.
    await app.listen(0, "127.0.0.1");
    origin = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
  });

  /** The in-process KMS's `VerifyMac` audit events' request ids, oldest first. */
  async function verifyMacRequestIds(): Promise<(string | undefined)[]> {
    const kms = app.get<DemoKms>(DEMO_KMS).crypto as Kms;
    return (await kms.audit.events())
      .filter((event) => event.eventName === "VerifyMac")
      .map((event) => event.requestID);
  }

  /**
   * `method url` signed with `keyAlias` as `publishedKeyId` (the webhook sender or the admin
   * script), the request id of its 500 and the log, which must hold one line naming that id.
   */
  async function failingSignedCall(
    method: "POST" | "DELETE",
    path: string,
    key: { alias: string; id: string },
    body?: string,
  ): Promise<{ requestId: string; answer: Record<string, unknown> }> {
    const url = `${origin}${path}`;
    const headers: Record<string, string> =
      body === undefined ? {} : { "content-type": "application/json" };
    const signer = createKmsSigner({
      kms: app.get<DemoKms>(DEMO_KMS).crypto,
      keyId: key.alias,
      algorithm: "hmac-sha256",
      publishedKeyId: key.id,
    });
    const signature = await signRequest(
      { method, url, headers, ...(body === undefined ? {} : { body }) },
      { signer, nonce: true, expiresIn: 60 },
    );
    let res: Response | undefined;
    let answer: Record<string, unknown> = {};
    const log = await captured(async () => {
      res = await fetch(url, {
        method,
        headers: { ...headers, ...signature, "x-request-id": "trace-7f3c9e21" },
        ...(body === undefined ? {} : { body }),
      });
      answer = (await res.json()) as Record<string, unknown>;
    });
    expect(res?.status).toBe(500);
    const requestId = String(res?.headers.get("x-request-id"));
    expect(answer).toMatchObject({ type: "https://kms.dev/problems/demo/internal", requestId });
    expect(log).toContain(`internal error (request ${requestId}): Error`);
    expect(log).not.toContain("trace-7f3c9e21");
    return { requestId, answer };
  }
  afterEach(() => {
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await app?.close();
    await backend?.close();
  });

  it.skipIf(skip)(
    "is answered 500 with the request id and logged as its classes and codes, not its query's values",
    async () => {
      const patients = app.get<Repository<Patient>>(getRepositoryToken(Patient));
      let thrown: unknown;
      // A lookup written without encryptedWhere sends the SSN as typed, and its SQL is wrong:
      // TypeORM's QueryFailedError carries the SSN in its `parameters`, which Nest's default
      // handler logged along with the rest of the error.
      vi.spyOn(app.get(PatientsService), "find").mockImplementation((tenantId, filter) =>
        patients
          .createQueryBuilder("patient")
          .where("patient.tenantId = :tenantId AND patient.noSuchColumn = :ssn", {
            tenantId,
            ssn: filter.ssn,
          })
          .getMany()
          .catch((error: unknown) => {
            thrown = error;
            throw error;
          }),
      );
      let res: request.Response | undefined;
      const log = await captured(async () => {
        res = await request(app.getHttpServer())
          .get(`/patients?ssn=${SSN}`)
          .set({ authorization: bearer("clinic-a"), "x-request-id": "trace-7f3c9e21" });
      });
      // The error did hold the plaintext: the assertions below are not vacuous.
      expect(thrown).toBeInstanceOf(QueryFailedError);
      expect((thrown as QueryFailedError).parameters).toContain(SSN);
      expect(log).not.toContain(SSN);
      expect(res?.text).not.toContain(SSN);

      expect(res?.status).toBe(500);
      expect(res?.headers["content-type"]).toMatch(/^application\/problem\+json/);
      // The server's id for the request, as the KMS context (and so the KMS audit trail) has
      // it: never the client's own x-request-id.
      const requestId = String(res?.headers["x-request-id"]);
      expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(requestId).not.toBe("trace-7f3c9e21");
      expect(log).not.toContain("trace-7f3c9e21");
      expect(JSON.parse(res?.text ?? "")).toEqual({
        type: "https://kms.dev/problems/demo/internal",
        title: "Internal error",
        status: 500,
        detail: "the server failed; its log names this request id",
        requestId,
      });
      expect(log).toContain(`internal error (request ${requestId}): QueryFailedError`);
      expect(log.split("\n").filter((line) => line !== "")).toHaveLength(1);
    },
  );

  it.skipIf(skip)(
    "names in a failed webhook's 500 the request id its signature check was audited under",
    async () => {
      const events = app.get<Repository<WebhookEvent>>(getRepositoryToken(WebhookEvent));
      vi.spyOn(events, "save").mockRejectedValue(
        Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }),
      );
      const body = JSON.stringify({
        event: "patient.created",
        tenantId: "clinic-a",
        patientId: "6c1f0c4e-0000-4000-8000-000000000000",
      });
      const { requestId } = await failingSignedCall(
        "POST",
        "/webhooks/patient-created",
        { alias: WEBHOOK_KEY_ALIAS, id: WEBHOOK_KEY_ID },
        body,
      );
      // The route has no KMS context: the id is the one SignatureGuard verified under.
      expect((await verifyMacRequestIds()).at(-1)).toBe(requestId);
    },
  );

  it.skipIf(skip)(
    "names in a failed admin call's 500 the request id its signature check was audited under",
    async () => {
      const keys = app.get<DemoKms>(DEMO_KMS).keys;
      vi.spyOn(keys, "describeKey").mockRejectedValue(new Error("disk I/O error"));
      const { requestId } = await failingSignedCall("DELETE", "/admin/clinics/clinic-a/key", {
        alias: ADMIN_KEY_ALIAS,
        id: ADMIN_KEY_ID,
      });
      expect((await verifyMacRequestIds()).at(-1)).toBe(requestId);
    },
  );
});
