#!/usr/bin/env bash
# Hash throughput: how fast bottle reads and blake3-hashes a large input (`bottle hash` of a
# recipe whose guest image is a 1 GiB archive) and a large entry (`bottle verify` of the entry
# built from it: manifest, records, every file of its three components, the config re-rendered,
# the image ids), against the `b3sum` CLI on the same files in the same run, page cache warm.
# Target: bottle's throughput ≥ 0.8× b3sum's, for hash and for verify.
#
# Usage (from anywhere): benches/hash_throughput.sh [RUNS]   RUNS defaults to 5 (at least 5)
#   SIZE=256M benches/hash_throughput.sh                     a smaller file, for a quick look
#   SMOKE=1 benches/hash_throughput.sh    a smoke run: SIZE=1M, one run each, no warm-up; fails
#                                         when a build, hash or verify fails, claims no figures
# Needs: cargo, hyperfine, python3, tar, sha256sum, b3sum (`cargo install --locked b3sum`),
# ~4× SIZE free in $TMPDIR. No Docker Engine: an archive guest and the bundle are written by
# bottle itself. Honors CARGO_TARGET_DIR. Prints a table; asserts nothing about timings: it
# exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  runs=1 warmup=0 size=${SIZE:-1M}
else
  runs=${1:-5} warmup=1 size=${SIZE:-1G}
  [ "$runs" -ge 5 ] 2>/dev/null || { echo "hash_throughput: RUNS must be a number ≥ 5" >&2; exit 2; }
fi

die() { echo "hash_throughput: $*" >&2; exit 1; }
for tool in cargo hyperfine python3 tar head sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
command -v b3sum >/dev/null 2>&1 ||
  die "b3sum is not on PATH; install it with \`cargo install --locked b3sum\` (1.8.x builds on Rust 1.95)"

echo "hash_throughput: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd)/bottle

