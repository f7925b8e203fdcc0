//! System-test harness: a pair of test hosts in network namespaces (TAS on
//! one side, the Linux kernel stack on the other), `tasd` started on the TAS
//! side, and helpers to run programs on either side.
//!
//! Everything a [`Testbed`] starts is killed and its namespaces are removed
//! when it is dropped, also when the test panics, and in a benchmark that
//! called [`clean_up_on_interrupt`], also when SIGINT or SIGTERM ends it.
//! Only 198.18.0.0/15 addresses are used. Tests need root; without it they
//! fail with that reason.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod impair;

pub const TAS_IP: &str = "198.18.0.1";
pub const LNX_IP: &str = "198.18.0.2";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The test hosts of every live [`Testbed`] of this process (name and
/// temporary directory), for [`clean_up_on_interrupt`].
static LIVE: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(String, PathBuf)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipe [`clean_up_on_interrupt`]'s signal handler writes the signal's
/// number to (-1 until it is made).
static INTERRUPTED: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_interrupt_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; `b` is a live local and the
    // fd a pipe this process keeps open until it exits.
    unsafe {
        libc::write(
            INTERRUPTED.load(Ordering::SeqCst),
            (&b as *const u8).cast(),
            1,
        )
    };
}

/// Makes SIGINT and SIGTERM remove this process's test hosts (their
/// namespaces and every process in them, `tools/testhosts.sh down`) and
/// temporary directories before the process exits with 128 + the signal,
/// as a shell reports a death by that signal. Without it a benchmark ended
/// by Ctrl-C or `kill` leaves its namespaces until the next run's sweep
/// (`remove_stale_hosts`).
///
/// The handler only writes the signal's number to a pipe; a thread of its
/// own reads it and cleans up as ordinary code. (Not a blocked signal and
/// `sigwait`: a blocked mask is inherited by every program started, which
/// then could not be stopped with SIGTERM.)
pub fn clean_up_on_interrupt() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    INTERRUPTED.store(fds[1], Ordering::SeqCst);
    let read_end = fds[0];
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let mut b = 0u8;
            // SAFETY: reads one byte into a live local from the pipe's
            // read end, which nothing else uses.
            while unsafe { libc::read(read_end, (&mut b as *mut u8).cast(), 1) } != 1 {}
            let sig = libc::c_int::from(b);
            let beds = std::mem::take(&mut *live());
            for (name, dir) in &beds {
                remove_host(name, Some(dir));
            }
            let names: Vec<&str> = beds.iter().map(|(n, _)| n.as_str()).collect();
            eprintln!(
                "interrupted (signal {sig}): removed test hosts [{}]",
                names.join(", ")
            );
            std::process::exit(128 + sig);
        })
        .expect("spawn the interrupt thread");
    // SAFETY: the handler loads an atomic and calls write(2), both
    // async-signal-safe; the pipe it writes to exists from here on.
    unsafe { tas_testkit::on_interrupt(on_interrupt_signal) };
}

/// Directory holding the workspace's built binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>  ->  target/<profile>
    let dir = exe.parent().expect("exe dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary or example, failing clearly when not built.
pub fn bin(name: &str) -> PathBuf {
    let d = bin_dir();
    for p in [d.join(name), d.join("examples").join(name)] {
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not built in {}: run `cargo build --workspace --bins --examples` with the same profile first", d.display());
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Fails the test loudly unless we are root (namespaces need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("system tests need root (network namespaces, veth, AF_XDP); run them as root");
    }
}

/// Which NIC backend tasd uses.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    AfXdp,
    AfPacket,
    /// DPDK's net_af_xdp on the veth (tasd built with `--features dpdk`).
    Dpdk,
}

impl Backend {
    /// The backend's name on tasd's and the examples' `--nic`.
    pub fn arg(self) -> &'static str {
        match self {
            Backend::AfXdp => "af_xdp",
            Backend::AfPacket => "af_packet",
            Backend::Dpdk => "dpdk",
        }
    }

    /// The backend named by `TAS_TEST_NIC` (af_xdp, af_packet, dpdk;
    /// default af_xdp). An unknown name fails the test loudly.
    pub fn from_env() -> Backend {
        match std::env::var("TAS_TEST_NIC").as_deref() {
            Err(_) | Ok("") | Ok("af_xdp") => Backend::AfXdp,
            Ok("af_packet") => Backend::AfPacket,
            Ok("dpdk") => Backend::Dpdk,
            Ok(other) => panic!("TAS_TEST_NIC={other}: use af_xdp, af_packet or dpdk"),
        }
    }
}

