#!/usr/bin/env bash
# Runs every test: unit, packet-level, in-process simulation, and the system
# tests in network namespaces (tasd against the Linux kernel stack and real
# programs), over AF_XDP, AF_PACKET and DPDK. Run as root (with or without
# sudo): installs every Debian package the tests use in one step first, then
# prints what it found (versions and paths), so a broken install shows in the
# log.
# Usage: tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/deps.sh
. tools/deps.sh

if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: the system tests need root (network namespaces, AF_XDP); run as root" >&2
    exit 1
fi

# Everything the build and the tests run or load, each checked by what is used.
need cmd:ip=iproute2
need cmd:ethtool=ethtool
need cmd:ping=iputils-ping
need cmd:cc=gcc
need cmd:pkg-config=pkg-config
need pc:libdpdk=libdpdk-dev
need libclang=libclang-dev
need cmd:redis-server=redis-server
need cmd:redis-benchmark=redis-tools
need cmd:redis-cli=redis-tools
need cmd:nginx=nginx-light
need cmd:curl=curl
need cmd:sha256sum=coreutils
need cmd:node=nodejs
need cmd:ab=apache2-utils
need cmd:iperf3=iperf3
need cmd:sockperf=sockperf
need cmd:python3=python3
need cmd:tcpdump=tcpdump
need cmd:strace=strace
# The deployed servers of tests/tests/servers.rs.
need cmd:haproxy=haproxy
need cmd:socat=socat
need cmd:memcached=memcached
need cmd:sshd=openssh-server
need cmd:ssh=openssh-client
need cmd:ssh-keygen=openssh-client
need cmd:setpriv=util-linux
need file:/usr/lib/postgresql/15/bin/postgres=postgresql-15
need file:/usr/lib/postgresql/15/bin/initdb=postgresql-15
need file:/usr/lib/postgresql/15/bin/pgbench=postgresql-15
ensure_deps
report_deps

features=(--features tasd/dpdk)
cargo build --release --workspace --lib --bins --examples "${features[@]}"
# Everything, system tests over AF_XDP (the default backend).
cargo test --release --workspace "${features[@]}" -- --test-threads=2
# The shim's own unit tests (its pure rules: spin budget, SA_RESTART
# dispositions, ...); `test = false` keeps them out of the workspace run.
cargo test --release -p tas-preload --lib
# The interop suite again over the other backends. DPDK's core never sleeps,
# so those tests run one at a time on a 2-core machine.
TAS_TEST_NIC=af_packet cargo test --release -p tas-system-tests "${features[@]}" --test interop -- --test-threads=2
TAS_TEST_NIC=dpdk cargo test --release -p tas-system-tests "${features[@]}" --test interop -- --test-threads=1
