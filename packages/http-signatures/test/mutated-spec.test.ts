/**
 * Component spec objects are readonly only to TypeScript: JavaScript callers and configuration
 * built once and edited later change them in place. A policy tightened that way must enforce
 * the spec as it is now, and a signer must cover what its components say now.
 */
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  type RequestMessage,
  signRequest,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x4d);
const signer = createHmacSigner(SECRET, { keyId: "k" });
const URL_ = "https://a.test/transfer?amount=5&to=alice";

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type SpecObject = Mutable<Exclude<ComponentSpec, string>>;

async function signed(components: readonly ComponentSpec[]): Promise<RequestMessage> {
  const added = await signRequest({ method: "POST", url: URL_ }, { signer, components });
  return { method: "POST", url: URL_, headers: { ...added } };
}

describe("a component spec changed after its first use", () => {
  it("is enforced as changed by a policy's requiredComponents", async () => {
    const required: SpecObject = { component: "@query-param", name: "amount" };
    const policy = {
      keyLookup: (id: string) => (id === "k" ? createHmacVerifier(SECRET) : undefined),
      nonceStore: false as const,
      requiredComponents: ["@method", "@authority", "@path", required],
    };
    const coversAmount = [
      "@method",
      "@authority",
      "@path",
      { component: "@query-param", name: "amount" },
    ];
    expect(await verifyMessage(await signed(coversAmount), policy)).toMatchObject({ ok: true });

    // Tightened in place: the recipient must now be signed too.
    required.name = "to";
    expect(await verifyMessage(await signed(coversAmount), policy)).toMatchObject({
      ok: false,
      check: "components",
      detail: 'signature must cover "@query-param";name="to"',
    });
    const coversTo = ["@method", "@authority", "@path", { component: "@query-param", name: "to" }];
    expect(await verifyMessage(await signed(coversTo), policy)).toMatchObject({ ok: true });

    // Every field counts, not only the name.
    required.req = true;
    expect(await verifyMessage(await signed(coversTo), policy)).toMatchObject({
      ok: false,
      detail: 'signature must cover "@query-param";name="to";req',
    });
  });

  it("is covered as changed by a signer's components", async () => {
    const spec: SpecObject = { component: "@query-param", name: "amount" };
    const components = ["@method", spec];
    const first = await signRequest({ method: "POST", url: URL_ }, { signer, components });
    expect(first["signature-input"]).toContain('"@query-param";name="amount"');

    spec.name = "to";
    const second = await signRequest({ method: "POST", url: URL_ }, { signer, components });
    expect(second["signature-input"]).toContain('"@query-param";name="to"');
    expect(second["signature-input"]).not.toContain("amount");

    spec.component = "Content-Type";
    delete spec.name;
    const third = await signRequest(
      { method: "POST", url: URL_, headers: { "content-type": "text/plain" } },
      { signer, components },
    );
    expect(third["signature-input"]).toContain('"content-type"');
  });
});
