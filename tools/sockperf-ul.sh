#!/usr/bin/env bash
# sockperf-ul.sh — paced one-way load against `sockperf sr` under the shim,
# and what it cost: latency percentiles, the machine's CPU, the fast-path
# thread's time on and waiting for a CPU, and tasd's counters.
#
# Usage:
#   tools/sockperf-ul.sh [BIN_DIR] [RATES]
#
# BIN_DIR holds tasd, tasctl and libtas_preload.so (default target/release,
# or $CARGO_TARGET_DIR/release). RATES is a list of offered loads in 64-byte
# messages per second (default "20000 40000"); each runs `sockperf
# under-load` for SECS seconds (default 3) from the Linux namespace. Per
# rate it prints sockperf's p50/p99/p99.9/max (µs), the machine's busy CPU
# ticks over the run (/proc/stat; 100 per CPU-second), each tasd and server
# thread's time on a CPU, time runnable but waiting and switches
# (/proc/*/task/*/schedstat: ms, ms, count, before and after), and the
# deltas of tasd's counters matching STATS (`tasctl stats`).
#
# Environment:
#   TASD        tasd binary to run instead of BIN_DIR/tasd (A/B of builds)
#   TASD_ARGS   extra tasd arguments (e.g. "--goal latency")
#   SECS        seconds per rate (default 3)
#   STATS       regex of counters to print (default lanes, fast-path rx/tx,
#               ACKs, wake-ups)
#
# Uses tools/testhosts.sh (namespaces sul-tas / sul-lnx, removed at exit).
# Needs root and sockperf.

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tasd-ns.sh
. tools/tasd-ns.sh
BIN="${1:-${CARGO_TARGET_DIR:-target}/release}"
RATES="${2:-20000 40000}"
TASD_BIN="${TASD:-$BIN/tasd}"
STATS="${STATS:-lanes\.|fastpath\.(rx|tx)_|acks|wake}"
NAME=sul
OUT="$(mktemp -d /tmp/sockperf-ul.XXXXXX)"
SOCK="$OUT/tasd.sock"
need_files sockperf-ul "$TASD_BIN" "$BIN/tasctl" "$BIN/libtas_preload.so"
need_cmds sockperf-ul sockperf=sockperf

hosts_up "$NAME"

# shellcheck disable=SC2086
start_tasd "$NAME" "$TASD_BIN" "$SOCK" "$OUT" sockperf-ul ${TASD_ARGS:-}
ip netns exec "$NAME-tas" env LD_PRELOAD="$BIN/libtas_preload.so" TAS_SOCKET="$SOCK" \
    sockperf sr --tcp -i 198.18.0.1 -p 11111 >"$OUT/server.out" 2>&1 &
SRV_PID=$!
EXTRA_PIDS+=("$SRV_PID")
sleep 1

threads() {
    for t in /proc/"$1"/task/*; do
        printf '%s:%s ' "$(cat "$t/comm")" "$(awk '{printf "%.1f,%.1f,%d", $1/1e6, $2/1e6, $3}' "$t/schedstat")"
    done
}
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat; }

for r in $RATES; do
    before="$(threads "$TASD_PID") $(threads "$SRV_PID")"
    c0=$(busy)
    "$BIN/tasctl" --socket "$SOCK" stats >"$OUT/s0"
    ip netns exec "$NAME-lnx" sockperf ul --tcp -i 198.18.0.1 -p 11111 -m 64 -t "${SECS:-3}" --mps "$r" 2>&1 \
        | grep -E "percentile (50.000|99.000|99.900) |MAX" \
        | awk -v r="$r" 'BEGIN{printf "%s msg/s: ", r} {printf "%s=%s ", $(NF-2), $NF} END {print "(us)"}'
    c1=$(busy)
    "$BIN/tasctl" --socket "$SOCK" stats >"$OUT/s1"
    echo "  machine busy ticks $((c1 - c0))"
    echo "  threads before (on-CPU ms, waiting ms, switches): $before"
    echo "  threads after:  $(threads "$TASD_PID") $(threads "$SRV_PID")"
    paste <(grep -E "$STATS" "$OUT/s0") <(grep -E "$STATS" "$OUT/s1") \
        | awk '{ d = $4 - $2; if (d != 0) printf "    %-40s %14d\n", $1, d }'
done
echo "logs: $OUT"
