// The README example, run as written against @kms/server (the KMSClient is given its endpoint
// and credentials instead of AWS's), so the documentation cannot rot.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { KMSClient } from "@aws-sdk/client-kms";
import {
  createKms,
  decryptMessage,
  encryptMessage,
  FieldEncryptionEngine,
  type Kms,
  KmsKeyring,
  MemoryDataKeyStore,
} from "@kms/core";
import { createKmsSigner, createKmsVerifier } from "@kms/http-signatures";
import { createKmsServer } from "@kms/server";
import { readmeDrift } from "@kms/tooling/readme";
import { afterAll, beforeAll, expect, it } from "vitest";
import { awsKms } from "../src/index.ts";

const ACCESS_KEY_ID = "AKIAREADME0000000001";
const SECRET = "readme-secret-0123456789abcdef";

let local: Kms;
let server: Server;
let endpoint: string;

beforeAll(async () => {
  local = await createKms({ region: "eu-west-1" });
  for (const [aliasName, options] of [
    ["alias/app-fields", {}],
    ["alias/app-messages", {}],
    ["alias/webhooks", { keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }],
  ] as const) {
    const targetKeyId = (await local.createKey(options)).keyMetadata.keyId;
    await local.createAlias({ aliasName, targetKeyId });
  }
  server = createKmsServer({
    kms: local,
    credentials: {
      [ACCESS_KEY_ID]: {
        secretAccessKey: SECRET,
        principal: `arn:aws:iam::${local.identity.account}:role/app`,
      },
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await local.close();
});

it("runs the README example through a real KMSClient", async () => {
  const kms = awsKms(
    new KMSClient({
      region: "eu-west-1",
      endpoint,
      credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET },
    }),
  );

  // Field encryption: data keys generated and unwrapped by AWS KMS.
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(), // a durable DataKeyStore in production
    keyId: "alias/app-fields",
  });
  const stored = await engine.encrypt(
    { model: "User", field: "ssn", context: { TenantId: "acme" } },
    { type: "string" },
    "078-05-1120",
  );

  // Envelope messages: the data key wrapped under a KMS key.
  const keyring = new KmsKeyring({ kms, keyIds: ["alias/app-messages"] });
  const message = await encryptMessage(new TextEncoder().encode("report"), { keyring });

  // HTTP signatures with an HMAC_256 key (GenerateMac / VerifyMac).
  const signer = createKmsSigner({ kms, keyId: "alias/webhooks", algorithm: "hmac-sha256" });

  // What each produced reads back through the same adapter.
  expect(
    await engine.decrypt(
      { model: "User", field: "ssn", context: { TenantId: "acme" } },
      { type: "string" },
      stored,
    ),
  ).toBe("078-05-1120");
  const opened = await decryptMessage(message, { keyring });
  expect(new TextDecoder().decode(opened.plaintext)).toBe("report");
  const base = new TextEncoder().encode('"@method": POST');
  const verifier = createKmsVerifier({ kms, keyId: "alias/webhooks", algorithm: "hmac-sha256" });
  expect(await verifier.verify(base, await signer.sign(base))).toBe(true);
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/aws",
    blocks: 1,
    adapted: [
      // The client is pointed at the local @kms/server, with its credentials, instead of AWS.
      'const kms = awsKms(new KMSClient({ region: "eu-west-1" }));',
    ],
  });
  expect(drift).toEqual([]);
});
