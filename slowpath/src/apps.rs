//! The app registry: the attach socket, each app's shared region, its ring
//! memory allocator and its control channel.
//!
//! An app connects to the attach socket (Unix `SOCK_SEQPACKET`), sends
//! `HELLO` with its ABI version and receives `HELLO_OK` with fds: the
//! region (a memfd, holding an event ring and a command ring per lane; on
//! reserved hugetlbfs pages when enough are free, see
//! `tas_runtime::huge::shared_region`), its
//! own eventfd (we kick it) and one eventfd per lane (it kicks the lane it
//! posted commands for). When its socket hangs up — exit or crash — everything it had is
//! reclaimed and its id can be reused — unless other processes still use
//! its flows or its region (sockets shared across fork/exec) or it left
//! orphaned connections (closed, still delivering data and FIN: see
//! `stack::conn::close`): it then stays as a *zombie* ([`App::orphaned`]
//! too for orphans) until they are done. A `HELLO` with
//! `ctl::F_ALIAS` attaches a context that shares another app's payload
//! region (a forked child or exec'ed image taking inherited sockets over),
//! authorised by a grant (`stack::conn::share`).
//!
//! # Attaching never blocks the daemon
//!
//! A new connection is accepted at once and waits, without costing anything
//! but its descriptor, until its socket is readable ([`Apps::hello`]); one
//! that has not said `HELLO` within [`HELLO_TIMEOUT_NS`] is closed, and at
//! most [`MAX_PENDING`] wait (a newer one pushes out the oldest). At `HELLO`
//! the daemon checks the ABI version, that the app runs in the daemon's
//! network namespace (`/proc/PID/ns/net` of the `SO_PEERCRED` pid against
//! its own: a program in another namespace could not reach the addresses it
//! is given), and the per-process and per-user limits ([`Limits`]); a refusal
//! is a `RESULT` with an errno and a reason (`tas_abi::ctl::REFUSED_*`)
//! that the app library turns into a clear message.
//!
//! # Control messages are never lost
//!
//! Messages to an app go out without blocking; what the socket does not
//! take waits in the app's [`Outbox`], in order, and is sent when the socket
//! is writable (the daemon polls it for `POLLOUT`). Back-pressure is per
//! app: while [`OUTBOX_READ_LIMIT`] messages wait, its requests are not
//! read; past [`OUTBOX_HARD`] no new connection is accepted for it (the
//! stack drops its SYNs as listen overflows) until fewer than half are left.
//! Other apps never wait for it.

use crate::runfiles::{self, SockFile, SockPerms};
use nix::errno::Errno;
use nix::sys::socket::{accept4, recv, sendmsg, ControlMessage, MsgFlags, SockFlag, SockType};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use tas_abi::{
    ctl, AppCmd, AppEvent, CtlMsg, HelloOk, RegionHeader, RegionLayout, ABI_VERSION, REGION_MAGIC,
};
use tas_runtime::{AppPort, MAX_APPS};

pub type AppId = u16;

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("attach {0}")]
    Socket(#[from] runfiles::RunFileError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why an app's control socket ends its attachment ([`Apps::recv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Detach {
    #[error("no such app")]
    Unknown,
    #[error("the app hung up")]
    HungUp,
    #[error("malformed control message")]
    Malformed,
    #[error("control socket: {0}")]
    Io(Errno),
}

/// First-fit allocator over the payload part of a region (4 KiB granules).
pub struct RingAlloc {
    free: Vec<(u32, u32)>,
}

impl RingAlloc {
    pub fn new(start: u32, end: u32) -> Self {
        RingAlloc {
            free: vec![(start, end - start)],
        }
    }
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        let len = len.checked_add(4095)? & !4095;
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (off, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (off + len, l - len);
        }
        Some(off)
    }
    pub fn free(&mut self, off: u32, len: u32) {
        let len = (len + 4095) & !4095;
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        // Coalesce with neighbours.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|&(_, l)| l as u64).sum()
    }
}

/// Undelivered control messages at which the daemon stops reading the
/// app's requests (each may cause a reply) until some are delivered.
pub const OUTBOX_READ_LIMIT: usize = 4096;
/// Undelivered control messages at which no new connection is accepted for
/// the app (its SYNs count as listen overflows) until fewer than half are
/// left.
pub const OUTBOX_HARD: usize = 65536;
/// A connection to the attach socket that has not sent `HELLO` within this
/// is closed.
pub const HELLO_TIMEOUT_NS: u64 = 2_000_000_000;
/// Most connections waiting for their `HELLO`; a new one pushes out the
/// oldest.
pub const MAX_PENDING: usize = 256;

/// Per-user and per-process attach limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_uid: u32,
    pub per_process: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_uid: 768,
            per_process: 64,
        }
    }
}

/// What one attempt to put a message on an app's socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The socket's buffer is full: try again when it is writable.
    Full,
    /// The socket is broken (the app is gone; its hang-up is handled
    /// elsewhere).
    Gone,
}

/// The control messages of one app that its socket has not taken yet, in
/// order. Never drops a message while the app is alive: what it holds is
/// bounded by the app's own state (one `ACCEPTED` per connection within its
/// listeners' backlogs, at most one `RESET` and one `RELEASED` per flow, and
/// replies to requests, which are not read while [`OUTBOX_READ_LIMIT`] are
/// waiting), and past [`OUTBOX_HARD`] the app gets no new connections.
#[derive(Debug, Default)]
pub struct Outbox {
    q: VecDeque<CtlMsg>,
    /// Most messages ever waiting.
    pub peak: usize,
    /// Messages that had to wait.
    pub deferred: u64,
}

