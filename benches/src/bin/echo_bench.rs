//! `echo-bench`: 64-byte RPC echo, TAS server vs Linux server, same veth
//! pair, same Linux client, one run. Prints a table (never fails on a number).
//!
//! Rows: the server (TAS via the low-level API; Linux blocking; Linux
//! busy-polling) × the client's mode (blocking / busy-polling) × 1 and 64
//! connections. Last, the link's own limit: frames reflected by the bare
//! backend (`reflect` example) with no TCP at all.
//!
//! `sudo target/release/echo-bench [--secs S] [--nic af_xdp|af_packet]`
//! `sudo target/release/echo-bench --compare-nics` (TAS over AF_XDP,
//! AF_PACKET and DPDK side by side; tasd built with `--features dpdk`)
//! `sudo target/release/echo-bench --cores 2-2 [--runs N]` (TAS only, over
//! `tasd --cores 2-2`: blocking client, 1 and 64 connections, N runs each,
//! with the commands the lanes applied and those handed to another lane)
//! (build first: `cargo build --release --workspace --bins --examples`).

use std::time::Duration;
use tas_system_tests::{bin, stdout, Backend, Testbed, TAS_IP};

fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct Row {
    server: &'static str,
    client: &'static str,
    conns: usize,
    result: String,
}

fn client(tb: &mut Testbed, conns: usize, busy: bool, secs: &str) -> String {
    let c = conns.to_string();
    let mut args = vec!["client", TAS_IP, "7", "--conns", c.as_str(), "--secs", secs];
    if busy {
        args.push("--busy");
    }
    let o = tb.run_lnx(&bin("rpc"), &args, Duration::from_secs(60));
    let s = stdout(&o);
    s.lines()
        .find(|l| l.starts_with("rpc:"))
        .map(|l| l.trim_start_matches("rpc: ").to_string())
        .unwrap_or_else(|| format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()))
}

const USAGE: &str =
    "usage: echo-bench [--secs S] [--nic af_xdp|af_packet] | echo-bench --compare-nics [--secs S]";

/// `--help`, and a one-line error (status 2) for anything not understood.
fn check_args(args: &[String]) {
    let mut i = 0;
    while i < args.len() {
        let bad = |m: String| -> ! {
            eprintln!("echo-bench: {m}\n{USAGE}");
            std::process::exit(2)
        };
        match args[i].as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--compare-nics" => i += 1,
            "--secs" => match args.get(i + 1).map(|v| v.parse::<f64>()) {
                Some(Ok(v)) if v > 0.0 => i += 2,
                _ => bad("--secs needs a positive number".into()),
            },
            "--nic" => match args.get(i + 1).map(String::as_str) {
                Some("af_xdp" | "af_packet") => i += 2,
                _ => bad("--nic needs af_xdp or af_packet".into()),
            },
            other => bad(format!("unknown option {other:?}")),
        }
    }
}

