/**
 * createKms({ principalTags }) is checked once, at creation: aws:PrincipalTag lookups ignore the
 * case of the key, so one principal holding `Team` and `team` would let whichever key the object
 * lists first decide a Deny. AWS refuses such a pair on one principal; so does createKms, with the
 * malformed entries (not an object, a value that is not a string) it used to pass on to evaluation.
 * A role and its session holding one key in two cases are two entries, merged per key
 * (docs/POLICY.md, "Roles and their sessions").
 */
import {
  AccessDeniedError,
  createKms,
  type Kms,
  type KmsOptions,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, test } from "vitest";

const ACCOUNT = "111122223333";
const ADMIN_ROOT = "arn:aws:iam::000000000000:root";
const ROLE = `arn:aws:iam::${ACCOUNT}:role/app`;
const SESSION = `arn:aws:sts::${ACCOUNT}:assumed-role/app/s1`;
const SESSION_2 = `arn:aws:sts::${ACCOUNT}:assumed-role/app/s2`;
const ALICE = `arn:aws:iam::${ACCOUNT}:user/alice`;
const plaintext = new TextEncoder().encode("principal tags");

type PrincipalTags = NonNullable<KmsOptions["principalTags"]>;

/** Lets a test hand createKms what a JavaScript caller or a parsed config file could. */
const junk = (value: unknown): PrincipalTags => value as PrincipalTags;

async function refusal(principalTags: PrincipalTags): Promise<ValidationError> {
  const error: unknown = await createKms({ clock: new ManualClock(), principalTags }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ValidationError);
  expect((error as ValidationError).code).toBe("ValidationException");
  return error as ValidationError;
}

describe("a tag key held twice in one entry, in two cases", () => {
  test("is refused at creation, naming the principal and both spellings", async () => {
    const error = await refusal({ [ALICE]: { dept: "x" }, [ROLE]: { Team: "a", team: "b" } });
    expect(error.message).toContain(ROLE);
    expect(error.message).toContain('"Team"');
    expect(error.message).toContain('"team"');
    // Neither value: the message says which keys clash, not what they hold.
    expect(error.message).not.toMatch(/"a"|"b"/);
  });

  test.each([
    ["lower case first", { team: "b", Team: "a" }, ["team", "Team"]],
    ["upper case", { Team: "a", TEAM: "b" }, ["Team", "TEAM"]],
    ["among other keys", { cost: "1", Team: "a", env: "p", tEaM: "b" }, ["Team", "tEaM"]],
    ["with empty values", { team: "", Team: "" }, ["team", "Team"]],
  ])("is refused with %s", async (_, entry, [first, second]) => {
    const error = await refusal({ [ROLE]: entry });
    expect(error.message).toContain(`"${first}"`);
    expect(error.message).toContain(`"${second}"`);
  });

  test("is refused in a session's entry, even when its role holds the key once", async () => {
    const error = await refusal({ [ROLE]: { team: "a" }, [SESSION]: { Team: "b", team: "c" } });
    expect(error.message).toContain(SESSION);
  });
});

