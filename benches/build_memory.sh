#!/usr/bin/env bash
# Memory of `bottle build`: the peak RSS ("Maximum resident set size" of GNU `/usr/bin/time -v`)
# of building a recipe whose guest is `FROM scratch` + `COPY big /big-<unique>`, the context
# holding one random file `big`: once 373 MB, once 2 GB (10^6 and 10^9 bytes). The build hashes
# the context, streams it to the engine, saves the built image, normalizes the archive and
# hashes the component's files; each streams (or maps a bounded window), so the peak should
# not grow with the file. Target: ≤ 64 MB (10^6 bytes) for both. Also reports wall and CPU time.
#
# Usage (from anywhere): benches/build_memory.sh
#   SIZES="100MB 373MB" benches/build_memory.sh      other sizes (GNU head -c units)
#   SMOKE=1 benches/build_memory.sh                  a smoke run: SIZES=1MB; fails when the
#                                                    build fails, claims no figures
# Needs: cargo, python3, a running Docker Engine, GNU time as /usr/bin/time (Debian:
# `apt-get install time`), about 3× the largest size free in $TMPDIR and 1× in the engine's
# data root. Honors CARGO_TARGET_DIR. Prints the figures; asserts nothing about them: it exits
# non-zero only when it cannot run.
#
# Cleanup: bottle removes the image it built once saved; the layer of `COPY big` stays in the
# engine as build cache. Each size's build cache is removed right after its build (and on any
# exit): exactly the images that are new since this script started and whose chain is this
# script's `COPY … /big-<unique>` (and bottle's LABEL step on it), children first.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then sizes=${SIZES:-1MB}; else sizes=${SIZES:-373MB 2GB}; fi
die() { echo "build_memory: $*" >&2; exit 1; }
for tool in cargo docker python3 head df; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing; install it: apt-get install time"
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"

echo "build_memory: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-memory.XXXXXX)
unique="bench-memory-$$-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
remove_own_images() {
  [ -f "$work/images-before" ] || return 0
  python3 benches/own_images.py remove "$work/images-before" "/big-$unique " \
    '#(nop)  LABEL bottle.component=guest/' | sed 's/^/build_memory: removed image /' >&2 || true
}
cleanup() {
  local rc=$?
  remove_own_images
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

mkdir "$work/ctx"
printf 'FROM scratch\nCOPY big /big-%s\n' "$unique" >"$work/ctx/Dockerfile"
cat >"$work/recipe.toml" <<'EOF'
name = "bench-memory"

[guest]
backend = "docker"
image = { dockerfile = "ctx/Dockerfile" }
command = ["/big"]
EOF

results=()
for size in $sizes; do
  echo "build_memory: $size of random bytes in the guest's context" >&2
  head -c "$size" /dev/urandom >"$work/ctx/big" || die "cannot write $size into $work"
  bytes=$(stat -c %s "$work/ctx/big")
  free=$(df -B1 --output=avail "$work" | tail -1)
  [ "$free" -gt $((2 * bytes)) ] || die "$work has $free bytes free; the build needs about 2× $bytes more"
  echo "build_memory: bottle build under /usr/bin/time -v" >&2
  /usr/bin/time -v -o "$work/time.txt" "$bin" -q --store "$work/store" build "$work/recipe.toml" \
    >"$work/out.txt" 2>"$work/err.txt" || die "bottle build failed: $(cat "$work/err.txt" "$work/time.txt")"
  field() { sed -n "s/^[[:space:]]*$1: //p" "$work/time.txt"; }
  results+=("$bytes|$(field "Maximum resident set size (kbytes)")|$(field "Elapsed (wall clock) time (h:mm:ss or m:ss)")|$(field "User time (seconds)")|$(field "System time (seconds)")|$(uptime | sed 's/.*load average: //')")
  # Free the disk before the next size: this size's build cache, the store, the file.
  remove_own_images
  rm -rf "$work/store" "$work/ctx/big"
done

echo
echo "peak memory of bottle build, guest FROM scratch + COPY of one random file"
printf '%-14s %14s %12s %10s %16s %s\n' "file size" "peak RSS" "(10^6 B)" "wall" "CPU user+sys s" "  target <= 64 MB   load average at the end"
for r in "${results[@]}"; do
  IFS='|' read -r bytes kb wall user sys load <<<"$r"
  awk -v b="$bytes" -v kb="$kb" -v wall="$wall" -v u="$user" -v s="$sys" -v load="$load" -v smoke="$smoke" 'BEGIN {
    mb = kb * 1024 / 1e6
    printf "%-14s %10.1f MiB %9.1f MB %10s %16.2f   %s              %s\n",
      sprintf("%.0f MB", b / 1e6), kb / 1024, mb, wall, u + s, (smoke == 1 ? "smoke " : mb <= 64 ? "ok    " : "MISSED"), load
  }'
done
if [ "$smoke" = 1 ]; then
  echo "build_memory: SMOKE run (one 1 MB file): the figures above show the bench works; they are not measurements"
fi
