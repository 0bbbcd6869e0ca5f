#!/bin/bash
# User-space instructions per 1 KiB cache hit, Strata's edge against nginx
# proxy_cache, counted by valgrind's callgrind: unlike req/s, an instruction
# count does not move with the machine's load (this VM exposes no hardware
# counters to `perf stat`). Kernel time (the TCP stack) is not counted, and it
# is the same work for both servers: one recv and one send per request.
#
# Each server runs alone under callgrind with one worker (Strata: one tokio
# worker; nginx: `master_process off`, one worker process); a python origin
# serves a 1 KiB object with max-age=3600; the object is fetched once to fill
# the cache, counters are zeroed, `wrk -t1 -c4` loads it for SECONDS and the
# counters are dumped: instructions / requests wrk completed.
#
# Usage: bash benches/hit_instructions.sh [SECONDS] [STRATA_BINARY]
#   (needs valgrind, wrk, nginx: scripts/install-test-deps.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
strata=${2:-target/release/strata}
for tool in valgrind callgrind_control wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -x "$strata" ] || cargo build --release --bin strata
tmp=$(mktemp -d /tmp/hit-instructions.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # url
    for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.3; done
    echo "no answer from $1" >&2; exit 1
}

origin_port=$(free_port)
cat > "$tmp/origin.py" <<'EOF'
import http.server, sys
BODY = b"x" * 1024
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
python3 "$tmp/origin.py" "$origin_port" & pids+=($!)

# Runs "$@" under callgrind, loads http://127.0.0.1:PORT/obj/1k, prints
# instructions per request.
measure() { # name port command...
    local name=$1 port=$2; shift 2
    local out="$tmp/$name.callgrind"
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p" "$@" \
        > "$tmp/$name.log" 2>&1 & local pid=$!
    pids+=($pid)
    wait_for "http://127.0.0.1:$port/obj/1k"
    curl -sf -o /dev/null "http://127.0.0.1:$port/obj/1k"
    callgrind_control -z "$pid" >/dev/null
    local requests
    requests=$(wrk -t1 -c4 -d"${seconds}s" "http://127.0.0.1:$port/obj/1k" | awk '/requests in/{print $1}')
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    local instructions
    instructions=$(cat "$out".*.1 2>/dev/null | awk '/^summary:/{s += $2} /^totals:/{t += $2} END{print (s > 0 ? s : t)}')
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rm -f "$out".*
    awk -v n="$name" -v i="$instructions" -v r="$requests" \
        'BEGIN{printf "%-8s %10d requests %14.0f instructions %8.0f per hit\n", n, r, i, i / r}'
}

port=$(free_port)
TOKIO_WORKER_THREADS=1 RUST_LOG=warn measure strata "$port" "$strata" edge \
    --listen "127.0.0.1:$port" --admin "127.0.0.1:$(free_port)" \
    --upstream "http://127.0.0.1:$origin_port" --cache-size 256MiB --node-id bench-edge

port=$(free_port)
mkdir -p "$tmp/nginx"
sed -e "s|__DIR__|$tmp/nginx|g" -e "s|__PORT__|$port|g" -e "s|__ORIGIN__|127.0.0.1:$origin_port|g" \
    -e 's|^worker_processes auto;|worker_processes 1;\nmaster_process off;|' \
    benches/load/peers/nginx-proxy-cache.conf > "$tmp/nginx/nginx.conf"
user=()
[ "$(id -u)" = 0 ] && user=(-g "user root;")
measure nginx "$port" nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" "${user[@]}"
