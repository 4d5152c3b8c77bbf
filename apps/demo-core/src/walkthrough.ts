import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createKms, isKmsError, RootKeySource } from "@kms/core";
import { SqliteAuditSink, SqliteKeyStore } from "@kms/keystore-sqlite";

const text = new TextEncoder();
const untext = new TextDecoder();

/** Prints a line; the demo test reads the same lines. */
export type Print = (line: string) => void;

function failure(error: unknown): string {
  return isKmsError(error) ? `${error.code}: ${error.message}` : String(error);
}

/**
 * The main demo: a key's life on the durable embedded store — create, encrypt with an
 * encryption context, rotate, decrypt the old ciphertext, see the context and key-state rules
 * refuse what they must, schedule deletion, and read it all back from the audit trail.
 */
export async function walkthrough(folder: string, print: Print): Promise<void> {
  mkdirSync(folder, { recursive: true });
  const path = join(folder, "keys.db");
  const store = SqliteKeyStore.open({ path });
  const kms = await createKms({
    store,
    // The default trail lives in memory and dies with the process; this one is kept (and
    // hash-chained) in the key store's file, across runs.
    audit: new SqliteAuditSink({ path }),
    // Development only: a root key created next to the store. Production passes fromEnv/fromFile.
    rootKey: RootKeySource.devFile(join(folder, "root.key")),
  });
  try {
    print(`key store: ${store.description}`);

    const { keyMetadata } = await kms.createKey({
      description: "patient records",
      tags: [{ tagKey: "team", tagValue: "records" }],
    });
    const keyId = keyMetadata.keyId;
    const alias = `alias/demo-${keyId.slice(0, 8)}`;
    await kms.createAlias({ aliasName: alias, targetKeyId: keyId });
    print(`1. created key ${keyMetadata.arn} (${keyMetadata.keySpec}), alias ${alias}`);

    const context = { tenant: "acme", table: "patients", column: "ssn" };
    const secret = text.encode("123-45-6789");
    const first = await kms.encrypt({
      keyId: alias,
      plaintext: secret,
      encryptionContext: context,
    });
    print(
      `2. encrypted ${secret.length} bytes under ${alias} with context ${JSON.stringify(context)}: ` +
        `${first.ciphertextBlob.length}-byte blob ${Buffer.from(first.ciphertextBlob).toString("base64").slice(0, 32)}…`,
    );

    await kms.rotateKeyOnDemand({ keyId });
    const { rotations } = await kms.listKeyRotations({ keyId });
    print(
      `3. rotated the key: ${rotations.length} rotation(s), new material ${rotations[0]?.keyMaterialId.slice(0, 16)}…`,
    );

    const second = await kms.encrypt({ keyId, plaintext: secret, encryptionContext: context });
    const old = await kms.decrypt({
      ciphertextBlob: first.ciphertextBlob,
      encryptionContext: context,
    });
    const fresh = await kms.decrypt({
      ciphertextBlob: second.ciphertextBlob,
      encryptionContext: context,
    });
    print(
      `4. decrypted the pre-rotation ciphertext: "${untext.decode(old.plaintext)}" ` +
        `(material ${old.keyMaterialId?.slice(0, 16)}…); the new one uses ${fresh.keyMaterialId?.slice(0, 16)}…`,
    );

    try {
      await kms.decrypt({
        ciphertextBlob: first.ciphertextBlob,
        encryptionContext: { ...context, tenant: "globex" },
      });
      print("5. UNEXPECTED: another tenant's context decrypted the value");
    } catch (error) {
      print(`5. another tenant's context is refused: ${failure(error)}`);
    }

    await kms.disableKey({ keyId });
    try {
      await kms.decrypt({ ciphertextBlob: first.ciphertextBlob, encryptionContext: context });
      print("6. UNEXPECTED: a disabled key decrypted");
    } catch (error) {
      print(`6. disabled the key; decrypt is refused: ${failure(error)}`);
    }

    await kms.enableKey({ keyId });
    const scheduled = await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    print(
      `7. re-enabled, then scheduled deletion for ${scheduled.deletionDate.toISOString()} (state ${scheduled.keyState})`,
    );
    await kms.cancelKeyDeletion({ keyId });
    const { keyMetadata: after } = await kms.describeKey({ keyId });
    // As in AWS KMS, a cancelled deletion leaves the key Disabled until it is enabled again.
    print(
      `8. cancelled the deletion: the key is ${after.keyState} (enable it to use it again), its ciphertexts are safe`,
    );

    // listKeys answers a page (100 keys by default): count them all.
    let keyCount = 0;
    let marker: string | undefined;
    do {
      const page = await kms.listKeys({ limit: 1000, ...(marker === undefined ? {} : { marker }) });
      keyCount += page.keys.length;
      marker = page.truncated ? page.nextMarker : undefined;
    } while (marker !== undefined);
    print(`9. the store in ${folder} now holds ${keyCount} key(s); run the demo again to add more`);

    const verified = await kms.audit.verify();
    const trail = verified.ok
      ? `${verified.count} event(s), hash chain intact`
      : `hash chain BROKEN at event ${verified.index} (${verified.problem})`;
    // Refused calls are recorded too, with their error code (never the plaintext).
    const refused = (await kms.audit.events())
      .filter((event) => event.errorCode !== undefined)
      .filter((event) => event.resources.some((resource) => resource.ARN === keyMetadata.arn))
      .map((event) => `${event.eventName} ${event.errorCode}`);
    print(
      `10. the audit trail in ${path}: ${trail}; this key's refused calls: ${refused.join(", ")}`,
    );
  } finally {
    await kms.close();
  }
}
