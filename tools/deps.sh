# Sourced by tools/test.sh and tools/demo.sh: install what a script needs,
# checked by what the script actually uses (the command it runs, the file a
# build loads), never by a package name or a look-alike file.
#
#   need cmd:NAME=PACKAGE        a command on PATH (or in /usr/sbin, /sbin)
#   need pc:NAME=PACKAGE         a pkg-config module (pkg-config itself is needed)
#   need file:PATH=PACKAGE       an executable at PATH (a program off PATH, like
#                                /usr/lib/postgresql/15/bin/postgres)
#   need libclang=PACKAGE        the libclang shared object bindgen loads
#   ensure_deps                  installs every missing package in one apt-get
#                                call, checks again, exits with a one-line
#                                error naming the package when still missing
#
# Runs as root with or without sudo: nothing here calls sudo.

_deps_checks=()

need() { _deps_checks+=("$1"); }

# Prints the path of the libclang bindgen (clang-sys) will load, or nothing.
# clang-sys loads a file named libclang.so, libclang-N.so or libclang.so.N
# (never libclang-cpp*, the C++ library): we pick the newest LLVM's libclang.so
# and export LIBCLANG_PATH so bindgen loads exactly the one we checked.
libclang_path() {
    local f
    for f in $(ls -d /usr/lib/llvm-*/lib/libclang.so 2>/dev/null | sort -V -r); do
        # A dangling symlink (runtime package removed) is not a library.
        [[ -e "$f" ]] && { readlink -f "$f"; return 0; }
    done
    return 0
}

_deps_ok() {
    local check="${1%%=*}" kind name
    kind="${check%%:*}"
    name="${check#*:}"
    case "$kind" in
        cmd) command -v "$name" >/dev/null 2>&1 || [[ -x /usr/sbin/$name || -x /sbin/$name ]] ;;
        pc) command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$name" ;;
        file) [[ -x "$name" ]] ;;
        libclang) [[ -n "$(libclang_path)" ]] ;;
        *) echo "deps: unknown check '$check'" >&2; return 2 ;;
    esac
}

ensure_deps() {
    local c missing=()
    for c in "${_deps_checks[@]}"; do
        _deps_ok "$c" || missing+=("${c#*=}")
    done
    if ((${#missing[@]})); then
        # shellcheck disable=SC2207
        missing=($(printf '%s\n' "${missing[@]}" | sort -u))
        echo "deps: installing ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            echo "deps: missing ${missing[*]} and not root: run as root, or apt-get install ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || true
        if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/tmp/tas-deps-apt.log 2>&1; then
            tail -n 20 /tmp/tas-deps-apt.log >&2
            echo "deps: apt-get install ${missing[*]} failed (log: /tmp/tas-deps-apt.log)" >&2
            exit 1
        fi
    fi
    local bad=()
    for c in "${_deps_checks[@]}"; do
        _deps_ok "$c" || bad+=("${c%%=*} (Debian package ${c#*=})")
    done
    if ((${#bad[@]})); then
        echo "deps: still missing after install: ${bad[*]}" >&2
        exit 1
    fi
    local lc
    lc="$(libclang_path)"
    # clang-sys accepts a file here: bindgen then loads exactly this one.
    if [[ -n "$lc" ]]; then export LIBCLANG_PATH="$lc"; fi
    return 0
}

# One line per thing found: what it is, its version, where it is.
report_deps() {
    local c name p v
    echo "deps: rustc: $(rustc --version 2>&1) ($(command -v rustc))"
    echo "deps: cargo: $(cargo --version 2>&1) ($(command -v cargo))"
    for c in "${_deps_checks[@]}"; do
        c="${c%%=*}"
        name="${c#*:}"
        case "${c%%:*}" in
            cmd)
                p="$(command -v "$name" 2>/dev/null || ls /usr/sbin/"$name" /sbin/"$name" 2>/dev/null | head -n 1 || true)"
                v=""
                for f in "$p" "$(readlink -f "$p")" "/bin/$name" "/sbin/$name"; do
                    v="$(dpkg -S "$f" 2>/dev/null | head -n 1 | cut -d: -f1 | cut -d, -f1 || true)"
                    if [[ -n "$v" ]]; then break; fi
                done
                if [[ -n "$v" ]]; then v="$v $(dpkg-query -W -f='${Version}' "$v" 2>/dev/null || true)"; fi
                echo "deps: $name: ${v:-unknown package} ($p)"
                ;;
            pc) echo "deps: $name: $(pkg-config --modversion "$name") ($(pkg-config --variable=libdir "$name"))" ;;
            file)
                v="$(dpkg -S "$(readlink -f "$name")" 2>/dev/null | head -n 1 | cut -d: -f1 | cut -d, -f1 || true)"
                if [[ -n "$v" ]]; then v="$v $(dpkg-query -W -f='${Version}' "$v" 2>/dev/null || true)"; fi
                echo "deps: $name: ${v:-unknown package}"
                ;;
            libclang) echo "deps: libclang for bindgen: $(libclang_path) (LIBCLANG_PATH=${LIBCLANG_PATH:-})" ;;
        esac
    done
    return 0
}
