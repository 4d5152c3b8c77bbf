/**
 * How an event is classified (readOnly, managementEvent, responseElements), as CloudTrail
 * classifies the KMS operation: DeriveSharedSecret is recorded like Sign, Verify and Decrypt
 * (AWS KMS Developer Guide, "Logging AWS KMS API calls with AWS CloudTrail").
 */
import { generateKeyPairSync } from "node:crypto";
import { type AuditEvent, createKms, MemoryAuditSink } from "@kms/core";
import { describe, expect, test } from "vitest";

function last(sink: MemoryAuditSink, eventName: string): AuditEvent {
  const found = sink.events.filter((e) => e.eventName === eventName).at(-1);
  if (found === undefined) throw new Error(`no ${eventName} event`);
  return found;
}

const classification = (e: AuditEvent) => ({
  readOnly: e.readOnly,
  managementEvent: e.managementEvent,
  responseElements: e.responseElements,
});

describe("DeriveSharedSecret", () => {
  test("is a read-only event, like Sign and Decrypt, with no response elements", async () => {
    const sink = new MemoryAuditSink();
    const kms = await createKms({ audit: sink });
    const agreement = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }))
      .keyMetadata.keyId;
    const peer = generateKeyPairSync("ec", { namedCurve: "P-256" });
    await kms.deriveSharedSecret({
      keyId: agreement,
      keyAgreementAlgorithm: "ECDH",
      publicKey: new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" })),
    });
    const signing = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata.keyId;
    await kms.sign({
      keyId: signing,
      message: new Uint8Array(8),
      signingAlgorithm: "ECDSA_SHA_256",
    });

    const derived = last(sink, "DeriveSharedSecret");
    expect(classification(derived)).toStrictEqual({
      readOnly: true,
      managementEvent: last(sink, "Sign").managementEvent,
      responseElements: null,
    });
    expect(classification(derived)).toStrictEqual(classification(last(sink, "Sign")));
    // A call that changes a key stays a write.
    expect(last(sink, "CreateKey").readOnly).toBe(false);
    // Every AWS KMS call is a management event in CloudTrail, reads and writes alike.
    for (const event of sink.events) {
      expect(event.managementEvent).toBe(true);
      expect(event.eventCategory).toBe("Management");
    }
  });
});
