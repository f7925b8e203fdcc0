//! rtnetlink, the little of it shared mode needs to agree with the kernel
//! about neighbours and routes (no library: a raw `NETLINK_ROUTE` socket,
//! hand-built requests, bounds-checked parsing of every answer — kernel
//! input, but still checked, never trusted to be well formed).
//!
//! * **Neighbours:** [`Kernel::neighbours`] dumps the kernel's IPv4
//!   neighbour table (`RTM_GETNEIGH`); a second socket subscribed to
//!   `RTNLGRP_NEIGH` reports every change ([`Kernel::events`]); an overrun
//!   of that socket (`ENOBUFS`: changes were lost) is reported so the
//!   caller dumps again.
//! * **Resolution through the kernel:** [`Kernel::resolve`] sends
//!   `RTM_NEWNEIGH` with `NTF_USE` (and `NLM_F_CREATE`), which makes the
//!   kernel create the entry if missing and run its own state machine on
//!   it (`neigh_event_send`: an ARP request for a new or failed entry, a
//!   re-probe for a stale one, nothing for a reachable one); the answer
//!   comes back as a neighbour event. tasd never sends ARP requests of
//!   its own in shared mode, so tasd and the kernel never disagree.
//! * **Routes:** [`Kernel::route`] asks the FIB for one destination
//!   (`RTM_GETROUTE` with `RTA_DST`, as `ip route get`): the output
//!   interface and the gateway, if any; [`Kernel::default_gateway`] reads
//!   the main table's default route through an interface.
//!
//! Nothing here blocks: the sockets are non-blocking, and the kernel
//! answers rtnetlink requests while the request is being sent (dumps are
//! continued inside `recv`), so an answer that is not there at once is an
//! error ([`NlError::NoAnswer`]), not a wait.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const NETLINK_ROUTE: i32 = 0;
const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_MULTI: u16 = 0x02;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
pub const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
/// `RTMGRP_NEIGH`: the legacy bind mask of `RTNLGRP_NEIGH` (group 3).
const RTMGRP_NEIGH: u32 = 1 << 2;
const AF_INET: u8 = libc::AF_INET as u8;
/// `struct ndmsg` and `struct rtmsg`: 12 bytes each.
const NDMSG_LEN: usize = 12;
const RTMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const NTF_USE: u8 = 0x01;
/// `NUD_*` states with a usable link-layer address (`NUD_VALID`).
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const RTN_UNICAST: u8 = 1;
const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("netlink: the kernel refused: {}", std::io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("netlink: malformed message ({0})")]
    Malformed(&'static str),
    #[error("netlink: no answer")]
    NoAnswer,
}

/// One netlink message: type, flags, sequence number, payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram (every length checked against the bytes
/// there are).
pub fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, NlError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = u32_at(buf, at).ok_or(NlError::Malformed("short header"))? as usize;
        if len < NLMSG_HDR || len > buf.len() - at {
            return Err(NlError::Malformed("message length"));
        }
        out.push(Msg {
            ty: u16_at(buf, at + 4).unwrap_or(0),
            flags: u16_at(buf, at + 6).unwrap_or(0),
            seq: u32_at(buf, at + 8).unwrap_or(0),
            payload: &buf[at + NLMSG_HDR..at + len],
        });
        at += align4(len).min(buf.len() - at);
    }
    Ok(out)
}

/// Route attributes (`struct rtattr` type and data) of `buf`.
pub fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NlError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = usize::from(u16_at(buf, at).unwrap_or(0));
        if len < 4 || len > buf.len() - at {
            return Err(NlError::Malformed("attribute length"));
        }
        // The top bits are NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        let ty = u16_at(buf, at + 2).unwrap_or(0) & 0x3fff;
        out.push((ty, &buf[at + 4..at + len]));
        at += align4(len).min(buf.len() - at);
    }
    Ok(out)
}

