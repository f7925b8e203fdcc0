//! DPDK backend: one ethdev port driven by the system DPDK (22.11) through
//! `tas-dpdk-sys`. Built only with the `dpdk` cargo feature.
//!
//! **The EAL.** DPDK's environment abstraction layer can be started once per
//! process; the first [`DpdkNic::open`] starts it and later ones reuse it.
//! Two ways to name the port:
//!
//! * a Linux interface and no EAL arguments (the usual case on these
//!   machines, veth included): the EAL starts with
//!   `--no-huge --no-pci --no-shconf --no-telemetry -m MB --lcores 0@(CPUS)`,
//!   so any number of processes can run side by side without huge pages,
//!   and a virtual device for the interface is hot-plugged:
//!   `net_af_xdp<N>,iface=IF` by default, or `net_af_packet<N>,iface=IF`
//!   ([`LinuxVdev`]). (`--in-memory` is refused by the EAL together with
//!   `--no-huge`, which implies legacy memory; `--no-shconf` is what keeps
//!   instances apart.)
//! * explicit EAL arguments (real NICs): they are passed to `rte_eal_init`
//!   as they are (e.g. `-l 2 -a 0000:01:00.0`); the interface name, if any,
//!   is a DPDK port name (`0000:01:00.0`, or a `--vdev` given in the
//!   arguments); without one, the first port not yet opened is used. A name
//!   that is no DPDK port but a Linux interface gets a hot-plugged virtual
//!   device as above.
//!
//! `rte_eal_init` runs on a short-lived thread of its own, so the caller's
//! thread is not pinned to the main lcore's CPU. A thread made by the caller
//! inherits its network namespace: the EAL, and the virtual devices (which
//! look the interface up and open their sockets when probed and set up),
//! see the caller's namespace. Closing a virtual device (detaching its XDP
//! program) happens in the namespace it was opened in, whichever thread
//! drops the NIC.
//!
//! **Multi-queue Linux interfaces.** An XDP socket sees the frames of one
//! RX queue only, and net_af_xdp (22.11) refuses a `queue_count` above the
//! interface's *combined* channels, which a veth (separate RX and TX
//! channels) has none of. So on an interface with several RX queues
//! (`ETHTOOL_GCHANNELS`), unless the device arguments name the queues
//! (`start_queue=`, `queue_count=`), one net_af_xdp device is hot-plugged
//! per RX queue (`start_queue=q`), each with its own port and pool; they
//! share the XDP program that libxdp loads with the first. `recv` reads
//! them all in turn, `send` uses the first (queue 0). net_af_packet sees
//! every queue with one socket.
//!
//! **The port.** One RX and one TX queue (RSS over several queues, one per
//! fast-path core, would be configured in [`DpdkNic::open_with`]: `mq_mode =
//! RTE_ETH_MQ_RX_RSS`, `rss_hf` for IPv4/TCP, one queue pair per core), no
//! offloads: frames carry complete checksums, as with every backend. The MAC
//! is the port's. The MTU is set on the port when it is configured: the
//! Linux interface's MTU for a virtual device, else 1500, limited to what the
//! port and a [`FRAME_SLOT`] allow, and read back from the port. One mbuf
//! pool per port, sized from the descriptor rings plus the bursts in flight.
//!
//! **The data path.** `recv` asks `rte_eth_rx_burst` for as many frames as
//! the batch has room for (rounded up to a multiple of 8, which some drivers
//! need; the few extra are kept for the next call), copies them into the
//! batch and frees the mbufs in bulk. `send` allocates mbufs in bulk, copies
//! the frames in and hands the whole batch (up to [`TX_BURST`] frames per
//! call) to `rte_eth_tx_burst`; mbufs the driver did not take are freed and
//! their frames stay in the caller's batch.
//!
//! **Waiting.** Poll-mode drivers have no descriptor to block on:
//! [`Nic::wait_fd`] returns `None`, so the caller polls (a poll loop that
//! sleeps while idle must not sleep long with this backend: nothing wakes
//! it when frames arrive).
//!
//! **net_af_xdp of DPDK 22.11, worked around here.** (1) It lends the mbuf
//! pool's memory to the kernel as the XDP socket's UMEM assuming the mbufs lie
//! back to back, which `rte_pktmbuf_pool_create` without huge pages does not
//! do (one mbuf per 4 KiB page): frames in mbufs past the UMEM's computed end
//! vanish silently after a few hundred. Its pool is made packed instead
//! (`create_pool`). (2) Closing the port leaves the XDP socket open, which
//! keeps the interface's queue: `close` closes it (`xsk`). (3) It detaches
//! any XDP program of the interface when it stops, so interfaces that
//! already have one are refused. It also uses preferred busy polling
//! (`busy_budget`, default 64: one `recvfrom` per empty poll); with
//! `busy_budget=0` an empty poll may block in `poll()` for up to a second.
//! libbpf/libxdp print notes on stderr when the socket is made (no bpffs
//! mounted: no XDP dispatcher, one program per interface).
//!
//! **Threads.** A `DpdkNic` may move between threads. Threads that are not
//! EAL lcores bypass the mempool's per-lcore cache (every mbuf alloc/free
//! goes to the pool's ring); [`register_thread`] makes the calling thread an
//! lcore to get the cache.

