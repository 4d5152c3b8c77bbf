/**
 * `onRefused`: the requests the Kms never sees, and so never audits — failed signatures, unknown
 * access keys, bodies refused before the call, a credentials lookup that fails — are reported
 * once each, with who claimed to send them and what they were answered, and nothing secret.
 */
import { EncryptCommand, GenerateRandomCommand, KMSInternalException } from "@aws-sdk/client-kms";
import { afterEach, describe, expect, it } from "vitest";
import type { RefusedRequest } from "../src/index.ts";
import { ALICE, BOB, type Harness, REGION, startHarness } from "./support/harness.ts";
import { amzDate, rawRequest, sign } from "./support/raw-http.ts";
import { signedCall } from "./support/signed-call.ts";

const SECRET_PLAINTEXT = "4111 1111 1111 1111";
const PLAINTEXT_B64 = Buffer.from(SECRET_PLAINTEXT).toString("base64");

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** A harness whose refusals are collected; `expect.poll` waits for the report. */
async function reporting(
  options: Parameters<typeof startHarness>[0] = {},
): Promise<{ harness: Harness; refusals: RefusedRequest[] }> {
  const refusals: RefusedRequest[] = [];
  h = await startHarness({ ...options, onRefused: (r) => void refusals.push(r) });
  return { harness: h, refusals };
}

/** The headers of a request to `target`, before any Authorization. */
function headersFor(port: number, target = "TrentService.Encrypt"): [string, string][] {
  return [
    ["Host", `127.0.0.1:${port}`],
    ["Content-Type", "application/x-amz-json-1.1"],
    ["X-Amz-Target", target],
    ["X-Amz-Date", amzDate(Date.now())],
  ];
}

