/**
 * GetKeyLastUsage through the real KMSClient of @aws-sdk/client-kms: the response members and
 * types an SDK user sees, and the ids that tie an answer to its audit event and its request.
 */
import {
  CreateKeyCommand,
  EncryptCommand,
  GetKeyLastUsageCommand,
  type KMSClient,
  KMSServiceException,
  NotFoundException,
} from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, BOB, type Harness, startHarness } from "./support/harness.ts";

let h: Harness;
let alice: KMSClient;
let bob: KMSClient;
beforeAll(async () => {
  h = await startHarness();
  alice = h.client(ALICE);
  bob = h.client(BOB);
});
afterAll(async () => {
  await h.close();
});

async function createKey(policy?: string): Promise<{ keyId: string; created: Date }> {
  const { KeyMetadata } = await alice.send(
    new CreateKeyCommand(policy === undefined ? {} : { Policy: policy }),
  );
  return { keyId: KeyMetadata!.KeyId!, created: KeyMetadata!.CreationDate! };
}

describe("GetKeyLastUsage", () => {
  it("an unused key: an empty KeyLastUsage, tracked since the key's creation", async () => {
    const { keyId, created } = await createKey();
    const res = await alice.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(res.KeyId).toBe(`arn:aws:kms:eu-test-1:111122223333:key/${keyId}`);
    // AWS: "If the key has not been used since tracking began, this response element is an
    // empty object" — no Operation, Timestamp or ids.
    expect(res.KeyLastUsage).toEqual({});
    expect(res.KeyCreationDate).toBeInstanceOf(Date);
    expect(res.KeyCreationDate).toEqual(created);
    // The trail is older than the key, so tracking starts at the key's creation.
    expect(res.TrackingStartDate).toEqual(created);
  });

  it("after Encrypt: the operation, its time, its audit event id and its request id", async () => {
    const { keyId, created } = await createKey();
    const encrypted = await alice.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x") }),
    );
    const requestId = encrypted.$metadata.requestId;
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    const sent = h.responses.find((r) => r.headers["x-amzn-RequestId"] === requestId);
    expect(sent, "the Encrypt response carried that x-amzn-RequestId").toBeDefined();
    const event = (await h.kms.audit.events()).find(
      (e) => e.eventName === "Encrypt" && e.requestID === requestId,
    );
    expect(event).toBeDefined();

    const res = await alice.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    expect(res.KeyLastUsage).toEqual({
      Operation: "Encrypt",
      Timestamp: new Date(event!.eventTime),
      CloudTrailEventId: event!.eventID,
      KmsRequestId: requestId,
    });
    expect(res.KeyLastUsage!.Timestamp).toBeInstanceOf(Date);
    expect(res.KeyCreationDate).toEqual(created);
    expect(res.TrackingStartDate).toEqual(created);
  });

  it("answers AccessDeniedException to a principal the key policy does not allow", async () => {
    const policy = JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        { Effect: "Allow", Principal: { AWS: ALICE.principal }, Action: "kms:*", Resource: "*" },
        {
          Effect: "Allow",
          Principal: { AWS: BOB.principal },
          Action: ["kms:DescribeKey", "kms:Encrypt"],
          Resource: "*",
        },
      ],
    });
    const { keyId } = await createKey(policy);
    const denied = bob.send(new GetKeyLastUsageCommand({ KeyId: keyId }));
    // AWS KMS answers AccessDeniedException, which the SDK has no class for.
    await expect(denied).rejects.toBeInstanceOf(KMSServiceException);
    await expect(denied).rejects.toMatchObject({ name: "AccessDeniedException" });
    await expect(alice.send(new GetKeyLastUsageCommand({ KeyId: keyId }))).resolves.toBeDefined();
  });

  it("answers NotFoundException for a key that does not exist", async () => {
    const missing = alice.send(
      new GetKeyLastUsageCommand({ KeyId: "1234abcd-12ab-34cd-56ef-1234567890ab" }),
    );
    await expect(missing).rejects.toBeInstanceOf(NotFoundException);
    await expect(missing).rejects.toMatchObject({ name: "NotFoundException" });
  });
});
