//! The servers people deploy, unmodified and in their default process
//! models, under `tasctl run` (issue 14): each is driven from the Linux
//! host, the data is checked end to end, and tasd's counters (and `tasctl
//! flows` where a connection lives long enough) prove that TAS carried the
//! connections — a program that silently fell back to the kernel fails.
//!
//! * nginx, master + 2 worker processes: `ab -n 5000 -c 20` without
//!   keep-alive, 0 failed, both workers served requests (`$pid` logged);
//!   the same on a dual-stack `listen [::]:PORT ipv6only=off`, whose
//!   loopback clients (`[::1]`, `127.0.0.1`) the kernel serves;
//! * postgresql 15 (postmaster forks a backend per connection): `pgbench
//!   -i`, then `pgbench -c 4 -T 10`, 0 failed transactions;
//! * OpenSSH sshd in its default mode (fork, re-exec with the connection
//!   on fd 0/1, privilege separation): `ssh … cat` of a 10 MB file;
//! * haproxy `-W` (master-worker) proxying 20 MB to a Linux backend, and
//!   its seamless reload (`-x`: the listener passed with `SCM_RIGHTS`);
//! * `socat TCP-LISTEN,fork` serving 20 sequential clients, no child left;
//! * iperf3's client: no interval without bytes (no stall at the start);
//! * `tests/c/stall.c`: a wait with an always-ready fd still sees news from
//!   the fast path within milliseconds (`select`, `poll`, `epoll_wait`,
//!   zero timeouts);
//! * `TAS_PRELOAD_DEBUG=1` says why a call failed, one line each.
//!
//! (node.js under `ab` is `preload.rs`'s `nodejs_http_server_under_shim_with_ab`.)
//!
//! Each test installs its Debian package when missing and fails — never
//! skips — when it cannot. Every process a test starts is killed when it
//! ends (all processes of the test's namespaces, forked workers included).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tas_system_tests::*;

fn backend() -> Backend {
    Backend::from_env()
}

fn shim() -> PathBuf {
    shim_lib()
}

/// A testbed whose attach socket every user may use (postgres, nginx's
/// workers, sshd's privilege-separated child run as other users).
fn testbed(tag: &str) -> Testbed {
    shim();
    Testbed::with_args(tag, backend(), &["--socket-mode", "0666"])
}

/// Kills every process of the testbed's namespaces except tasd (forked
/// workers, daemons' children) when dropped: declare it after the testbed.
struct Reaper {
    nss: [String; 2],
    keep: Option<u32>,
}

impl Reaper {
    fn new(tb: &Testbed) -> Reaper {
        Reaper {
            nss: [tb.tas_ns.clone(), tb.lnx_ns.clone()],
            keep: tb.tasd_pid(),
        }
    }

    /// Processes in the namespaces (tasd excluded).
    fn pids(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for ns in &self.nss {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                v.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                        .filter(|p| Some(*p as u32) != self.keep),
                );
            }
        }
        v
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                // SAFETY: kill takes no pointers; the pids are processes of
                // this test's own namespaces.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `tasctl --socket S run -- CMD...` as arguments for tasctl.
fn run_args(tb: &Testbed, cmd: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--socket".to_string(),
        tb.socket.display().to_string(),
        "run".to_string(),
        "--".to_string(),
    ];
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// A file of `bytes` random bytes in `dir`, and its sha256.
fn random_file(dir: &Path, name: &str, bytes: usize) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).expect("dir");
    let f = dir.join(name);
    let o = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/urandom"])
        .output()
        .expect("head");
    assert!(o.status.success());
    std::fs::write(&f, &o.stdout).expect("write file");
    (f.clone(), sha256(&f))
}

/// Runs `sh -c SCRIPT` on the Linux host.
fn lnx_sh(tb: &mut Testbed, script: &str, limit: Duration) -> std::process::Output {
    tb.run_lnx(Path::new("sh"), &["-c", script], limit)
}

