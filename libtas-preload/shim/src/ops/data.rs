//! The data calls: `recv` (read, readv, recv, recvfrom, recvmsg,
//! recvmmsg) and `send` (write, writev, send, sendto, sendmsg, sendmmsg,
//! sendfile), with Linux's blocking, timeout, `MSG_*` flag, pending-error
//! and `SIGPIPE` behaviour.

use super::{deadline, orphan};
use crate::ctx::{Ctx, Inner};
use crate::readiness::Sig;
use crate::sigrestart;
use crate::sock::{take_conn_error, Sock, St};
use crate::sys::{self, real, Res};
use crate::wait::wait_fd;
use libc::{c_int, c_void};
use std::io::{IoSlice, IoSliceMut};

fn sigpipe() {
    // SAFETY: raise() signals the calling thread, as Linux does for EPIPE.
    unsafe { libc::raise(libc::SIGPIPE) };
}

/// Consumes the pending error (and clears EPOLLERR on A).
fn take_error(s: &mut Sock) -> c_int {
    let e = std::mem::take(&mut s.so_error);
    if e != 0 {
        Sig::clear_err(s.a);
    }
    e
}

/// What a data call does after one look at the socket.
enum Step {
    Done(Res<usize>),
    /// Wait for readiness on `A` (this fd), then look again.
    Wait(c_int),
    /// Look again at once.
    Again,
}

/// `recv` family. With `MSG_TRUNC` the data is dropped (Linux TCP).
pub fn recv(ctx: &'static Ctx, sid: u64, bufs: &mut [IoSliceMut<'_>], flags: c_int) -> Res<usize> {
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EINVAL);
    }
    if flags & libc::MSG_ERRQUEUE != 0 {
        return Err(libc::EAGAIN);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
    let mut got = 0usize;
    let mut dl = None;
    loop {
        let mut inner = ctx.inner.lock();
        inner.tas.poll_events();
        let step = {
            let Inner { tas, socks, .. } = &mut *inner;
            let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
            let nonblock = s.nonblock || flags & libc::MSG_DONTWAIT != 0;
            if dl.is_none() {
                dl = Some(deadline(s.opts.rcvtimeo));
            }
            take_conn_error(s, tas);
            match s.st {
                St::Fresh | St::Listening(_) => Step::Done(Err(libc::ENOTCONN)),
                St::Failed => {
                    // After connect() reported the failure Linux has
                    // disconnected the socket (ENOTCONN); after SO_ERROR
                    // only, its receive side is shut (EOF).
                    let e = take_error(s);
                    Step::Done(if e != 0 {
                        Err(e)
                    } else if s.disconnected {
                        Err(libc::ENOTCONN)
                    } else {
                        Ok(0)
                    })
                }
                St::Connecting(_) if nonblock => Step::Done(Err(libc::EAGAIN)),
                St::Connecting(_) => Step::Wait(s.a),
                St::Connected(c) => 'conn: {
                    // A connection another process had (after fork, exec or
                    // posix_spawn) is taken back first: what is there to read
                    // is known only then (the other process may have read
                    // what this view still counts, and a view that missed
                    // its writes finds every later notification
                    // implausible, so waiting on it would wait for good).
                    if let Err(e) = tas.reclaim(c) {
                        break 'conn Step::Done(Err(e.raw_os_error().unwrap_or(libc::EIO)));
                    }
                    let (avail, fin) = match tas.conn(c) {
                        Some(cn) => (cn.rx_available() as usize, cn.rx_fin()),
                        None => (0, true),
                    };
                    if want == 0 {
                        Step::Done(Ok(0))
                    } else if avail > 0 {
                        let r = if peek {
                            tas.peek_vectored(c, bufs)
                        } else if flags & libc::MSG_TRUNC != 0 {
                            tas.discard(c, want - got)
                        } else {
                            if got == 0 {
                                // The common case: no copy of the
                                // caller's vector (no allocation).
                                tas.recv_vectored(c, bufs)
                            } else {
                                let mut sub = advance_mut(bufs, got);
                                tas.recv_vectored(c, &mut sub)
                            }
                        };
                        match r {
                            Ok(n) => {
                                got += n;
                                if !waitall || got >= want || nonblock {
                                    Step::Done(Ok(got))
                                } else {
                                    Step::Again
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Step::Again,
                            Err(e) => Step::Done(Err(e.raw_os_error().unwrap_or(libc::EIO))),
                        }
                    } else if got > 0 && (fin || s.err_taken || s.shut_rd) {
                        Step::Done(Ok(got))
                    } else if fin {
                        // Linux reports EOF before a pending error after FIN.
                        Step::Done(Ok(0))
                    } else {
                        let e = take_error(s);
                        if e != 0 {
                            Step::Done(if got > 0 { Ok(got) } else { Err(e) })
                        } else if s.err_taken || s.shut_rd {
                            Step::Done(Ok(got))
                        } else if nonblock {
                            Step::Done(if got > 0 { Ok(got) } else { Err(libc::EAGAIN) })
                        } else {
                            Step::Wait(s.a)
                        }
                    }
                }
            }
        };
        inner.sync(sid);
        inner.after();
        drop(inner);
        match step {
            Step::Done(r) => return r,
            Step::Again => continue,
            Step::Wait(a) => match wait_fd(a, libc::POLLIN, dl.flatten()) {
                Ok(()) => {}
                Err(_) if got > 0 => return Ok(got),
                Err(e) if sigrestart::restarts(e, dl.flatten()) => {}
                Err(e) => return Err(e),
            },
        }
    }
}

/// The part of `bufs` after the first `skip` bytes.
fn advance_mut<'a, 'b>(bufs: &'a mut [IoSliceMut<'b>], mut skip: usize) -> Vec<IoSliceMut<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSliceMut::new(&mut b[skip..]));
        skip = 0;
    }
    out
}

