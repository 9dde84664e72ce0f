#!/usr/bin/env bash
# pipelock's cost per request: N small HTTPS requests (default 1,000) with keep-alive to an
# upstream on 127.0.0.1, through pipelock's whole chain (CONNECT, TLS interception with a leaf
# of the bench's bottle CA, DLP on, the egress route injecting the real token, upstream TLS
# verified against the route's upstream_ca), directly to the upstream, and through mitmproxy
# (Debian's `mitmdump`) intercepting the same traffic with an addon setting the same header.
# The upstream and the client are `examples/proxy_load.rs` (hyper + rustls), fast enough not
# to be the bottleneck.
#
# Two shapes, RUNS times each (median):
# - latency: the N requests one after the other on one connection; reports the time each
#   adds per request over direct, and pipelock's added time over mitmproxy's (target ≤ 0.1);
# - throughput: the N requests over CONNS connections at once; reports requests/s and
#   pipelock's over direct (target ≥ 0.5).
#
# Usage (from anywhere): benches/proxy_latency.sh      N=1000 RUNS=5 CONNS=8 by default
#   SMOKE=1 benches/proxy_latency.sh   a smoke run: N=10 RUNS=1 CONNS=2, a 5-request warm-up;
#                                      fails when a proxy or request fails, claims no figures
# Needs: cargo, python3, mitmdump (`apt-get install -y mitmproxy`). Honors CARGO_TARGET_DIR.
# Only 127.0.0.1 is used. Prints the figures; asserts nothing about them: it exits non-zero
# only when it cannot run. Cleanup: the processes it started (by PID) and its temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  n=${N:-10} runs=${RUNS:-1} conns=${CONNS:-2} warm=5
else
  n=${N:-1000} runs=${RUNS:-5} conns=${CONNS:-8} warm=50
fi
bench=proxy_latency
# shellcheck source=benches/loopback.sh
. benches/loopback.sh
for tool in cargo python3 mitmdump; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (mitmdump: apt-get install -y mitmproxy)"
done

echo "proxy_latency: cargo build --release (bottle, examples/proxy_load)" >&2
cargo build --release --quiet || die "cargo build --release failed"
cargo build --release --quiet --example proxy_load || die "cargo build of proxy_load failed"
out="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
bin="$out/bottle"
load="$out/examples/proxy_load"

bench_work proxy


"$load" certs "$work"
up=$(free_port)
"$load" serve "$up" "$work" 2>"$work/upstream.log" &
pids+=($!)
wait_port "$up" upstream "$work/upstream.log"

# pipelock: localhost allowed (and its loopback address, a private destination), and an egress
# route with the upstream's CA.
pl=$(free_port)
mkdir "$work/conf"
daemon_config "$bin" pipelock "$work/conf/pipelock.json" "listen_port=$pl" 'listen_host="127.0.0.1"' \
  'allow=["localhost"]' dlp.enabled=true "ca_cert=\"$work/pipelock.crt\"" "ca_key=\"$work/pipelock.key\"" \
  'egress.routes.0.host="localhost"' 'egress.routes.0.header="Authorization"' \
  'egress.routes.0.scheme="Bearer"' 'egress.routes.0.token_env="BENCH_TOKEN"' \
  "egress.routes.0.upstream_ca=\"$work/upstream-ca.pem\"" 'egress.upstream_proxy=null' \
  'allow_private=["127.0.0.0/8"]' "audit_log=\"$work/audit.jsonl\""
echo '{"BENCH_TOKEN": "bench-real-token-0123456789"}' |
  BOTTLE_RUN=bench "$bin" sidecar --secrets-on-stdin --daemons pipelock --config-dir "$work/conf" \
    2>"$work/sidecar.log" &
pids+=($!)
wait_port "$pl" pipelock "$work/sidecar.log"

# mitmproxy: its own CA in its confdir, trusting the upstream's CA, setting the same header.
mp=$(free_port)
cat >"$work/inject.py" <<'EOF'
def request(flow):
    flow.request.headers["authorization"] = "Bearer bench-real-token-0123456789"
EOF
mitmdump -q --listen-host 127.0.0.1 -p "$mp" --set confdir="$work/mitm" \
  --set ssl_verify_upstream_trusted_ca="$work/upstream-ca.pem" -s "$work/inject.py" \
  >"$work/mitm.log" 2>&1 &
pids+=($!)
wait_port "$mp" mitmproxy "$work/mitm.log"
[ -f "$work/mitm/mitmproxy-ca-cert.pem" ] || die "mitmproxy wrote no CA"

# name, proxy, CA the client trusts
setups=("direct - $work/upstream-ca.pem" "pipelock 127.0.0.1:$pl $work/pipelock.crt"
  "mitmproxy 127.0.0.1:$mp $work/mitm/mitmproxy-ca-cert.pem")
for s in "${setups[@]}"; do
  read -r name proxy ca <<<"$s"
  "$load" get "$proxy" "$ca" "$warm" 1 "$up" >/dev/null || die "warm-up through $name failed"
  for shape in latency throughput; do
    c=1
    [ "$shape" = throughput ] && c=$conns
    for r in $(seq 1 "$runs"); do
      secs=$("$load" get "$proxy" "$ca" "$n" "$c" "$up" | sed 's/.*secs=//') ||
        die "$shape run $r through $name failed"
      echo "$name $shape $secs" >>"$work/times"
    done
  done
done
grep -q " injected rule=route:" "$work/sidecar.log" || die "pipelock injected nothing: $(tail -3 "$work/sidecar.log")"

echo "load: $(uptime)"
python3 - "$work/times" "$n" "$conns" <<'EOF'
import statistics, sys
n, conns = int(sys.argv[2]), int(sys.argv[3])
t = {}
for line in open(sys.argv[1]):
    name, shape, secs = line.split()
    t.setdefault((name, shape), []).append(float(secs))
med = {k: statistics.median(v) for k, v in t.items()}
print(f"{n} requests, keep-alive; median of {len(t[('direct', 'latency')])} runs each")
print(f"{'':12} {'latency: ms/request':>20} {'added ms/request':>17} {f'throughput ({conns} conns): req/s':>32}")
for name in ["direct", "pipelock", "mitmproxy"]:
    per = med[(name, "latency")] / n * 1000
    added = per - med[("direct", "latency")] / n * 1000
    rps = n / med[(name, "throughput")]
    print(f"{name:12} {per:20.3f} {added:17.3f} {rps:32.0f}")
pl_added = (med[("pipelock", "latency")] - med[("direct", "latency")]) / n
mp_added = (med[("mitmproxy", "latency")] - med[("direct", "latency")]) / n
print(f"pipelock added / mitmproxy added: {pl_added / mp_added if mp_added > 0 else float('nan'):.3f}  (target <= 0.1)")
print(f"pipelock throughput / direct:     {med[('direct', 'throughput')] / med[('pipelock', 'throughput')]:.3f}  (target >= 0.5)")
EOF
smoke_note
