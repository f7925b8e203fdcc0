//! `fastpath-bench`: ns per packet of the fast path's common case, over
//! in-memory frames, with 1, 1K and 64K established flows visited in random
//! order. Prints tables; never fails on a number.
//!
//! ```text
//! fastpath-bench [options]
//!   --flows LIST        flow counts, comma separated (default 1,1024,65536)
//!   --packets N         units measured per run (default 1000000)
//!   --runs R            runs per cell; the best is reported (default 5)
//!   --scenarios LIST    subset of rx,ack_tx,pair (default all three)
//!   --ring BYTES        per-flow RX and TX ring size (default 4096)
//!   --thp               madvise(MADV_HUGEPAGE) on the payload region (the
//!                       default only where the kernel gives shared memory,
//!                       i.e. tasd's app regions, huge pages)
//!   --4k                no huge-page advice at all (by default the flow
//!                       table's arrays are advised, as tasd does)
//!   --hugetlb           the ring region on reserved 2 MiB hugetlbfs pages,
//!                       as tasd's app regions with --huge-pages auto;
//!                       raises /proc/sys/vm/nr_hugepages for the run when
//!                       too few are free (root) and puts it back after
//!   --floor             also measure the host's memory floor at each flow
//!                       count: the `pair` unit's per-flow lines touched
//!                       with the engine's prefetch passes and no TCP
//!                       (`tas_benches::floor`), and the slowdown `pair`
//!                       would show if it grew by that floor alone
//!   --seed N            visit order and initial sequence numbers
//!   --quick             CI smoke run: 20000 units, 1 run
//!   --callgrind MODE    run only MODE (rx|ack_tx|pair) at the first --flows
//!                       value: warm-up, then exactly --packets units
//!                       (default 100000) inside tas_bench_measured
//! ```
//!
//! Instructions per unit under callgrind (see `benches/callgrind.sh`):
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='*tas_bench_measured*' --callgrind-out-file=cg.out \
//!   target/release/fastpath-bench --callgrind rx --flows 1024 --packets 100000
//! # Ir on the `totals:` line of cg.out / 100000
//! ```
//!
//! Method and results: `docs/fastpath-bench.md`.

use std::process::ExitCode;
use tas_benches::fastpath::{timer_overhead_ns, Bench, RunStats, Scenario, Setup, DEFAULT_RING};

struct Args {
    flows: Vec<usize>,
    packets: Option<u64>,
    runs: Option<u32>,
    scenarios: Vec<Scenario>,
    ring: u32,
    thp: bool,
    small_pages: bool,
    hugetlb: bool,
    seed: Option<u64>,
    quick: bool,
    callgrind: Option<Scenario>,
    floor: bool,
}

