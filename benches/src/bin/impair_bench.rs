//! `impair-bench`: bulk transfers over impaired links, TAS next to Linux.
//! Prints tables; never fails on a number.
//!
//! One bridged testbed (TAS host — bridge namespace running `impair` —
//! Linux host, see `tests/src/impair.rs`). For every impairment (none, 1 %
//! loss, 5 % loss, 5 % reordering, 0.5 % corruption, 1 % duplication) and
//! run, four transfers of `--mb` MB (10^6 bytes), each through a freshly
//! started forwarder with the same seed (the seed depends on the run and the
//! impairment only), each verified byte for byte by the receiving `peer`:
//!
//! * Linux → Linux and Linux ← Linux (the TAS host's kernel owns
//!   198.18.0.1, tasd is stopped): the baseline through the same bridge;
//! * Linux → TAS app and TAS app → Linux (tasd running, `peer --tas`).
//!
//! Runs are interleaved: run 1 of every impairment, then run 2, ... so slow
//! drift of a shared machine spreads over both stacks and every impairment.
//! The table shows the median goodput (payload bits over the time from
//! starting the sender to the receiver's verified end of stream) and the
//! TAS/Linux ratio. A transfer that does not finish within `--limit-secs`
//! is stopped and shown as `DNF`, with its goodput over the limit (bytes the
//! Linux end had acknowledged or received by then, over the limit); a cell that
//! did not finish in its first run is not repeated (it would only cost the
//! limit again), and its median is over that one run.
//!
//! ```text
//! sudo target/release/impair-bench [--nic af_xdp|af_packet] [--mb 200]
//!      [--runs 5] [--limit-secs 90] [--seed 7] [--only none,loss1,...]
//!      [--tasd-args "--rx-buf-kib 1024 ..."]
//! ```
//! (build first: `cargo build --release --workspace --bins --examples`).
//! `--only` takes the short names none, loss1, loss5, reorder5, corrupt,
//! dup. With `--trace FILE`, every TAS transfer appends to FILE what
//! `tasctl flows` showed every 50 ms during it and `tasctl stats` after it
//! (where the time goes: rate, RTT, recoveries, timeouts).

use std::time::{Duration, Instant};
use tas_system_tests::impair::{counter, Flow, Impairment, LinkCounters, Stack};
use tas_system_tests::{Backend, Testbed};

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("impair-bench: bad or missing value for {name}");
                std::process::exit(2)
            }
        },
        None => default,
    }
}

fn short(imp: &Impairment) -> &'static str {
    match imp.name {
        "none" => "none",
        "1 % loss" => "loss1",
        "5 % loss" => "loss5",
        "5 % reordering" => "reorder5",
        "0.5 % corruption" => "corrupt",
        "1 % duplication" => "dup",
        _ => "?",
    }
}

/// One measured transfer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Goodput in Mbit/s (for a DNF: what got through by the limit).
    mbps: f64,
    finished: bool,
    /// Bytes on the wire in the data's direction per payload byte
    /// (headers and retransmissions, as the forwarder counted them).
    wire: f64,
}

