#!/usr/bin/env bash
# Runs the tend benchmark: builds a release `tend` and the floor program, then measures
# (see bench/README.md). Needs cargo, rustc and python3. Extra arguments go to bench.py,
# e.g. `bench/run.sh --sizes 1000 --repeat 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tend
mkdir -p target/bench
rustc -O --edition 2021 -o target/bench/floor bench/floor.rs
exec python3 bench/bench.py --tend target/release/tend --floor target/bench/floor "$@"
