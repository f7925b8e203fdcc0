//! `tasctl`: inspects and tunes a running `tasd` over its control socket
//! (`<attach socket>.ctl`, see `tasd::ctlsock` for the protocol).
//!
//! Exit status: 0 success; 1 the daemon refused the request (bad algorithm,
//! parameter or value); 2 bad command line; 3 the daemon cannot be reached
//! or answered nonsense. `tasctl run` execs the program, whose status it
//! then is; before that 2, 3, 4 (libtas_preload.so not found), 126 (the
//! program cannot be executed) or 127 (not found).
#![forbid(unsafe_code)]

mod capture;
mod launch;
mod top;

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tasd::ctlsock::{self, CcShow, CoresView, Reply, Request, Stats, Status, TuneView};
use tasd::stack::{FlowDetail, ListenerInfo};

fn after_help() -> String {
    format!(
        "The daemon is found through --socket, else $TAS_SOCKET, else {default}; \
         the control socket is that path plus \".ctl\" (tasd's attach socket is the path itself).\n\n\
         Congestion control algorithms, their parameters and defaults (for `cc set ALGO KEY=VALUE`):\n{algos}\n\
         Rates take kbps/mbps/gbps (plain number: Mbit/s), times ns/us/ms/s (plain: µs).\n\n\
         Examples:\n  tasctl status\n  tasctl flows --json\n  tasctl cc set timely t_low=30us\n  \
         tasctl cc set dctcp-rate step=20mbps --port 8080\n  tasctl cc unset --port 8080\n  \
         tasctl cores\n  tasctl cores 1-4\n  tasctl listeners\n  tasctl top\n  tasctl capture -c 50 -w flows.pcap --port 8080\n  tasctl run -- redis-server --bind 198.18.0.1\n\n\
         Exit status: 0 ok, 1 request refused by tasd, 2 bad command line, 3 tasd not reachable; \
         `tasctl run`: the program's own, or 4 libtas_preload.so not found, 126/127 program not \
         executable / not found.",
        default = tasd::config::DEFAULT_SOCKET,
        algos = tasd::cc::describe_algorithms()
    )
}

