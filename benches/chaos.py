#!/usr/bin/env python3
"""Chaos run: a live channel through origin -> two shields -> edge while things break.

The publisher (ffmpeg, a test pattern and tone in real time) sits in its own
network namespace behind a veth pair; origin, shields and edge run on the
host side of that link. The link is degraded by a relay on the host side
(5 % of the publisher's UDP datagrams dropped, 100 ms each way): this
machine's kernel has no `sch_netem` ("Specified qdisc kind is unknown"), so
`tc netem` cannot do it here; the relay is used wherever the qdisc is
missing. For RTMP (TCP) the relay adds the delay only: dropping bytes of a
TCP stream in user space is corruption, not loss. A player (ffmpeg, real
time) and a poller (the live media playlist every 100 ms) read through the
edge the whole time. Cases, each with its figures:

  netem-srt   5 % loss and 200 ms RTT on the publisher's link, SRT publish
              (latency 1 s): segments produced vs. wall time, publisher
              restarts, player result.
  netem-rtmp  the same link, RTMP publish (TCP retransmits).
  shield      one of the two shields is killed (SIGKILL): playlist requests
              through the edge that failed, and for how long.
  origin      the origin is killed (SIGKILL) and restarted 3 s later; the
              publisher reconnects (a loop, like OBS's auto-reconnect): seconds
              until the edge serves new segments again, and whether the
              playlist marks the gap with EXT-X-DISCONTINUITY.

Needs root (ip netns), ffmpeg and a strata binary.

    sudo python3 benches/chaos.py [--seconds 40] [--bin target/release/strata]
"""

import argparse
import heapq
import os
import random
import socket
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = "strata-chaos-pub"
HOST_IF, NS_IF = "sc-host0", "sc-pub0"
HOST_IP, NS_IP = "10.88.0.1", "10.88.0.2"


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"chaos: {tool} not found: {hint} (scripts/install-test-deps.sh installs it)")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind((HOST_IP, 0))
        return s.getsockname()[1]


class Network:
    """One namespace for the publisher, a veth pair to the host."""

    def __enter__(self):
        self.down()
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        return self

    def down(self):
        sh("ip", "link", "del", HOST_IF, check=False)
        sh("ip", "netns", "del", NS, check=False)

    def __exit__(self, *exc):
        self.down()


class Impairment(threading.Thread):
    """A relay between publisher and origin: `loss` % of UDP datagrams from
    the publisher dropped, `delay` seconds each way (TCP: delay only)."""

    def __init__(self, target, udp, loss=5.0, delay=0.1):
        super().__init__(daemon=True)
        self.target, self.udp, self.loss, self.delay = target, udp, loss, delay
        self.stop, self.dropped, self.forwarded = False, 0, 0
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        self.listener = socket.socket(socket.AF_INET, kind)
        self.listener.bind((HOST_IP, 0))
        self.port = self.listener.getsockname()[1]
        self.queue, self.lock = [], threading.Condition()

    def later(self, send, data):
        with self.lock:
            heapq.heappush(self.queue, (time.monotonic() + self.delay, id(data), send, data))
            self.lock.notify()

    def sender(self):
        while not self.stop:
            with self.lock:
                while not self.queue or self.queue[0][0] > time.monotonic():
                    self.lock.wait(0.005 if self.queue else 0.1)
                    if self.stop:
                        return
                _, _, send, data = heapq.heappop(self.queue)
            try:
                send(data)
            except OSError:
                pass

    def run(self):
        threading.Thread(target=self.sender, daemon=True).start()
        if self.udp:
            self.run_udp()
        else:
            self.listener.listen()
            while not self.stop:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    def pipe(self, a, b):
        while not self.stop:
            try:
                data = a.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.later(lambda _: b.shutdown(socket.SHUT_WR), b"")
                return
            self.later(b.sendall, data)

    def run_udp(self):
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.connect(self.target)
        peer = {}

        def back():
            while not self.stop:
                try:
                    data = upstream.recv(65536)
                except ConnectionRefusedError:
                    # ICMP port unreachable for a datagram sent before the
                    # origin listened (a slow start on a loaded machine):
                    # keep relaying. Returning here once left every later
                    # handshake unanswered ("channel never went live").
                    continue
                except OSError:
                    return
                if "addr" in peer:
                    self.later(lambda d: self.listener.sendto(d, peer["addr"]), data)

        threading.Thread(target=back, daemon=True).start()
        while not self.stop:
            data, addr = self.listener.recvfrom(65536)
            peer["addr"] = addr
            if random.random() * 100 < self.loss:
                self.dropped += 1
                continue
            self.forwarded += 1
            self.later(upstream.send, data)


