#!/usr/bin/env bash
# The svc kind's repair latency: how long after a unit went inactive behind tend's back
# (a D-Bus StopUnit from another connection) the running engine has it active again, against
# systemd's own start time of the same unit (StartUnit to active), both timed from systemd's
# PropertiesChanged signals. Runs the `svc::repair_latency` test of tend-resources, which
# boots systemd in a container of its own (systemd-nspawn on a cached mmdebstrap root file
# system; needs root, `make deps` installs the tools).
# Usage: bench/svc.sh [TRIES]   (default 30; PROFILE=release for an optimized build)
set -euo pipefail
cd "$(dirname "$0")/.."
tries="${1:-30}"
profile=()
[ "${PROFILE:-}" = release ] && profile=(--release)
SVC_BENCH_TRIES="$tries" cargo test "${profile[@]}" -p tend-resources --test resources \
  svc::repair_latency -- --exact --nocapture 2>&1 | grep -E '^svc bench|^test result|panicked'