/// An IPv4 neighbour as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    /// Host order.
    pub ip: u32,
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` state.
    pub state: u16,
    /// An `RTM_DELNEIGH`.
    pub deleted: bool,
}

impl Neighbour {
    /// Whether the kernel would send to it with `mac` now (a valid state
    /// and an address; a stale entry counts: the kernel uses it while it
    /// checks it again).
    pub fn usable(&self) -> Option<[u8; 6]> {
        (!self.deleted && self.state & NUD_VALID != 0)
            .then_some(self.mac)
            .flatten()
    }
}

/// An `RTM_NEWNEIGH`/`RTM_DELNEIGH` message about an IPv4 neighbour.
pub fn parse_neighbour(m: &Msg<'_>) -> Result<Option<Neighbour>, NlError> {
    if m.ty != RTM_NEWNEIGH && m.ty != RTM_DELNEIGH {
        return Ok(None);
    }
    let p = m.payload;
    if p.len() < NDMSG_LEN {
        return Err(NlError::Malformed("short ndmsg"));
    }
    if p[0] != AF_INET {
        return Ok(None);
    }
    let mut n = Neighbour {
        ifindex: u32_at(p, 4).unwrap_or(0),
        ip: 0,
        mac: None,
        state: u16_at(p, 8).unwrap_or(0),
        deleted: m.ty == RTM_DELNEIGH,
    };
    let mut have_dst = false;
    for (ty, data) in attrs(&p[NDMSG_LEN..])? {
        match (ty, data.len()) {
            (NDA_DST, 4) => {
                n.ip = u32::from_be_bytes(data.try_into().expect("4 bytes"));
                have_dst = true;
            }
            (NDA_LLADDR, 6) => n.mac = Some(data.try_into().expect("6 bytes")),
            _ => {}
        }
    }
    Ok(have_dst.then_some(n))
}

/// What the FIB says about a destination (or a route of a dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    /// `RTN_*` type (1: unicast; 2: local, 7: unreachable, ...).
    pub kind: u8,
    pub table: u32,
    pub dst_len: u8,
    /// Host order.
    pub dst: Option<u32>,
    pub gateway: Option<u32>,
    pub oif: Option<u32>,
}

impl Route {
    /// The next hop toward `dst` out of interface `ifindex` this answer
    /// of [`Kernel::route`] gives: the gateway, or `dst` itself when it is
    /// on the link; None when the kernel would not send it out of that
    /// interface as unicast (local, unreachable, another interface).
    pub fn next_hop(&self, dst: u32, ifindex: u32) -> Option<u32> {
        (self.kind == RTN_UNICAST && self.oif == Some(ifindex))
            .then_some(self.gateway.unwrap_or(dst))
    }
}

/// An `RTM_NEWROUTE` message about an IPv4 route.
pub fn parse_route(m: &Msg<'_>) -> Result<Option<Route>, NlError> {
    if m.ty != RTM_NEWROUTE {
        return Ok(None);
    }
    let p = m.payload;
    if p.len() < RTMSG_LEN {
        return Err(NlError::Malformed("short rtmsg"));
    }
    if p[0] != AF_INET {
        return Ok(None);
    }
    let mut r = Route {
        kind: p[7],
        table: u32::from(p[4]),
        dst_len: p[1],
        ..Default::default()
    };
    let ip = |d: &[u8]| u32::from_be_bytes(d.try_into().expect("4 bytes"));
    for (ty, data) in attrs(&p[RTMSG_LEN..])? {
        match (ty, data.len()) {
            (RTA_DST, 4) => r.dst = Some(ip(data)),
            (RTA_GATEWAY, 4) => r.gateway = Some(ip(data)),
            (RTA_OIF, 4) => r.oif = Some(u32::from_ne_bytes(data.try_into().expect("4 bytes"))),
            (RTA_TABLE, 4) => r.table = u32::from_ne_bytes(data.try_into().expect("4 bytes")),
            _ => {}
        }
    }
    Ok(Some(r))
}

/// A request: header, fixed part, attributes.
fn request(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; NLMSG_HDR];
    b.extend_from_slice(fixed);
    for (t, d) in attrs {
        let len = 4 + d.len();
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&t.to_ne_bytes());
        b.extend_from_slice(d);
        b.resize(align4(b.len()), 0);
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&ty.to_ne_bytes());
    b[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

fn ndmsg(ifindex: u32, state: u16, flags: u8) -> [u8; NDMSG_LEN] {
    let mut m = [0u8; NDMSG_LEN];
    m[0] = AF_INET;
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    m[8..10].copy_from_slice(&state.to_ne_bytes());
    m[10] = flags;
    m
}

fn rtmsg(dst_len: u8) -> [u8; RTMSG_LEN] {
    let mut m = [0u8; RTMSG_LEN];
    m[0] = AF_INET;
    m[1] = dst_len;
    m
}

/// A non-blocking `NETLINK_ROUTE` socket bound to `groups`.
fn open_socket(groups: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain old data; zeroes are valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = groups;
    // SAFETY: a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if groups != 0 {
        // Room for bursts of changes (an overrun is recovered by a dump).
        let size: libc::c_int = 1 << 20;
        // SAFETY: a valid int option of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
    }
    Ok(fd)
}

/// One datagram from `fd` into `buf` (Ok(None): nothing queued).
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: a valid buffer of the given length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// Whether the events socket lost changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

/// tasd's rtnetlink handles: a request socket and a socket subscribed to
/// neighbour changes, for interface `ifindex`.
pub struct Kernel {
    query: OwnedFd,
    events: OwnedFd,
    ifindex: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl Kernel {
    pub fn open(ifindex: u32) -> Result<Kernel, NlError> {
        Ok(Kernel {
            query: open_socket(0)?,
            events: open_socket(RTMGRP_NEIGH)?,
            ifindex,
            seq: 1,
            buf: vec![0u8; 64 << 10],
        })
    }

    /// The interface this handle is about.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The socket to poll for neighbour changes ([`Kernel::events`]).
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.events.as_fd()
    }

    /// Sends a request and hands every answer message to `each` until the
    /// kernel's ACK, `NLMSG_DONE`, or (not a dump) the one answer.
    fn transact(
        &mut self,
        ty: u16,
        flags: u16,
        fixed: &[u8],
        attrs: &[(u16, &[u8])],
        mut each: impl FnMut(&Msg<'_>) -> Result<(), NlError>,
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = request(ty, flags, seq, fixed, attrs);
        // SAFETY: a valid buffer of the given length; the kernel is the
        // default destination of an unconnected netlink socket.
        let n = unsafe {
            libc::send(
                self.query.as_raw_fd(),
                req.as_ptr() as *const libc::c_void,
                req.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // Bounded: a dump of a huge table ends long before this.
        for _ in 0..4096 {
            let Some(len) = recv(&self.query, &mut self.buf)? else {
                return Err(NlError::NoAnswer);
            };
            let buf = std::mem::take(&mut self.buf);
            let r = (|| {
                for m in messages(&buf[..len.min(buf.len())])? {
                    if m.seq != seq {
                        continue; // an answer to an earlier, abandoned request
                    }
                    match m.ty {
                        NLMSG_ERROR => {
                            let code = m.payload.get(0..4).ok_or(NlError::Malformed("error"))?;
                            let code = i32::from_ne_bytes(code.try_into().expect("4 bytes"));
                            return if code == 0 {
                                Ok(true)
                            } else {
                                Err(NlError::Kernel(code.saturating_neg()))
                            };
                        }
                        NLMSG_DONE => return Ok(true),
                        NLMSG_OVERRUN => return Err(NlError::Malformed("overrun")),
                        _ => {
                            each(&m)?;
                            if m.flags & NLM_F_MULTI == 0 && flags & NLM_F_ACK == 0 {
                                return Ok(true);
                            }
                        }
                    }
                }
                Ok(false)
            })();
            self.buf = buf;
            if r? {
                return Ok(());
            }
        }
        Err(NlError::NoAnswer)
    }

    /// The kernel's IPv4 neighbours on the interface.
    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>, NlError> {
        let mut out = Vec::new();
        let ifindex = self.ifindex;
        self.transact(RTM_GETNEIGH, NLM_F_DUMP, &ndmsg(0, 0, 0), &[], |m| {
            if let Some(n) = parse_neighbour(m)? {
                if n.ifindex == ifindex {
                    out.push(n);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Asks the kernel to resolve `ip` (host order) on the interface, and
    /// returns the address it has now, if usable (see the module doc).
    pub fn resolve(&mut self, ip: u32) -> Result<Option<[u8; 6]>, NlError> {
        let dst = ip.to_be_bytes();
        self.transact(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_ACK,
            &ndmsg(self.ifindex, 0, NTF_USE),
            &[(NDA_DST, &dst)],
            |_| Ok(()),
        )?;
        Ok(self
            .neighbours()?
            .into_iter()
            .find(|n| n.ip == ip)
            .and_then(|n| n.usable()))
    }

    /// The FIB's route to `dst` (host order), as `ip route get`.
    pub fn route(&mut self, dst: u32) -> Result<Route, NlError> {
        let d = dst.to_be_bytes();
        let mut route = None;
        self.transact(RTM_GETROUTE, 0, &rtmsg(32), &[(RTA_DST, &d)], |m| {
            if let Some(r) = parse_route(m)? {
                route = Some(r);
            }
            Ok(())
        })?;
        route.ok_or(NlError::NoAnswer)
    }

    /// The gateway of the main table's default route through the
    /// interface, if there is one.
    pub fn default_gateway(&mut self) -> Result<Option<u32>, NlError> {
        let mut gw = None;
        let ifindex = self.ifindex;
        self.transact(RTM_GETROUTE, NLM_F_DUMP, &rtmsg(0), &[], |m| {
            if let Some(r) = parse_route(m)? {
                if r.dst_len == 0
                    && r.table == RT_TABLE_MAIN
                    && r.kind == RTN_UNICAST
                    && r.oif == Some(ifindex)
                    && gw.is_none()
                {
                    gw = r.gateway;
                }
            }
            Ok(())
        })?;
        Ok(gw)
    }

    /// Neighbour changes on the interface since the last call (at most
    /// 256 datagrams a call). Err(Overrun): changes were lost (dump again).
    pub fn events(&mut self, mut each: impl FnMut(Neighbour)) -> Result<(), Overrun> {
        for _ in 0..256 {
            let len = match recv(&self.events, &mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(Overrun),
                Err(e) => {
                    crate::warn_limited!("netlink neighbour events: {e}");
                    return Ok(());
                }
            };
            let Ok(msgs) = messages(&self.buf[..len.min(self.buf.len())]) else {
                crate::warn_limited!("netlink: malformed neighbour event");
                continue;
            };
            for m in msgs {
                if let Ok(Some(n)) = parse_neighbour(&m) {
                    if n.ifindex == self.ifindex {
                        each(n);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The index of interface `name` (None if there is no such interface).
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut b = request(ty, flags, seq, body, &[]);
        // `request` sets NLM_F_REQUEST; an answer has the flags given.
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        b
    }

    fn neigh_body(ifindex: u32, state: u16, ip: [u8; 4], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut b = ndmsg(ifindex, state, 0).to_vec();
        let mut push = |t: u16, d: &[u8]| {
            b.extend_from_slice(&((4 + d.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&t.to_ne_bytes());
            b.extend_from_slice(d);
            b.resize(align4(b.len()), 0);
        };
        push(NDA_DST, &ip);
        if let Some(m) = mac {
            push(NDA_LLADDR, &m);
        }
        b
    }

    #[test]
    fn neighbour_messages() {
        let mac = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
        let mut dg = msg(
            RTM_NEWNEIGH,
            NLM_F_MULTI,
            7,
            &neigh_body(3, 0x02, [198, 18, 0, 2], Some(mac)),
        );
        dg.extend(msg(
            RTM_NEWNEIGH,
            NLM_F_MULTI,
            7,
            &neigh_body(3, 0x01, [198, 18, 0, 3], None),
        ));
        dg.extend(msg(
            RTM_DELNEIGH,
            0,
            7,
            &neigh_body(4, 0x04, [10, 0, 0, 1], Some(mac)),
        ));
        dg.extend(msg(NLMSG_DONE, NLM_F_MULTI, 7, &[0, 0, 0, 0]));
        let ms = messages(&dg).unwrap();
        assert_eq!(ms.len(), 4);
        let n: Vec<Neighbour> = ms
            .iter()
            .filter_map(|m| parse_neighbour(m).unwrap())
            .collect();
        assert_eq!(n.len(), 3);
        assert_eq!(
            (n[0].ifindex, n[0].ip, n[0].usable()),
            (3, 0xc612_0002, Some(mac))
        );
        assert_eq!(n[1].usable(), None, "incomplete: no address yet");
        assert!(n[2].deleted && n[2].usable().is_none());
        // IPv6 neighbours are not ours.
        let mut v6 = neigh_body(3, 0x02, [0; 4], Some(mac));
        v6[0] = libc::AF_INET6 as u8;
        assert_eq!(
            parse_neighbour(&messages(&msg(RTM_NEWNEIGH, 0, 1, &v6)).unwrap()[0]).unwrap(),
            None
        );
    }

    #[test]
    fn route_messages() {
        let mut b = rtmsg(0).to_vec();
        b[4] = 254;
        b[7] = RTN_UNICAST;
        for (t, d) in [
            (RTA_GATEWAY, vec![198, 18, 0, 254]),
            (RTA_OIF, 5u32.to_ne_bytes().to_vec()),
            (RTA_TABLE, 254u32.to_ne_bytes().to_vec()),
        ] {
            b.extend_from_slice(&((4 + d.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&t.to_ne_bytes());
            b.extend_from_slice(&d);
        }
        let dg = msg(RTM_NEWROUTE, 0, 2, &b);
        let r = parse_route(&messages(&dg).unwrap()[0]).unwrap().unwrap();
        assert_eq!(
            r,
            Route {
                kind: RTN_UNICAST,
                table: 254,
                dst_len: 0,
                dst: None,
                gateway: Some(0xc612_00fe),
                oif: Some(5)
            }
        );
    }

    /// Every truncation and every bad length is refused, never a panic
    /// nor a read past the end.
    #[test]
    fn hostile_lengths() {
        let mac = [2, 0, 0, 0, 0, 1];
        let dg = msg(
            RTM_NEWNEIGH,
            0,
            1,
            &neigh_body(3, 2, [1, 2, 3, 4], Some(mac)),
        );
        for n in 0..dg.len() {
            if let Ok(ms) = messages(&dg[..n]) {
                for m in ms {
                    let _ = parse_neighbour(&m);
                }
            }
        }
        let mut bad = dg.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
        // An attribute claiming more than there is.
        let mut a = dg.clone();
        a[NLMSG_HDR + NDMSG_LEN..NLMSG_HDR + NDMSG_LEN + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_neighbour(&messages(&a).unwrap()[0]).is_err());
        // A zero-length attribute (would loop forever if accepted).
        a[NLMSG_HDR + NDMSG_LEN..NLMSG_HDR + NDMSG_LEN + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_neighbour(&messages(&a).unwrap()[0]).is_err());
        // Short fixed parts.
        assert!(parse_neighbour(&Msg {
            ty: RTM_NEWNEIGH,
            flags: 0,
            seq: 0,
            payload: &[2; 11]
        })
        .is_err());
        assert!(parse_route(&Msg {
            ty: RTM_NEWROUTE,
            flags: 0,
            seq: 0,
            payload: &[2; 11]
        })
        .is_err());
    }

    /// Against the kernel of this network namespace (root, read-only): the
    /// loopback route, the dumps, an empty event queue.
    #[test]
    fn kernel_answers() {
        let lo = ifindex("lo").expect("lo");
        let mut k = Kernel::open(lo).expect("netlink socket");
        let r = k.route(0x7f00_0001).expect("route get 127.0.0.1");
        assert_eq!(r.oif, Some(lo));
        assert_eq!(r.kind, 2, "RTN_LOCAL");
        let _ = k.default_gateway().expect("route dump");
        assert_eq!(k.events(|_| {}), Ok(()));
        k.neighbours().expect("neighbour dump");
        // (Resolution is shown on a veth by the coexist system tests: on
        // loopback the kernel keys every neighbour as 0.0.0.0.)
    }
}
