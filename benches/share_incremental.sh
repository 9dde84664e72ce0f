#!/usr/bin/env bash
# Incremental push: the demo built and pushed to a folder cache (file://), then
#   1. one file of the guest's context changed (a line added to demo/passwd), rebuilt, pushed;
#   2. an allowlist-only change (one more host in [pipelock] allow), rebuilt, pushed.
# For each: the bytes the push uploaded (chunks the cache lacked, plus the new records and
# chunk lists) against the entry's size — target ≤ 5% — and, as the baseline of the same run,
# what a whole-file scheme would upload: every file of the new entry's components whose blake3
# no file of the cache had.
#
# Usage (from anywhere): benches/share_incremental.sh
#   SMOKE=1 benches/share_incremental.sh   a smoke run: the same three builds and pushes (the
#                                          demo is small already); claims no figures
# Needs: cargo, python3, a running Docker Engine, recipes/demo/busybox (run scripts/setup).
# Honors CARGO_TARGET_DIR. Prints a table; asserts nothing about the figures: it exits non-zero
# only when it cannot run.
#
# Cleanup: a temporary folder (store, cache, recipe copy), and the build cache its builds made:
# the images new since this script started whose chain is the demo Dockerfile's steps.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "share_incremental: $*" >&2; exit 1; }
for tool in cargo docker python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

echo "share_incremental: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-share.XXXXXX)
export BOTTLE_STORE="$work/store"
unset BOTTLE_SUBSTITUTERS BOTTLE_TRUSTED_PUBLIC_KEYS BOTTLE_CONFIG
export BOTTLE_CONFIG="$work/no-config.toml"
: >"$BOTTLE_CONFIG"
cleanup() {
  local rc=$?
  if [ -f "$work/images-before" ]; then
    python3 benches/own_images.py remove "$work/images-before" ' in /bin/busybox ' \
      '/bin/busybox --install -s /bin' '#(nop) COPY multi:' '#(nop)  USER node' '#(nop) WORKDIR /home/node' \
      'mkdir -p /home/node /tmp /etc/bottle && chmod 1777 /tmp && chown -R node:node /home/node' \
      '#(nop)  LABEL bottle.component=guest/' | sed 's/^/share_incremental: removed image /' >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

mkdir -p "$work/recipes"
cp -r recipes/demo recipes/demo.toml "$work/recipes/"
recipe="$work/recipes/demo.toml"
"$bin" -q key generate bench --out "$work" >/dev/null
cache="file://$work/cache"

# build_push NAME: builds the recipe, pushes it; writes NAME.json (the push's report) and
# prints the hash.
build_push() {
  local hash
  hash=$("$bin" -q build "$recipe" | tail -1) || die "bottle build failed"
  "$bin" -q --json push "$hash" --to "$cache" --sign-key "$work/bench.sec" >"$work/$1.json" ||
    die "bottle push failed"
  echo "$hash"
}

echo "share_incremental: the demo, built and pushed" >&2
h0=$(build_push first)
echo "share_incremental: one line added to demo/passwd (the guest's context)" >&2
echo 'extra:x:1001:1001::/home/extra:/bin/sh' >>"$work/recipes/demo/passwd"
h1=$(build_push context)
echo "share_incremental: one more allowed host" >&2
sed -i 's/^allow = \["example.com"\]/allow = ["example.com", "example.org"]/' "$recipe"
grep -q 'example.org' "$recipe" || die "the allowlist edit did not apply"
h2=$(build_push allowlist)

python3 - "$BOTTLE_STORE" "$work" "$h0" "$h1" "$h2" "${SMOKE:-0}" <<'PY'
import json, os, sys
store, work, h0, h1, h2, smoke = sys.argv[1:]
v2 = os.path.join(store, "v2")
def files(h):
    m = json.load(open(os.path.join(v2, "entries", h + ".json")))
    out = []
    for kind, ch in m["components"].items():
        r = json.load(open(os.path.join(v2, "components", kind, ch, "record.json")))
        out += [(f["blake3"], f["size"]) for f in r["files"]]
    return out
seen = {d for d, _ in files(h0)}
print()
print("incremental push of the demo to a file:// cache (uploaded bytes vs the entry's size)")
print(f"{'change':<26} {'entry':>12} {'chunked push':>14} {'%':>7} {'whole-file':>12} {'%':>7}  target <= 5%")
first = json.load(open(os.path.join(work, "first.json")))
print(f"{'(first push)':<26} {first['entry_bytes']:>12,} {first['bytes_uploaded']:>14,} {100*first['bytes_uploaded']/first['entry_bytes']:>6.1f}%")
for name, h in (("one file of the context", h1), ("allowlist only", h2)):
    r = json.load(open(os.path.join(work, name.split()[0] == "one" and "context.json" or "allowlist.json")))
    fs = files(h)
    whole = sum(s for d, s in fs if d not in seen)
    seen |= {d for d, _ in fs}
    e, up = r["entry_bytes"], r["bytes_uploaded"]
    ok = "smoke run" if smoke == "1" else "ok" if up <= 0.05 * e else "MISSED"
    print(f"{name:<26} {e:>12,} {up:>14,} {100*up/e:>6.2f}% {whole:>12,} {100*whole/e:>6.2f}%  {ok}")
PY
if [ "${SMOKE:-0}" = 1 ]; then
  echo "share_incremental: SMOKE run: the figures above show the bench works; they are not measurements"
fi
