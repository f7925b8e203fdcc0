//! The daemon: opens the NIC, starts the fast-path core, and runs the
//! slow-path thread (exceptions, app control, timers, signals).

use crate::apps::{AppId, Apps};
use crate::config::{Config, NicKind};
use crate::stack::{FpCmd, Stack, StackIo};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tas_fastpath::abi::CtlMsg;
use tas_fastpath::engine;
use tas_fastpath::flowtable::FlowTable;
use tas_fastpath::nic::{af_packet::AfPacketNic, af_xdp::AfXdpNic, Nic, NicError};
use tas_fastpath::poll::{self, now_ns, Core, CoreCmd, CoreConfig, CoreShared};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open {iface} with {kind}: {source}")]
    Nic { iface: String, kind: &'static str, source: NicError },
    #[error(transparent)]
    Apps(#[from] crate::apps::AppsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct Io<'a> {
    shared: &'a CoreShared,
    apps: &'a mut Apps,
}

impl StackIo for Io<'_> {
    fn send_frame(&mut self, frame: &[u8]) {
        if !self.shared.command(CoreCmd::Send(frame.to_vec())) {
            tracing::debug!("core command queue full; frame dropped");
        }
    }
    fn fastpath(&mut self, cmd: FpCmd) {
        let c = match cmd {
            FpCmd::Retransmit(id) => CoreCmd::Retransmit(id),
            FpCmd::Kick(id) => CoreCmd::Kick(id),
            FpCmd::Rx(frame) => CoreCmd::Rx(frame),
        };
        self.shared.command(c);
    }
    fn app_msg(&mut self, app: AppId, msg: &CtlMsg) {
        self.apps.send(app, msg);
    }
    fn alloc(&mut self, app: AppId, len: u32) -> Option<u32> {
        self.apps.get_mut(app)?.alloc.alloc(len)
    }
    fn free(&mut self, app: AppId, off: u32, len: u32) {
        if let Some(a) = self.apps.get_mut(app) {
            a.alloc.free(off, len);
        }
    }
}

fn open_nic(cfg: &Config) -> Result<Box<dyn Nic>, DaemonError> {
    let err = |kind, source| DaemonError::Nic { iface: cfg.iface.clone(), kind, source };
    Ok(match cfg.nic {
        NicKind::AfXdp => Box::new(AfXdpNic::open(&cfg.iface, 0).map_err(|e| err("af_xdp", e))?),
        NicKind::AfPacket => Box::new(AfPacketNic::open(&cfg.iface).map_err(|e| err("af_packet", e))?),
    })
}

