#!/usr/bin/env python3
"""Drift repair latency of the `user` kind (issue 14).

`tend run` keeps a test user (a unique name) with shell /bin/sh; the script changes the shell
behind tend's back with `usermod -s /bin/bash` RUNS times (and, with --userdel, removes the
user as often), and measures the time from the tool returning to /etc/passwd showing the
user back in state (polled in a tight loop). Prints p50/p90/p99/max. Needs root. The user
and its group are removed at the end, on error too.

    python3 bench/account.py [--tend target/release/tend] [--runs 30] [--userdel]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def shell_of(name):
    with open("/etc/passwd") as f:
        for line in f:
            p = line.rstrip("\n").split(":")
            if p[0] == name:
                return p[6]
    return None


def wait_for(cond, secs, what):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > secs:
            sys.exit(f"account.py: {what} not seen within {secs} s")
    return time.monotonic() - t0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tend", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "tend"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--userdel", action="store_true", help="also measure the repair of a userdel")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("account.py: needs root (it creates and changes a user)")
    name = f"ttbench{os.getpid()}"
    work = tempfile.mkdtemp(prefix="tend-account-bench.")
    prog = os.path.join(work, "user.yaml")
    with open(prog, "w") as f:
        f.write(f"resources:\n  user:\n    - name: {name}\n      shell: /bin/sh\n")
    tend = subprocess.Popen(
        [a.tend, "run", prog, "--listen", "none", "--state-dir", os.path.join(work, "state"), "--log-level", "warn"]
    )
    try:
        wait_for(lambda: shell_of(name) == "/bin/sh", 30, "the user's creation")
        kinds = [("usermod -s", ["usermod", "-s", "/bin/bash", name])]
        if a.userdel:
            kinds.append(("userdel", ["userdel", name]))
        for what, cmd in kinds:
            lat = []
            for _ in range(a.runs):
                time.sleep(0.05)  # let the last repair's own writes settle
                subprocess.run(cmd, check=True)
                lat.append(wait_for(lambda: shell_of(name) == "/bin/sh", 20, f"the repair of {what}"))
            ms = [x * 1000 for x in lat]
            print(
                f"{what:12} runs {len(ms)}: p50 {pct(ms, 50):.1f} ms, p90 {pct(ms, 90):.1f} ms, "
                f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms"
            )
    finally:
        tend.terminate()
        tend.wait()
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
