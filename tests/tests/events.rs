//! Never lose an event, never hold what a connection no longer needs:
//! a stalled app gets every connection and its backlog back, the RSTs of a
//! client that exits with thousands of connections all arrive, silent
//! attach connections and a control client that does not read cost tasd
//! nothing, a second tasd on the interface is refused, and apps whose tasd
//! is killed see an error at once, use no CPU, and attach again when tasd
//! is back.
//!
//! The daemon's control socket is spoken to in raw JSON lines here, so
//! these tests also build (and fail clearly) against a tasd without the
//! `listeners` request.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tas_system_tests::*;

fn ctl_path(tb: &Testbed) -> PathBuf {
    let mut s = tb.socket.as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

/// One request on tasd's control socket; the answer's `data`, or the error.
fn ctl(path: &Path, cmd: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("no answer to {cmd} within {timeout:?}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}"))?;
    if v["ok"] != serde_json::Value::Bool(true) {
        return Err(format!("{cmd} refused: {line}"));
    }
    Ok(v["data"].clone())
}

fn counter(tb: &Testbed, name: &str) -> u64 {
    let d = ctl(&ctl_path(tb), "stats", Duration::from_secs(5)).expect("stats");
    d["counters"][name].as_u64().unwrap_or(0)
}

fn sig(pid: u32, s: i32) {
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(pid as i32, s) };
}

fn expect_line(rx: &std::sync::mpsc::Receiver<String>, word: &str, limit: Duration, what: &str) {
    let mut last = String::new();
    if wait_line(rx, word, limit, &mut last).is_none() {
        panic!("{what}: no '{word}' within {limit:?} (last line: {last:?})");
    }
}

/// A TAS app stopped for 2 s while 5,000 connections arrive from Linux:
/// after SIGCONT it accepts every one (no ACCEPTED notice lost), its
/// listener's accept queue is empty again (backlog accounting exact), and
/// when the Linux client exits with all 5,000 open (SO_LINGER 0: 5,000 RSTs
/// in a burst, far beyond a lane's exception queue) every connection is
/// reset at the app (no RST lost on the way, no RESET notice lost).
#[test]
fn a_stalled_app_gets_every_connection_and_every_reset() {
    const N: usize = 5000;
    const BACKLOG: u64 = 4096;
    let mut tb = Testbed::new("evst", Backend::from_env());
    let (app, rx) = tb.spawn_tas_lines(
        &bin("peer"),
        &[
            "--tas",
            "accept-hold",
            "7001",
            &N.to_string(),
            &BACKLOG.to_string(),
        ],
    );
    expect_line(&rx, "listening", Duration::from_secs(10), "app");
    sig(app, libc::SIGSTOP);
    let (client, crx) = tb.spawn_lnx_lines(
        &bin("peer"),
        &["connect-hold", TAS_IP, "7001", &N.to_string(), "40"],
    );
    expect_line(&crx, "started", Duration::from_secs(10), "client");
    std::thread::sleep(Duration::from_secs(2));
    sig(app, libc::SIGCONT);
    let t = Instant::now();
    expect_line(
        &rx,
        &format!("accepted {N}"),
        Duration::from_secs(40),
        "app after SIGCONT",
    );
    eprintln!("all {N} accepted {:?} after SIGCONT", t.elapsed());
    // The app took them all, so the accept queue is empty again: the
    // whole backlog is usable.
    let deadline = Instant::now() + Duration::from_secs(5);
    let l = loop {
        let ls = ctl(&ctl_path(&tb), "listeners", Duration::from_secs(5)).expect("listeners");
        let l = ls
            .as_array()
            .and_then(|a| a.iter().find(|l| l["port"] == 7001).cloned())
            .expect("listener on 7001");
        if l["pending"] == 0 || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(l["backlog"], BACKLOG, "{l}");
    assert_eq!(l["pending"], 0, "accept queue not drained: {l}");
    expect_line(
        &crx,
        &format!("connected {N} of {N}"),
        Duration::from_secs(30),
        "client",
    );
    // The client exits with every connection open: N RSTs at once.
    sig(client, libc::SIGKILL);
    expect_line(
        &rx,
        &format!("ended {N}"),
        Duration::from_secs(30),
        "app after the client's resets",
    );
    let waited = counter(&tb, "lanes.exceptions_deferred");
    eprintln!(
        "exceptions that waited for room: {waited}; listen overflows: {}",
        counter(&tb, "slowpath.listen_overflows")
    );
    let st = ctl(&ctl_path(&tb), "status", Duration::from_secs(5)).unwrap();
    assert!(
        st["flows"].get("ESTABLISHED").is_none(),
        "flows left established: {}",
        st["flows"]
    );
}

/// A Unix SOCK_SEQPACKET connection to `path` that never says anything.
fn silent_attach(path: &Path) -> libc::c_int {
    // SAFETY: plain libc calls; `sa` is a live, fully initialised local.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in path.as_os_str().as_encoded_bytes().iter().enumerate() {
            sa.sun_path[i] = *b as libc::c_char;
        }
        let r = libc::connect(
            fd,
            &sa as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        fd
    }
}

