#!/usr/bin/env bash
# Installs tasd, tasctl and libtas_preload.so under a prefix:
#
#   PREFIX/bin/tasd
#   PREFIX/bin/tasctl
#   PREFIX/lib/libtas_preload.so            (tasctl run finds it here)
#   PREFIX/lib/systemd/system/tasd.service  (ExecStart=PREFIX/bin/tasd)
#   PREFIX/share/tas/tasd.default           (example for /etc/default/tasd)
#
# Usage: tools/install.sh [--prefix DIR] [--no-build] [--uninstall]
#   --prefix DIR   where to install (absolute; default /usr/local)
#   --no-build     install what is built already in ${CARGO_TARGET_DIR:-target}/release
#                  (for `sudo tools/install.sh` when cargo is only in your PATH)
#   --uninstall    remove exactly the files listed above
# DESTDIR is honoured (staged installs for packaging). Nothing outside the
# prefix is touched: /etc/default/tasd and `systemctl enable` are yours.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set /{/^set /q;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }

prefix=/usr/local
build=1
uninstall=0
while (($#)); do
    case "$1" in
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $prefix == /* ]] || { echo "install.sh: --prefix must be an absolute path, not '$prefix'" >&2; exit 2; }
prefix="${prefix%/}"
dest="${DESTDIR:-}${prefix}"

files=(bin/tasd bin/tasctl lib/libtas_preload.so lib/systemd/system/tasd.service share/tas/tasd.default)

if ((uninstall)); then
    for f in "${files[@]}"; do
        if [[ -e $dest/$f ]]; then rm -f "$dest/$f" && echo "removed $dest/$f"; fi
    done
    rmdir "$dest/share/tas" 2>/dev/null || true
    exit 0
fi

target="${CARGO_TARGET_DIR:-target}/release"
if ((build)); then
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: build as your user (cargo build --release -p tasd -p tasctl -p tas-preload), then run install.sh --no-build"
    echo "== building tasd, tasctl, libtas_preload.so (release)"
    cargo build --release -p tasd -p tasctl -p tas-preload 2>&1 | tail -n 1
fi
for f in tasd tasctl libtas_preload.so; do
    [[ -f $target/$f ]] || die "$target/$f is not built (cargo build --release -p tasd -p tasctl -p tas-preload)"
done

install -d "$dest/bin" "$dest/lib/systemd/system" "$dest/share/tas"
install -m 0755 "$target/tasd" "$target/tasctl" "$dest/bin/"
install -m 0644 "$target/libtas_preload.so" "$dest/lib/"
sed "s|/usr/local/|$prefix/|g" tools/tasd.service >"$dest/lib/systemd/system/tasd.service"
chmod 0644 "$dest/lib/systemd/system/tasd.service"
cat >"$dest/share/tas/tasd.default" <<'DEFAULT'
# /etc/default/tasd: read by tasd.service (EnvironmentFile).
# TASD_ARGS are tasd's options (`tasd --help`). --ip must be an address the
# kernel does NOT own on --iface: tasd answers ARP for it itself.
TASD_ARGS="--ip 192.0.2.10/24 --iface eth1 --cores 1-2"
# Log filter (tasd logs to stderr, i.e. the journal).
TAS_LOG=info
DEFAULT
chmod 0644 "$dest/share/tas/tasd.default"

for f in "${files[@]}"; do echo "installed $dest/$f"; done
unitdir="$prefix/lib/systemd/system"
echo "next: cp $prefix/share/tas/tasd.default /etc/default/tasd, edit TASD_ARGS, then"
case "$prefix" in
    /usr|/usr/local) echo "      systemctl daemon-reload && systemctl enable --now tasd" ;;
    *) echo "      systemctl link $unitdir/tasd.service && systemctl enable --now tasd" ;;
esac
echo "run a program on TAS: $prefix/bin/tasctl run -- PROGRAM [ARGS...]"
