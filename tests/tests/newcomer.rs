//! What a newcomer does first: run an unmodified program on TAS with
//! `tasctl run`, keep some sockets on the kernel (`--exclude-ports`,
//! `TAS_EXCLUDE`), and read the connection's state with tools that use
//! `TCP_INFO` (iperf3's Cwnd column).
//!
//! * `python3 -m http.server` under `tasctl run` serves 20 MB to curl on the
//!   Linux host (sha256 checked; tasd's `slowpath.accepted` shows TAS
//!   carried it).
//! * `tasctl run`'s own failures: no tasd, no `libtas_preload.so`, a program
//!   that does not exist, a bad exclude list — one line each, distinct
//!   exit statuses.
//! * An excluded listener stays a kernel socket (reachable over loopback,
//!   tasd accepts nothing); an excluded connect gets the kernel's answer;
//!   a bad `TAS_EXCLUDE` entry is one warning line.
//! * iperf3 under `tasctl run` reports a non-zero congestion window every
//!   interval (`-J`: `snd_cwnd`), and `tests/c/tcpinfo.c` reads the fields
//!   as Linux fills them.
//!
//! Debian packages (python3, curl, iperf3, gcc) are installed with apt-get
//! when missing; a test fails — never skips — when that is impossible.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tas_system_tests::*;

const PYTHON: &str = "/usr/bin/python3";

fn backend() -> Backend {
    Backend::from_env()
}

fn shim() -> PathBuf {
    shim_lib()
}

/// Installs what these tests run; panics when apt-get cannot.
fn ensure_packages() {
    let python = format!("{PYTHON} -c 'import http.server, json, socket'");
    tas_system_tests::ensure_packages(&[
        (python.as_str(), "python3"),
        ("command -v curl", "curl"),
        ("command -v sha256sum", "coreutils"),
        ("command -v iperf3", "iperf3"),
        ("command -v cc", "gcc"),
    ]);
}

