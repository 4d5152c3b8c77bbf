import type { KeyListEntry, KeySpec, KeyUsage } from "@kms/core";
import { integerOption, stringOption } from "./args.ts";
import { type Command, printJson } from "./command.ts";

const createKey: Command = {
  options: {
    description: { type: "string" },
    "key-spec": { type: "string" },
    "key-usage": { type: "string" },
  },
  positionals: [],
  async run(ctx) {
    const description = stringOption(ctx.values, "description");
    // The KMS validates spec and usage and names the allowed values; the casts only carry text.
    const keySpec = stringOption(ctx.values, "key-spec") as KeySpec | undefined;
    const keyUsage = stringOption(ctx.values, "key-usage") as KeyUsage | undefined;
    const kms = await ctx.kms();
    const { keyMetadata } = await kms.createKey(
      {
        ...(description === undefined ? {} : { description }),
        ...(keySpec === undefined ? {} : { keySpec }),
        ...(keyUsage === undefined ? {} : { keyUsage }),
      },
      ctx.callOptions,
    );
    printJson(ctx.io, keyMetadata);
  },
};

const listKeys: Command = {
  options: {},
  positionals: [],
  async run(ctx) {
    const kms = await ctx.kms();
    const keys: KeyListEntry[] = [];
    let marker: string | undefined;
    do {
      const page = await kms.listKeys(
        { limit: 100, ...(marker === undefined ? {} : { marker }) },
        ctx.callOptions,
      );
      keys.push(...page.keys);
      marker = page.truncated ? page.nextMarker : undefined;
    } while (marker !== undefined);
    const aliases: { aliasName: string; targetKeyId?: string }[] = [];
    marker = undefined;
    do {
      const page = await kms.listAliases(
        { limit: 100, ...(marker === undefined ? {} : { marker }) },
        ctx.callOptions,
      );
      aliases.push(...page.aliases);
      marker = page.truncated ? page.nextMarker : undefined;
    } while (marker !== undefined);
    printJson(ctx.io, {
      keys: keys.map((key) => ({
        ...key,
        aliases: aliases.filter((a) => a.targetKeyId === key.keyId).map((a) => a.aliasName),
      })),
    });
  },
};

const describeKey: Command = {
  options: {},
  positionals: ["keyId|alias"],
  async run(ctx) {
    const kms = await ctx.kms();
    const { keyMetadata } = await kms.describeKey(
      { keyId: ctx.positionals[0] as string },
      ctx.callOptions,
    );
    printJson(ctx.io, keyMetadata);
  },
};

const createAlias: Command = {
  options: {},
  positionals: ["alias", "keyId"],
  async run(ctx) {
    const [aliasName, targetKeyId] = ctx.positionals as [string, string];
    const kms = await ctx.kms();
    await kms.createAlias({ aliasName, targetKeyId }, ctx.callOptions);
    printJson(ctx.io, { aliasName, targetKeyId });
  },
};

const scheduleKeyDeletion: Command = {
  options: { days: { type: "string" } },
  positionals: ["keyId"],
  async run(ctx) {
    const days = integerOption(ctx.values, "days", ctx.command);
    const kms = await ctx.kms();
    const result = await kms.scheduleKeyDeletion(
      {
        keyId: ctx.positionals[0] as string,
        ...(days === undefined ? {} : { pendingWindowInDays: days }),
      },
      ctx.callOptions,
    );
    printJson(ctx.io, result);
  },
};

const cancelKeyDeletion: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const kms = await ctx.kms();
    const keyId = ctx.positionals[0] as string;
    await kms.cancelKeyDeletion({ keyId }, ctx.callOptions);
    // AWS leaves a key whose deletion was cancelled disabled; say so rather than let it surprise.
    const { keyMetadata } = await kms.describeKey({ keyId }, ctx.callOptions);
    printJson(ctx.io, { keyId: keyMetadata.keyId, keyState: keyMetadata.keyState });
  },
};

function toggle(enable: boolean): Command {
  return {
    options: {},
    positionals: ["keyId"],
    async run(ctx) {
      const kms = await ctx.kms();
      const keyId = ctx.positionals[0] as string;
      if (enable) await kms.enableKey({ keyId }, ctx.callOptions);
      else await kms.disableKey({ keyId }, ctx.callOptions);
      const { keyMetadata } = await kms.describeKey({ keyId }, ctx.callOptions);
      printJson(ctx.io, { keyId: keyMetadata.keyId, keyState: keyMetadata.keyState });
    },
  };
}

export const KEY_COMMANDS: Readonly<Record<string, Command>> = {
  "create-key": createKey,
  "list-keys": listKeys,
  "describe-key": describeKey,
  "create-alias": createAlias,
  "schedule-key-deletion": scheduleKeyDeletion,
  "cancel-key-deletion": cancelKeyDeletion,
  "disable-key": toggle(false),
  "enable-key": toggle(true),
};
