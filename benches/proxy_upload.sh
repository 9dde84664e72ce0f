#!/usr/bin/env bash
# pipelock's streaming: one upload of SIZE bytes (default 1 GiB, after a 64 MiB one) over
# HTTPS through pipelock's whole chain (CONNECT, TLS interception, DLP on the body chunk by
# chunk, the egress route injecting the token, upstream TLS) against the same upload
# directly to the upstream; the upstream (`examples/proxy_load.rs`, hyper + rustls) counts
# the bytes and answers their number, which the client checks.
#
# Reports the throughput of each and their ratio, and the sidecar's peak RSS (VmHWM) after
# the small and after the big upload: flat means no growth with the body's size. Then the
# idle RSS of `bottle sidecar --daemons pipelock,git-gate,supervise` a second after it
# listens (target ≤ 20 MiB).
#
# Usage (from anywhere): benches/proxy_upload.sh       SIZE=1073741824 SMALL=67108864 RUNS=3
#   SMOKE=1 benches/proxy_upload.sh    a smoke run: SIZE=1 MiB after SMALL=64 KiB, RUNS=1; fails
#                                      when an upload or a daemon fails, claims no figures
# Needs: cargo, python3. Honors CARGO_TARGET_DIR. Only 127.0.0.1 is used. Prints the figures;
# asserts nothing about them: it exits non-zero only when it cannot run.
# Cleanup: the processes it started (by PID) and its temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SMOKE:-0}" = 1 ]; then
  size=${SIZE:-1048576} small=${SMALL:-65536} runs=${RUNS:-1}
else
  size=${SIZE:-1073741824} small=${SMALL:-67108864} runs=${RUNS:-3}
fi
bench=proxy_upload
# shellcheck source=benches/loopback.sh
. benches/loopback.sh
for tool in cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

echo "proxy_upload: cargo build --release (bottle, examples/proxy_load)" >&2
cargo build --release --quiet || die "cargo build --release failed"
cargo build --release --quiet --example proxy_load || die "cargo build of proxy_load failed"
out="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
bin="$out/bottle"
load="$out/examples/proxy_load"

bench_work upload

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

"$load" certs "$work"
up=$(free_port)
"$load" serve "$up" "$work" 2>"$work/upstream.log" &
pids+=($!)
wait_port "$up" upstream "$work/upstream.log"

# conf DIR PORT: pipelock's config, with the route, and the other daemons' configs.
conf() {
  mkdir -p "$1"
  daemon_config "$bin" pipelock "$1/pipelock.json" "listen_port=$2" 'listen_host="127.0.0.1"' \
    'allow=["localhost"]' dlp.enabled=true "ca_cert=\"$work/pipelock.crt\"" "ca_key=\"$work/pipelock.key\"" \
    'egress.routes.0.host="localhost"' 'egress.routes.0.header="Authorization"' \
    'egress.routes.0.scheme="Bearer"' 'egress.routes.0.token_env="BENCH_TOKEN"' \
    "egress.routes.0.upstream_ca=\"$work/upstream-ca.pem\"" 'egress.upstream_proxy=null' \
    'allow_private=["127.0.0.0/8"]' "audit_log=\"$1/audit.jsonl\""
  daemon_config "$bin" git-gate "$1/git-gate.json" "port=$(free_port)" 'listen_host="127.0.0.1"' \
    'upstreams=[]' "audit_log=\"$1/audit.jsonl\""
  daemon_config "$bin" supervise "$1/supervise.json" "port=$(free_port)" 'listen_host="127.0.0.1"' \
    "queue=\"$1/queue\"" "audit_log=\"$1/audit.jsonl\""
}

# Idle first, on a quiet machine: all three daemons.
idle_port=$(free_port)
conf "$work/idle" "$idle_port"
echo '{"BENCH_TOKEN": "bench-real-token-0123456789"}' |
  BOTTLE_RUN=bench "$bin" sidecar --secrets-on-stdin --daemons pipelock,git-gate,supervise \
    --config-dir "$work/idle" 2>"$work/idle.log" &
idle_pid=$!
pids+=($idle_pid)
wait_port "$idle_port" "idle sidecar" "$work/idle.log"
sleep 1
kill -0 "$idle_pid" 2>/dev/null || die "the idle sidecar exited: $(tail -n 5 "$work/idle.log")"
idle_rss=$(kib "$idle_pid" VmRSS)
kill "$idle_pid"

pl=$(free_port)
conf "$work/conf" "$pl"
echo '{"BENCH_TOKEN": "bench-real-token-0123456789"}' |
  BOTTLE_RUN=bench "$bin" sidecar --secrets-on-stdin --daemons pipelock --config-dir "$work/conf" \
    2>"$work/sidecar.log" &
pl_pid=$!
pids+=($pl_pid)
wait_port "$pl" pipelock "$work/sidecar.log"

for bytes in "$small" "$size"; do
  for r in $(seq 1 "$runs"); do
    d=$("$load" upload - "$work/upstream-ca.pem" "$bytes" "$up" | sed 's/.*secs=//') ||
      die "direct upload failed"
    p=$("$load" upload "127.0.0.1:$pl" "$work/pipelock.crt" "$bytes" "$up" | sed 's/.*secs=//') ||
      die "upload through pipelock failed: $(tail -3 "$work/sidecar.log")"
    echo "$bytes $d $p" >>"$work/times"
  done
  echo "$bytes $(kib "$pl_pid" VmHWM) $(kib "$pl_pid" VmRSS)" >>"$work/rss"
done
grep -q " injected rule=route:" "$work/sidecar.log" || die "pipelock injected nothing"

echo "load: $(uptime)"
python3 - "$work/times" "$work/rss" "$idle_rss" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    b, d, p = line.split()
    rows.setdefault(int(b), []).append((float(d), float(p)))
rss = {int(l.split()[0]): (int(l.split()[1]), int(l.split()[2])) for l in open(sys.argv[2])}
print(f"{'upload':>10} {'direct MB/s':>12} {'pipelock MB/s':>14} {'ratio':>6} {'sidecar peak RSS':>17}")
for b in sorted(rows):
    d = statistics.median(x for x, _ in rows[b])
    p = statistics.median(y for _, y in rows[b])
    print(f"{b / 2**20:8.0f}Mi {b / d / 1e6:12.0f} {b / p / 1e6:14.0f} {d / p:6.2f} {rss[b][0] / 1024:13.1f} MiB")
print(f"median of {len(next(iter(rows.values())))} runs each; ratio = pipelock throughput / direct")
print(f"idle RSS, pipelock,git-gate,supervise: {int(sys.argv[3]) / 1024:.1f} MiB  (target <= 20 MiB)")
EOF
smoke_note