pub struct Testbed {
    pub name: String,
    pub tas_ns: String,
    pub lnx_ns: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    tasd: Option<Child>,
    tasd_log: PathBuf,
    children: Vec<Child>,
}

/// The test host and the pid of the test process that made it, for a
/// namespace named by [`Testbed`]: TAG "p" PID "x" SEQ "-" SIDE (the "p"
/// keeps a tag that ends in a digit, "echo1", from running into the pid).
fn test_host_of(ns: &str) -> Option<(&str, &str)> {
    let (host, side) = ns.rsplit_once('-')?;
    let (head, seq) = host.rsplit_once('x')?;
    let (tag, pid) = head.rsplit_once('p')?;
    let number = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    (["tas", "lnx", "brg"].contains(&side) && number(seq) && number(pid) && !tag.is_empty())
        .then_some((host, pid))
}

/// Removes the test hosts of test processes that no longer run (one
/// killed outright never ran its `Drop`): namespaces named
/// `TAGpPIDxSEQ-{tas,lnx,brg}` whose PID is gone and that hold no process.
fn remove_stale_hosts() {
    let mut stale: Vec<String> = Vec::new();
    for (ns, host, pid) in test_namespaces() {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let busy = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(true);
        if !alive && !busy && !stale.contains(&host) {
            stale.push(host);
        }
    }
    for host in stale {
        remove_host(&host, None);
    }
}

/// Every namespace of a test host ([`test_host_of`]), with its host and
/// the pid of the process that made it; none when `ip` cannot list them.
fn test_namespaces() -> Vec<(String, String, String)> {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| {
            let (host, pid) = test_host_of(ns)?;
            Some((ns.to_string(), host.to_string(), pid.to_string()))
        })
        .collect()
}

/// The namespaces of the test hosts that process `pid` made.
pub fn namespaces_of(pid: u32) -> Vec<String> {
    let pid = pid.to_string();
    test_namespaces()
        .into_iter()
        .filter(|(_, _, p)| *p == pid)
        .map(|(ns, _, _)| ns)
        .collect()
}

