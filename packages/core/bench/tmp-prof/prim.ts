// TEMPORARY (delete when done)
import { createCipheriv, createHmac, createSecretKey, hkdfSync, randomBytes } from "node:crypto";
const dk = randomBytes(32); const salt = randomBytes(32); const info = Buffer.from("KMSMSG1 KEYS\x00\x01");
const ko = createSecretKey(dk);
function t(name: string, f: () => unknown) {
  for (let i = 0; i < 20000; i++) f();
  const n = 200000; const s = performance.now();
  for (let i = 0; i < n; i++) f();
  console.log(name.padEnd(40), (((performance.now() - s) * 1000) / n).toFixed(2), "µs");
}
t("hkdfSync(raw buffer)", () => hkdfSync("sha512", dk, salt, info, 64));
t("hkdfSync(createSecretKey)", () => hkdfSync("sha512", createSecretKey(dk), salt, info, 64));
t("hkdfSync(prebuilt KeyObject)", () => hkdfSync("sha512", ko, salt, info, 64));
t("hmac x2 (hkdf manual)", () => { const prk = createHmac("sha512", salt).update(dk).digest(); return createHmac("sha512", prk).update(info).update(Buffer.of(1)).digest(); });
t("createSecretKey", () => createSecretKey(dk));
const iv = Buffer.alloc(12); const pt = randomBytes(256);
t("gcm raw key 256B", () => { const c = createCipheriv("aes-256-gcm", dk, iv); c.update(pt); c.final(); return c.getAuthTag(); });
t("gcm KeyObject 256B", () => { const c = createCipheriv("aes-256-gcm", ko, iv); c.update(pt); c.final(); return c.getAuthTag(); });
t("gcm raw key opts", () => { const c = createCipheriv("aes-256-gcm", dk, iv, { authTagLength: 16 }); c.update(pt); c.final(); return c.getAuthTag(); });
t("gcm raw key empty+aad", () => { const c = createCipheriv("aes-256-gcm", dk, iv); c.setAAD(pt); c.final(); return c.getAuthTag(); });
t("createCipheriv only", () => createCipheriv("aes-256-gcm", dk, iv));
