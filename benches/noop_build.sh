#!/usr/bin/env bash
# No-op build: `bottle build recipes/demo.toml` when the store already holds the entry (a cache
# hit), timed as a whole process, against a fully cached `docker build -q recipes/demo` of the
# same Dockerfile in the same run. Targets: bottle ≤ 20 ms mean, and ≤ 0.1× docker.
#
# Usage (from anywhere): benches/noop_build.sh [RUNS]      RUNS defaults to 50 (at least 30)
# Needs: cargo, hyperfine, python3, a running Docker Engine, recipes/demo/busybox (run
# scripts/setup first). Honors CARGO_TARGET_DIR. Prints a table; asserts nothing about timings:
# it exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-50}
[ "$runs" -ge 30 ] 2>/dev/null || { echo "noop_build: RUNS must be a number ≥ 30" >&2; exit 2; }

die() { echo "noop_build: $*" >&2; exit 1; }
for tool in cargo docker hyperfine python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

echo "noop_build: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-noop.XXXXXX)
BOTTLE_STORE=$(mktemp -d -t bottle-bench-store.XXXXXX)
export BOTTLE_STORE
hash=""
declare -A tag_before=() # tag → the image id it named before this run ("" if none)
baseline_id=""
baseline_existed=1

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
untagged() { [ "$(docker image inspect --format '{{len .RepoTags}}' "$1" 2>/dev/null)" = 0 ]; }

cleanup() {
  local rc=$? tag was now
  # Leave the engine as this run found it. A tag this run made is removed. A tag that named
  # another image before (another build of the same hash by a different bottle binary, e.g. a
  # debug build: the bundle image holds the binary) is pointed back at it, and this run's
  # image is removed if nothing else tags it. The baseline's image goes if this run made it
  # and nothing tags it.
  if [ -n "$hash" ]; then
    for tag in $(tags_of "$hash"); do
      was=${tag_before[$tag]-}
      now=$(image_id "$tag")
      if [ -z "$now" ] || [ "$now" = "$was" ]; then continue; fi
      if [ -n "$was" ] && [ -n "$(image_id "$was")" ]; then
        docker tag "$was" "$tag" || echo "noop_build: could not point $tag back at $was" >&2
        if untagged "$now"; then docker rmi "$now" >/dev/null 2>&1 || true; fi
      else
        docker rmi "$tag" >/dev/null 2>&1 || echo "noop_build: could not remove image $tag" >&2
      fi
    done
  fi
  if [ -n "$baseline_id" ] && [ "$baseline_existed" = 0 ] && untagged "$baseline_id"; then
    docker rmi "$baseline_id" >/dev/null 2>&1 || true
  fi
  rm -rf "$work" "$BOTTLE_STORE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The tags a build of HASH makes (guest image, and the bundle image where the build has one).
tags_of() { echo "bottle-guest:${1:0:12} bottle-bundle:${1:0:12}"; }

demo_hash=$("$bin" --quiet hash recipes/demo.toml) || die "bottle hash recipes/demo.toml failed"
for tag in $(tags_of "$demo_hash"); do
  tag_before[$tag]=$(image_id "$tag")
done
hash=$demo_hash

echo "noop_build: first build of recipes/demo.toml into $BOTTLE_STORE (builds the images)" >&2
built=$("$bin" --quiet build recipes/demo.toml | tail -n1) || die "bottle build recipes/demo.toml failed"
[ "$built" = "$hash" ] || die "bottle build printed $built, bottle hash printed $hash"
"$bin" --quiet build recipes/demo.toml >/dev/null || die "the no-op build failed"

# Warm docker's build cache for the baseline (and note whether its image is new).
baseline_before=$(docker images -aq --no-trunc | sort -u)
baseline_id=$(docker build -q recipes/demo 2>/dev/null | tail -n1) || die "docker build -q recipes/demo failed"
grep -qxF "$baseline_id" <<<"$baseline_before" || baseline_existed=0

echo "noop_build: measuring ($runs runs each, warmup 3)" >&2
hyperfine -N --warmup 3 --runs "$runs" --style basic \
  --command-name "bottle build (cached)" "$bin build recipes/demo.toml" \
  --export-json "$work/bottle.json" >&2 || die "hyperfine failed on bottle"
hyperfine -N --warmup 3 --runs "$runs" --style basic \
  --command-name "docker build -q (cached)" "docker build -q recipes/demo" \
  --export-json "$work/docker.json" >&2 || die "hyperfine failed on docker"

python3 - "$work/bottle.json" "$work/docker.json" "$runs" <<'PY'
import json, sys

def stats(path):
    r = json.load(open(path))["results"][0]
    return r["mean"] * 1e3, r["stddev"] * 1e3, r["min"] * 1e3, len(r["times"])

b_mean, b_sd, b_min, n = stats(sys.argv[1])
d_mean, d_sd, d_min, _ = stats(sys.argv[2])
ratio = b_mean / d_mean
ok = lambda good: "ok" if good else "MISSED"
print()
print(f"no-op build, recipes/demo.toml ({n} runs each, warmup 3)")
print(f"{'command':<34} {'mean ms':>9} {'± sd':>7} {'min ms':>8}")
print(f"{'bottle build (cache hit)':<34} {b_mean:>9.2f} {b_sd:>7.2f} {b_min:>8.2f}")
print(f"{'docker build -q (fully cached)':<34} {d_mean:>9.2f} {d_sd:>7.2f} {d_min:>8.2f}")
print(f"{'ratio bottle/docker':<34} {ratio:>9.3f}x")
print(f"target bottle mean <= 20 ms: {ok(b_mean <= 20)}; target ratio <= 0.1x: {ok(ratio <= 0.1)}")
PY
