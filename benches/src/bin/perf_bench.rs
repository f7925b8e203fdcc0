//! `perf-bench`: issue 15's table, side by side with Linux in one run.
//! A benchmark, not a test: it prints tables and never fails on a number.
//!
//! Every row runs the same unmodified server once on the Linux stack (the
//! TAS-side namespace's kernel owns 198.18.0.1) and once on TAS (tasd with
//! default settings owns it; the server under `libtas_preload.so`), driven
//! by the same client in the Linux namespace over the same veth pair:
//!
//! * `echo1`, `echo64`: 64-byte RPCs (`rpc`) with 1 and 64 connections;
//!   the client runs blocking and busy-polling and the better is kept.
//!   Linux: the better of a blocking and a busy-polling `rpc server`. TAS:
//!   `rpc server` under the shim, and the `tas` API's echo server (`peer`).
//! * `sockperf`: `sockperf ping-pong`, 64 B over TCP: p50 and p99.
//! * `redis`, `redis-P16`: `redis-benchmark -t get -c 50` (and `-P 16`).
//! * `iperf3`: one stream from the Linux host to the server side. Each
//!   run also measures the backend's raw rate at full size (the `reflect`
//!   example on both ends of the veth pair, no TCP, 1514-byte frames,
//!   window 512; Gbit/s of frames reflected), and the row says what
//!   share of it iperf3 under TAS reached (issue 15's target: 80 %).
//!
//! Each configuration runs `--runs` times, interleaved (Linux, TAS, Linux,
//! TAS, ...), and the table shows medians. Options:
//!
//! * `--neighbour`: a CPU-bound process (a shell busy loop, not pinned,
//!   bounded by `timeout`) runs beside the sockperf and redis rows; each
//!   party's CPU share (client, server, tasd, the loop) is printed.
//! * `--sweep`: TAS only, the static knobs against the self-tuned default:
//!   tasd's idle spin (`--idle-spin-us` 0/20/200) × the app's spin
//!   (`TAS_SPIN_US` 0/50), on every row but iperf3.
//! * `--load-curve FILE.svg`: `sockperf under-load` at rising message
//!   rates for both stacks; prints p50/p99 per rate and writes the plot.
//! * `--rows a,b,...`, `--secs S` (per measurement, default 3), `--runs N`
//!   (default 3), `--nic af_xdp|af_packet`, `--tasd-args "..."`.
//!
//! `sudo target/release/perf-bench [--runs 5] [--neighbour] [--sweep]`
//! (build first: `cargo build --release --workspace --bins --examples`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tas_system_tests::{
    bin, cpu_seconds, ensure_packages, redis_server_args, shim_lib, Backend, Testbed, TAS_IP,
};

const ROWS: [&str; 6] = [
    "echo1",
    "echo64",
    "sockperf",
    "redis",
    "redis-P16",
    "iperf3",
];

struct Opts {
    runs: usize,
    secs: u32,
    backend: Backend,
    rows: Vec<String>,
    neighbour: bool,
    sweep: bool,
    curve: Option<String>,
    tasd_args: Vec<String>,
}

const USAGE: &str =
    "usage: perf-bench [--runs N] [--secs S] [--rows a,b,...] [--nic af_xdp|af_packet]
                  [--tasd-args \"...\"] [--neighbour] [--sweep] [--load-curve FILE.svg]
rows: echo1,echo64,sockperf,redis,redis-P16,iperf3 (default all); run as root";

/// Exits with a one-line message (status 2) for bad command lines.
fn usage_error(msg: &str) -> ! {
    eprintln!("perf-bench: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        runs: 3,
        secs: 3,
        backend: Backend::AfXdp,
        rows: ROWS.iter().map(|s| s.to_string()).collect(),
        neighbour: false,
        sweep: false,
        curve: None,
        tasd_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| usage_error(&format!("{a} needs a value")))
        };
        let count = |v: String| -> u32 {
            match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => usage_error(&format!("{a}: expected a positive number, got {v:?}")),
            }
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--runs" => o.runs = count(value()) as usize,
            "--secs" => o.secs = count(value()),
            "--rows" => {
                o.rows = value().split(',').map(str::to_string).collect();
                for r in &o.rows {
                    if !ROWS.contains(&r.as_str()) {
                        usage_error(&format!("unknown row {r:?}"));
                    }
                }
            }
            "--nic" => {
                o.backend = match value().as_str() {
                    "af_xdp" => Backend::AfXdp,
                    "af_packet" => Backend::AfPacket,
                    v => usage_error(&format!("--nic: unknown backend {v:?}")),
                }
            }
            "--tasd-args" => o.tasd_args = value().split_whitespace().map(str::to_string).collect(),
            "--neighbour" => o.neighbour = true,
            "--sweep" => o.sweep = true,
            "--load-curve" => o.curve = Some(value()),
            other => usage_error(&format!("unknown option {other:?}")),
        }
    }
    o
}

