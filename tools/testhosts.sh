#!/usr/bin/env bash
# testhosts.sh — two test hosts in network namespaces, joined by a veth pair.
#
# Usage:
#   tools/testhosts.sh up NAME            create NAME-tas and NAME-lnx (fails if they exist)
#   tools/testhosts.sh bridge-up NAME     the same two hosts, but joined through a third
#                                         namespace NAME-brg (see "Bridged topology")
#   tools/testhosts.sh down NAME          remove all namespaces of NAME (idempotent, never
#                                         fails because something is already gone)
#   tools/testhosts.sh exec NAME SIDE CMD [ARGS...]
#                                         run CMD inside NAME-SIDE (SIDE = tas | lnx | brg)
#   tools/testhosts.sh status NAME        show links and addresses of every namespace of NAME
#   tools/testhosts.sh --help
#
# Topology made by `up NAME`:
#
#   netns NAME-tas                          netns NAME-lnx
#   ┌──────────────────────────┐            ┌──────────────────────────────┐
#   │ veth-tas  (no kernel IP) │ ── veth ── │ veth-lnx  198.18.0.2/24      │
#   │ lo up                    │            │ lo up                        │
#   └──────────────────────────┘            └──────────────────────────────┘
#
# * The TAS side has NO kernel IPv4 address: tasd claims 198.18.0.1 itself in
#   user space and answers ARP for it, so the kernel never answers TCP for it.
#   IPv6 is disabled on both veth ends so that no NDP/MLD chatter reaches the
#   backends (the service is IPv4 only).
# * Checksum/segmentation offloads are off on both ends
#   (ethtool -K IF tx off tso off gso off gro off rx off); a failure of
#   "rx off" alone is ignored. Without this, frames from the kernel side
#   arrive with unfinished checksums and 64 KB sizes.
# * Only addresses from 198.18.0.0/15 are used.
# * Both veth ends have TESTHOSTS_QUEUES (default 4) RX and TX queues, like
#   a multi-queue NIC: the kernel side picks a TX queue by the flow's hash,
#   and the frame arrives on the same-numbered RX queue of the TAS side, so
#   each flow stays on one queue (one fast-path lane). net.core.txrehash=0
#   on the Linux side keeps it there after a TCP retransmission timeout
#   (the kernel would otherwise pick a new hash, moving the flow, which RSS
#   on a real NIC never does).
#
# Bridged topology made by `bridge-up NAME` (for link impairments; this kernel
# has no netem):
#
#   netns NAME-tas          netns NAME-brg                   netns NAME-lnx
#   ┌──────────────┐        ┌──────────────────────────┐        ┌────────────────────────┐
#   │ veth-tas     │─ veth ─│ brg-tas  (no IP) brg-lnx │─ veth ─│ veth-lnx 198.18.0.2/24 │
#   └──────────────┘        └──────────────────────────┘        └────────────────────────┘
#
# * The hosts look exactly as after `up` (same interface names, addresses,
#   queues, offloads), so tasd and the test programs run unchanged.
# * NAME-brg has no addresses, IPv4 forwarding off, IPv6 off and offloads off
#   on both its ends (GRO would merge frames the forwarder then cannot send).
#   Nothing crosses it until a program forwards frames between brg-tas and
#   brg-lnx: `tests/src/bin/impair.rs` (AF_PACKET, seeded loss, duplication,
#   reordering, corruption). Its veth ends have as many queues as the hosts'.
#
# On success `up` prints, one per line, `key=value` pairs (tas_ns, lnx_ns,
# tas_if, lnx_if, tas_mac, lnx_mac, lnx_ip, tas_ip) that scripts may `eval`.
#
# Needs root, iproute2 (`ip`) and `ethtool`. Installs nothing itself.
# Environment: TESTHOSTS_LNX_IP (default 198.18.0.2/24),
#              TESTHOSTS_TAS_IP (default 198.18.0.1, printed only, never configured),
#              TESTHOSTS_QUEUES (default 4: RX and TX queues of each veth end, 1..64).

set -euo pipefail

