/**
 * An error thrown after the response has started (a handler that wrote through `@Res()`, or
 * flushed its head) can no longer be answered: status and headers are gone. The filters must
 * then abort the exchange, so the client cannot take the truncated body for a complete one (no
 * terminating chunk), and log the error once; an error before anything left is answered as
 * usual. Checked on both platforms the package supports, over a raw socket to see the bytes.
 */
import "reflect-metadata";
import { get } from "node:http";
import { connect } from "node:net";
import { Readable } from "node:stream";
import { createKms, KmsInternalError, NotFoundError } from "@kms/core";
import {
  Controller,
  Get,
  type INestApplication,
  type LoggerService,
  Res,
  StreamableFile,
} from "@nestjs/common";
import { FastifyAdapter } from "@nestjs/platform-fastify";
import { Test } from "@nestjs/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, ProblemDetailsException } from "../src/index.ts";
import { listen } from "./helpers.ts";

const SECRET_VALUE = "078-05-1120";

/** Records what Nest logs at error level. */
class RecordingLogger implements LoggerService {
  readonly errors: string[] = [];
  log(): void {}
  warn(): void {}
  error(message: unknown, ...rest: unknown[]): void {
    this.errors.push([message, ...rest].map(String).join("\n"));
  }
}

/** The Node response under either platform's (Fastify wraps it in `.raw`). */
interface NodeWritable {
  writeHead(status: number, headers: Record<string, string>): unknown;
  write(chunk: string): boolean;
  end(chunk: string): unknown;
  flushHeaders(): void;
}
type PlatformResponse = NodeWritable & { raw?: NodeWritable };
const nodeOf = (res: PlatformResponse): NodeWritable => res.raw ?? res;

/** Writes the head and a first chunk of a chunked body, then lets the next write go out. */
async function startBody(res: PlatformResponse): Promise<void> {
  const node = nodeOf(res);
  node.writeHead(200, { "content-type": "text/plain" });
  node.write("partial body ");
  await new Promise((resolve) => setImmediate(resolve));
}

@Controller()
class StreamingController {
  @Get("internal-after-write")
  async internalAfterWrite(@Res() res: PlatformResponse): Promise<never> {
    await startBody(res);
    // A driver's message can quote a statement's values: the log must not carry it.
    const cause = Object.assign(new Error(`UNIQUE constraint failed: ssn = '${SECRET_VALUE}'`), {
      name: "SqliteError",
      code: "SQLITE_CONSTRAINT",
    });
    throw new KmsInternalError("the field engine could not store a value", { cause });
  }

  @Get("client-fault-after-write")
  async clientFaultAfterWrite(@Res() res: PlatformResponse): Promise<never> {
    await startBody(res);
    throw new NotFoundError("alias/reports is not a known alias");
  }

  @Get("after-flushed-head")
  async afterFlushedHead(@Res() res: PlatformResponse): Promise<never> {
    const node = nodeOf(res);
    node.writeHead(200, { "content-type": "text/plain" });
    node.flushHeaders();
    await new Promise((resolve) => setImmediate(resolve));
    throw new NotFoundError("alias/flushed is not a known alias");
  }

  @Get("problem-after-write")
  async problemAfterWrite(@Res() res: PlatformResponse): Promise<never> {
    await startBody(res);
    throw new ProblemDetailsException(
      {
        type: "https://kms.dev/problems/test/late",
        title: "Late",
        status: 409,
        detail: "too late",
      },
      { "retry-after": "1" },
    );
  }

  @Get("after-end")
  afterEnd(@Res() res: PlatformResponse): never {
    const node = nodeOf(res);
    node.writeHead(200, { "content-type": "text/plain" });
    node.end("whole body");
    throw new KmsInternalError("the audit sink could not record the read");
  }

  // Nest pipes the stream itself and its StreamableFile error handler, not an exception
  // filter, deals with a failure midway.
  @Get("failing-stream")
  failingStream(): StreamableFile {
    async function* chunks(): AsyncGenerator<string> {
      yield "partial body ";
      await new Promise((resolve) => setImmediate(resolve));
      throw new KmsInternalError("the field engine could not decrypt a row");
    }
    return new StreamableFile(Readable.from(chunks()), { type: "text/plain" });
  }

  @Get("before-write")
  beforeWrite(@Res() _res: PlatformResponse): never {
    throw new NotFoundError("alias/early is not a known alias");
  }

  @Get("problem-before-write")
  problemBeforeWrite(@Res() _res: PlatformResponse): never {
    throw new ProblemDetailsException(
      {
        type: "https://kms.dev/problems/test/early",
        title: "Early",
        status: 409,
        detail: "too early",
      },
      { "retry-after": "1" },
    );
  }
}

interface RawExchange {
  /** Everything the server sent before it closed the connection. */
  readonly text: string;
  readonly head: string;
  readonly body: string;
}

/**
 * One HTTP/1.1 request with `Connection: close`, read until the server closes the socket: a
 * complete chunked answer ends with the terminating chunk, an aborted one stops short of it.
 */
