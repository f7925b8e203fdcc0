//! TCP over impaired links: byte-exact transfers between tasd and the Linux
//! kernel through a bridge namespace in which `impair` loses, duplicates,
//! reorders or corrupts frames with a seeded PRNG (see `tests/src/impair.rs`
//! and `tests/src/bin/impair.rs`; this kernel has no netem).
//!
//! Each TAS test: one transfer of 48 MiB, Linux → a TAS app or a TAS app →
//! Linux, over AF_XDP or AF_PACKET (named in the test, whatever
//! `TAS_TEST_NIC` says), verified byte for byte by the receiving `peer`,
//! failing after 30 s with the forwarder's and tasd's counters. 30 s is a
//! floor of 13 Mbit/s: the slowest passing case (TAS → Linux at 5 % loss)
//! took 5–8 s here, Linux ↔ Linux takes under a second in every case. Every test
//! also checks the forwarder's counters: the impairment happened, at about
//! the asked rate, in the data's direction (and nothing else did). With
//! corruption, the receiver must have counted checksum errors (the frames
//! were caught, not delivered). The `linux_baseline_*` tests run the same
//! impairments and seeds Linux ↔ Linux through the same bridge: if one of
//! them fails, the harness is broken, not TAS.
//!
//! Ignored for now: 5 % loss and 5 % reordering with Linux sending to TAS.
//! TAS's receiver keeps one out-of-order interval, so it drops most of what
//! Linux sends after a hole and the transfer crawls: measured at 32 MiB,
//! 60–80 s at 5 % loss and 29–37 s at 5 % reordering (about 4 and 8 Mbit/s),
//! so at 48 MiB both run well past the 30 s bound. Run them with
//! `cargo test --release -p tas-system-tests --test impair -- --ignored`;
//! remove the attributes once TAS's receiver keeps more than one
//! out-of-order interval.

use std::time::Duration;
use tas_system_tests::impair::{counter, kernel_counter, Flow, Impairment, LinkCounters, Stack};
use tas_system_tests::*;

const BYTES: u64 = 48 << 20;
const LIMIT: Duration = Duration::from_secs(30);
const PORT: u16 = 5001;

/// The seed of an impairment: the same for TAS and the Linux baseline.
fn seed(imp: &Impairment) -> u64 {
    let i = Impairment::ALL
        .iter()
        .position(|x| x == imp)
        .expect("known impairment");
    1000 + i as u64
}

/// Asserts that the forwarder did what `imp` asks in the data's direction,
/// at roughly the asked rate, and nothing it was not asked to.
fn check_link(imp: &Impairment, flow: Flow, c: &LinkCounters) {
    let d = c.data(flow);
    let ipv4 = counter(d, "in") - counter(d, "non_ipv4");
    assert!(
        ipv4 > 10_000,
        "only {ipv4} IPv4 frames crossed the bridge with the data:\n{}",
        c.summary()
    );
    let kept = ipv4 - counter(d, "dropped");
    for (what, p, n, base) in [
        ("dropped", imp.loss, counter(d, "dropped"), ipv4),
        ("duplicated", imp.dup, counter(d, "duplicated"), kept),
        (
            "reordered",
            imp.reorder,
            counter(d, "reordered") + counter(d, "hold_full"),
            kept,
        ),
        ("corrupted", imp.corrupt, counter(d, "corrupted"), kept),
    ] {
        if p == 0.0 {
            for m in [&c.tas_to_lnx, &c.lnx_to_tas] {
                assert_eq!(
                    counter(m, what),
                    0,
                    "{what} without being asked:\n{}",
                    c.summary()
                );
            }
            continue;
        }
        let expect = p * base as f64;
        assert!(
            n > 0 && (n as f64) > 0.5 * expect && (n as f64) < 1.5 * expect,
            "{what}: {n} of {base} frames, expected about {expect:.0} ({} %):\n{}",
            p * 100.0,
            c.summary()
        );
    }
    if imp.reorder > 0.0 {
        assert!(
            counter(d, "reordered") > 0,
            "nothing reordered:\n{}",
            c.summary()
        );
    }
    for m in [&c.tas_to_lnx, &c.lnx_to_tas] {
        assert_eq!(
            (counter(m, "tx_errors"), counter(m, "truncated")),
            (0, 0),
            "the forwarder could not pass frames on (offloads on?):\n{}",
            c.summary()
        );
    }
}

