//! Fast-path core scaling (`tasd --cores MIN-MAX`, `tasctl cores`) against
//! real traffic: the controller adds a core under load and removes it when
//! the load is gone, forced budget changes in the middle of bulk transfers
//! lose no byte, and bad budgets are refused with one line.
//!
//! The tests of this file run one at a time (a lock): they measure how busy
//! the fast path is, and on a 2-vCPU VM two of them side by side would
//! disturb each other. With `TAS_TEST_NIC=dpdk` the scaling tests are
//! skipped (a DPDK core never sleeps, so idle cannot be measured); DPDK's
//! lanes have a test of their own.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tas_system_tests::*;
use tasd::ctlsock::CoresView;

const MB256: &str = "268435456";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn peer() -> std::path::PathBuf {
    bin("peer")
}

/// The backend under test, or None (with the reason printed) for DPDK.
fn backend_or_skip(test: &str) -> Option<Backend> {
    match Backend::from_env() {
        Backend::Dpdk => {
            eprintln!(
                "{test}: skipped with TAS_TEST_NIC=dpdk: a DPDK core polls and never sleeps, so the scaling rule (idle) does not apply"
            );
            None
        }
        b => Some(b),
    }
}

/// `tasctl --json cores [BUDGET]` parsed into the daemon's own type.
fn cores(tb: &mut Testbed, budget: Option<&str>) -> CoresView {
    let mut args = vec!["--json", "cores"];
    args.extend(budget);
    let o = tb.tasctl(&args);
    assert_ok(&o, &format!("tasctl {args:?}"));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("tasctl {args:?}: {e}\n{}", stdout(&o)))
}

/// Whether every lane is polled by exactly one active core, inactive cores
/// poll none, and (when there are at least as many lanes as active cores)
/// every active core polls at least one.
fn lanes_settled(v: &CoresView) -> bool {
    let mut seen = vec![0u32; v.lanes as usize];
    for c in &v.cores {
        if !c.active && !c.lanes.is_empty() {
            return false;
        }
        if c.active && c.lanes.is_empty() && v.lanes >= v.active {
            return false;
        }
        for &l in &c.lanes {
            match seen.get_mut(l as usize) {
                Some(n) => *n += 1,
                None => return false,
            }
        }
    }
    seen.iter().all(|&n| n == 1)
}

