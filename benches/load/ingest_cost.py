#!/usr/bin/env python3
"""Origin CPU per live channel: Strata's origin against nginx-rtmp.

N channels (default 32) are published over RTMP by N ffmpeg processes, each
`-re -stream_loop -1 -c copy` of the same pre-encoded FLV (720p30 H.264, 2 s
GOP, ~3 Mbit/s, AAC 128k; made once with libx264 and cached under
$TMPDIR/strata-ingest-cost-720p.flv). Each channel has one HLS poller (a
thread, keep-alive HTTP/1.1) that fetches its media playlist every second
and every segment that is new in it. The origin's CPU (utime + stime from
/proc, all of its processes: nginx's master and worker) is measured over
--seconds after a warm-up in which every channel's playlist appeared; the
ffmpeg publishers and pollers are not counted (the same for every server).

Servers, one at a time so neither steals the other's CPU:

  nginx-rtmp      benches/load/peers/nginx-rtmp.conf (HLS MPEG-TS, 2 s)
  strata          `strata origin`, target_duration 2s, no LL
  strata-ll       the same with store.part_target = "0.5s"

The poller reads Strata's MPEG-TS variant (`/live/NAME/main/ts.m3u8`, audio
and video muxed like nginx-rtmp's) unless --strata-playlist cmaf (then
`main/video.m3u8` and `main/audio.m3u8`, one poller thread each).

Needs ffmpeg, nginx + libnginx-mod-rtmp (scripts/install-test-deps.sh) and
a release build of strata ($STRATA, else $CARGO_TARGET_DIR/release/strata,
else target/release/strata).

    python3 benches/load/ingest_cost.py [--channels 32] [--seconds 60] [--runs 1]
        [--only nginx-rtmp,strata,strata-ll] [--strata-playlist ts|cmaf]
        [--build LABEL=PATH ...] [--perf stat|record] [--perf-dir DIR]

--build (repeatable) races several strata binaries in the same session: each
strata row runs once per build, named `strata[LABEL]`, interleaved with the
others in every run, so two builds meet the same load. --perf attaches
/usr/bin/perf to the server's processes for the measured window (not in the
CPU figure's window of other servers): `stat` counts context switches and
syscalls (recvfrom, epoll_wait, futex, ...), `record` samples call graphs into
--perf-dir/NAME-runN.data for `perf report`. Perf costs CPU itself: take the
ratios from runs without it.
"""

import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "benches", "load", "peers")
TICK = os.sysconf("SC_CLK_TCK")


def strata_binary(path=None):
    if path:
        return path
    if os.environ.get("STRATA"):
        return os.environ["STRATA"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "strata")
    if not os.path.exists(path):
        print("ingest_cost: building release strata (takes minutes) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    return path


def need(tool, hint):
    if shutil.which(tool) is None:
        sys.exit(f"ingest_cost: {tool} not found: {hint} (or run scripts/install-test-deps.sh)")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"ingest_cost: {name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"ingest_cost: {name} did not listen on {port}")


def source_flv():
    path = os.path.join(tempfile.gettempdir(), "strata-ingest-cost-720p.flv")
    if not os.path.exists(path):
        print("ingest_cost: encoding the 720p source once ...", file=sys.stderr)
        subprocess.run(
            ["nice", "-n", "19", "ffmpeg", "-hide_banner", "-v", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=20",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=20",
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3000k", "-maxrate", "3000k",
             "-bufsize", "6000k", "-pix_fmt", "yuv420p",
             "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-c:a", "aac", "-b:a", "128k", "-f", "flv", path + ".tmp"],
            check=True)
        os.rename(path + ".tmp", path)
    return path


def cpu_seconds(root_pid, which=(11, 12)):
    """utime + stime (fields 14, 15 of stat; `which` picks) of root_pid and
    its descendants, in seconds."""
    parents, times = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d)] = int(fields[1])
        times[int(d)] = sum(int(fields[i]) for i in which) / TICK
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(p for p, pp in parents.items() if pp == pid)
    return total


PERF_EVENTS = ",".join([
    "task-clock", "context-switches", "cpu-migrations", "raw_syscalls:sys_enter",
    "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_read", "syscalls:sys_enter_readv",
    "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_futex", "syscalls:sys_enter_sendto", "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev", "syscalls:sys_enter_sendfile64",
])


def process_tree(root_pid):
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    pids, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(p for p, pp in parents.items() if pp == pid)
    return pids


