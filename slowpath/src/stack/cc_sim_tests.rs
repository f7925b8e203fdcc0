//! Congestion control in the network simulator (see [`super::netsim`]):
//! hosts running the real fast path and slow path (with its control loop
//! and the real algorithms) over one switch with a 10 Gbit/s rate-limited
//! output queue, ECN marking at K = 65 frames, 5 µs links (base RTT ≈
//! 23 µs) and a 1000-frame buffer. Every run is seeded and deterministic.
//!
//! Tolerances are stated at each assertion; the numbers measured when they
//! were set are in `docs/cc.md`. Run with `--nocapture` to see the reports.

use super::netsim::*;
use crate::cc::CcConfig;

const PORT: u16 = 5001;
const K: usize = 65;

/// Host 0 receives; hosts 1..=senders each open `per_host` flows to it,
/// staggered by up to 20 µs.
fn incast(cfg: NetCfg, senders: usize, per_host: usize) -> Net {
    let mut net = Net::new(NetCfg {
        hosts: senders + 1,
        ..cfg
    });
    net.listen(0, PORT);
    net.run_for(100 * US);
    for _ in 0..per_host {
        for h in 1..=senders {
            net.connect(h, 0, PORT);
            let j = net.jitter(20 * US);
            net.run_for(j);
        }
    }
    net
}

fn cfg_with(algo: &str, kv: &[(&str, &str)], seed: u64) -> NetCfg {
    NetCfg {
        cc: CcConfig::with(algo, kv).unwrap(),
        seed,
        ..Default::default()
    }
}

fn total_drops(net: &Net) -> u64 {
    net.ports.iter().map(|p| p.drops).sum()
}

fn rtos(net: &Net) -> u64 {
    net.hosts
        .iter()
        .map(|h| h.stack.stats().rto_retransmits)
        .sum()
}

/// 8 flows from 4 hosts into one: warm up 40 ms, measure 60 ms.
fn eight_flows(algo: &str, seed: u64) -> (Net, Report) {
    let mut net = incast(cfg_with(algo, &[], seed), 4, 2);
    net.run_for(40 * MS);
    assert_eq!(net.senders(), 8);
    net.start_measure(0, 10 * US, 10 * MS);
    net.run_for(60 * MS);
    let r = net.report();
    eprintln!("{algo} seed {seed}: {r}");
    (net, r)
}

#[test]
fn dctcp_rate_keeps_the_queue_bounded_near_k_without_loss() {
    for seed in [1, 2] {
        let (net, r) = eight_flows("dctcp-rate", seed);
        // No loss at all (buffer: 1000 frames, ~15 K).
        assert_eq!(total_drops(&net), 0);
        assert_eq!(net.failures(), 0);
        // Marking is what holds the queue: it reaches K and comes back.
        assert!(r.marks > 0);
        assert!(r.queue_max >= K, "{r}");
        // Bounded near K: 99 % of samples at most 2 K, never above 3 K.
        assert!(r.queue_p99 <= 2 * K, "{r}");
        assert!(r.queue_max <= 3 * K, "{r}");
        // The link stays busy: at least 85 % of the line rate (the frame
        // bytes alone are 98.4 % of it at full load).
        assert!(r.utilization >= 0.85, "{r}");
    }
}

#[test]
fn dctcp_win_keeps_the_queue_at_k_without_loss() {
    let (net, r) = eight_flows("dctcp-win", 3);
    assert_eq!(total_drops(&net), 0);
    assert_eq!(net.failures(), 0);
    // The classic DCTCP picture: the queue sits at K (mean within ±50 %),
    // the link is busy (≥ 95 %).
    assert!(
        (K as f64 * 0.5..=K as f64 * 1.5).contains(&r.queue_mean),
        "{r}"
    );
    assert!(r.queue_p99 <= 2 * K, "{r}");
    assert!(r.utilization >= 0.95, "{r}");
}

#[test]
fn without_congestion_control_the_buffer_overflows() {
    // The control experiment: unlimited senders fill the 1000-frame buffer
    // and lose frames, so the bounds above are the algorithms' doing.
    let (net, r) = eight_flows("const-rate", 4);
    assert!(total_drops(&net) > 100, "{r}");
    assert!(r.queue_mean > 10.0 * K as f64, "{r}");
}