function exchange(origin: string, path: string): Promise<RawExchange> {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      resolve({
        text,
        head: split === -1 ? text : text.slice(0, split),
        body: split === -1 ? "" : text.slice(split + 4),
      });
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\n\r\n`);
  });
}

/** What Node's own HTTP client makes of the answer: a complete message, or an error. */
function nodeClientGet(
  origin: string,
  path: string,
): Promise<{ complete: boolean; error?: string }> {
  return new Promise((resolve) => {
    get(`${origin}${path}`, { agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ complete: res.complete }));
      res.on("error", (error) => resolve({ complete: res.complete, error: error.message }));
    }).on("error", (error) => resolve({ complete: false, error: error.message }));
  });
}

/** What the chunked body ends with when the server finished it. */
const LAST_CHUNK = /(^|\r\n)0\r\n\r\n$/;

const platforms = [
  { name: "Express", adapter: (): FastifyAdapter | undefined => undefined },
  { name: "Fastify", adapter: (): FastifyAdapter | undefined => new FastifyAdapter() },
];

describe.each(platforms)("filters after the response started ($name)", ({ adapter }) => {
  let app: INestApplication;
  let origin: string;
  const logger = new RecordingLogger();

  beforeAll(async () => {
    const kms = await createKms({ account: "111122223333" });
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ kms, mapKmsErrors: true, closeOnDestroy: true })],
      controllers: [StreamingController],
    }).compile();
    const platform = adapter();
    app =
      platform === undefined
        ? moduleRef.createNestApplication({ logger })
        : moduleRef.createNestApplication(platform, { logger });
    origin = await listen(app);
  });
  afterAll(async () => {
    await app.close();
  });

  /** Runs one exchange and returns it with what was logged meanwhile. */
  async function logged(path: string): Promise<{ res: RawExchange; lines: string[] }> {
    const before = logger.errors.length;
    const res = await exchange(origin, path);
    // The filter runs as the handler's promise settles, which can be after the socket closed.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { res, lines: logger.errors.slice(before) };
  }

  it("aborts a chunked body after a KMS internal fault and logs the fault once, without the driver's message", async () => {
    const { res, lines } = await logged("/internal-after-write");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.head.toLowerCase()).toContain("transfer-encoding: chunked");
    expect(res.body).toContain("partial body ");
    expect(res.body).not.toMatch(LAST_CHUNK);
    expect(res.text).not.toContain("problem+json");

    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("the field engine could not store a value");
    expect(lines[0]).toContain(
      "caused by SqliteError (code SQLITE_CONSTRAINT; message not logged)",
    );
    expect(lines[0]).not.toContain(SECRET_VALUE);
    expect(lines[0]).not.toContain("headers after they are sent");
  });

  it("makes Node's HTTP client report the truncated response as aborted, not complete", async () => {
    const seen = await nodeClientGet(origin, "/internal-after-write");
    expect(seen.complete).toBe(false);
    expect(seen.error).toBe("aborted");
  });

  it("aborts after a client fault, which the client never hears of, and logs it once", async () => {
    const { res, lines } = await logged("/client-fault-after-write");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.body).toContain("partial body ");
    expect(res.body).not.toMatch(LAST_CHUNK);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("NotFoundError: alias/reports is not a known alias");
    expect(lines[0]).not.toContain("headers after they are sent");
  });

  it("aborts when only the head was flushed", async () => {
    const { res, lines } = await logged("/after-flushed-head");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.body).not.toMatch(LAST_CHUNK);
    expect(res.text).not.toContain("problem+json");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("alias/flushed is not a known alias");
  });

  it("aborts after a ProblemDetailsException and logs its problem once", async () => {
    const { res, lines } = await logged("/problem-after-write");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.head.toLowerCase()).not.toContain("retry-after");
    expect(res.body).toContain("partial body ");
    expect(res.body).not.toMatch(LAST_CHUNK);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("https://kms.dev/problems/test/late");
    expect(lines[0]).toContain("too late");
    expect(lines[0]).not.toContain("headers after they are sent");
  });

  it("leaves a response the handler had ended whole, and logs the error once", async () => {
    const { res, lines } = await logged("/after-end");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.body).toContain("whole body");
    expect(res.body).toMatch(/whole body$|0\r\n\r\n$/);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("after the response had been sent");
    expect(lines[0]).toContain("the audit sink could not record the read");
  });

  it("aborts a StreamableFile whose stream fails midway (Nest's own handling)", async () => {
    const { res } = await logged("/failing-stream");
    expect(res.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(res.body).toContain("partial body ");
    expect(res.body).not.toMatch(LAST_CHUNK);
  });

  it("still answers a KMS error thrown before anything was written as problem+json", async () => {
    const { res, lines } = await logged("/before-write");
    expect(res.head).toMatch(/^HTTP\/1\.1 404 /);
    expect(res.head.toLowerCase()).toContain("content-type: application/problem+json");
    expect(res.text).toContain('"code":"NotFoundException"');
    // A client fault answered in full is the client's to read, not the operator's.
    expect(lines).toHaveLength(0);
  });

  it("still answers a ProblemDetailsException thrown before anything was written, with its headers", async () => {
    const { res, lines } = await logged("/problem-before-write");
    expect(res.head).toMatch(/^HTTP\/1\.1 409 /);
    expect(res.head.toLowerCase()).toContain("content-type: application/problem+json");
    expect(res.head.toLowerCase()).toContain("retry-after: 1");
    expect(res.text).toContain("https://kms.dev/problems/test/early");
    expect(lines).toHaveLength(0);
  });
});
