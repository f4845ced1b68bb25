#!/usr/bin/env bash
# Installs spotwatch as a systemd service on a plain Debian / Ubuntu VM, from this source tree:
#
#   sudo deploy/systemd/install.sh --redis-url redis://10.0.0.5:6379 --cluster-token "$TOKEN"
#   sudo deploy/systemd/install.sh --webhook          # also the webhook service (configure webhook.env)
#
# What goes where:
#   /opt/spotwatch/                 the application: bin/, dist/, production node_modules/, and .criu/ (CRIU 4.x
#                                   from Debian when the system has no CRIU >= 4; see scripts/install-criu.sh)
#   /usr/local/bin/spotwatch        the CLI
#   /etc/spotwatch/agent.env        configuration (mode 0600; never overwritten: --redis-url / --cluster-token /
#                                   --provider update those lines of an existing file)
#   /etc/systemd/system/spotwatch-agent.service (and spotwatch-webhook.service with --webhook)
#   /var/lib/spotwatch/             spool, images, CRIU logs (systemd StateDirectory)
#
# Options:
#   --prefix DIR        application directory (default /opt/spotwatch)
#   --root DIR          install under DIR instead of / (packaging; nothing is started)
#   --redis-url URL     SPOTWATCH_REDIS_URL
#   --cluster-token T   SPOTWATCH_CLUSTER_TOKEN: the same secret on every agent (16+ characters)
#   --provider P        SPOTWATCH_PROVIDER (aws, gcp, azure, auto)
#   --webhook           also install spotwatch-webhook.service and /etc/spotwatch/webhook.env
#   --skip-app          do not build or copy the application (config, units and CLI link only)
#   --no-criu           do not install CRIU
#   --no-start          install and enable, but do not start (or restart) the services
#
# Needs Node.js 20+ and npm (Debian trixie's nodejs, or NodeSource), and apt/dpkg for CRIU. Idempotent: run it
# again to upgrade; the configuration is kept and the agent restarted.
set -euo pipefail

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PREFIX=/opt/spotwatch
ROOT=/
REDIS_URL=""
CLUSTER_TOKEN=""
PROVIDER=""
WEBHOOK=0
SKIP_APP=0
NO_CRIU=0
NO_START=0

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --redis-url) REDIS_URL=${2:?--redis-url needs a URL}; shift 2 ;;
    --cluster-token) CLUSTER_TOKEN=${2:?--cluster-token needs a value}; shift 2 ;;
    --provider) PROVIDER=${2:?--provider needs a value}; shift 2 ;;
    --webhook) WEBHOOK=1; shift ;;
    --skip-app) SKIP_APP=1; shift ;;
    --no-criu) NO_CRIU=1; shift ;;
    --no-start) NO_START=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$REDIS_URL" in ""|redis://*|rediss://*) ;; *) die "--redis-url must be redis:// or rediss://" ;; esac
if [ -n "$CLUSTER_TOKEN" ] && [ "${#CLUSTER_TOKEN}" -lt 16 ]; then die "--cluster-token must be at least 16 characters"; fi
case "$PROVIDER" in ""|aws|gcp|azure|auto) ;; *) die "--provider must be aws, gcp, azure or auto" ;; esac

