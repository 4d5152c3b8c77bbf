/**
 * Signed administrative calls to a running demo (RFC 9421, the demo's admin HMAC key):
 *
 *   pnpm --filter @kms/demo-nest-typeorm admin shred clinic-b     # schedule key deletion
 *   pnpm --filter @kms/demo-nest-typeorm admin restore clinic-b   # cancel it
 *
 * It opens the demo's KMS as the server does (the key store in DEMO_DATA_DIR, default .data, or
 * the KMS server of KMS_ENDPOINT) to sign with the admin key, which never leaves the KMS; PORT as
 * for the server (3000).
 */
import { TenantConfigError } from "@kms/demo-shared";
import { createKmsSigner, signRequest } from "@kms/http-signatures";
import { configFromEnv, DemoConfigError } from "../src/config.ts";
import { ADMIN_KEY_ALIAS, ADMIN_KEY_ID, openDemoKms } from "../src/kms.ts";
import { KmsEndpointError } from "../src/remote-kms.ts";

const [action, clinic] = process.argv.slice(2);
if ((action !== "shred" && action !== "restore") || clinic === undefined) {
  console.error("usage: admin shred|restore <clinic>");
  process.exit(2);
}
let config: ReturnType<typeof configFromEnv>;
try {
  config = configFromEnv();
} catch (error) {
  if (
    !(
      error instanceof KmsEndpointError ||
      error instanceof DemoConfigError ||
      error instanceof TenantConfigError
    )
  ) {
    throw error;
  }
  console.error(error.message);
  process.exit(1);
}
const kms = await openDemoKms(config);
const base = `http://127.0.0.1:${config.port}/admin/clinics/${clinic}/key`;
const [method, url] = action === "shred" ? ["DELETE", base] : ["POST", `${base}/restore`];
const signer = createKmsSigner({
  kms: kms.crypto,
  keyId: ADMIN_KEY_ALIAS,
  algorithm: "hmac-sha256",
  publishedKeyId: ADMIN_KEY_ID,
});
const headers = await signRequest(
  { method, url, headers: {} },
  { signer, nonce: true, expiresIn: 60 },
);
try {
  const response = await fetch(url, { method, headers });
  console.log(response.status, await response.text());
  if (!response.ok) process.exitCode = 1;
} catch (error) {
  // Nothing listening: say where we looked, not a stack trace.
  const reason = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  console.error(`admin: no demo answered at ${url} (${String(reason)}); start it first, same PORT`);
  process.exitCode = 1;
} finally {
  await kms.close();
}
