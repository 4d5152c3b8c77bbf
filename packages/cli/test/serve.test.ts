import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import * as https from "node:https";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  KMSClient,
  KMSInvalidStateException,
  ScheduleKeyDeletionCommand,
} from "@aws-sdk/client-kms";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import { runCli } from "../src/index.ts";
import { readCredentialsFile } from "../src/internal/serve-command.ts";
import { Collector, initializedWorkspace, run, type workspace } from "./helpers.ts";

const ACCESS_KEY = "AKIASERVETEST0000001";
const SECRET = "serve-test-secret-0123456789abcdef";
const PRINCIPAL = "arn:aws:iam::000000000000:role/app";
const CREDENTIALS = JSON.stringify({
  [ACCESS_KEY]: { secretAccessKey: SECRET, principal: PRINCIPAL },
});

let ws: ReturnType<typeof workspace>;
beforeEach(async () => {
  ws = await initializedWorkspace();
});
afterEach(() => ws.dispose());

function credentialsFile(content = CREDENTIALS, mode = 0o600): string {
  const path = join(ws.dir, "credentials.json");
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

async function until<T>(probe: () => T | undefined, what: string): Promise<T> {
  for (let waited = 0; waited < 10_000; waited += 10) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const LISTENING = /at (https?:\/\/\S+) \(region (\S+), account 000000000000, (\d+) access keys\)/;

/** Runs `kms serve` in-process until `stop` aborts its signal. */
async function serve(extra: readonly string[] = [], credentials?: unknown) {
  credentialsFile(credentials === undefined ? CREDENTIALS : JSON.stringify(credentials));
  const stdout = new Collector();
  const stderr = new Collector();
  const stop = new AbortController();
  let exited: number | undefined;
  const done = runCli(["serve", "--credentials", "credentials.json", "--port", "0", ...extra], {
    stdout: stdout as CliOutput,
    stderr: stderr as CliOutput,
    stdin: Readable.from([]),
    env: ws.env,
    cwd: ws.dir,
    signal: stop.signal,
  }).then((code) => {
    exited = code;
    return code;
  });
  const match = await until(() => {
    if (exited !== undefined) throw new Error(`serve exited ${exited}: ${stderr.text()}`);
    return LISTENING.exec(stdout.text()) ?? undefined;
  }, "the listening line");
  const [, url = "", region = "", keys = ""] = match;
  const client = (secretAccessKey = SECRET) =>
    new KMSClient({
      endpoint: url,
      region,
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey },
      maxAttempts: 1,
    });
  return {
    url,
    keys: Number(keys),
    client,
    stderr,
    stop: () => {
      stop.abort();
      return done;
    },
  };
}

describe("kms serve", () => {
  it("serves the data dir's KMS to the AWS SDK, as the credentials' principal, until stopped", async () => {
    const server = await serve();
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.keys).toBe(1);
    const client = server.client();
    const { KeyMetadata } = await client.send(new CreateKeyCommand({ Description: "served" }));
    const keyId = KeyMetadata?.KeyId as string;
    const context = { Tenant: "t1", tenant: "T1" };
    const encrypted = await client.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: Buffer.from("over the wire"),
        EncryptionContext: context,
      }),
    );
    const decrypted = await client.send(
      new DecryptCommand({
        CiphertextBlob: encrypted.CiphertextBlob,
        EncryptionContext: context,
      }),
    );
    expect(Buffer.from(decrypted.Plaintext ?? []).toString()).toBe("over the wire");
    await expect(
      client.send(
        new DecryptCommand({
          CiphertextBlob: encrypted.CiphertextBlob,
          EncryptionContext: { Tenant: "t1", tenant: "t1" },
        }),
      ),
    ).rejects.toMatchObject({ name: "InvalidCiphertextException" });

    // A client with the wrong secret is refused, and the server keeps serving.
    await expect(
      server.client("serve-test-secret-WRONG-0123456789").send(new CreateKeyCommand({})),
    ).rejects.toMatchObject({ $metadata: { httpStatusCode: 400 } });
    // The refusal never reached the Kms's audit trail: the operator sees it on stderr.
    expect(server.stderr.text()).toMatch(
      new RegExp(
        `kms: refused \\S+ 400 InvalidSignatureException CreateKey key "${ACCESS_KEY}" from \\S+: "`,
      ),
    );
    expect(server.stderr.text()).not.toContain("serve-test-secret");
    await client.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }));
    await expect(
      client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x") })),
    ).rejects.toBeInstanceOf(KMSInvalidStateException);

    expect(await server.stop()).toBe(0);
    // Only the refused request: calls the Kms ran, failed ones included, are in its audit trail.
    expect(server.stderr.text().trimEnd().split("\n")).toHaveLength(1);
    await expect(client.send(new CreateKeyCommand({}))).rejects.toThrow();

    // The same data dir, through the CLI: the key the SDK created is there, pending deletion,
    // and the key policy's audit trail is not needed to see it was created by the served KMS.
    const described = await run(["describe-key", keyId], { cwd: ws.dir, env: ws.env });
    expect(described.code).toBe(0);
    expect(JSON.parse(described.out)).toMatchObject({
      keyId,
      description: "served",
      keyState: "PendingDeletion",
    });
  });

  it.each([
    ["no --credentials", ["serve"], /--credentials is required/],
    ["--tls-cert alone", ["serve", "--credentials", "c", "--tls-cert", "cert.pem"], /go together/],
    ["a port out of range", ["serve", "--credentials", "c", "--port", "70000"], /not a TCP port/],
    [
      "--principal",
      ["serve", "--credentials", "c", "--principal", PRINCIPAL],
      /--principal does not apply/,
    ],
  ])("a usage error: %s", async (_name, argv, message) => {
    const result = await run(argv, { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
  });

  it.each([
    [
      "readable by others",
      CREDENTIALS,
      0o644,
      /can be read by other users \(mode 644\): chmod 600/,
    ],
    ["not JSON", `{"${ACCESS_KEY}": {"secretAccessKey": "${SECRET}"`, 0o600, /is not valid JSON/],
    ["an array", "[]", 0o600, /must hold an object/],
    ["empty", "{}", 0o600, /holds no access key/],
    [
      "a short secret",
      JSON.stringify({ [ACCESS_KEY]: { secretAccessKey: "short", principal: PRINCIPAL } }),
      0o600,
      /at least 20 characters/,
    ],
    [
      "a principal that is not an ARN",
      JSON.stringify({ [ACCESS_KEY]: { secretAccessKey: SECRET, principal: "app" } }),
      0o600,
      /must be an ARN/,
    ],
    [
      "a malformed access key id",
      JSON.stringify({ "akia lower": { secretAccessKey: SECRET, principal: PRINCIPAL } }),
      0o600,
      /access key ids are 16 to 128 upper-case letters and digits/,
    ],
  ])(
    "a credentials file %s is refused, and no secret is shown",
    async (_name, content, mode, message) => {
      credentialsFile(content, mode);
      const result = await run(["serve", "--credentials", "credentials.json", "--port", "0"], {
        cwd: ws.dir,
        env: ws.env,
      });
      expect(result.code).toBe(1);
      expect(result.err).toMatch(message);
      expect(result.err).not.toContain(SECRET);
      expect(result.err).not.toContain("short");
    },
  );

  it("warns about a principal outside the KMS's account, whom default key policies deny", async () => {
    const foreign = "arn:aws:iam::111122223333:role/elsewhere";
    const server = await serve([], {
      [ACCESS_KEY]: { secretAccessKey: SECRET, principal: foreign },
    });
    expect(server.stderr.text()).toBe(
      `kms: warning: the principal of ${ACCESS_KEY} is not in this KMS's account 000000000000: keys with the default policy allow it nothing\n`,
    );
    await expect(server.client().send(new CreateKeyCommand({}))).rejects.toMatchObject({
      name: "AccessDeniedException",
    });
    expect(await server.stop()).toBe(0);
  });

  it("--allowed-host serves the names listed and refuses a request signed for another", async () => {
    const listed = await serve(["--allowed-host", "localhost", "--allowed-host", "127.0.0.1"]);
    // The SDK signs the endpoint's host and port (127.0.0.1:<port>): a name without a port
    // accepts every port.
    await expect(listed.client().send(new CreateKeyCommand({}))).resolves.toBeDefined();
    expect(await listed.stop()).toBe(0);
    expect(listed.stderr.text()).toBe("");

    const other = await serve(["--allowed-host", "kms.internal"]);
    await expect(other.client().send(new CreateKeyCommand({}))).rejects.toMatchObject({
      name: "InvalidSignatureException",
      $metadata: { httpStatusCode: 400 },
    });
    expect(await other.stop()).toBe(0);
    expect(other.stderr.text()).toMatch(
      new RegExp(
        `^kms: refused \\S+ 400 InvalidSignatureException CreateKey key "${ACCESS_KEY}" from \\S+: "The request is signed for a host this server does not answer to`,
      ),
    );
  });

  it.each([
    ["IPv6 without brackets", ["::1"], '"::1"'],
    ["a URL", ["https://kms.internal"], '"https://kms.internal"'],
    ["port 0", ["kms.internal:0"], '"kms.internal:0"'],
    ["an IPv6 zone id", ["[fe80::1%eth0]"], '"[fe80::1%eth0]"'],
    // The bad one is named, not the first.
    ["the second of two", ["localhost", "kms.internal/"], '"kms.internal/"'],
  ])(
    "an --allowed-host that is not a host name (%s) is a usage error, before any file is read",
    async (_name, hosts, got) => {
      // Neither the credentials file nor the data dir exists: reading either would fail otherwise.
      const result = await run(
        [
          "serve",
          "--data-dir",
          "none",
          "--credentials",
          "nowhere.json",
          ...hosts.flatMap((h) => ["--allowed-host", h]),
        ],
        { cwd: ws.dir, env: ws.env },
      );
      expect(result.code).toBe(2);
      expect(result.out).toBe("");
      // The server's own reason, naming the flag rather than its allowedHosts option.
      const [message = "", usage = ""] = result.err.split("\n\n");
      expect(message).toMatch(
        /^kms: serve: "--allowed-host" must be a host name as a Host header carries it — /,
      );
      expect(message.endsWith(` — got ${got}`)).toBe(true);
      expect(usage).toMatch(/^Usage: kms serve /);
      expect(result.err).not.toContain("allowedHosts");
      expect(result.err).not.toContain("nowhere.json");
      expect(existsSync(join(ws.dir, "none"))).toBe(false);
    },
  );

  it("a missing credentials file is refused", async () => {
    const result = await run(["serve", "--credentials", "nowhere.json"], {
      cwd: ws.dir,
      env: ws.env,
    });
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/cannot read the credentials file .*nowhere\.json \(ENOENT\)/);
  });

  describe("a credentials file that is not a regular file is refused, without waiting on it", () => {
    const fifo = (): string => {
      const path = join(ws.dir, "credentials.fifo");
      // Mode 0600: refused for what it is, not for its mode.
      execFileSync("mkfifo", ["-m", "600", path]);
      return path;
    };
    const directory = (): string => {
      const path = join(ws.dir, "credentials.d");
      mkdirSync(path, { mode: 0o700 });
      return path;
    };
    it.each([
      ["a FIFO no one writes to", fifo, "a FIFO"],
      ["a directory", directory, "a directory"],
      ["a device", () => "/dev/null", "a character device"],
    ])("%s (regression: a FIFO hung serve)", async (_name, make, kind) => {
      const path = make();
      const running = run(["serve", "--credentials", path, "--port", "0"], {
        cwd: ws.dir,
        env: ws.env,
      });
      const outcome = await Promise.race([
        running,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5_000)),
      ]);
      if (outcome === undefined && kind === "a FIFO") {
        // A writer that comes and goes ends the open that was waiting for one, so the test
        // fails below rather than leaving a thread blocked in open().
        closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
        await running;
      }
      expect(outcome, "still waiting after 5 s").toBeDefined();
      expect(outcome?.code).toBe(1);
      expect(outcome?.out).toBe("");
      expect(outcome?.err).toBe(
        `CredentialsFileError: the credentials file ${path} is ${kind}, not a regular file\n`,
      );
    });

    it("a symbolic link to a regular file is read, as a mounted secret is", async () => {
      const link = join(ws.dir, "credentials.link");
      symlinkSync(credentialsFile(), link);
      expect(Object.keys(await readCredentialsFile(link))).toEqual([ACCESS_KEY]);
    });
  });

  it("plain HTTP on a non-loopback address is refused unless --insecure-http", async () => {
    credentialsFile();
    const refused = await run(
      ["serve", "--credentials", "credentials.json", "--port", "0", "--host", "0.0.0.0"],
      { cwd: ws.dir, env: ws.env },
    );
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/refuses to listen without TLS on 0\.0\.0\.0/);

    const allowed = await serve(["--host", "0.0.0.0", "--insecure-http"]);
    expect(allowed.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    expect(await allowed.stop()).toBe(0);
  });

  it("--tls-cert and --tls-key serve HTTPS, on any address", async () => {
    const fixtures = join(dirname(fileURLToPath(import.meta.url)), "../../server/test/fixtures");
    const server = await serve([
      "--host",
      "0.0.0.0",
      "--tls-cert",
      join(fixtures, "localhost-cert.pem"),
      "--tls-key",
      join(fixtures, "localhost-key.pem"),
    ]);
    expect(server.url).toMatch(/^https:\/\/0\.0\.0\.0:\d+$/);
    const client = new KMSClient({
      endpoint: `https://localhost:${new URL(server.url).port}`,
      region: "local",
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET },
      maxAttempts: 1,
      requestHandler: {
        httpsAgent: new https.Agent({ ca: readFileSync(join(fixtures, "localhost-cert.pem")) }),
      },
    });
    const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
    expect(KeyMetadata?.KeyState).toBe("Enabled");
    // A client that does not trust the certificate gets nowhere.
    const untrusting = new KMSClient({
      endpoint: `https://localhost:${new URL(server.url).port}`,
      region: "local",
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET },
      maxAttempts: 1,
    });
    await expect(untrusting.send(new CreateKeyCommand({}))).rejects.toThrow(/certificate/i);
    expect(await server.stop()).toBe(0);
  });

  it("a port in use fails with the address error", async () => {
    const first = await serve();
    const port = new URL(first.url).port;
    const second = await run(["serve", "--credentials", "credentials.json", "--port", port], {
      cwd: ws.dir,
      env: ws.env,
    });
    expect(second.code).toBe(1);
    expect(second.err).toMatch(/EADDRINUSE/);
    expect(await first.stop()).toBe(0);
  });
});

