#!/usr/bin/env bash
# iperf3-stages.sh — one iperf3 stream from the Linux host to `iperf3 -s`
# under the shim on tasd, and where tasd's fast-path core spent its time.
#
# Usage:
#   tools/iperf3-stages.sh [BIN_DIR] [SECS]
#
# BIN_DIR holds tasd, tasctl and libtas_preload.so (default target/release,
# or $CARGO_TARGET_DIR/release); SECS is the length of the stream (default
# 5). Prints the stream's rate (Gbit/s, as iperf3's receiver counted it),
# the load average, and tasd's per-stage counters (`tasctl stats`:
# lanes.rounds, lanes.stage_*_ns, lanes.nic_sends, lanes.app_wakes, see
# tas_runtime::StageStats) with each stage's share of the stage total.
#
# Environment:
#   TASD_ARGS   extra tasd arguments (e.g. "--cpus 0")
#   CLI_ARGS    extra iperf3 client arguments (e.g. "-R": tasd sends)
#   PERF=1      also `perf record -g` the tasd process for 3 s, 1 s into the
#               stream (perf.data in $OUT)
#   OUT         directory for the logs (default a fresh mktemp -d)
#
# Uses tools/testhosts.sh (namespaces ips-tas / ips-lnx, removed at exit).
# Needs root, iperf3 and python3.

set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/tasd-ns.sh
. tools/tasd-ns.sh
BIN="${1:-${CARGO_TARGET_DIR:-target}/release}"
SECS="${2:-5}"
OUT="${OUT:-$(mktemp -d /tmp/iperf3-stages.XXXXXX)}"
mkdir -p "$OUT"
NAME=ips
SOCK="$OUT/tasd.sock"
need_files iperf3-stages "$BIN/tasd" "$BIN/tasctl" "$BIN/libtas_preload.so"
need_cmds iperf3-stages iperf3=iperf3
if [[ "${PERF:-}" == 1 ]]; then
    command -v perf >/dev/null || { echo "iperf3-stages: PERF=1 needs perf (apt-get install -y linux-perf)" >&2; exit 1; }
fi

hosts_up "$NAME"

# shellcheck disable=SC2086
start_tasd "$NAME" "$BIN/tasd" "$SOCK" "$OUT" iperf3-stages ${TASD_ARGS:-}
ip netns exec "$NAME-tas" env TAS_SOCKET="$SOCK" LD_PRELOAD="$BIN/libtas_preload.so" \
    iperf3 -s -p 5201 -1 -B 198.18.0.1 >"$OUT/server.out" 2>&1 &
SERVER=$!
sleep 0.7
PERFJOB=""
if [[ "${PERF:-}" == 1 ]]; then
    (sleep 1; perf record -F 2000 -g -p "$TASD_PID" -o "$OUT/perf.data" -- sleep 3 >/dev/null 2>&1) &
    PERFJOB=$!
fi
# shellcheck disable=SC2086
ip netns exec "$NAME-lnx" iperf3 -c 198.18.0.1 -p 5201 -t "$SECS" -J ${CLI_ARGS:-} >"$OUT/client.json"
wait "$SERVER" 2>/dev/null || true
"$BIN/tasctl" --socket "$SOCK" stats >"$OUT/stats.txt"
[[ -n "$PERFJOB" ]] && wait "$PERFJOB"
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
v = json.load(open(f"{out}/client.json"))
rate = v["end"]["sum_received"]["bits_per_second"] / 1e9
st = dict(l.split() for l in open(f"{out}/stats.txt") if len(l.split()) == 2)
g = lambda k: int(st.get(k, 0))
print(f"iperf3: {rate:.2f} Gbit/s   load average {open('/proc/loadavg').read().split()[0]}   logs {out}")
stages = ["rx", "app_cmds", "slow_cmds", "tx", "nic_send", "notify"]
tot = sum(g(f"lanes.stage_{s}_ns") for s in stages) or 1
print(f"core0 busy {g('core0.busy_ns')/1e9:.2f} s, idle {g('core0.idle_ns')/1e9:.2f} s; "
      f"rounds {g('lanes.rounds')}, frames in {g('fastpath.rx_frames')}, ACKs {g('fastpath.acks_sent')}, "
      f"NIC sends {g('lanes.nic_sends')}, app wake-ups {g('lanes.app_wakes')}")
for s in stages:
    ns = g(f"lanes.stage_{s}_ns")
    print(f"  {s:10} {ns/1e9:7.3f} s  {100*ns/tot:5.1f} %")
EOF