/// 100 connections to the attach socket that never say HELLO, while a
/// transfer runs: `tasctl status` and a new app's attach and connect keep
/// their normal latency, the transfer is undisturbed, and the silent
/// connections are closed after the HELLO deadline.
#[test]
fn silent_attach_connections_cost_nothing() {
    let mut tb = Testbed::new("evsa", Backend::from_env());
    tb.spawn_lnx(&bin("peer"), &["echo-server", "7002"], Some("listening"));
    let (_, trace) = tb.spawn_tas_lines(
        &bin("peer"),
        &["--tas", "echo-trace", LNX_IP, "7002", "4", "64"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let silent: Vec<libc::c_int> = (0..100).map(|_| silent_attach(&tb.socket)).collect();
    let path = ctl_path(&tb);
    for i in 0..5 {
        let t = Instant::now();
        ctl(&path, "status", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("status {i} with 100 silent attach connections: {e}"));
        let dt = t.elapsed();
        assert!(dt < Duration::from_millis(500), "status {i} took {dt:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    assert_ok(&tb.tasctl(&["status"]), "tasctl status");
    let dt = t.elapsed();
    assert!(dt < Duration::from_secs(1), "tasctl status took {dt:?}");
    let t = Instant::now();
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "connect", LNX_IP, "7002"],
        Duration::from_secs(20),
    );
    let dt = t.elapsed();
    assert_ok(&o, "new app");
    assert!(stdout(&o).contains("connected"), "{}", stdout(&o));
    assert!(
        dt < Duration::from_secs(2),
        "a new app's attach+connect took {dt:?}"
    );
    // The transfer ran through it all without a stall.
    let mut rtts = Vec::new();
    let mut done = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !done {
        match trace.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.starts_with("T ") => {
                if let Some(r) = l
                    .split_whitespace()
                    .nth(2)
                    .and_then(|x| x.parse::<u64>().ok())
                {
                    rtts.push(r);
                }
            }
            Ok(l) if l.contains("echo-trace ok") => done = true,
            Ok(l) if l.contains("FAILED") => panic!("transfer: {l}"),
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    assert!(
        done && rtts.len() > 100,
        "transfer did not finish ({} rpcs)",
        rtts.len()
    );
    let max = rtts.iter().copied().max().unwrap_or(0);
    assert!(max < 1_000_000_000, "an RPC took {} ms", max / 1_000_000);
    // The silent ones are closed by the deadline (2 s), all 100.
    std::thread::sleep(Duration::from_millis(2500));
    let closed = silent
        .iter()
        .filter(|&&fd| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut p, 1, 0) };
            p.revents & libc::POLLHUP != 0
        })
        .count();
    assert_eq!(closed, 100, "silent attach connections still open");
    assert!(counter(&tb, "apps.attach_timeouts") >= 100);
    for fd in silent {
        // SAFETY: closing descriptors this test opened.
        unsafe { libc::close(fd) };
    }
}

/// A control client that sends requests and never reads the answers does
/// not grow tasd's memory (it is simply not read while an answer waits),
/// and other control clients are served meanwhile.
#[test]
fn a_control_client_that_does_not_read_cannot_grow_tasd() {
    let mut tb = Testbed::new("evrs", Backend::from_env());
    let pid = tb.tasd_pid().expect("tasd pid");
    let path = ctl_path(&tb);
    ctl(&path, "status", Duration::from_secs(5)).expect("status");
    let before = vm_rss_kib(pid).expect("VmRSS");
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_nonblocking(true).unwrap();
    let batch = "{\"cmd\":\"status\"}\n".repeat(256);
    let mut sent = 0usize;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        match s.write(batch.as_bytes()) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let after = vm_rss_kib(pid).expect("VmRSS");
    eprintln!("sent {sent} bytes of requests; tasd VmRSS {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "tasd grew from {before} to {after} KiB"
    );
    // Other clients are answered at once meanwhile.
    let t = Instant::now();
    ctl(&path, "status", Duration::from_secs(5)).expect("status beside the stuck client");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // The stuck client still gets its answers, in order, when it reads.
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    drop(r);
    let _ = tb.tasctl(&["status"]);
}