/// Removes test host `name` (its namespaces and every process in them)
/// and, if given, its temporary directory.
fn remove_host(name: &str, dir: Option<&Path>) {
    let _ = Command::new(repo_root().join("tools/testhosts.sh"))
        .args(["down", name])
        .output();
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

impl Testbed {
    /// Creates the test hosts (no tasd yet).
    pub fn hosts(tag: &str) -> Testbed {
        Self::hosts_with(tag, "up", None)
    }

    /// Test hosts whose veth pair has `queues` RX/TX queues (4 otherwise),
    /// with tasd started on the TAS side.
    pub fn with_queues(tag: &str, queues: u32, backend: Backend, extra: &[&str]) -> Testbed {
        let mut tb = Self::hosts_with(tag, "up", Some(queues));
        tb.start_tasd(backend, extra);
        tb
    }

    /// Creates the test hosts with `tools/testhosts.sh UP NAME` (`up`, or
    /// `bridge-up` for the three-namespace topology of [`impair`]).
    fn hosts_with(tag: &str, up: &str, queues: Option<u32>) -> Testbed {
        require_root();
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_stale_hosts);
        let name = format!(
            "{tag}p{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("tas-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tb = Testbed {
            tas_ns: format!("{name}-tas"),
            lnx_ns: format!("{name}-lnx"),
            socket: dir.join("tasd.sock"),
            tasd_log: dir.join("tasd.log"),
            dir,
            name,
            tasd: None,
            children: Vec::new(),
        };
        let mut cmd = Command::new(repo_root().join("tools/testhosts.sh"));
        cmd.args([up, &tb.name]);
        if let Some(q) = queues {
            cmd.env("TESTHOSTS_QUEUES", q.to_string());
        }
        // Registered before `up` runs, and held through it: an interrupt
        // meanwhile waits for it and then removes what it made.
        let mut beds = live();
        beds.push((tb.name.clone(), tb.dir.clone()));
        let out = cmd.output().expect("run tools/testhosts.sh");
        drop(beds);
        assert!(
            out.status.success(),
            "testhosts {up} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tb
    }

    /// Creates the test hosts and starts tasd on the TAS side.
    pub fn new(tag: &str, backend: Backend) -> Testbed {
        Self::with_args(tag, backend, &[])
    }

    pub fn with_args(tag: &str, backend: Backend, extra: &[&str]) -> Testbed {
        let mut tb = Self::hosts(tag);
        tb.start_tasd(backend, extra);
        tb
    }

    pub fn start_tasd(&mut self, backend: Backend, extra: &[&str]) {
        let log = std::fs::File::create(&self.tasd_log).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.tas_ns])
            .arg(bin("tasd"))
            .args([
                "--ip",
                &format!("{TAS_IP}/24"),
                "--iface",
                "veth-tas",
                "--nic",
                backend.arg(),
                "--socket",
            ])
            .arg(&self.socket)
            // TAS_TEST_TASD_ARGS="--cores 2-2" (say): more options for every
            // tasd the tests start (a test's own options come after them).
            .args(
                std::env::var("TAS_TEST_TASD_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .args(extra)
            // TAS_TEST_LOG=debug (or a filter) for more of tasd's log.
            .env(
                "TAS_LOG",
                std::env::var("TAS_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn tasd");
        let stdout = child.stdout.take().expect("tasd stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.tasd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("ready") => break,
                Ok(_) => {}
                Err(_) => {
                    if let Some(st) = self.tasd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        panic!("tasd exited ({st}) before ready:\n{}", self.tasd_log());
                    }
                    if Instant::now() > deadline {
                        panic!("tasd not ready after 15 s:\n{}", self.tasd_log());
                    }
                }
            }
        }
    }

    pub fn tasd_log(&self) -> String {
        std::fs::read_to_string(&self.tasd_log).unwrap_or_default()
    }

    /// Whether tasd is still running.
    pub fn tasd_alive(&mut self) -> bool {
        matches!(self.tasd.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops tasd with SIGTERM and returns its exit status success.
    pub fn stop_tasd(&mut self) -> bool {
        let Some(mut c) = self.tasd.take() else {
            return false;
        };
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    fn cmd(&self, ns: &str, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("TAS_SOCKET", &self.socket);
        c
    }

    /// Runs a program in the TAS namespace to completion (with a time limit).
    pub fn run_tas(&mut self, program: &Path, args: &[&str], limit: Duration) -> Output {
        let c = self.cmd(&self.tas_ns.clone(), program, args);
        self.run(c, limit)
    }

    /// Runs a program in the Linux namespace to completion (with a time limit).
    pub fn run_lnx(&mut self, program: &Path, args: &[&str], limit: Duration) -> Output {
        let c = self.cmd(&self.lnx_ns.clone(), program, args);
        self.run(c, limit)
    }

    fn run(&mut self, mut c: Command, limit: Duration) -> Output {
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let watchdog = std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < limit {
                if d2.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: killing our own child that overran its time limit.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        });
        let out = child.wait_with_output().expect("wait");
        done.store(true, Ordering::SeqCst);
        let killed = watchdog.join().unwrap_or(false);
        if killed {
            eprintln!(
                "command killed after {limit:?}: {:?}",
                c.get_args().collect::<Vec<_>>()
            );
        }
        out
    }

    /// Starts a program in the background in the TAS namespace; waits until
    /// it prints a line containing `ready_word` (if given).
    pub fn spawn_tas(&mut self, program: &Path, args: &[&str], ready_word: Option<&str>) -> u32 {
        let c = self.cmd(&self.tas_ns.clone(), program, args);
        self.spawn(c, ready_word)
    }

    pub fn spawn_lnx(&mut self, program: &Path, args: &[&str], ready_word: Option<&str>) -> u32 {
        let c = self.cmd(&self.lnx_ns.clone(), program, args);
        self.spawn(c, ready_word)
    }

    fn spawn(&mut self, c: Command, ready_word: Option<&str>) -> u32 {
        let (pid, rx) = self.spawn_lines(c);
        if let Some(w) = ready_word {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(l) if l.contains(w) => break,
                    Ok(_) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        panic!("background program exited before '{w}'")
                    }
                    Err(_) if Instant::now() > deadline => {
                        panic!("background program did not print '{w}' within 10 s")
                    }
                    Err(_) => {}
                }
            }
        }
        pid
    }

    /// Waits for a background program to exit; returns its success.
    pub fn wait_child(&mut self, pid: u32, limit: Duration) -> Option<bool> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.children[i].try_wait() {
                return Some(st.success());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL to a background program.
    pub fn kill(&mut self, pid: u32) {
        if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut c) = self.tasd.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- tasd log ({}) ---\n{}", self.name, self.tasd_log());
        }
        remove_host(&self.name, Some(&self.dir));
        live().retain(|(n, _)| *n != self.name);
    }
}

