import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { KMSClient } from "@aws-sdk/client-kms";
import { createKms, type Kms, type KmsOptions } from "@kms/core";
import { createKmsRequestHandler, type KmsServerOptions } from "../../src/index.ts";

export const REGION = "eu-test-1";

export const ALICE = {
  accessKeyId: "AKIAALICE0000000001",
  secretAccessKey: "alice/Secret+Key0000000000000000000000001",
  principal: "arn:aws:iam::111122223333:user/alice",
} as const;
export const BOB = {
  accessKeyId: "AKIABOB000000000002",
  secretAccessKey: "bob/Secret+Key00000000000000000000000002",
  principal: "arn:aws:iam::111122223333:user/bob",
} as const;

export interface RecordedResponse {
  readonly status: number;
  readonly headers: http.OutgoingHttpHeaders;
  readonly body: string;
}

export interface Harness {
  readonly kms: Kms;
  readonly port: number;
  readonly endpoint: string;
  /** Every response the server wrote, in order. */
  readonly responses: RecordedResponse[];
  client(who?: { accessKeyId: string; secretAccessKey: string }): KMSClient;
  close(): Promise<void>;
}

/**
 * A Kms behind createKmsRequestHandler on 127.0.0.1:0, with ALICE and BOB as credentials. The
 * handler sits on a plain node server that records each response body, so tests can scan what
 * left the server.
 */
export async function startHarness(
  options: Partial<KmsServerOptions> = {},
  kmsOptions: KmsOptions = {},
): Promise<Harness> {
  const kms =
    options.kms ?? (await createKms({ region: REGION, account: "111122223333", ...kmsOptions }));
  const handler = createKmsRequestHandler({
    kms,
    credentials: {
      [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
      [BOB.accessKeyId]: { secretAccessKey: BOB.secretAccessKey, principal: BOB.principal },
    },
    ...options,
  });
  const responses: RecordedResponse[] = [];
  const server = http.createServer((req, res) => {
    let headers: http.OutgoingHttpHeaders = {};
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => http.ServerResponse;
    res.writeHead = ((...args: unknown[]) => {
      headers = (args.find((a) => typeof a === "object" && a !== null) ?? {}) as typeof headers;
      return writeHead(...args);
    }) as typeof res.writeHead;
    const end = res.end.bind(res) as (chunk?: unknown) => http.ServerResponse;
    res.end = ((chunk?: unknown) => {
      responses.push({
        status: res.statusCode,
        headers,
        body: typeof chunk === "string" ? chunk : Buffer.isBuffer(chunk) ? chunk.toString() : "",
      });
      return end(chunk);
    }) as typeof res.end;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://127.0.0.1:${port}`;
  const clients: KMSClient[] = [];
  return {
    kms,
    port,
    endpoint,
    responses,
    client(who = ALICE) {
      const client = new KMSClient({
        endpoint,
        region: REGION,
        credentials: { accessKeyId: who.accessKeyId, secretAccessKey: who.secretAccessKey },
        maxAttempts: 1,
      });
      clients.push(client);
      return client;
    },
    async close() {
      for (const c of clients) c.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await kms.close();
    },
  };
}
