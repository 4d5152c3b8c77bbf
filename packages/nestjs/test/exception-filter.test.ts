import { AccessDeniedError, createKms, type KmsError } from "@kms/core";
import { kmsErrorProblem } from "@kms/nestjs";
import { describe, expect, it } from "vitest";

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
