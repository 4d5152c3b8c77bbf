import "reflect-metadata";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import type { Kms } from "@kms/core";
import { bearer, CLINIC_TOKENS } from "@kms/demo-shared/testing";
import {
  computeContentDigest,
  createKmsSigner,
  createKmsVerifier,
  type MessageSigner,
  type SignRequestOptions,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { KmsService } from "@kms/nestjs";
import type { INestApplication } from "@nestjs/common";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WEBHOOK_KEY_ALIAS, WEBHOOK_KEY_ID } from "../src/kms.ts";
import { createApp } from "../src/server.ts";
import type { Backend } from "./backends.ts";

/**
 * What an attacker tries against the running demo, over real HTTP, with the database driver in
 * hand: other clinics' rows, ciphertexts moved around at the database level, forged and
 * replayed webhooks, and junk input. Each case checks the refusal AND that nothing leaked or
 * changed (plaintext in the answer, a recorded webhook event).
 */

const ADA = {
  ssn: "123-45-6789",
  name: "Ada Lovelace",
  note: "allergic to penicillin",
  vitals: { bpm: 72, bp: "120/80" },
};
const ALAN = {
  ssn: "987-65-4321",
  name: "Alan Turing",
  note: "prefers morning visits",
  vitals: { bpm: 58 },
};
/** Clinic B: Grace shares Ada's SSN (deterministic ciphertexts must still differ by clinic). */
const GRACE = { ssn: ADA.ssn, name: "Grace Hopper", note: "night shifts only", vitals: null };
const EDSGER = {
  ssn: "222-33-4444",
  name: "Edsger Dijkstra",
  note: "considers goto harmful",
  vitals: { spo2: 97 },
};

/** Every plaintext the tests write: none may appear in the stored bytes or in a refusal. */
const PLAINTEXTS = [
  ...[ADA, ALAN, GRACE, EDSGER].flatMap((p) => [p.ssn, p.name, p.note]),
  "120/80",
  // Quoted: a bare three-letter word turns up by chance in kilobytes of base64url ciphertext.
  '"spo2"',
  '"bpm"',
  "Lovelace",
  "ada lovelace",
  "penicillin",
];

const WEBHOOK_PATH = "/webhooks/patient-created";
const json = { "content-type": "application/json" };

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
}

/** An RFC 9457 answer with this status (and type, if given), carrying no stack and no secret. */
function expectProblem(res: Answer, status: number, type?: string): Record<string, unknown> {
  expect(res.status, res.text).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  const body = JSON.parse(res.text) as Record<string, unknown>;
  expect(body).toMatchObject({ status });
  if (type !== undefined) expect(body.type).toBe(`https://kms.dev/problems/${type}`);
  expectNothingLeaked(res.text);
  return body;
}

/** No stack trace, no source path, no plaintext of any patient. */
function expectNothingLeaked(text: string): void {
  expect(text).not.toMatch(/\bat .+\(.+:\d+:\d+\)|node_modules|\/src\/|\.ts:\d+/);
  for (const secret of PLAINTEXTS) expect(text).not.toContain(secret);
}

/**
 * Sends bytes as they are over a socket and reads the answer: for requests that fetch refuses to
 * send (control characters in a header, a lying Content-Length).
 */
function rawExchange(port: number, head: string, body = ""): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      const [statusLine = "", ...lines] = text.slice(0, split).split("\r\n");
      const headers = new Headers();
      for (const line of lines) {
        const colon = line.indexOf(":");
        headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      let rest = text.slice(split + 4);
      if (headers.get("transfer-encoding") === "chunked") {
        let out = "";
        for (;;) {
          const eol = rest.indexOf("\r\n");
          const size = Number.parseInt(rest.slice(0, eol), 16);
          if (!(size > 0)) break;
          out += rest.slice(eol + 2, eol + 2 + size);
          rest = rest.slice(eol + 2 + size + 2);
        }
        rest = out;
      }
      resolve({ status: Number(statusLine.split(" ")[1]), headers, text: rest });
    });
    socket.end(Buffer.concat([Buffer.from(`${head}\r\n\r\n`, "latin1"), Buffer.from(body)]));
  });
}

