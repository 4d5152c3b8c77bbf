import "reflect-metadata";
import {
  AccessDeniedError,
  createKms,
  InvalidStateError,
  type KmsError,
  KmsInternalError,
  NotFoundError,
  UnsupportedOperationError,
  ValidationError,
} from "@kms/core";
import { Controller, Get, type INestApplication, Inject, type LoggerService } from "@nestjs/common";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, KmsService, kmsErrorProblem } from "../src/index.ts";
import { listen } from "./helpers.ts";

const ACCOUNT = "111122223333";
const ADMIN = `arn:aws:iam::${ACCOUNT}:user/admin`;
const SERVICE = `arn:aws:iam::${ACCOUNT}:role/records-service`;

async function deniedCall(): Promise<{ error: KmsError; keyArn: string }> {
  const kms = await createKms({ account: ACCOUNT, principal: ADMIN });
  try {
    const policy = JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        { Effect: "Allow", Principal: { AWS: ADMIN }, Action: "kms:*", Resource: "*" },
        { Effect: "Allow", Principal: { AWS: SERVICE }, Action: "kms:*", Resource: "*" },
        {
          Sid: "NoEncryptForRecordsService",
          Effect: "Deny",
          Principal: { AWS: SERVICE },
          Action: "kms:Encrypt",
          Resource: "*",
        },
      ],
    });
    const { keyMetadata } = await kms.createKey({ policy });
    const error = await kms
      .encrypt({ keyId: keyMetadata.keyId, plaintext: Buffer.from("x") }, { principal: SERVICE })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    if (!(error instanceof AccessDeniedError)) throw new Error("expected the call to be denied");
    return { error, keyArn: keyMetadata.arn };
  } finally {
    await kms.close();
  }
}

describe("kmsErrorProblem", () => {
  it("answers a denial with a fixed detail that names no principal, key or policy statement", async () => {
    const { error, keyArn } = await deniedCall();
    // The message itself is for the operator and names all three.
    expect(error.message).toContain(SERVICE);
    expect(error.message).toContain(keyArn);
    expect(error.message).toContain("NoEncryptForRecordsService");

    const problem = kmsErrorProblem(error);
    expect(problem).toMatchObject({
      type: "https://kms.dev/problems/kms/AccessDeniedException",
      status: 403,
      code: "AccessDeniedException",
      detail: "the key management service denied an operation this request needs",
    });
    const sent = JSON.stringify(problem);
    for (const internal of [SERVICE, keyArn, ACCOUNT, "NoEncryptForRecordsService"]) {
      expect(sent).not.toContain(internal);
    }
  });
});

describe("kmsErrorProblem for key usage", () => {
  it("answers an unsupported operation with a fixed detail that names no key or account", async () => {
    const kms = await createKms({ account: ACCOUNT });
    try {
      const { keyMetadata } = await kms.createKey({});
      const error = await kms.getPublicKey({ keyId: keyMetadata.keyId }).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (!(error instanceof UnsupportedOperationError)) throw new Error("expected a refusal");
      expect(error.message).toContain(keyMetadata.arn);
      const problem = kmsErrorProblem(error);
      expect(problem).toMatchObject({ status: 400, code: "UnsupportedOperationException" });
      const sent = JSON.stringify(problem);
      expect(sent).not.toContain(keyMetadata.arn);
      expect(sent).not.toContain(ACCOUNT);
    } finally {
      await kms.close();
    }
  });
});

/** Records what Nest logs, by level. */
class RecordingLogger implements LoggerService {
  readonly errors: string[] = [];
  log(): void {}
  warn(): void {}
  error(message: unknown, ...rest: unknown[]): void {
    this.errors.push([message, ...rest].map(String).join("\n"));
  }
}

const KEY_ALIAS = "alias/clinic-keys/acme-internal";
const SECRET_VALUE = "078-05-1120";

/** An error shaped like better-sqlite3's `SqliteError`: a class name, a code, a message. */
function driverError(message: string, code: string | number): Error {
  const error = new Error(message);
  error.name = "SqliteError";
  return Object.assign(error, { code });
}

@Controller()
class FailingController {
  constructor(@Inject(KmsService) private readonly kms: KmsService) {}

  // Core names the key's ARN (and so the account) in the message: for the operator only.
  @Get("wrong-usage")
  async wrongUsage(): Promise<unknown> {
    const { keyMetadata } = await this.kms.core.createKey({
      keySpec: "HMAC_256",
      keyUsage: "GENERATE_VERIFY_MAC",
    });
    return this.kms.kms.encrypt({ keyId: keyMetadata.keyId, plaintext: new Uint8Array([1]) });
  }

