#!/usr/bin/env python3
"""Low-latency players through origin -> shield -> edge, on release builds.

The e2e tests (tests/e2e/ll_hls.rs, ll_dash.rs) prove that hls.js and dash.js
play LL-HLS and LL-DASH through the tiers; they run debug builds in one test
process on a loaded machine. This bench measures the latency those players
reach with the binary operators run: a release `strata` origin
(`store.part_target`), a shield edge and an edge serving HTTP/2 over TLS (as LL
players usually fetch), each its own process, ffmpeg publishing RTMP with 2 s
GOPs, and the players with their default settings in headless Chromium
(tests/browser/play.mjs: hls.js has `lowLatencyMode` on by default, dash.js
turns low latency on from the MPD's ServiceDescription).

Each run publishes a fresh channel (so every run includes a player's start on
a cold edge), plays it with hls.js and then dash.js for --seconds each, and
prints what the players report: latency min / mean / max (hls.js `latency`,
dash.js `getCurrentLiveLatency()`), the latency from the ingest wall clock
(program-date-time; hls.js only) and stalls.

  python3 benches/load/ll_players.py [--runs 3] [--seconds 30]
      [--part-target 0.5s] [--part-hold-back 1.5s] [--players hls,dash]
      [--h1]  (plain HTTP/1.1 at the edge instead of h2 over TLS)
      [--no-tune-in]  (store.fresh_tune_in = false)

LL_PLAYERS_KEEP=1 keeps the tiers' log and configs. STRATA=path picks the binary (default target/release/strata; built if
missing). Needs ffmpeg, openssl, node and Chromium (scripts/install-test-deps.sh).
"""

import argparse
import datetime
import json
import os
import re
import statistics
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATA = os.environ.get("STRATA") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "strata")
BROWSER = os.path.join(ROOT, "tests", "browser")


def fail(msg):
    sys.exit(f"ll_players: {msg}")


