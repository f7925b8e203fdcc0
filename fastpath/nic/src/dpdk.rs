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

/// Process-wide DPDK state, behind [`CONTROL`]: DPDK's control path is not
/// thread-safe, so opening and closing ports is serialised.
struct Control {
    eal: EalState,
    /// Suffix for the next mbuf pool's name.
    next_pool: u32,
    /// Ports owned by a live DpdkNic.
    claimed: Vec<u16>,
}

enum EalState {
    NotStarted,
    /// Running with these arguments (argv[0] left out); `auto` when they
    /// were made up by us rather than given by the caller.
    Running {
        args: Vec<String>,
        auto: bool,
    },
    /// `rte_eal_init` failed; DPDK cannot be started again in this process.
    Failed(String),
}

static CONTROL: Mutex<Control> = Mutex::new(Control {
    eal: EalState::NotStarted,
    next_pool: 0,
    claimed: Vec::new(),
});

fn control() -> std::sync::MutexGuard<'static, Control> {
    CONTROL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno.
    unsafe { sys::tas_rte_errno() }
}

fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string, which we copy at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(errnum.abs())) }
        .to_string_lossy()
        .into_owned()
}

fn dpdk_err(msg: String) -> NicError {
    NicError::Unsupported(msg)
}

/// CPUs the calling thread may run on, as a DPDK cpu list (`0,1,3`).
fn allowed_cpus() -> String {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let mut cpus = Vec::new();
    if rc == 0 {
        for c in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: c < CPU_SETSIZE.
            if unsafe { libc::CPU_ISSET(c, &set) } {
                cpus.push(c.to_string());
            }
        }
    }
    if cpus.is_empty() {
        "0".to_string()
    } else {
        cpus.join(",")
    }
}

/// The EAL arguments used when the caller gives none.
fn auto_eal_args(mem_mb: usize) -> Vec<String> {
    vec![
        "--no-huge".into(),
        "--no-pci".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        "--iova-mode=va".into(),
        "-m".into(),
        mem_mb.to_string(),
        // Main lcore 0 may run on every CPU the caller may: nothing pinned.
        format!("--lcores=0@({})", allowed_cpus()),
        "--log-level=warning".into(),
    ]
}

/// What to try when `rte_eal_init` fails with `errno`.
fn eal_hint(errno: i32) -> &'static str {
    match errno {
        libc::EACCES | libc::EPERM => {
            "permission denied: run as root (DPDK needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK \
             and CAP_SYS_ADMIN for AF_XDP/AF_PACKET virtual devices and huge pages)"
        }
        libc::EAGAIN => {
            "huge pages could not be reserved: add `--no-huge -m 256` to the EAL arguments, or \
             reserve huge pages (echo 512 > /proc/sys/vm/nr_hugepages)"
        }
        libc::ENOMEM => {
            "not enough memory: lower `-m`, or reserve more huge pages; see the EAL's message \
             on stderr"
        }
        libc::EPROTO => "scanning the PCI bus failed: add `--no-pci` if no PCI NIC is used",
        libc::ENOEXEC => {
            "a device failed to probe: check the `-a`/`--vdev` arguments, that the device \
             exists and is bound to a DPDK-capable driver (vfio-pci), and the EAL's message on \
             stderr"
        }
        libc::ENODEV => "memory or bus setup failed: see the EAL's message on stderr",
        libc::ENOTSUP => "a requested feature is not supported on this machine",
        libc::EALREADY => "the EAL was already started in this process (outside tas)",
        _ => {
            "an EAL argument is invalid or unusable: see the EAL's message on stderr and check \
             `--dpdk-args` (e.g. `--dpdk-args \"-l 1 -a 0000:01:00.0\"`)"
        }
    }
}

