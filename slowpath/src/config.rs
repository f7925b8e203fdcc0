//! `tasd` command line and the settings derived from it.

use crate::stack::StackConfig;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Default attach/control socket when neither `--socket` nor `TAS_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/run/tas/tasd.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NicKind {
    /// AF_XDP socket (copy mode works on veth)
    #[value(name = "af_xdp")]
    AfXdp,
    /// AF_PACKET socket with TPACKET_V2 rings
    #[value(name = "af_packet")]
    AfPacket,
}

/// TAS daemon: user-level TCP fast path and slow path on one interface.
#[derive(Debug, Parser)]
#[command(name = "tasd", version, about, long_about = None)]
pub struct Cli {
    /// Our IPv4 address and prefix, e.g. 198.18.0.1/24. The kernel must not
    /// own this address on the interface: tasd answers ARP for it itself.
    #[arg(long, value_name = "A.B.C.D/N")]
    pub ip: String,
    /// Network interface to own.
    #[arg(long, value_name = "IFNAME")]
    pub iface: String,
    /// NIC backend.
    #[arg(long, value_enum, default_value = "af_xdp")]
    pub nic: NicKind,
    /// Default gateway for destinations outside the local subnet.
    #[arg(long, value_name = "A.B.C.D")]
    pub gateway: Option<String>,
    /// Fast-path cores (only 1 is supported so far).
    #[arg(long, default_value = "1")]
    pub cores: String,
    /// Attach socket for apps and tasctl [env: TAS_SOCKET] [default: /run/tas/tasd.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Shared memory per app, in MiB (rings of all its connections).
    #[arg(long, default_value_t = 256)]
    pub app_mem_mib: u32,
    /// Default receive ring per connection, in KiB.
    #[arg(long, default_value_t = 256)]
    pub rx_buf_kib: u32,
    /// Default send ring per connection, in KiB.
    #[arg(long, default_value_t = 256)]
    pub tx_buf_kib: u32,
    /// Flow table capacity.
    #[arg(long, default_value_t = 65536)]
    pub max_flows: usize,
    /// TIME_WAIT duration in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub time_wait_ms: u64,
    /// Fast-path core spins this long without work before it blocks (µs).
    #[arg(long, default_value_t = 200)]
    pub idle_spin_us: u64,
    /// Largest IP packet (capped by the interface MTU).
    #[arg(long, default_value_t = 1500)]
    pub mtu: u16,
    /// Negotiate ECN with peers.
    #[arg(long)]
    pub ecn: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ip: u32,
    pub prefix_len: u8,
    pub iface: String,
    pub nic: NicKind,
    pub gateway: Option<u32>,
    pub socket: PathBuf,
    pub app_mem: u32,
    pub rx_buf: u32,
    pub tx_buf: u32,
    pub max_flows: usize,
    pub time_wait_ms: u64,
    pub idle_spin_us: u64,
    pub mtu: u16,
    pub ecn: bool,
}

fn parse_ip(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<std::net::Ipv4Addr>().map(u32::from).map_err(|_| format!("{what}: '{s}' is not an IPv4 address"))
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, String> {
        let (addr, prefix) = cli.ip.split_once('/').ok_or_else(|| format!("--ip: '{}' needs a prefix length, e.g. 198.18.0.1/24", cli.ip))?;
        let ip = parse_ip(addr, "--ip")?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("--ip: prefix length '{prefix}' must be 1..32"))?;
        let gateway = cli.gateway.as_deref().map(|g| parse_ip(g, "--gateway")).transpose()?;
        if let Some(g) = gateway {
            let mask = u32::MAX << (32 - prefix_len as u32);
            if g & mask != ip & mask {
                return Err(format!("--gateway: {} is not inside {}", std::net::Ipv4Addr::from(g), cli.ip));
            }
        }
        match cli.cores.as_str() {
            "1" | "1-1" => {}
            other => {
                return Err(format!(
                    "--cores: '{other}': only a single fast-path core is supported in this version (use --cores 1)"
                ))
            }
        }
        if cli.iface.is_empty() || cli.iface.len() > 15 {
            return Err(format!("--iface: '{}' is not a valid interface name", cli.iface));
        }
        let socket = cli
            .socket
            .or_else(|| std::env::var_os("TAS_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        if !(1..=4096).contains(&cli.app_mem_mib) {
            return Err("--app-mem-mib must be 1..4096".into());
        }
        for (v, n) in [(cli.rx_buf_kib, "--rx-buf-kib"), (cli.tx_buf_kib, "--tx-buf-kib")] {
            if !(4..=65536).contains(&v) {
                return Err(format!("{n} must be 4..65536"));
            }
        }
        if cli.max_flows == 0 || cli.max_flows > 4 << 20 {
            return Err("--max-flows must be 1..4194304".into());
        }
        if !(576..=9000).contains(&cli.mtu) {
            return Err("--mtu must be 576..9000".into());
        }
        Ok(Config {
            ip,
            prefix_len,
            iface: cli.iface,
            nic: cli.nic,
            gateway,
            socket,
            app_mem: cli.app_mem_mib.saturating_mul(1 << 20).min(u32::MAX - 4095),
            rx_buf: cli.rx_buf_kib * 1024,
            tx_buf: cli.tx_buf_kib * 1024,
            max_flows: cli.max_flows,
            time_wait_ms: cli.time_wait_ms,
            idle_spin_us: cli.idle_spin_us,
            mtu: cli.mtu,
            ecn: cli.ecn,
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
            time_wait_ns: self.time_wait_ms * 1_000_000,
            ecn: self.ecn,
            ..StackConfig::default()
        }
    }
}