class Proc:
    def __init__(self, args, log, ns=None):
        self.args, self.log, self.ns = args, log, ns
        self.start()

    def start(self):
        cmd = (["ip", "netns", "exec", self.ns] if self.ns else []) + self.args
        self.p = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Stack:
    """Origin, two shields and an edge, each a `strata` process."""

    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.http, self.rtmp, self.srt = free_port(), free_port(), free_port()
        self.origin_conf = os.path.join(work, "origin.toml")
        with open(self.origin_conf, "w") as f:
            f.write(f"""[server]
http = "{HOST_IP}:{self.http}"
admin = "{HOST_IP}:{free_port()}"
[ingest]
rtmp_listen = "{HOST_IP}:{self.rtmp}"
srt_listen = "{HOST_IP}:{self.srt}"
srt_latency = "1s"
allow_anonymous = true
[store]
reconnect_timeout = "30s"
""")
        self.origin = self.start_origin()
        self.shields, self.shield_ports = [], []
        for i in range(2):
            port = free_port()
            self.shield_ports.append(port)
            self.shields.append(self.start_edge(f"shield{i}", port, [f"http://{HOST_IP}:{self.http}"]))
        self.edge_port = free_port()
        self.edge = self.start_edge("edge", self.edge_port, [f"http://{HOST_IP}:{p}" for p in self.shield_ports])

    def start_edge(self, name, port, upstreams):
        # Each node its own node_id: on one host they would all default to
        # the host name, and a shield would see the edge's name as a loop.
        conf = os.path.join(self.work, f"{name}.toml")
        with open(conf, "w") as f:
            f.write(f'[server]\nnode_id = "{name}"\nlisten = ["{HOST_IP}:{port}"]\n'
                    f'admin = "{HOST_IP}:{free_port()}"\n[upstream]\nurls = {upstreams!r}\n'.replace("'", '"'))
        return Proc([self.binary, "edge", "--config", conf], os.path.join(self.work, f"{name}.log"))

    def start_origin(self):
        return Proc([self.binary, "origin", "--config", self.origin_conf], os.path.join(self.work, "origin.log"))

    def url(self, path):
        return f"http://{HOST_IP}:{self.edge_port}{path}"

    def stop(self):
        for p in [self.edge] + self.shields + [self.origin]:
            p.stop()


class Publisher:
    """ffmpeg in the publisher's namespace, restarted whenever it exits."""

    def __init__(self, url, log, srt):
        source = ["-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                  "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        codec = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "50",
                 "-c:a", "aac", "-b:v", "800k"]
        out = ["-f", "mpegts", url] if srt else ["-f", "flv", url]
        script = "while true; do ffmpeg -hide_banner -loglevel error " + " ".join(
            f"'{a}'" for a in source + codec + out) + "; echo restart; sleep 1; done"
        self.proc = Proc(["bash", "-c", script], log, ns=NS)
        self.log = log

    def restarts(self):
        return open(self.log).read().count("restart")

    def stop(self):
        self.proc.kill()


