import "reflect-metadata";
import { bearer } from "@kms/demo-shared/testing";
import { databaseTarget } from "@kms/tooling/databases";
import type { INestApplication } from "@nestjs/common";
import { getRepositoryToken } from "@nestjs/typeorm";
import request from "supertest";
import { QueryFailedError, type Repository } from "typeorm";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Patient } from "../src/patient.entity.ts";
import { PatientsService } from "../src/patients.service.ts";
import { createApp } from "../src/server.ts";
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

  beforeAll(async () => {
    if (skip) return;
    backend = await open();
    app = await createApp(backend.config);
    await app.init();
  });
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
});
