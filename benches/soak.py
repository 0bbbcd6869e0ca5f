#!/usr/bin/env python3
"""Soak: mixed load on one machine for a long time, watching for leaks.

An origin, a shield and an edge (each a `strata` process) carry two live
channels, one published over RTMP and one over SRT (ffmpeg, real time). At
the same time:

  players   N ffmpeg players read the channels' HLS through the edge in real
            time, each for --player-seconds, then start again with a fresh
            token (so the tokens in use follow the key rotation);
  hits      wrk hammers one cached segment through the edge (cache hits);
  purges    every --purge-every seconds a soft purge of one channel's
            playlists and a hard purge of an unrelated prefix, via the API;
  keys      every --rotate-every seconds a new token key is added and new
            tokens are signed with it; the key before the previous one is
            retired (no player still holds a token signed with it).

Every 5 s it samples each strata process: RSS, open file descriptors and
threads. It fails (exit 1) when:

  - a player fails, a publisher dies, a strata process exits or logs a panic;
  - wrk saw a non-2xx/3xx answer or a socket error other than its own stop;
  - an API call (purge, key add/retire) did not answer 2xx;
  - the edge's RSS went above its cache size + 100 MiB;
  - file descriptors or threads grew: the median of the last quarter of the
    samples against the median of the second quarter (after warm-up), with
    a slack of 16 fds / 4 threads for connections that come and go.

The figures of a long run go in benches/README.md; `scripts/test.sh` runs a
short one (a minute, 4 players).

    python3 benches/soak.py [--seconds 1800] [--players 20] [--bin target/release/strata]
"""

import argparse
import json
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
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
ADMIN_TOKEN = "soak-admin-token-0123456789abcdef"
MIB = 1 << 20


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"soak: {tool} not found: {hint} (scripts/install-test-deps.sh installs it)")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request(method, url, body=None, token=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except Exception as e:  # connection refused, timeout
        return 0, str(e)


class Proc:
    def __init__(self, name, args, work):
        self.name, self.args = name, args
        self.log = os.path.join(work, f"{name}.log")
        self.p = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()

    def tail(self, n=15):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def panicked(self):
        with open(self.log, errors="replace") as f:
            return [l.strip() for l in f if "panicked" in l][:3]


def sample(pid):
    """RSS bytes, open fds, threads of a process."""
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


class Stack:
    def __init__(self, binary, work, cache_mib):
        self.binary, self.work = binary, work
        self.http, self.rtmp, self.srt = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
        self.edge_port, self.edge_admin = free_port(), free_port()
        self.shield_port = free_port()
        self.keys = [("k0", os.urandom(16).hex())]
        with open(os.path.join(work, "origin.toml"), "w") as f:
            f.write(f"""[server]
http = "{HOST}:{self.http}"
admin = "{HOST}:{free_port()}"
[ingest]
rtmp_listen = "{HOST}:{self.rtmp}"
srt_listen = "{HOST}:{self.srt}"
allow_anonymous = true
""")
        with open(os.path.join(work, "shield.toml"), "w") as f:
            f.write(f"""[server]
node_id = "soak-shield"
listen = ["{HOST}:{self.shield_port}"]
admin = "{HOST}:{free_port()}"
[upstream]
urls = ["http://{HOST}:{self.http}"]
""")
        key_id, secret = self.keys[0]
        with open(os.path.join(work, "edge.toml"), "w") as f:
            f.write(f"""[server]
node_id = "soak-edge"
listen = ["{HOST}:{self.edge_port}"]
admin = "{HOST}:{self.edge_admin}"
admin_token = "{ADMIN_TOKEN}"
[cache]
size = "{cache_mib}MiB"
[upstream]
urls = ["http://{HOST}:{self.shield_port}"]
[token]
param = "token"
keys = [{{ id = "{key_id}", secret = "{secret}" }}]
require = ["/live/"]
propagate = "query"
""")
        self.origin = Proc("origin", [binary, "origin", "--config", os.path.join(work, "origin.toml")], work)
        self.shield = Proc("shield", [binary, "edge", "--config", os.path.join(work, "shield.toml")], work)
        self.edge = Proc("edge", [binary, "edge", "--config", os.path.join(work, "edge.toml")], work)
        self.procs = [self.origin, self.shield, self.edge]

    def url(self, path):
        return f"http://{HOST}:{self.edge_port}{path}"

    def api(self, method, path, body=None):
        return request(method, f"http://{HOST}:{self.edge_admin}{path}", body, ADMIN_TOKEN)

    def token(self, acl="/live/*", ttl=3600):
        key_id, secret = self.keys[-1]
        out = subprocess.run([self.binary, "sign", "--secret", secret, "--acl", acl,
                              "--ttl", str(ttl)], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


class Publisher:
    """ffmpeg publishing a test pattern and tone in real time."""

    def __init__(self, url, fmt, work, name):
        args = ["ffmpeg", "-hide_banner", "-loglevel", "error",
                "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "50",
                "-b:v", "600k", "-c:a", "aac", "-f", fmt, url]
        self.proc = Proc(name, args, work)


class Players(threading.Thread):
    """N ffmpeg players, each restarted with a fresh token when it ends."""

    def __init__(self, stack, channels, n, seconds, work):
        super().__init__(daemon=True)
        self.stack, self.channels, self.n, self.seconds, self.work = stack, channels, n, seconds, work
        self.stop, self.runs, self.failures = False, 0, []
        self.lock = threading.Lock()

    def one(self, i):
        while not self.stop:
            channel = self.channels[i % len(self.channels)]
            url = self.stack.url(f"/live/{channel}/master.m3u8?token={self.stack.token()}")
            out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", url,
                                  "-t", str(self.seconds), "-f", "null", "-"],
                                 capture_output=True, text=True, timeout=self.seconds * 4 + 60)
            with self.lock:
                self.runs += 1
                if out.returncode != 0 and not self.stop:
                    self.failures.append(f"player {i} on {channel}: exit {out.returncode}: "
                                         + " | ".join(out.stderr.strip().splitlines()[:3]))

    def run(self):
        threads = [threading.Thread(target=self.one, args=(i,), daemon=True) for i in range(self.n)]
        for t in threads:
            t.start()
            time.sleep(0.5)
        for t in threads:
            t.join()