use super::{FrameBatch, Nic, NicError, FRAME_SLOT};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use tas_dpdk_sys as sys;

/// Largest number of frames one `rte_eth_rx_burst` is asked for.
pub const RX_BURST: usize = 64;
/// Largest number of frames one `rte_eth_tx_burst` is given.
pub const TX_BURST: usize = 256;
mod eal;
mod ports;

pub use eal::register_thread;
use eal::*;
use ports::*;

const ETH_HLEN: usize = 14;
/// Room for a VLAN tag beyond MTU + Ethernet header.
const VLAN_HLEN: usize = 4;

/// The DPDK virtual device that attaches a Linux interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxVdev {
    /// `net_af_xdp`: an XDP socket (copy mode on veth). The default.
    AfXdp,
    /// `net_af_packet`: a packet socket with mmap'ed rings.
    AfPacket,
}

impl LinuxVdev {
    fn driver(self) -> &'static str {
        match self {
            LinuxVdev::AfXdp => "net_af_xdp",
            LinuxVdev::AfPacket => "net_af_packet",
        }
    }
}

/// How a [`DpdkNic`] is set up.
#[derive(Clone, Debug)]
pub struct DpdkConfig {
    /// Virtual device for a Linux interface. Default [`LinuxVdev::AfXdp`].
    pub vdev: LinuxVdev,
    /// Extra device arguments for that virtual device, comma-separated
    /// (`force_copy=1`, `busy_budget=0` for net_af_xdp; `qdisc_bypass=1`,
    /// `framecnt=1024` for net_af_packet). Default empty.
    pub vdev_args: String,
    /// RX descriptors (the driver may adjust). Default 1024.
    pub rx_desc: u16,
    /// TX descriptors (the driver may adjust). Default 1024.
    pub tx_desc: u16,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            vdev: LinuxVdev::AfXdp,
            vdev_args: String::new(),
            rx_desc: 1024,
            tx_desc: 1024,
        }
    }
}

/// Counters kept by a [`DpdkNic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpdkStats {
    /// Frames handed to the caller by `recv`.
    pub rx_frames: u64,
    /// Received frames dropped: longer than a [`FRAME_SLOT`], or empty.
    pub rx_bad: u64,
    /// Frames the driver accepted for transmission.
    pub tx_frames: u64,
    /// Frames `send` dropped because they cannot be sent (shorter than an
    /// Ethernet header, longer than MTU + headers).
    pub tx_dropped: u64,
    /// `send` calls that found the mbuf pool empty.
    pub tx_no_mbuf: u64,
}

/// The port's own counters (`rte_eth_stats_get`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpdkPortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the hardware/driver dropped because the RX queue was full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// Starts the EAL for a first NIC (or checks that the running one was
/// started with the same arguments).
fn ensure_eal(
    ctl: &mut Control,
    iface: Option<&str>,
    eal_args: &[String],
    pool_n: u32,
) -> Result<(), NicError> {
    match &ctl.eal {
        EalState::Failed(msg) => return Err(dpdk_err(msg.clone())),
        EalState::Running { args, auto } => {
            if !eal_args.is_empty() && (args.as_slice() != eal_args || *auto) {
                return Err(dpdk_err(format!(
                    "the DPDK EAL already runs in this process with arguments `{}`; it \
                     can start only once per process, so every DPDK NIC of a process \
                     must be opened with the same EAL arguments (`{}` given)",
                    args.join(" "),
                    eal_args.join(" ")
                )));
            }
        }
        EalState::NotStarted => {
            if iface.is_none() && eal_args.is_empty() {
                return Err(dpdk_err(
                    "DPDK: give an interface name (a Linux interface, attached through \
                     net_af_xdp) or EAL arguments naming a port (e.g. `-l 1 -a \
                     0000:01:00.0` for a PCI NIC bound to vfio-pci)"
                        .into(),
                ));
            }
            let (args, auto) = if eal_args.is_empty() {
                // Memory for this pool and a few more like it, for each
                // RX queue of the interface (one device each, see
                // `open_vdev`); --no-huge memory is mapped up front but
                // only used pages count.
                let pool_mb = (pool_n as usize * MBUF_FOOTPRINT) >> 20;
                let queues = iface
                    .filter(|n| is_linux_netdev(n))
                    .and_then(|n| crate::linux::rx_queues(n).ok().flatten())
                    .unwrap_or(1)
                    .clamp(1, 64) as usize;
                (auto_eal_args((4 * pool_mb * queues + 64).max(256)), true)
            } else {
                (eal_args.to_vec(), false)
            };
            tracing::info!(args = %args.join(" "), "starting the DPDK EAL");
            if let Err(msg) = start_eal(&args) {
                ctl.eal = EalState::Failed(msg.clone());
                return Err(dpdk_err(msg));
            }
            ctl.eal = EalState::Running { args, auto };
        }
    }
    Ok(())
}

