#!/usr/bin/env bash
# The `pkg` kind on this host (Debian, as root, with a reachable mirror):
#   1. `tend check` and a one-shot `tend run --noop` of N (default 200) `pkg` resources for
#      packages that are installed already (nothing to change: the checks read dpkg's status
#      file once);
#   2. drift repair latency: `tend run` keeps DRIFT_PKG (default `tree`, which must not be
#      installed) installed; it is removed RUNS times (default 3) with `apt-get remove -y` and
#      the time from apt-get returning to the package being installed again is printed;
#   3. installing BATCH_PKGS (ten small packages without dependencies, none installed) with
#      one `tend run` (one apt transaction, counted in /var/log/apt/history.log) against ten
#      `apt-get install` in a row, alternately, ROUNDS times (default 2); the .debs are
#      downloaded once first, so both install from apt's cache.
# The packages are purged at the end (also on error or Ctrl-C).
#
# Usage: bench/pkg.sh [N]      env: TEND=path/to/tend (default: build a release one),
#                               DRIFT_PKG, RUNS, REPEAT (runs of part 1, default 5),
#                               BATCH_PKGS, ROUNDS, PARTS (default "1 2 3")
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
DRIFT_PKG=${DRIFT_PKG:-tree}
RUNS=${RUNS:-3}
REPEAT=${REPEAT:-5}
BATCH_PKGS=${BATCH_PKGS:-"hello sl figlet pv ncdu ninvaders dos2unix nudoku sudoku pente"}
ROUNDS=${ROUNDS:-2}
PARTS=${PARTS:-"1 2 3"}

[ "$(id -u)" = 0 ] || { echo "bench/pkg.sh: needs root (it installs and removes $DRIFT_PKG)" >&2; exit 2; }
if [ -z "${TEND:-}" ]; then
    cargo build --release --bin tend
    TEND="${CARGO_TARGET_DIR:-target}/release/tend"
fi

work=$(mktemp -d)
tend_pid=
purge_at_exit=
# Purges those of the packages dpkg knows of.
purge() {
    local known=()
    for p in "$@"; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q .; then known+=("$p"); fi
    done
    if [ ${#known[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q -o DPkg::Lock::Timeout=120 "${known[@]}" >/dev/null 2>&1 || true
    fi
}
cleanup() {
    if [ -n "$tend_pid" ]; then kill "$tend_pid" 2>/dev/null || true; wait "$tend_pid" 2>/dev/null || true; fi
    if [ -n "$purge_at_exit" ]; then purge $purge_at_exit; fi
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }

want() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- 1. N installed packages, found in state --------------------------------------------
if want 1; then
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
for _ in $(seq "$REPEAT"); do
    t0=$(now); "$TEND" --version >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc
done | report "tend --version (process start, exit)"
fi

# --- 2. drift repair latency ------------------------------------------------------------
if want 2; then
purge_at_exit="$DRIFT_PKG"
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
kill "$tend_pid" 2>/dev/null || true
wait "$tend_pid" 2>/dev/null || true
tend_pid=
purge "$DRIFT_PKG"
fi

# --- 3. one transaction against ten apt-get installs ---------------------------------------
if want 3; then
read -r -a batch <<<"$BATCH_PKGS"
purge_at_exit="$DRIFT_PKG ${batch[*]}"
for p in "${batch[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then
        echo "part 3: $p is installed already; set BATCH_PKGS to packages that are not" >&2
        exit 2
    fi
done
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -d -o DPkg::Lock::Timeout=120 "${batch[@]}" >/dev/null
{
    echo "resources:"
    echo "  pkg:"
    for p in "${batch[@]}"; do echo "    - name: $p"; done
} >"$work/batch.yaml"
history=/var/log/apt/history.log
starts() { grep -c '^Start-Date' "$history" 2>/dev/null || echo 0; }
echo "part 3: ${#batch[@]} packages (${batch[*]}), installed from apt's cache, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    purge "${batch[@]}"
    s0=$(starts); t0=$(now)
    "$TEND" run "$work/batch.yaml" --converged-timeout 0 --listen none \
        --state-dir "$work/state3" --log-level warn
    t1=$(now); s1=$(starts)
    for p in "${batch[@]}"; do installed "$p" || { echo "part 3: tend left $p not installed" >&2; exit 1; }; done
    printf '  round %d: tend run, one batch:      %6.2f s (%d apt transaction(s) in %s)\n' \
        "$r" "$(echo "$t1 - $t0" | bc)" "$((s1 - s0))" "$history"
    purge "${batch[@]}"
    s0=$(starts); t0=$(now)
    for p in "${batch[@]}"; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=120 \
            -o Dpkg::Options::=--force-confold "$p" >/dev/null
    done
    t1=$(now); s1=$(starts)
    printf '  round %d: %d apt-get install in a row: %6.2f s (%d apt transaction(s))\n' \
        "$r" "${#batch[@]}" "$(echo "$t1 - $t0" | bc)" "$((s1 - s0))"
done
purge "${batch[@]}"
fi
