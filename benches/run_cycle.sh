#!/usr/bin/env bash
# Run cycle: `bottle run HASH -- echo READY` of the demo, launch to exit, against a shell script
# doing the same steps with the docker CLI, in one run, alternating, RUNS times each:
#
#   bring-up = from launching the process to the moment READY arrives on its stdout
#   teardown = from READY to the process's exit (guest, bundle, networks removed)
#   cycle    = from launching the process to its exit (bring-up + command + teardown)
#
# The script's steps are the run's (src/run/): an internal network (inhibit_ipv4, no host
# address) and an outbound one; the images checked by id (loaded when missing); the bundle at
# .2 of the internal network with the entry's mounts (pipelock.json, egress.json from the
# config component; the CA certificate and key), env (and the run id bottle adds,
# BOTTLE_RUN), daemons and memory limit, no-new-privileges, attached to the outbound
# network, started, and waited on until pipelock listens; the guest at .3 on
# the internal network only, NET_RAW dropped, kept alive by the same shell loop, with the whole
# guest env; `chown -R USER:USER HOME` as root; the CA copied to its guest path and the same
# trust-store script as root; the command as the user in its home with the whole env; then
# both containers removed at once, then both networks. Every exec passes the whole env.
# Differences, each in the script's favour: it mints no CA per run (one openssl CA made before
# measuring is mounted by every run, where bottle mints one per run), runs no store check, pin
# or record, and takes fixed subnets from 10.215.0.0/16 instead of listing the engine's.
#
# Targets: cycle ≤ 0.5× the script's, bring-up ≤ 0.7×, teardown ≤ 1.0× (medians). Also
# reports what a second run of the same hash loads (nothing) and that run's step timings.
#
# Usage (from anywhere): benches/run_cycle.sh [RUNS]     RUNS defaults to 10
#   SMOKE=1 benches/run_cycle.sh    a smoke run: one of each, no warm-up; fails when a run or the
#                                   script fails or the entry lacks a field, claims no figures
# Needs: cargo, python3, openssl, bash ≥ 5, a running Docker Engine, recipes/demo/busybox (run
# scripts/setup first). Honors CARGO_TARGET_DIR and BOTTLE (a prebuilt binary to use instead
# of `cargo build --release`). Prints a table; asserts nothing about timings: it exits non-zero
# only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then runs=1; else runs=${1:-10}; fi
[ "$runs" -ge 1 ] 2>/dev/null || { echo "run_cycle: RUNS must be a number ≥ 1" >&2; exit 2; }
die() { echo "run_cycle: $*" >&2; exit 1; }
for tool in cargo docker python3 openssl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "bash ≥ 5 is needed (EPOCHREALTIME)"
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

if [ -n "${BOTTLE:-}" ]; then
  bin=$BOTTLE
else
  echo "run_cycle: cargo build --release" >&2
  cargo build --release --quiet || die "cargo build --release failed"
  bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
