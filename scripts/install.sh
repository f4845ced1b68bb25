#!/usr/bin/env bash
# Installs what spotwatch needs on a fresh Debian/Ubuntu machine: redis-server (for the demo and the
# tests), CRIU 4.x (for checkpoints; see scripts/install-criu.sh) and the npm packages (npm ci, which also
# builds dist/). Idempotent: each step is skipped when already satisfied. Run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "install: redis-server (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package starts a system Redis on 6379; spotwatch's demo and tests start their own on free ports.
fi

if [ -x scripts/install-criu.sh ] || [ -f scripts/install-criu.sh ]; then
  bash scripts/install-criu.sh
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install: npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build

# The native programs: the CUDA checkpoint helper (dlopens libcuda.so.1 at run time; builds without a GPU or CUDA
# toolkit) and the page pump (moves a dump's pages to the target outside the agent's event loop).
if [ -f scripts/build-native.sh ]; then
  bash scripts/build-native.sh >/dev/null || echo "install: a native program did not build; GPU tasks will use NVIDIA's cuda-checkpoint if it is on PATH, and the agent pumps pages itself"
fi