/// Blocks SIGINT/SIGTERM and returns a signalfd for them.
fn signal_fd() -> std::io::Result<RawFd> {
    // SAFETY: sigset manipulation on a local, zeroed set; signalfd creates a
    // new fd owned by the daemon for its lifetime.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, 8, 0) };
    u64::from_ne_bytes(b) ^ now_ns()
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    // Signals first, so every thread spawned later inherits the mask.
    let sigfd = signal_fd()?;
    let nic = open_nic(&cfg)?;
    let mac = nic.mac();
    let mtu = nic.mtu().min(cfg.mtu as usize) as u16;
    let nic_kind = nic.kind();
    let table = Arc::new(FlowTable::new(cfg.max_flows));
    let shared = CoreShared::new()?;
    let mut apps = Apps::bind(&cfg.socket, cfg.app_mem)?;

    let core = {
        let (table, shared) = (table.clone(), shared.clone());
        let ecfg = engine::Config { local_mac: mac, ttl: 64, any_mac: false };
        let ccfg = CoreConfig { idle_spin: Duration::from_micros(cfg.idle_spin_us) };
        std::thread::Builder::new().name("tas-fp0".into()).spawn(move || {
            Core::new(nic, table, ecfg, shared, ccfg).run();
        })?
    };

    let mut stack = Stack::new(cfg.stack_config(mac, mtu), table.clone(), seed());
    println!(
        "tasd ready: ip {}/{} iface {} nic {} mac {} socket {}",
        std::net::Ipv4Addr::from(cfg.ip),
        cfg.prefix_len,
        cfg.iface,
        nic_kind,
        tas_fastpath::wire::eth::fmt_mac(mac),
        cfg.socket.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut stop_requested = false;
    let mut pending_removals: Vec<(AppId, Arc<AtomicBool>, Instant)> = Vec::new();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut pfd_apps: Vec<AppId> = Vec::new();
    while !stop_requested {
        // Wait for something to do.
        pfds.clear();
        pfd_apps.clear();
        for fd in [sigfd, apps.listener.as_raw_fd(), shared.slow_wake] {
            pfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        }
        for a in apps.iter() {
            if pending_removals.iter().any(|(id, _, _)| *id == a.id) {
                continue;
            }
            pfds.push(libc::pollfd { fd: a.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            pfd_apps.push(a.id);
        }
        let now = now_ns();
        let mut timeout_ms: i32 = 50;
        if let Some(t) = stack.poll_at() {
            timeout_ms = if t <= now { 0 } else { ((t - now).div_ceil(1_000_000) as i32).min(50) };
        }
        if !shared.exc.is_empty() || !pending_removals.is_empty() {
            timeout_ms = timeout_ms.min(1);
        }
        // SAFETY: `pfds` is a valid array of pollfd entries.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };

        if pfds[0].revents != 0 {
            tracing::info!("signal received; shutting down");
            stop_requested = true;
        }
        if pfds[2].revents != 0 {
            poll::drain(shared.slow_wake);
        }
        // New apps.
        if pfds[1].revents != 0 {
            while let Some((id, port)) = apps.accept(shared.core_wake) {
                if !shared.command(CoreCmd::AddApp(port)) {
                    tracing::warn!(app = id, "core queue full; app dropped");
                    apps.remove(id);
                }
            }
        }
        // Exceptions from the fast path.
        let now = now_ns();
        for _ in 0..4096 {
            let Some(e) = shared.exc.pop() else { break };
            let mut io = Io { shared: &shared, apps: &mut apps };
            stack.on_frame(now, e.reason, e.flow, &e.frame, &mut io);
            shared.recycle(e.frame);
        }
        // App control messages and hang-ups.
        for (i, &id) in pfd_apps.iter().enumerate() {
            let re = pfds[3 + i].revents;
            if re == 0 {
                continue;
            }
            let mut gone = re & (libc::POLLHUP | libc::POLLERR) != 0;
            for _ in 0..256 {
                match apps.recv(id) {
                    Ok(Some(m)) => {
                        let mut io = Io { shared: &shared, apps: &mut apps };
                        stack.on_app_msg(now, id, &m, &mut io);
                    }
                    Ok(None) => break,
                    Err(()) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                let mut io = Io { shared: &shared, apps: &mut apps };
                stack.app_gone(now, id, &mut io);
                let done = Arc::new(AtomicBool::new(false));
                shared.command(CoreCmd::RemoveApp(id, done.clone()));
                pending_removals.push((id, done, Instant::now()));
            }
        }
        // Regions the core has let go of can be unmapped now.
        pending_removals.retain(|(id, done, since)| {
            if done.load(Ordering::Acquire) {
                apps.remove(*id);
                false
            } else {
                if since.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(app = id, "core has not released the app's region after 5 s");
                }
                true
            }
        });
        // Timers.
        let mut io = Io { shared: &shared, apps: &mut apps };
        stack.poll(now_ns(), &mut io);
    }

    // Shutdown: close flows toward peers, give the core time to send, stop.
    {
        let mut io = Io { shared: &shared, apps: &mut apps };
        stack.shutdown(now_ns(), &mut io);
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    while !shared.cmds.is_empty() && Instant::now() < deadline {
        poll::kick(shared.core_wake);
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    shared.stop.store(true, Ordering::SeqCst);
    poll::kick(shared.core_wake);
    let _ = core.join();
    drop(apps);
    // SAFETY: closing the signalfd we created.
    unsafe { libc::close(sigfd) };
    tracing::info!("stopped");
    Ok(())
}