/// A NIC port driven by DPDK.
pub struct DpdkNic {
    port: u16,
    pool: *mut sys::rte_mempool,
    pool_name: String,
    /// The hot-plugged virtual device (removed on drop), if we made one.
    vdev: Option<String>,
    /// Namespace the port was opened in.
    netns: Option<Netns>,
    /// The XDP sockets (fd, inode) libxdp opened for this port, closed on
    /// drop if the driver leaves them open (see `close`).
    xsk_fds: Vec<(RawFd, u64)>,
    /// `close` ran (the port is gone).
    closed: bool,
    name: String,
    driver: String,
    mac: [u8; 6],
    mtu: usize,
    /// Largest frame `send` accepts.
    max_frame: usize,
    /// Received mbufs not yet handed out (`rx_head..rx_tail`).
    rx_stash: Box<[*mut sys::rte_mbuf; RX_BURST]>,
    rx_head: usize,
    rx_tail: usize,
    tx_mbufs: Box<[*mut sys::rte_mbuf; TX_BURST]>,
    /// Batch index of the frame in each `tx_mbufs` slot.
    tx_index: Box<[u32; TX_BURST]>,
    stats: DpdkStats,
    /// Devices of the interface's other RX queues (net_af_xdp on a
    /// multi-queue Linux interface, see `open_vdev`): received from in turn
    /// with this one, never sent on.
    extra: Vec<DpdkNic>,
    /// The device `recv` reads first (0 = this one, i = `extra[i - 1]`).
    next: usize,
}

// SAFETY: the port, the pool and the mbufs in the stash are owned by this
// value alone (the port is claimed in CONTROL); DPDK's data path may be used
// from any thread as long as one queue is used by one thread at a time, which
// `&mut self` guarantees. Moving the value moves that ownership.
unsafe impl Send for DpdkNic {}

impl DpdkNic {
    /// Opens a port with the default [`DpdkConfig`] (net_af_xdp for a Linux
    /// interface). `iface`: a Linux interface or a DPDK port name (see the
    /// module documentation); `eal_args`: EAL arguments without argv[0],
    /// empty to let this backend choose them (Linux interfaces only).
    pub fn open(iface: Option<&str>, eal_args: &[String]) -> Result<Self, NicError> {
        Self::open_with(iface, eal_args, &DpdkConfig::default())
    }

    /// Opens a port with the given configuration.
    pub fn open_with(
        iface: Option<&str>,
        eal_args: &[String],
        cfg: &DpdkConfig,
    ) -> Result<Self, NicError> {
        let mut ctl = control();
        let rx_desc = cfg.rx_desc.max(32);
        let tx_desc = cfg.tx_desc.max(32);
        let pool_n = pool_size(rx_desc, tx_desc, POOL_CACHE);

        // 1. The EAL.
        ensure_eal(&mut ctl, iface, eal_args, pool_n)?;

        // 2. The port.
        let port = match iface {
            Some(name) => match port_by_name(name) {
                Some(p) if ctl.claimed.contains(&p) => {
                    return Err(dpdk_err(format!(
                        "DPDK port {name} is already open in this process"
                    )))
                }
                Some(p) => p,
                None if is_linux_netdev(name) => {
                    return Self::open_vdev(&mut ctl, name, cfg, rx_desc, tx_desc, pool_n)
                }
                None if eal_args.is_empty() => {
                    return Err(NicError::NoSuchInterface(name.to_string()))
                }
                None => {
                    return Err(dpdk_err(format!(
                        "`{name}` is neither a DPDK port nor a network interface here; DPDK \
                         ports: {}",
                        describe_ports(&ctl.claimed)
                    )))
                }
            },
            None => match all_ports().into_iter().find(|p| !ctl.claimed.contains(p)) {
                Some(p) => p,
                None => {
                    return Err(dpdk_err(format!(
                        "no free DPDK port (ports: {}); name a PCI NIC in the EAL \
                         arguments (`-a 0000:01:00.0`) or give an interface name",
                        describe_ports(&ctl.claimed)
                    )))
                }
            },
        };
        let mut nic = Self::claim(&mut ctl, port, None);
        if let Err((e, _)) = nic.setup(rx_desc, tx_desc, pool_n, None) {
            nic.close(&mut ctl);
            return Err(e);
        }
        nic.log_started(pool_n);
        Ok(nic)
    }

    /// Opens Linux interface `iface` through hot-plugged virtual devices.
    ///
    /// net_af_xdp's socket sees one RX queue, and the driver (22.11) refuses
    /// a `queue_count` above the interface's *combined* channels, which a
    /// veth (RX and TX channels only) has none of. So on an interface with
    /// several RX queues, unless `vdev_args` name the queues
    /// (`start_queue=`/`queue_count=`), one device is hot-plugged per RX
    /// queue (`start_queue=q`): the first loads libxdp's XDP program, the
    /// others add their sockets to its map. The first device is this NIC's,
    /// the others go to `extra`; every frame of every queue is received.
    ///
    /// net_af_xdp cannot bind its socket to a queue that a socket closed just
    /// before still holds (the kernel releases it a little later, see
    /// `close`): then all devices are taken down and made again, for up to
    /// two seconds.
    fn open_vdev(
        ctl: &mut Control,
        iface: &str,
        cfg: &DpdkConfig,
        rx_desc: u16,
        tx_desc: u16,
        pool_n: u32,
    ) -> Result<Self, NicError> {
        let mut nics = Self::open_vdev_devices(ctl, iface, cfg, rx_desc, tx_desc, pool_n)?;
        let mut nic = nics.remove(0);
        nic.extra = nics;
        Ok(nic)
    }