/// A second tasd for the same interface — another backend, another socket
/// path, or the same socket path — fails at once with one line naming the
/// running one's pid; the first keeps its socket file and keeps working.
#[test]
fn a_second_tasd_on_the_interface_is_refused() {
    let mut tb = Testbed::new("ev2d", Backend::from_env());
    let first = tb.tasd_pid().expect("tasd pid");
    let other = tb.dir.join("other.sock");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&tb.socket);
    let ip = format!("{TAS_IP}/24");
    let sock = tb.socket.to_str().unwrap().to_string();
    for (nic, socket) in [
        ("af_packet", other.to_str().unwrap()),
        ("af_xdp", sock.as_str()),
        ("af_packet", sock.as_str()),
    ] {
        let t = Instant::now();
        let o = tb.run_tas(
            &bin("tasd"),
            &[
                "--ip", &ip, "--iface", "veth-tas", "--nic", nic, "--socket", socket,
            ],
            Duration::from_secs(5),
        );
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            !o.status.success(),
            "second tasd ({nic}, {socket}) started:\n{err}\n{}",
            stdout(&o)
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "it took {:?}",
            t.elapsed()
        );
        assert_eq!(lines.len(), 1, "not one line:\n{err}");
        assert!(
            lines[0].contains(&format!("pid {first}")) && lines[0].contains("veth-tas"),
            "{}",
            lines[0]
        );
    }
    assert!(!other.exists(), "the refused tasd created its socket");
    assert_eq!(ino(&tb.socket), before, "the socket file was replaced");
    assert!(tb.tasd_alive());
    tb.spawn_tas(
        &bin("peer"),
        &["--tas", "recv", "7003", "2000000", "3"],
        Some("listening"),
    );
    let o = tb.run_lnx(
        &bin("peer"),
        &["send", TAS_IP, "7003", "2000000", "3"],
        Duration::from_secs(20),
    );
    assert_ok(&o, "transfer to the first tasd");
    assert_ok(&tb.tasctl(&["status"]), "tasctl status");
}

