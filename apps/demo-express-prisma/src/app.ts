import { randomUUID } from "node:crypto";
import { InvalidCiphertextError, isKmsError, mayCollateAsFieldCiphertextText } from "@kms/core";
import { faultSummary, PATIENT_ID, type TenantDirectory } from "@kms/demo-shared";
import {
  currentKmsContext,
  defaultKmsContext,
  kmsContext,
  kmsContextOf,
  kmsErrorHandler,
  type RequestKmsContext,
  sendProblem,
} from "@kms/express";
import express, { type NextFunction, type Request, type Response } from "express";
import type { KeyAdmin } from "./kms.ts";
import { clinicKmsProblem, demoProblem, internalProblem } from "./problems.ts";
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
  /** The methods the path takes, for a 405's Allow header. */
  readonly allow: readonly string[] | undefined;
  constructor(status: number, message: string, allow?: readonly string[]) {
    super(message);
    this.status = status;
    this.allow = allow;
  }
}

/**
 * The answer to a method the path's routes do not take: 405 naming the ones they do, in the
 * problem's detail and in Allow; OPTIONS gets Allow alone (204).
 */
function methodNotAllowed(allow: readonly string[]) {
  return (req: Request, res: Response): void => {
    if (req.method === "OPTIONS") {
      res.setHeader("allow", [...allow, "OPTIONS"].join(", "));
      res.status(204).end();
      return;
    }
    throw new HttpError(405, `method ${req.method} not allowed here: ${allow.join(", ")}`, [
      ...allow,
      "OPTIONS",
    ]);
  };
}

/** The clinic each request authenticated as, set by the /patients middleware. */
const authenticated = new WeakMap<Request, string>();

/**
 * kmsContext's `resolve`: the clinic the request's bearer token authenticated, and nothing the
 * client names (no tenant header: `tenantHeader` stays unset), bound into every Patient value as
 * `clinic` (schema.prisma). The default resolver would read `req.user`, which this demo's
 * bearer-token check does not set; given as options, `route` stays the pattern Express matches
 * (`GET /patients/{:id}`: no patient id in the log), which a spread result would not.
 * @throws Error when the clinic was not authenticated first (a wiring mistake: 500).
 */
function clinicContext(req: Request): RequestKmsContext | undefined {
  const clinic = authenticated.get(req);
  if (clinic === undefined) throw new Error("kmsContext ran before the clinic was authenticated");
  return defaultKmsContext(req, {
    tenant: clinic,
    tenantKey: "clinic",
    // A clinic's token is no KMS identity: the KMS calls run as the demo's own principal (with
    // KMS_ENDPOINT, its access key's).
    principal: undefined,
  });
}

/**
 * The context kmsContext set up for the request being handled: its clinic (the one every query
 * filters on and every value is bound to) and its request id.
 * @throws Error outside a /patients request (a wiring mistake: 500).
 */
function requestContext(): { readonly clinic: string; readonly requestId: string } {
  const context = currentKmsContext();
  const clinic = context?.encryptionContext.clinic;
  if (context === undefined || clinic === undefined) {
    throw new Error("a /patients route ran outside its request's KMS context");
  }
  return { clinic, requestId: context.requestId };
}

function currentClinic(): string {
  return requestContext().clinic;
}

/**
 * The patient id of the path, in the lowercase form `randomUUID` writes. Patients are addressed
 * by their random recordId, never by the autoincrement `id`: that one counts every clinic's
 * patients, so a clinic comparing the ids of two of its own creations would learn how many the
 * other clinics made in between. A malformed id never reaches the database.
 */
function idOf(req: Request): string {
  const id = req.params.id;
  if (typeof id !== "string" || !PATIENT_ID.test(id)) {
    throw new HttpError(400, "id: a patient id (a UUID, as POST /patients returns it)");
  }
  return id.toLowerCase();
}

const FIELDS: ReadonlySet<string> = new Set(["ssn", "name", "note", "vitals"]);

/**
 * Levels of objects and arrays `vitals` may nest: measurements, not documents. A body within the
 * 64 kB limit can nest some 30,000 levels, which recursive copies further down (Prisma's own)
 * cannot take: it was answered 500.
 */
const MAX_VITALS_DEPTH = 32;

