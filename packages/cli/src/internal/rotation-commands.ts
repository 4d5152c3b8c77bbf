import { integerOption } from "./args.ts";
import { type Command, type CommandContext, printJson } from "./command.ts";
import { allPages } from "./key-commands.ts";

// The key argument goes to the KMS as given. These operations, like AWS's, take a key id or key
// ARN only and answer an alias with NotFoundException; the command does not resolve one itself
// (as `list-aliases --key` does for a mere filter): an alias re-pointed between that look-up and
// the call would turn the call on another key. The policy commands follow the same rule.

/**
 * GetKeyRotationStatus, printed. Enabling and disabling print it too (AWS returns nothing), so
 * their output shows the schedule the key is left with.
 */
async function printRotationStatus(ctx: CommandContext, keyId: string): Promise<void> {
  const kms = await ctx.kms();
  await printJson(ctx.io, await kms.getKeyRotationStatus({ keyId }, ctx.callOptions));
}

const enableKeyRotation: Command = {
  options: { "period-days": { type: "string" } },
  positionals: ["keyId"],
  async run(ctx) {
    const keyId = ctx.positionals[0] as string;
    const period = integerOption(ctx.values, "period-days", ctx.command);
    const kms = await ctx.kms();
    await kms.enableKeyRotation(
      { keyId, ...(period === undefined ? {} : { rotationPeriodInDays: period }) },
      ctx.callOptions,
    );
    await printRotationStatus(ctx, keyId);
  },
};

const disableKeyRotation: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const keyId = ctx.positionals[0] as string;
    const kms = await ctx.kms();
    await kms.disableKeyRotation({ keyId }, ctx.callOptions);
    await printRotationStatus(ctx, keyId);
  },
};

const getKeyRotationStatus: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    await printRotationStatus(ctx, ctx.positionals[0] as string);
  },
};

const rotateKey: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const kms = await ctx.kms();
    await printJson(
      ctx.io,
      await kms.rotateKeyOnDemand({ keyId: ctx.positionals[0] as string }, ctx.callOptions),
    );
  },
};

const listKeyRotations: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const keyId = ctx.positionals[0] as string;
    const kms = await ctx.kms();
    const rotations = await allPages(
      (request) => kms.listKeyRotations({ ...request, keyId }, ctx.callOptions),
      (page) => page.rotations,
    );
    await printJson(ctx.io, { rotations });
  },
};

export const ROTATION_COMMANDS: Readonly<Record<string, Command>> = {
  "enable-key-rotation": enableKeyRotation,
  "disable-key-rotation": disableKeyRotation,
  "get-key-rotation-status": getKeyRotationStatus,
  "rotate-key": rotateKey,
  "list-key-rotations": listKeyRotations,
};