/// Inspect and tune a running tasd.
#[derive(Debug, Parser)]
#[command(name = "tasctl", version, about, after_help = after_help())]
struct Cli {
    /// tasd's socket (the attach socket; ".ctl" is added) [env: TAS_SOCKET] [default: /run/tas/tasd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, global = true, default_value_t = 5.0, value_name = "SECS")]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Cores, apps, flows, packets and drops per second.
    Status,
    /// Every flow (like `ss -ti`): 4-tuple, state, congestion control, rate
    /// or window, RTT, bytes in/out, retransmits, ECN fraction.
    Flows {
        /// Only flows with this local port.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Congestion control settings.
    #[command(subcommand)]
    Cc(CcCmd),
    /// Every counter of the fast path and the slow path.
    Stats {
        /// Only counters whose name starts with this (e.g. "fastpath.").
        prefix: Option<String>,
    },
    /// Fast-path cores: active/min/max, scaling and per-core utilisation;
    /// with MIN-MAX, change the budget.
    ///
    /// Without an argument: how many fast-path cores poll now, the budget,
    /// the aggregate idle and the scaling decisions so far, and per core
    /// whether it is active, how busy it was and which NIC lanes it polls.
    /// With MIN-MAX (or N for N-N): tasd's scaling controller keeps between
    /// MIN and MAX cores polling from now on (the active count is moved into
    /// the new range at once).
    Cores {
        /// New budget: MIN-MAX or N (at least 1, at most the NIC lanes).
        #[arg(value_name = "MIN-MAX")]
        budget: Option<String>,
    },
    /// Listening ports and their accept queues: backlog, connections
    /// announced to the app and not yet taken, handshakes in progress.
    Listeners,
    /// Record the frames the fast path receives and sends (what tcpdump on
    /// the interface cannot see under AF_XDP or DPDK), as a pcap file or as
    /// one line per frame. Stops after -c frames or on Ctrl-C.
    Capture {
        /// Write a pcap file (nanosecond timestamps) instead of printing;
        /// `-` writes it to stdout.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after this many frames.
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
        /// Only frames of this TCP port (either end).
        #[arg(long)]
        port: Option<u16>,
        /// Bytes kept of each frame (64..16384).
        #[arg(short = 's', long, default_value_t = 2048, value_name = "BYTES")]
        snaplen: u32,
    },
    /// Live view: per-core busy, packet and payload rates, flows by state,
    /// and the busiest flows with RTT and congestion state. Quit with q or
    /// Ctrl-C. Plain frames with -b or when stdout is not a terminal.
    Top {
        /// Seconds between frames.
        #[arg(short = 'd', long, default_value_t = 1.0, value_name = "SECS")]
        delay: f64,
        /// Stop after this many frames.
        #[arg(short = 'n', long, value_name = "N")]
        iterations: Option<u64>,
        /// Batch mode: plain frames one after another, no terminal control.
        #[arg(short = 'b', long)]
        batch: bool,
    },
    /// What the self-tuning optimises: latency, throughput or efficiency.
    ///
    /// tasd's controllers (the fast-path cores' idle spin, the apps' spin,
    /// the core scaling thresholds) adapt online toward this goal; it is an
    /// intent, not a set of knobs. Without GOAL: the goal and what the
    /// controllers chose (spin and CPU contention per core).
    Tune {
        /// latency, throughput or efficiency.
        goal: Option<String>,
    },
    /// Run an unmodified program on TAS (LD_PRELOAD=libtas_preload.so).
    ///
    /// Checks that tasd accepts apps at its socket, adds libtas_preload.so
    /// (found next to tasctl, else in ../lib of its install prefix) to
    /// LD_PRELOAD, sets TAS_SOCKET and executes CMD in tasctl's place, so
    /// signals and the exit status are CMD's own. IPv4 TCP sockets then go
    /// through tasd; loopback, kernel-owned addresses and what
    /// --exclude-ports names stay on the kernel stack.
    Run {
        /// Sockets to leave to the kernel stack: a comma list of PORT,
        /// LOW-HIGH, A.B.C.D or A.B.C.D:PORT (a bind to that local port or
        /// address, a connect to that remote port or address); added to
        /// TAS_EXCLUDE.
        #[arg(long, value_name = "LIST")]
        exclude_ports: Option<String>,
        /// The program's own goal (latency, throughput or efficiency): its
        /// spin controller optimises for it whatever `tasctl tune` says for
        /// the daemon (TAS_PROFILE).
        #[arg(long, value_name = "GOAL")]
        profile: Option<String>,
        /// The program and its arguments (after `--` if they start with `-`).
        #[arg(
            value_name = "CMD",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        cmd: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum CcCmd {
    /// The global setting, per-port settings, and which algorithm runs how many flows.
    Show,
    /// Select ALGO (and parameters) for all flows, or for flows accepted on
    /// --port. Applies to live flows within one control interval.
    Set {
        /// dctcp-rate, dctcp-win, timely or const-rate.
        algo: String,
        /// Parameters as KEY=VALUE (see below for keys and defaults).
        params: Vec<String>,
        /// Only flows accepted on this listening port.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove a port's own setting (its flows follow the global one).
    Unset {
        #[arg(long)]
        port: u16,
    },
}

#[derive(Debug, PartialEq)]
enum Failure {
    Refused(String),
    Usage(String),
    Unreachable(String),
}

fn ctl_socket(cli: &Cli) -> PathBuf {
    let p = tas_abi::socket_path(cli.socket.as_deref());
    if p.extension().is_some_and(|e| e == "ctl") {
        p
    } else {
        ctlsock::ctl_path(&p)
    }
}

fn call(cli: &Cli, req: &Request) -> Result<serde_json::Value, Failure> {
    let path = ctl_socket(cli);
    let timeout = Duration::from_secs_f64(cli.timeout.clamp(0.05, 3600.0));
    match ctlsock::request(&path, req, timeout) {
        Ok(Reply { ok: true, data, .. }) => Ok(data.unwrap_or(serde_json::Value::Null)),
        Ok(Reply { error, .. }) => Err(Failure::Refused(
            error.unwrap_or_else(|| "request refused".into()),
        )),
        Err(e @ ctlsock::ClientError::Connect { .. }) => Err(Failure::Unreachable(format!(
            "{e}\n(is tasd running? point --socket or TAS_SOCKET at its socket)"
        ))),
        Err(e) => Err(Failure::Unreachable(e.to_string())),
    }
}

fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v)
        .map_err(|e| Failure::Unreachable(format!("unexpected answer from tasd: {e}")))
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}kB", b / 1e3)
    } else {
        format!("{b}B")
    }
}