    /// Lanes over Linux interface `iface` (no EAL arguments of the
    /// caller's): one device per RX queue as [`Self::open`] makes them,
    /// queue `q` given to lane `q % n`; each lane receives from its devices
    /// and sends on its first. Fewer lanes than `n` when the interface has
    /// fewer RX queues (the caller feeds the others by software steering).
    /// Several lanes over a real NIC (RSS with its redirection table) are
    /// not implemented: `--dpdk-args` with `n` > 1 is an error.
    pub fn open_lanes(iface: &str, eal_args: &[String], n: usize) -> Result<Vec<Self>, NicError> {
        if n <= 1 {
            return Ok(vec![Self::open(Some(iface), eal_args)?]);
        }
        if !eal_args.is_empty() || !is_linux_netdev(iface) {
            return Err(dpdk_err(format!(
                "{n} DPDK lanes need a Linux interface and no --dpdk-args: spreading a real \
                 NIC's queues over lanes (RSS) is not implemented in this version"
            )));
        }
        let cfg = DpdkConfig::default();
        let mut ctl = control();
        let rx_desc = cfg.rx_desc.max(32);
        let tx_desc = cfg.tx_desc.max(32);
        let pool_n = pool_size(rx_desc, tx_desc, POOL_CACHE);
        ensure_eal(&mut ctl, Some(iface), eal_args, pool_n)?;
        let devices = Self::open_vdev_devices(&mut ctl, iface, &cfg, rx_desc, tx_desc, pool_n)?;
        let lanes_n = n.min(devices.len());
        let mut per: Vec<Vec<DpdkNic>> = (0..lanes_n).map(|_| Vec::new()).collect();
        for (q, d) in devices.into_iter().enumerate() {
            per[q % lanes_n].push(d);
        }
        Ok(per
            .into_iter()
            .map(|mut v| {
                let mut first = v.remove(0);
                first.extra = v;
                first
            })
            .collect())
    }

