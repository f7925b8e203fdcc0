//! The harness's own promise, tested from outside: a benchmark that
//! SIGTERM or SIGINT ends (`kill`, Ctrl-C) removes its test hosts, stops
//! every program it started and exits with 128 + the signal.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tas_system_tests::{bin, namespaces_of, require_root};

/// A process's parent and start time (clock ticks after boot), from
/// /proc/PID/stat; None once it is gone or a zombie.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces and ')'.
    let rest: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    if rest.first() == Some(&"Z") {
        return None;
    }
    Some((rest.get(1)?.parse().ok()?, rest.get(19)?.parse().ok()?))
}

/// Every live descendant of `root`, each with its start time (so that a
/// recycled pid is not taken for it later).
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let all: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(ppid, start)| (p, ppid, start)))
        .collect();
    let mut out: Vec<(u32, u64)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, ppid, start) in &all {
            if ppid == parent && !out.iter().any(|&(q, _)| q == p) {
                out.push((p, start));
                frontier.push(p);
            }
        }
    }
    out
}

fn kill_outright(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    for n in namespaces_of(child.id()) {
        let _ = Command::new("ip").args(["netns", "del", &n]).output();
    }
}

/// The command name of process `pid` ("" once it is gone).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Starts `program ARGS`, waits until it has test hosts and the programs
/// named in `running` (command names, each as often as listed) run under
/// it, sends `sig`, and checks what is left.
fn interrupted_mid_run(program: &str, args: &[&str], running: &[&str], sig: i32) {
    require_root();
    // To a file, not a pipe: a program left running would hold a pipe open.
    let log = std::env::temp_dir().join(format!("harness-{program}-{sig}.log"));
    let mut child = Command::new(bin(program))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(90);
    let started = loop {
        let d = descendants(pid);
        // Each name in `running` takes one process of its own.
        let mut names: Vec<String> = d.iter().map(|&(p, _)| comm(p)).collect();
        let all_there = running.iter().all(|r| {
            let i = names.iter().position(|n| n == r);
            i.map(|i| names.swap_remove(i)).is_some()
        });
        if !namespaces_of(pid).is_empty() && all_there {
            break d;
        }
        if let Ok(Some(st)) = child.try_wait() {
            kill_outright(&mut child);
            panic!("{program} ended ({st}) before its measurement started");
        }
        if Instant::now() > deadline {
            kill_outright(&mut child);
            panic!("{program} had no test hosts or not {running:?} running after 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{program} ({pid}): signal {sig} with {started:?} running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, sig) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            kill_outright(&mut child);
            panic!("{program} still ran 30 s after signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // What the signal's SIGTERM to them has not ended within 5 s is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<(u32, u64)> = started.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&(p, start)| stat(p).is_some_and(|(_, s)| s == start));
        std::thread::sleep(Duration::from_millis(50));
    }
    let hosts = namespaces_of(pid);
    for &(p, _) in &left {
        // SAFETY: killing what the benchmark left, so the next test runs clean.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    for n in &hosts {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
    }
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tas-test-") && n.contains(&format!("p{pid}x")))
        .collect();
    assert!(
        hosts.is_empty() && left.is_empty() && dirs.is_empty(),
        "{program} after signal {sig}: namespaces {hosts:?}, programs {left:?} (of {started:?}) \
         and directories {dirs:?} left; its stderr:\n{err}"
    );
    assert_eq!(
        status.code(),
        Some(128 + sig),
        "{program} should exit 128 + {sig} ({status}); its stderr:\n{err}"
    );
}

#[test]
fn a_benchmark_ended_by_sigterm_removes_its_test_hosts() {
    // Linux's echo server and the client run first in each round.
    interrupted_mid_run(
        "perf-bench",
        &["--rows", "echo1", "--runs", "1", "--secs", "60"],
        &["rpc", "rpc"],
        libc::SIGTERM,
    );
}

#[test]
fn a_benchmark_ended_by_ctrl_c_removes_its_test_hosts() {
    // tasd, then the TAS server and the client.
    interrupted_mid_run(
        "echo-bench",
        &["--secs", "60"],
        &["tasd", "peer", "rpc"],
        libc::SIGINT,
    );
}
