/**
 * Principal confusion: who a call runs as comes from the verified access key alone. BOB tries to
 * act as ALICE through headers, body members, grant tokens and credential spellings; the access
 * key lookup only ever sees bounded, well-formed ids.
 */
import {
  CreateGrantCommand,
  CreateKeyCommand,
  EncryptCommand,
  type KMSClient,
  KMSServiceException,
} from "@aws-sdk/client-kms";
import { createKms, ValidationError } from "@kms/core";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKmsRequestHandler, type ServerCredential } from "../src/index.ts";
import { ALICE, BOB, type Harness, REGION, startHarness } from "./support/harness.ts";
import {
  amzDate,
  type HeaderList,
  type RawResponse,
  rawRequest,
  sign,
} from "./support/raw-http.ts";
import { signedCall, signedHeaders } from "./support/signed-call.ts";

let h: Harness;
let alice: KMSClient;
/** A key whose policy lets ALICE, and nobody else, do anything. */
let aliceOnly: string;
let aliceGrantToken: string;

beforeAll(async () => {
  h = await startHarness();
  alice = h.client(ALICE);
  const policy = JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "alice",
        Effect: "Allow",
        Principal: { AWS: ALICE.principal },
        Action: "kms:*",
        Resource: "*",
      },
    ],
  });
  aliceOnly = (await alice.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!.KeyId!;
  aliceGrantToken = (
    await alice.send(
      new CreateGrantCommand({
        KeyId: aliceOnly,
        GranteePrincipal: ALICE.principal,
        Operations: ["Encrypt"],
      }),
    )
  ).GrantToken!;
});
afterAll(async () => {
  await h.close();
});

const encryptBody = (extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ KeyId: aliceOnly, Plaintext: "AAAA", ...extra });

/** Every claim a header could make about who is calling, or from where. */
const CLAIMS: HeaderList = [
  ["X-Forwarded-For", "10.1.2.3"],
  ["Forwarded", "for=10.1.2.3"],
  ["X-Real-IP", "10.1.2.3"],
  ["X-Amz-Principal", ALICE.principal],
  ["X-Kms-Principal", ALICE.principal],
  ["X-Amz-User", ALICE.principal],
  ["X-Amzn-Principal-Arn", ALICE.principal],
  ["X-Amz-Source-Arn", ALICE.principal],
  ["X-Remote-User", ALICE.principal],
];

async function expectDeniedAsBob(res: RawResponse): Promise<void> {
  expect(res.json.__type, res.body).toBe("AccessDeniedException");
  expect(res.json.message).toContain(BOB.principal);
  const event = (await h.kms.audit.events()).find(
    (e) => e.requestID === res.headers["x-amzn-requestid"],
  );
  expect(event?.userIdentity.arn).toBe(BOB.principal);
  expect(event?.sourceIPAddress).toBe("127.0.0.1");
  expect(event?.errorCode).toBe("AccessDeniedException");
}

