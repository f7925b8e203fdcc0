#!/usr/bin/env bash
# Instructions per unit of the fast path's common case, from callgrind.
#
# Runs `fastpath-bench --callgrind MODE` under valgrind for every mode and
# flow count, with collection switched on only inside `tas_bench_measured`
# (the measured loop; warm-up runs under another name), and prints
# Ir(tas_bench_measured, inclusive) / units.
#
# usage: benches/callgrind.sh [options]
#   --modes "rx ack_tx pair rpc" scenarios (default all four)
#   --flows "1 1024 65536"     flow counts (default these three)
#   --packets N                units measured per run (default 100000)
#   --cache-sim                also simulate caches: D1 and LL misses per unit
#   --ll BYTES                 simulated last-level cache for --cache-sim
#                              (default 2097152 = this VM's L2; valgrind's
#                              own guess from CPUID in these VMs is wrong)
#   --annotate N               print the top N functions (self cost) per run
#   --keep DIR                 keep the callgrind.out files in DIR
#
# Needs valgrind; installs it with apt-get when missing and running as root.
# Builds with CARGO_TARGET_DIR (default /tmp/target-bench).
set -euo pipefail

modes="rx ack_tx pair rpc"
flows="1 1024 65536"
packets=100000
cache_sim=no
ll=2097152
annotate=0
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --modes) modes="$2"; shift 2 ;;
        --flows) flows="$2"; shift 2 ;;
        --packets) packets="$2"; shift 2 ;;
        --cache-sim) cache_sim=yes; shift ;;
        --ll) ll="$2"; shift 2 ;;
        --annotate) annotate="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "callgrind.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "callgrind.sh: installing valgrind" >&2
        apt-get install -y -qq valgrind >/dev/null || {
            apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
        }
    else
        echo "callgrind.sh: valgrind is missing (apt-get install -y valgrind)" >&2
        exit 1
    fi
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-bench}"
(cd "$root" && cargo build --release -q -p tas-benches --bin fastpath-bench)
bin="$CARGO_TARGET_DIR/release/fastpath-bench"

if [ -n "$keep" ]; then
    dir="$keep"
    mkdir -p "$dir"
else
    dir="$(mktemp -d /tmp/tas-callgrind.XXXXXX)"
    trap 'rm -rf "$dir"' EXIT
fi

# Ir (and with --cache-sim, D1 and LL misses) per unit from one profile:
# the `events:` line names the columns of the `totals:` line.
per_unit() {
    awk -v units="$2" '
        /^events:/ { for (i = 2; i <= NF; i++) ev[i - 1] = $i }
        /^totals:/ { for (i = 2; i <= NF; i++) tot[ev[i - 1]] = $i }
        END {
            if (!("Ir" in tot)) { print "no-totals"; exit }
            printf "%.1f", tot["Ir"] / units
            if ("D1mr" in tot)
                printf " %.2f %.2f", (tot["D1mr"] + tot["D1mw"]) / units,
                                     (tot["DLmr"] + tot["DLmw"]) / units
            printf "\n"
        }' "$1"
}

# Cache geometry of this VM (AMD EPYC: 48 KiB 12-way L1d, 32 KiB I1);
# any --D1/--LL option switches simulation on, so only pass them with it.
sim_opts=(--cache-sim=no)
if [ "$cache_sim" = yes ]; then
    sim_opts=(--cache-sim=yes --D1=49152,12,64 --I1=32768,8,64 --LL="$ll",16,64)
fi

declare -A result
for mode in $modes; do
    for f in $flows; do
        out="$dir/callgrind.$mode.$f.out"
        log="$dir/log.$mode.$f"
        if ! valgrind --tool=callgrind --collect-atstart=no \
            --toggle-collect='*tas_bench_measured*' \
            "${sim_opts[@]}" \
            --callgrind-out-file="$out" \
            "$bin" --callgrind "$mode" --flows "$f" --packets "$packets" >"$log" 2>&1; then
            echo "callgrind.sh: $mode at $f flows failed:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        units=$(sed -n 's/.* units=\([0-9]*\) .*/\1/p' "$log" | head -1)
        if [ -z "$units" ] || [ "$units" -eq 0 ]; then
            echo "callgrind.sh: no unit count in $log" >&2
            exit 1
        fi
        result[$mode,$f]=$(per_unit "$out" "$units")
        # The measured loop must not allocate (names appear in the profile
        # only for code that ran while collecting).
        if grep -qE '^c?fn=.*(malloc|calloc|realloc|__rust_alloc)' "$out"; then
            echo "callgrind.sh: WARNING: allocation inside the measured loop ($mode, $f flows)" >&2
        fi
        if [ "$cache_sim" = yes ]; then what="Ir, D1 misses, LL misses"; else what="Ir"; fi
        echo "  $mode, $f flows: $units units, $what per unit: ${result[$mode,$f]}" >&2
        if [ "$annotate" -gt 0 ]; then
            # (head closes the pipe early: SIGPIPE upstream is not a failure)
            echo "--- top $annotate functions (self Ir), $mode, $f flows"
            callgrind_annotate --inclusive=no "$out" 2>/dev/null |
                awk '/file:function/ { on = 1; getline; next } on && NF' | head -n "$annotate" || true
        fi
    done
done

echo
printf "%-8s" "mode"
for f in $flows; do printf " %14s" "$f flows"; done
echo "   (instructions per unit)"
for mode in $modes; do
    printf "%-8s" "$mode"
    for f in $flows; do printf " %14s" "$(echo "${result[$mode,$f]}" | cut -d' ' -f1)"; done
    echo
done
if [[ " $modes " == *" rx "* && " $modes " == *" ack_tx "* ]]; then
    printf "%-8s" "rx+ack"
    for f in $flows; do
        a=$(echo "${result[rx,$f]}" | cut -d' ' -f1)
        b=$(echo "${result[ack_tx,$f]}" | cut -d' ' -f1)
        printf " %14s" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", a + b }')"
    done
    echo
fi
if [ "$cache_sim" = yes ]; then
    echo
    printf "%-8s" "mode"
    for f in $flows; do printf " %14s" "$f flows"; done
    echo "   (simulated D1 / LL misses per unit, LL = $ll B 16-way)"
    for mode in $modes; do
        printf "%-8s" "$mode"
        for f in $flows; do
            printf " %14s" "$(echo "${result[$mode,$f]}" | awk '{ printf "%s / %s", $2, $3 }')"
        done
        echo
    done
fi
[ -n "$keep" ] && echo "profiles kept in $dir (callgrind_annotate $dir/callgrind.MODE.FLOWS.out)"
exit 0