/// Waits until `pid` has exited (zombie or gone), up to `limit`.
fn exited_within(pid: u32, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        match proc_state(pid) {
            None | Some('Z') | Some('X') => return Some(t.elapsed()),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// A TAS API server reads its control socket only when tasd sent it
/// something (`RegionHeader::ctl_sent`), when the socket woke its wait, or
/// every 1,024 looks: not on every `recv`, `send`, `try_accept` and spin
/// round. Before, the `peer` echo server made several `recvfrom` calls
/// per request that found nothing (336k a second at 64 connections, 65 %
/// of its CPU samples; docs/perf-bench.md, session 31).
#[test]
fn a_tas_api_server_reads_its_control_socket_only_for_news() {
    ensure_packages(&[("command -v strace", "strace")]);
    let mut tb = Testbed::new("evcn", Backend::from_env());
    let out = std::env::temp_dir().join(format!("tas-ctl-news-{}.strace", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let (o, peer) = (out.display().to_string(), bin("peer"));
    let strace = tb.spawn_tas(
        Path::new("strace"),
        &[
            "-f",
            "-c",
            "-o",
            &o,
            peer.to_str().unwrap(),
            "--tas",
            "echo-server",
            "7008",
        ],
        Some("listening"),
    );
    let n = 4000u64;
    let r = tb.run_lnx(
        &peer,
        &["echo-client", TAS_IP, "7008", &n.to_string(), "64"],
        Duration::from_secs(120),
    );
    assert_ok(&r, "linux echo client");
    assert!(
        stdout(&r).contains(&format!("echo ok: {n} x 64 B")),
        "{}",
        stdout(&r)
    );
    // End the server so that strace writes its summary.
    let kids = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .unwrap_or_default();
    for k in kids
        .split_whitespace()
        .filter_map(|k| k.parse::<u32>().ok())
    {
        sig(k, libc::SIGTERM);
    }
    let c = strace_counts(&strace_summary(&out));
    let get = |name: &str| c.iter().find(|(s, _)| s == name).map_or(0, |x| x.1);
    let rx = get("recvfrom") + get("recvmsg");
    println!("{n} requests: recvfrom/recvmsg {rx}, poll {}", get("poll"));
    assert!(
        rx < n / 10,
        "{rx} reads of the control socket for {n} requests: the server still asks the kernel on every look"
    );
}

/// tasd killed (SIGKILL) under an idle app (a server loop of try_accept and
/// timed waits) and a blocked one (in accept): both get an error from
/// their wait within 1 s, exit, and burn no CPU on the way; an app that
/// listens again gets its new listener on the next tasd without a restart.
#[test]
fn apps_see_a_killed_tasd_at_once_and_reattach_to_the_next() {
    let backend = Backend::from_env();
    let mut tb = Testbed::new("evkl", backend);
    let idle = tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", "7004"],
        Some("listening"),
    );
    let blocked = tb.spawn_tas(
        &bin("peer"),
        &["--tas", "recv", "7005", "1000", "1"],
        Some("listening"),
    );
    let (again, arx) = tb.spawn_tas_lines(&bin("peer"), &["--tas", "reattach-echo", "7006"]);
    expect_line(&arx, "listening", Duration::from_secs(10), "reattach-echo");
    std::thread::sleep(Duration::from_millis(300));
    let cpu0: Vec<f64> = [idle, blocked]
        .iter()
        .map(|&p| cpu_seconds(p).unwrap_or(0.0))
        .collect();
    tb.signal_tasd(libc::SIGKILL);
    for (i, (pid, what)) in [(idle, "idle app"), (blocked, "blocked app")]
        .into_iter()
        .enumerate()
    {
        let dt = exited_within(pid, Duration::from_secs(3));
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0[i];
        assert!(
            dt.is_some_and(|d| d < Duration::from_secs(1)),
            "{what} still running {dt:?} after tasd died (cpu {cpu:.2} s)"
        );
        assert!(
            cpu < 0.2,
            "{what} used {cpu:.2} s of CPU while tasd was dying"
        );
        assert_eq!(
            tb.wait_child(pid, Duration::from_secs(1)),
            Some(false),
            "{what} exit status"
        );
    }
    expect_line(&arx, "lost:", Duration::from_secs(1), "reattach-echo");
    // While no tasd runs, the app waits without spinning.
    let c0 = cpu_seconds(again).unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(1));
    let c1 = cpu_seconds(again).unwrap_or(0.0);
    assert!(
        c1 - c0 < 0.2,
        "the app used {:.2} s of CPU waiting for tasd",
        c1 - c0
    );
    // A new tasd at the same socket (the dead one's file is stale).
    tb.start_tasd(backend, &[]);
    expect_line(
        &arx,
        "listening",
        Duration::from_secs(10),
        "reattach-echo on the new tasd",
    );
    let o = tb.run_lnx(
        &bin("peer"),
        &["echo-client", TAS_IP, "7006", "20", "100"],
        Duration::from_secs(20),
    );
    assert_ok(&o, "echo through the reattached app");
    expect_line(&arx, "served", Duration::from_secs(5), "reattach-echo");
}

/// A program in another network namespace than tasd's is refused at attach
/// with a clear error.
#[test]
fn an_app_in_another_network_namespace_is_refused_clearly() {
    let mut tb = Testbed::new("evns", Backend::from_env());
    let o = tb.run_lnx(
        &bin("peer"),
        &["--tas", "connect", TAS_IP, "7007"],
        Duration::from_secs(10),
    );
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !o.status.success(),
        "attached from the wrong namespace:\n{all}"
    );
    assert!(all.contains("network namespace"), "{all}");
    let log = tb.tasd_log();
    assert!(log.contains("network namespace"), "tasd log:\n{log}");
}

/// A TAS app writes 20 MB to a slow-reading Linux peer, closes and exits at
/// once: the Linux side receives every byte (the pattern is checked) and a
/// clean end of stream, as from a Linux sender (its connection lives on as
/// an orphan); then the orphan and the app's region go. Before, tasd reset
/// the connections of an app as it exited, with up to a ring of data and
/// the FIN undelivered.
#[test]
fn an_app_that_closes_and_exits_at_once_delivers_every_byte() {
    const BYTES: &str = "20000000";
    let mut tb = Testbed::new("evor", Backend::from_env());
    let (rcv, rrx) = tb.spawn_lnx_lines(&bin("peer"), &["recv-slow", "7008", BYTES, "11", "1000"]);
    expect_line(&rrx, "listening", Duration::from_secs(10), "receiver");
    let o = tb.run_tas(
        &bin("peer"),
        &["--tas", "send-exit", LNX_IP, "7008", BYTES, "11"],
        Duration::from_secs(60),
    );
    assert_ok(&o, "sender");
    assert!(stdout(&o).contains("closed"), "{}", stdout(&o));
    let orphaned = counter(&tb, "slowpath.orphaned");
    expect_line(
        &rrx,
        "received ok",
        Duration::from_secs(30),
        "the Linux receiver (every byte, then end of stream)",
    );
    assert_eq!(
        tb.wait_child(rcv, Duration::from_secs(5)),
        Some(true),
        "receiver exit status"
    );
    assert_eq!(
        orphaned, 1,
        "the app exited before its data was acknowledged"
    );
    // Nothing is left of the app once its orphan is done.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = counter(&tb, "slowpath.orphans_now") + counter(&tb, "apps.attached");
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans {} apps {} left",
            counter(&tb, "slowpath.orphans_now"),
            counter(&tb, "apps.attached")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counter(&tb, "slowpath.abort_on_close"), 0);
}

