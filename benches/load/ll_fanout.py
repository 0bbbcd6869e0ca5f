#!/usr/bin/env python3
"""LL-HLS fan-out through one edge: 500 blocking clients on one channel.

`strata origin` with `store.part_target = "0.5s"` (2 s segments) is fed by
ffmpeg over RTMP (the source of origin_race.py: testsrc2 640x360@30, libx264
ultrafast, 2 s GOP, AAC, `-re`); one `strata edge` sits in front of it, and
between the two a tap (a TCP relay in its own process, stdlib threads) that
logs every request the edge sends upstream and the instant the first byte of
its answer comes back: that instant is the part's *arrival at the edge*.

N clients (default 500, in --procs asyncio processes, raw HTTP/1.1
keep-alive) each loop as hls.js does in low-latency mode:

    GET video.m3u8?_HLS_msn=M&_HLS_part=P   (blocking: held until part P of M)
    GET video/M.P.m4s                       (the part just announced)
    M, P = the playlist's EXT-X-PRELOAD-HINT

Reported, after a warm-up:

  upstream per part  how many blocking playlist requests, and how many part
                     fetches, the edge sent upstream for each (M, P): the goal
                     is exactly one of each (the tap's count, cross-checked
                     with the edge's strata_edge_upstream_requests_total);
  fan-out delay      for each part, the time from its arrival at the edge (tap:
                     first byte of the origin's answer to the blocking reload)
                     to the moment the LAST client that was waiting for it
                     (request sent before that arrival) has the whole answer;
                     p50/p99/max over parts; and the same for every delivery.
                     This includes the clients' own scheduling (N sockets on
                     --procs Python loops sharing the machine with the edge),
                     so it is an upper bound of the edge's own fan-out time.

Needs ffmpeg and a release build of strata ($STRATA, else
$CARGO_TARGET_DIR/release/strata, else target/release/strata; built if
missing).

    python3 benches/load/ll_fanout.py [--clients 500] [--seconds 60] [--procs 2]
"""

import argparse
import asyncio
import multiprocessing
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
import urllib.request
from collections import defaultdict, deque

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHANNEL = "bench"
PLAYLIST = f"/live/{CHANNEL}/main/video.m3u8"
HINT = re.compile(rb'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]*?(\d+)\.(\d+)\.m4s)"')
PART = re.compile(rb'#EXT-X-PART:[^\n]*URI="([^"]*?(\d+)\.(\d+)\.m4s)"')


