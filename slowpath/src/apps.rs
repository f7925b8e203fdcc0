//! The app registry: the attach socket, each app's shared region, its ring
//! memory allocator and its control channel.
//!
//! An app connects to the attach socket (Unix `SOCK_SEQPACKET`), sends
//! `HELLO` with its ABI version and receives `HELLO_OK` with three fds: the
//! region (a memfd), its own eventfd (we kick it) and the core's eventfd (it
//! kicks us). When its socket hangs up — exit or crash — everything it had is
//! reclaimed and its id can be reused.

use nix::sys::socket::{
    accept4, bind, listen, recv, sendmsg, socket, AddressFamily, Backlog, ControlMessage, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use tas_abi::{
    ctl, AppCmd, AppEvent, CtlMsg, HelloOk, RegionHeader, RegionLayout, ABI_VERSION, REGION_MAGIC,
};
use tas_runtime::{AppPort, MAX_APPS};

pub type AppId = u16;

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("attach socket {path}: {source}")]
    Socket { path: PathBuf, source: nix::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
}

/// All attached apps and the attach socket.
pub struct Apps {
    pub listener: OwnedFd,
    path: PathBuf,
    apps: Vec<Option<App>>,
    pub region_size: u32,
    /// The service's IPv4 address, told to apps in `HELLO_OK`.
    pub local_ip: u32,
    pub event_cap: u32,
    pub cmd_cap: u32,
    /// Fast-path lanes: each app region has one event ring per lane.
    pub lanes: u32,
    pub attached_total: u64,
}

fn eventfd() -> std::io::Result<OwnedFd> {
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
    )?;
    Ok(OwnedFd::from(efd))
}

/// A shared memory file of `size` bytes (sparse until touched).
fn memfd(name: &str, size: u32) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let fd = nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, i64::from(size))?;
    Ok(fd)
}

