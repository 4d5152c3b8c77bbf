import type {
  CallOptions,
  KeyIdRequest,
  KeySpec,
  KeyUsage,
  Kms,
  Page,
  PageRequest,
} from "@kms/core";
import { integerOption, stringOption } from "./args.ts";
import { type Command, type CommandContext, printJson } from "./command.ts";

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
    await printJson(ctx.io, keyMetadata);
  },
};

/** Every entry of a paged list call, following `nextMarker` to the last page. */
export async function allPages<P extends Page, T>(
  list: (request: PageRequest) => Promise<P>,
  entries: (page: P) => readonly T[],
): Promise<T[]> {
  const all: T[] = [];
  let marker: string | undefined;
  do {
    const page = await list({ limit: 100, ...(marker === undefined ? {} : { marker }) });
    all.push(...entries(page));
    marker = page.truncated ? page.nextMarker : undefined;
  } while (marker !== undefined);
  return all;
}

/** Every key and every alias, each page read (and so each record's seal checked) through the KMS. */
export async function listEverything(ctx: CommandContext) {
  const kms = await ctx.kms();
  const keys = await allPages(
    (request) => kms.listKeys(request, ctx.callOptions),
    (page) => page.keys,
  );
  const aliases = await allPages(
    (request) => kms.listAliases(request, ctx.callOptions),
    (page) => page.aliases,
  );
  return { keys, aliases };
}

const listKeys: Command = {
  options: {},
  positionals: [],
  async run(ctx) {
    const { keys, aliases } = await listEverything(ctx);
    await printJson(ctx.io, {
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
    await printJson(ctx.io, keyMetadata);
  },
};

const createAlias: Command = {
  options: {},
  positionals: ["alias", "keyId"],
  async run(ctx) {
    const [aliasName, targetKeyId] = ctx.positionals as [string, string];
    const kms = await ctx.kms();
    await kms.createAlias({ aliasName, targetKeyId }, ctx.callOptions);
    await printJson(ctx.io, { aliasName, targetKeyId });
  },
};

const updateAlias: Command = {
  options: {},
  positionals: ["alias", "keyId"],
  async run(ctx) {
    const [aliasName, targetKeyId] = ctx.positionals as [string, string];
    const kms = await ctx.kms();
    await kms.updateAlias({ aliasName, targetKeyId }, ctx.callOptions);
    await printJson(ctx.io, { aliasName, targetKeyId });
  },
};

const deleteAlias: Command = {
  options: {},
  positionals: ["alias"],
  async run(ctx) {
    const aliasName = ctx.positionals[0] as string;
    const kms = await ctx.kms();
    await kms.deleteAlias({ aliasName }, ctx.callOptions);
    await printJson(ctx.io, { aliasName });
  },
};

const listAliases: Command = {
  options: { key: { type: "string" } },
  positionals: [],
  async run(ctx) {
    const key = stringOption(ctx.values, "key");
    const kms = await ctx.kms();
    // ListAliases takes a key id or ARN only; resolving `--key` first lets it name an alias too.
    const keyId =
      key === undefined
        ? undefined
        : (await kms.describeKey({ keyId: key }, ctx.callOptions)).keyMetadata.keyId;
    const aliases = await allPages(
      (request) =>
        kms.listAliases({ ...request, ...(keyId === undefined ? {} : { keyId }) }, ctx.callOptions),
      (page) => page.aliases,
    );
    await printJson(ctx.io, { aliases });
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
    await printJson(ctx.io, result);
  },
};

/** A command that changes one key's state, then prints the state the key is left in. */
function changeState(
  change: (kms: Kms, request: KeyIdRequest, options: CallOptions) => Promise<unknown>,
): Command {
  return {
    options: {},
    positionals: ["keyId"],
    async run(ctx) {
      const kms = await ctx.kms();
      const keyId = ctx.positionals[0] as string;
      await change(kms, { keyId }, ctx.callOptions);
      const { keyMetadata } = await kms.describeKey({ keyId }, ctx.callOptions);
      await printJson(ctx.io, { keyId: keyMetadata.keyId, keyState: keyMetadata.keyState });
    },
  };
}

export const KEY_COMMANDS: Readonly<Record<string, Command>> = {
  "create-key": createKey,
  "list-keys": listKeys,
  "describe-key": describeKey,
  "create-alias": createAlias,
  "update-alias": updateAlias,
  "delete-alias": deleteAlias,
  "list-aliases": listAliases,
  "schedule-key-deletion": scheduleKeyDeletion,
  // AWS leaves a key whose deletion was cancelled disabled; printing the state says so.
  "cancel-key-deletion": changeState((kms, request, options) =>
    kms.cancelKeyDeletion(request, options),
  ),
  "disable-key": changeState((kms, request, options) => kms.disableKey(request, options)),
  "enable-key": changeState((kms, request, options) => kms.enableKey(request, options)),
};
