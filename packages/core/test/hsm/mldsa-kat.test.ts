/**
 * FIPS 204 known answers for ML-DSA, through the paths the KMS takes (sources and commits are
 * recorded in each vector file):
 *
 * - `vectors/mldsa-acvp-keygen.json`: NIST ACVP ML-DSA-keyGen-FIPS204, seed → public key. The
 *   KMS stores only the 32-byte seed (docs/FORMAT.md §4.3) and derives everything from it.
 * - `vectors/mldsa-acvp-sigver-internal.json`: NIST ACVP ML-DSA-sigVer-FIPS204, a revision that
 *   tests ML-DSA.Verify_internal (no context prefix): the KMS's EXTERNAL_MU path.
 * - `vectors/mldsa-wycheproof-verify.json`: Project Wycheproof ML-DSA verify, the pure external
 *   interface with and without a context: the KMS's RAW path, whose context is always empty.
 *
 * Node 22 (`engines: >=22.12`) has no ML-DSA in OpenSSL, so there @noble/post-quantum does all
 * of it; Node ≥ 24.7 signs and verifies RAW messages natively. Each vector is therefore run
 * through the HSM (whichever backend this Node gives it) and through @noble directly, and μ is
 * computed with node:crypto's SHAKE256 rather than by the library under test.
 */
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { beforeAll, describe, expect, it } from "vitest";
import { asymmetricHsm, mlDsaSpki } from "../../src/hsm/asymmetric.ts";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { type KeySpec, MemoryKeyStore } from "../../src/index.ts";
import { hex, type ImportingKms, importingKms } from "../asymmetric/harness.ts";

type ParameterSet = "ML-DSA-44" | "ML-DSA-65" | "ML-DSA-87";
const PARAMETERS = {
  "ML-DSA-44": { spec: "ML_DSA_44", variant: "ml-dsa-44", dsa: ml_dsa44, oid: 0x11 },
  "ML-DSA-65": { spec: "ML_DSA_65", variant: "ml-dsa-65", dsa: ml_dsa65, oid: 0x12 },
  "ML-DSA-87": { spec: "ML_DSA_87", variant: "ml-dsa-87", dsa: ml_dsa87, oid: 0x13 },
} as const satisfies Record<
  ParameterSet,
  { spec: KeySpec; variant: string; dsa: typeof ml_dsa44; oid: number }
>;

function vectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./vectors/${name}`, import.meta.url), "utf8")) as T;
}
const keyGen = vectors<{
  tests: { parameterSet: ParameterSet; tcId: number; seed: string; pk: string }[];
}>("mldsa-acvp-keygen.json");
const sigVerInternal = vectors<{
  parameterSet: ParameterSet;
  pk: string;
  tests: {
    tcId: number;
    reason: string;
    testPassed: boolean;
    message: string;
    signature: string;
  }[];
}>("mldsa-acvp-sigver-internal.json");
const wycheproof = vectors<{
  groups: {
    parameterSet: ParameterSet;
    publicKey: string;
    tests: { tcId: number; comment: string; msg: string; ctx?: string; sig: string }[];
  }[];
}>("mldsa-wycheproof-verify.json");

const shake256 = (data: Uint8Array, bytes: number): Uint8Array =>
  new Uint8Array(createHash("shake256", { outputLength: bytes }).update(data).digest());

/** FIPS 204 Algorithm 3 line 6 / Algorithm 8 line 7: μ = H(H(pk, 64) ‖ M′, 64). */
function mu(publicKey: Uint8Array, messagePrime: Uint8Array): Uint8Array {
  return shake256(Buffer.concat([shake256(publicKey, 64), messagePrime]), 64);
}

/** M′ of the pure external interface (FIPS 204 Algorithm 2 line 10): 0 ‖ |ctx| ‖ ctx ‖ M. */
function externalMessage(message: Uint8Array, context: Uint8Array): Uint8Array {
  return Buffer.concat([Uint8Array.of(0, context.length), context, message]);
}

function flipped(bytes: Uint8Array, index: number): Uint8Array {
  const copy = Uint8Array.from(bytes);
  copy[index]! ^= 0x01;
  return copy;
}

let h: ImportingKms;
let hsm: SoftwareHsm;
beforeAll(async () => {
  h = await importingKms();
  const root = globalThis.crypto.getRandomValues(new Uint8Array(32));
  hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), new MemoryKeyStore());
});

/** Kms.verify's primitive, with a public key alone (ACVP and Wycheproof give no seeds). */
function hsmVerify(
  set: ParameterSet,
  publicKey: Uint8Array,
  messageType: "RAW" | "EXTERNAL_MU",
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  const { spec, variant } = PARAMETERS[set];
  return asymmetricHsm(hsm).verify(
    globalThis.crypto.randomUUID(),
    1,
    mlDsaSpki(variant, publicKey),
    spec,
    "ML_DSA_SHAKE_256",
    messageType,
    message,
    signature,
  );
}

describe("ACVP ML-DSA keyGen: a stored seed gives the FIPS 204 public key", () => {
  it("covers every parameter set", () => {
    expect(new Set(keyGen.tests.map((t) => t.parameterSet))).toEqual(
      new Set(Object.keys(PARAMETERS)),
    );
  });

  it.each(keyGen.tests.map((t) => [`${t.parameterSet} tcId ${t.tcId}`, t] as const))(
    "%s",
    async (_name, t) => {
      const { spec, dsa, oid } = PARAMETERS[t.parameterSet];
      const keyId = await h.importKey(spec, "SIGN_VERIFY", hex(t.seed));
      const { publicKey } = await h.kms.getPublicKey({ keyId });
      const spki = Buffer.from(publicKey);
      // RFC 9881 SubjectPublicKeyInfo: AlgorithmIdentifier id-ml-dsa-NN without parameters,
      // then the raw FIPS 204 public key as the BIT STRING's content.
      expect(spki.subarray(spki.length - dsa.lengths.publicKey!).toString("hex")).toBe(t.pk);
      expect(spki.subarray(4, 4 + 13).toString("hex")).toBe(
        `300b06096086480165030403${oid.toString(16)}`,
      );
      expect(spki.length).toBe(dsa.lengths.publicKey! + 22);
      // The @noble derivation Node 22 relies on, without the KMS around it.
      expect(Buffer.from(dsa.keygen(hex(t.seed)).publicKey).toString("hex")).toBe(t.pk);

      // What the KMS signs with that key is pure ML-DSA with an empty context (RAW).
      const message = new TextEncoder().encode(`kms ML-DSA KAT ${t.tcId}`);
      const { signature } = await h.kms.sign({
        keyId,
        message,
        signingAlgorithm: "ML_DSA_SHAKE_256",
      });
      expect(dsa.verify(signature, message, hex(t.pk))).toBe(true);
    },
  );

  it.runIf(hsmHasNativeMlDsa())(
    "OpenSSL's raw-seed import (Node ≥ 24.7 signing) derives the same public keys",
    () => {
      for (const t of keyGen.tests) {
        const { variant, dsa } = PARAMETERS[t.parameterSet];
        const key = createPrivateKey({
          key: Buffer.from(t.seed, "hex"),
          format: "raw-seed",
          asymmetricKeyType: variant,
        } as unknown as Parameters<typeof createPrivateKey>[0]);
        const spki = createPublicKey(key).export({ format: "der", type: "spki" });
        expect(spki.subarray(spki.length - dsa.lengths.publicKey!).toString("hex")).toBe(t.pk);
      }
    },
  );
});

function hsmHasNativeMlDsa(): boolean {
  try {
    createPrivateKey({
      key: Buffer.alloc(32, 1),
      format: "raw-seed",
      asymmetricKeyType: "ml-dsa-44",
    } as unknown as Parameters<typeof createPrivateKey>[0]);
    return true;
  } catch {
    return false;
  }
}

describe("ACVP ML-DSA sigVer (Verify_internal) through the EXTERNAL_MU path", () => {
  const set = sigVerInternal.parameterSet;
  const pk = hex(sigVerInternal.pk);

  it("holds valid and invalid cases", () => {
    expect(sigVerInternal.tests.some((t) => t.testPassed)).toBe(true);
    expect(sigVerInternal.tests.some((t) => !t.testPassed)).toBe(true);
  });

  it.each(sigVerInternal.tests.map((t) => [`tcId ${t.tcId} (${t.reason})`, t] as const))(
    "%s",
    (_name, t) => {
      const { dsa } = PARAMETERS[set];
      const messageMu = mu(pk, hex(t.message));
      const signature = hex(t.signature);
      expect(hsmVerify(set, pk, "EXTERNAL_MU", messageMu, signature)).toBe(t.testPassed);
      expect(dsa.internal.verify(signature, hex(t.message), pk)).toBe(t.testPassed);
      // The internal message is not a RAW message: RAW adds the 0 ‖ 0 context prefix.
      expect(hsmVerify(set, pk, "RAW", hex(t.message), signature)).toBe(false);
    },
  );

  it("a valid internal signature fails once μ or the signature changes by one bit", () => {
    const valid = sigVerInternal.tests.find((t) => t.testPassed)!;
    const messageMu = mu(pk, hex(valid.message));
    const signature = hex(valid.signature);
    expect(hsmVerify(set, pk, "EXTERNAL_MU", flipped(messageMu, 0), signature)).toBe(false);
    expect(hsmVerify(set, pk, "EXTERNAL_MU", messageMu, flipped(signature, 100))).toBe(false);
  });
});

describe("Wycheproof ML-DSA verify (pure, external interface)", () => {
  it("covers every parameter set", () => {
    expect(new Set(wycheproof.groups.map((g) => g.parameterSet))).toEqual(
      new Set(Object.keys(PARAMETERS)),
    );
  });

  describe.each(wycheproof.groups.map((g) => [g.parameterSet, g] as const))("%s", (set, group) => {
    const { dsa } = PARAMETERS[set];
    const pk = hex(group.publicKey);

    it.each(group.tests.map((t) => [`tcId ${t.tcId} (${t.comment})`, t] as const))(
      "%s",
      (_name, t) => {
        const message = hex(t.msg);
        const context = hex(t.ctx ?? "");
        const signature = hex(t.sig);
        // The source's own verdict, under the source's context (what @noble does on Node 22).
        expect(dsa.verify(signature, message, pk, { context })).toBe(true);
        // RAW verification in the KMS always uses the empty context (AWS has no context
        // parameter), so only signatures made without one verify there.
        expect(hsmVerify(set, pk, "RAW", message, signature)).toBe(context.length === 0);
        expect(dsa.verify(signature, message, pk)).toBe(context.length === 0);
        // EXTERNAL_MU takes μ over M′ with any context prefix the caller chose.
        const messageMu = mu(pk, externalMessage(message, context));
        expect(hsmVerify(set, pk, "EXTERNAL_MU", messageMu, signature)).toBe(true);
      },
    );

    it("one changed bit of the signature or message fails RAW verification", () => {
      const baseline = group.tests.find((t) => t.ctx === undefined)!;
      const message = hex(baseline.msg);
      const signature = hex(baseline.sig);
      for (const index of [0, 40, signature.length - 1]) {
        expect(hsmVerify(set, pk, "RAW", message, flipped(signature, index))).toBe(false);
        expect(dsa.verify(flipped(signature, index), message, pk)).toBe(false);
      }
      expect(hsmVerify(set, pk, "RAW", flipped(message, 0), signature)).toBe(false);
      expect(hsmVerify(set, pk, "RAW", message, signature.subarray(1))).toBe(false);
    });
  });
});
