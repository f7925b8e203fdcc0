//! # tas-abi
//!
//! The app↔service contract: the binary layout of everything `tasd` and apps
//! exchange through shared memory and the attach socket, the attach
//! protocol's messages and where the attach socket is. This crate is the only
//! definition; the daemon, the fast path and the app library all import it.
//!
//! Must not: depend on the engine, the NIC backends or the daemon (the app
//! library links this crate alone), or trust anything it decodes: every
//! decoder validates, and every type crossing a process boundary derives its
//! byte conversion (`zerocopy`), so padding bytes are a compile error rather
//! than a leak of uninitialised memory.
//!
//! * **Context queues** are single-producer/single-consumer rings of fixed-size
//!   entries: per fast-path lane, one event ring (lane → app) and one command
//!   ring (app → lane), so a flow's commands go straight to the lane that
//!   owns it ([`FlowInfo::lane`]; any lane applies any command, a wrong
//!   choice only costs a hand-off). The first byte of an entry is its kind (0 = empty). The producer
//!   writes the body, then stores the kind with release ordering; the consumer
//!   loads the kind with acquire ordering, copies the entry out, then stores 0.
//!   Each side keeps its position privately, so a hostile peer can corrupt only
//!   entry contents, which the service validates after copying them out.
//! * **Payload rings** (per flow, RX and TX) are plain byte ranges inside an
//!   app's payload region, addressed by (region, offset, length) in
//!   [`crate::flow::FlowState`].
//!
//! Every type here is `#[repr(C)]` with its size checked at compile time; an
//! app presents [`ABI_VERSION`] when it attaches.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Where `tasd` listens for apps unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tas/tasd.sock";
/// The environment variable naming the attach socket (apps, tasd, tasctl).
pub const SOCKET_ENV: &str = "TAS_SOCKET";

/// The attach socket: `explicit` (a `--socket` option), else
/// `$TAS_SOCKET`, else [`DEFAULT_SOCKET`]. The one resolution rule for
/// tasd, tasctl and apps.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Bumped on every incompatible layout change.
pub const ABI_VERSION: u32 = 6;

/// Kinds of [`AppEvent`] (service → app).
pub mod event {
    /// Fast path: a flow's received or acknowledged sequence moved.
    pub const FLOW_UPDATE: u8 = 1;
    /// Flag on `FLOW_UPDATE`: the peer's FIN arrived (after `rx_seq`).
    pub const F_RX_FIN: u8 = 1 << 0;
    /// Flag on `FLOW_UPDATE`: our FIN was acknowledged.
    pub const F_TX_FIN_ACKED: u8 = 1 << 1;
}

/// Kinds of [`AppCmd`] (app → service).
pub mod cmd {
    /// Bytes appended to the TX ring and/or freed from the RX ring.
    pub const FLOW_UPDATE: u8 = 1;
    /// Flag: no more data will be appended; send FIN after the last byte.
    pub const F_TX_FIN: u8 = 1 << 0;
}

/// Notification from the fast path to an app context.
///
/// Sequence numbers are absolute, so notifications coalesce: the app derives
/// how many bytes arrived or were acknowledged from the last value it saw.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AppEvent {
    pub kind: u8,
    pub flags: u8,
    /// The flow's RX ring generation when the event was built: one more
    /// for every switch to a larger ring (`ctl::RING`; wraps). An app that
    /// sees a generation newer than its own applies the matching `RING`
    /// before the event (docs/design.md, "Ring memory").
    pub gen: u8,
    pub _pad: u8,
    /// Flow id in the service's table.
    pub flow: u32,
    /// The app's id for the flow.
    pub opaque: u64,
    /// In-order payload received up to this sequence number.
    pub rx_seq: u32,
    /// Payload acknowledged by the peer up to this sequence number.
    pub tx_acked_seq: u32,
    pub _reserved: u64,
}

/// Command from an app context to the fast path.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AppCmd {
    pub kind: u8,
    pub flags: u8,
    pub _pad: u16,
    pub flow: u32,
    /// Bytes the app appended to the flow's TX ring.
    pub tx_added: u32,
    /// Bytes the app consumed from the flow's RX ring.
    pub rx_freed: u32,
}

const _: () = assert!(std::mem::size_of::<AppEvent>() == 32);
const _: () = assert!(std::mem::size_of::<AppCmd>() == 16);

/// Control messages on the attach socket (a Unix `SOCK_SEQPACKET` socket,
/// one [`CtlMsg`] per datagram). Connection setup and teardown go this way;
/// data never does.
pub mod ctl {
    // app -> service
    /// `arg[0]` = ABI version. Answered by `HELLO_OK` with fds attached.
    pub const HELLO: u32 = 1;
    /// `arg` = [port, backlog, rx_size, tx_size, flags]; answered by `RESULT`
    /// whose `listener` names the new listener.
    pub const LISTEN: u32 = 2;
    /// `arg` = [remote_ip, remote_port, local_port (0: ephemeral), rx_size,
    /// tx_size]; `info.opaque` = the app's id for the flow. Answered by
    /// `CONNECTED` (err 0) or `RESULT` with an errno.
    pub const CONNECT: u32 = 3;
    /// `flow`: the app is done with the flow. Its FIN was requested through
    /// the fast path; the service finishes the close and answers `RELEASED`.
    pub const CLOSE: u32 = 4;
    /// `flow`: reset the connection now (RST) and release it.
    pub const ABORT: u32 = 5;
    /// `listener`: stop listening; pending connections are reset.
    pub const UNLISTEN: u32 = 6;
    /// `listener`, `arg[0]` = connections the app will take (accept credit).
    pub const ACCEPT: u32 = 7;
    /// `flow`: the flow's transport statistics (for `TCP_INFO`). Answered by
    /// `STATS_OK` ([`crate::FlowStats`]) or `RESULT` with `EBADF`.
    pub const STATS: u32 = 8;
    /// The process is about to fork: `arg[0..2]` = a token (64 bits, low
    /// word first) the child will present. Every flow and listener this
    /// process holds (through any of its contexts, or by an earlier grant
    /// to its pid) gets one more holder: the grant. Answered by `RESULT`.
    pub const SHARE: u32 = 9;
    /// After `SHARE`: `arg[0..2]` = the token, `arg[2]` = the child's pid
    /// (0: the fork failed, the grant is cancelled). No answer. The grant
    /// lives until its pid exits; the pid keeps it across `exec`.
    pub const SHARE_PID: u32 = 10;
    /// `flow` (or `listener` when `arg[3]` = 1): this context takes over
    /// a socket granted to its process (`arg[0..2]` = the token, or 0 to
    /// take it by its pid's grants): notifications and control messages
    /// for it come here from now on. Answered by `RESULT` with, for a
    /// flow, `arg[1..5]` = [rx_seq, tx_acked_seq, flags (`event::F_*`),
    /// error] and `info` = the flow, whose `rx_seq` and `tx_seq` are here
    /// the first byte its holders have not freed and one past the last
    /// byte they added, as far as the fast path has seen. For a listener,
    /// `arg[4]` = 1 when this context accepts on it, 0 when it does not (a
    /// master process): the `RESULT` then has `arg[0]` = 1 when the
    /// connections announced here and not taken went to other acceptors
    /// (`ACCEPTED` there; this context forgets them), 0 when there was no
    /// other acceptor and they stay announced here.
    pub const ADOPT: u32 = 11;
    /// `flow` (or `listener` when `arg[3]` = 1): this context lets go of a
    /// shared socket without closing it. Answered by `RESULT`: `arg[0]` = 1
    /// when no other holder is left — the socket is this context's alone
    /// again (notifications come here; a flow's `arg[1..4]` as for `ADOPT`)
    /// and it closes it the usual way; 0 when others still hold it.
    pub const DROP: u32 = 12;
    /// `flow`: the TX ring was full; may it grow? Answered by `RESULT`:
    /// err 0 with `arg` = [base, len] of a larger ring reserved for the
    /// flow (switch to it with `TX_SWITCH` once everything written is
    /// acknowledged, writing nothing more to the old ring meanwhile), or
    /// `EAGAIN` (not now: the ring is not what limits the flow, or the
    /// region is under pressure) or `ENOSPC` (never: at its maximum,
    /// pinned by `SO_SNDBUF`, or shared).
    pub const TX_GROW: u32 = 13;
    /// `flow`: switch to the TX ring `TX_GROW` reserved. The app sends it
    /// only when everything it wrote is acknowledged. Answered by `RESULT`:
    /// err 0 (the fast path sends from the new ring, position 0 = the next
    /// byte the app writes) or `EAGAIN` (refused: data or a FIN in flight,
    /// or recovery state; the reserved ring is given back, the old one
    /// stays).
    pub const TX_SWITCH: u32 = 14;
    /// `listener`: new ring sizes for connections accepted from now on
    /// (`setsockopt(SO_RCVBUF/SO_SNDBUF)` after `listen()`): `arg[2]` =
    /// rx, `arg[3]` = tx (bytes; 0 leaves that side as it is). A size set
    /// this way is pinned. Answered by `RESULT`.
    pub const LISTEN_UPDATE: u32 = 15;
    /// `SCM_RIGHTS` is about to carry one of this process's TAS sockets to
    /// another process. The datagram carries (by `SCM_RIGHTS`) the
    /// socket's fd — the Unix socket the program sees — whose file is the
    /// key: a receiver that presents the same file (`XFER_CLAIM`) may take
    /// the socket over. `listener` ≠ 0: that listener, its address in
    /// `info.local_ip`/`info.local_port`; `listener` = [`XFER_FRESH`]: a
    /// socket with no TAS state yet; else flow `flow`, as the app library
    /// describes it in `info` and `arg` (opaque to the service, handed to
    /// the receiver as it is). Answered by `RESULT`: `arg[0..2]` = the
    /// transfer's id (for `XFER_CANCEL`), or `EBADF` (no fd, or a socket
    /// this process does not hold) or `ETOOMANYREFS` (too many transfers of
    /// this process pending).
    pub const XFER: u32 = 16;
    /// `arg[0..2]` = the id of a pending transfer of this process: the
    /// `sendmsg` that was to carry it failed. No answer.
    pub const XFER_CANCEL: u32 = 17;
    /// A received fd may be a TAS socket another process passed: the
    /// datagram carries it (`SCM_RIGHTS`). Answered by `RESULT`: `ENOENT`
    /// (no transfer of that file is pending), `EPERM` (the sender is
    /// another user, and this process is not root), or 0 with `arg[0]` =
    /// the app whose region holds the socket's rings and `listener`/`flow`
    /// as in the `XFER`, followed by `XFER_DESC` (same `req`) with the
    /// `XFER`'s `info` and `arg`. The transfer is then this process's grant
    /// (`F_ALIAS` and `ADOPT` with token 0).
    pub const XFER_CLAIM: u32 = 18;

