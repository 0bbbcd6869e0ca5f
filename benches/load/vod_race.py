#!/usr/bin/env python3
"""VOD packaging: Strata's origin against ffmpeg's own HLS muxer, on a cold
2-hour title.

The title: a 60 s 1280x720 H.264 (25 fps, 2 s GOPs) + AAC encode, looped
120 times with `-c copy` (moov at the end, as ffmpeg writes it). Built once
into --dir (about 1.8 GB) and kept.

Measured, the title's pages dropped from the page cache before each cold run
(posix_fadvise DONTNEED):
  1. cold first byte: a fresh origin (empty index cache), one GET of a video
     segment at 1 h (the index is parsed from the moov first), time to first
     byte and to the last byte (curl);
  2. warm first byte: the next segment, the index now cached;
  3. one segment, ffmpeg: `ffmpeg -ss 3600 -i title.mp4 -t 6 -c copy -f hls`
     (fMP4) producing the same 6 s, wall time;
  4. the whole title: ffmpeg `-c copy -f hls -hls_time 6 -hls_segment_type
     fmp4` writing every segment, against Strata serving every video and
     audio segment of the same title (GETs, 4 at a time), wall time.

    STRATA_BIN=target/release/strata python3 benches/load/vod_race.py [--dir /var/tmp/vod-race]
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edge_race as er  # noqa: E402


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_title(dir):
    title = os.path.join(dir, "title.mp4")
    if os.path.exists(title):
        return title
    os.makedirs(dir, exist_ok=True)
    short = os.path.join(dir, "short.mp4")
    sh("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
       "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
       "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60",
       "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-pix_fmt", "yuv420p",
       "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "96k", short)
    sh("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
       "-stream_loop", "119", "-i", short, "-c", "copy", title + ".part.mp4")
    os.rename(title + ".part.mp4", title)
    return title


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def start_origin(root):
    binary = os.environ.get("STRATA_BIN", os.path.join(er.ROOT, "target", "release", "strata"))
    tmp = tempfile.mkdtemp(prefix="vod-race.")
    http, admin, rtmp, srt = (er.free_port() for _ in range(4))
    conf = os.path.join(tmp, "origin.toml")
    with open(conf, "w") as f:
        f.write(f"""
[server]
http = "127.0.0.1:{http}"
admin = "127.0.0.1:{admin}"

[ingest]
rtmp_listen = "127.0.0.1:{rtmp}"
srt_listen = "127.0.0.1:{srt}"

[vod]
root = "{root}"
segment_duration = "6s"
""")
    proc = subprocess.Popen([binary, "origin", "--config", conf], stdout=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="warn"))
    er.wait_port(http, proc, "strata origin")
    return er.Peer("origin", http, proc, tmp)


def curl(url):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
                          url], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "200", f"{url}: HTTP {out[0]}"
    return float(out[1]) * 1000, float(out[2]) * 1000, int(out[3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp/vod-race")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    started = time.time()
    title = make_title(args.dir)
    size = os.path.getsize(title)
    print(f"title {title}: {size / 1e9:.2f} GB (built or found in {time.time() - started:.0f} s); "
          f"load average {os.getloadavg()}")

    cold, warm = [], []
    for _ in range(args.runs):
        drop_cache(title)
        origin = start_origin(args.dir)
        try:
            cold.append(curl(origin.url("/vod/title.mp4/t1/600.m4s")))
            warm.append(curl(origin.url("/vod/title.mp4/t1/601.m4s")))
        finally:
            origin.stop()
    print("strata cold segment 600 (index parse + read): first byte ms "
          + ", ".join(f"{c[0]:.1f}" for c in cold) + "; last byte ms "
          + ", ".join(f"{c[1]:.1f}" for c in cold) + f"; {cold[0][2]} bytes")
    print("strata warm segment 601 (index cached): first byte ms "
          + ", ".join(f"{w[0]:.1f}" for w in warm) + "; last byte ms "
          + ", ".join(f"{w[1]:.1f}" for w in warm))

    one = []
    for _ in range(args.runs):
        drop_cache(title)
        out = tempfile.mkdtemp(prefix="vod-race-ff1.")
        t = time.monotonic()
        sh("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", "3600", "-i", title, "-t", "6",
           "-map", "0:v", "-c", "copy", "-f", "hls", "-hls_time", "6", "-hls_segment_type", "fmp4",
           "-hls_playlist_type", "vod", os.path.join(out, "one.m3u8"))
        one.append((time.monotonic() - t) * 1000)
        shutil.rmtree(out, ignore_errors=True)
    print("ffmpeg one 6 s segment at 1 h (-ss, -c copy, -f hls fmp4), cold, wall ms: "
          + ", ".join(f"{x:.0f}" for x in one))

    drop_cache(title)
    out = tempfile.mkdtemp(prefix="vod-race-ff.")
    t = time.monotonic()
    sh("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", title, "-c", "copy", "-f", "hls",
       "-hls_time", "6", "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod", os.path.join(out, "all.m3u8"))
    ff_all = time.monotonic() - t
    ff_segments = len([f for f in os.listdir(out) if f.endswith(".m4s")])
    shutil.rmtree(out, ignore_errors=True)

    drop_cache(title)
    origin = start_origin(args.dir)
    try:
        t = time.monotonic()
        master = urllib.request.urlopen(origin.url("/vod/title.mp4/master.m3u8")).read().decode()
        urls = []
        for playlist in re.findall(r"(t\d+\.m3u8)", master):
            text = urllib.request.urlopen(origin.url(f"/vod/title.mp4/{playlist}")).read().decode()
            urls += [origin.url(f"/vod/title.mp4/{line}") for line in text.splitlines() if line.endswith(".m4s")]
        urls = list(dict.fromkeys(urls))

        def get(url):
            with urllib.request.urlopen(url) as r:
                return len(r.read())

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            total = sum(pool.map(get, urls))
        strata_all = time.monotonic() - t
    finally:
        origin.stop()
    print(f"whole title: ffmpeg -f hls wrote {ff_segments} muxed segments in {ff_all:.1f} s; "
          f"strata served {len(urls)} segments (video and audio apart), {total / 1e9:.2f} GB, in {strata_all:.1f} s")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