/// The four cells of an impairment, in column order.
const CELLS: [(Stack, Flow); 4] = [
    (Stack::Tas, Flow::LnxToTas),
    (Stack::Kernel, Flow::LnxToTas),
    (Stack::Tas, Flow::TasToLnx),
    (Stack::Kernel, Flow::TasToLnx),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Bench {
    tb: Testbed,
    backend: Backend,
    bytes: u64,
    limit: Duration,
    port: u16,
    /// `--trace FILE`.
    trace: Option<String>,
    /// `--tasd-args "..."`: extra tasd arguments.
    tasd_args: Vec<String>,
    /// `--sender-stats`: print the Linux sender's TCP counters (nstat
    /// deltas) and its socket's `ss -ti` line, sampled, for every transfer
    /// Linux sends.
    sender_stats: bool,
}

/// The Linux sender's counters that say how it recovered from loss.
const SENDER_COUNTERS: [&str; 14] = [
    "TcpRetransSegs",
    "TcpExtTCPTimeouts",
    "TcpExtTCPLossProbes",
    "TcpExtTCPLossProbeRecovery",
    "TcpExtTCPSackRecovery",
    "TcpExtTCPFastRetrans",
    "TcpExtTCPLostRetransmit",
    "TcpExtTCPSACKReorder",
    "TcpExtTCPDSACKRecv",
    "TcpExtTCPSackRecoveryFail",
    "TcpExtTCPSpuriousRTOs",
    "TcpExtTCPDSACKUndo",
    "TcpExtTCPSACKReneging",
    "TcpExtTCPFullUndo",
];

/// `nstat -az` in NS as name -> value.
fn nstat(ns: &str) -> std::collections::HashMap<String, u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nstat", "-az"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The `ss -tin` line of the sender's connection to PORT in NS (fields
/// that say what limits it: cwnd, rtt, window, delivery rate, …).
fn ss_line(ns: &str, port: u16) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tinH", "state", "established"])
        .arg(format!("dport = :{port}"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let keep = [
        "rtt:",
        "cwnd:",
        "ssthresh:",
        "snd_wnd:",
        "reordering:",
        "lost:",
        "sacked:",
        "unacked:",
        "retrans:",
        "delivery_rate",
        "busy:",
        "rwnd_limited:",
        "cwnd_limited",
        "sndbuf_limited:",
        "reord_seen:",
        "dsack_dups:",
    ];
    let mut v: Vec<&str> = Vec::new();
    let mut words = out.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if keep.iter().any(|k| w.starts_with(k)) {
            v.push(w);
            // `delivery_rate` is followed by its value as a separate word.
            if w == "delivery_rate" {
                if let Some(n) = words.next() {
                    v.push(n);
                }
            }
        }
    }
    v.join(" ")
}

/// Runs `tasctl ARGS` in the TAS namespace; its stdout (empty on error).
fn tasctl_out(ns: &str, socket: &std::path::Path, args: &[&str]) -> String {
    let ctl = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("tasctl")))
        .unwrap_or_else(|| "tasctl".into());
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(ctl)
        .args(args)
        .env("TAS_SOCKET", socket)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Bench {
    fn next_port(&mut self) -> u16 {
        self.port = if self.port >= 40000 {
            5001
        } else {
            self.port + 1
        };
        self.port
    }

    fn one(&mut self, imp: &Impairment, seed: u64, stack: Stack, flow: Flow) -> Sample {
        let port = self.next_port();
        let fwd = self.tb.start_impair(imp, seed);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = match (&self.trace, stack) {
            (Some(_), Stack::Tas) => {
                let (ns, sock, stop) =
                    (self.tb.tas_ns.clone(), self.tb.socket.clone(), stop.clone());
                Some(std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut out = String::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let json = std::env::var_os("IMPAIR_TRACE_JSON").is_some();
                        let f = tasctl_out(
                            &ns,
                            &sock,
                            if json {
                                &["flows", "--json"]
                            } else {
                                &["flows"]
                            },
                        );
                        let f = if json {
                            f.split_whitespace().collect::<Vec<_>>().join(" ")
                        } else {
                            f
                        };
                        for l in f.lines().filter(|l| l.contains("198.18.0.2")) {
                            out += &format!("{:7.3} {l}\n", t0.elapsed().as_secs_f64());
                        }
                        if json {
                            let st = tasctl_out(&ns, &sock, &["stats"]);
                            let keep = [
                                "fastpath.rx_frames",
                                "fastpath.tx_frames",
                                "slowpath.tlp_probes",
                                "slowpath.rto_retransmits",
                                "fastpath.rack_timeouts",
                                "fastpath.rexmit_segments",
                                "slowpath.persist_probes",
                            ];
                            let v: Vec<&str> = st
                                .lines()
                                .filter(|l| keep.iter().any(|k| l.starts_with(k)))
                                .collect();
                            out += &format!(
                                "{:7.3} STATS {}\n",
                                t0.elapsed().as_secs_f64(),
                                v.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
                            );
                        }
                        std::thread::sleep(Duration::from_millis(if json { 10 } else { 50 }));
                    }
                    out
                }))
            }
            _ => None,
        };
        let linux_sends = matches!(flow, Flow::LnxToTas) || stack == Stack::Kernel;
        let stats_on = self.sender_stats && linux_sends;
        let sender_ns = if matches!(flow, Flow::LnxToTas) {
            self.tb.lnx_ns.clone()
        } else {
            self.tb.tas_ns.clone()
        };
        let before = if stats_on {
            nstat(&sender_ns)
        } else {
            Default::default()
        };
        let ss_sampler = stats_on.then(|| {
            let (ns, stop) = (sender_ns.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(250));
                    let l = ss_line(&ns, port);
                    if !l.is_empty() {
                        lines.push(format!("{:5.2}s {l}", t0.elapsed().as_secs_f64()));
                    }
                }
                lines
            })
        });
        let r = self
            .tb
            .transfer(stack, flow, self.bytes, seed, port, self.limit);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if stats_on {
            let after = nstat(&sender_ns);
            let d: Vec<String> = SENDER_COUNTERS
                .iter()
                .map(|k| {
                    let v = after
                        .get(*k)
                        .unwrap_or(&0)
                        .saturating_sub(*before.get(*k).unwrap_or(&0));
                    format!("{}={v}", k.trim_start_matches("TcpExt"))
                })
                .collect();
            eprintln!("    sender {:?} {}: {}", stack, flow.label(), d.join(" "));
            if let Some(h) = ss_sampler {
                for l in h.join().unwrap_or_default() {
                    eprintln!("      {l}");
                }
            }
        }
        if let (Some(path), Some(h)) = (&self.trace, sampler) {
            use std::io::Write;
            let flows = h.join().unwrap_or_default();
            let stats = tasctl_out(&self.tb.tas_ns, &self.tb.socket, &["stats"]);
            if let Ok(mut fl) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(
                    fl,
                    "=== {} {} seed {seed}: {:?}\n{flows}--- stats\n{stats}",
                    imp.name,
                    flow.label(),
                    r.as_ref().map(|d| d.as_secs_f64())
                );
            }
        }
        let c: LinkCounters = self.tb.stop_impair(fwd);
        let on_wire = counter(c.data(flow), "bytes_in") as f64;
        // Per payload byte that got through (all of it, unless stopped).
        let through = match &r {
            Ok(_) => self.bytes,
            Err(e) => e.progress.unwrap_or(0).max(1),
        };
        let wire = on_wire / through as f64;
        let what = format!("{:<16} {:?} {:<18}", imp.name, stack, flow.label());
        match r {
            Ok(t) => {
                let mbps = self.bytes as f64 * 8.0 / t.as_secs_f64() / 1e6;
                eprintln!(
                    "  {what} {:>8.1} Mbit/s ({:.2} s), wire {wire:.3} B/B, frames {} data / {} ACK",
                    mbps,
                    t.as_secs_f64(),
                    counter(c.data(flow), "in"),
                    counter(c.acks(flow), "in"),
                );
                Sample {
                    mbps,
                    finished: true,
                    wire,
                }
            }
            Err(e) => {
                let got = e.progress.unwrap_or(0);
                let mbps = got as f64 * 8.0 / self.limit.as_secs_f64() / 1e6;
                eprintln!("  {what} DNF: {e}\n{}", c.summary());
                Sample {
                    mbps,
                    finished: false,
                    wire,
                }
            }
        }
    }

    fn kernel(&mut self) {
        if self.tb.tasd_alive() {
            assert!(
                self.tb.stop_tasd(),
                "tasd did not stop cleanly:\n{}",
                self.tb.tasd_log()
            );
        }
        self.tb.use_kernel_on_tas_host();
    }

    fn tas(&mut self) {
        self.tb.release_kernel_on_tas_host();
        if !self.tb.tasd_alive() {
            let a: Vec<&str> = self.tasd_args.iter().map(String::as_str).collect();
            self.tb.start_tasd(self.backend, &a);
        }
    }
}