describe("BOB cannot act as ALICE", () => {
  it("ALICE can, so the refusals below are about BOB", async () => {
    const res = await signedCall(h.port, REGION, "Encrypt", encryptBody(), ALICE);
    expect(res.status, res.body).toBe(200);
    const withToken = await signedCall(
      h.port,
      REGION,
      "Encrypt",
      encryptBody({ GrantTokens: [aliceGrantToken] }),
      ALICE,
    );
    expect(withToken.status, withToken.body).toBe(200);
  });

  it("not by headers claiming a principal or an address, signed or not", async () => {
    const body = encryptBody();
    const signedClaims = await signedCall(h.port, REGION, "Encrypt", body, BOB, CLAIMS);
    await expectDeniedAsBob(signedClaims);
    const unsigned = await rawRequest(h.port, {
      headers: [...signedHeaders(h.port, REGION, "TrentService.Encrypt", body, BOB), ...CLAIMS],
      body,
    });
    await expectDeniedAsBob(unsigned);
  });

  it("not by a session token", async () => {
    const res = await signedCall(h.port, REGION, "Encrypt", encryptBody(), BOB, [
      ["X-Amz-Security-Token", "FwoGZXIvYXdzEAlice"],
    ]);
    expect(res.json.__type).toBe("UnrecognizedClientException");
  });

  it("not by members naming a principal in the body", async () => {
    for (const member of [
      "Principal",
      "principal",
      "CallerPrincipal",
      "SourceIp",
      "UserIdentity",
    ]) {
      const res = await signedCall(
        h.port,
        REGION,
        "Encrypt",
        encryptBody({ [member]: ALICE.principal }),
        BOB,
      );
      expect(res.json.__type, member).toBe("SerializationException");
    }
  });

  it("not with ALICE's grant token", async () => {
    const res = await signedCall(
      h.port,
      REGION,
      "Encrypt",
      encryptBody({ GrantTokens: [aliceGrantToken] }),
      BOB,
    );
    await expectDeniedAsBob(res);
  });

  it("not by naming ALICE's access key in a request BOB signed", async () => {
    const res = await signedCall(h.port, REGION, "Encrypt", encryptBody(), {
      accessKeyId: ALICE.accessKeyId,
      secretAccessKey: BOB.secretAccessKey,
    });
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it("not by putting BOB's access key on a request ALICE signed", async () => {
    const body = encryptBody();
    const headers = signedHeaders(h.port, REGION, "TrentService.Encrypt", body, ALICE).map(
      ([n, v]): [string, string] =>
        n === "Authorization" ? [n, v.replace(ALICE.accessKeyId, BOB.accessKeyId)] : [n, v],
    );
    const res = await rawRequest(h.port, { headers, body });
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it.each([
    ["lowercased", ALICE.accessKeyId.toLowerCase()],
    ["with a trailing space", `${ALICE.accessKeyId} `],
    ["with a zero-width space", `${ALICE.accessKeyId}\u200b`],
    ["prefixed", `x${ALICE.accessKeyId}`],
  ])("not by spelling ALICE's access key id another way (%s)", async (_what, accessKeyId) => {
    const res = await signedCall(h.port, REGION, "Encrypt", encryptBody(), {
      accessKeyId,
      secretAccessKey: ALICE.secretAccessKey,
    });
    expect(res.status).toBe(400);
    expect(res.json.__type).not.toBe(undefined);
    expect(res.headers["x-amzn-errortype"]).toMatch(/Signature|UnrecognizedClient/);
  });

  it("through the SDK too: BOB's client is BOB whatever it sends", async () => {
    const bob = h.client(BOB);
    const e = await bob
      .send(new EncryptCommand({ KeyId: aliceOnly, Plaintext: Buffer.from("x") }))
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KMSServiceException);
    expect((e as KMSServiceException).name).toBe("AccessDeniedException");
  });
});

describe("the access key lookup", () => {
  /** A server whose lookup records every id it is asked for. */
  async function recording(): Promise<{ harness: Harness; asked: string[] }> {
    const asked: string[] = [];
    const harness = await startHarness({
      credentials: (accessKeyId): ServerCredential | undefined => {
        asked.push(accessKeyId);
        return accessKeyId === ALICE.accessKeyId
          ? { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal }
          : undefined;
      },
    });
    return { harness, asked };
  }

  function request(
    port: number,
    accessKeyId: string,
    tweak: Partial<{ region: string; date: number }> = {},
  ) {
    const body = '{"NumberOfBytes":4}';
    const date = amzDate(tweak.date ?? Date.now());
    const headers: [string, string][] = [
      ["Host", `127.0.0.1:${port}`],
      ["Content-Type", "application/x-amz-json-1.1"],
      ["X-Amz-Target", "TrentService.GenerateRandom"],
      ["X-Amz-Date", date],
    ];
    const { authorization } = sign({
      headers,
      body,
      accessKeyId,
      secretAccessKey: "whatever",
      region: tweak.region ?? REGION,
      amzDate: date,
    });
    return rawRequest(port, {
      headers: [
        ...headers,
        ["Authorization", authorization],
        ["Content-Length", String(body.length)],
      ],
      body,
    });
  }

  it("is never asked about an id longer than 128 characters, nor about a malformed request", async () => {
    const { harness, asked } = await recording();
    try {
      for (const length of [129, 1000, 12_000]) {
        const res = await request(harness.port, "A".repeat(length));
        expect(res.json.__type, `${length}`).toBe("IncompleteSignatureException");
      }
      const stale = await request(harness.port, "AKIASTALE", { date: Date.now() - 3_600_000 });
      expect(stale.json.__type).toBe("InvalidSignatureException");
      const elsewhere = await request(harness.port, "AKIAELSEWHERE", { region: "us-east-1" });
      expect(elsewhere.json.__type).toBe("InvalidSignatureException");
      expect(asked).toEqual([]);
      const longest = await request(harness.port, "A".repeat(128));
      expect(longest.json.__type).toBe("UnrecognizedClientException");
      expect(asked).toEqual(["A".repeat(128)]);
    } finally {
      await harness.close();
    }
  });

  it("sees only ids of 1–128 characters without '/' or ',', whatever the header says", async () => {
    const { harness, asked } = await recording();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 200 }),
          async (accessKeyId) => {
            const res = await request(harness.port, accessKeyId);
            expect(res.status).toBe(400);
          },
        ),
        { numRuns: 80 },
      );
      expect(asked.length).toBeGreaterThan(0);
      for (const id of asked) {
        expect(id.length).toBeGreaterThan(0);
        expect(id.length).toBeLessThanOrEqual(128);
        expect(id).not.toMatch(/[/,]/);
      }
    } finally {
      await harness.close();
    }
  });

  it("refuses, when the handler is made, a configured id that no request could name", async () => {
    const kms = await createKms({ region: REGION, account: "111122223333" });
    try {
      const credential = { secretAccessKey: "s".repeat(40), principal: ALICE.principal };
      expect(() =>
        createKmsRequestHandler({ kms, credentials: { ["A".repeat(129)]: credential } }),
      ).toThrow(ValidationError);
      expect(() => createKmsRequestHandler({ kms, credentials: { "AKIA,X": credential } })).toThrow(
        ValidationError,
      );
      expect(() =>
        createKmsRequestHandler({ kms, credentials: { ["A".repeat(128)]: credential } }),
      ).not.toThrow();
    } finally {
      await kms.close();
    }
  });
});
