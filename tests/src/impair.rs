//! Impaired links: the TAS host and the Linux host joined through a bridge
//! namespace in which `impair` (tests/src/bin/impair.rs) forwards frames
//! with seeded loss, duplication, reordering and single-bit corruption.
//!
//! ```text
//!   NAME-tas              NAME-brg                          NAME-lnx
//!   veth-tas ──── brg-tas [impair --a brg-tas --b brg-lnx] brg-lnx ──── veth-lnx
//!   (tasd, or the kernel                                               198.18.0.2/24
//!    with 198.18.0.1/24)
//! ```
//! [`Testbed::bridged`] makes the namespaces (`tools/testhosts.sh
//! bridge-up`); the hosts look exactly as in the two-namespace topology, so
//! tasd and `peer` run unchanged. The TAS host runs either tasd
//! ([`Testbed::start_tasd`]) or, for the Linux↔Linux baseline through the
//! same bridge, the kernel stack ([`Testbed::use_kernel_on_tas_host`], which
//! gives veth-tas the address tasd would claim; same MAC, so the Linux host's
//! ARP entry stays right either way). Everything is removed on drop, as for
//! every [`Testbed`]: the forwarder is one of its children.

use crate::{bin, Testbed, LNX_IP, TAS_IP};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Interface of the bridge namespace towards the TAS host.
pub const BRG_TAS_IF: &str = "brg-tas";
/// Interface of the bridge namespace towards the Linux host.
pub const BRG_LNX_IF: &str = "brg-lnx";

/// Rates (fractions of the IPv4 frames of each direction) for `impair`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Short name for tables and test output.
    pub name: &'static str,
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
}

impl Impairment {
    const fn new(name: &'static str) -> Impairment {
        Impairment {
            name,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
        }
    }
    /// A clean link through the bridge (the forwarder still copies frames).
    pub const NONE: Impairment = Impairment::new("none");
    pub const LOSS_1: Impairment = Impairment {
        loss: 0.01,
        ..Impairment::new("1 % loss")
    };
    pub const LOSS_5: Impairment = Impairment {
        loss: 0.05,
        ..Impairment::new("5 % loss")
    };
    /// Each frame held behind the next 1–4 of its direction (no loss).
    pub const REORDER_5: Impairment = Impairment {
        reorder: 0.05,
        ..Impairment::new("5 % reordering")
    };
    pub const CORRUPT_05: Impairment = Impairment {
        corrupt: 0.005,
        ..Impairment::new("0.5 % corruption")
    };
    pub const DUP_1: Impairment = Impairment {
        dup: 0.01,
        ..Impairment::new("1 % duplication")
    };

    /// The impairments of the robustness tests and benchmark, in table order.
    pub const ALL: [Impairment; 6] = [
        Impairment::NONE,
        Impairment::LOSS_1,
        Impairment::LOSS_5,
        Impairment::REORDER_5,
        Impairment::CORRUPT_05,
        Impairment::DUP_1,
    ];

    /// `impair` flags for these rates.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, p) in [
            ("--loss", self.loss),
            ("--dup", self.dup),
            ("--reorder", self.reorder),
            ("--corrupt", self.corrupt),
        ] {
            if p > 0.0 {
                v.push(flag.to_string());
                v.push(p.to_string());
            }
        }
        v
    }
}

/// Which way the data of a transfer flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The Linux host sends, the TAS host receives (`recv` server there).
    LnxToTas,
    /// The TAS host sends, the Linux host receives (`recv` server there).
    TasToLnx,
}

impl Flow {
    pub fn label(self) -> &'static str {
        match self {
            Flow::LnxToTas => "Linux -> TAS host",
            Flow::TasToLnx => "TAS host -> Linux",
        }
    }
}

/// What runs TCP on the TAS host for a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// An app on tasd (`peer --tas`); tasd must be running.
    Tas,
    /// The kernel (`peer`); see [`Testbed::use_kernel_on_tas_host`].
    Kernel,
}

/// Why a [`Testbed::transfer`] failed.
#[derive(Debug, Clone)]
pub struct TransferError {
    /// It ran out of time (rather than failing).
    pub timed_out: bool,
    /// Bytes the Linux host's end had got through when it was stopped: as
    /// sender, acknowledged by the TAS host (`ss` bytes_acked); as receiver,
    /// received in order (`ss` bytes_received). None when not known.
    pub progress: Option<u64>,
    pub msg: String,
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(b) = self.progress {
            write!(f, " ({b} bytes through by then)")?;
        }
        Ok(())
    }
}

/// bytes_acked (Linux sending) or bytes_received (Linux receiving) of the
/// Linux host's connection on `port`, from `ss -tin`.
fn linux_progress(ns: &str, port: u16, flow: Flow) -> Option<u64> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tinH", "state", "all"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let key = match flow {
        Flow::LnxToTas => "bytes_acked:",
        Flow::TasToLnx => "bytes_received:",
    };
    let needle = format!(":{port} ");
    let mut found = None;
    // ss prints each socket on two lines: addresses, then the details.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        // Detail lines start with white space; match ports on address lines.
        if l.starts_with(char::is_whitespace)
            || !(l.contains(&needle) || l.trim_end().ends_with(&format!(":{port}")))
        {
            continue;
        }
        let detail = format!("{l} {}", lines.get(i + 1).unwrap_or(&""));
        if let Some(v) = detail
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<u64>().ok())
        {
            found = Some(found.map_or(v, |f: u64| f.max(v)));
        }
    }
    found
}

