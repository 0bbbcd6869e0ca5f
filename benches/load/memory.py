#!/usr/bin/env python3
"""RSS of `strata edge` against its cache size (issue 11).

An origin in this script (stdlib only, its own thread) serves distinct
objects of --object-size bytes (`Cache-Control: public, max-age=600`); the
edge runs with `--cache-size`; --fetchers threads fetch new objects through
it until --passed bytes went by. RSS (VmRSS and VmHWM from /proc/PID/status)
is sampled during the run and read again after --settle seconds of quiet;
the cache's own figures are `strata_edge_cache_bytes` and
`strata_edge_cache_objects` from the admin /metrics.

    python3 benches/load/memory.py [--binary PATH] [--cache-size 256MiB]
        [--passed 2.4GB] [--object-size 2MiB] [--fetchers 8] [--settle 5]
        [--slope N] [--json]

--slope N first adds N objects 20 at a time without eviction (use a cache
larger than N objects) and prints RSS per object cached (the fit's slope).
Environment variables (e.g. MIMALLOC_PURGE_DELAY=0) go to the edge as they are.
Exit status 1 when the final RSS exceeds cache size + 100 MB (--no-bound: 0).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
         "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
MIB = 1024 * 1024


def size(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 2.4GB)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Origin:
    """Distinct objects: the path picks the first bytes, the rest repeat."""

    def __init__(self, object_size):
        body = bytes((i * 7) % 251 for i in range(object_size))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                tag = self.path.encode()[:64].ljust(64, b"_")
                self.send_response(200)
                self.send_header("Content-Type", "video/iso.segment")
                self.send_header("Cache-Control", "public, max-age=600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(tag)
                self.wfile.write(memoryview(body)[len(tag):])

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def binary_path(arg):
    if arg:
        return arg
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "strata")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    return path


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                out[k] = int(v.split()[0]) * (1024 if k != "Threads" else 1)
    return out


def metrics(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    out = {}
    for name in ("strata_edge_cache_bytes", "strata_edge_cache_objects", "strata_edge_cache_evictions_total"):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else None
    return out


def fetch(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        n = 0
        while True:
            chunk = r.read(256 * 1024)
            if not chunk:
                return n
            n += len(chunk)


def fetch_many(port, paths, fetchers):
    paths = list(paths)
    lock = threading.Lock()
    errors = []

    def worker():
        while True:
            with lock:
                if not paths:
                    return
                path = paths.pop()
            try:
                fetch(port, path)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{path}: {e}")

    threads = [threading.Thread(target=worker) for _ in range(fetchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary")
    ap.add_argument("--cache-size", default="256MiB")
    ap.add_argument("--passed", type=size, default=size("2.4GB"))
    ap.add_argument("--object-size", type=size, default=size("2MiB"))
    ap.add_argument("--fetchers", type=int, default=8)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--slope", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-bound", action="store_true")
    args = ap.parse_args()
    cache_size = size(args.cache_size)

    origin = Origin(args.object_size)
    binary = binary_path(args.binary)
    port, admin = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="strata-memory.")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proc = subprocess.Popen([binary, "edge", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                             "--upstream", f"http://127.0.0.1:{origin.port}", "--cache-size", args.cache_size,
                             "--node-id", "memory-bench"], env=env, cwd=tmp, stdout=subprocess.DEVNULL)
    result = {"binary": binary, "cache_size": cache_size, "object_size": args.object_size,
              "fetchers": args.fetchers, "env": {k: v for k, v in os.environ.items() if k.startswith("MIMALLOC_")}}
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                sys.exit(f"memory: strata exited early (code {proc.returncode})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                metrics(admin)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("memory: strata did not start")
                time.sleep(0.1)
        result["rss_start"] = status(proc.pid)["VmRSS"]
        run = 0

        if args.slope:
            points = []
            for n in range(0, args.slope + 1, 20):
                if n:
                    fetch_many(port, (f"/slope/{run}/{i}.m4s" for i in range(n - 20, n)), args.fetchers)
                time.sleep(1)
                points.append((n, status(proc.pid)["VmRSS"]))
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            result["slope_points"] = points
            result["rss_per_object"] = slope

        count = max(1, args.passed // args.object_size)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                try:
                    peak[0] = max(peak[0], status(proc.pid)["VmRSS"])
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.time()
        errors = fetch_many(port, (f"/obj/{i}.m4s" for i in range(count)), args.fetchers)
        done.set()
        sampler.join()
        result["seconds"] = round(time.time() - started, 1)
        result["passed"] = count * args.object_size
        result["errors"] = errors[:5]
        result["error_count"] = len(errors)
        result["rss_peak_sampled"] = peak[0]
        result["after_run"] = status(proc.pid)
        time.sleep(args.settle)
        result["settled"] = status(proc.pid)
        result["cache"] = metrics(admin)
        # A scrape lets moka apply what it had pending, as any request would.
        time.sleep(0.5)
        result["after_scrape"] = status(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    rss = result["settled"]["VmRSS"]
    bound = cache_size + 100 * 1000**2
    result["bound"] = bound
    result["within_bound"] = rss <= bound
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        c = result["cache"]
        print(f"cache size {cache_size / MIB:.0f} MiB, {result['passed'] / 1e9:.2f} GB passed in "
              f"{result['seconds']} s ({result['error_count']} errors), env {result['env'] or '-'}")
        if args.slope:
            print(f"  before eviction: {result['rss_per_object'] / MIB:.2f} MiB RSS per "
                  f"{args.object_size / MIB:.2f} MiB object ({result['slope_points'][0][1] / MIB:.0f} MiB base)")
        print(f"  cache holds {c['strata_edge_cache_bytes'] / MIB:.0f} MiB ({c['strata_edge_cache_objects']:.0f} "
              f"objects, {c['strata_edge_cache_evictions_total'] or 0:.0f} evictions)")
        print(f"  RSS: start {result['rss_start'] / MIB:.0f} MiB, peak sampled {peak[0] / MIB:.0f} MiB, "
              f"after run {result['after_run']['VmRSS'] / MIB:.0f} MiB, after {args.settle:.0f} s "
              f"{rss / MIB:.0f} MiB, after a scrape {result['after_scrape']['VmRSS'] / MIB:.0f} MiB "
              f"(HWM {result['settled']['VmHWM'] / MIB:.0f} MiB)")
        print(f"  bound cache + 100 MB = {bound / MIB:.0f} MiB: {'met' if rss <= bound else 'NOT met'}")
    if result["error_count"]:
        print(f"memory: {result['error_count']} fetches failed, e.g. {result['errors'][:2]}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if rss <= bound or args.no_bound else 1)


if __name__ == "__main__":
    main()