work=$(mktemp -d -t bottle-bench-hash.XXXXXX)
export BOTTLE_STORE="$work/store"
cleanup() {
  local rc=$?
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A `docker save`-shaped archive (docker 20.10's layout) of one image whose one layer holds
# SIZE random bytes: manifest.json and the config it names first, then LAYER/layer.tar. The
# config's rootfs.diff_ids holds the layer's sha256, as the build's normalize step checks.
echo "hash_throughput: writing an image archive with $size of random bytes into $work" >&2
mkdir -p "$work/layer" "$work/tar"
head -c "$size" /dev/urandom >"$work/layer/big.bin"
tar -cf "$work/layer.tar" -C "$work/layer" --owner=0 --group=0 --numeric-owner big.bin
rm -rf "$work/layer"
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir "$work/tar/$diff_id"
mv "$work/layer.tar" "$work/tar/$diff_id/layer.tar"
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"Labels":{"bench":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$diff_id" >"$work/tar/config"
config=$(sha256sum "$work/tar/config" | cut -d' ' -f1)
mv "$work/tar/config" "$work/tar/$config.json"
printf '[{"Config":"%s.json","RepoTags":null,"Layers":["%s/layer.tar"]}]' "$config" "$diff_id" >"$work/tar/manifest.json"
tar -cf "$work/big.tar" -C "$work/tar" manifest.json "$config.json" "$diff_id"
rm -rf "$work/tar"
bytes=$(stat -c %s "$work/big.tar")

cat >"$work/recipe.toml" <<'EOF'
name = "bench-hash"

[guest]
backend = "docker"
image = { archive = "big.tar" }
command = ["sh"]
EOF

hash=$("$bin" --quiet hash "$work/recipe.toml") || die "bottle hash failed"
echo "hash_throughput: bottle build (normalizes the archive into the guest component)" >&2
built=$("$bin" --quiet build "$work/recipe.toml" | tail -n1) || die "bottle build failed"
[ "$built" = "$hash" ] || die "bottle build printed $built, bottle hash printed $hash"
"$bin" --quiet verify "$hash" >/dev/null || die "bottle verify $hash failed before measuring"
# What verify rehashes with blake3: every file each component's record lists (the manifest,
# the records and the re-rendered config are small). b3sum gets the same files.
"$bin" --json show "$hash" | python3 -c '
import json, sys
files = [(c["path"] + "/" + f["path"], f["size"]) for c in json.load(sys.stdin)["components"] for f in c["files"]]
assert all(" " not in p for p, _ in files), "a path with a space"
print(sum(s for _, s in files)); print(len(files)); print(" ".join(p for p, _ in files))
' >"$work/entry.txt" || die "bottle show --json $hash failed"
{ read -r verified; read -r nfiles; read -r entry_files; } <"$work/entry.txt"

echo "hash_throughput: warming the page cache" >&2
cat "$work/big.tar" >/dev/null
# shellcheck disable=SC2086 # a list of paths without spaces (checked above)
cat $entry_files >/dev/null

measure() { # NAME JSON COMMAND
  hyperfine -N --warmup "$warmup" --runs "$runs" --style basic --command-name "$1" --export-json "$2" "$3" >&2 ||
    die "hyperfine failed on: $3"
}
echo "hash_throughput: measuring ($runs runs each, warmup $warmup)" >&2
measure "b3sum big.tar" "$work/b3sum.json" "b3sum --no-names $work/big.tar"
measure "bottle hash" "$work/hash.json" "$bin --quiet hash $work/recipe.toml"
measure "b3sum entry files" "$work/b3sum-entry.json" "b3sum --no-names $entry_files"
measure "bottle verify" "$work/verify.json" "$bin --quiet verify $hash"

python3 - "$work" "$bytes" "$verified" "$nfiles" "$runs" "$warmup" "$smoke" <<'PY'
import json, sys

work, size, verified, nfiles, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
warmup, smoke = sys.argv[6], sys.argv[7] == "1"

def result(name):
    return json.load(open(f"{work}/{name}.json"))["results"][0]

rows = [
    ("b3sum big.tar", size, result("b3sum")),
    ("bottle hash (recipe with big.tar)", size, result("hash")),
    (f"b3sum the entry's {nfiles} files", verified, result("b3sum-entry")),
    ("bottle verify (the whole entry)", verified, result("verify")),
]
mbps = {name: n / r["mean"] / 1e6 for name, n, r in rows}
print()
print(f"hash throughput, {size / 2**20:.0f} MiB archive, page cache warm ({runs} runs each, warmup {warmup})")
# CPU ms (user + system, summed over threads) is the work done; on a busy machine the wall
# time also holds waiting for a core, so compare CPU ms per MB when the means are noisy.
print(f"{'command':<36} {'MB hashed':>10} {'mean ms':>9} {'± sd':>6} {'CPU ms':>8} {'MB/s':>7}")
for name, n, r in rows:
    cpu = (r["user"] + r["system"]) * 1e3
    print(f"{name:<36} {n / 1e6:>10.1f} {r['mean'] * 1e3:>9.1f} {(r['stddev'] or 0) * 1e3:>6.1f} {cpu:>8.1f} {mbps[name]:>7.0f}")
names = [name for name, _, _ in rows]
hash_ratio = mbps[names[1]] / mbps[names[0]]
verify_ratio = mbps[names[3]] / mbps[names[2]]
ok = lambda r: "smoke run" if smoke else "ok" if r >= 0.8 else "MISSED"
print(f"ratio bottle/b3sum throughput, hash:   {hash_ratio:.3f}x  (target >= 0.8x: {ok(hash_ratio)})")
print(f"ratio bottle/b3sum throughput, verify: {verify_ratio:.3f}x  (target >= 0.8x: {ok(verify_ratio)})")
PY
if [ "$smoke" = 1 ]; then
  echo "hash_throughput: SMOKE run (1M, one run each): the figures above show the bench works; they are not measurements"
fi
