/** AWS's quota of 50 aliases per KMS key, for createAlias and for updateAlias onto a key. */
import { describe, expect, it } from "vitest";
import { createKms, LimitExceededError } from "../src/index.ts";

describe("aliases per key", () => {
  it("refuses the 51st alias of a key, created or moved onto it, and frees room on delete", async () => {
    const kms = await createKms({ audit: false });
    const full = (await kms.createKey()).keyMetadata.keyId;
    const other = (await kms.createKey()).keyMetadata.keyId;
    for (let i = 0; i < 50; i++) {
      await kms.createAlias({ aliasName: `alias/full-${i}`, targetKeyId: full });
    }
    await expect(
      kms.createAlias({ aliasName: "alias/full-50", targetKeyId: full }),
    ).rejects.toBeInstanceOf(LimitExceededError);
    await kms.createAlias({ aliasName: "alias/elsewhere", targetKeyId: other });
    await expect(
      kms.updateAlias({ aliasName: "alias/elsewhere", targetKeyId: full }),
    ).rejects.toBeInstanceOf(LimitExceededError);
    // Re-pointing one of its own aliases at the same key is no new alias.
    await kms.updateAlias({ aliasName: "alias/full-0", targetKeyId: full });

    await kms.deleteAlias({ aliasName: "alias/full-0" });
    await kms.updateAlias({ aliasName: "alias/elsewhere", targetKeyId: full });
    const listed = await kms.listAliases({ keyId: full, limit: 100 });
    expect(listed.aliases).toHaveLength(50);
  });
});