fn human_rate(kbps: u64) -> String {
    tasd::cc::fmt_value(tasd::cc::Unit::Rate, kbps as f64)
}

fn print_status(s: &Status) {
    println!("tasd {} (pid {}), up {:.1} s", s.version, s.pid, s.uptime_s);
    println!(
        "address    {} on {} ({}, {}, {} mode)",
        s.ip, s.iface, s.nic, s.mac, s.mode
    );
    println!("socket     {}", s.socket);
    let cores: Vec<String> = s
        .cores
        .iter()
        .map(|c| format!("core {} {:.1}% busy", c.id, c.busy_pct))
        .collect();
    println!("cores      {}: {}", s.cores.len(), cores.join(", "));
    let apps: Vec<String> = s
        .apps
        .iter()
        .map(|a| {
            if a.exited {
                format!(
                    "app {} (pid {} exited, {} orphaned flows)",
                    a.id, a.pid, a.flows
                )
            } else {
                format!("app {} (pid {}, {} flows)", a.id, a.pid, a.flows)
            }
        })
        .collect();
    println!(
        "apps       {}{}{}",
        s.apps.len(),
        if apps.is_empty() { "" } else { ": " },
        apps.join(", ")
    );
    let flows: Vec<String> = s.flows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "flows      {}{}{}",
        s.flows_total,
        if flows.is_empty() { "" } else { ": " },
        flows.join(", ")
    );
    println!(
        "packets    rx {:.0}/s ({:.1} Mbit/s payload), tx {:.0}/s ({:.1} Mbit/s payload)",
        s.rx_pps, s.rx_mbps, s.tx_pps, s.tx_mbps
    );
    println!(
        "drops      {:.0}/s, exceptions {:.0}/s",
        s.drops_ps, s.exceptions_ps
    );
    println!("cc         {}", s.cc);
    if !s.goal.is_empty() {
        println!("goal       {} (tasctl tune)", s.goal);
    }
}

fn print_flows(flows: &[FlowDetail]) {
    let header = [
        "ID", "STATE", "LOCAL", "REMOTE", "APP", "CC", "LIMIT", "RTT", "SENDING", "IN", "OUT",
        "RETX", "ECN", "RINGS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for f in flows {
        let limit = match (f.rate_kbps, f.cwnd) {
            (Some(0), _) => "unlimited".to_string(),
            (Some(r), _) => format!("rate {}", human_rate(r)),
            (_, Some(w)) => format!("cwnd {}", human_bytes(w as u64)),
            _ => "-".to_string(),
        };
        let cc = match (&f.cc, f.slow_start) {
            (Some(a), Some(true)) => format!("{a}(ss)"),
            (Some(a), _) => a.clone(),
            _ => "-".into(),
        };
        let ecn = if !f.ecn {
            "-".to_string()
        } else {
            let frac = f
                .ecn_fraction
                .map_or("0%".into(), |x| format!("{:.1}%", x * 100.0));
            match f.alpha {
                Some(a) => format!("{frac} a={a:.3}"),
                None => frac,
            }
        };
        rows.push(vec![
            f.id.map_or("-".into(), |i| i.to_string()),
            f.state.clone(),
            f.local.clone(),
            f.remote.clone(),
            f.app.to_string(),
            cc,
            limit,
            f.rtt_us.map_or("-".into(), |r| format!("{r}us")),
            f.send_rate_kbps.map_or("-".into(), human_rate),
            human_bytes(f.bytes_in),
            human_bytes(f.bytes_out),
            format!("{}/{}", f.fast_retransmits, f.timeouts),
            ecn,
            if f.rx_buf == 0 {
                "-".into()
            } else {
                format!("{}K/{}K", f.rx_buf >> 10, f.tx_buf >> 10)
            },
        ]);
    }
    print_table(&rows);
    if flows.is_empty() {
        println!("(no flows)");
    }
}

