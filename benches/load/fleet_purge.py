#!/usr/bin/env python3
"""Purge propagation across a fleet of edge processes through NATS JetStream.

Starts nats-server (-js, its own store), an origin (this script, threads,
stdlib only) and N `strata edge` processes (default 10) sharing one
`[fleet]`. Each round caches a new object on every edge, then times from the
purge API call on edge 0 to the moment the LAST edge stops answering from its
cache (each edge is polled by its own thread with keep-alive GETs; the first
response without `Cache-Status: ...; hit` marks that edge). Prints p50, p99
and max over the rounds.

    python3 benches/load/fleet_purge.py [--edges 10] [--rounds 100] [--binary PATH]

Needs nats-server (scripts/install-test-deps.sh) and a strata binary (default:
target/release/strata, else $CARGO_TARGET_DIR/debug/strata).
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_TOKEN = "bench-admin-token-0123456789"
SECRET = "bench-fleet-secret-0123456789abcdef0123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"fleet_purge: {what} did not start on port {port}")


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (self.path * 64).encode()[:4096]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def binary(arg):
    if arg:
        return arg
    release = os.path.join(ROOT, "target", "release", "strata")
    if os.path.exists(release):
        return release
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "strata")
        if os.path.exists(path):
            return path
    sys.exit("fleet_purge: no strata binary: cargo build --release (or pass --binary)")


def request(port, method, path, body=None, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response


def cached(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status}")
    return "; hit" in (response.getheader("Cache-Status") or "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--edges", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--binary")
    args = parser.parse_args()
    nats_server = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if not nats_server:
        sys.exit("fleet_purge: nats-server not found: apt-get install nats-server (or run scripts/install-test-deps.sh)")
    strata = binary(args.binary)
    work = tempfile.mkdtemp(prefix="strata-fleet-bench-")
    procs = []
    try:
        nats_port = free_port()
        procs.append(subprocess.Popen([nats_server, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", os.path.join(work, "js")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(nats_port, "nats-server")
        origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        edges = []
        for i in range(args.edges):
            port, admin = free_port(), free_port()
            config = os.path.join(work, f"edge{i}.toml")
            with open(config, "w") as f:
                f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"
admin_token = "{ADMIN_TOKEN}"
node_id = "bench-{i}"
[upstream]
urls = ["http://127.0.0.1:{origin.server_address[1]}"]
[qoe]
enabled = false
[fleet]
nats = "nats://127.0.0.1:{nats_port}"
secret = "{SECRET}"
state_file = "{work}/edge{i}.json"
""")
            log = open(os.path.join(work, f"edge{i}.log"), "w")
            procs.append(subprocess.Popen([strata, "edge", "--config", config], stdout=log, stderr=log))
            edges.append((port, admin))
        for port, admin in edges:
            wait_port(admin, "edge admin")
            deadline = time.time() + 30
            while json.loads(request(admin, "GET", "/api/fleet", token=ADMIN_TOKEN)[1]).get("connected") is not True:
                if time.time() > deadline:
                    sys.exit(f"fleet_purge: edge on {port} never connected to NATS")
                time.sleep(0.05)

        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for port, _ in edges]
        results = []
        for r in range(args.rounds):
            path = f"/obj/round-{r}"
            for conn in conns:
                cached(conn, path)
                if not cached(conn, path):
                    sys.exit(f"fleet_purge: {path} not cached")
            seen = [None] * len(edges)
            start = threading.Event()

            def poll(i):
                conn = http.client.HTTPConnection("127.0.0.1", edges[i][0], timeout=10)
                start.wait()
                while cached(conn, path):
                    pass
                seen[i] = time.perf_counter()
                conn.close()

            threads = [threading.Thread(target=poll, args=(i,)) for i in range(len(edges))]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            start.set()
            status, body, _ = request(edges[0][1], "POST", "/api/purge", {"urls": [path]}, ADMIN_TOKEN)
            if status != 200:
                sys.exit(f"fleet_purge: purge answered {status}: {body!r}")
            for t in threads:
                t.join()
            results.append((max(seen) - t0) * 1000)
        results.sort()
        p99 = results[min(len(results) - 1, int(round(0.99 * (len(results) - 1))))]
        print(f"edges={args.edges} rounds={args.rounds} binary={strata}")
        print(f"purge → last edge refusing the old object: p50 {statistics.median(results):.1f} ms, "
              f"p99 {p99:.1f} ms, max {results[-1]:.1f} ms, min {results[0]:.1f} ms")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
