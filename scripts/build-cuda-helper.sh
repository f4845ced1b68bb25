#!/usr/bin/env bash
# Builds native/cuda-checkpoint-helper.c into native/build/cuda-checkpoint-helper: spotwatch's bridge to the CUDA
# driver's checkpoint API (cuCheckpointProcess*). Needs only a C compiler: no CUDA toolkit, no driver — the
# helper opens libcuda.so.1 at run time, so it can be built on a machine without a GPU and copied to one of the
# same architecture (it links only against glibc). See scripts/build-native.sh, which builds every native program.
#
#   scripts/build-cuda-helper.sh            # build if missing or older than the source
#   SPOTWATCH_CUDA_HELPER_REBUILD=1 ...     # force
#   SPOTWATCH_CUDA_HELPER_OUT=DIR ...       # output directory (default: native/build)
#   CC=clang ...                            # compiler (default: cc, then gcc)
#
# Prints the path of the helper on its last line. Exits 1 when no compiler is found or the build fails; a
# node without a GPU does not need the helper (the CUDA hook then reports itself unavailable).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -z "${SPOTWATCH_CUDA_HELPER_OUT:-}" ] || export SPOTWATCH_NATIVE_OUT="$SPOTWATCH_CUDA_HELPER_OUT"
[ -z "${SPOTWATCH_CUDA_HELPER_REBUILD:-}" ] || export SPOTWATCH_NATIVE_REBUILD=1
exec bash "$HERE/build-native.sh" cuda-checkpoint-helper
