/**
 * A server listening on `::` (what `listen(port)` does) is dual-stack: node reports an IPv4
 * client as `::ffff:a.b.c.d`. The audit trail, `onRefused` and `aws:SourceIp` get `a.b.c.d`, as
 * AWS records an IPv4 caller, whichever socket the server listens on.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { GenerateRandomCommand, KMSClient } from "@aws-sdk/client-kms";
import { createKms, type Kms } from "@kms/core";
import { afterEach, describe, expect, it } from "vitest";
import { createKmsRequestHandler, type RefusedRequest } from "../src/index.ts";
import { ALICE, REGION } from "./support/harness.ts";

interface DualStack {
  readonly kms: Kms;
  readonly port: number;
  readonly refusals: RefusedRequest[];
  close(): Promise<void>;
}

let open: DualStack | undefined;
afterEach(async () => {
  await open?.close();
  open = undefined;
});

async function listenOnAllAddresses(): Promise<DualStack> {
  const kms = await createKms({ region: REGION, account: "111122223333" });
  const refusals: RefusedRequest[] = [];
  const handler = createKmsRequestHandler({
    kms,
    credentials: {
      [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
    },
    onRefused: (refusal) => void refusals.push(refusal),
  });
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "::", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    kms,
    port,
    refusals,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await kms.close();
    },
  };
}

function clientOf(
  host: string,
  port: number,
  secretAccessKey: string = ALICE.secretAccessKey,
): KMSClient {
  return new KMSClient({
    endpoint: `http://${host}:${port}`,
    region: REGION,
    credentials: { accessKeyId: ALICE.accessKeyId, secretAccessKey },
    maxAttempts: 1,
  });
}

describe("a dual-stack listener", () => {
  it("records an IPv4 client's call under its IPv4 address", async () => {
    open = await listenOnAllAddresses();
    const client = clientOf("127.0.0.1", open.port);
    const answer = await client.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
    client.destroy();
    const event = (await open.kms.audit.events()).find(
      (e) => e.requestID === answer.$metadata.requestId,
    );
    expect(event?.sourceIPAddress).toBe("127.0.0.1");
  });

  it("reports an IPv4 client's refused request under its IPv4 address", async () => {
    open = await listenOnAllAddresses();
    const client = clientOf("127.0.0.1", open.port, "not-alice's-secret");
    await expect(client.send(new GenerateRandomCommand({ NumberOfBytes: 8 }))).rejects.toThrow();
    client.destroy();
    await expect.poll(() => open?.refusals.length).toBe(1);
    expect(open.refusals[0]?.sourceIp).toBe("127.0.0.1");
  });

  it("keeps an IPv6 client's address as it is", async () => {
    open = await listenOnAllAddresses();
    const client = clientOf("[::1]", open.port);
    const answer = await client.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
    client.destroy();
    const event = (await open.kms.audit.events()).find(
      (e) => e.requestID === answer.$metadata.requestId,
    );
    expect(event?.sourceIPAddress).toBe("::1");
  });
});
