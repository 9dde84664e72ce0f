#!/usr/bin/env bash
# supervise: the time from a person's `bottle supervise RUN --approve ID` to the host it grants
# being reachable from the guest, in a real run of a demo-like bottle (docker guest, busybox
# wget) with supervise, against a baseline measured in the same run: the interval between two
# requests of the same guest loop to a host that is allowed from the start (the resolution of
# the measurement).
#
# For each of RUNS hosts (h0.test…, names only the bundle resolves, mapped to a server this
# script starts on the host through `[network] hosts = host-gateway`): a guest loop asks for
# the host with wget through pipelock until it answers; the agent files `allow_host` through
# supervise's API; the script approves it with the CLI; the server notes the first request for
# the host. Reported: median and max of (first request − launch of `bottle supervise
# --approve`), target ≤ 1 s median of 10, and the same from the command's return.
#
# Usage (from anywhere): benches/supervise_approve.sh [RUNS]     RUNS defaults to 10
#   SMOKE=1 benches/supervise_approve.sh   a smoke run: one host; fails when the run, the filing,
#                                          the approval or the granted request fails; claims no
#                                          figures
# Needs: cargo, python3, a running Docker Engine, recipes/demo/busybox (scripts/setup).
# Honors CARGO_TARGET_DIR and BOTTLE (a prebuilt binary). Prints the figures; asserts nothing
# about them: it exits non-zero only when it cannot run.
# Cleanup: the run (`bottle down`), the images its build and run left, the server, the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then runs=1; else runs=${1:-10}; fi
[ "$runs" -ge 1 ] 2>/dev/null || { echo "supervise_approve: RUNS must be a number ≥ 1" >&2; exit 2; }
die() { echo "supervise_approve: $*" >&2; exit 1; }
for tool in cargo docker python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"
[ -f recipes/demo/busybox ] || die "recipes/demo/busybox is missing; run scripts/setup"

if [ -n "${BOTTLE:-}" ]; then
  bin=$BOTTLE
else
  echo "supervise_approve: cargo build --release" >&2
  cargo build --release --quiet || die "cargo build --release failed"
  bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
fi
[ -x "$bin" ] || die "no binary at $bin"
bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")