describe("the kms binary and signals", () => {
  const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
  const bin = join(
    packageDir,
    (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { bin: { kms: string } })
      .bin.kms,
  );

  function spawnKms(args: readonly string[]): { child: ChildProcess; out: () => string } {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: ws.dir,
      env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
    });
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
    });
    return { child, out: () => out };
  }

  function exit(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
    return new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  // SIGHUP: the session that started it closed (regression: the process died at once, without
  // finishing requests in flight or closing the KMS).
  it("serve stops cleanly on SIGINT, SIGTERM and SIGHUP, exit code 0", async () => {
    credentialsFile();
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      const kms = spawnKms(["serve", "--credentials", "credentials.json", "--port", "0"]);
      const exited = exit(kms.child);
      await until(() => (LISTENING.test(kms.out()) ? true : undefined), "serve to listen");
      kms.child.kill(signal);
      expect(await exited).toEqual({ code: 0, signal: null });
    }
  });

  it("a second signal ends serve at once whichever it is (regression: SIGTERM after SIGINT waited for requests in flight)", async () => {
    credentialsFile();
    const kms = spawnKms(["serve", "--credentials", "credentials.json", "--port", "0"]);
    const exited = exit(kms.child);
    const url = new URL(await until(() => LISTENING.exec(kms.out())?.[1], "serve to listen"));
    // A request in flight, half its body sent: stopping waits for it (up to the request timeout).
    const socket = connect(Number(url.port), url.hostname);
    socket.on("error", () => undefined);
    try {
      await new Promise((resolve) => socket.once("connect", resolve));
      socket.write(
        `POST / HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/x-amz-json-1.1\r\n` +
          "Content-Length: 100\r\n\r\n{",
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      kms.child.kill("SIGINT");
      await new Promise((resolve) => setTimeout(resolve, 200));
      kms.child.kill("SIGTERM");
      const result = await Promise.race([
        exited,
        new Promise((resolve) => setTimeout(() => resolve("still running"), 5_000)),
      ]);
      expect(result).toEqual({ code: null, signal: "SIGTERM" });
    } finally {
      socket.destroy();
      kms.child.kill("SIGKILL");
    }
  }, 60_000);

  it("any other command still ends on SIGINT (the signal is not swallowed)", async () => {
    const created = await run(["create-key"], { cwd: ws.dir, env: ws.env });
    const { keyId } = JSON.parse(created.out) as { keyId: string };
    // Waits for stdin that never ends, as `kms encrypt --in -` at a terminal would.
    const kms = spawnKms(["encrypt", "--key", keyId, "--in", "-", "--out", "out.kms"]);
    const exited = exit(kms.child);
    await new Promise((resolve) => setTimeout(resolve, 500));
    kms.child.kill("SIGINT");
    expect(await exited).toEqual({ code: null, signal: "SIGINT" });
  });
});