/// redis-server's arguments for a test or benchmark server on `ip:port`:
/// no persistence, no protected mode, in the foreground.
pub fn redis_server_args<'a>(ip: &'a str, port: &'a str) -> [&'a str; 12] {
    [
        "--port",
        port,
        "--bind",
        ip,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]
}

/// stdout of a finished program as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a program succeeded, showing its output otherwise.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Testbed {
    /// Process id of the running tasd (`ip netns exec` execs it in place).
    pub fn tasd_pid(&self) -> Option<u32> {
        self.tasd.as_ref().map(|c| c.id())
    }

    /// Runs `tasctl ARGS` in the TAS namespace against this testbed's tasd.
    pub fn tasctl(&mut self, args: &[&str]) -> Output {
        self.run_tas(&bin("tasctl"), args, Duration::from_secs(20))
    }

    /// One of tasd's counters (`tasctl stats NAME`), 0 when absent.
    pub fn tasd_counter(&mut self, name: &str) -> u64 {
        let o = self.tasctl(&["stats", name]);
        assert_ok(&o, "tasctl stats");
        stdout(&o)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
            .next()
            .unwrap_or(0)
    }
}

/// The arguments of `sockperf ping-pong` against `sockperf sr --tcp -i
/// TAS_IP -p 11111`: 64-byte messages for `secs` seconds.
pub fn sockperf_ping_pong_args(secs: &'static str) -> [&'static str; 10] {
    sockperf_args("ping-pong", secs)
}

/// The arguments of a `sockperf` client in `mode` (`ping-pong`,
/// `under-load`, ...) against `sockperf sr --tcp -i TAS_IP -p 11111`:
/// 64-byte messages for `secs` seconds.
pub fn sockperf_args(mode: &'static str, secs: &'static str) -> [&'static str; 10] {
    [
        mode, "--tcp", "-i", TAS_IP, "-p", "11111", "-m", "64", "-t", secs,
    ]
}

/// User + system CPU time of a process so far, in seconds (all its threads;
/// utime and stime of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// utime + stime, in seconds, of a `/proc/.../stat` file (a process's or,
/// under `/proc/PID/task/TID/stat`, one thread's: the layout is the same).
pub fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at state.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz.max(1.0))
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `peer echo-trace` stamps with;
/// the same in every network namespace).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Testbed {
    /// Starts a program in the background in the TAS namespace and returns
    /// its pid and every line it prints (as they come).
    pub fn spawn_tas_lines(
        &mut self,
        program: &Path,
        args: &[&str],
    ) -> (u32, std::sync::mpsc::Receiver<String>) {
        let c = self.cmd(&self.tas_ns.clone(), program, args);
        self.spawn_lines(c)
    }

    /// As [`Testbed::spawn_tas_lines`], in the Linux namespace.
    pub fn spawn_lnx_lines(
        &mut self,
        program: &Path,
        args: &[&str],
    ) -> (u32, std::sync::mpsc::Receiver<String>) {
        let c = self.cmd(&self.lnx_ns.clone(), program, args);
        self.spawn_lines(c)
    }

    fn spawn_lines(&mut self, mut c: Command) -> (u32, std::sync::mpsc::Receiver<String>) {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.children.push(child);
        (pid, rx)
    }

    /// Sends `sig` to tasd (e.g. SIGKILL to crash it).
    pub fn signal_tasd(&self, sig: i32) {
        if let Some(c) = &self.tasd {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}

/// Waits up to `limit` for a line of `rx` containing `word`; returns it, or
/// None (with the last line seen in `last`).
pub fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    word: &str,
    limit: Duration,
    last: &mut String,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(l) if l.contains(word) => return Some(l),
            Ok(l) => *last = l,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(_) => {}
        }
    }
    None
}

