import type { AuditEvent, Kms } from "@kms/core";
import { integerOption, stringOption } from "./args.ts";
import { type Command, type CommandContext, printJson, writeOut } from "./command.ts";
import { UsageError } from "./usage.ts";

/** The command that groups the audit subcommands: `kms audit list`, `kms audit verify`. */
export const AUDIT_GROUP = "audit";

/** Events printed by `kms audit list` without `--limit`. */
export const DEFAULT_AUDIT_LIMIT = 100;

/** Events `kms audit list` reads from the sink at a time, so a long trail is never held whole. */
const READ_CHUNK = 1000;

/**
 * Thrown by `kms audit verify` when the chain does not hold; runCli exits with
 * EXIT_AUDIT_BROKEN. The message says where the chain breaks, never what the events contain.
 */
export class AuditChainBrokenError extends Error {
  override readonly name = "AuditChainBroken";
}

/** An event hash as the chain writes it: SHA-256, in hex. */
const EVENT_HASH = /^[0-9a-f]{64}$/;

/**
 * `--head <hash>`: the head hash an operator kept from an earlier `verify`, lower-cased (a hash
 * copied from a tool that prints hex in upper case is the same hash).
 */
function pinnedHeadOption(ctx: CommandContext): string | undefined {
  const text = stringOption(ctx.values, "head");
  if (text === undefined) return undefined;
  const hash = text.toLowerCase();
  if (!EVENT_HASH.test(hash)) {
    throw new UsageError(
      `${ctx.command}: --head expected an event hash (64 hex digits, the "head.hash" an earlier verify printed), got "${text}"`,
      ctx.command,
    );
  }
  return hash;
}

/**
 * `kms audit verify [--head <hash>]`: the whole chain against the head the store recorded, with
 * `kms.audit.verify()`, which reads the head first (an event another process, a `kms serve` on
 * the same data dir, appends meanwhile must not read as truncation) and then the trail 1000
 * events at a time. A row that is not even JSON is reported as a broken chain, where it is.
 *
 * The recorded head lives in the same file as the events, so whoever can rewrite one can rewrite
 * both. `--head` checks against a head kept elsewhere instead: the event with that hash must
 * still be in the chain. Each hash covers its event's sequence and the hash before it, so the
 * event found is at the position it was pinned at and everything up to it is the trail that was
 * pinned: with the chain verified from sequence 0 on to the recorded head, the old trail is a
 * prefix of the current one.
 */
const auditVerify: Command = {
  options: { head: { type: "string" } },
  positionals: [],
  async run(ctx) {
    if (ctx.callOptions.principal !== undefined) {
      throw new UsageError(
        "audit verify: --principal does not apply: the trail is read directly, not through a KMS call",
        ctx.command,
      );
    }
    const pinned = pinnedHeadOption(ctx);
    const kms = await ctx.kms();
    const result = await kms.audit.verify({
      unreadable: "malformed",
      ...(pinned === undefined ? {} : { pinnedHead: pinned }),
    });
    if (result.ok) {
      const kept = result.pinned;
      if (pinned === undefined || kept !== undefined) {
        await printJson(ctx.io, {
          ok: true,
          events: result.count,
          head: result.head ?? null,
          ...(kept === undefined ? {} : { pinned: { sequence: kept.sequence, hash: kept.hash } }),
        });
        return;
      }
      // No position to name: the event is not there, whether cut off or rewritten.
      const message = `no event has the pinned head hash ${pinned}: the trail was cut short before that event, or rewritten`;
      await printJson(ctx.io, { ok: false, problem: "pinned-head-missing", message }).catch(
        () => undefined,
      );
      throw new AuditChainBrokenError(`the audit trail is broken: ${message}`);
    }
    // The verdict is the exit code and the stderr line: output that cannot be written must not
    // turn a broken chain into a plain failure (exit 1).
    await printJson(ctx.io, {
      ok: false,
      index: result.index,
      ...(result.sequence === undefined ? {} : { sequence: result.sequence }),
      problem: result.problem,
      message: result.message,
    }).catch(() => undefined);
    const sequence = result.sequence === undefined ? "" : ` (sequence ${result.sequence})`;
    throw new AuditChainBrokenError(
      `the audit trail is broken at event ${result.index}${sequence}: ${result.message}`,
    );
  },
};

/**
 * `kms audit list`: events as JSON lines, oldest first, as the sink stores them. The listing is
 * the trail up to its head when the command started, so the DescribeKey call that resolves an
 * alias given as `--key` (recorded like any call) shows up in the next listing, not in this one.
 */