/// `tasctl [--socket S] run [EXTRA...] -- CMD...` as arguments for
/// [`Testbed::run_tas`] / [`Testbed::spawn_tas`] (whose program is tasctl).
fn run_args(tb: &Testbed, extra: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--socket".to_string(),
        tb.socket.display().to_string(),
        "run".to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// curl from the Linux host (or, `from_tas`, from the TAS host's kernel)
/// until `url` answers, at most 15 s.
fn wait_http(tb: &mut Testbed, from_tas: bool, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let curl = Path::new("curl");
    let args = ["-s", "-f", "--max-time", "2", "-o", "/dev/null", url];
    loop {
        let o = if from_tas {
            tb.run_tas(curl, &args, Duration::from_secs(5))
        } else {
            tb.run_lnx(curl, &args, Duration::from_secs(5))
        };
        if o.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The one line a failed `tasctl run` printed (asserting there is one).
fn one_line(o: &Output) -> String {
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{e}");
    assert!(stdout(o).is_empty(), "stdout: {}", stdout(o));
    lines[0].to_string()
}

#[test]
fn tasctl_run_python_http_server_serves_20mb_to_curl_on_linux() {
    ensure_packages();
    shim();
    let mut tb = Testbed::new("ncpy", backend());
    let root = tb.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("big.bin");
    let o = Command::new("head")
        .args(["-c", "20971520", "/dev/urandom"])
        .output()
        .expect("head");
    assert!(o.status.success());
    std::fs::write(&file, &o.stdout).unwrap();
    let sum = sha256(&file);
    let before = tb.tasd_counter("slowpath.accepted");
    let args = run_args(
        &tb,
        &[],
        &[
            PYTHON,
            "-u",
            "-m",
            "http.server",
            "8000",
            "--bind",
            TAS_IP,
            "--directory",
            root.to_str().unwrap(),
        ],
    );
    tb.spawn_tas(&bin("tasctl"), &strs(&args), Some("Serving HTTP"));
    let got = tb.dir.join("got.bin");
    let t = Instant::now();
    let o = tb.run_lnx(
        Path::new("curl"),
        &[
            "-s",
            "-f",
            "--max-time",
            "60",
            "-o",
            got.to_str().unwrap(),
            &format!("http://{TAS_IP}:8000/big.bin"),
        ],
        Duration::from_secs(90),
    );
    assert_ok(&o, "curl 20 MB from python3 http.server under tasctl run");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sha256(&got), sum, "the file curl received differs");
    let carried = tb.tasd_counter("slowpath.accepted") - before;
    assert!(
        carried >= 1,
        "tasd accepted no connection: the server was not on TAS"
    );
    println!(
        "python3 http.server under tasctl run -> Linux curl: 20 MB in {secs:.2} s ({:.0} Mbit/s), {carried} connection(s) accepted by tasd",
        167.77 / secs
    );
}

#[test]
fn tasctl_run_failures_are_one_line_with_their_own_exit_status() {
    ensure_packages();
    shim();
    let mut tb = Testbed::hosts("ncerr");
    let tasctl = bin("tasctl");
    // No tasd behind the socket.
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &[], &["true"])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let l = one_line(&o);
    assert!(
        l.starts_with(&format!(
            "tasctl: cannot reach tasd at {}: ENOENT",
            tb.socket.display()
        )) && l.contains("is tasd running?"),
        "{l}"
    );
    // A socket file left by a dead daemon.
    let _ = std::os::unix::net::UnixListener::bind(&tb.socket).expect("bind a socket file");
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &[], &["true"])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(one_line(&o).contains("ECONNREFUSED"), "{o:?}");

    // tasctl without libtas_preload.so beside it or in ../lib.
    let alone = tb.dir.join("prefix/bin");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&tasctl, alone.join("tasctl")).unwrap();
    let o = tb.run_tas(
        &alone.join("tasctl"),
        &strs(&run_args(&tb, &[], &["true"])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let l = one_line(&o);
    assert!(
        l.starts_with(&format!(
            "tasctl: libtas_preload.so not found in {} or {}",
            alone.display(),
            tb.dir.join("prefix/lib").display()
        )),
        "{l}"
    );

    // With tasd: a program that does not exist, one that cannot run, and a
    // bad exclude list (refused before anything runs).
    tb.start_tasd(backend(), &[]);
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &[], &["tas-no-such-program"])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert_eq!(
        one_line(&o),
        "tasctl: tas-no-such-program: command not found"
    );
    let data = tb.dir.join("not-a-program");
    std::fs::write(&data, "data\n").unwrap();
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &[], &[data.to_str().unwrap()])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(126), "{o:?}");
    assert_eq!(
        one_line(&o),
        format!("tasctl: {}: Permission denied", data.display())
    );
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &["--exclude-ports", "22,ssh"], &["true"])),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(
        one_line(&o),
        "tasctl: --exclude-ports: 'ssh': not a port (1-65535), port range (LOW-HIGH), IPv4 address or address:port"
    );
    // And when it runs: the program's environment, exit status and signals.
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(
            &tb,
            &[],
            &["sh", "-c", "echo \"$LD_PRELOAD|$TAS_SOCKET\"; exit 7"],
        )),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(
        stdout(&o).trim(),
        format!("{}|{}", shim().display(), tb.socket.display())
    );
    let o = tb.run_tas(
        &tasctl,
        &strs(&run_args(&tb, &[], &["sh", "-c", "kill -TERM $$"])),
        Duration::from_secs(10),
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{o:?}");
}