    /// The devices of `iface`: one, or one per RX queue (see `open_vdev`).
    fn open_vdev_devices(
        ctl: &mut Control,
        iface: &str,
        cfg: &DpdkConfig,
        rx_desc: u16,
        tx_desc: u16,
        pool_n: u32,
    ) -> Result<Vec<Self>, NicError> {
        if cfg.vdev == LinuxVdev::AfXdp {
            // net_af_xdp detaches whatever XDP program the interface has when
            // it closes (or fails to set up): never start on an interface
            // that already has one (another AF_XDP user, a DPDK NIC of this
            // process on the same interface, an XDP filter).
            let ifindex = crate::linux::link_info(iface)?.ifindex;
            if xsk::xdp_attached(ifindex) == Some(true) {
                return Err(dpdk_err(format!(
                    "interface {iface} already has an XDP program attached (another AF_XDP \
                     socket, e.g. a NIC already open on it, or an XDP filter); net_af_xdp \
                     would take it away when it stops. Detach it (`ip link set {iface} xdp \
                     off`) or use the net_af_packet device (LinuxVdev::AfPacket)"
                )));
            }
        }
        let names_queues = cfg.vdev_args.split(',').any(|a| {
            let a = a.trim_start();
            a.starts_with("start_queue") || a.starts_with("queue_count")
        });
        let queues = if cfg.vdev == LinuxVdev::AfXdp && !names_queues {
            crate::linux::rx_queues(iface)?.unwrap_or(1)
        } else {
            1
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match Self::open_queues(ctl, iface, cfg, queues, rx_desc, tx_desc, pool_n) {
                Ok(nics) => {
                    tracing::debug!(iface, attempts, queues, "DPDK virtual device(s) set up");
                    for n in &nics {
                        n.log_started(pool_n);
                    }
                    return Ok(nics);
                }
                Err((e, queue_busy)) => {
                    if !queue_busy || std::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    /// One try at opening the devices of `iface`: one for all (`queues` = 1)
    /// or one per RX queue. On error all are closed again, and the error
    /// says whether it was net_af_xdp failing to bind a queue that is still
    /// held (worth another try: a failing device detaches the XDP program
    /// of the others, so they all start over).
    #[allow(clippy::too_many_arguments)]
    fn open_queues(
        ctl: &mut Control,
        iface: &str,
        cfg: &DpdkConfig,
        queues: u32,
        rx_desc: u16,
        tx_desc: u16,
        pool_n: u32,
    ) -> Result<Vec<Self>, (NicError, bool)> {
        let mut nics: Vec<DpdkNic> = Vec::with_capacity(queues as usize);
        for q in 0..queues {
            let mut qcfg = cfg.clone();
            if queues > 1 {
                let args = cfg.vdev_args.trim_matches(',');
                qcfg.vdev_args = if args.is_empty() {
                    format!("start_queue={q}")
                } else {
                    format!("{args},start_queue={q}")
                };
            }
            // The driver's XDP sockets are the ones that appear meanwhile
            // (opens and closes are serialised by CONTROL).
            let before = xsk::libxdp_sockets();
            let res = hotplug_vdev(iface, &qcfg)
                .map_err(|e| (e, false))
                .and_then(|(port, dev)| {
                    let mut nic = Self::claim(ctl, port, Some(dev));
                    let res = nic.setup(rx_desc, tx_desc, pool_n, Some(iface));
                    nic.xsk_fds = xsk::libxdp_sockets();
                    nic.xsk_fds.retain(|s| !before.contains(s));
                    match res {
                        Ok(()) => Ok(nic),
                        Err(e) => {
                            nic.close(ctl);
                            Err(e)
                        }
                    }
                });
            match res {
                Ok(nic) => nics.push(nic),
                Err(e) => {
                    for mut nic in nics.into_iter().rev() {
                        nic.close(ctl);
                    }
                    return Err(e);
                }
            }
        }
        Ok(nics)
    }

    /// A not yet set up NIC for `port`, which it now owns.
    fn claim(ctl: &mut Control, port: u16, vdev: Option<String>) -> Self {
        ctl.claimed.push(port);
        let pool_name = format!("tas_mbufs{}", ctl.next_pool);
        ctl.next_pool += 1;
        DpdkNic {
            port,
            pool: std::ptr::null_mut(),
            pool_name,
            vdev,
            netns: Netns::current(),
            xsk_fds: Vec::new(),
            closed: false,
            name: port_name(port),
            driver: String::new(),
            mac: [0; 6],
            mtu: 0,
            max_frame: 0,
            rx_stash: Box::new([std::ptr::null_mut(); RX_BURST]),
            rx_head: 0,
            rx_tail: 0,
            tx_mbufs: Box::new([std::ptr::null_mut(); TX_BURST]),
            tx_index: Box::new([0; TX_BURST]),
            stats: DpdkStats::default(),
            extra: Vec::new(),
            next: 0,
        }
    }

    fn log_started(&self, pool_n: u32) {
        tracing::info!(
            port = self.port,
            name = %self.name,
            driver = %self.driver,
            mtu = self.mtu,
            mac = ?self.mac,
            pool = pool_n,
            "DPDK port started"
        );
    }

    /// Creates the mbuf pool, configures and starts the port.
    /// On error, also says whether it was net_af_xdp failing to set up its
    /// socket (worth another try, see `open_vdev`).
    fn setup(
        &mut self,
        rx_desc: u16,
        tx_desc: u16,
        pool_n: u32,
        iface: Option<&str>,
    ) -> Result<(), (NicError, bool)> {
        let port = self.port;
        let name = self.name.clone();
        let fail = |what: &str, rc: i32| {
            (
                dpdk_err(format!(
                    "DPDK port {port} ({name}): {what} failed: {}",
                    strerror(rc)
                )),
                false,
            )
        };
        // SAFETY: all-zero is a valid rte_eth_dev_info; the call fills it.
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid port and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_info_get", rc));
        }
        if !info.driver_name.is_null() {
            // SAFETY: the driver name is a static C string of the driver.
            self.driver = unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned();
        }
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        };

        // net_af_xdp lends the pool's memory to the kernel as its UMEM,
        // assuming the mbufs lie back to back; see `create_pool`. Virtual
        // devices of Linux interfaces need no DMA-able memory at all, so
        // theirs are packed too (half the memory without huge pages).
        let packed = self.driver == "net_af_xdp" || self.vdev.is_some();
        self.pool = create_pool(&self.pool_name, pool_n, socket, packed).map_err(|e| {
            (
                dpdk_err(format!(
                    "DPDK port {port} ({name}): cannot create a pool of {pool_n} mbufs: {e}"
                )),
                false,
            )
        })?;

        // MTU: the Linux interface's for a virtual device on one, else 1500;
        // within what the port and a frame slot allow.
        let linux_mtu = iface.filter(|_| self.vdev.is_some()).and_then(linux_mtu);
        let slot_mtu = (FRAME_SLOT - ETH_HLEN - VLAN_HLEN) as u32;
        let mut mtu = linux_mtu.unwrap_or(1500).min(slot_mtu);
        if info.max_mtu != 0 {
            mtu = mtu.min(u32::from(info.max_mtu));
        }
        mtu = mtu.max(u32::from(info.min_mtu));

        // SAFETY: all-zero is the documented "everything default/off" config.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        // One queue pair, no RSS. For RSS: nb queues = fast-path cores,
        // conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS and
        // conf.rx_adv_conf.rss_conf.rss_hf = IPv4/TCP hash bits (masked by
        // info.flow_type_rss_offloads), and one rx/tx_queue_setup per core.
        conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_NONE;
        conf.txmode.mq_mode = sys::RTE_ETH_MQ_TX_NONE;
        conf.rxmode.mtu = mtu;
        // No RX/TX offloads: frames already carry full checksums.
        conf.rxmode.offloads = 0;
        conf.txmode.offloads = 0;
        // SAFETY: valid port and config.
        let rc = unsafe { sys::rte_eth_dev_configure(port, 1, 1, &conf) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_configure", rc));
        }
        let (mut nrx, mut ntx) = (rx_desc, tx_desc);
        // SAFETY: valid port and out-pointers.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut nrx, &mut ntx) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: valid port, pool; NULL = the driver's default queue config.
        let rc = unsafe {
            sys::rte_eth_rx_queue_setup(port, 0, nrx, socket as u32, std::ptr::null(), self.pool)
        };
        if rc != 0 {
            // net_af_xdp opens its XDP socket here; it fails (EINVAL, the
            // kernel's EBUSY is not passed on) while the queue is still held.
            let (e, _) = fail("rte_eth_rx_queue_setup", rc);
            return Err((e, self.driver == "net_af_xdp"));
        }
        // SAFETY: as above.
        let rc =
            unsafe { sys::rte_eth_tx_queue_setup(port, 0, ntx, socket as u32, std::ptr::null()) };
        if rc != 0 {
            return Err(fail("rte_eth_tx_queue_setup", rc));
        }
        // SAFETY: valid, configured port.
        let rc = unsafe { sys::rte_eth_dev_start(port) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_start", rc));
        }
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port and out-pointer.
        let rc = unsafe { sys::rte_eth_macaddr_get(port, &mut addr) };
        if rc != 0 {
            return Err(fail("rte_eth_macaddr_get", rc));
        }
        self.mac = addr.addr_bytes;
        let mut port_mtu = 0u16;
        // SAFETY: valid port and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_mtu(port, &mut port_mtu) };
        self.mtu = if rc == 0 {
            usize::from(port_mtu)
        } else {
            mtu as usize
        };
        self.max_frame = (self.mtu + ETH_HLEN + VLAN_HLEN)
            .min(FRAME_SLOT)
            .min(usize::from(sys::RTE_MBUF_DEFAULT_DATAROOM));
        tracing::debug!(
            port,
            rx_desc = nrx,
            tx_desc = ntx,
            socket,
            "DPDK queues set up"
        );
        Ok(())
    }

    /// DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// DPDK device name (`net_af_xdp0`, `0000:01:00.0`, ...).
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// DPDK driver name (`net_af_xdp`, `net_ixgbe`, ...).
    pub fn driver_name(&self) -> &str {
        &self.driver
    }

    /// This NIC's counters (summed over its devices).
    pub fn stats(&self) -> DpdkStats {
        let mut t = self.stats;
        for e in &self.extra {
            let s = e.stats;
            t.rx_frames += s.rx_frames;
            t.rx_bad += s.rx_bad;
            t.tx_frames += s.tx_frames;
            t.tx_dropped += s.tx_dropped;
            t.tx_no_mbuf += s.tx_no_mbuf;
        }
        t
    }

    /// How many devices (ports) this NIC reads: one per RX queue of a
    /// multi-queue Linux interface under net_af_xdp, else 1.
    pub fn devices(&self) -> usize {
        1 + self.extra.len()
    }

    /// The port's counters, from the driver (summed over the devices).
    pub fn port_stats(&self) -> Result<DpdkPortStats, NicError> {
        let mut t = self.port_stats_one()?;
        for e in &self.extra {
            let s = e.port_stats_one()?;
            t.ipackets += s.ipackets;
            t.opackets += s.opackets;
            t.ibytes += s.ibytes;
            t.obytes += s.obytes;
            t.imissed += s.imissed;
            t.ierrors += s.ierrors;
            t.oerrors += s.oerrors;
            t.rx_nombuf += s.rx_nombuf;
        }
        Ok(t)
    }

    /// This device's port counters, from the driver.
    fn port_stats_one(&self) -> Result<DpdkPortStats, NicError> {
        // SAFETY: all-zero is a valid rte_eth_stats.
        let mut s: sys::rte_eth_stats = unsafe { std::mem::zeroed() };
        // SAFETY: valid port and out-pointer.
        let rc = unsafe { sys::rte_eth_stats_get(self.port, &mut s) };
        if rc != 0 {
            return Err(dpdk_err(format!(
                "rte_eth_stats_get({}): {}",
                self.port,
                strerror(rc)
            )));
        }
        Ok(DpdkPortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Copies received mbufs from the stash into `batch` (as many as fit),
    /// freeing them. Returns how many frames were appended.
    fn drain_stash(&mut self, batch: &mut FrameBatch) -> usize {
        let before = batch.len();
        let start = self.rx_head;
        while self.rx_head < self.rx_tail && !batch.is_full() {
            let m = self.rx_stash[self.rx_head];
            self.rx_head += 1;
            // SAFETY: `m` is a received mbuf we own until freed below.
            let (len, data_len) = unsafe {
                (
                    sys::tas_rte_pktmbuf_pkt_len(m) as usize,
                    usize::from(sys::tas_rte_pktmbuf_data_len(m)),
                )
            };
            if len == 0 || len > FRAME_SLOT {
                self.stats.rx_bad += 1;
                continue;
            }
            batch.push_with(|slot| {
                if data_len == len {
                    // SAFETY: a single segment: `len` bytes at the data pointer.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            sys::tas_rte_pktmbuf_mtod(m) as *const u8,
                            slot.as_mut_ptr(),
                            len,
                        )
                    };
                } else {
                    // Several segments: let DPDK gather them into the slot.
                    // SAFETY: `slot` has room for len <= FRAME_SLOT bytes.
                    let p = unsafe {
                        sys::tas_rte_pktmbuf_read(m, 0, len as u32, slot.as_mut_ptr().cast())
                    } as *const u8;
                    if p.is_null() {
                        return 0;
                    }
                    if p != slot.as_ptr() {
                        // SAFETY: DPDK returned `len` readable bytes at `p`,
                        // inside the mbuf, not overlapping the slot.
                        unsafe { std::ptr::copy_nonoverlapping(p, slot.as_mut_ptr(), len) };
                    }
                }
                len
            });
        }
        let used = self.rx_head - start;
        if used > 0 {
            // SAFETY: these mbufs were received by us and are not used again.
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.rx_stash.as_mut_ptr().add(start), used as u32)
            };
        }
        if self.rx_head == self.rx_tail {
            self.rx_head = 0;
            self.rx_tail = 0;
        }
        batch.len() - before
    }

