#!/usr/bin/env bash
# No-op build: `bottle build recipes/demo.toml` when the store already holds the entry and its
# three components (a cache hit), timed as a whole process, against a fully cached
# `docker build -q recipes/demo` of the same Dockerfile in the same run. Targets: bottle ≤ 20 ms
# mean, and ≤ 0.1× docker.
#
# Usage (from anywhere): benches/noop_build.sh [RUNS]      RUNS defaults to 50 (at least 30)
#   SMOKE=1 benches/noop_build.sh   a smoke run: the same builds and checks, then one timed run of
#                                   each, no warm-up; fails when a build fails, claims no figures
# Needs: cargo, hyperfine, python3, a running Docker Engine, recipes/demo/busybox (run
# scripts/setup first). Honors CARGO_TARGET_DIR. Prints a table; asserts nothing about timings:
# it exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  runs=1 warmup=0
else
  runs=${1:-50} warmup=3
  [ "$runs" -ge 30 ] 2>/dev/null || { echo "noop_build: RUNS must be a number ≥ 30" >&2; exit 2; }
fi

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

cleanup() {
  local rc=$?
  # Leave the engine as this run found it: a build leaves no tag (bottle removes the guest
  # image it built once saved, and writes the bundle image without the engine), only the
  # intermediate layers of the demo's Dockerfile as build cache, and the baseline leaves its
  # image. Remove those that appeared during this run (none when the cache was warm).
  demo_images_remove
  rm -rf "$work" "$BOTTLE_STORE"
  exit "$rc"
}
# The images of the demo Dockerfile's steps (bottle's build adds a LABEL step) that are new
# since the snapshot; see benches/own_images.py.
demo_images_remove() {
  [ -f "$work/images-before" ] || return 0
  python3 benches/own_images.py remove "$work/images-before" ' in /bin/busybox ' \
    '/bin/busybox --install -s /bin' '#(nop) COPY multi:' '#(nop)  USER node' '#(nop) WORKDIR /home/node' \
    'mkdir -p /home/node /tmp /etc/bottle && chmod 1777 /tmp && chown -R node:node /home/node' \
    '#(nop)  LABEL bottle.component=guest/' | sed 's/^/noop_build: removed image /' >&2 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

hash=$("$bin" --quiet hash recipes/demo.toml) || die "bottle hash recipes/demo.toml failed"

echo "noop_build: first build of recipes/demo.toml into $BOTTLE_STORE (builds its three components)" >&2
built=$("$bin" --quiet build recipes/demo.toml | tail -n1) || die "bottle build recipes/demo.toml failed"
[ "$built" = "$hash" ] || die "bottle build printed $built, bottle hash printed $hash"
cached=$("$bin" --json build recipes/demo.toml | python3 -c 'import json,sys; print(json.load(sys.stdin)["cached"])') ||
  die "the no-op build failed"
[ "$cached" = True ] || die "the second build of recipes/demo.toml was no cache hit"

# Warm docker's build cache for the baseline.
docker build -q recipes/demo >/dev/null 2>&1 || die "docker build -q recipes/demo failed"

echo "noop_build: measuring ($runs runs each, warmup $warmup)" >&2
hyperfine -N --warmup "$warmup" --runs "$runs" --style basic \
  --command-name "bottle build (cached)" "$bin build recipes/demo.toml" \
  --export-json "$work/bottle.json" >&2 || die "hyperfine failed on bottle"
hyperfine -N --warmup "$warmup" --runs "$runs" --style basic \
  --command-name "docker build -q (cached)" "docker build -q recipes/demo" \
  --export-json "$work/docker.json" >&2 || die "hyperfine failed on docker"

python3 - "$work/bottle.json" "$work/docker.json" "$warmup" "$smoke" <<'PY'
import json, sys

def stats(path):
    r = json.load(open(path))["results"][0]
    return r["mean"] * 1e3, (r["stddev"] or 0) * 1e3, r["min"] * 1e3, len(r["times"])

b_mean, b_sd, b_min, n = stats(sys.argv[1])
d_mean, d_sd, d_min, _ = stats(sys.argv[2])
ratio = b_mean / d_mean
ok = lambda good: "smoke run" if sys.argv[4] == "1" else "ok" if good else "MISSED"
print()
print(f"no-op build, recipes/demo.toml ({n} runs each, warmup {sys.argv[3]})")
print(f"{'command':<34} {'mean ms':>9} {'± sd':>7} {'min ms':>8}")
print(f"{'bottle build (cache hit)':<34} {b_mean:>9.2f} {b_sd:>7.2f} {b_min:>8.2f}")
print(f"{'docker build -q (fully cached)':<34} {d_mean:>9.2f} {d_sd:>7.2f} {d_min:>8.2f}")
print(f"{'ratio bottle/docker':<34} {ratio:>9.3f}x")
print(f"target bottle mean <= 20 ms: {ok(b_mean <= 20)}; target ratio <= 0.1x: {ok(ratio <= 0.1)}")
PY
if [ "$smoke" = 1 ]; then
  echo "noop_build: SMOKE run (one run each, no warm-up): the figures above show the bench works; they are not measurements"
fi
