#!/bin/sh
# Runs a command with the project's toolchain: Node >= 22.12 and pnpm 12. A machine whose own
# Node is recent enough uses it; otherwise (this repository's CI has Node 20) Node 24 is
# installed from the npm registry into .tools/ (Linux x64/arm64 builds are published there).
# pnpm goes into .tools/ either way, so the README's two commands need nothing else.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools/node"
node_version=v24.21.0
pnpm_version=12.21.0

recent_enough() {
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)' 2>/dev/null
}

if [ -x "$tools/bin/node" ] && [ "$("$tools/bin/node" --version)" = "$node_version" ]; then
  PATH="$tools/bin:$PATH"
  # Native addons (better-sqlite3) build against the headers the registry package ships.
  npm_config_nodedir="$tools/lib/node_modules/node-linux-$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')"
  export npm_config_nodedir
elif command -v node >/dev/null 2>&1 && recent_enough node; then
  mkdir -p "$tools/bin"
  PATH="$tools/bin:$PATH"
else
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) platform=linux-x64 ;;
    Linux-aarch64 | Linux-arm64) platform=linux-arm64 ;;
    *)
      echo "toolchain: this project needs Node >= 22.12; install it (https://nodejs.org) and retry" >&2
      exit 1
      ;;
  esac
  echo "toolchain: installing Node $node_version into .tools/ (once)" >&2
  npm i -g --prefix "$tools" "node-$platform@${node_version#v}" --no-audit --no-fund --loglevel=error >&2
  PATH="$tools/bin:$PATH"
  npm_config_nodedir="$tools/lib/node_modules/node-$platform"
  export npm_config_nodedir
fi
export PATH
if [ ! -x "$tools/bin/pnpm" ] || [ "$("$tools/bin/pnpm" --version)" != "$pnpm_version" ]; then
  echo "toolchain: installing pnpm $pnpm_version into .tools/ (once)" >&2
  npm i -g --prefix "$tools" "pnpm@$pnpm_version" --no-audit --no-fund --loglevel=error >&2
fi
TURBO_TELEMETRY_DISABLED=1
CHECKPOINT_DISABLE=1
export TURBO_TELEMETRY_DISABLED CHECKPOINT_DISABLE
cd "$root"
exec "$@"
