#!/usr/bin/env bash
# The demo, about a minute: an unmodified Debian redis-server on TAS next to
# the same server on the Linux kernel stack, driven by the same client over
# the same link, then congestion control changed under live connections.
#
#  1. Two test hosts in network namespaces joined by a veth pair
#     (tools/testhosts.sh): NAME-tas and NAME-lnx (198.18.0.2, Linux).
#  2. Linux: 198.18.0.1 on NAME-tas's kernel, redis-server there,
#     redis-benchmark -t get,set -n 100000 -c 50 from NAME-lnx.
#  3. TAS: the address taken back from the kernel, `tasd --cores 1-2` on the
#     same interface, the same redis-server under `tasctl run`, the same
#     redis-benchmark from NAME-lnx.
#  4. One table: requests/s, p50 and p99 latency, Linux and TAS side by side.
#  5. `tasctl cc set timely` while 4 clients keep going, `tasctl flows`
#     before and after.
#
# Run as root (with or without sudo); installs the Debian packages it uses
# (tools/deps.sh). Everything it starts or creates is removed on exit,
# Ctrl-C included.
# Usage: tools/demo.sh [af_xdp|af_packet]
set -euo pipefail
cd "$(dirname "$0")/.."
nic="${1:-af_xdp}"
case "$nic" in
    af_xdp | af_packet) ;;
    *) echo "demo: unknown NIC backend '$nic' (af_xdp or af_packet)" >&2; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces, AF_XDP)" >&2; exit 1; }

name="demo$$"
dir="$(mktemp -d /tmp/tas-demo.XXXXXX)"
pids=()
hosts_up=0

cleanup() {
    local st=$? p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if ((hosts_up)); then tools/testhosts.sh down "$name" >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    if ((st != 0)); then echo "demo: stopped (status $st); everything it started is removed" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=tools/deps.sh
. tools/deps.sh
need cmd:ip=iproute2
need cmd:ethtool=ethtool
need cmd:redis-server=redis-server
need cmd:redis-benchmark=redis-tools
need cmd:redis-cli=redis-tools
ensure_deps

echo "== building tasd, tasctl, libtas_preload.so (release)"
cargo build --release -p tasd -p tasctl -p tas-preload 2>&1 | tail -n 1
bin="${CARGO_TARGET_DIR:-target}/release"
bin="$(cd "$bin" && pwd)"

tools/testhosts.sh up "$name" >/dev/null
hosts_up=1
tas="$name-tas"
lnx="$name-lnx"
ip_tas=198.18.0.1
sock="$dir/tasd.sock"
echo "== test hosts: $tas ($ip_tas, veth) <-> $lnx (198.18.0.2, Linux); client: redis-benchmark on $lnx"

# The same server, the same options, on either stack.
redis_args=(--bind "$ip_tas" --port 6379 --save "" --appendonly no --protected-mode no --daemonize no --logfile "")
bench=(redis-benchmark -h "$ip_tas" -p 6379 -t get,set -n 100000 -c 50 --csv)

wait_redis() {
    for _ in $(seq 100); do
        ip netns exec "$lnx" redis-cli -h "$ip_tas" -p 6379 ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "demo: redis-server did not answer on $ip_tas:6379" >&2
    return 1
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

echo "== Linux: redis-server on the kernel stack of $tas, $(basename "${bench[0]}") ${bench[*]:1:10}"
ip -n "$tas" addr add "$ip_tas/24" dev veth-tas
ip netns exec "$tas" redis-server "${redis_args[@]}" >"$dir/redis-linux.log" 2>&1 &
rpid=$!
pids+=("$rpid")
wait_redis
ip netns exec "$lnx" "${bench[@]}" >"$dir/linux.csv"
stop_pid "$rpid"
ip -n "$tas" addr del "$ip_tas/24" dev veth-tas

echo "== TAS: tasd --cores 1-2 --nic $nic on the same interface, the same redis-server under tasctl run"
ip netns exec "$tas" "$bin/tasd" --ip "$ip_tas/24" --iface veth-tas --nic "$nic" --cores 1-2 \
    --socket "$sock" >"$dir/tasd.out" 2>"$dir/tasd.log" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$dir/tasd.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$dir/tasd.out" || { echo "demo: tasd did not start:" >&2; cat "$dir/tasd.log" >&2; exit 1; }
sed 's/^/   /' "$dir/tasd.out"
echo "   \$ tasctl run -- redis-server ${redis_args[*]:0:4} ..."
ip netns exec "$tas" "$bin/tasctl" --socket "$sock" run -- redis-server "${redis_args[@]}" \
    >"$dir/redis-tas.log" 2>&1 &
rpid=$!
pids+=("$rpid")
wait_redis
ip netns exec "$lnx" "${bench[@]}" >"$dir/tas.csv"
accepted=$(ip netns exec "$tas" "$bin/tasctl" --socket "$sock" stats slowpath.accepted | awk '{print $2}')

echo "== redis-benchmark -t get,set -n 100000 -c 50 from $lnx: Linux vs TAS ($accepted connections accepted by tasd)"
# CSV columns: test, rps, avg, min, p50, p95, p99, max (ms).
awk -F'"' '
    FNR == 1 { f++; next }
    { t = $2; order[t] = ++n; rps[f, t] = $4; p50[f, t] = $10; p99[f, t] = $14; tests[t] = 1 }
    END {
        printf "   %-5s %12s %12s %10s %10s %10s %10s\n", "", "Linux req/s", "TAS req/s", "Linux p50", "TAS p50", "Linux p99", "TAS p99"
        for (t in tests) names[order[t]] = t
        for (i = 1; i <= n; i++) {
            t = names[i]; if (t == "" || (t in done)) continue; done[t] = 1
            printf "   %-5s %12.0f %12.0f %7.3f ms %7.3f ms %7.3f ms %7.3f ms\n", t, rps[1, t], rps[2, t], p50[1, t], p50[2, t], p99[1, t], p99[2, t]
        }
    }' "$dir/linux.csv" "$dir/tas.csv"

echo "== congestion control, live: 4 clients keep sending GETs while the algorithm changes"
ip netns exec "$lnx" redis-benchmark -h "$ip_tas" -p 6379 -t get -n 100000000 -c 4 -q >/dev/null 2>&1 &
lpid=$!
pids+=("$lpid")
sleep 1
echo "   \$ tasctl flows --port 6379"
ip netns exec "$tas" "$bin/tasctl" --socket "$sock" flows --port 6379 | sed 's/^/   /'
echo "   \$ tasctl cc set timely"
ip netns exec "$tas" "$bin/tasctl" --socket "$sock" cc set timely | sed 's/^/   /'
sleep 1
echo "   \$ tasctl flows --port 6379"
ip netns exec "$tas" "$bin/tasctl" --socket "$sock" flows --port 6379 | sed 's/^/   /'
stop_pid "$lpid"
echo "== done (everything is removed on exit)"
