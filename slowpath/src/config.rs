//! `tasd` command line and the settings derived from it.

use crate::cc::{self, CcConfig};
use crate::stack::StackConfig;
use clap::{Arg, ArgMatches, Command, FromArgMatches, Parser, ValueEnum};
use std::path::PathBuf;

/// Default attach/control socket when neither `--socket` nor `TAS_SOCKET` is given.
pub use tas_abi::DEFAULT_SOCKET;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NicKind {
    /// AF_XDP socket (copy mode works on veth)
    #[value(name = "af_xdp")]
    AfXdp,
    /// AF_PACKET socket with TPACKET_V2 rings
    #[value(name = "af_packet")]
    AfPacket,
    /// DPDK (tasd built with --features dpdk): --iface is a Linux interface
    /// (attached through DPDK's net_af_xdp) or, with --dpdk-args, a DPDK port
    #[value(name = "dpdk")]
    Dpdk,
}

/// `--huge-pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HugePagesArg {
    /// hugetlbfs pages for an app region when enough are free, else 4 KiB
    Auto,
    /// 4 KiB pages (sparse memfd) for every app region
    Off,
}

impl From<HugePagesArg> for tas_runtime::huge::HugePages {
    fn from(a: HugePagesArg) -> Self {
        match a {
            HugePagesArg::Auto => tas_runtime::huge::HugePages::Auto,
            HugePagesArg::Off => tas_runtime::huge::HugePages::Off,
        }
    }
}

