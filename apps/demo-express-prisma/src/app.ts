import { randomUUID } from "node:crypto";
import { InvalidCiphertextError, isKmsError, runWithEncryptionContext } from "@kms/core";
import { faultSummary, type TenantDirectory } from "@kms/demo-shared";
import express, { type NextFunction, type Request, type Response } from "express";
import type { KeyAdmin } from "./kms.ts";
import { ensureTenantKey, type RecordsDb } from "./records.ts";

const SSN = /^\d{3}-\d{2}-\d{4}$/;

interface PatientInput {
  readonly ssn?: unknown;
  readonly name?: unknown;
  readonly note?: unknown;
  readonly vitals?: unknown;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The clinic each request authenticated as, set by the /patients middleware. */
const authenticated = new WeakMap<Request, string>();

function tenantOf(req: Request): string {
  const tenant = authenticated.get(req);
  // Every /patients route runs after the middleware that sets it or refuses the request.
  if (tenant === undefined)
    throw new Error("a /patients route ran without an authenticated clinic");
  return tenant;
}

function idOf(req: Request): number {
  const id = Number(req.params.id);
  if (!Number.isSafeInteger(id) || id < 1)
    throw new HttpError(400, "id must be a positive integer");
  return id;
}

const FIELDS: ReadonlySet<string> = new Set(["ssn", "name", "note", "vitals"]);

function patientData(body: PatientInput, partial: boolean) {
  // A field the API does not take (`tenantId`, `id`, `__proto__`…) is refused rather than
  // dropped, so a client never believes it chose the clinic or the row.
  const unknown = Object.keys(body).find((key) => !FIELDS.has(key));
  if (unknown !== undefined) {
    throw new HttpError(
      400,
      `unknown field ${JSON.stringify(unknown.slice(0, 40))}: a patient has ssn, name, note and vitals`,
    );
  }
  const data: { ssn?: string; name?: string; note?: string | null; vitals?: unknown } = {};
  if (body.ssn !== undefined || !partial) {
    if (typeof body.ssn !== "string" || !SSN.test(body.ssn))
      throw new HttpError(400, "ssn: ddd-dd-dddd");
    data.ssn = body.ssn;
  }
  if (body.name !== undefined || !partial) {
    if (typeof body.name !== "string" || body.name.length === 0 || body.name.length > 200) {
      throw new HttpError(400, "name: 1–200 characters");
    }
    data.name = body.name;
  }
  if (body.note !== undefined) {
    if (body.note !== null && (typeof body.note !== "string" || body.note.length > 10_000)) {
      throw new HttpError(400, "note: a string of at most 10,000 characters, or null");
    }
    data.note = body.note;
  }
  if (body.vitals !== undefined) {
    if (body.vitals === null || typeof body.vitals !== "object" || Array.isArray(body.vitals)) {
      throw new HttpError(400, "vitals: an object");
    }
    data.vitals = body.vitals;
  }
  return data;
}

/** What express.json reports, by its error `type`, in words that echo nothing of the request. */
const BODY_ERRORS: Readonly<Record<string, string>> = {
  "entity.parse.failed": "body must be JSON",
  "entity.too.large": "body: at most 64kb",
  "charset.unsupported": "body: charset must be utf-8",
  "encoding.unsupported": "body: content-encoding must be identity, gzip, deflate or br",
};

/**
 * The body parser's own errors (http-errors: `expose` is set for 4xx). Without this they fell
 * through to 500: an oversized body, an unknown charset or encoding, a corrupt gzip stream.
 */
function isClientBodyError(
  error: unknown,
): error is { readonly status: number; readonly type?: string } {
  if (typeof error !== "object" || error === null) return false;
  const { status, expose } = error as { status?: unknown; expose?: unknown };
  return expose === true && typeof status === "number" && status >= 400 && status < 500;
}

/** What a route selects: the returned fields, plus the row-bound SSN to check them against. */
const LOADED = {
  id: true,
  ssn: true,
  ssnOfRecord: true,
  name: true,
  note: true,
  vitals: true,
} as const;

/**
 * The patient as returned, if its SSN is its own. `ssn` is bound to the clinic only (lookups
 * and the unique index need equal ciphertexts across rows), so a database writer can swap two
 * patients' SSNs and both still decrypt; `ssnOfRecord` is bound to the row and does not follow.
 * A mismatch is answered like any other stored value that does not belong where it is: the
 * same generic InvalidCiphertextException, so the response does not say which check failed.
 * @throws InvalidCiphertextException when `ssn` differs from the row's `ssnOfRecord`.
 */
function ownPatient<T extends { readonly ssn: string; readonly ssnOfRecord: string }>(
  row: T,
): Omit<T, "ssnOfRecord"> {
  const { ssnOfRecord, ...patient } = row;
  if (ssnOfRecord !== row.ssn) {
    throw new InvalidCiphertextError("a stored value does not belong to its row");
  }
  return patient;
}

/**
 * Logs a fault whose answer is opaque, as one line that the answer's `x-request-id` points to.
 * The line is `faultSummary`'s (classes, codes, KMS messages), never the error itself:
 * `console.error(error)` prints its message, properties and causes, and a Prisma validation
 * error's message repeats the query's arguments, plaintext included if it ever reached a client
 * without the encryption extension.
 * @returns the request id.
 */
function logFault(res: Response, what: string, error: unknown): string {
  const requestId = randomUUID();
  res.setHeader("x-request-id", requestId);
  console.error(`${what} (request ${requestId}): ${faultSummary(error)}`);
  return requestId;
}

/**
 * A multi-tenant patient records API. The clinic is the one whose bearer token the request
 * presents (`tenants`); every query filters on it, and every encrypted value is bound to it, so
 * one clinic's request can never read another clinic's rows even if a query forgot the filter.
 */
export function createApp(options: {
  readonly db: RecordsDb;
  readonly kms: KeyAdmin;
  readonly tenants: TenantDirectory;
}): express.Express {
  const { db, kms, tenants } = options;
  const app = express();

  // Authenticated first: a request without its clinic's token gets neither its body parsed nor a
  // KMS key created.
  app.use("/patients", (req: Request, res: Response, next: NextFunction) => {
    const tenantId = tenants.authenticate(req.headersDistinct.authorization);
    if (tenantId === undefined) {
      res.setHeader("www-authenticate", 'Bearer realm="patient-records"');
      throw new HttpError(401, "authorization: send Authorization: Bearer <your clinic's token>");
    }
    authenticated.set(req, tenantId);
    next();
  });
  app.use(express.json({ limit: "64kb" }));
  // The clinic's KMS key exists before its first value is written; the request then runs
  // inside an encryption-context scope whose `clinic` every Patient value is bound to
  // (schema.prisma), beside the row's own tenantId.
  app.use("/patients", (req: Request, _res: Response, next: NextFunction) => {
    const tenantId = tenantOf(req);
    ensureTenantKey(kms, tenantId).then(
      () => runWithEncryptionContext({ clinic: tenantId }, () => next()),
      next,
    );
  });

  app.post("/patients", async (req, res) => {
    const tenantId = tenantOf(req);
    const data = patientData(req.body ?? {}, false);
    const created = await db.patient.create({
      data: {
        tenantId,
        // Name, note, vitals and ssnOfRecord are bound to it, so it must be known before the
        // insert.
        recordId: randomUUID(),
        ssn: data.ssn as string,
        ssnOfRecord: data.ssn as string,
        name: data.name as string,
        note: data.note ?? null,
        vitals: (data.vitals ?? null) as string | null,
      },
      select: LOADED,
    });
    res.status(201).json(ownPatient(created));
  });

  app.get("/patients", async (req, res) => {
    const tenantId = tenantOf(req);
    const ssn = req.query.ssn;
    if (ssn !== undefined && (typeof ssn !== "string" || !SSN.test(ssn))) {
      throw new HttpError(400, "ssn: ddd-dd-dddd");
    }
    const patients = await db.patient.findMany({
      where: ssn === undefined ? { tenantId } : { tenantId, ssn },
      orderBy: { id: "asc" },
      select: LOADED,
    });
    // One row that is not its own fails the whole list, as an undecryptable row does.
    res.json(patients.map(ownPatient));
  });

  app.get("/patients/{:id}", async (req, res) => {
    const patient = await db.patient.findFirst({
      where: { id: idOf(req), tenantId: tenantOf(req) },
      select: LOADED,
    });
    if (patient === null) throw new HttpError(404, "no such patient in this clinic");
    res.json(ownPatient(patient));
  });

  app.patch("/patients/{:id}", async (req, res) => {
    const tenantId = tenantOf(req);
    const data = patientData(req.body ?? {}, true);
    // `update`, not `updateMany`: name, note, vitals and ssnOfRecord are bound to the row's
    // recordId, which the extension reads from the one matching row before it writes
    // (updateMany would need recordId in its where).
    const patient = await db.patient.update({
      where: { id: idOf(req), tenantId },
      data: {
        ...(data as { ssn?: string; name?: string; note?: string | null; vitals?: string | null }),
        // The row-bound copy follows every change of the SSN, or the row would be refused.
        ...(data.ssn === undefined ? {} : { ssnOfRecord: data.ssn }),
      },
      select: LOADED,
    });
    res.json(ownPatient(patient));
  });

  app.delete("/patients/{:id}", async (req, res) => {
    const result = await db.patient.deleteMany({
      where: { id: idOf(req), tenantId: tenantOf(req) },
    });
    if (result.count === 0) throw new HttpError(404, "no such patient in this clinic");
    res.status(204).end();
  });

  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (error instanceof HttpError) {
      res.status(error.status).json({ error: error.message });
    } else if (isKmsError(error)) {
      // The answer stays generic, so the operator needs the fault itself (an unreachable KMS
      // server, a refused signature); client faults are in the KMS's audit trail.
      if (!error.clientFault) logFault(res, "KMS fault", error);
      // Decryption failures stay generic; a clinic whose key is gone gets 410.
      const status =
        error.code === "ValidationException"
          ? 400
          : error.code === "KMSInvalidStateException" || error.code === "DisabledException"
            ? 410
            : 500;
      res.status(status).json({
        error: status === 400 ? error.message : "stored records cannot be decrypted",
        code: error.code,
      });
    } else if ((error as { code?: unknown }).code === "P2025") {
      // update's "record not found": no such id in this clinic.
      res.status(404).json({ error: "no such patient in this clinic" });
    } else if ((error as { code?: unknown }).code === "P2002") {
      res.status(409).json({ error: "a patient with this ssn already exists in this clinic" });
    } else if (isClientBodyError(error)) {
      res
        .status(error.status)
        .json({ error: BODY_ERRORS[error.type ?? ""] ?? "body cannot be read" });
    } else {
      const requestId = logFault(res, "internal error", error);
      res.status(500).json({ error: "internal error", requestId });
    }
  });
  return app;
}
