// The Quick start, run as written (TLS from the test fixtures, a free port, and a client that
// trusts the fixture certificate), so the documentation cannot rot.
import { readFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import {
  DecryptCommand,
  EncryptCommand,
  KMSClient,
  type KMSServiceException,
} from "@aws-sdk/client-kms";
import { createKms } from "@kms/core";
import { readmeDrift } from "@kms/tooling/readme";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { createKmsServer } from "../src/index.ts";

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

vi.stubEnv("ORDERS_SECRET", "orders-secret-0123456789abcdef");

const kms = await createKms({ region: "eu-west-1", account: "111122223333" });
const orders = (await kms.createKey({ description: "orders" })).keyMetadata.keyId;
await kms.createAlias({ aliasName: "alias/orders", targetKeyId: orders });

const server = createKmsServer({
  kms,
  credentials: {
    AKIAORDERS0000000001: {
      secretAccessKey: process.env.ORDERS_SECRET!,
      principal: "arn:aws:iam::111122223333:user/orders-service",
    },
  },
  tls: { key: fixture("localhost-key.pem"), cert: fixture("localhost-cert.pem") },
});

let endpoint: string;
beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, resolve));
  endpoint = `https://localhost:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await kms.close();
  vi.unstubAllEnvs();
});

function client(region: string): KMSClient {
  return new KMSClient({
    endpoint,
    region, // must be the server's region (SigV4 scope)
    credentials: {
      accessKeyId: "AKIAORDERS0000000001",
      secretAccessKey: process.env.ORDERS_SECRET!,
    },
    requestHandler: { httpsAgent: new https.Agent({ ca: fixture("localhost-cert.pem") }) },
    maxAttempts: 1,
  });
}

it("encrypts and decrypts through the SDK as the access key's principal", async () => {
  const data = new TextEncoder().encode("4111 1111 1111 1111");
  const { CiphertextBlob } = await client("eu-west-1").send(
    new EncryptCommand({
      KeyId: "alias/orders",
      Plaintext: data,
      EncryptionContext: { Tenant: "acme" },
    }),
  );
  const { Plaintext } = await client("eu-west-1").send(
    new DecryptCommand({ CiphertextBlob, EncryptionContext: { Tenant: "acme" } }),
  );
  expect(new TextDecoder().decode(Plaintext)).toBe("4111 1111 1111 1111");

  const [event] = (await kms.audit.events()).filter((e) => e.eventName === "Encrypt");
  expect(event?.userIdentity.arn).toBe("arn:aws:iam::111122223333:user/orders-service");
});

it("refuses a request signed for another region", async () => {
  const error = (await client("us-east-1")
    .send(new EncryptCommand({ KeyId: "alias/orders", Plaintext: new Uint8Array([1]) }))
    .catch((e: unknown) => e)) as KMSServiceException;
  expect(error.name).toBe("InvalidSignatureException");
  expect(error.$metadata.httpStatusCode).toBe(400);
});

it("is the README's Quick start: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/server",
    blocks: 2,
    adapted: [
      // TLS files from the test fixtures, a free port, and a client per region (see above).,
      'tls: { key: readFileSync("server-key.pem"), cert: readFileSync("server-cert.pem") },',
      "server.listen(8443);",
      "const client = new KMSClient({",
      'endpoint: "https://kms.internal:8443",',
      "const { CiphertextBlob } = await client.send(",
      "const { Plaintext } = await client.send(",
    ],
  });
  expect(drift).toEqual([]);
});