    // service -> app
    /// `arg` = [region size, event ring capacity, cmd ring capacity,
    /// event ring offset, cmd ring offset], `flow` = number of fast-path
    /// lanes (at most [`crate::MAX_LANES`]; the region holds one event ring
    /// and one command ring per lane, each kind back to back from its
    /// offset, and one sleep flag per lane: see [`crate::RegionLayout`]; the
    /// app reads every event ring), `info.local_ip` = the service's
    /// address; fds: region memfd, app eventfd (service kicks app), then one
    /// eventfd per lane (the app kicks lane `i`'s core through fd `2 + i`
    /// when that lane's sleep flag is up), then (`F_ALIAS`) the payload
    /// region's memfd.
    pub const HELLO_OK: u32 = 101;
    /// Answer to a request (`req`): `err` 0 or an errno, `listener` if any.
    pub const RESULT: u32 = 102;
    /// Active open finished: `req`, `info`.
    pub const CONNECTED: u32 = 103;
    /// A connection on `listener` is established: `info`.
    pub const ACCEPTED: u32 = 104;
    /// `flow` was reset or timed out: `err` = ECONNRESET / ETIMEDOUT / EPIPE.
    pub const RESET: u32 = 105;
    /// `flow` is gone from the service; its ring memory is released.
    pub const RELEASED: u32 = 106;
    /// Answer to `STATS`: `req`, `flow`, the statistics in `arg` and `info`
    /// (see [`crate::FlowStats`]).
    pub const STATS_OK: u32 = 107;
    /// `flow`'s RX ring will grow: `arg` = [generation, base, len]. Sent
    /// before the switch, which the slow path makes only when the ring is
    /// empty (everything received was freed) and no out-of-order data is
    /// held; the first byte of the new generation (as `AppEvent::gen`
    /// tells) goes to position 0 of the new ring. Several may be
    /// outstanding; one that never takes effect (the ring was given back) is
    /// followed by later ones under newer generations: a generation names
    /// one ring.
    pub const RING: u32 = 108;
    /// `flow`: another context took the shared flow over (`ADOPT`): its
    /// notifications go there now, and this context's view of it goes
    /// stale. It takes the flow back (`ADOPT` with token 0) before it uses
    /// it again.
    pub const TAKEN: u32 = 109;
    /// `flow`: the context that had taken the shared flow over is gone and
    /// the flow comes back here: where it stands, as in the answer to
    /// `ADOPT` (`arg[1..5]`, `info`).
    pub const RETURNED: u32 = 110;
    /// `flow` of `listener`, announced to this context (`ACCEPTED`) while it
    /// said it does not accept (`ADOPT` of the listener with `arg[4]` = 0)
    /// and not taken, went to a context that accepts: forget it. Sent
    /// before the answer to any later request of this context, so a
    /// context that accepts again sees it before that answer.
    pub const WITHDRAWN: u32 = 112;
    /// The second answer to `XFER_CLAIM` (same `req`): the socket's
    /// description as its sender gave it (`info`, `arg`).
    pub const XFER_DESC: u32 = 111;
    /// `XFER`'s `listener` for a socket with no TAS state yet.
    pub const XFER_FRESH: u32 = u32::MAX;

    /// LISTEN flag: share the port with other listeners (SO_REUSEPORT).
    pub const F_REUSEPORT: u32 = 1;
    /// HELLO flag (`arg[1]`): attach a context that shares the payload
    /// region of app `arg[2]` (a context of the parent process whose
    /// sockets this process inherited), authorised by the grant whose
    /// token is `arg[3..5]`. `HELLO_OK` then carries one more fd, last:
    /// that region's memfd; the flows' rings are offsets in it.
    pub const F_ALIAS: u32 = 1;

    /// Why a `HELLO` was refused: `arg[0]` of the `RESULT` (whose `err` is
    /// the errno), `arg[1]` the limit that was hit (or, for
    /// [`REFUSED_NETNS`], the inode of the daemon's network namespace and
    /// `arg[2]` the app's).
    /// The app's ABI version differs (`EPROTO`).
    pub const REFUSED_VERSION: u32 = 1;
    /// Every app slot is taken (`ENFILE`).
    pub const REFUSED_FULL: u32 = 2;
    /// The process has as many attachments as allowed (`EMFILE`).
    pub const REFUSED_PER_PROCESS: u32 = 3;
    /// The user has as many attachments as allowed (`EUSERS`).
    pub const REFUSED_PER_UID: u32 = 4;
    /// The app runs in another network namespace than the daemon (`EXDEV`).
    pub const REFUSED_NETNS: u32 = 5;
    /// The daemon could not set the app up (`ENOMEM`, ...).
    pub const REFUSED_SETUP: u32 = 6;
    /// An `F_ALIAS` attach without a grant for the region (`EPERM`).
    pub const REFUSED_GRANT: u32 = 7;
}

