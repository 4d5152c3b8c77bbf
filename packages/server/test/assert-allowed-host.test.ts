/**
 * `assertAllowedHost`: one `allowedHosts` entry checked before a server is made (the CLI's
 * `--allowed-host`), by the same grammar and with the same message as the server itself, so that
 * a value it passes is never refused later and a value it refuses never serves.
 */
import { createKms, type Kms, ValidationError } from "@kms/core";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertAllowedHost, createKmsRequestHandler } from "../src/index.ts";
import { ALICE, REGION } from "./support/harness.ts";

let kms: Kms;
beforeAll(async () => {
  kms = await createKms({ region: REGION, account: "111122223333" });
});
afterAll(async () => {
  await kms.close();
});

/** The server's verdict on `entry` as the only allowedHosts entry: its message, or undefined. */
function serverRefusal(entry: unknown): string | undefined {
  try {
    createKmsRequestHandler({
      kms,
      credentials: {
        [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
      },
      allowedHosts: [entry as string],
    });
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as ValidationError).message;
  }
}

function assertRefusal(entry: unknown, argument: string): string | undefined {
  try {
    assertAllowedHost(entry, argument);
    return undefined;
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as ValidationError).message;
  }
}

const JUNK: readonly [string, unknown, string][] = [
  ["an empty string", "", '""'],
  ["IPv6 without brackets", "::1", '"::1"'],
  ["an IPv6 zone id", "[fe80::1%eth0]", '"[fe80::1%eth0]"'],
  ["an unclosed bracket", "[::1", '"[::1"'],
  ["a scheme", "https://kms.internal", '"https://kms.internal"'],
  ["a path", "kms.internal/", '"kms.internal/"'],
  ["user info", "me@kms.internal", '"me@kms.internal"'],
  ["an empty label", "kms..internal", '"kms..internal"'],
  ["port 0", "kms.internal:0", '"kms.internal:0"'],
  ["port 65536", "kms.internal:65536", '"kms.internal:65536"'],
  ["an empty port", "kms.internal:", '"kms.internal:"'],
  ["a non-ASCII name", "bücher.example", '"bücher.example"'],
  ["a name over 253 characters", `${"a.".repeat(126)}ab`, `"${"a.".repeat(126)}ab"`],
  ["a number", 443, "number"],
  ["null", null, "object"],
  ["undefined", undefined, "undefined"],
];

describe("assertAllowedHost", () => {
  it.each(JUNK)("refuses %s, naming the argument and the value", (_what, entry, got) => {
    expect(() => assertAllowedHost(entry, "--allowed-host")).toThrow(ValidationError);
    expect(assertRefusal(entry, "--allowed-host")).toBe(
      '"--allowed-host" must be a host name as a Host header carries it — name, name:port, ' +
        `[ipv6] or [ipv6]:port, internationalized names in their xn-- form — got ${got}`,
    );
  });

  it.each(JUNK)("refuses %s with the server's own message", (_what, entry) => {
    const server = serverRefusal(entry);
    expect(server).toBeDefined();
    expect(assertRefusal(entry, "allowedHosts[0]")).toBe(server);
  });

  it.each([
    "kms.internal",
    "KMS.internal.",
    "kms:8443",
    "127.0.0.1",
    "[::1]",
    "[0:0:0:0:0:0:0:1]:4599",
    "xn--bcher-kva.example",
    `${"a.".repeat(125)}abc`,
  ])("accepts %s, as the server does", (entry) => {
    expect(() => assertAllowedHost(entry, "--allowed-host")).not.toThrow();
    expect(serverRefusal(entry)).toBeUndefined();
  });

  it("agrees with the server on any string", () => {
    const hostish = fc.stringMatching(/^\[?[a-zA-Z0-9.:%_@/-]{0,12}\]?(:[0-9]{0,6})?$/);
    fc.assert(
      fc.property(fc.oneof(hostish, fc.string()), (entry) => {
        expect(assertRefusal(entry, "allowedHosts[0]")).toBe(serverRefusal(entry));
      }),
      { numRuns: 300 },
    );
  });
});
