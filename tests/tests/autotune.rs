//! Ring autotuning (docs/design.md, "Ring memory"): with default settings a
//! connection's rings start at 32 KiB and grow (RX by the slow path when the
//! ring is empty, TX on the app's request when nothing is in flight) while a
//! 200 MB transfer runs, each way, with the stream checked byte for byte by
//! the receiver (the peer program's seeded pattern); the time is printed
//! next to the same transfer with fixed 256 KiB rings. Only a generous
//! sanity bound is asserted on the times (the machine is shared).

use std::time::{Duration, Instant};
use tas_system_tests::*;

const MB200: &str = "209715200";

fn peer() -> std::path::PathBuf {
    bin("peer")
}

/// Fixed 256 KiB rings (no growth).
const FIXED: &[&str] = &["--rx-buf-init-kib", "256", "--tx-buf-init-kib", "256"];

/// Linux sends 200 MB to a TAS receiver; returns the seconds it took and
/// tasd's (rx_rings_grown, tx_rings_grown).
fn linux_to_tas(tag: &str, extra: &[&str]) -> (f64, u64, u64) {
    let mut tb = Testbed::with_args(tag, Backend::from_env(), extra);
    let srv = tb.spawn_tas(
        &peer(),
        &["--tas", "recv", "5001", MB200, "21"],
        Some("listening"),
    );
    let t = Instant::now();
    let o = tb.run_lnx(
        &peer(),
        &["send", TAS_IP, "5001", MB200, "21"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "linux sender");
    assert_eq!(
        tb.wait_child(srv, Duration::from_secs(60)),
        Some(true),
        "the TAS receiver did not verify the stream"
    );
    let secs = t.elapsed().as_secs_f64();
    (
        secs,
        tb.tasd_counter("slowpath.rx_rings_grown"),
        tb.tasd_counter("slowpath.tx_rings_grown"),
    )
}

/// A TAS app sends 200 MB to a Linux receiver (which checks it).
fn tas_to_linux(tag: &str, extra: &[&str]) -> (f64, u64, u64) {
    let mut tb = Testbed::with_args(tag, Backend::from_env(), extra);
    let srv = tb.spawn_lnx(&peer(), &["recv", "5003", MB200, "23"], Some("listening"));
    let t = Instant::now();
    let o = tb.run_tas(
        &peer(),
        &["--tas", "send", LNX_IP, "5003", MB200, "23"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "tas sender");
    assert_eq!(
        tb.wait_child(srv, Duration::from_secs(60)),
        Some(true),
        "the Linux receiver did not verify the stream"
    );
    let secs = t.elapsed().as_secs_f64();
    (
        secs,
        tb.tasd_counter("slowpath.rx_rings_grown"),
        tb.tasd_counter("slowpath.tx_rings_grown"),
    )
}

fn report(what: &str, grow: (f64, u64, u64), fixed: (f64, u64, u64)) {
    let mbps = |s: f64| 200.0 * 8.0 * 1.048576 / s;
    println!(
        "{what}: 32 KiB growing rings {:.2} s ({:.0} Mbit/s; rx_rings_grown {}, tx_rings_grown {}), fixed 256 KiB rings {:.2} s ({:.0} Mbit/s)",
        grow.0,
        mbps(grow.0),
        grow.1,
        grow.2,
        fixed.0,
        mbps(fixed.0)
    );
    // Fixed rings never grow.
    assert_eq!((fixed.1, fixed.2), (0, 0), "{what}: fixed rings grew");
    // A sanity bound only: the numbers are noisy on a shared machine.
    assert!(
        grow.0 <= fixed.0 * 4.0 + 5.0,
        "{what}: growing rings took {:.2} s against {:.2} s",
        grow.0,
        fixed.0
    );
}

#[test]
fn linux_to_tas_rx_ring_grows_from_32k() {
    let grow = linux_to_tas("atrx", &[]);
    let fixed = linux_to_tas("atrxf", FIXED);
    report("Linux -> TAS 200 MB", grow, fixed);
    // 32 -> 64 -> 128 -> 256 KiB: at most three switches for one flow.
    assert!(
        (1..=3).contains(&grow.1),
        "the receive ring did not grow (or grew past its maximum): {} switches",
        grow.1
    );
}

#[test]
fn tas_to_linux_tx_ring_grows_from_32k() {
    let grow = tas_to_linux("attx", &[]);
    let fixed = tas_to_linux("attxf", FIXED);
    report("TAS -> Linux 200 MB", grow, fixed);
    assert!(
        (1..=3).contains(&grow.2),
        "the send ring did not grow (or grew past its maximum): {} switches",
        grow.2
    );
}

/// A receive size set on a listener after `listen()` (`LISTEN_UPDATE`, what
/// the shim sends for `setsockopt(SO_RCVBUF)` on a listening socket) is
/// inherited, pinned, by the connection accepted next: an 8 KiB ring that
/// holds at most 8 KiB while the app does not read (Linux sends 1 MB), and
/// never grows; the stream still arrives whole.
#[test]
fn a_size_set_on_a_listener_after_listen_pins_accepted_rings() {
    let mut tb = Testbed::new("atpin", Backend::from_env());
    let (pid, lines) =
        tb.spawn_tas_lines(&peer(), &["--tas", "recv", "5005", "1048576", "25", "8192"]);
    let mut last = String::new();
    assert!(
        wait_line(&lines, "listening", Duration::from_secs(10), &mut last).is_some(),
        "receiver not listening: {last}"
    );
    let o = tb.run_lnx(
        &peer(),
        &["send", TAS_IP, "5005", "1048576", "25"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "linux sender");
    let l = wait_line(&lines, "rx_len", Duration::from_secs(10), &mut last)
        .unwrap_or_else(|| panic!("no ring report: {last}"));
    let w: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(w[1], "8192", "the accepted ring: {l}");
    let queued: u32 = w[3].parse().unwrap();
    assert!(queued > 0 && queued <= 8192, "{l}");
    assert!(
        wait_line(&lines, "received ok", Duration::from_secs(30), &mut last).is_some(),
        "stream not verified: {last}"
    );
    assert_eq!(tb.wait_child(pid, Duration::from_secs(10)), Some(true));
    assert_eq!(tb.tasd_counter("slowpath.rx_rings_grown"), 0);
}