def start_perf(mode, pid, seconds, out_dir, name):
    """perf stat or record on `pid` and its children for `seconds`."""
    if mode is None:
        return None
    pids = ",".join(str(p) for p in process_tree(pid))
    os.makedirs(out_dir, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if mode == "stat":
        out = os.path.join(out_dir, f"{tag}.stat.txt")
        cmd = ["perf", "stat", "-e", PERF_EVENTS, "-p", pids, "-o", out, "--", "sleep", str(seconds)]
    else:
        out = os.path.join(out_dir, f"{tag}.data")
        cmd = ["perf", "record", "-q", "-F", "499", "-g", "-p", pids, "-o", out,
               "--", "sleep", str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def finish_perf(perf):
    if perf is None:
        return
    proc, out = perf
    proc.wait()
    if out.endswith(".stat.txt") and os.path.exists(out):
        with open(out) as f:
            for line in f:
                line = line.rstrip()
                if line and not line.startswith("#"):
                    print("    perf " + line.strip(), flush=True)
    else:
        print(f"    perf record: {out}", flush=True)


class Server:
    def __init__(self, name, proc, tmp, rtmp, playlists):
        self.name, self.proc, self.tmp, self.rtmp, self.playlists = name, proc, tmp, rtmp, playlists

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_strata(ll, flavour, build=None):
    label, path = build or (None, None)
    strata = strata_binary(path)
    tmp = tempfile.mkdtemp(prefix="strata-ingest-cost.")
    http_port, admin, rtmp, srt = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    config = os.path.join(tmp, "origin.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nhttp = "127.0.0.1:{http_port}"\nadmin = "127.0.0.1:{admin}"\n'
                f'[ingest]\nrtmp_listen = "127.0.0.1:{rtmp}"\nsrt_listen = "127.0.0.1:{srt}"\n'
                'allow_anonymous = true\n'
                f'[store]\ntarget_duration = "2s"\npart_target = "{"0.5s" if ll else "0s"}"\n')
    log = open(os.path.join(tmp, "strata.log"), "w")
    proc = subprocess.Popen([strata, "origin", "--config", config], stdout=log, stderr=log)
    wait_port(http_port, proc, "strata origin")
    wait_port(rtmp, proc, "strata origin (rtmp)")
    paths = ["main/ts.m3u8"] if flavour == "ts" else ["main/video.m3u8", "main/audio.m3u8"]
    name = "strata-ll" if ll else "strata"
    if label:
        name += f"[{label}]"
    return Server(name, proc, tmp, rtmp,
                  lambda ch: [(http_port, f"/live/{ch}/{p}") for p in paths])


def start_nginx_rtmp():
    tmp = tempfile.mkdtemp(prefix="nginx-ingest-cost.")
    rtmp, http_port = free_port(), free_port()
    with open(os.path.join(PEERS, "nginx-rtmp.conf")) as f:
        conf = f.read()
    conf = conf.replace("__DIR__", tmp).replace("__RTMP_PORT__", str(rtmp))
    conf = conf.replace("__HTTP_PORT__", str(http_port))
    path = os.path.join(tmp, "nginx-rtmp.conf")
    with open(path, "w") as f:
        f.write(conf)
    cmd = ["nginx"] + (["-g", "user root;"] if os.geteuid() == 0 else []) + ["-p", tmp + "/", "-c", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http_port, proc, "nginx-rtmp")
    wait_port(rtmp, proc, "nginx-rtmp (rtmp)")
    return Server("nginx-rtmp", proc, tmp, rtmp, lambda ch: [(http_port, f"/hls/{ch}.m3u8")])


class Poller(threading.Thread):
    """Fetch one media playlist every second and each new segment in it."""

    def __init__(self, port, path, stop):
        super().__init__(daemon=True)
        self.port, self.path, self.stop = port, path, stop
        self.seen, self.segments, self.playlists, self.errors = set(), 0, 0, 0
        self.conn = None

    def get(self, path):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
        return 0, b""

    def run(self):
        base = self.path.rsplit("/", 1)[0] + "/"
        while not self.stop.is_set():
            t = time.monotonic()
            status, body = self.get(self.path)
            if status == 200:
                self.playlists += 1
                for line in body.decode("utf-8", "replace").splitlines():
                    if line and not line.startswith("#") and line not in self.seen:
                        self.seen.add(line)
                        s, _ = self.get(line if line.startswith("/") else base + line)
                        if s == 200:
                            self.segments += 1
                        else:
                            self.errors += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


def run_one(server, args, flv):
    names = [f"ch{i}" for i in range(args.channels)]
    publishers = [subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-re", "-stream_loop", "-1",
         "-i", flv, "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{server.rtmp}/live/{name}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in names]
    stop = threading.Event()
    pollers = [Poller(port, path, stop) for name in names for port, path in server.playlists(name)]
    try:
        for p in pollers:
            p.start()
        deadline = time.time() + 60
        while time.time() < deadline and not all(p.segments for p in pollers):
            time.sleep(0.5)
        ready = sum(1 for p in pollers if p.segments)
        time.sleep(2)
        load0 = os.getloadavg()
        c0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        s0 = cpu_seconds(server.proc.pid, (12,))
        seg0 = sum(p.segments for p in pollers)
        perf = start_perf(args.perf, server.proc.pid, args.seconds, args.perf_dir,
                          f"{server.name}-run{args.current_run}")
        time.sleep(args.seconds)
        finish_perf(perf)
        c1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
        s1 = cpu_seconds(server.proc.pid, (12,))
        seg1 = sum(p.segments for p in pollers)
        load1 = os.getloadavg()
        dead = sum(1 for p in publishers if p.poll() is not None)
    finally:
        stop.set()
        for p in publishers:
            p.terminate()
        for p in publishers:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    return {
        "name": server.name, "cpu": 100 * (c1 - c0) / (t1 - t0), "ready": ready,
        "sys": 100 * (s1 - s0) / (t1 - t0),
        "pollers": len(pollers), "segments": seg1 - seg0, "errors": sum(p.errors for p in pollers),
        "load": (load0[0], load1[0]), "dead": dead,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="nginx-rtmp,strata,strata-ll")
    parser.add_argument("--strata-playlist", choices=("ts", "cmaf"), default="ts")
    parser.add_argument("--build", action="append", default=[], metavar="LABEL=PATH",
                        help="a strata binary to race (repeatable); rows become strata[LABEL]")
    parser.add_argument("--perf", choices=("stat", "record"))
    parser.add_argument("--perf-dir", default=os.path.join(tempfile.gettempdir(), "ingest-cost-perf"))
    args = parser.parse_args()
    if args.perf:
        need("perf", "apt-get install linux-perf")
    builds = [tuple(b.split("=", 1)) for b in args.build]
    if any(len(b) != 2 or not os.path.exists(b[1]) for b in builds):
        sys.exit(f"ingest_cost: --build wants LABEL=PATH to an existing binary: {args.build}")
    need("ffmpeg", "apt-get install ffmpeg")
    only = args.only.split(",")
    if "nginx-rtmp" in only:
        need("nginx", "apt-get install nginx libnginx-mod-rtmp")
        if not os.path.exists("/usr/lib/nginx/modules/ngx_rtmp_module.so"):
            sys.exit("ingest_cost: ngx_rtmp_module.so missing: apt-get install libnginx-mod-rtmp")
    flv = source_flv()
    starts = {"nginx-rtmp": start_nginx_rtmp}
    for ll, kind in ((False, "strata"), (True, "strata-ll")):
        if builds:
            for b in builds:
                starts[f"{kind}[{b[0]}]"] = lambda ll=ll, b=b: start_strata(ll, args.strata_playlist, b)
        else:
            starts[kind] = lambda ll=ll: start_strata(ll, args.strata_playlist)
    order = []
    for name in only:
        if name in ("strata", "strata-ll") and builds:
            order.extend(f"{name}[{b[0]}]" for b in builds)
        elif name in starts:
            order.append(name)
        else:
            sys.exit(f"ingest_cost: unknown server {name!r}")
    results = []
    for run in range(args.runs):
        args.current_run = run + 1
        for name in order:
            server = starts[name]()
            try:
                r = run_one(server, args, flv)
            finally:
                server.stop()
            r["run"] = run + 1
            results.append(r)
            print(f"run {r['run']} {r['name']:15} {r['cpu']:5.1f} % of a core "
                  f"(of which system {r['sys']:.1f} %)  "
                  f"({r['ready']}/{r['pollers']} pollers got segments, {r['segments']} segments, "
                  f"{r['errors']} errors, {r['dead']} publishers died, "
                  f"load {r['load'][0]:.2f} -> {r['load'][1]:.2f})", flush=True)
            time.sleep(2)
    print(f"\nIngest cost: {args.channels} channels x 720p30 -c copy, one HLS poller each "
          f"(strata: {args.strata_playlist}), {args.seconds} s, {args.runs} run(s)")
    for run in range(1, args.runs + 1):
        rs = {r["name"]: r for r in results if r["run"] == run}
        line = "  ".join(f"{n} {r['cpu']:.1f} %" for n, r in rs.items())
        if "nginx-rtmp" in rs:
            base = rs["nginx-rtmp"]["cpu"]
            line += "".join(f"  {n}/nginx-rtmp {r['cpu'] / base:.2f}x"
                            for n, r in rs.items() if n != "nginx-rtmp")
        print(f"run {run}: {line}")


if __name__ == "__main__":
    main()
