//! Sockets passed between processes with `SCM_RIGHTS` (`XFER`,
//! `XFER_CANCEL`, `XFER_CLAIM`).
//!
//! Before a process's `sendmsg` carries one of its TAS sockets, its shim
//! registers a *transfer*: it sends the socket's fd (the Unix socket the
//! program sees) with `XFER`, and the service records a grant of that one
//! flow or listener keyed by the file's `(st_dev, st_ino)` — the sender
//! proves it holds the file, and keeps it open here while the transfer is
//! pending, so that the key cannot be reused by another file. A process
//! that receives a Unix socket by `SCM_RIGHTS` presents it (`XFER_CLAIM`):
//! if a pending transfer has that key and the receiver runs as the
//! sender's user (or as root), the grant becomes the receiver's pid's and
//! the receiver learns the region and the socket's description; it then
//! attaches a context sharing the region (`F_ALIAS`) and adopts the socket
//! (`ADOPT`, token 0), as a forked child does. Another user's claim is
//! refused (`EPERM`): a process never gets the rings of a socket it was
//! not given, and never those of another user.
//!
//! A pending transfer holds a reference like any grant: the connection
//! survives the sender's close (or exit) until the receiver claims it. It
//! is not kept forever as a file in flight is on Linux: an unclaimed
//! transfer goes after [`XFER_TTL_NS`] (what only it held is then closed
//! gracefully), and a process has at most [`MAX_PENDING_XFERS`] pending,
//! all processes [`MAX_PENDING_XFERS_TOTAL`] (`ETOOMANYREFS`, as Linux's
//! limit on files in flight). A claim by a process that holds the socket
//! already keeps no reference to it.
//!
//! An unclaimed transfer never authorises anything by its id (`has_grant`,
//! `grant_for`): only its key, presented by a process of the right user.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tas_abi::{ctl, CtlMsg};

use super::share::{held_by, Grant};
use crate::stack::{AppId, Stack, StackIo};

/// How long a transfer nobody claimed is kept.
pub const XFER_TTL_NS: u64 = 30_000_000_000;
/// Most unclaimed transfers per sending process.
pub const MAX_PENDING_XFERS: usize = 64;
/// Most unclaimed transfers in all (each keeps a file open here).
pub const MAX_PENDING_XFERS_TOTAL: usize = 4096;

/// A pending (or claimed) `SCM_RIGHTS` transfer: the part of a [`Grant`]
/// that only transfers have.
#[derive(Debug, Clone)]
pub(in crate::stack) struct Xfer {
    /// `(st_dev, st_ino)` of the file passed.
    key: (u64, u64),
    /// The sender's uid.
    uid: u32,
    /// The app whose region holds the socket's rings.
    region: AppId,
    /// The sender's description (`listener`, `flow`, `info`, `arg`).
    desc: CtlMsg,
    /// The file itself while unclaimed (its inode number stays ours).
    file: Option<Arc<OwnedFd>>,
    pub(in crate::stack) claimed: bool,
}

/// `(st_dev, st_ino)` of a socket file; None for anything else.
fn file_key(f: &OwnedFd) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(f.as_raw_fd()).ok()?;
    (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some((st.st_dev, st.st_ino))
}

fn id_of(m: &CtlMsg) -> u64 {
    m.arg[0] as u64 | (m.arg[1] as u64) << 32
}

impl Stack {
    /// `XFER`, `XFER_CANCEL`, `XFER_CLAIM` (with the fd the message
    /// carried, if any); any other message with an fd: the fd is dropped.
    pub fn on_app_msg_fd(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        fd: Option<OwnedFd>,
        io: &mut impl StackIo,
    ) {
        match msg.kind {
            ctl::XFER => self.app_xfer(now, app, msg, fd, io),
            ctl::XFER_CLAIM => self.app_xfer_claim(app, msg, fd, io),
            _ => {
                drop(fd);
                self.on_app_msg(now, app, msg, io)
            }
        }
    }

