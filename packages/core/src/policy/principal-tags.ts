/**
 * aws:PrincipalTag: the tags `createKms({ principalTags })` gives a principal. A role session
 * (`arn:<partition>:sts::<account>:assumed-role/<role>/<session>`) has its role's tags and its
 * own, as AWS merges a role's IAM tags with the session tags passed to AssumeRole: the session's
 * entry wins for a key it holds in any case, the role's answers for every other key.
 */
import { ValidationError } from "../errors.ts";
import { assertObject, describe } from "../internal/assert.ts";
import { roleArnOf } from "./evaluate.ts";

/** Principal ARN → tag key → value. */
export type PrincipalTags = Readonly<Record<string, Readonly<Record<string, string>>>>;

/**
 * Checks `createKms({ principalTags })` once, at creation, so that evaluation never meets an entry
 * it cannot read one way: every entry an object, every value a string, and no tag key twice in one
 * entry in two cases. Lookups ignore case, so `{ Team: "a", team: "b" }` would answer whichever
 * key the object happens to list first. AWS keeps no such pair on one principal (STS AssumeRole
 * `Tags`: keys are case-insensitive, so `Department` and `department` are one key). A session and its
 * role holding one key in two cases are two entries, and merge as documented.
 * @throws ValidationError naming the principal and the offending key or keys.
 */
export function assertPrincipalTags(value: unknown): void {
  const tags = assertObject("principalTags", value);
  for (const [principal, entry] of Object.entries(tags)) {
    const name = `principalTags[${JSON.stringify(principal)}]`;
    const byLowerKey = new Map<string, string>();
    for (const [key, tagValue] of Object.entries(assertObject(name, entry))) {
      if (typeof tagValue !== "string") {
        throw new ValidationError(
          `"${name}[${JSON.stringify(key)}]" expected a string, got ${describe(tagValue)}`,
        );
      }
      const lower = key.toLowerCase();
      const first = byLowerKey.get(lower);
      if (first !== undefined) {
        throw new ValidationError(
          `"${name}" holds the tag key ${JSON.stringify(first)} twice, also as ` +
            `${JSON.stringify(key)}: tag keys of one principal are unique in any case, as in AWS`,
        );
      }
      byLowerKey.set(lower, key);
    }
  }
}

/**
 * The value of the tag named `name` (in any case) of `principal`, or undefined when it has no such
 * tag. An empty value is a value: a session tagged `team: ""` overrides its role's `team`, and the
 * key is present for `Null`, as AWS reads a tag without a value.
 */
export function principalTag(
  tags: PrincipalTags,
  principal: string,
  name: string,
): string | undefined {
  const own = tagOf(tags, principal, name);
  if (own !== undefined) return own;
  // Without this a Deny reading the role's tag (`team` is `contractors`) would spare every session
  // of the role: the key would be absent, and a positive operator false.
  const role = roleArnOf(principal);
  return role === undefined ? undefined : tagOf(tags, role, name);
}

function tagOf(tags: PrincipalTags, principal: string, name: string): string | undefined {
  // Own entries only: `principalTags` is a plain object, which also answers "constructor".
  if (!Object.hasOwn(tags, principal)) return undefined;
  const lower = name.toLowerCase();
  for (const [key, value] of Object.entries(tags[principal]!)) {
    if (key.toLowerCase() === lower) return value;
  }
  return undefined;
}
