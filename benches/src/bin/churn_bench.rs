//! `churn-bench`: connection churn through tasd, each way. Prints a table;
//! never fails on a number.
//!
//! 1. **Linux → TAS**: a TAS echo server (`peer --tas echo-server`, one app
//!    for the whole run); P Linux clients (`peer churn`) together make N
//!    connections one after the other: connect, SIZE bytes echoed, close
//!    (the client closes first; `net.ipv4.tcp_tw_reuse=1` in the Linux
//!    namespace so its TIME_WAIT does not exhaust its ports).
//! 2. **TAS → Linux**: a Linux echo server; P TAS clients (`peer --tas
//!    churn`, one app each) together make N connections the same way (TAS
//!    closes first: tasd keeps the TIME_WAITs, without rings).
//!
//! 3. **Concurrent**: C connections (60,000; `--concurrent 0` skips it)
//!    from Linux clients (`peer connect-hold`, 15,000 per process; the
//!    Linux namespace's port range widened to 1024-65535) held open at once
//!    by one TAS app (`peer --tas accept-hold` with tasd's default ring
//!    sizes: the point is that the default settings hold them), then the
//!    clients killed (C RSTs). Each client process keeps at most
//!    `--window` (256) handshakes in progress, as a load generator with a
//!    connection pool fills it; `--window 0` starts all of a process's
//!    connects at once (a synchronous burst of SYNs that overflows the
//!    interface's receive rings, docs/churn-bench.md).
//!
//! For each of 1 and 2: connections that worked and failed, the time and rate, tasd's
//! resident memory before and after, the region use of the TAS app(s)
//! (bytes of its shared region in use: rings, header, event rings; for the
//! server before and after, for the clients at their first and last
//! sample, `tasctl status`) and what is left in tasd afterwards (flows,
//! TIME_WAIT entries after their 2 s).
//!
//! ```text
//! sudo target/release/churn-bench [--n 100000] [--procs 4] [--size 64]
//!      [--concurrent 60000] [--window 256] [--quick]
//! ```
//! (build first: `cargo build --release -p tasd -p tasctl -p tas-system-tests
//! -p tas-benches --bins`). `--quick`: N = 10,000, C = 20,000. The backend is
//! `TAS_TEST_NIC` (as in the system tests).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tas_system_tests::{bin, vm_rss_kib, Backend, Testbed, LNX_IP, TAS_IP};

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("churn-bench: bad or missing value for {name}");
                std::process::exit(2)
            }
        },
        None => default,
    }
}

/// One request on tasd's control socket; its `data` (Null on any error).
fn ctl(path: &Path, cmd: &str) -> serde_json::Value {
    let go = || -> Option<serde_json::Value> {
        let mut s = UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
            .ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(v["data"].clone())
    };
    go().unwrap_or(serde_json::Value::Null)
}

