#!/usr/bin/env bash
# Rebuild after an allowlist change: adding one host to `[pipelock] allow` of the demo recipe
# (a copy in a temporary folder) changes only the entry's `config` component, so `bottle build`
# of the changed recipe, with the old entry's `guest` and `bundle` in the store, renders the
# config and writes a new manifest and nothing else. Measured:
#
#   (a) the whole `bottle build` process of the changed recipe, hyperfine `-N`; before each run
#       `--prepare` removes the new config component's folder and the new entry file, so every
#       run really rebuilds the config;
#   (b) the store bytes that build adds: `du -sb` of the store before and after (apparent
#       bytes, folders and lock files included).
#
# Baseline, same run: the same changed recipe built into an empty store (`--prepare` empties
# it), so every component is built again as a monolithic entry was before components existed:
# the guest with `docker build` (engine layer cache warm) and its archive normalized, the
# bundle image written, the config rendered. Its store bytes are the whole entry's.
#
# Targets: the config-only rebuild ≤ 50 ms (mean, whole process) and ≤ 64 KiB of new store
# bytes.
#
# Usage (from anywhere): benches/rebuild_allowlist.sh [RUNS]   RUNS defaults to 20 (at least 10)
#   SMOKE=1 benches/rebuild_allowlist.sh   a smoke run: the same builds and checks, then one timed
#                                          run of each, no warm-up; fails when a build or check
#                                          fails, claims no figures
# Needs: cargo, hyperfine, python3, a running Docker Engine, recipes/demo/busybox (run
# scripts/setup first). Honors CARGO_TARGET_DIR. Prints a table; asserts nothing about timings:
# it exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  runs=1 warmup=0
else
  runs=${1:-20} warmup=2
  [ "$runs" -ge 10 ] 2>/dev/null || { echo "rebuild_allowlist: RUNS must be a number ≥ 10" >&2; exit 2; }
fi
die() { echo "rebuild_allowlist: $*" >&2; exit 1; }
for tool in cargo docker hyperfine python3 du; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

echo "rebuild_allowlist: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd)/bottle

