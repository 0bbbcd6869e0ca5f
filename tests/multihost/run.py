#!/usr/bin/env python3
"""A real multi-host run: Ansible deploys a Strata fleet over SSH into network
namespaces, then rolls it to a new build while a live channel plays.

Hosts are network namespaces on this machine (`ip netns`), each with a veth
to a bridge in the root namespace (10.77.K.0/24, K picked per run) and its
own sshd (a throwaway host key and client key per run, root login by key
only), so Ansible reaches every host over real SSH with its normal remote
path. Namespaces share the filesystem, so each host gets its own prefix.

    origin-a  origin-b         an origin pair (README "Redundant origins")
        \\        /
        shield-1 (+ nats-server: the fleet control plane)
        /        \\
    edge-1      edge-2         players and a client loop fetch through both

The publisher (ffmpeg: test pattern and tone, real time) runs in the root
namespace: one encoder, and for each origin a forwarder (`-copyts`, so a
forwarder that reconnects after its origin restarted carries on the same
media timeline) in a reconnect loop, like an encoder's auto-reconnect.

Then, while hls.js in headless Chromium (tests/browser/play.mjs) plays
through edge-1 and a client loop fetches playlists and segments through
both edges:

  1. ansible/upgrade.yml rolls every node to a NEW build (the same binary
     with a build marker appended: another file, another sha256), one at a
     time, origins → shield → edges. Asserted: the play succeeds, every node
     runs a new pid whose /proc/PID/exe hashes to the new file.
  2. The rollback path: upgrade.yml on edge-2 with a broken binary (passes
     `strata check` and `--version`, dies when run as a node). Asserted: the
     play fails for that host, which keeps serving on the previous binary.

Through both: zero failed requests in the client loop and zero player
errors. Prints per-host upgrade durations (benches/README.md has a run).

Needs root, iproute2, openssh-server, ffmpeg, Chromium, Node and the .venv
(ansible-core): scripts/install-test-deps.sh installs them.

    sudo python3 tests/multihost/run.py --bin target/debug/strata [--play-seconds 300]
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv")
CHANNEL = "mh"
HOSTS = [
    # name, group, strata_role
    ("origin-a", "origin", "origin"),
    ("origin-b", "origin", "origin"),
    ("shield-1", "shield", "edge"),
    ("edge-1", "edge", "edge"),
    ("edge-2", "edge", "edge"),
]
NATS_HOST = "shield-1"


def log(msg):
    print(f"multihost: {msg}", flush=True)


def die(msg):
    print(f"multihost: FAIL: {msg}", flush=True)
    sys.exit(1)


def sh(*args, check=True, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def need_tools(player):
    hint = "run scripts/install-test-deps.sh (as root) to install it"
    missing = []
    if os.geteuid() != 0:
        die("needs root (ip netns, sshd per namespace): run it as root")
    for tool, pkg in [("ip", "iproute2"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
                      ("ffmpeg", "ffmpeg"), ("setsid", "util-linux")]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt: {pkg})")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        missing.append("/usr/sbin/sshd (apt: openssh-server)")
    if not os.access("/usr/sbin/nats-server", os.X_OK):
        missing.append("/usr/sbin/nats-server (apt: nats-server)")
    for tool in ("ansible-playbook",):
        if not os.access(os.path.join(VENV, "bin", tool), os.X_OK):
            missing.append(f".venv/bin/{tool} (pip: ansible-core)")
    if player == "hls":
        if not os.access(os.environ.get("STRATA_CHROMIUM", "/usr/bin/chromium"), os.X_OK):
            missing.append("chromium (apt: chromium)")
        if node_bin() is None:
            missing.append("node >= 20")
        if not os.path.isdir(os.path.join(ROOT, "tests/browser/node_modules/hls.js")):
            missing.append("tests/browser/node_modules (npm ci)")
    if missing:
        die(f"missing: {', '.join(missing)}; {hint}")


def node_bin():
    local = os.path.join(VENV, "node/bin/node")
    if os.access(local, os.X_OK):
        return local
    return shutil.which("node")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Fleet:
    """Namespaces, the bridge, and an sshd in each namespace; all removed on exit."""

    def __init__(self, work):
        self.work = work
        self.id = secrets.token_hex(2)
        self.subnet = self.free_subnet()
        self.bridge = f"mhbr{self.id}"
        self.hosts = {}  # name -> dict(ns, ip, prefix)
        self.procs = []
        self.created_ns, self.created_links = [], []

    @staticmethod
    def free_subnet():
        routes = sh("ip", "-4", "route").stdout
        for _ in range(50):
            k = random.randint(1, 254)
            if f"10.77.{k}." not in routes:
                return f"10.77.{k}"
        raise RuntimeError("no free 10.77.K.0/24 subnet")

    def up(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.created_links.append(self.bridge)
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for n, (name, _, _) in enumerate(HOSTS, start=1):
            ns = f"smh{self.id}-{name}"
            host_if, ns_if = f"mh{self.id}{n}h", f"mh{self.id}{n}n"
            ip = f"{self.subnet}.{10 + n}"
            sh("ip", "netns", "add", ns)
            self.created_ns.append(ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            self.created_links.append(host_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("ip", "link", "set", host_if, "master", self.bridge)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", ns_if)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            prefix = os.path.join(self.work, "hosts", name)
            os.makedirs(prefix)
            self.hosts[name] = {"ns": ns, "ip": ip, "prefix": prefix}
        log(f"network up: bridge {self.bridge} {self.subnet}.1/24, "
            + ", ".join(f"{n}={h['ip']}" for n, h in self.hosts.items()))

    def start_sshd(self):
        ssh_dir = os.path.join(self.work, "ssh")
        os.makedirs(ssh_dir, mode=0o700)
        self.client_key = os.path.join(ssh_dir, "client")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"multihost-{self.id}", "-f", self.client_key)
        host_key = os.path.join(ssh_dir, "host")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"multihost-host-{self.id}", "-f", host_key)
        authorized = os.path.join(ssh_dir, "authorized_keys")
        shutil.copy(self.client_key + ".pub", authorized)
        os.chmod(authorized, 0o600)
        self.known_hosts = os.path.join(ssh_dir, "known_hosts")
        host_pub = open(host_key + ".pub").read().split()
        with open(self.known_hosts, "w") as f:
            for h in self.hosts.values():
                f.write(f"{h['ip']} {host_pub[0]} {host_pub[1]}\n")
        # sshd's privilege separation directory (Debian creates it at service start).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for name, h in self.hosts.items():
            config = os.path.join(ssh_dir, f"sshd-{name}.conf")
            with open(config, "w") as f:
                f.write(
                    f"ListenAddress {h['ip']}:22\n"
                    f"HostKey {host_key}\n"
                    f"PidFile {ssh_dir}/sshd-{name}.pid\n"
                    f"AuthorizedKeysFile {authorized}\n"
                    "PermitRootLogin prohibit-password\n"
                    "PubkeyAuthentication yes\n"
                    "PasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\n"
                    "UsePAM no\n"
                    # The per-run key files live under /tmp (mode 1777), which
                    # StrictModes would refuse as a path to authorized keys.
                    "StrictModes no\n"
                    "Subsystem sftp /usr/lib/openssh/sftp-server\n"
                    "MaxStartups 50:30:100\n"
                    "LogLevel ERROR\n"
                )
            self.spawn(name, ["/usr/sbin/sshd", "-D", "-e", "-f", config], f"sshd-{name}.log")
        for name, h in self.hosts.items():
            wait_port(h["ip"], 22, f"sshd on {name}")

    def spawn(self, host, args, logname):
        ns = self.hosts[host]["ns"] if host else None
        cmd = (["ip", "netns", "exec", ns] if ns else []) + args
        p = subprocess.Popen(cmd, stdout=open(os.path.join(self.work, logname), "ab"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def down(self):
        # Everything running inside our namespaces is ours (sshd and what
        # Ansible started over it); then the processes started here.
        for ns in self.created_ns:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for ns in self.created_ns:
            sh("ip", "netns", "del", ns, check=False)
        for link in self.created_links:
            sh("ip", "link", "del", link, check=False)


def wait_port(host, port, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} ({host}:{port}) never came up: {e}")
            time.sleep(0.1)


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def write_inventory(fleet, binary, nats_secret, edge_pid_flag, upgrade_timeout):
    """The fleet as an Ansible inventory (JSON is YAML)."""
    h = fleet.hosts
    ssh_args = (f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes -o ConnectTimeout=10")
    members = lambda group: {n: {"ansible_host": h[n]["ip"], "strata_prefix": h[n]["prefix"]}
                             for n, g, _ in HOSTS if g == group}
    urls = lambda names, port: [f"http://{h[n]['ip']}:{port}" for n in names]
    fleet_vars = {
        "strata_role": "edge",
        "strata_admin": "0.0.0.0:9091",
        "strata_cache_size": "256MiB",
        "strata_fleet_nats": f"nats://{h[NATS_HOST]['ip']}:4222",
        "strata_fleet_secret": nats_secret,
        "strata_fleet_state_file": "{{ strata_prefix }}/state/fleet-state.json",
        # The old edge process drains for this long after handing over.
        "strata_drain_timeout": "5s",
    }
    inventory = {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": fleet.client_key,
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            "strata_become": False,
            "strata_user": "",
            "strata_service_manager": "process",
            "strata_binary_src": binary,
            "strata_edge_pid_flag": edge_pid_flag,
            "strata_upgrade_timeout": upgrade_timeout,
            # A restarting origin is unreachable from the shield until it
            # serves the channel again (its 404s would reach players).
            "strata_origin_fence": "route",
        },
        "children": {
            "origin": {"hosts": members("origin"), "vars": {
                "strata_role": "origin",
                "strata_origin_http": "0.0.0.0:8081",
                "strata_origin_admin": "0.0.0.0:9092",
                "strata_allow_anonymous": True,
                "strata_gate_channels": [CHANNEL],
            }},
            "shield": {"hosts": members("shield"),
                       "vars": dict(fleet_vars, strata_upstreams=urls(["origin-a", "origin-b"], 8081))},
            "edge": {"hosts": members("edge"),
                     "vars": dict(fleet_vars, strata_upstreams=urls(["shield-1"], 8080))},
            "nats": {"hosts": {NATS_HOST: {}}, "vars": {
                "nats_install_package": False,
                "nats_service_manager": "process",
                "nats_become": False,
                "nats_prefix": f"{h[NATS_HOST]['prefix']}/nats",
            }},
        },
    }}
    path = os.path.join(fleet.work, "inventory.yml")
    with open(path, "w") as f:
        json.dump(inventory, f, indent=1)
    return path


def ansible(fleet, inventory, playbook, *extra, logname):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(fleet.work, "cp"),
        "ANSIBLE_LOCAL_TEMP": os.path.join(fleet.work, "ansible-local"),
        "ANSIBLE_REMOTE_TMP": os.path.join(fleet.work, "ansible-remote"),
        "ANSIBLE_FORKS": "5",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # Modules piped over the SSH session rather than copied first (as
        # production setups run it); files still go over SFTP.
        "ANSIBLE_PIPELINING": "True",
        "PATH": os.path.join(VENV, "bin") + ":" + env.get("PATH", ""),
    })
    out = os.path.join(fleet.work, logname)
    started = time.monotonic()
    with open(out, "w") as f:
        rc = subprocess.run([os.path.join(VENV, "bin/ansible-playbook"), "-i", inventory, playbook, *extra],
                            cwd=os.path.join(ROOT, "ansible"), env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    text = open(out).read()
    return rc, text, time.monotonic() - started


class Publisher:
    """One encoder; per origin, a forwarder that reconnects when its origin goes away."""

    def __init__(self, fleet):
        self.fleet, self.stop = fleet, threading.Event()
        self.ports = []
        for _ in range(2):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                self.ports.append(s.getsockname()[1])
        self.restarts = {"origin-a": 0, "origin-b": 0}
        self.threads = []

    def start(self):
        outputs = "|".join(f"[f=mpegts:onfail=ignore]udp://127.0.0.1:{p}?pkt_size=1316" for p in self.ports)
        for (name, port) in zip(("origin-a", "origin-b"), self.ports):
            t = threading.Thread(target=self.forward, args=(name, port), daemon=True)
            t.start()
            self.threads.append(t)
        time.sleep(0.5)
        self.encoder = self.fleet.spawn(None, [
            "ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "64k",
            "-f", "tee", outputs,
        ], "encoder.log")

    def forward(self, origin, port):
        url = f"rtmp://{self.fleet.hosts[origin]['ip']}:1935/live/{CHANNEL}"
        first = True
        while not self.stop.is_set():
            if not first:
                self.restarts[origin] += 1
            first = False
            p = self.fleet.spawn(None, [
                "ffmpeg", "-hide_banner", "-nostats", "-v", "error",
                "-fflags", "+genpts", "-probesize", "400000", "-analyzeduration", "1000000",
                "-copyts", "-i", f"udp://127.0.0.1:{port}?fifo_size=100000&overrun_nonfatal=1",
                "-map", "0:v", "-map", "0:a", "-c", "copy", "-f", "flv", url,
            ], f"forward-{origin}.log")
            while p.poll() is None and not self.stop.is_set():
                time.sleep(0.1)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            self.stop.wait(0.3)


class ClientLoop(threading.Thread):
    """Through one edge, again and again: the multivariant playlist, the first
    media playlist, its init segment and its newest two segments."""

    def __init__(self, name, base):
        super().__init__(daemon=True)
        self.name_, self.base = name, base
        self.stop = threading.Event()
        self.ok, self.failed, self.failures = 0, 0, []

    def get(self, url):
        try:
            status, body = http_get(url)
            if status == 200:
                self.ok += 1
                return body
            err = f"status {status}"
        except urllib.error.HTTPError as e:
            err = f"status {e.code}"
        except Exception as e:  # noqa: BLE001 — every failure counts
            err = f"{type(e).__name__}: {e}"
        self.failed += 1
        self.failures.append((time.strftime("%H:%M:%S"), url, err))
        return None

    def run(self):
        while not self.stop.is_set():
            master = self.get(f"{self.base}/live/{CHANNEL}/master.m3u8")
            if master:
                uris = [l for l in master.decode().splitlines() if l and not l.startswith("#")]
                if uris:
                    media_url = urllib.parse.urljoin(f"{self.base}/live/{CHANNEL}/master.m3u8", uris[0])
                    media = self.get(media_url)
                    if media:
                        text = media.decode()
                        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
                        segs = [l for l in text.splitlines() if l and not l.startswith("#")]
                        for u in ([init.group(1)] if init else []) + segs[-2:]:
                            self.get(urllib.parse.urljoin(media_url, u))
            self.stop.wait(0.25)


class PlayerLoop(threading.Thread):
    """hls.js in headless Chromium through one edge, one play of `seconds`
    after another until stopped: every play's report is kept."""

    def __init__(self, fleet, url, seconds):
        super().__init__(daemon=True)
        self.fleet, self.url, self.seconds, self.work = fleet, url, seconds, fleet.work
        self.stop, self.reports, self.proc = threading.Event(), [], None

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            self.proc = subprocess.Popen(
                [node_bin(), os.path.join(ROOT, "tests/browser/play.mjs"), "--player", "hls",
                 "--url", self.url, "--seconds", str(self.seconds), "--timeout", str(self.seconds + 60)],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.work, f"player-{n}.log"), "wb"),
                text=True, start_new_session=True)
            self.fleet.procs.append(self.proc)
            stdout, _ = self.proc.communicate()
            lines = stdout.strip().splitlines()
            try:
                self.reports.append(json.loads(lines[-1]))
            except (IndexError, json.JSONDecodeError):
                self.reports.append({"ok": False, "errors": [f"no report (exit {self.proc.returncode})"]})


