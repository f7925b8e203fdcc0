//! A TAS socket as the shim keeps it ([`Sock`]): its fd numbers and pair
//! (`A`/`B`), TCP state ([`St`]) and BSD-layer state ([`Bsd`]), addresses,
//! options, pending error, shutdown flags and epoll registrations. Sockets
//! live in their context's table (`Inner::socks`, `ctx.rs`); the calls that
//! change them are in `ops`.

use crate::opts::Opts;
use crate::readiness::Sig;
use libc::c_int;
use tas::{ConnId, ListenerId, Tas};

/// The TCP-level state of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum St {
    Fresh,
    Listening(ListenerId),
    Connecting(u32),
    Connected(ConnId),
    /// Connect failed (the error is in `so_error` until consumed).
    Failed,
}

/// The BSD socket layer's view (`sock->state` in Linux): decides what a
/// repeated `connect()` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bsd {
    Unconnected,
    Connecting,
    Connected,
}

pub struct Sock {
    pub id: u64,
    /// Every fd number that refers to this socket (dup'ed ones too); `a` is
    /// one of them, used for the shim's own calls on `A`.
    pub fds: Vec<c_int>,
    pub a: c_int,
    pub sig: Sig,
    pub nonblock: bool,
    pub st: St,
    pub bsd: Bsd,
    /// Bound local address (host order); port 0 = not bound.
    pub local: (u32, u16),
    pub peer: (u32, u16),
    pub opts: Opts,
    /// Pending error (Linux `sk_err`), consumed by the next call that
    /// reports it.
    pub so_error: c_int,
    /// The connection's error was taken over into `so_error` already.
    pub err_taken: bool,
    pub shut_rd: bool,
    pub shut_wr: bool,
    pub backlog: i32,
    /// Bumped on new connections for a listener (edge-triggered wake-ups).
    pub lkey: u64,
    /// A kernel TCP socket that holds options we do not model.
    pub shadow: c_int,
    /// epoll registrations of this socket's fds: (epfd, fd, event).
    pub epoll_regs: Vec<(c_int, c_int, libc::epoll_event)>,
    pub port_registered: bool,
    /// connect() reported a failure (Linux then disconnects the socket).
    pub disconnected: bool,
    /// Other processes may hold it (it was open at a fork, or inherited):
    /// closing lets go of this process's reference only (`ops::close`).
    pub shared: bool,
    /// A listener this process accepts on (accept, epoll): kept among
    /// the listener's acceptors across a fork.
    pub interest: bool,
    /// A wildcard listener's kernel listener (`ops::wild`), or -1.
    pub klisten: c_int,
    /// The kernel listener has a connection (the reactor saw it readable).
    pub kready: bool,
    /// The program made it as an `AF_INET6` socket (`ops::v6`): its
    /// addresses are IPv4-mapped IPv6 addresses (`local`/`peer` hold the
    /// IPv4 part; 0 is `::`), and anything TAS cannot serve sends it to the
    /// kernel as an `AF_INET6` socket.
    pub v6: bool,
    /// `IPV6_V6ONLY` of an `AF_INET6` socket (never true while it is on
    /// TAS past `bind`: such a socket goes to the kernel).
    pub v6only: bool,
    /// Its readability is answered from user space (`vready.rs`), not
    /// signalled on its pair.
    pub virt: Option<crate::vready::VReg>,
    /// It was waited on through its pair (`poll`, `select`, a blocking
    /// call): never virtual again.
    pub no_virt: bool,
    /// Threads blocked in the kernel on its pair in a blocking call
    /// (`vready::KWait`).
    pub kwait: u32,
    /// A lazy socket's readability (its key) when last synced.
    pub lazy_seen: Option<u64>,
}

impl Sock {
    pub fn new(id: u64, a: c_int, b: c_int, nonblock: bool) -> Sock {
        Sock {
            id,
            fds: vec![a],
            a,
            sig: Sig::new(b),
            nonblock,
            st: St::Fresh,
            bsd: Bsd::Unconnected,
            local: (0, 0),
            peer: (0, 0),
            opts: Opts::default(),
            so_error: 0,
            err_taken: false,
            shut_rd: false,
            shut_wr: false,
            backlog: 0,
            lkey: 0,
            shadow: -1,
            epoll_regs: Vec::new(),
            port_registered: false,
            disconnected: false,
            shared: false,
            interest: false,
            klisten: -1,
            kready: false,
            v6: false,
            v6only: false,
            virt: None,
            no_virt: false,
            kwait: 0,
            lazy_seen: None,
        }
    }
}

/// Moves a connection's error (reset, timeout) into the socket's pending
/// error, once.
pub fn take_conn_error(s: &mut Sock, tas: &Tas) {
    if s.err_taken {
        return;
    }
    if let St::Connected(c) = s.st {
        let e = match tas.conn(c) {
            Some(cn) => cn.error(),
            None => Some(libc::ECONNRESET),
        };
        if let Some(e) = e {
            s.err_taken = true;
            // Linux: a reset after the peer's FIN is reported as EPIPE.
            let fin = tas.conn(c).map(|x| x.rx_fin()).unwrap_or(false);
            s.so_error = if e == libc::ECONNRESET && fin {
                libc::EPIPE
            } else {
                e
            };
        }
    }
}
