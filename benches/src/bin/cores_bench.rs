//! `cores-bench`: what fast-path core scaling (`tasd --cores`) costs and
//! buys, on one veth pair. Prints tables; never fails on a number.
//!
//! 1. CPU time of an idle tasd over a fixed time (utime+stime from
//!    /proc/PID/stat and per thread from /proc/PID/task/*/stat) with
//!    `--cores 1`, `--cores 1-2` and `--cores 2`. Linux has no daemon: 0.
//! 2. Throughput of N parallel bulk transfers Linux -> TAS app (each stream
//!    verified byte for byte by `peer`) with `--cores 1`, `--cores 2` and
//!    `--cores 1-2` (scaling), and the same transfers Linux -> Linux.
//! 3. Latency around a scale event: `peer echo-trace` (a Linux client, one
//!    connection, 64-byte RPCs back to back, every RPC time-stamped on
//!    CLOCK_MONOTONIC) against a TAS echo server while the budget is forced
//!    `tasctl cores 2-2` and `tasctl cores 1-1` in turn, with a plain
//!    `tasctl cores` query between them (calls 1 s apart). RTT percentiles of
//!    the RPCs started in the 100 ms after each kind of call vs the steady
//!    state (RPCs started more than 300 ms away from any call); the query
//!    rows show what running tasctl alone costs on a small VM.
//!
//! ```text
//! sudo target/release/cores-bench [--quick] [--nic af_xdp|af_packet]
//!      [--idle-secs S] [--flows N] [--mb MB] [--reps R]
//!      [--trace-events E] [--only idle,tput,blip]
//! ```
//! (build first: `cargo build --release --workspace --bins --examples`).
//! `--quick`: 3 s idle, 2 flows x 64 MB, 1 rep, 4 scale events.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tas_system_tests::{
    bin, cpu_seconds, monotonic_ns, stat_cpu_seconds, stdout, Backend, Testbed, LNX_IP, TAS_IP,
};

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("cores-bench: bad or missing value for {name}");
                std::process::exit(2)
            }
        },
        None => default,
    }
}

/// CPU seconds per thread of a process: (thread name, seconds).
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return v;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        // A thread's stat has the same layout as a process's.
        let secs = stat_cpu_seconds(&format!("/proc/{pid}/task/{tid}/stat")).unwrap_or(0.0);
        v.push((name, secs));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn nic_name(b: Backend) -> &'static str {
    match b {
        Backend::AfPacket => "af_packet",
        Backend::Dpdk => "dpdk",
        Backend::AfXdp => "af_xdp",
    }
}

/// `tasctl cores` header line (or the error).
fn cores_line(tb: &mut Testbed) -> String {
    let o = tb.tasctl(&["cores"]);
    let s = stdout(&o);
    s.lines()
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&o.stderr).trim().to_string())
}

// ---------------------------------------------------------------- 1. idle

fn idle_cpu(backend: Backend, secs: f64) {
    println!("## 1. CPU time of an idle tasd ({secs:.0} s, no connections)");
    println!();
    println!("| daemon | CPU time | CPU % of one core | per thread (s) |");
    println!("|---|---|---|---|");
    for budget in ["1", "1-2", "2"] {
        let mut tb = Testbed::with_args("cbidle", backend, &["--cores", budget]);
        let pid = tb.tasd_pid().expect("tasd pid");
        // Let start-up work settle (the first windows, ARP, ...).
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t0) = (cpu_seconds(pid).unwrap_or(0.0), thread_cpu(pid));
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (c1, t1) = (cpu_seconds(pid).unwrap_or(0.0), thread_cpu(pid));
        let wall = start.elapsed().as_secs_f64();
        let per: Vec<String> = t1
            .iter()
            .map(|(n, s)| {
                let before = t0.iter().find(|(m, _)| m == n).map_or(0.0, |x| x.1);
                format!("{n} {:.2}", s - before)
            })
            .collect();
        let line = cores_line(&mut tb);
        eprintln!("idle --cores {budget}: {line}");
        println!(
            "| tasd --cores {budget} | {:.2} s | {:.1}% | {} |",
            c1 - c0,
            (c1 - c0) / wall * 100.0,
            per.join(", ")
        );
    }
    println!(
        "| Linux kernel stack | 0 (no daemon; its softirq work is charged to no process) | 0 | - |"
    );
    println!();
}

