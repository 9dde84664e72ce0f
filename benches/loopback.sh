# What the loopback benchmarks share (proxy_latency.sh, proxy_upload.sh, git_gate_push.sh):
# sourced after the script sets `bench` (its name, for messages) and cd's to the repository.
#
#   die MESSAGE          print "BENCH: MESSAGE" on stderr and exit 1
#   bench_work PREFIX    make $work, a temporary folder; on any exit (Ctrl-C included) kill
#                        and reap every process in $pids, then remove $work
#   free_port            print a free TCP port on 127.0.0.1
#   wait_port PORT WHAT  wait (10 s at most) until something listens on 127.0.0.1:PORT
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
  die "nothing listens on 127.0.0.1:$1 ($2)"
}
