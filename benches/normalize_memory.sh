#!/usr/bin/env bash
# Memory of `oci::normalize`: the peak RSS of rewriting a `docker save` archive whose one layer
# holds a single SIZE-byte random file (default 2 GiB). normalize streams every layer through
# temporary files, so the peak should stay a few MiB whatever SIZE is; a figure that grows with
# SIZE means something holds a layer in memory.
#
# Usage (from anywhere): benches/normalize_memory.sh
#   SIZE=256M benches/normalize_memory.sh      a smaller layer, for a quick look
#   SMOKE=1 benches/normalize_memory.sh        a smoke run: SIZE=1M; fails when normalize
#                                              fails, claims no figures
# Needs: cargo, docker (a running engine), GNU time as /usr/bin/time (Debian: `apt-get install
# time`), ~4× SIZE free in $TMPDIR. Honors CARGO_TARGET_DIR. Prints the figures; asserts
# nothing about them: it exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then size=${SIZE:-1M}; else size=${SIZE:-2G}; fi
die() { echo "normalize_memory: $*" >&2; exit 1; }
for tool in cargo docker tar head; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing; install it: apt-get install time"
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"

echo "normalize_memory: cargo build --release --example normalize" >&2
cargo build --release --quiet --example normalize || die "cargo build failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/examples/normalize"
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-normalize.XXXXXX)
tag="bottle-bench-normalize-$$:big"
made_tag=0
cleanup() {
  local rc=$?
  if [ "$made_tag" = 1 ]; then
    docker rmi --no-prune "$tag" >/dev/null 2>&1 || echo "normalize_memory: could not remove image $tag" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "normalize_memory: an image of one layer holding $size of random bytes" >&2
mkdir "$work/root"
head -c "$size" /dev/urandom >"$work/root/big"
tar -C "$work/root" -c big | docker import - "$tag" >/dev/null || die "docker import failed"
made_tag=1
rm -rf "$work/root"
docker save "$tag" -o "$work/save.tar" || die "docker save failed"
docker rmi --no-prune "$tag" >/dev/null && made_tag=0

echo "normalize_memory: normalizing under /usr/bin/time -v" >&2
/usr/bin/time -v -o "$work/time.txt" "$bin" "$work/save.tar" "$work/normal.tar" >"$work/out.txt" ||
  die "normalize failed: $(cat "$work/out.txt" "$work/time.txt")"

field() { sed -n "s/^[[:space:]]*$1: //p" "$work/time.txt"; }
rss_kb=$(field "Maximum resident set size (kbytes)")
save_bytes=$(stat -c %s "$work/save.tar")
echo
echo "normalize of a docker save archive, one layer of one ${size} random file"
printf '%-28s %s\n' "image" "$(cat "$work/out.txt")"
mib() { awk -v n="$1" -v d="$2" 'BEGIN { printf "%.1f MiB", n / d }'; }
printf '%-28s %s\n' "archive size" "$(mib "$save_bytes" 1048576)"
printf '%-28s %s\n' "peak RSS (max resident)" "$(mib "$rss_kb" 1024)"
printf '%-28s %s\n' "wall time" "$(field "Elapsed (wall clock) time (h:mm:ss or m:ss)")"
printf '%-28s %s s user, %s s system\n' "CPU" "$(field "User time (seconds)")" "$(field "System time (seconds)")"
if [ "$smoke" = 1 ]; then
  echo "normalize_memory: SMOKE run (a 1M layer): the figures above show the bench works; they are not measurements"
fi