// ---------------------------------------------------------- 2. throughput

/// N parallel transfers Linux -> server side, `bytes` each; Gbit/s (or why not).
fn transfers(tb: &mut Testbed, tas: bool, flows: usize, bytes: u64) -> Result<f64, String> {
    let b = bytes.to_string();
    let mut rx = Vec::new();
    for i in 0..flows {
        let port = (5300 + i).to_string();
        let seed = (100 + i).to_string();
        let mut args = vec!["recv", port.as_str(), b.as_str(), seed.as_str()];
        if tas {
            args.insert(0, "--tas");
        }
        rx.push(tb.spawn_tas(&bin("peer"), &args, Some("listening")));
    }
    let t = Instant::now();
    let mut tx = Vec::new();
    for i in 0..flows {
        let port = (5300 + i).to_string();
        let seed = (100 + i).to_string();
        tx.push(tb.spawn_lnx(&bin("peer"), &["send", TAS_IP, &port, &b, &seed], None));
    }
    let limit = Duration::from_secs(300);
    for &p in &rx {
        match tb.wait_child(p, limit.saturating_sub(t.elapsed())) {
            Some(true) => {}
            Some(false) => return Err("a receiver failed".into()),
            None => return Err("timed out".into()),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for &p in &tx {
        if tb.wait_child(p, Duration::from_secs(10)) != Some(true) {
            return Err("a sender failed".into());
        }
    }
    Ok((flows as u64 * bytes) as f64 * 8.0 / secs / 1e9)
}

fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    if v.len() == 1 {
        format!("{mean:.2}")
    } else {
        format!("{mean:.2} (min {min:.2}, max {max:.2})")
    }
}

fn throughput(backend: Backend, flows: usize, mb: u64, reps: usize) {
    let bytes = mb * 1024 * 1024;
    println!(
        "## 2. Throughput: {flows} parallel transfers Linux -> receiver, {mb} MiB each, {reps} rep(s)"
    );
    println!();
    println!("| receiver | Gbit/s (mean of reps) | tasd CPU while transferring (cores busy, per thread) | tasctl cores after the last rep |");
    println!("|---|---|---|---|");
    for budget in ["1", "2", "1-2"] {
        let mut tb = Testbed::with_args("cbtput", backend, &["--cores", budget]);
        let pid = tb.tasd_pid().expect("tasd pid");
        let before = thread_cpu(pid);
        let mut v = Vec::new();
        let mut err = None;
        let mut busy_secs = 0.0;
        for _ in 0..reps {
            match transfers(&mut tb, true, flows, bytes) {
                Ok(g) => {
                    busy_secs += (flows as u64 * bytes) as f64 * 8.0 / g / 1e9;
                    v.push(g)
                }
                Err(e) => err = Some(e),
            }
        }
        let cpu: Vec<String> = thread_cpu(pid)
            .iter()
            .map(|(n, s)| {
                let b = before.iter().find(|(m, _)| m == n).map_or(0.0, |x| x.1);
                format!("{n} {:.2}", (s - b) / busy_secs.max(1e-9))
            })
            .collect();
        let line = cores_line(&mut tb);
        eprintln!("tput --cores {budget}: {v:?} {err:?}; {cpu:?}; {line}");
        println!(
            "| TAS app, tasd --cores {budget} | {}{} | {} | {line} |",
            stats(&v),
            err.map(|e| format!(" ({e})")).unwrap_or_default(),
            cpu.join(", ")
        );
    }
    // Linux -> Linux: the TAS side's kernel gets the address instead.
    let mut tb = Testbed::hosts("cbtput");
    let o = tb.run_tas(
        std::path::Path::new("ip"),
        &["addr", "add", "198.18.0.1/24", "dev", "veth-tas"],
        Duration::from_secs(5),
    );
    let mut v = Vec::new();
    let mut err = None;
    if o.status.success() {
        for _ in 0..reps {
            match transfers(&mut tb, false, flows, bytes) {
                Ok(g) => v.push(g),
                Err(e) => err = Some(e),
            }
        }
    } else {
        err = Some("cannot add the kernel address".into());
    }
    eprintln!("tput linux: {v:?} {err:?}");
    println!(
        "| Linux app (kernel stack) | {}{} | - | - |",
        stats(&v),
        err.map(|e| format!(" ({e})")).unwrap_or_default()
    );
    println!();
}

// ----------------------------------------------------------- 3. the blip

/// The `p`-quantile of `sorted` RTTs (ns) in µs; NaN when there are none.
fn pct(sorted: &[u64], p: f64) -> f64 {
    tas_testkit::pct(sorted, p).map_or(f64::NAN, |v| v as f64 / 1e3)
}

/// RTT percentiles of a set of RPC round trips (ns) as table cells.
fn row(label: &str, v: &mut [u64], window_secs: f64) -> String {
    v.sort_unstable();
    format!(
        "| {label} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        v.len() as f64 / window_secs.max(1e-9),
        pct(v, 0.5),
        pct(v, 0.99),
        v.last().map_or(f64::NAN, |&m| m as f64 / 1e3)
    )
}

fn blip(backend: Backend, events: usize) {
    let mut tb = Testbed::with_args("cbblip", backend, &["--cores", "1-2"]);
    let _ = tb.tasctl(&["cores", "1-1"]);
    tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", "7"],
        Some("listening"),
    );
    // Calls 1 s apart: `cores 2-2`, `cores` (a query: the cost of running
    // tasctl itself, no change), `cores 1-1`, `cores`, ...
    let lead = 2.0;
    let gap = 1.0;
    let calls = events * 2;
    let secs = lead + calls as f64 * gap + 1.0;
    // The trace client runs outside the Testbed's child list so that its
    // stdout can be read while tasctl runs (testhosts down kills it anyway).
    let mut child = Command::new("ip")
        .args(["netns", "exec", &tb.lnx_ns])
        .arg(bin("peer"))
        .args(["echo-trace", TAS_IP, "7", &secs.to_string(), "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn echo-trace");
    let out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut rpcs: Vec<(u64, u64)> = Vec::new();
        let mut summary = String::new();
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let mut it = l.split_whitespace();
            if it.next() == Some("T") {
                if let (Some(Ok(t)), Some(Ok(r))) =
                    (it.next().map(str::parse), it.next().map(str::parse))
                {
                    rpcs.push((t, r));
                }
            } else {
                summary = l;
            }
        }
        (rpcs, summary)
    });
    std::thread::sleep(Duration::from_secs_f64(lead));
    // (kind, invoked, returned), CLOCK_MONOTONIC ns.
    let mut ev: Vec<(&str, u64, u64)> = Vec::new();
    for i in 0..calls {
        let (kind, args): (&str, &[&str]) = match i % 4 {
            0 => ("up", &["cores", "2-2"]),
            2 => ("down", &["cores", "1-1"]),
            _ => ("query", &["cores"]),
        };
        let t0 = monotonic_ns();
        let o = tb.tasctl(args);
        let t1 = monotonic_ns();
        if !o.status.success() {
            eprintln!(
                "tasctl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        ev.push((kind, t0, t1));
        std::thread::sleep(
            Duration::from_secs_f64(gap).saturating_sub(Duration::from_nanos(t1 - t0)),
        );
    }
    let _ = child.wait();
    let (rpcs, summary) = reader.join().unwrap_or_default();
    let line = cores_line(&mut tb);
    eprintln!("blip: {summary}; {line}");
    let call_ms: Vec<f64> = ev.iter().map(|e| (e.2 - e.1) as f64 / 1e6).collect();
    println!(
        "## 3. 64-byte RPC latency around forced scale events (one connection, Linux client, TAS echo server, tasd --cores 1-2)"
    );
    println!();
    println!(
        "{} RPCs traced ({summary}); {events} forced changes, alternately `tasctl cores 2-2` and `tasctl cores 1-1`, with a plain `tasctl cores` query half-way between them (1 s apart). Window: the RPCs started in the 100 ms after tasctl was invoked (a call took {:.1}-{:.1} ms, process start-up included). Steady state: RPCs started more than 300 ms from any call, by the number of cores polling then.",
        rpcs.len(),
        call_ms.iter().cloned().fold(f64::INFINITY, f64::min),
        call_ms.iter().cloned().fold(0.0, f64::max)
    );
    println!();
    let first = rpcs.first().map_or(0, |r| r.0);
    let margin = 300_000_000u64;
    // Cores polling at time t: 2 after `cores 2-2`, 1 after `cores 1-1`.
    let phase = |t: u64| -> u32 {
        ev.iter()
            .rev()
            .find(|e| e.0 != "query" && e.2 <= t)
            .map_or(1, |e| if e.0 == "up" { 2 } else { 1 })
    };
    let steady = |want: u32| -> (Vec<u64>, f64) {
        let v: Vec<(u64, u64)> = rpcs
            .iter()
            .filter(|(t, _)| *t > first + 500_000_000)
            .filter(|(t, _)| ev.iter().all(|e| *t + margin < e.1 || *t > e.2 + margin))
            .filter(|(t, _)| phase(*t) == want)
            .cloned()
            .collect();
        // The time covered: sum of the gaps between consecutive RPCs that
        // are adjacent in the trace (less than 100 ms apart).
        let mut secs = 0.0;
        for w in v.windows(2) {
            let d = w[1].0 - w[0].0;
            if d < 100_000_000 {
                secs += d as f64 / 1e9;
            }
        }
        (v.into_iter().map(|r| r.1).collect(), secs)
    };
    println!("| RPCs started | count | rpc/s | p50 us | p99 us | max us |");
    println!("|---|---|---|---|---|---|");
    for n in [1, 2] {
        let (mut v, secs) = steady(n);
        println!(
            "{}",
            row(
                &format!("steady state, {n} core{}", if n == 1 { "" } else { "s" }),
                &mut v,
                secs
            )
        );
    }
    let window = 100_000_000u64;
    for (kind, when, label) in [
        (
            "query",
            1,
            "within 100 ms of `tasctl cores` (no change; 1 core)",
        ),
        (
            "query",
            2,
            "within 100 ms of `tasctl cores` (no change; 2 cores)",
        ),
        (
            "up",
            0,
            "within 100 ms of `tasctl cores 2-2` (1 -> 2 cores)",
        ),
        (
            "down",
            0,
            "within 100 ms of `tasctl cores 1-1` (2 -> 1 cores)",
        ),
    ] {
        let mut all = Vec::new();
        let mut n = 0;
        for (i, e) in ev
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 == kind && (when == 0 || phase(e.1) == when))
        {
            let mut v: Vec<u64> = rpcs
                .iter()
                .filter(|(t, _)| *t >= e.1 && *t < e.1 + window)
                .map(|r| r.1)
                .collect();
            eprintln!("blip call {} {kind}: {}", i + 1, row("", &mut v, 0.1));
            all.extend(v);
            n += 1;
        }
        println!("{}", row(label, &mut all, 0.1 * n.max(1) as f64));
    }
    println!();
}

