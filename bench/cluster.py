#!/usr/bin/env python3
"""The cluster benchmark (issue 5). Standard library only.

Starts a real etcd on loopback and real `tend run` hosts, drives them with `tend deploy`, and
measures:
  (1) export propagation: h1 deploys a new content for a file it exports to h2; time from
      running `tend deploy` to the file on h2's disk having it (p50, p99 over --changes);
  (2) a deploy converging on three hosts: from `tend deploy` to every host converged on it;
  (3) --hosts hosts (default 20) each exporting --exports (default 50) resources to `*` and
      collecting everyone's: time to full convergence, resident memory per host, and the number
      of etcd watches (etcd's own /metrics), which must not grow with the number of exports.
Prints a markdown table.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait(cond, within=60.0, every=0.002):
    end = time.perf_counter() + within
    while time.perf_counter() < end:
        if cond():
            return True
        time.sleep(every)
    return False


def http(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except Exception:
        return ""


class Etcd:
    def __init__(self, work, nice=0):
        self.port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        # `nice` (negative needs root) gives etcd's threads priority over the hosts: on a real
        # fleet etcd runs on machines of its own, not on the cores of a hundred hosts.
        prefix = ["nice", "-n", str(nice)] if nice else []
        self.p = subprocess.Popen(
            prefix + ["etcd", "--name", "n1", "--data-dir", os.path.join(work, "etcd"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"n1=http://127.0.0.1:{peer}", "--unsafe-no-fsync",
             "--heartbeat-interval", "10", "--election-timeout", "100"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert wait(lambda: '"health":"true"' in http(self.port, "/health").replace(" ", ""), 20), "etcd not healthy"

    def metric(self, name):
        for line in http(self.port, "/metrics").splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self):
        self.p.kill()
        self.p.wait()


class Host:
    def __init__(self, tend, work, name, etcd):
        self.name = name
        self.root = os.path.join(work, name, "root")
        os.makedirs(self.root)
        self.port = free_port()
        self.log = open(os.path.join(work, name, "tend.log"), "w")
        env = dict(os.environ, TEND_ROOT=self.root)
        env.pop("RUST_LOG", None)
        self.p = subprocess.Popen(
            [tend, "run", "--etcd", etcd, "--hostname", name, "--state-dir",
             os.path.join(work, name, "state"), "--listen", f"127.0.0.1:{self.port}",
             "--log-level", "warn"],
            stdout=self.log, stderr=self.log, env=env)

    def read(self, rel):
        try:
            with open(os.path.join(self.root, rel)) as f:
                return f.read()
        except OSError:
            return None

    def rss_mb(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def resources(self):
        try:
            return json.loads(http(self.port, "/v1/resources"))
        except ValueError:
            return {}

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def deploy(tend, etcd, prog_dir, body):
    os.makedirs(prog_dir, exist_ok=True)
    with open(os.path.join(prog_dir, "main.mcl"), "w") as f:
        f.write(body)
    t0 = time.perf_counter()
    r = subprocess.run([tend, "deploy", "--etcd", etcd, prog_dir], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return t0, time.perf_counter() - t0


PROPAGATION = """import "sys"
$root = sys.getenv("TEND_ROOT")
if $hostname == "h1" {
	file "shared" {
		content => "CONTENT\\n",
		Meta:hidden => true,
		Meta:export => ["h2"],
	}
}
if $hostname == "h2" {
	collect file "shared" {
		path => "${root}/shared",
		Meta:hidden => false,
	}
}
file "${root}/hello" {
	content => "VERSION\\n",
}
"""

MANY = """import "fmt"
import "iter"
import "world/collect"
for $i, $v in iter.range(EXPORTS) {
	noop [fmt.printf("%s-%d", $hostname, $v)] {
		Meta:hidden => true,
		Meta:export => ["*"],
	}
}
$others = iter.filter(collect.res("noop"), func($r) {
	$r->host != $hostname
})
collect noop $others {
	Meta:hidden => false,
}
"""


def all_converged(hosts, want_total):
    """Every host converged with exactly want_total resources. Reads each host's /health (a
    few hundred bytes), not its resource list: with thousands of resources per host, polling
    a hundred lists would cost the machine more than the hosts' own work."""
    for h in hosts:
        try:
            d = json.loads(http(h.port, "/health"))["components"]["engine"]["details"]
        except (ValueError, KeyError, TypeError):
            return False
        if not d.get("converged") or d.get("resources") != want_total:
            return False
    return True