/// Retries `sh -c SCRIPT` on the Linux host until it succeeds (a server
/// coming up), at most `limit`; panics with `what`, the last output and
/// the server's log file `log` (if any).
fn until_ok_log(tb: &mut Testbed, script: &str, limit: Duration, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + limit;
    loop {
        let o = lnx_sh(tb, script, Duration::from_secs(5));
        if o.status.success() {
            return;
        }
        if Instant::now() >= deadline {
            let log = log
                .map(|p| {
                    let t = std::fs::read_to_string(p).unwrap_or_default();
                    let tail: Vec<&str> = t.lines().rev().take(15).collect();
                    format!(
                        "\n--- {} (last lines) ---\n{}",
                        p.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .unwrap_or_default();
            panic!(
                "{what} within {limit:?}:\n{}{}{log}\n--- tasd log ---\n{}",
                stdout(&o),
                stderr(&o),
                tb.tasd_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn until_ok(tb: &mut Testbed, script: &str, limit: Duration, what: &str) {
    until_ok_log(tb, script, limit, what, None)
}

/// tasd's accepted / connected counters.
fn carried(tb: &mut Testbed) -> (u64, u64) {
    (
        tb.tasd_counter("slowpath.accepted"),
        tb.tasd_counter("slowpath.connected"),
    )
}

/// `tasctl flows --json`: (local, remote, state) of every flow.
fn flows(tb: &mut Testbed) -> Vec<(String, String, String)> {
    let o = tb.tasctl(&["flows", "--json"]);
    assert_ok(&o, "tasctl flows --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("tasctl flows --json");
    v.as_array()
        .expect("an array of flows")
        .iter()
        .filter(|f| !f["id"].is_null())
        .map(|f| {
            (
                f["local"].as_str().unwrap_or_default().to_string(),
                f["remote"].as_str().unwrap_or_default().to_string(),
                f["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The `ab` report's (complete, failed) requests.
fn ab_counts(out: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| -> Option<u64> {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
    };
    (field("Complete requests:"), field("Failed requests:"))
}

fn chown(p: &Path, user: &str) {
    let o = Command::new("chown")
        .args(["-R", &format!("{user}:{user}")])
        .arg(p)
        .output()
        .expect("chown");
    assert!(o.status.success(), "chown {user} {}", p.display());
}

// ---------------------------------------------------------------------------

/// nginx as deployed: a master that binds and forks 2 worker processes,
/// which accept on the inherited listener. 5000 requests without
/// keep-alive from `ab` on the Linux host: none fails, both workers serve.
#[test]
fn nginx_master_and_two_workers_serve_ab_without_keepalive() {
    nginx_two_workers("svngx", &format!("{TAS_IP}:8080"), 8080);
}

/// The same with nginx's dual-stack listen (`listen [::]:PORT
/// ipv6only=off;`, issue 14 item 5): an `AF_INET6` listener on `::` whose
/// IPv4 clients of TAS's address come through TAS, and a client of `[::1]`
/// on the TAS host through the kernel. (nginx's plain `listen [::]:PORT;`
/// sets `IPV6_V6ONLY`: that socket is the kernel's, IPv4 clients are
/// refused, as on Linux.)
#[test]
fn nginx_dual_stack_listener_two_workers_serve_ab() {
    nginx_two_workers("svng6", "[::]:8081 ipv6only=off", 8081);
}

fn nginx_two_workers(tag: &str, listen: &str, port: u16) {
    ensure_packages(&[
        ("test -x /usr/sbin/nginx", "nginx-light"),
        ("command -v ab", "apache2-utils"),
    ]);
    let mut tb = testbed(tag);
    let _reaper = Reaper::new(&tb);
    let d = tb.dir.display().to_string();
    let root = tb.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from nginx workers on tas\n").unwrap();
    // Debian's nginx.conf with the listen address, the paths and a log
    // format naming the worker ($pid) changed.
    let conf = tb.dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 768; }}\n\
             http {{\n  sendfile on;\n  tcp_nopush on;\n  types_hash_max_size 2048;\n\
             log_format w '$pid $status';\n  access_log {d}/access.log w;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen {listen}; root {}; }}\n}}\n",
            root.display()
        ),
    )
    .unwrap();
    let nginx = if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let args = run_args(&tb, &[nginx, "-c", conf.to_str().unwrap(), "-p", &d]);
    tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    let url = format!("http://{TAS_IP}:{port}/index.html");
    let elog = tb.dir.join("error.log");
    until_ok_log(
        &mut tb,
        &format!("curl -s -f --max-time 2 -o /dev/null {url}"),
        Duration::from_secs(15),
        "nginx did not answer",
        Some(&elog),
    );
    let (acc, _) = carried(&mut tb);
    // The readiness probes above are in the access log too.
    let before = std::fs::read_to_string(tb.dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .count() as u64;
    let o = tb.run_lnx(
        Path::new("ab"),
        &["-q", "-n", "5000", "-c", "20", "-s", "10", &url],
        Duration::from_secs(60),
    );
    let err_log = std::fs::read_to_string(tb.dir.join("error.log")).unwrap_or_default();
    let tail: String = err_log
        .lines()
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .join("\n");
    if !o.status.success() {
        let diag = stall_report(&mut tb, "nginx");
        panic!(
            "ab against nginx failed ({}):\n{}{}\nerror.log ends with:\n{tail}\n{diag}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
    }
    let out = stdout(&o);
    assert_eq!(
        ab_counts(&out),
        (Some(5000), Some(0)),
        "{out}\nerror.log:\n{tail}"
    );
    let n = tb.tasd_counter("slowpath.accepted") - acc;
    assert!(n >= 5000, "TAS accepted {n} of 5000 connections");
    // Requests per worker.
    let log = std::fs::read_to_string(tb.dir.join("access.log")).expect("access.log");
    let mut per: std::collections::BTreeMap<&str, u64> = Default::default();
    for l in log.lines() {
        let mut w = l.split_whitespace();
        let (pid, status) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
        assert_eq!(status, "200", "{l}");
        *per.entry(pid).or_default() += 1;
    }
    println!(
        "nginx with 2 workers ({listen}): 5000 requests without keep-alive, per worker pid {per:?}"
    );
    assert_eq!(per.values().sum::<u64>(), 5000 + before, "{per:?}");
    assert_eq!(
        per.len(),
        2,
        "requests were not served by two workers: {per:?}"
    );
    if listen.starts_with('[') {
        // The kernel's half of the dual-stack listener, in the workers.
        let acc = tb.tasd_counter("slowpath.accepted");
        for u in [
            format!("http://[::1]:{port}/index.html"),
            format!("http://127.0.0.1:{port}/index.html"),
        ] {
            let o = tb.run_tas(
                Path::new("curl"),
                &["-s", "-f", "--max-time", "5", &u],
                Duration::from_secs(10),
            );
            assert_ok(&o, &format!("curl {u} on the TAS host"));
            assert_eq!(stdout(&o), "hello from nginx workers on tas\n", "{u}");
        }
        assert_eq!(
            tb.tasd_counter("slowpath.accepted"),
            acc,
            "loopback is the kernel's"
        );
    }
}

/// What tasd holds and where every process whose command line starts with
/// `prog` waits (each thread's system call and wait channel, its fds): for
/// the failure message of a server that stopped answering.
fn stall_report(tb: &mut Testbed, prog: &str) -> String {
    let mut diag = String::new();
    for a in [&["listeners"][..], &["flows"][..], &["status"][..]] {
        diag.push_str(&stdout(&tb.tasctl(a)));
    }
    // Every counter that moved (what reached tasd, what it did with it).
    for l in stdout(&tb.tasctl(&["stats"])).lines() {
        if l.split_whitespace().last().is_some_and(|v| v != "0") {
            diag.push_str(l);
            diag.push('\n');
        }
    }
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return diag;
    };
    for e in rd.flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        let cmd = read(format!("/proc/{pid}/cmdline"));
        if !cmd.split('\0').next().unwrap_or("").ends_with(prog) {
            continue;
        }
        diag.push_str(&format!("pid {pid} {}\n", cmd.replace('\0', " ")));
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let tid = t.file_name().to_string_lossy().to_string();
                let sc = read(format!("/proc/{pid}/task/{tid}/syscall"));
                diag.push_str(&format!(
                    "  task {tid} wchan {} syscall {sc}",
                    read(format!("/proc/{pid}/task/{tid}/wchan")),
                ));
                // futex(2): the mapping the lock word lies in.
                let mut w = sc.split_whitespace();
                if w.next() == Some("202") {
                    let addr = w
                        .next()
                        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                        .unwrap_or(0);
                    for l in read(format!("/proc/{pid}/maps")).lines() {
                        let r = l.split_whitespace().next().unwrap_or("");
                        let (a, b) = r.split_once('-').unwrap_or(("0", "0"));
                        let a = u64::from_str_radix(a, 16).unwrap_or(0);
                        let b = u64::from_str_radix(b, 16).unwrap_or(0);
                        if (a..b).contains(&addr) {
                            diag.push_str(&format!(
                                "    lock word {addr:#x} at +{:#x} in {l}\n",
                                addr - a
                            ));
                        }
                    }
                }
            }
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .map(|f| {
                        let to = std::fs::read_link(f.path()).unwrap_or_default();
                        format!("{}->{}", f.file_name().to_string_lossy(), to.display())
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        diag.push_str(&format!("  fds {fds}\n"));
        // Each thread's stack, where gdb is installed (the test does not
        // need it; the report is only better with it).
        if Path::new("/usr/bin/gdb").exists() {
            if let Ok(o) = Command::new("/usr/bin/gdb")
                .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt 30"])
                .output()
            {
                for l in stdout(&o)
                    .lines()
                    .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
                {
                    diag.push_str(&format!("    {l}\n"));
                }
            }
        }
    }
    diag
}

/// PostgreSQL 15 (the postmaster forks a backend for every connection):
/// `pgbench -i` then `pgbench -c 4 -T 10` from the Linux host, no failed
/// transaction; the 4 clients' connections are TAS flows.
#[test]
fn postgresql_forks_backends_for_pgbench() {
    ensure_packages(&[
        (
            "test -x /usr/lib/postgresql/15/bin/postgres",
            "postgresql-15",
        ),
        (
            "test -x /usr/lib/postgresql/15/bin/pgbench",
            "postgresql-15",
        ),
        ("command -v setpriv", "util-linux"),
    ]);
    let bin15 = Path::new("/usr/lib/postgresql/15/bin");
    let mut tb = testbed("svpg");
    let _reaper = Reaper::new(&tb);
    let data = tb.dir.join("pgdata");
    let sock = tb.dir.join("pgsock");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&sock).unwrap();
    chown(&data, "postgres");
    chown(&sock, "postgres");
    let as_pg = |prog: &Path| -> Vec<String> {
        vec![
            "setpriv".into(),
            "--reuid=postgres".into(),
            "--regid=postgres".into(),
            "--init-groups".into(),
            prog.display().to_string(),
        ]
    };
    // initdb on the kernel (it opens no TCP socket), trust auth for the test.
    let mut init = as_pg(&bin15.join("initdb"));
    init.extend(
        [
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let o = tb.run_tas(
        Path::new(&init[0]),
        &strs(&init[1..]),
        Duration::from_secs(60),
    );
    assert_ok(&o, "initdb");
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all all 0.0.0.0/0 trust\n",
    )
    .unwrap();
    chown(&data, "postgres");
    let mut pg = as_pg(&bin15.join("postgres"));
    pg.extend(
        [
            "-D",
            data.to_str().unwrap(),
            "-c",
            &format!("listen_addresses={TAS_IP}"),
            "-c",
            &format!("unix_socket_directories={}", sock.display()),
            "-p",
            "5432",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut args = run_args(&tb, &[]);
    args.extend(pg);
    tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    let pgb = bin15.join("pgbench");
    let pgb = pgb.to_str().unwrap();
    let (acc, _) = carried(&mut tb);
    until_ok(
        &mut tb,
        &format!("{pgb} -h {TAS_IP} -p 5432 -U postgres -i -q postgres 2>&1"),
        Duration::from_secs(20),
        "pgbench -i did not succeed",
    );
    let (rx, pid) = {
        let (pid, rx) = tb.spawn_lnx_lines(
            Path::new("sh"),
            &[
                "-c",
                &format!(
                    "{pgb} -h {TAS_IP} -p 5432 -U postgres -c 4 -T 10 postgres 2>&1; echo exit=$?"
                ),
            ],
        );
        (rx, pid)
    };
    // While it runs: its 4 connections are established TAS flows.
    std::thread::sleep(Duration::from_secs(3));
    let live = flows(&mut tb);
    let on_pg = live
        .iter()
        .filter(|(l, r, s)| {
            l == &format!("{TAS_IP}:5432") && r.starts_with(LNX_IP) && s == "ESTABLISHED"
        })
        .count();
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.starts_with("exit=");
                out += &l;
                out.push('\n');
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    tb.kill(pid);
    assert!(out.contains("exit=0"), "pgbench -c 4 -T 10 failed:\n{out}");
    let field = |k: &str| -> Option<u64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let done = field("number of transactions actually processed:");
    let failed = field("number of failed transactions:");
    println!(
        "postgresql 15 under tasctl run: pgbench -c 4 -T 10: {done:?} transactions, {failed:?} failed, {on_pg} TAS flows on :5432"
    );
    assert_eq!(failed, Some(0), "{out}");
    assert!(done.unwrap_or(0) > 0, "{out}");
    assert!(
        on_pg >= 4,
        "pgbench's 4 connections are not all TAS flows: {live:?}"
    );
    let n = tb.tasd_counter("slowpath.accepted") - acc;
    assert!(n >= 6, "TAS accepted only {n} connections");
}

/// OpenSSH's sshd in its default mode: the listener process forks for
/// every connection, the child re-executes sshd with the connection on fd
/// 0/1 and splits into a privilege-separated child. `ssh … cat` of a 10 MB
/// file from the Linux host, sha256 checked.
///
/// The pre-authentication child runs under sshd's seccomp sandbox with
/// `RLIMIT_NOFILE` 1 (the shim then waits on the program's fds alone and
/// makes only allowed system calls, `sys::restricted`), and for root the
/// monitor carries on with the connection after that child exits (tasd
/// hands the flow back, `RETURNED`).
#[test]
fn sshd_default_mode_serves_ssh_cat_of_10mb() {
    ensure_packages(&[
        ("test -x /usr/sbin/sshd", "openssh-server"),
        (
            "test -x /usr/bin/ssh && test -x /usr/bin/ssh-keygen",
            "openssh-client",
        ),
    ]);
    let mut tb = testbed("svssh");
    let _reaper = Reaper::new(&tb);
    let d = tb.dir.clone();
    for (k, t) in [("host_key", "ed25519"), ("user_key", "ed25519")] {
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-f"])
            .arg(d.join(k))
            .output()
            .expect("ssh-keygen");
        assert_ok(&o, "ssh-keygen");
    }
    std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
    // sshd needs its privilege separation directory (systemd's
    // RuntimeDirectory makes it).
    let _ = std::fs::create_dir_all("/run/sshd");
    let (file, sum) = random_file(&d, "data.bin", 10 << 20);
    // Debian's defaults, with the test's own keys, address and port, and
    // StrictModes off (the test directory is under the world-writable /tmp).
    let conf = d.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port 2222\nListenAddress {TAS_IP}\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPidFile {}\nKbdInteractiveAuthentication no\nUsePAM yes\n\
             PrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            d.join("host_key").display(),
            d.join("authorized_keys").display(),
            d.join("sshd.pid").display()
        ),
    )
    .unwrap();
    // SSHD_STRACE=FILE runs sshd under `strace -f` (diagnostics: a
    // sandboxed child's failing system call is the last one it made).
    let st = std::env::var("SSHD_STRACE").unwrap_or_default();
    let mut cmd = vec![];
    if !st.is_empty() {
        cmd.extend(["/usr/bin/strace", "-f", "-tt", "-o", st.as_str()]);
    }
    cmd.extend(["/usr/sbin/sshd", "-D", "-e", "-f", conf.to_str().unwrap()]);
    let args = run_args(&tb, &cmd);
    tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    let (acc, _) = carried(&mut tb);
    let ssh = format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o ConnectTimeout=5 -p 2222 root@{TAS_IP}",
        d.join("user_key").display()
    );
    until_ok(
        &mut tb,
        &format!("{ssh} true 2>&1"),
        Duration::from_secs(15),
        "ssh true failed",
    );
    let got = d.join("got.bin");
    let t = Instant::now();
    let o = lnx_sh(
        &mut tb,
        &format!("{ssh} cat {} > {}", file.display(), got.display()),
        Duration::from_secs(60),
    );
    let got_len = std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0);
    assert_ok(
        &o,
        &format!("ssh cat of 10 MB ({got_len} bytes arrived before it ended)"),
    );
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sha256(&got), sum, "the file ssh received differs");
    // A session that lasts: while it runs, it is an established TAS flow
    // on :2222 (`tasctl flows`), and its command's output arrives.
    let (pid, rx) = tb.spawn_lnx_lines(
        Path::new("sh"),
        &[
            "-c",
            &format!("{ssh} -q 'echo started; sleep 4; echo done' 2>&1"),
        ],
    );
    let first = rx.recv_timeout(Duration::from_secs(15));
    assert_eq!(first.as_deref().ok(), Some("started"), "ssh session");
    let live = flows(&mut tb);
    let on_ssh = live
        .iter()
        .filter(|(l, r, st)| {
            l == &format!("{TAS_IP}:2222") && r.starts_with(LNX_IP) && st.contains("ESTAB")
        })
        .count();
    assert!(on_ssh >= 1, "the ssh session is not a TAS flow: {live:?}");
    let last = rx.recv_timeout(Duration::from_secs(15));
    assert_eq!(last.as_deref().ok(), Some("done"), "ssh session");
    let _ = pid;
    let n = tb.tasd_counter("slowpath.accepted") - acc;
    assert!(n >= 3, "TAS accepted {n} of the 3 ssh connections");
    println!(
        "sshd under tasctl run: ssh cat of 10 MB in {secs:.2} s, {n} connections accepted by tasd, the session a TAS flow: {live:?}"
    );
}

/// haproxy in master-worker mode (`-W`, as Debian's unit runs it): the
/// master forks the worker and closes its listener. 20 MB through it from
/// a Linux backend to a Linux client, sha256 checked; both the accepted
/// and the backend connection are TAS's.
#[test]
fn haproxy_master_worker_proxies_20mb() {
    ensure_packages(&[
        ("test -x /usr/sbin/haproxy", "haproxy"),
        ("python3 -c 'import http.server'", "python3"),
        ("command -v curl", "curl"),
    ]);
    let mut tb = testbed("svhap");
    let _reaper = Reaper::new(&tb);
    let www = tb.dir.join("www");
    let (_, sum) = random_file(&www, "big.bin", 20 << 20);
    tb.spawn_lnx(
        Path::new("python3"),
        &[
            "-u",
            "-m",
            "http.server",
            "8091",
            "--bind",
            LNX_IP,
            "--directory",
            www.to_str().unwrap(),
        ],
        Some("Serving HTTP"),
    );
    let conf = tb.dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 256\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
             frontend fe\n  bind {TAS_IP}:8443\n  default_backend be\n\n\
             backend be\n  server s1 {LNX_IP}:8091\n"
        ),
    )
    .unwrap();
    let haproxy = if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let args = run_args(&tb, &[haproxy, "-W", "-f", conf.to_str().unwrap()]);
    tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    let (acc, con) = carried(&mut tb);
    let url = format!("http://{TAS_IP}:8443/big.bin");
    until_ok(
        &mut tb,
        &format!("curl -s -f --max-time 5 -r 0-9 -o /dev/null {url}"),
        Duration::from_secs(15),
        "haproxy did not proxy",
    );
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
            &url,
        ],
        Duration::from_secs(90),
    );
    assert_ok(&o, "curl 20 MB through haproxy");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        sha256(&got),
        sum,
        "the file received through haproxy differs"
    );
    let (acc2, con2) = carried(&mut tb);
    assert!(
        acc2 - acc >= 2 && con2 - con >= 2,
        "TAS accepted {} and opened {} connections (2 each expected)",
        acc2 - acc,
        con2 - con
    );
    println!("haproxy -W under tasctl run: 20 MB in {secs:.2} s");
}