fi
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-run.XXXXXX)
BOTTLE_STORE="$work/store"
export BOTTLE_STORE
tag="bench$$"
loaded_ids=() # images the engine lacked before this run: the runs load them
cleanup() {
  local rc=$?
  "$bin" down --all >/dev/null 2>&1 || true
  for i in $(seq 0 "$runs"); do
    docker rm -f "$tag-$i-g" "$tag-$i-b" >/dev/null 2>&1 || true
    docker network rm "$tag-$i-in" "$tag-$i-out" >/dev/null 2>&1 || true
  done
  for id in "${loaded_ids[@]}"; do
    if docker image inspect "$id" >/dev/null 2>&1; then
      docker rmi --no-prune "$id" >/dev/null 2>&1 || echo "run_cycle: could not remove image $id" >&2
    fi
  done
  if [ -f "$work/images-before" ]; then
    python3 benches/own_images.py remove "$work/images-before" ' in /bin/busybox ' \
      '/bin/busybox --install -s /bin' '#(nop) COPY multi:' '#(nop)  USER node' '#(nop) WORKDIR /home/node' \
      'mkdir -p /home/node /tmp /etc/bottle && chmod 1777 /tmp && chown -R node:node /home/node' \
      '#(nop)  LABEL bottle.component=guest/' | sed 's/^/run_cycle: removed image /' >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

# The script's subnets must be free.
if docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' |
  tr ' ' '\n' | grep -q '^10\.215\.'; then
  die "a docker network already uses 10.215.0.0/16, where the script takes its subnets"
fi

echo "run_cycle: bottle build recipes/demo.toml into $BOTTLE_STORE" >&2
hash=$("$bin" -q build recipes/demo.toml | tail -1) || die "bottle build recipes/demo.toml failed"
"$bin" --json show "$hash" >"$work/show.json" || die "bottle show $hash failed"

# One CA for every run of the script (bottle mints one per run), made like bottle's: an ECDSA
# P-256 CA certificate (0644) and its key (0600), in a 0700 folder.
mkdir -m 0700 "$work/ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench pipelock CA/O=bottle" -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -keyout "$work/ca/pipelock.key" -out "$work/ca/pipelock.crt" 2>/dev/null || die "openssl could not mint a CA"
chmod 0600 "$work/ca/pipelock.key"
cp "$work/ca/pipelock.crt" "$work/ca/egress.crt"
cp "$work/ca/pipelock.key" "$work/ca/egress.key"

# What the script needs from the entry, as shell words.
eval "$(python3 - "$work/show.json" "$work" <<'EOF'
import json, os, shlex, sys
s = json.load(open(sys.argv[1])); work = sys.argv[2]
b, g = s["bundle"], s["guest"]
if g["backend"] != "docker":
    sys.exit("the demo's guest is not a docker guest")
q = shlex.quote
print("bundle_img=" + q(b["image_id"]))
print("guest_img=" + q(g["image_id"]))
print("bundle_tar=" + q(b["image_archive"]))
print("guest_tar=" + q(g["image_archive"]))
spec = b["spec"]
print("daemons=" + q(",".join(spec["daemons"])))
print("pipelock_port=" + q(str(spec["ports"]["pipelock"])))
mounts = []
for mt in spec["mounts"]:
    (kind, val), = mt["source"].items()
    if kind == "config":
        src = os.path.join(s["config"], val)
    elif kind == "ca":
        src = os.path.join(work, "ca", val)
    elif kind == "host":
        src = os.path.expanduser(val)
    elif kind == "run_dir":
        src = os.path.join(work, "run", val)
        os.makedirs(src, exist_ok=True)
    else:
        sys.exit(f"unknown mount source {kind}")
    mounts += ["--mount", "type=bind,src=%s,dst=%s%s" % (src, mt["target"], ",readonly" if mt["read_only"] else "")]
print("mounts=(" + " ".join(q(x) for x in mounts) + ")")
print("benv=(" + " ".join(q(x) for e in spec["env"] for x in ("-e", e)) + ")")
if spec["secrets"]:
    sys.exit("the demo's bundle needs host env: " + ", ".join(spec["secrets"]))
# [bundle] memory: absent from the spec when it is the default (512 MiB, plan::DEFAULT_BUNDLE_MEMORY).
print("bmem=" + q(str(spec.get("memory", 512 << 20))))
gs = g["spec"]
print("genv_tpl=(" + " ".join(q("%s=%s" % kv) for kv in sorted(gs["env"].items())) + ")")
print("ca_path=" + q(gs["ca_guest_path"]))
print("user=" + q(gs["user"]))
print("home=" + q(gs["home"]))
EOF
)"
for id in "$bundle_img" "$guest_img"; do
  docker image inspect "$id" >/dev/null 2>&1 || loaded_ids+=("$id")
done

# bottle's provisioning script (src/run/provision.rs), run the same way: as root, with the
# CA's guest path and the user as arguments, and no user files (the demo provisions none).
read -r -d '' trust_script <<'EOF' || true
ca="$1"; owner="$2"; shift 2
if command -v update-ca-certificates >/dev/null 2>&1; then
  mkdir -p /usr/local/share/ca-certificates && cp "$ca" "/usr/local/share/ca-certificates/bottle.crt" && update-ca-certificates >/dev/null 2>&1 || exit 3