  @Get("internal")
  internal(): never {
    throw new KmsInternalError("the key store could not be read", {
      cause: driverError("SQLITE_BUSY: database is locked", "SQLITE_BUSY"),
    });
  }

  // A driver's message can quote the statement's values, decrypted data among them.
  @Get("echoing-driver")
  echoingDriver(): never {
    throw new KmsInternalError("the field engine could not store a value", {
      cause: new ValidationError("the data key row for tenant acme is malformed", {
        cause: driverError(`UNIQUE constraint failed: patients.ssn = '${SECRET_VALUE}'`, 2067),
      }),
    });
  }

  @Get("codeless-driver")
  codelessDriver(): never {
    throw new KmsInternalError("the key store could not be read", {
      cause: new TypeError(`cannot read "${SECRET_VALUE}"`),
    });
  }

  @Get("missing")
  missing(): never {
    throw new NotFoundError(`${KEY_ALIAS} is not a known alias`);
  }

  @Get("pending")
  pending(): never {
    throw new InvalidStateError(
      `arn:aws:kms:local:000000000000:key/${"1".repeat(8)}-1111-4111-8111-111111111111 is pending deletion`,
    );
  }
}

describe("KmsExceptionFilter over HTTP", () => {
  let app: INestApplication;
  let origin: string;
  const logger = new RecordingLogger();

  beforeAll(async () => {
    const kms = await createKms({ account: ACCOUNT });
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ kms, mapKmsErrors: true, closeOnDestroy: true })],
      controllers: [FailingController],
    }).compile();
    app = moduleRef.createNestApplication({ logger });
    origin = await listen(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it("logs an internal fault with its cause, and sends none of it", async () => {
    const res = await request(origin).get("/internal");
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/kms/internal",
      detail: "the key management service failed; see the server logs",
    });
    expect(res.text).not.toContain("key store");
    expect(res.text).not.toContain("SQLITE_BUSY");
    const logged = logger.errors.find((line) => line.includes("the key store could not be read"));
    expect(logged).toBeDefined();
    expect(logged).toContain("KmsInternalError");
    expect(logged).toContain("caused by SqliteError (code SQLITE_BUSY; message not logged)");
    expect(logged).not.toContain("database is locked");
  });

  it("logs a KMS cause's message, and a driver cause's class and code but not its message", async () => {
    const res = await request(origin).get("/echoing-driver");
    expect(res.status).toBe(500);
    const logged = logger.errors.find((line) => line.includes("could not store a value"));
    expect(logged).toBeDefined();
    expect(logged).toContain(
      "caused by ValidationError: the data key row for tenant acme is malformed",
    );
    expect(logged).toContain("caused by SqliteError (code 2067; message not logged)");
    expect(logged).not.toContain(SECRET_VALUE);
    expect(logged).not.toContain("UNIQUE constraint");
  });

  it("logs a cause without a code by its class alone", async () => {
    const res = await request(origin).get("/codeless-driver");
    expect(res.status).toBe(500);
    const logged = logger.errors.find((line) => line.includes("caused by TypeError"));
    expect(logged).toContain("caused by TypeError (message not logged)");
    expect(logged).not.toContain(SECRET_VALUE);
  });

  it("answers a wrong key usage with a fixed detail that names no key or account", async () => {
    const res = await request(origin).get("/wrong-usage");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({
      code: "InvalidKeyUsageException",
      detail: "a key this request needs does not allow this operation",
    });
    expect(res.text).not.toContain("arn:aws:kms");
    expect(res.text).not.toContain(ACCOUNT);
  });

  it("answers key states with fixed details that name no key, and logs nothing for them", async () => {
    const before = logger.errors.length;
    const missing = await request(origin).get("/missing");
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text)).toMatchObject({
      code: "NotFoundException",
      detail: "a key this request needs does not exist",
    });
    expect(missing.text).not.toContain(KEY_ALIAS);
    const pending = await request(origin).get("/pending");
    expect(pending.status).toBe(409);
    expect(JSON.parse(pending.text)).toMatchObject({
      code: "KMSInvalidStateException",
      detail:
        "a key this request needs is not in a state that allows this operation (for example, pending deletion)",
    });
    expect(pending.text).not.toContain("arn:aws:kms");
    expect(logger.errors.length).toBe(before);
  });
});
