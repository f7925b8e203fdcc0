# tasd-ns.sh — sourced by the tools that run tasd in a tools/testhosts.sh
# namespace pair (iperf3-stages.sh, sockperf-ul.sh, redis-frames.sh); not
# run on its own.
#
#   hosts_up NAME
#
# Makes the test hosts NAME-tas / NAME-lnx afresh and, at the script's
# exit (or when the script calls hosts_cleanup itself, before the next
# hosts_up), kills TASD_PID and the pids in EXTRA_PIDS and removes the
# hosts.
#
#   start_tasd NAME TASD_BIN SOCK OUT WHO [TASD_ARGS...]
#
# Starts TASD_BIN in NAME-tas on veth-tas (198.18.0.1/24, AF_XDP) with its
# attach socket at SOCK, stdout in OUT/tasd.out and the log (TAS_LOG=info)
# in OUT/tasd.log; sets TASD_PID and returns once tasd says it is ready.
# Exits the calling script (messages prefixed with WHO) if it is not ready
# within 10 s.
#
#   need_files WHO FILE...
#   need_cmds WHO CMD=PACKAGE...
#
# Exit the calling script with a one-line message (prefixed with WHO) naming
# the first build output or command that is missing, and how to get it.
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
    if [[ -n "$TASD_PID" ]] && kill "$TASD_PID" 2>/dev/null; then
        wait "$TASD_PID" 2>/dev/null || true
    fi
    tools/testhosts.sh down "$HOSTS_NAME" >/dev/null 2>&1 || true
    # Ready for the next hosts_up (a script may run several pairs in turn).
    EXTRA_PIDS=()
    TASD_PID=""
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

need_files() {
    local who="$1" f
    shift
    for f in "$@"; do
        [[ -e "$f" ]] || { echo "$who: $f missing (cargo build --release --workspace --bins && cargo build --release -p tas-preload)" >&2; exit 1; }
    done
}

need_cmds() {
    local who="$1" c
    shift
    for c in "$@"; do
        command -v "${c%%=*}" >/dev/null || { echo "$who: ${c%%=*} missing (apt-get install -y ${c#*=})" >&2; exit 1; }
    done
}