/// The state letter of a process (`/proc/PID/stat`): `R`, `S`, `Z`, ...;
/// None when it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Makes sure every `(check, Debian package)` pair holds, installing the
/// missing packages with one apt-get call; panics (never skips) when they
/// cannot be installed. `check` is a shell command that succeeds when what
/// a test uses is there (`command -v curl`, a Python import, ...): the
/// check is what the test runs, never a package name.
pub fn ensure_packages(want: &[(&str, &str)]) {
    let ok = |check: &str| {
        Command::new("sh")
            .args(["-c", &format!("{check} >/dev/null 2>&1")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut missing: Vec<&str> = want
        .iter()
        .filter(|(c, _)| !ok(c))
        .map(|(_, p)| *p)
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?} with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let _ = apt(&["update", "-qq"]);
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter());
    let o = apt(&args).expect("run apt-get");
    assert!(
        o.status.success(),
        "cannot install {missing:?} with apt-get (these tests need them):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let still: Vec<&str> = want
        .iter()
        .filter(|(c, _)| !ok(c))
        .map(|(c, _)| *c)
        .collect();
    assert!(still.is_empty(), "still missing after apt-get: {still:?}");
}

/// `&str`s of owned strings (argument lists built with `format!`).
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

/// The SHA-256 of file `p`, in hex (`sha256sum`).
pub fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(o.status.success(), "sha256sum {}", p.display());
    stdout(&o)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `libtas_preload.so` next to the test programs and `tasctl` (where
/// `tasctl run` looks first). `cargo build --bins --examples` does not
/// build a cdylib, so the first test that needs it builds (or refreshes) it
/// once per test process with the same cargo, profile and target
/// directory.
pub fn shim_lib() -> PathBuf {
    static SO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SO.get_or_init(|| {
        let dir = bin_dir();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("release")
            .to_string();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "-q", "-p", "tas-preload", "--target-dir"])
            .arg(dir.parent().expect("target dir"))
            .current_dir(repo_root());
        match profile.as_str() {
            "release" => {
                cmd.arg("--release");
            }
            "debug" => {}
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let o = cmd.output().expect("run cargo to build libtas_preload.so");
        assert!(
            o.status.success(),
            "cargo build -p tas-preload failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let p = dir.join("libtas_preload.so");
        assert!(p.exists(), "{} was not built", p.display());
        p
    })
    .clone()
}

/// Compiles `tests/c/NAME.c` once into `tas-NAME` next to the other test
/// programs (nothing left behind in /tmp).
pub fn c_program(name: &str) -> PathBuf {
    static BINS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut bins = BINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = bins.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let src = repo_root().join(format!("tests/c/{name}.c"));
    let out = bin_dir().join(format!("tas-{name}"));
    let o = Command::new("cc")
        .args(["-O2", "-D_FORTIFY_SOURCE=2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc (gcc must be installed)");
    assert!(
        o.status.success(),
        "cc {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    bins.push((name.to_string(), out.clone()));
    out
}

/// The `strace -c` summary in `out` once strace wrote it (when the traced
/// program has exited; 20 s at most), and the file removed.
pub fn strace_summary(out: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = std::fs::read_to_string(out).unwrap_or_default();
        if t.contains("total") {
            let _ = std::fs::remove_file(out);
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no strace summary in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Calls per system call name from an `strace -c` summary.
pub fn strace_counts(summary: &str) -> Vec<(String, u64)> {
    summary
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[0].parse::<f64>().is_err() {
                return None;
            }
            Some((f.last()?.to_string(), f[3].parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_host_of;

    #[test]
    fn test_host_names_parse_with_tags_that_end_in_digits() {
        assert_eq!(
            test_host_of("aack1p16185x0-lnx"),
            Some(("aack1p16185x0", "16185"))
        );
        assert_eq!(test_host_of("svpgp2x13-brg"), Some(("svpgp2x13", "2")));
        // The old format (no "p") and other namespaces are left alone.
        assert_eq!(test_host_of("aack116185x0-lnx"), None);
        assert_eq!(test_host_of("mynet-tas"), None);
        assert_eq!(test_host_of("p1x1-tas"), None);
        assert_eq!(test_host_of("ap1x1-eth"), None);
    }
}
