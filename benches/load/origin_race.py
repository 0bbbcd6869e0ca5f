#!/usr/bin/env python3
"""Race Strata's origin against nginx-rtmp in one run: how soon a publish
becomes playable, and how far behind real time the players are.

The same ffmpeg source (lavfi testsrc2 640x360 at 30 fps + a tone, libx264
ultrafast, 2 s GOP, AAC, `-re`) is published over RTMP, first to Strata
(`strata origin`, plus `strata edge` in front of it), then to nginx-rtmp
(benches/load/peers/nginx-rtmp.conf), one server at a time so neither steals
the other's CPU. For each HLS playlist URL it measures:

  first playlist  seconds from starting ffmpeg until the media playlist lists
                  >= 1 segment AND that segment answers 200 with a body,
                  polled every 50 ms;
  latency         sampled every 250 ms for --seconds: wall clock minus the
                  wall-clock instant at which the newest listed segment began.
                  Two ways to date that instant:
                    media  publish start (just before ffmpeg is spawned) plus
                           the segment's media start time, i.e. the sum of the
                           EXTINF durations of every earlier segment (the
                           poller sees every segment from the first one on).
                           Same method for both servers; ffmpeg -re sends media
                           time t at about publish start + t, so this is how
                           old the newest segment's first frame is.
                    pdt    Strata only: wall clock minus the segment's
                           EXT-X-PROGRAM-DATE-TIME (nginx-rtmp writes none).

Playlists: Strata /live/bench/main/video.m3u8 (CMAF) on the origin and through
the edge; nginx-rtmp /hls/bench.m3u8 (MPEG-TS). Ratios are nginx-rtmp / Strata
(> 1 means Strata is better).

LL rows ("strata-ll ..."): a second Strata origin + edge with
`store.part_target = "0.5s"`, watched as an LL-HLS player does: after the first
playlist, each request is a blocking reload for the preload-hinted part
(`_HLS_msn`/`_HLS_part`, in a thread per playlist), and latency is sampled
every 250 ms as for the others: wall clock minus the instant the newest *part*
that loop has received began (media: publish start + the EXTINF durations of
earlier segments + the durations of the earlier parts of its segment; pdt: the
segment's PROGRAM-DATE-TIME + those part durations). Their "first part" is
when the playlist first lists a part that answers 200.
--only picks servers (strata, strata-ll, nginx-rtmp).

Needs ffmpeg, nginx + libnginx-mod-rtmp (scripts/install-test-deps.sh) and a
release build of strata (built here if missing).

    python3 benches/load/origin_race.py [--seconds 20]
"""

import argparse
import datetime
import os
import re
import shutil
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "benches", "load", "peers")
STRATA = os.environ.get("STRATA") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "strata")
CHANNEL = "bench"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"origin_race: {tool} not found: {hint} (or run scripts/install-test-deps.sh)")


