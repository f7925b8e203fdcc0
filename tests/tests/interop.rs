//! tasd against the Linux kernel stack, in both directions, in namespaces.

use std::time::Duration;
use tas_system_tests::*;

const MB100: &str = "104857600";

fn peer() -> std::path::PathBuf {
    bin("peer")
}

fn backend() -> Backend {
    Backend::from_env()
}

#[test]
fn echo_tas_server_linux_client() {
    let mut tb = Testbed::new("echo1", backend());
    tb.spawn_tas(&peer(), &["--tas", "echo-server", "7"], Some("listening"));
    let o = tb.run_lnx(
        &peer(),
        &["echo-client", TAS_IP, "7", "2000", "64"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "linux echo client");
    assert!(
        stdout(&o).contains("echo ok: 2000 x 64 B"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn echo_linux_server_tas_client() {
    let mut tb = Testbed::new("echo2", backend());
    tb.spawn_lnx(&peer(), &["echo-server", "7"], Some("listening"));
    let o = tb.run_tas(
        &peer(),
        &["--tas", "echo-client", LNX_IP, "7", "2000", "64"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "tas echo client");
    assert!(
        stdout(&o).contains("echo ok: 2000 x 64 B"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn hundred_concurrent_flows_both_directions() {
    let mut tb = Testbed::new("conc", backend());
    tb.spawn_tas(&peer(), &["--tas", "echo-server", "7"], Some("listening"));
    let o = tb.run_lnx(
        &peer(),
        &["echo-client", TAS_IP, "7", "2000", "64", "100"],
        Duration::from_secs(120),
    );
    assert_ok(&o, "linux client, 100 flows");
    tb.spawn_lnx(&peer(), &["echo-server", "8"], Some("listening"));
    let o = tb.run_tas(
        &peer(),
        &["--tas", "echo-client", LNX_IP, "8", "2000", "64", "100"],
        Duration::from_secs(120),
    );
    assert_ok(&o, "tas client, 100 flows");
}

#[test]
fn bulk_100mb_linux_to_tas_server() {
    // Linux connects and sends, then closes first; the TAS app verifies.
    let mut tb = Testbed::new("bulk1", backend());
    let srv = tb.spawn_tas(
        &peer(),
        &["--tas", "recv", "5001", MB100, "7"],
        Some("listening"),
    );
    let o = tb.run_lnx(
        &peer(),
        &["send", TAS_IP, "5001", MB100, "7"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "linux sender");
    assert_eq!(
        tb.wait_child(srv, Duration::from_secs(30)),
        Some(true),
        "TAS receiver did not verify the stream"
    );
}

#[test]
fn bulk_100mb_tas_server_to_linux() {
    // The TAS app accepts and sends, then closes first; Linux verifies.
    let mut tb = Testbed::new("bulk2", backend());
    let srv = tb.spawn_tas(
        &peer(),
        &["--tas", "serve-send", "5002", MB100, "9"],
        Some("listening"),
    );
    let o = tb.run_lnx(
        &peer(),
        &["connect-recv", TAS_IP, "5002", MB100, "9"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "linux receiver");
    assert_eq!(tb.wait_child(srv, Duration::from_secs(30)), Some(true));
}

#[test]
fn bulk_100mb_tas_client_to_linux() {
    let mut tb = Testbed::new("bulk3", backend());
    let srv = tb.spawn_lnx(&peer(), &["recv", "5003", MB100, "11"], Some("listening"));
    let o = tb.run_tas(
        &peer(),
        &["--tas", "send", LNX_IP, "5003", MB100, "11"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "tas sender");
    assert_eq!(
        tb.wait_child(srv, Duration::from_secs(30)),
        Some(true),
        "Linux receiver did not verify the stream"
    );
}

#[test]
fn bulk_100mb_linux_server_to_tas_client() {
    let mut tb = Testbed::new("bulk4", backend());
    let srv = tb.spawn_lnx(
        &peer(),
        &["serve-send", "5004", MB100, "13"],
        Some("listening"),
    );
    let o = tb.run_tas(
        &peer(),
        &["--tas", "connect-recv", LNX_IP, "5004", MB100, "13"],
        Duration::from_secs(240),
    );
    assert_ok(&o, "tas receiver");
    assert_eq!(tb.wait_child(srv, Duration::from_secs(30)), Some(true));
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut tb = Testbed::new("refuse", backend());
    let o = tb.run_tas(
        &peer(),
        &["--tas", "connect", LNX_IP, "9"],
        Duration::from_secs(30),
    );
    assert_eq!(stdout(&o).trim(), format!("error {}", libc::ECONNREFUSED));
    // And the other way: Linux to a TAS port nobody listens on.
    let o = tb.run_lnx(&peer(), &["connect", TAS_IP, "9"], Duration::from_secs(30));
    assert_eq!(stdout(&o).trim(), format!("error {}", libc::ECONNREFUSED));
}

#[test]
fn connect_to_silent_address_times_out() {
    let mut tb = Testbed::new("silent", backend());
    let o = tb.run_tas(
        &peer(),
        &["--tas", "connect", "198.18.0.77", "80"],
        Duration::from_secs(60),
    );
    let out = stdout(&o);
    assert!(
        out.trim() == format!("error {}", libc::EHOSTUNREACH)
            || out.trim() == format!("error {}", libc::ETIMEDOUT),
        "{out}"
    );
}

#[test]
fn ping_the_tas_address() {
    let mut tb = Testbed::new("ping", backend());
    let o = tb.run_lnx(
        std::path::Path::new("/usr/bin/env"),
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", TAS_IP],
        Duration::from_secs(20),
    );
    assert_ok(&o, "ping");
    assert!(stdout(&o).contains("3 received"), "{}", stdout(&o));
}

#[test]
fn killed_app_resets_its_peer_and_tasd_keeps_serving() {
    let mut tb = Testbed::new("kill", backend());
    let srv = tb.spawn_tas(
        &peer(),
        &["--tas", "recv", "5005", "1000000000", "3"],
        Some("listening"),
    );
    let sender = tb.spawn_lnx(&peer(), &["send", TAS_IP, "5005", "1000000000", "3"], None);
    std::thread::sleep(Duration::from_millis(1500));
    tb.kill(srv);
    // The Linux sender must see the connection die (reset), not hang.
    assert_eq!(
        tb.wait_child(sender, Duration::from_secs(20)),
        Some(false),
        "sender should fail with a reset"
    );
    assert!(tb.tasd_alive(), "tasd died");
    // tasd still serves new apps.
    tb.spawn_tas(&peer(), &["--tas", "echo-server", "7"], Some("listening"));
    let o = tb.run_lnx(
        &peer(),
        &["echo-client", TAS_IP, "7", "200", "64"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "echo after kill");
}

#[test]
fn sigterm_stops_tasd_cleanly() {
    let mut tb = Testbed::new("term", backend());
    tb.spawn_tas(&peer(), &["--tas", "echo-server", "7"], Some("listening"));
    let o = tb.run_lnx(
        &peer(),
        &["echo-client", TAS_IP, "7", "10", "64"],
        Duration::from_secs(30),
    );
    assert_ok(&o, "echo");
    assert!(
        tb.stop_tasd(),
        "tasd did not exit 0 on SIGTERM:\n{}",
        tb.tasd_log()
    );
    assert!(!tb.socket.exists(), "attach socket left behind");
}