    fn app_xfer(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        fd: Option<OwnedFd>,
        io: &mut impl StackIo,
    ) {
        let pid = io.app_pid(app);
        let Some((file, key)) = fd.and_then(|f| file_key(&f).map(|k| (f, k))) else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        if pid == 0 {
            return self.reply_err(io, app, msg, libc::EBADF);
        }
        let unclaimed = |g: &&Grant| g.xfer.as_ref().is_some_and(|x| !x.claimed);
        let pending = self
            .grants
            .iter()
            .filter(unclaimed)
            .filter(|g| g.from_pid == pid)
            .count();
        let total = self.grants.iter().filter(unclaimed).count();
        if pending >= MAX_PENDING_XFERS || total >= MAX_PENDING_XFERS_TOTAL {
            self.stats.xfers_refused += 1;
            crate::warn_limited!(
                pid,
                "SCM_RIGHTS: {MAX_PENDING_XFERS} TAS sockets of this process wait to be received; refused (ETOOMANYREFS)"
            );
            return self.reply_err(io, app, msg, libc::ETOOMANYREFS);
        }
        let (flows, listeners) = if msg.listener == ctl::XFER_FRESH {
            (Vec::new(), Vec::new())
        } else if msg.listener != 0 {
            let lid = msg.listener;
            if !self
                .listeners
                .get(&lid)
                .is_some_and(|l| held_by(&l.holders, app, pid, io))
            {
                return self.reply_err(io, app, msg, libc::EBADF);
            }
            (Vec::new(), vec![lid])
        } else {
            let id = msg.flow;
            if msg.info.flow != id
                || !self
                    .conns
                    .get(&id)
                    .is_some_and(|c| held_by(&c.holders, app, pid, io))
            {
                return self.reply_err(io, app, msg, libc::EBADF);
            }
            (vec![id], Vec::new())
        };
        self.xfer_seq = self.xfer_seq.wrapping_add(1);
        let token = 1 << 63 | self.xfer_seq;
        self.stats.xfers += 1;
        tracing::debug!(
            app,
            pid,
            ?flows,
            ?listeners,
            "SCM_RIGHTS transfer registered"
        );
        self.grants.push(Grant {
            token,
            from_pid: pid,
            pid: 0,
            flows,
            listeners,
            since: now,
            xfer: Some(Xfer {
                key,
                uid: io.app_uid(app),
                region: io.mem_of(app),
                desc: *msg,
                file: Some(Arc::new(file)),
                claimed: false,
            }),
        });
        let mut r = CtlMsg {
            kind: ctl::RESULT,
            req: msg.req,
            listener: msg.listener,
            flow: msg.flow,
            ..Default::default()
        };
        r.arg[0] = token as u32;
        r.arg[1] = (token >> 32) as u32;
        io.app_msg(app, &r);
    }

    /// `XFER_CANCEL` (no answer).
    pub(in crate::stack) fn app_xfer_cancel(
        &mut self,
        now: u64,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let pid = io.app_pid(app);
        let token = id_of(msg);
        let Some(i) = self.grants.iter().position(|g| {
            g.token == token && g.from_pid == pid && g.xfer.as_ref().is_some_and(|x| !x.claimed)
        }) else {
            return;
        };
        let g = self.grants.remove(i);
        self.grant_gone(now, g, io);
    }

    fn app_xfer_claim(
        &mut self,
        app: AppId,
        msg: &CtlMsg,
        fd: Option<OwnedFd>,
        io: &mut impl StackIo,
    ) {
        let pid = io.app_pid(app);
        let Some(key) = fd.as_ref().and_then(file_key) else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        drop(fd);
        let Some(i) = self
            .grants
            .iter()
            .position(|g| g.xfer.as_ref().is_some_and(|x| !x.claimed && x.key == key))
        else {
            return self.reply_err(io, app, msg, libc::ENOENT);
        };
        let uid = io.app_uid(app);
        let g = &mut self.grants[i];
        let x = g.xfer.as_mut().expect("a transfer");
        if pid == 0 || uid == u32::MAX || (uid != x.uid && uid != 0) {
            let sender = x.uid;
            self.stats.xfers_refused += 1;
            crate::warn_limited!(
                pid,
                uid,
                "SCM_RIGHTS: a TAS socket of uid {sender} received by another user; refused (EPERM)"
            );
            return self.reply_err(io, app, msg, libc::EPERM);
        }
        x.claimed = true;
        x.file = None;
        g.pid = pid;
        let desc = x.desc;
        let region = x.region;
        // What the receiving process holds already (a socket passed to a
        // process that has it) needs no grant: it would keep the socket
        // alive until that process exits.
        let (flows, listeners) = (g.flows.clone(), g.listeners.clone());
        let held_f: Vec<_> = flows
            .into_iter()
            .filter(|id| {
                self.conns
                    .get(id)
                    .is_some_and(|c| held_by(&c.holders, app, pid, io))
            })
            .collect();
        let held_l: Vec<_> = listeners
            .into_iter()
            .filter(|id| {
                self.listeners
                    .get(id)
                    .is_some_and(|l| held_by(&l.holders, app, pid, io))
            })
            .collect();
        let g = &mut self.grants[i];
        g.flows.retain(|id| !held_f.contains(id));
        g.listeners.retain(|id| !held_l.contains(id));
        self.stats.xfers_claimed += 1;
        tracing::debug!(app, pid, from = g.from_pid, "SCM_RIGHTS transfer claimed");
        let mut r = CtlMsg {
            kind: ctl::RESULT,
            req: msg.req,
            listener: desc.listener,
            flow: desc.flow,
            ..Default::default()
        };
        r.arg[0] = u32::from(region);
        io.app_msg(app, &r);
        let d = CtlMsg {
            kind: ctl::XFER_DESC,
            req: msg.req,
            err: 0,
            ..desc
        };
        io.app_msg(app, &d);
    }
}
