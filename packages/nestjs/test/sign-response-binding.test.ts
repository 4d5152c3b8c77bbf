/**
 * `SignResponseInterceptor` bound app-wide and by `@SignResponse` on one route: the response is
 * signed once, with the route's options (module, then class, then method), never twice under
 * one label (which answered 500 on every such route).
 */
import "reflect-metadata";
import {
  createHmacSigner,
  createHmacVerifier,
  type MessageVerifier,
  type ResponseSigningOptions,
  type VerificationResult,
  verifyMessage,
} from "@kms/http-signatures";
import {
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Injectable,
  Module,
  UseInterceptors,
} from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, SignResponse, SignResponseInterceptor } from "../src/index.ts";
import { listen } from "./helpers.ts";

const appSecret = Buffer.alloc(32, 0x73);
const appSigner = createHmacSigner(appSecret, { keyId: "app" });
const appVerifier = createHmacVerifier(appSecret);
const scopedSecret = Buffer.alloc(32, 0x74);

@Controller()
class ReportsController {
  @Get("expiring")
  @SignResponse({ expiresIn: 30 })
  expiring(): { report: number } {
    return { report: 1 };
  }

  @Get("plain")
  plain(): { report: number } {
    return { report: 2 };
  }
}

@Controller("labelled")
@SignResponse({ label: "reports" })
class LabelledController {
  @Get()
  @SignResponse({ expiresIn: 60 })
  labelled(): { report: number } {
    return { report: 3 };
  }
}

interface Fetched {
  readonly status: number;
  readonly signatureInput: string | null;
  readonly verification: VerificationResult;
}

async function fetchSigned(
  origin: string,
  path: string,
  verifier: MessageVerifier,
): Promise<Fetched> {
  const url = `${origin}${path}`;
  const res = await fetch(url);
  const body = new Uint8Array(await res.arrayBuffer());
  const verification = await verifyMessage(
    { status: res.status, headers: res.headers, body },
    { keyLookup: () => verifier, nonceStore: false },
    { method: "GET", url, headers: {} },
  );
  return {
    status: res.status,
    signatureInput: res.headers.get("signature-input"),
    verification,
  };
}

/** The labels of the response's signatures (members of the Signature-Input dictionary). */
function labels(signatureInput: string | null): string[] {
  return [...(signatureInput ?? "").matchAll(/(?:^|,\s*)([a-z][a-z0-9_.*-]*)=\(/g)].map(
    (member) => member[1] ?? "",
  );
}

describe("app-wide SignResponseInterceptor and @SignResponse on the same routes", () => {
  let app: INestApplication;
  let origin: string;
  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ responseSigning: { signer: appSigner } })],
      controllers: [ReportsController, LabelledController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: SignResponseInterceptor }],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    origin = await listen(app);
  });
  afterAll(() => app.close());

  it("signs once, with the method's options", async () => {
    const res = await fetchSigned(origin, "/expiring", appVerifier);
    expect(res.status).toBe(200);
    expect(labels(res.signatureInput)).toEqual(["sig1"]);
    expect(res.verification).toMatchObject({ ok: true, label: "sig1", keyId: "app" });
    const { params } = res.verification as Extract<VerificationResult, { ok: true }>;
    expect(params.expires).toBe((params.created ?? 0) + 30);
  });

  it("layers the method's options over the class's", async () => {
    const res = await fetchSigned(origin, "/labelled", appVerifier);
    expect(res.status).toBe(200);
    expect(labels(res.signatureInput)).toEqual(["reports"]);
    expect(res.verification).toMatchObject({ ok: true, label: "reports" });
    const { params } = res.verification as Extract<VerificationResult, { ok: true }>;
    expect(params.expires).toBe((params.created ?? 0) + 60);
  });

  it("signs an undecorated route with the module's options", async () => {
    const res = await fetchSigned(origin, "/plain", appVerifier);
    expect(res.status).toBe(200);
    expect(labels(res.signatureInput)).toEqual(["sig1"]);
    expect(res.verification).toMatchObject({ ok: true, label: "sig1" });
    const { params } = res.verification as Extract<VerificationResult, { ok: true }>;
    expect(params.expires).toBeUndefined();
  });
});

@Controller("scoped")
class ScopedController {
  @Get()
  @SignResponse({ expiresIn: 30 })
  scoped(): { report: number } {
    return { report: 4 };
  }
}

