#!/usr/bin/env python3
"""Disk tier vs nginx proxy_cache, on the same disk, in one run.

Both peers sit in front of edge_race.py's origin (2 MiB segments). Strata's
edge gets a memory tier of MEM MiB and a disk tier under it; nginx its
proxy_cache (files; the kernel's page cache is its memory tier). The working
set is 4x MEM: OBJECTS segments of 2 MiB, each fetched once to warm both
caches (the disk writes are waited for), then wrk asks for them in random
order for --seconds. Reported: req/s, MB/s, p50/p99, the origin fetches during
the measured phase (0 = every request was a hit), Strata's disk hits and its
RSS (sampled every 100 ms: peak and last) against the memory tier's size.

    STRATA_BIN=target/release/strata python3 benches/load/disk_race.py [--mem 64] [--seconds 20]

Needs wrk and nginx (scripts/install-test-deps.sh) and a release build.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edge_race as er  # noqa: E402

LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/seg/" .. math.random(0, %d) .. ".m4s")
end
"""


def rss_kib(pid, field="VmRSS:"):
    """RSS of a process and its children (nginx's workers); `RssAnon:` for
    the anonymous part alone (not file pages mapped)."""
    total = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                total += int(line.split()[1])
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                total += rss_kib(int(child), field)
    except OSError:
        pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.last, self.stop = pid, 0, 0, False
        self.anon_peak = 0

    def run(self):
        while not self.stop:
            try:
                self.last = rss_kib(self.pid)
                self.anon_peak = max(self.anon_peak, rss_kib(self.pid, "RssAnon:"))
            except OSError:
                return
            self.peak = max(self.peak, self.last)
            time.sleep(0.1)


def where_rss_is(pid):
    """Resident memory by kind of mapping (/proc/PID/smaps), MiB: file-backed,
    the brk heap, and anonymous mappings by their size (the edge's stored
    bodies are mappings of their own from 128 KiB; mimalloc's segments and
    foyer's buffers are the larger ones)."""
    kinds, name, size = {}, None, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                size, path = hi - lo, (head[5] if len(head) > 5 else "")
                if path == "[heap]":
                    name = "heap"
                elif path.startswith("/"):
                    name = "file"
                elif path:
                    name = path
                elif size < 128 << 10:
                    name = "anon <128K"
                elif size < 4 << 20:
                    name = "anon 128K-4M"
                elif size < 64 << 20:
                    name = "anon 4M-64M"
                else:
                    name = "anon >=64M"
            elif head and head[0] == "Rss:":
                kinds[name] = kinds.get(name, 0) + int(head[1])
    return ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v >= 1024)