describe("onRefused", () => {
  it("reports an unsigned request, naming the operation and the peer", async () => {
    const { harness, refusals } = await reporting();
    const body = `{"KeyId":"alias/x","Plaintext":"${PLAINTEXT_B64}"}`;
    const res = await rawRequest(harness.port, {
      headers: [...headersFor(harness.port), ["Content-Length", String(body.length)]],
      body,
    });
    expect(res.json.__type).toBe("MissingAuthenticationTokenException");
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]).toEqual({
      requestId: res.headers["x-amzn-requestid"],
      code: "MissingAuthenticationTokenException",
      status: 400,
      message: res.json.message,
      operation: "Encrypt",
      sourceIp: "127.0.0.1",
    });
  });

  it("reports a wrong signature with the access key id it claimed, and no principal", async () => {
    const { harness, refusals } = await reporting();
    const body = `{"KeyId":"alias/x","Plaintext":"${PLAINTEXT_B64}"}`;
    const headers = headersFor(harness.port);
    const { authorization } = sign({
      headers,
      body,
      accessKeyId: ALICE.accessKeyId,
      secretAccessKey: "not-alice's-secret",
      region: REGION,
      amzDate: headers[3]![1],
    });
    const res = await rawRequest(harness.port, {
      headers: [...headers, ["Authorization", authorization], ["Content-Length", `${body.length}`]],
      body,
    });
    expect(res.json.__type).toBe("InvalidSignatureException");
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]).toMatchObject({
      code: "InvalidSignatureException",
      operation: "Encrypt",
      accessKeyId: ALICE.accessKeyId,
    });
    expect(refusals[0]).not.toHaveProperty("principal");
    expect(refusals[0]).not.toHaveProperty("cause");
  });

  it("reports an unknown access key, and a target that names no operation without its text", async () => {
    const { harness, refusals } = await reporting();
    const stranger = harness.client({ accessKeyId: "AKIASTRANGER", secretAccessKey: "s" });
    await expect(
      stranger.send(new GenerateRandomCommand({ NumberOfBytes: 4 })),
    ).rejects.toMatchObject({ name: "UnrecognizedClientException" });
    const res = await rawRequest(harness.port, {
      headers: [...headersFor(harness.port, "TrentService.<script>"), ["Content-Length", "2"]],
      body: "{}",
    });
    expect(res.json.__type).toBe("UnknownOperationException");
    await expect.poll(() => refusals.length).toBe(2);
    expect(refusals[0]).toMatchObject({
      code: "UnrecognizedClientException",
      operation: "GenerateRandom",
      accessKeyId: "AKIASTRANGER",
    });
    expect(refusals[1]).toMatchObject({ code: "UnknownOperationException" });
    expect(refusals[1]).not.toHaveProperty("operation");
  });

  it("reports a signed body refused before the call with the verified principal, and no plaintext", async () => {
    const { harness, refusals } = await reporting();
    const res = await signedCall(
      harness.port,
      REGION,
      "Encrypt",
      `{"KeyId":"alias/x","Plaintext":"${PLAINTEXT_B64}","KeyID":"typo"}`,
      BOB,
    );
    expect(res.json.__type).toBe("SerializationException");
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]).toMatchObject({
      code: "SerializationException",
      operation: "Encrypt",
      accessKeyId: BOB.accessKeyId,
      principal: BOB.principal,
    });
    const text = JSON.stringify(refusals);
    for (const secret of [PLAINTEXT_B64, SECRET_PLAINTEXT, BOB.secretAccessKey, "Signature="]) {
      expect(text).not.toContain(secret);
    }
  });

  it("does not report calls that reached the Kms, served or failed: the audit trail has them", async () => {
    const { harness, refusals } = await reporting();
    const alice = harness.client(ALICE);
    await alice.send(new GenerateRandomCommand({ NumberOfBytes: 4 }));
    await expect(
      alice.send(new EncryptCommand({ KeyId: "alias/missing", Plaintext: Buffer.from("x") })),
    ).rejects.toMatchObject({ name: "NotFoundException" });
    // A refusal after these, so that a report of them would have arrived first.
    await rawRequest(harness.port, {
      headers: [...headersFor(harness.port), ["Content-Length", "2"]],
      body: "{}",
    });
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]?.code).toBe("MissingAuthenticationTokenException");
  });

  it("reports a failing credentials lookup with its cause, which the client is not told", async () => {
    const failure = new Error("directory ldap://dir.internal unreachable");
    const { harness, refusals } = await reporting({
      credentials: () => Promise.reject(failure),
    });
    const e = await harness
      .client(ALICE)
      .send(new GenerateRandomCommand({ NumberOfBytes: 4 }))
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KMSInternalException);
    expect((e as Error).message).not.toContain("directory");
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]).toMatchObject({
      code: "KMSInternalException",
      status: 500,
      accessKeyId: ALICE.accessKeyId,
    });
    expect((refusals[0]!.cause as Error).cause).toBe(failure);
  });

  it("keeps answering when the hook throws or rejects", async () => {
    let calls = 0;
    h = await startHarness({
      onRefused: (r) => {
        calls++;
        if (r.code === "MissingAuthenticationTokenException") throw new Error("sync");
        return Promise.reject(new Error("async"));
      },
    });
    const port = h.port;
    const unsigned = () =>
      rawRequest(port, {
        headers: [...headersFor(port), ["Content-Length", "2"]],
        body: "{}",
      });
    expect((await unsigned()).json.__type).toBe("MissingAuthenticationTokenException");
    const stranger = h.client({ accessKeyId: "AKIASTRANGER", secretAccessKey: "s" });
    await expect(
      stranger.send(new GenerateRandomCommand({ NumberOfBytes: 4 })),
    ).rejects.toMatchObject({ name: "UnrecognizedClientException" });
    expect(calls).toBe(2);
    // Vitest fails the run on an unhandled rejection; the server also still serves.
    const random = await h.client(ALICE).send(new GenerateRandomCommand({ NumberOfBytes: 4 }));
    expect(random.Plaintext).toHaveLength(4);
  });
});
