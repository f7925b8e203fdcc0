#!/usr/bin/env bash
# redis-frames.sh — redis-benchmark against redis-server on Linux and under
# the shim, interleaved, with what each answer cost on the wire: frames per
# answer each way (the Linux side's veth counters), the held ACKs that went
# out alone (`tasctl stats`), and optionally the TAS server side pinned to
# one CPU.
#
# Usage:
#   tools/redis-frames.sh [BIN_DIR] [ROUNDS]
#
# BIN_DIR holds tasd, tasctl and libtas_preload.so (default target/release,
# or $CARGO_TARGET_DIR/release). Each of ROUNDS rounds (default 3) runs
# `redis-benchmark -t get -c 50 -P PIPELINE -n REQS` from the Linux
# namespace against redis-server on the TAS-side host's kernel, then under
# the shim on tasd (and, with PIN=1, a third time with `tasd --cpus 1` and
# `taskset -c 1 redis-server`), each on fresh hosts. Per run it prints the
# rate (req/s), frames per answer to and from the client (packets counted
# on veth-lnx over the benchmark, divided by REQS) and, for TAS, the held
# ACKs sent alone (`fastpath.acks_delayed`) of those held.
#
# Environment:
#   TASD       tasd binary to run instead of BIN_DIR/tasd (A/B of builds)
#   TASD_ARGS  extra tasd arguments
#   REQS       requests per run (default 300000)
#   PIPELINE   redis-benchmark -P (default 1)
#   PIN        1: also run the pinned TAS configuration (docs/cores.md,
#              "On a host with two CPUs")
#
# Uses tools/testhosts.sh (namespaces rfr-tas / rfr-lnx, removed at exit).
# Needs root, redis-server and redis-benchmark (Debian: redis-server,
# redis-tools).

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tasd-ns.sh
. tools/tasd-ns.sh
BIN="${1:-${CARGO_TARGET_DIR:-target}/release}"
ROUNDS="${2:-3}"
TASD_BIN="${TASD:-$BIN/tasd}"
REQS="${REQS:-300000}"
PIPELINE="${PIPELINE:-1}"
NAME=rfr
need_files redis-frames "$TASD_BIN" "$BIN/tasctl" "$BIN/libtas_preload.so"
need_cmds redis-frames redis-server=redis-server redis-benchmark=redis-tools
for v in REQS PIPELINE ROUNDS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "redis-frames: $v must be a positive integer" >&2; exit 1; }
done

SERVER_ARGS=(--bind 198.18.0.1 --port 6379 --save "" --appendonly no --protected-mode no)

counters() {
    ip netns exec "$NAME-lnx" cat /sys/class/net/veth-lnx/statistics/rx_packets \
        /sys/class/net/veth-lnx/statistics/tx_packets | tr '\n' ' '
}

# run KIND: KIND is linux, tas or pinned.
run() {
    local kind="$1" out pin=() c0 c1 rate
    out="$(mktemp -d /tmp/redis-frames.XXXXXX)"
    hosts_up "$NAME"
    case "$kind" in
        linux)
            ip netns exec "$NAME-tas" ip addr add 198.18.0.1/24 dev veth-tas
            ip netns exec "$NAME-tas" redis-server "${SERVER_ARGS[@]}" >"$out/server.out" 2>&1 &
            ;;
        tas | pinned)
            local extra=()
            if [[ "$kind" == pinned ]]; then
                extra=(--cpus 1)
                pin=(taskset -c 1)
            fi
            # shellcheck disable=SC2086
            start_tasd "$NAME" "$TASD_BIN" "$out/tasd.sock" "$out" redis-frames ${TASD_ARGS:-} "${extra[@]}"
            ip netns exec "$NAME-tas" "${pin[@]}" env LD_PRELOAD="$BIN/libtas_preload.so" \
                TAS_SOCKET="$out/tasd.sock" redis-server "${SERVER_ARGS[@]}" >"$out/server.out" 2>&1 &
            ;;
    esac
    EXTRA_PIDS+=("$!")
    sleep 1
    c0=$(counters)
    rate=$(ip netns exec "$NAME-lnx" redis-benchmark -h 198.18.0.1 -p 6379 -t get -c 50 \
        -P "$PIPELINE" -n "$REQS" --csv 2>&1 | awk -F'"' '/^"GET"/ {print $4}')
    c1=$(counters)
    printf '%-7s %10s req/s' "$kind" "${rate:-failed}"
    echo "$c0 $c1" | awk -v n="$REQS" '{printf "  frames per answer: to client %.3f, from client %.3f", ($3-$1)/n, ($4-$2)/n}'
    if [[ "$kind" != linux ]]; then
        "$BIN/tasctl" --socket "$out/tasd.sock" stats \
            | awk '$1 == "fastpath.acks_delayed" {a=$2} $1 == "fastpath.acks_held" {h=$2}
                   END {printf "  held ACKs alone %d of %d", a, h}'
    fi
    echo
    hosts_cleanup
    rm -rf "$out"
}

kinds=(linux tas)
[[ "${PIN:-0}" == 1 ]] && kinds+=(pinned)
for r in $(seq "$ROUNDS"); do
    echo "round $r (redis-benchmark -t get -c 50 -P $PIPELINE -n $REQS)"
    for k in "${kinds[@]}"; do
        run "$k"
    done
done