/// One measurement: a rate (or throughput) and latencies, any may be absent.
#[derive(Clone, Debug, Default)]
struct M {
    rate: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    /// CPU share per party over the client's run (`--neighbour`; 1.0 = one
    /// CPU for the whole run).
    cpu: Vec<(String, f64)>,
    /// Frames per request to and from the client (the Linux side's veth
    /// counters over the client's run; the redis rows).
    frames: Option<(f64, f64)>,
    err: Option<String>,
}

impl M {
    fn failed(why: impl Into<String>) -> M {
        M {
            err: Some(why.into()),
            ..M::default()
        }
    }
}

/// Which stack serves.
#[derive(Clone)]
enum Stack {
    Linux,
    /// tasd arguments and the app's environment.
    Tas(Vec<String>, Vec<(String, String)>),
}

impl Stack {
    fn name(&self) -> String {
        match self {
            Stack::Linux => "linux".into(),
            Stack::Tas(a, e) => {
                let mut s = "tas".to_string();
                for x in a {
                    s.push(' ');
                    s.push_str(x);
                }
                for (k, v) in e {
                    s.push_str(&format!(" {k}={v}"));
                }
                s
            }
        }
    }
}

fn bed(stack: &Stack, o: &Opts) -> Testbed {
    match stack {
        Stack::Linux => {
            let mut tb = Testbed::hosts("pb");
            let r = tb.run_tas(
                Path::new("ip"),
                &["addr", "add", "198.18.0.1/24", "dev", "veth-tas"],
                Duration::from_secs(5),
            );
            assert!(r.status.success(), "cannot give the kernel 198.18.0.1");
            tb
        }
        Stack::Tas(args, _) => {
            let mut a: Vec<&str> = o.tasd_args.iter().map(String::as_str).collect();
            a.extend(args.iter().map(String::as_str));
            Testbed::with_args("pb", o.backend, &a)
        }
    }
}

/// Starts `prog args` as the server on the TAS-side host, under the shim
/// for TAS. Returns its pid.
fn serve(tb: &mut Testbed, stack: &Stack, prog: &str, args: &[&str], ready: Option<&str>) -> u32 {
    let mut argv: Vec<String> = Vec::new();
    if let Stack::Tas(_, env) = stack {
        argv.push(format!("LD_PRELOAD={}", shim_lib().display()));
        for (k, v) in env {
            argv.push(format!("{k}={v}"));
        }
    }
    argv.push(prog.to_string());
    argv.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pid = tb.spawn_tas(Path::new("env"), &a, ready);
    if ready.is_none() {
        std::thread::sleep(Duration::from_millis(700));
    }
    pid
}

/// Runs the client to completion in the Linux namespace, measuring CPU
/// seconds of `watch` (name, pid) over its run. Returns stdout and the CPU.
fn client(
    tb: &mut Testbed,
    prog: &str,
    args: &[&str],
    limit: Duration,
    watch: &[(String, u32)],
) -> (String, Vec<(String, f64)>) {
    let before: Vec<f64> = watch
        .iter()
        .map(|(_, p)| cpu_seconds(*p).unwrap_or(0.0))
        .collect();
    let started = std::time::Instant::now();
    let psi0 = psi_some_us();
    let (pid, rx) = tb.spawn_lnx_lines(Path::new(prog), args);
    let c0 = cpu_seconds(pid).unwrap_or(0.0);
    let mut c_last = c0;
    let w0 = runqueue_wait_ns(pid).unwrap_or(0);
    let mut w_last = w0;
    let mut out = String::new();
    let deadline = std::time::Instant::now() + limit;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => {
                out.push_str(&l);
                out.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {
                if std::time::Instant::now() > deadline {
                    tb.kill(pid);
                    out.push_str("(killed: over time)\n");
                    break;
                }
            }
        }
        if let Some(c) = cpu_seconds(pid) {
            c_last = c;
        }
        if let Some(w) = runqueue_wait_ns(pid) {
            w_last = w;
        }
    }
    let _ = tb.wait_child(pid, Duration::from_secs(5));
    // Shares of the client's whole run (its start-up and warm-up included:
    // the other parties' CPU was measured over the same time).
    let wall = started.elapsed().as_secs_f64().max(1e-3);
    let mut cpu = vec![
        ("client".to_string(), (c_last - c0) / wall),
        (
            "client waited".to_string(),
            w_last.saturating_sub(w0) as f64 / 1e9 / wall,
        ),
    ];
    for ((name, p), b) in watch.iter().zip(before) {
        cpu.push((name.clone(), (cpu_seconds(*p).unwrap_or(b) - b) / wall));
    }
    if let (Some(a), Some(b)) = (psi0, psi_some_us()) {
        cpu.push(("cpu pressure".to_string(), (b - a) as f64 / 1e6 / wall));
    }
    (out, cpu)
}