impl Outbox {
    /// Sends `m` through `put` after every message already waiting, or
    /// keeps it for [`Outbox::flush`].
    pub fn send(&mut self, m: &CtlMsg, mut put: impl FnMut(&CtlMsg) -> Delivery) -> Delivery {
        if self.q.is_empty() {
            match put(m) {
                Delivery::Sent => return Delivery::Sent,
                Delivery::Gone => return Delivery::Gone,
                Delivery::Full => {}
            }
        }
        self.q.push_back(*m);
        self.deferred += 1;
        self.peak = self.peak.max(self.q.len());
        Delivery::Full
    }

    /// Sends waiting messages until the socket is full; `Sent` when none
    /// is left. A broken socket empties the outbox (`Gone`).
    pub fn flush(&mut self, mut put: impl FnMut(&CtlMsg) -> Delivery) -> Delivery {
        while let Some(m) = self.q.front() {
            match put(m) {
                Delivery::Sent => {
                    self.q.pop_front();
                }
                Delivery::Full => return Delivery::Full,
                Delivery::Gone => {
                    self.q.clear();
                    return Delivery::Gone;
                }
            }
        }
        Delivery::Sent
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// One attempt to put `m` on socket `fd` without blocking.
fn put(fd: RawFd, m: &CtlMsg) -> Delivery {
    loop {
        match sendmsg::<()>(
            fd,
            &[IoSlice::new(m.as_bytes())],
            &[],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(_) => return Delivery::Sent,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) | Err(Errno::ENOBUFS) => return Delivery::Full,
            Err(_) => return Delivery::Gone,
        }
    }
}

/// [`put`], counted in the app's region header when the message went onto
/// the socket (`RegionHeader::ctl_sent`: the app's spinning wait reads the
/// socket only when the count moved).
fn put_counted(fd: RawFd, h: &RegionHeader, m: &CtlMsg) -> Delivery {
    let d = put(fd, m);
    if d == Delivery::Sent {
        tas_abi::note_ctl_sent(h);
    }
    d
}

/// The header at the start of an app's region.
fn header(map: &memmap2::MmapMut) -> &RegionHeader {
    // SAFETY: every app region starts with the RegionHeader tasd wrote at
    // attach (64 bytes, page aligned) and stays mapped while the App (which
    // owns `map`) exists; the fields tasd touches after attach are atomics.
    unsafe { &*(map.as_ptr() as *const RegionHeader) }
}

/// One attached app.
pub struct App {
    pub id: AppId,
    pub sock: OwnedFd,
    pub map: memmap2::MmapMut,
    pub memfd: OwnedFd,
    pub app_wake: OwnedFd,
    pub layout: RegionLayout,
    pub alloc: RingAlloc,
    pub pid: i32,
    pub uid: u32,
    /// Control messages its socket has not taken yet.
    pub outbox: Outbox,
    /// No new connections for it (its outbox passed [`OUTBOX_HARD`]).
    pub throttled: bool,
    /// The app whose payload region this app's flows use: its own id, or
    /// (a context attached with `F_ALIAS` by a process that inherited
    /// sockets) the region owner's.
    pub mem: AppId,
    /// Hung up, but kept (not polled, messages undeliverable) while flows,
    /// listeners or contexts of other processes still use it or its
    /// region.
    pub zombie: bool,
    /// The app is gone; its region stays (and its id stays taken) only for
    /// its orphaned connections (see `stack::conn::close`). It no longer
    /// counts toward the attach limits and its socket is not polled.
    pub orphaned: bool,
}

/// A new app's region and eventfd.
struct Region {
    map: memmap2::MmapMut,
    memfd: OwnedFd,
    app_wake: OwnedFd,
    layout: RegionLayout,
}

/// A connection to the attach socket that has not said `HELLO` yet.
struct Pending {
    token: u64,
    fd: OwnedFd,
    since: u64,
    pid: i32,
    uid: u32,
}

/// Counters of the registry (`tasctl stats`: `apps.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppsStats {
    pub attached_total: u64,
    /// Attach attempts refused (version, limits, namespace, setup).
    pub attach_refused: u64,
    /// Connections closed for not saying `HELLO` in time, or pushed out
    /// by newer ones.
    pub attach_timeouts: u64,
    /// Control messages that had to wait in an outbox.
    pub msgs_deferred: u64,
    /// Control messages for an app whose socket was already broken.
    pub msgs_undeliverable: u64,
    /// Most messages ever waiting in one outbox.
    pub outbox_peak: u64,
    /// Times an app's outbox passed [`OUTBOX_HARD`].
    pub throttled: u64,
}

/// All attached apps and the attach socket.
pub struct Apps {
    pub listener: OwnedFd,
    _file: SockFile,
    apps: Vec<Option<App>>,
    /// One past the highest occupied slot of `apps` (ids are given lowest
    /// free first), so that a walk over the attached apps, done on every
    /// wake of the slow path, costs the apps there are and not
    /// [`MAX_APPS`] slots.
    live: usize,
    /// Attached apps (occupied slots).
    attached: usize,
    pending: Vec<Pending>,
    next_token: u64,
    pub region_size: u32,
    /// Whether regions may be on hugetlbfs pages (`--huge-pages`).
    pub huge_pages: tas_runtime::huge::HugePages,
    /// The service's IPv4 address, told to apps in `HELLO_OK`.
    pub local_ip: u32,
    pub event_cap: u32,
    pub cmd_cap: u32,
    /// Fast-path lanes: each app region has one event ring per lane.
    pub lanes: u32,
    pub limits: Limits,
    /// The self-tuning goal written into new regions' headers.
    pub goal: tas_tune::Goal,
    /// Our network namespace (inode; 0: unknown, not checked).
    netns: u64,
    pub stats: AppsStats,
    /// (app, throttled) changes for the stack since the last take.
    throttle_changes: Vec<(AppId, bool)>,
}

fn eventfd() -> std::io::Result<OwnedFd> {
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
    )?;
    Ok(OwnedFd::from(efd))
}