/// A connection as the app sees it.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FlowInfo {
    pub flow: u32,
    pub local_ip: u32,
    pub remote_ip: u32,
    pub local_port: u16,
    pub remote_port: u16,
    /// RX ring offset and length in the app's region.
    pub rx_base: u32,
    pub rx_len: u32,
    /// TX ring offset and length in the app's region.
    pub tx_base: u32,
    pub tx_len: u32,
    /// Sequence number of the first payload byte from the peer.
    pub rx_seq: u32,
    /// Sequence number of our first payload byte.
    pub tx_seq: u32,
    pub mss: u32,
    /// The RX ring's generation (`AppEvent::gen`; the low byte counts).
    pub ring_gen: u16,
    /// The fast-path lane that owns the flow (its `group`): the app posts
    /// the flow's commands on that lane's command ring. A hint: a command
    /// on another lane's ring is applied there all the same (and its TX
    /// activation handed to the owner), so a stale or hostile value costs
    /// a hand-off, never correctness. Values beyond the app's rings mean
    /// lane 0.
    pub lane: u16,
    pub opaque: u64,
}

/// One control message (fixed size).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CtlMsg {
    pub kind: u32,
    /// Request id chosen by the app, echoed in answers.
    pub req: u32,
    /// 0 or a positive errno.
    pub err: i32,
    pub listener: u32,
    pub flow: u32,
    pub arg: [u32; 5],
    pub info: FlowInfo,
}

const _: () = assert!(std::mem::size_of::<FlowInfo>() == 56);
const _: () = assert!(std::mem::size_of::<CtlMsg>() == 96);

impl CtlMsg {
    pub fn new(kind: u32) -> Self {
        CtlMsg {
            kind,
            ..Default::default()
        }
    }
    /// The message as bytes, for the socket.
    pub fn as_bytes(&self) -> &[u8] {
        IntoBytes::as_bytes(self)
    }
    /// Parses a received datagram; None unless it is exactly one message.
    pub fn from_bytes(b: &[u8]) -> Option<CtlMsg> {
        CtlMsg::read_from_bytes(b).ok()
    }
    /// `HELLO` presenting our [`ABI_VERSION`].
    pub fn hello(req: u32) -> Self {
        let mut m = CtlMsg::new(ctl::HELLO);
        m.req = req;
        m.arg[0] = ABI_VERSION;
        m
    }
    /// The ABI version a `HELLO` presents.
    pub fn hello_version(&self) -> u32 {
        self.arg[0]
    }
    /// `ACCEPT`: the app will take `credit` more connections on `listener`.
    pub fn accept(req: u32, listener: u32, credit: u32) -> Self {
        let mut m = CtlMsg::new(ctl::ACCEPT);
        m.req = req;
        m.listener = listener;
        m.arg[0] = credit;
        m
    }
    /// The credit an `ACCEPT` grants.
    pub fn accept_credit(&self) -> u32 {
        self.arg[0]
    }
}

/// The arguments of `LISTEN`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenReq {
    pub port: u16,
    pub backlog: u32,
    /// Ring sizes for accepted connections (0: the service's default).
    pub rx_size: u32,
    pub tx_size: u32,
    /// `SO_REUSEPORT`: share the port with other listeners.
    pub reuseport: bool,
}

impl ListenReq {
    pub fn to_msg(&self, req: u32) -> CtlMsg {
        let mut m = CtlMsg::new(ctl::LISTEN);
        m.req = req;
        let flags = if self.reuseport { ctl::F_REUSEPORT } else { 0 };
        m.arg = [
            self.port as u32,
            self.backlog,
            self.rx_size,
            self.tx_size,
            flags,
        ];
        m
    }
    /// None (EINVAL) for port 0, a port above 65535 or unknown flags.
    pub fn from_msg(m: &CtlMsg) -> Option<Self> {
        let [port, backlog, rx_size, tx_size, flags] = m.arg;
        if port == 0 || flags & !ctl::F_REUSEPORT != 0 {
            return None;
        }
        Some(ListenReq {
            port: u16::try_from(port).ok()?,
            backlog,
            rx_size,
            tx_size,
            reuseport: flags & ctl::F_REUSEPORT != 0,
        })
    }
}

/// The arguments of `CONNECT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectReq {
    pub remote_ip: u32,
    pub remote_port: u16,
    /// 0: an ephemeral port.
    pub local_port: u16,
    /// Ring sizes (0: the service's default).
    pub rx_size: u32,
    pub tx_size: u32,
    /// The app's id for the flow, echoed in events.
    pub opaque: u64,
}

impl ConnectReq {
    pub fn to_msg(&self, req: u32) -> CtlMsg {
        let mut m = CtlMsg::new(ctl::CONNECT);
        m.req = req;
        m.arg = [
            self.remote_ip,
            self.remote_port as u32,
            self.local_port as u32,
            self.rx_size,
            self.tx_size,
        ];
        m.info.opaque = self.opaque;
        m
    }
    /// None (EINVAL) for remote port 0 or ports above 65535.
    pub fn from_msg(m: &CtlMsg) -> Option<Self> {
        let [remote_ip, rport, lport, rx_size, tx_size] = m.arg;
        if rport == 0 {
            return None;
        }
        Some(ConnectReq {
            remote_ip,
            remote_port: u16::try_from(rport).ok()?,
            local_port: u16::try_from(lport).ok()?,
            rx_size,
            tx_size,
            opaque: m.info.opaque,
        })
    }
}

/// `HELLO_OK`: the app's id, the service's address and its region's layout
/// (the fds travel beside the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloOk {
    pub app: u32,
    pub service_ip: u32,
    pub layout: RegionLayout,
}

impl HelloOk {
    pub fn to_msg(&self, req: u32) -> CtlMsg {
        let mut m = CtlMsg::new(ctl::HELLO_OK);
        m.req = req;
        m.listener = self.app;
        m.info.local_ip = self.service_ip;
        let l = &self.layout;
        m.arg = [l.size, l.event_cap, l.cmd_cap, l.event_off, l.cmd_off];
        m.flow = l.event_rings;
        m
    }
    /// Decodes and validates: the announced offsets must be exactly the
    /// ones [`RegionLayout::new`] computes for the announced sizes, so every
    /// ring lies inside the region. None for anything else.
    pub fn from_msg(m: &CtlMsg) -> Option<Self> {
        if m.kind != ctl::HELLO_OK {
            return None;
        }
        let [size, event_cap, cmd_cap, event_off, cmd_off] = m.arg;
        if m.flow > MAX_LANES {
            return None;
        }
        let layout = RegionLayout::new(size, m.flow, event_cap, cmd_cap)?;
        if layout.event_off != event_off || layout.cmd_off != cmd_off {
            return None;
        }
        Some(HelloOk {
            app: m.listener,
            service_ip: m.info.local_ip,
            layout,
        })
    }
}

/// Flags of [`FlowStats::flags`]. The low four are Linux's `TCPI_OPT_*`
/// bits, so `tcpi_options` is `flags & stats::OPTIONS`.
pub mod stats {
    /// TCP timestamps were negotiated (`TCPI_OPT_TIMESTAMPS`).
    pub const F_TS: u32 = 1;
    /// SACK was negotiated (`TCPI_OPT_SACK`).
    pub const F_SACK: u32 = 2;
    /// Window scaling is in use (`TCPI_OPT_WSCALE`).
    pub const F_WSCALE: u32 = 4;
    /// ECN was negotiated (`TCPI_OPT_ECN`).
    pub const F_ECN: u32 = 8;
    /// The bits that are `tcpi_options`.
    pub const OPTIONS: u32 = 0xf;
    /// The congestion controller is in slow start.
    pub const F_SLOW_START: u32 = 1 << 8;
    /// The flow is rate-limited (`rate_kbps`); `cwnd_bytes` is rate × RTT.
    pub const F_RATE: u32 = 1 << 9;
    /// The flow is installed (the fast path runs it); without it only the
    /// lifetime totals are meaningful.
    pub const F_OPEN: u32 = 1 << 10;
    /// Every defined bit.
    pub const ALL: u32 = OPTIONS | F_SLOW_START | F_RATE | F_OPEN;
}