/// A running `impair` of a testbed.
#[derive(Debug)]
pub struct Forwarder {
    pid: u32,
    out: PathBuf,
}

/// The counters `impair` printed when it stopped, per direction.
#[derive(Debug, Clone, Default)]
pub struct LinkCounters {
    /// Frames from the TAS host to the Linux host (impair's a->b).
    pub tas_to_lnx: BTreeMap<String, u64>,
    /// Frames from the Linux host to the TAS host (impair's b->a).
    pub lnx_to_tas: BTreeMap<String, u64>,
    /// impair's output as it was.
    pub text: String,
}

impl LinkCounters {
    /// The counters of the direction the data of `flow` took.
    pub fn data(&self, flow: Flow) -> &BTreeMap<String, u64> {
        match flow {
            Flow::LnxToTas => &self.lnx_to_tas,
            Flow::TasToLnx => &self.tas_to_lnx,
        }
    }

    /// The counters of the other direction (the ACKs of `flow`).
    pub fn acks(&self, flow: Flow) -> &BTreeMap<String, u64> {
        match flow {
            Flow::LnxToTas => &self.tas_to_lnx,
            Flow::TasToLnx => &self.lnx_to_tas,
        }
    }

    fn parse(text: &str) -> Option<LinkCounters> {
        let mut c = LinkCounters {
            text: text.to_string(),
            ..LinkCounters::default()
        };
        let mut seen = 0;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if it.next() != Some("impair") {
                continue;
            }
            let map = match it.next() {
                Some("a->b") => &mut c.tas_to_lnx,
                Some("b->a") => &mut c.lnx_to_tas,
                _ => continue,
            };
            for kv in it {
                let (k, v) = kv.split_once('=')?;
                map.insert(k.to_string(), v.parse().ok()?);
            }
            seen += 1;
        }
        (seen == 2).then_some(c)
    }

    /// One line per direction, only the counters that matter.
    pub fn summary(&self) -> String {
        let f = |m: &BTreeMap<String, u64>| {
            [
                "in",
                "out",
                "dropped",
                "duplicated",
                "reordered",
                "hold_timeouts",
                "corrupted",
                "sock_drops",
                "tx_errors",
            ]
            .iter()
            .map(|k| format!("{k}={}", m.get(*k).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
        };
        format!(
            "TAS->Linux frames: {}\nLinux->TAS frames: {}",
            f(&self.tas_to_lnx),
            f(&self.lnx_to_tas)
        )
    }
}

/// Counter `k` of a direction (0 when absent).
pub fn counter(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// A nstat-like counter of a namespace's kernel, from /proc/net/snmp or
/// /proc/net/netstat (e.g. `Tcp` `InCsumErrors`, `TcpExt` `TCPDSACKRecv`).
pub fn kernel_counter(ns: &str, table: &str, field: &str) -> Option<u64> {
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "cat", file])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text.lines().collect();
        // Pairs of lines: "Tcp: Name1 Name2 ..." then "Tcp: 1 2 ...".
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let prefix = format!("{table}:");
            if !names.starts_with(&prefix) || !values.starts_with(&prefix) {
                continue;
            }
            let n: Vec<&str> = names.split_whitespace().skip(1).collect();
            let v: Vec<&str> = values.split_whitespace().skip(1).collect();
            if let Some(i) = n.iter().position(|x| *x == field) {
                return v.get(i).and_then(|x| x.parse().ok());
            }
        }
    }
    None
}

impl Testbed {
    /// Creates the TAS host, the bridge namespace and the Linux host (no
    /// tasd, no forwarder yet: nothing crosses the bridge until
    /// [`Testbed::start_impair`]). Use a tag starting with `imp`.
    pub fn bridged(tag: &str) -> Testbed {
        Self::hosts_with(tag, "bridge-up", None)
    }

    /// The bridge namespace of a [`Testbed::bridged`] testbed.
    pub fn brg_ns(&self) -> String {
        format!("{}-brg", self.name)
    }

    /// Starts `impair` between the two hosts with these rates and seed;
    /// returns once it forwards.
    pub fn start_impair(&mut self, imp: &Impairment, seed: u64) -> Forwarder {
        self.start_impair_with(imp, seed, &[])
    }

