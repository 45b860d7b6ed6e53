#!/usr/bin/env python3
"""The fleet benchmark (issue 18). Standard library only; reuses bench/cluster.py.

Starts one real etcd on loopback and --hosts (default 100) real `tend run` processes, and
measures:
  (1) deploy -> every host converged, with `tend deploy --wait` (p50 / p99 over --deploys);
  (2) a staged rollout `--canary 5 --batch 25%`: total time;
  (3) per idle host: resident memory, etcd watches, etcd CPU;
  (4) the controller's peak memory while waiting (`/usr/bin/time -v` style, from wait4);
  (5) --hosts hosts x --exports exports to `*`, all collected: full convergence.
Prints a markdown table.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import MANY, Etcd, Host, all_converged, pct, print_table, wait  # noqa: E402

HELLO = """import "sys"
$root = sys.getenv("TEND_ROOT")
file "${root}/hello" {
	content => "VERSION\\n",
}
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def write(prog_dir, body):
    os.makedirs(prog_dir, exist_ok=True)
    with open(os.path.join(prog_dir, "main.mcl"), "w") as f:
        f.write(body)
    return prog_dir


def timed(cmd):
    """Runs cmd; returns (seconds, returncode, stderr, peak RSS of the child in MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status), err, ru.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tend", default="target/release/tend")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--deploys", type=int, default=5)
    ap.add_argument("--exports", type=int, default=50)
    ap.add_argument("--etcd-nice", type=int, default=-10,
                    help="etcd's nice value (default -10: as if it had machines of its own)")
    a = ap.parse_args()
    tend = os.path.abspath(a.tend)
    rows = []
    work = tempfile.mkdtemp(prefix="tend-fleet-bench.")
    etcd = Etcd(work, nice=a.etcd_nice if os.geteuid() == 0 else 0)
    hosts = []
    try:
        base_watchers = etcd.metric("etcd_debugging_mvcc_watcher_total") or 0
        t_start = time.perf_counter()
        hosts = [Host(tend, work, f"f{i:03}", etcd.url) for i in range(a.hosts)]
        def registered():
            r = subprocess.run([tend, "world", "--etcd", etcd.url, "hosts", "--json"],
                               capture_output=True, text=True)
            try:
                return len(json.loads(r.stdout)) == a.hosts
            except ValueError:
                return False

        assert wait(registered, 120, 0.2), "hosts did not register"
        rows.append((f"{a.hosts} hosts started and answering", f"{time.perf_counter() - t_start:.1f} s", ""))

        # (1) deploy -> all converged, measured by `tend deploy --wait` itself.
        lat, ctl_rss = [], []
        for k in range(a.deploys):
            prog = write(os.path.join(work, f"d{k}"), HELLO.replace("VERSION", f"v{k}"))
            d, rc, err, rss = timed([tend, "deploy", "--etcd", etcd.url, prog, "--wait", "--timeout", "120"])
            assert rc == 0, err
            assert all(h.read("hello") == f"v{k}\n" for h in hosts)
            lat.append(d)
            ctl_rss.append(rss)
        rows.append((f"(1) deploy -> {a.hosts} hosts converged (`tend deploy --wait`, p50 / p99 of {a.deploys})",
                     f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} s", "includes the check, upload and the command's start"))

        # (3) idle hosts: memory, watches, etcd CPU over 10 s.
        time.sleep(2)
        rss = [h.rss_mb() for h in hosts]
        watchers = (etcd.metric("etcd_debugging_mvcc_watcher_total") or 0) - base_watchers
        c0 = cpu_seconds(etcd.p.pid)
        time.sleep(10)
        etcd_cpu = (cpu_seconds(etcd.p.pid) - c0) / 10.0
        rows.append(("(3) resident memory per idle host (median / max)",
                     f"{statistics.median(rss):.1f} / {max(rss):.1f} MB", "target < 30 MB"))
        rows.append(("(3) etcd watches per host", f"{watchers / a.hosts:.2f}",
                     f"{watchers:.0f} for {a.hosts} hosts; target <= 1"))
        rows.append(("(3) etcd CPU with the fleet idle", f"{etcd_cpu * 100:.1f} % of a core",
                     f"{etcd_cpu * 100 / a.hosts:.3f} % per host (session keep-alives)"))

        # (4) the controller's memory while it waited.
        rows.append(("(4) controller peak RSS during `--wait`", f"{max(ctl_rss):.1f} MB",
                     "peak over the runs (getrusage of the children)"))

        # (2) staged rollout.
        prog = write(os.path.join(work, "staged"), HELLO.replace("VERSION", "staged"))
        d, rc, err, _ = timed([tend, "deploy", "--etcd", etcd.url, prog, "--canary", "5",
                               "--batch", "25%", "--timeout", "120"])
        assert rc == 0, err
        assert all(h.read("hello") == "staged\n" for h in hosts)
        rows.append(("(2) rollout `--canary 5 --batch 25%`: total", f"{d:.2f} s",
                     f"{err.count(': deploy ')} stages, each waited for"))

        # (5) exports.
        want_total = a.hosts * a.exports
        t0 = time.perf_counter()
        prog = write(os.path.join(work, "many"), MANY.replace("EXPORTS", str(a.exports)))
        r = subprocess.run([tend, "deploy", "--etcd", etcd.url, prog], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

        ok = wait(lambda: all_converged(hosts, want_total), 600, 0.5)
        rows.append((f"(5) {a.hosts} hosts x {a.exports} exports to *, all collected: full convergence",
                     f"{time.perf_counter() - t0:.1f} s" + ("" if ok else " (NOT converged)"),
                     f"each host: {want_total} resources"))
        rss = [h.rss_mb() for h in hosts]
        rows.append(("(5) resident memory per host then (median / max)",
                     f"{statistics.median(rss):.1f} / {max(rss):.1f} MB", ""))
    finally:
        for h in hosts:
            h.stop()
        etcd.stop()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)

    print_table("fleet.py", rows)


if __name__ == "__main__":
    main()
