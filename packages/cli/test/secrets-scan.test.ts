import { createDecipheriv, createPrivateKey } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { afterAll, expect, it } from "vitest";
import { initializedWorkspace, plaintext, type RunResult, run } from "./helpers.ts";

const ws = await initializedWorkspace();
afterAll(() => ws.dispose());

it("kms.db and every command's output hold no plaintext, root key or key material", async () => {
  const opts = { cwd: ws.dir, env: ws.env };
  const outputs: RunResult[] = [];
  const step = async (argv: string[], extra: { stdin?: Buffer; ttyStderr?: boolean } = {}) => {
    const result = await run(argv, { ...opts, ...extra });
    outputs.push(result);
    return result;
  };
  const data = plaintext(300_000, "TOP-SECRET-PAYLOAD");
  writeFileSync(join(ws.dir, "data"), data);

  const { keyId } = JSON.parse((await step(["create-key", "--description", "scan"])).out);
  await step(["create-alias", "alias/scan", keyId]);
  // A second version, so that the encryptions below use material the first call did not make.
  await step(["rotate-key", keyId]);
  await step(["list-keys"]);
  await step(["describe-key", "alias/scan"]);
  for (const [keySpec, keyUsage] of [
    ["ECC_NIST_P256", "SIGN_VERIFY"],
    ["RSA_2048", "ENCRYPT_DECRYPT"],
    ["HMAC_256", "GENERATE_VERIFY_MAC"],
  ] as const) {
    await step(["create-key", "--key-spec", keySpec, "--key-usage", keyUsage]);
  }
  await step([
    "encrypt",
    "--key",
    "alias/scan",
    "--in",
    "data",
    "--out",
    "data.kms",
    "--context",
    "t=1",
    "--progress",
  ]);
  await step(["encrypt", "--key", keyId, "--in", "-", "--out", "pipe.kms"], { stdin: data });
  await step(["decrypt", "--in", "data.kms", "--out", "data.out", "--context", "t=1"], {
    ttyStderr: true,
  });
  await step(["decrypt", "--in", "data.kms", "--out", "bad.out", "--context", "t=2"]);
  await step([
    "decrypt",
    "--in",
    "pipe.kms",
    "--out",
    "bad.out",
    "--allow-key",
    "00000000-0000-0000-0000-000000000000",
  ]);
  await step(["disable-key", keyId]);
  await step(["encrypt", "--key", keyId, "--in", "data", "--out", "x.kms"]);
  await step(["decrypt", "--in", "data.kms", "--out", "bad.out"]);
  await step(["enable-key", keyId]);
  await step(["list-key-rotations", keyId]);
  await step(["audit", "list", "--limit", "1000"]);
  expect(outputs.map((o) => o.code)).toEqual([
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0,
  ]);
  expect(readFileSync(join(ws.dir, "data.out")).equals(data)).toBe(true);

  const store = Buffer.concat(
    ["kms.db", "kms.db-wal", "kms.db-shm"]
      .map((name) => join(ws.dir, ".kms", name))
      .filter((path) => existsSync(path))
      .map((path) => readFileSync(path)),
  );
  // The scan would be empty proof if nothing was recorded: the audit trail is in the same file.
  expect(store.includes(Buffer.from("GenerateDataKey"))).toBe(true);
  expect(store.includes(Buffer.from(keyId))).toBe(true);

  const printed = Buffer.concat(outputs.flatMap((o) => [o.stdout, Buffer.from(o.err)]));
  const secrets: [string, Buffer][] = [
    ["plaintext marker", Buffer.from("TOP-SECRET-PAYLOAD")],
    ["plaintext middle", data.subarray(150_000, 150_032)],
    ["root key bytes", ws.rootKey],
    ["root key hex", Buffer.from(ws.rootKey.toString("hex"))],
    ["root key HEX", Buffer.from(ws.rootKey.toString("hex").toUpperCase())],
    ["root key base64", Buffer.from(ws.rootKey.toString("base64"))],
  ];
  for (const [name, secret] of secrets) {
    expect(store.includes(secret), `${name} in kms.db`).toBe(false);
    expect(printed.includes(secret), `${name} in output`).toBe(false);
  }

  // Key material, unwrapped from kms.db on the test's own with the workspace's root key.
  const materials = await materialsIn(join(ws.dir, ".kms", "kms.db"), ws.rootKey);
  expect(materials.map(([name]) => name.replace(/ [0-9a-f-]{36}/, ""))).toEqual(
    expect.arrayContaining([
      "SYMMETRIC_DEFAULT v1",
      "SYMMETRIC_DEFAULT v2",
      "ECC_NIST_P256 v1 d",
      "RSA_2048 v1 p",
      "HMAC_256 v1",
    ]),
  );
  // Self-check: the scan finds 16 bytes of material anywhere, raw in the file or printed.
  const [, sample] = materials.find(([name]) => name.includes("RSA_2048") && name.endsWith(" q"))!;
  const run16 = sample.subarray(50, 66);
  expect(materialIn(Buffer.concat([store, run16]), materials, "raw")).toBeDefined();
  for (const form of ["hex", "base64"] as const) {
    const text = Buffer.from(
      `${printed.toString("latin1")}${Buffer.concat([Buffer.of(1), run16]).toString(form)}`,
    );
    expect(materialIn(text, materials, "printed"), form).toBeDefined();
  }
  expect(materialIn(store, materials, "raw"), "material in kms.db").toBeUndefined();
  expect(materialIn(printed, materials, "printed"), "material in output").toBeUndefined();
});