const auditList: Command = {
  options: {
    key: { type: "string" },
    since: { type: "string" },
    limit: { type: "string" },
    after: { type: "string" },
  },
  positionals: [],
  async run(ctx) {
    const limit = integerOption(ctx.values, "limit", ctx.command) ?? DEFAULT_AUDIT_LIMIT;
    if (limit < 1) {
      throw new UsageError(
        `${ctx.command}: --limit expected at least 1, got ${limit}`,
        ctx.command,
      );
    }
    const after = integerOption(ctx.values, "after", ctx.command) ?? -1;
    const since = sinceOption(ctx);
    const keyName = stringOption(ctx.values, "key");
    const kms = await ctx.kms();
    const head = await kms.audit.head();
    const namesKey = keyName === undefined ? undefined : await keyMatcher(kms, ctx, keyName);
    if (head === undefined) return;
    const matches = (event: AuditEvent): boolean =>
      (since === undefined || Date.parse(event.eventTime) >= since) &&
      (namesKey === undefined || event.resources.some((r) => namesKey(r.ARN)));

    let printed = 0;
    let lastPrinted = after;
    let readFrom = after;
    for (;;) {
      const chunk = await kms.audit.events({ after: readFrom, limit: READ_CHUNK });
      for (const event of chunk) {
        if (event.sequence > head.sequence) return;
        if (!matches(event)) continue;
        if (printed === limit) {
          ctx.io.stderr.write(
            `kms: more events follow; continue with --after ${lastPrinted} (the last line's sequence)\n`,
          );
          return;
        }
        await writeOut(ctx.io, `${JSON.stringify(event)}\n`);
        printed += 1;
        lastPrinted = event.sequence;
      }
      const end = chunk[chunk.length - 1];
      if (end === undefined || chunk.length < READ_CHUNK) return;
      readFrom = end.sequence;
    }
  },
};

/**
 * Which resource ARNs `--key` names. A key id or key ARN is matched as it is, so the history of
 * a key that has since been deleted (whose trail an auditor wants most) can still be listed;
 * only an alias is resolved, through DescribeKey, to the key it points to now.
 */
async function keyMatcher(
  kms: Kms,
  ctx: CommandContext,
  name: string,
): Promise<(arn: string) => boolean> {
  if (name.startsWith("alias/") || name.includes(":alias/")) {
    const { keyMetadata } = await kms.describeKey({ keyId: name }, ctx.callOptions);
    return (arn) => arn === keyMetadata.arn;
  }
  if (name.startsWith("arn:")) return (arn) => arn === name;
  const suffix = `:key/${name}`;
  return (arn) => arn.endsWith(suffix);
}

const ISO_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/;

/**
 * `--since` as epoch milliseconds. Only ISO 8601 with a zone (or a bare date, UTC midnight):
 * `Date.parse` alone reads "1" as the year 2001, rolls 2024-02-30 over into March, and reads a
 * time without a zone in whatever zone the machine is in.
 */
function sinceOption(ctx: CommandContext): number | undefined {
  const text = stringOption(ctx.values, "since");
  if (text === undefined) return undefined;
  const parts = ISO_TIME.exec(text);
  const time = parts === null ? Number.NaN : Date.parse(text);
  if (parts === null || Number.isNaN(time) || !isCalendarDate(parts)) {
    throw new UsageError(
      `${ctx.command}: --since expected an ISO 8601 time (2026-01-31 or 2026-01-31T12:00:00Z), got "${text}"`,
      ctx.command,
    );
  }
  return time;
}

function isCalendarDate(parts: RegExpExecArray): boolean {
  const [year, month, day, hour, minute, second] = parts.slice(1, 7).map((p) => Number(p ?? 0));
  const date = new Date(Date.UTC(year ?? 0, (month ?? 0) - 1, day ?? 0));
  return (
    date.getUTCMonth() === (month ?? 0) - 1 &&
    date.getUTCDate() === day &&
    (hour ?? 0) <= 23 &&
    (minute ?? 0) <= 59 &&
    (second ?? 0) <= 59
  );
}

/**
 * `kms last-used <keyId>`: AWS's GetKeyLastUsage, itself an audited call (it never counts
 * as a use). The deprecated `eventId` (same value as `cloudTrailEventId`) is left out so that
 * scripts do not come to depend on it.
 */
const lastUsed: Command = {
  options: {},
  positionals: ["keyId"],
  async run(ctx) {
    const kms = await ctx.kms();
    const response = await kms.getKeyLastUsage(
      { keyId: ctx.positionals[0] as string },
      ctx.callOptions,
    );
    const usage = response.keyLastUsage;
    await printJson(ctx.io, {
      keyId: response.keyId,
      ...(usage === undefined
        ? {}
        : {
            keyLastUsage: {
              operation: usage.operation,
              timestamp: usage.timestamp,
              cloudTrailEventId: usage.cloudTrailEventId,
              kmsRequestId: usage.kmsRequestId,
            },
          }),
      ...(response.trackingStartDate === undefined
        ? {}
        : { trackingStartDate: response.trackingStartDate }),
      keyCreationDate: response.keyCreationDate,
    });
  },
};

/** The subcommands of `kms audit`, by name. */
export const AUDIT_COMMANDS: Readonly<Record<string, Command>> = {
  list: auditList,
  verify: auditVerify,
};

export const LAST_USED_COMMANDS: Readonly<Record<string, Command>> = {
  "last-used": lastUsed,
};