    /// Stops and closes the port, removes the virtual device, frees the
    /// pool. The caller holds CONTROL.
    ///
    /// DPDK 22.11's net_af_xdp does not close its XDP socket (which is also
    /// its UMEM's socket) when the port is closed, nor the UMEM socket of a
    /// queue setup that failed: the socket would keep the interface's queue
    /// (and the pool's pages pinned), and the next open on that interface
    /// would fail for as long as this process lives. So the XDP sockets that
    /// appeared while the port was set up (`xsk_fds`) are closed here if they
    /// are still open (same inode: the very same socket). The kernel then
    /// releases the queue asynchronously, which `open_vdev` waits for.
    fn close(&mut self, ctl: &mut Control) {
        if self.closed {
            return;
        }
        self.closed = true;
        for e in &mut self.extra {
            e.close(ctl);
        }
        let port = self.port;
        // As an address: raw pointers are not Send, the work may run on a
        // helper thread (see Netns::run).
        let pool = self.pool as usize;
        self.pool = std::ptr::null_mut();
        let vdev = self.vdev.take();
        let xsk_fds = std::mem::take(&mut self.xsk_fds);
        let stash: Vec<usize> = self.rx_stash[self.rx_head..self.rx_tail]
            .iter()
            .map(|&m| m as usize)
            .collect();
        self.rx_head = 0;
        self.rx_tail = 0;
        let work = move || {
            // SAFETY: the port and pool belong to this NIC, which is going
            // away; nothing uses them afterwards. The stashed mbufs are ours.
            unsafe {
                for m in stash {
                    sys::tas_rte_pktmbuf_free(m as *mut sys::rte_mbuf);
                }
                let rc = sys::rte_eth_dev_stop(port);
                if rc != 0 {
                    tracing::debug!(port, error = %strerror(rc), "rte_eth_dev_stop failed");
                }
                let rc = sys::rte_eth_dev_close(port);
                if rc != 0 {
                    tracing::warn!(port, error = %strerror(rc), "rte_eth_dev_close failed");
                }
                if let Some(dev) = &vdev {
                    let cdev = CString::new(dev.as_str()).expect("vdev name");
                    let rc = sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), cdev.as_ptr());
                    if rc != 0 && rc != -libc::ENOENT {
                        tracing::warn!(dev = %dev, error = %strerror(rc), "removing DPDK vdev failed");
                    }
                }
            }
            let leaked = xsk::close_if_still_open(&xsk_fds);
            if leaked > 0 {
                tracing::debug!(port, leaked, "closed XDP sockets the driver left open");
            }
            if pool != 0 {
                // SAFETY: the port that used the pool is closed; no mbuf of
                // it is referenced any more (stash freed above).
                unsafe { sys::rte_mempool_free(pool as *mut sys::rte_mempool) };
            }
        };
        match &self.netns {
            Some(ns) => ns.run(work),
            None => work(),
        }
        ctl.claimed.retain(|&p| p != port);
    }
}