def need(tool):
    if shutil.which(tool) is None:
        fail(f"{tool} not found: run scripts/install-test-deps.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    fail(f"{name} did not listen on {port}")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


class Tiers:
    def __init__(self, args):
        self.tmp = tempfile.mkdtemp(prefix="strata-ll-players.")
        self.procs = []
        self.log = open(os.path.join(self.tmp, "strata.log"), "w")
        http, admin, rtmp, srt = free_port(), free_port(), free_port(), free_port()
        store = f'[store]\ntarget_duration = "2s"\npart_target = "{args.part_target}"\n'
        if args.part_hold_back:
            store += f'part_hold_back = "{args.part_hold_back}"\n'
        if args.no_tune_in:
            store += "fresh_tune_in = false\n"
        origin_toml = self.write("origin.toml",
            f'[server]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n'
            f'[ingest]\nrtmp_listen = "127.0.0.1:{rtmp}"\nsrt_listen = "127.0.0.1:{srt}"\n'
            f"allow_anonymous = true\n{store}")
        self.origin = f"http://127.0.0.1:{http}"
        self.rtmp = rtmp
        self.spawn("origin", ["origin", "--config", origin_toml], http)
        shield, shield_admin = free_port(), free_port()
        self.spawn("shield", ["edge", "--listen", f"127.0.0.1:{shield}", "--admin",
                              f"127.0.0.1:{shield_admin}", "--upstream", self.origin,
                              "--node-id", "ll-shield"], shield)
        edge, edge_admin = free_port(), free_port()
        if args.h1:
            self.spawn("edge", ["edge", "--listen", f"127.0.0.1:{edge}", "--admin",
                                f"127.0.0.1:{edge_admin}", "--upstream",
                                f"http://127.0.0.1:{shield}", "--node-id", "ll-edge"], edge)
            self.edge = f"http://127.0.0.1:{edge}"
        else:
            cert, key = os.path.join(self.tmp, "edge.pem"), os.path.join(self.tmp, "edge.key")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", key, "-out", cert],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            plain = free_port()
            edge_toml = self.write("edge.toml",
                f'[server]\nlisten = ["127.0.0.1:{plain}"]\ntls_listen = ["127.0.0.1:{edge}"]\n'
                f'admin = "127.0.0.1:{edge_admin}"\n'
                f'certificates = [{{ cert = "{cert}", key = "{key}" }}]\n'
                f'[server.h3]\nenabled = false\n'
                f'[upstream]\nurls = ["http://127.0.0.1:{shield}"]\n')
            self.spawn("edge", ["edge", "--config", edge_toml, "--node-id", "ll-edge"], edge)
            self.edge = f"https://127.0.0.1:{edge}"

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def spawn(self, name, argv, port):
        proc = subprocess.Popen([STRATA] + argv, stdout=self.log, stderr=self.log)
        self.procs.append(proc)
        wait_port(port, proc, f"strata {name}")

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        if os.environ.get("LL_PLAYERS_KEEP"):
            print(f"ll_players: logs and configs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def publish(rtmp, channel):
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
         "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
         "-c:a", "aac", "-b:a", "96k",
         "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/{channel}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pdt_edge(text):
    """Wall clock (s) of a media playlist's live edge by its own dates: the
    last segment's PROGRAM-DATE-TIME plus its EXTINF plus the parts listed
    after it (the open segment's)."""
    pdt = extinf = None
    open_parts = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            stamp = datetime.datetime.strptime(line.split(":", 1)[1], "%Y-%m-%dT%H:%M:%S.%fZ")
            pdt = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        elif line.startswith("#EXTINF:"):
            extinf = float(line[len("#EXTINF:"):].split(",")[0])
        elif line.startswith("#EXT-X-PART:"):
            open_parts += float(re.search(r"DURATION=([0-9.]+)", line).group(1))
        elif line and not line.startswith("#"):
            open_parts = 0.0
    if pdt is None or extinf is None:
        return None
    return pdt + extinf + open_parts


def origin_lead(origin, channel, count=8):
    """How far the origin's PROGRAM-DATE-TIME runs ahead of its own clock:
    blocking reloads for the next part, straight at the origin, answered as
    the part is cut (the moment the media it ends with has arrived); per
    answer, the date of the edge minus the time it came. Returns the leads."""
    url = f"{origin}/live/{channel}/main/video.m3u8"
    text = get(url)[1]
    leads = []
    for _ in range(count):
        hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="video/(\d+)\.(\d+)\.m4s"', text)
        if not hint:
            break
        status, text = get(f"{url}?_HLS_msn={hint.group(1)}&_HLS_part={hint.group(2)}")
        came = time.time()
        edge = pdt_edge(text) if status == 200 else None
        if edge is not None:
            leads.append(edge - came)
    return leads


def start_chain(trace, part_hold_back):
    """hls.js's start from its --ll-trace: the first playlist's content age
    (its edge's date lead under the steady lead of blocking reloads), the
    time from that playlist to the first frame, and the part requests between."""
    if not trace or not trace.get("playing"):
        return None
    video = [l for l in trace["loads"] if l["type"] == "video" and l["lead"] is not None]
    if not video:
        return None
    first = video[0]
    steady = [l["lead"] for l in video[1:] if l["asked"]]
    if not steady:
        return None
    lead = statistics.median(steady)
    before = [f for f in trace["frags"] if f["loaded"] and f["loaded"] <= trace["playing"]]
    vparts = [f for f in before if f["type"] == "main"]
    aparts = [f for f in before if f["type"] == "audio"]
    return {
        "target": part_hold_back,
        "first_age": lead - first["lead"],
        "to_playing": (trace["playing"] - first["first"]) / 1000,
        "video_requests": len(vparts),
        "audio_requests": len(aparts),
        "first_video_request": (min(f["requested"] for f in vparts) - first["first"]) / 1000 if vparts else None,
        "last_video_in": (max(f["loaded"] for f in vparts) - first["first"]) / 1000 if vparts else None,
        "last_audio_in": (max(f["loaded"] for f in aparts) - first["first"]) / 1000 if aparts else None,
        "lead": lead,
        "lead_spread": (min(steady), max(steady)),
        "start_position": trace.get("startPosition"),
        "first_edge": first["edge"],
    }


def play(player, url, seconds, h1):
    argv = ["node", "play.mjs", "--player", player, "--url", url, "--seconds", str(seconds),
            "--timeout", str(seconds + 40)]
    if player == "hls":
        argv.append("--ll-trace")
    if not h1:
        argv.append("--insecure-tls")
    env = dict(os.environ, STRATA_CHROMIUM=os.environ.get("STRATA_CHROMIUM", "/usr/bin/chromium"))
    out = subprocess.run(argv, cwd=BROWSER, env=env, capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        fail(f"play.mjs {player} gave no report: {out.stdout[-500:]} {out.stderr[-1500:]}")


def fmt(lat):
    if not lat:
        return "-"
    return f"{lat['min']:.2f} / {lat['mean']:.2f} / {lat['max']:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--part-target", default="0.5s")
    ap.add_argument("--part-hold-back", default=None)
    ap.add_argument("--players", default="hls,dash")
    ap.add_argument("--h1", action="store_true")
    ap.add_argument("--no-tune-in", action="store_true",
                    help="store.fresh_tune_in = false: first playlists answered at once")
    ap.add_argument("--json", default=None, help="write every report (hls.js traces too) here")
    args = ap.parse_args()
    for tool in ("ffmpeg", "node", "openssl"):
        need(tool)
    if not os.path.exists(STRATA):
        print("ll_players: building release strata (takes minutes) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "strata"], cwd=ROOT, check=True)
    tiers = Tiers(args)
    rows = []
    chains = []
    reports = []
    try:
        for run in range(1, args.runs + 1):
            channel = f"ll{run}"
            pub = publish(tiers.rtmp, channel)
            deadline = time.time() + 30
            while "#EXT-X-PRELOAD-HINT" not in get(f"{tiers.origin}/live/{channel}/main/video.m3u8")[1]:
                if time.time() > deadline or pub.poll() is not None:
                    fail(f"no LL playlist for {channel} (log: {tiers.tmp}/strata.log)")
                time.sleep(0.2)
            leads = origin_lead(tiers.origin, channel)
            lead = statistics.median(leads) if leads else None
            if leads:
                print(f"run {run}: origin PROGRAM-DATE-TIME lead over its clock "
                      f"{min(leads):.3f} / {lead:.3f} / {max(leads):.3f} s (min / median / max, "
                      f"{len(leads)} blocking reloads)", flush=True)
            for player in args.players.split(","):
                manifest = "master.m3u8" if player == "hls" else "manifest.mpd"
                load = os.getloadavg()[0]
                r = play(player, f"{tiers.edge}/live/{channel}/{manifest}", args.seconds, args.h1)
                wall = r.get("wallLatency")
                # now - PDT, plus the lead of PDT over the arrival clock: now
                # minus when the frame on screen reached the origin.
                arrival = (f"{wall['mean'] + lead:.2f}" if wall and lead is not None and player == "hls"
                           else "-")
                row = (run, player, load, fmt(r.get("playerLatency")), fmt(wall), arrival,
                       f"{lead:.2f}" if lead is not None else "-", r.get("stalls"), r.get("ok"))
                rows.append(row)
                reports.append({"run": run, "load": load, "origin_leads": leads, **r})
                print(f"run {run} {player}: load {load:.1f}, latency {row[3]} s, "
                      f"from ingest clock (PDT) {row[4]} s, from arrival {arrival} s, "
                      f"stalls {row[7]}, ok {row[8]}", flush=True)
                chain = start_chain(r.get("trace"), None) if player == "hls" else None
                if chain:
                    hold = next((l["partHoldBack"] for l in r["trace"]["loads"] if l.get("partHoldBack")), 0)
                    chain["target"] = hold
                    chains.append((run, load, chain, r.get("playerLatency")))
                    print(f"  start: PART-HOLD-BACK {hold:.2f} + first playlist's age "
                          f"{chain['first_age']:.2f} + playlist to first frame {chain['to_playing']:.2f} "
                          f"= {hold + chain['first_age'] + chain['to_playing']:.2f} s; "
                          f"{chain['video_requests']} video / {chain['audio_requests']} audio loads "
                          f"before it (first video asked +{chain['first_video_request']:.2f} s, "
                          f"last video in +{chain['last_video_in']:.2f} s, last audio in "
                          f"+{(chain['last_audio_in'] or 0):.2f} s); hls.js lead of PDT over "
                          f"arrival {chain['lead']:.2f} s", flush=True)
                if not r.get("ok"):
                    print(f"  errors: {r.get('errors')}", flush=True)
            pub.terminate()
            pub.wait()
    finally:
        tiers.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(reports, f)
    proto = "h1" if args.h1 else "h2 (TLS)"
    print(f"\nll_players: part_target {args.part_target}, part_hold_back "
          f"{args.part_hold_back or 'default'}, fresh_tune_in {not args.no_tune_in}, shield + edge, {proto}, {args.seconds} s per player, "
          f"binary {STRATA}")
    print("| run | player | load avg | latency min / mean / max s | from ingest clock (PDT) s "
          "| from arrival at the origin, mean s | PDT lead s | stalls |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run, player, load, lat, wall, arrival, lead, stalls, _ in rows:
        print(f"| {run} | {player} | {load:.1f} | {lat} | {wall} | {arrival} | {lead} | {stalls} |")
    if chains:
        print("\n| run | load avg | PART-HOLD-BACK | + first playlist's age | + playlist to first frame "
              "| = start latency | hls.js `latency` mean | video / audio loads before the first frame |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for run, load, c, lat in chains:
            total = c["target"] + c["first_age"] + c["to_playing"]
            print(f"| {run} | {load:.1f} | {c['target']:.2f} | {c['first_age']:.2f} | {c['to_playing']:.2f} "
                  f"| {total:.2f} | {lat['mean'] if lat else '-'} | {c['video_requests']} / {c['audio_requests']} |")
    bad = [r for r in rows if not r[8]]
    if bad:
        fail(f"{len(bad)} playback(s) failed")


if __name__ == "__main__":
    main()