def strata_binary():
    if os.environ.get("STRATA"):
        return os.environ["STRATA"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "strata")
    if not os.path.exists(path):
        print("ll_fanout: building release strata (takes minutes) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    return path


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"ll_fanout: {name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"ll_fanout: {name} did not listen on {port}")


# ------------------------------------------------------------------ the tap

def tap_main(listen, upstream, log_path, ready):
    """Relay edge -> origin; log `req <t> <path>` and `first <t> <path>`."""
    log = open(log_path, "w", buffering=1)
    lock = threading.Lock()

    def write(line):
        with lock:
            log.write(line)

    def conn(client):
        server = socket.create_connection(("127.0.0.1", upstream))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = deque()

        def up():
            buf = b""
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    buf += data
                    # GET/HEAD only (no bodies): each head ends the request.
                    while b"\r\n\r\n" in buf:
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                        pending.append(path)
                        write(f"req {time.monotonic():.6f} {path}\n")
                    server.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        def down():
            try:
                while True:
                    data = server.recv(65536)
                    if not data:
                        break
                    # No pipelining: an answer's first bytes come after its
                    # request and before the next one.
                    if pending:
                        write(f"first {time.monotonic():.6f} {pending.popleft()}\n")
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()
                server.close()

        threading.Thread(target=up, daemon=True).start()
        threading.Thread(target=down, daemon=True).start()

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", listen))
    lsock.listen(256)
    ready.set()
    while True:
        c, _ = lsock.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()


# -------------------------------------------------------------- the clients

async def http_get(reader, writer, path):
    """(status, body, t_sent, t_done) over a keep-alive HTTP/1.1 connection."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    t_sent = time.monotonic()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    m = re.search(rb"content-length:\s*(\d+)", lower)
    if m:
        body = await reader.readexactly(int(m.group(1)))
    elif b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, body, t_sent, time.monotonic()


async def client(port, base, stop_at, records, errors, start_delay):
    await asyncio.sleep(start_delay)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    msn = part = None
    while time.monotonic() < stop_at:
        try:
            if msn is None:
                status, body, _, _ = await http_get(reader, writer, PLAYLIST)
            else:
                status, body, t_sent, t_done = await http_get(
                    reader, writer, f"{PLAYLIST}?_HLS_msn={msn}&_HLS_part={part}")
                records.append((msn, part, t_sent, t_done, status))
                if status == 200:
                    # The part just announced (hls.js would fetch it now).
                    for m in PART.finditer(body):
                        if int(m.group(2)) == msn and int(m.group(3)) == part:
                            uri = base + m.group(1).decode()
                            s, _, _, _ = await http_get(reader, writer, uri)
                            if s != 200:
                                errors[f"part {s}"] += 1
                            break
            if status != 200:
                errors[f"playlist {status}"] += 1
                msn = None
                await asyncio.sleep(0.2)
                continue
            hint = HINT.search(body)
            if hint is None:
                msn = None
                await asyncio.sleep(0.2)
                continue
            msn, part = int(hint.group(2)), int(hint.group(3))
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors[type(e).__name__] += 1
            writer.close()
            await asyncio.sleep(0.2)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            msn = None


def clients_main(port, n, seconds, queue):
    async def run():
        records, errors = [], defaultdict(int)
        stop_at = time.monotonic() + seconds
        base = PLAYLIST.rsplit("/", 1)[0] + "/"
        await asyncio.gather(*(client(port, base, stop_at, records, errors, i * 1.0 / n)
                               for i in range(n)))
        return records, dict(errors)
    queue.put(asyncio.run(run()))


# ------------------------------------------------------------------- the run

def metric(admin, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--part-target", default="0.5s")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ll_fanout: ffmpeg not found (run scripts/install-test-deps.sh)")
    strata = strata_binary()
    tmp = tempfile.mkdtemp(prefix="strata-ll-fanout.")
    http, admin, rtmp, srt = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    tap, edge, edge_admin = free_port(), free_port(), free_port()
    config = os.path.join(tmp, "origin.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n'
                f'[ingest]\nrtmp_listen = "127.0.0.1:{rtmp}"\nsrt_listen = "127.0.0.1:{srt}"\n'
                'allow_anonymous = true\n'
                f'[store]\ntarget_duration = "2s"\npart_target = "{args.part_target}"\n')
    log = open(os.path.join(tmp, "strata.log"), "w")
    procs = []
    tap_log = os.path.join(tmp, "tap.log")
    ready = multiprocessing.Event()
    tap_proc = multiprocessing.Process(target=tap_main, args=(tap, http, tap_log, ready), daemon=True)
    try:
        origin = subprocess.Popen([strata, "origin", "--config", config], stdout=log, stderr=log)
        procs.append(origin)
        wait_port(http, origin, "strata origin")
        wait_port(rtmp, origin, "strata origin (rtmp)")
        tap_proc.start()
        ready.wait(10)
        edge_proc = subprocess.Popen(
            [strata, "edge", "--listen", f"127.0.0.1:{edge}", "--admin", f"127.0.0.1:{edge_admin}",
             "--upstream", f"http://127.0.0.1:{tap}"], stdout=log, stderr=log)
        procs.append(edge_proc)
        wait_port(edge, edge_proc, "strata edge")
        ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-re",
             "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-c:a", "aac", "-b:a", "96k",
             "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/{CHANNEL}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ffmpeg)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{edge}{PLAYLIST}", timeout=2).read()
                if HINT.search(body):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            sys.exit("ll_fanout: no LL playlist after 30 s")

        up_before = metric(edge_admin, "strata_edge_upstream_requests_total")
        load_before = os.getloadavg()
        queue = multiprocessing.Queue()
        per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
        workers = [multiprocessing.Process(target=clients_main, args=(edge, n, args.seconds, queue))
                   for n in per]
        t_start = time.monotonic()
        for w in workers:
            w.start()
        results = [queue.get(timeout=args.seconds + 120) for _ in workers]
        for w in workers:
            w.join()
        load = os.getloadavg()
        up_after = metric(edge_admin, "strata_edge_upstream_requests_total")
        followers = metric(edge_admin, "strata_edge_coalesced_followers_total")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if tap_proc.is_alive():
            tap_proc.terminate()

    records = [r for rs, _ in results for r in rs]
    errors = defaultdict(int)
    for _, e in results:
        for k, v in e.items():
            errors[k] += v
    first, reqs, part_fetches = {}, defaultdict(int), defaultdict(int)
    req_times = defaultdict(list)
    with open(tap_log) as f:
        for line in f:
            kind, t, path = line.split(" ", 2)
            path = path.strip()
            m = re.search(r"_HLS_msn=(\d+)&_HLS_part=(\d+)", path)
            p = re.search(r"/(\d+)\.(\d+)\.m4s$", path)
            if kind == "req":
                if m:
                    reqs[(int(m.group(1)), int(m.group(2)))] += 1
                    req_times[(int(m.group(1)), int(m.group(2)))].append(float(t))
                elif p:
                    part_fetches[(int(p.group(1)), int(p.group(2)))] += 1
            elif kind == "first" and m:
                first.setdefault((int(m.group(1)), int(m.group(2))), float(t))
    shutil.rmtree(tmp, ignore_errors=True)

    # Parts requested by clients after the warm-up and answered before the end.
    by_part = defaultdict(list)
    for msn, part, t_sent, t_done, status in records:
        if status == 200 and t_sent > t_start + args.warmup:
            by_part[(msn, part)].append((t_sent, t_done))
    parts = sorted(k for k in by_part if k in first)
    last_delay, all_delays, waiters, late = [], [], [], 0
    for k in parts:
        arrived = first[k]
        waiting = [done - arrived for sent, done in by_part[k] if sent < arrived]
        late += len(by_part[k]) - len(waiting)
        if waiting:
            waiters.append(len(waiting))
            last_delay.append(max(waiting))
            all_delays.extend(waiting)
    counts = [reqs[k] for k in parts]
    fetches = [part_fetches[k] for k in parts]

    print(f"\nLL fan-out: {args.clients} blocking LL-HLS clients ({args.procs} procs), one edge, "
          f"part_target {args.part_target}, {args.seconds} s ({args.warmup} s warm-up)")
    print(f"load average before {load_before[0]:.2f}, after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not parts:
        sys.exit(f"ll_fanout: no part measured (errors {dict(errors)})")
    dist = defaultdict(int)
    for c in counts:
        dist[c] += 1
    fdist = defaultdict(int)
    for c in fetches:
        fdist[c] += 1
    print(f"parts measured          {len(parts)} ({parts[0][0]}.{parts[0][1]} .. {parts[-1][0]}.{parts[-1][1]})")
    print(f"upstream blocking reloads per part: {dict(sorted(dist.items()))} (count: parts)")
    print(f"upstream part fetches per part:     {dict(sorted(fdist.items()))} (count: parts)")
    repeats = [k for k in parts if reqs[k] > 1]
    if repeats:
        gaps = ", ".join(f"{k[0]}.{k[1]}: +{1000 * (req_times[k][1] - first[k]):.0f} ms"
                         for k in repeats[:8])
        print(f"  second upstream request after the first answer ({len(repeats)} parts): {gaps}"
              " (a straggler after the cached answer expired, or a miss while it was held)")
    if up_before is not None and up_after is not None:
        print(f"edge strata_edge_upstream_requests_total during the run: {up_after - up_before:.0f}"
              f"; coalesced followers total {followers:.0f}")
    print(f"waiting clients per part: median {statistics.median(waiters):.0f}, min {min(waiters)}; "
          f"late (request after arrival, answered from cache): {late}")
    print(f"arrival -> last waiting client  p50 {1000 * pct(last_delay, 0.5):.1f} ms  "
          f"p99 {1000 * pct(last_delay, 0.99):.1f} ms  max {1000 * max(last_delay):.1f} ms  "
          f"(n={len(last_delay)} parts)")
    print(f"arrival -> each waiting client  p50 {1000 * pct(all_delays, 0.5):.1f} ms  "
          f"p99 {1000 * pct(all_delays, 0.99):.1f} ms  (n={len(all_delays)})")
    if errors:
        print(f"client errors: {dict(errors)}")


if __name__ == "__main__":
    main()