fn print_listeners(ls: &[ListenerInfo]) {
    let mut rows = vec![[
        "ID",
        "PORT",
        "APP",
        "BACKLOG",
        "QUEUED",
        "SYN_RCVD",
        "REUSEPORT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for l in ls {
        rows.push(vec![
            l.id.to_string(),
            l.port.to_string(),
            l.app.to_string(),
            l.backlog.to_string(),
            l.pending.to_string(),
            l.half_open.to_string(),
            if l.reuseport { "yes" } else { "no" }.to_string(),
        ]);
    }
    print_table(&rows);
    if ls.is_empty() {
        println!("(no listeners)");
    }
}

fn print_table(rows: &[Vec<String>]) {
    print!("{}", table(rows));
}

/// Columns padded to their widest cell, one line per row.
fn table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `cores MIN-MAX` or `cores N`: the budget, checked before asking tasd
/// (same rules and words as `tasd --cores`; tasd checks MAX against its
/// NIC lanes).
/// `N` or `MIN-MAX`, with the daemon's own rules (`tasd::config::parse_cores`).
fn parse_cores(s: &str) -> Result<(u32, u32), String> {
    tasd::config::parse_cores(s).map_err(|e| format!("cores: {e}"))
}

fn render_tune(t: &TuneView) -> String {
    let mut out = format!(
        "goal: {}\nidle spin: {}, {}\nscaling: add a core below {:.2} idle cores, remove one above {:.2}{}\n",
        t.goal,
        t.idle_spin,
        if t.idle_yield {
            "yielding the CPU between idle polls"
        } else {
            "keeping the CPU (--no-idle-yield)"
        },
        t.scale_up_below_idle,
        t.scale_down_above_idle,
        if t.scale_fixed {
            " (fixed by --scale-*)"
        } else {
            " (by goal)"
        }
    );
    let mut rows = vec![vec![
        "CORE".to_string(),
        "STATE".to_string(),
        "BUSY".to_string(),
        "SPIN".to_string(),
        "CPU WAIT".to_string(),
        "CPU PRESSURE".to_string(),
        "IDLE CPUS".to_string(),
        "WAKE".to_string(),
        "ACK HOLD".to_string(),
    ]];
    for k in &t.cores {
        rows.push(vec![
            k.id.to_string(),
            if k.active { "active" } else { "idle" }.to_string(),
            format!("{:.1}%", k.busy_pct),
            format!("{:.0} us", k.spin_us),
            format!("{:.1}%", k.contention_pct),
            format!("{:.1}%", k.pressure_pct),
            format!("{:.2}", k.idle_cpus),
            format!("{:.0} us", k.wake_us),
            format!("{:.0} us", k.ack_hold_us),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

fn render_cores(c: &CoresView) -> String {
    let mut out = format!(
        "cores: active {} (min {}, max {}), lanes {}, idle {:.2} cores, scale-ups {}, scale-downs {}\n",
        c.active, c.min, c.max, c.lanes, c.idle_cores, c.scale_ups, c.scale_downs
    );
    let mut rows = vec![vec![
        "CORE".to_string(),
        "STATE".to_string(),
        "BUSY".to_string(),
        "CPU".to_string(),
        "LANES".to_string(),
    ]];
    for k in &c.cores {
        // `*`: fed by software steering (no NIC queue of its own).
        let lanes: Vec<String> = k
            .lanes
            .iter()
            .map(|l| {
                if c.steered_lanes.contains(l) {
                    format!("{l}*")
                } else {
                    l.to_string()
                }
            })
            .collect();
        rows.push(vec![
            k.id.to_string(),
            if k.active { "active" } else { "idle" }.to_string(),
            format!("{:.1}%", k.busy_pct),
            match (k.cpu, k.pinned) {
                (Some(c), Some(_)) => format!("{c} (pinned)"),
                (Some(c), None) => c.to_string(),
                (None, _) => "-".to_string(),
            },
            if lanes.is_empty() {
                "-".to_string()
            } else {
                lanes.join(",")
            },
        ]);
    }
    out.push_str(&table(&rows));
    if !c.steered_lanes.is_empty() {
        out.push_str("* fed by software steering: the interface has fewer RX queues than lanes\n");
    }
    out
}

fn print_cc(c: &CcShow) {
    let params = |p: &[(String, String)]| {
        p.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut rows = vec![vec![
        "global".to_string(),
        c.global.algo.clone(),
        params(&c.global.params),
    ]];
    for s in &c.ports {
        rows.push(vec![
            format!("port {}", s.port.unwrap_or(0)),
            s.algo.clone(),
            params(&s.params),
        ]);
    }
    print_table(&rows);
    let usage: Vec<String> = c
        .flows_by_algo
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "flows by algorithm: {}",
        if usage.is_empty() {
            "none".into()
        } else {
            usage.join(", ")
        }
    );
    let names: Vec<&str> = c.algorithms.iter().map(|a| a.name.as_str()).collect();
    println!(
        "algorithms: {} (parameters and defaults: tasctl --help)",
        names.join(", ")
    );
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let (req, filter_port, prefix) = match &cli.cmd {
        Cmd::Run { .. } => unreachable!("`run` is handled by launch::run"),
        Cmd::Top { .. } => unreachable!("`top` is handled by top::top"),
        Cmd::Capture { .. } => unreachable!("`capture` is handled by capture::capture"),
        Cmd::Status => (Request::Status, None, None),
        Cmd::Flows { port } => (Request::Flows, *port, None),
        Cmd::Stats { prefix } => (Request::Stats, None, prefix.clone()),
        Cmd::Cc(CcCmd::Show) => (Request::CcShow, None, None),
        Cmd::Cc(CcCmd::Set { algo, params, port }) => {
            let mut kv = Vec::new();
            for p in params {
                let (k, v) = tasd::cc::key_value(p).map_err(|e| Failure::Usage(e.to_string()))?;
                kv.push((k, v));
            }
            if *port == Some(0) {
                return Err(Failure::Usage("--port must be 1..65535".into()));
            }
            (
                Request::CcSet {
                    algo: algo.clone(),
                    params: kv,
                    port: *port,
                },
                None,
                None,
            )
        }
        Cmd::Cc(CcCmd::Unset { port }) => (Request::CcUnset { port: *port }, None, None),
        Cmd::Cores { budget: None } => (Request::Cores, None, None),
        Cmd::Tune { goal: None } => (Request::TuneShow, None, None),
        Cmd::Tune { goal: Some(g) } => {
            let g: tas_tune::Goal = g
                .parse()
                .map_err(|e: tas_tune::UnknownGoal| Failure::Usage(format!("tune: {e}")))?;
            (
                Request::Tune {
                    goal: g.to_string(),
                },
                None,
                None,
            )
        }
        Cmd::Listeners => (Request::Listeners, None, None),
        Cmd::Cores { budget: Some(b) } => {
            let (min, max) = parse_cores(b).map_err(Failure::Usage)?;
            (Request::CoresSet { min, max }, None, None)
        }
    };
    let data = call(cli, &req)?;
    match req {
        Request::Status => {
            let s: Status = decode(data.clone())?;
            if cli.json {
                print_json(&data);
            } else {
                print_status(&s);
            }
        }
        Request::Flows => {
            let mut f: Vec<FlowDetail> = decode(data)?;
            if let Some(p) = filter_port {
                f.retain(|x| x.local.rsplit(':').next() == Some(p.to_string().as_str()));
            }
            if cli.json {
                print_json(&serde_json::to_value(&f).unwrap_or_default());
            } else {
                print_flows(&f);
            }
        }
        Request::Stats => {
            let mut s: Stats = decode(data)?;
            if let Some(p) = prefix {
                s.counters.retain(|k, _| k.starts_with(&p));
            }
            if cli.json {
                print_json(&serde_json::to_value(&s).unwrap_or_default());
            } else {
                let rows: Vec<Vec<String>> = s
                    .counters
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.to_string()])
                    .collect();
                print_table(&rows);
            }
        }
        Request::Listeners => {
            let l: Vec<ListenerInfo> = decode(data.clone())?;
            if cli.json {
                print_json(&data);
            } else {
                print_listeners(&l);
            }
        }
        Request::CaptureStart { .. }
        | Request::CaptureRead { .. }
        | Request::CaptureStop { .. } => {
            unreachable!("`capture` requests are made by capture::capture")
        }
        Request::Tune { .. } | Request::TuneShow => {
            let t: TuneView = decode(data.clone())?;
            if cli.json {
                print_json(&data);
            } else {
                print!("{}", render_tune(&t));
            }
        }
        Request::Cores | Request::CoresSet { .. } => {
            let c: CoresView = decode(data.clone())?;
            if cli.json {
                print_json(&data);
            } else {
                print!("{}", render_cores(&c));
            }
        }
        Request::CcShow | Request::CcSet { .. } | Request::CcUnset { .. } => {
            let c: CcShow = decode(data.clone())?;
            if cli.json {
                print_json(&data);
            } else {
                print_cc(&c);
            }
        }
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

fn main() -> ExitCode {
    // A reader that goes away (`tasctl flows | head`) ends tasctl quietly
    // with the status a SIGPIPE death gives (128 + 13), as any
    // command-line tool, instead of a panic message about stdout.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.to_string().contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    if let Cmd::Run {
        exclude_ports,
        profile,
        cmd,
    } = &cli.cmd
    {
        // Returns only when CMD could not be started.
        let (code, msg) = launch::run(
            cli.socket.as_deref(),
            exclude_ports.as_deref(),
            profile.as_deref(),
            cmd,
        );
        eprintln!("tasctl: {msg}");
        return ExitCode::from(code);
    }
    let result = match &cli.cmd {
        Cmd::Top {
            delay,
            iterations,
            batch,
        } => {
            if !(0.05..=3600.0).contains(delay) {
                Err(Failure::Usage(
                    "top: --delay must be 0.05..3600 seconds".into(),
                ))
            } else if *iterations == Some(0) {
                Err(Failure::Usage("top: -n must be at least 1".into()))
            } else {
                let args = top::TopArgs {
                    interval: Duration::from_secs_f64(*delay),
                    iterations: *iterations,
                    batch: *batch,
                };
                top::top(&cli, &args)
            }
        }
        Cmd::Capture {
            write,
            count,
            port,
            snaplen,
        } => {
            if *count == Some(0) {
                Err(Failure::Usage("capture: -c must be at least 1".into()))
            } else {
                let a = capture::CaptureArgs {
                    write: write.clone(),
                    count: *count,
                    port: *port,
                    snaplen: *snaplen,
                };
                capture::capture(&cli, &a)
            }
        }
        _ => run(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (code, msg) = match f {
                Failure::Refused(m) => (1, m),
                Failure::Usage(m) => (2, m),
                Failure::Unreachable(m) => (3, m),
            };
            if cli.json {
                println!("{}", serde_json::json!({ "ok": false, "error": msg }));
            }
            eprintln!("tasctl: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use tasd::ctlsock::CoreStatus;

    #[test]
    fn cores_budget_parses_and_refuses_with_one_line() {
        for (arg, want) in [
            ("1-4", (1, 4)),
            ("2", (2, 2)),
            ("3-3", (3, 3)),
            ("1-64", (1, 64)),
            (" 1 - 4 ", (1, 4)),
        ] {
            assert_eq!(parse_cores(arg), Ok(want), "{arg}");
        }
        for (arg, msg) in [
            ("3-1", "cores: '3-1': MIN must not exceed MAX"),
            ("x", "cores: 'x': expected N or MIN-MAX"),
            ("1-", "cores: '1-': expected N or MIN-MAX"),
            ("-2", "cores: '-2': expected N or MIN-MAX"),
            ("1-2-3", "cores: '1-2-3': expected N or MIN-MAX"),
            ("+2", "cores: '+2': expected N or MIN-MAX"),
            ("1..4", "cores: '1..4': expected N or MIN-MAX"),
            ("99999999999", "cores: '99999999999': expected N or MIN-MAX"),
            ("0", "cores: '0': at least one fast-path core is needed"),
            ("0-2", "cores: '0-2': at least one fast-path core is needed"),
        ] {
            assert_eq!(parse_cores(arg), Err(msg.to_string()), "{arg}");
        }
    }

    #[test]
    fn cores_command_line() {
        let cli = Cli::try_parse_from(["tasctl", "cores"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Cores { budget: None }));
        let cli = Cli::try_parse_from(["tasctl", "cores", "1-4", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.cmd, Cmd::Cores { budget: Some(ref b) } if b == "1-4"));
        assert!(Cli::try_parse_from(["tasctl", "cores", "1", "2"]).is_err());
        // A bad budget is a usage error (exit 2) before tasd is contacted:
        // the socket does not exist, yet the error is not "cannot reach".
        let missing =
            std::env::temp_dir().join(format!("tas-no-daemon-{}.sock", std::process::id()));
        for (arg, msg) in [
            ("3-1", "cores: '3-1': MIN must not exceed MAX"),
            ("x", "cores: 'x': expected N or MIN-MAX"),
            ("0", "cores: '0': at least one fast-path core is needed"),
        ] {
            let cli = Cli::try_parse_from([
                "tasctl",
                "--socket",
                missing.to_str().unwrap(),
                "cores",
                arg,
            ])
            .unwrap();
            assert_eq!(run(&cli), Err(Failure::Usage(msg.into())));
        }
        let cli = Cli::try_parse_from([
            "tasctl",
            "--socket",
            missing.to_str().unwrap(),
            "cores",
            "2-3",
        ])
        .unwrap();
        assert!(matches!(run(&cli), Err(Failure::Unreachable(_))));
    }

    #[test]
    fn help_lists_cores() {
        let h = Cli::command().render_help().to_string();
        assert!(h.contains("cores"), "{h}");
        assert!(h.contains("tasctl cores 1-4"), "{h}");
        let mut cmd = Cli::command();
        let sub = cmd.find_subcommand_mut("cores").expect("cores subcommand");
        let h = sub.render_long_help().to_string();
        assert!(h.contains("MIN-MAX"), "{h}");
    }

    #[test]
    fn cores_view_renders_as_header_and_one_row_per_core() {
        let v = CoresView {
            active: 2,
            min: 1,
            max: 3,
            lanes: 4,
            idle_cores: 0.4567,
            scale_ups: 5,
            scale_downs: 3,
            cores: vec![
                CoreStatus {
                    id: 0,
                    busy_pct: 87.26,
                    active: true,
                    lanes: vec![0, 2],
                    cpu: Some(1),
                    pinned: Some(1),
                    ..Default::default()
                },
                CoreStatus {
                    id: 1,
                    busy_pct: 100.0,
                    active: true,
                    lanes: vec![1, 3],
                    cpu: Some(0),
                    ..Default::default()
                },
                CoreStatus {
                    id: 2,
                    busy_pct: 0.0,
                    active: false,
                    lanes: vec![],
                    ..Default::default()
                },
            ],
            steered_lanes: vec![],
        };
        assert_eq!(
            render_cores(&v),
            "cores: active 2 (min 1, max 3), lanes 4, idle 0.46 cores, scale-ups 5, scale-downs 3\n\
             CORE  STATE   BUSY    CPU         LANES\n\
             0     active  87.3%   1 (pinned)  0,2\n\
             1     active  100.0%  0           1,3\n\
             2     idle    0.0%    -           -\n"
        );
        // The JSON form is the daemon's own type, as received.
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(decode::<CoresView>(j).ok(), Some(v.clone()));
        // Lanes fed by steering are starred and explained.
        let s = CoresView {
            steered_lanes: vec![2, 3],
            ..v
        };
        let r = render_cores(&s);
        assert!(r.contains("0,2*") && r.contains("1,3*"), "{r}");
        assert!(
            r.ends_with(
                "* fed by software steering: the interface has fewer RX queues than lanes\n"
            ),
            "{r}"
        );
    }
}