/// Starts the EAL with `args` (without argv[0]) on a thread of its own.
fn start_eal(args: &[String]) -> Result<(), String> {
    let mut argv_owned = vec!["tas-fastpath".to_string()];
    argv_owned.extend(args.iter().cloned());
    let mut cstrs = Vec::with_capacity(argv_owned.len());
    for a in &argv_owned {
        cstrs.push(
            CString::new(a.as_str())
                .map_err(|_| format!("EAL argument {a:?} contains a NUL byte"))?,
        );
    }
    let shown = args.join(" ");
    // A thread made here inherits the caller's network namespace. The EAL
    // makes it the main lcore (setting its CPU affinity); it ends right after.
    let res = std::thread::Builder::new()
        .name("tas-dpdk-eal".into())
        .spawn(move || {
            // The EAL may keep pointers into argv (getopt permutes it, some
            // options are referenced later): leak it for the process's life.
            let argv: &mut [*mut c_char] = cstrs
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>()
                .leak();
            // SAFETY: argc/argv describe valid NUL-terminated strings that live
            // forever; CONTROL (held by our caller) makes this the only call.
            let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
            if rc < 0 {
                Err(rte_errno())
            } else {
                Ok(())
            }
        })
        .map_err(|e| format!("cannot spawn the EAL thread: {e}"))?
        .join()
        .map_err(|_| "rte_eal_init panicked".to_string())?;
    res.map_err(|errno| {
        format!(
            "DPDK EAL did not start (rte_eal_init: {}) with arguments `{shown}`: {}",
            strerror(errno),
            eal_hint(errno)
        )
    })
}

/// Makes the calling thread an EAL lcore, so that its mbuf allocations and
/// frees use the mempool's per-lcore cache. Returns the lcore id. Call it on
/// the thread that polls the NIC, after the first [`DpdkNic::open`]; lcores
/// are a limited resource (RTE_MAX_LCORE, 128): use it for long-lived threads.
pub fn register_thread() -> Result<u32, NicError> {
    // SAFETY: plain query of the calling thread's lcore id.
    let id = unsafe { sys::tas_rte_lcore_id() };
    if id != sys::LCORE_ID_ANY {
        return Ok(id);
    }
    if matches!(control().eal, EalState::NotStarted) {
        return Err(dpdk_err(
            "register_thread: the EAL is not running (open a DpdkNic first)".into(),
        ));
    }
    // SAFETY: registers the calling thread with the running EAL.
    if unsafe { sys::rte_thread_register() } != 0 {
        return Err(dpdk_err(format!(
            "rte_thread_register: {}",
            strerror(rte_errno())
        )));
    }
    // SAFETY: as above.
    Ok(unsafe { sys::tas_rte_lcore_id() })
}

/// The network namespace of the calling thread, to close virtual devices
/// in the namespace that they were opened in.
struct Netns {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

impl Netns {
    const PATH: &'static str = "/proc/thread-self/ns/net";

    fn current() -> Option<Netns> {
        let f = std::fs::File::open(Self::PATH).ok()?;
        let m = f.metadata().ok()?;
        Some(Netns {
            dev: m.dev(),
            ino: m.ino(),
            fd: f.into(),
        })
    }

    fn is_current(&self) -> bool {
        match std::fs::metadata(Self::PATH) {
            Ok(m) => m.dev() == self.dev && m.ino() == self.ino,
            Err(_) => true,
        }
    }

    /// Runs `f` in this namespace (on a helper thread if the caller's
    /// namespace differs).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        if self.is_current() {
            return f();
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this helper thread only, with a namespace fd
                // we own; the thread ends after `f`.
                let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    tracing::warn!(
                        error = %std::io::Error::last_os_error(),
                        "setns back to the DPDK device's namespace failed; closing it from here"
                    );
                }
                f()
            })
            .join()
            .expect("closing DPDK port panicked")
        })
    }
}

/// Is `name` a network interface in the calling thread's namespace?
fn is_linux_netdev(name: &str) -> bool {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return false;
    }
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Port id of the ethdev named `name`, if any.
fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut port = 0u16;
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut port) };
    (rc == 0).then_some(port)
}

fn port_name(port: u16) -> String {
    let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: `buf` holds RTE_ETH_NAME_MAX_LEN bytes, as the API requires.
    if unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) } != 0 {
        return format!("port{port}");
    }
    // SAFETY: the name is NUL-terminated inside `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// All valid ports, by id.
fn all_ports() -> Vec<u16> {
    let mut v = Vec::new();
    // SAFETY: plain queries of the ethdev port table.
    let mut p = unsafe { sys::rte_eth_find_next(0) };
    while (p as u32) < sys::RTE_MAX_ETHPORTS {
        v.push(p);
        // SAFETY: as above.
        p = unsafe { sys::rte_eth_find_next(p + 1) };
    }
    v
}

fn describe_ports(claimed: &[u16]) -> String {
    let ports: Vec<String> = all_ports()
        .into_iter()
        .map(|p| {
            let used = if claimed.contains(&p) {
                " (in use)"
            } else {
                ""
            };
            format!("{p}: {}{used}", port_name(p))
        })
        .collect();
    if ports.is_empty() {
        "none".into()
    } else {
        ports.join(", ")
    }
}

