//! The DPDK environment (EAL): its one-time start with arguments we derive
//! or the user gives, the errors it reports, registering polling threads,
//! and entering the network namespace a Linux device lives in.

use super::*;

/// Process-wide DPDK state, behind [`CONTROL`]: DPDK's control path is not
/// thread-safe, so opening and closing ports is serialised.
pub(super) struct Control {
    pub(super) eal: EalState,
    /// Suffix for the next mbuf pool's name.
    pub(super) next_pool: u32,
    /// Ports owned by a live DpdkNic.
    pub(super) claimed: Vec<u16>,
}

pub(super) enum EalState {
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

pub(super) static CONTROL: Mutex<Control> = Mutex::new(Control {
    eal: EalState::NotStarted,
    next_pool: 0,
    claimed: Vec::new(),
});

pub(super) fn control() -> std::sync::MutexGuard<'static, Control> {
    CONTROL.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno.
    unsafe { sys::tas_rte_errno() }
}

pub(super) fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string, which we copy at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(errnum.abs())) }
        .to_string_lossy()
        .into_owned()
}

pub(super) fn dpdk_err(msg: String) -> NicError {
    NicError::Unsupported(msg)
}

/// CPUs the calling thread may run on, as a DPDK cpu list (`0,1,3`).
pub(super) fn allowed_cpus() -> String {
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
pub(super) fn auto_eal_args(mem_mb: usize) -> Vec<String> {
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
pub(super) fn eal_hint(errno: i32) -> &'static str {
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
pub(super) fn start_eal(args: &[String]) -> Result<(), String> {
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
pub(super) struct Netns {
    pub(super) fd: OwnedFd,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl Netns {
    const PATH: &'static str = "/proc/thread-self/ns/net";

    pub(super) fn current() -> Option<Netns> {
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
    pub(super) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
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
