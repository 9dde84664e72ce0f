#!/usr/bin/env bash
# Pull throughput: an entry whose guest holds one random file (512 MiB by default, and a
# smaller one to show memory stays flat) pushed to nginx on a loopback port, then pulled into
# an empty store — every chunk downloaded, checked, written, the files put together, checked
# and published — against curl downloading the guest's and the bundle's image archives (the
# same bytes, less the config's few KiB) from the same nginx to the same disk in the same run, and
# against curl followed by an fsync of each file (the durability the pull pays for). Targets:
# pull ≥ 0.8× curl's throughput, ≥ 1.0× curl+fsync's; peak RSS (GNU time) flat in the entry's size.
#
# Usage (from anywhere): benches/share_pull.sh
#   SIZES="64M 1G" RUNS=5 benches/share_pull.sh      other sizes (GNU head -c units), runs
#   SMOKE=1 benches/share_pull.sh    a smoke run: SIZES=1M RUNS=1; fails when the build, push,
#                                    curl or pull fails, claims no figures
# Needs: cargo, python3, curl, nginx (Debian's nginx-light), GNU time as /usr/bin/time, a
# running Docker Engine, about 5× the largest size free in $TMPDIR. Honors CARGO_TARGET_DIR.
# Prints a table (medians of RUNS); asserts nothing about the figures.
#
# Cleanup: nginx (started here, stopped on any exit), the temporary folder, and the build
# cache of this script's `COPY … /big-<unique>` steps.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=${SMOKE:-0}
if [ "$smoke" = 1 ]; then
  sizes=${SIZES:-1M} runs=${RUNS:-1}
else
  sizes=${SIZES:-128M 512M} runs=${RUNS:-3}
fi
die() { echo "share_pull: $*" >&2; exit 1; }
for tool in cargo docker python3 curl nginx; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH; run scripts/setup"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing; install it: apt-get install time"
docker info >/dev/null 2>&1 || die "the Docker Engine is not running; run scripts/setup"

echo "share_pull: cargo build --release" >&2
cargo build --release --quiet || die "cargo build --release failed"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/bottle"
[ -x "$bin" ] || die "no binary at $bin"

work=$(mktemp -d -t bottle-bench-pull.XXXXXX)
unique="bench-pull-$$-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
nginx_pid=
remove_own_images() {
  [ -f "$work/images-before" ] || return 0
  python3 benches/own_images.py remove "$work/images-before" "/big-$unique " \
    '#(nop)  LABEL bottle.component=guest/' | sed 's/^/share_pull: removed image /' >&2 || true
}
cleanup() {
  local rc=$?
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null || true
  remove_own_images
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 benches/own_images.py snapshot "$work/images-before" || die "cannot list the engine's images"
export BOTTLE_CONFIG="$work/no-config.toml"
: >"$BOTTLE_CONFIG"
unset BOTTLE_SUBSTITUTERS BOTTLE_TRUSTED_PUBLIC_KEYS BOTTLE_SECRET_KEY_FILE

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/www" "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$port;
    root $work/www;
    location / { dav_methods PUT DELETE; create_full_put_path on; autoindex on; autoindex_format json; }
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
"$bin" -q key generate bench --out "$work" >/dev/null
public=$(cat "$work/bench.pub")
url="http://127.0.0.1:$port/cache"

mkdir "$work/ctx"
printf 'FROM scratch\nCOPY big /big-%s\n' "$unique" >"$work/ctx/Dockerfile"
printf 'name = "bench-pull"\n\n[guest]\nbackend = "docker"\nimage = { dockerfile = "ctx/Dockerfile" }\ncommand = ["/big"]\n' >"$work/recipe.toml"

results=()
for size in $sizes; do
  echo "share_pull: $size of random bytes in the guest; build and push" >&2
  head -c "$size" /dev/urandom >"$work/ctx/big"
  hash=$("$bin" -q --store "$work/src" build "$work/recipe.toml" | tail -1) || die "build failed"
  "$bin" -q --store "$work/src" push "$hash" --to "$url" --sign-key "$work/bench.sec" >/dev/null || die "push failed"
  # curl fetches the same bytes the pull moves: the guest's and the bundle's image archives
  # (the config component's few KiB aside).
  archive=$(ls "$work"/src/v2/components/guest/*/image.tar)
  bundle=$(ls "$work"/src/v2/components/bundle/*/image.tar)
  cp "$archive" "$work/www/image.tar"
  cp "$bundle" "$work/www/bundle.tar"
  bytes=$(( $(stat -c %s "$archive") + $(stat -c %s "$bundle") ))
  curl_s=(); sync_s=(); pull_s=(); rss=()
  for i in $(seq 1 "$runs"); do
    rm -f "$work/curl.out" "$work/curl-bundle.out"
    t0=$EPOCHREALTIME
    curl -s -o "$work/curl.out" "http://127.0.0.1:$port/image.tar" \
      -o "$work/curl-bundle.out" "http://127.0.0.1:$port/bundle.tar" || die "curl failed"
    t1=$EPOCHREALTIME
    # The durability the pull pays for: each file fsynced (coreutils' sync FILE… fsyncs each).
    sync "$work/curl.out" "$work/curl-bundle.out"
    t2=$EPOCHREALTIME
    curl_s+=("$(python3 -c "print($t1 - $t0)")")
    sync_s+=("$(python3 -c "print($t2 - $t0)")")
    rm -rf "$work/dst"
    /usr/bin/time -v -o "$work/time.txt" "$bin" -q --store "$work/dst" pull "$hash" --from "$url" \
      --trust "$public" >/dev/null 2>"$work/err.txt" || die "pull failed: $(cat "$work/err.txt")"
    pull_s+=("$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt" |
      awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')")
    rss+=("$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$work/time.txt")")
  done
  results+=("$size|$bytes|${curl_s[*]}|${sync_s[*]}|${pull_s[*]}|${rss[*]}")
  rm -rf "$work/dst" "$work/src" "$work/curl.out" "$work/curl-bundle.out" "$work/www/image.tar" "$work/www/bundle.tar" "$work/www/cache" "$work/ctx/big"
  remove_own_images
done

echo
echo "pull from nginx on loopback into an empty store, against curl of the same archives, and curl then an fsync of each file (medians of $runs)"
printf '%-8s %14s %10s %12s %10s %8s %12s %14s   %s\n' size "archives bytes" "curl MB/s" "curl+fsync" "pull MB/s" "vs curl" "vs curl+fsync" "pull peak RSS" "targets >= 0.8x, >= 1.0x"
for r in "${results[@]}"; do
  python3 - "$r" "$smoke" <<'PY'
import statistics, sys
size, b, c, s, p, m = sys.argv[1].split("|")
smoke = sys.argv[2] == "1"
b = int(b)
c = statistics.median(float(x) for x in c.split())
s = statistics.median(float(x) for x in s.split())
p = statistics.median(float(x) for x in p.split())
m = max(int(x) for x in m.split())
r1, r2 = c / p, s / p
ok = "smoke run" if smoke else "ok" if r1 >= 0.8 and r2 >= 1.0 else "MISSED"
print(f"{size:<8} {b:>14,} {b / c / 1e6:>10.0f} {b / s / 1e6:>12.0f} {b / p / 1e6:>10.0f} {r1:>7.2f}x {r2:>12.2f}x {m / 1024:>10.1f} MiB   {ok}")
PY
done
if [ "$smoke" = 1 ]; then
  echo "share_pull: SMOKE run (1M, one run): the figures above show the bench works; they are not measurements"
fi
