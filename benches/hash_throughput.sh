#!/usr/bin/env bash
# Hash throughput: how fast bottle reads and blake3-hashes a large input (`bottle hash` of a
# recipe whose guest image is a 1 GiB archive) and a large artifact (`bottle verify` of an entry
# holding that archive), against the `b3sum` CLI on the same file in the same run, page cache
# warm. Target: bottle's throughput ≥ 0.8× b3sum's, for hash and for verify.
#
# Usage (from anywhere): benches/hash_throughput.sh [RUNS]   RUNS defaults to 5 (at least 5)
#   SIZE=256M benches/hash_throughput.sh                     a smaller file, for a quick look
# Needs: cargo, hyperfine, python3, tar, b3sum (`cargo install --locked b3sum`), a running
# Docker Engine (the build makes the bundle image), ~3× SIZE free in $TMPDIR. Honors
# CARGO_TARGET_DIR. Prints a table; asserts nothing about timings: it exits non-zero only when
# it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
size=${SIZE:-1G}
[ "$runs" -ge 5 ] 2>/dev/null || { echo "hash_throughput: RUNS must be a number ≥ 5" >&2; exit 2; }

die() { echo "hash_throughput: $*" >&2; exit 1; }
for tool in cargo hyperfine python3 tar head docker; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
command -v b3sum >/dev/null 2>&1 ||
  die "b3sum is not on PATH; install it with \`cargo install --locked b3sum\` (1.8.x builds on Rust 1.95)"
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"

echo "hash_throughput: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd)/bottle

work=$(mktemp -d -t bottle-bench-hash.XXXXXX)
export BOTTLE_STORE="$work/store"
created_tags=()
cleanup() {
  local rc=$?
  for tag in "${created_tags[@]}"; do
    docker rmi "$tag" >/dev/null 2>&1 || echo "hash_throughput: could not remove image $tag" >&2
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A `docker save`-shaped archive: manifest.json and the config it names first (so reading the
# image id, which checks the config's sha256 against its name, does not scan the whole file),
# then SIZE random bytes.
echo "hash_throughput: writing $size of random bytes into $work" >&2
mkdir "$work/tar"
printf '{"bench":"%s","rootfs":{"type":"layers","diff_ids":[]}}' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$work/tar/config"
config=$(sha256sum "$work/tar/config" | cut -d' ' -f1)
mv "$work/tar/config" "$work/tar/$config.json"
printf '[{"Config":"%s.json","RepoTags":[],"Layers":[]}]' "$config" >"$work/tar/manifest.json"
head -c "$size" /dev/urandom >"$work/tar/big.bin"
tar -cf "$work/big.tar" -C "$work/tar" manifest.json "$config.json" big.bin
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
bundle_tag="bottle-bundle:${hash:0:12}"
docker image inspect "$bundle_tag" >/dev/null 2>&1 && bundle_existed=1 || bundle_existed=0
echo "hash_throughput: bottle build (copies the archive into the entry)" >&2
built=$("$bin" --quiet build "$work/recipe.toml" | tail -n1) || die "bottle build failed"
[ "$built" = "$hash" ] || die "bottle build printed $built, bottle hash printed $hash"
if [ "$bundle_existed" = 0 ] && docker image inspect "$bundle_tag" >/dev/null 2>&1; then
  created_tags+=("$bundle_tag")
fi
"$bin" --quiet verify "$hash" >/dev/null || die "bottle verify $hash failed before measuring"
entry="$BOTTLE_STORE/v1/builds/$hash"
# What verify rehashes: every artifact of the entry (the archive, the bundle image, small files).
verified=$("$bin" --json show "$hash" | python3 -c 'import json,sys; print(sum(a["size"] for a in json.load(sys.stdin)["artifacts"]))')

echo "hash_throughput: warming the page cache" >&2
cat "$work/big.tar" >/dev/null
find "$entry" -type f -exec cat {} + >/dev/null

measure() { # NAME JSON COMMAND
  hyperfine -N --warmup 1 --runs "$runs" --style basic --command-name "$1" --export-json "$2" "$3" >&2 ||
    die "hyperfine failed on: $3"
}
echo "hash_throughput: measuring ($runs runs each, warmup 1)" >&2
measure "b3sum big.tar" "$work/b3sum.json" "b3sum --no-names $work/big.tar"
measure "bottle hash" "$work/hash.json" "$bin --quiet hash $work/recipe.toml"
measure "b3sum entry archive" "$work/b3sum-entry.json" "b3sum --no-names $entry/guest/image.tar"
measure "bottle verify" "$work/verify.json" "$bin --quiet verify $hash"

python3 - "$work" "$bytes" "$verified" "$runs" <<'PY'
import json, sys

work, size, verified, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def result(name):
    return json.load(open(f"{work}/{name}.json"))["results"][0]

rows = [
    ("b3sum big.tar", size, result("b3sum")),
    ("bottle hash (recipe with big.tar)", size, result("hash")),
    ("b3sum entry's guest/image.tar", size, result("b3sum-entry")),
    ("bottle verify (every artifact)", verified, result("verify")),
]
mbps = {name: n / r["mean"] / 1e6 for name, n, r in rows}
print()
print(f"hash throughput, {size / 2**20:.0f} MiB archive, page cache warm ({runs} runs each, warmup 1)")
# CPU ms (user + system, summed over threads) is the work done; on a busy machine the wall
# time also holds waiting for a core, so compare CPU ms per MB when the means are noisy.
print(f"{'command':<36} {'MB hashed':>10} {'mean ms':>9} {'± sd':>6} {'CPU ms':>8} {'MB/s':>7}")
for name, n, r in rows:
    cpu = (r["user"] + r["system"]) * 1e3
    print(f"{name:<36} {n / 1e6:>10.1f} {r['mean'] * 1e3:>9.1f} {r['stddev'] * 1e3:>6.1f} {cpu:>8.1f} {mbps[name]:>7.0f}")
hash_ratio = mbps["bottle hash (recipe with big.tar)"] / mbps["b3sum big.tar"]
verify_ratio = mbps["bottle verify (every artifact)"] / mbps["b3sum entry's guest/image.tar"]
ok = lambda r: "ok" if r >= 0.8 else "MISSED"
print(f"ratio bottle/b3sum throughput, hash:   {hash_ratio:.3f}x  (target >= 0.8x: {ok(hash_ratio)})")
print(f"ratio bottle/b3sum throughput, verify: {verify_ratio:.3f}x  (target >= 0.8x: {ok(verify_ratio)})")
PY
