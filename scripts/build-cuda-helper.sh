#!/usr/bin/env bash
# Builds native/cuda-checkpoint-helper.c into native/build/cuda-checkpoint-helper: spotwatch's bridge to the CUDA
# driver's checkpoint API (cuCheckpointProcess*). Needs only a C compiler: no CUDA toolkit, no driver — the
# helper opens libcuda.so.1 at run time, so it can be built on a machine without a GPU and copied to one of the
# same architecture (it links only against glibc).
#
#   scripts/build-cuda-helper.sh            # build if missing or older than the source
#   SPOTWATCH_CUDA_HELPER_REBUILD=1 ...     # force
#   SPOTWATCH_CUDA_HELPER_OUT=DIR ...       # output directory (default: native/build)
#   CC=clang ...                            # compiler (default: cc, then gcc)
#
# Prints the path of the helper on its last line. Exits 1 when no compiler is found or the build fails; a
# node without a GPU does not need the helper (the CUDA hook then reports itself unavailable).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/native/cuda-checkpoint-helper.c"
OUT_DIR="${SPOTWATCH_CUDA_HELPER_OUT:-$ROOT/native/build}"
BIN="$OUT_DIR/cuda-checkpoint-helper"

say() { printf 'build-cuda-helper: %s\n' "$*" >&2; }

if [ -x "$BIN" ] && [ "$BIN" -nt "$SRC" ] && [ -z "${SPOTWATCH_CUDA_HELPER_REBUILD:-}" ]; then
  echo "$BIN"
  exit 0
fi

cc="${CC:-}"
if [ -z "$cc" ]; then
  for c in cc gcc clang; do
    if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
  done
fi
[ -n "$cc" ] || { say "no C compiler (cc, gcc or clang) found; install one (apt-get install gcc) to build the CUDA helper"; exit 1; }

mkdir -p "$OUT_DIR"
tmp="$BIN.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# -ldl: glibc < 2.34 keeps dlopen in libdl; harmless on newer ones.
if ! "$cc" -std=gnu11 -O2 -Wall -Wextra -Werror -o "$tmp" "$SRC" -ldl; then
  say "compiling $SRC with $cc failed"
  exit 1
fi
mv -f "$tmp" "$BIN"
say "built $BIN with $cc"
echo "$BIN"
