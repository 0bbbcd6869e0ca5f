#!/usr/bin/env python3
"""Race Strata's edge against nginx proxy_cache and Varnish in one run.

Each peer sits in front of the same origin (this script, asyncio, stdlib
only). For each peer, on loopback:

  1. hits: wrk -t2 -c64 on a cached 2 MB segment, then on a cached 1 KB playlist;
  2. herd, three times on three new objects: 200 clients (4 client processes
     x 50, HERD_PROCS=N to change), connected beforehand, send their request at
     once for an uncached 8 MB object whose origin is throttled to ~20 MB/s; we
     count origin fetches and each client's time to first byte, from its
     request on the wire to the first response byte (the client whose request
     went out first is the "leader"); medians over the three herds.

Prints a table per peer and Strata's ratio to each. Needs: wrk, nginx,
varnishd (scripts/install-test-deps.sh installs them) and a release build of
strata (built here if missing).

    python3 benches/load/edge_race.py [--seconds 10] [--only strata,nginx,varnish]
"""

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "benches", "load", "peers")
SEGMENT = bytes((i * 7) % 251 for i in range(2 * 1024 * 1024))
PLAYLIST = (b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n" + b"#EXTINF:2.000,\nseg.m4s\n" * 40)[:1024]
HERD_SIZE = 8 * 1024 * 1024
HERD_RATE = 20 * 1024 * 1024  # bytes per second


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"edge_race: {tool} not found: {hint} (or run scripts/install-test-deps.sh)")


# ---------------------------------------------------------------- the origin

class Origin:
    """HTTP/1.1 keep-alive origin in its own thread: counts fetches per path."""

    def __init__(self):
        self.port = free_port()
        self.fetches = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("edge_race: origin did not start")

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port, backlog=1024))
        self.loop.run_forever()

    async def _conn(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                path = path.split("?", 1)[0]
                self.fetches[path] = self.fetches.get(path, 0) + 1
                if path.startswith("/herd/"):
                    await self._herd(writer)
                    continue
                body = PLAYLIST if path.endswith(".m3u8") else SEGMENT
                ctype = b"application/vnd.apple.mpegurl" if path.endswith(".m3u8") else b"video/iso.segment"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nCache-Control: public, max-age=600\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _herd(self, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/iso.segment\r\nCache-Control: public, max-age=600\r\n"
                     b"Content-Length: " + str(HERD_SIZE).encode() + b"\r\n\r\n")
        chunk = 256 * 1024
        start = time.monotonic()
        sent = 0
        while sent < HERD_SIZE:
            n = min(chunk, HERD_SIZE - sent)
            writer.write(SEGMENT[:n] if n <= len(SEGMENT) else bytes(n))
            await writer.drain()
            sent += n
            ahead = sent / HERD_RATE - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)


# ---------------------------------------------------------------- the peers

class Peer:
    def __init__(self, name, port, proc, tmp):
        self.name, self.port, self.proc, self.tmp = name, port, proc, tmp

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_port(port, proc, name):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"edge_race: {name} exited early (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"edge_race: {name} did not listen on {port}")


def start_strata(origin):
    binary = os.path.join(ROOT, "target", "release", "strata")
    if not os.path.exists(binary) or os.environ.get("STRATA_REBUILD"):
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="race-strata.")
    port, admin = free_port(), free_port()
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proc = subprocess.Popen([binary, "edge", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                             "--upstream", f"http://127.0.0.1:{origin.port}", "--cache-size", "2GiB",
                             "--node-id", "bench-edge"], env=env, stdout=subprocess.DEVNULL)
    wait_port(port, proc, "strata")
    return Peer("strata", port, proc, tmp)


def start_nginx(origin):
    tmp = tempfile.mkdtemp(prefix="race-nginx.")
    port = free_port()
    with open(os.path.join(PEERS, "nginx-proxy-cache.conf")) as f:
        conf = f.read().replace("__DIR__", tmp).replace("__PORT__", str(port)).replace("__ORIGIN__", f"127.0.0.1:{origin.port}")
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    cmd = ["nginx", "-p", tmp + "/", "-c", path]
    if os.geteuid() == 0:
        cmd[1:1] = ["-g", "user root;"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "nginx")
    return Peer("nginx", port, proc, tmp)


