/**
 * One correctly signed request, built by the independent test signer of raw-http.ts, so that a
 * body of any shape gets past authentication and reaches the operation layer.
 */
import { ALICE } from "./harness.ts";
import { amzDate, type HeaderList, type RawResponse, rawRequest, sign } from "./raw-http.ts";

export interface Who {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** Headers of a request signed now by `who`, ending with Authorization and Content-Length. */
export function signedHeaders(
  port: number,
  region: string,
  target: string,
  body: string | Buffer,
  who: Who = ALICE,
  extra: HeaderList = [],
): [string, string][] {
  const date = amzDate(Date.now());
  const headers: [string, string][] = [
    ["Host", `127.0.0.1:${port}`],
    ["Content-Type", "application/x-amz-json-1.1"],
    ["X-Amz-Target", target],
    ["X-Amz-Date", date],
    ...extra.map(([n, v]) => [n, v] as [string, string]),
  ];
  const { authorization } = sign({
    headers,
    body,
    accessKeyId: who.accessKeyId,
    secretAccessKey: who.secretAccessKey,
    region,
    amzDate: date,
  });
  return [
    ...headers,
    ["Authorization", authorization],
    ["Content-Length", String(Buffer.byteLength(body))],
  ];
}

/** Sends `body` to `TrentService.<operation>`, signed by `who`, on a fresh connection. */
export function signedCall(
  port: number,
  region: string,
  operation: string,
  body: string | Buffer,
  who: Who = ALICE,
  extra: HeaderList = [],
): Promise<RawResponse> {
  return rawRequest(port, {
    headers: signedHeaders(port, region, `TrentService.${operation}`, body, who, extra),
    body,
  });
}