/// Counts a mempool's memory chunks (for `rte_mempool_mem_iter`).
unsafe extern "C" fn count_chunk(
    _mp: *mut sys::rte_mempool,
    _opaque: *mut libc::c_void,
    _memhdr: *mut sys::rte_mempool_memhdr,
    _idx: libc::c_uint,
) {
}

impl Drop for DpdkNic {
    fn drop(&mut self) {
        if !self.closed {
            let mut ctl = control();
            self.close(&mut ctl);
        }
    }
}

/// The XDP sockets that net_af_xdp leaves open (see `DpdkNic::close`).
mod xsk;

impl DpdkNic {
    /// Receives from this device's port only.
    fn recv_port(&mut self, batch: &mut FrameBatch) -> usize {
        let mut n = self.drain_stash(batch);
        while !batch.is_full() {
            let room = batch.capacity() - batch.len();
            // Some vector drivers want multiples of 8; extra frames wait in
            // the stash for the next call.
            let want = room.next_multiple_of(8).min(RX_BURST);
            // SAFETY: the stash is empty here (drained above, or we would
            // not be looping: a full batch ends the loop), and holds
            // RX_BURST >= `want` pointers.
            let got = unsafe {
                sys::tas_rte_eth_rx_burst(self.port, 0, self.rx_stash.as_mut_ptr(), want as u16)
            } as usize;
            if got == 0 {
                break;
            }
            self.rx_head = 0;
            self.rx_tail = got;
            n += self.drain_stash(batch);
            if got < want {
                break;
            }
        }
        self.stats.rx_frames += n as u64;
        n
    }
}