impl Apps {
    /// Binds the attach socket at `path` (a stale socket file is replaced).
    pub fn bind(path: &Path, region_size: u32) -> Result<Apps, AppsError> {
        let err = |source| AppsError::Socket {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::remove_file(path);
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(err)?;
        let addr = UnixAddr::new(path).map_err(err)?;
        bind(fd.as_raw_fd(), &addr).map_err(err)?;
        listen(&fd, Backlog::new(128).map_err(err)?).map_err(err)?;
        // Any local user may attach (the service validates everything).
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777));
        Ok(Apps {
            listener: fd,
            path: path.to_owned(),
            apps: (0..MAX_APPS).map(|_| None).collect(),
            region_size,
            local_ip: 0,
            event_cap: 4096,
            cmd_cap: 4096,
            lanes: 1,
            attached_total: 0,
        })
    }

    pub fn get(&self, id: AppId) -> Option<&App> {
        self.apps.get(id as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: AppId) -> Option<&mut App> {
        self.apps.get_mut(id as usize)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.iter().flatten()
    }

    pub fn count(&self) -> usize {
        self.iter().count()
    }

    /// Accepts one pending connection and runs the HELLO exchange. Returns
    /// the new app and the port each fast-path lane needs (index = lane),
    /// or None when no connection was waiting (or the app misbehaved: it is
    /// dropped). `core_wake` is the eventfd of lane 0, which serves the
    /// app's command ring.
    pub fn accept(&mut self, core_wake: RawFd) -> Option<(AppId, Vec<AppPort>)> {
        let fd = match accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => {
                // SAFETY: accept4 returned a fresh fd that we now own.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
            Err(_) => return None,
        };
        // The HELLO must arrive promptly; wait at most 1 s for it.
        let mut pfd = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16)) != Ok(1) {
            tracing::warn!("app did not say HELLO within 1 s; dropped");
            return None;
        }
        let mut buf = [0u8; 256];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
        let hello = CtlMsg::from_bytes(&buf[..n])?;
        let pid = peer_pid(fd.as_fd());
        let reply_err = |e: i32| {
            let mut m = CtlMsg::new(ctl::RESULT);
            m.req = hello.req;
            m.err = e;
            let _ = sendmsg::<()>(
                fd.as_raw_fd(),
                &[IoSlice::new(&m.as_bytes())],
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            );
        };
        if hello.kind != ctl::HELLO || hello.hello_version() != ABI_VERSION {
            tracing::warn!(
                pid,
                "app with ABI version {} refused (ours is {ABI_VERSION})",
                hello.hello_version()
            );
            reply_err(libc::EPROTO);
            return None;
        }
        let Some(id) = self.apps.iter().position(|a| a.is_none()) else {
            tracing::warn!(pid, "too many apps attached ({MAX_APPS}); refused");
            reply_err(libc::EMFILE);
            return None;
        };
        let id = id as AppId;
        match self.setup(id, fd, pid, hello.req, core_wake) {
            Ok(ports) => Some((id, ports)),
            Err(e) => {
                tracing::warn!(pid, "attaching app failed: {e}");
                None
            }
        }
    }

    fn setup(
        &mut self,
        id: AppId,
        sock: OwnedFd,
        pid: i32,
        req: u32,
        core_wake: RawFd,
    ) -> std::io::Result<Vec<AppPort>> {
        let layout = RegionLayout::new(
            self.region_size,
            self.lanes.max(1),
            self.event_cap,
            self.cmd_cap,
        )
        .ok_or_else(|| std::io::Error::other("region too small for its rings"))?;
        let memfd = memfd(&format!("tas-app-{id}"), self.region_size)?;
        // SAFETY: the memfd is ours and sized; the mapping lives in `App`
        // and outlives the core's use of it (RemoveApp is acknowledged first).
        let mut map = unsafe {
            memmap2::MmapOptions::new()
                .len(self.region_size as usize)
                .map_mut(&memfd)?
        };
        let base = map.as_mut_ptr();
        // SAFETY: the region starts with room for a RegionHeader (64 bytes,
        // page aligned) and nobody else uses it yet.
        unsafe {
            std::ptr::write(
                base as *mut RegionHeader,
                RegionHeader {
                    magic: REGION_MAGIC,
                    version: ABI_VERSION,
                    core_sleeping: Default::default(),
                    app_waiting: Default::default(),
                    _pad: 0,
                },
            )
        };
        let app_wake = eventfd()?;
        let mut ports = Vec::with_capacity(layout.event_rings as usize);
        for lane in 0..layout.event_rings {
            // SAFETY: the rings lie inside the mapping (RegionLayout checked
            // the sizes) and stay mapped while the ports exist; each ring
            // has one producer (its lane) and the command ring one consumer
            // (lane 0).
            let (events, cmds) = unsafe {
                (
                    tas_abi::RingProducer::<AppEvent>::new(
                        base.add(layout.event_ring_off(lane) as usize),
                        layout.event_cap,
                    ),
                    (lane == 0).then(|| {
                        tas_abi::RingConsumer::<AppCmd>::new(
                            base.add(layout.cmd_off as usize),
                            layout.cmd_cap,
                        )
                    }),
                )
            };
            ports.push(AppPort {
                id,
                base,
                len: self.region_size as usize,
                events,
                cmds,
                app_wake: app_wake.as_raw_fd(),
            });
        }
        let ok = HelloOk {
            app: id as u32,
            service_ip: self.local_ip,
            layout,
        }
        .to_msg(req);
        let fds = [memfd.as_raw_fd(), app_wake.as_raw_fd(), core_wake];
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&ok.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
        self.apps[id as usize] = Some(App {
            id,
            sock,
            map,
            memfd,
            app_wake,
            alloc: RingAlloc::new(layout.payload_off, layout.size),
            layout,
            pid,
        });
        self.attached_total += 1;
        tracing::info!(app = id, pid, "app attached");
        Ok(ports)
    }

    /// Sends a control message to an app (dropped if its socket is gone or full).
    pub fn send(&self, id: AppId, m: &CtlMsg) {
        if let Some(a) = self.get(id) {
            if let Err(e) = sendmsg::<()>(
                a.sock.as_raw_fd(),
                &[IoSlice::new(&m.as_bytes())],
                &[],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                tracing::debug!(app = id, "control message not delivered: {e}");
            }
        }
    }

    /// Reads one message from an app. `Ok(None)`: nothing waiting;
    /// `Err(())`: the app hung up (or sent garbage) and must be detached.
    pub fn recv(&self, id: AppId) -> Result<Option<CtlMsg>, ()> {
        let Some(a) = self.get(id) else {
            return Err(());
        };
        let mut buf = [0u8; 256];
        match recv(a.sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Err(()),
            Ok(n) => match CtlMsg::from_bytes(&buf[..n]) {
                Some(m) => Ok(Some(m)),
                None => {
                    tracing::warn!(
                        app = id,
                        "malformed control message ({n} bytes); detaching app"
                    );
                    Err(())
                }
            },
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Drops an app's resources (after the core released its region).
    pub fn remove(&mut self, id: AppId) -> Option<App> {
        let a = self.apps.get_mut(id as usize)?.take();
        if let Some(a) = &a {
            tracing::info!(app = id, pid = a.pid, "app detached");
        }
        a
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The attaching process's pid (SO_PEERCRED), 0 when unknown.
fn peer_pid(fd: BorrowedFd<'_>) -> i32 {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.pid())
        .unwrap_or(0)
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
}