fn cell(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let m = median(samples.iter().map(|s| s.mbps).collect());
    let dnf = samples.iter().filter(|s| !s.finished).count();
    if dnf > 0 {
        format!("DNF {dnf}/{} ({m:.1} over the limit)", samples.len())
    } else {
        let lo = samples.iter().map(|s| s.mbps).fold(f64::INFINITY, f64::min);
        let hi = samples.iter().map(|s| s.mbps).fold(0.0, f64::max);
        format!("{m:.0} ({lo:.0}–{hi:.0})")
    }
}

fn ratio(tas: &[Sample], lnx: &[Sample]) -> String {
    if tas.is_empty() || lnx.is_empty() {
        return "-".into();
    }
    let t = median(tas.iter().map(|s| s.mbps).collect());
    let l = median(lnx.iter().map(|s| s.mbps).collect());
    let r = t / l;
    if tas.iter().any(|s| !s.finished) {
        format!("~{r:.3}")
    } else if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

fn main() {
    // Ctrl-C or `kill` removes the test hosts.
    tas_system_tests::clean_up_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: impair-bench [--nic af_xdp|af_packet] [--mb 200] [--runs 5] [--limit-secs 90] [--seed 7] [--only none,loss1,loss5,reorder5,corrupt,dup] [--trace FILE] [--tasd-args \"ARGS\"] [--sender-stats]");
        return;
    }
    let backend = match opt(&args, "--nic", "af_xdp".to_string()).as_str() {
        "af_xdp" => Backend::AfXdp,
        "af_packet" => Backend::AfPacket,
        other => {
            eprintln!("impair-bench: --nic {other}: use af_xdp or af_packet");
            std::process::exit(2)
        }
    };
    let mb: u64 = opt(&args, "--mb", 200);
    let runs: usize = opt(&args, "--runs", 5);
    let limit = Duration::from_secs(opt(&args, "--limit-secs", 90));
    let base_seed: u64 = opt(&args, "--seed", 7);
    let only: String = opt(&args, "--only", String::new());
    let trace: String = opt(&args, "--trace", String::new());
    let trace = (!trace.is_empty()).then_some(trace);
    let imps: Vec<Impairment> = Impairment::ALL
        .iter()
        .filter(|i| only.is_empty() || only.split(',').any(|o| o == short(i)))
        .copied()
        .collect();
    if imps.is_empty() || runs == 0 || mb == 0 {
        eprintln!("impair-bench: nothing to run (check --only, --runs, --mb)");
        std::process::exit(2)
    }
    let started = Instant::now();
    let mut b = Bench {
        tb: Testbed::bridged("impbench"),
        backend,
        bytes: mb * 1_000_000,
        limit,
        port: 5000,
        trace,
        tasd_args: opt(&args, "--tasd-args", String::new())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        sender_stats: args.iter().any(|a| a == "--sender-stats"),
    };
    // samples[impairment][cell]
    let mut samples: Vec<[Vec<Sample>; 4]> = vec![Default::default(); imps.len()];
    for run in 0..runs {
        eprintln!(
            "run {}/{runs} ({:.0} s so far)",
            run + 1,
            started.elapsed().as_secs_f64()
        );
        for (i, imp) in imps.iter().enumerate() {
            let seed = base_seed * 1000 + run as u64 * 10 + i as u64;
            // Linux first (tasd stopped), then TAS, with the same seed.
            for want in [Stack::Kernel, Stack::Tas] {
                for (c, &(stack, flow)) in CELLS.iter().enumerate() {
                    if stack != want {
                        continue;
                    }
                    // A cell that did not finish once is not repeated.
                    if samples[i][c].iter().any(|s| !s.finished) {
                        continue;
                    }
                    match stack {
                        Stack::Kernel => b.kernel(),
                        Stack::Tas => b.tas(),
                    }
                    let s = b.one(imp, seed, stack, flow);
                    samples[i][c].push(s);
                }
            }
        }
    }
    let total = started.elapsed().as_secs_f64();

    let nic = match backend {
        Backend::AfXdp => "af_xdp",
        Backend::AfPacket => "af_packet",
        Backend::Dpdk => "dpdk",
    };
    println!(
        "## Goodput through the impair bridge, Mbit/s: median (min–max) of {runs} interleaved runs, {mb} MB per transfer, tasd --nic {nic}"
    );
    println!();
    println!("| impairment | Linux → TAS app | Linux → Linux | ratio | TAS app → Linux | Linux → Linux | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (i, imp) in imps.iter().enumerate() {
        let s = &samples[i];
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            imp.name,
            cell(&s[0]),
            cell(&s[1]),
            ratio(&s[0], &s[1]),
            cell(&s[2]),
            cell(&s[3]),
            ratio(&s[2], &s[3])
        );
    }
    println!();
    println!("## Wire bytes per payload byte in the data's direction (median; headers alone make 1.046 at MSS 1448, 1.037 at 1460)");
    println!();
    println!("| impairment | Linux → TAS app | Linux → Linux | TAS app → Linux | Linux → Linux |");
    println!("|---|---|---|---|---|");
    for (i, imp) in imps.iter().enumerate() {
        let w = |c: usize| {
            let v: Vec<f64> = samples[i][c].iter().map(|s| s.wire).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", median(v))
            }
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            imp.name,
            w(0),
            w(1),
            w(2),
            w(3)
        );
    }
    println!();
    println!(
        "DNF: not finished within the limit of {} s; the number is the goodput over those {} s (bytes through / limit). Total time {:.0} s.",
        limit.as_secs(),
        limit.as_secs(),
        total
    );
}