class Watch(threading.Thread):
    """Per host, from the shared filesystem: when the new binary was copied
    in, when a new pid running it appeared, when the old pid was gone."""

    def __init__(self, fleet, new_sha):
        super().__init__(daemon=True)
        self.fleet, self.new_sha, self.stop = fleet, new_sha, threading.Event()
        self.t = {name: {} for name in fleet.hosts}
        self.first_pid = {name: read_pid(fleet, name) for name in fleet.hosts}

    def run(self):
        while not self.stop.is_set():
            now = time.monotonic()
            for name, h in self.fleet.hosts.items():
                t = self.t[name]
                if "copied" not in t and os.path.exists(os.path.join(h["prefix"], "bin/strata.new")):
                    t["copied"] = now
                pid = read_pid(self.fleet, name)
                if "new_pid" not in t and pid and pid != self.first_pid[name] and exe_sha(pid) == self.new_sha:
                    t["new_pid"] = now
                if "old_gone" not in t and not os.path.exists(f"/proc/{self.first_pid[name]}"):
                    t["old_gone"] = now
            time.sleep(0.05)


def role_of(name):
    return next(role for n, _, role in HOSTS if n == name)


def read_pid(fleet, name):
    path = os.path.join(fleet.hosts[name]["prefix"], "run", f"strata-{role_of(name)}.pid")
    try:
        pid = open(path).read().strip()
    except OSError:
        return None
    return pid if pid and os.path.exists(f"/proc/{pid}/exe") else None


