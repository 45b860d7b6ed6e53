#!/usr/bin/env python3
"""Runs `tend check --print-graph` of two tend binaries over every golden case
(lang/tests/golden/**/*.txtar) and reports the cases whose output or exit status differ.

Usage: scripts/compare-check.py OLD_TEND NEW_TEND [GOLDEN_DIR]
"""
import pathlib, subprocess, sys, tempfile

def parse_txtar(text):
    files, name, buf = {}, None, []
    for line in text.splitlines(keepends=True):
        if line.startswith("-- ") and line.rstrip().endswith(" --"):
            if name is not None:
                files[name] = "".join(buf)
            name, buf = line.strip()[3:-3].strip(), []
        elif name is not None:
            buf.append(line)
    if name is not None:
        files[name] = "".join(buf)
    return files

def run(tend, d, world):
    args = [tend, "check", "--print-graph", str(d / "main.mcl")]
    if world:
        args += ["--world", str(d / "WORLD.json")]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    # Paths of the temporary directory differ between the two runs.
    norm = lambda s: s.replace(str(d), "<DIR>")
    return p.returncode, norm(p.stdout), norm(p.stderr)

def main():
    old, new = sys.argv[1], sys.argv[2]
    root = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "lang/tests/golden")
    cases = sorted(root.rglob("*.txtar"))
    same, differ = 0, []
    for case in cases:
        files = parse_txtar(case.read_text())
        if "main.mcl" not in files:
            continue
        outs = []
        for tend in (old, new):
            with tempfile.TemporaryDirectory() as t:
                d = pathlib.Path(t)
                for name, body in files.items():
                    if name in ("OUTPUT",):
                        continue
                    target = d / ("WORLD.json" if name == "WORLD" else name.lstrip("/"))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(body)
                outs.append(run(tend, d, "WORLD" in files))
        if outs[0] == outs[1]:
            same += 1
        else:
            differ.append((case, outs))
    print(f"{len(cases)} cases: {same} identical, {len(differ)} differ")
    for case, (a, b) in differ:
        print(f"--- {case}\n  old: exit {a[0]}\n{a[1]}{a[2]}\n  new: exit {b[0]}\n{b[1]}{b[2]}")
    sys.exit(1 if differ else 0)

main()
