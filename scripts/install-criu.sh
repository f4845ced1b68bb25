#!/usr/bin/env bash
# Installs a CRIU that works on this kernel for spotwatch's CRIU engine.
#
#   - a system `criu` of version 4 or newer is used as is;
#   - otherwise CRIU 4.x from Debian (trixie: 4.1.1) is unpacked into a private prefix `.criu/` in the repo root,
#     with its own copy of every library it needs (libc6 included), and `.criu/bin/criu` runs it through
#     that prefix's dynamic loader. Nothing is installed system-wide and the system's apt sources are
#     never touched: a private sources list, package lists and cache live in a temporary directory.
#
# The wrapper finds its prefix from its own location, so the repo (with `.criu/`) can be copied to another
# machine of the same architecture (a GPU box) and used there as is.
#
# Idempotent: a working `.criu/` is kept (SPOTWATCH_CRIU_REINSTALL=1 forces a fresh one). Finishes with
# `criu check` and prints its verdict; exits non-zero with a message saying what failed.
#
# Which Debian suite: trixie (CRIU 4.1.1) by default. On kernels 6.16 and newer, forky (CRIU 4.2.x) instead:
# those kernels restrict SO_PASSCRED/SO_PASSSEC to unix sockets and CRIU 4.1.x then fails to dump ANY task
# holding a TCP/UDP socket ("Can't get 1:16 opt: Operation not supported"); fixed in CRIU 4.2 (upstream commit
# 4b73985, issue #2705). SPOTWATCH_CRIU_SUITE overrides the choice.
#
# Environment: SPOTWATCH_DEBIAN_MIRROR (default: the Debian mirror of /etc/apt/sources*, else
# http://deb.debian.org/debian), SPOTWATCH_CRIU_SUITE, SPOTWATCH_CRIU_REINSTALL=1.
set -euo pipefail

say() { printf 'install-criu: %s\n' "$*"; }
die() { printf 'install-criu: error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX="$ROOT/.criu"
MIN_MAJOR=4

# Kernel >= 6.16 needs CRIU >= 4.2 for inet sockets (see above).
kernel_needs_42() {
  local maj min
  IFS=. read -r maj min _ <<<"$(uname -r)"
  [ "${maj:-0}" -gt 6 ] 2>/dev/null || { [ "${maj:-0}" -eq 6 ] && [ "${min%%[!0-9]*}" -ge 16 ]; } 2>/dev/null
}
if [ -n "${SPOTWATCH_CRIU_SUITE:-}" ]; then
  SUITE="$SPOTWATCH_CRIU_SUITE"
elif kernel_needs_42; then
  SUITE=forky
else
  SUITE=trixie
fi

# Major version of the criu run by "$@" (empty when it cannot run).
criu_major() {
  local out
  out=$("$@" --version 2>/dev/null) || return 0
  sed -n 's/^Version: *\([0-9][0-9]*\)\..*/\1/p' <<<"$out" | head -n1
}

run_check() {
  local out rc=0
  if [ "$(id -u)" != 0 ]; then
    say "criu check needs root; run '$* check' as root to verify this kernel"
    return 0
  fi
  out=$("$@" check 2>&1) || rc=$?
  if [ "$rc" -eq 0 ] && grep -q 'Looks good' <<<"$out"; then
    say "criu check: Looks good ($("$@" --version | head -n1))"
    return 0
  fi
  printf '%s\n' "$out" | tail -n 20 >&2
  die "criu check failed (rc=$rc) with $* — this kernel lacks something CRIU needs (see above)"
}

# 1. A system criu that is new enough wins.
if command -v criu >/dev/null 2>&1; then
  major=$(criu_major criu)
  if [ -n "$major" ] && [ "$major" -ge "$MIN_MAJOR" ]; then
    say "using system criu at $(command -v criu)"
    if kernel_needs_42 && criu --version | grep -qE '^Version: *4\.[01]([^0-9]|$)'; then
      say "warning: kernel $(uname -r) needs CRIU >= 4.2 to dump tasks with TCP/UDP sockets; this one is older"
    fi
    run_check criu
    exit 0
  fi
  say "system criu $(criu --version 2>/dev/null | head -n1 | sed 's/^Version: *//') is older than $MIN_MAJOR.x; using a private CRIU from Debian $SUITE"
fi

arch=$(dpkg --print-architecture 2>/dev/null) || die "dpkg not found: this script needs a Debian-based system"
case "$arch" in
  amd64) TRIPLET=x86_64-linux-gnu; LDSO=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu; LDSO=ld-linux-aarch64.so.1 ;;
  *) die "unsupported architecture '$arch' (amd64 and arm64 are supported)" ;;
esac

# The wrapper's command for programs that start CRIU often (the agent: three runs per migration): they exec the
# loader themselves and skip the wrapper's shell (~3 ms a run). Paths are relative to the prefix.
write_exec_json() {
  printf '{"loader": "usr/lib/%s/%s", "libraryPath": ["usr/lib/%s", "lib/%s"], "criu": "usr/sbin/criu"}\n' \
    "$TRIPLET" "$LDSO" "$TRIPLET" "$TRIPLET" >"$1/exec.json"
}

# 2. An existing private install that runs and is new enough is kept.
if [ -x "$PREFIX/bin/criu" ] && [ -z "${SPOTWATCH_CRIU_REINSTALL:-}" ]; then
  major=$(criu_major "$PREFIX/bin/criu")
  have_suite=$(awk '{print $2}' "$PREFIX/SOURCE" 2>/dev/null || true)
  if [ -n "$major" ] && [ "$major" -ge "$MIN_MAJOR" ] && { [ -z "$have_suite" ] || [ "$have_suite" = "$SUITE" ]; }; then
    say "using private criu at .criu/bin/criu"
    [ -e "$PREFIX/exec.json" ] || write_exec_json "$PREFIX"
    run_check "$PREFIX/bin/criu"
    exit 0
  fi
  say "existing .criu/ does not run, is too old or is not from $SUITE; reinstalling"