/// haproxy's seamless reload (`-x`): the new process gets the old one's
/// listener over the stats socket (`expose-fd listeners`, `SCM_RIGHTS`)
/// and serves it while the old one (`-sf`) stops. tasd must count the
/// transfer claimed (a new process that bound the port afresh after the
/// old one let go would pass the data checks without it).
#[test]
fn haproxy_reload_with_x_takes_the_listener_over_scm_rights() {
    ensure_packages(&[
        ("test -x /usr/sbin/haproxy", "haproxy"),
        ("python3 -c 'import http.server'", "python3"),
        ("command -v curl", "curl"),
    ]);
    let mut tb = testbed("svhx");
    let _reaper = Reaper::new(&tb);
    let www = tb.dir.join("www");
    let (_, sum) = random_file(&www, "f.bin", 1 << 20);
    tb.spawn_lnx(
        Path::new("python3"),
        &[
            "-u",
            "-m",
            "http.server",
            "8092",
            "--bind",
            LNX_IP,
            "--directory",
            www.to_str().unwrap(),
        ],
        Some("Serving HTTP"),
    );
    let stats = tb.dir.join("haproxy.sock");
    let conf = tb.dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 256\n  stats socket {} mode 600 level admin expose-fd listeners\n\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
             frontend fe\n  bind {TAS_IP}:8444\n  default_backend be\n\n\
             backend be\n  server s1 {LNX_IP}:8092\n",
            stats.display()
        ),
    )
    .unwrap();
    let haproxy = if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let old = tb.spawn_tas(
        &bin("tasctl"),
        &strs(&run_args(&tb, &[haproxy, "-f", conf.to_str().unwrap()])),
        None,
    );
    let url = format!("http://{TAS_IP}:8444/f.bin");
    until_ok(
        &mut tb,
        &format!("curl -s -f --max-time 5 -o /dev/null {url}"),
        Duration::from_secs(15),
        "the first haproxy did not proxy",
    );
    let claimed = tb.tasd_counter("slowpath.xfers_claimed");
    let old_pid = old.to_string();
    let new = tb.spawn_tas(
        &bin("tasctl"),
        &strs(&run_args(
            &tb,
            &[
                haproxy,
                "-f",
                conf.to_str().unwrap(),
                "-x",
                stats.to_str().unwrap(),
                "-sf",
                &old_pid,
            ],
        )),
        None,
    );
    // The old process stops (soft stop: it has no connection).
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let t = Instant::now();
    while !gone(old) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone(old), "the old haproxy did not stop after -sf");
    assert!(!gone(new), "the new haproxy is not running");
    let xfers = tb.tasd_counter("slowpath.xfers_claimed") - claimed;
    assert!(
        xfers >= 1,
        "the new haproxy did not take the listener over by SCM_RIGHTS (tasd claimed {xfers})"
    );
    let (acc, _) = carried(&mut tb);
    let got = tb.dir.join("got.bin");
    for i in 0..3 {
        let o = tb.run_lnx(
            Path::new("curl"),
            &[
                "-s",
                "-f",
                "--max-time",
                "20",
                "-o",
                got.to_str().unwrap(),
                &url,
            ],
            Duration::from_secs(30),
        );
        assert_ok(&o, &format!("curl {i} through the reloaded haproxy"));
        assert_eq!(
            sha256(&got),
            sum,
            "the file received through haproxy differs"
        );
    }
    let (acc2, _) = carried(&mut tb);
    assert!(
        acc2 - acc >= 3,
        "TAS accepted {} of 3 connections",
        acc2 - acc
    );
    println!("haproxy -x reload: the listener passed by SCM_RIGHTS ({xfers} claimed), 3 x 1 MB served by the new process");
}