elif [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cat "$ca" >> /etc/ssl/certs/ca-certificates.crt || exit 3
fi
if [ $# -gt 0 ]; then chown -R "$owner:$owner" "$@" || exit 4; fi
EOF

# The same steps with the docker CLI, one after the other. Subnets from 10.215.0.0/16, apart
# from bottle's pool.
script_once() {
  local i=$1 n="$tag-$1" s="10.215.$1"
  local ip="$s.2" e=()
  for kv in "${genv_tpl[@]}"; do e+=(-e "${kv//\{\{bundle_ip\}\}/$ip}"); done
  docker network create --internal -o com.docker.network.bridge.inhibit_ipv4=true \
    --subnet "$s.0/28" --gateway "$s.1" --label bottle.bench=1 "$n-in" >/dev/null
  docker network create --subnet "$s.16/28" --gateway "$s.17" --label bottle.bench=1 "$n-out" >/dev/null
  docker image inspect "$bundle_img" >/dev/null 2>&1 || docker load -q -i "$bundle_tar" >/dev/null
  docker image inspect "$guest_img" >/dev/null 2>&1 || docker load -q -i "$guest_tar" >/dev/null
  docker create --name "$n-b" --network "$n-in" --ip "$ip" "${mounts[@]}" "${benv[@]}" -e "BOTTLE_RUN=$n" \
    --memory "$bmem" --memory-swap "$bmem" --security-opt no-new-privileges --label bottle.bench=1 \
    "$bundle_img" --daemons "$daemons" >/dev/null
  docker network connect "$n-out" "$n-b"
  docker start "$n-b" >/dev/null
  local oip
  oip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$n-out\").IPAddress}}" "$n-b")
  until (exec 3<>"/dev/tcp/$oip/$pipelock_port") 2>/dev/null; do sleep 0.01; done
  docker create --name "$n-g" --network "$n-in" --ip "$s.3" --cap-drop NET_RAW --label bottle.bench=1 "${e[@]}" \
    --entrypoint /bin/sh "$guest_img" -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null
  docker start "$n-g" >/dev/null
  docker exec -u 0 "${e[@]}" "$n-g" chown -R "$user:$user" "$home"
  docker cp "$work/ca/pipelock.crt" "$n-g:$ca_path"
  docker exec -u 0 "${e[@]}" "$n-g" /bin/sh -c "$trust_script" provision "$ca_path" "$user"
  docker exec -u "$user" -w "$home" "${e[@]}" "$n-g" echo READY
  docker rm -f "$n-g" "$n-b" >/dev/null
  docker network rm "$n-in" "$n-out" >/dev/null
}

bottle_once() { "$bin" run -q "$hash" -- echo READY; }

# Times one pipeline: prints "bring-up-seconds teardown-seconds cycle-seconds"; fails unless
# the first line is READY and the pipeline succeeds.
timed() {
  local t0 t1 t2 mark
  mark="$work/mark"
  rm -f "$mark"
  t0=$EPOCHREALTIME
  "$@" | { IFS= read -r line && [ "$line" = READY ] && echo "$EPOCHREALTIME" >"$mark"; cat >/dev/null; } ||
    { echo "run_cycle: $* failed" >&2; return 1; }
  t2=$EPOCHREALTIME
  [ -s "$mark" ] || { echo "run_cycle: $* printed no READY" >&2; return 1; }
  t1=$(cat "$mark")
  python3 -c "import sys; t0,t1,t2=map(float,sys.argv[1:]); print(f'{t1-t0:.4f} {t2-t1:.4f} {t2-t0:.4f}')" "$t0" "$t1" "$t2"
}

# A warm-up of each: the first run loads the images into the engine (when it lacked them).
if [ "$smoke" = 1 ]; then
  echo "run_cycle: SMOKE: no warm-up, $runs of each" >&2
else
  echo "run_cycle: warm-up (one of each), then $runs of each, alternating" >&2
  timed bottle_once >/dev/null || die "bottle run failed"
  timed script_once 0 >/dev/null || die "the docker CLI script failed"
fi
b_up=() b_down=() b_all=() s_up=() s_down=() s_all=()
for i in $(seq 1 "$runs"); do
  read -r u d a < <(timed bottle_once) || die "bottle run failed"
  b_up+=("$u") b_down+=("$d") b_all+=("$a")
  read -r u d a < <(timed script_once "$i") || die "the docker CLI script failed"
  s_up+=("$u") s_down+=("$d") s_all+=("$a")
done

"$bin" run -q --json "$hash" -- true >"$work/second.json" || die "bottle run --json failed"
left=$(docker ps -aq --filter "label=bottle.store=$(cd "$BOTTLE_STORE" && pwd -P)" | wc -l)

python3 - "$runs" "${b_up[*]}" "${b_down[*]}" "${b_all[*]}" "${s_up[*]}" "${s_down[*]}" "${s_all[*]}" \
  "$work/second.json" "$left" "$smoke" <<'EOF'
import json, statistics as st, sys
runs = int(sys.argv[1])
smoke = sys.argv[10] == "1"
bu, bd, ba, su, sd, sa = ([float(x) for x in a.split()] for a in sys.argv[2:8])
second = json.load(open(sys.argv[8]))
ms = lambda x: x * 1000
print()
print(f"run cycle of the demo: `bottle run HASH -- echo READY` vs the docker CLI script, {runs} runs each, alternating")
print(f"{'':<10} {'bottle median':>14} {'min':>7} {'max':>7}   {'script median':>14} {'min':>7} {'max':>7}   {'ratio':>6}  target")
rows = [("bring-up", bu, su, 0.7), ("teardown", bd, sd, 1.0), ("cycle", ba, sa, 0.5)]
for name, b, s, target in rows:
    r = st.median(b) / st.median(s)
    verdict = "smoke run" if smoke else "met" if r <= target else "NOT met"
    print(f"{name:<10} {ms(st.median(b)):>11.0f} ms {ms(min(b)):>7.0f} {ms(max(b)):>7.0f}   "
          f"{ms(st.median(s)):>11.0f} ms {ms(min(s)):>7.0f} {ms(max(s)):>7.0f}   {r:>5.2f}x  <= {target:.1f}x {verdict}")
print(f"images loaded by a second run of the same hash: {len(second['images_loaded'])}")
steps = ", ".join(f"{n} {t}" for n, t in second["steps"])
print(f"that run's own timings (ms): bring-up {second['bring_up_ms']}, teardown {second['teardown_ms']}; steps: {steps}")
print(f"containers of this store left after the runs: {sys.argv[9]}")
EOF
if [ "$smoke" = 1 ]; then
  echo "run_cycle: SMOKE run (one run of each, no warm-up): the figures above show the bench works; they are not measurements"
fi
