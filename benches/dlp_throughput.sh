#!/usr/bin/env bash
# DLP throughput: how fast pipelock's DLP scans ordinary request bodies (the built-in rules,
# `BodyScanner` fed 64 KiB chunks), and how fast egress's scrubber passes a response, on three
# kinds of ordinary traffic generated from this repository:
#
#   code   its text files (sources, docs, Cargo.lock) concatenated;
#   chat   the same files inside chat requests to a model API, JSON-escaped, as an agent sends them;
#   image  one request carrying a base64 image (random bytes).
#
# Measured, both on the same data in the same run:
#   (a) in process, best of RUNS: DLP, the scrubber, and a memchr pass counting newlines (the
#       floor: what reading the bytes once costs);
#   (b) whole process, hyperfine: `dlp_throughput once FILE` (read the file, scan it) against
#       `grep -c -F -i` of the prefilter's commonest keywords over the same file.
#
# Target: DLP ≥ 200 MB/s on each kind, in process.
#
# Usage (from anywhere): benches/dlp_throughput.sh [RUNS]   RUNS defaults to 5 (at least 3)
#   SIZE=16 benches/dlp_throughput.sh                       MiB per kind (default 64)
#   SMOKE=1 benches/dlp_throughput.sh     a smoke run: SIZE=1, one run, no warm-up; fails when
#                                         a step fails, claims no figures
# Needs: cargo, python3, hyperfine, grep; 4 × SIZE MiB free in $TMPDIR. Honors CARGO_TARGET_DIR.
# Prints a table; asserts nothing about timings: exits non-zero only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  runs=1 warmup=0 size=${SIZE:-1}
else
  runs=${1:-5} warmup=1 size=${SIZE:-64}
  [ "$runs" -ge 3 ] 2>/dev/null || { echo "dlp_throughput: RUNS must be a number ≥ 3" >&2; exit 2; }
fi
die() { echo "dlp_throughput: $*" >&2; exit 1; }
for tool in cargo python3 hyperfine grep; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done

echo "dlp_throughput: cargo bench --no-run (release profile)" >&2
bin=$(cargo bench --bench dlp_throughput --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "dlp_throughput" and m.get("executable"):
        print(m["executable"])
') || die "cargo bench --no-run failed"
[ -x "$bin" ] || die "no bench binary ($bin)"

work=$(mktemp -d -t bottle-bench-dlp.XXXXXX)
cleanup() {
  local rc=$?
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "dlp_throughput: writing ${size} MiB of each kind into $work" >&2
"$bin" gen "$work" "$size" || die "generating the data failed"

rate() { sed -n 's/.* \([0-9][0-9]*\) MB\/s.*/\1/p'; }
rows=()
for kind in code chat image; do
  file="$work/$kind.body"
  bytes=$(stat -c %s "$file")
  dlp=$("$bin" dlp "$file" "$runs") || die "dlp on $kind failed"
  case "$dlp" in *"findings 0"*) ;; *) echo "dlp_throughput: warning: $dlp (ordinary data flagged)" >&2 ;; esac
  mem=$("$bin" memchr "$file" "$runs" | rate)
  scrub=$("$bin" scrub "$file" "$runs" | rate)
  json="$work/$kind.json"
  # -i: grep exits 1 when no line matches; --output=pipe: GNU grep stops at the first match
  # when its output is /dev/null (hyperfine's default)
  hyperfine -N -i --output=pipe -w "$warmup" -r "$runs" --export-json "$json" \
    -n dlp "$bin once $file" \
    -n grep "grep -c -F -i -e token -e secret -e password -e sk-ant- -e ghp_ $file" >/dev/null ||
    die "hyperfine failed on $kind"
  procs=$(python3 -c '
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
mb = int(sys.argv[2]) / 1e6
d, g = r["dlp"], r["grep"]
print("%.0f ms (%.0f MB/s) | %.0f ms (%.0f MB/s) | %.2f×" % (d * 1000, mb / d, g * 1000, mb / g, d / g))
' "$json" "$bytes")
  rows+=("| $kind | $(echo "$dlp" | rate) | $mem | $scrub | $procs |")
done

load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
echo
echo "DLP throughput, ${size} MiB per kind, best of $runs in process (load average $load)"
echo
echo "| body | DLP MB/s | memchr MB/s | scrubber MB/s | whole process: DLP | grep -c -F -i | DLP / grep |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "Target: DLP ≥ 200 MB/s on each kind (in process)."
if [ "$smoke" = 1 ]; then
  echo "dlp_throughput: SMOKE run (1 MiB of each kind, one run): the figures above show the bench works; they are not measurements"
fi
