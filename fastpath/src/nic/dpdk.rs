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
//! [`Nic::wait_fd`] returns `None`, so the caller polls.
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
    Running { args: Vec<String>, auto: bool },
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
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
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
            let used = if claimed.contains(&p) { " (in use)" } else { "" };
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

/// RX queue setup attempts (10 ms apart) for net_af_xdp, whose socket
/// cannot bind while the kernel still releases the previous one.
const QUEUE_SETUP_RETRIES: u32 = 100;

/// Bytes one mbuf takes in the pool (object header, struct rte_mbuf,
/// headroom and data room), roughly.
const MBUF_FOOTPRINT: usize = 64 + 128 + sys::RTE_MBUF_DEFAULT_BUF_SIZE as usize;

/// A NIC port driven by DPDK.
pub struct DpdkNic {
    port: u16,
    pool: *mut sys::rte_mempool,
    /// The hot-plugged virtual device (removed on drop), if we made one.
    vdev: Option<String>,
    /// Namespace the port was opened in.
    netns: Option<Netns>,
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
                    // Memory for this pool and a few more like it; --no-huge
                    // memory is mapped up front but only used pages count.
                    let pool_mb = (pool_n as usize * MBUF_FOOTPRINT) >> 20;
                    (auto_eal_args((4 * pool_mb + 64).max(256)), true)
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
        let (port, vdev) = match iface {
            Some(name) => match port_by_name(name) {
                Some(p) if ctl.claimed.contains(&p) => {
                    return Err(dpdk_err(format!(
                        "DPDK port {name} is already open in this process"
                    )))
                }
                Some(p) => (p, None),
                None if is_linux_netdev(name) => {
                    let (p, dev) = hotplug_vdev(name, cfg)?;
                    (p, Some(dev))
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
                Some(p) => (p, None),
                None => {
                    return Err(dpdk_err(format!(
                        "no free DPDK port (ports: {}); name a PCI NIC in the EAL \
                         arguments (`-a 0000:01:00.0`) or give an interface name",
                        describe_ports(&ctl.claimed)
                    )))
                }
            },
        };
        let netns = Netns::current();
        let pool_name = format!("tas_mbufs{}", ctl.next_pool);
        ctl.next_pool += 1;
        // From here on, `nic`'s Drop undoes whatever was set up.
        let mut nic = DpdkNic {
            port,
            pool: std::ptr::null_mut(),
            vdev,
            netns,
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
        };
        ctl.claimed.push(port);
        let res = nic.setup(rx_desc, tx_desc, pool_n, &pool_name, iface);
        // Unlock before `nic` is dropped on error: its Drop takes the lock.
        drop(ctl);
        res?;
        tracing::info!(
            port = nic.port,
            name = %nic.name,
            driver = %nic.driver,
            mtu = nic.mtu,
            mac = ?nic.mac,
            pool = pool_n,
            "DPDK port started"
        );
        Ok(nic)
    }

    /// Creates the mbuf pool, configures and starts the port.
    fn setup(
        &mut self,
        rx_desc: u16,
        tx_desc: u16,
        pool_n: u32,
        pool_name: &str,
        iface: Option<&str>,
    ) -> Result<(), NicError> {
        let port = self.port;
        let name = self.name.clone();
        let fail = |what: &str, rc: i32| {
            dpdk_err(format!(
                "DPDK port {port} ({name}): {what} failed: {}",
                strerror(rc)
            ))
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
        let socket = if socket < 0 { sys::SOCKET_ID_ANY } else { socket };

        let cname = CString::new(pool_name).expect("pool name");
        // SAFETY: valid name; the EAL runs.
        self.pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                pool_n,
                POOL_CACHE,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE,
                socket,
            )
        };
        if self.pool.is_null() {
            let e = rte_errno();
            return Err(dpdk_err(format!(
                "DPDK port {port} ({name}): cannot create a pool of {pool_n} mbufs: {}{}",
                strerror(e),
                if e == libc::ENOMEM {
                    " (give the EAL more memory: `-m MB`, or fewer descriptors)"
                } else {
                    ""
                }
            )));
        }

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
        // net_af_xdp opens its XDP socket here. The kernel releases the
        // queue of a socket closed just before (a NIC on this interface that
        // was just dropped) a little later, so binding fails for a moment:
        // retry for up to a second.
        let mut tries = 0;
        loop {
            // SAFETY: valid port, pool; NULL = the driver's default config.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port,
                    0,
                    nrx,
                    socket as u32,
                    std::ptr::null(),
                    self.pool,
                )
            };
            if rc == 0 {
                break;
            }
            tries += 1;
            if self.driver != "net_af_xdp" || tries >= QUEUE_SETUP_RETRIES {
                return Err(fail("rte_eth_rx_queue_setup", rc));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
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
        self.mtu = if rc == 0 { usize::from(port_mtu) } else { mtu as usize };
        self.max_frame = (self.mtu + ETH_HLEN + VLAN_HLEN)
            .min(FRAME_SLOT)
            .min(usize::from(sys::RTE_MBUF_DEFAULT_DATAROOM));
        tracing::debug!(port, rx_desc = nrx, tx_desc = ntx, socket, "DPDK queues set up");
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

    /// This NIC's counters.
    pub fn stats(&self) -> DpdkStats {
        self.stats
    }

    /// The port's counters, from the driver.
    pub fn port_stats(&self) -> Result<DpdkPortStats, NicError> {
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

    /// Stops and closes the port, removes the virtual device, frees the pool.
    fn close(&mut self) {
        let port = self.port;
        // As an address: raw pointers are not Send, the work may run on a
        // helper thread (see Netns::run).
        let pool = self.pool as usize;
        let vdev = self.vdev.take();
        let stash: Vec<usize> = self.rx_stash[self.rx_head..self.rx_tail]
            .iter()
            .map(|&m| m as usize)
            .collect();
        self.rx_head = 0;
        self.rx_tail = 0;
        let work = move || {
            let _ctl = control();
            // SAFETY: the port and pool belong to this NIC, which is going
            // away; nothing uses them afterwards. The stashed mbufs are ours.
            unsafe {
                for m in stash {
                    sys::tas_rte_pktmbuf_free(m as *mut sys::rte_mbuf);
                }
                let rc = sys::rte_eth_dev_stop(port);
                if rc != 0 {
                    tracing::debug!(port, rc, "rte_eth_dev_stop failed");
                }
                let rc = sys::rte_eth_dev_close(port);
                if rc != 0 {
                    tracing::debug!(port, rc, "rte_eth_dev_close failed");
                }
                if let Some(dev) = &vdev {
                    let bus = c"vdev";
                    let cdev = CString::new(dev.as_str()).expect("vdev name");
                    let rc = sys::rte_eal_hotplug_remove(bus.as_ptr(), cdev.as_ptr());
                    if rc != 0 && rc != -libc::ENOENT {
                        tracing::warn!(dev = %dev, error = %strerror(rc), "removing DPDK vdev failed");
                    }
                }
                if pool != 0 {
                    sys::rte_mempool_free(pool as *mut sys::rte_mempool);
                }
            }
        };
        match &self.netns {
            Some(ns) => ns.run(work),
            None => work(),
        }
        self.pool = std::ptr::null_mut();
        let mut ctl = control();
        ctl.claimed.retain(|&p| p != port);
    }
}

/// MTU of the Linux interface `name` in the calling thread's namespace
/// (an ioctl: /sys/class/net shows the namespace sysfs was mounted in).
fn linux_mtu(name: &str) -> Option<u32> {
    super::af_packet::sys::link_info(name)
        .ok()
        .map(|l| l.mtu as u32)
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
        self.close();
    }
}

