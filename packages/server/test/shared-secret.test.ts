/**
 * What a credentials table may hold. SigV4 never signs the access key id (the string to sign
 * holds the scope's date, region and service only), so two ids with one secret let anyone who
 * sees a request send it again under the other id, as the other principal: such a table is
 * refused when the server is made. Secrets shorter than the CLI's bound are refused too.
 */
import { GenerateRandomCommand, KMSInternalException } from "@aws-sdk/client-kms";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKmsRequestHandler,
  createKmsServer,
  type KmsServerOptions,
  MIN_SECRET_ACCESS_KEY_LENGTH,
  type RefusedRequest,
} from "../src/index.ts";
import { ALICE, BOB, REGION, startHarness } from "./support/harness.ts";

const SHARED = "shared/Secret+Key000000000000000000000001";

let kms: Kms;
beforeAll(async () => {
  kms = await createKms({ region: REGION, account: "111122223333" });
});
afterAll(async () => {
  await kms.close();
});

/** The error `make` throws, or undefined. */
function thrown(make: () => unknown): unknown {
  try {
    make();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe("access key ids that share a secret", () => {
  it("are refused when the handler or the server is made, naming the ids and never the secret", () => {
    const credentials: KmsServerOptions["credentials"] = {
      AKIAONE: { secretAccessKey: SHARED, principal: ALICE.principal },
      AKIATWO: { secretAccessKey: SHARED, principal: BOB.principal },
      [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
    };
    for (const make of [createKmsRequestHandler, createKmsServer]) {
      const error = thrown(() => make({ kms, credentials }));
      expect(error).toBeInstanceOf(ValidationError);
      const { message } = error as ValidationError;
      expect(message).toContain('"AKIAONE", "AKIATWO"');
      expect(message).not.toContain(ALICE.accessKeyId);
      expect(message).not.toContain(SHARED);
      expect(message).not.toContain(SHARED.slice(0, 12));
    }
    // Each id its own secret: accepted.
    expect(() =>
      createKmsRequestHandler({
        kms,
        credentials: {
          AKIAONE: { secretAccessKey: SHARED, principal: ALICE.principal },
          AKIATWO: { secretAccessKey: `${SHARED}2`, principal: BOB.principal },
        },
      }),
    ).not.toThrow();
  });

  it("names every group of ids that share one", () => {
    const error = thrown(() =>
      createKmsRequestHandler({
        kms,
        credentials: {
          AKIAONE: { secretAccessKey: SHARED, principal: ALICE.principal },
          AKIATWO: { secretAccessKey: SHARED, principal: BOB.principal },
          AKIATHREE: { secretAccessKey: SHARED, principal: BOB.principal },
          AKIAFOUR: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
          AKIAFIVE: { secretAccessKey: ALICE.secretAccessKey, principal: BOB.principal },
        },
      }),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toContain(
      '("AKIAONE", "AKIATWO", "AKIATHREE"; "AKIAFOUR", "AKIAFIVE")',
    );
  });

  it("compares secrets as the UTF-8 bytes SigV4 keys with: lone surrogates all encode as U+FFFD", () => {
    const tail = "0".repeat(MIN_SECRET_ACCESS_KEY_LENGTH);
    expect(Buffer.from(`\ud800${tail}`)).toEqual(Buffer.from(`\udfff${tail}`));
    const error = thrown(() =>
      createKmsRequestHandler({
        kms,
        credentials: {
          AKIAONE: { secretAccessKey: `\ud800${tail}`, principal: ALICE.principal },
          AKIATWO: { secretAccessKey: `\udfff${tail}`, principal: BOB.principal },
        },
      }),
    );
    expect(error).toBeInstanceOf(ValidationError);
  });
});

describe("short secrets", () => {
  const short = "s".repeat(MIN_SECRET_ACCESS_KEY_LENGTH - 1);

  it("are refused in a table when the handler is made; the bound is the CLI's 20 characters", () => {
    expect(MIN_SECRET_ACCESS_KEY_LENGTH).toBe(20);
    for (const secretAccessKey of [short, "x", ""]) {
      const error = thrown(() =>
        createKmsRequestHandler({
          kms,
          credentials: { AKIASHORT: { secretAccessKey, principal: ALICE.principal } },
        }),
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toContain("at least 20 characters");
      if (secretAccessKey !== "") expect((error as Error).message).not.toContain(secretAccessKey);
    }
    expect(() =>
      createKmsRequestHandler({
        kms,
        credentials: { AKIALONG: { secretAccessKey: `${short}s`, principal: ALICE.principal } },
      }),
    ).not.toThrow();
  });

  it("returned by a lookup function are the lookup's failure (500), never accepted", async () => {
    const refusals: RefusedRequest[] = [];
    const served = await startHarness({
      credentials: (accessKeyId) =>
        accessKeyId === "AKIASHORT"
          ? { secretAccessKey: short, principal: ALICE.principal }
          : undefined,
      onRefused: (r) => {
        refusals.push(r);
      },
    });
    try {
      const e = await served
        .client({ accessKeyId: "AKIASHORT", secretAccessKey: short })
        .send(new GenerateRandomCommand({ NumberOfBytes: 2 }))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(e).toBeInstanceOf(KMSInternalException);
      expect((e as KMSInternalException).$metadata.httpStatusCode).toBe(500);
      expect(refusals).toHaveLength(1);
      expect(refusals[0]?.accessKeyId).toBe("AKIASHORT");
      expect(String((refusals[0]?.cause as Error | undefined)?.message)).toContain(
        "malformed credential",
      );
    } finally {
      await served.close();
    }
  });
});