#[test]
fn excluded_sockets_stay_on_the_kernel_stack() {
    ensure_packages();
    shim();
    let mut tb = Testbed::new("ncex", backend());
    let root = tb.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from the kernel stack\n").unwrap();
    let accepted = tb.tasd_counter("slowpath.accepted");
    let connected = tb.tasd_counter("slowpath.connected");
    // A listener on 0.0.0.0:8001 under --exclude-ports 8001 is a kernel
    // socket: reachable over the TAS host's loopback (a TAS listener is
    // not), and tasd accepts nothing.
    let args = run_args(
        &tb,
        &["--exclude-ports", "8001"],
        &[
            PYTHON,
            "-u",
            "-m",
            "http.server",
            "8001",
            "--bind",
            "0.0.0.0",
            "--directory",
            root.to_str().unwrap(),
        ],
    );
    tb.spawn_tas(&bin("tasctl"), &strs(&args), Some("Serving HTTP"));
    wait_http(&mut tb, true, "http://127.0.0.1:8001/hello.txt");
    let o = tb.run_tas(
        Path::new("curl"),
        &[
            "-s",
            "-f",
            "--max-time",
            "5",
            "http://127.0.0.1:8001/hello.txt",
        ],
        Duration::from_secs(10),
    );
    assert_ok(&o, "curl over loopback to the excluded listener");
    assert_eq!(stdout(&o), "hello from the kernel stack\n");

    // The same through TAS_EXCLUDE, with an entry it cannot read (one
    // warning line, the rest applies): a listener and a client of the
    // same program meet on loopback, and a connect to an excluded address
    // gets the kernel's answer (this host's kernel has no route: the
    // Linux host is reachable only through tasd).
    let script = format!(
        "import socket\n\
         l = socket.socket(); l.bind(('0.0.0.0', 8002)); l.listen()\n\
         c = socket.create_connection(('127.0.0.1', 8002), timeout=5)\n\
         a, _ = l.accept(); c.sendall(b'x'); print('loopback', a.recv(1).decode())\n\
         try:\n    socket.create_connection(('{LNX_IP}', 9), timeout=5)\n\
         except OSError as e:\n    print('excluded connect errno', e.errno)\n"
    );
    let o = tb.run_tas(
        Path::new("env"),
        &strs(&[
            "TAS_EXCLUDE=8002, telnet ,".to_string() + LNX_IP,
            bin("tasctl").display().to_string(),
            "--socket".into(),
            tb.socket.display().to_string(),
            "run".into(),
            "--".into(),
            PYTHON.into(),
            "-c".into(),
            script,
        ]),
        Duration::from_secs(20),
    );
    assert_ok(&o, "python under TAS_EXCLUDE");
    assert_eq!(
        stdout(&o),
        format!("loopback x\nexcluded connect errno {}\n", libc::ENETUNREACH)
    );
    let warn: Vec<String> = stderr(&o).lines().map(str::to_string).collect();
    assert_eq!(warn.len(), 1, "{warn:?}");
    assert!(
        warn[0].starts_with("libtas_preload[")
            && warn[0].ends_with(
                "]: TAS_EXCLUDE: ignored 'telnet': not a port (1-65535), port range (LOW-HIGH), IPv4 address or address:port"
            ),
        "{warn:?}"
    );
    assert_eq!(
        tb.tasd_counter("slowpath.accepted"),
        accepted,
        "tasd accepted a connection for an excluded listener"
    );
    assert_eq!(
        tb.tasd_counter("slowpath.connected"),
        connected,
        "tasd opened a connection to an excluded address"
    );
}