/// The attaching process's pid and uid (SO_PEERCRED); pid 0 when unknown.
fn peer_cred(fd: BorrowedFd<'_>) -> (i32, u32) {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| (c.pid(), c.uid()))
        .unwrap_or((0, u32::MAX))
}

/// A refusal of `HELLO` (`req`): errno `err`, reason and detail (see
/// `tas_abi::ctl::REFUSED_*`).
fn refuse(fd: BorrowedFd<'_>, req: u32, err: i32, reason: u32, a1: u32, a2: u32) {
    let mut m = CtlMsg::new(ctl::RESULT);
    m.req = req;
    m.err = err;
    m.arg[0] = reason;
    m.arg[1] = a1;
    m.arg[2] = a2;
    let _ = put(fd.as_raw_fd(), &m);
}

impl Apps {
    /// Binds the attach socket at `path` with `perms` (a live socket there
    /// is an error, a stale one is replaced: see `runfiles`).
    pub fn bind(path: &Path, region_size: u32, perms: SockPerms) -> Result<Apps, AppsError> {
        let (fd, file) = runfiles::bind_socket(path, SockType::SeqPacket, perms, 128)?;
        Ok(Apps {
            listener: fd,
            _file: file,
            apps: (0..MAX_APPS).map(|_| None).collect(),
            live: 0,
            attached: 0,
            pending: Vec::new(),
            next_token: 1,
            region_size,
            huge_pages: tas_runtime::huge::HugePages::Off,
            local_ip: 0,
            event_cap: 4096,
            cmd_cap: 4096,
            lanes: 1,
            limits: Limits::default(),
            goal: tas_tune::Goal::default(),
            netns: runfiles::own_netns(),
            stats: AppsStats::default(),
            throttle_changes: Vec::new(),
        })
    }

