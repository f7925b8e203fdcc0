//! `tasctl` against a running tasd (and against none): every command, in
//! table form and as JSON parsed back into the daemon's own types, live
//! congestion-control changes, and the errors a user can run into.

use std::process::Command;
use std::time::{Duration, Instant};
use tas_system_tests::*;
use tasd::ctlsock::{CcShow, Stats, Status};
use tasd::stack::FlowDetail;

fn json<T: serde::de::DeserializeOwned>(tb: &mut Testbed, args: &[&str]) -> T {
    let mut a = args.to_vec();
    a.push("--json");
    let o = tb.tasctl(&a);
    assert_ok(&o, &format!("tasctl {args:?}"));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("tasctl {args:?} --json: {e}\n{}", stdout(&o)))
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> &'a str {
    p.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The TAS flow of a transfer on `port` (TAS serves it).
fn flow_on(tb: &mut Testbed, port: u16) -> Option<FlowDetail> {
    let f: Vec<FlowDetail> = json(tb, &["flows"]);
    f.into_iter().find(|d| {
        d.id.is_some() && d.state == "ESTABLISHED" && d.local.ends_with(&format!(":{port}"))
    })
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn tasctl_inspects_and_tunes_a_running_daemon() {
    let mut tb = Testbed::new("ctl", Backend::from_env());
    // A long transfer from a TAS server to Linux, so flows are live.
    tb.spawn_tas(
        &bin("peer"),
        &["--tas", "serve-send", "5002", "20000000000", "5"],
        Some("listening"),
    );
    tb.spawn_lnx(
        &bin("peer"),
        &["connect-recv", TAS_IP, "5002", "20000000000", "5"],
        None,
    );
    let f = wait_for(Duration::from_secs(10), || {
        flow_on(&mut tb, 5002).filter(|f| f.bytes_out > 1_000_000)
    })
    .expect("transfer running");
    assert_eq!(f.cc.as_deref(), Some("dctcp-rate"), "{f:?}");
    assert!(
        f.rate_kbps.unwrap_or(0) > 0 && f.rtt_us.unwrap_or(0) > 0,
        "{f:?}"
    );
    assert!(f.remote.starts_with(LNX_IP), "{f:?}");

    // status (its per-second rates need two meter samples: wait for them)
    let s: Status = wait_for(Duration::from_secs(5), || {
        let s: Status = json(&mut tb, &["status"]);
        (s.tx_pps > 1000.0).then_some(s)
    })
    .unwrap_or_else(|| json(&mut tb, &["status"]));
    assert_eq!(s.cores.len(), 1);
    assert_eq!(s.apps.len(), 1, "{s:?}");
    assert!(s.flows.get("LISTEN").copied().unwrap_or(0) >= 1, "{s:?}");
    assert!(
        s.flows.get("ESTABLISHED").copied().unwrap_or(0) >= 1,
        "{s:?}"
    );
    assert!(s.tx_pps > 1000.0, "{s:?}");
    assert_eq!(s.cc, "dctcp-rate");
    let o = tb.tasctl(&["status"]);
    assert_ok(&o, "tasctl status");
    for w in [
        "cores",
        "apps",
        "flows",
        "packets",
        "drops",
        "cc",
        "dctcp-rate",
    ] {
        assert!(stdout(&o).contains(w), "status lacks {w}:\n{}", stdout(&o));
    }

    // flows as a table
    let o = tb.tasctl(&["flows"]);
    assert_ok(&o, "tasctl flows");
    let t = stdout(&o);
    for w in [
        "STATE",
        "LOCAL",
        "REMOTE",
        "LIMIT",
        "RTT",
        "RETX",
        "ECN",
        "ESTABLISHED",
        "LISTEN",
        ":5002",
    ] {
        assert!(t.contains(w), "flows lacks {w}:\n{t}");
    }
    let o = tb.tasctl(&["flows", "--port", "5002"]);
    assert!(
        !stdout(&o).contains("LISTEN") || stdout(&o).contains(":5002"),
        "{}",
        stdout(&o)
    );

    // cc show / set (global), applied to the live flow
    let c: CcShow = json(&mut tb, &["cc", "show"]);
    assert_eq!(c.global.algo, "dctcp-rate");
    assert_eq!(param(&c.global.params, "step"), "10mbps");
    assert_eq!(param(&c.global.params, "interval"), "2");
    assert_eq!(c.algorithms.len(), 4);
    let c: CcShow = json(&mut tb, &["cc", "set", "timely", "t_low=40us", "beta=0.5"]);
    assert_eq!(c.global.algo, "timely");
    assert_eq!(param(&c.global.params, "t_low"), "40us");
    assert_eq!(param(&c.global.params, "t_high"), "150us");
    let f = wait_for(Duration::from_secs(5), || {
        flow_on(&mut tb, 5002).filter(|f| f.cc.as_deref() == Some("timely"))
    })
    .expect("live flow switched to timely");
    let before = f.bytes_out;
    // A fixed rate shows up in the flow's limit at once and the flow moves on.
    let _: CcShow = json(&mut tb, &["cc", "set", "const-rate", "rate=200mbps"]);
    let f = wait_for(Duration::from_secs(5), || {
        flow_on(&mut tb, 5002).filter(|f| f.rate_kbps == Some(200_000))
    })
    .expect("const rate applied");
    assert!(f.bytes_out > before, "the flow stalled");
    // Per port, then back.
    let c: CcShow = json(&mut tb, &["cc", "set", "dctcp-win", "--port", "5002"]);
    assert_eq!(c.global.algo, "const-rate");
    assert_eq!(c.ports.len(), 1);
    assert_eq!(
        (c.ports[0].port, c.ports[0].algo.as_str()),
        (Some(5002), "dctcp-win")
    );
    let f = wait_for(Duration::from_secs(5), || {
        flow_on(&mut tb, 5002).filter(|f| f.cwnd.is_some())
    })
    .expect("port setting applied: window-based");
    assert_eq!(f.cc.as_deref(), Some("dctcp-win"));
    let o = tb.tasctl(&["cc", "show"]);
    assert!(
        stdout(&o).contains("port 5002") && stdout(&o).contains("dctcp-win"),
        "{}",
        stdout(&o)
    );
    let c: CcShow = json(&mut tb, &["cc", "unset", "--port", "5002"]);
    assert!(c.ports.is_empty());
    let _: CcShow = json(&mut tb, &["cc", "set", "dctcp-rate"]);
    let f = wait_for(Duration::from_secs(5), || {
        flow_on(&mut tb, 5002).filter(|f| f.cc.as_deref() == Some("dctcp-rate"))
    })
    .expect("back to dctcp-rate");
    assert_eq!(
        f.timeouts, 0,
        "no retransmission timeout through all the switches: {f:?}"
    );

    // stats
    let st: Stats = json(&mut tb, &["stats"]);
    assert!(st.counters["fastpath.tx_frames"] > 1000);
    assert!(st.counters["slowpath.cc_updates"] > 0);
    assert!(st.counters["slowpath.cc_switches"] >= 4);
    assert!(st.counters.contains_key("core0.busy_ns"));
    assert_eq!(st.counters["cores.active"], 1);
    let o = tb.tasctl(&["stats", "slowpath.cc"]);
    assert_ok(&o, "tasctl stats slowpath.cc");
    assert!(
        stdout(&o).lines().all(|l| l.starts_with("slowpath.cc")),
        "{}",
        stdout(&o)
    );

    // Errors the daemon reports: exit status 1, a clear message.
    for (args, msg) in [
        (
            &["cc", "set", "reno"][..],
            "unknown congestion control algorithm 'reno'",
        ),
        (
            &["cc", "set", "timely", "beta=7"][..],
            "bad value '7' for beta",
        ),
        (
            &["cc", "set", "timely", "colour=blue"][..],
            "timely has no parameter 'colour'",
        ),
        (
            &["cc", "set", "timely", "t_low=fast"][..],
            "'fast' is not a number",
        ),
        (
            &["cc", "unset", "--port", "9"][..],
            "port 9 has no setting of its own",
        ),
    ] {
        let o = tb.tasctl(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
        let mut a = args.to_vec();
        a.push("--json");
        let o = tb.tasctl(&a);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("error as JSON");
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap_or("").contains(msg), "{v}");
    }
    // The setting is unchanged by the refused requests.
    let c: CcShow = json(&mut tb, &["cc", "show"]);
    assert_eq!(c.global.algo, "dctcp-rate");
    assert!(tb.tasd_alive());
}

#[test]
fn tasctl_command_line_errors_and_help() {
    // No daemon needed for these.
    let run = |args: &[&str], socket: &str| {
        Command::new(bin("tasctl"))
            .args(args)
            .env("TAS_SOCKET", socket)
            .output()
            .expect("run tasctl")
    };
    let missing = std::env::temp_dir().join(format!("tas-no-daemon-{}.sock", std::process::id()));
    let missing = missing.to_str().unwrap();
    // Not running: exit 3 and say where it looked.
    let o = run(&["status"], missing);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot reach tasd") && stderr(&o).contains(missing),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("is tasd running"), "{}", stderr(&o));
    let o = run(&["flows", "--json"], missing);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON error");
    assert_eq!(v["ok"], false);
    // Bad commands: exit 2.
    for args in [
        &["frobnicate"][..],
        &["cc", "set"][..],
        &["cc", "set", "timely", "t_low"][..],
        &["flows", "--port", "x"][..],
    ] {
        let o = run(args, missing);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    // A bad core budget: exit 2 and a one-line message, without asking tasd.
    for (arg, msg) in [
        ("3-1", "cores: '3-1': MIN must not exceed MAX"),
        ("x", "cores: 'x': expected N or MIN-MAX"),
        ("0", "cores: '0': at least one fast-path core is needed"),
    ] {
        let o = run(&["cores", arg], missing);
        assert_eq!(o.status.code(), Some(2), "cores {arg}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim_end(), format!("tasctl: {msg}"));
    }
    // --help lists every command, the socket, the algorithms and defaults.
    let o = run(&["--help"], missing);
    assert!(o.status.success());
    let h = stdout(&o);
    for w in [
        "status",
        "flows",
        "cc",
        "stats",
        "cores",
        "MIN-MAX",
        "--json",
        "--socket",
        "TAS_SOCKET",
        "/run/tas/tasd.sock",
        "dctcp-rate",
        "dctcp-win",
        "timely",
        "const-rate",
        "t_low",
        "30us",
        "150us",
        "init_rate",
        "10mbps",
        "min_acks",
        "interval",
        "Exit status",
    ] {
        assert!(h.contains(w), "--help lacks {w}:\n{h}");
    }
    let o = run(&["cc", "set", "--help"], missing);
    assert!(stdout(&o).contains("--port"), "{}", stdout(&o));
    // tasd's --help documents the congestion control flags too.
    let o = Command::new(bin("tasd"))
        .arg("--help")
        .output()
        .expect("tasd --help");
    let h = stdout(&o);
    for w in [
        "--cc <ALGO>",
        "dctcp-rate",
        "--cc-interval",
        "--timely-t-low",
        "--dctcp-rate-step",
        ".ctl",
    ] {
        assert!(h.contains(w), "tasd --help lacks {w}");
    }
}