/** A module with its own, non-global KmsModule and signer. */
@Module({
  imports: [
    KmsModule.forRoot({
      isGlobal: false,
      responseSigning: { signer: createHmacSigner(scopedSecret, { keyId: "scoped" }) },
    }),
  ],
  controllers: [ScopedController],
})
class ScopedModule {}

/** A module whose KmsModule configures no signer: its @SignResponse relies on the app-wide one. */
@Module({
  imports: [KmsModule.forRoot({ isGlobal: false })],
  controllers: [ReportsController],
})
class UnconfiguredModule {}

describe("interceptors of two KmsModules on one route", () => {
  it("the first to run (app-wide) signs, under the route's options", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ responseSigning: { signer: appSigner } }), ScopedModule],
      providers: [{ provide: APP_INTERCEPTOR, useClass: SignResponseInterceptor }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const origin = await listen(app);
    try {
      const res = await fetchSigned(origin, "/scoped", appVerifier);
      expect(res.status).toBe(200);
      expect(labels(res.signatureInput)).toEqual(["sig1"]);
      expect(res.verification).toMatchObject({ ok: true, keyId: "app" });
      const { params } = res.verification as Extract<VerificationResult, { ok: true }>;
      expect(params.expires).toBe((params.created ?? 0) + 30);
    } finally {
      await app.close();
    }
  });

  it("does not answer 500 for a later interceptor whose module has no signer", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ responseSigning: { signer: appSigner } }), UnconfiguredModule],
      providers: [{ provide: APP_INTERCEPTOR, useClass: SignResponseInterceptor }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const origin = await listen(app);
    try {
      const res = await fetchSigned(origin, "/expiring", appVerifier);
      expect(res.status).toBe(200);
      expect(labels(res.signatureInput)).toEqual(["sig1"]);
      expect(res.verification).toMatchObject({ ok: true, keyId: "app" });
    } finally {
      await app.close();
    }
  });
});

/** A subclass whose own hook must decide how its routes are signed. */
@Injectable()
class BrandedSigner extends SignResponseInterceptor {
  protected override optionsFor(execution: ExecutionContext): ResponseSigningOptions {
    return { ...super.optionsFor(execution), label: "branded" };
  }
}

@Controller("mixed")
class MixedController {
  @Get("branded")
  @UseInterceptors(BrandedSigner)
  branded(): { report: number } {
    return { report: 5 };
  }

  @Get("decorated")
  @SignResponse({ expiresIn: 30 })
  decorated(): { report: number } {
    return { report: 6 };
  }
}

describe("SignResponseInterceptor and a subclass of it on one route", () => {
  async function appWith(appWide: typeof SignResponseInterceptor) {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ responseSigning: { signer: appSigner } })],
      controllers: [MixedController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: appWide }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    return { app, origin: await listen(app) };
  }

  it("answers 500 rather than sign without the subclass's hooks when the plain one runs first", async () => {
    const { app, origin } = await appWith(SignResponseInterceptor);
    try {
      const res = await fetchSigned(origin, "/mixed/branded", appVerifier);
      expect(res.status).toBe(500);
      expect(labels(res.signatureInput)).not.toContain("branded");
      // The plain interceptor alone still signs its own routes.
      const plain = await fetchSigned(origin, "/mixed/decorated", appVerifier);
      expect(plain.status).toBe(200);
      expect(plain.verification).toMatchObject({ ok: true, label: "sig1" });
    } finally {
      await app.close();
    }
  });

  it("signs once with the subclass's hooks when it runs first, bound again or refined by @SignResponse", async () => {
    const { app, origin } = await appWith(BrandedSigner);
    try {
      const branded = await fetchSigned(origin, "/mixed/branded", appVerifier);
      expect(branded.status).toBe(200);
      expect(labels(branded.signatureInput)).toEqual(["branded"]);
      expect(branded.verification).toMatchObject({ ok: true, label: "branded" });
      const decorated = await fetchSigned(origin, "/mixed/decorated", appVerifier);
      expect(decorated.status).toBe(200);
      expect(labels(decorated.signatureInput)).toEqual(["branded"]);
      const { params } = decorated.verification as Extract<VerificationResult, { ok: true }>;
      expect(params.expires).toBe((params.created ?? 0) + 30);
    } finally {
      await app.close();
    }
  });
});