def exe_sha(pid):
    try:
        return sha256(f"/proc/{pid}/exe")
    except OSError:
        return None


def wait_playing(base, timeout=60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            _, master = http_get(f"{base}/live/{CHANNEL}/master.m3u8", timeout=3)
            uri = next(l for l in master.decode().splitlines() if l and not l.startswith("#"))
            _, media = http_get(urllib.parse.urljoin(f"{base}/live/{CHANNEL}/master.m3u8", uri), timeout=3)
            if media.decode().count("#EXTINF") >= 3:
                return
            last = "fewer than 3 segments"
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"{base}: the channel never played ({last})")


def check_fleet_engine(fleet, when, timeout=20):
    """Shield and edges are connected to nats-server (the fleet control plane)."""
    for name, group, _ in HOSTS:
        if group == "origin":
            continue
        url = f"http://{fleet.hosts[name]['ip']}:9091/metrics"
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                m = re.search(r"^strata_fleet_engine_connected(?:\{[^}]*\})? (\S+)$",
                              http_get(url, timeout=3)[1].decode(), re.M)
                value = m and float(m.group(1))
            except Exception as e:  # noqa: BLE001
                value = e
            if value == 1:
                break
            time.sleep(0.5)
        assert value == 1, f"{name} {when}: not connected to nats-server (strata_fleet_engine_connected: {value})"
    log(f"{when}: shield and edges connected to nats-server on {NATS_HOST}")