def metrics(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("strata_edge_cache_disk_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def start_strata(origin, mem_mib, disk_dir):
    binary = os.environ.get("STRATA_BIN", os.path.join(er.ROOT, "target", "release", "strata"))
    if not os.path.exists(binary):
        sys.exit(f"disk_race: {binary} missing: cargo build --release (or set STRATA_BIN)")
    tmp = tempfile.mkdtemp(prefix="race-disk-strata.")
    port, admin = er.free_port(), er.free_port()
    conf = os.path.join(tmp, "edge.toml")
    with open(conf, "w") as f:
        f.write(f"""
[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"
node_id = "bench-disk"

[cache]
size = "{mem_mib}MiB"
max_object_size = "4MiB"

[cache.disk]
path = "{disk_dir}"
size = "2GiB"

[upstream]
urls = ["http://127.0.0.1:{origin.port}"]
""")
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proc = subprocess.Popen([binary, "edge", "--config", conf], env=env, stdout=subprocess.DEVNULL)
    er.wait_port(port, proc, "strata")
    peer = er.Peer("strata", port, proc, tmp)
    peer.admin = admin
    return peer


def warm(peer, objects):
    for i in range(objects):
        with urllib.request.urlopen(peer.url(f"/seg/{i}.m4s"), timeout=30) as r:
            r.read()


def run(peer, origin, objects, seconds, connections):
    lua = os.path.join(peer.tmp, "random.lua")
    with open(lua, "w") as f:
        f.write(LUA % (objects - 1))
    before = sum(v for k, v in origin.fetches.items() if k.startswith("/seg/"))
    sampler = RssSampler(peer.proc.pid)
    sampler.start()
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", lua,
                          peer.url("/")], capture_output=True, text=True, check=True).stdout
    sampler.stop = True
    smaps = where_rss_is(peer.proc.pid) if peer.name == "strata" else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mb = float(transfer.group(1)) * {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
    lat = {p: er.to_ms(v, u) for p, v, u in re.findall(r"\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out)}
    fetched = sum(v for k, v in origin.fetches.items() if k.startswith("/seg/")) - before
    return {"rps": rps, "mbps": mb, "p50": lat.get("50"), "p99": lat.get("99"), "origin": fetched,
            "rss_peak": sampler.peak, "rss_last": sampler.last, "anon_peak": sampler.anon_peak,
            "smaps": smaps}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", type=int, default=64, help="Strata's memory tier, MiB")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--dir", default=None, help="disk to use (default: a temp dir under /var/tmp)")
    args = ap.parse_args()
    er.need("wrk", "apt-get install wrk")
    er.need("nginx", "apt-get install nginx")
    objects = 4 * args.mem // 2
    base = tempfile.mkdtemp(prefix="disk-race.", dir=args.dir or "/var/tmp")
    origin = er.Origin()
    print(f"load average {os.getloadavg()}; working set {objects} x 2 MiB = {objects * 2} MiB, "
          f"Strata memory tier {args.mem} MiB, same disk: {base}")
    report = {}
    strata = start_strata(origin, args.mem, os.path.join(base, "strata"))
    try:
        warm(strata, objects)
        deadline = time.time() + 60
        while time.time() < deadline and metrics(strata.admin).get("strata_edge_cache_disk_writes_total", 0) < objects:
            time.sleep(0.5)
        disk_before = metrics(strata.admin)
        report["strata"] = run(strata, origin, objects, args.seconds, args.connections)
        disk_after = metrics(strata.admin)
        report["strata"]["disk_hits"] = (disk_after.get("strata_edge_cache_disk_hits_total", 0)
                                         - disk_before.get("strata_edge_cache_disk_hits_total", 0))
        report["strata"]["disk_writes"] = disk_before.get("strata_edge_cache_disk_writes_total", 0)
    finally:
        strata.stop()
    # nginx's cache directory on the same disk.
    os.environ["TMPDIR"] = base
    tempfile.tempdir = base
    nginx = er.start_nginx(origin)
    try:
        warm(nginx, objects)
        report["nginx"] = run(nginx, origin, objects, args.seconds, args.connections)
    finally:
        nginx.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average after {os.getloadavg()}")
    print(f"{'peer':8} {'req/s':>8} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'origin':>7} {'RSS peak MiB':>13} "
          f"{'RSS end MiB':>12} {'anon peak MiB':>14}")
    for name, r in report.items():
        print(f"{name:8} {r['rps']:8.0f} {r['mbps']:8.0f} {r['p50'] or 0:8.1f} {r['p99'] or 0:8.1f} {r['origin']:7d} "
              f"{r['rss_peak'] / 1024:13.0f} {r['rss_last'] / 1024:12.0f} {r['anon_peak'] / 1024:14.0f}")
    st = report["strata"]
    print(f"strata RSS at the end of the run by mapping, MiB: {st['smaps']}")
    print(f"strata disk hits during the run: {st['disk_hits']:.0f} (disk writes after warming: {st['disk_writes']:.0f})")
    print(f"strata / nginx req/s: {st['rps'] / report['nginx']['rps']:.2f}x")


if __name__ == "__main__":
    main()
