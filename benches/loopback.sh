# What the loopback benchmarks share (proxy_latency.sh, proxy_upload.sh, git_gate_push.sh):
# sourced after the script sets `bench` (its name, for messages) and cd's to the repository.
#
#   die MESSAGE          print "BENCH: MESSAGE" on stderr and exit 1
#   bench_work PREFIX    make $work, a temporary folder; on any exit (Ctrl-C included) kill
#                        and reap every process in $pids, then remove $work
#   free_port            print a free TCP port on 127.0.0.1
#   wait_port PORT WHAT [LOG]
#                        wait (10 s at most) until something listens on 127.0.0.1:PORT; if
#                        nothing does, die with the end of LOG (the listener's stderr)
#   daemon_config BIN DAEMON OUT [KEY=JSON ...]
#                        write OUT, DAEMON's config file (pipelock, git-gate or supervise):
#                        the example `BIN sidecar --example DAEMON` prints (every field of the
#                        daemon's typed config) with each dotted KEY (`listen_port`,
#                        `egress.routes.0.upstream_ca`; list items by index) set to the JSON
#                        after `=` (a string in quotes). KEY must be in the example and the
#                        value of the example's JSON type (any where the example has null;
#                        null anywhere): a renamed or retyped field stops the bench naming the
#                        key, instead of being written beside the real one.
#   smoke_note           under SMOKE=1, say on stdout that the figures are a smoke run's
# shellcheck shell=bash

die() { echo "$bench: $*" >&2; exit 1; }

bench_work() {
  work=$(mktemp -d -t "bottle-bench-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$rc"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  [ -n "${3:-}" ] && [ -f "$3" ] && tail -n 5 "$3" >&2
  die "nothing listens on 127.0.0.1:$1 ($2)"
}

daemon_config() {
  local bin=$1 daemon=$2 out=$3 example
  shift 3
  example=$("$bin" sidecar --example "$daemon") || die "\`bottle sidecar --example $daemon\` failed"
  python3 -c '
import json, sys
daemon, out, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
config = json.loads(sys.stdin.read())
def kind(v):
    for t, name in ((bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "list"), (dict, "object")):
        if isinstance(v, t):
            return name
    return "null"
def fail(msg):
    sys.exit(f"{daemon} config: {msg} (see `bottle sidecar --example {daemon}`)")
for s in sets:
    key, eq, text = s.partition("=")
    if not eq or not key:
        fail(f"{s!r} is not KEY=JSON")
    try:
        value = json.loads(text)
    except ValueError:
        fail(f"the value of {key} is not JSON: {text!r} (a string goes in double quotes)")
    path, node, parent, last = key.split("."), config, None, None
    for i, part in enumerate(path):
        where = ".".join(path[: i + 1])
        if isinstance(node, dict):
            if part not in node:
                there = ", ".join(node) or "none"
                fail(f"no field {where} (there: {there})")
            parent, last, node = node, part, node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                fail(f"no item {where} (the list has {len(node)})")
            parent, last, node = node, int(part), node[int(part)]
        else:
            up = ".".join(path[:i])
            fail(f"no field {where}: {up} is a {kind(node)}")
    if node is not None and value is not None and kind(node) != kind(value):
        fail(f"{key} is a {kind(node)} in the example, not a {kind(value)} ({text})")
    parent[last] = value
with open(out, "w") as f:
    json.dump(config, f, indent=1)
    f.write("\n")
' "$daemon" "$out" "$@" <<<"$example" || die "cannot write $daemon's config $out"
}

smoke_note() {
  [ "${SMOKE:-0}" = 1 ] || return 0
  echo "$bench: SMOKE run (one iteration, smallest sizes): the figures above show the bench works; they are not measurements"
}