describe("malformed principalTags", () => {
  test.each([
    ["null", null, /"principalTags" expected an object, got null/],
    ["an array", [], /"principalTags" expected an object, got array\(0\)/],
    ["a string", "team=blue", /"principalTags" expected an object, got string\(9\)/],
    ["an entry that is a string", { [ROLE]: "team=blue" }, /expected an object, got string/],
    ["an entry that is null", { [ROLE]: null }, /expected an object, got null/],
    ["an entry that is an array", { [ROLE]: [["team", "blue"]] }, /expected an object/],
    ["an entry that is bytes", { [ROLE]: new Uint8Array(4) }, /got Uint8Array\(4\)/],
    ["a number value", { [ROLE]: { team: 7 } }, /\["team"\]" expected a string, got 7/],
    ["a null value", { [ROLE]: { team: null } }, /\["team"\]" expected a string, got null/],
    ["an undefined value", { [ROLE]: { team: undefined } }, /expected a string, got undefined/],
    ["a list of values", { [ROLE]: { team: ["a", "b"] } }, /expected a string, got array\(2\)/],
  ])("is refused: %s", async (_, principalTags, message) => {
    const error = await refusal(junk(principalTags));
    expect(error.message).toMatch(message);
  });

  test("an entry's message names its principal", async () => {
    const error = await refusal(junk({ [ALICE]: { team: "blue" }, [ROLE]: { team: 1 } }));
    expect(error.message).toContain(`principalTags["${ROLE}"]["team"]`);
  });

  test.each([
    ["no principals", {}],
    ["an entry without tags", { [ROLE]: {} }],
    ["an empty value", { [ROLE]: { team: "" } }],
    ["an entry without a prototype", { [ROLE]: Object.assign(Object.create(null), { team: "a" }) }],
    [
      "one key per principal, in different cases",
      { [ROLE]: { Team: "a" }, [ALICE]: { team: "b" } },
    ],
  ])("is accepted: %s", async (_, principalTags) => {
    const kms = await createKms({ clock: new ManualClock(), principalTags });
    await kms.close();
  });
});

describe("accepted tags still decide", () => {
  let kms: Kms;
  let keyId: string;

  async function withPolicy(
    principalTags: PrincipalTags,
    ...statements: Record<string, unknown>[]
  ): Promise<void> {
    kms = await createKms({ clock: new ManualClock(), principalTags });
    keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.putKeyPolicy({
      keyId,
      policyName: "default",
      policy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: ADMIN_ROOT }, Action: "kms:*", Resource: "*" },
          { Effect: "Allow", Principal: "*", Action: "kms:Encrypt", Resource: "*" },
          ...statements,
        ],
      }),
    });
  }

  async function encryptAs(principal: string): Promise<"allowed" | "denied"> {
    try {
      await kms.encrypt({ keyId, plaintext }, { principal });
      return "allowed";
    } catch (error) {
      if (error instanceof AccessDeniedError) return "denied";
      throw error;
    }
  }

  const denyContractors = (key: string) => ({
    Sid: "DenyContractors",
    Effect: "Deny",
    Principal: "*",
    Action: "kms:Encrypt",
    Resource: "*",
    Condition: { StringEquals: { [`aws:PrincipalTag/${key}`]: "contractors" } },
  });

  test("a Deny by tag holds for the tagged principal only, whatever case the policy writes", async () => {
    for (const written of ["Team", "team", "TEAM"]) {
      await withPolicy(
        { [ROLE]: { Team: "contractors" }, [ALICE]: { team: "blue" } },
        denyContractors(written),
      );
      expect(await encryptAs(ROLE), written).toBe("denied");
      expect(await encryptAs(SESSION), written).toBe("denied");
      expect(await encryptAs(ALICE), written).toBe("allowed");
      await kms.close();
    }
  });

  test("a role's `Team` and its session's `team` are accepted, the session's winning", async () => {
    await withPolicy(
      { [ROLE]: { Team: "contractors" }, [SESSION]: { team: "blue" } },
      denyContractors("team"),
    );
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("denied");
    expect(await encryptAs(ROLE)).toBe("denied");
    await kms.close();
  });

  test("are the ones given at creation: editing the object afterwards changes nothing", async () => {
    const roleTags: Record<string, string> = { team: "contractors" };
    const aliceTags: Record<string, string> = { team: "blue" };
    const principalTags: Record<string, Record<string, string>> = {
      [ROLE]: roleTags,
      [ALICE]: aliceTags,
    };
    await withPolicy(principalTags, denyContractors("team"));
    delete roleTags.team;
    aliceTags.team = "contractors";
    principalTags[SESSION] = { team: "blue" };
    delete principalTags[ROLE];
    expect(await encryptAs(ROLE)).toBe("denied");
    expect(await encryptAs(SESSION)).toBe("denied");
    expect(await encryptAs(ALICE)).toBe("allowed");
    await kms.close();
  });
});