def print_table(name, rows):
    """The machine, the command, and rows of (measure, result, notes) as markdown."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.platform()}")
    print(f"Command: bench/{name} {' '.join(sys.argv[1:])}")
    print()
    print("| measure | result | notes |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tend", default="target/release/tend")
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--exports", type=int, default=50)
    a = ap.parse_args()
    tend = os.path.abspath(a.tend)
    rows = []
    work = tempfile.mkdtemp(prefix="tend-cluster-bench.")
    etcd = Etcd(work)
    hosts = []
    try:
        # (1) and (2): three hosts.
        hosts = [Host(tend, work, f"h{i}", etcd.url) for i in (1, 2, 3)]
        lat, deploy_cmd = [], []
        for k in range(a.changes):
            body = PROPAGATION.replace("CONTENT", f"change {k}").replace("VERSION", f"v{k}")
            t0, d = deploy(tend, etcd.url, os.path.join(work, f"prop{k}"), body)
            deploy_cmd.append(d)
            want = f"change {k}\n"
            ok = wait(lambda: hosts[1].read("shared") == want)
            assert ok, (repr(hosts[1].read("shared")), repr(want), time.perf_counter() - t0)
            lat.append(time.perf_counter() - t0)
        rows.append(("(1) export propagation, deploy on h1 -> file on h2 (p50 / p99)",
                     f"{pct(lat, 50)*1000:.0f} / {pct(lat, 99)*1000:.0f} ms",
                     f"{a.changes} changes; `tend deploy` itself (check + upload + commit): "
                     f"p50 {pct(deploy_cmd, 50)*1000:.0f} ms"))
        conv = []
        for k in range(5):
            body = PROPAGATION.replace("CONTENT", "steady").replace("VERSION", f"conv{k}")
            t0, _ = deploy(tend, etcd.url, os.path.join(work, f"conv{k}"), body)
            assert wait(lambda: all(h.read("hello") == f"conv{k}\n" and h.resources().get("converged")
                                    for h in hosts))
            conv.append(time.perf_counter() - t0)
        rows.append(("(2) deploy -> 3 hosts converged (median of 5)",
                     f"{statistics.median(conv)*1000:.0f} ms", ""))
        for h in hosts:
            h.stop()
        hosts = []

        # (3) N hosts x M exports to everyone, each collecting all.
        base_watchers = etcd.metric("etcd_debugging_mvcc_watcher_total") or 0
        hosts = [Host(tend, work, f"m{i}", etcd.url) for i in range(a.hosts)]
        assert wait(lambda: all(h.resources() for h in hosts), 60), "hosts did not come up"
        want_total = (a.hosts - 1) * a.exports + a.exports
        t0, _ = deploy(tend, etcd.url, os.path.join(work, "many"),
                       MANY.replace("EXPORTS", str(a.exports)))

        ok = wait(lambda: all_converged(hosts, want_total), 300, 0.05)
        t_full = time.perf_counter() - t0
        rss = [h.rss_mb() for h in hosts]
        watchers = (etcd.metric("etcd_debugging_mvcc_watcher_total") or 0) - base_watchers
        rows.append((f"(3) {a.hosts} hosts x {a.exports} exports to *, all collected: full convergence",
                     f"{t_full:.2f} s" + ("" if ok else " (NOT converged)"),
                     f"each host: {want_total} resources ({(a.hosts - 1) * a.exports} collected from the others)"))
        rows.append(("(3) resident memory per host (median / max)",
                     f"{statistics.median(rss):.1f} / {max(rss):.1f} MB", ""))
        rows.append(("(3) etcd watches opened by the hosts",
                     f"{watchers:.0f}", f"{a.hosts} hosts, {a.hosts * a.exports} exports: one per host"))
    finally:
        for h in hosts:
            h.stop()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)

    print_table("cluster.py", rows)


if __name__ == "__main__":
    main()
