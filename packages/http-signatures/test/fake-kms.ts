/**
 * A stand-in for the KMS signing surface with AWS semantics (DER ECDSA, PSS salt = hash length,
 * KMSInvalidSignatureException / KMSInvalidMacException on mismatch), built on node:crypto.
 * Used until @kms/core's Kms exposes sign/verify/generateMac/verifyMac.
 */
import {
  constants,
  createHmac,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
} from "node:crypto";
import { InvalidMacError, InvalidSignatureError, NotFoundError } from "@kms/core";
import type { KmsSignatureApi, KmsSigningAlgorithmName } from "../src/index.ts";

type Key =
  | { kind: "hmac"; secret: Buffer }
  | { kind: "asym"; privateKey: KeyObject; publicKey: KeyObject };

export class FakeKms implements KmsSignatureApi {
  readonly keys = new Map<string, Key>();
  calls = 0;

  addHmacKey(keyId: string): void {
    this.keys.set(keyId, { kind: "hmac", secret: randomBytes(32) });
  }
  addKeyPair(keyId: string, type: "ec-p256" | "ec-p384" | "ed25519" | "rsa"): void {
    const pair =
      type === "ec-p256"
        ? generateKeyPairSync("ec", { namedCurve: "P-256" })
        : type === "ec-p384"
          ? generateKeyPairSync("ec", { namedCurve: "P-384" })
          : type === "ed25519"
            ? generateKeyPairSync("ed25519")
            : generateKeyPairSync("rsa", { modulusLength: 2048 });
    this.keys.set(keyId, { kind: "asym", ...pair });
  }

  #key(keyId: string): Key {
    const key = this.keys.get(keyId);
    if (key === undefined) throw new NotFoundError(`key ${keyId} not found`);
    return key;
  }

  #opts(alg: KmsSigningAlgorithmName, key: KeyObject): [string | null, object] {
    switch (alg) {
      case "ECDSA_SHA_256":
        return ["sha256", { key, dsaEncoding: "der" }];
      case "ECDSA_SHA_384":
        return ["sha384", { key, dsaEncoding: "der" }];
      case "ED25519_SHA_512":
        return [null, key];
      case "RSASSA_PSS_SHA_512":
        return ["sha512", { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 }];
      case "RSASSA_PKCS1_V1_5_SHA_256":
        return ["sha256", { key, padding: constants.RSA_PKCS1_PADDING }];
    }
  }

  async sign(r: Parameters<KmsSignatureApi["sign"]>[0]): Promise<{ signature: Uint8Array }> {
    this.calls++;
    const key = this.#key(r.keyId);
    if (key.kind !== "asym") throw new InvalidSignatureError("wrong key usage");
    const [hash, opts] = this.#opts(r.signingAlgorithm, key.privateKey);
    return { signature: new Uint8Array(sign(hash, r.message, opts as KeyObject)) };
  }
  async verify(r: Parameters<KmsSignatureApi["verify"]>[0]): Promise<{ signatureValid: boolean }> {
    this.calls++;
    const key = this.#key(r.keyId);
    if (key.kind !== "asym") throw new InvalidSignatureError("wrong key usage");
    const [hash, opts] = this.#opts(r.signingAlgorithm, key.publicKey);
    let ok = false;
    try {
      ok = verify(hash, r.message, opts as KeyObject, r.signature);
    } catch {
      ok = false;
    }
    if (!ok) throw new InvalidSignatureError("signature is not valid");
    return { signatureValid: true };
  }
  async generateMac(
    r: Parameters<KmsSignatureApi["generateMac"]>[0],
  ): Promise<{ mac: Uint8Array }> {
    this.calls++;
    const key = this.#key(r.keyId);
    if (key.kind !== "hmac") throw new InvalidMacError("wrong key usage");
    return { mac: new Uint8Array(createHmac("sha256", key.secret).update(r.message).digest()) };
  }
  async verifyMac(r: Parameters<KmsSignatureApi["verifyMac"]>[0]): Promise<{ macValid: boolean }> {
    this.calls++;
    const { mac } = await this.generateMac(r);
    if (mac.length !== r.mac.length || !timingSafeEqual(mac, r.mac))
      throw new InvalidMacError("invalid mac");
    return { macValid: true };
  }
  async getPublicKey(r: { keyId: string }): Promise<{ publicKey: Uint8Array }> {
    const key = this.#key(r.keyId);
    if (key.kind !== "asym") throw new InvalidSignatureError("no public key");
    return { publicKey: new Uint8Array(key.publicKey.export({ format: "der", type: "spki" })) };
  }
}