LNX_IP="${TESTHOSTS_LNX_IP:-198.18.0.2/24}"
TAS_IP="${TESTHOSTS_TAS_IP:-198.18.0.1}"
QUEUES="${TESTHOSTS_QUEUES:-4}"
TAS_IF=veth-tas
LNX_IF=veth-lnx

usage() {
    # Print the header comment (everything from line 2 up to the first
    # non-comment line), without the leading "# ".
    sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "testhosts: error: $*" >&2
    exit 1
}

need_tools() {
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=("ip (Debian package iproute2)")
    command -v ethtool >/dev/null 2>&1 || missing+=("ethtool (Debian package ethtool)")
    if ((${#missing[@]})); then
        die "missing tools: ${missing[*]}; install them, e.g. apt-get install -y iproute2 ethtool"
    fi
    if [[ $(id -u) -ne 0 ]]; then
        die "must run as root (network namespaces and veth need CAP_NET_ADMIN)"
    fi
}

check_name() {
    local name="${1:-}"
    [[ -n "$name" ]] || die "missing NAME (see --help)"
    [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad NAME '$name': use only letters, digits, '_', '.', '-'"
    ((${#name} <= 200)) || die "NAME too long"
}

ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"
}

offloads_off() {
    local ns="$1" ifc="$2"
    ip netns exec "$ns" ethtool -K "$ifc" tx off tso off gso off gro off >/dev/null 2>&1 ||
        die "ethtool -K $ifc tx off tso off gso off gro off failed in $ns"
    # Some drivers refuse to change rx checksumming; that is harmless here.
    ip netns exec "$ns" ethtool -K "$ifc" rx off >/dev/null 2>&1 || true
}

mac_of() {
    ip -n "$1" -o link show dev "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'
}

cmd_down() {
    local name="$1" ns
    for ns in "$name-tas" "$name-lnx" "$name-brg"; do
        if ns_exists "$ns"; then
            # Deleting either namespace destroys the veth pair too.
            ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    echo "testhosts: $name-tas and $name-lnx are down"
}

cmd_bridge_up() {
    local name="$1"
    local tas="$name-tas" lnx="$name-lnx" brg="$name-brg"
    if ns_exists "$tas" || ns_exists "$lnx" || ns_exists "$brg"; then
        die "$tas, $lnx or $brg already exists; run '$0 down $name' first"
    fi
    UP_NAME="$name"
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then echo "testhosts: bridge-up failed, cleaning up" >&2; cmd_down "$UP_NAME" >/dev/null 2>&1 || true; fi' EXIT
    ip netns add "$tas"
    ip netns add "$lnx"
    ip netns add "$brg"
    local ns
    for ns in "$tas" "$lnx" "$brg"; do
        ip -n "$ns" link set lo up
    done
    ip link add "$TAS_IF" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$tas" \
        type veth peer name brg-tas numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$brg"
    ip link add "$LNX_IF" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$lnx" \
        type veth peer name brg-lnx numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$brg"
    ip netns exec "$tas" sysctl -qw "net.ipv6.conf.$TAS_IF.disable_ipv6=1"
    ip netns exec "$lnx" sysctl -qw "net.ipv6.conf.$LNX_IF.disable_ipv6=1"
    ip netns exec "$brg" sysctl -qw net.ipv6.conf.brg-tas.disable_ipv6=1
    ip netns exec "$brg" sysctl -qw net.ipv6.conf.brg-lnx.disable_ipv6=1
    ip netns exec "$brg" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$lnx" sysctl -qw net.core.txrehash=0
    offloads_off "$tas" "$TAS_IF"
    offloads_off "$lnx" "$LNX_IF"
    offloads_off "$brg" brg-tas
    offloads_off "$brg" brg-lnx
    ip -n "$lnx" addr add "$LNX_IP" dev "$LNX_IF"
    ip -n "$brg" link set brg-tas up
    ip -n "$brg" link set brg-lnx up
    ip -n "$tas" link set "$TAS_IF" up
    ip -n "$lnx" link set "$LNX_IF" up
    UP_DONE=1
    echo "tas_ns=$tas"
    echo "lnx_ns=$lnx"
    echo "brg_ns=$brg"
    echo "tas_if=$TAS_IF"
    echo "lnx_if=$LNX_IF"
    echo "brg_tas_if=brg-tas"
    echo "brg_lnx_if=brg-lnx"
    echo "tas_mac=$(mac_of "$tas" "$TAS_IF")"
    echo "lnx_mac=$(mac_of "$lnx" "$LNX_IF")"
    echo "tas_ip=$TAS_IP"
    echo "lnx_ip=${LNX_IP%/*}"
}

cmd_up() {
    local name="$1"
    local tas="$name-tas" lnx="$name-lnx"
    if ns_exists "$tas" || ns_exists "$lnx"; then
        die "$tas or $lnx already exists; run '$0 down $name' first"
    fi
    # From here on, undo everything if any step fails (set -e or die): the
    # EXIT trap runs however the script ends, and does nothing on success.
    UP_NAME="$name"
    UP_DONE=0
    trap 'if [[ $UP_DONE != 1 ]]; then echo "testhosts: up failed, cleaning up" >&2; cmd_down "$UP_NAME" >/dev/null 2>&1 || true; fi' EXIT
    ip netns add "$tas"
    ip netns add "$lnx"
    ip -n "$tas" link set lo up
    ip -n "$lnx" link set lo up
    # Create the pair directly inside the namespaces so that the names never
    # collide with interfaces of the root namespace or of other test hosts.
    # Equal queue counts on both ends (XDP on a veth needs at least as many
    # RX queues as its peer has TX queues).
    ip link add "$TAS_IF" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$tas" \
        type veth peer name "$LNX_IF" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$lnx"
    ip netns exec "$tas" sysctl -qw "net.ipv6.conf.$TAS_IF.disable_ipv6=1"
    ip netns exec "$lnx" sysctl -qw "net.ipv6.conf.$LNX_IF.disable_ipv6=1"
    ip netns exec "$lnx" sysctl -qw net.core.txrehash=0
    offloads_off "$tas" "$TAS_IF"
    offloads_off "$lnx" "$LNX_IF"
    ip -n "$lnx" addr add "$LNX_IP" dev "$LNX_IF"
    ip -n "$tas" link set "$TAS_IF" up
    ip -n "$lnx" link set "$LNX_IF" up
    UP_DONE=1
    echo "tas_ns=$tas"
    echo "lnx_ns=$lnx"
    echo "tas_if=$TAS_IF"
    echo "lnx_if=$LNX_IF"
    echo "tas_mac=$(mac_of "$tas" "$TAS_IF")"
    echo "lnx_mac=$(mac_of "$lnx" "$LNX_IF")"
    echo "tas_ip=$TAS_IP"
    echo "lnx_ip=${LNX_IP%/*}"
}

cmd_status() {
    local name="$1" ns
    for ns in "$name-tas" "$name-brg" "$name-lnx"; do
        if ns_exists "$ns"; then
            echo "== $ns"
            ip -n "$ns" -br link
            ip -n "$ns" -br addr
        else
            [[ $ns == "$name-brg" ]] || echo "== $ns: absent"
        fi
    done
}

cmd_exec() {
    local name="$1" side="${2:-}"
    case "$side" in
        tas | lnx | brg) ;;
        *) die "SIDE must be 'tas', 'lnx' or 'brg' (got '${side}')" ;;
    esac
    shift 2
    (($#)) || die "missing CMD"
    ns_exists "$name-$side" || die "$name-$side does not exist; run '$0 up $name' first"
    exec ip netns exec "$name-$side" "$@"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        -h | --help | help | "")
            usage
            [[ -n "$cmd" ]] || exit 2
            exit 0
            ;;
    esac
    shift
    need_tools
    check_name "${1:-}"
    [[ "$QUEUES" =~ ^[0-9]+$ ]] && ((QUEUES >= 1 && QUEUES <= 64)) ||
        die "TESTHOSTS_QUEUES must be a number in 1..64 (got '$QUEUES')"
    case "$cmd" in
        up) cmd_up "$1" ;;
        bridge-up) cmd_bridge_up "$1" ;;
        down) cmd_down "$1" ;;
        status) cmd_status "$1" ;;
        exec) cmd_exec "$@" ;;
        *) die "unknown command '$cmd' (see --help)" ;;
    esac
}

main "$@"