def start_varnish(origin):
    tmp = tempfile.mkdtemp(prefix="race-varnish.")
    port = free_port()
    with open(os.path.join(PEERS, "varnish.vcl")) as f:
        vcl = f.read().replace("__ORIGIN_HOST__", "127.0.0.1").replace("__ORIGIN_PORT__", str(origin.port))
    path = os.path.join(tmp, "varnish.vcl")
    with open(path, "w") as f:
        f.write(vcl)
    proc = subprocess.Popen(["varnishd", "-j", "none", "-F", "-f", path, "-a", f"127.0.0.1:{port}", "-s", "malloc,2G",
                             "-n", os.path.join(tmp, "work"), "-T", "none", "-p", "vsl_space=1M"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "varnish")
    return Peer("varnish", port, proc, tmp)


# ---------------------------------------------------------------- measurements

def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, seconds, connections=64):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mb = float(transfer.group(1)) * {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    def parse(v):
        m = re.match(r"([\d.]+)(us|ms|s)", v)
        return to_ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "mbps": mb, "p50": parse(lat["50"]), "p99": parse(lat["99"]),
            "non2xx": int(errors.group(1)) if errors else 0}


async def one_client(port, path, start_at, results):
    """One herd client. Its time to first byte runs from the moment its request
    is on the wire to the first byte of the response; the connect time is
    reported apart, and so is the time from the herd's start."""
    # Connected beforehand, like players that already hold a keep-alive
    # connection: the herd is 200 requests at once, not 200 SYNs.
    t_start = time.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t_conn = time.time()
    await asyncio.sleep(max(0, start_at - time.time()))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    t_sent = time.time()
    buf = await reader.read(1 << 20)
    t_first = time.time()
    while b"\r\n\r\n" not in buf:
        more = await reader.read(1 << 20)
        if not more:
            break
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    got = len(rest)
    while got < length:
        data = await reader.read(1 << 20)
        if not data:
            break
        got += len(data)
    writer.close()
    results.append({"sent": t_sent, "ttfb": t_first - t_sent, "connect": t_conn - t_start,
                    "since_start": t_first - start_at, "total": time.time() - t_start,
                    "complete": got == length, "status": head.split(b" ", 2)[1].decode()})


def herd_worker(port, path, clients, start_at, queue):
    """One process's share of the herd: its own event loop, so one busy
    Python loop does not delay every client's first byte."""
    results = []

    async def run():
        await asyncio.gather(*(one_client(port, path, start_at, results) for _ in range(clients)))

    asyncio.run(run())
    queue.put(results)


def herd(port, path, clients=200, processes=int(os.environ.get("HERD_PROCS", "4"))):
    import multiprocessing
    queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    share = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    workers = [multiprocessing.Process(target=herd_worker, args=(port, path, n, start_at, queue)) for n in share]
    for w in workers:
        w.start()
    results = []
    for _ in workers:
        results.extend(queue.get(timeout=120))
    for w in workers:
        w.join()
    return results


def herd_stats(results, origin_fetches):
    """The leader is the client whose request went out first (it started the
    origin fetch); every other client is a follower."""
    by_sent = sorted(results, key=lambda r: r["sent"])
    leader, followers = by_sent[0], by_sent[1:]
    ttfbs = [r["ttfb"] for r in followers]
    return {"fetches": origin_fetches, "complete": sum(r["complete"] for r in results),
            "leader_ttfb": leader["ttfb"] * 1000,
            "follower_ttfb_p50": statistics.median(ttfbs) * 1000,
            "follower_ttfb_max": max(ttfbs) * 1000,
            "connect_p50": statistics.median(r["connect"] for r in results) * 1000,
            "since_start_p50": statistics.median(r["since_start"] for r in results) * 1000,
            "total_max": max(r["total"] for r in results) * 1000}


HERDS = 3


