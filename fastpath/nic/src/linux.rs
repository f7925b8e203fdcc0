//! Linux plumbing shared by the AF_PACKET, AF_XDP and DPDK backends: interface
//! queries (ioctl, ethtool), raw sockets and socket options, and memory
//! mappings of kernel rings.

use crate::NicError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCGIFMTU: libc::c_ulong = 0x8921;
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// `struct ifreq`: the name, then a 24-byte union (we read `ifru_mtu`
/// and `ifru_hwaddr` out of it).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// What the backends need to know about an interface.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkInfo {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: usize,
}

/// An error builder for `map_err`: `os("what failed")`.
pub(crate) fn os(op: &'static str) -> impl Fn(std::io::Error) -> NicError {
    move |source| NicError::Os { op, source }
}

/// `errno` of the last failed call, as a NicError.
pub(crate) fn last_os(op: &'static str) -> NicError {
    NicError::Os {
        op,
        source: std::io::Error::last_os_error(),
    }
}

/// Index, MAC and MTU of `ifname` in the calling thread's network
/// namespace. Errors with NoSuchInterface if it does not exist.
pub(crate) fn link_info(ifname: &str) -> Result<LinkInfo, NicError> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
        return Err(NicError::NoSuchInterface(ifname.to_string()));
    }
    let cname = CString::new(ifname).map_err(|_| NicError::NoSuchInterface(ifname.to_string()))?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(NicError::NoSuchInterface(ifname.to_string()));
    }
    // Any socket reaches the interface ioctls; a UDP one needs no privilege.
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        .map_err(os("socket(AF_INET) for interface ioctls"))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a properly sized, initialised ifreq with a
    // NUL-terminated name; SIOCGIFHWADDR writes only inside it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFHWADDR as _, &mut req as *mut IfReq) } != 0 {
        return Err(last_os("ioctl(SIOCGIFHWADDR)"));
    }
    // ifru_hwaddr is a sockaddr: sa_family (u16), then sa_data.
    let family = u16::from_ne_bytes([req.data[0], req.data[1]]);
    if family != ARPHRD_ETHER && family != ARPHRD_LOOPBACK {
        return Err(NicError::Unsupported(format!(
            "interface {ifname}: not an Ethernet device (ARPHRD {family})"
        )));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.data[2..8]);
    req.data = [0; 24];
    // SAFETY: as above; SIOCGIFMTU writes an int into the union.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFMTU as _, &mut req as *mut IfReq) } != 0 {
        return Err(last_os("ioctl(SIOCGIFMTU)"));
    }
    let mtu = i32::from_ne_bytes([req.data[0], req.data[1], req.data[2], req.data[3]]);
    Ok(LinkInfo {
        ifindex,
        mac,
        mtu: mtu.max(0) as usize,
    })
}

/// How many RX queues `ifname` (in the calling thread's namespace) has
/// now, from the driver's channel counts (`ETHTOOL_GCHANNELS`: RX-only
/// plus combined channels). `None` when the driver does not report
/// channels (such devices have one queue as a rule). Read with an ioctl
/// rather than from /sys/class/net, which shows the namespace that sysfs
/// was mounted in, not necessarily the caller's.
pub(crate) fn rx_queues(ifname: &str) -> Result<Option<u32>, NicError> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    /// `struct ethtool_channels`.
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['\0', '/']) {
        return Err(NicError::NoSuchInterface(ifname.to_string()));
    }
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        .map_err(os("socket(AF_INET) for interface ioctls"))?;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // ifru_data: a pointer to the ethtool command.
    let ptr = &mut ch as *mut Channels as usize;
    req.data[..std::mem::size_of::<usize>()].copy_from_slice(&ptr.to_ne_bytes());
    // SAFETY: `req` is an initialised ifreq with a NUL-terminated name
    // whose ifru_data points to `ch`, a live ethtool_channels that the
    // kernel reads the command from and fills in.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfReq) } != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(None),
            Some(libc::ENODEV) => Err(NicError::NoSuchInterface(ifname.to_string())),
            _ => Err(NicError::Os {
                op: "ioctl(SIOCETHTOOL, ETHTOOL_GCHANNELS)",
                source: e,
            }),
        };
    }
    let n = ch.rx_count.saturating_add(ch.combined_count);
    Ok((n > 0).then_some(n))
}

/// `socket(2)` returning an owned fd.
pub(crate) fn socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(2)` with a value of type T (passed by its exact size).
pub(crate) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to size_of::<T>() readable bytes; the kernel
    // only reads them.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A memory mapping of kernel rings or UMEM, unmapped on drop (memmap2).
pub(crate) struct Mmap(memmap2::MmapRaw);

impl Mmap {
    /// A shared mapping of `len` bytes of `fd` at `offset` (rings of packet
    /// and XDP sockets), prefaulted.
    pub(crate) fn shared(fd: &OwnedFd, len: usize, offset: u64) -> std::io::Result<Mmap> {
        memmap2::MmapOptions::new()
            .len(len)
            .offset(offset)
            .populate()
            .map_raw(fd.as_raw_fd())
            .map(Mmap)
    }

    /// Zeroed anonymous private memory of `len` bytes, prefaulted.
    pub(crate) fn anonymous(len: usize) -> std::io::Result<Mmap> {
        let m = memmap2::MmapOptions::new().len(len).populate().map_anon()?;
        Ok(Mmap(memmap2::MmapRaw::from(m)))
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