/// Region use of the apps with these pids (summed; None if none is there).
fn region_used(status: &serde_json::Value, pids: &[u32]) -> Option<u64> {
    let apps = status["apps"].as_array()?;
    let v: Vec<u64> = apps
        .iter()
        .filter(|a| {
            a["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .filter_map(|a| a["region_used"].as_u64())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// Waits for each client's "churn ok K failed F of N" line; sums them.
/// While waiting, samples `status` about every 500 ms with `sample`.
fn collect(
    clients: &[(u32, Receiver<String>)],
    limit: Duration,
    mut sample: impl FnMut(),
) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let t = Instant::now();
    let mut last_sample = Instant::now();
    for (_, rx) in clients {
        loop {
            if t.elapsed() > limit {
                eprintln!("churn-bench: a client did not finish within {limit:?}");
                return (ok, failed);
            }
            if last_sample.elapsed() > Duration::from_millis(500) {
                sample();
                last_sample = Instant::now();
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("churn ok") => {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    ok += w.get(2).and_then(|x| x.parse().ok()).unwrap_or(0);
                    failed += w.get(4).and_then(|x| x.parse().ok()).unwrap_or(0);
                    break;
                }
                Ok(l) if l.starts_with("FAILED") => {
                    eprintln!("churn-bench: client: {l}");
                    break;
                }
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
    }
    (ok, failed)
}

struct Row {
    what: &'static str,
    n: u64,
    ok: u64,
    failed: u64,
    secs: f64,
    rss: (u64, u64),
    region: (Option<u64>, Option<u64>),
    left_flows: u64,
    time_wait: u64,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| {
        format!("{:.2}", b as f64 / (1 << 20) as f64)
    })
}

/// Flows other than listeners, and TIME_WAIT entries, in tasd now.
fn leftovers(path: &Path) -> (u64, u64) {
    let st = ctl(path, "status");
    let mut flows = 0;
    let mut tw = 0;
    if let Some(m) = st["flows"].as_object() {
        for (k, v) in m {
            let n = v.as_u64().unwrap_or(0);
            match k.as_str() {
                "LISTEN" => {}
                "TIME_WAIT" => tw += n,
                _ => flows += n,
            }
        }
    }
    (flows, tw)
}

fn main() {
    // Ctrl-C or `kill` removes the test hosts.
    tas_system_tests::clean_up_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: churn-bench [--n 100000] [--procs 4] [--size 64] [--concurrent 60000] [--window 256] [--quick]");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let n: usize = opt(&args, "--n", if quick { 10_000 } else { 100_000 });
    let procs: usize = opt(&args, "--procs", 4).max(1);
    let size: usize = opt(&args, "--size", 64);
    let per = n.div_ceil(procs);
    let total = (per * procs) as u64;
    let limit = Duration::from_secs(60 + total / 200);
    let conc: usize = opt(&args, "--concurrent", if quick { 20_000 } else { 60_000 });
    let window: usize = opt(&args, "--window", 256);

    let mut tb = Testbed::new("chb", Backend::from_env());
    let mut s = tb.socket.as_os_str().to_owned();
    s.push(".ctl");
    let path = PathBuf::from(s);
    let tasd = tb.tasd_pid().expect("tasd pid");
    let rss = || vm_rss_kib(tasd).unwrap_or(0);
    let o = tb.run_lnx(
        Path::new("sysctl"),
        &["-qw", "net.ipv4.tcp_tw_reuse=1"],
        Duration::from_secs(5),
    );
    if !o.status.success() {
        eprintln!("churn-bench: could not set tcp_tw_reuse in the Linux namespace");
    }
    let mut rows = Vec::new();

    // 1. Linux clients -> TAS echo server.
    let (srv, srx) = tb.spawn_tas_lines(&bin("peer"), &["--tas", "echo-server", "7100"]);
    let _ = srx.recv_timeout(Duration::from_secs(10));
    // Warm-up: a few connections, so the "before" includes what one
    // connection leaves behind.
    let _ = tb.run_lnx(
        &bin("peer"),
        &["churn", TAS_IP, "7100", "20", &size.to_string()],
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (rss0, reg0) = (rss(), region_used(&ctl(&path, "status"), &[srv]));
    let t = Instant::now();
    let clients: Vec<_> = (0..procs)
        .map(|_| {
            tb.spawn_lnx_lines(
                &bin("peer"),
                &["churn", TAS_IP, "7100", &per.to_string(), &size.to_string()],
            )
        })
        .collect();
    let (ok, failed) = collect(&clients, limit, || {});
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(2500));
    let (left_flows, time_wait) = leftovers(&path);
    rows.push(Row {
        what: "Linux -> TAS",
        n: total,
        ok,
        failed,
        secs,
        rss: (rss0, rss()),
        region: (reg0, region_used(&ctl(&path, "status"), &[srv])),
        left_flows,
        time_wait,
    });
    tb.kill(srv);

    // 2. TAS clients -> Linux echo server.
    tb.spawn_lnx(&bin("peer"), &["echo-server", "7101"], Some("listening"));
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss();
    let t = Instant::now();
    let clients: Vec<_> = (0..procs)
        .map(|_| {
            tb.spawn_tas_lines(
                &bin("peer"),
                &[
                    "--tas",
                    "churn",
                    LNX_IP,
                    "7101",
                    &per.to_string(),
                    &size.to_string(),
                ],
            )
        })
        .collect();
    let pids: Vec<u32> = clients.iter().map(|c| c.0).collect();
    let mut first = None;
    let mut last = None;
    let (ok, failed) = collect(&clients, limit, || {
        if let Some(u) = region_used(&ctl(&path, "status"), &pids) {
            first.get_or_insert(u);
            last = Some(u);
        }
    });
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(2500));
    let (left_flows, time_wait) = leftovers(&path);
    rows.push(Row {
        what: "TAS -> Linux",
        n: total,
        ok,
        failed,
        secs,
        rss: (rss0, rss()),
        region: (first, last),
        left_flows,
        time_wait,
    });

    let conc_row = (conc > 0).then(|| concurrent(&mut tb, &path, conc, window, tasd));

    println!(
        "\nconnection churn: {total} connections each way ({procs} client processes, {size}-byte echo each), backend {:?}",
        Backend::from_env()
    );
    println!(
        "{:<13} {:>8} {:>8} {:>7} {:>7} {:>9} {:>22} {:>22} {:>6} {:>9}",
        "direction",
        "conns",
        "ok",
        "failed",
        "secs",
        "conns/s",
        "tasd RSS KiB bef->aft",
        "region MiB bef->aft",
        "flows",
        "TIME_WAIT"
    );
    for r in &rows {
        println!(
            "{:<13} {:>8} {:>8} {:>7} {:>7.1} {:>9.0} {:>22} {:>22} {:>6} {:>9}",
            r.what,
            r.n,
            r.ok,
            r.failed,
            r.secs,
            r.ok as f64 / r.secs.max(1e-9),
            format!("{} -> {}", r.rss.0, r.rss.1),
            format!("{} -> {}", mib(r.region.0), mib(r.region.1)),
            r.left_flows,
            r.time_wait
        );
    }
    println!(
        "(region: the echo server's before and after for Linux -> TAS; the clients' at the first and last sample for TAS -> Linux. flows / TIME_WAIT: left in tasd 2.5 s after the run, listeners not counted)"
    );
    if let Some(c) = conc_row {
        println!("\n{c}");
    }
}

/// Part 3: `n` connections held open at once by one TAS app with default
/// ring sizes; the report as text.
fn concurrent(tb: &mut Testbed, path: &Path, n: usize, window: usize, tasd: u32) -> String {
    const PER: usize = 15_000;
    let o = tb.run_lnx(
        Path::new("sysctl"),
        &["-qw", "net.ipv4.ip_local_port_range=1024 65535"],
        Duration::from_secs(5),
    );
    if !o.status.success() {
        eprintln!("churn-bench: could not widen the Linux port range");
    }
    let rss0 = vm_rss_kib(tasd).unwrap_or(0);
    let (app, arx) = tb.spawn_tas_lines(
        &bin("peer"),
        &["--tas", "accept-hold", "7102", &n.to_string(), "4096", "0"],
    );
    let _ = arx.recv_timeout(Duration::from_secs(10));
    let t = Instant::now();
    // One client address has 64,512 ports (1024-65535) per destination:
    // past 60,000 connections every other client process binds a second
    // address of the Linux namespace.
    let second = "198.18.0.3";
    if n > 60_000 {
        let ns = tb.lnx_ns.clone();
        let o = tb.run_lnx(
            Path::new("ip"),
            &["addr", "add", &format!("{second}/24"), "dev", "veth-lnx"],
            Duration::from_secs(5),
        );
        if !o.status.success() {
            eprintln!("churn-bench: could not add {second} in {ns}");
        }
    }
    let mut clients = Vec::new();
    let mut left = n;
    let mut i = 0;
    while left > 0 {
        let k = left.min(PER);
        left -= k;
        let mut a = vec!["connect-hold", TAS_IP, "7102"];
        let (ks, ws) = (k.to_string(), window.to_string());
        a.extend([ks.as_str(), "180"]);
        a.push(if n > 60_000 && i % 2 == 1 {
            second
        } else {
            "-"
        });
        a.push(&ws);
        clients.push(tb.spawn_lnx_lines(&bin("peer"), &a));
        i += 1;
    }
    let mut connected = 0u64;
    for (_, rx) in &clients {
        let deadline = Instant::now() + Duration::from_secs(200);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.starts_with("connected") => {
                    connected += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0);
                    break;
                }
                Ok(l) if l.starts_with("FAILED") => {
                    eprintln!("churn-bench: connect-hold: {l}");
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                _ => {}
            }
        }
    }
    let t_conn = t.elapsed().as_secs_f64();
    // The app's "accepted N" (or its last progress line).
    let mut accepted = String::from("-");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match arx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.starts_with("accepted") => {
                accepted = l.trim_start_matches("accepted ").to_string();
                break;
            }
            Ok(l) if l.starts_with("progress accepted") => {
                accepted = l.trim_start_matches("progress accepted ").to_string();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    }
    let st = ctl(path, "status");
    let est = st["flows"]["ESTABLISHED"].as_u64().unwrap_or(0);
    let region = region_used(&st, &[app]);
    let app_rss = vm_rss_kib(app).unwrap_or(0);
    let rss1 = vm_rss_kib(tasd).unwrap_or(0);
    for (pid, _) in &clients {
        tb.kill(*pid);
    }
    let t = Instant::now();
    let mut gone = None;
    while t.elapsed() < Duration::from_secs(20) {
        if ctl(path, "status")["flows_total"] == 1 {
            gone = Some(t.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss2 = vm_rss_kib(tasd).unwrap_or(0);
    let left = ctl(path, "status")["flows"].to_string();
    // Where frames were lost before tasd read them: the TAS interface's
    // drop counters and the AF_XDP sockets' (ring full, fill ring empty).
    let nic_drops = nic_drop_report(tb);
    let stats = ctl(path, "stats");
    let counters: Vec<String> = [
        "syn_rx",
        "accepted",
        "syncookies_sent",
        "syncookies_recv",
        "syncookies_parked",
        "syncookies_refused",
        "syncookies_dropped",
        "accept_overflow",
        "syn_dropped_backlog",
        "syn_dropped_no_room",
        "accept_no_room",
        "half_open_timeouts",
        "alloc_failures",
        "table_full",
    ]
    .iter()
    .map(|k| {
        let v = &stats["counters"][format!("slowpath.{k}")];
        format!("{k} {}", v.as_u64().unwrap_or(0))
    })
    .chain(
        stats["counters"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| {
                (k.contains("drop")
                    || k.contains("backpressure")
                    || k.ends_with("syncookies_failed"))
                    && v.as_u64().unwrap_or(0) > 0
            })
            .map(|(k, v)| format!("{k} {v}")),
    )
    .collect();
    format!(
        "concurrent: {n} connections from Linux to one TAS app, default tasd settings and ring sizes, at most {window} handshakes in progress per client process (0: all at once)\n\
         connected (Linux) {connected} in {t_conn:.1} s; accepted (app) {accepted}; ESTABLISHED in tasd {est}\n\
         app region in use {} MiB (of --app-mem-mib, 4094 by default; sparse: the app's RSS is {app_rss} KiB)\n\
         tasd RSS KiB: {rss0} before, {rss1} with them open, {rss2} after\n\
         clients killed ({n} RSTs): every flow gone from tasd after {} (left: {left})\n\
         counters: {}\n\
         drops before tasd: {nic_drops}",
        mib(region),
        gone.map_or("more than 20 s".to_string(), |s| format!("{s:.2} s")),
        counters.join(", "),
    )
}

/// Non-zero drop counters of the TAS side's interface (`ethtool -S`,
/// e.g. veth's per-queue XDP drops) and its AF_XDP sockets (`ss --xdp`).
fn nic_drop_report(tb: &mut Testbed) -> String {
    let ns = tb.tas_ns.clone();
    let run = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut v: Vec<String> = run(&["ethtool", "-S", "veth-tas"])
        .lines()
        .filter_map(|l| {
            let (k, n) = l.trim().split_once(':')?;
            let n: u64 = n.trim().parse().ok()?;
            (n > 0 && (k.contains("drop") || k.contains("full") || k.contains("err")))
                .then(|| format!("{k} {n}"))
        })
        .collect();
    let ss = run(&["ss", "--xdp", "-e", "-m"]);
    let ss: Vec<&str> = ss.lines().skip(1).map(str::trim).collect();
    if !ss.is_empty() {
        v.push(format!("ss --xdp: {}", ss.join(" | ")));
    }
    if v.is_empty() {
        "none counted".into()
    } else {
        v.join(", ")
    }
}
