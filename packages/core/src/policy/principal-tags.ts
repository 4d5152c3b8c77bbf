/**
 * aws:PrincipalTag: the tags `createKms({ principalTags })` gives a principal. A role session
 * (`arn:<partition>:sts::<account>:assumed-role/<role>/<session>`) has its role's tags and its
 * own, as AWS merges a role's IAM tags with the session tags passed to AssumeRole: the session's
 * entry wins for a key it holds in any case, the role's answers for every other key.
 */
import { ValidationError } from "../errors.ts";
import { assertObject, describe } from "../internal/assert.ts";
import { roleArnOf } from "./evaluate.ts";

/** Principal ARN → tag key → value, as `createKms` takes it. */
export type PrincipalTags = Readonly<Record<string, Readonly<Record<string, string>>>>;

/**
 * Principal ARN → lowercased tag key → value: a copy taken at creation, so that a caller who later
 * edits the object passed to `createKms` cannot change what a running KMS authorizes.
 */
export type PrincipalTagIndex = ReadonlyMap<string, ReadonlyMap<string, string>>;

/**
 * Reads `createKms({ principalTags })` once, at creation, so that evaluation never meets an entry
 * it cannot read one way: every entry an object, every value a string, and no tag key twice in one
 * entry in two cases. Lookups ignore case, so `{ Team: "a", team: "b" }` would answer whichever
 * key the object happens to list first. AWS keeps no such pair on one principal (STS AssumeRole
 * `Tags`: keys are case-insensitive, so `Department` and `department` are one key). A session and its
 * role holding one key in two cases are two entries, and merge as documented.
 * @throws ValidationError naming the principal and the offending key or keys.
 */
export function indexPrincipalTags(value: unknown): PrincipalTagIndex {
  const tags = assertObject("principalTags", value);
  const index = new Map<string, ReadonlyMap<string, string>>();
  for (const [principal, entry] of Object.entries(tags)) {
    const name = `principalTags[${JSON.stringify(principal)}]`;
    const byLowerKey = new Map<string, string>();
    const spelling = new Map<string, string>();
    for (const [key, tagValue] of Object.entries(assertObject(name, entry))) {
      if (typeof tagValue !== "string") {
        throw new ValidationError(
          `"${name}[${JSON.stringify(key)}]" expected a string, got ${describe(tagValue)}`,
        );
      }
      const lower = key.toLowerCase();
      const first = spelling.get(lower);
      if (first !== undefined) {
        throw new ValidationError(
          `"${name}" holds the tag key ${JSON.stringify(first)} twice, also as ` +
            `${JSON.stringify(key)}: tag keys of one principal are unique in any case, as in AWS`,
        );
      }
      spelling.set(lower, key);
      byLowerKey.set(lower, tagValue);
    }
    index.set(principal, byLowerKey);
  }
  return index;
}

/**
 * The value of the tag named `name` (in any case) of `principal`, or undefined when it has no such
 * tag. An empty value is a value: a session tagged `team: ""` overrides its role's `team`, and the
 * key is present for `Null`, as AWS reads a tag without a value.
 */
export function principalTag(
  tags: PrincipalTagIndex,
  principal: string,
  name: string,
): string | undefined {
  const lower = name.toLowerCase();
  const own = tags.get(principal)?.get(lower);
  if (own !== undefined) return own;
  // Without this a Deny reading the role's tag (`team` is `contractors`) would spare every session
  // of the role: the key would be absent, and a positive operator false.
  const role = roleArnOf(principal);
  return role === undefined ? undefined : tags.get(role)?.get(lower);
}