const USAGE: &str = "usage: fastpath-bench [--flows 1,1024,65536] [--packets N] [--runs R] \
[--scenarios rx,ack_tx,pair] [--ring BYTES] [--thp] [--4k] [--hugetlb] [--floor] [--seed N] [--quick] [--callgrind rx|ack_tx|pair]";

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.trim().parse().map_err(|_| format!("bad {what}: {x:?}")))
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        flows: vec![1, 1024, 65536],
        packets: None,
        runs: None,
        scenarios: Scenario::ALL.to_vec(),
        ring: DEFAULT_RING,
        thp: false,
        small_pages: false,
        hugetlb: false,
        seed: None,
        quick: false,
        callgrind: None,
        floor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--flows" => a.flows = parse_list(&val()?, "flow count")?,
            "--packets" => a.packets = Some(val()?.parse().map_err(|_| "bad --packets")?),
            "--runs" => a.runs = Some(val()?.parse().map_err(|_| "bad --runs")?),
            "--scenarios" => {
                a.scenarios = val()?
                    .split(',')
                    .map(|s| Scenario::parse(s).ok_or_else(|| format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--ring" => a.ring = val()?.parse().map_err(|_| "bad --ring")?,
            "--thp" => a.thp = true,
            "--4k" => a.small_pages = true,
            "--hugetlb" => a.hugetlb = true,
            "--floor" => a.floor = true,
            "--seed" => a.seed = Some(val()?.parse().map_err(|_| "bad --seed")?),
            "--quick" => a.quick = true,
            "--callgrind" => {
                let m = val()?;
                a.callgrind =
                    Some(Scenario::parse(&m).ok_or_else(|| format!("unknown mode {m:?}"))?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if a.flows.is_empty() || a.flows.contains(&0) {
        return Err("--flows needs positive counts".into());
    }
    if a.scenarios.is_empty() {
        return Err("--scenarios is empty".into());
    }
    if a.hugetlb && (a.thp || a.small_pages) {
        return Err("--hugetlb excludes --thp and --4k".into());
    }
    if a.runs == Some(0) || a.packets == Some(0) {
        return Err("--runs and --packets must be positive".into());
    }
    Ok(a)
}

fn setup(a: &Args, scenario: Scenario, flows: usize) -> Setup {
    let mut s = Setup::new(scenario, flows);
    s.ring = a.ring;
    if a.thp {
        s.thp = true;
    }
    if a.small_pages {
        s.thp = false;
        s.huge_table = false;
    }
    if a.hugetlb {
        s.thp = false;
        s.hugetlb = true;
    }
    if let Some(seed) = a.seed {
        s.seed = seed;
    }
    s
}

/// `--callgrind MODE`: one scenario, one flow count, a fixed unit count.
fn callgrind(a: &Args, scenario: Scenario) -> Result<(), String> {
    let flows = a.flows[0];
    let units = a.packets.unwrap_or(100_000);
    let mut b = Bench::new(setup(a, scenario, flows))?;
    b.warm_up();
    let rs = b.run(units, None);
    let (exc, last) = b.exceptions();
    if exc != 0 {
        return Err(format!("{exc} exceptions (last {last:?})"));
    }
    println!(
        "callgrind mode={} flows={} units={} frames_in={} frames_out={} \
         (instructions per unit = Ir of tas_bench_measured / {})",
        scenario.name(),
        flows,
        rs.units,
        rs.frames_in,
        rs.frames_out,
        rs.units
    );
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `--hugetlb`: makes sure `need` 2 MiB hugetlbfs pages are free, raising
/// `nr_hugepages` by what is missing; the old count comes back on drop
/// (also when the run fails).
struct HugePool {
    old: Option<u64>,
}

const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

impl HugePool {
    fn reserve(need: u64) -> Result<HugePool, String> {
        let have = tas_runtime::huge::hugetlb_available();
        if have >= need {
            return Ok(HugePool { old: None });
        }
        let read = || -> Result<u64, String> {
            std::fs::read_to_string(NR_HUGEPAGES)
                .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?
                .trim()
                .parse()
                .map_err(|e| format!("{NR_HUGEPAGES}: {e}"))
        };
        let old = read()?;
        let want = old + (need - have);
        let fail = |why: String| {
            format!(
                "--hugetlb needs {need} free 2 MiB huge pages, {have} are: {why}; \
                 reserve them (echo {want} > /proc/sys/vm/nr_hugepages) or run as root"
            )
        };
        restore_on_signal(old);
        std::fs::write(NR_HUGEPAGES, want.to_string())
            .map_err(|e| fail(format!("writing {want} to {NR_HUGEPAGES}: {e}")))?;
        let pool = HugePool { old: Some(old) };
        let got = tas_runtime::huge::hugetlb_available();
        if got < need {
            return Err(fail(format!(
                "the kernel gave only {got} (memory fragmented?)"
            )));
        }
        eprintln!("fastpath-bench: nr_hugepages {old} -> {want} for the run");
        Ok(pool)
    }
}

/// `nr_hugepages` to write back (ASCII, NUL-terminated path and value)
/// when SIGINT or SIGTERM ends the run before [`HugePool`] drops.
static mut RESTORE: [u8; 24] = [0; 24];
static mut RESTORE_LEN: usize = 0;
static NR_HUGEPAGES_C: &[u8] = b"/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages\0";

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: only async-signal-safe calls (open, write, close, _exit) on
    // a NUL-terminated path and a buffer written before the handler was
    // installed and never after.
    unsafe {
        let fd = libc::open(
            NR_HUGEPAGES_C.as_ptr() as *const libc::c_char,
            libc::O_WRONLY,
        );
        if fd >= 0 {
            let buf = std::ptr::addr_of!(RESTORE) as *const u8;
            libc::write(fd, buf as *const libc::c_void, RESTORE_LEN);
            libc::close(fd);
        }
        libc::_exit(128 + sig);
    }
}

/// Puts `nr_hugepages` back to `old` if SIGINT or SIGTERM ends the run.
fn restore_on_signal(old: u64) {
    let v = old.to_string();
    // SAFETY: single-threaded here, before the handler is installed: no
    // reader of RESTORE runs concurrently; the handler is an `extern "C"`
    // function that only makes async-signal-safe calls.
    unsafe {
        let dst = &mut *std::ptr::addr_of_mut!(RESTORE);
        let n = v.len().min(dst.len());
        dst[..n].copy_from_slice(&v.as_bytes()[..n]);
        RESTORE_LEN = n;
        tas_testkit::on_interrupt(on_signal);
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            match std::fs::write(NR_HUGEPAGES, old.to_string()) {
                Ok(()) => eprintln!("fastpath-bench: nr_hugepages back to {old}"),
                Err(e) => eprintln!("fastpath-bench: restoring nr_hugepages {old}: {e}"),
            }
        }
    }
}

struct Cell {
    scenario: Scenario,
    flows: usize,
    best: RunStats,
    worst_ns: f64,
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fastpath-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _pool = if a.hugetlb {
        let flows = if a.callgrind.is_some() {
            a.flows[0]
        } else {
            a.flows.iter().copied().max().unwrap_or(1)
        };
        // One bench at a time: the largest region's pages.
        match HugePool::reserve(tas_benches::fastpath::hugetlb_pages(flows, a.ring)) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("fastpath-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if let Some(s) = a.callgrind {
        return match callgrind(&a, s) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fastpath-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let packets = a
        .packets
        .unwrap_or(if a.quick { 20_000 } else { 1_000_000 });
    let runs = a.runs.unwrap_or(if a.quick { 1 } else { 5 });
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "fastpath-bench: {} ({} CPUs), {} B rings, batch {}, {}{} units x best of {} runs",
        cpu_model(),
        threads,
        a.ring,
        tas_benches::fastpath::BATCH,
        {
            let d = Setup::new(Scenario::Pair, 1);
            match (a.small_pages, a.thp || d.thp) {
                _ if a.hugetlb => "THP table, hugetlbfs rings, ",
                (true, _) => "4 KiB pages only, ",
                (false, true) => "THP table + rings, ",
                (false, false) => "THP table, ",
            }
        },
        packets,
        runs
    );
    println!(
        "timer: Instant::now() costs {:.1} ns, read twice per chunk of up to {} units",
        timer_overhead_ns(),
        tas_benches::fastpath::CHUNK
    );
    let mut cells: Vec<Cell> = Vec::new();
    let mut floors: Vec<(usize, f64)> = Vec::new();
    let mut failed = false;
    for &flows in &a.flows {
        for &scenario in &a.scenarios {
            let mut b = match Bench::new(setup(&a, scenario, flows)) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("fastpath-bench: {}: {e}", scenario.name());
                    return ExitCode::FAILURE;
                }
            };
            b.warm_up();
            let mut best: Option<RunStats> = None;
            let mut worst_ns = 0f64;
            for _ in 0..runs {
                let rs = b.run(packets, None);
                worst_ns = worst_ns.max(rs.ns_per_unit());
                if best.is_none_or(|x| rs.nanos < x.nanos) {
                    best = Some(rs);
                }
            }
            let best = best.expect("at least one run");
            let check = b.verify();
            let expected_out = best.units * scenario.frames_out();
            let fewest = scenario.min_frames_out(best.units);
            let in_range = (fewest..=expected_out).contains(&best.frames_out);
            let note = match (&check, in_range) {
                (Ok(()), true) => String::from("ok"),
                (Ok(()), false) => {
                    failed = true;
                    format!(
                        "BROKEN: {} frames out, expected {fewest}..={expected_out}",
                        best.frames_out
                    )
                }
                (Err(e), _) => {
                    failed = true;
                    format!("BROKEN: {e}")
                }
            };
            eprintln!(
                "  {:>6} flows  {:<7} {:8.1} ns/unit (worst run {:8.1})  chunk {} batch {}  {}",
                flows,
                scenario.name(),
                best.ns_per_unit(),
                worst_ns,
                b.chunk_len(),
                b.batch(),
                note
            );
            cells.push(Cell {
                scenario,
                flows,
                best,
                worst_ns,
            });
        }
        if a.floor {
            let d = setup(&a, Scenario::Pair, flows);
            let fs = tas_benches::floor::FloorSetup {
                flows,
                ring: d.ring,
                huge_table: d.huge_table,
                thp: d.thp,
                hugetlb: d.hugetlb,
                seed: d.seed,
            };
            match tas_benches::floor::floor_ns(fs, packets, runs) {
                Ok(ns) => {
                    eprintln!(
                        "  {flows:>6} flows  floor   {ns:8.1} ns/unit (the pair's lines, no TCP)"
                    );
                    floors.push((flows, ns));
                }
                Err(e) => {
                    eprintln!("fastpath-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print_tables(&a, &cells);
    if a.floor {
        print_floor(&a, &cells, &floors);
    }
    if failed {
        eprintln!("fastpath-bench: the benchmark itself is broken (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--floor`: the synthetic pattern's ns per unit at each flow count, and
/// what `pair` would cost at the largest count had it grown by exactly the
/// pattern's increase from the second largest.
fn print_floor(a: &Args, cells: &[Cell], floors: &[(usize, f64)]) {
    let w = 38;
    let mut h = format!("{:<w$}", "memory floor, ns per unit (best run)");
    let mut r = format!("{:<w$}", "the pair's lines, no TCP");
    for f in &a.flows {
        h += &format!(" {:>12}", format!("{f} flows"));
        match floors.iter().find(|x| x.0 == *f) {
            Some((_, ns)) => r += &format!(" {ns:>12.1}"),
            None => r += &format!(" {:>12}", "-"),
        }
    }
    println!();
    println!("{h}");
    println!("{r}");
    let Some((x, y)) = two_largest(&a.flows) else {
        return;
    };
    let fl = |f| floors.iter().find(|p| p.0 == f).map(|p| p.1);
    let pair = |f| find(cells, Scenario::Pair, f).map(|c| c.best.ns_per_unit());
    if let (Some(fx), Some(fy)) = (fl(x), fl(y)) {
        println!(
            "floor's increase {x} -> {y} flows: {:+.1} ns per unit",
            fy - fx
        );
        if let (Some(px), Some(py)) = (pair(x), pair(y)) {
            println!(
                "pair: {px:.1} -> {py:.1} ns ({:+.1} %); grown by the floor alone it would be {:.1} ns ({:+.1} %): \
                 the floor is {:.0} % of pair's increase",
                (py / px - 1.0) * 100.0,
                px + (fy - fx),
                (fy - fx) / px * 100.0,
                if py > px { (fy - fx) / (py - px) * 100.0 } else { 100.0 }
            );
        }
    }
}

/// The second largest and the largest of the flow counts, if two differ.
fn two_largest(flows: &[usize]) -> Option<(usize, usize)> {
    let mut sorted = flows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    (n >= 2).then(|| (sorted[n - 2], sorted[n - 1]))
}

fn find(cells: &[Cell], s: Scenario, flows: usize) -> Option<&Cell> {
    cells.iter().find(|c| c.scenario == s && c.flows == flows)
}

fn print_tables(a: &Args, cells: &[Cell]) {
    // Slowdown between the two largest flow counts (default 1K -> 64K).
    let pair = two_largest(&a.flows);
    let w = 38;
    let head = |title: &str| {
        let mut h = format!("{title:<w$}");
        for f in &a.flows {
            h += &format!(" {:>12}", format!("{f} flows"));
        }
        if let Some((x, y)) = pair {
            h += &format!("  {:>14}", format!("{x}->{y}"));
        }
        h
    };
    let slow = |v: &[Option<f64>]| -> String {
        let Some((x, y)) = pair else {
            return String::new();
        };
        let at = |f| a.flows.iter().position(|&g| g == f).and_then(|i| v[i]);
        match (at(x), at(y)) {
            (Some(p), Some(q)) => format!("  {:>12.1} %", (q / p - 1.0) * 100.0),
            _ => String::new(),
        }
    };
    let row = |label: &str, v: &[Option<f64>], prec: usize, with_slow: bool| {
        let mut r = format!("{label:<w$}");
        for x in v {
            match x {
                Some(x) => r += &format!(" {x:>12.prec$}"),
                None => r += &format!(" {:>12}", "-"),
            }
        }
        if with_slow {
            r += &slow(v);
        }
        println!("{r}");
    };
    let ns = |s: Scenario| -> Vec<Option<f64>> {
        a.flows
            .iter()
            .map(|&f| find(cells, s, f).map(|c| c.best.ns_per_unit()))
            .collect()
    };

    println!();
    println!("{}", head("ns per unit (best run, wall clock)"));
    for &s in &a.scenarios {
        row(s.label(), &ns(s), 1, true);
    }
    let has = |s| a.scenarios.contains(&s);
    if has(Scenario::Rx) && has(Scenario::AckTx) {
        let (x, y) = (ns(Scenario::Rx), ns(Scenario::AckTx));
        let sum: Vec<Option<f64>> = x.iter().zip(&y).map(|(p, q)| Some((*p)? + (*q)?)).collect();
        row("(a)+(b) as the sum of rows (a), (b)", &sum, 1, true);
    }

    println!();
    println!("{}", head("worst run, ns per unit (noise)"));
    for &s in &a.scenarios {
        let v: Vec<Option<f64>> = a
            .flows
            .iter()
            .map(|&f| find(cells, s, f).map(|c| c.worst_ns))
            .collect();
        row(s.label(), &v, 1, false);
    }

    println!();
    println!("{}", head("million units/s (best run)"));
    for &s in &a.scenarios {
        let v: Vec<Option<f64>> = ns(s).iter().map(|x| x.map(|x| 1e3 / x)).collect();
        row(s.label(), &v, 2, false);
    }

    println!();
    println!("{}", head("million frames/s, in + out (best run)"));
    for &s in &a.scenarios {
        let v: Vec<Option<f64>> = a
            .flows
            .iter()
            .map(|&f| {
                find(cells, s, f).map(|c| {
                    (c.best.frames_in + c.best.frames_out) as f64 * 1e3 / c.best.nanos as f64
                })
            })
            .collect();
        row(s.label(), &v, 2, false);
    }
    println!();
    println!(
        "unit: (a) 1 frame in + 1 ACK out (one per flow and batch: with few flows a batch brings several segments of one flow, which share one ACK); (b) 1 ACK in + 1 segment out; pair: 2 in + 1 or 2 out (the ACK rides on the response unless the flow comes twice in a batch; ACKs held 40 µs as tasd does). \
         Slowdown column: ns at the largest flow count vs the second largest."
    );
}
