#!/usr/bin/env bash
# Prepares what bench/gpu/run.sh needs on a bare GPU machine (PyTorch, but no Node.js, no network), on THIS
# machine, into .spotwatch/gpu-bundle/ (ignored by git; carry it to the GPU machine with the repo):
#
#   node.xz                   this machine's `node` binary, xz -9 (the official build needs only glibc >= 2.28)
#   criu.tar.xz               the project's private CRIU (.criu/, scripts/install-criu.sh): own loader and libraries
#   redis.tar.xz              redis-server with every library it loads and a wrapper that runs it through them
#   cuda-checkpoint-helper    native/cuda-checkpoint-helper.c built here (run.sh rebuilds it there when gcc exists)
#   page-pump                 native/page-pump.c built here (likewise): moves the dump's pages on the agent path
#   exec-holder               native/exec-holder.c built here (likewise): CRIUs started ahead of the target's restore
#   migrate.mjs               bench/gpu/migrate.ts with the CUDA hook and the CRIU engine's code, bundled (esbuild)
#   spotwatch.mjs             the CLI (dist/src/cli/run.js: run `npm run build` first) bundled for the agent path, the
#                             cloud SDKs left out (loaded lazily, never on this path) and @kubernetes/client-node
#                             replaced by bench/gpu/k8s-stub.mjs (imported statically by src/k8s; agents run --k8s false)
#   agents.mjs                bench/gpu/agents.ts bundled: the agent path's driver (two agents, spotwatch run, notice)
#
# Idempotent: each piece is rebuilt only when its source is newer. Prints the sizes; fails above 60 MiB (the
# device tool carries at most 64 MiB with the working tree).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
B="$ROOT/.spotwatch/gpu-bundle"
mkdir -p "$B"
cd "$ROOT"
say() { printf 'gpu-prepare: %s\n' "$*"; }

# node
NODE_BIN=$(readlink -f "$(command -v node)")
if [ ! -s "$B/node.xz" ] || [ "$NODE_BIN" -nt "$B/node.xz" ]; then
  say "compressing $NODE_BIN ($(node --version)) — xz -9 takes about a minute"
  xz -9 -T0 -c "$NODE_BIN" >"$B/node.xz.tmp" && mv "$B/node.xz.tmp" "$B/node.xz"
fi
node --version >"$B/node.version"

# CRIU
if [ ! -x .criu/bin/criu ]; then
  say "no .criu/: running scripts/install-criu.sh"
  bash scripts/install-criu.sh
fi
if [ ! -s "$B/criu.tar.xz" ] || [ -n "$(find .criu -newer "$B/criu.tar.xz" -print -quit)" ]; then
  say "packing .criu/ ($(.criu/bin/criu --version | head -n1))"
  tar -C "$ROOT" -cf - .criu | xz -9 -T0 >"$B/criu.tar.xz"
fi

# redis-server with its libraries
if [ ! -s "$B/redis.tar.xz" ]; then
  RS=$(readlink -f "$(command -v redis-server)")
  t=$(mktemp -d)
  mkdir -p "$t/redis/bin" "$t/redis/lib"
  cp "$RS" "$t/redis/bin/redis-server"
  ldd "$RS" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do cp -L "$lib" "$t/redis/lib/"; done
  cp -L /lib64/ld-linux-x86-64.so.2 "$t/redis/lib/" 2>/dev/null || true
  cat >"$t/redis/redis-server" <<'EOF'
#!/bin/sh
# Runs the bundled redis-server through its own loader and libraries (bench/gpu/prepare.sh).
P=$(dirname "$(readlink -f "$0")")
exec "$P/lib/ld-linux-x86-64.so.2" --library-path "$P/lib" "$P/bin/redis-server" "$@"
EOF
  chmod 755 "$t/redis/redis-server"
  tar -C "$t" -cf - redis | xz -9 -T0 >"$B/redis.tar.xz"
  rm -rf "$t"
fi

# native programs (run.sh rebuilds them there when gcc exists)
bash scripts/build-native.sh >/dev/null
cp -f native/build/cuda-checkpoint-helper "$B/cuda-checkpoint-helper"
cp -f native/build/page-pump "$B/page-pump"
cp -f native/build/exec-holder "$B/exec-holder"

# bundles
ESBUILD="$ROOT/node_modules/.bin/esbuild"
"$ESBUILD" bench/gpu/migrate.ts --bundle --platform=node --format=esm --target=node20 --log-level=warning \
  --outfile="$B/migrate.mjs"
# The CLI and the agent-path driver. The SDKs of the clouds are imported lazily (providers/*/sdk-client.ts) and
# never reached here; @kubernetes/client-node is imported statically by src/k8s/kube-api.ts, so it is replaced by
# a stub rather than left out (with it external the bundle fails to load where there is no node_modules).
SDK_EXTERNALS=(--external:@aws-sdk/* --external:@google-cloud/* --external:@azure/* --alias:@kubernetes/client-node=./bench/gpu/k8s-stub.mjs)
REQUIRE_BANNER="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
rm -f "$B/spotwatch.mjs" "$B/spotwatch.bundle.log"
[ -s dist/src/cli/run.js ] || { say "no dist/src/cli/run.js: run 'npm run build' first"; exit 1; }
"$ESBUILD" dist/src/cli/run.js --bundle --minify --platform=node --format=esm --target=node20 --log-level=warning "${SDK_EXTERNALS[@]}" \
  --banner:js="$REQUIRE_BANNER" --outfile="$B/spotwatch.mjs"
"$ESBUILD" bench/gpu/agents.ts --bundle --platform=node --format=esm --target=node20 --log-level=warning "${SDK_EXTERNALS[@]}" \
  --banner:js="$REQUIRE_BANNER" --outfile="$B/agents.mjs"
# Both must load with no node_modules in reach (as on the GPU machine): run them from a directory outside the repo.
t=$(mktemp -d)
cp "$B/spotwatch.mjs" "$B/agents.mjs" "$t/"
for cmd in agent run simulate; do
  node "$t/spotwatch.mjs" "$cmd" --help >/dev/null 2>"$t/err" || { say "the CLI bundle fails '$cmd --help' without node_modules: $(tail -n 3 "$t/err")"; rm -rf "$t"; exit 1; }
done
node "$t/agents.mjs" >"$t/err" 2>&1 || true
grep -q '^usage: agents.mjs' "$t/err" || { say "agents.mjs does not load without node_modules: $(tail -n 3 "$t/err")"; rm -rf "$t"; exit 1; }
rm -rf "$t"
say "CLI bundle from dist/ (built $(date -u -r dist/src/cli/run.js +%FT%TZ)); 'agent --help' runs without node_modules"
(git log -1 --format='%H %cI' && git status --porcelain -- src providers | sed 's/^/dirty: /') >"$B/spotwatch.source" 2>/dev/null || true

total=$(du -cb "$B"/* | tail -n1 | cut -f1)
du -h "$B"/* | sed 's/^/gpu-prepare:   /'
say "bundle: $((total / 1048576)) MiB in .spotwatch/gpu-bundle"
[ "$total" -lt $((60 * 1048576)) ] || { say "bundle too large for the device tool (60 MiB limit here)"; exit 1; }
