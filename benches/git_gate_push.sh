#!/usr/bin/env bash
# git-gate's push throughput: `git push` of a repository of SIZE_MIB MiB of random files in
# one commit through git-gate (`bottle sidecar --daemons git-gate` on 127.0.0.1: smart HTTP
# from git, the whole push read and judged — policy, pack parsed, fast-forward walk — then
# forwarded over SSH with russh) against the same `git push` directly over SSH (OpenSSH's
# client) to the same upstream: Debian's sshd on 127.0.0.1 serving a bare repository that
# is made anew before every push, so each push carries every object.
#
# Reports each mean time, the throughput (repository bytes per second) and the ratio
# gate/direct (target ≥ 0.8×), with the load average.
#
# Usage (from anywhere): benches/git_gate_push.sh       SIZE_MIB=50 RUNS=5
#   SMOKE=1 benches/git_gate_push.sh   a smoke run: SIZE_MIB=1 RUNS=1; fails when either push
#                                      fails, claims no figures
# Needs: cargo, git, hyperfine, python3, /usr/sbin/sshd and ssh-keygen (scripts/setup).
# Honors CARGO_TARGET_DIR. Only 127.0.0.1 is used. Prints the figures; asserts nothing about
# them: it exits non-zero only when it cannot run.
# Cleanup: the processes it started (by PID) and its temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SMOKE:-0}" = 1 ]; then
  size_mib=${SIZE_MIB:-1} runs=${RUNS:-1}
else
  size_mib=${SIZE_MIB:-50} runs=${RUNS:-5}
fi
bench=git_gate_push
# shellcheck source=benches/loopback.sh
. benches/loopback.sh
for tool in cargo git hyperfine python3 ssh ssh-keygen; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (run scripts/setup)"
done
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is missing (run scripts/setup)"

echo "git_gate_push: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$(pwd)/$target" ;; esac
bin="$target/x86_64-unknown-linux-gnu/release/bottle"

bench_work gitgate

export GIT_CONFIG_NOSYSTEM=1 HOME="$work"
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY
git config --global user.name bench
git config --global user.email bench@bottle.invalid

# The upstream: sshd with a host key and one authorized key.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd
sshd_port=$(free_port)
cat >"$work/sshd_config" <<EOF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" &
pids+=($!)
wait_port "$sshd_port" sshd "$work/sshd.log"
echo "[127.0.0.1]:$sshd_port $(cut -d' ' -f1-2 "$work/host_key.pub")" >"$work/known_hosts"

# The repository: SIZE_MIB files of 1 MiB of random bytes, one commit.
git init -q -b main "$work/src"
for i in $(seq 1 "$size_mib"); do
  head -c 1048576 /dev/urandom >"$work/src/blob-$i.bin"
done
git -C "$work/src" add -A
git -C "$work/src" commit -qm "$size_mib MiB of random files"
bytes=$(du -sb --exclude=.git "$work/src" | cut -f1)

# git-gate, its upstream the same bare repository the direct push goes to.
bare="$work/upstream.git"
gate_port=$(free_port)
mkdir -p "$work/etc"
daemon_config "$bin" git-gate "$work/etc/git-gate.json" "port=$gate_port" 'listen_host="127.0.0.1"' \
  "audit_log=\"$work/audit.jsonl\"" 'upstreams.0.name="origin"' \
  "upstreams.0.via.ssh.url=\"ssh://root@127.0.0.1:$sshd_port$bare\"" \
  "upstreams.0.via.ssh.identity=\"$work/client_key\"" \
  "upstreams.0.via.ssh.known_hosts=\"$work/known_hosts\"" \
  'upstreams.0.branches=["**"]' upstreams.0.tags=false \
  "upstreams.0.max_push_bytes=$(( (size_mib + 64) * 1048576 ))"
"$bin" sidecar --daemons git-gate --config-dir "$work/etc" 2>"$work/gate.log" &
pids+=($!)
wait_port "$gate_port" git-gate "$work/gate.log"

fresh="rm -rf $bare && git init -q --bare $bare"
ssh_cmd="ssh -i $work/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
direct="git -C $work/src push -q ssh://root@127.0.0.1:$sshd_port$bare main:refs/heads/agent/bench"
gated="git -C $work/src push -q http://127.0.0.1:$gate_port/origin main:refs/heads/agent/bench"
# One of each first: both must work.
bash -c "$fresh" && GIT_SSH_COMMAND="$ssh_cmd" bash -c "$direct" || die "the direct push failed"
bash -c "$fresh" && bash -c "$gated" || die "the push through git-gate failed; see $work/gate.log"

echo "git_gate_push: $runs pushes of $bytes bytes each way (uptime: $(uptime))" >&2
GIT_SSH_COMMAND="$ssh_cmd" hyperfine --runs "$runs" --prepare "$fresh" \
  --export-json "$work/times.json" -n direct "$direct" -n git-gate "$gated" >&2

python3 - "$work/times.json" "$bytes" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
size = int(sys.argv[2])
d, g = r["direct"]["mean"], r["git-gate"]["mean"]
print(f"{'push':<10} {'mean s':>8} {'± s':>6} {'MB/s':>8}")
for name in ("direct", "git-gate"):
    x = r[name]
    print(f"{name:<10} {x['mean']:>8.3f} {x['stddev'] or 0:>6.3f} {size / x['mean'] / 1e6:>8.1f}")
print(f"throughput ratio git-gate/direct: {d / g:.2f}x (target >= 0.8x)")
EOF
echo "uptime after: $(uptime)"
smoke_note
