/**
 * The piece limit of query parsers: `qs` (`parameterLimit`) and node's `querystring` (`maxKeys`),
 * Express 5's `"extended"` and `"simple"` query parsers (Nest's too), read only the first 1000
 * `&`-separated pieces of a query, empty pieces counted. A request signed over
 * `@query-param;name="dryRun"` alone, replayed with 1000 `&` in front of the parameter, would
 * still verify while the handler saw no `dryRun` and applied its default. A covered parameter in
 * a piece past the limit is refused: signing throws, verification fails as `components`.
 */
import { randomBytes } from "node:crypto";
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import querystring from "node:querystring";
import { ValidationError } from "@kms/core";
import { afterAll, describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  item,
  nodeRequestMessage,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const policy: VerificationPolicy = {
  // About which pieces a parser reads, not about what a signature must cover.
  requiredComponents: [],
  keyLookup: () => createHmacVerifier(secret),
  nonceStore: false,
  now: () => T0,
};
const dryRun: ComponentSpec = { component: "@query-param", name: "dryRun" };
/** The refusal of a `dryRun` in piece `piece`, under the default limit or a configured one. */
const PAST_LIMIT = (piece: number, limit?: number) =>
  new RegExp(
    `^component "@query-param";name="dryRun": the parameter is in piece ${piece} of the query's &-separated pieces \\(empty ones counted\\), past the first ${
      limit === undefined
        ? "1000, all that qs and node's querystring read"
        : `${limit} that the application's query parser reads`
    } \\(queryParameterLimit\\), so the application would not see it; cover @query instead$`,
  );

async function signedFor(url: string, components: readonly ComponentSpec[], limit?: number) {
  const message: RequestMessage = { method: "POST", url, headers: {} };
  const fields = await signMessage(message, {
    signer,
    components,
    now: () => T0,
    ...(limit === undefined ? {} : { queryParameterLimit: limit }),
  });
  return { signatureInput: fields.signatureInput, signature: fields.signature };
}

const value = (url: string, options: { queryParameterLimit?: number } = {}) =>
  componentValues(
    item("@query-param", { name: "dryRun" }),
    {
      message: { method: "POST", url, headers: {} },
    },
    options,
  );

/** `n` empty pieces, then the parameter: it is in piece `n + 1`. */
const padded = (n: number) => `${"&".repeat(n)}dryRun=true`;

/*
 * Express 5 itself, from the express package's own dependencies (this package does not depend
 * on it): only the few calls used here are typed.
 */
interface ExpressApp extends RequestListener {
  set(setting: string, value: unknown): void;
  post(
    path: string,
    handler: (
      req: IncomingMessage & { query: Record<string, unknown> },
      res: ServerResponse & {
        json(body: unknown): void;
      },
    ) => void,
  ): void;
}
const express = createRequire(new URL("../../express/package.json", import.meta.url))(
  "express",
) as () => ExpressApp;

const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
});

/**
 * An Express app with the given query parser whose handler reports what it reads as `dryRun`
 * and what verifying the request it received gives. Answers with the URL to send requests to.
 */
async function expressApp(parser: unknown, verification: VerificationPolicy): Promise<string> {
  const app = express();
  app.set("query parser", parser);
  app.post("/transfer", (req, res) => {
    const result = verifyMessageEagerly(nodeRequestMessage(req), verification);
    res.json({ dryRun: req.query.dryRun ?? null, result });
  });
  const server = createServer(app);
  servers.push(server);
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/transfer`;
}

async function send(url: string, signature: { signatureInput: string; signature: string }) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "signature-input": signature.signatureInput, signature: signature.signature },
  });
  return (await response.json()) as {
    dryRun: unknown;
    result: { ok: boolean; check?: string; detail?: string };
  };
}

