/**
 * End to end: the field engine reads the tenant from the scope `kmsContext` opened — the
 * handlers and the store below pass no tenant — and a query that forgets its tenant filter
 * still cannot show tenant A the rows of tenant B: decryption fails, and `kmsErrorHandler`
 * answers 403 problem+json without the value.
 */
import type { Server } from "node:http";
import {
  createKms,
  currentEncryptionContext,
  FieldEncryptionEngine,
  type FieldSpec,
  type Kms,
  MemoryDataKeyStore,
  ValidationError,
} from "@kms/core";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { currentKmsContext, kmsContext, kmsErrorHandler } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const BODY: FieldSpec = { type: "string" };

interface AuditEntry {
  readonly op: string;
  readonly principal: string | undefined;
  readonly route: string | undefined;
  readonly requestId: string | undefined;
}

/**
 * A notes table with an encrypted `body`, bound like an ORM adapter's `fromScope` column: the
 * binding comes from the ambient encryption context, never from the caller. Its `find` has no
 * tenant filter — the bug encryption must contain.
 */
class NoteStore {
  readonly rows = new Map<number, string>();
  readonly audit: AuditEntry[] = [];
  #next = 1;

  readonly #engine: FieldEncryptionEngine;

  constructor(engine: FieldEncryptionEngine) {
    this.#engine = engine;
  }

  #binding() {
    const context = currentEncryptionContext();
    if (context === undefined) throw new ValidationError("Note.body needs an ambient context");
    return { model: "Note", field: "body", context };
  }

  #record(op: string): void {
    const context = currentKmsContext();
    this.audit.push({
      op,
      principal: context?.principal,
      route: context?.route,
      requestId: context?.requestId,
    });
  }

  async insert(body: string): Promise<number> {
    const stored = await this.#engine.encryptText(this.#binding(), BODY, body);
    // A hop through the event loop, as a database driver makes.
    await new Promise((resolve) => setTimeout(resolve, 2));
    const id = this.#next++;
    this.rows.set(id, stored);
    this.#record("insert");
    return id;
  }

  async find(id: number): Promise<string | undefined> {
    await new Promise((resolve) => setTimeout(resolve, 2));
    const stored = this.rows.get(id);
    if (stored === undefined) return undefined;
    this.#record("read");
    return (await this.#engine.decryptText(this.#binding(), BODY, stored)) as string;
  }
}

let kms: Kms;
let notes: NoteStore;
let server: Server;
let origin: string;

beforeAll(async () => {
  kms = await createKms();
  const { keyId } = (await kms.createKey({})).keyMetadata;
  notes = new NoteStore(
    new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() }),
  );
  const app = express();
  app.use(express.json());
  // A stand-in for authentication: a bearer "user:tenant" token.
  app.use((req, _res, next) => {
    const auth = req.get("authorization");
    if (auth?.startsWith("Bearer ")) {
      const [id, tenantId] = auth.slice(7).split(":");
      (req as unknown as { user: object }).user = { id, tenantId };
    }
    next();
  });
  app.use(kmsContext());
  app.post("/notes", async (req, res) => {
    res.status(201).json({ id: await notes.insert(String(req.body.body)) });
  });
  app.get("/notes/:id", async (req, res) => {
    const body = await notes.find(Number(req.params.id));
    if (body === undefined) res.sendStatus(404);
    else res.json({ body });
  });
  app.use(kmsErrorHandler({ log: () => {} }));
  ({ server, origin } = await listen(app));
});
afterAll(async () => {
  await close(server);
  await kms.close();
});

const as = (user: string, tenant: string) => ({ authorization: `Bearer ${user}:${tenant}` });

describe("tenant isolation through the ambient context", () => {
  it("tenant A cannot read tenant B's row that a query returned: 403 problem+json", async () => {
    const created = await request(origin)
      .post("/notes")
      .set(as("bob", "tenant-b"))
      .send({ body: "b-only secret" });
    expect(created.status).toBe(201);
    const id = created.body.id as number;

    const own = await request(origin).get(`/notes/${id}`).set(as("bob", "tenant-b"));
    expect(own.status).toBe(200);
    expect(own.body).toEqual({ body: "b-only secret" });

    const other = await request(origin).get(`/notes/${id}`).set(as("alice", "tenant-a"));
    expect(other.status).toBe(403);
    expect(other.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(other.text)).toEqual({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
      title: "InvalidCiphertextException",
      status: 403,
      code: "InvalidCiphertextException",
      detail:
        "the ciphertext cannot be decrypted in this request's encryption context " +
        "(it belongs to another tenant or context, or it was altered)",
    });
    expect(other.text).not.toContain("b-only");
    // The row was there and was read: only the encryption context kept it from tenant A.
    expect(notes.audit.at(-1)).toMatchObject({ op: "read", principal: "alice" });
  });

  it("keeps concurrent requests of two tenants apart", async () => {
    const a = await request(origin).post("/notes").set(as("alice", "tenant-a")).send({ body: "a" });
    const b = await request(origin).post("/notes").set(as("bob", "tenant-b")).send({ body: "b" });
    const reads = await Promise.all(
      Array.from({ length: 20 }, (_, i) => {
        const [user, tenant] = i % 2 === 0 ? ["alice", "tenant-a"] : ["bob", "tenant-b"];
        const id = (i % 4 < 2 ? a : b).body.id as number;
        return request(origin)
          .get(`/notes/${id}`)
          .set(as(user, tenant))
          .then((res) => [tenant, id === a.body.id ? "tenant-a" : "tenant-b", res.status]);
      }),
    );
    for (const [reader, owner, status] of reads) {
      expect(status, `${reader} reading ${owner}'s note`).toBe(reader === owner ? 200 : 403);
    }
  });

  it("gives code deep in the request the principal, route pattern and request id", async () => {
    const created = await request(origin)
      .post("/notes")
      .set(as("carol", "tenant-c"))
      .set("x-request-id", "req-42")
      .send({ body: "c" });
    // The id the server chose and echoed: a client's x-request-id is not trusted by default.
    expect(created.headers["x-request-id"]).not.toBe("req-42");
    expect(notes.audit.at(-1)).toEqual({
      op: "insert",
      principal: "carol",
      route: "POST /notes",
      requestId: created.headers["x-request-id"],
    });
    await request(origin).get(`/notes/${created.body.id}`).set(as("carol", "tenant-c"));
    // The pattern, as the Nest layer reports it: no row id in the audit trail.
    expect(notes.audit.at(-1)).toMatchObject({ op: "read", route: "GET /notes/:id" });
  });
});