/// Incast: 4 sending hosts with `n` flows in all into one receiver.
fn incast_fairness(n: usize, seed: u64) -> Report {
    let mut net = incast(cfg_with("dctcp-rate", &[], seed), 4, n / 4);
    net.run_for(60 * MS);
    assert_eq!(net.senders(), n);
    net.start_measure(0, 10 * US, 10 * MS);
    net.run_for(80 * MS);
    let r = net.report();
    eprintln!("incast n={n} seed {seed}: {r}");
    assert_eq!(total_drops(&net), 0, "n={n}");
    assert_eq!(net.failures(), 0, "n={n}");
    assert_eq!(
        r.tput.len(),
        n * 8,
        "every flow sampled in every 10 ms window"
    );
    // Fair shares: per-flow throughput over 10 ms windows, all flows and
    // windows together, has its 1st and 99th percentiles within 3× of the
    // median (the paper measured 1.6-2.8× on hardware).
    assert!(r.tput_p1 * 3.0 >= r.tput_p50, "n={n}: {r}");
    assert!(r.tput_p99 <= r.tput_p50 * 3.0, "n={n}: {r}");
    // The median is near the fair share of a busy link.
    let fair = 10_000.0 / n as f64;
    assert!(
        r.tput_p50 >= fair * 0.7 && r.tput_p50 <= fair * 1.3,
        "n={n}: {r}"
    );
    assert!(r.utilization >= 0.85, "n={n}: {r}");
    r
}

#[test]
fn incast_4_flows_get_fair_shares() {
    incast_fairness(4, 11);
}

#[test]
fn incast_16_flows_get_fair_shares() {
    incast_fairness(16, 12);
}

#[test]
fn incast_64_flows_get_fair_shares() {
    incast_fairness(64, 13);
}

#[test]
fn timely_holds_the_rtt_between_its_thresholds() {
    // TIMELY ignores ECN: no marking at the switch.
    let cfg = NetCfg {
        k_pkts: 0,
        ..cfg_with("timely", &[], 21)
    };
    let mut net = incast(cfg, 4, 4);
    net.run_for(40 * MS);
    net.start_measure(0, 10 * US, 10 * MS);
    net.run_for(60 * MS);
    let r = net.report();
    eprintln!("timely: {r}");
    let (t_low, t_high) = (30.0, 150.0);
    // (Slow start may overshoot into the 1000-frame buffer at the start;
    // afterwards nothing is lost.)
    assert_eq!(r.drops, 0, "{r}");
    assert_eq!(net.failures(), 0);
    // The path RTT (base 23 µs + queueing) sits between the thresholds:
    // median within [T_low, T_high], 95th percentile below T_high. (It
    // dips to the base RTT when the queue empties for a moment, so the
    // lower bound is checked on the median.)
    assert!((t_low..=t_high).contains(&r.path_rtt_p50), "{r}");
    assert!(r.path_rtt_p95 <= t_high, "{r}");
    // What the flows measure (the fast path's smoothed RTT) agrees.
    assert!(r.rtt_p95 as f64 <= t_high, "{r}");
    assert!(r.utilization >= 0.9, "{r}");
    assert!(r.tput_p1 * 2.0 >= r.tput_p50, "{r}");
}

#[test]
fn switching_algorithms_mid_run_keeps_every_flow_alive() {
    let mut net = incast(cfg_with("dctcp-rate", &[], 31), 4, 2);
    net.run_for(20 * MS);
    let phases: [(&str, &[(&str, &str)]); 6] = [
        ("timely", &[]),
        ("dctcp-win", &[]),
        ("const-rate", &[("rate", "1gbps")]),
        ("dctcp-rate", &[("step", "20mbps")]),
        ("dctcp-win", &[("init_window", "4")]),
        ("dctcp-rate", &[]),
    ];
    for (algo, kv) in phases {
        net.cc_set(algo, kv);
        let before = net.sender_progress();
        net.start_measure(0, 10 * US, 2 * MS);
        // Every flow moves data in every 2 ms of the phase.
        let mut last = before.clone();
        for step in 0..8 {
            net.run_for(2 * MS);
            let now = net.sender_progress();
            for (a, b) in last.iter().zip(&now) {
                assert_eq!((a.0, a.1), (b.0, b.1));
                assert!(
                    b.2 > a.2,
                    "{algo}: flow {}/{} stalled in 2 ms window {step}",
                    b.0,
                    b.1
                );
            }
            last = now;
        }
        let r = net.report();
        eprintln!("after switching to {algo}: {r}");
        // Every flow now runs the new algorithm (no reset, no new flow).
        for h in &net.hosts[1..] {
            let usage = h.stack.cc_usage();
            assert_eq!(usage.get(algo).copied(), Some(2), "{algo}: {usage:?}");
        }
        assert!(r.utilization >= 0.5, "{algo}: {r}");
        if algo == "const-rate" {
            // 8 × 1 Gbit/s on a 10 Gbit/s link: exactly the set rate.
            let m = r.tput_p50;
            assert!((900.0..=1050.0).contains(&m), "{r}");
        }
    }
    assert_eq!(net.failures(), 0);
    assert_eq!(total_drops(&net), 0);
    assert_eq!(rtos(&net), 0, "no retransmission timeout");
    assert!(net
        .hosts
        .iter()
        .all(|h| h.stack.stats().cc_switches >= 2 * 6));
}