/// `socat TCP-LISTEN,fork`: a child per connection. 20 clients one after
/// another, each gets its own line echoed; afterwards no child is left.
#[test]
fn socat_fork_serves_20_sequential_clients() {
    ensure_packages(&[("command -v socat", "socat")]);
    let mut tb = testbed("svsoc");
    let _reaper = Reaper::new(&tb);
    let args = run_args(
        &tb,
        &[
            "socat",
            &format!("TCP-LISTEN:7777,bind={TAS_IP},fork,reuseaddr"),
            "PIPE",
        ],
    );
    let pid = tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    let (acc, _) = carried(&mut tb);
    let client = |i: u32| format!("echo line-{i} | socat -t 5 -T 10 - TCP:{TAS_IP}:7777");
    until_ok(
        &mut tb,
        &client(0),
        Duration::from_secs(15),
        "socat did not answer",
    );
    for i in 1..=20 {
        let o = lnx_sh(&mut tb, &client(i), Duration::from_secs(20));
        assert_ok(&o, &format!("client {i}"));
        assert_eq!(stdout(&o), format!("line-{i}\n"), "client {i}");
    }
    let n = tb.tasd_counter("slowpath.accepted") - acc;
    assert!(n >= 21, "TAS accepted {n} of 21 connections");
    // Every child exits after its client.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if kids.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "socat children left: {kids}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// memcached with 4 worker threads (each with its own epoll set; the main
/// thread accepts and hands connections over) under the shim: 100
/// connections from the Linux host set and get values of up to 3 KB for
/// 4 s, every reply checked, and TAS carried every connection.
#[test]
fn memcached_threads_serve_100_connections() {
    ensure_packages(&[
        ("command -v memcached", "memcached"),
        ("command -v python3", "python3"),
        ("command -v socat", "socat"),
    ]);
    let mut tb = testbed("svmc");
    let _reaper = Reaper::new(&tb);
    let args = run_args(
        &tb,
        &[
            "memcached",
            "-u",
            "root",
            "-l",
            TAS_IP,
            "-p",
            "11211",
            "-t",
            "4",
            "-c",
            "1024",
        ],
    );
    tb.spawn_tas(&bin("tasctl"), &strs(&args), None);
    until_ok(
        &mut tb,
        &format!(
            "printf 'version\\r\\nquit\\r\\n' | socat -t 2 - TCP:{TAS_IP}:11211 | grep -q VERSION"
        ),
        Duration::from_secs(15),
        "memcached did not answer",
    );
    let (acc, _) = carried(&mut tb);
    let script = repo_root().join("tests/py/memcache_check.py");
    let o = lnx_sh(
        &mut tb,
        &format!("python3 {} {TAS_IP} 11211 100 4", script.display()),
        Duration::from_secs(60),
    );
    println!("memcached under the shim: {}", stdout(&o).trim());
    assert_ok(&o, "memcache_check.py");
    let n = tb.tasd_counter("slowpath.accepted") - acc;
    assert!(n >= 100, "TAS accepted {n} of 100 connections");
}

/// iperf3 (its client loops on `select()` with the writable data socket in
/// the set) under the shim, three runs: each takes its 2 s (no stall before
/// the first byte) and no 0.2 s interval goes without bytes.
#[test]
fn iperf3_client_never_stalls() {
    ensure_packages(&[("command -v iperf3", "iperf3")]);
    let mut tb = testbed("svipf");
    let _reaper = Reaper::new(&tb);
    tb.spawn_lnx(
        Path::new("iperf3"),
        &["-s", "-p", "5201", "--forceflush"],
        Some("listening"),
    );
    let (_, con) = carried(&mut tb);
    for run in 0..3 {
        let args = run_args(
            &tb,
            &[
                "iperf3", "-c", LNX_IP, "-p", "5201", "-t", "2", "-i", "0.2", "-J",
            ],
        );
        let t = Instant::now();
        let o = tb.run_tas(&bin("tasctl"), &strs(&args), Duration::from_secs(30));
        let secs = t.elapsed().as_secs_f64();
        assert_ok(&o, "iperf3 -c under tasctl run");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("iperf3 -J");
        let bytes: Vec<u64> = v["intervals"]
            .as_array()
            .expect("intervals")
            .iter()
            .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
            .collect();
        println!("iperf3 run {run}: {secs:.2} s for -t 2, bytes per 0.2 s interval {bytes:?}");
        assert!(bytes.len() >= 9, "{bytes:?}");
        // The run takes its 2 s and little more (before the fix: 3 s, a
        // second lost before the first byte).
        assert!(
            secs < 2.6,
            "run {run}: iperf3 -t 2 took {secs:.2} s (a stall)"
        );
        assert!(
            bytes.iter().all(|&b| b > 0),
            "run {run}: an interval without bytes (a stall): {bytes:?}"
        );
    }
    let n = tb.tasd_counter("slowpath.connected") - con;
    assert!(
        n >= 6,
        "TAS opened {n} connections for 3 iperf3 runs (2 each)"
    );
}

/// News from the fast path is seen at once by a wait that something else
/// makes return immediately: `tests/c/stall.c` blocks in a recv that
/// times out (the shim's reactor then sleeps long), sends a byte to a Linux
/// echo server and waits for the echo with select / poll / epoll_wait
/// next to an always-ready pipe, and with poll(timeout 0) in a loop. The
/// echo must be seen within 50 ms every time (it comes back in well under
/// a millisecond; before the fix it waited for the reactor, up to 1 s).
#[test]
fn waits_with_something_else_ready_see_news_at_once() {
    ensure_packages(&[("command -v cc", "gcc")]);
    let prog = c_program("stall");
    let mut tb = testbed("svstl");
    let _reaper = Reaper::new(&tb);
    tb.spawn_lnx(&bin("peer"), &["echo-server", "7010"], Some("listening"));
    let (_, con) = carried(&mut tb);
    let args = run_args(&tb, &[prog.to_str().unwrap(), LNX_IP, "7010", "4"]);
    let o = tb.run_tas(&bin("tasctl"), &strs(&args), Duration::from_secs(60));
    assert_ok(&o, "tas-stall under tasctl run");
    let out = stdout(&o);
    println!("{}", out.trim());
    assert!(tb.tasd_counter("slowpath.connected") > con, "not on TAS");
    for m in ["select", "poll", "epoll", "poll0"] {
        let worst: u64 = out
            .lines()
            .find(|l| l.starts_with(&format!("{m} ")))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("worst_us="))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no result for {m}:\n{out}"));
        assert!(
            worst < 50_000,
            "{m}: the echo was seen only after {worst} us:\n{out}"
        );
    }
}

