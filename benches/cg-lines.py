#!/usr/bin/env python3
"""Where the instructions go, by source function, inlining resolved.

callgrind attributes inlined code to the function it was inlined into, so
`callgrind_annotate` shows `FastPath::rx` and `build_segment` as big blobs.
Its line records, though, name the source file and line the instructions
came from (`fi=`/`fe=`). This script sums self cost per (file, line), maps
each line to the Rust `fn` that encloses it in that file, and prints the
functions with their share, per unit.

usage: benches/cg-lines.py CALLGRIND_OUT UNITS [TOP] [EVENTS]

EVENTS: comma-separated events to sum (default Ir; with --cache-sim
profiles e.g. DLmr,DLmw for last-level misses).
"""
import os
import re
import sys
from collections import defaultdict


def parse(path, want=("Ir",)):
    """Self cost per (file, line, fn) from a callgrind.out (line positions),
    summing the events named in `want`."""
    names = {"fl": {}, "fn": {}}
    cost = defaultdict(int)
    calls = defaultdict(int)  # caller symbol -> inclusive cost of its calls
    file_ = None
    sub = None
    fn = None
    last_line = 0
    skip_next = False
    callee = None
    ev_idx = [0]

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
        if not m:
            return rest
        table = names["fn" if kind == "fn" else "fl"]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line:
                continue
            if line.startswith("events:"):
                ev = line.split()[1:]
                ev_idx = [ev.index(w) for w in want if w in ev]
                if not ev_idx:
                    sys.exit(f"none of {want} in {ev}")
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                p = parts[0]
                if p == "*":
                    ln = last_line
                elif p[0] in "+-":
                    ln = last_line + int(p)
                else:
                    ln = int(p)
                last_line = ln
                vals = parts[1:]
                v = sum(int(vals[i]) for i in ev_idx if i < len(vals))
                if skip_next:
                    skip_next = False
                    if callee != fn:
                        calls[fn] += v
                    continue
                cost[(sub or file_, ln, fn)] += v
                continue
            key, _, rest = line.partition("=")
            if key == "fl":
                file_ = name("fl", rest)
                sub = None
            elif key in ("fi", "fe"):
                sub = name("fl", rest)
            elif key == "fn":
                fn = name("fn", rest)
                sub = None
            elif key in ("cfl", "cfi"):
                name("fl", rest)
            elif key == "cfn":
                callee = name("fn", rest)
            elif key == "calls":
                skip_next = True
    return cost, calls


FN_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:unsafe\s+)?fn\s+([A-Za-z0-9_]+)")
IMPL_RE = re.compile(r"^\s*impl\b(.*)\{")


def enclosing(path):
    """Line number -> name of the enclosing fn, by indentation-naive scan."""
    try:
        src = open(path, errors="replace").read().split("\n")
    except OSError:
        return None
    out = {}
    cur = "?"
    impl = ""
    for i, l in enumerate(src, 1):
        m = IMPL_RE.match(l)
        if m and not l.startswith(" "):
            t = m.group(1).strip()
            t = re.sub(r"<[^>]*>", "", t).split(" for ")[-1].strip()
            impl = t.split()[-1] if t else ""
        elif l.startswith("}") or (l and not l.startswith((" ", "}", "#", "/"))):
            if not l.startswith("impl"):
                impl = ""
        m = FN_RE.match(l)
        if m:
            cur = (impl + "::" if impl and l.startswith("    ") else "") + m.group(1)
        out[i] = cur
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        sys.exit(2)
    path, units = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    want = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else ("Ir",)
    cost, calls = parse(path, want)
    total = sum(cost.values())
    maps = {}
    by_fn = defaultdict(int)
    for (f, ln, fn), v in cost.items():
        if f not in maps:
            maps[f] = enclosing(f)
        m = maps[f]
        short = re.sub(r"^.*/(library|src)/", r"\1/", f or "?")
        if "/rustc/" in (f or "") or (f or "").startswith("./"):
            # Library code inlined somewhere: name the symbol it ran in.
            sym = re.sub(r"^.*::", "", re.sub(r"<[^<>]*>", "", fn or "?"))
            by_fn[f"std:{os.path.basename(f)} (in {sym})"] += v
            continue
        name = m.get(ln, "?") if m else "?"
        by_fn[f"{short}:{name}"] += v
    ev = "+".join(want)
    print(f"total {total / units:.2f} {ev} per unit ({total} / {units} units), self cost by source fn:")
    for k, v in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {v / units:8.2f}  {100 * v / max(total, 1):5.1f} %  {k}")
    # Inclusive cost per compiled (not inlined) function: its own lines,
    # wherever their source is, plus everything it called.
    incl = defaultdict(int)
    for (_, _, fn), v in cost.items():
        incl[fn] += v
    for fn, v in calls.items():
        incl[fn] += v
    print(f"inclusive {ev} per unit by compiled function (inlined code counts for its host):")
    shown = 0
    for k, v in sorted(incl.items(), key=lambda kv: -kv[1]):
        if v * 200 < total or shown == top:
            break
        if v >= total and "tas_bench_measured" not in k:
            continue  # main, lang_start, Bench::run...: the whole run
        print(f"  {v / units:8.2f}  {100 * v / max(total, 1):5.1f} %  {k}")
        shown += 1


if __name__ == "__main__":
    main()