/**
 * Every key version's material, unwrapped as docs/FORMAT.md §4 says, a PKCS#8 key split into its
 * private members (its DER framing is the same for every key of its kind).
 */
async function materialsIn(path: string, rootKey: Buffer): Promise<[string, Buffer][]> {
  const store = SqliteKeyStore.open({ path });
  try {
    const out: [string, Buffer][] = [];
    for (const record of await store.listKeys({ limit: 100 })) {
      for (const { version, wrappedMaterial: w } of record.versions) {
        const decipher = createDecipheriv("aes-256-gcm", rootKey, w.subarray(9, 21));
        decipher.setAAD(Buffer.from(`kms/wrap/v1|${record.keyId}|${version}`));
        decipher.setAuthTag(w.subarray(w.length - 16));
        const material = Buffer.concat([
          decipher.update(w.subarray(21, w.length - 16)),
          decipher.final(),
        ]);
        const name = `${record.keySpec} v${version} ${record.keyId}`;
        if (record.keySpec === "SYMMETRIC_DEFAULT" || record.keySpec.startsWith("HMAC_")) {
          out.push([name, material]);
          continue;
        }
        const jwk = createPrivateKey({ key: material, format: "der", type: "pkcs8" }).export({
          format: "jwk",
        });
        for (const member of ["d", "p", "q", "dp", "dq", "qi"] as const) {
          const value = jwk[member];
          if (value !== undefined) out.push([`${name} ${member}`, Buffer.from(value, "base64url")]);
        }
      }
    }
    return out;
  } finally {
    await store.close();
  }
}

/**
 * The material any 16-byte run of which lies in `haystack`: as raw bytes, and for printed output
 * also as hex (either case) and base64 or base64url at each of the three byte alignments.
 */
function materialIn(
  haystack: Buffer,
  materials: readonly [string, Buffer][],
  how: "raw" | "printed",
): string | undefined {
  const text = how === "printed" ? haystack.toString("latin1") : "";
  for (const [name, material] of materials) {
    for (let at = 0; at + 16 <= material.length; at++) {
      const run = material.subarray(at, at + 16);
      if (haystack.includes(run)) return `${name} (raw, at ${at})`;
      if (how === "raw") continue;
      const hex = run.toString("hex");
      const encoded = [0, 1, 2].flatMap((skip) => {
        const aligned = run.subarray(skip, skip + 12);
        return [aligned.toString("base64"), aligned.toString("base64url")];
      });
      for (const form of [hex, hex.toUpperCase(), ...encoded]) {
        if (text.includes(form)) return `${name} (as ${form}, at ${at})`;
      }
    }
  }
  return undefined;
}
