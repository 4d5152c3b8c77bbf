/**
 * Secrets node:crypto hands back (an RSA plaintext, an ECDH shared secret) are copied into the
 * response; the Buffer node:crypto allocated must not stay behind in the heap with the secret
 * in it until the garbage collector happens to reuse the memory.
 */
import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { createKms } from "../src/index.ts";

const produced = vi.hoisted(() => ({ buffers: [] as Buffer[] }));
vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const record =
    <A extends unknown[]>(fn: (...args: A) => Buffer) =>
    (...args: A): Buffer => {
      const out = fn(...args);
      produced.buffers.push(out);
      return out;
    };
  const privateDecrypt = record(real.privateDecrypt);
  const diffieHellman = record(real.diffieHellman);
  return {
    ...real,
    default: { ...real, privateDecrypt, diffieHellman },
    privateDecrypt,
    diffieHellman,
  };
});

describe("buffers node:crypto returns secrets in are wiped after the copy", () => {
  it("RSA decrypt", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }))
      .keyMetadata;
    const plaintext = new TextEncoder().encode("the secret");
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    produced.buffers.length = 0;
    const decrypted = await kms.decrypt({
      keyId,
      ciphertextBlob,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(decrypted.plaintext).toEqual(plaintext);
    expect(produced.buffers).toHaveLength(1);
    expect(produced.buffers[0]!.every((b) => b === 0)).toBe(true);
  });

  it("ECDH shared secret", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }))
      .keyMetadata;
    const peer = generateKeyPairSync("ec", { namedCurve: "P-256" });
    produced.buffers.length = 0;
    const { sharedSecret } = await kms.deriveSharedSecret({
      keyId,
      keyAgreementAlgorithm: "ECDH",
      publicKey: new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" })),
    });
    expect(sharedSecret.some((b) => b !== 0)).toBe(true);
    expect(produced.buffers).toHaveLength(1);
    expect(produced.buffers[0]!.every((b) => b === 0)).toBe(true);
  });
});
