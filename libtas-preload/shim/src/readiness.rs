//! Readiness through the kernel: what a TAS socket's fd signals, and how.
//!
//! Every TAS socket's fd number is one end (`A`) of a Unix stream socket
//! pair; the shim keeps the other end (`B`). The shim drives `A`'s kernel
//! readiness so that `epoll`, `poll` and `select` on mixed fd sets work
//! natively, edge-triggered and one-shot included:
//!
//! * readable: one byte sent `B → A` (another on each new arrival while
//!   still readable, so `EPOLLET` sees a fresh edge as with Linux TCP);
//!   drained when nothing is left to read;
//! * not writable: `A`'s send buffer is set to the minimum and a block is
//!   sent `A → B` (Unix sockets are writable only while less than a quarter
//!   of the send buffer is queued at the peer); drained when ring space
//!   comes back — which gives `EPOLLOUT` edges like Linux's write-space
//!   wake-ups;
//! * `EPOLLRDHUP`: `shutdown(B, SHUT_WR)`; our `SHUT_WR`: `shutdown(B,
//!   SHUT_RD)`; both: `EPOLLHUP`, exactly the Linux TCP rule;
//! * reset / failed connect: a byte `A → B` and `close(B)`, which gives
//!   `EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT | EPOLLRDHUP`; `EPOLLERR`
//!   clears when the app consumes the error (`SO_ERROR`, `read`).
//!
//! Because `A` is a real socket, `fstat` says `S_IFSOCK` and fd numbers can
//! never collide with the program's other descriptors.
//!
//! This module owns [`Sig`] (what is signalled on a pair now), [`want`]
//! (what should be, from the socket and its connection) and the kernel
//! calibration behind the "not writable" block. Deciding *when* to bring a
//! socket up to date is the context's job (`Inner::sync`, in `ctx.rs`).

use crate::global::global;
use crate::sock::{Sock, St};
use crate::sys::{self, r_close, r_recv, r_send, real};
use libc::c_int;
use tas::Tas;

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sig(b={} rx={} wfull={} rd={} wr={})",
            self.b, self.rx_bytes, self.wfull, self.rd_shut, self.wr_shut
        )
    }
}

/// The readiness currently signalled on `A` (see the module docs).
pub struct Sig {
    pub b: c_int,
    rx_bytes: u32,
    key: u64,
    wfull: bool,
    rd_shut: bool,
    wr_shut: bool,
}

/// The readiness a socket should signal (from [`want`]).
#[derive(Debug, Default)]
pub struct Want {
    pub r: bool,
    pub key: u64,
    pub w: bool,
    pub rdhup: bool,
    pub wrshut: bool,
    pub err: bool,
}

impl Sig {
    pub fn new(b: c_int) -> Sig {
        Sig {
            b,
            rx_bytes: 0,
            key: 0,
            wfull: false,
            rd_shut: false,
            wr_shut: false,
        }
    }