/** Whether `value` nests objects or arrays deeper than `limit` levels; walked without recursion. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const pending: [unknown, number][] = [[value, 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, depth] = next;
    if (typeof item !== "object" || item === null) continue;
    if (depth > limit) return true;
    for (const member of Object.values(item)) pending.push([member, depth + 1]);
  }
  return false;
}

/**
 * Refuses free text that @kms/prisma would take for ciphertext: text starting with `kms1:`, the
 * prefix of stored values, in any letter case, width or accent (`KMS1:`, `ｋｍｓ１:`), which a
 * case-insensitive collation could find equal to a stored value. The extension refuses it as
 * "already holds ciphertext" (a kms/ValidationException), which told the client its own text
 * was ciphertext. The demo names the rule instead, with the extension's own predicate
 * (@kms/core's), so that the two cannot disagree.
 */
function refuseCiphertextPrefix(field: string, text: string): void {
  if (mayCollateAsFieldCiphertextText(text)) {
    throw new HttpError(
      400,
      `${field}: may not start with "kms1:" in any letter case or width (the prefix of stored ciphertext)`,
    );
  }
}

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
    refuseCiphertextPrefix("name", body.name);
    data.name = body.name;
  }
  if (body.note !== undefined) {
    if (body.note !== null && (typeof body.note !== "string" || body.note.length > 10_000)) {
      throw new HttpError(400, "note: a string of at most 10,000 characters, or null");
    }
    if (body.note !== null) refuseCiphertextPrefix("note", body.note);
    data.note = body.note;
  }
  // null, as for the note: no vitals (on PATCH, clears them).
  if (body.vitals === null) {
    data.vitals = null;
  } else if (body.vitals !== undefined) {
    if (typeof body.vitals !== "object" || Array.isArray(body.vitals)) {
      throw new HttpError(400, "vitals: an object, or null");
    }
    if (nestsDeeperThan(body.vitals, MAX_VITALS_DEPTH)) {
      throw new HttpError(
        400,
        `vitals: at most ${MAX_VITALS_DEPTH} levels of nested objects and arrays`,
      );
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
  // Every coding body-parser decompresses: zstd too, with the zlib of Node 24.
  "encoding.unsupported": "body: content-encoding must be identity, gzip, deflate, br or zstd",
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

/** A Prisma error's code (`P2002`…), if `error` has one. */
function prismaCodeOf(error: unknown): unknown {
  return typeof error === "object" && error !== null
    ? (error as { code?: unknown }).code
    : undefined;
}

/**
 * What a route selects: the returned fields (`recordId` as the patient's `id`), plus the
 * row-bound SSN to check them against.
 */
const LOADED = {
  recordId: true,
  ssn: true,
  ssnOfRecord: true,
  name: true,
  note: true,
  vitals: true,
} as const;

/**
 * The patient as returned, its recordId as its `id`, if its SSN is its own. `ssn` is bound to
 * the clinic only (lookups and the unique index need equal ciphertexts across rows), so a
 * database writer can swap two patients' SSNs and both still decrypt; `ssnOfRecord` is bound to
 * the row and does not follow. A mismatch is answered like any other stored value that does not
 * belong where it is: the same generic InvalidCiphertextException, so the response does not say
 * which check failed.
 * @throws InvalidCiphertextException when `ssn` differs from the row's `ssnOfRecord`.
 */
function ownPatient<
  T extends { readonly recordId: string; readonly ssn: string; readonly ssnOfRecord: string },
>(row: T): { readonly id: string } & Omit<T, "recordId" | "ssnOfRecord"> {
  const { recordId, ssnOfRecord, ...patient } = row;
  if (ssnOfRecord !== row.ssn) {
    throw new InvalidCiphertextError("a stored value does not belong to its row");
  }
  return { id: recordId, ...patient };
}

/**
 * The answer to a fault that is neither the client's nor a KMS error (kmsErrorHandler answers
 * those, and logs their faults): an opaque 500 naming the request id, and one log line under
 * it, with the route pattern. The line is `faultSummary`'s (classes, codes, KMS messages), never
 * the error itself: `console.error(error)` prints its message, properties and causes, and a
 * Prisma validation error's message repeats the query's arguments, plaintext included if it
 * ever reached a client without the encryption extension.
 */
function internalError(error: unknown, req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) {
    next(error);
    return;
  }
  // The request id kmsContext chose, already in the answer's x-request-id and in the KMS audit
  // trail; a new one for a request that failed before it.
  const context = kmsContextOf(req);
  const requestId = context?.requestId ?? randomUUID();
  const where = context === undefined ? "" : `, ${context.route}`;
  console.error(`internal error (request ${requestId}${where}): ${faultSummary(error)}`);
  res.setHeader("x-request-id", requestId);
  sendProblem(res, internalProblem(requestId));
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
  // The request's context, from its authenticated clinic: the rest of the request runs inside
  // it, so the extension binds every Patient value to `clinic` (schema.prisma) beside the row's
  // own tenantId, and currentKmsContext() names the clinic to the routes.
  app.use("/patients", kmsContext({ resolve: clinicContext }));
  // The clinic's KMS key exists before its first value is written. Its KMS calls carry the
  // request id, so the audit trail names the request that made them (in process: the AWS API
  // has no field to send it to a KMS server).
  app.use("/patients", (_req: Request, _res: Response, next: NextFunction) => {
    const { clinic, requestId } = requestContext();
    ensureTenantKey(kms, clinic, { requestId }).then(() => next(), next);
  });

  app.post("/patients", async (req, res) => {
    const tenantId = currentClinic();
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
    const tenantId = currentClinic();
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
      where: { recordId: idOf(req), tenantId: currentClinic() },
      select: LOADED,
    });
    if (patient === null) throw new HttpError(404, "no such patient in this clinic");
    res.json(ownPatient(patient));
  });

  app.patch("/patients/{:id}", async (req, res) => {
    const tenantId = currentClinic();
    const data = patientData(req.body ?? {}, true);
    const recordId = idOf(req);
    // Whether the row is the clinic's own shows only in the row the update returns (its values
    // decrypt, its SSN matches its row-bound copy): the check runs inside the update's
    // transaction, so a row answered 403 is rolled back rather than changed by a refused request.
    const patient = await db.$transaction(async (tx) =>
      ownPatient(
        // `update`, by the unique recordId, which name, note, vitals and ssnOfRecord are bound
        // to: the extension takes it from the where.
        await tx.patient.update({
          where: { recordId, tenantId },
          data: {
            ...(data as {
              ssn?: string;
              name?: string;
              note?: string | null;
              vitals?: string | null;
            }),
            // The row-bound copy follows every change of the SSN, or the row would be refused.
            ...(data.ssn === undefined ? {} : { ssnOfRecord: data.ssn }),
          },
          select: LOADED,
        }),
      ),
    );
    res.json(patient);
  });

  app.delete("/patients/{:id}", async (req, res) => {
    const result = await db.patient.deleteMany({
      where: { recordId: idOf(req), tenantId: currentClinic() },
    });
    if (result.count === 0) throw new HttpError(404, "no such patient in this clinic");
    res.status(204).end();
  });

  // A method a route does not take, and a path no route serves: problem+json like every other
  // error, where Express answered an HTML page ("Cannot PUT /patients/…").
  app.all("/patients", methodNotAllowed(["GET", "HEAD", "POST"]));
  app.all("/patients/{:id}", methodNotAllowed(["GET", "HEAD", "PATCH", "DELETE"]));
  app.use(() => {
    throw new HttpError(404, "no such route");
  });

  // The demo's own failures as problem+json, like kmsErrorHandler's answers to KMS errors.
  app.use((error: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (error instanceof HttpError) {
      if (error.allow !== undefined) res.setHeader("allow", error.allow.join(", "));
      sendProblem(res, demoProblem(error.status, error.message));
    } else if (isKmsError(error)) {
      next(error);
    } else if (prismaCodeOf(error) === "P2025") {
      // update's "record not found": no such id in this clinic.
      sendProblem(res, demoProblem(404, "no such patient in this clinic"));
    } else if (prismaCodeOf(error) === "P2002") {
      sendProblem(res, demoProblem(409, "a patient with this ssn already exists in this clinic"));
    } else if (isClientBodyError(error)) {
      const detail = BODY_ERRORS[error.type ?? ""] ?? "body cannot be read";
      sendProblem(res, demoProblem(error.status, detail));
    } else {
      next(error);
    }
  });
  // KMS errors: a stored value that does not decrypt in this clinic's context 403 (one generic
  // body, whichever check failed), a clinic whose key is gone 410, internal faults an opaque
  // 500, logged with the request id.
  app.use(kmsErrorHandler({ toProblem: clinicKmsProblem }));
  app.use(internalError);
  return app;
}
