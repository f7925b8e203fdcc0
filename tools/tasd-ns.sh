# tasd-ns.sh — sourced by the tools that run tasd in a tools/testhosts.sh
# namespace pair (iperf3-stages.sh, sockperf-ul.sh); not run on its own.
#
#   hosts_up NAME
#
# Makes the test hosts NAME-tas / NAME-lnx afresh and, at the script's
# exit, kills TASD_PID and the pids in EXTRA_PIDS and removes the hosts.
#
#   start_tasd NAME TASD_BIN SOCK OUT WHO [TASD_ARGS...]
#
# Starts TASD_BIN in NAME-tas on veth-tas (198.18.0.1/24, AF_XDP) with its
# attach socket at SOCK, stdout in OUT/tasd.out and the log (TAS_LOG=info)
# in OUT/tasd.log; sets TASD_PID and returns once tasd says it is ready.
# Exits the calling script (messages prefixed with WHO) if it is not ready
# within 10 s.
TASD_PID=""
EXTRA_PIDS=()
hosts_up() {
    HOSTS_NAME="$1"
    trap hosts_cleanup EXIT
    tools/testhosts.sh down "$HOSTS_NAME" >/dev/null 2>&1 || true
    tools/testhosts.sh up "$HOSTS_NAME" >/dev/null
}
hosts_cleanup() {
    local p
    for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n "$TASD_PID" ]] && kill "$TASD_PID" 2>/dev/null && wait "$TASD_PID" 2>/dev/null
    tools/testhosts.sh down "$HOSTS_NAME" >/dev/null 2>&1 || true
}

start_tasd() {
    local name="$1" bin="$2" sock="$3" out="$4" who="$5"
    shift 5
    ip netns exec "$name-tas" env TAS_LOG=info "$bin" --ip 198.18.0.1/24 --iface veth-tas \
        --nic af_xdp --socket "$sock" "$@" >"$out/tasd.out" 2>"$out/tasd.log" &
    TASD_PID=$!
    for _ in $(seq 100); do
        grep -q "tasd ready" "$out/tasd.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$who: tasd not ready" >&2
    cat "$out/tasd.log" >&2
    exit 1
}
