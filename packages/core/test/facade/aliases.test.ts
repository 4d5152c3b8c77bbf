import {
  AlreadyExistsError,
  createKms,
  InvalidAliasNameError,
  InvalidStateError,
  type Kms,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ARN_PREFIX = "arn:aws:kms:local:000000000000";
const text = (s: string) => new TextEncoder().encode(s);

let clock: ManualClock;
let kms: Kms;
let keyId: string;
let otherKeyId: string;

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
  keyId = (await kms.createKey()).keyMetadata.keyId;
  otherKeyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("createAlias / updateAlias / deleteAlias / listAliases", () => {
  test("an alias is created, listed, moved and deleted", async () => {
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
    const listed = await kms.listAliases();
    expect(listed).toEqual({
      aliases: [
        {
          aliasName: "alias/app",
          aliasArn: `${ARN_PREFIX}:alias/app`,
          targetKeyId: keyId,
          creationDate: new Date(clock.now()),
          lastUpdatedDate: new Date(clock.now()),
        },
      ],
      truncated: false,
    });
    clock.advanceDays(1);
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: otherKeyId });
    const [moved] = (await kms.listAliases()).aliases;
    expect(moved?.targetKeyId).toBe(otherKeyId);
    expect(moved?.lastUpdatedDate.getTime()).toBe(clock.now());
    expect(moved?.creationDate.getTime()).toBe(clock.now() - 86_400_000);
    expect((await kms.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(otherKeyId);
    await kms.deleteAlias({ aliasName: "alias/app" });
    expect((await kms.listAliases()).aliases).toEqual([]);
    await expect(kms.describeKey({ keyId: "alias/app" })).rejects.toBeInstanceOf(NotFoundError);
    // Deleting an alias leaves its key alone.
    expect((await kms.describeKey({ keyId: otherKeyId })).keyMetadata.keyState).toBe("Enabled");
  });

  test("the target may be a key ARN", async () => {
    await kms.createAlias({ aliasName: "alias/by-arn", targetKeyId: `${ARN_PREFIX}:key/${keyId}` });
    await kms.updateAlias({
      aliasName: "alias/by-arn",
      targetKeyId: `${ARN_PREFIX}:key/${otherKeyId}`,
    });
    expect((await kms.listAliases()).aliases[0]?.targetKeyId).toBe(otherKeyId);
  });

  test("an existing name → AlreadyExistsError, and the alias keeps its target", async () => {
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
    const error = await kms
      .createAlias({ aliasName: "alias/app", targetKeyId: otherKeyId })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AlreadyExistsError);
    expect((error as AlreadyExistsError).code).toBe("AlreadyExistsException");
    expect((await kms.listAliases()).aliases[0]?.targetKeyId).toBe(keyId);
  });

  test.each(["alias/aws/s3", "alias/aws/x"])(
    "reserved %s → InvalidAliasNameError",
    async (name) => {
      await expect(kms.createAlias({ aliasName: name, targetKeyId: keyId })).rejects.toBeInstanceOf(
        InvalidAliasNameError,
      );
    },
  );

  test.each([
    "alias/",
    "alias/has space",
    "alias/ümlaut",
    "alias/semi;colon",
    `alias/${"a".repeat(251)}`,
  ])("%s → InvalidAliasNameError", async (name) => {
    await expect(kms.createAlias({ aliasName: name, targetKeyId: keyId })).rejects.toBeInstanceOf(
      InvalidAliasNameError,
    );
  });

  test("256 characters with allowed punctuation is a valid name", async () => {
    const name = `alias/a:b/c_d-${"e".repeat(256 - 14)}`;
    expect(name).toHaveLength(256);
    await kms.createAlias({ aliasName: name, targetKeyId: keyId });
    expect((await kms.describeKey({ keyId: name })).keyMetadata.keyId).toBe(keyId);
  });

  test.each(["app", "Alias/app", "", "aliases/app"])(
    "name %j without the alias/ prefix → ValidationError",
    async (name) => {
      await expect(kms.createAlias({ aliasName: name, targetKeyId: keyId })).rejects.toBeInstanceOf(
        ValidationError,
      );
    },
  );

  test("a target given as alias name or alias ARN → ValidationError", async () => {
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
    for (const target of ["alias/app", `${ARN_PREFIX}:alias/app`]) {
      await expect(
        kms.createAlias({ aliasName: "alias/second", targetKeyId: target }),
      ).rejects.toBeInstanceOf(ValidationError);
      await expect(
        kms.updateAlias({ aliasName: "alias/app", targetKeyId: target }),
      ).rejects.toBeInstanceOf(ValidationError);
    }
  });

  test("a target key that does not exist → NotFoundError", async () => {
    await expect(
      kms.createAlias({
        aliasName: "alias/app",
        targetKeyId: "00000000-0000-4000-8000-000000000000",
      }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  test("updateAlias to a key pending deletion → InvalidStateError; from one is allowed", async () => {
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
    await kms.scheduleKeyDeletion({ keyId: otherKeyId });
    await expect(
      kms.updateAlias({ aliasName: "alias/app", targetKeyId: otherKeyId }),
    ).rejects.toBeInstanceOf(InvalidStateError);
    expect((await kms.listAliases()).aliases[0]?.targetKeyId).toBe(keyId);
    await kms.scheduleKeyDeletion({ keyId });
    const third = (await kms.createKey()).keyMetadata.keyId;
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: third });
    expect((await kms.listAliases()).aliases[0]?.targetKeyId).toBe(third);
  });

  test("updateAlias / deleteAlias of an alias that does not exist → NotFoundError", async () => {
    await expect(
      kms.updateAlias({ aliasName: "alias/none", targetKeyId: keyId }),
    ).rejects.toBeInstanceOf(NotFoundError);
    await expect(kms.deleteAlias({ aliasName: "alias/none" })).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test("listAliases filters by keyId (key id or key ARN)", async () => {
    await kms.createAlias({ aliasName: "alias/a", targetKeyId: keyId });
    await kms.createAlias({ aliasName: "alias/b", targetKeyId: otherKeyId });
    await kms.createAlias({ aliasName: "alias/c", targetKeyId: keyId });
    const names = async (filter: string) =>
      (await kms.listAliases({ keyId: filter })).aliases.map((a) => a.aliasName);
    expect(await names(keyId)).toEqual(["alias/a", "alias/c"]);
    expect(await names(`${ARN_PREFIX}:key/${otherKeyId}`)).toEqual(["alias/b"]);
    await expect(
      kms.listAliases({ keyId: "00000000-0000-4000-8000-000000000000" }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  test("listAliases pages with limit and marker, in name order, without repeats", async () => {
    const created = Array.from({ length: 7 }, (_, i) => `alias/n${i}`);
    for (const name of [...created].reverse()) {
      await kms.createAlias({ aliasName: name, targetKeyId: keyId });
    }
    const seen: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await kms.listAliases({ limit: 3, ...(marker ? { marker } : {}) });
      pages++;
      expect(page.truncated).toBe(page.nextMarker !== undefined);
      seen.push(...page.aliases.map((a) => a.aliasName));
      marker = page.nextMarker;
    } while (marker !== undefined);
    expect(pages).toBe(3);
    expect(seen).toEqual(created);
    // Filtered listings page too.
    const filtered = await kms.listAliases({ keyId, limit: 7 });
    expect(filtered.truncated).toBe(false);
    expect(filtered.aliases).toHaveLength(7);
  });

  test.each([
    [0, false],
    [1, true],
    [100, true],
    [101, false],
  ])("listAliases limit %i accepted: %s", async (limit, ok) => {
    const call = kms.listAliases({ limit });
    if (ok) await expect(call).resolves.toBeDefined();
    else await expect(call).rejects.toBeInstanceOf(ValidationError);
  });

  test("listAliases with an invalid marker → InvalidMarkerException", async () => {
    await expect(kms.listAliases({ marker: "%%%" })).rejects.toMatchObject({
      code: "InvalidMarkerException",
    });
  });
});

describe("key references", () => {
  const FORMS = ["key id", "key ARN", "alias name", "alias ARN"] as const;
  type Form = (typeof FORMS)[number];

  function reference(form: Form, id: string): string {
    switch (form) {
      case "key id":
        return id;
      case "key ARN":
        return `${ARN_PREFIX}:key/${id}`;
      case "alias name":
        return "alias/ref";
      case "alias ARN":
        return `${ARN_PREFIX}:alias/ref`;
    }
  }

  /** Every operation taking `keyId`; each returns something that shows it used the right key. */
  const OPERATIONS: Record<string, (kms: Kms, ref: string, id: string) => Promise<void>> = {
    describeKey: async (k, ref, id) => {
      expect((await k.describeKey({ keyId: ref })).keyMetadata.keyId).toBe(id);
    },
    encrypt: async (k, ref, id) => {
      const { ciphertextBlob } = await k.encrypt({ keyId: ref, plaintext: text("p") });
      expect((await k.decrypt({ ciphertextBlob, keyId: id })).keyId).toContain(id);
    },
    decrypt: async (k, ref, id) => {
      const { ciphertextBlob } = await k.encrypt({ keyId: id, plaintext: text("p") });
      expect((await k.decrypt({ ciphertextBlob, keyId: ref })).keyId).toContain(id);
    },
    reEncrypt: async (k, ref, id) => {
      const { ciphertextBlob } = await k.encrypt({ keyId: id, plaintext: text("p") });
      const moved = await k.reEncrypt({ ciphertextBlob, sourceKeyId: ref, destinationKeyId: ref });
      expect(moved.keyId).toContain(id);
      expect(moved.sourceKeyId).toContain(id);
    },
    generateDataKey: async (k, ref, id) => {
      expect((await k.generateDataKey({ keyId: ref, keySpec: "AES_256" })).keyId).toContain(id);
    },
    generateDataKeyWithoutPlaintext: async (k, ref, id) => {
      const dk = await k.generateDataKeyWithoutPlaintext({ keyId: ref, numberOfBytes: 8 });
      expect(dk.keyId).toContain(id);
    },
    updateKeyDescription: async (k, ref, id) => {
      await k.updateKeyDescription({ keyId: ref, description: "via ref" });
      expect((await k.describeKey({ keyId: id })).keyMetadata.description).toBe("via ref");
    },
    "disableKey/enableKey": async (k, ref, id) => {
      await k.disableKey({ keyId: ref });
      expect((await k.describeKey({ keyId: id })).keyMetadata.keyState).toBe("Disabled");
      await k.enableKey({ keyId: ref });
      expect((await k.describeKey({ keyId: id })).keyMetadata.keyState).toBe("Enabled");
    },
    "scheduleKeyDeletion/cancelKeyDeletion": async (k, ref, id) => {
      expect((await k.scheduleKeyDeletion({ keyId: ref })).keyId).toContain(id);
      expect((await k.cancelKeyDeletion({ keyId: ref })).keyId).toContain(id);
      expect((await k.describeKey({ keyId: id })).keyMetadata.keyState).toBe("Disabled");
    },
    "enableKeyRotation/getKeyRotationStatus/disableKeyRotation": async (k, ref, id) => {
      await k.enableKeyRotation({ keyId: ref });
      const status = await k.getKeyRotationStatus({ keyId: ref });
      expect(status.keyRotationEnabled).toBe(true);
      expect(status.keyId).toContain(id);
      await k.disableKeyRotation({ keyId: ref });
      expect((await k.getKeyRotationStatus({ keyId: id })).keyRotationEnabled).toBe(false);
    },
    "rotateKeyOnDemand/listKeyRotations": async (k, ref, id) => {
      await k.rotateKeyOnDemand({ keyId: ref });
      expect((await k.listKeyRotations({ keyId: ref })).rotations[0]?.keyId).toContain(id);
    },
    "tagResource/listResourceTags/untagResource": async (k, ref, id) => {
      await k.tagResource({ keyId: ref, tags: [{ tagKey: "t", tagValue: "v" }] });
      expect((await k.listResourceTags({ keyId: id })).tags).toEqual([
        { tagKey: "t", tagValue: "v" },
      ]);
      expect((await k.listResourceTags({ keyId: ref })).tags).toHaveLength(1);
      await k.untagResource({ keyId: ref, tagKeys: ["t"] });
      expect((await k.listResourceTags({ keyId: id })).tags).toEqual([]);
    },
  };

  /** Taking a key id or key ARN only, as in AWS: see key-id-only.test.ts. */
  const KEY_ID_ONLY = new Set([
    "updateKeyDescription",
    "disableKey/enableKey",
    "scheduleKeyDeletion/cancelKeyDeletion",
    "enableKeyRotation/getKeyRotationStatus/disableKeyRotation",
    "rotateKeyOnDemand/listKeyRotations",
    "tagResource/listResourceTags/untagResource",
  ]);
  const byAlias = (form: Form): boolean => form === "alias name" || form === "alias ARN";

  const cases = Object.keys(OPERATIONS).flatMap((operation) =>
    FORMS.map((form) => ({ operation, form })),
  );

  test.each(cases.filter(({ operation, form }) => !(KEY_ID_ONLY.has(operation) && byAlias(form))))(
    "$operation accepts the $form",
    async ({ operation, form }) => {
      // The alias points to `keyId`; `otherKeyId` exists so that a wrong resolution would show.
      await kms.createAlias({ aliasName: "alias/ref", targetKeyId: keyId });
      await OPERATIONS[operation]!(kms, reference(form, keyId), keyId);
    },
  );

  test.each(cases.filter(({ operation, form }) => KEY_ID_ONLY.has(operation) && byAlias(form)))(
    "$operation refuses the $form: NotFoundError, the key unchanged",
    async ({ operation, form }) => {
      await kms.createAlias({ aliasName: "alias/ref", targetKeyId: keyId });
      await expect(
        OPERATIONS[operation]!(kms, reference(form, keyId), keyId),
      ).rejects.toBeInstanceOf(NotFoundError);
      expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("Enabled");
    },
  );

  test.each([
    ["another account", `arn:aws:kms:local:111111111111:key/KEY`],
    ["another region", `arn:aws:kms:eu-west-1:000000000000:key/KEY`],
    ["another partition", `arn:aws-cn:kms:local:000000000000:key/KEY`],
    ["another service", `arn:aws:s3:local:000000000000:key/KEY`],
    ["another account (alias)", `arn:aws:kms:local:111111111111:alias/ref`],
    ["another region (alias)", `arn:aws:kms:us-east-1:000000000000:alias/ref`],
  ])("an ARN of %s → NotFoundError", async (_name, template) => {
    await kms.createAlias({ aliasName: "alias/ref", targetKeyId: keyId });
    const arn = template.replace("KEY", keyId);
    await expect(kms.describeKey({ keyId: arn })).rejects.toBeInstanceOf(NotFoundError);
    await expect(kms.encrypt({ keyId: arn, plaintext: text("p") })).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test.each([
    ["an unknown key id", "00000000-0000-4000-8000-000000000000"],
    ["an unknown alias", "alias/none"],
    ["a malformed key id", "not-a-uuid"],
    ["an ARN with a malformed key id", `${ARN_PREFIX}:key/not-a-uuid`],
  ])("%s → NotFoundError", async (_name, ref) => {
    await expect(kms.describeKey({ keyId: ref })).rejects.toBeInstanceOf(NotFoundError);
  });
});