/// Time the threads of `pid` spent runnable but waiting for a CPU, ns
/// (the second field of each `/proc/PID/task/TID/schedstat`, summed). A
/// client that waited is one the other parties kept from its CPU: a
/// client-bound row whose client also waits is bound by the machine.
/// (Threads that ended before the read are not counted.)
fn runqueue_wait_ns(pid: u32) -> Option<u64> {
    let mut sum = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        sum += parse_schedstat_wait(&text).unwrap_or(0);
    }
    Some(sum)
}

/// The run-queue wait (ns) of a `schedstat` line: `<on cpu> <waited> <slices>`.
fn parse_schedstat_wait(text: &str) -> Option<u64> {
    tas_runtime::schedstat_fields(text).map(|[_, waited]| waited)
}

/// PSI's `some` total (`/proc/pressure/cpu`, µs): time in which at least
/// one task waited for a CPU. Its growth over a run, as a share of the
/// run, says how much the parties got in each other's way. `None`
/// without PSI (a kernel built without it, `psi=0`).
fn psi_some_us() -> Option<u64> {
    parse_psi_some_total(&std::fs::read("/proc/pressure/cpu").ok()?)
}

/// `total=` of the `some` line of a PSI file:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`.
fn parse_psi_some_total(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

fn num_after(s: &str, key: &str) -> Option<f64> {
    let i = s.find(key)? + key.len();
    s[i..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

fn rpc_row(tb: &mut Testbed, conns: usize, o: &Opts) -> M {
    let secs = o.secs.to_string();
    let c = conns.to_string();
    let mut best: Option<M> = None;
    for busy in [false, true] {
        let mut a = vec!["client", TAS_IP, "7", "--conns", &c, "--secs", &secs];
        if busy {
            a.push("--busy");
        }
        let (out, cpu) = client(
            tb,
            bin("rpc").to_str().unwrap_or("rpc"),
            &a,
            Duration::from_secs(u64::from(o.secs) + 30),
            &[],
        );
        let Some(l) = out.lines().find(|l| l.starts_with("rpc:")) else {
            continue;
        };
        let m = M {
            rate: num_after(l, "rps "),
            p50_us: num_after(l, "p50 "),
            p99_us: num_after(l, "p99 "),
            cpu,
            ..M::default()
        };
        if best.as_ref().and_then(|b| b.rate) < m.rate {
            best = Some(m);
        }
    }
    best.unwrap_or_else(|| M::failed("rpc client failed"))
}

/// The echo rows: the server's variants for this stack, the best kept.
fn echo(stack: &Stack, conns: usize, o: &Opts) -> Vec<(String, M)> {
    let mut out = Vec::new();
    let variants: Vec<(&str, Vec<&str>)> = match stack {
        Stack::Linux => vec![
            ("rpc server", vec!["server", "7"]),
            ("rpc server --busy", vec!["server", "7", "--busy"]),
        ],
        Stack::Tas(..) => vec![
            ("rpc server (shim)", vec!["server", "7"]),
            ("peer (tas API)", vec![]),
        ],
    };
    for (name, args) in variants {
        let mut tb = bed(stack, o);
        if name.starts_with("peer") {
            tb.spawn_tas(
                &bin("peer"),
                &["--tas", "echo-server", "7"],
                Some("listening"),
            );
        } else {
            let rpc = bin("rpc");
            serve(
                &mut tb,
                stack,
                rpc.to_str().unwrap_or("rpc"),
                &args,
                Some("listening"),
            );
        }
        out.push((name.to_string(), rpc_row(&mut tb, conns, o)));
    }
    out
}

/// A busy loop beside the benchmark (`--neighbour`), bounded in time.
fn neighbour(tb: &mut Testbed, o: &Opts) -> Option<(String, u32)> {
    if !o.neighbour {
        return None;
    }
    // One process that is the loop (`timeout` would run it in a child,
    // whose CPU time the share below would not see).
    let script = format!("while (( SECONDS < {} )); do :; done", o.secs + 20);
    let pid = tb.spawn_lnx(Path::new("bash"), &["-c", &script], None);
    Some(("busy loop".to_string(), pid))
}

fn watch_list(tb: &Testbed, server: u32, n: &Option<(String, u32)>) -> Vec<(String, u32)> {
    let mut w = vec![("server".to_string(), server)];
    if let Some(p) = tb.tasd_pid() {
        w.push(("tasd".to_string(), p));
    }
    if let Some(x) = n {
        w.push(x.clone());
    }
    w
}

fn sockperf(stack: &Stack, o: &Opts) -> M {
    let mut tb = bed(stack, o);
    let srv = serve(
        &mut tb,
        stack,
        "sockperf",
        &["sr", "--tcp", "-i", TAS_IP, "-p", "11111"],
        None,
    );
    let n = neighbour(&mut tb, o);
    let w = watch_list(&tb, srv, &n);
    let t = o.secs.to_string();
    let (out, cpu) = client(
        &mut tb,
        "sockperf",
        &[
            "pp", "--tcp", "-i", TAS_IP, "-p", "11111", "-m", "64", "-t", &t,
        ],
        Duration::from_secs(u64::from(o.secs) + 30),
        &w,
    );
    // "percentile 50.000 =   12.345" (µs), "avg-latency=..."
    let p = |q: &str| {
        out.lines()
            .find(|l| l.contains(&format!("percentile {q} =")))
            .and_then(|l| l.rsplit('=').next()?.trim().parse::<f64>().ok())
    };
    let rate = out
        .lines()
        .find(|l| l.contains("ReceivedMessages="))
        .and_then(|l| num_after(l, "ReceivedMessages="))
        .map(|n| n / f64::from(o.secs));
    match p("50.000") {
        Some(p50) => M {
            rate,
            p50_us: Some(p50),
            p99_us: p("99.000"),
            cpu,
            ..M::default()
        },
        None => M::failed(format!(
            "sockperf: {}",
            out.lines().last().unwrap_or("no output")
        )),
    }
}

/// Packets received and sent by the Linux side's veth end so far.
fn veth_packets(tb: &mut Testbed) -> Option<(u64, u64)> {
    let r = tb.run_lnx(
        Path::new("cat"),
        &[
            "/sys/class/net/veth-lnx/statistics/rx_packets",
            "/sys/class/net/veth-lnx/statistics/tx_packets",
        ],
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&r.stdout);
    let mut n = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((n.next()??, n.next()??))
}

fn redis(stack: &Stack, o: &Opts, pipeline: bool) -> M {
    let mut tb = bed(stack, o);
    let srv = serve(
        &mut tb,
        stack,
        "redis-server",
        &redis_server_args(TAS_IP, "6379"),
        Some("Ready to accept"),
    );
    let n = neighbour(&mut tb, o);
    let w = watch_list(&tb, srv, &n);
    // About `secs` seconds of requests at the rates seen here.
    let n = if pipeline { 400_000 } else { 60_000 } * u64::from(o.secs);
    let reqs = n.to_string();
    let mut a = vec![
        "-h", TAS_IP, "-p", "6379", "-t", "get", "-c", "50", "-n", &reqs, "--csv",
    ];
    if pipeline {
        a.extend(["-P", "16"]);
    }
    let before = veth_packets(&mut tb);
    let (out, cpu) = client(
        &mut tb,
        "redis-benchmark",
        &a,
        Duration::from_secs(u64::from(o.secs) * 10 + 30),
        &w,
    );
    let frames = match (before, veth_packets(&mut tb)) {
        (Some((rx0, tx0)), Some((rx1, tx1))) if n > 0 => Some((
            rx1.saturating_sub(rx0) as f64 / n as f64,
            tx1.saturating_sub(tx0) as f64 / n as f64,
        )),
        _ => None,
    };
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let Some(l) = out.lines().find(|l| l.starts_with("\"GET\"")) else {
        return M::failed("redis-benchmark printed no GET line");
    };
    let f: Vec<f64> = l
        .split(',')
        .map(|x| x.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    M {
        rate: f.get(1).copied(),
        p50_us: f.get(4).map(|v| v * 1000.0),
        p99_us: f.get(6).map(|v| v * 1000.0),
        cpu,
        frames,
        err: None,
    }
}

fn iperf3(stack: &Stack, o: &Opts) -> M {
    let mut tb = bed(stack, o);
    let srv = serve(
        &mut tb,
        stack,
        "iperf3",
        // IPv4 on the server's address (iperf3 binds :: by default, which
        // the shim leaves to the kernel: IPv6 dual-stack is not done).
        &["-s", "-p", "5201", "-1", "--forceflush", "-B", TAS_IP],
        Some("listening"),
    );
    let t = o.secs.to_string();
    let (out, _) = client(
        &mut tb,
        "iperf3",
        &["-c", TAS_IP, "-p", "5201", "-t", &t, "-J"],
        Duration::from_secs(u64::from(o.secs) + 30),
        &[],
    );
    let _ = srv;
    let v: serde_json::Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(_) => return M::failed("iperf3 gave no JSON"),
    };
    match v["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) => M {
            rate: Some(bps / 1e9),
            ..M::default()
        },
        None => M::failed(format!(
            "iperf3: {}",
            v["error"].as_str().unwrap_or("no result")
        )),
    }
}

/// The frame size of the raw rate: full-size Ethernet frames (1500-byte
/// MTU plus the 14-byte header), as the TCP stream's segments are.
const RAW_FRAME: usize = 1514;

/// The backend's raw rate at full size: `reflect` reflecting on the TAS
/// side while `reflect --mode gen` sends 1514-byte frames (window 512)
/// from the Linux side, both on `--nic`'s backend; Gbit/s of frames
/// reflected back (frames/s × 1514 × 8). No TCP, no tasd, no app: what
/// the link and the backend move on these two CPUs.
fn raw(o: &Opts) -> M {
    if matches!(o.backend, Backend::Dpdk) {
        return M::failed("the reflect example has no dpdk backend");
    }
    let nic = o.backend.arg();
    let mut tb = Testbed::hosts("pb");
    let refl = bin("reflect");
    let gen_secs = o.secs.to_string();
    let refl_secs = (o.secs + 4).to_string();
    tb.spawn_tas(
        &refl,
        &["--nic", nic, "--iface", "veth-tas", "--secs", &refl_secs],
        None,
    );
    // (The reflector prints its first line after a second of traffic: it
    // is given time to attach instead.)
    std::thread::sleep(Duration::from_millis(1000));
    let size = RAW_FRAME.to_string();
    let (out, _) = client(
        &mut tb,
        &refl.to_string_lossy(),
        &[
            "--nic", nic, "--iface", "veth-lnx", "--mode", "gen", "--size", &size, "--secs",
            &gen_secs,
        ],
        Duration::from_secs(u64::from(o.secs) + 20),
        &[],
    );
    match out
        .lines()
        .find(|l| l.starts_with("gen summary:"))
        .and_then(parse_reflected)
    {
        Some(fps) => M {
            rate: Some(fps * (RAW_FRAME * 8) as f64 / 1e9),
            ..M::default()
        },
        None => M::failed("reflect gen printed no summary"),
    }
}

/// Frames per second reflected back, from `reflect --mode gen`'s summary
/// line (`... reflected back N (R/s), ...`).
fn parse_reflected(line: &str) -> Option<f64> {
    let rest = &line[line.find("reflected back ")? + "reflected back ".len()..];
    num_after(rest, "(")
}

/// The iperf3 row's note on the raw rate: TAS's share of its median, and
/// run by run where every run measured both (the host's speed drifts
/// between runs; each pair ran minutes apart); or why there is none.
fn raw_share(raw: &Cell, tas: &Cell) -> String {
    let (a, b) = match (raw.rate(), tas.rate()) {
        (Some(a), Some(b)) if a > 0.0 => (a, b),
        _ if raw.errs.is_empty() => return String::new(),
        _ => return format!("; raw rate: {}", raw.fmt("Gbit/s")),
    };
    let mut paired = String::new();
    if raw.rate.len() == tas.rate.len() {
        let v: Vec<f64> = raw
            .rate
            .iter()
            .zip(&tas.rate)
            .map(|(r, x)| 100.0 * x / r)
            .collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let mid = median(v).unwrap_or(0.0);
        paired = format!(", per run {mid:.0} % ({lo:.0}..{hi:.0})");
    }
    format!(
        "; TAS {:.0} % of the raw {a:.2} Gbit/s ({RAW_FRAME} B frames reflected){paired}",
        100.0 * b / a
    )
}

/// One row, one stack: (variant, measurement) pairs.
fn measure(row: &str, stack: &Stack, o: &Opts) -> Vec<(String, M)> {
    match row {
        "echo1" => echo(stack, 1, o),
        "echo64" => echo(stack, 64, o),
        "sockperf" => vec![("sockperf sr".into(), sockperf(stack, o))],
        "redis" => vec![("redis-server".into(), redis(stack, o, false))],
        "redis-P16" => vec![("redis-server".into(), redis(stack, o, true))],
        "iperf3" => vec![("iperf3 -s".into(), iperf3(stack, o))],
        _ => unreachable!(),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians over runs of one (row, stack, variant).
#[derive(Default)]
struct Cell {
    rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: BTreeMap<String, Vec<f64>>,
    frames_to: Vec<f64>,
    frames_from: Vec<f64>,
    errs: Vec<String>,
}

impl Cell {
    fn add(&mut self, m: &M) {
        if let Some(x) = m.rate {
            self.rate.push(x);
        }
        if let Some(x) = m.p50_us {
            self.p50.push(x);
        }
        if let Some(x) = m.p99_us {
            self.p99.push(x);
        }
        for (k, v) in &m.cpu {
            self.cpu.entry(k.clone()).or_default().push(*v);
        }
        if let Some((to, from)) = m.frames {
            self.frames_to.push(to);
            self.frames_from.push(from);
        }
        if let Some(e) = &m.err {
            self.errs.push(e.clone());
        }
    }
    fn rate(&self) -> Option<f64> {
        median(self.rate.clone())
    }
    fn fmt(&self, unit: &str) -> String {
        let mut s = match self.rate() {
            Some(r) if unit == "Gbit/s" => format!("{r:.2} Gbit/s"),
            Some(r) => format!("{:.1}k {unit}", r / 1000.0),
            None => "-".into(),
        };
        if let (Some(a), Some(b)) = (median(self.p50.clone()), median(self.p99.clone())) {
            s.push_str(&format!(", p50 {a:.1} / p99 {b:.1} us"));
        }
        if !self.errs.is_empty() {
            s.push_str(&format!(" ({} failed: {})", self.errs.len(), self.errs[0]));
        }
        s
    }
    fn cpu_line(&self) -> String {
        self.cpu
            .iter()
            .map(|(k, v)| format!("{k} {:.0}%", 100.0 * median(v.clone()).unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn unit(row: &str) -> &'static str {
    match row {
        "iperf3" => "Gbit/s",
        "sockperf" => "msg/s",
        _ => "req/s",
    }
}

fn main() {
    // Ctrl-C or `kill` removes the test hosts.
    tas_system_tests::clean_up_on_interrupt();
    let o = parse_opts();
    ensure_packages(&[
        ("command -v sockperf", "sockperf"),
        ("command -v redis-server", "redis-server"),
        ("command -v redis-benchmark", "redis-tools"),
        ("command -v iperf3", "iperf3"),
        ("command -v timeout", "coreutils"),
    ]);
    if let Some(path) = &o.curve {
        load_curve(&o, path);
        return;
    }
    let stacks: Vec<Stack> = if o.sweep {
        let mut v = vec![Stack::Tas(vec![], vec![])];
        for core in ["0", "20", "200"] {
            for app in ["0", "50"] {
                v.push(Stack::Tas(
                    vec!["--idle-spin-us".into(), core.into()],
                    vec![("TAS_SPIN_US".into(), app.into())],
                ));
            }
        }
        v
    } else {
        vec![Stack::Linux, Stack::Tas(vec![], vec![])]
    };
    let rows: Vec<String> = if o.sweep {
        o.rows
            .iter()
            .filter(|r| r.as_str() != "iperf3")
            .cloned()
            .collect()
    } else {
        o.rows.clone()
    };
    // (row, stack, variant) -> cell
    let mut cells: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
    for run in 0..o.runs {
        for row in &rows {
            for st in &stacks {
                for (variant, m) in measure(row, st, &o) {
                    eprintln!(
                        "run {run} {row} [{}] {variant}: {:?} p50 {:?} p99 {:?} {}",
                        st.name(),
                        m.rate,
                        m.p50_us,
                        m.p99_us,
                        m.err.as_deref().unwrap_or("")
                    );
                    cells
                        .entry((row.clone(), st.name(), variant))
                        .or_default()
                        .add(&m);
                }
            }
            if row == "iperf3" && !o.sweep {
                let m = raw(&o);
                eprintln!(
                    "run {run} {row} [raw] reflect {RAW_FRAME} B: {:?} {}",
                    m.rate,
                    m.err.as_deref().unwrap_or("")
                );
                cells
                    .entry((row.clone(), "raw".into(), format!("reflect {RAW_FRAME} B")))
                    .or_default()
                    .add(&m);
            }
        }
    }
    println!();
    println!(
        "perf-bench: medians of {} interleaved run(s), {} s each, tasd backend {:?}{}",
        o.runs,
        o.secs,
        o.backend,
        if o.neighbour {
            ", with a busy loop beside sockperf and redis"
        } else {
            ""
        }
    );
    println!();
    if o.sweep {
        println!("| row | configuration | server | result |");
        println!("|---|---|---|---|");
        for ((row, st, variant), c) in &cells {
            println!("| {row} | {st} | {variant} | {} |", c.fmt(unit(row)));
        }
        return;
    }
    println!("| row | Linux (best server) | TAS (best server) | TAS / Linux |");
    println!("|---|---|---|---|");
    for row in &rows {
        let best = |stack: &str| {
            cells
                .iter()
                .filter(|((r, s, _), _)| r == row && s.starts_with(stack))
                .max_by(|a, b| {
                    a.1.rate()
                        .unwrap_or(0.0)
                        .total_cmp(&b.1.rate().unwrap_or(0.0))
                })
        };
        let (Some(l), Some(t)) = (best("linux"), best("tas")) else {
            continue;
        };
        let ratio = match (l.1.rate(), t.1.rate()) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
            _ => "-".into(),
        };
        let lat = match (median(l.1.p50.clone()), median(t.1.p50.clone())) {
            (Some(a), Some(b)) if row == "sockperf" && a > 0.0 => {
                format!(" (p50 {:.2}x)", b / a)
            }
            _ => String::new(),
        };
        // iperf3 against the backend's raw rate measured in the same runs.
        let raw = cells
            .iter()
            .find(|((r, s, _), _)| r == row && s == "raw")
            .map(|(_, c)| c);
        let lat = format!("{lat}{}", raw.map_or(String::new(), |r| raw_share(r, t.1)));
        println!(
            "| {row} | {}: {} | {}: {} | {ratio}{lat} |",
            l.0 .2,
            l.1.fmt(unit(row)),
            t.0 .2,
            t.1.fmt(unit(row))
        );
    }
    {
        println!();
        println!(
            "CPU share over each measurement (median; 100% = one CPU; client, server and \
             tasd with --neighbour), the client's time waiting for a CPU while runnable \
             (client waited, /proc/PID/task/*/schedstat) and cpu pressure (share of the run \
             in which some task waited for a CPU, /proc/pressure/cpu):"
        );
        for ((row, st, variant), c) in &cells {
            if !c.cpu.is_empty() {
                println!("  {row} [{st}] {variant}: {}", c.cpu_line());
            }
        }
    }
    println!();
    println!(
        "Frames per request on the wire (median; packets the Linux side's veth received and \
         sent over the client's run, divided by the requests; a held ACK that goes out alone \
         is an extra frame to the client):"
    );
    for ((row, st, variant), c) in &cells {
        if let (Some(to), Some(from)) = (median(c.frames_to.clone()), median(c.frames_from.clone()))
        {
            println!("  {row} [{st}] {variant}: to the client {to:.3}, from the client {from:.3}");
        }
    }
}

/// `--load-curve`: sockperf under-load at rising rates, both stacks; p50
/// and p99 per rate, and an SVG plot.
fn load_curve(o: &Opts, path: &str) {
    let rates = [5_000u32, 10_000, 20_000, 40_000, 60_000, 80_000];
    let mut pts: BTreeMap<String, Vec<(u32, f64, f64)>> = BTreeMap::new();
    for st in [Stack::Linux, Stack::Tas(vec![], vec![])] {
        let mut tb = bed(&st, o);
        serve(
            &mut tb,
            &st,
            "sockperf",
            &["sr", "--tcp", "-i", TAS_IP, "-p", "11111"],
            None,
        );
        for r in rates {
            let t = o.secs.to_string();
            let mps = r.to_string();
            let (out, _) = client(
                &mut tb,
                "sockperf",
                &[
                    "ul", "--tcp", "-i", TAS_IP, "-p", "11111", "-m", "64", "-t", &t, "--mps", &mps,
                ],
                Duration::from_secs(u64::from(o.secs) + 30),
                &[],
            );
            let p = |q: &str| {
                out.lines()
                    .find(|l| l.contains(&format!("percentile {q} =")))
                    .and_then(|l| l.rsplit('=').next()?.trim().parse::<f64>().ok())
            };
            if let (Some(a), Some(b)) = (p("50.000"), p("99.000")) {
                eprintln!("{} {r} msg/s: p50 {a} p99 {b} us", st.name());
                pts.entry(st.name()).or_default().push((r, a, b));
            } else {
                eprintln!("{} {r} msg/s: no result", st.name());
            }
        }
    }
    println!("| offered msg/s | stack | p50 us | p99 us |");
    println!("|---|---|---|---|");
    for (s, v) in &pts {
        for (r, a, b) in v {
            println!("| {r} | {s} | {a:.1} | {b:.1} |");
        }
    }
    if let Err(e) = std::fs::write(path, svg(&pts)) {
        eprintln!("perf-bench: cannot write {path}: {e}");
    } else {
        println!("plot: {path}");
    }
}

/// A small line chart: x = offered rate, y = latency (log scale), one line
/// per stack and percentile.
fn svg(pts: &BTreeMap<String, Vec<(u32, f64, f64)>>) -> String {
    let (w, h, m) = (640.0, 400.0, 60.0);
    let xmax = pts
        .values()
        .flatten()
        .map(|p| f64::from(p.0))
        .fold(1.0, f64::max);
    let ys: Vec<f64> = pts.values().flatten().flat_map(|p| [p.1, p.2]).collect();
    let ymin = ys
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let ymax = ys
        .iter()
        .cloned()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(ymin + 1.0);
    let x = |v: f64| m + (w - 2.0 * m) * v / xmax;
    let y = |v: f64| h - m - (h - 2.0 * m) * (v.max(1.0).log10() - ymin) / (ymax - ymin);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    );
    s += &format!(
        "<line x1='{m}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{m}' y1='{m}' x2='{m}' y2='{}' stroke='black'/>\n",
        h - m,
        w - m,
        h - m,
        h - m
    );
    let mut e = ymin;
    while e <= ymax {
        let v = 10f64.powf(e);
        s += &format!(
            "<text x='{}' y='{}' text-anchor='end'>{v:.0} us</text>\n",
            m - 4.0,
            y(v) + 4.0
        );
        e += 1.0;
    }
    for k in 0..=4 {
        let v = xmax * f64::from(k) / 4.0;
        s += &format!(
            "<text x='{}' y='{}' text-anchor='middle'>{:.0}k</text>\n",
            x(v),
            h - m + 16.0,
            v / 1000.0
        );
    }
    s += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>offered load (64 B messages/s, sockperf under-load)</text>\n",
        w / 2.0,
        h - 16.0
    );
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut legend = 0.0;
    for (i, (name, v)) in pts.iter().enumerate() {
        let c = colors[i % colors.len()];
        for (pi, dash) in [(1usize, ""), (2, " stroke-dasharray='5,4'")] {
            let line: Vec<String> = v
                .iter()
                .map(|p| {
                    let val = if pi == 1 { p.1 } else { p.2 };
                    format!("{:.1},{:.1}", x(f64::from(p.0)), y(val))
                })
                .collect();
            s += &format!(
                "<polyline fill='none' stroke='{c}' stroke-width='2'{dash} points='{}'/>\n",
                line.join(" ")
            );
            s += &format!(
                "<text x='{}' y='{}' fill='{c}'>{name} {}</text>\n",
                m + 10.0,
                m + 14.0 + legend,
                if pi == 1 { "p50" } else { "p99 (dashed)" }
            );
            legend += 14.0;
        }
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_some_line_is_parsed() {
        let t = b"some avg10=4.00 avg60=7.48 avg300=16.83 total=16749793310\n\
                  full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_total(t), Some(16_749_793_310));
        // `full` first, `some` second: still the `some` total.
        let t = b"full avg10=0.00 avg60=0.00 avg300=0.00 total=7\nsome avg10=0.00 total=42\n";
        assert_eq!(parse_psi_some_total(t), Some(42));
    }

    #[test]
    fn what_is_not_psi_is_rejected() {
        assert_eq!(parse_psi_some_total(b""), None);
        assert_eq!(parse_psi_some_total(b"some avg10=1.0\n"), None);
        assert_eq!(parse_psi_some_total(b"some total=x\n"), None);
        assert_eq!(parse_psi_some_total(&[0xff, 0xfe]), None);
    }

    #[test]
    fn the_run_queue_wait_is_the_second_schedstat_field() {
        assert_eq!(
            parse_schedstat_wait("8731259114 120455032 41007\n"),
            Some(120_455_032)
        );
        assert_eq!(parse_schedstat_wait("8731259114\n"), None);
        assert_eq!(parse_schedstat_wait("1 x 3\n"), None);
        // This process's own threads: some wait is readable (maybe 0).
        assert!(runqueue_wait_ns(std::process::id()).is_some());
    }

    #[test]
    fn the_reflected_rate_is_read_from_the_generators_summary() {
        let l = "gen summary: af_xdp veth-lnx size 1514 window 512: sent 1950123 (390024/s), \
                 reflected back 1949611 (389922/s), window reopened after loss for 0 frames";
        assert_eq!(parse_reflected(l), Some(389_922.0));
        assert_eq!(parse_reflected("gen summary: sent 5 (5/s)"), None);
    }
}
