#!/usr/bin/env bash
# Checks that each peer config is valid for its real binary, then starts each
# on random loopback ports, fetches through it, and stops it:
#   nginx-proxy-cache.conf  nginx -t, then a MISS and a HIT through the cache
#   varnish.vcl             varnishd -C, then a MISS and a HIT through varnishd
#   nginx-rtmp.conf         nginx -t, then an ffmpeg RTMP publish and a fetch
#                           of the HLS playlist and DASH manifest it makes
#
#   bash benches/load/peers/verify.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DIR=$(mktemp -d /tmp/strata-peers.XXXXXX)
pids=()
cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# A free loopback port (the OS picks it; the tiny window before the peer
# binds it is acceptable here).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Wait until something answers HTTP on a port.
wait_http() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "verify: nothing answered on port $1" >&2
    return 1
}
header() { curl -s -D - -o /dev/null "$1" | tr -d '\r' | awk -v h="$2" 'tolower($1) == tolower(h) ":" { print $2 }'; }
fail() { echo "verify: FAILED: $*" >&2; exit 1; }
# As root, nginx's workers would run as nobody and could not enter the 0700
# temp dir; keep them as the invoking user.
AS_ROOT=()
[[ $(id -u) -ne 0 ]] || AS_ROOT=(-g 'user root;')

# --- origin: a 2 MB object behind a CORS static server
mkdir -p "$DIR/origin"
head -c 2097152 /dev/urandom > "$DIR/origin/seg.m4s"
coproc ORIGIN { exec node "$ROOT/tests/browser/static-server.mjs" "$DIR/origin"; }
pids+=("$ORIGIN_PID")
read -r -t 10 ORIGIN_PORT <&"${ORIGIN[0]}" || fail "origin did not start"
echo "verify: origin (tests/browser/static-server.mjs) on 127.0.0.1:$ORIGIN_PORT"

# --- nginx proxy_cache
mkdir -p "$DIR/ngx"
PORT=$(free_port)
sed -e "s|__DIR__|$DIR/ngx|g" -e "s|__PORT__|$PORT|g" -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|g" \
    "$HERE/nginx-proxy-cache.conf" > "$DIR/ngx/nginx.conf"
nginx "${AS_ROOT[@]}" -t -q -p "$DIR/ngx/" -c "$DIR/ngx/nginx.conf" || fail "nginx -t nginx-proxy-cache.conf"
nginx "${AS_ROOT[@]}" -p "$DIR/ngx/" -c "$DIR/ngx/nginx.conf" &
pids+=($!)
wait_http "$PORT"
a=$(header "http://127.0.0.1:$PORT/seg.m4s" X-Cache)
b=$(header "http://127.0.0.1:$PORT/seg.m4s" X-Cache)
cmp -s <(curl -s "http://127.0.0.1:$PORT/seg.m4s") "$DIR/origin/seg.m4s" || fail "nginx proxy_cache body differs"
[[ $a == MISS && $b == HIT ]] || fail "nginx proxy_cache: X-Cache $a then $b, wanted MISS then HIT"
echo "verify: nginx proxy_cache on 127.0.0.1:$PORT: X-Cache $a then $b, 2 MB body intact"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# --- varnish
mkdir -p "$DIR/varnish"
PORT=$(free_port)
sed -e "s|__ORIGIN_HOST__|127.0.0.1|g" -e "s|__ORIGIN_PORT__|$ORIGIN_PORT|g" \
    "$HERE/varnish.vcl" > "$DIR/varnish/varnish.vcl"
varnishd -j none -C -f "$DIR/varnish/varnish.vcl" -n "$DIR/varnish/work" > /dev/null 2>"$DIR/varnish/compile.err" \
    || { cat "$DIR/varnish/compile.err" >&2; fail "varnishd -C varnish.vcl"; }
varnishd -j none -F -f "$DIR/varnish/varnish.vcl" -a "127.0.0.1:$PORT" -s malloc,1G \
    -n "$DIR/varnish/work" -T none -p vsl_space=1M > "$DIR/varnish/varnishd.log" 2>&1 &
pids+=($!)
wait_http "$PORT" || { cat "$DIR/varnish/varnishd.log" >&2; fail "varnishd did not start"; }
a=$(header "http://127.0.0.1:$PORT/seg.m4s" X-Cache)
b=$(header "http://127.0.0.1:$PORT/seg.m4s" X-Cache)
cmp -s <(curl -s "http://127.0.0.1:$PORT/seg.m4s") "$DIR/origin/seg.m4s" || fail "varnish body differs"
[[ $a == MISS && $b == HIT ]] || fail "varnish: X-Cache $a then $b, wanted MISS then HIT"
echo "verify: varnish on 127.0.0.1:$PORT: X-Cache $a then $b, 2 MB body intact"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# --- nginx-rtmp
mkdir -p "$DIR/rtmp"
RTMP_PORT=$(free_port)
HTTP_PORT=$(free_port)
sed -e "s|__DIR__|$DIR/rtmp|g" -e "s|__RTMP_PORT__|$RTMP_PORT|g" -e "s|__HTTP_PORT__|$HTTP_PORT|g" \
    "$HERE/nginx-rtmp.conf" > "$DIR/rtmp/nginx-rtmp.conf"
nginx "${AS_ROOT[@]}" -t -q -p "$DIR/rtmp/" -c "$DIR/rtmp/nginx-rtmp.conf" || fail "nginx -t nginx-rtmp.conf"
nginx "${AS_ROOT[@]}" -p "$DIR/rtmp/" -c "$DIR/rtmp/nginx-rtmp.conf" &
pids+=($!)
wait_http "$HTTP_PORT"
ffmpeg -hide_banner -loglevel error -re \
    -f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 40 \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 -b:v 800k \
    -c:a aac -b:a 96k -ac 2 -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/bench" &
FFMPEG_PID=$!
pids+=("$FFMPEG_PID")
for _ in $(seq 1 60); do
    [[ -f $DIR/rtmp/dash/bench.mpd ]] && (($(grep -c '^#EXTINF' "$DIR/rtmp/hls/bench.m3u8" 2>/dev/null || echo 0) >= 3)) && break
    sleep 0.5
done
hls=$(curl -s -o /dev/null -w '%{http_code} %header{access-control-allow-origin}' "http://127.0.0.1:$HTTP_PORT/hls/bench.m3u8")
dash=$(curl -s -o /dev/null -w '%{http_code} %header{access-control-allow-origin}' "http://127.0.0.1:$HTTP_PORT/dash/bench.mpd")
[[ $hls == "200 *" && $dash == "200 *" ]] || fail "nginx-rtmp: hls '$hls', dash '$dash', wanted '200 *'"
echo "verify: nginx-rtmp rtmp 127.0.0.1:$RTMP_PORT http 127.0.0.1:$HTTP_PORT: /hls/bench.m3u8 $hls, /dash/bench.mpd $dash"
# VERIFY_PLAY=1 also plays both with tests/browser/play.mjs (needs npm ci there).
if [[ ${VERIFY_PLAY:-0} == 1 ]]; then
    for player in hls dash; do
        url=http://127.0.0.1:$HTTP_PORT/hls/bench.m3u8
        [[ $player == dash ]] && url=http://127.0.0.1:$HTTP_PORT/dash/bench.mpd
        node "$ROOT/tests/browser/play.mjs" --player "$player" --url "$url" --seconds 6 --timeout 30 || true
    done
fi

kill "$FFMPEG_PID"; wait "$FFMPEG_PID" 2>/dev/null || true

echo "verify: all peers OK"