/// A flow's transport statistics as the service knows them: the answer to
/// `STATS`, what the app library turns into `TCP_INFO`. 19 words: the first
/// five in `arg`, the rest in the bytes of `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Smoothed round-trip time (µs); 0 until sampled.
    pub rtt_us: u32,
    /// Its mean deviation (µs).
    pub rttvar_us: u32,
    /// Congestion window (bytes): the window limit of a window-based
    /// controller; rate × RTT of a rate-based one (see [`stats::F_RATE`]);
    /// the peer's window when nothing else limits the flow.
    pub cwnd_bytes: u32,
    /// Retransmissions over the flow's life: fast retransmits plus
    /// retransmission timeouts (episodes, not segments).
    pub retransmits: u32,
    /// [`stats`] flags.
    pub flags: u32,
    /// Rate limit (kbit/s) of a rate-limited flow, else 0.
    pub rate_kbps: u64,
    /// The peer's receive window (bytes, scaled).
    pub snd_wnd: u32,
    /// Free space in our receive ring: the window we announce (bytes).
    pub rcv_wnd: u32,
    /// Sequence space sent and not yet acknowledged (bytes).
    pub in_flight: u32,
    /// Bytes queued by the app and not sent yet.
    pub not_sent: u32,
    /// Retransmission timeouts over the flow's life.
    pub timeouts: u32,
    /// The retransmission timeout before backoff (µs).
    pub rto_us: u32,
    /// Window-scale shifts: applied to the peer's windows / to ours.
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// Payload bytes acknowledged by the peer / received in order.
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

impl FlowStats {
    /// `STATS_OK` answering request `req` for `flow`.
    pub fn to_msg(&self, req: u32, flow: u32) -> CtlMsg {
        let mut m = CtlMsg::new(ctl::STATS_OK);
        m.req = req;
        m.flow = flow;
        m.arg = [
            self.rtt_us,
            self.rttvar_us,
            self.cwnd_bytes,
            self.retransmits,
            self.flags,
        ];
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let w: [u32; 14] = [
            lo(self.rate_kbps),
            hi(self.rate_kbps),
            self.snd_wnd,
            self.rcv_wnd,
            self.in_flight,
            self.not_sent,
            self.timeouts,
            self.rto_us,
            self.snd_wscale as u32 | (self.rcv_wscale as u32) << 8,
            lo(self.bytes_acked),
            hi(self.bytes_acked),
            lo(self.bytes_received),
            hi(self.bytes_received),
            0,
        ];
        m.info = zerocopy::transmute!(w);
        m
    }
    /// None unless `m` is a `STATS_OK`; undefined flag bits are dropped and
    /// window-scale shifts above 14 (RFC 7323) are clamped.
    pub fn from_msg(m: &CtlMsg) -> Option<Self> {
        if m.kind != ctl::STATS_OK {
            return None;
        }
        let [rtt_us, rttvar_us, cwnd_bytes, retransmits, flags] = m.arg;
        let w: [u32; 14] = zerocopy::transmute!(m.info);
        let wide = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        Some(FlowStats {
            rtt_us,
            rttvar_us,
            cwnd_bytes,
            retransmits,
            flags: flags & stats::ALL,
            rate_kbps: wide(w[0], w[1]),
            snd_wnd: w[2],
            rcv_wnd: w[3],
            in_flight: w[4],
            not_sent: w[5],
            timeouts: w[6],
            rto_us: w[7],
            snd_wscale: (w[8] & 0xff).min(14) as u8,
            rcv_wscale: ((w[8] >> 8) & 0xff).min(14) as u8,
            bytes_acked: wide(w[9], w[10]),
            bytes_received: wide(w[11], w[12]),
        })
    }
}

/// The most fast-path lanes a region has rings for (tasd runs at most
/// this many; `HELLO_OK` carries one eventfd per lane, well below the
/// kernel's 253 fds per message).
pub const MAX_LANES: u32 = 64;

/// Stride of the per-lane sleep flags (one cache line each: every lane's
/// core writes its own).
pub const LANE_FLAG_STRIDE: u32 = 64;

/// Header at offset 0 of an app's shared region.
#[repr(C)]
pub struct RegionHeader {
    pub magic: u64,
    pub version: u32,
    /// Reserved (was the single core's sleep flag; per lane now, see
    /// [`RegionLayout::lane_flag_off`]).
    pub _reserved: u32,
    /// Non-zero while the app waits on its eventfd: the core kicks it.
    pub app_waiting: std::sync::atomic::AtomicU32,
    /// The goal the daemon's self-tuning follows (`tas_tune::Goal::wire`;
    /// 0 = not said), written by tasd at attach and on `tasctl tune`; the
    /// app library's spin controller follows it unless the program states
    /// its own (`TAS_PROFILE`).
    pub goal: std::sync::atomic::AtomicU32,
    /// Control messages tasd has put on the app's socket (wrapping),
    /// counted after each is on it ([`note_ctl_sent`]): an app whose last
    /// read of the socket began at this count has nothing there, and a
    /// spinning wait need not ask the kernel ([`ctl_count`]). (ABI 5 and
    /// before: reserved.)
    pub ctl_sent: std::sync::atomic::AtomicU32,
    /// Times the app drained its eventfd (counted after the read, before
    /// it looks at its event rings: [`note_drained`]). A core that kicked
    /// the app and sees the same count again skips the kick: the eventfd
    /// is still readable, so a thread that blocks on it returns at once,
    /// and the app has not looked at its rings since.
    pub app_drains: std::sync::atomic::AtomicU32,
}

/// The app's side of [`RegionHeader::app_drains`]: call after reading the
/// eventfd and before looking at the event rings. (A read-modify-write,
/// so a full fence on every target: the core's push of an event and its
/// load of the count cannot both miss the other, as in [`announce_sleep`].)
#[inline]
pub fn note_drained(h: &RegionHeader) {
    h.app_drains.fetch_add(1, Ordering::SeqCst);
}

/// The core's side of [`RegionHeader::app_drains`], after it pushed events
/// for an app that [`peer_sleeps`]: given the count it saw at its last
/// kick, `Some(count now)` when it must write the app's eventfd (the count
/// to remember), `None` when the app has not drained the last kick yet.
#[inline]
pub fn kick_needed(h: &RegionHeader, kicked_at: Option<u32>) -> Option<u32> {
    let now = h.app_drains.load(Ordering::SeqCst);
    (kicked_at != Some(now)).then_some(now)
}

/// tasd's side of [`RegionHeader::ctl_sent`]: call after a control
/// message went onto the app's socket.
#[inline]
pub fn note_ctl_sent(h: &RegionHeader) {
    h.ctl_sent.fetch_add(1, Ordering::Release);
}

/// The app's side of [`RegionHeader::ctl_sent`]: the count now. Load it
/// before reading the socket, and after reading it dry remember the value
/// loaded: while the count still has that value, every message tasd has
/// sent was read (one sent meanwhile raises the count, at the latest just
/// after it is on the socket).
#[inline]
pub fn ctl_count(h: &RegionHeader) -> u32 {
    h.ctl_sent.load(Ordering::Acquire)
}

/// `RegionHeader::magic`.
pub const REGION_MAGIC: u64 = 0x5441_535f_5245_4731; // "TAS_REG1"

