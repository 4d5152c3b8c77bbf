/**
 * A message object reused with another `url` between calls: each signing and verification
 * derives the target from the `url` the message names when it starts, not from the one an
 * earlier call on the same object parsed.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  item,
  nodeRequestMessage,
  signMessage,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const policy = { keyLookup: () => createHmacVerifier(secret), now: () => T0 };

/** A message whose `url` its owner changes, as untyped or loosely typed code can. */
interface MutableRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
}

describe("a message object reused with another url", () => {
  it("does not verify a signature for the old target on the new one", async () => {
    const headers: Record<string, string> = {};
    const message: MutableRequest = { method: "GET", url: "https://a.test/harmless", headers };
    const signed = await signMessage(message, {
      signer,
      components: ["@method", "@target-uri"],
      now: () => T0,
    });
    headers["signature-input"] = signed.signatureInput;
    headers.signature = signed.signature;
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: true });

    message.url = "https://a.test/admin";
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: false, check: "signature" });
    // The other derived components follow the new url too.
    const source = { message };
    expect(componentValues(item("@path"), source)).toEqual(["/admin"]);
    message.url = "https://b.test/admin?x=1";
    expect(componentValues(item("@authority"), source)).toEqual(["b.test"]);
    expect(componentValues(item("@query"), source)).toEqual(["?x=1"]);
  });

  it("signs the url the message names now", async () => {
    const message: MutableRequest = { method: "GET", url: "https://a.test/first", headers: {} };
    const options = { signer, components: ["@target-uri"], now: () => T0 };
    expect((await signMessage(message, options)).base).toContain("https://a.test/first\n");
    message.url = "https://a.test/second";
    expect((await signMessage(message, options)).base).toContain("https://a.test/second\n");
    message.url = "https://a.test/first";
    expect((await signMessage(message, options)).base).toContain("https://a.test/first\n");
  });

  it("does not keep a received request's target once its url is changed", async () => {
    const message = nodeRequestMessage({
      method: "GET",
      url: "http://a.test/harmless",
      protocol: "http",
      headers: { host: "a.test" },
    });
    const source = { message };
    expect(componentValues(item("@request-target"), source)).toEqual(["http://a.test/harmless"]);
    (message as { url: string }).url = "http://a.test/admin";
    expect(componentValues(item("@request-target"), source)).toEqual(["/admin"]);
    expect(componentValues(item("@target-uri"), source)).toEqual(["http://a.test/admin"]);
  });
});