fn advance<'a>(bufs: &'a [IoSlice<'a>], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        out.push(IoSlice::new(&b[skip..]));
        skip = 0;
    }
    out
}

/// Where the bytes of a send come from.
pub enum Src<'a> {
    Bufs(&'a [IoSlice<'a>]),
    /// sendfile: (file fd, offset or None for the file position).
    File(c_int, Option<&'a mut i64>),
}

pub fn send(
    ctx: &'static Ctx,
    sid: u64,
    mut src: Src<'_>,
    count: usize,
    flags: c_int,
) -> Res<usize> {
    let nosig = flags & libc::MSG_NOSIGNAL != 0;
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    if orphan(ctx) {
        return Err(libc::ENOTCONN);
    }
    let mut sent = 0usize;
    let mut dl = None;
    let mut pipe = false;
    let is_file = matches!(src, Src::File(..));
    loop {
        let mut inner = ctx.inner.lock();
        inner.tas.poll_events();
        let step = {
            let Inner { tas, socks, .. } = &mut *inner;
            let s = socks.get_mut(&sid).ok_or(libc::EBADF)?;
            let nonblock = s.nonblock || flags & libc::MSG_DONTWAIT != 0;
            if dl.is_none() {
                dl = Some(deadline(s.opts.sndtimeo));
            }
            take_conn_error(s, tas);
            match s.st {
                St::Fresh | St::Listening(_) => {
                    pipe = true;
                    Step::Done(Err(libc::EPIPE))
                }
                St::Failed => {
                    let e = take_error(s);
                    if e == 0 {
                        pipe = true;
                    }
                    Step::Done(Err(if e != 0 { e } else { libc::EPIPE }))
                }
                St::Connecting(_) if nonblock => Step::Done(Err(libc::EAGAIN)),
                St::Connecting(_) => Step::Wait(s.a),
                St::Connected(c) => {
                    let e = take_error(s);
                    if e != 0 {
                        Step::Done(if sent > 0 { Ok(sent) } else { Err(e) })
                    } else if s.err_taken || s.shut_wr {
                        if sent > 0 {
                            Step::Done(Ok(sent))
                        } else {
                            pipe = true;
                            Step::Done(Err(libc::EPIPE))
                        }
                    } else if count == 0 {
                        Step::Done(Ok(0))
                    } else {
                        let r = match &mut src {
                            Src::Bufs(b) if sent == 0 => tas.send_vectored(c, b),
                            Src::Bufs(b) => {
                                let sub = advance(b, sent);
                                tas.send_vectored(c, &sub)
                            }
                            Src::File(ffd, off) => {
                                let ffd = *ffd;
                                tas.send_fill(c, count - sent, |dst| {
                                    let r = match off {
                                        // SAFETY: `dst` is the ring space handed to this
                                        // closure, valid for writes of dst.len() bytes.
                                        Some(o) => unsafe {
                                            let r = real::pread64::get()(
                                                ffd,
                                                dst.as_mut_ptr() as *mut c_void,
                                                dst.len(),
                                                **o,
                                            );
                                            if r > 0 {
                                                **o += r as i64;
                                            }
                                            r
                                        },
                                        // SAFETY: `dst` is the ring space handed to this
                                        // closure, valid for writes of dst.len() bytes.
                                        None => unsafe {
                                            real::read::get()(
                                                ffd,
                                                dst.as_mut_ptr() as *mut c_void,
                                                dst.len(),
                                            )
                                        },
                                    };
                                    if r < 0 {
                                        Err(std::io::Error::from_raw_os_error(sys::errno()))
                                    } else {
                                        Ok(r as usize)
                                    }
                                })
                            }
                        };
                        match r {
                            // End of the file (sendfile).
                            Ok(0) if is_file => Step::Done(Ok(sent)),
                            Ok(n) => {
                                sent += n;
                                if sent >= count || nonblock {
                                    Step::Done(Ok(sent))
                                } else {
                                    Step::Again
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                if nonblock {
                                    Step::Done(if sent > 0 {
                                        Ok(sent)
                                    } else {
                                        Err(libc::EAGAIN)
                                    })
                                } else {
                                    Step::Wait(s.a)
                                }
                            }
                            Err(e) => {
                                let code = e.raw_os_error().unwrap_or(libc::EIO);
                                Step::Done(if sent > 0 { Ok(sent) } else { Err(code) })
                            }
                        }
                    }
                }
            }
        };
        inner.sync(sid);
        inner.after();
        drop(inner);
        match step {
            Step::Done(r) => {
                if pipe && !nosig {
                    sigpipe();
                }
                return r;
            }
            Step::Again => continue,
            Step::Wait(a) => match wait_fd(a, libc::POLLOUT, dl.flatten()) {
                Ok(()) => {}
                Err(_) if sent > 0 => return Ok(sent),
                Err(e) if sigrestart::restarts(e, dl.flatten()) => {}
                Err(e) => return Err(e),
            },
        }
    }
}
