#!/usr/bin/env bash
# Run bring-up and teardown: `bottle run HASH -- echo READY` of the demo against a shell script
# doing the same steps with the docker CLI (two networks, image check, bundle with its mounts at
# its pinned IP and a wait until pipelock listens, guest kept alive on the internal network,
# chown, CA copy and trust-store script, the command with the whole guest env), in one run,
# alternating, RUNS times each.
#
#   bring-up = from launching the process to the moment READY arrives on its stdout
#   teardown = from READY to the process's exit (guest, bundle, networks removed)
#
# Targets: bring-up ≤ 0.7× the script's, teardown no slower than the script's. Also reports
# what a second run of the same hash loads (nothing).
#
# Usage (from anywhere): benches/run_bringup.sh [RUNS]     RUNS defaults to 10
# Needs: cargo, python3, bash ≥ 5, a running Docker Engine, recipes/demo/busybox (run
# scripts/setup first). Honors CARGO_TARGET_DIR and BOTTLE (a prebuilt binary to use instead of
# `cargo build --release`). Prints a table; exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
[ "$runs" -ge 1 ] 2>/dev/null || { echo "run_bringup: RUNS must be a number ≥ 1" >&2; exit 2; }
die() { echo "run_bringup: $*" >&2; exit 1; }
for tool in cargo docker python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

if [ -n "${BOTTLE:-}" ]; then
  bin=$BOTTLE
else
  echo "run_bringup: cargo build --release" >&2
  cargo build --release --quiet || die "cargo build --release failed"
  bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
fi
[ -x "$bin" ] || die "no binary at $bin"

BOTTLE_STORE=$(mktemp -d -t bottle-bench-run.XXXXXX)
export BOTTLE_STORE
tag="bench$$"
hash=""
had_images=1
cleanup() {
  "$bin" down --all >/dev/null 2>&1 || true
  # The images of the demo's entry, unless the engine held them before this run.
  if [ -n "$hash" ] && [ "$had_images" = 0 ]; then
    ids=$(docker image ls -q --filter "label=bottle.hash=$hash" | sort -u)
    [ -z "$ids" ] || docker rmi -f $ids >/dev/null 2>&1 || true
  fi
  for i in $(seq 0 "$runs"); do
    docker rm -f "$tag-$i-g" "$tag-$i-b" >/dev/null 2>&1 || true
    docker network rm "$tag-$i-in" "$tag-$i-out" >/dev/null 2>&1 || true
  done
  rm -rf "$BOTTLE_STORE"
}
trap cleanup EXIT

hash=$("$bin" hash recipes/demo.toml | tail -1)
[ -n "$(docker image ls -q --filter "label=bottle.hash=$hash")" ] || had_images=0
hash=$("$bin" build -q recipes/demo.toml | tail -1)
entry="$BOTTLE_STORE/v1/builds/$hash"
# What the script needs from the manifest, as shell words.
eval "$(python3 - "$entry/manifest.json" "$entry" <<'EOF'
import json, shlex, sys
m = json.load(open(sys.argv[1])); entry = sys.argv[2]
b, g = m["bundle"], m["guest"]
print("bundle_img=" + shlex.quote(b["image_id"]))
print("guest_img=" + shlex.quote(g["image_id"]))
print("bundle_tar=" + shlex.quote(entry + "/" + b["image_archive"]))
print("guest_tar=" + shlex.quote(entry + "/" + g["image_archive"]))
print("daemons=" + shlex.quote(",".join(b["daemons"])))
mounts = []
for mt in b["mounts"]:
    src = mt["source"]
    if "entry" in src:
        mounts += ["--mount", "type=bind,src=%s/%s,dst=%s%s" % (entry, src["entry"], mt["target"], ",readonly" if mt["read_only"] else "")]
print("mounts=(" + " ".join(shlex.quote(x) for x in mounts) + ")")
print("benv=(" + " ".join(shlex.quote(x) for e in b["env"] for x in ("-e", e)) + ")")
print("genv_tpl=(" + " ".join(shlex.quote("%s=%s" % kv) for kv in sorted(g["env"].items())) + ")")
print("ca=" + shlex.quote(entry + "/" + g["ca"]))
print("ca_path=" + shlex.quote(g["ca_guest_path"]))
print("user=" + shlex.quote(g["user"]))
print("home=" + shlex.quote(g["home"]))
EOF
)"

