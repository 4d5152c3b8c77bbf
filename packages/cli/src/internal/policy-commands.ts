import { createReadStream } from "node:fs";
import { resolve } from "node:path";
import { KEY_POLICY_NAME, MAX_KEY_POLICY_BYTES } from "@kms/core";
import { booleanOption, requiredOption } from "./args.ts";
import { type Command, type CommandContext, printJson } from "./command.ts";

/**
 * The document as JSON to print: parsed, so that it pretty-prints, or the text itself (as a JSON
 * string) when it is not JSON, so that nothing the KMS holds is lost or reworded.
 */
export function policyDocument(policy: string): unknown {
  try {
    return JSON.parse(policy);
  } catch {
    return policy;
  }
}

const getKeyPolicy: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const kms = await ctx.kms();
    const { policy } = await kms.getKeyPolicy(
      { keyId: ctx.positionals[0] as string },
      ctx.callOptions,
    );
    await printJson(ctx.io, policyDocument(policy));
  },
};

/**
 * `--policy <file|->` as text. Reading stops past the KMS's size limit: the prefix read is still
 * over it, so the KMS refuses it with its own message, without a mistaken `--policy /dev/zero`
 * being read whole first.
 */
async function readPolicy(ctx: CommandContext): Promise<string> {
  const source = requiredOption(ctx.values, "policy", ctx.command);
  const input = source === "-" ? ctx.io.stdin : createReadStream(resolve(ctx.io.cwd, source));
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of input) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    chunks.push(bytes);
    size += bytes.length;
    if (size > MAX_KEY_POLICY_BYTES) break;
  }
  const bytes = Buffer.concat(chunks);
  // Refused for its size anyway; a character cut off at the end only makes it longer.
  if (size > MAX_KEY_POLICY_BYTES) return bytes.toString("utf8");
  try {
    // Fatal: a byte that is not UTF-8 would otherwise become U+FFFD, and a document other
    // than the file's could be accepted. A leading byte-order mark is dropped, as editors add it.
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const name = source === "-" ? "stdin" : source;
    throw new Error(`${ctx.command}: the policy in ${name} is not UTF-8 text`);
  }
}

const putKeyPolicy: Command = {
  options: {
    policy: { type: "string" },
    "bypass-policy-lockout-safety-check": { type: "boolean" },
  },
  positionals: ["keyId"],
  async run(ctx) {
    const keyId = ctx.positionals[0] as string;
    const policy = await readPolicy(ctx);
    const bypass = booleanOption(ctx.values, "bypass-policy-lockout-safety-check") === true;
    const kms = await ctx.kms();
    // The KMS validates the document (MalformedPolicyDocumentException) and refuses one that
    // would lock the caller out of changing it again, unless told to (as AWS's flag of the name).
    await kms.putKeyPolicy(
      { keyId, policy, ...(bypass ? { bypassPolicyLockoutSafetyCheck: true } : {}) },
      ctx.callOptions,
    );
    // No read-back: the new policy may deny the caller GetKeyPolicy or DescribeKey.
    await printJson(ctx.io, { keyId, policyName: KEY_POLICY_NAME });
  },
};

export const POLICY_COMMANDS: Readonly<Record<string, Command>> = {
  "get-key-policy": getKeyPolicy,
  "put-key-policy": putKeyPolicy,
};
