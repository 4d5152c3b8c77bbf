/**
 * MessageDecryptor fed in any chunking ends as decryptWhole on the same bytes (docs/FORMAT.md
 * §5.6, §5.7): the same plaintext, or a failure of the same class — for intact messages,
 * damaged ones (a flipped byte, cut short, extended) and decrypt policies that refuse them.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RawAesKeyring } from "../keyring/raw-aes-keyring.ts";
import type { DecryptPolicy } from "./decrypt-policy.ts";
import { MessageDecryptor } from "./decryptor.ts";
import { encryptMessage } from "./message.ts";
import type { DecryptStreamOptions } from "./options.ts";

const keyring = new RawAesKeyring({
  keyNamespace: "test",
  keyName: "k1",
  wrappingKey: randomBytes(32),
});
const context = { tenant: "acme" };
const PLAINTEXT = randomBytes(16 * 3 + 5);

const messages = await Promise.all(
  (
    [
      ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY", 16],
      ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY", 4096],
      ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256", 16],
    ] as const
  ).map(([suite, frameLength]) =>
    encryptMessage(PLAINTEXT, { keyring, encryptionContext: context, suite, frameLength }),
  ),
);

const policyArb: fc.Arbitrary<DecryptPolicy | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        maxFrameLength: fc.constantFrom(8, 16, 4096),
        signature: fc.constantFrom("required" as const, "forbidden" as const, "allowed" as const),
        requiredEncryptionContext: fc.constantFrom({ tenant: "acme" }, { tenant: "other" }),
        allowedKeyNames: fc.constantFrom(["test/k1"], ["test/k2"]),
        maxEncryptedDataKeys: fc.constantFrom(1, 16),
      },
      { requiredKeys: [] },
    ),
  },
);

const damageArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: "none" as const }) },
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("extend" as const),
    tail: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
);

type Damage = typeof damageArb extends fc.Arbitrary<infer T> ? T : never;

function damaged(message: Uint8Array, damage: Damage): Uint8Array {
  const out = new Uint8Array(message);
  switch (damage.kind) {
    case "none":
      return out;
    case "flip": {
      const at = damage.at % out.length;
      out[at] = (out[at] as number) ^ (1 << damage.bit);
      return out;
    }
    case "cut":
      return out.subarray(0, damage.at % out.length);
    case "extend":
      return new Uint8Array([...out, ...damage.tail]);
  }
}

type Outcome = { ok: string } | { error: string };

async function whole(bytes: Uint8Array, options: DecryptStreamOptions): Promise<Outcome> {
  try {
    const plaintext = await new MessageDecryptor(options).decryptWhole(bytes);
    return { ok: Buffer.from(plaintext).toString("hex") };
  } catch (error) {
    return { error: (error as Error).constructor.name };
  }
}

async function streamed(
  bytes: Uint8Array,
  cuts: readonly number[],
  options: DecryptStreamOptions,
): Promise<Outcome> {
  const points = [...new Set(cuts.map((c) => Math.min(c, bytes.length)))].sort((a, b) => a - b);
  const decryptor = new MessageDecryptor(options);
  const out: Uint8Array[] = [];
  try {
    let at = 0;
    for (const end of [...points, bytes.length]) {
      out.push(...(await decryptor.update(bytes.slice(at, end))));
      at = end;
    }
    decryptor.final();
    return { ok: Buffer.concat(out).toString("hex") };
  } catch (error) {
    return { error: (error as Error).constructor.name };
  }
}

describe("MessageDecryptor in pieces ends as decryptWhole", () => {
  it("same plaintext or the same class of failure, whatever the damage and policy", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...messages.keys()),
        damageArb,
        policyArb,
        fc.boolean(),
        fc.array(fc.nat({ max: 400 }), { maxLength: 10 }),
        async (which, damage, policy, expectContext, cuts) => {
          const bytes = damaged(messages[which] as Uint8Array, damage);
          const options: DecryptStreamOptions = {
            keyring,
            ...(expectContext ? { encryptionContext: context } : {}),
            ...(policy === undefined ? {} : { policy }),
          };
          const one = await whole(bytes, options);
          expect(await streamed(bytes, cuts, options)).toStrictEqual(one);
          if (damage.kind === "none" && policy === undefined) {
            expect(one).toStrictEqual({ ok: PLAINTEXT.toString("hex") });
          }
        },
      ),
      { numRuns: 1500 },
    );
  });
});