/// The mbuf pool size for the given rings: every descriptor holding an mbuf,
/// the bursts in flight, the per-lcore caches, and slack; rounded up to
/// 2^k - 1 (the size a mempool uses best).
fn pool_size(rx_desc: u16, tx_desc: u16, cache: u32) -> u32 {
    let need = u32::from(rx_desc) * 2
        + u32::from(tx_desc)
        + (RX_BURST + TX_BURST) as u32
        + 4 * cache
        + 512;
    (need + 1).next_power_of_two() - 1
}

const POOL_CACHE: u32 = 256;

/// Bytes one mbuf may take in the pool: a 4 KiB page each in a pool made by
/// `rte_pktmbuf_pool_create` without huge pages (packed pools take 2368).
const MBUF_FOOTPRINT: usize = 4096;

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
                Ok(mut nics) => {
                    tracing::debug!(iface, attempts, queues, "DPDK virtual device(s) set up");
                    for n in &nics {
                        n.log_started(pool_n);
                    }
                    let mut nic = nics.remove(0);
                    nic.extra = nics;
                    return Ok(nic);
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

/// Creates a pool of `n` mbufs with the default data room
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`).
///
/// `packed`: for net_af_xdp. That driver registers the pool's memory with
/// the kernel as the XDP socket's UMEM and computes each mbuf's place in it
/// as if all objects were back to back (`populated_size * object size` from
/// the first chunk). `rte_pktmbuf_pool_create` wants objects that do not
/// cross a page where memory is not IOVA-contiguous, which without huge
/// pages (4 KiB pages, `--no-huge`) spaces them one per page; mbufs beyond the
/// UMEM's computed end are then refused by the kernel, and frames sent in
/// them silently vanish (and their mbufs leak) after the first few hundred.
/// So the pool is made by hand with `RTE_MEMPOOL_F_NO_IOVA_CONTIG` (no page
/// constraint: nothing DMAs into it, the kernel copies), and must come in
/// one chunk.
fn create_pool(
    name: &str,
    n: u32,
    socket: i32,
    packed: bool,
) -> Result<*mut sys::rte_mempool, String> {
    let cname = CString::new(name).expect("pool name");
    let describe = |e: i32| {
        format!(
            "{}{}",
            strerror(e),
            if e == libc::ENOMEM {
                " (give the EAL more memory: `-m MB`, or use fewer descriptors)"
            } else {
                ""
            }
        )
    };
    if !packed {
        // SAFETY: valid name; the EAL runs.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                POOL_CACHE,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE,
                socket,
            )
        };
        return if mp.is_null() {
            Err(describe(rte_errno()))
        } else {
            Ok(mp)
        };
    }
    // What rte_pktmbuf_pool_create does, with one flag more.
    let elt_size =
        std::mem::size_of::<sys::rte_mbuf>() as u32 + u32::from(sys::RTE_MBUF_DEFAULT_BUF_SIZE);
    // SAFETY: valid name; the EAL runs.
    let mp = unsafe {
        sys::rte_mempool_create_empty(
            cname.as_ptr(),
            n,
            elt_size,
            POOL_CACHE,
            std::mem::size_of::<sys::rte_pktmbuf_pool_private>() as u32,
            socket,
            sys::RTE_MEMPOOL_F_NO_IOVA_CONTIG,
        )
    };
    if mp.is_null() {
        return Err(describe(rte_errno()));
    }
    let fail = |mp: *mut sys::rte_mempool, msg: String| {
        // SAFETY: `mp` was created above and is not used afterwards.
        unsafe { sys::rte_mempool_free(mp) };
        Err(msg)
    };
    // SAFETY: `mp` is a fresh, empty pool; the ops name is DPDK's own string.
    let rc = unsafe {
        sys::rte_mempool_set_ops_byname(mp, sys::rte_mbuf_best_mempool_ops(), std::ptr::null_mut())
    };
    if rc != 0 {
        return fail(mp, format!("rte_mempool_set_ops_byname: {}", strerror(rc)));
    }
    let mut private = sys::rte_pktmbuf_pool_private {
        mbuf_data_room_size: sys::RTE_MBUF_DEFAULT_BUF_SIZE,
        mbuf_priv_size: 0,
        flags: 0,
    };
    // SAFETY: `private` describes this pool's mbufs; pool_init copies it
    // into the pool's private area (sized for it above).
    unsafe {
        sys::rte_pktmbuf_pool_init(
            mp,
            (&mut private as *mut sys::rte_pktmbuf_pool_private).cast(),
        )
    };
    // SAFETY: valid, empty pool.
    let rc = unsafe { sys::rte_mempool_populate_default(mp) };
    if rc < 0 {
        return fail(mp, describe(-rc));
    }
    // SAFETY: the callback does nothing; the count is the return value.
    let chunks = unsafe { sys::rte_mempool_mem_iter(mp, Some(count_chunk), std::ptr::null_mut()) };
    if chunks != 1 {
        return fail(
            mp,
            format!(
                "the pool's memory came in {chunks} pieces, net_af_xdp needs one (give the \
                 EAL more memory: `-m MB`)"
            ),
        );
    }
    // SAFETY: initialises every mbuf of the populated pool, as
    // rte_pktmbuf_pool_create does.
    unsafe { sys::rte_mempool_obj_iter(mp, Some(sys::rte_pktmbuf_init), std::ptr::null_mut()) };
    Ok(mp)
}

/// MTU of the Linux interface `name` in the calling thread's namespace
/// (an ioctl: /sys/class/net shows the namespace sysfs was mounted in).
fn linux_mtu(name: &str) -> Option<u32> {
    crate::linux::link_info(name).ok().map(|l| l.mtu as u32)
}

/// Hot-plugs the virtual device that attaches Linux interface `iface`.
/// Returns its port and device name.
fn hotplug_vdev(iface: &str, cfg: &DpdkConfig) -> Result<(u16, String), NicError> {
    if iface.contains([',', '=']) {
        return Err(NicError::NoSuchInterface(iface.to_string()));
    }
    let driver = cfg.vdev.driver();
    // The first unused name: drivers are matched by the name's prefix.
    let dev = (0..sys::RTE_MAX_ETHPORTS)
        .map(|i| format!("{driver}{i}"))
        .find(|n| port_by_name(n).is_none())
        .ok_or_else(|| dpdk_err("DPDK: all ethdev ports are in use".into()))?;
    let mut args = format!("iface={iface}");
    if !cfg.vdev_args.is_empty() {
        args.push(',');
        args.push_str(cfg.vdev_args.trim_matches(','));
    }
    let cdev = CString::new(dev.as_str()).expect("vdev name");
    let cargs = CString::new(args.as_str())
        .map_err(|_| dpdk_err(format!("vdev arguments {args:?} contain a NUL byte")))?;
    // SAFETY: valid C strings; the EAL runs; CONTROL is held by the caller.
    let rc = unsafe { sys::rte_eal_hotplug_add(c"vdev".as_ptr(), cdev.as_ptr(), cargs.as_ptr()) };
    if rc != 0 {
        let other = match cfg.vdev {
            LinuxVdev::AfXdp => "the net_af_packet virtual device (LinuxVdev::AfPacket)",
            LinuxVdev::AfPacket => "the net_af_xdp virtual device (LinuxVdev::AfXdp)",
        };
        return Err(dpdk_err(format!(
            "DPDK could not attach interface {iface} as `{dev},{args}`: {} (see the driver's \
             message on stderr; check that {iface} is up, that we run as root, or try {other})",
            strerror(rc)
        )));
    }
    match port_by_name(&dev) {
        Some(p) => Ok((p, dev)),
        None => {
            // SAFETY: as above; undo the hot-plug.
            unsafe { sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), cdev.as_ptr()) };
            Err(dpdk_err(format!(
                "DPDK device {dev} was created but has no ethdev port"
            )))
        }
    }
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
mod xsk {
    use std::os::fd::RawFd;
    use std::os::unix::fs::MetadataExt;

    const AF_XDP: libc::c_int = 44;

    /// This process's XDP sockets without close-on-exec, with their inodes:
    /// the ones libxdp (under net_af_xdp) makes. Everything in this
    /// workspace, and Rust's standard library, opens descriptors with
    /// close-on-exec, so these are not ours.
    pub(super) fn libxdp_sockets() -> Vec<(RawFd, u64)> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let fd: RawFd = e.ok()?.file_name().to_str()?.parse().ok()?;
            let mut domain: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reads one int into `domain`; `fd` may be any
            // descriptor (a non-socket just fails).
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_DOMAIN,
                    (&mut domain as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if rc != 0 || domain != AF_XDP {
                return None;
            }
            // SAFETY: F_GETFD only reads the descriptor flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
                return None;
            }
            let ino = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?.ino();
            Some((fd, ino))
        })
        .collect()
    }

    /// Does interface `ifindex` (in the calling thread's namespace) have an
    /// XDP program attached? Asks the kernel with RTM_GETLINK (IFLA_XDP).
    /// `None` if the answer cannot be had.
    pub(super) fn xdp_attached(ifindex: u32) -> Option<bool> {
        use std::os::fd::AsRawFd;
        const RTM_GETLINK: u16 = 18;
        const RTM_NEWLINK: u16 = 16;
        const IFLA_XDP: u16 = 43;
        const IFLA_XDP_ATTACHED: u16 = 2;
        const NLA_TYPE_MASK: u16 = 0x3fff;
        #[repr(C)]
        struct Request {
            nlh: libc::nlmsghdr,
            // struct ifinfomsg
            family: u8,
            pad: u8,
            ty: u16,
            index: i32,
            flags: u32,
            change: u32,
        }
        let sock = crate::linux::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
        .ok()?;
        // SAFETY: all-zero is a valid nlmsghdr.
        let mut req = Request {
            nlh: unsafe { std::mem::zeroed() },
            family: libc::AF_UNSPEC as u8,
            pad: 0,
            ty: 0,
            index: ifindex as i32,
            flags: 0,
            change: 0,
        };
        req.nlh.nlmsg_len = std::mem::size_of::<Request>() as u32;
        req.nlh.nlmsg_type = RTM_GETLINK;
        req.nlh.nlmsg_flags = libc::NLM_F_REQUEST as u16;
        req.nlh.nlmsg_seq = 1;
        // SAFETY: sends the request struct, of the size given.
        let rc = unsafe {
            libc::send(
                sock.as_raw_fd(),
                (&req as *const Request).cast(),
                std::mem::size_of::<Request>(),
                0,
            )
        };
        if rc < 0 {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 32 {
            return None;
        }
        let msg = &buf[..n as usize];
        let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let len = (u32::from_ne_bytes(msg[0..4].try_into().ok()?) as usize).min(msg.len());
        if u16_at(msg, 4) != RTM_NEWLINK {
            return None;
        }
        // Attributes follow the 16-byte nlmsghdr and the 16-byte ifinfomsg.
        let mut a = 32;
        while a + 4 <= len {
            let alen = u16_at(msg, a) as usize;
            let aty = u16_at(msg, a + 2) & NLA_TYPE_MASK;
            if alen < 4 || a + alen > len {
                break;
            }
            if aty == IFLA_XDP {
                let mut b = a + 4;
                while b + 4 <= a + alen {
                    let blen = u16_at(msg, b) as usize;
                    let bty = u16_at(msg, b + 2) & NLA_TYPE_MASK;
                    if blen < 4 || b + blen > a + alen {
                        break;
                    }
                    if bty == IFLA_XDP_ATTACHED && blen >= 5 {
                        return Some(msg[b + 4] != 0);
                    }
                    b += (blen + 3) & !3;
                }
                return Some(false);
            }
            a += (alen + 3) & !3;
        }
        Some(false)
    }

    /// Closes those of `fds` that still refer to the same socket (inode).
    /// Returns how many were closed.
    pub(super) fn close_if_still_open(fds: &[(RawFd, u64)]) -> usize {
        let mut closed = 0;
        for &(fd, ino) in fds {
            let same = std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .map(|m| m.ino() == ino)
                .unwrap_or(false);
            if same {
                // SAFETY: `fd` is still the XDP socket that the driver
                // opened for the port just closed, which nothing uses any
                // more (the driver freed its state without closing it).
                unsafe { libc::close(fd) };
                closed += 1;
            }
        }
        closed
    }
}

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
mod tests {
    use super::*;
    use crate::af_packet::AfPacketNic;
    use crate::testnet::*;
    use std::time::Duration;

    fn cfg(vdev: LinuxVdev) -> DpdkConfig {
        DpdkConfig {
            vdev,
            ..DpdkConfig::default()
        }
    }

    /// DPDK on `da`, an AF_PACKET socket on `db`, a veth pair between.
    fn pair(net: &TestNet, vdev: LinuxVdev) -> (DpdkNic, AfPacketNic) {
        net.veth("da", "db");
        net.run(|| {
            let d = DpdkNic::open_with(Some("da"), &[], &cfg(vdev))
                .unwrap_or_else(|e| panic!("open {vdev:?} on da: {e}"));
            let p = AfPacketNic::open("db").unwrap();
            (d, p)
        })
    }

    fn batch_of_32(tag: &str, vdev: LinuxVdev) {
        let net = TestNet::new(tag);
        let (mut d, mut p) = pair(&net, vdev);
        assert_eq!(d.kind(), "dpdk");
        check_batch_of_32(&mut d, &mut p);
        check_batch_of_32(&mut p, &mut d);
        let st = d.stats();
        assert_eq!(st.tx_frames, 32);
        assert_eq!(st.rx_bad, 0);
        assert_eq!(st.tx_dropped, 0);
        let ps = d.port_stats().unwrap();
        assert_eq!(ps.opackets, 32, "{ps:?}");
        assert!(ps.ipackets >= 32, "{ps:?}");
    }

    #[test]
    fn af_xdp_batch_of_32_arrives_in_order() {
        batch_of_32("dx32", LinuxVdev::AfXdp);
    }

    #[test]
    fn af_packet_batch_of_32_arrives_in_order() {
        batch_of_32("dp32", LinuxVdev::AfPacket);
    }

    #[test]
    fn af_xdp_many_batches_wrap_the_rings() {
        let net = TestNet::new("dxwrap");
        net.veth("da", "db");
        let small = DpdkConfig {
            rx_desc: 64,
            tx_desc: 64,
            ..DpdkConfig::default()
        };
        let (mut d, mut p) = net.run(|| {
            (
                DpdkNic::open_with(Some("da"), &[], &small).unwrap(),
                AfPacketNic::open("db").unwrap(),
            )
        });
        check_many(&mut d, &mut p, 30, 48);
        check_many(&mut p, &mut d, 30, 48);
    }

    #[test]
    fn af_packet_many_batches_wrap_the_rings() {
        let net = TestNet::new("dpwrap");
        let (mut d, mut p) = pair(&net, LinuxVdev::AfPacket);
        check_many(&mut d, &mut p, 30, 48);
        check_many(&mut p, &mut d, 30, 48);
    }

    #[test]
    fn arp_crosses_both_ways() {
        for (tag, vdev) in [("dxarp", LinuxVdev::AfXdp), ("dparp", LinuxVdev::AfPacket)] {
            let net = TestNet::new(tag);
            let (mut d, mut p) = pair(&net, vdev);
            check_arp_crosses(&mut d, &mut p);
            check_arp_crosses(&mut p, &mut d);
        }
    }

    #[test]
    fn reports_mac_and_mtu_of_the_interface() {
        for (tag, vdev) in [
            ("dxinfo", LinuxVdev::AfXdp),
            ("dpinfo", LinuxVdev::AfPacket),
        ] {
            let net = TestNet::new(tag);
            net.veth("da", "db");
            net.ip(&[
                "link",
                "set",
                "da",
                "mtu",
                "1400",
                "address",
                "02:11:22:33:44:55",
            ]);
            let nic = net.run(|| DpdkNic::open_with(Some("da"), &[], &cfg(vdev)).unwrap());
            assert_eq!(nic.mac(), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55], "{vdev:?}");
            assert_eq!(nic.mtu(), 1400, "{vdev:?}");
            assert_eq!(nic.wait_fd(), None, "poll mode");
            assert_eq!(nic.driver_name(), vdev.driver());
            assert!(nic.device_name().starts_with(vdev.driver()));
        }
    }

    #[test]
    fn oversized_and_runt_frames_are_dropped_not_sent() {
        let net = TestNet::new("dxbig");
        let (mut d, mut p) = pair(&net, LinuxVdev::AfXdp);
        let big = test_frame(p.mac(), d.mac(), 1, 1600);
        let ok = test_frame(p.mac(), d.mac(), 2, 100);
        let runt = vec![0u8; 10];
        let ok2 = test_frame(p.mac(), d.mac(), 3, 1514);
        send_all(&mut d, &[big, ok.clone(), runt, ok2.clone()]);
        assert_eq!(d.stats().tx_dropped, 2);
        assert_eq!(d.stats().tx_frames, 2);
        let got = recv_matching(&mut p, 3, Duration::from_millis(500), is_test_from(d.mac()));
        assert_eq!(got, vec![ok, ok2]);
    }

    #[test]
    fn small_batches_keep_extra_frames_for_the_next_recv() {
        // A batch with room for 3 still gets every frame, in order: the
        // driver is asked for 8 and the rest wait in the stash.
        let net = TestNet::new("dxsmall");
        let (mut d, mut p) = pair(&net, LinuxVdev::AfXdp);
        let frames: Vec<Vec<u8>> = (0..20)
            .map(|i| test_frame(d.mac(), p.mac(), i, 80))
            .collect();
        send_all(&mut p, &frames);
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::new();
        let mut b = FrameBatch::new(3);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while got.len() < 20 && std::time::Instant::now() < deadline {
            b.clear();
            d.recv(&mut b).unwrap();
            assert!(b.len() <= 3);
            got.extend(
                b.iter()
                    .filter(|f| is_test_from(p.mac())(f))
                    .map(|f| f.to_vec()),
            );
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn interoperates_with_linux_kernel() {
        let net = TestNet::new("dxkern");
        net.veth("da", "db");
        let mut nic = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
        check_kernel_interop(&net, "db", &mut nic);
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let net = TestNet::new("dxnone");
        // Start the EAL (if no other test has) so that the lookup is reached.
        net.veth("da", "db");
        let mut d = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
        for name in ["tas-no-such-if0", "a/b", "da,iface=lo"] {
            match net.run(|| DpdkNic::open(Some(name), &[])) {
                Err(NicError::NoSuchInterface(n)) => assert_eq!(n, name),
                Err(e) => panic!("{name}: unexpected error {e}"),
                Ok(_) => panic!("{name}: opened?"),
            }
        }
        // The same interface twice: refused before anything is set up (the
        // driver would detach the first one's XDP program when it fails).
        let err = net
            .run(|| DpdkNic::open(Some("da"), &[]))
            .err()
            .expect("two XDP sockets on one queue?")
            .to_string();
        assert!(err.contains("already has an XDP program"), "{err}");
        let mut p = net.run(|| AfPacketNic::open("db").unwrap());
        check_batch_of_32(&mut d, &mut p);
        check_batch_of_32(&mut p, &mut d);
        // Other EAL arguments than the running EAL's are refused, clearly.
        let err = net
            .run(|| DpdkNic::open(Some("da"), &["-l".into(), "0".into()]))
            .err()
            .expect("different EAL args accepted")
            .to_string();
        assert!(err.contains("already runs"), "{err}");
    }

    #[test]
    fn leaves_an_interface_with_another_xdp_user_alone() {
        // Another AF_XDP user (this workspace's own backend) on `da`: DPDK
        // refuses the interface, and the other one keeps receiving.
        let net = TestNet::new("dxother");
        net.veth("da", "db");
        let (mut x, mut p) = net.run(|| {
            (
                super::super::af_xdp::AfXdpNic::open("da", 0).unwrap(),
                AfPacketNic::open("db").unwrap(),
            )
        });
        let err = net
            .run(|| DpdkNic::open(Some("da"), &[]))
            .err()
            .expect("opened an interface with an XDP program")
            .to_string();
        assert!(err.contains("already has an XDP program"), "{err}");
        check_batch_of_32(&mut p, &mut x);
    }

    #[test]
    fn nics_can_be_opened_again_after_close() {
        let net = TestNet::new("dxreopen");
        net.veth("da", "db");
        for round in 0..3 {
            let (mut d, mut p) = net.run(|| {
                (
                    DpdkNic::open(Some("da"), &[]).unwrap(),
                    AfPacketNic::open("db").unwrap(),
                )
            });
            check_many(&mut d, &mut p, 1, 8);
            check_many(&mut p, &mut d, 1, 8);
            // Dropped here, outside the namespace: closing goes back into it.
            let _ = round;
        }
    }

    /// Runs test `name` of this test binary in a child process (the EAL can
    /// start only once per process) with `TAS_DPDK_CHILD` and `env` set.
    fn run_child(name: &str, env: &[(&str, &str)]) {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                &format!("dpdk::tests::{name}"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TAS_DPDK_CHILD", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child {name} failed:\n{text}");
        assert!(
            text.contains("1 passed"),
            "child {name} ran no test:\n{text}"
        );
    }

    use tas_testkit::netns::in_netns;

    #[test]
    fn eal_start_failures_are_explained() {
        run_child("child_eal_start_failures", &[]);
    }

    #[test]
    #[ignore = "run in a child process by eal_start_failures_are_explained"]
    fn child_eal_start_failures() {
        if std::env::var_os("TAS_DPDK_CHILD").is_none() {
            return;
        }
        let err = DpdkNic::open(None, &[]).err().unwrap().to_string();
        assert!(err.contains("give an interface name"), "{err}");
        let bad = vec!["--no-huge".to_string(), "--no-such-eal-option".to_string()];
        let err = DpdkNic::open(None, &bad).err().unwrap().to_string();
        assert!(
            err.contains("rte_eal_init")
                && err.contains("--no-such-eal-option")
                && err.contains("--dpdk-args"),
            "{err}"
        );
        // The EAL cannot be started again: every later open says why.
        let err2 = DpdkNic::open(Some("lo"), &[]).err().unwrap().to_string();
        assert_eq!(err2, err);
    }

    /// Explicit EAL arguments (as for a real NIC) are passed through: here
    /// they create a net_af_packet device themselves, and the port is named
    /// by its DPDK name; a Linux interface that is no DPDK port still gets a
    /// hot-plugged net_af_xdp device on that EAL.
    #[test]
    fn explicit_eal_args_are_passed_through() {
        let net = TestNet::new("dxargs");
        net.veth("da", "db");
        net.veth("dc", "dd");
        run_child("child_explicit_eal_args", &[("TAS_DPDK_NS", &net.ns)]);
    }

    #[test]
    #[ignore = "run in a child process by explicit_eal_args_are_passed_through"]
    fn child_explicit_eal_args() {
        let Some(ns) = std::env::var_os("TAS_DPDK_CHILD").and(std::env::var("TAS_DPDK_NS").ok())
        else {
            return;
        };
        let args: Vec<String> = [
            "--no-huge",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
            "-m",
            "256",
            "-l",
            "0",
            "--log-level=warning",
            "--vdev=net_af_packet7,iface=da",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        in_netns(&ns, || {
            let mut d = DpdkNic::open(Some("net_af_packet7"), &args).unwrap();
            assert_eq!(d.driver_name(), "net_af_packet");
            assert!(d.vdev.is_none(), "the EAL made this device, not us");
            let mut p = AfPacketNic::open("db").unwrap();
            check_batch_of_32(&mut d, &mut p);
            check_batch_of_32(&mut p, &mut d);
            // Taken already.
            let err = DpdkNic::open(Some("net_af_packet7"), &args).err().unwrap();
            assert!(err.to_string().contains("already open"), "{err}");
            // No port left to pick without a name.
            let err = DpdkNic::open(None, &args).err().unwrap();
            assert!(err.to_string().contains("no free DPDK port"), "{err}");
            // A Linux interface on the same EAL.
            let mut x = DpdkNic::open(Some("dc"), &args).unwrap();
            assert_eq!(x.driver_name(), "net_af_xdp");
            let mut q = AfPacketNic::open("dd").unwrap();
            check_batch_of_32(&mut x, &mut q);
            check_batch_of_32(&mut q, &mut x);
        });
    }

    /// net_af_xdp on a 4-queue veth: one device per queue, every flow of the
    /// kernel received (each datagram once), transmission works, and
    /// closing detaches the XDP program.
    #[test]
    fn af_xdp_reads_every_queue_of_a_multiqueue_interface() {
        let net = TestNet::new("dxmq");
        net.veth_mq("da", "db", 4);
        let nic = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
        assert_eq!(nic.devices(), 4);
        let kmac = kernel_peer(&net, "db", nic.mac());
        let (nics, _) = check_lane_flows(&net, vec![nic], 0, true);
        let nics = check_lanes_transmit(&net, kmac, nics);
        let st = nics[0].stats();
        assert_eq!(st.rx_bad, 0);
        let ps = nics[0].port_stats().unwrap();
        assert!(ps.ipackets >= st.rx_frames, "{ps:?} {st:?}");
        drop(nics);
        let shown = net.ip_output(&["link", "show", "dev", "da"]);
        assert!(
            !shown.contains("xdp"),
            "XDP program still attached: {shown}"
        );
        // Naming the queue opens that one only.
        let c = DpdkConfig {
            vdev_args: "start_queue=0".into(),
            ..DpdkConfig::default()
        };
        let one = net.run(|| DpdkNic::open_with(Some("da"), &[], &c).unwrap());
        assert_eq!(one.devices(), 1);
        drop(one);
        // Right after a close the queues may still be held: opened anyway.
        let again = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
        assert_eq!(again.devices(), 4);
        check_lane_flows(&net, vec![again], 1, true);
    }
}
