#!/usr/bin/env python3
"""The tend benchmark (see bench/README.md). Standard library only.

Generates YAML graphs of flat file resources and measures:
  (a) first converge: `tend run g.yaml --converged-timeout 0` in an empty directory
  (b) the same run again when everything is already in state
  (c) drift repair latency with `tend run` running (modify or delete a file, time until back)
  (d) 100 chains of 10 dependent files, first converge
beside the floor: a plain loop (bench/floor.rs) doing the same file work.
Prints a markdown table.
"""

import argparse
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def gen_flat(path, root, n):
    with open(path, "w") as f:
        f.write("resources:\n  file:\n")
        for i in range(n):
            f.write(f'    - {{ name: "{root}/f{i}", content: "hello {i}\\n", mode: "0644" }}\n')


def gen_chains(path, root, chains, length):
    with open(path, "w") as f:
        f.write("resources:\n  file:\n")
        for c in range(chains):
            for k in range(length):
                f.write(
                    f'    - {{ name: "{root}/c{c}_f{k}", content: "hello {c} {k}\\n", mode: "0644" }}\n'
                )
        f.write("edges:\n")
        for c in range(chains):
            for k in range(length - 1):
                f.write(f'  - {{ from: "file[{root}/c{c}_f{k}]", to: "file[{root}/c{c}_f{k + 1}]" }}\n')


def timed(cmd, log):
    """Runs cmd; returns (wall seconds, peak RSS in MB, exit status)."""
    with open(log, "ab") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=err, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss / 1024.0, p.returncode


def warm(root):
    """Flushes the previous steps' writes, then reads every file under root, so a run measures
    the tool, not the disk (the write-back of the files (a) and its floors just wrote would
    otherwise run during the measure, and this machine's proactive reclaim evicts idle page
    cache between runs)."""
    os.sync()
    for name in os.listdir(root):
        with open(os.path.join(root, name), "rb") as f:
            f.read()


# The fewest runs of (b), tend's and the floor's each (see main).
B_REPEAT = 11


def median_runs(prepares, repeat, log, before=None):
    """Runs each command of `prepares` (a function of the run number) in turn, `repeat` times;
    returns (median wall, peak RSS) per command. Alternating the commands makes them meet the
    machine in the same state."""
    walls = [[] for _ in prepares]
    rss = [0.0 for _ in prepares]
    for r in range(repeat):
        for i, prepare in enumerate(prepares):
            if before:
                before()
            cmd = prepare(r)
            wall, mb, rc = timed(cmd, log)
            if rc != 0:
                sys.exit(f"bench: {' '.join(cmd)} exited {rc}; see {log}")
            walls[i].append(wall)
            rss[i] = max(rss[i], mb)
    return [(statistics.median(w), m) for w, m in zip(walls, rss)]


def median_run(prepare, repeat, log, before=None):
    return median_runs([prepare], repeat, log, before)[0]


def in_state(root, n):
    for i in range(n):
        try:
            with open(f"{root}/f{i}", "rb") as f:
                if f.read() != f"hello {i}\n".encode():
                    return False
        except OSError:
            return False
    return True


