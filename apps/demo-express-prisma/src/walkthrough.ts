import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { TenantDirectory } from "@kms/demo-shared";
import { createApp } from "./app.ts";
import type { DemoDatabase } from "./database.ts";
import type { DemoKms } from "./kms.ts";
import { recordsClient, scheduleTenantKeyDeletion } from "./records.ts";

/** The walkthrough cannot go on: a step every later one needs failed (the message says which). */
export class WalkthroughStoppedError extends Error {
  override readonly name = "WalkthroughStoppedError";
}

/**
 * A scripted walk through the API: what the API returns beside what the database stores,
 * tenant isolation, tamper detection, and crypto-shredding one clinic. Its two clinics are new
 * on every run (the last step shreds one), each with a random bearer token of its own.
 */
export async function walkthrough(
  database: DemoDatabase,
  kms: DemoKms,
  log: (line: string) => void,
): Promise<void> {
  const run = randomBytes(2).toString("hex");
  const clinicA = `clinic-a-${run}`;
  const clinicB = `clinic-b-${run}`;
  const tokens: Record<string, string> = {
    [clinicA]: randomBytes(24).toString("base64url"),
    [clinicB]: randomBytes(24).toString("base64url"),
  };
  const { db, engine } = recordsClient(database.base, kms.crypto);
  const tenants = new TenantDirectory(tokens);
  const server = createApp({ db, kms: kms.keys, tenants }).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  /** A request with `tenant`'s token, or with `token` itself when it is no clinic's. */
  const call = async (tenant: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${tokens[tenant] ?? tenant}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? undefined : (JSON.parse(text) as unknown),
    };
  };
  const show = (label: string, value: unknown) =>
    log(`${label}\n${JSON.stringify(value, null, 2)}\n`);
  try {
    log(`KMS: ${kms.description}`);
    log(
      `Database: ${database.kind}; clinics ${clinicA} and ${clinicB}, one KMS key and one bearer token each.\n`,
    );
    const ann = await call(clinicA, "POST", "/patients", {
      ssn: "123-45-6789",
      name: "Ann Example",
      note: "Allergic to penicillin.",
      vitals: { bp: "120/80", pulse: 64 },
    });
    const bob = await call(clinicA, "POST", "/patients", {
      ssn: "987-65-4321",
      name: "Bob Example",
    });
    const cy = await call(clinicB, "POST", "/patients", { ssn: "123-45-6789", name: "Cy Other" });
    // Every later step reads these rows; without them it would print a page of failures.
    const failed = [ann, bob, cy].find((created) => created.status !== 201);
    if (failed !== undefined) {
      show(`POST /patients → ${failed.status}`, failed.body);
      throw new WalkthroughStoppedError(
        `the walkthrough stopped: creating a patient answered ${failed.status}; check the KMS (${kms.description})`,
      );
    }
    show(`POST /patients as ${clinicA} → ${ann.status}`, ann.body);
    const annId = (ann.body as { id: string }).id;
    const bobId = (bob.body as { id: string }).id;
    const cyId = (cy.body as { id: string }).id;
    show(
      "What the database stores for that row (read with the driver):",
      await database.storedPatient(annId),
    );
    show(
      `GET /patients?ssn=123-45-6789 as ${clinicA} (deterministic encryption: equality works)`,
      (await call(clinicA, "GET", "/patients?ssn=123-45-6789")).body,
    );
    show(
      `Same SSN as ${clinicB}: its own patient only (keys differ per clinic)`,
      (await call(clinicB, "GET", "/patients?ssn=123-45-6789")).body,
    );
    const cross = await call(clinicB, "GET", `/patients/${annId}`);
    show(`GET /patients/${annId} as ${clinicB} → ${cross.status}`, cross.body);
    // The clinic is the one the token belongs to: a request cannot name another clinic, nor
    // one outside the list (which would otherwise get a KMS key of its own).
    const stranger = await call(randomBytes(24).toString("base64url"), "GET", "/patients");
    show(`GET /patients with a token of no clinic → ${stranger.status}`, stranger.body);
    const stolen = (await database.storedPatient(annId))?.name;
    await database.overwriteStored(cyId, "name", stolen);
    const tampered = await call(clinicB, "GET", `/patients/${cyId}`);
    show(
      `${clinicA}'s encrypted name copied into ${clinicB}'s row, then GET as ${clinicB} → ${tampered.status}`,
      tampered.body,
    );
    const bobName = (await database.storedPatient(bobId))?.name;
    await database.overwriteStored(bobId, "name", (await database.storedPatient(annId))?.name);
    const moved = await call(clinicA, "GET", `/patients/${bobId}`);
    show(
      `Ann's encrypted name copied into Bob's row of the same clinic (bound to each row's recordId), then GET → ${moved.status}`,
      moved.body,
    );
    await database.overwriteStored(bobId, "name", bobName);
    // The unique index on (tenantId, ssn) refuses two equal SSNs in a clinic even for a moment,
    // so a writer swapping them parks one first.
    const swapSsns = async (first: unknown, second: unknown) => {
      await database.overwriteStored(bobId, "ssn", "parked");
      await database.overwriteStored(annId, "ssn", first);
      await database.overwriteStored(bobId, "ssn", second);
    };
    const annSsn = (await database.storedPatient(annId))?.ssn;
    const bobSsn = (await database.storedPatient(bobId))?.ssn;
    await swapSsns(bobSsn, annSsn);
    const swapped = await call(clinicA, "GET", `/patients/${annId}`);
    show(
      `Ann's and Bob's encrypted SSNs swapped (both still decrypt, but each row's ssnOfRecord no longer matches), then GET → ${swapped.status}`,
      swapped.body,
    );
    await swapSsns(annSsn, bobSsn);
    await call(clinicB, "DELETE", `/patients/${cyId}`);
    await call(clinicB, "POST", "/patients", { ssn: "555-55-5555", name: "Dee Other" });
    await scheduleTenantKeyDeletion(kms.keys, clinicB);
    engine.clearCache();
    const shredded = await call(clinicB, "GET", "/patients");
    show(
      `${clinicB}'s KMS key scheduled for deletion → GET /patients as ${clinicB} → ${shredded.status}`,
      shredded.body,
    );
    const still = await call(clinicA, "GET", "/patients");
    show(`…while ${clinicA} still reads its records → ${still.status}`, still.body);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}