def broken_binary(work, real):
    """Passes `check` and `--version` (so it is installed), dies as a node."""
    path = os.path.join(work, "strata-broken")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\ncase "$1" in check|--version) exec {real} "$@";; esac\n'
                'echo "strata-broken: refusing to run $1" >&2\nexit 1\n')
    os.chmod(path, 0o755)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/debug/strata"), help="strata binary to deploy")
    ap.add_argument("--new-bin", help="the build to upgrade to (default: --bin with a build marker appended)")
    ap.add_argument("--player", choices=["hls", "none"], default="hls", help="hls.js in headless Chromium, or none")
    ap.add_argument("--play-seconds", type=int, default=60,
                    help="length of each play; plays follow one another until the upgrades are done")
    ap.add_argument("--upgrade-timeout", type=int, default=40,
                    help="seconds a node has to take over and pass /readyz (strata_upgrade_timeout)")
    ap.add_argument("--no-rollback", action="store_true", help="skip the broken-binary run")
    ap.add_argument("--rollback-host", default="edge-2", choices=[n for n, _, _ in HOSTS],
                    help="the node that gets the broken binary")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) after a pass")
    args = ap.parse_args()

    need_tools(args.player)
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        die(f"{binary} is not an executable strata binary (cargo build first)")
    work = tempfile.mkdtemp(prefix="strata-mh-")
    os.chmod(work, 0o755)
    fleet = Fleet(work)
    failed = True

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(args, fleet, binary)
        failed = False
    except (RuntimeError, AssertionError) as e:
        print(f"multihost: FAIL: {e}", flush=True)
    finally:
        fleet.down()
        if failed or args.keep:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