    fn drain_b(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r_recv(self.b, &mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// Makes `A`'s kernel readiness match `w`; true if anything changed.
    pub fn apply(&mut self, a: c_int, w: &Want) -> bool {
        if self.b < 0 {
            return false;
        }
        let g = global();
        if w.err {
            if !self.wr_shut {
                // A byte queued at B makes close(B) set ECONNRESET on A.
                let _ = r_send(a, &[0]);
            }
            g.set_fd(self.b, 0);
            r_close(self.b);
            self.b = -1;
            return true;
        }
        let mut changed = false;
        if w.wrshut && !self.wr_shut {
            if self.wfull {
                self.drain_b();
                self.wfull = false;
            }
            let _ = r_send(a, &[0]);
            // SAFETY: shutdown takes no pointers; b is the shim's own end.
            unsafe { real::shutdown::get()(self.b, libc::SHUT_RD) };
            self.wr_shut = true;
            changed = true;
        }
        if w.rdhup && !self.rd_shut {
            // SAFETY: shutdown takes no pointers; b is the shim's own end.
            unsafe { real::shutdown::get()(self.b, libc::SHUT_WR) };
            self.rd_shut = true;
            changed = true;
        }
        if !self.rd_shut {
            if w.r {
                if self.rx_bytes == 0 || (w.key != self.key && self.rx_bytes < 32) {
                    if r_send(self.b, &[1]).is_ok() {
                        self.rx_bytes += 1;
                    }
                    self.key = w.key;
                    changed = true;
                }
            } else if self.rx_bytes > 0 {
                let mut buf = [0u8; 64];
                while let Ok(n) = r_recv(a, &mut buf) {
                    if n < buf.len() {
                        break;
                    }
                }
                self.rx_bytes = 0;
                changed = true;
            }
        }
        if !self.wr_shut {
            if w.w && self.wfull {
                self.drain_b();
                self.wfull = false;
                changed = true;
            } else if !w.w && !self.wfull {
                let block = vec![0u8; g.fill];
                let _ = r_send(a, &block);
                self.wfull = true;
                changed = true;
            }
        }
        changed
    }

    /// Clears the pending error on `A` (after the app consumed it).
    pub fn clear_err(a: c_int) {
        if crate::sys::restricted() {
            // No getsockopt under a seccomp filter: `A` keeps polling
            // `ERR` (its reads and writes give the socket's own results).
            return;
        }
        let mut v: c_int = 0;
        let mut l = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `v` and `l` are live locals, and `l` holds v's size.
        unsafe {
            real::getsockopt::get()(
                a,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut v as *mut c_int as *mut libc::c_void,
                &mut l,
            )
        };
    }
}

/// The readiness `A` should signal now for socket `s`.
pub fn want(s: &Sock, tas: &Tas) -> Want {
    let mut w = Want {
        w: true,
        rdhup: s.shut_rd,
        wrshut: s.shut_wr,
        ..Default::default()
    };
    match s.st {
        St::Fresh => {}
        St::Listening(l) => {
            // A dead daemon makes accept() fail: wake whoever waits for it.
            w.r = tas.is_dead() || tas.listener_pending(l).unwrap_or(0) > 0 || s.kready;
            w.key = s.lkey;
            w.w = false;
        }
        St::Connecting(_) => w.w = false,
        St::Connected(c) => match tas.conn(c) {
            Some(cn) => {
                let err = cn.error().is_some();
                let avail = cn.rx_available();
                let lowat = s.opts.rcvlowat.unwrap_or(1).max(1) as u32;
                w.r = avail >= lowat || cn.rx_fin() || err || s.shut_rd;
                w.key = cn.rx_seq_end() as u64;
                w.rdhup |= cn.rx_fin() || err;
                w.wrshut |= err;
                let free = cn.tx_free() as u64;
                w.w = err || s.shut_wr || (free > 0 && free * 3 >= cn.tx_len() as u64);
                w.err = err;
            }
            None => w.err = true,
        },
        St::Failed => w.err = true,
    }
    w
}

/// How many bytes sent from a minimal-buffer Unix stream socket make it
/// unwritable on this kernel.
pub fn calibrate_fill() -> usize {
    let mut sv = [-1; 2];
    // SAFETY: `sv` is a live [c_int; 2], what socketpair writes.
    if unsafe {
        real::socketpair::get()(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return 2048;
    }
    let _ = sys::r_setsockopt_int(sv[0], libc::SOL_SOCKET, libc::SO_SNDBUF, 1);
    let mut fill = 1024;
    let buf = [0u8; 16384];
    let mut result = 2048;
    while fill <= 8192 {
        let mut tmp = vec![0u8; 65536];
        while r_recv(sv[1], &mut tmp).map(|n| n > 0).unwrap_or(false) {}
        if r_send(sv[0], &buf[..fill]) == Ok(fill) {
            let mut p = libc::pollfd {
                fd: sv[0],
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: `p` is one live local pollfd (nfds = 1).
            unsafe { real::poll::get()(&mut p, 1, 0) };
            if p.revents & libc::POLLOUT == 0 {
                result = fill;
                break;
            }
        }
        fill *= 2;
    }
    r_close(sv[0]);
    r_close(sv[1]);
    result
}