class Hits(threading.Thread):
    """wrk on one cached segment, in rounds of `round_s` seconds, each round
    with a fresh token; sums what the rounds report."""

    def __init__(self, stack, url, connections, seconds, round_s):
        super().__init__(daemon=True)
        self.stack, self.url, self.connections = stack, url, connections
        self.deadline = time.monotonic() + seconds
        self.round_s = max(int(round_s), 1)
        self.stop, self.requests, self.seconds, self.non_2xx = False, 0, 0.0, 0
        self.socket_errors, self.worst_p99 = [], None

    def run(self):
        while not self.stop:
            left = int(self.deadline - time.monotonic())
            if left < 1:
                return
            secs = min(self.round_s, left)
            url = f"{self.url}?token={self.stack.token()}"
            out = subprocess.run(["wrk", "-t1", f"-c{self.connections}", f"-d{secs}s", "--latency", url],
                                 capture_output=True, text=True, timeout=secs + 60).stdout
            done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
            if done:
                self.requests += int(done.group(1))
                scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}.get(done.group(3), 1)
                self.seconds += float(done.group(2)) * scale
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            if non2xx:
                self.non_2xx += int(non2xx.group(1))
            errors = re.search(r"Socket errors: (.*)", out)
            if errors:
                counts = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", errors.group(1)))
                # wrk's own stop cuts its last requests short (read/timeout);
                # refused connections and write errors are the edge's doing.
                if counts.get("connect", 0) or counts.get("write", 0):
                    self.socket_errors.append(errors.group(1))
            p99 = re.search(r"99%\s+([\d.]+\w+)", out)
            if p99:
                self.worst_p99 = p99.group(1) if self.worst_p99 is None else max(
                    self.worst_p99, p99.group(1), key=duration_s)