fi

# 3. Install from Debian $SUITE into a private prefix.
for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs apt and dpkg"
done

mirror="${SPOTWATCH_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # The machine's own Debian mirror (deb822 "URIs:" or one-line "deb URL suite"), not the security one.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -v '^[[:space:]]*#' |
    grep -oE '(https?|file)://[^ ]+' |
    grep -E '/debian/?$' | head -n1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi
mirror="${mirror%/}"

keyring=""
for k in /usr/share/keyrings/debian-archive-keyring.gpg /usr/share/keyrings/debian-archive-$SUITE-stable.gpg; do
  if [ -r "$k" ]; then keyring="$k"; break; fi
done
[ -n "$keyring" ] || die "no Debian archive keyring in /usr/share/keyrings (install debian-archive-keyring)"

work=$(mktemp -d "${TMPDIR:-/tmp}/spotwatch-criu.XXXXXX")
stage="$PREFIX.new.$$"
cleanup() { rm -rf "$work" "$stage"; }
trap cleanup EXIT

mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/debs"
: >"$work/status"
echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$work/sources.list"
# The downloader sandbox user must be able to write here.
chmod 755 "$work" "$work/debs"
if id _apt >/dev/null 2>&1; then chown -R _apt "$work/lists/partial" "$work/debs" 2>/dev/null || true; fi

APT_OPTS=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::Etc::Preferences=$work/parts/none"
  -o "Dir::Etc::PreferencesParts=$work/parts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::State::status=$work/status"
  -o "Dir::Cache=$work/cache"
  -o "Acquire::Languages=none"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures::=$arch"
  -o "Debug::NoLocking=1"
)

say "fetching the Debian $SUITE package list from $mirror"
if ! out=$(apt-get "${APT_OPTS[@]}" -q update 2>&1) || grep -qE '^(E|W): ' <<<"$out"; then
  printf '%s\n' "$out" | grep -E '^(E|W): ' >&2 || printf '%s\n' "$out" | tail -n 5 >&2
  ls "$work/lists/"*_Packages* >/dev/null 2>&1 || die "could not fetch the package list of '$SUITE main' from $mirror"
fi

# Dependency closure of criu and libcompel1 (Depends and Pre-Depends only), libc6 included.
pkgs=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances criu libcompel1 2>/dev/null |
  grep -E '^[a-z0-9]' | grep -v '^<' | sort -u) || true
grep -qx criu <<<"$pkgs" && grep -qx libc6 <<<"$pkgs" ||
  die "could not resolve criu's dependencies in Debian $SUITE (got: $(echo $pkgs))"

say "downloading $(wc -l <<<"$pkgs") packages: $(echo $pkgs)"
# shellcheck disable=SC2086
if ! out=$(cd "$work/debs" && apt-get "${APT_OPTS[@]}" -q download $pkgs 2>&1); then
  printf '%s\n' "$out" | tail -n 10 >&2
  die "apt-get download failed for: $(echo $pkgs)"
fi

rm -rf "$stage"
mkdir -p "$stage"
for deb in "$work/debs/"*.deb; do
  dpkg-deb -x "$deb" "$stage" || die "could not unpack $(basename "$deb")"
done

[ -x "$stage/usr/sbin/criu" ] || die "the criu package did not contain usr/sbin/criu"
libdir="$stage/usr/lib/$TRIPLET"
[ -e "$libdir/$LDSO" ] || die "libc6 from $SUITE did not provide usr/lib/$TRIPLET/$LDSO"

mkdir -p "$stage/bin"
cat >"$stage/bin/criu" <<EOF
#!/bin/sh
# Generated by scripts/install-criu.sh: runs CRIU from Debian $SUITE with its own loader and libraries.
# The prefix is found from this file's own location, so the directory can be moved or copied.
P=\$(dirname "\$(dirname "\$(readlink -f "\$0")")")
exec "\$P/usr/lib/$TRIPLET/$LDSO" --library-path "\$P/usr/lib/$TRIPLET:\$P/lib/$TRIPLET" "\$P/usr/sbin/criu" "\$@"
EOF
chmod 755 "$stage/bin/criu"
write_exec_json "$stage"

# Every library criu loads must come from the prefix, never from the host.
list=$("$libdir/$LDSO" --library-path "$libdir:$stage/lib/$TRIPLET" --list "$stage/usr/sbin/criu" 2>&1) ||
  die "the unpacked criu cannot be loaded: $list"
outside=$(grep '=>' <<<"$list" | grep -v "=> $stage/" || true)
if [ -n "$outside" ]; then
  printf '%s\n' "$outside" >&2
  die "these libraries of criu are not in the private prefix (missing packages?)"
fi

printf '%s\n' "$pkgs" >"$stage/PACKAGES"
echo "$mirror $SUITE" >"$stage/SOURCE"
major=$(criu_major "$stage/bin/criu")
[ -n "$major" ] && [ "$major" -ge "$MIN_MAJOR" ] || die "the unpacked criu does not run or is older than $MIN_MAJOR.x"

rm -rf "$PREFIX"
mv "$stage" "$PREFIX"
say "installed $("$PREFIX/bin/criu" --version | head -n1 | sed 's/^Version: *//') into .criu/ (wrapper: .criu/bin/criu)"
run_check "$PREFIX/bin/criu"
