// TEMPORARY profiling script (delete when done)
import { randomBytes } from "node:crypto";
import { DataKeyCache, decryptMessage, encryptMessage, RawAesKeyring } from "../../src/index.ts";

const keyring = new RawAesKeyring({ keyNamespace: "bench", keyName: "aes", wrappingKey: randomBytes(32) });
const cache = new DataKeyCache({ maxAgeMs: 600_000, maxMessages: 100_000_000, maxBytes: 2 ** 50 });
const context = { purpose: "bench", tenant: "acme" };
const mode = process.argv[2] ?? "enc";
const size = Number(process.argv[3] ?? 256);
const useCache = process.argv[4] === "cache";
const seconds = Number(process.argv[5] ?? 3);
const pt = randomBytes(size);
const opts = useCache ? { keyring, encryptionContext: context, dataKeyCache: cache } : { keyring, encryptionContext: context };
const msg = await encryptMessage(pt, { keyring, encryptionContext: context });
const dopts = useCache ? { keyring, dataKeyCache: cache } : { keyring };
async function once() {
  if (mode === "enc") await encryptMessage(pt, opts);
  else await decryptMessage(msg, dopts);
}
for (let i = 0; i < 2000; i++) await once();
let ops = 0;
const start = performance.now();
const end = start + seconds * 1000;
let now = start;
while (now < end) {
  for (let i = 0; i < 16; i++) await once();
  ops += 16;
  now = performance.now();
}
const us = ((now - start) * 1000) / ops;
console.log(`${mode} ${size} ${useCache ? "cache" : "nocache"}: ${us.toFixed(2)} µs/op, ${(size / us).toFixed(1)} MB/s`);
