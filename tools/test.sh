#!/usr/bin/env bash
# Runs every test: unit, packet-level, in-process integration and the system
# tests in network namespaces (needs root). Installs what it needs first.
# Usage: tools/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test.sh: missing ${need[*]} and not root to install them" >&2
        exit 1
    fi
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: the system tests need root (network namespaces); run as root" >&2
    exit 1
fi

cargo build --release --workspace --bins --examples
cargo test --release --workspace "$@" -- --test-threads=2
