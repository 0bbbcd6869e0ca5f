#!/usr/bin/env bash
# Proves play.mjs against real players and real content, with no Strata code:
# ffmpeg makes a live HLS (fMP4) stream from lavfi test sources (a two-rung
# ladder with audio); static-server.mjs serves them with
# CORS on a random loopback port (so the player page and the media are
# cross-origin), and h3-static-server.py (aioquic) serves the same files over
# HTTP/3 only; then hls.js and Shaka (dash.js: see below) each play for a few seconds
# and must report ok:true (the HTTP/3 runs must report only h3 responses).
# Last, a cenc-encrypted VOD (cenc-encrypt.py) plays with ClearKey in all three
# players, and must fail with a wrong key.
#
#   bash tests/browser/selftest.sh [SECONDS]      (default 6)
#
# Needs ffmpeg, node, chromium, tests/browser/node_modules (npm ci) and, for
# HTTP/3, a python with aioquic: $STRATA_PYTHON, else .venv/bin/python
# (scripts/install-test-deps.sh makes both).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${STRATA_PYTHON:-$HERE/../../.venv/bin/python}
SECONDS_PER_PLAYER=${1:-6}
WORK=$(mktemp -d /tmp/strata-selftest.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/hls" "$WORK/ck"

# Test sources: 30 fps colour bars with a clock, and a 440 Hz tone.
SRC=(-f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000")
# Two video rungs, GOP = 2 s so every segment starts with a key frame.
LADDER=(
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0
    -b:v:0 800k -b:v:1 300k -filter:v:1 scale=320:180
    -c:a aac -b:a 96k -ac 2
)
LIVE_FOR=150   # seconds; ffmpeg stops by itself even if this script is killed

echo "selftest: work dir $WORK"

# Live HLS, fMP4 segments, master playlist with two variants.
(cd "$WORK/hls" && exec ffmpeg -hide_banner -loglevel error -re "${SRC[@]}" -t "$LIVE_FOR" \
    -map 0:v -map 0:v -map 1:a -map 1:a "${LADDER[@]}" \
    -f hls -hls_time 2 -hls_list_size 10 -hls_flags delete_segments+independent_segments \
    -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
    -master_pl_name master.m3u8 -var_stream_map "v:0,a:0 v:1,a:1" \
    -hls_segment_filename 'stream_%v/seg_%05d.m4s' 'stream_%v/index.m3u8') &
pids+=($!)


# ClearKey: a 16 s VOD DASH, encrypted in place with cenc by cenc-encrypt.py
# (ffmpeg's own fragmented cenc output lacks per-fragment senc/saiz/saio),
# signalled in the MPD (mp4protection + W3C ClearKey) and in an HLS master
# (SAMPLE-AES-CTR, KEYFORMAT org.w3.clearkey) over the same segments.
KID=0123456789abcdef0123456789abcdef
KEY=fedcba9876543210fedcba9876543210
KID_UUID=${KID:0:8}-${KID:8:4}-${KID:12:4}-${KID:16:4}-${KID:20:12}
(cd "$WORK/ck" && ffmpeg -hide_banner -loglevel error "${SRC[@]}" -t 16 \
    -map 0:v -map 1:a -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 \
    -b:v 800k -c:a aac -b:a 96k -ac 2 \
    -f dash -seg_duration 2 -use_template 1 -use_timeline 1 -adaptation_sets "id=0,streams=v id=1,streams=a" \
    -init_seg_name 'init-$RepresentationID$.m4s' -media_seg_name 'chunk-$RepresentationID$-$Number%05d$.m4s' \
    manifest.mpd)
"$PYTHON" "$HERE/cenc-encrypt.py" "$WORK/ck" "$KID" "$KEY"
sed -i -e "s|<AdaptationSet \([^>]*\)>|<AdaptationSet \1>\n<ContentProtection schemeIdUri=\"urn:mpeg:dash:mp4protection:2011\" value=\"cenc\" cenc:default_KID=\"$KID_UUID\"/>\n<ContentProtection schemeIdUri=\"urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e\" value=\"ClearKey1.0\"/>|" \
    -e 's|<MPD |<MPD xmlns:cenc="urn:mpeg:cenc:2013" |' "$WORK/ck/manifest.mpd"
kid_b64=$(node -e 'console.log(Buffer.from(process.argv[1], "hex").toString("base64"))' "$KID")
for rep in 0 1; do
    {
        printf '#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n'
        printf '#EXT-X-MAP:URI="init-%s.m4s"\n' "$rep"
        printf '#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT="org.w3.clearkey",KEYFORMATVERSIONS="1",URI="data:text/plain;base64,%s",KEYID=0x%s\n' "$kid_b64" "$KID"
        for seg in "$WORK/ck/chunk-$rep-"*.m4s; do printf '#EXTINF:2.000,\n%s\n' "${seg##*/}"; done
        printf '#EXT-X-ENDLIST\n'
    } > "$WORK/ck/media-$rep.m3u8"
done
cat > "$WORK/ck/master.m3u8" <<'M3U8'
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="main",DEFAULT=YES,AUTOSELECT=YES,URI="media-1.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1200000,CODECS="avc1.42c01e,mp4a.40.2",RESOLUTION=640x360,AUDIO="aud"
media-0.m3u8
M3U8

# Servers print their port (and more) on stdout; wait for LINES lines of it.
start_server() {
    local out=$1 lines=$2
    shift 2
    "$@" > "$out" &
    pids+=($!)
    for _ in $(seq 1 100); do
        (($(wc -l < "$out") >= lines)) && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.2
    done
    echo "selftest: $* did not start" >&2
    return 1
}
# Serve both streams from one CORS-enabled server on a random port.
start_server "$WORK/http.out" 1 node "$HERE/static-server.mjs" "$WORK"
PORT=$(sed -n 1p "$WORK/http.out")
BASE=http://127.0.0.1:$PORT
echo "selftest: serving $WORK on $BASE"

# The same files over HTTP/3 (UDP), with a self-signed certificate.
start_server "$WORK/h3.out" 2 "$PYTHON" "$HERE/h3-static-server.py" "$WORK" \
    || { echo "selftest: is aioquic in $PYTHON?" >&2; exit 1; }
H3_PORT=$(sed -n 1p "$WORK/h3.out")
H3_CERT=$(sed -n 2p "$WORK/h3.out")
H3_BASE=https://127.0.0.1:$H3_PORT
H3_ARGS=(--h3 "127.0.0.1:$H3_PORT" --h3-cert "$H3_CERT")
echo "selftest: serving $WORK over HTTP/3 on $H3_BASE"

# Wait until both live streams have at least 3 segments per rendition.
for _ in $(seq 1 60); do
    hls_n=$(grep -c '^seg_' "$WORK/hls/stream_1/index.m3u8" 2>/dev/null || true)
    if [[ ${hls_n:-0} -ge 3 ]]; then break; fi
    sleep 1
done
echo "selftest: live segments ready (hls: $hls_n)"

pass=0
fail=0
# run NAME PROTOCOL PLAY_ARGS...: must print ok:true with only PROTOCOL used.
# run NAME fail PLAY_ARGS...: must print ok:false and exit 1 (negative check).
run() {
    local name=$1 want_proto=$2
    shift 2
    echo "selftest: $name"
    local out rc=0
    out=$(node "$HERE/play.mjs" --seconds "$SECONDS_PER_PLAYER" --timeout 45 "$@") || rc=$?
    echo "  $out"
    # Every media response must have come over the expected protocol.
    local protos
    protos=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(Object.keys(r.protocols).join(","))' "$out" 2>/dev/null || true)
    if [[ $want_proto == fail ]]; then
        if [[ $rc -eq 1 && $out == *'"ok":false'* ]]; then pass=$((pass + 1)); else
            echo "  FAILED: wanted ok:false and exit 1, got exit $rc"
            fail=$((fail + 1))
        fi
    elif [[ $rc -eq 0 && $out == *'"ok":true'* && $protos == "$want_proto" ]]; then
        pass=$((pass + 1))
    else
        echo "  FAILED (exit $rc, protocols '$protos', wanted '$want_proto')"
        fail=$((fail + 1))
    fi
}

run "hls.js  live HLS fMP4" http/1.1 --player hls --url "$BASE/hls/master.m3u8"
# No live DASH from ffmpeg: ffmpeg 5.1 publishes each segment at
# once with no presentation delay that holds media (the stall of issue 15, in
# ffmpeg's output), so dash.js with its default settings sits at the live
# edge with nothing buffered. dash.js plays Strata's live DASH from a
# channel's first segment in tests/e2e/from_start.rs, and this VOD below.
# Shaka neither: on the same output it plays at the very live edge (0.03 s
# buffered) and stalled on a loaded CI machine; Shaka's live DASH with default
# settings is covered on Strata's output by from_start, and here by the static
# ClearKey DASH below, over HTTP/1.1 and HTTP/3.
run "shaka   live HLS fMP4" http/1.1 --player shaka --url "$BASE/hls/master.m3u8"
run "hls.js  live HLS fMP4 over HTTP/3" h3 --player hls --url "$H3_BASE/hls/master.m3u8" "${H3_ARGS[@]}"
run "shaka   ClearKey DASH (cenc) over HTTP/3" h3 --player shaka --url "$H3_BASE/ck/manifest.mpd" \
    --clearkey "$KID:$KEY" "${H3_ARGS[@]}"
run "dash.js ClearKey DASH (cenc)" http/1.1 --player dash --url "$BASE/ck/manifest.mpd" --clearkey "$KID:$KEY"
run "shaka   ClearKey DASH (cenc)" http/1.1 --player shaka --url "$BASE/ck/manifest.mpd" --clearkey "$KID:$KEY"
run "hls.js  ClearKey HLS (cenc)" http/1.1 --player hls --url "$BASE/ck/master.m3u8" --clearkey "$KID:$KEY"
run "shaka   ClearKey DASH, wrong key (must fail)" fail --player shaka --url "$BASE/ck/manifest.mpd" \
    --clearkey "$KID:00000000000000000000000000000001"

echo "selftest: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