work=$(mktemp -d -t bottle-bench-supervise.XXXXXX)
export BOTTLE_STORE="$work/store"
new_images=()
cleanup() {
  local rc=$?
  "$bin" down --all >/dev/null 2>&1 || true
  for id in "${new_images[@]}"; do
    docker rmi --no-prune "$id" >/dev/null 2>&1 || true
  done
  if [ -f "$work/images-before" ]; then
    python3 benches/own_images.py remove "$work/images-before" ' in /bin/busybox ' \
      '/bin/busybox --install -s /bin' '#(nop) COPY multi:' '#(nop)  USER node' '#(nop) WORKDIR /home/node' \
      'mkdir -p /home/node /tmp /etc/bottle && chmod 1777 /tmp && chown -R node:node /home/node' \
      '#(nop)  LABEL bottle.component=guest/' | sed 's/^/supervise_approve: removed image /' >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"

mkdir -p "$work/recipe/demo"
cp recipes/demo/Dockerfile recipes/demo/busybox recipes/demo/passwd recipes/demo/group "$work/recipe/demo/"
hosts='"base.test" = "host-gateway"'
for i in $(seq 0 $((runs - 1))); do hosts="$hosts, \"h$i.test\" = \"host-gateway\""; done
cat >"$work/recipe/r.toml" <<EOF
name = "supervise-bench"

[guest]
backend = "docker"
image = { dockerfile = "demo/Dockerfile" }
user = "node"
command = ["sleep", "3600"]

[pipelock]
allow = ["base.test"]

[network]
hosts = { $hosts }

[supervise]
enabled = true
EOF
hash=$("$bin" -q build "$work/recipe/r.toml" | tail -1) || die "bottle build failed"
for id in $("$bin" --json show "$hash" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["guest"]["image_id"], s["bundle"]["image_id"])'); do
  docker image inspect "$id" >/dev/null 2>&1 || new_images+=("$id")
done

python3 - "$bin" "$hash" "$runs" <<'EOF'
import http.server, json, re, statistics, subprocess, sys, threading, time

bottle, hash_, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
first = {}      # host -> time of its first request
hits = []       # times of the requests for base.test
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        now = time.monotonic()
        host = self.headers.get("Host", "").split(":")[0]
        with lock:
            first.setdefault(host, now)
            if host == "base.test":
                hits.append(now)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

# On every interface: the bundle reaches it as host-gateway (its outbound network's gateway).
server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()

run = subprocess.Popen([bottle, "run", hash_], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
run_id = None
for line in run.stderr:
    m = re.search(r"bottle run: run (\S+) of ", line)
    if m:
        run_id = m.group(1)
    if "running sleep" in line:
        break
if run_id is None:
    sys.exit("supervise_approve: the run did not start")
threading.Thread(target=lambda: run.stderr.read(), daemon=True).start()

def guest(script, **kw):
    return subprocess.Popen([bottle, "exec", run_id, "--", "sh", "-c", script], **kw)

def loop(host):
    # Ask for the host until it answers; stop after one success (or 60 s).
    return guest(f"end=$(( $(date +%s) + 60 )); until wget -q -O /dev/null http://{host}:{port}/ 2>/dev/null; do [ $(date +%s) -gt $end ] && exit 1; done; exit 0",
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

try:
    # The baseline: the same loop's interval against an allowed host, for 3 s.
    base = guest(f"end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do wget -q -O /dev/null http://base.test:{port}/; done",
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base.wait()
    gaps = [b - a for a, b in zip(hits, hits[1:])]
    if len(gaps) < 3:
        sys.exit(f"supervise_approve: the guest reached base.test only {len(hits)} times")
    from_launch, from_return = [], []
    for i in range(runs):
        host = f"h{i}.test"
        poller = loop(host)
        time.sleep(0.5)  # the loop is refused a few times first
        filed = subprocess.run([bottle, "exec", run_id, "--", "sh", "-c",
            f"wget -q -O - -Y off --post-data '{{\"kind\":\"allow_host\",\"host\":\"{host}\"}}' \"$BOTTLE_SUPERVISE_URL/v1/requests?wait=0\""],
            capture_output=True, text=True, check=True)
        rid = json.loads(filed.stdout)["id"]
        if host in first:
            sys.exit(f"supervise_approve: {host} answered before it was granted")
        t0 = time.monotonic()
        subprocess.run([bottle, "supervise", run_id, "--approve", rid], check=True, stdout=subprocess.DEVNULL)
        t1 = time.monotonic()
        if poller.wait(timeout=90) != 0:
            print(f"supervise_approve: the guest loop ended with {poller.returncode}: {poller.stderr.read()[-2000:]}", file=sys.stderr)
            for what in (["logs", run_id], ["supervise", run_id, "--all"]):
                shown = subprocess.run([bottle, *what], capture_output=True, text=True)
                print(f"supervise_approve: bottle {' '.join(what)}:\n{shown.stdout[-3000:]}{shown.stderr[-2000:]}", file=sys.stderr)
            sys.exit(f"supervise_approve: {host} never became reachable")
        from_launch.append(first[host] - t0)
        from_return.append(first[host] - t1)
    subprocess.run([bottle, "down", run_id], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
finally:
    run.kill() if run.poll() is None else None
    run.wait()

ms = lambda s: f"{s * 1000:.0f} ms"
med = statistics.median(from_launch)
print(f"supervise approve → reachable from the guest, {runs} hosts:")
print(f"  from launching --approve: median {ms(med)}, max {ms(max(from_launch))} (target ≤ 1 s median)")
print(f"  from --approve's return:  median {ms(statistics.median(from_return))}, max {ms(max(from_return))}")
base_gap = statistics.median(gaps)
print(f"  baseline, the guest loop's interval to an allowed host: median {ms(base_gap)} ({len(hits)} requests)")
print(f"  ratio approve→reachable / baseline interval: {med / base_gap:.1f}x")
EOF
if [ "$smoke" = 1 ]; then
  echo "supervise_approve: SMOKE run (one host): the figures above show the bench works; they are not measurements"
fi
