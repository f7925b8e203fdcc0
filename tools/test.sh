#!/usr/bin/env bash
# Runs every test: unit, packet-level, in-process simulation, and the system
# tests in network namespaces (tasd against the Linux kernel stack and real
# programs), over AF_XDP, AF_PACKET and DPDK. Needs root; installs what it
# needs first (Debian packages; crates through cargo).
# Usage: tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: the system tests need root (network namespaces, AF_XDP); run as root" >&2
    exit 1
fi

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libdpdk 2>/dev/null || need+=(libdpdk-dev)
[[ -n $(ls /usr/lib/llvm-*/lib/libclang*.so* 2>/dev/null) ]] || need+=(libclang-dev clang)
if ((${#need[@]})); then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

features=(--features tasd/dpdk)
cargo build --release --workspace --lib --bins --examples "${features[@]}"
# Everything, system tests over AF_XDP (the default backend).
cargo test --release --workspace "${features[@]}" -- --test-threads=2
# The interop suite again over the other backends. DPDK's core never sleeps,
# so those tests run one at a time on a 2-core machine.
TAS_TEST_NIC=af_packet cargo test --release -p tas-system-tests "${features[@]}" --test interop -- --test-threads=2
TAS_TEST_NIC=dpdk cargo test --release -p tas-system-tests "${features[@]}" --test interop -- --test-threads=1
