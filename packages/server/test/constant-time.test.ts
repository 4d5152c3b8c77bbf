// The SigV4 signature compare must go through node:crypto's timingSafeEqual over all 32 bytes.
// A swap to a hex-string `!==` or an early-exit loop keeps every functional test green (the
// request is refused either way), so this test watches the primitive: the signature sent is wrong
// in its first byte, where an early exit would return at once.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

// Operands are copied when the compare runs, before anything reuses or wipes them.
const compared = vi.hoisted(() => [] as Array<[Uint8Array, Uint8Array]>);

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const copy = (view: NodeJS.ArrayBufferView): Uint8Array =>
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compared.push([copy(a), copy(b)]);
      return real.timingSafeEqual(a, b);
    },
  };
});

const { ALICE, REGION, startHarness } = await import("./support/harness.ts");
const { rawRequest } = await import("./support/raw-http.ts");
const { signedHeaders } = await import("./support/signed-call.ts");

let harness: Awaited<ReturnType<typeof startHarness>>;

beforeAll(async () => {
  harness = await startHarness();
});
afterAll(() => harness.close());
afterEach(() => {
  compared.length = 0;
});

const body = JSON.stringify({ NumberOfBytes: 16 });

/** A GenerateRandom request signed by ALICE, and the signature it carries. */
function signedRequest(): { headers: [string, string][]; signature: string } {
  const headers = signedHeaders(harness.port, REGION, "TrentService.GenerateRandom", body, ALICE);
  const authorization = headers.find(([name]) => name === "Authorization")?.[1] ?? "";
  const signature = /Signature=([0-9a-f]{64})$/.exec(authorization)?.[1];
  if (signature === undefined) throw new Error(`no signature in ${authorization}`);
  return { headers, signature };
}

/** `headers` with the Authorization's signature replaced by `signature`. */
function withSignature(headers: [string, string][], signature: string): [string, string][] {
  return headers.map(([name, value]) =>
    name === "Authorization"
      ? [name, value.replace(/Signature=[0-9a-f]{64}$/, `Signature=${signature}`)]
      : [name, value],
  );
}

describe("SigV4 signature compare", () => {
  it("refuses a signature wrong in its first byte after a timingSafeEqual over all 32 bytes", async () => {
    const { headers, signature } = signedRequest();
    const good = Buffer.from(signature, "hex");
    const wrong = Uint8Array.from(good);
    wrong[0] = (wrong[0] as number) ^ 0x01;

    const response = await rawRequest(harness.port, {
      headers: withSignature(headers, Buffer.from(wrong).toString("hex")),
      body,
    });

    expect(response.status).toBe(400);
    expect(response.json.__type).toBe("InvalidSignatureException");
    expect(compared).toEqual([[new Uint8Array(good), wrong]]);
  });

  it("accepts the untouched signature through the same compare", async () => {
    const { headers, signature } = signedRequest();
    const good = new Uint8Array(Buffer.from(signature, "hex"));

    const response = await rawRequest(harness.port, { headers, body });

    expect(response.status).toBe(200);
    expect(compared).toEqual([[good, good]]);
  });
});