work=$(mktemp -d -t bottle-bench-allow.XXXXXX)
store="$work/store"
empty="$work/store-empty"
unset BOTTLE_STORE
cleanup() {
  local rc=$?
  # A build leaves in the engine only the intermediate layers of the demo's Dockerfile (build
  # cache); remove those that appeared during this run (none when the cache was warm).
  if [ -f "$work/images-before" ]; then
    python3 benches/own_images.py remove "$work/images-before" ' in /bin/busybox ' \
      '/bin/busybox --install -s /bin' '#(nop) COPY multi:' '#(nop)  USER node' '#(nop) WORKDIR /home/node' \
      'mkdir -p /home/node /tmp /etc/bottle && chmod 1777 /tmp && chown -R node:node /home/node' \
      '#(nop)  LABEL bottle.component=guest/' | sed 's/^/rebuild_allowlist: removed image /' >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

# The demo recipe and its guest context, copied; the changed recipe beside it adds one host.
cp recipes/demo.toml "$work/demo.toml"
cp -a recipes/demo "$work/demo"
python3 - "$work/demo.toml" "$work/changed.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
changed, n = re.subn(r'(?m)^(allow\s*=\s*\[)', r'\1"bench.example.org", ', text)
if n != 1:
    sys.exit("cannot find the one `allow = [` line of the demo recipe")
open(sys.argv[2], "w").write(changed)
EOF

echo "rebuild_allowlist: building the demo recipe into $store" >&2
"$bin" -q --store "$store" build "$work/demo.toml" >/dev/null || die "bottle build of the demo recipe failed"
"$bin" --json hash "$work/changed.toml" >"$work/changed-hash.json" || die "bottle hash of the changed recipe failed"
"$bin" --json hash "$work/demo.toml" >"$work/demo-hash.json" || die "bottle hash of the demo recipe failed"
read -r new_hash new_config same < <(python3 - "$work/demo-hash.json" "$work/changed-hash.json" <<'EOF'
import json, sys
old, new = (json.load(open(p)) for p in sys.argv[1:])
oc, nc = old["components"], new["components"]
same = all(oc[k] == nc[k] for k in ("guest", "bundle")) and oc["config"] != nc["config"]
print(new["hash"], nc["config"], "yes" if same else "no")
EOF
)
[ "$same" = yes ] || die "adding a host changed more than the config component (or not the config)"
config_dir="$store/v2/components/config/$new_config"
entry_file="$store/v2/entries/$new_hash.json"
[ ! -e "$config_dir" ] && [ ! -e "$entry_file" ] || die "the store holds the changed entry already"

# (b) The bytes one config-only rebuild adds, and what it built.
before=$(du -sb "$store" | cut -f1)
"$bin" --json --store "$store" build "$work/changed.toml" >"$work/changed-build.json" ||
  die "bottle build of the changed recipe failed"
after=$(du -sb "$store" | cut -f1)
[ -d "$config_dir" ] && [ -f "$entry_file" ] || die "the build did not write $config_dir and $entry_file"

# The baseline's store bytes and what it built, once outside the timing.
"$bin" --json --store "$empty" build "$work/changed.toml" >"$work/empty-build.json" ||
  die "bottle build of the changed recipe into an empty store failed"
empty_bytes=$(du -sb "$empty" | cut -f1)

echo "rebuild_allowlist: measuring ($runs runs each, warmup $warmup)" >&2
hyperfine -N --warmup "$warmup" --runs "$runs" --style basic \
  --prepare "rm -rf $config_dir $entry_file" \
  --command-name "bottle build, config only" "$bin --store $store build $work/changed.toml" \
  --export-json "$work/config-only.json" >&2 || die "hyperfine failed on the config-only rebuild"
hyperfine -N --warmup "$warmup" --runs "$runs" --style basic \
  --prepare "rm -rf $empty" \
  --command-name "bottle build, empty store" "$bin --store $empty build $work/changed.toml" \
  --export-json "$work/empty.json" >&2 || die "hyperfine failed on the empty-store build"

python3 - "$work" "$runs" "$before" "$after" "$empty_bytes" "$warmup" "$smoke" <<'EOF'
import json, statistics as st, sys
work, runs = sys.argv[1], sys.argv[2]
before, after, empty_bytes = map(int, sys.argv[3:6])
warmup, smoke = sys.argv[6], sys.argv[7] == "1"

def built(name):
    b = json.load(open(f"{work}/{name}.json"))
    made = [c["name"] for c in b["components"] if not c["cached"]]
    kept = [c["name"] for c in b["components"] if c["cached"]]
    return "built " + (", ".join(made) or "nothing") + ("; cached " + ", ".join(kept) if kept else "")

def timing(name):
    r = json.load(open(f"{work}/{name}.json"))["results"][0]
    return r["mean"] * 1e3, (r["stddev"] or 0) * 1e3, st.median(r["times"]) * 1e3, r["min"] * 1e3

rows = [
    ("config only (guest, bundle in store)", timing("config-only"), after - before, built("changed-build")),
    ("empty store (baseline)", timing("empty"), empty_bytes, built("empty-build")),
]
print()
print(f"rebuild after adding one host to [pipelock] allow of the demo recipe ({runs} runs each, warmup {warmup})")
print(f"{'bottle build of the changed recipe':<38} {'mean ms':>8} {'± sd':>6} {'median':>7} {'min':>7} {'new store bytes':>16}  what it built")
for name, (mean, sd, med, mn), nbytes, what in rows:
    print(f"{name:<38} {mean:>8.1f} {sd:>6.1f} {med:>7.1f} {mn:>7.1f} {nbytes:>16,}  {what}")
(cm, *_), (em, *_) = rows[0][1], rows[1][1]
cb, eb = rows[0][2], rows[1][2]
print(f"ratio config-only/baseline: time {cm / em:.3f}x, store bytes {cb / eb:.4f}x")
ok = lambda good: "smoke run" if smoke else "ok" if good else "MISSED"
print(f"target whole process <= 50 ms: {ok(cm <= 50)} ({cm:.1f} ms); "
      f"target new store bytes <= 64 KiB: {ok(cb <= 64 * 1024)} ({cb / 1024:.1f} KiB)")
EOF
if [ "$smoke" = 1 ]; then
  echo "rebuild_allowlist: SMOKE run (one run each, no warm-up): the figures above show the bench works; they are not measurements"
fi