def wait_port(port, proc, name, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"origin_race: {name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"origin_race: {name} did not listen on {port}")


def get(url, timeout=2):
    """(status, body); status 0 when there was no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


PART = re.compile(r'#EXT-X-PART:.*DURATION=([0-9.]+).*URI="([^"]+)"')
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[^"]*?(\d+)\.(\d+)\.m4s"')


def parse_parts(text):
    """[(sequence, [(part duration, uri)])] of an LL media playlist: the parts
    of each segment, the last entry being the segment still being cut."""
    seq, out, parts = 0, [], []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        m = PART.match(line)
        if m:
            parts.append((float(m.group(1)), m.group(2)))
        elif line and not line.startswith("#"):
            out.append((seq, parts))
            seq, parts = seq + 1, []
    out.append((seq, parts))
    return out


def parse_playlist(text):
    """[(sequence, duration, uri, pdt or None)] of a media playlist."""
    seq, out, duration, pdt = 0, [], None, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            value = line.split(":", 1)[1].replace("Z", "+00:00")
            pdt = datetime.datetime.fromisoformat(value).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            out.append((seq, duration, line, pdt))
            seq, duration, pdt = seq + 1, None, None
    return out


class Server:
    def __init__(self, name, procs, tmp, rtmp_port, playlists):
        self.name, self.procs, self.tmp = name, procs, tmp
        self.rtmp_port, self.playlists = rtmp_port, playlists

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_strata(part_target=None):
    if not os.path.exists(STRATA):
        print("origin_race: building release strata (takes minutes) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="strata-origin-race.")
    http, admin, rtmp, srt = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    edge, edge_admin = free_port(), free_port()
    config = os.path.join(tmp, "origin.toml")
    with open(config, "w") as f:
        f.write(
            f'[server]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n'
            f'[ingest]\nrtmp_listen = "127.0.0.1:{rtmp}"\nsrt_listen = "127.0.0.1:{srt}"\n'
            "allow_anonymous = true\n"
        )
        if part_target:
            f.write(f'[store]\ntarget_duration = "2s"\npart_target = "{part_target}"\n')
    log = open(os.path.join(tmp, "strata.log"), "w")
    origin = subprocess.Popen([STRATA, "origin", "--config", config], stdout=log, stderr=log)
    wait_port(http, origin, "strata origin")
    wait_port(rtmp, origin, "strata origin (rtmp)")
    edge_proc = subprocess.Popen(
        [STRATA, "edge", "--listen", f"127.0.0.1:{edge}", "--admin", f"127.0.0.1:{edge_admin}",
         "--upstream", f"http://127.0.0.1:{http}"],
        stdout=log, stderr=log,
    )
    wait_port(edge, edge_proc, "strata edge")
    path = f"/live/{CHANNEL}/main/video.m3u8"
    name = "strata-ll" if part_target else "strata"
    return Server(name, [origin, edge_proc], tmp, rtmp, {
        f"{name} origin": f"http://127.0.0.1:{http}{path}",
        f"{name} via edge": f"http://127.0.0.1:{edge}{path}",
    })


def start_strata_ll():
    return start_strata("0.5s")


def start_nginx_rtmp():
    tmp = tempfile.mkdtemp(prefix="nginx-rtmp-race.")
    rtmp, http = free_port(), free_port()
    with open(os.path.join(PEERS, "nginx-rtmp.conf")) as f:
        conf = f.read()
    conf = conf.replace("__DIR__", tmp).replace("__RTMP_PORT__", str(rtmp)).replace("__HTTP_PORT__", str(http))
    path = os.path.join(tmp, "nginx-rtmp.conf")
    with open(path, "w") as f:
        f.write(conf)
    cmd = ["nginx"] + (["-g", "user root;"] if os.geteuid() == 0 else []) + ["-p", tmp + "/", "-c", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, proc, "nginx-rtmp")
    wait_port(rtmp, proc, "nginx-rtmp (rtmp)")
    return Server("nginx-rtmp", [proc], tmp, rtmp, {
        "nginx-rtmp": f"http://127.0.0.1:{http}/hls/{CHANNEL}.m3u8",
    })


def publish(rtmp_port):
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
         "-c:a", "aac", "-b:a", "96k",
         "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/{CHANNEL}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


class Watcher:
    """Polls one media playlist: first playable time, then latency samples."""

    def __init__(self, name, url, start, ll=False):
        self.name, self.url, self.start, self.ll = name, url, start, ll
        self.durations = {}  # sequence -> EXTINF seconds, every segment seen
        self.first = self.first_part = None
        self.media, self.pdt = [], []
        self.next = None  # LL: (msn, part) of the preload hint

    def poll(self):
        status, body = get(self.url)
        if status != 200:
            return []
        segments = parse_playlist(body.decode("utf-8", "replace"))
        for seq, duration, _, _ in segments:
            self.durations[seq] = duration
        return segments

    def ll_sample(self):
        """One blocking reload for the hinted part; a sample per answer."""
        url = self.url if self.next is None else f"{self.url}?_HLS_msn={self.next[0]}&_HLS_part={self.next[1]}"
        status, body = get(url, timeout=8)
        now = time.time()
        if status != 200:
            self.next = None
            return
        text = body.decode("utf-8", "replace")
        hint = HINT.search(text)
        self.next = (int(hint.group(1)), int(hint.group(2))) if hint else None
        segments = parse_playlist(text)
        for seq, duration, _, _ in segments:
            self.durations[seq] = duration
        by_seq = {seq: pdt for seq, _, _, pdt in segments}
        seq, parts = parse_parts(text)[-1]
        if not parts:  # the newest segment is complete and its next part not yet cut
            if not segments:
                return
            seq, parts = seq - 1, parse_parts(text)[-2][1]
        before = sum(d for d, _ in parts[:-1])
        first_seq = min(self.durations) if self.durations else seq
        media = pdt = None
        if all(s in self.durations for s in range(first_seq, seq)):
            media = self.start + sum(self.durations[s] for s in range(first_seq, seq)) + before
        if by_seq.get(seq) is not None:
            pdt = by_seq[seq] + before
        elif segments and segments[-1][0] == seq - 1 and segments[-1][3] is not None:
            # The segment being cut has no PDT yet: the previous one's + its duration.
            pdt = segments[-1][3] + segments[-1][1] + before
        self.newest = (media, pdt)

    def ll_record(self):
        """A latency sample from the newest part the blocking loop has seen."""
        now = time.time()
        media, pdt = getattr(self, "newest", (None, None))
        if media is not None:
            self.media.append(now - media)
        if pdt is not None:
            self.pdt.append(now - pdt)

    def sample(self):
        if self.ll:
            return self.ll_sample()
        segments = self.poll()
        now = time.time()
        if not segments:
            return
        seq, _, _, pdt = segments[-1]
        first_seq = min(self.durations)
        if all(s in self.durations for s in range(first_seq, seq)):
            media_start = sum(self.durations[s] for s in range(first_seq, seq))
            self.media.append(now - (self.start + media_start))
        if pdt is not None:
            self.pdt.append(now - pdt)


def stats(values):
    if not values:
        return "n/a"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return (f"median {statistics.median(values):.2f} s  min {values[0]:.2f}  "
            f"p95 {p95:.2f}  max {values[-1]:.2f}  (n={len(values)})")


def race(server, seconds):
    start = time.time()
    ffmpeg = publish(server.rtmp_port)
    ll = server.name == "strata-ll"
    watchers = [Watcher(name, url, start, ll) for name, url in server.playlists.items()]
    try:
        # Poll every playlist of this server round-robin so each sees the same start.
        pending = list(watchers)
        parts_pending = list(watchers) if ll else []
        while (pending or parts_pending) and time.time() < start + 30:
            for w in list(parts_pending):
                status, body = get(w.url)
                if status != 200:
                    continue
                text = body.decode("utf-8", "replace")
                uris = [u for _, ps in parse_parts(text) for _, u in ps]
                if uris:
                    status, part = get(urllib.parse.urljoin(w.url, uris[0]))
                    if status == 200 and part:
                        w.first_part = time.time() - start
                        parts_pending.remove(w)
            for w in list(pending):
                segments = w.poll()
                if segments:
                    uri = urllib.parse.urljoin(w.url, segments[0][2])
                    status, body = get(uri)
                    if status == 200 and body:
                        w.first = time.time() - start
                        pending.remove(w)
            time.sleep(0.05)
        if ffmpeg.poll() is not None:
            sys.exit(f"origin_race: ffmpeg exited: {ffmpeg.stderr.read().decode()}")
        end = time.time() + seconds
        if ll:
            # One blocking player loop per watcher, in threads.
            def loop(w):
                while time.time() < end:
                    w.sample()
            threads = [threading.Thread(target=loop, args=(w,)) for w in watchers]
            for t in threads:
                t.start()
            while time.time() < end:
                time.sleep(0.25)
                for w in watchers:
                    w.ll_record()
            for t in threads:
                t.join()
        while time.time() < end:
            for w in watchers:
                w.sample()
            time.sleep(0.25)
    finally:
        ffmpeg.terminate()
        try:
            ffmpeg.wait(timeout=5)
        except subprocess.TimeoutExpired:
            ffmpeg.kill()
    return watchers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--only", default="strata,strata-ll,nginx-rtmp")
    args = parser.parse_args()
    starts = {"strata": start_strata, "strata-ll": start_strata_ll, "nginx-rtmp": start_nginx_rtmp}
    need("ffmpeg", "apt-get install ffmpeg")
    need("nginx", "apt-get install nginx libnginx-mod-rtmp")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_rtmp_module.so"):
        sys.exit("origin_race: ngx_rtmp_module.so missing: apt-get install libnginx-mod-rtmp")

    results = []
    for name in args.only.split(","):
        server = starts[name]()
        try:
            results += race(server, args.seconds)
        finally:
            server.stop()
        time.sleep(1)

    print(f"\nOrigin race: RTMP publish 640x360@30 2 s GOP, -re; HLS; {args.seconds} s of samples\n")
    for w in results:
        first = f"{w.first:.2f} s" if w.first is not None else "never"
        if w.ll:
            part = f"{w.first_part:.2f} s" if w.first_part is not None else "never"
            first += f", first part {part}"
        print(f"{w.name:20} first playlist {first}")
        print(f"{'':20} latency (media) {stats(w.media)}")
        if w.pdt:
            print(f"{'':20} latency (PDT)   {stats(w.pdt)}")
    by = {w.name: w for w in results}
    nginx = by.get("nginx-rtmp")
    if nginx and nginx.first and nginx.media:
        print()
        for name in ("strata origin", "strata via edge", "strata-ll origin", "strata-ll via edge"):
            w = by.get(name)
            if w and w.first and w.media:
                print(f"nginx-rtmp / {name}: first playlist x{nginx.first / w.first:.2f}, "
                      f"median latency x{statistics.median(nginx.media) / statistics.median(w.media):.2f}")


if __name__ == "__main__":
    main()
