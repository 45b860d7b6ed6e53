#!/usr/bin/env bash
# The `pkg` kind on this host (Debian, as root, with a reachable mirror):
#   1. `tend check` and a one-shot `tend run --noop` of N (default 200) `pkg` resources for
#      packages that are installed already (nothing to change: the checks read dpkg's status
#      file once);
#   2. drift repair latency: `tend run` keeps DRIFT_PKG (default `tree`, which must not be
#      installed) installed; it is removed RUNS times (default 3) with `apt-get remove -y` and
#      the time from apt-get returning to the package being installed again is printed.
# The package is purged at the end (also on error or Ctrl-C).
#
# Usage: bench/pkg.sh [N]      env: TEND=path/to/tend (default: build a release one),
#                               DRIFT_PKG, RUNS, REPEAT (runs of part 1, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
DRIFT_PKG=${DRIFT_PKG:-tree}
RUNS=${RUNS:-3}
REPEAT=${REPEAT:-5}

[ "$(id -u)" = 0 ] || { echo "bench/pkg.sh: needs root (it installs and removes $DRIFT_PKG)" >&2; exit 2; }
if [ -z "${TEND:-}" ]; then
    cargo build --release --bin tend
    TEND="${CARGO_TARGET_DIR:-target}/release/tend"
fi

work=$(mktemp -d)
tend_pid=
cleanup() {
    if [ -n "$tend_pid" ]; then kill "$tend_pid" 2>/dev/null || true; wait "$tend_pid" 2>/dev/null || true; fi
    if dpkg-query -W -f='${Status}' "$DRIFT_PKG" 2>/dev/null | grep -q .; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "$DRIFT_PKG" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }

# --- 1. N installed packages, found in state --------------------------------------------
{
    echo "resources:"
    echo "  pkg:"
    dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' |
        awk -v n="$N" '$1=="ii" && k < n {k++; print "    - name: " $2}'
} >"$work/installed.yaml"
n=$(grep -c -- '- name:' "$work/installed.yaml")
echo "part 1: $n pkg resources, every package installed already (best and median of $REPEAT)"
report() { sort -n | awk -v what="$1" '{v[NR]=$1} END {printf "  %-40s best %.3f s, median %.3f s\n", what, v[1], v[int((NR+1)/2)]}'; }
for _ in $(seq "$REPEAT"); do
    t0=$(now); "$TEND" check "$work/installed.yaml" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc
done | report "tend check (validation only)"
for _ in $(seq "$REPEAT"); do
    t0=$(now)
    "$TEND" run "$work/installed.yaml" --noop --converged-timeout 0 --listen none \
        --state-dir "$work/state1" --log-level warn
    t1=$(now)
    echo "$t1 - $t0" | bc
done | report "tend run --noop --converged-timeout 0"

# --- 2. drift repair latency ------------------------------------------------------------
if dpkg-query -W -f='${Status}' "$DRIFT_PKG" 2>/dev/null | grep -q .; then
    echo "part 2: $DRIFT_PKG is known to dpkg already; set DRIFT_PKG to a package that is not" >&2
    exit 2
fi
printf 'resources:\n  pkg:\n    - name: %s\n' "$DRIFT_PKG" >"$work/drift.yaml"
"$TEND" run "$work/drift.yaml" --listen none --state-dir "$work/state2" --log-level warn &
tend_pid=$!
deadline=$(($(date +%s) + 120))
until installed "$DRIFT_PKG"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "part 2: $DRIFT_PKG never got installed" >&2; exit 1; }
    sleep 0.1
done
echo "part 2: drift repair of $DRIFT_PKG ($RUNS runs): apt-get remove returned -> installed again"
for i in $(seq "$RUNS"); do
    sleep 2 # let the install's own status changes settle
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -o DPkg::Lock::Timeout=120 "$DRIFT_PKG" >/dev/null
    t0=$(now)
    deadline=$(($(date +%s) + 60))
    until installed "$DRIFT_PKG"; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "  run $i: not reinstalled within 60 s" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(now)
    printf '  run %d: %.2f s\n' "$i" "$(echo "$t1 - $t0" | bc)"
done
