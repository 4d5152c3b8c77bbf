/**
 * `coversField`: whether an accepted signature binds a header's whole value, checked on the
 * `covered` list a real verification returns.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  coversField,
  createHmacSigner,
  createHmacVerifier,
  signMessage,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const T0 = 1_700_000_000_000;
const structuredFields = { "x-dict": "dictionary" } as const;

async function coveredBy(components: ComponentSpec[]): Promise<readonly string[]> {
  const headers: Record<string, string> = {
    "x-tenant-id": "tenant-a",
    "x-dict": "a=1, b=2",
  };
  const message = { method: "GET", url: "https://a.test/r", headers };
  const signed = await signMessage(message, {
    signer: createHmacSigner(secret, { keyId: "k" }),
    components,
    structuredFields,
    now: () => T0,
  });
  headers["signature-input"] = signed.signatureInput;
  headers.signature = signed.signature;
  const result = await verifyMessage(message, {
    keyLookup: () => createHmacVerifier(secret),
    requiredComponents: [],
    structuredFields,
    now: () => T0,
  });
  if (!result.ok) throw new Error(`verification failed: ${result.check}`);
  return result.covered;
}

describe("coversField", () => {
  it.each([
    ["the plain field", ["x-tenant-id"], true],
    ["the field as a byte sequence", [{ component: "x-tenant-id", bs: true }], true],
    ["the field re-serialized", [{ component: "x-dict", sf: true }], true],
    ["another field", ["x-dict"], false],
    ["the method and target only", ["@method", "@target-uri"], false],
  ] as const)("%s", async (_, components, covers) => {
    const name = components.some((c) => typeof c !== "string" && c.component === "x-dict")
      ? "x-dict"
      : "x-tenant-id";
    const covered = await coveredBy([...components] as ComponentSpec[]);
    expect(coversField(covered, name)).toBe(covers);
    // The name is matched in any case, as header names are.
    expect(coversField(covered, name.toUpperCase())).toBe(covers);
  });

  it("does not count one member of a dictionary field as the field", async () => {
    const covered = await coveredBy([{ component: "x-dict", key: "a" }]);
    expect(coversField(covered, "x-dict")).toBe(false);
  });
});
