//! The XDP sockets that net_af_xdp leaves open (see `DpdkNic::close`).

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