# The same steps with the docker CLI. Subnets from 10.215.0.0/16, apart from bottle's pool.
script_once() {
  local i=$1 n="$tag-$1" s="10.215.$1"
  local ip="$s.2" e=()
  for kv in "${genv_tpl[@]}"; do e+=(-e "${kv//\{\{bundle_ip\}\}/$ip}"); done
  docker network create --internal -o com.docker.network.bridge.inhibit_ipv4=true \
    --subnet "$s.0/28" --gateway "$s.1" --label bottle.bench=1 "$n-in" >/dev/null
  docker network create --subnet "$s.16/28" --gateway "$s.17" --label bottle.bench=1 "$n-out" >/dev/null
  docker image inspect "$bundle_img" >/dev/null 2>&1 || docker load -q -i "$bundle_tar" >/dev/null
  docker image inspect "$guest_img" >/dev/null 2>&1 || docker load -q -i "$guest_tar" >/dev/null
  docker create --name "$n-b" --network "$n-in" --ip "$ip" "${mounts[@]}" "${benv[@]}" \
    --security-opt no-new-privileges --label bottle.bench=1 "$bundle_img" --daemons "$daemons" >/dev/null
  docker network connect "$n-out" "$n-b"
  docker start "$n-b" >/dev/null
  local oip
  oip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$n-out\").IPAddress}}" "$n-b")
  until (exec 3<>"/dev/tcp/$oip/8888") 2>/dev/null; do sleep 0.01; done
  docker create --name "$n-g" --network "$n-in" --cap-drop NET_RAW --label bottle.bench=1 "${e[@]}" \
    --entrypoint /bin/sh "$guest_img" -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null
  docker start "$n-g" >/dev/null
  docker exec -u 0 "${e[@]}" "$n-g" chown -R "$user:$user" "$home"
  docker cp "$ca" "$n-g:$ca_path"
  docker exec -u 0 "${e[@]}" "$n-g" /bin/sh -c \
    'if command -v update-ca-certificates >/dev/null 2>&1; then update-ca-certificates; fi' >/dev/null
  docker exec -u "$user" -w "$home" "${e[@]}" "$n-g" echo READY
  docker rm -f "$n-g" "$n-b" >/dev/null
  docker network rm "$n-in" "$n-out" >/dev/null
}

# Times one pipeline: prints "bring-up-seconds teardown-seconds".
timed() {
  local t0 mark
  mark=$(mktemp)
  t0=$EPOCHREALTIME
  "$@" | { read -r _; echo "$EPOCHREALTIME" >"$mark"; cat >/dev/null; }
  local t2=$EPOCHREALTIME t1
  t1=$(cat "$mark")
  rm -f "$mark"
  python3 -c "import sys; t0,t1,t2=map(float,sys.argv[1:]); print(f'{t1-t0:.4f} {t2-t1:.4f}')" "$t0" "$t1" "$t2"
}

bottle_once() { "$bin" run -q "$hash" -- echo READY; }

# A warm-up of each (images already in the engine from the build; page cache warm).
timed bottle_once >/dev/null
timed script_once 0 >/dev/null
b_up=() b_down=() s_up=() s_down=()
for i in $(seq 1 "$runs"); do
  read -r u d < <(timed bottle_once); b_up+=("$u"); b_down+=("$d")
  read -r u d < <(timed script_once "$i"); s_up+=("$u"); s_down+=("$d")
done

second=$("$bin" run -q --json "$hash" -- true | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images_loaded"]))')

python3 - "$runs" "${b_up[*]}" "${b_down[*]}" "${s_up[*]}" "${s_down[*]}" "$second" <<'EOF'
import statistics as st, sys
runs = int(sys.argv[1])
bu, bd, su, sd = ([float(x) for x in a.split()] for a in sys.argv[2:6])
def row(name, xs): return f"{name:<22} median {st.median(xs)*1000:7.0f} ms   min {min(xs)*1000:7.0f} ms   max {max(xs)*1000:7.0f} ms"
print(f"run_bringup: {runs} runs each, alternating (demo recipe)")
print(row("bottle bring-up", bu)); print(row("script bring-up", su))
print(row("bottle teardown", bd)); print(row("script teardown", sd))
ru = st.median(bu) / st.median(su); rd = st.median(bd) / st.median(sd)
print(f"bring-up ratio bottle/script  {ru:.2f}  (target ≤ 0.70: {'met' if ru <= 0.7 else 'NOT met'})")
print(f"teardown ratio bottle/script  {rd:.2f}  (target ≤ 1.00: {'met' if rd <= 1.0 else 'NOT met'})")
print(f"images loaded by a second run of the same hash: {sys.argv[6]}")
EOF