/// Sum of tasd's counters whose name contains `part` (`tasctl --json stats`).
fn tasd_counter(tb: &mut Testbed, part: &str) -> u64 {
    let o = tb.tasctl(&["--json", "stats"]);
    assert_ok(&o, "tasctl --json stats");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats JSON");
    v["counters"]
        .as_object()
        .expect("counters")
        .iter()
        .filter(|(k, _)| k.contains(part))
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

/// Linux's TCP checksum errors in a namespace.
fn linux_csum_errors(ns: &str) -> u64 {
    kernel_counter(ns, "Tcp", "InCsumErrors").expect("Tcp InCsumErrors in /proc/net/snmp")
}

/// One transfer with a TAS app on the TAS host.
fn tas_case(tag: &str, imp: Impairment, flow: Flow, backend: Backend) {
    let mut tb = Testbed::bridged(tag);
    tb.start_tasd(backend, &[]);
    let lnx_csum0 = linux_csum_errors(&tb.lnx_ns.clone());
    let fwd = tb.start_impair(&imp, seed(&imp));
    let r = tb.transfer(Stack::Tas, flow, BYTES, seed(&imp), PORT, LIMIT);
    let tas_stats = stdout(&tb.tasctl(&["stats", "fastpath."]));
    let c = tb.stop_impair(fwd);
    let took = r.unwrap_or_else(|e| {
        panic!(
            "{} over {backend:?}, {}: {e}\nforwarder:\n{}\ntasd fast-path counters:\n{tas_stats}",
            imp.name,
            flow.label(),
            c.summary()
        )
    });
    eprintln!(
        "{tag}: {} over {backend:?}, {}: {} MiB in {:.2} s\n{}",
        imp.name,
        flow.label(),
        BYTES >> 20,
        took.as_secs_f64(),
        c.summary()
    );
    check_link(&imp, flow, &c);
    if imp.corrupt > 0.0 {
        let caught = match flow {
            Flow::LnxToTas => tasd_counter(&mut tb, "bad_checksum"),
            Flow::TasToLnx => linux_csum_errors(&tb.lnx_ns.clone()) - lnx_csum0,
        };
        assert!(
            caught > 0,
            "{} corrupted frames reached the receiver, which counted no checksum error",
            counter(c.data(flow), "corrupted")
        );
    }
    assert!(tb.tasd_alive(), "tasd died");
}

/// Both directions Linux ↔ Linux through the same bridge, same seed.
fn linux_baseline(tag: &str, imp: Impairment) {
    let mut tb = Testbed::bridged(tag);
    tb.use_kernel_on_tas_host();
    for (i, flow) in [Flow::LnxToTas, Flow::TasToLnx].into_iter().enumerate() {
        let fwd = tb.start_impair(&imp, seed(&imp));
        let r = tb.transfer(
            Stack::Kernel,
            flow,
            BYTES,
            seed(&imp),
            PORT + i as u16,
            LIMIT,
        );
        let c = tb.stop_impair(fwd);
        let took = r.unwrap_or_else(|e| {
            panic!(
                "Linux baseline, {}: {e}\nforwarder:\n{}",
                imp.name,
                c.summary()
            )
        });
        eprintln!(
            "{tag}: {} Linux<->Linux, {}: {} MiB in {:.2} s\n{}",
            imp.name,
            flow.label(),
            BYTES >> 20,
            took.as_secs_f64(),
            c.summary()
        );
        check_link(&imp, flow, &c);
    }
}

macro_rules! tas {
    ($(#[$m:meta])* $name:ident: $imp:ident, $flow:ident, $backend:ident) => {
        $(#[$m])*
        #[test]
        fn $name() {
            tas_case(
                concat!("imp", stringify!($backend)),
                Impairment::$imp,
                Flow::$flow,
                Backend::$backend,
            )
        }
    };
}

macro_rules! baseline {
    ($name:ident: $imp:ident) => {
        #[test]
        fn $name() {
            linux_baseline("impLnx", Impairment::$imp)
        }
    };
}

tas!(clean_linux_to_tas_af_xdp: NONE, LnxToTas, AfXdp);
tas!(clean_tas_to_linux_af_xdp: NONE, TasToLnx, AfXdp);
tas!(loss1_linux_to_tas_af_xdp: LOSS_1, LnxToTas, AfXdp);
tas!(loss1_tas_to_linux_af_xdp: LOSS_1, TasToLnx, AfXdp);
tas!(
    loss5_linux_to_tas_af_xdp: LOSS_5, LnxToTas, AfXdp
);
tas!(loss5_tas_to_linux_af_xdp: LOSS_5, TasToLnx, AfXdp);
tas!(
    reorder5_linux_to_tas_af_xdp: REORDER_5, LnxToTas, AfXdp
);
tas!(reorder5_tas_to_linux_af_xdp: REORDER_5, TasToLnx, AfXdp);
tas!(corrupt_linux_to_tas_af_xdp: CORRUPT_05, LnxToTas, AfXdp);
tas!(corrupt_tas_to_linux_af_xdp: CORRUPT_05, TasToLnx, AfXdp);
tas!(dup_linux_to_tas_af_xdp: DUP_1, LnxToTas, AfXdp);
tas!(dup_tas_to_linux_af_xdp: DUP_1, TasToLnx, AfXdp);

tas!(clean_linux_to_tas_af_packet: NONE, LnxToTas, AfPacket);
tas!(clean_tas_to_linux_af_packet: NONE, TasToLnx, AfPacket);
tas!(loss1_linux_to_tas_af_packet: LOSS_1, LnxToTas, AfPacket);
tas!(loss1_tas_to_linux_af_packet: LOSS_1, TasToLnx, AfPacket);
tas!(
    loss5_linux_to_tas_af_packet: LOSS_5, LnxToTas, AfPacket
);
tas!(loss5_tas_to_linux_af_packet: LOSS_5, TasToLnx, AfPacket);
tas!(
    reorder5_linux_to_tas_af_packet: REORDER_5, LnxToTas, AfPacket
);
tas!(reorder5_tas_to_linux_af_packet: REORDER_5, TasToLnx, AfPacket);
tas!(corrupt_linux_to_tas_af_packet: CORRUPT_05, LnxToTas, AfPacket);
tas!(corrupt_tas_to_linux_af_packet: CORRUPT_05, TasToLnx, AfPacket);
tas!(dup_linux_to_tas_af_packet: DUP_1, LnxToTas, AfPacket);
tas!(dup_tas_to_linux_af_packet: DUP_1, TasToLnx, AfPacket);

baseline!(linux_baseline_clean: NONE);
baseline!(linux_baseline_loss1: LOSS_1);
baseline!(linux_baseline_loss5: LOSS_5);
baseline!(linux_baseline_reorder5: REORDER_5);
baseline!(linux_baseline_corrupt: CORRUPT_05);
baseline!(linux_baseline_dup: DUP_1);