/// Polls `tasctl cores` until the lanes are handed over (or `limit`).
fn wait_settled(tb: &mut Testbed, limit: Duration) -> CoresView {
    let t = Instant::now();
    loop {
        let v = cores(tb, None);
        if lanes_settled(&v) || t.elapsed() > limit {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn first_line_only(s: &str) -> bool {
    s.trim().lines().count() == 1
}

/// Thresholds used by the ramp test (stated here so a failure shows them):
/// a core is added when the active cores are idle less than half a core in
/// total, removed when they are idle more than 1.6 cores, over 200 ms
/// windows, with 500 ms between changes. On a 2-vCPU VM the single
/// fast-path core of a loaded tasd is far more than 50% busy, and two idle
/// cores are idle ~2 cores.
const RAMP_ARGS: &[&str] = &[
    "--cores",
    "1-2",
    "--scale-up-idle",
    "0.5",
    "--scale-down-idle",
    "1.6",
    "--scale-window-ms",
    "200",
    "--scale-cooldown-ms",
    "500",
];

#[test]
fn load_ramp_scales_up_and_back_down() {
    let _g = serial();
    let Some(backend) = backend_or_skip("load_ramp_scales_up_and_back_down") else {
        return;
    };
    let started = Instant::now();
    let mut tb = Testbed::with_args("cramp", backend, RAMP_ARGS);

    // Before the load: the minimum, nothing decided yet.
    let v = cores(&mut tb, None);
    assert_eq!((v.active, v.min, v.max), (1, 1, 2), "{v:?}");
    assert_eq!(v.cores.len(), 2, "{v:?}");
    assert_eq!((v.scale_ups, v.scale_downs), (0, 0), "{v:?}");
    assert!(v.cores[0].active && !v.cores[1].active, "{v:?}");

    // The load: three 256 MB transfers (a few seconds here) at once, two Linux -> TAS app and one
    // TAS app -> Linux, each verified byte for byte. (Few processes on
    // purpose: on 2 vCPUs more senders starve the fast path of CPU and
    // leave it less busy, not more.)
    let mut tas_side = Vec::new();
    let mut lnx_side = Vec::new();
    for i in 0..2u16 {
        let port = (5101 + i).to_string();
        let seed = (21 + i).to_string();
        tas_side.push(tb.spawn_tas(
            &peer(),
            &["--tas", "recv", &port, MB256, &seed],
            Some("listening"),
        ));
        lnx_side.push(tb.spawn_lnx(&peer(), &["send", TAS_IP, &port, MB256, &seed], None));
    }
    tas_side.push(tb.spawn_tas(
        &peer(),
        &["--tas", "serve-send", "5111", MB256, "31"],
        Some("listening"),
    ));
    lnx_side.push(tb.spawn_lnx(
        &peer(),
        &["connect-recv", TAS_IP, "5111", MB256, "31"],
        None,
    ));
    let load_start = Instant::now();

    // Poll every 100 ms while the load runs.
    let mut trace: Vec<(f64, u32, f64)> = Vec::new();
    let mut max_active = 1;
    let all = [tas_side.clone(), lnx_side.clone()].concat();
    let mut results = vec![None; all.len()];
    while results.iter().any(Option::is_none) {
        assert!(
            load_start.elapsed() < Duration::from_secs(40),
            "load did not finish within 40 s; trace (s, active, idle): {trace:?}"
        );
        for (i, &pid) in all.iter().enumerate() {
            if results[i].is_none() {
                results[i] = tb.wait_child(pid, Duration::ZERO);
            }
        }
        let v = cores(&mut tb, None);
        trace.push((load_start.elapsed().as_secs_f64(), v.active, v.idle_cores));
        max_active = max_active.max(v.active);
        std::thread::sleep(Duration::from_millis(100));
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    assert!(
        results.iter().all(|r| *r == Some(true)),
        "a transfer or the echo client failed (tas side then linux side): {results:?}"
    );
    assert_eq!(
        max_active, 2,
        "the controller never added the second core during {load_secs:.1} s of load; trace (s, active, idle): {trace:?}"
    );

    // After the load: back to one core within a few seconds.
    let idle_start = Instant::now();
    let v = loop {
        let v = cores(&mut tb, None);
        trace.push((load_start.elapsed().as_secs_f64(), v.active, v.idle_cores));
        if v.active == 1 || idle_start.elapsed() > Duration::from_secs(5) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        v.active, 1,
        "still {} cores 5 s after the load ended; trace (s, active, idle): {trace:?}",
        v.active
    );
    assert!(v.scale_ups >= 1 && v.scale_downs >= 1, "{v:?}");
    let v = wait_settled(&mut tb, Duration::from_secs(2));
    assert!(lanes_settled(&v), "lanes not back on core 0: {v:?}");
    assert!(tb.tasd_alive(), "tasd died");
    let compact: Vec<String> = trace
        .iter()
        .map(|(t, a, i)| format!("{t:.1}:{a}/{i:.2}"))
        .collect();
    eprintln!(
        "load_ramp trace (s:active/idle cores): {}",
        compact.join(" ")
    );
    eprintln!(
        "load_ramp: load {load_secs:.1} s, back to 1 core {:.1} s after it, scale-ups {}, scale-downs {}, total {:.1} s",
        idle_start.elapsed().as_secs_f64(),
        v.scale_ups,
        v.scale_downs,
        started.elapsed().as_secs_f64()
    );
}

/// Two 256 MB streams (a few seconds here; 100 MB ones end after 4-5 changes) (Linux -> TAS app, TAS app -> Linux) while the budget
/// is forced between 2-2 and 1-1 every ~150 ms until both are done.
fn churn(tag: &str, backend: Backend) {
    let started = Instant::now();
    let mut tb = Testbed::with_args(tag, backend, &["--cores", "1-2"]);
    let v = cores(&mut tb, None);
    assert_eq!((v.active, v.lanes), (1, 2), "{v:?}");

    let rx = tb.spawn_tas(
        &peer(),
        &["--tas", "recv", "5201", MB256, "41"],
        Some("listening"),
    );
    let tx = tb.spawn_tas(
        &peer(),
        &["--tas", "serve-send", "5202", MB256, "43"],
        Some("listening"),
    );
    let lnx_tx = tb.spawn_lnx(&peer(), &["send", TAS_IP, "5201", MB256, "41"], None);
    let lnx_rx = tb.spawn_lnx(
        &peer(),
        &["connect-recv", TAS_IP, "5202", MB256, "43"],
        None,
    );
    let pids = [rx, tx, lnx_tx, lnx_rx];
    let mut results = [None; 4];
    let mut changes = 0u32;
    // Hand-overs found complete when the next change was due.
    let mut settled = 0u32;
    let t = Instant::now();
    while results.iter().any(Option::is_none) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "streams not done within 60 s of churn ({changes} budget changes); results (tas recv, tas send, lnx send, lnx recv): {results:?}"
        );
        let n = if changes & 1 == 0 { 2 } else { 1 };
        if changes > 0 {
            let v = cores(&mut tb, None);
            assert_eq!(v.active, 3 - n, "the forced count did not stay: {v:?}");
            if lanes_settled(&v) {
                settled += 1;
            }
        }
        let v = cores(&mut tb, Some(&format!("{n}-{n}")));
        assert_eq!(
            (v.active, v.min, v.max),
            (n, n, n),
            "after cores {n}-{n}: {v:?}"
        );
        changes += 1;
        std::thread::sleep(Duration::from_millis(150));
        for (i, &pid) in pids.iter().enumerate() {
            if results[i].is_none() {
                results[i] = tb.wait_child(pid, Duration::ZERO);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        results,
        [Some(true); 4],
        "a stream failed under core churn (tas recv, tas send, lnx send, lnx recv)"
    );
    assert!(
        changes >= 4,
        "the streams finished after only {changes} budget changes ({secs:.1} s): too fast to churn"
    );
    assert!(
        settled >= 1,
        "no hand-over of lanes was complete 150 ms after a forced change ({changes} changes)"
    );
    // The last forced change has been handed over: every lane on an active
    // core. Then once more each way, waiting for the hand-over each time.
    let v = wait_settled(&mut tb, Duration::from_secs(2));
    assert!(lanes_settled(&v), "lanes not handed over: {v:?}");
    let _ = cores(&mut tb, Some("2"));
    let v = wait_settled(&mut tb, Duration::from_secs(2));
    assert!(v.active == 2 && lanes_settled(&v), "after cores 2: {v:?}");
    let _ = cores(&mut tb, Some("1"));
    let v = wait_settled(&mut tb, Duration::from_secs(2));
    assert!(
        v.active == 1 && v.cores[0].lanes.len() == 2 && lanes_settled(&v),
        "after cores 1: {v:?}"
    );
    assert!(tb.tasd_alive(), "tasd died");
    eprintln!(
        "churn {backend:?}: {changes} forced changes during {secs:.1} s of transfer ({settled} hand-overs complete ~150 ms later); scale counters {}+{}; total {:.1} s",
        v.scale_ups,
        v.scale_downs,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn forced_churn_keeps_streams_intact() {
    let _g = serial();
    let Some(backend) = backend_or_skip("forced_churn_keeps_streams_intact") else {
        return;
    };
    churn("cchurn", backend);
}

/// The same on the other socket backend (AF_PACKET when the default is
/// AF_XDP and vice versa): each has its own way of spreading flows over lanes.
#[test]
fn forced_churn_keeps_streams_intact_other_nic() {
    let _g = serial();
    let Some(backend) = backend_or_skip("forced_churn_keeps_streams_intact_other_nic") else {
        return;
    };
    let other = match backend {
        Backend::AfXdp => Backend::AfPacket,
        _ => Backend::AfXdp,
    };
    churn("cchurn2", other);
}

#[test]
fn cores_budget_errors() {
    let _g = serial();
    // tasd refuses bad budgets before it touches the NIC, one line each.
    let mut tb = Testbed::hosts("cerr");
    let sock = tb.dir.join("refused.sock");
    let sock = sock.to_str().expect("utf-8 path");
    for (budget, nic, want, extra) in [
        ("0", "af_xdp", "at least one fast-path core is needed", None),
        ("2-1", "af_xdp", "MIN must not exceed MAX", None),
        ("x", "af_xdp", "expected N or MIN-MAX", None),
        // Several DPDK lanes over a real NIC (RSS) are not implemented.
        ("1-2", "dpdk", "--dpdk-args", Some("-l 0 -a 0000:00:00.0")),
    ] {
        let mut args = vec![
            "--ip",
            "198.18.0.1/24",
            "--iface",
            "veth-tas",
            "--nic",
            nic,
            "--socket",
            sock,
            "--cores",
            budget,
        ];
        if let Some(e) = extra {
            args.extend(["--dpdk-args", e]);
        }
        let o = tb.run_tas(&bin("tasd"), &args, Duration::from_secs(10));
        let e = stderr(&o);
        assert!(
            !o.status.success() && o.status.code().is_some(),
            "tasd --nic {nic} --cores {budget} started or died by a signal ({}): {e}",
            o.status
        );
        assert!(
            first_line_only(&e) && e.contains("--cores") && e.contains(want),
            "tasd --nic {nic} --cores {budget}: want one line with '--cores' and '{want}', got:\n{e}"
        );
    }
    drop(tb);

    let Some(backend) = backend_or_skip("cores_budget_errors (tasctl part)") else {
        return;
    };
    let mut tb = Testbed::with_args("cerr2", backend, &["--cores", "1-2"]);
    for (budget, code, want) in [
        ("3-1", 2, "MIN must not exceed MAX"),
        ("0", 2, "at least one fast-path core is needed"),
        ("x", 2, "expected N or MIN-MAX"),
        ("1-9", 1, "lane"),
    ] {
        let o = tb.tasctl(&["cores", budget]);
        let e = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(code),
            "tasctl cores {budget}: stdout {} stderr {e}",
            stdout(&o)
        );
        assert!(
            first_line_only(&e) && e.contains(want),
            "tasctl cores {budget}: want one line with '{want}', got:\n{e}"
        );
    }
    // Nothing changed; a good budget is still accepted afterwards.
    let v = cores(&mut tb, None);
    assert_eq!((v.active, v.min, v.max, v.lanes), (1, 1, 2, 2), "{v:?}");
    let v = cores(&mut tb, Some("2"));
    assert_eq!((v.active, v.min, v.max), (2, 2, 2), "{v:?}");
    let v = cores(&mut tb, Some("1-2"));
    assert_eq!((v.min, v.max), (1, 2), "{v:?}");
    assert!(tb.tasd_alive(), "tasd died");
}

/// An AF_XDP interface with one RX queue and `--cores 2-2`: tasd starts,
/// lane 1 (no queue of its own) is fed by software steering from lane 0 and
/// transmits through AF_PACKET, and parallel bulk transfers both ways
/// arrive byte for byte. Ten flows hash over the two lanes, so lane 1 gets
/// frames unless all ten hash to lane 0 (a chance of 1 in 1,024).
#[test]
fn one_queue_interface_runs_two_lanes_by_steering() {
    let _g = serial();
    let mut tb = Testbed::with_queues("csteer", 1, Backend::AfXdp, &["--cores", "2-2"]);
    let v = wait_settled(&mut tb, Duration::from_secs(3));
    assert_eq!((v.active, v.lanes), (2, 2), "{v:?}");
    assert_eq!(v.steered_lanes, vec![1], "{v:?}");
    assert!(lanes_settled(&v), "{v:?}");
    let busy = parallel_transfers(&mut tb, 5310);
    let steered = tb.tasd_counter("lanes.steered_frames");
    let dropped = tb.tasd_counter("lanes.steer_dropped");
    eprintln!(
        "steering: {steered} frames steered to lane 1, {dropped} dropped; peak busy core0 {:.1}% core1 {:.1}%",
        busy[0], busy[1]
    );
    assert!(steered > 1000, "lane 1 got {steered} frames by steering");
    assert!(
        busy[0] > 0.0 && busy[1] > 0.0,
        "both cores must work: {busy:?}"
    );
    // The apps post each flow's commands on its own lane's ring (the
    // lane tasd named at accept/connect): none needed a hand-off.
    let cmds = tb.tasd_counter("lanes.app_commands");
    let fwd = tb.tasd_counter("lanes.app_commands_forwarded");
    eprintln!("app commands: {cmds} applied, {fwd} on another lane's ring");
    assert!(cmds > 1000, "{cmds} app commands applied");
    assert_eq!(fwd, 0, "app commands handed to another lane");
    let o = tb.tasctl(&["cores"]);
    assert!(
        stdout(&o).contains("1*") && stdout(&o).contains("fed by software steering"),
        "{}",
        stdout(&o)
    );
    assert!(tb.tasd_alive());
}

/// Several parallel bulk transfers both ways over `tasd --cores 2-2`, all
/// verified; returns the peak busy share of each core.
fn parallel_transfers(tb: &mut Testbed, base: u16) -> [f64; 2] {
    let bytes = "20000000";
    let mut pids = Vec::new();
    for i in 0..5u16 {
        let (up, down) = (base + i, base + 10 + i);
        let seed_up = (100 + i).to_string();
        let seed_down = (200 + i).to_string();
        pids.push(tb.spawn_tas(
            &peer(),
            &["--tas", "recv", &up.to_string(), bytes, &seed_up],
            Some("listening"),
        ));
        pids.push(tb.spawn_tas(
            &peer(),
            &["--tas", "serve-send", &down.to_string(), bytes, &seed_down],
            Some("listening"),
        ));
        pids.push(tb.spawn_lnx(
            &peer(),
            &["send", TAS_IP, &up.to_string(), bytes, &seed_up],
            None,
        ));
        pids.push(tb.spawn_lnx(
            &peer(),
            &["connect-recv", TAS_IP, &down.to_string(), bytes, &seed_down],
            None,
        ));
    }
    let mut busy = [0f64; 2];
    let t = Instant::now();
    let mut results: Vec<Option<bool>> = vec![None; pids.len()];
    while results.iter().any(Option::is_none) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "transfers not done in 90 s: {results:?}"
        );
        let v = cores(tb, None);
        for c in &v.cores {
            let i = c.id as usize;
            busy[i] = busy[i].max(c.busy_pct);
        }
        std::thread::sleep(Duration::from_millis(200));
        for (i, &pid) in pids.iter().enumerate() {
            if results[i].is_none() {
                results[i] = tb.wait_child(pid, Duration::ZERO);
            }
        }
    }
    assert!(
        results.iter().all(|r| *r == Some(true)),
        "a transfer failed (tas recv, tas send, lnx send, lnx recv per pair): {results:?}"
    );
    busy
}

/// `--nic dpdk --cores 2-2` on a 4-queue veth: one net_af_xdp device per
/// RX queue, two queues per lane, each lane sending on its own device;
/// parallel transfers both ways verified and both cores busy.
#[test]
fn dpdk_runs_two_lanes_on_a_four_queue_interface() {
    let _g = serial();
    let mut tb = Testbed::with_queues("cdpdk", 4, Backend::Dpdk, &["--cores", "2-2"]);
    let v = wait_settled(&mut tb, Duration::from_secs(3));
    assert_eq!((v.active, v.lanes), (2, 2), "{v:?}");
    assert!(v.steered_lanes.is_empty(), "{v:?}");
    let busy = parallel_transfers(&mut tb, 5410);
    eprintln!(
        "dpdk two lanes: peak busy core0 {:.1}% core1 {:.1}%",
        busy[0], busy[1]
    );
    assert!(
        busy[0] > 0.0 && busy[1] > 0.0,
        "both cores must work: {busy:?}"
    );
    assert!(tb.tasd_alive());
}