fn main() {
    // Ctrl-C or `kill` removes the test hosts.
    tas_system_tests::clean_up_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: cores-bench [--quick] [--nic af_xdp|af_packet] [--idle-secs S] [--flows N] [--mb MB] [--reps R] [--trace-events E] [--only idle,tput,blip]");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let backend = match opt(&args, "--nic", String::from("af_xdp")).as_str() {
        "af_packet" => Backend::AfPacket,
        "af_xdp" => Backend::AfXdp,
        other => {
            eprintln!("cores-bench: --nic {other}: use af_xdp or af_packet (dpdk runs one core)");
            std::process::exit(2)
        }
    };
    let idle_secs: f64 = opt(&args, "--idle-secs", if quick { 3.0 } else { 10.0 });
    let flows: usize = opt(&args, "--flows", if quick { 2 } else { 4 });
    let mb: u64 = opt(&args, "--mb", if quick { 64 } else { 256 });
    let reps: usize = opt(&args, "--reps", if quick { 1 } else { 3 });
    let events: usize = opt(&args, "--trace-events", if quick { 4 } else { 10 });
    let only: String = opt(&args, "--only", String::from("idle,tput,blip"));
    let _ = LNX_IP;

    println!(
        "# cores-bench (tasd NIC backend: {}; {} vCPUs)",
        nic_name(backend),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("command: cores-bench {}", args.join(" "));
    println!();
    if only.contains("idle") {
        idle_cpu(backend, idle_secs);
    }
    if only.contains("tput") {
        throughput(backend, flows, mb, reps.max(1));
    }
    if only.contains("blip") {
        blip(backend, events.max(2));
    }
}
