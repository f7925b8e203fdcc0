#!/usr/bin/env bash
# The main job, end to end: build, create two test hosts (network namespaces
# joined by a veth pair), start tasd on one, run an echo server on TAS there,
# and drive it from the Linux kernel stack on the other host. Prints results.
# Everything it creates is removed on exit. Run as root (with or without
# sudo); installs the Debian packages it uses when they are missing.
# Usage: tools/demo.sh [af_xdp|af_packet]
set -euo pipefail
cd "$(dirname "$0")/.."
nic="${1:-af_xdp}"
name="demo$$"
dir="$(mktemp -d /tmp/tas-demo.XXXXXX)"
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    tools/testhosts.sh down "$name" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
# shellcheck source=tools/deps.sh
. tools/deps.sh
need cmd:ip=iproute2
need cmd:ethtool=ethtool
need cmd:ping=iputils-ping
need cmd:cc=gcc
ensure_deps

echo "== building (release)"
cargo build --release --workspace --bins --examples 2>&1 | tail -n 1
bin=target/release

echo "== test hosts: $name-tas (TAS, 198.18.0.1) <-veth-> $name-lnx (Linux, 198.18.0.2)"
tools/testhosts.sh up "$name" >/dev/null
export TAS_SOCKET="$dir/tasd.sock"

echo "== starting tasd ($nic)"
ip netns exec "$name-tas" "$bin/tasd" --ip 198.18.0.1/24 --iface veth-tas --nic "$nic" --socket "$TAS_SOCKET" >"$dir/tasd.out" 2>"$dir/tasd.log" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$dir/tasd.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$dir/tasd.out" || { echo "tasd did not start:"; cat "$dir/tasd.log"; exit 1; }
sed 's/^/   /' "$dir/tasd.out"

echo "== echo server on TAS (port 7)"
ip netns exec "$name-tas" "$bin/peer" --tas echo-server 7 >"$dir/srv.out" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$dir/srv.out" 2>/dev/null && break; sleep 0.1; done

echo "== ping 198.18.0.1 from Linux"
ip netns exec "$name-lnx" ping -c 3 -i 0.2 -W 2 198.18.0.1 | tail -n 2 | sed 's/^/   /'

echo "== 64-byte echo RPCs from a Linux client (kernel TCP) to the TAS server"
ip netns exec "$name-lnx" "$bin/peer" echo-client 198.18.0.1 7 10000 64 | sed 's/^/   /'
echo "== same, 100 concurrent connections"
ip netns exec "$name-lnx" "$bin/peer" echo-client 198.18.0.1 7 10000 64 100 | sed 's/^/   /'

echo "== 100 MB from Linux to a TAS receiver, checked byte for byte"
ip netns exec "$name-tas" "$bin/peer" --tas recv 5001 104857600 42 >"$dir/recv.out" &
rp=$!; pids+=($rp)
for _ in $(seq 50); do grep -q listening "$dir/recv.out" 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N)
ip netns exec "$name-lnx" "$bin/peer" send 198.18.0.1 5001 104857600 42 >/dev/null
wait $rp
end=$(date +%s.%N)
echo "   $(tail -n 1 "$dir/recv.out"): $(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.2f s, %.0f Mbit/s", e-s, 838.8608/(e-s)}')"
echo "== tasctl status (tasd's control socket)"
ip netns exec "$name-tas" "$bin/tasctl" --socket "$TAS_SOCKET" status | sed 's/^/   /'
echo "== done"