/// `TAS_PRELOAD_DEBUG=1` says why a call failed, one line each and
/// rate-limited: an option the shim does not support (1000 failing calls
/// print 5 lines), a connection tasd refused for want of memory (1 MiB of
/// rings per program), and a socket handed to the kernel stack (loopback).
/// Without the variable the same program prints nothing.
#[test]
fn preload_debug_says_why_calls_fail() {
    ensure_packages(&[("python3 -c 'import socket, subprocess'", "python3")]);
    shim();
    // 1 MiB of rings per program, rings of 256 KiB from the start (no
    // growth) and no smaller rings under memory pressure: the second
    // connection does not fit.
    let mut tb = Testbed::with_args(
        "svdbg",
        backend(),
        &[
            "--app-mem-mib",
            "1",
            "--min-buf-kib",
            "0",
            "--rx-buf-init-kib",
            "256",
            "--tx-buf-init-kib",
            "256",
        ],
    );
    let _reaper = Reaper::new(&tb);
    tb.spawn_lnx(&bin("peer"), &["echo-server", "7011"], Some("listening"));
    let script = format!(
        "import socket, subprocess, sys\n\
         s = socket.socket()\n\
         n = 0\n\
         for i in range(1000):\n\
         \x20   try:\n\
         \x20       s.setsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)\n\
         \x20   except OSError as e:\n\
         \x20       n += 1\n\
         print('setsockopt failed', n)\n\
         conns = []\n\
         for i in range(8):\n\
         \x20   c = socket.socket()\n\
         \x20   try:\n\
         \x20       c.connect(('{LNX_IP}', 7011)); conns.append(c)\n\
         \x20   except OSError as e:\n\
         \x20       print('connect', i, 'errno', e.errno); break\n\
         c = socket.socket()\n\
         try:\n\
         \x20   c.connect(('127.0.0.1', 9))\n\
         except OSError as e:\n\
         \x20   print('loopback connect errno', e.errno)\n"
    );
    let py = tb.dir.join("dbg.py");
    std::fs::write(&py, script).unwrap();
    let run = |tb: &mut Testbed, debug: bool| {
        let mut a = Vec::new();
        if debug {
            a.push("TAS_PRELOAD_DEBUG=1".to_string());
        }
        a.push(bin("tasctl").display().to_string());
        a.extend(run_args(tb, &["python3", py.to_str().unwrap()]));
        let o = tb.run_tas(
            Path::new("/usr/bin/env"),
            &strs(&a),
            Duration::from_secs(30),
        );
        assert_ok(&o, "python3 under tasctl run");
        o
    };
    let o = run(&mut tb, true);
    let out = stdout(&o);
    let err = stderr(&o);
    println!("{out}{err}");
    assert_eq!(
        out,
        format!(
            "setsockopt failed 1000\nconnect 1 errno {}\nloopback connect errno {}\n",
            libc::ENOMEM,
            libc::ECONNREFUSED
        )
    );
    let lines: Vec<&str> = err.lines().collect();
    let opt: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            l.contains("setsockopt(fd ")
                && l.contains(
                    ") = -1 ENOPROTOOPT: option level 6 name 11 cannot be set on a TAS socket",
                )
        })
        .collect();
    assert!(
        (5..=7).contains(&opt.len()),
        "expected 5 lines (rate-limited) for 1000 failing setsockopt calls:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("connect(fd ")
            && l.contains(") = -1 ENOMEM: tasd refused the connection: out of memory")),
        "no line for the refused connection:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "connect to 127.0.0.1:9: an address the kernel owns (loopback or a kernel interface's): the socket uses the kernel stack"
        )),
        "no line for the loopback connect:\n{err}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("libtas_preload[")),
        "{err}"
    );
    assert!(lines.len() <= 12, "too many lines:\n{err}");
    // Without TAS_PRELOAD_DEBUG: the same results, nothing on stderr.
    let o = run(&mut tb, false);
    assert_eq!(stdout(&o), out);
    assert_eq!(stderr(&o), "", "lines without TAS_PRELOAD_DEBUG");
}