#[test]
fn idle_flows_cost_one_round_per_max_interval() {
    // 200 idle connections and one bulk flow from host 1: the loop's work
    // follows the flows that are due, not the flows that exist.
    let mut net = Net::new(NetCfg {
        hosts: 3,
        max_flows: 256,
        ring: 64 << 10,
        ..cfg_with("dctcp-rate", &[], 41)
    });
    net.listen(0, PORT);
    net.run_for(100 * US);
    net.hosts[1].app.quiet = true;
    for _ in 0..200 {
        net.connect(1, 0, PORT);
        net.run_for(5 * US);
    }
    net.connect(2, 0, PORT);
    net.run_for(20 * MS);
    let rounds = |n: &Net, h: usize| {
        let s = n.hosts[h].stack.stats();
        s.cc_updates + s.cc_deferred
    };
    let (idle0, busy0) = (rounds(&net, 1), rounds(&net, 2));
    net.run_for(100 * MS);
    let idle = rounds(&net, 1) - idle0;
    let busy = rounds(&net, 2) - busy0;
    assert_eq!(net.failures(), 0);
    assert_eq!(net.hosts[1].app.flows.len(), 200);
    eprintln!("100 ms: 200 idle flows {idle} rounds, 1 bulk flow {busy} rounds");
    // Idle: one round per flow per max_interval (10 ms), ±1.
    assert!((200 * 9..=200 * 11).contains(&idle), "{idle}");
    // The bulk flow: one round per control interval (2 RTT ≈ 46 µs+).
    assert!(busy >= 500, "{busy}");
}

#[test]
#[ignore]
fn explore() {
    // ALGO=timely FLOWS=16 KV="t_low=40us" ROUNDS=5 IV=20 FAIR=10 cargo test
    //   --release -p tasd explore -- --ignored --nocapture
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let algo = std::env::var("ALGO").unwrap_or("dctcp-rate".into());
    let kv: Vec<(String, String)> = std::env::var("KV")
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| crate::cc::key_value(p).unwrap())
        .collect();
    let kv: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let n = var("FLOWS", 8) as usize;
    let mut net = incast(cfg_with(&algo, &kv, var("SEED", 1)), 4, n / 4);
    for i in 0..var("ROUNDS", 10) {
        net.start_measure(0, 10 * US, var("FAIR", 1) * MS);
        net.run_for(var("IV", 10) * MS);
        eprintln!("{i}: {}", net.report());
    }
    eprintln!("failures {}", net.failures());
}

#[test]
fn a_port_setting_applies_to_the_flows_accepted_on_that_port() {
    let mut net = Net::new(NetCfg {
        hosts: 2,
        ..cfg_with("dctcp-rate", &[], 51)
    });
    net.listen(0, 80);
    net.listen(0, 81);
    net.run_for(100 * US);
    for port in [80, 80, 81] {
        net.connect(1, 0, port);
        net.run_for(50 * US);
    }
    net.run_for(5 * MS);
    let kv = [("rate".to_string(), "300mbps".to_string())];
    net.hosts[0]
        .stack
        .cc_set(Some(81), "const-rate", &kv)
        .unwrap();
    net.hosts[0].stack.cc_set(Some(82), "timely", &[]).unwrap();
    net.run_for(15 * MS); // live flows follow within max_interval
    let algo_of = |port: &str| -> Vec<(String, Option<u64>)> {
        net.hosts[0]
            .stack
            .flow_details()
            .into_iter()
            .filter(|d| d.id.is_some() && d.local.ends_with(port))
            .map(|d| (d.cc.unwrap_or_default(), d.rate_kbps))
            .collect()
    };
    assert_eq!(
        algo_of(":81"),
        vec![("const-rate".to_string(), Some(300_000))]
    );
    let p80 = algo_of(":80");
    assert_eq!(p80.len(), 2);
    assert!(p80.iter().all(|(a, _)| a == "dctcp-rate"), "{p80:?}");
    // Active opens follow the global setting, whatever their port.
    net.hosts[1]
        .stack
        .cc_set(Some(80), "const-rate", &kv)
        .unwrap();
    net.run_for(15 * MS);
    assert_eq!(net.hosts[1].stack.cc_usage().get("dctcp-rate"), Some(&3));
    // Removing the port setting returns its flows to the global algorithm.
    net.hosts[0].stack.cc_unset(81).unwrap();
    net.run_for(15 * MS);
    assert_eq!(net.hosts[0].stack.cc_usage().get("dctcp-rate"), Some(&3));
    assert_eq!(net.failures(), 0);
}