ROOT=${ROOT%/}
[ "$ROOT" = "" ] || [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then die "run as root (or with sudo)"; fi
DEST="$ROOT$PREFIX"
ETC="$ROOT/etc/spotwatch"
UNITS="$ROOT/etc/systemd/system"
BIN="$ROOT/usr/local/bin"

# 1. The application, built in a staging copy and swapped in whole.
if [ "$SKIP_APP" = 0 ]; then
  command -v node >/dev/null 2>&1 || die "Node.js 20+ is required (node not found)"
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "Node.js 20+ is required (found $(node --version))"
  command -v npm >/dev/null 2>&1 || die "npm is required"
  stage="$DEST.new.$$"
  trap 'rm -rf "$stage"' EXIT
  rm -rf "$stage"
  mkdir -p "$stage"
  say "building spotwatch in $stage"
  (cd "$SRC" && tar cf - package.json package-lock.json tsconfig.json tsconfig.build.json bin src providers bench examples scripts native 2>/dev/null) | tar xf - -C "$stage"
  (cd "$stage" && npm ci --no-audit --no-fund --loglevel=error && npm prune --omit=dev --no-audit --no-fund --loglevel=error)
  if command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; then
    bash "$stage/scripts/build-native.sh" >/dev/null || say "warning: a native program did not build (GPU checkpoints need the CUDA helper or NVIDIA's cuda-checkpoint; pages then go through the agent; CRIU is spawned directly)"
  fi
  # Keep a CRIU installed by an earlier run.
  if [ -d "$DEST/.criu" ] && [ ! -e "$stage/.criu" ]; then cp -a "$DEST/.criu" "$stage/.criu"; fi
  rm -rf "$DEST.old"
  if [ -d "$DEST" ]; then mv "$DEST" "$DEST.old"; fi
  mv "$stage" "$DEST"
  rm -rf "$DEST.old"
  trap - EXIT
  say "installed the application in $DEST"
fi

# 2. CRIU 4.x: the system's if new enough, else a private copy in $DEST/.criu (found by the agent there).
if [ "$NO_CRIU" = 0 ] && [ "$SKIP_APP" = 0 ]; then
  bash "$DEST/scripts/install-criu.sh" || die "CRIU could not be installed (see above); --no-criu skips it"
fi

# 3. The CLI.
mkdir -p "$BIN"
ln -sfn "$PREFIX/bin/spotwatch.js" "$BIN/spotwatch"

# 4. Configuration: created once from the example, then only the lines given on the command line change.
set_var() { # file name value
  local file=$1 name=$2 value=$3 tmp
  tmp=$(mktemp "$file.XXXXXX")
  awk -v n="$name" -v v="$value" 'BEGIN { done = 0 }
    $0 ~ "^#?" n "=" { if (!done) print n "=" v; done = 1; next }
    { print }
    END { if (!done) print n "=" v }' "$file" >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}
mkdir -p "$ETC"
chmod 755 "$ETC"
install_env() { # name
  local file="$ETC/$1.env"
  if [ ! -e "$file" ]; then
    install -m 600 "$SRC/deploy/systemd/$1.env.example" "$file"
    say "wrote $file (edit it, then: systemctl restart spotwatch-$1)"
  else
    say "kept $file"
  fi
  [ -z "$REDIS_URL" ] || set_var "$file" SPOTWATCH_REDIS_URL "$REDIS_URL"
}
install_env agent
[ -z "$CLUSTER_TOKEN" ] || set_var "$ETC/agent.env" SPOTWATCH_CLUSTER_TOKEN "$CLUSTER_TOKEN"
[ -z "$PROVIDER" ] || set_var "$ETC/agent.env" SPOTWATCH_PROVIDER "$PROVIDER"
[ "$WEBHOOK" = 0 ] || install_env webhook

# 5. The units.
mkdir -p "$UNITS"
install -m 644 "$SRC/deploy/systemd/spotwatch-agent.service" "$UNITS/spotwatch-agent.service"
[ "$WEBHOOK" = 0 ] || install -m 644 "$SRC/deploy/systemd/spotwatch-webhook.service" "$UNITS/spotwatch-webhook.service"

# Migration needs the shared cluster token (or SPOTWATCH_MIGRATE=false).
ready=1
if ! grep -qE '^SPOTWATCH_CLUSTER_TOKEN=.{16,}' "$ETC/agent.env" && ! grep -qE '^SPOTWATCH_MIGRATE=(false|0|no)$' "$ETC/agent.env"; then
  say "warning: $ETC/agent.env has no SPOTWATCH_CLUSTER_TOKEN (16+ characters, the same on every agent) and"
  say "         migration is on: set it (or SPOTWATCH_MIGRATE=false), then: systemctl restart spotwatch-agent"
  ready=0
fi

if [ -n "$ROOT" ]; then
  say "installed under $ROOT (nothing enabled or started)"
  exit 0
fi
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
  say "systemd is not running here: units installed, nothing enabled"
  exit 0
fi
systemctl daemon-reload
units=(spotwatch-agent.service)
[ "$WEBHOOK" = 0 ] || units+=(spotwatch-webhook.service)
systemctl enable "${units[@]}" >/dev/null
if [ "$NO_START" = 1 ] || [ "$ready" = 0 ]; then
  say "enabled ${units[*]} (not started)"
else
  systemctl restart "${units[@]}"
  say "started ${units[*]}: journalctl -u spotwatch-agent -f; curl -s localhost:9464/readyz"
fi