fn main() {
    // Ctrl-C or `kill` removes the test hosts.
    tas_system_tests::clean_up_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    check_args(&args);
    let secs = opt(&args, "--secs").unwrap_or_else(|| "3".into());
    let backend = match opt(&args, "--nic").as_deref() {
        Some("af_packet") => Backend::AfPacket,
        _ => Backend::AfXdp,
    };
    let nic_name = if matches!(backend, Backend::AfPacket) {
        "af_packet"
    } else {
        "af_xdp"
    };
    let mut rows = Vec::new();

    // `--cores SPEC`: only TAS over several fast-path cores (lanes).
    if let Some(spec) = opt(&args, "--cores") {
        let runs: usize = opt(&args, "--runs")
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        println!("| tasd | conns | run | result | app commands (forwarded) |");
        println!("|---|---|---|---|---|");
        for run in 1..=runs {
            for conns in [1, 64] {
                let mut tb = Testbed::with_args("ecores", backend, &["--cores", &spec]);
                tb.spawn_tas(
                    &bin("peer"),
                    &["--tas", "echo-server", "7"],
                    Some("listening"),
                );
                let r = client(&mut tb, conns, false, &secs);
                let cmds = tb.tasd_counter("lanes.app_commands");
                let fwd = tb.tasd_counter("lanes.app_commands_forwarded");
                println!("| --cores {spec} | {conns} | {run} | {r} | {cmds} ({fwd}) |");
            }
        }
        return;
    }

    // `--compare-nics`: only TAS, once per NIC backend, blocking client.
    if args.iter().any(|a| a == "--compare-nics") {
        println!("| tasd backend | conns | result |");
        println!("|---|---|---|");
        for (b, name) in [
            (Backend::AfXdp, "af_xdp"),
            (Backend::AfPacket, "af_packet"),
            (Backend::Dpdk, "dpdk (net_af_xdp)"),
        ] {
            let mut tb = Testbed::new("enic", b);
            tb.spawn_tas(
                &bin("peer"),
                &["--tas", "echo-server", "7"],
                Some("listening"),
            );
            for conns in [1, 64] {
                let r = client(&mut tb, conns, false, &secs);
                println!("| {name} | {conns} | {r} |");
            }
        }
        return;
    }

    // TAS server, with the default idle spin and a short one (on a 2-core
    // VM a spinning core competes with the kernel's own packet processing).
    for (spin, name) in [
        ("200", "TAS, idle-spin 200us (default)"),
        ("20", "TAS, idle-spin 20us"),
    ] {
        let mut tb = Testbed::with_args("ebench", backend, &["--idle-spin-us", spin]);
        tb.spawn_tas(
            &bin("peer"),
            &["--tas", "echo-server", "7"],
            Some("listening"),
        );
        for conns in [1, 64] {
            for busy in [false, true] {
                let r = client(&mut tb, conns, busy, &secs);
                eprintln!(
                    "{name} server, client {}, {conns} conns: {r}",
                    if busy { "busy" } else { "block" }
                );
                rows.push(Row {
                    server: name,
                    client: if busy { "busy-poll" } else { "blocking" },
                    conns,
                    result: r,
                });
            }
        }
    }
    // Linux server on the same veth pair: the TAS side gets a kernel address.
    for (server_busy, name) in [(false, "Linux, blocking"), (true, "Linux, busy-poll")] {
        let mut tb = Testbed::hosts("ebench");
        let o = tb.run_tas(
            std::path::Path::new("ip"),
            &["addr", "add", "198.18.0.1/24", "dev", "veth-tas"],
            Duration::from_secs(5),
        );
        assert!(o.status.success(), "cannot add the kernel address");
        let mut sargs = vec!["server", "7"];
        if server_busy {
            sargs.push("--busy");
        }
        tb.spawn_tas(&bin("rpc"), &sargs, Some("listening"));
        for conns in [1, 64] {
            for busy in [false, true] {
                let r = client(&mut tb, conns, busy, &secs);
                eprintln!(
                    "{name} server, client {}, {conns} conns: {r}",
                    if busy { "busy" } else { "block" }
                );
                rows.push(Row {
                    server: name,
                    client: if busy { "busy-poll" } else { "blocking" },
                    conns,
                    result: r,
                });
            }
        }
    }
    // The link's own limit.
    let link = {
        let mut tb = Testbed::hosts("ebench");
        let refl = bin("reflect");
        tb.spawn_tas(
            &refl,
            &["--nic", nic_name, "--iface", "veth-tas", "--secs", "8"],
            None,
        );
        std::thread::sleep(Duration::from_millis(500));
        let o = tb.run_lnx(
            &refl,
            &[
                "--nic", nic_name, "--iface", "veth-lnx", "--mode", "gen", "--secs", "5",
            ],
            Duration::from_secs(30),
        );
        stdout(&o)
            .lines()
            .find(|l| l.contains("gen summary"))
            .unwrap_or("failed")
            .to_string()
    };

    println!();
    println!(
        "64-byte echo RPCs over one veth pair (tasd NIC backend: {nic_name}; {secs} s per row)"
    );
    println!();
    println!("| server | client | conns | result |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.server, r.client, r.conns, r.result
        );
    }
    println!();
    println!("link limit (bare {nic_name} reflector, no TCP): {link}");
}
