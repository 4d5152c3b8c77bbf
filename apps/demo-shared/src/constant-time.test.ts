// A bearer token is checked with node:crypto's timingSafeEqual over the whole SHA-256 digest,
// against every clinic whichever matches. Swapping that for `===`, `Buffer.equals`, an early
// exit or a map lookup keeps the functional tests green (the right clinic, or none, comes back),
// so these tests watch the primitive itself.
import { createHash } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";

const compares = vi.hoisted(() => [] as Array<[Uint8Array, Uint8Array]>);

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const copy = (view: NodeJS.ArrayBufferView): Uint8Array =>
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compares.push([copy(a), copy(b)]);
      return real.timingSafeEqual(a, b);
    },
  };
});

const { TenantDirectory } = await import("./tenant-directory.ts");

afterEach(() => {
  compares.length = 0;
});

const A = "token-of-clinic-a-0123456789";
const B = "token-of-clinic-b-0123456789";
const digest = (token: string): Uint8Array =>
  new Uint8Array(createHash("sha256").update(token, "utf8").digest());

describe("TenantDirectory.authenticate", () => {
  const tenants = new TenantDirectory({ "clinic-a": A, "clinic-b": B });

  it("refuses a token wrong in its first character after a full-digest timingSafeEqual with every clinic", () => {
    const wrong = `x${A.slice(1)}`;
    compares.length = 0;

    expect(tenants.authenticate([`Bearer ${wrong}`])).toBeUndefined();

    expect(compares).toEqual([
      [digest(A), digest(wrong)],
      [digest(B), digest(wrong)],
    ]);
    expect(digest(wrong).length).toBe(32);
  });

  it("still compares with every clinic once the first one matches", () => {
    compares.length = 0;

    expect(tenants.authenticate([`Bearer ${A}`])).toBe("clinic-a");

    expect(compares).toEqual([
      [digest(A), digest(A)],
      [digest(B), digest(A)],
    ]);
  });
});