/// Where things are in an app's region: the header, `event_rings` event
/// rings (one per lane) back to back from `event_off`, as many command
/// rings back to back from `cmd_off`, one sleep flag per lane
/// ([`LANE_FLAG_STRIDE`] apart) from `flag_off`, then (page aligned) the
/// payload rings. Every offset is derived from the sizes by
/// [`RegionLayout::new`]; none is taken from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    pub size: u32,
    /// Lanes: event rings, command rings and sleep flags, one of each per
    /// lane.
    pub event_rings: u32,
    pub event_off: u32,
    pub event_cap: u32,
    pub cmd_off: u32,
    pub cmd_cap: u32,
    /// The per-lane sleep flags (`AtomicU32`, see [`LANE_FLAG_STRIDE`]):
    /// non-zero while the core holding that lane sleeps, so an app that
    /// queued a command on the lane's ring kicks the lane's eventfd.
    pub flag_off: u32,
    /// Payload rings live in `payload_off..size`.
    pub payload_off: u32,
}

impl RegionLayout {
    /// The layout for a region of `size` bytes with the given ring sizes;
    /// None if they do not fit.
    pub fn new(size: u32, event_rings: u32, event_cap: u32, cmd_cap: u32) -> Option<Self> {
        let event_off = 64u32;
        let cmd_off = event_off.checked_add(
            event_rings
                .checked_mul(event_cap)?
                .checked_mul(std::mem::size_of::<AppEvent>() as u32)?,
        )?;
        let cmd_end = cmd_off.checked_add(
            event_rings
                .checked_mul(cmd_cap)?
                .checked_mul(std::mem::size_of::<AppCmd>() as u32)?,
        )?;
        let flag_off = cmd_end.checked_add(LANE_FLAG_STRIDE - 1)? & !(LANE_FLAG_STRIDE - 1);
        let end = flag_off.checked_add(event_rings.checked_mul(LANE_FLAG_STRIDE)?)?;
        let payload_off = end.checked_add(4095)? & !4095;
        if payload_off >= size
            || event_cap == 0
            || cmd_cap == 0
            || event_rings == 0
            || event_rings > MAX_LANES
        {
            return None;
        }
        Some(RegionLayout {
            size,
            event_rings,
            event_off,
            event_cap,
            cmd_off,
            cmd_cap,
            flag_off,
            payload_off,
        })
    }

    /// Offset of lane `i`'s command ring.
    pub fn cmd_ring_off(&self, i: u32) -> u32 {
        self.cmd_off + i * self.cmd_cap * std::mem::size_of::<AppCmd>() as u32
    }

    /// Offset of lane `i`'s sleep flag (an `AtomicU32`).
    pub fn lane_flag_off(&self, i: u32) -> u32 {
        self.flag_off + i * LANE_FLAG_STRIDE
    }

    /// Offset of lane `i`'s event ring.
    pub fn event_ring_off(&self, i: u32) -> u32 {
        self.event_off + i * self.event_cap * std::mem::size_of::<AppEvent>() as u32
    }
}

const _: () = assert!(std::mem::size_of::<RegionHeader>() <= 64);

/// An entry type that may live in a shared ring.
///
/// # Safety
/// The type must be `#[repr(C)]` and start with a `u8` kind byte. Validity
/// for every bit pattern and the absence of padding are not promised by the
/// implementer: the `FromBytes + IntoBytes` bounds derive and check them.
pub unsafe trait RingEntry: Copy + Default + FromBytes + IntoBytes + Immutable {}
// SAFETY: repr(C), first field `kind: u8`.
unsafe impl RingEntry for AppEvent {}
// SAFETY: repr(C), first field `kind: u8`.
unsafe impl RingEntry for AppCmd {}

/// Producer side of a shared SPSC ring.
pub struct RingProducer<T: RingEntry> {
    base: *mut T,
    cap: u32,
    pos: u32,
    _t: PhantomData<T>,
}

/// Consumer side of a shared SPSC ring.
pub struct RingConsumer<T: RingEntry> {
    base: *mut T,
    cap: u32,
    pos: u32,
    _t: PhantomData<T>,
}

// SAFETY: the handles point into shared memory whose lifetime the creator
// guarantees (see `new`); entries are exchanged through the kind byte's
// acquire/release protocol, so moving a handle to another thread is fine.
unsafe impl<T: RingEntry> Send for RingProducer<T> {}
// SAFETY: as for `RingProducer`.
unsafe impl<T: RingEntry> Send for RingConsumer<T> {}

#[inline]
fn kind_of<T>(p: *mut T) -> &'static AtomicU8 {
    // SAFETY: callers pass a pointer to a live, aligned entry whose first
    // byte is its kind; AtomicU8 has the layout of u8.
    unsafe { &*(p as *const AtomicU8) }
}

impl<T: RingEntry> RingProducer<T> {
    /// # Safety
    /// `base` must point to `cap` entries of `T`, aligned, that stay mapped
    /// for the lifetime of this handle, with exactly one producer.
    pub unsafe fn new(base: *mut u8, cap: u32) -> Self {
        RingProducer {
            base: base as *mut T,
            cap: cap.max(1),
            pos: 0,
            _t: PhantomData,
        }
    }
    /// Publishes `e` (its kind must be non-zero). False when the ring is full.
    #[inline]
    pub fn push(&mut self, e: T) -> bool {
        // SAFETY: pos < cap, so the entry is inside the ring (see `new`).
        let p = unsafe { self.base.add(self.pos as usize) };
        let kind = kind_of(p);
        if kind.load(Ordering::Acquire) != 0 {
            return false;
        }
        let bytes = e.as_bytes();
        let k = bytes[0];
        // SAFETY: the entry is ours until its kind byte is published. Copy
        // everything after the kind byte, so the consumer's atomic load of
        // the kind never races with a plain write.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(1),
                (p as *mut u8).add(1),
                bytes.len() - 1,
            )
        };
        kind.store(k, Ordering::Release);
        self.pos = if self.pos + 1 == self.cap {
            0
        } else {
            self.pos + 1
        };
        true
    }
    pub fn capacity(&self) -> u32 {
        self.cap
    }
}

impl<T: RingEntry> RingConsumer<T> {
    /// # Safety
    /// As for [`RingProducer::new`], with exactly one consumer.
    pub unsafe fn new(base: *mut u8, cap: u32) -> Self {
        RingConsumer {
            base: base as *mut T,
            cap: cap.max(1),
            pos: 0,
            _t: PhantomData,
        }
    }
    pub fn capacity(&self) -> u32 {
        self.cap
    }
    /// Takes the next entry, if one was published. The copy is the caller's
    /// to validate: the producer may be hostile.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        // SAFETY: pos < cap, inside the ring.
        let p = unsafe { self.base.add(self.pos as usize) };
        let kind = kind_of(p);
        let k = kind.load(Ordering::Acquire);
        if k == 0 {
            return None;
        }
        // SAFETY: the producer published the entry; any bit pattern is a
        // valid `T`, so even a concurrently scribbled entry reads safely.
        let mut e = unsafe { std::ptr::read_volatile(p) };
        // The first byte of a RingEntry is the kind.
        e.as_mut_bytes()[0] = k;
        kind.store(0, Ordering::Release);
        self.pos = if self.pos + 1 == self.cap {
            0
        } else {
            self.pos + 1
        };
        Some(e)
    }
}