describe("a covered @query-param past the first 1000 pieces of the query", () => {
  it.each(["simple", "extended"])(
    "is refused exactly where Express 5's %s query parser stops reading",
    async (parser) => {
      const base = await expressApp(parser, policy);
      // Signed as a dry run; the same signature replayed with the parameter pushed back.
      const signature = await signedFor(`${base}?dryRun=true`, ["@method", "@path", dryRun]);
      expect(await send(`${base}?dryRun=true`, signature)).toMatchObject({
        dryRun: "true",
        result: { ok: true },
      });
      const seen = await send(`${base}?${padded(999)}`, signature);
      expect(seen).toMatchObject({ dryRun: "true", result: { ok: true } });
      for (const n of [1000, 1001]) {
        const hidden = await send(`${base}?${padded(n)}`, signature);
        // The handler applies its default: a real transfer under a dry run's signature.
        expect({ n, ...hidden }).toMatchObject({
          n,
          dryRun: null,
          result: {
            ok: false,
            check: "components",
            detail: expect.stringMatching(PAST_LIMIT(n + 1)),
          },
        });
      }
    },
  );

  it("counts named pieces and empty ones alike, as qs and querystring do", () => {
    const named = Array.from({ length: 999 }, (_, i) => `j${i}=0`).join("&");
    expect(value(`https://a.test/t?${named}&dryRun=true`)).toEqual(["true"]);
    expect(() => value(`https://a.test/t?${named}&&dryRun=true`)).toThrow(PAST_LIMIT(1001));
    expect(() => value(`https://a.test/t?${named}&x&dryRun=true`)).toThrow(PAST_LIMIT(1001));
    expect(value(`https://a.test/t?a=1${"&".repeat(999)}dryRun=true`)).toEqual(["true"]);
    expect(querystring.parse(`${named}&dryRun=true`).dryRun).toBe("true");
    expect(querystring.parse(`${named}&&dryRun=true`).dryRun).toBeUndefined();
  });

  it("refuses to sign it, naming the component, and @query covers such a query", async () => {
    const url = `https://a.test/transfer?${padded(1000)}`;
    const error = await signedFor(url, ["@method", dryRun]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(PAST_LIMIT(1001));
    const whole = await signedFor(url, ["@method", "@query"]);
    const message = {
      method: "POST",
      url,
      headers: { "signature-input": whole.signatureInput, signature: whole.signature },
    };
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: true });
  });
});

describe("queryParameterLimit", () => {
  it("follows an application that raises querystring's maxKeys", async () => {
    const parse = (query: string) => querystring.parse(query, "&", "=", { maxKeys: 2000 });
    const base = await expressApp(parse, { ...policy, queryParameterLimit: 2000 });
    const signature = await signedFor(`${base}?dryRun=true`, ["@method", "@path", dryRun]);
    for (const n of [1000, 1999]) {
      expect(await send(`${base}?${padded(n)}`, signature)).toMatchObject({
        dryRun: "true",
        result: { ok: true },
      });
    }
    expect(await send(`${base}?${padded(2000)}`, signature)).toMatchObject({
      dryRun: null,
      result: {
        ok: false,
        check: "components",
        detail: expect.stringMatching(PAST_LIMIT(2001, 2000)),
      },
    });
  });

  it("applies to signing, to a lower limit and to Infinity", async () => {
    const far = `https://a.test/transfer?${padded(5000)}`;
    expect(value(far, { queryParameterLimit: Number.POSITIVE_INFINITY })).toEqual(["true"]);
    await expect(signedFor(far, [dryRun], 5001)).resolves.toMatchObject({});
    await expect(signedFor(far, [dryRun], 5000)).rejects.toThrow(PAST_LIMIT(5001, 5000));
    expect(value(`https://a.test/t?${padded(2)}`, { queryParameterLimit: 3 })).toEqual(["true"]);
    expect(() => value(`https://a.test/t?${padded(3)}`, { queryParameterLimit: 3 })).toThrow(
      PAST_LIMIT(4, 3),
    );
  });

  it.each([0, -1, 1.5, Number.NaN, Number.NEGATIVE_INFINITY, "1000"])(
    "refuses %s as a setup error, not as a bad request",
    async (limit) => {
      const bad = { queryParameterLimit: limit as number };
      const INVALID = /"queryParameterLimit" must be a positive integer or Infinity, got /;
      const url = "https://a.test/t?dryRun=true";
      const signature = await signedFor(url, ["@method", dryRun]);
      const message = {
        method: "POST",
        url,
        headers: { "signature-input": signature.signatureInput, signature: signature.signature },
      };
      // Before any message is read, as other policy errors: even one that covers no @query-param.
      await expect(verifyMessage(message, { ...policy, ...bad })).rejects.toThrow(INVALID);
      const other = { ...message, headers: {} };
      await expect(verifyMessage(other, { ...policy, ...bad })).rejects.toThrow(INVALID);
      await expect(
        signMessage({ method: "POST", url, headers: {} }, { signer, components: [dryRun], ...bad }),
      ).rejects.toThrow(INVALID);
      expect(() => value(url, bad)).toThrow(INVALID);
    },
  );
});