def drift(tend, work, n, drifts, log):
    root = f"{work}/drift-{n}"
    os.makedirs(root)
    g = f"{work}/drift-{n}.yaml"
    gen_flat(g, root, n)
    errf = open(log, "ab")
    p = subprocess.Popen(
        [tend, "run", g, "--state-dir", f"{work}/state-drift-{n}"], stdout=errf, stderr=errf
    )
    try:
        deadline = time.time() + 300
        while not in_state(root, n):
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"bench: tend run did not converge for the drift test; see {log}")
            time.sleep(0.05)
        time.sleep(0.5)  # let the watches settle
        rng = random.Random(42)
        lat = []
        for k in range(drifts):
            i = rng.randrange(n)
            path = f"{root}/f{i}"
            want = f"hello {i}\n".encode()
            t0 = time.perf_counter()
            if k % 2 == 0:
                with open(path, "wb") as f:
                    f.write(b"drifted\n")
            else:
                os.unlink(path)
            while True:
                try:
                    with open(path, "rb") as f:
                        if f.read() == want:
                            break
                except OSError:
                    pass
                if time.perf_counter() - t0 > 10:
                    sys.exit(f"bench: {path} was not repaired within 10 s; see {log}")
            lat.append(time.perf_counter() - t0)
            time.sleep(0.005)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        stop = time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        errf.close()
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[max(0, -(-len(lat) * 99 // 100) - 1)]
    return p50, p99, stop


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tend", required=True, help="the tend binary (a release build)")
    ap.add_argument("--floor", required=True, help="the floor binary (bench/floor.rs)")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is shown)")
    ap.add_argument("--drifts", type=int, default=200)
    ap.add_argument("--work", help="work directory (default: a new temporary one, removed after)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="tend-bench.")
    log = f"{work}/tend.log"
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        d = f"{work}/{prefix}-{counter[0]}"
        return d

    try:
        for n in sizes:
            # (a) first converge, each run in a new empty directory with a new state dir.
            roots = []

            def prep_first(r, n=n, roots=roots):
                root = fresh(f"a{n}")
                roots.append(root)
                g = f"{root}.yaml"
                gen_flat(g, root, n)
                return [a.tend, "run", g, "--converged-timeout", "0", "--state-dir", f"{root}.state"]

            wall_a, rss_a = median_run(prep_first, a.repeat, log)
            fl_a, _ = median_run(lambda r: [a.floor, "write", fresh(f"fa{n}"), str(n)], a.repeat, log)
            fl_aa, _ = median_run(
                lambda r: [a.floor, "write-atomic", fresh(f"faa{n}"), str(n)], a.repeat, log
            )
            rows.append((f"(a) first converge, {n} files", wall_a, rss_a, fl_a, fl_aa))

            # (b) again, in state (the directory of the last (a) run). tend's runs and the
            # floor's alternate, so that both meet the same machine (this VM's speed drifts by
            # several percent from one minute to the next), at least B_REPEAT times each: the
            # runs are short, and in five, one or two meet a slow moment of the VM or the
            # kernel's teardown of the inotify instance at exit (an SRCU grace period: 10-18 ms
            # in about one run of three), which moves a median of five.
            root = roots[-1]
            g = f"{root}.yaml"
            (wall_b, rss_b), (fl_b, _) = median_runs(
                [
                    lambda r: [a.tend, "run", g, "--converged-timeout", "0", "--state-dir", f"{root}.state"],
                    lambda r: [a.floor, "check", root, str(n)],
                ],
                max(a.repeat, B_REPEAT),
                log,
                before=lambda: warm(root),
            )
            rows.append((f"(b) already in state, {n} files", wall_b, rss_b, fl_b, None))
            for d in roots:
                shutil.rmtree(d, ignore_errors=True)

            # (c) drift repair latency.
            p50, p99, stop = drift(a.tend, work, n, a.drifts, log)
            rows.append((f"(c) drift repair p50, {n} files", p50, None, None, None))
            rows.append((f"(c) drift repair p99, {n} files", p99, None, None, None))
            rows.append((f"SIGTERM to exit, {n} idle files", stop, None, None, None))

        # (d) 100 chains of 10 dependent files.
        def prep_chain(r):
            root = fresh("d")
            g = f"{root}.yaml"
            gen_chains(g, root, 100, 10)
            return [a.tend, "run", g, "--converged-timeout", "0", "--state-dir", f"{root}.state"]

        wall_d, rss_d = median_run(prep_chain, a.repeat, log)
        fl_d, _ = median_run(lambda r: [a.floor, "chains", fresh("fd"), "100", "10"], a.repeat, log)
        rows.append(("(d) 100 chains x 10 files, first converge", wall_d, rss_d, fl_d, None))
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)

    def ms(x):
        return "" if x is None else f"{x * 1000:.1f} ms"

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    debian = ""
    try:
        with open("/etc/debian_version") as f:
            debian = f"Debian {f.read().strip()}, "
    except OSError:
        pass
    print(f"Machine: {os.cpu_count()} cores ({cpu}), {debian}Linux {platform.release()}")
    print(
        f"Command: {' '.join(sys.argv)}  (median of {a.repeat} runs, of"
        f" {max(a.repeat, B_REPEAT)} for (b); {a.drifts} drifts)"
    )
    print()
    print("| measure | tend | peak RSS | floor (plain writes) | floor (tmp+fsync+rename) | tend / floor |")
    print("|---|---|---|---|---|---|")
    for name, t, rss, fl, fla in rows:
        ratio = f"{t / fl:.1f}x" if fl else ""
        rss_s = f"{rss:.1f} MB" if rss is not None else ""
        print(f"| {name} | {ms(t)} | {rss_s} | {ms(fl)} | {ms(fla)} | {ratio} |")


if __name__ == "__main__":
    main()
