//! What tasd keeps in the file system while it runs: the per-interface lock
//! ([`InstanceLock`]) and its socket files ([`SockFile`]).
//!
//! * **One tasd per interface.** Before it opens the NIC, tasd takes an
//!   exclusive `flock` on `<run dir>/<iface>.net-<netns inode>.lock`
//!   (default run dir `/run/tas`) and writes its pid into it; a second tasd
//!   for the same interface — whatever its backend — fails with one line
//!   naming the running pid. The network namespace is part of the name
//!   because interfaces are: `veth0` in two namespaces are two interfaces.
//!   The lock goes with the process (also on SIGKILL); the file stays.
//! * **A live socket file is never deleted or replaced.** Before binding,
//!   an existing file at the path is probed with `connect`: if a daemon
//!   answers, tasd refuses to start; only a stale socket (connection
//!   refused) is removed. The socket is bound under a temporary name, given
//!   its mode and group, and renamed into place, so it is never reachable
//!   with the wrong permissions. At exit a socket file is removed only if
//!   it is still the one this process bound (same inode).

use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunFileError {
    #[error("interface {iface} is already served by tasd pid {pid} (lock {lock})")]
    Running {
        iface: String,
        pid: String,
        lock: PathBuf,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "socket {path} belongs to a running daemon (it accepts connections); not replacing it"
    )]
    SocketLive { path: PathBuf },
    #[error("{path} exists and is not a socket; not replacing it")]
    NotSocket { path: PathBuf },
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The inode of this process's network namespace (0 when unknown).
pub fn own_netns() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// The inode of process `pid`'s network namespace, if it can be read.
pub fn netns_of(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Whether process `pid` is running (not gone, not a zombie waiting to
/// be reaped).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
    {
        Some('Z') | Some('X') | Some('x') | None => false,
        Some(_) => true,
    }
}

/// The held per-interface lock (released when dropped or at exit).
pub struct InstanceLock {
    _lock: Flock<std::fs::File>,
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of interface `iface` in this network namespace.
    pub fn acquire(run_dir: &Path, iface: &str) -> Result<InstanceLock, RunFileError> {
        let name = iface.replace('/', "_");
        let path = run_dir.join(format!("{name}.net-{}.lock", own_netns()));
        let err = |source| RunFileError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(run_dir).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(RunFileError::Running {
                    iface: iface.to_string(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.chars().take(16).collect()
                    },
                    lock: path,
                });
            }
            Err((_, e)) => return Err(err(e.into())),
        };
        let f: &mut std::fs::File = &mut lock;
        f.set_len(0).map_err(err)?;
        f.rewind().map_err(err)?;
        writeln!(f, "{}", std::process::id()).map_err(err)?;
        Ok(InstanceLock { _lock: lock, path })
    }
}

/// Permissions of a socket file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockPerms {
    pub mode: u32,
    /// Group to give the file (None: the daemon's own).
    pub gid: Option<u32>,
}

/// A socket file this process bound; removed on drop if it is still ours.
#[derive(Debug)]
pub struct SockFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SockFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the path is still the socket we bound.
    pub fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }
}

impl Drop for SockFile {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a daemon accepts connections on the socket at `path` (of type
/// `ty`). A refused connection (or none) means stale.
fn live(path: &Path, ty: SockType) -> bool {
    let Ok(fd) = socket(
        AddressFamily::Unix,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => true,
        // Someone listens but its backlog is full, or with another type.
        Err(nix::errno::Errno::EAGAIN)
        | Err(nix::errno::Errno::EINPROGRESS)
        | Err(nix::errno::Errno::EPROTOTYPE) => true,
        Err(_) => false,
    }
}

/// Binds and listens on a Unix socket of type `ty` at `path` with `perms`,
/// refusing to touch a live one (see the module docs). Returns the
/// listening socket (non-blocking, close-on-exec) and the file's guard.
pub fn bind_socket(
    path: &Path,
    ty: SockType,
    perms: SockPerms,
    backlog: i32,
) -> Result<(OwnedFd, SockFile), RunFileError> {
    let err = |source: std::io::Error| RunFileError::Socket {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(RunFileError::NotSocket {
                path: path.to_owned(),
            })
        }
        Ok(_) => {
            if live(path, ty) {
                return Err(RunFileError::SocketLive {
                    path: path.to_owned(),
                });
            }
        }
        Err(_) => {}
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let fd = socket(
        AddressFamily::Unix,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| err(e.into()))?;
    let addr = UnixAddr::new(&tmp).map_err(|e| err(e.into()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| err(e.into()))?;
    let setup = || -> std::io::Result<()> {
        if let Some(g) = perms.gid {
            nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(g)))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(perms.mode))?;
        listen(&fd, Backlog::new(backlog).map_err(std::io::Error::from)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    let m = std::fs::symlink_metadata(path).map_err(err)?;
    Ok((
        fd,
        SockFile {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        },
    ))
}

/// The id of group `name`, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tas-runfiles-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_live_socket_is_kept_and_a_stale_one_replaced() {
        let d = dir("sock");
        let p = d.join("t.sock");
        let perms = SockPerms {
            mode: 0o660,
            gid: None,
        };
        let (fd, guard) = bind_socket(&p, SockType::SeqPacket, perms, 8).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        // A second daemon at the same path is refused; the file stays.
        let e = bind_socket(&p, SockType::SeqPacket, perms, 8).unwrap_err();
        assert!(matches!(e, RunFileError::SocketLive { .. }), "{e}");
        assert!(guard.still_ours());
        // Stale: the listener is gone but the file is there.
        drop(fd);
        std::mem::forget(guard);
        let (_fd2, guard2) = bind_socket(&p, SockType::SeqPacket, perms, 8).unwrap();
        assert!(guard2.still_ours());
        // Someone else's file at the path is not removed by our guard.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        drop(guard2);
        assert!(p.exists());
        let e = bind_socket(&p, SockType::SeqPacket, perms, 8).unwrap_err();
        assert!(matches!(e, RunFileError::NotSocket { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_instance_lock_names_the_holder() {
        let d = dir("lock");
        let l = InstanceLock::acquire(&d, "veth9").unwrap();
        let e = InstanceLock::acquire(&d, "veth9").err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && !msg.contains('\n'),
            "{msg}"
        );
        // Another interface is independent.
        let _o = InstanceLock::acquire(&d, "veth8").unwrap();
        drop(l);
        let _again = InstanceLock::acquire(&d, "veth9").unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