/// TAS daemon: user-level TCP fast path and slow path on one interface.
#[derive(Debug, Parser)]
#[command(name = "tasd", version, about, long_about = None, after_long_help = cc_help())]
pub struct Cli {
    /// Our IPv4 address and prefix, e.g. 198.18.0.1/24. When the kernel owns
    /// it on the interface (or --ip is left out: the kernel's first IPv4
    /// address there), tasd runs in shared mode beside the kernel; otherwise
    /// (or with --exclusive) it takes the interface's frames and answers ARP
    /// for the address itself.
    #[arg(long, value_name = "A.B.C.D/N")]
    pub ip: Option<String>,
    /// Exclusive mode even when the kernel owns the address: every frame of
    /// the interface goes to tasd (the kernel stack sees none).
    #[arg(long)]
    pub exclusive: bool,
    /// Shared mode: local ports of TAS's active opens, reserved from the
    /// kernel's automatic choice (net.ipv4.ip_local_reserved_ports) while
    /// tasd runs.
    #[arg(long, default_value = "61000-64999", value_name = "LOW-HIGH")]
    pub port_range: String,
    /// Network interface to own.
    #[arg(long, value_name = "IFNAME")]
    pub iface: String,
    /// NIC backend.
    #[arg(long, value_enum, default_value = "af_xdp")]
    pub nic: NicKind,
    /// Default gateway for destinations outside the local subnet.
    #[arg(long, value_name = "A.B.C.D")]
    pub gateway: Option<String>,
    /// Fast-path core budget: N, or MIN-MAX to let tasd add and remove
    /// cores with the load (one NIC lane per MAX core is opened at start).
    #[arg(long, default_value = "1", value_name = "N|MIN-MAX")]
    pub cores: String,
    /// Pin the fast-path cores to these CPUs (a list like 2,3 or 2-3; core
    /// k runs on the k-th CPU of the list, round-robin). Default: not
    /// pinned (the kernel places them).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// What the self-tuning optimises: latency, throughput or efficiency
    /// (the fast-path cores' idle spin, the apps' spin and the scaling
    /// thresholds adapt toward it; change it live with `tasctl tune`).
    #[arg(long, default_value = "throughput", value_name = "GOAL")]
    pub goal: String,
    /// Add a fast-path core when the active cores' aggregate idle falls
    /// below this many cores [default: by --goal: latency 0.35,
    /// throughput 0.2, efficiency 0.1].
    #[arg(long, value_name = "CORES")]
    pub scale_up_idle: Option<f64>,
    /// Remove a fast-path core when the aggregate idle exceeds this many
    /// cores (must exceed --scale-up-idle by more than 1) [default: by
    /// --goal: latency 1.5, throughput 1.25, efficiency 1.15].
    #[arg(long, value_name = "CORES")]
    pub scale_down_idle: Option<f64>,
    /// Measurement window of the scaling controller (ms).
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub scale_window_ms: u64,
    /// No further scaling for this long after a change (ms).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub scale_cooldown_ms: u64,
    /// Attach socket for apps and tasctl [env: TAS_SOCKET] [default: /run/tas/tasd.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permissions of the attach socket (octal). Whoever may connect to it
    /// can open connections with tasd's address: treat membership of
    /// --socket-group like that of the `docker` group.
    #[arg(long, default_value = "0660", value_name = "OCTAL")]
    pub socket_mode: String,
    /// Group of the attach socket, if it exists (else the socket keeps
    /// tasd's own group, so by default only root may attach).
    #[arg(long, default_value = "tas", value_name = "GROUP")]
    pub socket_group: String,
    /// Most apps (attachments) one user may have at once.
    #[arg(long, default_value_t = 768, value_name = "N")]
    pub max_apps_per_uid: u32,
    /// Most apps (attachments) one process may have at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_apps_per_process: u32,
    /// Directory of the per-interface lock files.
    #[arg(long, default_value = "/run/tas", value_name = "DIR")]
    pub run_dir: PathBuf,
    /// Shared memory per app, in MiB (rings of all its connections). Sparse
    /// on 4 KiB pages: only what rings touch is memory. The default, the
    /// most whole 2 MiB pages ring offsets in 32 bits allow, holds a flow
    /// table's worth of connections (see --min-buf-kib).
    #[arg(long, default_value_t = 4094)]
    pub app_mem_mib: u32,
    /// App regions on reserved 2 MiB hugetlbfs pages: auto (when enough
    /// free pages for a whole region are reserved in
    /// /proc/sys/vm/nr_hugepages; each region then holds all its pages, so
    /// size --app-mem-mib to them; an odd --app-mem-mib, not whole 2 MiB
    /// pages, stays on 4 KiB pages) or off (sparse 4 KiB-page memfds).
    #[arg(long, value_enum, default_value = "auto", value_name = "auto|off")]
    pub huge_pages: HugePagesArg,
    /// Largest receive ring a connection's ring grows to, in KiB (and the
    /// ring of a connection whose app asks for no size growth; see
    /// --rx-buf-init-kib). The window scale is computed for it.
    #[arg(long, default_value_t = 256)]
    pub rx_buf_kib: u32,
    /// Largest send ring a connection's ring grows to, in KiB.
    #[arg(long, default_value_t = 256)]
    pub tx_buf_kib: u32,
    /// Receive ring a connection starts with, in KiB; it doubles up to
    /// --rx-buf-kib while the app reads more than half of it per round
    /// trip (Linux's receive-buffer autotuning). Equal to --rx-buf-kib:
    /// no growth. A size the app sets (SO_RCVBUF) is pinned.
    #[arg(long, default_value_t = 32)]
    pub rx_buf_init_kib: u32,
    /// Send ring a connection starts with, in KiB; it doubles up to
    /// --tx-buf-kib while the ring is what limits the sender (the app
    /// library asks when it finds the ring full). SO_SNDBUF pins it.
    #[arg(long, default_value_t = 32)]
    pub tx_buf_init_kib: u32,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (off by default;
    /// a kernel TCP socket in tasd's network namespace).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Ring size (each way) a new connection falls back to when its app's
    /// shared memory must keep room for one such pair for every flow the
    /// table could still take; 0: always the configured size (then an app
    /// holds only as many connections as its memory has full rings for).
    #[arg(long, default_value_t = 16)]
    pub min_buf_kib: u32,
    /// Connections the flow table holds (its slots are a fifteenth more,
    /// kept for handshakes in progress).
    #[arg(long, default_value_t = 65536)]
    pub max_flows: usize,
    /// TIME_WAIT duration in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub time_wait_ms: u64,
    /// Fast-path core spins this long without work before it blocks (µs),
    /// fixed. Without it the spin is self-tuned toward --goal from the gaps
    /// between arrivals and the CPU contention the cores see.
    #[arg(long, value_name = "US")]
    pub idle_spin_us: Option<u64>,
    /// A fast-path core keeps its CPU while it spins without work. By
    /// default it yields it (`sched_yield`) between idle polls, so that a
    /// thread waiting for that CPU (the app it just woke, where busy
    /// threads outnumber CPUs) runs at once instead of after the
    /// scheduler's slice.
    #[arg(long)]
    pub no_idle_yield: bool,
    /// An ACK for in-order data waits up to this long (µs) for a segment of
    /// ours to carry it (a response); 0 ACKs at once. The second segment,
    /// out-of-order data, duplicates and FINs are always ACKed at once.
    #[arg(long, default_value_t = 40, value_name = "US")]
    pub ack_delay_us: u64,
    /// Largest IP packet (capped by the interface MTU).
    #[arg(long, default_value_t = 1500)]
    pub mtu: u16,
    /// Negotiate ECN with peers (DCTCP needs it to see congestion marks).
    #[arg(long)]
    pub ecn: bool,
    /// Drop SYNs while the half-open table is full instead of answering
    /// them with SYN cookies (as Linux with net.ipv4.tcp_syncookies=0).
    #[arg(long)]
    pub no_syncookies: bool,
    /// Most orphaned connections kept, all apps together: connections an
    /// app closed (or left open) when it exited, still delivering their
    /// data and FIN (Linux's net.ipv4.tcp_max_orphans); past it, an exiting
    /// app's connections are reset.
    #[arg(long, default_value_t = 16384)]
    pub max_orphans: u32,
    /// How long a closed connection whose FIN was acknowledged waits for
    /// the peer's FIN before it is reset (FIN_WAIT_2; Linux's
    /// net.ipv4.tcp_fin_timeout), in ms.
    #[arg(long, default_value_t = 60_000)]
    pub fin_timeout_ms: u64,
    /// EAL arguments for --nic dpdk, e.g. "-l 2 -a 0000:01:00.0"; empty: no
    /// huge pages, --iface attached through net_af_xdp.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub dpdk_args: String,
    #[command(flatten)]
    pub cc: CcArgs,
}

fn cc_help() -> String {
    format!(
        "Congestion control algorithms and their parameters (defaults shown; set them with \
         --ALGO-PARAM VALUE here, or at run time with `tasctl cc set ALGO PARAM=VALUE`):\n{}\n\
         Rates take kbps/mbps/gbps (plain: Mbit/s), times ns/us/ms/s (plain: µs).\n\
         The control socket for tasctl is the attach socket path plus \".ctl\".",
        cc::describe_algorithms()
    )
}

/// Congestion-control flags, generated from the algorithm registry:
/// `--cc ALGO`, the loop's `--cc-interval`, `--cc-min-interval`,
/// `--cc-max-interval`, and `--ALGO-PARAM` for every parameter of every
/// algorithm (e.g. `--timely-t-low 30us`).
#[derive(Debug, Clone, Default)]
pub struct CcArgs {
    pub algo: String,
    /// (algorithm or None for a loop parameter, parameter, value).
    pub given: Vec<(Option<&'static str>, &'static str, String)>,
}

fn flag_of(algo: Option<&str>, param: &str) -> String {
    match algo {
        Some(a) => format!("{a}-{}", param.replace('_', "-")),
        None => format!("cc-{}", param.replace('_', "-")),
    }
}

impl clap::Args for CcArgs {
    fn augment_args(mut cmd: Command) -> Command {
        let names: Vec<&'static str> = cc::ALGORITHMS.iter().map(|a| a.name).collect();
        cmd = cmd.arg(
            Arg::new("cc")
                .long("cc")
                .value_name("ALGO")
                .default_value(cc::default_algo().name)
                .value_parser(clap::builder::PossibleValuesParser::new(names))
                .help("Congestion control of all flows (per-port settings: tasctl cc set --port)")
                .help_heading("Congestion control"),
        );
        for p in cc::LOOP_PARAMS {
            let f = flag_of(None, p.name);
            cmd = cmd.arg(
                Arg::new(f.clone())
                    .long(f)
                    .value_name("VALUE")
                    .help(format!(
                        "Control loop: {} [default: {}]",
                        p.help,
                        cc::fmt_value(p.unit, p.default)
                    ))
                    .help_heading("Congestion control"),
            );
        }
        for a in cc::ALGORITHMS {
            for p in a.params {
                let f = flag_of(Some(a.name), p.name);
                cmd = cmd.arg(
                    Arg::new(f.clone())
                        .long(f)
                        .value_name("VALUE")
                        .hide_short_help(true)
                        .help(format!(
                            "{}: {} [default: {}]",
                            a.name,
                            p.help,
                            cc::fmt_value(p.unit, p.default)
                        ))
                        .help_heading("Congestion control parameters"),
                );
            }
        }
        cmd
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for CcArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut s = CcArgs::default();
        s.update_from_arg_matches(m)?;
        Ok(s)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        if let Ok(Some(a)) = m.try_get_one::<String>("cc") {
            self.algo = a.clone();
        }
        let mut look = |algo: Option<&'static str>, name: &'static str| {
            if let Ok(Some(v)) = m.try_get_one::<String>(&flag_of(algo, name)) {
                self.given.push((algo, name, v.clone()));
            }
        };
        for p in cc::LOOP_PARAMS {
            look(None, p.name);
        }
        for a in cc::ALGORITHMS {
            for p in a.params {
                look(Some(a.name), p.name);
            }
        }
        Ok(())
    }
}

impl CcArgs {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> Result<CcConfig, String> {
        let name = if self.algo.is_empty() {
            cc::default_algo().name
        } else {
            self.algo.as_str()
        };
        let algo = cc::algo(name)
            .ok_or_else(|| format!("--cc: {}", cc::CcError::UnknownAlgo(name.into())))?;
        let mut c = CcConfig::new(algo);
        for (a, p, v) in &self.given {
            let r = match a {
                None => c.set_loop_base(p, v),
                Some(a) => c.set_base(a, p, v),
            };
            r.map_err(|e| format!("--{}: {e}", flag_of(*a, p)))?;
        }
        Ok(c)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ip: u32,
    pub prefix_len: u8,
    pub iface: String,
    pub nic: NicKind,
    pub gateway: Option<u32>,
    pub socket: PathBuf,
    /// Mode of the attach socket file.
    pub socket_mode: u32,
    /// Group of the attach socket file (by name; used if it exists).
    pub socket_group: String,
    pub limits: crate::apps::Limits,
    pub run_dir: PathBuf,
    /// Bytes of every app region (`--app-mem-mib`, as asked: a region that
    /// is not whole 2 MiB pages is never on hugetlbfs pages).
    pub app_mem: u32,
    /// Whether app regions may use hugetlbfs pages.
    pub huge_pages: tas_runtime::huge::HugePages,
    pub rx_buf: u32,
    pub tx_buf: u32,
    pub rx_buf_init: u32,
    pub tx_buf_init: u32,
    pub min_buf: u32,
    pub max_flows: usize,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Shared mode: the kernel owns `ip`; tasd takes only its own TCP.
    pub shared: bool,
    /// Shared mode: the local ports of active opens.
    pub port_range: (u16, u16),
    pub time_wait_ms: u64,
    /// Fixed idle spin (µs); None: self-tuned.
    pub idle_spin_us: Option<u64>,
    /// Idle cores yield their CPU between polls (not `--no-idle-yield`).
    pub idle_yield: bool,
    /// `--cpus`: the CPU of each fast-path core, round-robin (empty: not
    /// pinned).
    pub cpus: Vec<u32>,
    pub goal: tas_tune::Goal,
    /// The scaling thresholds were given explicitly (`tasctl tune` leaves
    /// them alone then).
    pub scale_fixed: bool,
    pub ack_delay_us: u64,
    pub mtu: u16,
    pub ecn: bool,
    pub syncookies: bool,
    pub max_orphans: u32,
    pub fin_timeout_ms: u64,
    pub dpdk_args: Vec<String>,
    pub cc: CcConfig,
    /// Core budget and scaling thresholds.
    pub scale: crate::scale::ScaleConfig,
}

/// Most fast-path cores (and NIC lanes) tasd runs.
pub const MAX_CORES: u32 = 64;

/// Parses `N` or `MIN-MAX` (1 <= MIN <= MAX <= [`MAX_CORES`]).
pub fn parse_cores(s: &str) -> Result<(u32, u32), String> {
    let num = |x: &str| -> Result<u32, String> {
        let x = x.trim();
        x.parse::<u32>()
            .ok()
            .filter(|_| x.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("'{s}': expected N or MIN-MAX"))
    };
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if min == 0 {
        return Err(format!("'{s}': at least one fast-path core is needed"));
    }
    if min > max {
        return Err(format!("'{s}': MIN must not exceed MAX"));
    }
    if max > MAX_CORES {
        return Err(format!("'{s}': at most {MAX_CORES} cores"));
    }
    Ok((min, max))
}

/// A CPU list as `taskset -c` takes it: `N`, `A-B`, comma-separated; each
/// CPU must be one this process may run on.
pub fn parse_cpus(s: &str) -> Result<Vec<u32>, String> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let num = |x: &str| -> Result<u32, String> {
            let x = x.trim();
            x.parse::<u32>()
                .ok()
                .filter(|_| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("'{s}': '{part}' is not a CPU number or range"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("'{s}': range '{part}' runs backwards"));
        }
        if b >= 1024 {
            return Err(format!("'{s}': CPU {b} is beyond 1023"));
        }
        for c in a..=b {
            if let Some(set) = &allowed {
                if !set.is_set(c as usize).unwrap_or(false) {
                    return Err(format!(
                        "'{s}': CPU {c} is not online or not allowed for tasd (see taskset -p {})",
                        std::process::id()
                    ));
                }
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

fn parse_ip(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{what}: '{s}' is not an IPv4 address"))
}

/// The kernel's IPv4 addresses (host order) and prefix lengths on `iface`.
pub fn kernel_ipv4(iface: &str) -> Vec<(u32, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            let mask = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
            Some((u32::from(ip), mask))
        })
        .collect()
}

/// The kernel's default gateway through `iface` (the main table's default
/// route, read over rtnetlink in this network namespace), host order.
pub fn kernel_default_gateway(iface: &str) -> Option<u32> {
    let ifindex = crate::netlink::ifindex(iface)?;
    match crate::netlink::Kernel::open(ifindex).and_then(|mut k| k.default_gateway()) {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("reading the kernel's default route: {e}");
            None
        }
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, String> {
        let kernel = kernel_ipv4(&cli.iface);
        let ip_arg = match &cli.ip {
            Some(s) => s.clone(),
            None => {
                let (ip, p) = kernel.first().ok_or_else(|| {
                    format!(
                        "--ip missing and the kernel has no IPv4 address on {}: give tasd one with --ip A.B.C.D/N",
                        cli.iface
                    )
                })?;
                format!("{}/{p}", std::net::Ipv4Addr::from(*ip))
            }
        };
        let (addr, prefix) = ip_arg
            .split_once('/')
            .ok_or_else(|| format!("--ip: '{ip_arg}' needs a prefix length, e.g. 198.18.0.1/24"))?;
        let ip = parse_ip(addr, "--ip")?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("--ip: prefix length '{prefix}' must be 1..32"))?;
        let gateway = cli
            .gateway
            .as_deref()
            .map(|g| parse_ip(g, "--gateway"))
            .transpose()?;
        if let Some(g) = gateway {
            let mask = u32::MAX << (32 - prefix_len as u32);
            if g & mask != ip & mask {
                return Err(format!(
                    "--gateway: {} is not inside {}",
                    std::net::Ipv4Addr::from(g),
                    ip_arg
                ));
            }
        }
        let shared = !cli.exclusive && kernel.iter().any(|&(k, _)| k == ip);
        // Shared mode follows the kernel's route unless told otherwise.
        let gateway = match gateway {
            None if shared => kernel_default_gateway(&cli.iface),
            g => g,
        };
        if shared && cli.nic == NicKind::Dpdk {
            return Err(format!(
                "the kernel owns {} on {}: sharing the address with it needs --nic af_xdp or af_packet \
                 (DPDK takes every frame of the port: sharing would need rte_flow isolation, which tasd does not use \
                 and the net_af_xdp PMD of kernel interfaces such as veth does not offer); \
                 use --exclusive with an address the kernel does not own",
                std::net::Ipv4Addr::from(ip),
                cli.iface
            ));
        }
        let port_range = cli
            .port_range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|&(lo, hi)| lo >= 1024 && lo <= hi)
            .ok_or_else(|| {
                format!(
                    "--port-range: '{}' must be LOW-HIGH within 1024-65535",
                    cli.port_range
                )
            })?;
        let (cores_min, cores_max) =
            parse_cores(&cli.cores).map_err(|e| format!("--cores: {e}"))?;
        if cores_max > 1 && matches!(cli.nic, NicKind::Dpdk) && !cli.dpdk_args.trim().is_empty() {
            return Err(format!(
                "--cores: '{}': with --dpdk-args (a real NIC) the dpdk backend runs one queue in this version (RSS over its queues is not implemented); use --cores 1, or a Linux interface without --dpdk-args",
                cli.cores
            ));
        }
        let goal: tas_tune::Goal = cli.goal.parse().map_err(|e| format!("--goal: {e}"))?;
        let (up_preset, down_preset) = goal.scale_thresholds();
        let scale = crate::scale::ScaleConfig {
            min: cores_min,
            max: cores_max,
            up_below_idle: cli.scale_up_idle.unwrap_or(up_preset),
            down_above_idle: cli.scale_down_idle.unwrap_or(down_preset),
            window: std::time::Duration::from_millis(cli.scale_window_ms),
            cooldown: std::time::Duration::from_millis(cli.scale_cooldown_ms),
        };
        scale.validate().map_err(|e| format!("--scale-*: {e}"))?;
        if cli.iface.is_empty() || cli.iface.len() > 15 {
            return Err(format!(
                "--iface: '{}' is not a valid interface name",
                cli.iface
            ));
        }
        let socket = tas_abi::socket_path(cli.socket.as_deref());
        let socket_mode = u32::from_str_radix(cli.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "--socket-mode: '{}' is not an octal mode like 0660",
                    cli.socket_mode
                )
            })?;
        if cli.max_apps_per_uid == 0 || cli.max_apps_per_process == 0 {
            return Err("--max-apps-per-uid and --max-apps-per-process must be at least 1".into());
        }
        if !(1..=4096).contains(&cli.app_mem_mib) {
            return Err("--app-mem-mib must be 1..4096".into());
        }
        for (v, n) in [
            (cli.rx_buf_kib, "--rx-buf-kib"),
            (cli.tx_buf_kib, "--tx-buf-kib"),
        ] {
            if !(4..=65536).contains(&v) {
                return Err(format!("{n} must be 4..65536"));
            }
        }
        // Above the maximum an initial size is the maximum (no growth).
        for (v, n) in [
            (cli.rx_buf_init_kib, "--rx-buf-init-kib"),
            (cli.tx_buf_init_kib, "--tx-buf-init-kib"),
        ] {
            if v < 4 {
                return Err(format!("{n} must be at least 4"));
            }
        }
        if cli.ack_delay_us > 10_000 {
            return Err("--ack-delay-us must be 0..10000".into());
        }
        if cli.min_buf_kib != 0 && !(4..=65536).contains(&cli.min_buf_kib) {
            return Err("--min-buf-kib must be 0 or 4..65536".into());
        }
        if cli.max_flows == 0 || cli.max_flows > 4 << 20 {
            return Err("--max-flows must be 1..4194304".into());
        }
        if !(576..=9000).contains(&cli.mtu) {
            return Err("--mtu must be 576..9000".into());
        }
        let cc = cli.cc.to_config()?;
        Ok(Config {
            ip,
            prefix_len,
            iface: cli.iface,
            nic: cli.nic,
            gateway,
            socket,
            socket_mode,
            socket_group: cli.socket_group,
            limits: crate::apps::Limits {
                per_uid: cli.max_apps_per_uid,
                per_process: cli.max_apps_per_process,
            },
            run_dir: cli.run_dir,
            app_mem: cli.app_mem_mib.saturating_mul(1 << 20).min(u32::MAX - 4095),
            huge_pages: cli.huge_pages.into(),
            rx_buf: cli.rx_buf_kib * 1024,
            tx_buf: cli.tx_buf_kib * 1024,
            rx_buf_init: cli.rx_buf_init_kib.min(cli.rx_buf_kib) * 1024,
            tx_buf_init: cli.tx_buf_init_kib.min(cli.tx_buf_kib) * 1024,
            min_buf: cli.min_buf_kib * 1024,
            max_flows: cli.max_flows,
            metrics_addr: cli.metrics_addr,
            shared,
            port_range,
            time_wait_ms: cli.time_wait_ms,
            idle_spin_us: cli.idle_spin_us,
            idle_yield: !cli.no_idle_yield,
            cpus: match &cli.cpus {
                Some(l) => parse_cpus(l).map_err(|e| format!("--cpus: {e}"))?,
                None => Vec::new(),
            },
            goal,
            scale_fixed: cli.scale_up_idle.is_some() || cli.scale_down_idle.is_some(),
            ack_delay_us: cli.ack_delay_us,
            scale,
            mtu: cli.mtu,
            ecn: cli.ecn,
            syncookies: !cli.no_syncookies,
            max_orphans: cli.max_orphans,
            fin_timeout_ms: cli.fin_timeout_ms,
            dpdk_args: cli.dpdk_args.split_whitespace().map(String::from).collect(),
            cc,
        })
    }

    pub fn stack_config(&self, mac: [u8; 6], mtu: u16) -> StackConfig {
        StackConfig {
            local_ip: self.ip,
            prefix_len: self.prefix_len,
            gateway: self.gateway,
            local_mac: mac,
            mtu,
            default_rx_buf: self.rx_buf,
            default_tx_buf: self.tx_buf,
            init_rx_buf: self.rx_buf_init,
            init_tx_buf: self.tx_buf_init,
            time_wait_ns: self.time_wait_ms * 1_000_000,
            ecn: self.ecn,
            syncookies: self.syncookies,
            max_orphans: self.max_orphans,
            ring_floor: self.min_buf,
            fin_timeout_ns: self.fin_timeout_ms.saturating_mul(1_000_000),
            cc: self.cc.clone(),
            shared_ports: self.shared.then_some(self.port_range),
            ephemeral: if self.shared {
                self.port_range
            } else {
                StackConfig::default().ephemeral
            },
            ..StackConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("0,0-0"), Ok(vec![0]));
        for (bad, msg) in [
            ("x", "not a CPU number"),
            ("1-0", "runs backwards"),
            ("", "not a CPU number"),
            ("0,", "not a CPU number"),
            ("4096", "beyond 1023"),
            ("1000", "not online or not allowed"),
        ] {
            let e = parse_cpus(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["tasd", "--ip", "198.18.0.1/24", "--iface", "veth0"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
        Config::from_cli(cli)
    }

    #[test]
    fn syncookies_flag() {
        let c = parse(&[]).unwrap();
        assert!(c.syncookies && c.stack_config([0; 6], 1500).syncookies);
        let c = parse(&["--no-syncookies"]).unwrap();
        assert!(!c.syncookies && !c.stack_config([0; 6], 1500).syncookies);
    }

    #[test]
    fn cc_flags() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.cc.global.algo.name, "dctcp-rate");
        let c = parse(&[
            "--cc",
            "timely",
            "--timely-t-low",
            "40us",
            "--cc-interval",
            "3",
            "--dctcp-rate-step",
            "20mbps",
        ])
        .unwrap();
        assert_eq!(c.cc.global.algo.name, "timely");
        assert_eq!(
            c.cc.global
                .to_text()
                .iter()
                .find(|(k, _)| k == "t_low")
                .unwrap()
                .1,
            "40us"
        );
        assert_eq!(c.cc.global.interval_rtts(), 3.0);
        // The base of another algorithm took its flag too.
        let mut cc = c.cc.clone();
        cc.set(None, "dctcp-rate", &[]).unwrap();
        assert_eq!(
            cc.global
                .to_text()
                .iter()
                .find(|(k, _)| k == "step")
                .unwrap()
                .1,
            "20mbps"
        );
        assert_eq!(cc.global.interval_rtts(), 3.0);
        assert!(parse(&["--cc", "reno"]).is_err());
        let e = parse(&["--timely-beta", "7"]).unwrap_err();
        assert!(e.contains("--timely-beta") && e.contains("between"), "{e}");
        let e = parse(&["--cc-min-interval", "soon"]).unwrap_err();
        assert!(e.contains("--cc-min-interval"), "{e}");
    }

    #[test]
    fn socket_and_limit_flags() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.socket_group, "tas");
        assert_eq!(c.limits, crate::apps::Limits::default());
        let c = parse(&["--socket-mode", "600", "--max-apps-per-process", "2"]).unwrap();
        assert_eq!((c.socket_mode, c.limits.per_process), (0o600, 2));
        assert!(parse(&["--socket-mode", "0999"]).is_err());
        assert!(parse(&["--socket-mode", "01777"]).is_err());
        assert!(parse(&["--max-apps-per-uid", "0"]).is_err());
    }
}