/// 20,000 connections open at once from Linux to one TAS app, then the
/// client killed (SO_LINGER 0: 20,000 RSTs in a burst): within 2 s no flow
/// is left in `tasctl flows` but the listener (every RST reached the slow
/// path, every RESET the app, every CLOSE came back). The client is two
/// processes of 10,000 connections killed together: one process may not
/// hold 20,000 sockets here (RLIMIT_NOFILE's hard limit is 20,000 and the
/// tests run without CAP_SYS_RESOURCE).
#[test]
fn twenty_thousand_connections_vanish_within_2s_of_the_client_being_killed() {
    const N: usize = 20_000;
    const PER: usize = N / 2;
    let mut tb = Testbed::new("ev20", Backend::from_env());
    let (_app, rx) = tb.spawn_tas_lines(
        &bin("peer"),
        &["--tas", "accept-hold", "7009", &N.to_string(), "4096"],
    );
    expect_line(&rx, "listening", Duration::from_secs(10), "app");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            tb.spawn_lnx_lines(
                &bin("peer"),
                &["connect-hold", TAS_IP, "7009", &PER.to_string(), "60"],
            )
        })
        .collect();
    for (_, crx) in &clients {
        expect_line(
            crx,
            &format!("connected {PER} of {PER}"),
            Duration::from_secs(90),
            "client",
        );
    }
    expect_line(
        &rx,
        &format!("accepted {N}"),
        Duration::from_secs(30),
        "app",
    );
    let path = ctl_path(&tb);
    let st = ctl(&path, "status", Duration::from_secs(5)).unwrap();
    assert_eq!(st["flows"]["ESTABLISHED"], N as u64, "{}", st["flows"]);
    for (pid, _) in &clients {
        sig(*pid, libc::SIGKILL);
    }
    let t = Instant::now();
    // Watched through `status` (counts by state): asking for `flows` (20,000
    // entries of JSON) every few ms would itself load the slow path.
    let mut dt = Duration::ZERO;
    while t.elapsed() < Duration::from_secs(2) {
        let st = ctl(&path, "status", Duration::from_secs(5)).unwrap();
        dt = t.elapsed();
        if st["flows_total"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let flows = ctl(&path, "flows", Duration::from_secs(5)).expect("flows");
    let left: Vec<serde_json::Value> = flows
        .as_array()
        .expect("a list of flows")
        .iter()
        .filter(|f| f["state"] != "LISTEN")
        .cloned()
        .collect();
    eprintln!(
        "{} flows left at {:?} after the kill (last status {dt:?}); exceptions deferred {}; SYN cookies {} (kept in SYN_RCVD {}), listen overflows {}",
        left.len(),
        t.elapsed(),
        counter(&tb, "lanes.exceptions_deferred"),
        counter(&tb, "slowpath.syncookies_recv"),
        counter(&tb, "slowpath.syncookies_parked"),
        counter(&tb, "slowpath.listen_overflows"),
    );
    assert!(
        left.is_empty(),
        "{} flows left 2 s after the client was killed, e.g. {}",
        left.len(),
        left[0]
    );
    // The tasctl command agrees: a header and the listener.
    let o = tb.tasctl(&["flows"]);
    assert_ok(&o, "tasctl flows");
    let lines = stdout(&o).lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 2, "tasctl flows:\n{}", stdout(&o));
    expect_line(&rx, &format!("ended {N}"), Duration::from_secs(5), "app");
}
