/** A mistake in the command line itself: exit code 2 with the usage text. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  /** The command whose usage to show; undefined for the global usage. */
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

const GLOBAL = `Global options:
  --data-dir <dir>        key store directory (default $KMS_DATA_DIR or ./.kms)
  --root-key-file <path>  root key file (default: $KMS_ROOT_KEY, else the dev key from kms init)
  --principal <arn>       principal every KMS call runs as`;

/** One line per command: its synopsis. */
export const SYNOPSES: Readonly<Record<string, string>> = {
  init: "kms init [--dev-root-key]",
  "create-key": "kms create-key [--description <text>] [--key-spec <spec>] [--key-usage <usage>]",
  "list-keys": "kms list-keys",
  "describe-key": "kms describe-key <keyId|alias>",
  "create-alias": "kms create-alias <alias/name> <keyId>",
  "update-alias": "kms update-alias <alias/name> <keyId>",
  "delete-alias": "kms delete-alias <alias/name>",
  "list-aliases": "kms list-aliases [--key <keyId|alias>]",
  "schedule-key-deletion": "kms schedule-key-deletion <keyId> [--days <7-30>]",
  "cancel-key-deletion": "kms cancel-key-deletion <keyId>",
  "disable-key": "kms disable-key <keyId>",
  "enable-key": "kms enable-key <keyId>",
  "enable-key-rotation": "kms enable-key-rotation <keyId> [--period-days <90-2560>]",
  "disable-key-rotation": "kms disable-key-rotation <keyId>",
  "get-key-rotation-status": "kms get-key-rotation-status <keyId>",
  "rotate-key": "kms rotate-key <keyId>",
  "list-key-rotations": "kms list-key-rotations <keyId>",
  "get-key-policy": "kms get-key-policy <keyId>",
  "put-key-policy":
    "kms put-key-policy <keyId> --policy <file|-> [--bypass-policy-lockout-safety-check]",
  "seal-unsealed-records": "kms seal-unsealed-records",
  "last-used": "kms last-used <keyId>",
  "audit list":
    "kms audit list [--key <keyId|alias|ARN>] [--since <ISO time>] [--after <sequence>] [--limit <n, default 100>]",
  "audit verify": "kms audit verify [--head <hash>]",
  encrypt:
    "kms encrypt --key <keyId|alias> --in <file|-> --out <file|-> [--force] [--context k=v ...] [--frame-size <bytes>] [--[no-]progress]",
  serve:
    "kms serve --credentials <file> [--host <address>] [--port <port>] [--tls-cert <file> --tls-key <file>] [--insecure-http] [--allowed-host <name[:port]> ...]",
  decrypt:
    "kms decrypt --in <file|-> --out <file|-> [--force] [--context k=v ...] [--require-context k=v ...] [--allow-key <keyId|alias> ...] [--max-frame-size <bytes>] [--[no-]progress]",
};

export function usageText(command?: string): string {
  const synopsis = command === undefined ? undefined : SYNOPSES[command];
  if (synopsis !== undefined) return `Usage: ${synopsis}\n\n${GLOBAL}\n`;
  // A command group (`audit`): each of its subcommands.
  const group = Object.entries(SYNOPSES).filter(([name]) => name.startsWith(`${command} `));
  if (group.length > 0) {
    const lines = group.map(([, line]) => `  ${line}`).join("\n");
    return `Usage: kms ${command} <subcommand>\n\nSubcommands:\n${lines}\n\n${GLOBAL}\n`;
  }
  return `Usage: kms <command> [options]\n\nCommands:\n${Object.values(SYNOPSES)
    .map((line) => `  ${line}`)
    .join("\n")}\n\n${GLOBAL}\n`;
}