def median_herd(herds):
    """Per-figure median over the herds; origin fetches and completed clients
    are summed, so one stray fetch or short body in any herd shows."""
    out = {k: statistics.median(h[k] for h in herds) for k in herds[0] if k not in ("fetches", "complete")}
    out["fetches"] = sum(h["fetches"] for h in herds)
    out["complete"] = sum(h["complete"] for h in herds)
    out["herds"] = len(herds)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="strata,nginx,varnish")
    args = parser.parse_args()
    need("wrk", "apt-get install wrk")
    need("nginx", "apt-get install nginx")
    need("varnishd", "apt-get install varnish")
    origin = Origin()
    starters = {"strata": start_strata, "nginx": start_nginx, "varnish": start_varnish}
    report = {}
    for name in args.only.split(","):
        peer = starters[name](origin)
        try:
            for path in ("/seg/2mb.m4s", "/pl/1kb.m3u8"):
                subprocess.run(["curl", "-s", "-o", "/dev/null", peer.url(path)], check=True)
            seg = wrk(peer.url("/seg/2mb.m4s"), args.seconds)
            pl = wrk(peer.url("/pl/1kb.m3u8"), args.seconds)
            # Three herds on three new objects: the leader is one sample per
            # herd, so each figure is the median over the herds.
            herds = []
            for i in range(HERDS):
                herd_path = f"/herd/{name}-{i}-8mb.m4s"
                herds.append(herd_stats(herd(peer.port, herd_path), origin.fetches.get(herd_path, 0)))
                time.sleep(0.5)
            report[name] = {"seg": seg, "pl": pl, "herd": median_herd(herds)}
        finally:
            peer.stop()
        print(f"{name}: done", file=sys.stderr)

    print(f"\nmachine: {os.cpu_count()} cores; wrk -t2 -c64 -d{args.seconds}s; herd: 3 x 200 clients, 8 MB at ~20 MB/s\n")
    print(f"{'peer':8} {'2MB req/s':>10} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} | {'1KB req/s':>10} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'origin':>6} {'ok':>4} {'leader ms':>9} {'foll p50':>9} {'foll max':>9} {'f/l':>5} {'conn p50':>8} {'t0 p50':>8}")
    for name, r in report.items():
        s, p, h = r["seg"], r["pl"], r["herd"]
        print(f"{name:8} {s['rps']:10.0f} {s['mbps']:8.0f} {s['p50']:8.2f} {s['p99']:8.2f} | {p['rps']:10.0f} {p['p50']:8.2f} "
              f"{p['p99']:8.2f} | {h['fetches']:6d} {h['complete']:4d} {h['leader_ttfb']:9.1f} {h['follower_ttfb_p50']:9.1f} "
              f"{h['follower_ttfb_max']:9.1f} {h['follower_ttfb_p50'] / max(h['leader_ttfb'], 0.001):5.2f} "
              f"{h['connect_p50']:8.1f} {h['since_start_p50']:8.1f}")
    print(f"\nherd ({HERDS} herds of 200 clients, connected beforehand, sending at once; medians over the herds;\n"
          f"origin = fetches summed over the herds, ok = complete responses summed): TTFB = request on the wire ->\n"
          f"first response byte; leader = first request sent; f/l = followers' p50 / leader's;\n"
          f"conn p50 = TCP connect; t0 p50 = first byte since the herd's start")
    if "strata" in report:
        st = report["strata"]
        ratio = st["herd"]["follower_ttfb_p50"] / max(st["herd"]["leader_ttfb"], 0.001)
        print(f"\nstrata followers' first byte (p50) / leader's: {ratio:.2f}x")
        for name, r in report.items():
            if name == "strata":
                continue
            print(f"strata / {name}: 2MB hits {st['seg']['rps'] / r['seg']['rps']:.2f}x, "
                  f"1KB hits {st['pl']['rps'] / r['pl']['rps']:.2f}x, "
                  f"herd follower TTFB p50 {r['herd']['follower_ttfb_p50'] / max(st['herd']['follower_ttfb_p50'], 0.001):.2f}x faster")


if __name__ == "__main__":
    main()
