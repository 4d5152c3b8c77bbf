/**
 * Hand-built requests: a raw HTTP/1.1 client (exact header names, duplicates, chunked bodies)
 * and a SigV4 signer written from the specification, independently of src/. The signer is
 * checked against the AWS SDK's own signatures in sigv4.test.ts before it is trusted.
 */
import { createHash, createHmac } from "node:crypto";
import * as net from "node:net";

export type HeaderList = readonly (readonly [string, string])[];

export interface RawResponse {
  readonly status: number;
  /** Lowercased names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  readonly json: { __type?: string; message?: string } & Record<string, unknown>;
}

function parseResponse(raw: Buffer): RawResponse {
  const split = raw.indexOf("\r\n\r\n");
  if (split < 0) throw new Error(`incomplete response: ${raw.toString()}`);
  const [statusLine, ...lines] = raw.subarray(0, split).toString("latin1").split("\r\n");
  const status = Number(statusLine!.split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers["content-length"] ?? "0");
  const body = raw.subarray(split + 4, split + 4 + length).toString("utf8");
  let json: RawResponse["json"] = {};
  try {
    json = JSON.parse(body) as RawResponse["json"];
  } catch {
    // not JSON: left empty
  }
  return { status, headers, body, json };
}

/** The response, once `raw` holds all of it. */
function complete(raw: Buffer): boolean {
  const split = raw.indexOf("\r\n\r\n");
  if (split < 0) return false;
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(raw.subarray(0, split).toString("latin1"));
  return raw.length >= split + 4 + Number(length?.[1] ?? 0);
}

/**
 * Sends one request on a fresh connection and reads the response, then closes the connection.
 * `chunks`: send the body with Transfer-Encoding: chunked, one chunk at a time, stopping early
 * once the server has answered; `sent` then tells how many body bytes went out.
 */
export function rawRequest(
  port: number,
  request: {
    readonly method?: string;
    readonly target?: string;
    readonly headers: HeaderList;
    readonly body?: string | Buffer;
    readonly chunks?: () => Iterable<Buffer>;
    /** Keep the connection open after the response until the server closes it. */
    readonly waitForClose?: boolean;
  },
): Promise<RawResponse & { sent: number; answeredAt: number; closedAt: number }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    let sent = 0;
    let answered = false;
    let answeredAt = 0;
    const finish = (): void => {
      try {
        resolve({
          ...parseResponse(Buffer.concat(received)),
          sent,
          answeredAt,
          closedAt: Date.now(),
        });
      } catch (e) {
        reject(e);
      }
    };
    socket.on("data", (d) => {
      received.push(d);
      if (!answered && complete(Buffer.concat(received))) {
        answered = true;
        answeredAt = Date.now();
        if (request.waitForClose === true) return;
        socket.destroy();
        finish();
      }
    });
    socket.on("error", (e) => {
      if (!answered) reject(e);
    });
    socket.on("close", () => {
      if (!answered || request.waitForClose === true) finish();
    });
    socket.on("connect", async () => {
      const head = [`${request.method ?? "POST"} ${request.target ?? "/"} HTTP/1.1`];
      for (const [name, value] of request.headers) head.push(`${name}: ${value}`);
      head.push("", "");
      socket.write(head.join("\r\n"));
      if (request.chunks !== undefined) {
        for (const chunk of request.chunks()) {
          if (answered || socket.destroyed) break;
          const ok = socket.write(`${chunk.length.toString(16)}\r\n`);
          socket.write(chunk);
          socket.write("\r\n");
          sent += chunk.length;
          if (!ok) await new Promise((r) => setTimeout(r, 5));
          else await new Promise((r) => setImmediate(r));
        }
        if (!answered && !socket.destroyed) socket.write("0\r\n\r\n");
      } else if (request.body !== undefined) {
        socket.write(request.body);
        sent = Buffer.byteLength(request.body);
      }
    });
  });
}

export interface SigningInput {
  readonly method?: string;
  readonly path?: string;
  /** Already-canonical query (sorted, encoded); default empty. */
  readonly canonicalQuery?: string;
  readonly headers: HeaderList;
  readonly body: string | Buffer;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly service?: string;
  readonly amzDate: string;
  /** Which headers to sign (lowercase); default every header given. */
  readonly signedHeaders?: readonly string[];
  /** Default: the hex SHA-256 of body. */
  readonly payloadHash?: string;
  /** Default: the date part of amzDate. */
  readonly scopeDate?: string;
}

export interface Signed {
  readonly authorization: string;
  readonly signature: string;
  readonly canonicalRequest: string;
  readonly stringToSign: string;
}

const sha256 = (data: string | Buffer): string => createHash("sha256").update(data).digest("hex");
const hmac = (key: string | Buffer, data: string): Buffer =>
  createHmac("sha256", key).update(data).digest();

/** SigV4 per docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html. */
export function sign(input: SigningInput): Signed {
  const values = new Map<string, string[]>();
  for (const [name, value] of input.headers) {
    const key = name.toLowerCase();
    values.set(key, [...(values.get(key) ?? []), value.trim().replace(/\s+/g, " ")]);
  }
  const signed = [...(input.signedHeaders ?? values.keys())].sort();
  const canonicalRequest = [
    input.method ?? "POST",
    input.path ?? "/",
    input.canonicalQuery ?? "",
    ...signed.map((name) => `${name}:${(values.get(name) ?? []).join(",")}`),
    "",
    signed.join(";"),
    input.payloadHash ?? sha256(input.body),
  ].join("\n");
  const date = input.scopeDate ?? input.amzDate.slice(0, 8);
  const service = input.service ?? "kms";
  const scope = `${date}/${input.region}/${service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", input.amzDate, scope, sha256(canonicalRequest)].join(
    "\n",
  );
  const kDate = hmac(`AWS4${input.secretAccessKey}`, date);
  const key = hmac(hmac(hmac(kDate, input.region), service), "aws4_request");
  const signature = hmac(key, stringToSign).toString("hex");
  return {
    authorization:
      `AWS4-HMAC-SHA256 Credential=${input.accessKeyId}/${scope}, ` +
      `SignedHeaders=${signed.join(";")}, Signature=${signature}`,
    signature,
    canonicalRequest,
    stringToSign,
  };
}

export function amzDate(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}