    /// [`Testbed::start_impair`] with more `impair` flags (`--mtu N`,
    /// `--reject-port P`).
    pub fn start_impair_with(&mut self, imp: &Impairment, seed: u64, extra: &[&str]) -> Forwarder {
        let out = self.dir.join(format!(
            "impair-{}.out",
            crate::SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&out).expect("impair output file");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.brg_ns()])
            .arg(bin("impair"))
            .args([
                "--a",
                BRG_TAS_IF,
                "--b",
                BRG_LNX_IF,
                "--seed",
                &seed.to_string(),
            ])
            .args(imp.args())
            .args(extra)
            .stdout(file)
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn impair");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::read_to_string(&out).is_ok_and(|s| s.contains("impair ready")) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("impair exited ({st}) before it was ready");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("impair not ready after 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.id();
        self.children.push(child);
        Forwarder { pid, out }
    }

    /// Stops `impair` (SIGTERM) and returns the counters it printed.
    pub fn stop_impair(&mut self, f: Forwarder) -> LinkCounters {
        // SAFETY: signalling our own child (ip netns exec execs in place).
        unsafe { libc::kill(f.pid as i32, libc::SIGTERM) };
        let ok = self.wait_child(f.pid, Duration::from_secs(10));
        let text = std::fs::read_to_string(&f.out).unwrap_or_default();
        if ok != Some(true) {
            self.kill(f.pid);
            panic!("impair did not stop cleanly on SIGTERM ({ok:?}); its output:\n{text}");
        }
        LinkCounters::parse(&text)
            .unwrap_or_else(|| panic!("no counters in impair's output:\n{text}"))
    }

    /// Gives veth-tas the TAS address in the kernel, so that the kernel
    /// stack of the TAS host is the peer of the Linux host (the baseline
    /// through the same bridge). tasd must not be running.
    pub fn use_kernel_on_tas_host(&mut self) {
        assert!(
            !self.tasd_alive(),
            "tasd runs: stop it before giving the kernel its address"
        );
        let o = Command::new("ip")
            .args([
                "-n",
                &self.tas_ns,
                "addr",
                "replace",
                &format!("{TAS_IP}/24"),
                "dev",
                "veth-tas",
            ])
            .output()
            .expect("ip addr");
        assert!(
            o.status.success(),
            "ip addr replace: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Removes the kernel's address from veth-tas again (before tasd starts).
    pub fn release_kernel_on_tas_host(&mut self) {
        let o = Command::new("ip")
            .args(["-n", &self.tas_ns, "addr", "flush", "dev", "veth-tas"])
            .output()
            .expect("ip addr");
        assert!(
            o.status.success(),
            "ip addr flush: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// One verified transfer of `bytes` (the seeded pattern of `peer`,
    /// checked byte for byte by the receiving `peer recv`), with `stack` on
    /// the TAS host. Returns the time from starting the sender to the
    /// receiver's verified end of stream, or why it failed (including a
    /// timeout after `limit`, when both programs are killed).
    pub fn transfer(
        &mut self,
        stack: Stack,
        flow: Flow,
        bytes: u64,
        seed: u64,
        port: u16,
        limit: Duration,
    ) -> Result<Duration, TransferError> {
        let fail = |timed_out, progress, msg: String| TransferError {
            timed_out,
            progress,
            msg,
        };
        let (b, s, p) = (bytes.to_string(), seed.to_string(), port.to_string());
        let peer = bin("peer");
        let mut tas_args: Vec<&str> = Vec::new();
        if stack == Stack::Tas {
            tas_args.push("--tas");
        }
        let (rx, tx) = match flow {
            Flow::LnxToTas => {
                tas_args.extend(["recv", &p, &b, &s]);
                let rx = self.spawn_tas(&peer, &tas_args, Some("listening"));
                let t = Instant::now();
                let tx = self.spawn_lnx(&peer, &["send", TAS_IP, &p, &b, &s], None);
                ((rx, t), tx)
            }
            Flow::TasToLnx => {
                let rx = self.spawn_lnx(&peer, &["recv", &p, &b, &s], Some("listening"));
                tas_args.extend(["send", LNX_IP, &p, &b, &s]);
                let t = Instant::now();
                let tx = self.spawn_tas(&peer, &tas_args, None);
                ((rx, t), tx)
            }
        };
        let (rx, start) = rx;
        let deadline = start + limit;
        let rx_ok = loop {
            if let Some(ok) = self.wait_child(rx, Duration::ZERO) {
                break ok;
            }
            if Instant::now() > deadline {
                let progress = linux_progress(&self.lnx_ns, port, flow);
                self.kill(rx);
                self.kill(tx);
                return Err(fail(
                    true,
                    progress,
                    format!(
                        "{} ({stack:?} on the TAS host): {bytes} bytes not received within {limit:?}",
                        flow.label()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let took = start.elapsed();
        if !rx_ok {
            self.kill(tx);
            return Err(fail(
                false,
                None,
                format!(
                    "{} ({stack:?} on the TAS host): the receiver failed (wrong bytes, reset or short stream; see its stderr)",
                    flow.label()
                ),
            ));
        }
        // The sender exits once the receiver has closed too.
        match self.wait_child(tx, Duration::from_secs(20)) {
            Some(true) => Ok(took),
            other => {
                self.kill(tx);
                Err(fail(
                    false,
                    None,
                    format!(
                        "{} ({stack:?} on the TAS host): data verified in {took:?}, but the sender ended {other:?}",
                        flow.label()
                    ),
                ))
            }
        }
    }
}