    pub fn get(&self, id: AppId) -> Option<&App> {
        self.apps.get(id as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: AppId) -> Option<&mut App> {
        self.apps.get_mut(id as usize)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps[..self.live].iter().flatten()
    }

    /// Changes the goal told to apps: new regions get it, and every
    /// attached app's region header is updated now.
    pub fn set_goal(&mut self, goal: tas_tune::Goal) {
        self.goal = goal;
        for a in self.iter() {
            header(&a.map)
                .goal
                .store(goal.wire(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> usize {
        self.attached
    }

    /// Takes every connection waiting on the attach socket; each waits for
    /// its `HELLO` without blocking anything ([`Apps::hello`]).
    pub fn accept_new(&mut self, now: u64) {
        loop {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a fresh fd that we now own.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    crate::warn_limited!("attach socket accept: {e}");
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING {
                let old = self.pending.remove(0);
                self.stats.attach_timeouts += 1;
                crate::warn_limited!(
                    pid = old.pid,
                    "{MAX_PENDING} connections wait for their HELLO; closed the oldest"
                );
            }
            let (pid, uid) = peer_cred(fd.as_fd());
            let token = self.next_token;
            self.next_token += 1;
            self.pending.push(Pending {
                token,
                fd,
                since: now,
                pid,
                uid,
            });
        }
    }

    /// The connections waiting for `HELLO`: (token, fd) to poll for input.
    pub fn pending_fds(&self) -> impl Iterator<Item = (u64, BorrowedFd<'_>)> {
        self.pending.iter().map(|p| (p.token, p.fd.as_fd()))
    }

    /// When the oldest connection waiting for `HELLO` times out.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .iter()
            .map(|p| p.since.saturating_add(HELLO_TIMEOUT_NS))
            .min()
    }

    /// Closes the connections that did not say `HELLO` in time.
    pub fn expire_pending(&mut self, now: u64) {
        let before = self.pending.len();
        self.pending
            .retain(|p| now < p.since.saturating_add(HELLO_TIMEOUT_NS));
        let n = before - self.pending.len();
        if n > 0 {
            self.stats.attach_timeouts += n as u64;
            crate::warn_limited!(
                "{n} connection(s) to the attach socket did not say HELLO within 2 s; closed"
            );
        }
    }

    /// The `HELLO` exchange of waiting connection `token` (its socket is
    /// readable). Returns the new app and the port each fast-path lane
    /// needs (index = lane), or None (nothing there yet, or refused and
    /// closed). `lane_wakes` are the lanes' eventfds (index = lane; the
    /// app kicks the lane whose command ring it posted on).
    ///
    /// A `HELLO` with [`ctl::F_ALIAS`] attaches a context that shares
    /// another app's payload region; `granted(pid, token)` says whether
    /// the attaching process holds a grant for it (see `stack::conn::share`).
    pub fn hello(
        &mut self,
        token: u64,
        lane_wakes: &[RawFd],
        granted: impl Fn(i32, u64) -> bool,
    ) -> Option<(AppId, Vec<AppPort>)> {
        let i = self.pending.iter().position(|p| p.token == token)?;
        let mut buf = [0u8; 256];
        let n = match recv(
            self.pending[i].fd.as_raw_fd(),
            &mut buf,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return None,
            Ok(n) if n > 0 => n,
            // Hung up (or broken) before saying anything.
            _ => {
                self.pending.remove(i);
                return None;
            }
        };
        let p = self.pending.remove(i);
        let (pid, uid) = (p.pid, p.uid);
        let fd = p.fd;
        let Some(hello) = CtlMsg::from_bytes(&buf[..n]).filter(|m| m.kind == ctl::HELLO) else {
            self.stats.attach_refused += 1;
            crate::warn_limited!(pid, "attach: first message is not a HELLO; closed");
            return None;
        };
        let req = hello.req;
        if hello.hello_version() != ABI_VERSION {
            self.stats.attach_refused += 1;
            crate::warn_limited!(
                pid,
                "app with ABI version {} refused (ours is {ABI_VERSION})",
                hello.hello_version()
            );
            refuse(
                fd.as_fd(),
                req,
                libc::EPROTO,
                ctl::REFUSED_VERSION,
                ABI_VERSION,
                0,
            );
            return None;
        }
        if self.netns != 0 {
            if let Some(theirs) = runfiles::netns_of(pid).filter(|&n| n != self.netns) {
                self.stats.attach_refused += 1;
                crate::warn_limited!(
                    pid,
                    "app in network namespace net:[{theirs}] refused (tasd runs in net:[{}])",
                    self.netns
                );
                refuse(
                    fd.as_fd(),
                    req,
                    libc::EXDEV,
                    ctl::REFUSED_NETNS,
                    self.netns as u32,
                    theirs as u32,
                );
                return None;
            }
        }
        let (mut of_pid, mut of_uid) = (0u32, 0u32);
        for a in self.iter().filter(|a| !a.orphaned) {
            of_pid += u32::from(pid != 0 && a.pid == pid);
            of_uid += u32::from(a.uid == uid);
        }
        let limit = if of_pid >= self.limits.per_process {
            Some((
                libc::EMFILE,
                ctl::REFUSED_PER_PROCESS,
                self.limits.per_process,
                "process",
            ))
        } else if of_uid >= self.limits.per_uid {
            Some((
                libc::EUSERS,
                ctl::REFUSED_PER_UID,
                self.limits.per_uid,
                "user",
            ))
        } else {
            None
        };
        if let Some((err, reason, n, who)) = limit {
            self.stats.attach_refused += 1;
            crate::warn_limited!(
                pid,
                uid,
                "attach refused: the {who} has {n} apps attached (the limit)"
            );
            refuse(fd.as_fd(), req, err, reason, n, 0);
            return None;
        }
        let Some(id) = self.apps.iter().position(|a| a.is_none()) else {
            self.stats.attach_refused += 1;
            crate::warn_limited!(pid, "too many apps attached ({MAX_APPS}); refused");
            refuse(
                fd.as_fd(),
                req,
                libc::ENFILE,
                ctl::REFUSED_FULL,
                MAX_APPS as u32,
                0,
            );
            return None;
        };
        let id = id as AppId;
        let alias = if hello.arg[1] & ctl::F_ALIAS != 0 {
            let grant = hello.arg[3] as u64 | (hello.arg[4] as u64) << 32;
            // The grant is the authorisation, whatever the uid: a forked
            // child (a worker that dropped privileges) has the region
            // mapped already, and a process hands its own sockets to the
            // image it execs.
            let target = self
                .get(hello.arg[2] as AppId)
                .map(|t| t.mem)
                .filter(|&m| self.get(m).is_some());
            match target {
                Some(m) if granted(pid, grant) => Some(m),
                _ => {
                    self.stats.attach_refused += 1;
                    crate::warn_limited!(
                        pid,
                        uid,
                        "attach sharing app {}'s region refused: no grant for this process",
                        hello.arg[2]
                    );
                    refuse(fd.as_fd(), req, libc::EPERM, ctl::REFUSED_GRANT, 0, 0);
                    return None;
                }
            }
        } else {
            None
        };
        let alias_fd = alias.and_then(|m| self.get(m)).map(|r| r.memfd.as_raw_fd());
        match self.setup(
            id,
            &fd,
            req,
            lane_wakes,
            alias.map(|m| (m, alias_fd.unwrap_or(-1))),
        ) {
            Ok((r, ports)) => {
                self.live = self.live.max(id as usize + 1);
                if self.apps[id as usize].is_none() {
                    self.attached += 1;
                }
                self.apps[id as usize] = Some(App {
                    id,
                    sock: fd,
                    map: r.map,
                    memfd: r.memfd,
                    app_wake: r.app_wake,
                    alloc: RingAlloc::new(r.layout.payload_off, r.layout.size),
                    layout: r.layout,
                    pid,
                    uid,
                    outbox: Outbox::default(),
                    throttled: false,
                    mem: alias.unwrap_or(id),
                    zombie: false,
                    orphaned: false,
                });
                self.stats.attached_total += 1;
                crate::info_limited!(app = id, pid, uid, "app attached");
                Some((id, ports))
            }
            Err(e) => {
                self.stats.attach_refused += 1;
                crate::warn_limited!(pid, "attaching app failed: {e}");
                refuse(
                    fd.as_fd(),
                    req,
                    e.raw_os_error().unwrap_or(libc::ENOMEM),
                    ctl::REFUSED_SETUP,
                    0,
                    0,
                );
                None
            }
        }
    }

    /// Creates app `id`'s region and sends `HELLO_OK` on `sock`.
    fn setup(
        &mut self,
        id: AppId,
        sock: &OwnedFd,
        req: u32,
        lane_wakes: &[RawFd],
        alias: Option<(AppId, RawFd)>,
    ) -> std::io::Result<(Region, Vec<AppPort>)> {
        let layout = RegionLayout::new(
            self.region_size,
            self.lanes.clamp(1, tas_abi::MAX_LANES),
            self.event_cap,
            self.cmd_cap,
        )
        .ok_or_else(|| std::io::Error::other("region too small for its rings"))?;
        // On reserved hugetlbfs pages when enough are free (all reserved
        // now: no fault later can find none), else 4 KiB pages advised for
        // THP; the fallback is counted (`huge.hugetlb_fallbacks`) and
        // logged once. The mapping lives in `App` and outlives the core's
        // use of it (RemoveApp is acknowledged first).
        let tas_runtime::huge::SharedRegion {
            fd: memfd, mut map, ..
        } = tas_runtime::huge::shared_region(
            &format!("tas-app-{id}"),
            self.region_size as usize,
            self.huge_pages,
        )?;
        let base = map.as_mut_ptr();
        // SAFETY: the region starts with room for a RegionHeader (64 bytes,
        // page aligned) and nobody else uses it yet.
        unsafe {
            std::ptr::write(
                base as *mut RegionHeader,
                RegionHeader {
                    magic: REGION_MAGIC,
                    version: ABI_VERSION,
                    _reserved: 0,
                    app_waiting: Default::default(),
                    goal: std::sync::atomic::AtomicU32::new(self.goal.wire()),
                    ctl_sent: Default::default(),
                    app_drains: Default::default(),
                },
            )
        };
        let app_wake = eventfd()?;
        let mut ports = Vec::with_capacity(layout.event_rings as usize);
        for lane in 0..layout.event_rings {
            // SAFETY: the rings and the flag lie inside the mapping
            // (RegionLayout checked the sizes) and stay mapped while the
            // ports exist; each event ring has one producer and each
            // command ring one consumer: its lane.
            let (events, cmds, lane_sleeping) = unsafe {
                (
                    tas_abi::RingProducer::<AppEvent>::new(
                        base.add(layout.event_ring_off(lane) as usize),
                        layout.event_cap,
                    ),
                    tas_abi::RingConsumer::<AppCmd>::new(
                        base.add(layout.cmd_ring_off(lane) as usize),
                        layout.cmd_cap,
                    ),
                    base.add(layout.lane_flag_off(lane) as usize)
                        as *const std::sync::atomic::AtomicU32,
                )
            };
            ports.push(AppPort {
                id,
                mem: alias.map_or(id, |a| a.0),
                base,
                len: self.region_size as usize,
                events,
                cmds,
                lane_sleeping,
                app_wake: app_wake.as_raw_fd(),
                kicked_at: None,
            });
        }
        let ok = HelloOk {
            app: id as u32,
            service_ip: self.local_ip,
            layout,
        }
        .to_msg(req);
        // The region, the app's eventfd, one eventfd per lane (as many as
        // the layout has lanes), then the aliased payload region.
        if lane_wakes.len() < layout.event_rings as usize {
            return Err(std::io::Error::other("fewer lane eventfds than lanes"));
        }
        let mut fds: Vec<RawFd> = vec![memfd.as_raw_fd(), app_wake.as_raw_fd()];
        fds.extend_from_slice(&lane_wakes[..layout.event_rings as usize]);
        if let Some((_, payload)) = alias {
            fds.push(payload);
        }
        let fds = &fds[..];
        // The socket is fresh: its buffer has room for the first message.
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(ok.as_bytes())],
            &[ControlMessage::ScmRights(fds)],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(std::io::Error::from)?;
        Ok((
            Region {
                map,
                memfd,
                app_wake,
                layout,
            },
            ports,
        ))
    }

    /// Sends a control message to an app: at once if its socket takes it,
    /// else after the messages already waiting (never dropped while the
    /// app lives; see [`Outbox`]).
    pub fn send(&mut self, id: AppId, m: &CtlMsg) {
        let Some(a) = self.apps.get_mut(id as usize).and_then(Option::as_mut) else {
            self.stats.msgs_undeliverable += 1;
            return;
        };
        let fd = a.sock.as_raw_fd();
        let h = header(&a.map);
        match a.outbox.send(m, |m| put_counted(fd, h, m)) {
            Delivery::Sent => {}
            Delivery::Gone => self.stats.msgs_undeliverable += 1,
            Delivery::Full => {
                self.stats.msgs_deferred += 1;
                self.stats.outbox_peak = self.stats.outbox_peak.max(a.outbox.len() as u64);
                if !a.throttled && a.outbox.len() >= OUTBOX_HARD {
                    a.throttled = true;
                    self.stats.throttled += 1;
                    self.throttle_changes.push((id, true));
                    crate::warn_limited!(
                        app = id,
                        pid = a.pid,
                        "app does not take its control messages ({OUTBOX_HARD} waiting); no new connections for it until it does"
                    );
                }
            }
        }
    }

    /// Sends what waits for app `id` while its socket takes it (call when
    /// the socket is writable).
    pub fn flush(&mut self, id: AppId) {
        let Some(a) = self.apps.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let fd = a.sock.as_raw_fd();
        let h = header(&a.map);
        let before = a.outbox.len();
        if a.outbox.flush(|m| put_counted(fd, h, m)) == Delivery::Gone {
            self.stats.msgs_undeliverable += before as u64;
        }
        if a.throttled && a.outbox.len() < OUTBOX_HARD / 2 {
            a.throttled = false;
            self.throttle_changes.push((id, false));
        }
    }

    /// Whether the daemon should read app `id`'s requests now (not while
    /// [`OUTBOX_READ_LIMIT`] messages wait for it).
    pub fn wants_requests(&self, id: AppId) -> bool {
        self.get(id)
            .is_some_and(|a| a.outbox.len() < OUTBOX_READ_LIMIT)
    }

    /// Whether messages wait for app `id` (poll its socket for writing).
    pub fn has_outbox(&self, id: AppId) -> bool {
        self.get(id).is_some_and(|a| !a.outbox.is_empty())
    }

    /// (app, throttled) changes since the last call, for the stack.
    pub fn take_throttle_changes(&mut self) -> Vec<(AppId, bool)> {
        std::mem::take(&mut self.throttle_changes)
    }

    /// Reads one message from an app, with the fd it carried (at most
    /// one is taken: `SCM_RIGHTS` of `XFER`/`XFER_CLAIM`; the kernel closes
    /// any more). `Ok(None)`: nothing waiting; `Err`: the app must be
    /// detached, and why.
    pub fn recv(&self, id: AppId) -> Result<Option<(CtlMsg, Option<OwnedFd>)>, Detach> {
        let Some(a) = self.get(id) else {
            return Err(Detach::Unknown);
        };
        let mut buf = [0u8; 256];
        let mut cspace = nix::cmsg_space!([RawFd; 1]);
        let got = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            nix::sys::socket::recvmsg::<()>(
                a.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cspace),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map(|m| {
                let mut fds = Vec::new();
                if let Ok(cs) = m.cmsgs() {
                    for c in cs {
                        if let nix::sys::socket::ControlMessageOwned::ScmRights(f) = c {
                            fds.extend(f);
                        }
                    }
                }
                (m.bytes, fds)
            })
        };
        let got = got.map(|(n, fds)| {
            // SAFETY: the fds arrived by SCM_RIGHTS just now and are ours;
            // each is owned once (closed when dropped).
            let mut owned = fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) });
            (n, owned.next())
        });
        match got {
            Ok((0, _)) => Err(Detach::HungUp),
            Ok((n, fd)) => match CtlMsg::from_bytes(&buf[..n]) {
                Some(m) => Ok(Some((m, fd))),
                None => {
                    crate::warn_limited!(
                        app = id,
                        pid = a.pid,
                        "malformed control message ({n} bytes); detaching app"
                    );
                    Err(Detach::Malformed)
                }
            },
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(Detach::Io(e)),
        }
    }

    /// Ring memory for `app`'s flows, from the region it uses.
    pub fn alloc(&mut self, app: AppId, len: u32) -> Option<u32> {
        let m = self.get(app)?.mem;
        self.get_mut(m)?.alloc.alloc(len)
    }

    /// Copies `len` bytes at `from` of `app`'s region to `to` (ring
    /// memory tasd allocated: the bytes copied are ones only the fast path
    /// writes, under the flow lock the caller holds); false when a range
    /// falls outside the region or they overlap.
    pub fn copy(&mut self, app: AppId, from: u32, to: u32, len: u32) -> bool {
        let Some(m) = self.get(app).map(|a| a.mem) else {
            return false;
        };
        let Some(a) = self.get_mut(m) else {
            return false;
        };
        let size = a.map.len() as u64;
        let (f, t, l) = (u64::from(from), u64::from(to), u64::from(len));
        if f + l > size || t + l > size || (f < t + l && t < f + l) {
            return false;
        }
        let base = a.map.as_mut_ptr();
        // SAFETY: both ranges lie inside the mapping (checked above) and do
        // not overlap; raw pointers, no references, since the app maps the
        // same pages (it may write them too: bytes are all they can be).
        unsafe {
            std::ptr::copy_nonoverlapping(
                base.add(from as usize),
                base.add(to as usize),
                len as usize,
            )
        };
        true
    }

    /// Returns memory from [`Apps::alloc`].
    pub fn free(&mut self, app: AppId, off: u32, len: u32) {
        let Some(m) = self.get(app).map(|a| a.mem) else {
            return;
        };
        if let Some(a) = self.get_mut(m) {
            a.alloc.free(off, len);
        }
    }

    /// The region `app`'s flows use (its own id when unknown).
    pub fn mem_of(&self, app: AppId) -> AppId {
        self.get(app).map_or(app, |a| a.mem)
    }

    /// Whether another app (alive or a zombie) uses `id`'s region.
    pub fn has_aliases(&self, id: AppId) -> bool {
        self.iter().any(|a| a.id != id && a.mem == id)
    }

    /// Keeps a hung-up app registered (see [`App::zombie`]).
    pub fn set_zombie(&mut self, id: AppId) {
        if let Some(a) = self.get_mut(id) {
            a.zombie = true;
            a.outbox = Outbox::default();
        }
    }

    /// Drops an app's resources (after the core released its region).
    pub fn remove(&mut self, id: AppId) -> Option<App> {
        let a = self.apps.get_mut(id as usize)?.take();
        if a.is_some() {
            self.attached -= 1;
        }
        while self.live > 0 && self.apps[self.live - 1].is_none() {
            self.live -= 1;
        }
        // The id may be reused: whatever was noted for the old app is void.
        self.throttle_changes.retain(|&(i, _)| i != id);
        if a.as_ref().is_some_and(|a| a.throttled) {
            self.throttle_changes.push((id, false));
        }
        if let Some(a) = &a {
            crate::info_limited!(app = id, pid = a.pid, "app detached");
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_alloc_first_fit_and_coalesce() {
        let mut a = RingAlloc::new(4096, 4096 * 11);
        let x = a.alloc(5000).unwrap();
        let y = a.alloc(4096).unwrap();
        let z = a.alloc(1).unwrap();
        assert_eq!((x, y, z), (4096, 4096 * 3, 4096 * 4));
        assert_eq!(a.free_bytes(), 4096 * 6);
        assert!(a.alloc(4096 * 7).is_none());
        a.free(y, 4096);
        a.free(x, 5000);
        a.free(z, 1);
        assert_eq!(a.free.len(), 1);
        assert_eq!(a.alloc(4096 * 10), Some(4096));
        assert!(a.alloc(u32::MAX).is_none());
    }

    fn msg(i: u32) -> CtlMsg {
        let mut m = CtlMsg::new(ctl::RESET);
        m.flow = i;
        m
    }

    #[test]
    fn outbox_keeps_order_and_never_drops() {
        let mut o = Outbox::default();
        let mut socket: Vec<u32> = Vec::new();
        let mut room = 3;
        let mut put = |m: &CtlMsg, room: &mut usize| {
            if *room == 0 {
                return Delivery::Full;
            }
            *room -= 1;
            socket.push(m.flow);
            Delivery::Sent
        };
        for i in 0..10 {
            o.send(&msg(i), |m| put(m, &mut room));
        }
        assert_eq!((o.len(), o.deferred, o.peak), (7, 7, 7));
        // Room for 4: they go in order, the rest keeps waiting.
        room = 4;
        assert_eq!(o.flush(|m| put(m, &mut room)), Delivery::Full);
        assert_eq!(o.len(), 3);
        // A new message never overtakes waiting ones, even with room.
        room = 100;
        assert_eq!(o.send(&msg(10), |m| put(m, &mut room)), Delivery::Full);
        assert_eq!(o.flush(|m| put(m, &mut room)), Delivery::Sent);
        assert!(o.is_empty());
        assert_eq!(socket, (0..=10).collect::<Vec<_>>());
        // A broken socket empties the outbox.
        o.send(&msg(11), |_| Delivery::Full);
        assert_eq!(o.flush(|_| Delivery::Gone), Delivery::Gone);
        assert!(o.is_empty());
    }

    fn test_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tas-apps-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn bound(tag: &str) -> (Apps, std::path::PathBuf) {
        let d = test_dir(tag);
        let path = d.join("a.sock");
        let mut apps = Apps::bind(
            &path,
            1 << 20,
            SockPerms {
                mode: 0o600,
                gid: None,
            },
        )
        .unwrap();
        apps.event_cap = 64;
        apps.cmd_cap = 64;
        (apps, path)
    }

    fn client(path: &Path) -> OwnedFd {
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = nix::sys::socket::UnixAddr::new(path).unwrap();
        nix::sys::socket::connect(fd.as_raw_fd(), &addr).unwrap();
        fd
    }

    fn say(fd: &OwnedFd, m: &CtlMsg) {
        sendmsg::<()>(
            fd.as_raw_fd(),
            &[IoSlice::new(m.as_bytes())],
            &[],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    /// Reads one message (with any fds, closed), waiting up to 1 s.
    fn hear(fd: &OwnedFd) -> Option<CtlMsg> {
        let mut p = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut p, nix::poll::PollTimeout::from(1000u16)).ok()?;
        let mut buf = [0u8; 256];
        let mut cspace = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let r = nix::sys::socket::recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cspace),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        for c in r.cmsgs().ok()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: received by SCM_RIGHTS, ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
        let n = r.bytes;
        CtlMsg::from_bytes(&buf[..n])
    }

    /// Accepts what waits and runs every HELLO that arrived.
    fn serve(apps: &mut Apps, now: u64, wake: RawFd) -> Vec<AppId> {
        apps.accept_new(now);
        let tokens: Vec<u64> = apps.pending_fds().map(|(t, _)| t).collect();
        tokens
            .into_iter()
            .filter_map(|t| apps.hello(t, &[wake], |_, _| false).map(|(id, _)| id))
            .collect()
    }

    #[test]
    fn a_slow_app_gets_every_message_in_order_and_is_throttled_meanwhile() {
        let (mut apps, path) = bound("slow");
        let wake = eventfd().unwrap();
        let c = client(&path);
        say(&c, &CtlMsg::hello(9));
        let ids = serve(&mut apps, 0, wake.as_raw_fd());
        assert_eq!(ids.len(), 1);
        let id = ids[0];
        let ok = hear(&c).unwrap();
        assert_eq!((ok.kind, ok.req), (ctl::HELLO_OK, 9));
        // The app reads nothing while more than OUTBOX_HARD messages are
        // sent (its socket's buffer takes a few hundred).
        let total = (OUTBOX_HARD + 2000) as u32;
        for i in 0..total {
            apps.send(id, &msg(i));
        }
        assert!(!apps.wants_requests(id));
        assert!(apps.has_outbox(id));
        assert_eq!(apps.take_throttle_changes(), vec![(id, true)]);
        assert!(apps.stats.msgs_deferred > 0 && apps.stats.throttled == 1);
        // Now it reads; whenever its socket has room, the outbox moves.
        let mut next = 0u32;
        while next < total {
            let m = hear(&c).unwrap_or_else(|| {
                apps.flush(id);
                hear(&c).expect("a message after flushing")
            });
            assert_eq!(m.flow, next, "out of order or lost");
            next += 1;
            if next % 64 == 0 {
                apps.flush(id);
            }
        }
        apps.flush(id);
        assert!(!apps.has_outbox(id) && apps.wants_requests(id));
        assert_eq!(apps.take_throttle_changes(), vec![(id, false)]);
        assert_eq!(apps.stats.msgs_undeliverable, 0);
        // Once the app hangs up, messages for it are counted, not kept.
        drop(c);
        for i in 0..1000 {
            apps.send(id, &msg(i));
        }
        assert!(apps.stats.msgs_undeliverable > 0);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Every message that goes onto an app's socket is counted in its
    /// region header (`ctl_sent`) when it goes there: one kept in the
    /// outbox only once flushed. (The app's spinning wait reads its socket
    /// only when the count moved.)
    #[test]
    fn messages_on_the_socket_are_counted_in_the_region_header() {
        let (mut apps, path) = bound("count");
        let wake = eventfd().unwrap();
        let c = client(&path);
        say(&c, &CtlMsg::hello(9));
        let id = serve(&mut apps, 0, wake.as_raw_fd())[0];
        let count = |apps: &Apps| tas_abi::ctl_count(header(&apps.get(id).unwrap().map));
        assert_eq!(hear(&c).map(|m| m.kind), Some(ctl::HELLO_OK));
        assert_eq!(count(&apps), 0, "HELLO_OK is read at attach, not counted");
        apps.send(id, &msg(0));
        apps.send(id, &msg(1));
        assert_eq!(count(&apps), 2);
        // Until the socket is full; the message that did not fit is not
        // counted while it waits.
        let mut sent = 2u32;
        while !apps.has_outbox(id) {
            apps.send(id, &msg(sent));
            sent += 1;
        }
        assert_eq!(count(&apps), sent - 1);
        let mut got = 0u32;
        while got < sent {
            match hear(&c) {
                Some(m) => {
                    assert_eq!(m.flow, got);
                    got += 1;
                }
                None => apps.flush(id),
            }
            if got % 32 == 0 {
                apps.flush(id);
            }
        }
        assert!(!apps.has_outbox(id));
        assert_eq!(count(&apps), sent);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// The walk over attached apps (every wake of the slow path builds its
    /// poll set with it) covers the occupied slots up to the highest one,
    /// not all MAX_APPS: before, `count` and `iter` scanned 1,024 slots of
    /// 152 bytes each, twice per wake (13 % of the slow path's samples at
    /// ~1,000 wakes/s under redis-benchmark -P 16).
    #[test]
    fn the_walk_over_apps_stops_at_the_highest_attached_one() {
        let (mut apps, path) = bound("walk");
        let wake = eventfd().unwrap();
        assert_eq!((apps.count(), apps.live), (0, 0));
        let clients: Vec<OwnedFd> = (0..4).map(|_| client(&path)).collect();
        for (i, c) in clients.iter().enumerate() {
            say(c, &CtlMsg::hello(i as u32));
        }
        let mut ids = serve(&mut apps, 0, wake.as_raw_fd());
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2, 3], "lowest free ids first");
        assert_eq!((apps.count(), apps.live), (4, 4));
        // A hole below the highest: the walk still reaches the highest.
        assert!(apps.remove(1).is_some());
        assert_eq!((apps.count(), apps.live), (3, 4));
        assert_eq!(apps.iter().map(|a| a.id).collect::<Vec<_>>(), vec![0, 2, 3]);
        // The highest goes: the walk shrinks past every empty slot below it.
        assert!(apps.remove(3).is_some());
        assert!(apps.remove(2).is_some());
        assert_eq!((apps.count(), apps.live), (1, 1));
        assert!(apps.remove(2).is_none(), "an empty slot removes nothing");
        assert_eq!(apps.count(), 1);
        // A new app takes the lowest free id and the walk grows to it.
        let c = client(&path);
        say(&c, &CtlMsg::hello(7));
        assert_eq!(serve(&mut apps, 0, wake.as_raw_fd()), vec![1]);
        assert_eq!((apps.count(), apps.live), (2, 2));
        assert_eq!(apps.iter().map(|a| a.id).collect::<Vec<_>>(), vec![0, 1]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn silent_clients_time_out_and_limits_refuse_clearly() {
        let (mut apps, path) = bound("attach");
        let wake = eventfd().unwrap();
        // Silent connections wait without blocking anything, then expire.
        let silent: Vec<OwnedFd> = (0..3).map(|_| client(&path)).collect();
        assert!(serve(&mut apps, 1000, wake.as_raw_fd()).is_empty());
        assert_eq!(apps.pending_fds().count(), 3);
        assert_eq!(apps.next_deadline(), Some(1000 + HELLO_TIMEOUT_NS));
        apps.expire_pending(1000 + HELLO_TIMEOUT_NS - 1);
        assert_eq!(apps.pending_fds().count(), 3);
        apps.expire_pending(1000 + HELLO_TIMEOUT_NS);
        assert_eq!(apps.pending_fds().count(), 0);
        assert_eq!(apps.stats.attach_timeouts, 3);
        for s in &silent {
            // Closed by the daemon: the client reads end of file.
            assert_eq!(
                recv(s.as_raw_fd(), &mut [0u8; 8], MsgFlags::MSG_DONTWAIT),
                Ok(0)
            );
        }
        // At most MAX_PENDING wait; a newer one pushes out the oldest.
        let mut many = Vec::new();
        for i in 0..MAX_PENDING + 1 {
            many.push(client(&path));
            if i % 64 == 63 {
                apps.accept_new(2000);
            }
        }
        apps.accept_new(2000);
        assert_eq!(apps.pending_fds().count(), MAX_PENDING);
        assert_eq!(apps.stats.attach_timeouts, 4);
        apps.expire_pending(u64::MAX);
        drop(many);
        // Per-process limit: the second attachment of this process is
        // refused with EMFILE and the reason.
        apps.limits.per_process = 1;
        let a = client(&path);
        say(&a, &CtlMsg::hello(1));
        assert_eq!(serve(&mut apps, 3000, wake.as_raw_fd()).len(), 1);
        assert_eq!(hear(&a).unwrap().kind, ctl::HELLO_OK);
        let b = client(&path);
        say(&b, &CtlMsg::hello(2));
        assert!(serve(&mut apps, 3000, wake.as_raw_fd()).is_empty());
        let r = hear(&b).unwrap();
        assert_eq!(
            (r.kind, r.req, r.err, r.arg[0], r.arg[1]),
            (ctl::RESULT, 2, libc::EMFILE, ctl::REFUSED_PER_PROCESS, 1)
        );
        // Per-user limit likewise (EUSERS).
        apps.limits.per_process = 8;
        apps.limits.per_uid = 1;
        let b = client(&path);
        say(&b, &CtlMsg::hello(3));
        assert!(serve(&mut apps, 3000, wake.as_raw_fd()).is_empty());
        let r = hear(&b).unwrap();
        assert_eq!((r.err, r.arg[0]), (libc::EUSERS, ctl::REFUSED_PER_UID));
        // A wrong ABI version.
        apps.limits.per_uid = 8;
        let v = client(&path);
        let mut h = CtlMsg::hello(4);
        h.arg[0] = ABI_VERSION + 1;
        say(&v, &h);
        assert!(serve(&mut apps, 3000, wake.as_raw_fd()).is_empty());
        let r = hear(&v).unwrap();
        assert_eq!((r.err, r.arg[0]), (libc::EPROTO, ctl::REFUSED_VERSION));
        assert_eq!(apps.stats.attach_refused, 3);
        drop(a);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