/// iperf3's JSON report: per-interval `snd_cwnd` (bytes) and `rtt` (µs)
/// of the first stream, and the sender's `max_snd_cwnd`.
fn iperf_cwnd(json: &str) -> (Vec<(u64, u64)>, u64) {
    let v: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}):\n{json}"));
    let iv = v["intervals"]
        .as_array()
        .unwrap_or_else(|| panic!("no intervals:\n{json}"))
        .iter()
        .map(|i| {
            let s = &i["streams"][0];
            (
                s["snd_cwnd"].as_u64().unwrap_or(0),
                s["rtt"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let max = v["end"]["streams"][0]["sender"]["max_snd_cwnd"]
        .as_u64()
        .unwrap_or(0);
    (iv, max)
}

#[test]
fn iperf3_under_tasctl_run_reports_the_congestion_window() {
    ensure_packages();
    shim();
    let mut tb = Testbed::new("ncip", backend());
    tb.spawn_lnx(
        Path::new("iperf3"),
        &["-s", "-1", "-p", "5201", "--forceflush"],
        Some("listening"),
    );
    let connected = tb.tasd_counter("slowpath.connected");
    let args = run_args(
        &tb,
        &[],
        &["iperf3", "-c", LNX_IP, "-p", "5201", "-t", "3", "-J"],
    );
    let o = tb.run_tas(&bin("tasctl"), &strs(&args), Duration::from_secs(30));
    assert_ok(&o, "iperf3 -c under tasctl run");
    let (intervals, max) = iperf_cwnd(&stdout(&o));
    println!("iperf3 under tasctl run: (snd_cwnd bytes, rtt us) per interval {intervals:?}, max_snd_cwnd {max}");
    assert!(intervals.len() >= 3, "{intervals:?}");
    assert!(
        intervals.iter().all(|&(cwnd, rtt)| cwnd > 0 && rtt > 0),
        "an interval without Cwnd or RTT: {intervals:?}"
    );
    assert!(max > 0);
    assert!(
        tb.tasd_counter("slowpath.connected") > connected,
        "iperf3 did not connect through TAS"
    );
}

#[test]
fn tcp_info_fields_as_linux_fills_them() {
    ensure_packages();
    shim();
    let prog = c_program("tcpinfo");
    let mut tb = Testbed::new("ncti", backend());
    tb.spawn_lnx(&prog, &["sink", "7100"], Some("listening"));
    let args = run_args(
        &tb,
        &[],
        &[prog.to_str().unwrap(), "send", LNX_IP, "7100", "4000000"],
    );
    let o = tb.run_tas(&bin("tasctl"), &strs(&args), Duration::from_secs(30));
    assert_ok(&o, "tas-tcpinfo send under tasctl run");
    let out = stdout(&o);
    println!("{}", out.replace('\n', " "));
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in:\n{out}"))
    };
    // States: LISTEN, ESTABLISHED.
    assert_eq!((field("listen_state"), field("state")), (10, 1), "{out}");
    // The Linux peer offers timestamps, SACK and window scaling: all
    // negotiated (TCPI_OPT_TIMESTAMPS | SACK | WSCALE), both shifts set.
    assert_eq!(field("options") & 7, 7, "{out}");
    assert!(field("snd_wscale") > 0 && field("rcv_wscale") > 0, "{out}");
    // MSS as Linux reports it on a 1500-byte link with timestamps.
    let mss = field("snd_mss");
    assert_eq!(
        (mss, field("rcv_mss"), field("advmss"), field("pmtu")),
        (1448, 1448, 1460, 1500),
        "{out}"
    );
    // RTT and its variation in µs, the window in segments.
    let rtt = field("rtt");
    assert!(rtt > 0 && rtt < 1_000_000, "rtt {rtt}: {out}");
    assert!(field("rttvar") > 0, "{out}");
    let cwnd = field("snd_cwnd");
    assert!((1..100_000).contains(&cwnd), "snd_cwnd {cwnd}: {out}");
    assert!(field("rto") >= 20_000, "{out}");
    assert!(field("rcv_space") > 0 && field("snd_wnd") > 0, "{out}");
    // Everything acknowledged (bytes_acked counts the SYN, as Linux's).
    assert_eq!(
        (
            field("unacked"),
            field("notsent_bytes"),
            field("bytes_acked")
        ),
        (0, 0, 4_000_001),
        "{out}"
    );
    assert!(field("total_retrans") < 4_000_000 / mss, "{out}");
    // A short buffer gets a short copy (Linux copies min(len, size)).
    assert!(out.contains("short_len=8 short_state=1"), "{out}");
}

#[test]
fn install_sh_lays_out_a_prefix_that_tasctl_run_uses() {
    shim();
    let prefix = std::env::temp_dir().join(format!("tas-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let install = |args: &[&str]| {
        let o = Command::new(repo_root().join("tools/install.sh"))
            .args(args)
            .env("CARGO_TARGET_DIR", bin_dir().parent().expect("target dir"))
            .env_remove("DESTDIR")
            .output()
            .expect("run tools/install.sh");
        assert_ok(&o, &format!("tools/install.sh {args:?}"));
        o
    };
    let p = prefix.to_str().unwrap();
    install(&["--prefix", p, "--no-build"]);
    for f in [
        "bin/tasd",
        "bin/tasctl",
        "lib/libtas_preload.so",
        "lib/systemd/system/tasd.service",
        "share/tas/tasd.default",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/tasd.service")).unwrap();
    assert!(
        unit.contains(&format!("\nExecStart={p}/bin/tasd $TASD_ARGS\n"))
            && unit.contains("\nEnvironmentFile=/etc/default/tasd\n"),
        "{unit}"
    );
    let default = std::fs::read_to_string(prefix.join("share/tas/tasd.default")).unwrap();
    assert!(default.contains("\nTASD_ARGS=\""), "{default}");
    // The installed tasctl finds the shim in PREFIX/lib: without a daemon
    // it stops at the daemon check (3), not at the shim (4).
    let o = Command::new(prefix.join("bin/tasctl"))
        .args(["--socket", "/nonexistent/tasd.sock", "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    install(&["--prefix", p, "--uninstall"]);
    for f in ["bin/tasd", "bin/tasctl", "lib/libtas_preload.so"] {
        assert!(!prefix.join(f).exists(), "{f} left behind");
    }
    let _ = std::fs::remove_dir_all(&prefix);
}
