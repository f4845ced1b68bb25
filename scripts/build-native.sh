#!/usr/bin/env bash
# Builds spotwatch's small native programs from native/*.c into native/build/. Each needs only a C compiler and
# glibc — no CUDA toolkit, no driver:
#
#   cuda-checkpoint-helper   the bridge to the CUDA driver's checkpoint API (dlopens libcuda.so.1 at run time)
#   page-pump                moves `criu dump`'s pages into the direct page channel (src/engines/criu/native-page-pump.ts)
#   exec-holder              a process started ahead of time that becomes `criu` later (src/engines/criu/exec-holder.ts)
#
#   scripts/build-native.sh [NAME...]        # default: all; each built if missing or older than its source
#   SPOTWATCH_NATIVE_REBUILD=1 ...           # force
#   SPOTWATCH_NATIVE_OUT=DIR ...             # output directory (default: native/build)
#   CC=clang ...                             # compiler (default: cc, then gcc, then clang)
#
# Prints the path of each binary, one per line (the last line is the last NAME). Exits 1 when no compiler is found
# or a build fails: spotwatch then falls back (GPU tasks to NVIDIA's cuda-checkpoint, pages to the agent's own pump).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR="${SPOTWATCH_NATIVE_OUT:-$ROOT/native/build}"
say() { printf 'build-native: %s\n' "$*" >&2; }

# Link flags per program (-ldl: glibc < 2.34 keeps dlopen in libdl; harmless on newer ones).
libs_for() {
  case "$1" in
    cuda-checkpoint-helper) echo "-ldl" ;;
    page-pump) echo "-pthread" ;;
    exec-holder) echo "" ;;
    *) say "unknown program $1 (known: cuda-checkpoint-helper page-pump exec-holder)"; return 1 ;;
  esac
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(cuda-checkpoint-helper page-pump exec-holder)

cc="${CC:-}"
for name in "${names[@]}"; do
  libs=$(libs_for "$name")
  src="$ROOT/native/$name.c"
  bin="$OUT_DIR/$name"
  if [ -x "$bin" ] && [ "$bin" -nt "$src" ] && [ -z "${SPOTWATCH_NATIVE_REBUILD:-}" ]; then
    echo "$bin"
    continue
  fi
  if [ -z "$cc" ]; then
    for c in cc gcc clang; do
      if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
    done
  fi
  [ -n "$cc" ] || { say "no C compiler (cc, gcc or clang) found; install one (apt-get install gcc) to build $name"; exit 1; }
  mkdir -p "$OUT_DIR"
  tmp="$bin.tmp.$$"
  # shellcheck disable=SC2086 # $libs is a list of flags
  if ! "$cc" -std=gnu11 -O2 -Wall -Wextra -Werror -o "$tmp" "$src" $libs; then
    rm -f "$tmp"
    say "compiling $src with $cc failed"
    exit 1
  fi
  mv -f "$tmp" "$bin"
  say "built $bin with $cc"
  echo "$bin"
done