/// A listener on 0.0.0.0 under the shim (issue 14, item 5) is one
/// listener for every address, as on Linux: clients of TAS's address (from
/// the Linux host) come through TAS, clients of loopback (on the TAS host)
/// through the kernel, alternately, to a server that waits in epoll and
/// accepts until `EAGAIN`, to one that blocks in `accept`, and to two
/// forked children blocking in `accept` on the listener they inherited.
#[test]
fn wildcard_listener_serves_tas_and_kernel_addresses() {
    wildcard_servers("svwld", &[(7400, "epoll"), (7401, "blocking")]);
}

/// The same with two forked children blocking in `accept` on the wildcard
/// listener they inherited. (It failed about 1 run in 20 while the
/// wildcard listeners' lock was not taken across fork: a child inherited
/// it held by the parent's reactor thread, and the child's main thread
/// and reactor waited on it for good; 140 runs in a row pass since.)
#[test]
fn wildcard_listener_in_prefork_children() {
    wildcard_servers("svwlp", &[(7402, "prefork")]);
}

fn wildcard_servers(tag: &str, servers: &[(u16, &str)]) {
    ensure_packages(&[("python3 -c 'import selectors, socket'", "python3")]);
    let mut tb = testbed(tag);
    let _reaper = Reaper::new(&tb);
    for &(port, mode) in servers {
        let server = format!(
            "import selectors, socket\n\
             l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('0.0.0.0', {port})); l.listen()\n\
             print('listening', flush=True)\n\
             def serve(c):\n\
             \x20   c.setblocking(True); d = c.recv(100)\n\
             \x20   c.sendall(d + b' via ' + c.getsockname()[0].encode()); c.close()\n\
             if '{mode}' == 'epoll':\n\
             \x20   l.setblocking(False); sel = selectors.EpollSelector(); sel.register(l, selectors.EVENT_READ)\n\
             \x20   while True:\n\
             \x20       sel.select()\n\
             \x20       while True:\n\
             \x20           try:\n\
             \x20               c, _ = l.accept()\n\
             \x20           except BlockingIOError:\n\
             \x20               break\n\
             \x20           serve(c)\n\
             elif '{mode}' == 'prefork':\n\
             \x20   import os\n\
             \x20   for i in range(2):\n\
             \x20       if os.fork() == 0:\n\
             \x20           while True:\n\
             \x20               serve(l.accept()[0])\n\
             \x20   os.wait()\n\
             else:\n\
             \x20   while True:\n\
             \x20       serve(l.accept()[0])\n"
        );
        let args = run_args(&tb, &["python3", "-c", &server]);
        tb.spawn_tas(&bin("tasctl"), &strs(&args), Some("listening"));
        let client = |ip: &str, msg: &str| {
            format!(
                "import socket\nc = socket.create_connection(('{ip}', {port}), timeout=5)\n\
                 c.sendall(b'{msg}'); print(c.recv(100).decode())\n"
            )
        };
        for i in 0..6 {
            let before = tb.tasd_counter("slowpath.accepted");
            let (o, want, tas) = if i % 2 == 0 {
                let msg = format!("lo{i}");
                let o = tb.run_tas(
                    Path::new("python3"),
                    &["-c", &client("127.0.0.1", &msg)],
                    Duration::from_secs(10),
                );
                (o, format!("{msg} via 127.0.0.1\n"), false)
            } else {
                let msg = format!("tas{i}");
                let o = tb.run_lnx(
                    Path::new("python3"),
                    &["-c", &client(TAS_IP, &msg)],
                    Duration::from_secs(10),
                );
                (o, format!("{msg} via {TAS_IP}\n"), true)
            };
            if !o.status.success() {
                let diag = stall_report(&mut tb, "python3");
                panic!(
                    "{mode} server, client {i} failed ({}): {}\n{diag}",
                    o.status,
                    stderr(&o)
                );
            }
            assert_eq!(stdout(&o), want, "{mode} server, client {i}");
            let n = tb.tasd_counter("slowpath.accepted") - before;
            assert_eq!(
                n, tas as u64,
                "{mode} server, client {i}: tasd accepted {n} connections"
            );
        }
    }
}