impl Nic for DpdkNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
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
    use super::super::af_packet::testnet::*;
    use super::super::af_packet::AfPacketNic;
    use super::*;
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
        for (tag, vdev) in [("dxinfo", LinuxVdev::AfXdp), ("dpinfo", LinuxVdev::AfPacket)] {
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
        let _d = net.run(|| DpdkNic::open(Some("da"), &[]).unwrap());
        for name in ["tas-no-such-if0", "a/b", "da,iface=lo"] {
            match net.run(|| DpdkNic::open(Some(name), &[])) {
                Err(NicError::NoSuchInterface(n)) => assert_eq!(n, name),
                Err(e) => panic!("{name}: unexpected error {e}"),
                Ok(_) => panic!("{name}: opened?"),
            }
        }
        // The same interface twice: the second virtual device is refused by
        // the driver, or opens; either way the first keeps working.
        let again = net.run(|| DpdkNic::open(Some("da"), &[]));
        drop(again);
        // Other EAL arguments than the running EAL's are refused, clearly.
        let err = net
            .run(|| DpdkNic::open(Some("da"), &["-l".into(), "0".into()]))
            .err()
            .expect("different EAL args accepted")
            .to_string();
        assert!(err.contains("already runs"), "{err}");
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

    /// `rte_eal_init` can run once per process: the failure cases run in a
    /// child process (this test binary, running `child_eal_start_failures`).
    #[test]
    fn eal_start_failures_are_explained() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "nic::dpdk::tests::child_eal_start_failures",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TAS_DPDK_CHILD", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "child ran no test:\n{text}");
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
}
#[cfg(test)]
mod dbg_tmp {
    use super::super::af_packet::testnet::*;
    use super::super::af_packet::AfPacketNic;
    use super::*;
    use std::time::Duration;
    #[test]
    fn dbg_wrap() {
        let net = TestNet::new("dbgw");
        net.veth("da", "db");
        let small = DpdkConfig { vdev_args: std::env::var("VARGS").unwrap_or_default(), rx_desc: std::env::var("RXD").map(|v| v.parse().unwrap()).unwrap_or(64), tx_desc: 64, ..DpdkConfig::default() };
        let (mut d, mut p) = net.run(|| {
            (DpdkNic::open_with(Some("da"), &[], &small).unwrap(), AfPacketNic::open("db").unwrap())
        });
        for r in 0..std::env::var("ROUNDS").map(|v| v.parse().unwrap()).unwrap_or(10u32) {
            let frames: Vec<Vec<u8>> = (0..48).map(|i| test_frame(p.mac(), d.mac(), r * 48 + i, 128)).collect();
            send_all(&mut d, &frames);
            let got = recv_matching(&mut p, 48, Duration::from_millis(500), is_test_from(d.mac()));
            eprintln!("round {r}: got {} stats {:?} port {:?} pool avail {}", got.len(), d.stats(), d.port_stats().unwrap(), unsafe { sys::rte_mempool_avail_count(d.pool) });
        }
    }
}