impl Nic for DpdkNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        if self.extra.is_empty() {
            return Ok(self.recv_port(batch));
        }
        // Every device in turn, starting with a different one each call.
        let k = 1 + self.extra.len();
        let mut n = 0;
        for i in 0..k {
            if batch.is_full() {
                break;
            }
            n += match (self.next + i) % k {
                0 => self.recv_port(batch),
                j => self.extra[j - 1].recv_port(batch),
            };
        }
        self.next = (self.next + 1) % k;
        Ok(n)
    }

    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        let total = batch.len();
        let mut taken = 0;
        while taken < total {
            // Frames [taken, end) go in this burst.
            let end = (taken + TX_BURST).min(total);
            let mut k = 0;
            for i in taken..end {
                let l = batch.frame(i).len();
                if l >= ETH_HLEN && l <= self.max_frame {
                    self.tx_index[k] = i as u32;
                    k += 1;
                }
            }
            if k == 0 {
                self.stats.tx_dropped += (end - taken) as u64;
                taken = end;
                continue;
            }
            // SAFETY: tx_mbufs has room for TX_BURST >= k pointers.
            let rc = unsafe {
                sys::tas_rte_pktmbuf_alloc_bulk(self.pool, self.tx_mbufs.as_mut_ptr(), k as u32)
            };
            let mut have = k;
            if rc != 0 {
                // Pool (nearly) empty: mbufs sit in the TX ring. Take what
                // is there, one by one.
                self.stats.tx_no_mbuf += 1;
                have = 0;
                while have < k {
                    // SAFETY: valid pool.
                    let m = unsafe { sys::tas_rte_pktmbuf_alloc(self.pool) };
                    if m.is_null() {
                        break;
                    }
                    self.tx_mbufs[have] = m;
                    have += 1;
                }
                if have == 0 {
                    break;
                }
            }
            for j in 0..have {
                let frame = batch.frame(self.tx_index[j] as usize);
                let m = self.tx_mbufs[j];
                // SAFETY: `m` is a fresh mbuf with RTE_MBUF_DEFAULT_DATAROOM
                // >= max_frame >= frame.len() bytes of tailroom, so append
                // succeeds and returns that many writable bytes.
                unsafe {
                    let p = sys::tas_rte_pktmbuf_append(m, frame.len() as u16);
                    debug_assert!(!p.is_null());
                    std::ptr::copy_nonoverlapping(frame.as_ptr(), p as *mut u8, frame.len());
                }
            }
            // SAFETY: `have` initialised mbufs; the driver takes ownership of
            // the first `sent`.
            let sent = unsafe {
                sys::tas_rte_eth_tx_burst(self.port, 0, self.tx_mbufs.as_mut_ptr(), have as u16)
            } as usize;
            if sent < have {
                // SAFETY: the rest are still ours.
                unsafe {
                    sys::rte_pktmbuf_free_bulk(
                        self.tx_mbufs.as_mut_ptr().add(sent),
                        (have - sent) as u32,
                    )
                };
            }
            self.stats.tx_frames += sent as u64;
            // Frames up to the first unsent one are taken (unsendable ones
            // among them are dropped).
            let new_taken = if sent == k {
                end
            } else {
                self.tx_index[sent] as usize
            };
            self.stats.tx_dropped += (new_taken - taken - sent) as u64;
            taken = new_taken;
            if sent < k {
                break;
            }
        }
        Ok(taken)
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// Poll-mode drivers have nothing to block on: always `None`.
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    fn kind(&self) -> &'static str {
        "dpdk"
    }
}

/// Tests against veth pairs in private network namespaces (root). The EAL
/// runs once per test binary (auto arguments: no huge pages, no PCI); each
/// test hot-plugs its own virtual device. The peer is an AF_PACKET socket
/// ([`super::af_packet::AfPacketNic`]).
#[cfg(test)]
mod tests;