def fetch(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except Exception:
        return 0, ""


class Poller(threading.Thread):
    """The live media playlist through the edge every 100 ms."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.stop, self.samples = stack, False, []

    def run(self):
        media = None
        while not self.stop:
            if media is None:
                status, master = fetch(self.stack.url("/live/chaos/master.m3u8"))
                uris = [l for l in master.splitlines() if l and not l.startswith("#")]
                if status == 200 and uris:
                    media = uris[0] if uris[0].startswith("http") else self.stack.url("/live/chaos/" + uris[0])
            status, text = fetch(media) if media else (0, "")
            seq = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
            last = len([l for l in text.splitlines() if l.startswith("#EXTINF")])
            self.samples.append((time.monotonic(), status, (int(seq.group(1)) + last) if seq else None,
                                 "#EXT-X-DISCONTINUITY" in text))
            time.sleep(0.1)

    def window(self, start, end):
        return [s for s in self.samples if start <= s[0] < end]


def newest_segment(samples):
    return max((s[2] for s in samples if s[2] is not None), default=None)


def play(stack, seconds):
    started = time.monotonic()
    out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i",
                          stack.url("/live/chaos/master.m3u8"), "-t", str(seconds), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=seconds * 4 + 60)
    return out.returncode == 0, time.monotonic() - started, [l for l in out.stderr.splitlines() if l.strip()][:3]


def wait_live(poller, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if newest_segment(poller.samples[-5:]) is not None:
            return True
        time.sleep(0.2)
    return False


def run_case(name, binary, seconds, work):
    stack = Stack(binary, os.path.join(work))
    srt = name != "netem-rtmp"
    srt_port, rtmp_port = stack.srt, stack.rtmp
    impairment = None
    if name.startswith("netem"):
        impairment = Impairment((HOST_IP, stack.srt if srt else stack.rtmp), udp=srt)
        impairment.start()
        srt_port = rtmp_port = impairment.port
    url = (f"srt://{HOST_IP}:{srt_port}?streamid=#!::r=live/chaos,m=publish&latency=1000000"
           if srt else f"rtmp://{HOST_IP}:{rtmp_port}/live/chaos")
    poller = Poller(stack)
    result = {"case": name}
    publisher = None
    try:
        publisher = Publisher(url, os.path.join(work, f"publisher-{name}.log"), srt)
        poller.start()
        if not wait_live(poller, 40):
            result["error"] = "channel never went live"
            return result
        t0 = time.monotonic()
        player = {}
        pt = threading.Thread(target=lambda: player.update(r=play(stack, seconds)))
        pt.start()
        if name == "shield":
            time.sleep(seconds / 3)
            killed = time.monotonic()
            stack.shields[0].kill()
            time.sleep(seconds / 3)
            after = poller.window(killed, time.monotonic())
            failed = [s for s in after if s[1] != 200]
            result["failed_requests_after_kill"] = f"{len(failed)} of {len(after)}"
            result["failure_span_s"] = round(failed[-1][0] - failed[0][0], 2) if failed else 0.0
        elif name == "origin":
            time.sleep(seconds / 3)
            killed = time.monotonic()
            before = newest_segment(poller.window(t0, killed))
            stack.origin.kill()
            time.sleep(3)
            stack.origin = stack.start_origin()
            restarted = time.monotonic()
            back = None
            while time.monotonic() - restarted < seconds:
                recent = poller.samples[-1]
                # A segment cut after the restart: newer than any seen before
                # the kill (the edge may keep answering with the old playlist).
                if (recent[0] > restarted and recent[1] == 200 and recent[2] is not None
                        and (before is None or recent[2] > before)):
                    back = recent[0]
                    break
                time.sleep(0.1)
            result["new_segments_s_after_restart"] = round(back - restarted, 1) if back else "never"
            result["discontinuity_marked"] = any(s[3] for s in poller.window(restarted, time.monotonic()))
            result["segment_before_kill"] = before
        pt.join()
        t1 = time.monotonic()
        ok, wall, errors = player["r"]
        # ffmpeg -re -t N: N seconds of media in about N seconds of wall time;
        # much less wall time means it skipped ahead (a jump at the live edge).
        result["player"] = (f"{'played' if ok else 'FAILED'}: ffmpeg read {seconds}s of media in {wall:.1f}s"
                            + (f" {errors}" if errors else ""))
        window = poller.window(t0, t1)
        first, last = newest_segment(window[:10]), newest_segment(window)
        if first is not None and last is not None:
            result["segments_per_minute"] = round((last - first) / (t1 - t0) * 60, 1)
        result["playlist_non200"] = f"{len([s for s in window if s[1] != 200])} of {len(window)}"
        result["publisher_restarts"] = publisher.restarts()
        if impairment and impairment.udp:
            result["datagrams_dropped"] = f"{impairment.dropped} of {impairment.dropped + impairment.forwarded}"
        return result
    finally:
        poller.stop = True
        if publisher:
            publisher.stop()
        if impairment:
            impairment.stop = True
        stack.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=40, help="player time per case")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "strata"))
    ap.add_argument("--cases", default="netem-srt,netem-rtmp,shield,origin")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("chaos: needs root for ip netns and tc")
    need("ip", "apt install iproute2")
    need("ffmpeg", "apt install ffmpeg")
    if not os.path.exists(args.bin):
        sys.exit(f"chaos: {args.bin} missing: cargo build --release (or pass --bin)")
    results, failed = [], False
    with Network(), tempfile.TemporaryDirectory(prefix="strata-chaos-") as work:
        for name in args.cases.split(","):
            case_dir = os.path.join(work, name)
            os.makedirs(case_dir)
            r = run_case(name, args.bin, args.seconds, case_dir)
            print(f"chaos: {r}", flush=True)
            results.append(r)
            if "error" in r or not r.get("player", "").startswith("played"):
                failed = True
                for log in sorted(os.listdir(case_dir)):
                    print(f"--- {log} (tail)\n" + "".join(open(os.path.join(case_dir, log)).readlines()[-15:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
