/**
 * aws:PrincipalTag: the tags `createKms({ principalTags })` gives a principal. A role session
 * (`arn:<partition>:sts::<account>:assumed-role/<role>/<session>`) has its role's tags and its
 * own, as AWS merges a role's IAM tags with the session tags passed to AssumeRole: the session's
 * entry wins for a key it holds in any case, the role's answers for every other key.
 */
import { roleArnOf } from "./evaluate.ts";

/** Principal ARN → tag key → value. */
export type PrincipalTags = Readonly<Record<string, Readonly<Record<string, string>>>>;

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