def duration_s(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(2)] if m else 0.0


def wait_live(stack, channel, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, text = request("GET", stack.url(f"/live/{channel}/master.m3u8?token={stack.token()}"))
        if status == 200:
            media = [l for l in text.splitlines() if l and not l.startswith("#")]
            if media:
                m = urllib.parse.urljoin(stack.url(f"/live/{channel}/master.m3u8"), media[0])
                status, playlist = request("GET", m)
                segments = [l for l in playlist.splitlines() if l and not l.startswith("#")]
                if status == 200 and len(segments) >= 2:
                    return urllib.parse.urljoin(m, segments[0])
        time.sleep(0.5)
    return None


def growth(series, slack):
    """Median of the last quarter minus median of the second quarter."""
    q = max(len(series) // 4, 1)
    warm, last = series[q:2 * q] or series[:1], series[-q:]
    delta = statistics.median(last) - statistics.median(warm)
    return delta, delta > slack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--players", type=int, default=20)
    ap.add_argument("--player-seconds", type=int, default=20)
    ap.add_argument("--purge-every", type=float, default=5)
    ap.add_argument("--rotate-every", type=float, default=60)
    ap.add_argument("--cache-mib", type=int, default=64)
    ap.add_argument("--wrk-connections", type=int, default=8)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "strata"))
    args = ap.parse_args()
    need("ffmpeg", "apt install ffmpeg")
    need("wrk", "apt install wrk")
    if not os.path.exists(args.bin):
        sys.exit(f"soak: {args.bin} missing: cargo build --release (or pass --bin)")
    if args.rotate_every < args.player_seconds + 5:
        sys.exit("soak: --rotate-every must exceed --player-seconds (a key is retired two rotations on)")

    problems, figures = [], {"seconds": args.seconds, "players": args.players}
    with tempfile.TemporaryDirectory(prefix="strata-soak-") as work:
        stack = Stack(args.bin, work, args.cache_mib)
        pubs, players, hits = [], None, None
        try:
            time.sleep(1)
            pubs.append(Publisher(f"rtmp://{HOST}:{stack.rtmp}/live/soak-rtmp", "flv", work, "pub-rtmp"))
            pubs.append(Publisher(f"srt://{HOST}:{stack.srt}?streamid=#!::r=live/soak-srt,m=publish",
                                  "mpegts", work, "pub-srt"))
            hit = None
            for channel in ("soak-rtmp", "soak-srt"):
                seg = wait_live(stack, channel)
                if seg is None:
                    raise RuntimeError(f"channel {channel} never went live through the edge")
                # Hits on a segment of the channel whose segments are never
                # purged (soak-rtmp's are soft-purged: revalidating a segment
                # that left the live window is a 404, as it should be).
                hit = seg
            status, body = request("GET", hit)
            if status != 200:
                raise RuntimeError(f"the hit URL {hit} answers {status}: {body[:200]}")
            players = Players(stack, ["soak-rtmp", "soak-srt"], args.players, args.player_seconds, work)
            players.start()
            # wrk runs in rounds, each with a token signed by the newest key
            # (a token of a retired key is refused, as it should be).
            hits = Hits(stack, hit.split("?", 1)[0], args.wrk_connections,
                        args.seconds, args.rotate_every / 2)
            hits.start()
            started = time.monotonic()
            samples = {p.name: [] for p in stack.procs}
            api_calls, api_failures = 0, []
            next_purge, next_rotate, next_sample = started, started + args.rotate_every, started
            rotation = 0
            while time.monotonic() - started < args.seconds:
                now = time.monotonic()
                dead = [p.name for p in stack.procs + [pub.proc for pub in pubs] if not p.alive()]
                if dead:
                    problems.append(f"exited: {dead}")
                    break
                if now >= next_sample:
                    for p in stack.procs:
                        samples[p.name].append(sample(p.p.pid))
                    next_sample += 5
                if now >= next_purge:
                    for body in ({"prefix": "/live/soak-rtmp/", "soft": True},
                                 {"prefix": "/live/nothing-here/"},
                                 {"urls": [stack.url("/live/soak-srt/master.m3u8")]}):
                        status, text = stack.api("POST", "/api/purge", body)
                        api_calls += 1
                        if status != 200:
                            api_failures.append(f"purge {body}: {status} {text[:200]}")
                    next_purge += args.purge_every
                if now >= next_rotate:
                    rotation += 1
                    key = (f"k{rotation}", os.urandom(16).hex())
                    status, text = stack.api("POST", "/api/token/keys", {"id": key[0], "secret": key[1]})
                    api_calls += 1
                    if status != 201:
                        api_failures.append(f"add key: {status} {text[:200]}")
                    stack.keys.append(key)
                    if len(stack.keys) > 2:
                        old = stack.keys.pop(0)
                        status, text = stack.api("DELETE", f"/api/token/keys/{old[0]}")
                        api_calls += 1
                        if status != 200:
                            api_failures.append(f"retire key {old[0]}: {status} {text[:200]}")
                    next_rotate += args.rotate_every
                time.sleep(0.2)
        except RuntimeError as e:
            problems.append(str(e))
            samples, api_calls, api_failures, rotation = {}, 0, [], 0
        finally:
            if players:
                players.stop = True
            if hits:
                hits.stop = True
                hits.join(timeout=60)
            for pub in pubs:
                pub.proc.stop()
            if players:
                players.join(timeout=args.player_seconds * 4 + 60)
            panics = {p.name: p.panicked() for p in stack.procs}
            stack.stop()

        for name, lines in panics.items():
            if lines:
                problems.append(f"{name} panicked: {lines}")
        if players:
            figures["player_runs"] = players.runs
            figures["player_failures"] = len(players.failures)
            problems.extend(players.failures[:5])
        if hits:
            figures["hits"] = hits.requests
            figures["hits_per_s"] = round(hits.requests / max(hits.seconds, 1e-9), 1)
            figures["hit_p99_worst_round"] = hits.worst_p99
            figures["hits_non_2xx"] = hits.non_2xx
            if hits.non_2xx:
                problems.append(f"wrk: {hits.non_2xx} non-2xx/3xx answers")
            if hits.socket_errors:
                problems.append(f"wrk socket errors: {hits.socket_errors[:3]}")
        figures["api_calls"] = api_calls
        figures["key_rotations"] = rotation
        problems.extend(api_failures[:5])
        for name, series in samples.items():
            if not series:
                continue
            rss = [s[0] for s in series]
            fd_delta, fd_grew = growth([s[1] for s in series], 16)
            th_delta, th_grew = growth([s[2] for s in series], 4)
            figures[name] = {"rss_mib_max": round(max(rss) / MIB, 1),
                             "rss_mib_last": round(rss[-1] / MIB, 1),
                             "fds_first_last": [series[0][1], series[-1][1]], "fd_growth": fd_delta,
                             "threads_first_last": [series[0][2], series[-1][2]], "thread_growth": th_delta}
            if fd_grew:
                problems.append(f"{name}: file descriptors grew by {fd_delta}")
            if th_grew:
                problems.append(f"{name}: threads grew by {th_delta}")
        edge = figures.get("edge")
        if edge and edge["rss_mib_max"] > args.cache_mib + 100:
            problems.append(f"edge RSS {edge['rss_mib_max']} MiB > cache {args.cache_mib} MiB + 100 MiB")
        print(f"soak: {json.dumps(figures)}", flush=True)
        for p in problems:
            print(f"soak: PROBLEM {p}", flush=True)
        if problems:
            for p in stack.procs:
                print(f"--- {p.name}.log (tail)\n{p.tail()}")
        print(f"soak: {'FAILED' if problems else 'passed'}", flush=True)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