/// The sleep/wake handshake between a ring's two sides (app and core, or
/// core and app). The side about to block raises its flag with
/// [`announce_sleep`] and then looks at its rings once more; the side that
/// has just published entries asks [`peer_sleeps`] whether to kick the
/// sleeper's eventfd. Each side stores one location and then loads the
/// other's (the store-buffering pattern): without a full fence between
/// the two, x86 lets the load pass the store, both sides see "nothing to
/// do", and the sleeper blocks on an entry nobody will announce.
#[inline]
pub fn announce_sleep(flag: &AtomicU32, on: bool) {
    flag.store(on as u32, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// The publishing side of the handshake (see [`announce_sleep`]): call
/// after pushing; true when the other side must be kicked.
#[inline]
pub fn peer_sleeps(flag: &AtomicU32) -> bool {
    fence(Ordering::SeqCst);
    flag.load(Ordering::SeqCst) != 0
}

/// [`peer_sleeps`] for a sleeper that needs one kick per sleep: the caller
/// that finds the flag raised also lowers it, and only that caller kicks.
/// Posts after it, until the sleeper announces again, find the flag down
/// and need no kick: the sleeper, woken by the first, looks at its rings
/// before it raises the flag again. Without this an app that answers a
/// burst of connections while its core waits for the CPU the app holds
/// wrote the core's eventfd once per answer (redis under the shim, 40
/// `write`s in a row). The flag is only lowered by an exchange after a load
/// saw it raised, so a sleeper's line is not written on every post.
#[inline]
pub fn take_peer_sleep(flag: &AtomicU32) -> bool {
    fence(Ordering::SeqCst);
    flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0
}

/// Heap memory that hosts a ring inside one process (tests, loopback).
pub struct LocalRing<T: RingEntry> {
    mem: Box<[T]>,
}

impl<T: RingEntry> LocalRing<T> {
    pub fn new(cap: u32) -> Self {
        LocalRing {
            mem: vec![T::default(); cap.max(1) as usize].into_boxed_slice(),
        }
    }
    /// A producer/consumer pair over this memory. The ring must outlive both.
    pub fn split(&mut self) -> (RingProducer<T>, RingConsumer<T>) {
        let base = self.mem.as_mut_ptr() as *mut u8;
        let cap = self.mem.len() as u32;
        // SAFETY: `mem` holds `cap` aligned entries; the caller keeps `self`
        // alive while the handles are used (documented above).
        unsafe { (RingProducer::new(base, cap), RingConsumer::new(base, cap)) }
    }
}

/// Payload memory as the fast path sees it: regions (one per app) addressed
/// by byte offset. Implementations bounds-check every access.
pub trait PayloadMem {
    /// Copies `data` into region `mem` at `off`. False if out of bounds.
    fn write(&mut self, mem: u16, off: u32, data: &[u8]) -> bool;
    /// Copies from region `mem` at `off` into `out`. False if out of bounds.
    fn read(&self, mem: u16, off: u32, out: &mut [u8]) -> bool;
    /// Hints that the cache line at `off` in region `mem` is needed soon
    /// (the fast path's batched prefetch). Never faults: an offset outside
    /// the region only hints a line nobody needs (implementations need not
    /// check it). No effect unless implemented.
    fn prefetch(&self, mem: u16, off: u32) {
        let _ = (mem, off);
    }
    /// [`PayloadMem::read`], and the [`ones_sum`] of the bytes copied
    /// (`None`: out of bounds). Implementations sum while they copy
    /// ([`copy_sum`]): the bytes summed are the bytes copied, whatever
    /// the app writes meanwhile.
    #[inline]
    fn read_sum(&self, mem: u16, off: u32, out: &mut [u8]) -> Option<u64> {
        self.read(mem, off, out).then(|| ones_sum(out))
    }
}

/// The Internet checksum's ones'-complement sum (RFC 1071) of `data`: its
/// native-endian 64-bit words added with end-around carry, a last partial
/// word padded with zeros. Congruent (mod 0xffff) to the sum of its
/// native-endian 16-bit words (an odd last byte padded with zero), so it
/// adds to a checksum's partial sum for data at an even offset of the
/// summed range.
#[inline]
pub fn ones_sum(data: &[u8]) -> u64 {
    let (words, tail) = data.as_chunks::<8>();
    let mut acc = SumAcc::default();
    for w in words {
        acc.add(*w);
    }
    acc.tail(tail)
}

/// Copies `src` into `dst` (`dst.len()` bytes of it) and returns the
/// [`ones_sum`] of the bytes copied, in one pass. Panics if `src` is
/// shorter than `dst`.
#[inline]
pub fn copy_sum(dst: &mut [u8], src: &[u8]) -> u64 {
    let src = &src[..dst.len()];
    // SAFETY: `src` holds `dst.len()` readable bytes.
    unsafe { copy_sum_raw(dst, src.as_ptr()) }
}

/// [`copy_sum`] from a raw source (an app's shared memory, which it may
/// write concurrently: each word is read once, copied and summed).
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes (no alignment
/// needed), and not overlap `dst`.
#[inline]
pub unsafe fn copy_sum_raw(dst: &mut [u8], src: *const u8) -> u64 {
    let (dw, dt) = dst.as_chunks_mut::<8>();
    let n = dw.len();
    // SAFETY: (both) the caller's contract: `n * 8 <= dst.len()` bytes
    // readable at `src`; `dw` is `n` writable words.
    let sum = unsafe { copy_sum_words(dw.as_mut_ptr() as *mut u8, src, n) };
    if dt.is_empty() {
        return sum;
    }
    let done = n * 8;
    // SAFETY: the last `dt.len()` of the `dst.len()` readable bytes; `dt`
    // is a distinct, writable slice of that length.
    unsafe { std::ptr::copy_nonoverlapping(src.add(done), dt.as_mut_ptr(), dt.len()) };
    SumAcc { sum, carries: 0 }.tail(dt)
}

/// Copies `n` 8-byte words from `src` to `dst` and returns their sum with
/// end-around carry. On x86-64 one carry chain (`adc`) over the words,
/// eight per iteration: copied with 16-byte moves, then summed from `dst`
/// (the words just written there, so the sum is that of the bytes copied
/// even if `src` changes meanwhile).
///
/// # Safety
///
/// `src` readable and `dst` writable for `n * 8` bytes, not overlapping.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_sum_words(dst: *mut u8, src: *const u8, n: usize) -> u64 {
    let mut acc: u64 = 0;
    let blocks = n / 8;
    let rest = n % 8;
    // SAFETY: reads `n` words at `src` and writes `n` words at `dst`
    // (`blocks * 8`, then `rest`), within the caller's bounds, and reads
    // back only words it wrote to `dst`; `movdqu`, `mov`, `lea` and `dec`
    // leave CF alone, `test` clears it before each chain, and the two
    // `adc 0` after each chain add its last carry (the second covers the
    // first wrapping to 0, which cannot carry again). SSE2 is part of
    // x86-64.
    unsafe {
        std::arch::asm!(
            "test {nb}, {nb}",
            "jz 3f",
            "2:",
            "movdqu {x0}, xmmword ptr [{s}]",
            "movdqu {x1}, xmmword ptr [{s} + 16]",
            "movdqu {x2}, xmmword ptr [{s} + 32]",
            "movdqu {x3}, xmmword ptr [{s} + 48]",
            "movdqu xmmword ptr [{d}], {x0}",
            "movdqu xmmword ptr [{d} + 16], {x1}",
            "movdqu xmmword ptr [{d} + 32], {x2}",
            "movdqu xmmword ptr [{d} + 48], {x3}",
            "adc {acc}, qword ptr [{d}]",
            "adc {acc}, qword ptr [{d} + 8]",
            "adc {acc}, qword ptr [{d} + 16]",
            "adc {acc}, qword ptr [{d} + 24]",
            "adc {acc}, qword ptr [{d} + 32]",
            "adc {acc}, qword ptr [{d} + 40]",
            "adc {acc}, qword ptr [{d} + 48]",
            "adc {acc}, qword ptr [{d} + 56]",
            "lea {s}, [{s} + 64]",
            "lea {d}, [{d} + 64]",
            "dec {nb}",
            "jnz 2b",
            "adc {acc}, 0",
            "adc {acc}, 0",
            "3:",
            "test {nr}, {nr}",
            "jz 5f",
            "4:",
            "mov {t0}, qword ptr [{s}]",
            "mov qword ptr [{d}], {t0}",
            "adc {acc}, {t0}",
            "lea {s}, [{s} + 8]",
            "lea {d}, [{d} + 8]",
            "dec {nr}",
            "jnz 4b",
            "adc {acc}, 0",
            "adc {acc}, 0",
            "5:",
            acc = inout(reg) acc,
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            nb = inout(reg) blocks => _,
            nr = inout(reg) rest => _,
            t0 = out(reg) _,
            x0 = out(xmm_reg) _,
            x1 = out(xmm_reg) _,
            x2 = out(xmm_reg) _,
            x3 = out(xmm_reg) _,
            options(nostack),
        );
    }
    acc
}

/// Portable [`copy_sum_words`].
///
/// # Safety
///
/// As the x86-64 one.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
unsafe fn copy_sum_words(dst: *mut u8, src: *const u8, n: usize) -> u64 {
    let mut acc = SumAcc::default();
    for i in 0..n {
        // SAFETY: word `i < n` is within the caller's bounds.
        let w = unsafe { std::ptr::read_unaligned(src.add(i * 8) as *const [u8; 8]) };
        // SAFETY: as above, for `dst`.
        unsafe { std::ptr::write_unaligned(dst.add(i * 8) as *mut [u8; 8], w) };
        acc.add(w);
    }
    acc.tail(&[])
}

/// A ones'-complement accumulator of 64-bit words: the sum and the
/// carries out of it, added back at the end.
#[derive(Default, Clone, Copy)]
struct SumAcc {
    sum: u64,
    carries: u64,
}

impl SumAcc {
    #[inline(always)]
    fn add(&mut self, w: [u8; 8]) {
        let (s, o) = self.sum.overflowing_add(u64::from_ne_bytes(w));
        self.sum = s;
        self.carries += o as u64;
    }
    /// Adds the last `tail` bytes (fewer than 8) and the carries.
    #[inline(always)]
    fn tail(mut self, tail: &[u8]) -> u64 {
        if !tail.is_empty() {
            let mut w = [0u8; 8];
            w[..tail.len()].copy_from_slice(tail);
            self.add(w);
        }
        let (s, o) = self.sum.overflowing_add(self.carries);
        s + o as u64
    }
}

/// Hints the CPU to load the cache line holding `p` (never faults, no
/// effect on other architectures).
#[inline(always)]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Payload regions on the heap (tests, benchmarks, the simulator).
#[derive(Default)]
pub struct VecMem {
    pub regions: Vec<Vec<u8>>,
}

impl VecMem {
    pub fn new(regions: usize, size: usize) -> Self {
        VecMem {
            regions: (0..regions).map(|_| vec![0u8; size]).collect(),
        }
    }
}

impl PayloadMem for VecMem {
    #[inline]
    fn write(&mut self, mem: u16, off: u32, data: &[u8]) -> bool {
        let Some(r) = self.regions.get_mut(mem as usize) else {
            return false;
        };
        let off = off as usize;
        match r.get_mut(off..off + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    #[inline]
    fn prefetch(&self, mem: u16, off: u32) {
        // (No bounds check on `off`: a prefetch never faults.)
        if let Some(r) = self.regions.get(mem as usize) {
            prefetch_line(r.as_ptr().wrapping_add(off as usize));
        }
    }
    #[inline]
    fn read_sum(&self, mem: u16, off: u32, out: &mut [u8]) -> Option<u64> {
        let r = self.regions.get(mem as usize)?;
        let off = off as usize;
        let src = r.get(off..off + out.len())?;
        Some(copy_sum(out, src))
    }
    #[inline]
    fn read(&self, mem: u16, off: u32, out: &mut [u8]) -> bool {
        let Some(r) = self.regions.get(mem as usize) else {
            return false;
        };
        let off = off as usize;
        match r.get(off..off + out.len()) {
            Some(src) => {
                out.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 sum of big-endian 16-bit words, bytewise: the reference.
    fn ref_sum(data: &[u8]) -> u32 {
        let mut s = 0u32;
        for (i, &b) in data.iter().enumerate() {
            s += if i % 2 == 0 {
                (b as u32) << 8
            } else {
                b as u32
            };
        }
        s
    }

    /// Folds a native-endian 64-bit ones'-complement sum to 16 bits,
    /// big-endian.
    fn fold_be(s: u64) -> u16 {
        let mut s = (s & 0xffff_ffff) + (s >> 32);
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        if cfg!(target_endian = "little") {
            (s as u16).swap_bytes()
        } else {
            s as u16
        }
    }

    fn fold_ref(mut s: u32) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// `copy_sum`, `copy_sum_raw` and `ones_sum` copy exactly and sum as
    /// RFC 1071 does, for every length up to 3 blocks of the copy loop (64
    /// bytes each) and a partial fourth, any source alignment, and words
    /// that carry (all ones).
    #[test]
    fn copy_sum_copies_and_sums_like_the_reference() {
        let mut x = 0x9e37_79b9u32;
        for len in 0..232usize {
            for align in 0..8usize {
                for ones in [false, true] {
                    let src: Vec<u8> = (0..len + align)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            if ones {
                                0xff
                            } else {
                                x as u8
                            }
                        })
                        .collect();
                    let src = &src[align..];
                    let want = fold_ref(ref_sum(src));
                    let mut dst = vec![0x5au8; len + 3];
                    let s = copy_sum(&mut dst[..len], src);
                    assert_eq!(&dst[..len], src, "len {len}");
                    assert!(dst[len..].iter().all(|&b| b == 0x5a), "wrote past the end");
                    // Ones'-complement equality: 0 and 0xffff are the same value.
                    let eq = |a: u16, b: u16| a == b || (a | b == 0xffff && a & b == 0);
                    assert!(eq(fold_be(s), want), "len {len} align {align}");
                    let mut dst2 = vec![0u8; len];
                    // SAFETY: `src` has `len` readable bytes.
                    let s2 = unsafe { copy_sum_raw(&mut dst2, src.as_ptr()) };
                    assert_eq!(dst2, src);
                    assert_eq!(s2, s);
                    assert!(eq(fold_be(ones_sum(src)), want));
                    let mem = VecMem {
                        regions: vec![src.to_vec()],
                    };
                    let mut out = vec![0u8; len];
                    assert_eq!(mem.read_sum(0, 0, &mut out), Some(s));
                    assert_eq!(out, src);
                    // Out of bounds: nothing.
                    assert_eq!(mem.read_sum(0, 1, &mut out), None);
                    assert_eq!(mem.read_sum(1, 0, &mut out), None);
                }
            }
        }
    }

    #[test]
    fn flow_stats_round_trip_through_a_control_message() {
        let st = FlowStats {
            rtt_us: 123,
            rttvar_us: 45,
            cwnd_bytes: 14_480,
            retransmits: 3,
            flags: stats::F_TS | stats::F_SACK | stats::F_WSCALE | stats::F_RATE | stats::F_OPEN,
            rate_kbps: 40_000_000_123,
            snd_wnd: 3 << 20,
            rcv_wnd: 256 << 10,
            in_flight: 7240,
            not_sent: 99,
            timeouts: 1,
            rto_us: 20_000,
            snd_wscale: 7,
            rcv_wscale: 3,
            bytes_acked: 5 << 33,
            bytes_received: (1 << 40) + 17,
        };
        let m = st.to_msg(9, 42);
        let back = CtlMsg::from_bytes(m.as_bytes()).unwrap();
        assert_eq!((back.kind, back.req, back.flow), (ctl::STATS_OK, 9, 42));
        assert_eq!(FlowStats::from_msg(&back), Some(st));
        // Only STATS_OK decodes; foreign bits and impossible shifts are cut.
        assert_eq!(FlowStats::from_msg(&CtlMsg::new(ctl::RESULT)), None);
        let mut bad = m;
        bad.arg[4] = u32::MAX;
        bad.info.rx_seq = 0xffff; // word 8: the window-scale shifts
        let d = FlowStats::from_msg(&bad).unwrap();
        assert_eq!(d.flags, stats::ALL);
        assert_eq!((d.snd_wscale, d.rcv_wscale), (14, 14));
    }

    /// A wait for the other thread of a two-thread test: spins (the tight
    /// overlap the tests look for), and after a while yields the CPU, so
    /// that two threads that share one (two vCPUs, other tests beside)
    /// hand over at once instead of when the scheduler's slice ends.
    fn backoff(spins: &mut u32) {
        *spins += 1;
        if *spins < 1_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    /// The store-buffering litmus test of the sleep/wake handshake: in no
    /// round may the sleeper miss the entry while the publisher also misses
    /// the flag (that is a lost wake-up: a blocked app with data waiting).
    /// Without the fences x86 shows such rounds within a few thousand.
    #[test]
    fn sleep_handshake_never_loses_a_wakeup() {
        handshake_litmus(peer_sleeps);
    }

    /// The same with the publisher that lowers the flag it found raised
    /// (the app's side of its core's sleep).
    #[test]
    fn taking_the_sleep_flag_never_loses_a_wakeup() {
        handshake_litmus(take_peer_sleep);
    }

    /// One kick per announced sleep: the first publisher takes the flag,
    /// later ones find it down until the sleeper raises it again.
    #[test]
    fn the_sleep_flag_is_taken_once_per_sleep() {
        let flag = AtomicU32::new(0);
        assert!(!take_peer_sleep(&flag));
        announce_sleep(&flag, true);
        assert!(take_peer_sleep(&flag));
        assert!(!take_peer_sleep(&flag));
        assert!(!peer_sleeps(&flag));
        announce_sleep(&flag, true);
        assert!(take_peer_sleep(&flag));
        announce_sleep(&flag, true);
        announce_sleep(&flag, false);
        assert!(!take_peer_sleep(&flag));
    }

    fn handshake_litmus(publisher_kicks: fn(&AtomicU32) -> bool) {
        use std::sync::atomic::AtomicUsize;
        const ROUNDS: usize = 200_000;
        let mut ring = LocalRing::<AppEvent>::new(4);
        let (mut prod, mut cons) = ring.split();
        let flag = AtomicU32::new(0);
        let go = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let saw_entry = AtomicU32::new(0);
        let lost = std::thread::scope(|s| {
            s.spawn(|| {
                for r in 1..=ROUNDS {
                    let mut spins = 0u32;
                    while go.load(Ordering::Acquire) != r {
                        backoff(&mut spins);
                    }
                    for _ in 0..(r * 7) % 16 {
                        std::hint::spin_loop();
                    }
                    prod.push(AppEvent {
                        kind: event::FLOW_UPDATE,
                        ..Default::default()
                    });
                    let kicked = publisher_kicks(&flag);
                    saw_entry.store(kicked as u32, Ordering::Relaxed);
                    done.store(r, Ordering::Release);
                }
            });
            let mut lost = 0;
            for r in 1..=ROUNDS {
                go.store(r, Ordering::Release);
                // Vary the start so the two sides overlap in some rounds
                // (the other side sees `go` some 100 ns later).
                for _ in 0..(r * 13) % 256 {
                    std::hint::spin_loop();
                }
                announce_sleep(&flag, true);
                let mut got = cons.pop().is_some();
                let mut spins = 0u32;
                while done.load(Ordering::Acquire) != r {
                    backoff(&mut spins);
                }
                let kicked = saw_entry.load(Ordering::Relaxed) != 0;
                if !got && !kicked {
                    lost += 1;
                }
                while !got {
                    got = cons.pop().is_some();
                }
                flag.store(0, Ordering::SeqCst);
            }
            lost
        });
        assert_eq!(lost, 0, "lost wake-ups in {ROUNDS} rounds");
    }

    #[test]
    fn ring_fifo_full_and_wrap() {
        let mut ring = LocalRing::<AppCmd>::new(4);
        let (mut p, mut c) = ring.split();
        assert!(c.pop().is_none());
        for round in 0..5u32 {
            for i in 0..4 {
                assert!(p.push(AppCmd {
                    kind: cmd::FLOW_UPDATE,
                    flow: round * 10 + i,
                    ..Default::default()
                }));
            }
            assert!(
                !p.push(AppCmd {
                    kind: 1,
                    ..Default::default()
                }),
                "full ring refuses"
            );
            for i in 0..4 {
                assert_eq!(c.pop().unwrap().flow, round * 10 + i);
            }
            assert!(c.pop().is_none());
        }
    }

    #[test]
    fn ring_across_threads_keeps_order() {
        let mut ring = LocalRing::<AppEvent>::new(64);
        let (mut p, mut c) = ring.split();
        let n = 200_000u32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut i = 0;
                while i < n && std::time::Instant::now() < deadline {
                    if p.push(AppEvent {
                        kind: 1,
                        rx_seq: i,
                        opaque: i as u64 * 3,
                        ..Default::default()
                    }) {
                        i += 1;
                    } else {
                        // Full: let the consumer run if it shares this CPU
                        // (on two vCPUs with other tests beside, spinning
                        // until the scheduler's slice ends made the 200k
                        // items take over 20 s).
                        std::thread::yield_now();
                    }
                }
            });
            let mut want = 0;
            while want < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "ring stalled at {want}"
                );
                if let Some(e) = c.pop() {
                    assert_eq!((e.rx_seq, e.opaque), (want, want as u64 * 3));
                    want += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
    }

    /// Every lane's rings and flag lie inside the region, apart from each
    /// other and from the payload; more lanes than [`MAX_LANES`] or sizes
    /// that do not fit are refused, and `HELLO_OK` round-trips only with
    /// the derived offsets.
    #[test]
    fn region_layout_has_a_command_ring_and_a_flag_per_lane() {
        let l = RegionLayout::new(1 << 20, 4, 64, 32).unwrap();
        let ev = std::mem::size_of::<AppEvent>() as u32;
        let cm = std::mem::size_of::<AppCmd>() as u32;
        let mut spans = vec![(0, 64)];
        for i in 0..4 {
            spans.push((l.event_ring_off(i), l.event_ring_off(i) + 64 * ev));
            spans.push((l.cmd_ring_off(i), l.cmd_ring_off(i) + 32 * cm));
            spans.push((l.lane_flag_off(i), l.lane_flag_off(i) + 4));
            assert_eq!(l.lane_flag_off(i) % LANE_FLAG_STRIDE, 0);
        }
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {spans:?}");
        }
        assert!(spans.last().unwrap().1 <= l.payload_off);
        assert_eq!(l.payload_off % 4096, 0);
        assert!(RegionLayout::new(1 << 20, MAX_LANES + 1, 64, 32).is_none());
        assert!(RegionLayout::new(1 << 20, MAX_LANES, 64, 32).is_some());
        assert!(RegionLayout::new(8192, 4, 64, 4096).is_none());
        assert!(RegionLayout::new(1 << 20, 4, u32::MAX, 32).is_none());

        let ok = HelloOk {
            app: 5,
            service_ip: 7,
            layout: l,
        };
        let m = ok.to_msg(1);
        assert_eq!(HelloOk::from_msg(&m), Some(ok));
        let mut bad = m;
        bad.arg[4] += 16; // a command-ring offset not derived from the sizes
        assert_eq!(HelloOk::from_msg(&bad), None);
        let mut bad = m;
        bad.flow = MAX_LANES + 1;
        assert_eq!(HelloOk::from_msg(&bad), None);
    }

    #[test]
    fn vecmem_bounds() {
        let mut m = VecMem::new(2, 100);
        assert!(m.write(1, 90, &[1; 10]));
        assert!(!m.write(1, 91, &[1; 10]));
        assert!(!m.write(2, 0, &[1]));
        assert!(!m.write(0, u32::MAX, &[1]));
        let mut b = [0u8; 10];
        assert!(m.read(1, 90, &mut b) && b == [1; 10]);
        assert!(!m.read(1, 95, &mut b));
    }
}