/** The adversarial suite on one backend. */
export function describeAdversarial(label: string, open: () => Promise<Backend>): void {
  describe(label, () => {
    let backend: Backend;
    let app: INestApplication;
    let port: number;
    let origin: string;
    type Patient = "ada" | "alan" | "grace" | "edsger";
    /** Each patient's id in the API: its recordId. */
    const ids: Record<Patient, string> = { ada: "", alan: "", grace: "", edsger: "" };
    /** Each patient's row id, which the attacks at the database use. */
    const rows: Record<Patient, number> = { ada: 0, alan: 0, grace: 0, edsger: 0 };

    /** The core Kms holding the demo's keys: the app's own, or the KMS server's. */
    function keyStore(): Kms {
      return backend.kmsServer?.kms ?? app.get(KmsService).core;
    }

    async function call(
      method: string,
      path: string,
      options: { tenant?: string; headers?: Record<string, string>; body?: string | object } = {},
    ): Promise<Answer> {
      const headers: Record<string, string> = { ...options.headers };
      if (options.tenant !== undefined) headers.authorization = bearer(options.tenant);
      let body: string | undefined;
      if (typeof options.body === "string") body = options.body;
      else if (options.body !== undefined) {
        body = JSON.stringify(options.body);
        headers["content-type"] ??= "application/json";
      }
      const response = await fetch(`${origin}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
      });
      return { status: response.status, headers: response.headers, text: await response.text() };
    }

    const bodyOf = (res: Answer): unknown => JSON.parse(res.text);

    async function patientsRows(): Promise<Record<string, unknown>[]> {
      return backend.raw(
        'SELECT id, "tenantId", "recordId", ssn, name, "nameIndex", note, vitals, identity FROM patients ORDER BY id',
      );
    }

    async function eventCount(): Promise<number> {
      const [row] = await backend.raw("SELECT COUNT(*) AS n FROM webhook_events");
      return Number(row?.n);
    }

    /**
     * Runs `attack` on a database an attacker changed with `tamper` (raw SQL), then puts every
     * patient row back as it was, so each case starts from the same records.
     */
    async function withTampered(tamper: string[], attack: () => Promise<void>): Promise<void> {
      const before = await patientsRows();
      for (const sql of tamper) await backend.write(sql);
      try {
        await attack();
      } finally {
        // SSNs and record ids are unique: move every one aside before putting the originals back.
        await backend.write(
          `UPDATE patients SET ssn = 'restoring' || id, "recordId" = 'restoring' || id`,
        );
        for (const row of before) {
          const set = Object.keys(row)
            .filter((column) => column !== "id")
            .map((column) => {
              const value = row[column];
              const text = value === null ? "NULL" : `'${String(value).replaceAll("'", "''")}'`;
              return `"${column}" = ${text}`;
            });
          await backend.write(`UPDATE patients SET ${set.join(", ")} WHERE id = ${Number(row.id)}`);
        }
        expect(await patientsRows()).toEqual(before);
      }
    }

    /**
     * SQL that sets `column` of row `to` to the stored value of `fromColumn` in row `from`. A
     * copied SSN or record id would break a unique constraint, so the source's is moved aside.
     */
    async function copy(
      to: number,
      column: string,
      from: number,
      fromColumn = column,
    ): Promise<string[]> {
      const [source] = await backend.raw(
        `SELECT ${fromColumn} AS v FROM patients WHERE id = ${from}`,
      );
      const value = source?.v;
      if (typeof value !== "string") throw new Error(`row ${from} has no ${fromColumn}`);
      const unique = column === "ssn" || column === '"recordId"';
      return [
        ...(unique && to !== from
          ? [`UPDATE patients SET ${column} = 'moved aside' WHERE id = ${from}`]
          : []),
        `UPDATE patients SET ${column} = '${value}' WHERE id = ${to}`,
      ];
    }

    beforeAll(async () => {
      backend = await open();
      app = await createApp(backend.config);
      await app.listen(0, "127.0.0.1");
      port = (app.getHttpServer().address() as { port: number }).port;
      origin = `http://127.0.0.1:${port}`;
      for (const [key, tenant, patient] of [
        ["ada", "clinic-a", ADA],
        ["alan", "clinic-a", ALAN],
        ["grace", "clinic-b", GRACE],
        ["edsger", "clinic-b", EDSGER],
      ] as const) {
        const res = await call("POST", "/patients", { tenant, body: patient });
        expect(res.status, res.text).toBe(201);
        ids[key] = (bodyOf(res) as { id: string }).id;
        const [row] = await backend.raw(`SELECT id FROM patients WHERE "recordId" = '${ids[key]}'`);
        rows[key] = Number(row?.id);
      }
    });

    afterAll(async () => {
      await app?.close();
      await backend?.close();
    });

    describe("tenant isolation", () => {
      it("lists and looks up (deterministic SSN, blind-indexed name) only the caller's clinic", async () => {
        const names = (res: Answer) => (bodyOf(res) as { name: string }[]).map((p) => p.name);
        expect(names(await call("GET", "/patients", { tenant: "clinic-b" }))).toEqual([
          GRACE.name,
          EDSGER.name,
        ]);
        // Alan's SSN and name exist in clinic A only: clinic B finds nothing.
        const bySsn = await call("GET", `/patients?ssn=${ALAN.ssn}`, { tenant: "clinic-b" });
        expect(bodyOf(bySsn)).toEqual([]);
        const byName = await call("GET", "/patients?name=alan%20turing", { tenant: "clinic-b" });
        expect(bodyOf(byName)).toEqual([]);
        // The SSN both clinics hold answers each clinic with its own patient only.
        const shared = await call("GET", `/patients?ssn=${ADA.ssn}`, { tenant: "clinic-b" });
        expect(names(shared)).toEqual([GRACE.name]);
        expect(shared.text).not.toContain(ADA.note);
      });

      it("refuses another clinic's row by id with a generic 403, whichever way the clinic is named", async () => {
        for (const headers of [
          { authorization: bearer("clinic-b") },
          // The token's clinic, not a header naming the row's clinic.
          { authorization: bearer("clinic-b"), "x-tenant-id": "clinic-a" },
        ]) {
          const res = await call("GET", `/patients/${ids.ada}`, { headers });
          const problem = expectProblem(res, 403, "kms/InvalidCiphertextException");
          expect(JSON.stringify(problem)).not.toContain("clinic-a");
        }
      });

      it("refuses look-alike tokens instead of mapping them onto a real clinic", async () => {
        const token = CLINIC_TOKENS["clinic-a"] as string;
        // Case, truncation, padding and separators: no normalization may turn them into clinic-a's.
        for (const authorization of [
          `Bearer ${token.toUpperCase()}`,
          `Bearer ${token.slice(0, -1)}`,
          `Bearer ${token}.`,
          `Bearer ${token}=`,
          `Bearer ${token},${CLINIC_TOKENS["clinic-b"]}`,
          `Bearer -${token}`,
          `Bearer  ${token} x`,
          `Basic ${token}`,
          token,
        ]) {
          const res = await call("GET", "/patients", { headers: { authorization } });
          expectProblem(res, 401, "demo/unauthenticated");
        }
        // Two Authorization fields (Node keeps the first): refused, whichever comes first.
        for (const [first, second] of [
          ["clinic-a", "clinic-b"],
          ["clinic-b", "clinic-a"],
          ["clinic-a", "clinic-a"],
        ] as const) {
          const twice = await rawExchange(
            port,
            `GET /patients HTTP/1.1\r\nHost: x\r\nConnection: close\r\nauthorization: ${bearer(first)}\r\nauthorization: ${bearer(second)}`,
          );
          expectProblem(twice, 401, "demo/unauthenticated");
        }
      });

      it("has no route that changes or deletes a patient: other clinics' writes change nothing", async () => {
        const before = await patientsRows();
        for (const method of ["PUT", "PATCH", "DELETE"]) {
          for (const tenant of ["clinic-b", "clinic-a"]) {
            const res = await call(method, `/patients/${ids.ada}`, {
              tenant,
              body: { ...ADA, note: "overwritten" },
            });
            expectProblem(res, 405, "demo/method-not-allowed");
            expect(res.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
          }
        }
        expect(await patientsRows()).toEqual(before);
      });

      it("moving a row to another clinic in the database does not make it readable there", async () => {
        await withTampered(
          [`UPDATE patients SET "tenantId" = 'clinic-b' WHERE id = ${rows.ada}`],
          async () => {
            // Clinic B's list now contains Ada's row; its values are bound to clinic A.
            expectProblem(
              await call("GET", "/patients", { tenant: "clinic-b" }),
              403,
              "kms/InvalidCiphertextException",
            );
            expectProblem(
              await call("GET", `/patients/${ids.ada}`, { tenant: "clinic-b" }),
              403,
              "kms/InvalidCiphertextException",
            );
            // Lookups in clinic B compute clinic B's SSN ciphertext: Grace, never Ada.
            const bySsn = await call("GET", `/patients?ssn=${ADA.ssn}`, { tenant: "clinic-b" });
            expect((bodyOf(bySsn) as { id: string }[]).map((p) => p.id)).toEqual([ids.grace]);
            const byName = await call("GET", "/patients?name=Ada%20Lovelace", {
              tenant: "clinic-b",
            });
            expect(bodyOf(byName)).toEqual([]);
          },
        );
      });

      it("a ciphertext copied from another clinic's row is refused, never decrypted", async () => {
        // Grace (clinic B) shares Ada's SSN, so only the ciphertext tells them apart.
        for (const column of ["ssn", "name", "note"]) {
          await withTampered(await copy(rows.grace, column, rows.ada), async () => {
            const byId = await call("GET", `/patients/${ids.grace}`, { tenant: "clinic-b" });
            expectProblem(byId, 403, "kms/InvalidCiphertextException");
            const list = await call("GET", "/patients", { tenant: "clinic-b" });
            expectProblem(list, 403, "kms/InvalidCiphertextException");
          });
        }
        // vitals: Grace has none, Edsger has some; copy Ada's over Edsger's.
        await withTampered(await copy(rows.edsger, "vitals", rows.ada), async () => {
          const byId = await call("GET", `/patients/${ids.edsger}`, { tenant: "clinic-b" });
          expectProblem(byId, 403, "kms/InvalidCiphertextException");
        });
      });

      it("a ciphertext copied into another column of the same row is refused", async () => {
        for (const [to, from] of [
          ["name", "note"],
          ["note", "name"],
          ["ssn", "name"],
          ["vitals", "note"],
          ["note", "vitals"],
        ] as const) {
          await withTampered(await copy(rows.ada, to, rows.ada, from), async () => {
            const res = await call("GET", `/patients/${ids.ada}`, { tenant: "clinic-a" });
            expectProblem(res, 403, "kms/InvalidCiphertextException");
          });
        }
      });

      it("a ciphertext copied from another row of the same clinic is refused", async () => {
        // ssn and name are bound to the clinic only (lookups need that) and decrypt anywhere in
        // it; the row-bound identity copy gives them away. note and vitals are bound to the row.
        for (const column of ["ssn", "name", "note", "vitals", "identity"]) {
          await withTampered(await copy(rows.alan, column, rows.ada), async () => {
            const res = await call("GET", `/patients/${ids.alan}`, { tenant: "clinic-a" });
            expectProblem(res, 403, "kms/InvalidCiphertextException");
            const list = await call("GET", "/patients", { tenant: "clinic-a" });
            expectProblem(list, 403, "kms/InvalidCiphertextException");
          });
        }
        // Everything bound to Ada's row moved over Alan's, row binding included: Alan's row now
        // answers to Ada's id, and Alan's own ssn and name no longer match the identity that
        // came along.
        const moved: string[] = [];
        for (const column of ['"recordId"', "note", "vitals", "identity"]) {
          moved.push(...(await copy(rows.alan, column, rows.ada)));
        }
        await withTampered(moved, async () => {
          const res = await call("GET", `/patients/${ids.ada}`, { tenant: "clinic-a" });
          expectProblem(res, 403, "kms/InvalidCiphertextException");
        });
        // The row binding itself edited: the row answers to the new id, and decrypts under none.
        const edited = "00000000-0000-4000-8000-000000000000";
        await withTampered(
          [`UPDATE patients SET "recordId" = '${edited}' WHERE id = ${rows.ada}`],
          async () => {
            const res = await call("GET", `/patients/${edited}`, { tenant: "clinic-a" });
            expectProblem(res, 403, "kms/InvalidCiphertextException");
          },
        );
      });

      it("a tampered, truncated, foreign or plaintext stored value is refused generically", async () => {
        const [ada] = (await patientsRows()).filter((r) => Number(r.id) === rows.ada);
        const note = String(ada?.note);
        // One base64url character of the ciphertext changed (past the header: the tag or body).
        const flipped = `${note.slice(0, -5)}${note.at(-5) === "A" ? "B" : "A"}${note.slice(-4)}`;
        for (const stored of [
          flipped,
          note.slice(0, 20),
          "kms1:",
          "kms1:AAAA",
          "plain text note",
        ]) {
          await withTampered(
            [`UPDATE patients SET note = '${stored}' WHERE id = ${rows.ada}`],
            async () => {
              const res = await call("GET", `/patients/${ids.ada}`, { tenant: "clinic-a" });
              expectProblem(res, 403, "kms/InvalidCiphertextException");
            },
          );
        }
      });
    });

    describe("signed webhooks", () => {
      const REQUIRED = ["@method", "@target-uri", "content-digest", "content-type"] as const;

      function webhookSigner(): MessageSigner {
        return createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: WEBHOOK_KEY_ALIAS,
          algorithm: "hmac-sha256",
          publishedKeyId: WEBHOOK_KEY_ID,
        });
      }

      interface Signed {
        readonly method: string;
        readonly url: string;
        readonly headers: Record<string, string>;
        readonly body: string;
      }

      /** A webhook signed as the sender signs it; `options` change what the attacker changes. */
      async function signed(
        options: Partial<SignRequestOptions> & {
          body?: string;
          method?: string;
          path?: string;
          headers?: Record<string, string>;
        } = {},
      ): Promise<Signed> {
        const body =
          options.body ??
          JSON.stringify({
            event: "patient.created",
            tenantId: "clinic-a",
            patientId: randomUUID(),
          });
        const method = options.method ?? "POST";
        const url = `${origin}${options.path ?? WEBHOOK_PATH}`;
        const headers = { ...json, ...options.headers };
        const { body: _, method: __, path: ___, headers: ____, ...signOptions } = options;
        const added = await signRequest(
          { method, url, headers, body },
          { signer: webhookSigner(), nonce: true, expiresIn: 60, ...signOptions },
        );
        return { method, url, headers: { ...headers, ...added }, body };
      }

      /** Posts to the receiver whatever was signed (or changed afterwards). */
      async function deliver(
        message: Signed,
        method = "POST",
        path = WEBHOOK_PATH,
      ): Promise<Answer> {
        const response = await fetch(`${origin}${path}`, {
          method,
          headers: message.headers,
          body: message.body,
        });
        return { status: response.status, headers: response.headers, text: await response.text() };
      }

      /** 401 naming `check`, and the receiver recorded no event. */
      async function expectRefused(send: () => Promise<Answer>, check: string): Promise<void> {
        const before = await eventCount();
        const res = await send();
        const problem = expectProblem(res, 401, `signature/${check}`);
        expect(problem.check).toBe(check);
        expect(res.headers.get("www-authenticate")).toBe("Signature");
        expect(await eventCount()).toBe(before);
      }

      it("a valid webhook is accepted once; the same capture replayed is refused (replay)", async () => {
        const message = await signed();
        const before = await eventCount();
        expect((await deliver(message)).status).toBe(200);
        expect(await eventCount()).toBe(before + 1);
        await expectRefused(() => deliver(message), "replay");
        // The nonce is remembered for the keyid, whatever else changes around it.
        await expectRefused(
          () => deliver({ ...message, headers: { ...message.headers, "x-extra": "1" } }),
          "replay",
        );
      });

      it("one byte of the body changed: content-digest", async () => {
        const patientId = randomUUID();
        const message = await signed({
          body: JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId }),
        });
        await expectRefused(
          () => deliver({ ...message, body: message.body.replace(patientId, randomUUID()) }),
          "content-digest",
        );
        // A trailing space is one byte too (same JSON once parsed).
        await expectRefused(
          () => deliver({ ...message, body: `${message.body} ` }),
          "content-digest",
        );
      });

      it("Content-Digest removed, wrong, or recomputed for a new body", async () => {
        const message = await signed();
        const { "content-digest": _, ...withoutDigest } = message.headers;
        await expectRefused(() => deliver({ ...message, headers: withoutDigest }), "components");

        // Signed over a digest that does not match the body it travels with.
        const wrong = await signed({
          headers: {
            "content-digest": computeContentDigest(new TextEncoder().encode("{}"), ["sha-256"]),
          },
        });
        await expectRefused(() => deliver(wrong), "content-digest");

        // Unsigned digest that matches a new body: the signature covers the old digest.
        const body = JSON.stringify({
          event: "patient.created",
          tenantId: "clinic-b",
          patientId: 1,
        });
        const rebodied = {
          ...message,
          body,
          headers: {
            ...message.headers,
            "content-digest": computeContentDigest(new TextEncoder().encode(body), ["sha-256"]),
          },
        };
        await expectRefused(() => deliver(rebodied), "signature");

        // A signature that does not cover content-digest at all, though the route requires it.
        const uncovered = await signed({ components: ["@method", "@target-uri", "content-type"] });
        await expectRefused(() => deliver(uncovered), "components");
      });

      it("a signed header changed: signature", async () => {
        const message = await signed();
        await expectRefused(
          () =>
            deliver({
              ...message,
              headers: { ...message.headers, "content-type": "application/json; charset=utf-8" },
            }),
          "signature",
        );
      });

      it("moved to another path, query or method: signature", async () => {
        // Signed for another path / method, delivered here.
        await expectRefused(
          async () => deliver(await signed({ path: "/webhooks/other" })),
          "signature",
        );
        await expectRefused(async () => deliver(await signed({ method: "PUT" })), "signature");
        await expectRefused(
          async () => deliver(await signed({ path: `${WEBHOOK_PATH}?x=1` })),
          "signature",
        );
        // Signed here, delivered with a query string appended.
        await expectRefused(
          async () => deliver(await signed(), "POST", `${WEBHOOK_PATH}?replay=1`),
          "signature",
        );
        // A signed admin call's signature is not a webhook signature, nor the other way round.
        const admin = await signRequest(
          { method: "DELETE", url: `${origin}/admin/clinics/clinic-b/key`, headers: {} },
          { signer: webhookSigner(), nonce: true, expiresIn: 60 },
        );
        const hook = await signed();
        await expectRefused(
          () => deliver({ ...hook, headers: { ...hook.headers, ...admin } }),
          "components",
        );
        const shred = await fetch(`${origin}/admin/clinics/clinic-b/key`, {
          method: "DELETE",
          headers: hook.headers,
        });
        expect(shred.status).toBe(401);
        const keyState = (await keyStore().describeKey({ keyId: "alias/demo-clinic/clinic-b" }))
          .keyMetadata.keyState;
        expect(keyState).toBe("Enabled");
      });

      it("signed for another instance and sent with its Host: components", async () => {
        // Another instance holding the same key (the README's WEBHOOK_URL setup), on another
        // port: its deliveries must not be accepted here, whatever Host they arrive with.
        const elsewhere = `127.0.0.1:${port === 65_535 ? port - 1 : port + 1}`;
        const body = JSON.stringify({
          event: "patient.created",
          tenantId: "clinic-a",
          patientId: randomUUID(),
        });
        const signature = await signRequest(
          { method: "POST", url: `http://${elsewhere}${WEBHOOK_PATH}`, headers: json, body },
          { signer: webhookSigner(), nonce: true, expiresIn: 60 },
        );
        const fields = Object.entries({ ...json, ...signature })
          .map(([name, value]) => `${name}: ${value}`)
          .join("\r\n");
        const head = `POST ${WEBHOOK_PATH} HTTP/1.1\r\nHost: ${elsewhere}\r\nConnection: close\r\n${fields}\r\ncontent-length: ${Buffer.byteLength(body)}`;
        await expectRefused(() => rawExchange(port, head, body), "components");
        // Sent as signed, to the instance it names (this one only in its Host): signature.
        await expectRefused(
          () =>
            deliver({
              method: "POST",
              url: `http://${elsewhere}${WEBHOOK_PATH}`,
              headers: { ...json, ...signature },
              body,
            }),
          "signature",
        );
      });

      it("created too old or in the future, expires passed, no expires", async () => {
        const now = Math.floor(Date.now() / 1000);
        await expectRefused(
          async () => deliver(await signed({ created: now - 3600, expiresIn: 7200 })),
          "max-age",
        );
        await expectRefused(async () => deliver(await signed({ created: now + 600 })), "created");
        await expectRefused(
          async () => deliver(await signed({ created: now - 200, expiresIn: 60 })),
          "expires",
        );
        await expectRefused(async () => deliver(await signed({ created: false })), "created");
      });

      it("unknown keyid, an algorithm not allowed, another KMS key under the published keyid", async () => {
        await expectRefused(async () => deliver(await signed({ keyId: "attacker" })), "key");
        await expectRefused(
          async () => deliver(await signed({ keyId: "alias/demo-webhooks" })),
          "key",
        );

        // alg parameter naming an algorithm the route does not allow.
        const ed25519: MessageSigner = { ...webhookSigner(), algorithm: "ed25519" };
        await expectRefused(
          async () => deliver(await signed({ signer: ed25519, includeAlg: true })),
          "algorithm",
        );

        const kms = keyStore();
        // An asymmetric key of this very KMS, published under the webhook keyid.
        const ecc = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
          .keyMetadata.keyId;
        const eccSigner = createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: ecc,
          algorithm: "ecdsa-p256-sha256",
          publishedKeyId: WEBHOOK_KEY_ID,
        });
        await expectRefused(
          async () => deliver(await signed({ signer: eccSigner, includeAlg: true })),
          "algorithm",
        );
        await expectRefused(async () => deliver(await signed({ signer: eccSigner })), "signature");

        // Another HMAC key of this very KMS (e.g. a leaked test key), published as demo-webhooks.
        const other = (
          await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
        ).keyMetadata.keyId;
        const otherSigner = createKmsSigner({
          kms: app.get(KmsService).kms,
          keyId: other,
          algorithm: "hmac-sha256",
          publishedKeyId: WEBHOOK_KEY_ID,
        });
        await expectRefused(
          async () => deliver(await signed({ signer: otherSigner })),
          "signature",
        );
      });

      it("a signature missing a required component: components", async () => {
        for (const dropped of REQUIRED) {
          const components = REQUIRED.filter((c) => c !== dropped);
          await expectRefused(async () => deliver(await signed({ components })), "components");
        }
      });

      it("malformed or missing Signature fields", async () => {
        const message = await signed();
        const { signature: _, ...noSignature } = message.headers;
        await expectRefused(
          () => deliver({ ...message, headers: noSignature }),
          "signature-missing",
        );
        const { "signature-input": __, ...noInput } = message.headers;
        await expectRefused(() => deliver({ ...message, headers: noInput }), "signature-missing");
        for (const signature of [
          "sig1=:not base64!:",
          'sig1="text"',
          "sig1=:AAAA:",
          "sig1",
          "(((",
        ]) {
          const bad = { ...message, headers: { ...message.headers, signature } };
          const res = await deliver(bad);
          expect(res.status).toBe(401);
          expectProblem(res, 401);
        }
        // Another label in Signature than in Signature-Input.
        const relabelled = {
          ...message,
          headers: {
            ...message.headers,
            signature: message.headers.signature?.replace(/^sig1=/, "sig2=") ?? "",
          },
        };
        await expectRefused(() => deliver(relabelled), "signature-malformed");
      });

      it("Signature-Input with a duplicate label whose last member is weaker: signature-malformed", async () => {
        const message = await signed();
        const created = Math.floor(Date.now() / 1000);
        // The signed member first, an attacker's weaker member under the same label after it.
        const weak = `sig1=("@method");created=${created};expires=${created + 60};keyid="${WEBHOOK_KEY_ID}"`;
        const duplicated = {
          ...message,
          headers: {
            ...message.headers,
            "signature-input": `${message.headers["signature-input"]}, ${weak}`,
          },
        };
        await expectRefused(() => deliver(duplicated), "signature-malformed");
      });

      it("Signature-Input with a duplicate label (valid member last): signature-malformed", async () => {
        const message = await signed();
        const junk = `sig1=("@method");created=1;keyid="${WEBHOOK_KEY_ID}"`;
        const duplicated = {
          ...message,
          headers: {
            ...message.headers,
            "signature-input": `${junk}, ${message.headers["signature-input"]}`,
          },
        };
        await expectRefused(() => deliver(duplicated), "signature-malformed");
      });

      it("the receiver's signed answer verifies only against the request it answered", async () => {
        const kms = app.get(KmsService).kms;
        const policy = {
          keyLookup: (id: string) =>
            id === WEBHOOK_KEY_ID
              ? createKmsVerifier({ kms, keyId: WEBHOOK_KEY_ALIAS, algorithm: "hmac-sha256" })
              : undefined,
          // What WebhookSender requires of a receipt.
          requiredComponents: [
            "@status",
            "content-digest",
            { component: "signature", key: "sig1", req: true },
          ] as const,
          contentDigest: "required" as const,
        };
        const first = await signed();
        const second = await signed();
        const answers: { status: number; headers: Headers; body: Uint8Array }[] = [];
        for (const message of [first, second]) {
          const res = await fetch(message.url, {
            method: "POST",
            headers: message.headers,
            body: message.body,
          });
          expect(res.status).toBe(200);
          answers.push({
            status: res.status,
            headers: res.headers,
            body: new Uint8Array(await res.arrayBuffer()),
          });
        }
        const [a, b] = answers as [(typeof answers)[0], (typeof answers)[0]];
        const asRequest = (m: Signed) => ({ method: m.method, url: m.url, headers: m.headers });
        expect(await verifyMessage(a, policy, asRequest(first))).toMatchObject({ ok: true });
        expect(await verifyMessage(b, policy, asRequest(second))).toMatchObject({ ok: true });
        // Swapped: each receipt names another request's signature.
        expect(await verifyMessage(a, policy, asRequest(second))).toMatchObject({
          ok: false,
          check: "signature",
        });
        expect(await verifyMessage(b, policy, asRequest(first))).toMatchObject({
          ok: false,
          check: "signature",
        });
        // A receipt with another body (the other answer's) fails its digest.
        expect(await verifyMessage({ ...a, body: b.body }, policy, asRequest(first))).toMatchObject(
          { ok: false },
        );
        // The receipt is a response signature: it does not pass as a request signature.
        await expectRefused(
          () =>
            deliver({
              ...first,
              headers: {
                ...first.headers,
                "signature-input": a.headers.get("signature-input") ?? "",
                signature: a.headers.get("signature") ?? "",
              },
            }),
          "components",
        );
      });

      it("a refused webhook is answered unsigned: nothing there for the sender to trust", async () => {
        const message = await signed();
        const res = await deliver({ ...message, body: `${message.body} ` });
        expect(res.status).toBe(401);
        expect(res.headers.get("signature")).toBeNull();
      });
    });

    describe("hostile input", () => {
      it("no token, another scheme, or a token of no clinic: 401, and no KMS key", async () => {
        for (const headers of [
          {},
          { authorization: "" },
          { authorization: "Bearer" },
          { authorization: "Bearer " },
          { authorization: `Bearer ${"t".repeat(8_000)}` },
          // The clinic names that used to be headers, and the old stand-in's user@clinic.
          { "x-tenant-id": "clinic-a" },
          { "x-tenant-id": "clinic-new" },
          { "x-tenant-id": `c${"a".repeat(39)}` },
          { authorization: "Bearer nurse@clinic-a" },
          { authorization: "Bearer x@" },
          { authorization: "Bearer a@b@c" },
          { authorization: "Bearer clinic-a" },
        ]) {
          for (const [method, path] of [
            ["GET", "/patients"],
            ["POST", "/patients"],
            ["GET", `/patients/${ids.ada}`],
            ["GET", "/webhooks/events"],
          ] as const) {
            const res = await call(method, path, {
              headers,
              ...(method === "POST" ? { body: { ssn: "111-22-3333", name: "Mallory" } } : {}),
            });
            expectProblem(res, 401, "demo/unauthenticated");
          }
        }
        const odd = await rawExchange(
          port,
          `GET /patients HTTP/1.1\r\nHost: x\r\nConnection: close\r\nauthorization: Bearer ${Buffer.from("ｃlinic-é-token-0123456789", "utf8").toString("latin1")}`,
        );
        expectProblem(odd, 401, "demo/unauthenticated");
      });

      it("control characters in the token never reach the KMS: 4xx, no stack, no new key", async () => {
        const token = CLINIC_TOKENS["clinic-a"] as string;
        for (const value of [`${token}\x01`, `${token}\x00`, `${token}\x7f`, `${token}\tx`]) {
          const res = await rawExchange(
            port,
            `GET /patients HTTP/1.1\r\nHost: x\r\nConnection: close\r\nauthorization: Bearer ${value}`,
          );
          expect(res.status).toBeGreaterThanOrEqual(400);
          expect(res.status).toBeLessThan(500);
          expectNothingLeaked(res.text);
        }
        const kms = keyStore();
        const aliases = (await kms.listAliases({})).aliases.map((a) => a.aliasName);
        // Only the clinics that sent their token: none for a name a request merely claimed.
        expect(aliases.filter((a) => a.startsWith("alias/demo-clinic/")).sort()).toEqual([
          "alias/demo-clinic/clinic-a",
          "alias/demo-clinic/clinic-b",
        ]);
      });

      it("invalid JSON, wrong content types and wrong shapes: 400 problem, nothing stored", async () => {
        const before = await patientsRows();
        const post = (body: string, contentType = "application/json") =>
          call("POST", "/patients", {
            tenant: "clinic-a",
            headers: { "content-type": contentType },
            body,
          });
        for (const body of ["{", '{"ssn":', "not json", '{"a":1}}', "\u0000"]) {
          expectProblem(await post(body), 400);
        }
        for (const body of ["null", "[]", "1", '"x"', "true", '[{"ssn":"111-11-1111"}]']) {
          expectProblem(await post(body), 400);
        }
        const valid = { ssn: "111-22-3333", name: "Mallory" };
        for (const wrong of [
          { ...valid, ssn: 111223333 },
          { ...valid, ssn: ["111-22-3333"] },
          { ...valid, ssn: "111-22-3333\n" },
          { ...valid, ssn: "１１１-22-3333" },
          { ...valid, name: ["Mallory"] },
          { ...valid, name: { first: "Mallory" } },
          { ...valid, name: "" },
          { ...valid, name: "   " },
          { ...valid, name: "m".repeat(201) },
          { ...valid, note: 42 },
          { ...valid, note: { text: "x" } },
          { ...valid, note: "n".repeat(10_001) },
          { ...valid, vitals: "72" },
          { ...valid, vitals: [72] },
          { ssn: "111-22-3333" },
          { name: "Mallory" },
        ]) {
          expectProblem(
            await call("POST", "/patients", { tenant: "clinic-a", body: wrong }),
            400,
            "demo/invalid-input",
          );
        }
        // Not JSON: an HTML form (no preflight) or text is not read as a patient.
        for (const [body, type] of [
          ["ssn=111-22-3333&name=Mallory", "application/x-www-form-urlencoded"],
          ['{"ssn":"111-22-3333","name":"Mallory"}', "text/plain"],
        ] as const) {
          expectProblem(await post(body, type), 400, "demo/invalid-input");
        }
        // The parser's message would repeat the body: the problem does not.
        const echoed = await post(ADA.name);
        expectProblem(echoed, 400, "demo/invalid-input");
        expect(echoed.text).not.toContain("Ada");
        expect(await patientsRows()).toEqual(before);
      });

      it("prototype-polluting bodies change nothing but the patient they create", async () => {
        const res = await call("POST", "/patients", {
          tenant: "clinic-a",
          headers: json,
          body: '{"ssn":"444-55-6666","name":"Proto","__proto__":{"tenantId":"clinic-b","polluted":1},"tenantId":"clinic-b","id":1}',
        });
        expect(res.status, res.text).toBe(201);
        const created = bodyOf(res) as { id: string; tenantId: string };
        // The body cannot choose the clinic or the id.
        expect(created.tenantId).toBe("clinic-a");
        expect(created.id).toMatch(
          /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
        );
        expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
        const [row] = await backend.raw(
          `SELECT id, "tenantId" FROM patients WHERE "recordId" = '${created.id}'`,
        );
        expect(row?.tenantId).toBe("clinic-a");
        expect(Number(row?.id)).not.toBe(1);
        await backend.write(`DELETE FROM patients WHERE "recordId" = '${created.id}'`);
      });

      it("a huge body is refused with 413 problem+json, unparsed and unstored", async () => {
        const before = await patientsRows();
        const huge = JSON.stringify({
          ssn: "555-66-7777",
          name: "Big",
          note: "x".repeat(2_000_000),
        });
        const res = await call("POST", "/patients", {
          tenant: "clinic-a",
          headers: json,
          body: huge,
        });
        expectProblem(res, 413, "demo/payload-too-large");
        // On the signed route as well, before any KMS call.
        const hook = await call("POST", WEBHOOK_PATH, { headers: json, body: huge });
        expectProblem(hook, 413, "demo/payload-too-large");
        expect(await patientsRows()).toEqual(before);
      });

      it("a body shorter than its Content-Length: 4xx, no stack", async () => {
        const res = await rawExchange(
          port,
          `POST /patients HTTP/1.1\r\nHost: x\r\nConnection: close\r\nauthorization: ${bearer("clinic-a")}\r\ncontent-type: application/json\r\ncontent-length: 10`,
          "{}",
        ).catch(() => ({ status: 400, headers: new Headers(), text: "" }));
        // The server may wait for the missing bytes and give up, or answer 400: never 5xx.
        expect(
          res.status === 0 || (res.status >= 400 && res.status < 500) || Number.isNaN(res.status),
        ).toBe(true);
        expectNothingLeaked(res.text);
      });

      it("an unknown route is 404, a method its path does not take 405 with Allow", async () => {
        for (const [method, path, allow] of [
          ["PUT", "/patients", "GET, HEAD, POST, OPTIONS"],
          ["DELETE", `/patients/${ids.ada}`, "GET, HEAD, OPTIONS"],
          ["GET", WEBHOOK_PATH, "POST, OPTIONS"],
          ["POST", "/webhooks/events", "GET, HEAD, OPTIONS"],
          ["GET", "/admin/clinics/clinic-a/key", "DELETE, OPTIONS"],
          ["DELETE", "/admin/clinics/clinic-a/key/restore", "POST, OPTIONS"],
        ] as const) {
          const res = await call(method, path, { tenant: "clinic-a" });
          const problem = expectProblem(res, 405, "demo/method-not-allowed");
          expect(problem.detail).toBe(`method ${method} not allowed here: ${allow}`);
          expect(res.headers.get("allow"), `${method} ${path}`).toBe(allow);
          const options = await call("OPTIONS", path);
          expect(options.status).toBe(204);
          expect(options.headers.get("allow")).toBe(allow);
          expect(options.text).toBe("");
        }
        for (const method of ["GET", "PUT", "OPTIONS"]) {
          const res = await call(method, "/patientsx", { tenant: "clinic-a" });
          expectProblem(res, 404, "demo/not-found");
          expect(res.headers.get("allow")).toBeNull();
        }
      });

      it("bad ids and query parameters: 400 demo/invalid-input", async () => {
        for (const id of [
          "0",
          "1",
          "-1",
          "1e3",
          "0x10",
          "1.5",
          // Past PostgreSQL's int4, which the row id is: that one used to answer 500.
          "2147483648",
          "9".repeat(15),
          "9".repeat(16),
          "%20",
          "1%00",
          "NaN",
          "Infinity",
          ids.ada.replaceAll("-", ""),
          `{${ids.ada}}`,
          `${ids.ada}0`,
          ids.ada.slice(1),
          `${ids.ada}%00`,
          `${ids.ada.slice(0, -1)}g`,
        ]) {
          expectProblem(
            await call("GET", `/patients/${id}`, { tenant: "clinic-a" }),
            400,
            "demo/invalid-input",
          );
        }
        // A well-formed id of no patient is simply not found.
        expectProblem(
          await call("GET", "/patients/00000000-0000-4000-8000-000000000000", {
            tenant: "clinic-a",
          }),
          404,
          "demo/not-found",
        );
        for (const query of [
          "ssn=123456789",
          "ssn=123-45-6789&ssn=987-65-4321",
          `name=${"n".repeat(201)}`,
          "name=a&name=b",
        ]) {
          expectProblem(
            await call("GET", `/patients?${query}`, { tenant: "clinic-a" }),
            400,
            "demo/invalid-input",
          );
        }
        // Bracketed keys are other parameters (Express 5 parses no nested query objects): ignored,
        // and the answer is still the caller's clinic only.
        for (const query of ["ssn[]=123-45-6789", "ssn[$ne]=x", "tenantId=clinic-b"]) {
          const res = await call("GET", `/patients?${query}`, { tenant: "clinic-a" });
          expect(res.status).toBe(200);
          expect(new Set((bodyOf(res) as { tenantId: string }[]).map((p) => p.tenantId))).toEqual(
            new Set(["clinic-a"]),
          );
        }
      });

      it("webhook bodies of the wrong shape, correctly signed: 400, nothing recorded", async () => {
        const before = await eventCount();
        for (const body of [
          "null",
          "[]",
          JSON.stringify({ event: "patient.deleted", tenantId: "clinic-a", patientId: 1 }),
          JSON.stringify({ event: "patient.created", tenantId: "Clinic A", patientId: 1 }),
          JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId: 0 }),
          // A row id, as events used to name patients: the patient's id is its recordId.
          JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId: 1 }),
          JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId: "1" }),
          JSON.stringify({ event: "patient.created", tenantId: "clinic-a", patientId: 1.5 }),
          JSON.stringify({
            event: "patient.created",
            tenantId: "clinic-a",
            patientId: randomUUID().toUpperCase(),
          }),
          JSON.stringify({
            event: "patient.created",
            tenantId: "clinic-a",
            patientId: `${randomUUID()}0`,
          }),
        ]) {
          const url = `${origin}${WEBHOOK_PATH}`;
          const added = await signRequest(
            { method: "POST", url, headers: json, body },
            {
              signer: createKmsSigner({
                kms: app.get(KmsService).kms,
                keyId: WEBHOOK_KEY_ALIAS,
                algorithm: "hmac-sha256",
                publishedKeyId: WEBHOOK_KEY_ID,
              }),
              nonce: true,
              expiresIn: 60,
            },
          );
          const res = await fetch(url, { method: "POST", headers: { ...json, ...added }, body });
          const answer = { status: res.status, headers: res.headers, text: await res.text() };
          expectProblem(answer, 400);
        }
        expect(await eventCount()).toBe(before);
      });
    });

    describe("values at rest", () => {
      it("the database never holds a plaintext value (file bytes on SQLite, every column on PostgreSQL)", async () => {
        if (backend.recordsFile !== undefined) {
          const files = [
            backend.recordsFile,
            `${backend.recordsFile}-wal`,
            `${backend.recordsFile}-journal`,
          ];
          const bytes = Buffer.concat(
            files.filter((f) => existsSync(f)).map((f) => readFileSync(f)),
          );
          expect(bytes.length).toBeGreaterThan(0);
          // The scan works: a plain column value is found.
          expect(bytes.includes(Buffer.from("clinic-a"))).toBe(true);
          for (const secret of PLAINTEXTS) {
            for (const encoding of ["utf8", "utf16le"] as const) {
              expect(bytes.includes(Buffer.from(secret, encoding)), `${secret} (${encoding})`).toBe(
                false,
              );
            }
          }
        }
        const tables = ["patients", "kms_data_keys", "webhook_events"];
        for (const table of tables) {
          const dump = JSON.stringify(await backend.raw(`SELECT * FROM ${table}`));
          for (const secret of PLAINTEXTS)
            expect(dump, `${secret} in ${table}`).not.toContain(secret);
        }
      });
    });
  });
}