def run(args, fleet, binary):
    work = fleet.work
    # The new build: another file (another sha256) that runs the same code,
    # unless one is given.
    new_bin = os.path.join(work, "strata-new")
    if args.new_bin:
        shutil.copy(args.new_bin, new_bin)
    else:
        shutil.copy(binary, new_bin)
        with open(new_bin, "ab") as f:
            f.write(f"\nstrata-multihost-build {fleet.id} {time.time()}\n".encode())
    os.chmod(new_bin, 0o755)
    old_sha, new_sha = sha256(binary), sha256(new_bin)
    assert old_sha != new_sha, "the new build must differ from the deployed one"
    help_text = sh(binary, "edge", "--help").stdout
    edge_pid_flag = "--pid-file" in help_text
    if not edge_pid_flag:
        die("this strata binary has no `edge --pid-file` (socket handover, issue 12): build the branch that has it")

    fleet.up()
    fleet.start_sshd()
    inventory = write_inventory(fleet, binary, secrets.token_hex(32), edge_pid_flag, args.upgrade_timeout)

    log("deploying (ansible/site.yml over SSH)")
    rc, out, took = ansible(fleet, inventory, "site.yml", logname="site.log")
    if rc != 0:
        raise RuntimeError(f"site.yml failed (rc {rc}):\n{tail(out)}")
    log(f"deployed in {took:.1f} s")
    for name in fleet.hosts:
        pid = read_pid(fleet, name)
        assert pid and exe_sha(pid) == old_sha, f"{name}: not running the deployed binary (pid {pid})"

    check_fleet_engine(fleet, "after the deployment")

    publisher = Publisher(fleet)
    publisher.start()
    edges = {n: f"http://{fleet.hosts[n]['ip']}:8080" for n in ("edge-1", "edge-2")}
    for base in edges.values():
        wait_playing(base)
    log("the channel plays through both edges")

    loops = [ClientLoop(n, base) for n, base in edges.items()]
    for loop in loops:
        loop.start()
    player = None
    if args.player == "hls":
        player = PlayerLoop(fleet, f"{edges['edge-1']}/live/{CHANNEL}/master.m3u8", args.play_seconds)
        player.start()
        time.sleep(15)  # the first play starts and buffers before anything changes

    log("rolling upgrade to the new build (ansible/upgrade.yml)")
    watch = Watch(fleet, new_sha)
    watch.start()
    rc, out, took = ansible(fleet, inventory, "upgrade.yml", "-e", f"strata_new_binary_src={new_bin}",
                            logname="upgrade.log")
    watch.stop.set()
    if rc != 0:
        raise RuntimeError(f"upgrade.yml failed (rc {rc}):\n{tail(out)}")
    log(f"rolling upgrade done in {took:.1f} s")
    pids = {}
    for name in fleet.hosts:
        pid = read_pid(fleet, name)
        assert pid, f"{name}: no live strata process after the upgrade"
        assert pid != watch.first_pid[name], f"{name}: still the old pid {pid}"
        assert exe_sha(pid) == new_sha, f"{name}: pid {pid} does not run the new build"
        version = sh(f"/proc/{pid}/exe", "--version").stdout.strip()
        pids[name] = pid
        log(f"{name}: pid {watch.first_pid[name]} -> {pid}, /proc/{pid}/exe = new build ({version})")
    check_fleet_engine(fleet, "after the rollout")
    for name in fleet.hosts:
        t = watch.t[name]
        took_pid = t["new_pid"] - t["copied"] if "new_pid" in t and "copied" in t else None
        old_gone = t["old_gone"] - t["new_pid"] if "old_gone" in t and "new_pid" in t else None
        log(f"{name}: new binary copied -> new pid serving {fmt(took_pid)}, old pid gone {fmt(old_gone)} later")

    if not args.no_rollback:
        victim = args.rollback_host
        log(f"rollback path: {victim} to a broken binary")
        broken = broken_binary(work, new_bin)
        rc, out, took = ansible(fleet, inventory, "upgrade.yml", "--limit", victim,
                                "-e", f"strata_new_binary_src={broken}", logname="rollback.log")
        assert rc != 0, "upgrade.yml with a broken binary must fail the play"
        assert "rolled back to the previous binary" in out, f"no rollback in the play:\n{tail(out)}"
        pid = read_pid(fleet, victim)
        assert pid and exe_sha(pid) == new_sha, f"{victim} does not serve the previous (good) binary: pid {pid}"
        assert sha256(os.path.join(fleet.hosts[victim]["prefix"], "bin/strata")) == new_sha, \
            f"{victim}'s installed binary is not the good one again"
        log(f"rollback: the play failed for {victim} as it should ({took:.1f} s); "
            f"{victim} serves pid {pid} on the good build")

    # The player finishes its play and the loops go on meanwhile; the
    # publisher stops last (a stream that ends would stall the player).
    time.sleep(5)
    reports = []
    if player is not None:
        player.stop.set()
        log("waiting for the player's last play to finish")
        player.join()
        reports = player.reports
    for loop in loops:
        loop.stop.set()
    for loop in loops:
        loop.join()
    publisher.stop.set()
    total_ok = sum(l.ok for l in loops)
    total_failed = sum(l.failed for l in loops)
    for l in loops:
        log(f"client loop via {l.name_}: {l.ok} ok, {l.failed} failed")
        for when, url, err in l.failures[:10]:
            log(f"   {when} {url}: {err}")
    log(f"publisher reconnects: {publisher.restarts}")
    for n, report in enumerate(reports, start=1):
        log(f"player play {n} (hls.js via edge-1): ok={report['ok']} advanced={report.get('advanced')} "
            f"stalls={report.get('stalls')} errors={report.get('errors')}")
    assert total_failed == 0, f"{total_failed} failed requests of {total_ok + total_failed}"
    assert total_ok > 0, "the client loop made no request"
    for report in reports:
        assert report["ok"] and not report["errors"], f"player errors: {report}"
    log(f"PASS: {total_ok} requests, 0 failed; every node upgraded to a new pid on the new build")


def fmt(v):
    return "n/a" if v is None else f"{v:.1f} s"


def tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


if __name__ == "__main__":
    main()
