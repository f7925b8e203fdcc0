#!/usr/bin/env bash
# bench-redis.sh — benchmark (not a test): unmodified redis-server on TAS
# (under libtas_preload.so) vs on the Linux kernel stack, same link, same
# client, same minute. redis-benchmark runs on the Linux test host
# (198.18.0.2) against redis at 198.18.0.1 in the other namespace.
#
# Usage (root):
#   cargo build --release --workspace --bins && cargo build --release -p tas-preload
#   libtas-preload/shim/bench-redis.sh [ROUNDS]
#
# Environment: CARGO_TARGET_DIR (where tasd and the shim are), TAS_NIC
# (af_xdp | af_packet, default af_xdp), BUSY_POLL=1 to add a Linux run with
# the global sysctls net.core.busy_poll/busy_read = 50 (restored after;
# they only exist in the initial network namespace, so this changes the
# whole machine while it runs), TAS_SPIN_US (passed to the shim).
#
# Prints one table: config, test, stack, requests/s, p50 and p99 (ms), as
# reported by redis-benchmark --csv. Never fails on a number.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
T="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NIC="${TAS_NIC:-af_xdp}"
ROUNDS="${1:-1}"
NAME="rb$$"
TNS="$NAME-tas"
LNS="$NAME-lnx"
DIR="$(mktemp -d /tmp/tas-redis-bench.XXXXXX)"
PIDS=()
OLD_BP=""
OLD_BR=""

for b in "$T/tasd" "$T/libtas_preload.so"; do
    [[ -e "$b" ]] || { echo "bench-redis: $b is not built (see the usage line)" >&2; exit 1; }
done
for c in redis-server redis-benchmark; do
    command -v "$c" >/dev/null || { echo "bench-redis: $c missing: apt-get install -y redis-server redis-tools" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "bench-redis: must run as root (namespaces)" >&2; exit 1; }

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [[ -n "$OLD_BP" ]]; then sysctl -qw net.core.busy_poll="$OLD_BP" net.core.busy_read="$OLD_BR" || true; fi
    "$ROOT/tools/testhosts.sh" down "$NAME" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$ROOT/tools/testhosts.sh" up "$NAME" >/dev/null

start_redis() { # $1 = "tas" | "linux"
    local pre=()
    if [[ $1 == tas ]]; then
        pre=(env "LD_PRELOAD=$T/libtas_preload.so" "TAS_SOCKET=$DIR/tasd.sock" ${TAS_SPIN_US:+"TAS_SPIN_US=$TAS_SPIN_US"})
    fi
    ip netns exec "$TNS" "${pre[@]}" redis-server --port 6379 --bind 198.18.0.1 --save '' --appendonly no \
        --protected-mode no --daemonize no --logfile "$DIR/redis-$1.log" &
    REDIS=$!
    PIDS+=("$REDIS")
    for _ in $(seq 100); do
        grep -q "Ready to accept" "$DIR/redis-$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-redis: redis ($1) did not start" >&2
    exit 1
}

stop_redis() {
    kill "$REDIS" 2>/dev/null || true
    wait "$REDIS" 2>/dev/null || true
}

# config label, redis-benchmark args
CONFIGS=("-c 1|-c 1 -n 50000" "-c 50|-c 50 -n 200000" "-c 50 -P 16|-c 50 -P 16 -n 2000000")

run_all() { # $1 = stack label
    local r i cfg label args
    for r in $(seq "$ROUNDS"); do
        i=0
        for cfg in "${CONFIGS[@]}"; do
            i=$((i + 1))
            label="${cfg%%|*}"
            args="${cfg#*|}"
            # shellcheck disable=SC2086
            ip netns exec "$LNS" timeout 300 redis-benchmark -h 198.18.0.1 -p 6379 -t set,get $args --csv 2>/dev/null |
                awk -F'","' -v idx="$i" -v cfg="$label" -v st="$1" '
                    /^"(SET|GET)"/ { gsub(/"/, "", $1); gsub(/"/, "", $8);
                                     printf "%s\t%s\t%s\t%s\t%.0f\t%s\t%s\n", idx, cfg, $1, st, $2, $5, $7 }' \
                >>"$DIR/results"
        done
    done
}

# 1. Linux kernel stack: give the kernel 198.18.0.1 on the "tas" side.
ip -n "$TNS" addr add 198.18.0.1/24 dev veth-tas
start_redis linux
run_all linux
if [[ "${BUSY_POLL:-0}" == 1 ]]; then
    OLD_BP=$(sysctl -n net.core.busy_poll)
    OLD_BR=$(sysctl -n net.core.busy_read)
    sysctl -qw net.core.busy_poll=50 net.core.busy_read=50
    run_all linux-busypoll
    sysctl -qw net.core.busy_poll="$OLD_BP" net.core.busy_read="$OLD_BR"
    OLD_BP=""
fi
stop_redis
ip -n "$TNS" addr del 198.18.0.1/24 dev veth-tas

# 2. TAS: tasd owns 198.18.0.1, redis runs under the shim.
ip netns exec "$TNS" "$T/tasd" --ip 198.18.0.1/24 --iface veth-tas --nic "$NIC" --socket "$DIR/tasd.sock" \
    >"$DIR/tasd.out" 2>"$DIR/tasd.log" &
PIDS+=("$!")
for _ in $(seq 150); do
    grep -q ready "$DIR/tasd.out" 2>/dev/null && break
    sleep 0.1
done
grep -q ready "$DIR/tasd.out" || { echo "bench-redis: tasd did not start:" >&2; cat "$DIR/tasd.log" >&2; exit 1; }
start_redis tas
run_all tas-shim
stop_redis

printf "%-12s %-4s %-15s %12s %8s %8s\n" config test stack "requests/s" "p50 ms" "p99 ms"
sort -s -t$'\t' -k1,1n -k3,3r "$DIR/results" |
    awk -F'\t' '{ printf "%-12s %-4s %-15s %12s %8s %8s\n", $2, $3, $4, $5, $6, $7 }'
