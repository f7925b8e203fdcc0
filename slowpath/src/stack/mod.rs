//! The slow path's sans-I/O TCP/IP core: ARP, ICMP echo and errors, routing, connection
//! setup and teardown, RST handling, the timers the fast path leaves to us
//! (handshake and data retransmission, zero-window probes, TIME_WAIT), and
//! the per-flow congestion-control loop (`ccloop`, running the algorithms
//! of [`crate::cc`]). Connection control is in `conn`, split by stage.
//!
//! Like the fast path's engine, [`Stack`] is plain functions over (state,
//! input bytes, `now` in ns): no threads, clocks or sockets. Everything it
//! emits goes through a [`StackIo`]: frames for the NIC, commands for the
//! fast-path core ([`FpCmd`]), control messages for apps, and ring memory
//! allocation in the apps' regions. The daemon calls it from the one
//! slow-path thread.
//!
//! # Division of labour with the fast path
//!
//! * Half-open connections (SYN_RCVD, SYN_SENT, waiting for ARP) live only
//!   here. A flow enters the [`FlowTable`] when its handshake completes, and
//!   from then on the fast path owns its sequence state.
//! * Under a SYN flood (half-open table full) a listener answers with SYN
//!   cookies and keeps no state; the final ACK carries everything needed
//!   to install the flow (`conn::cookie`, RFC 4987 §3.6).
//! * Every RST and SYN on an installed flow is an exception, judged here
//!   by RFC 5961: an RST resets only at exactly RCV.NXT, in the window it
//!   draws a challenge ACK (§3.2); a SYN draws a challenge ACK (§4.2);
//!   challenge ACKs come from a daemon-wide token bucket (§7).
//! * Segments the fast path cannot handle arrive as [`Exception`]s. Data
//!   that raced the installation of its flow (it arrived as `NoFlow` after
//!   the final ACK, but the flow exists now) is handed back with
//!   [`FpCmd::Rx`], so no byte is lost.
//! * Retransmission timeouts: each installed flow is inspected periodically
//!   under its lock (every RTO/2, clamped to 1..100 ms, and at least once per
//!   PTO while data is in flight; idle flows 4× less often). The RTO is
//!   `max(rto_min, 3·rtt_est, 2·handshake RTT)` (`rto_min` 200 ms as
//!   Linux), doubled per expiry without progress (RFC 6298 §5.5) up to
//!   `rto_max` (120 s); progress (SND.UNA moving) resets the backoff. When
//!   SND.UNA has not moved for an RTO while data or a FIN is in flight, the
//!   fast path gets [`FpCmd::Retransmit`]: everything unacknowledged and not
//!   SACKed goes again from SND.UNA (RFC 6675 §5.1; SND.NXT stays). After
//!   `data_retries` retransmissions without progress the flow is reset
//!   (`ETIMEDOUT`, RST to the peer).
//! * Tail-loss probes (RFC 8985 §7): when neither SND.UNA nor SND.NXT moved
//!   for a PTO (2·SRTT + 2 ms, plus 200 ms with a single segment out, as
//!   Linux) or until the RTO if that comes first, no timeout happened since
//!   the last progress and no probe was sent for that state, the fast path
//!   gets [`FpCmd::Probe`] (instead of the timeout, which restarts from the
//!   probe): one segment beyond the congestion window (new data, else the
//!   highest unacknowledged one), whose ACK or SACK repairs a lost tail
//!   without a timeout. While fast recovery runs, the same request is
//!   RACK's reordering timer (RFC 8985 §6.3), every PTO (without the
//!   single-segment allowance) while nothing progresses, the RTO still
//!   counting from the last progress: retransmissions still unacknowledged
//!   1.25 SRTT after they went are resent, else the first hole if recovery
//!   has nothing to send.
//! * Zero-window persist: when the peer's window is 0 with data waiting and
//!   nothing in flight, a probe is sent after an RTO (backing off). The probe
//!   carries one byte of already-acknowledged sequence space (`SND.UNA-1`),
//!   which every receiver must answer with an ACK (the fast path does not
//!   ACK zero-length out-of-window segments).
//!
//! # Flow lifetime as the app sees it
//!
//! A flow id handed out in `ACCEPTED`/`CONNECTED` stays reserved for that app
//! until the app gets `RELEASED` for it, and its rings stay allocated until
//! then (so data received before a reset can still be read).
//!
//! * Graceful close: the app requests its FIN through the fast path
//!   (`F_TX_FIN`) and sends `CLOSE` (if the FIN is still not requested
//!   500 ms after `CLOSE`, the stack requests it). When both FINs are done
//!   the flow is removed and the app gets `RELEASED`. The side whose FIN
//!   went out first keeps the 4-tuple (not the flow, not its rings: those
//!   go as soon as the app has closed) in TIME_WAIT for `time_wait_ns`: a
//!   retransmitted FIN is re-ACKed from there, a new SYN with a higher
//!   sequence number or newer timestamp ends TIME_WAIT early (RFC 6191;
//!   `conn/timewait.rs`). The other side removes the flow at once but remembers the
//!   4-tuple for `time_wait_ns`: late duplicates are dropped silently
//!   instead of drawing an RST. If the app has not sent `CLOSE` when both
//!   FINs are done (half-close), the flow stays until it does.
//! * A FIN_WAIT_2 whose peer never sends its FIN (after `CLOSE`) is reset
//!   after `fin_timeout_ns`.
//! * `ABORT`: RST to the peer, flow removed, `RELEASED`.
//! * The app exits or crashes ([`Stack::app_gone`]): its connections are
//!   closed as Linux closes an exiting process's sockets (FIN after its
//!   data, RST if it left received data unread) and live on as orphans
//!   until their data and FIN are done, bounded by `max_orphans`,
//!   `orphan_retries` and `fin_timeout_ns` (`conn/close.rs`); its region
//!   stays until then ([`Stack::orphans_of`]).
//! * Reset by the peer, retransmission timeout: the flow is removed from the
//!   table and the app gets `RESET` (`ECONNRESET`, `ETIMEDOUT`). The app
//!   then sends `CLOSE` (or `ABORT`) and gets `RELEASED`.
//! * While a flow is gone from the table but not yet released, its slot is
//!   held by an inert placeholder entry (never matches a frame, owned by
//!   [`RESERVED_APP`]) so the id cannot be reused under the app's feet.
//!
//! # Control messages (see `abi::ctl`)
//!
//! `LISTEN` → `RESULT` (with `listener`). `CONNECT` → `CONNECTED` or
//! `RESULT` with `ENETUNREACH`, `EHOSTUNREACH` (ARP failed),
//! `ECONNREFUSED`, `ETIMEDOUT`, `EADDRINUSE`, `EADDRNOTAVAIL`, `ENOMEM`,
//! `EINVAL`. `UNLISTEN` → `RESULT`. `ACCEPT` (credit: established
//! connections the app took off its accept queue) → no answer. `CLOSE`,
//! `ABORT` → `RELEASED` (maybe later). `STATS` → `STATS_OK` with the
//! flow's RTT, window, retransmissions and options (`ccloop.rs`).
//! `TX_GROW` → `RESULT` (a larger TX ring reserved, or `EAGAIN`/`ENOSPC`),
//! `TX_SWITCH` → `RESULT` (switched, or `EAGAIN`), `LISTEN_UPDATE` →
//! `RESULT`; unasked, `RING` announces a larger RX ring (`conn/grow.rs`).
//! Anything invalid or not owned by the sender → `RESULT` with
//! `EINVAL`/`EBADF`; never a panic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use tas_abi::{ctl, CtlMsg};
use tas_engine::engine::Exception;
use tas_engine::flow::FlowKey;
use tas_engine::flowtable::{FlowId, FlowTable};

mod arp;
#[cfg(test)]
mod cc_sim_tests;
mod ccloop;
mod conn;
mod hash;
mod icmp;
#[cfg(test)]
mod netsim;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use crate::cc::CcConfig;
use arp::ArpState;
pub use ccloop::FlowDetail;
use conn::{Conn, Connecting, HalfOpen, IcmpError, Listener};

/// An attached app; also the value put in `FlowState::mem` and
/// `FlowState::context` for that app's flows.
pub type AppId = u16;

/// Never a real app: owns the placeholder entries that keep released-but-
/// not-yet-acknowledged flow ids reserved.
pub const RESERVED_APP: AppId = u16::MAX;

/// A command for the fast-path core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpCmd {
    /// Retransmission timeout: resend what is unacknowledged and not
    /// SACKed, from SND.UNA.
    Retransmit(FlowId),
    /// Tail-loss probe (RFC 8985 §7).
    Probe(FlowId),
    /// The flow's state changed (e.g. FIN requested): send if it can.
    Kick(FlowId),
    /// Receive this frame again (data that raced the flow's installation).
    Rx(Vec<u8>),
}

/// Everything the stack emits.
pub trait StackIo {
    /// A frame for the NIC.
    fn send_frame(&mut self, frame: &[u8]);
    /// A command for the fast-path core.
    fn fastpath(&mut self, cmd: FpCmd);
    /// A control message for an app's attach socket.
    fn app_msg(&mut self, app: AppId, msg: &CtlMsg);
    /// `len` bytes of ring memory in the app's region: its offset, or None
    /// when out of memory.
    fn alloc(&mut self, app: AppId, len: u32) -> Option<u32>;
    /// Returns memory from [`alloc`](Self::alloc).
    fn free(&mut self, app: AppId, off: u32, len: u32);
    /// Copies `len` bytes at offset `from` of `app`'s region to offset `to`
    /// (ranges that do not overlap, both from [`alloc`](Self::alloc));
    /// false when it cannot (then nothing was copied).
    fn copy(&mut self, _app: AppId, _from: u32, _to: u32, _len: u32) -> bool {
        false
    }
    /// A listener is about to use local `port` (no other listener has it):
    /// in shared mode the kernel's own use of the port is checked and the
    /// port's frames are steered to TAS. Err(errno) refuses the listen.
    fn claim_port(&mut self, _port: u16) -> Result<(), i32> {
        Ok(())
    }
    /// The last listener on `port` is gone (its connections may live on).
    fn release_port(&mut self, _port: u16) {}
    /// Shared mode: the kernel resolves neighbours, so tasd and the kernel
    /// never disagree (the daemon asks it over rtnetlink, `netlink.rs`).
    fn kernel_neighbour(&mut self, _ip: u32) -> KernelNeigh {
        KernelNeigh::NotShared
    }
    /// Shared mode: the kernel's next hop for `dst` (host order) from its
    /// FIB: `Some(Some(hop))`, or `Some(None)` when the kernel would not
    /// send it out of tasd's interface (or has no route). None: the
    /// stack's own prefix and gateway decide.
    fn kernel_route(&mut self, _dst: u32) -> Option<Option<u32>> {
        None
    }
    /// The payload region (an app id) whose memory `app`'s flows use: its
    /// own, or the region it shares after a fork.
    fn mem_of(&self, app: AppId) -> AppId {
        app
    }
    /// A mark of where the fast path's serving of the apps' command rings
    /// stands now (see [`StackIo::cmds_applied`]).
    fn cmd_mark(&mut self) -> u64 {
        0
    }
    /// Whether every command `app` published in its command rings before
    /// `mark` ([`StackIo::cmd_mark`]) was taken has been applied to the
    /// flows (true for an app that has no ring any more: it was drained).
    fn cmds_applied(&self, _app: AppId, _mark: u64) -> bool {
        true
    }
    /// The contexts whose command rings may drive flows of `app`'s payload
    /// region: its owner and every context sharing it (forked, exec'ed or
    /// spawned processes), `app` included, gone ones too while the fast
    /// path still serves their rings.
    fn region_contexts(&self, app: AppId) -> Vec<AppId> {
        vec![app]
    }
    /// The pid of the process `app` belongs to (0: unknown).
    fn app_pid(&self, _app: AppId) -> i32 {
        0
    }
    /// The uid of the process `app` belongs to (`u32::MAX`: unknown).
    fn app_uid(&self, _app: AppId) -> u32 {
        u32::MAX
    }
    /// Bytes of ring memory the app's region has free (0: no such app).
    fn free_bytes(&self, app: AppId) -> u64;
}

/// Flow-table slots for `max_flows` connections: new connections are
/// refused above 15/16 of the table (`conn/resources.rs::room_for`), the
/// rest being kept for connections whose handshake state the slow path
/// holds, so the table has a fifteenth more than `--max-flows`, and that
/// many connections fit (the default 65,536 in 69,906 slots).
pub fn table_slots(max_flows: usize) -> usize {
    max_flows + max_flows.div_ceil(15)
}

/// Whether a table of `cap` slots takes another connection with `used`
/// entries (installed flows, and opens in progress for an active open).
pub(crate) fn below_watermark(used: usize, cap: usize) -> bool {
    used < cap - cap / 16
}

/// What the kernel says about a neighbour tasd needs (shared mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelNeigh {
    /// Not shared mode: the stack sends its own ARP requests.
    NotShared,
    /// The kernel has a usable address for it.
    Known([u8; 6]),
    /// The kernel was asked to resolve it; the answer comes as
    /// [`Stack::neighbour`].
    Resolving,
}

/// Stack configuration. Times are nanoseconds.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Our IPv4 address (host order); 0 = not configured (nothing answered).
    pub local_ip: u32,
    pub prefix_len: u8,
    pub gateway: Option<u32>,
    pub local_mac: [u8; 6],
    pub mtu: u16,
    /// Ring sizes when the app asks for 0: the most a ring grows to.
    pub default_rx_buf: u32,
    pub default_tx_buf: u32,
    /// What such a ring starts with (doubling up to the default while the
    /// flow needs it; `conn/grow.rs`). A size the app asks for is pinned:
    /// it starts there and never grows.
    pub init_rx_buf: u32,
    pub init_tx_buf: u32,
    /// How long the side that closed first keeps the flow (TIME_WAIT).
    pub time_wait_ns: u64,
    /// SYN (and SYN-ACK) retransmissions before giving up.
    pub syn_retries: u32,
    /// First SYN retransmission timeout; doubles per retry.
    pub syn_rto_ns: u64,
    /// Retransmission timeout bounds (RFC 6298 §2.4, §2.5; Linux's 200 ms
    /// and 120 s).
    pub rto_min_ns: u64,
    pub rto_max_ns: u64,
    /// Send tail-loss probes (RFC 8985 §7).
    pub tlp: bool,
    /// Data/FIN retransmissions without progress before the flow is reset.
    pub data_retries: u32,
    /// ARP request interval, and retries after the first request.
    pub arp_timeout_ns: u64,
    pub arp_retries: u32,
    /// ARP cache entry lifetime.
    pub arp_ttl_ns: u64,
    /// Ephemeral port range (inclusive).
    pub ephemeral: (u16, u16),
    /// Shared mode (the kernel owns `local_ip` too): TAS's active-open
    /// range. Segments for other ports that are not TAS's listeners are the
    /// kernel's (left alone, never reset), and so are ICMP echo requests.
    pub shared_ports: Option<(u16, u16)>,
    /// Congestion control: algorithms and their settings (global and per
    /// listening port). Changed at run time with [`Stack::cc_set`].
    pub cc: CcConfig,
    /// Negotiate ECN (RFC 3168).
    pub ecn: bool,
    /// After the app closed and our FIN was acknowledged, how long to wait
    /// for the peer's FIN before resetting (FIN_WAIT_2 bound).
    pub fin_timeout_ns: u64,
    /// Most half-open (SYN_RCVD) connections kept in total.
    pub max_half_open: u32,
    /// Answer SYNs with SYN cookies while the half-open table is full
    /// (RFC 4987 §3.6; Linux's `net.ipv4.tcp_syncookies=1`). Off: such SYNs
    /// are dropped.
    pub syncookies: bool,
    /// Most orphaned connections (closed by an app that has exited, still
    /// delivering their data and FIN), all apps together; past it a gone
    /// app's connections are reset instead (Linux's `tcp_max_orphans`).
    pub max_orphans: u32,
    /// Ring size floor under memory pressure (0: off). A new connection
    /// gets its configured rings while its app's region keeps room for a
    /// floor-sized pair for every flow the table could still take; past
    /// that it gets rings of this size (never more than configured), so
    /// one app can hold as many connections as the flow table (see
    /// `conn/resources.rs`, docs/design.md "Ring memory").
    pub ring_floor: u32,
    /// Retransmissions (and zero-window probes) without progress before an
    /// orphaned connection is reset (Linux's `tcp_orphan_retries`, whose
    /// default 0 means 8).
    pub orphan_retries: u32,
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Challenge ACKs a second, all flows together (RFC 5961 §7; Linux's
/// `net.ipv4.tcp_challenge_ack_limit`), and how many may go out at once.
const CHALLENGE_RATE: u64 = 1000;
const CHALLENGE_BURST: u64 = 1000;

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            local_ip: 0,
            prefix_len: 24,
            gateway: None,
            local_mac: [0; 6],
            mtu: 1500,
            default_rx_buf: 256 << 10,
            default_tx_buf: 256 << 10,
            init_rx_buf: 256 << 10,
            init_tx_buf: 256 << 10,
            time_wait_ns: 2 * SEC,
            syn_retries: 6,
            syn_rto_ns: 200 * MS,
            rto_min_ns: 200 * MS,
            rto_max_ns: 120 * SEC,
            tlp: true,
            data_retries: 12,
            arp_timeout_ns: 500 * MS,
            arp_retries: 3,
            arp_ttl_ns: 60 * SEC,
            ephemeral: (32768, 60999),
            shared_ports: None,
            cc: CcConfig::default(),
            ecn: false,
            fin_timeout_ns: 60 * SEC,
            max_half_open: 4096,
            syncookies: true,
            max_orphans: 16384,
            ring_floor: 0,
            orphan_retries: 8,
        }
    }
}

/// One line of `tasctl flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    /// Flow id in the table; None for listeners and half-open connections.
    pub flow: Option<FlowId>,
    pub local_ip: u32,
    pub local_port: u16,
    pub remote_ip: u32,
    pub remote_port: u16,
    /// `LISTEN`, `ARP_WAIT`, `SYN_SENT`, `SYN_RCVD`, `ESTABLISHED`,
    /// `FIN_WAIT1`, `FIN_WAIT2`, `CLOSING`, `CLOSE_WAIT`, `LAST_ACK`,
    /// `TIME_WAIT`, `CLOSED` (finished, app has not closed it yet).
    pub state: &'static str,
    pub app: AppId,
}

/// Slow-path counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StackStats {
    pub arp_rx: u64,
    pub arp_replies_sent: u64,
    pub arp_requests_sent: u64,
    pub arp_learned: u64,
    pub arp_expired: u64,
    pub arp_failures: u64,
    /// Shared mode: resolutions asked of the kernel (instead of ARP
    /// requests of our own), whether it knew the address or not.
    pub arp_kernel_resolves: u64,
    pub arp_conflicts: u64,
    pub icmp_echo_replies: u64,
    pub icmp_ignored: u64,
    /// ICMP errors quoting one of our connections (`conn/icmp_error.rs`):
    /// fragmentation-needed that lowered a flow's MSS; errors that failed
    /// an open (SYN_SENT) or dropped a SYN_RCVD; soft errors (recorded,
    /// no action); errors whose quoted sequence number was not in flight
    /// (Linux's `OutOfWindowIcmps`).
    pub icmp_pmtu_updates: u64,
    pub icmp_conn_errors: u64,
    pub icmp_soft_errors: u64,
    pub icmp_out_of_window: u64,
    pub ip_other: u64,
    pub non_ip: u64,
    pub syn_rx: u64,
    pub synack_sent: u64,
    pub synack_retransmits: u64,
    pub half_open_timeouts: u64,
    /// SYNs dropped because the listener's accept queue was full (or its
    /// app is not taking its control messages: see
    /// [`Stack::set_app_throttled`]).
    pub syn_dropped_backlog: u64,
    /// SYNs dropped because the half-open table was full and no cookie
    /// could be sent (cookies off, or no room for the connection).
    pub syn_dropped_overflow: u64,
    /// Final ACKs dropped because the accept queue was full.
    pub accept_overflow: u64,
    /// SYNs dropped because the flow table or the app's memory had no room
    /// for the connection (counted in `listen_overflows` too).
    pub syn_dropped_no_room: u64,
    /// Final ACKs dropped because that room went between SYN and ACK (the
    /// handshake is retried, never completed and then reset).
    pub accept_no_room: u64,
    /// Connects refused with ENOBUFS before their SYN: the flow table had
    /// no room.
    pub connect_no_room: u64,
    /// Linux's `ListenOverflows`: `syn_dropped_backlog + accept_overflow`.
    pub listen_overflows: u64,
    pub syn_sent: u64,
    pub syn_retransmits: u64,
    pub accepted: u64,
    pub connected: u64,
    pub connect_refused: u64,
    pub connect_timeouts: u64,
    pub connect_unreachable: u64,
    pub rst_sent: u64,
    /// SYN cookies (RFC 4987 §3.6): SYN-ACKs sent with a cookie; final
    /// ACKs whose cookie was valid; final ACKs that reached a listener in
    /// cookie mode with no valid cookie (answered with RST); SYNs not given
    /// a cookie because the connection could not be made (flow table above
    /// its watermark, app memory full); valid cookies whose connection
    /// found no room when the final ACK came (dropped, not reset).
    pub syncookies_sent: u64,
    pub syncookies_recv: u64,
    pub syncookies_failed: u64,
    pub syncookies_refused: u64,
    pub syncookies_dropped: u64,
    /// Valid cookies whose final ACK found the accept queue full: kept in
    /// SYN_RCVD (the SYN-ACK timer draws the ACK again) instead of lost.
    pub syncookies_parked: u64,
    /// RSTs acted on: the connection was reset.
    pub rst_rx: u64,
    /// RSTs for no connection (or a half-open one at the wrong sequence).
    pub rst_ignored: u64,
    /// RFC 5961 §3.2: RSTs on a connection in its receive window but not at
    /// RCV.NXT (answered with a challenge ACK), and outside it (dropped).
    pub rst_challenged: u64,
    pub rst_out_of_window: u64,
    /// RFC 5961 §4.2: SYNs on a synchronized connection (challenge ACK).
    pub syn_challenged: u64,
    /// Challenge ACKs sent, and not sent because of the rate limit
    /// (RFC 5961 §7).
    pub challenge_acks: u64,
    pub challenge_acks_limited: u64,
    pub rto_retransmits: u64,
    /// Tail-loss probes asked of the fast path.
    pub tlp_probes: u64,
    pub data_timeouts: u64,
    pub persist_probes: u64,
    pub fin_timeouts: u64,
    pub time_wait_entered: u64,
    pub time_wait_expired: u64,
    /// 4-tuples in TIME_WAIT now (a gauge).
    pub time_wait_now: u64,
    /// TIME_WAIT ended by an RST (RFC 1337's hazard, accepted as Linux does).
    pub time_wait_killed: u64,
    /// TIME_WAIT ended by a new incarnation's SYN (RFC 6191).
    pub time_wait_reused: u64,
    /// ACKs sent from TIME_WAIT (retransmitted FINs, old SYNs, data).
    pub time_wait_acks: u64,
    /// ACKs from TIME_WAIT not sent (one per entry per 100 ms).
    pub time_wait_acks_limited: u64,
    pub closed_graceful: u64,
    /// Forks that shared sockets (`SHARE`), sockets adopted by another
    /// process's context, connections closed because the last process
    /// holding them (by a grant) exited.
    pub shares: u64,
    pub adopted: u64,
    pub grant_closes: u64,
    /// Answers to `ADOPT` (and `RETURNED` messages) that waited for the
    /// fast path to apply what another context sharing the region had
    /// queued (its last write), and those sent without it: after 2 s, or
    /// at once when 64 of the app's already waited (`conn/share.rs`).
    pub adopt_waits: u64,
    pub adopt_wait_timeouts: u64,
    /// Sockets passed with `SCM_RIGHTS` (`conn/xfer.rs`): transfers
    /// registered, claimed by their receiver, refused (too many pending,
    /// or received by another user).
    pub xfers: u64,
    pub xfers_claimed: u64,
    pub xfers_refused: u64,
    /// SYNs dropped because their shared listener had no acceptor yet;
    /// connections handed from an acceptor that stopped accepting (or
    /// exited) to another.
    pub syn_dropped_no_acceptor: u64,
    pub handed_back: u64,
    pub aborted: u64,
    /// Connections left by an exited app that went on delivering their
    /// data and FIN (orphans, as Linux's), and how many are left now (a
    /// gauge).
    pub orphaned: u64,
    pub orphans_now: u64,
    /// Connections of an exited app reset because `max_orphans` were
    /// already kept (Linux's `TCPAbortOnMemory`).
    pub orphans_overflow: u64,
    /// Connections reset at the app's exit because it left received data
    /// unread, or reset as orphans because data arrived (Linux's
    /// `TCPAbortOnClose` and `TCPAbortOnData`).
    pub abort_on_close: u64,
    pub abort_on_data: u64,
    /// Orphans reset after `orphan_retries` retransmissions or
    /// zero-window probes without progress.
    pub orphan_timeouts: u64,
    pub reinjected: u64,
    /// Segments for recently closed connections, dropped silently.
    pub late_segments: u64,
    pub dropped_bad_checksum: u64,
    pub dropped_malformed: u64,
    pub dropped_unusual_flags: u64,
    pub dropped_not_ours: u64,
    pub dropped_other: u64,
    pub ctl_errors: u64,
    pub alloc_failures: u64,
    pub table_full: u64,
    /// Ring growth (`conn/grow.rs`): RX and TX rings switched to twice
    /// their size; reserved RX rings given back (never empty in
    /// `RX_SWITCH_TRIES` rounds, or the flow closed or was shared); TX
    /// growth refused (the ring did not limit the sender, or the switch
    /// found data in flight); growth stopped by region pressure.
    pub rx_rings_grown: u64,
    pub tx_rings_grown: u64,
    pub rx_grow_abandoned: u64,
    pub tx_grow_refused: u64,
    pub ring_grow_no_room: u64,
    /// Congestion control: updates applied, deferred (too little
    /// feedback), algorithm hand-overs, kicks of window-blocked flows.
    pub cc_updates: u64,
    pub cc_deferred: u64,
    pub cc_switches: u64,
    pub cc_kicks: u64,
}

/// One listener, for `tasctl listeners`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerInfo {
    pub id: u32,
    pub app: AppId,
    pub port: u16,
    /// The accept queue's size (the app's backlog, clamped).
    pub backlog: u32,
    /// Connections announced to the app and not yet taken (`ACCEPT`
    /// credit outstanding): the accept queue's fill.
    pub pending: u32,
    /// Handshakes in progress (SYN_RCVD).
    pub half_open: u32,
    pub reuseport: bool,
}

/// (local ip, remote ip, local port, remote port): an ordered 4-tuple.
type Tuple = (u32, u32, u16, u16);

fn tuple(k: &FlowKey) -> Tuple {
    (k.local_ip, k.remote_ip, k.local_port, k.remote_port)
}

fn key_of(t: Tuple) -> FlowKey {
    FlowKey {
        local_ip: t.0,
        remote_ip: t.1,
        local_port: t.2,
        remote_port: t.3,
    }
}

/// A deadline in the timer heap. Entries are validated against the owner's
/// current deadline when they fire, so stale ones are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Arp(u32),
    Connect(Tuple),
    HalfOpen(Tuple),
    Flow(FlowId),
    /// Congestion-control update of an installed flow.
    Cc(FlowId),
}

/// The slow path's TCP/IP state.
pub struct Stack {
    cfg: StackConfig,
    table: Arc<FlowTable>,
    isn_key: (u64, u64),
    port_key: (u64, u64),
    port_counter: u32,
    ip_ident: u16,
    arp: ArpState,
    listeners: HashMap<u32, Listener>,
    /// Listener ids per port (several with `F_REUSEPORT`).
    ports: HashMap<u16, Vec<u32>>,
    next_listener: u32,
    half_open: HashMap<FlowKey, HalfOpen>,
    connecting: HashMap<FlowKey, Connecting>,
    conns: HashMap<FlowId, Conn>,
    /// Sockets handed by forking processes to their children (`share`).
    grants: Vec<conn::Grant>,
    /// Answers to `ADOPT` waiting for the fast path to apply what other
    /// contexts queued (`conn/share.rs`).
    state_waits: Vec<conn::StateWait>,
    /// Ids of `SCM_RIGHTS` transfers (`conn/xfer.rs`).
    xfer_seq: u64,
    /// 4-tuples closed gracefully without TIME_WAIT, until when late
    /// segments for them are dropped silently.
    lingering: HashMap<FlowKey, u64>,
    /// 4-tuples in TIME_WAIT (we closed first): no flow, no rings.
    time_wait: conn::TimeWait,
    /// Path MSS learnt from ICMP fragmentation needed, per destination,
    /// and until when (`conn/icmp_error.rs`).
    path_mss: HashMap<u32, (u16, u64)>,
    next_housekeeping: u64,
    timers: BinaryHeap<Reverse<(u64, Timer)>>,
    /// Challenge-ACK rate limit (RFC 5961 §7): a token bucket, tokens in
    /// units of 1/[`CHALLENGE_RATE`] ns, refilled up to the burst at the
    /// rate, as of time `.0`.
    challenge: (u64, u64),
    /// SipHash key of the SYN cookies (drawn from the seed at start).
    cookie_key: (u64, u64),
    /// Apps that do not take their control messages: no new connections
    /// are accepted for them.
    throttled: HashSet<AppId>,
    /// Orphaned connections of each exited app (see `conn/close.rs`): its
    /// region must stay mapped until they are gone.
    orphans: HashMap<AppId, u32>,
    /// Ring bytes promised to each app's half-open connections (sized at
    /// the SYN, allocated at the final ACK): not free for sizing others.
    promised: HashMap<AppId, u64>,
    stats: StackStats,
    /// The fast-path lane the frame being handled arrived on: flows
    /// installed while handling it are steered to that lane (`group`),
    /// which is where the NIC delivers the rest of their packets.
    rx_lane: u16,
    #[cfg(test)]
    isn_override: Option<u32>,
}

impl Stack {
    /// A stack over `table`. `seed` keys the ISN and port-choice hashes (pass
    /// a random value in production; tests pass constants for determinism).
    pub fn new(cfg: StackConfig, table: Arc<FlowTable>, seed: u64) -> Self {
        let mut s = seed;
        let isn_key = (hash::splitmix64(&mut s), hash::splitmix64(&mut s));
        let port_key = (hash::splitmix64(&mut s), hash::splitmix64(&mut s));
        let port_counter = hash::splitmix64(&mut s) as u32;
        let ip_ident = hash::splitmix64(&mut s) as u16;
        let cookie_key = (hash::splitmix64(&mut s), hash::splitmix64(&mut s));
        Stack {
            cfg,
            table,
            isn_key,
            port_key,
            port_counter,
            ip_ident,
            arp: ArpState::default(),
            listeners: HashMap::new(),
            ports: HashMap::new(),
            next_listener: 1,
            half_open: HashMap::new(),
            connecting: HashMap::new(),
            conns: HashMap::new(),
            grants: Vec::new(),
            state_waits: Vec::new(),
            xfer_seq: 0,
            lingering: HashMap::new(),
            time_wait: conn::TimeWait::default(),
            path_mss: HashMap::new(),
            next_housekeeping: 0,
            timers: BinaryHeap::new(),
            challenge: (0, CHALLENGE_BURST * SEC),
            cookie_key,
            throttled: HashSet::new(),
            orphans: HashMap::new(),
            promised: HashMap::new(),
            stats: StackStats::default(),
            rx_lane: 0,
            #[cfg(test)]
            isn_override: None,
        }
    }

    /// The lane the following frames ([`Stack::on_frame`]) arrived on.
    pub fn set_rx_lane(&mut self, lane: u16) {
        self.rx_lane = lane;
    }

    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// A frame the fast path handed over.
    pub fn on_frame(
        &mut self,
        now: u64,
        reason: Exception,
        flow: Option<FlowId>,
        frame: &[u8],
        io: &mut impl StackIo,
    ) {
        match reason {
            Exception::NotTcp => self.on_not_tcp(now, frame, io),
            Exception::Malformed(_) => self.stats.dropped_malformed += 1,
            Exception::BadChecksum => self.stats.dropped_bad_checksum += 1,
            Exception::NoFlow => self.on_no_flow(now, frame, io),
            Exception::Syn => self.on_flow_syn(now, flow, frame, io),
            Exception::Rst => self.on_flow_rst(now, flow, frame, io),
            Exception::UnusualFlags => self.stats.dropped_unusual_flags += 1,
            Exception::SlowPathFlow => self.stats.dropped_other += 1,
            Exception::FinReceived => self.on_fin_received_exc(now, flow, frame, io),
            Exception::FinAcked => self.on_fin_acked_exc(now, flow, frame, io),
        }
    }

    /// A control message from app `app`.
    pub fn on_app_msg(&mut self, now: u64, app: AppId, msg: &CtlMsg, io: &mut impl StackIo) {
        if app == RESERVED_APP {
            self.reply_err(io, app, msg, libc::EINVAL);
            return;
        }
        match msg.kind {
            ctl::LISTEN => self.app_listen(app, msg, io),
            ctl::UNLISTEN => self.app_unlisten(now, app, msg, io),
            ctl::ACCEPT => self.app_accept(app, msg, io),
            ctl::CONNECT => self.app_connect(now, app, msg, io),
            ctl::CLOSE => self.app_close(now, app, msg, io),
            ctl::ABORT => self.app_abort(now, app, msg, io),
            ctl::STATS => self.app_flow_stats(app, msg, io),
            ctl::SHARE => self.app_share(now, app, msg, io),
            ctl::SHARE_PID => self.app_share_pid(now, app, msg, io),
            ctl::ADOPT => self.app_adopt(now, app, msg, io),
            ctl::DROP => self.app_drop(now, app, msg, io),
            ctl::XFER_CANCEL => self.app_xfer_cancel(now, app, msg, io),
            // They need the fd the message carried (`on_app_msg_fd`).
            ctl::XFER | ctl::XFER_CLAIM => self.reply_err(io, app, msg, libc::EBADF),
            ctl::TX_GROW => self.app_tx_grow(app, msg, io),
            ctl::TX_SWITCH => self.app_tx_switch(app, msg, io),
            ctl::LISTEN_UPDATE => self.app_listen_update(app, msg, io),
            _ => self.reply_err(io, app, msg, libc::EINVAL),
        }
    }

    /// Timers due at `now`.
    pub fn poll(&mut self, now: u64, io: &mut impl StackIo) {
        while let Some(&Reverse((t, timer))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Arp(ip) => self.arp_timer(now, t, ip, io),
                Timer::Connect(k) => self.connect_timer(now, t, key_of(k), io),
                Timer::HalfOpen(k) => self.half_open_timer(now, t, key_of(k), io),
                Timer::Flow(id) => self.flow_timer(now, t, id, io),
                Timer::Cc(id) => self.cc_timer(now, t, id, io),
            }
        }
        self.state_replies(now, io);
        self.stats.time_wait_expired += self.time_wait.expire(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now.saturating_add(SEC);
            self.arp_sweep(now);
            self.path_mss_sweep(now);
            self.lingering.retain(|_, until| *until > now);
        }
    }

    /// The earliest pending deadline (may be early: a stale entry only
    /// causes a spurious [`poll`](Self::poll)).
    pub fn poll_at(&self) -> Option<u64> {
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        match (t, self.time_wait.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn stats(&self) -> StackStats {
        let mut s = self.stats;
        s.time_wait_now = self.time_wait.len() as u64;
        s.orphans_now = self.orphans.values().map(|&n| n as u64).sum();
        s.listen_overflows =
            s.syn_dropped_backlog + s.accept_overflow + s.syn_dropped_no_room + s.accept_no_room;
        s
    }

    /// Back-pressure from the app's control channel: while `on`, SYNs for
    /// the app's listeners are dropped (counted as listen overflows), as if
    /// its accept queues were full; the peers retry. The daemon sets it when
    /// the app's undelivered control messages pass a bound and clears it
    /// when they have drained (and when the app is gone).
    pub fn set_app_throttled(&mut self, app: AppId, on: bool) {
        if on {
            self.throttled.insert(app);
        } else {
            self.throttled.remove(&app);
        }
    }

    /// Whether new connections for `app` are refused (see
    /// [`Stack::set_app_throttled`]).
    pub(crate) fn app_throttled(&self, app: AppId) -> bool {
        !self.throttled.is_empty() && self.throttled.contains(&app)
    }

    fn schedule(&mut self, at: u64, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    fn reply(&mut self, io: &mut impl StackIo, app: AppId, msg: &CtlMsg, err: i32, listener: u32) {
        let m = CtlMsg {
            kind: ctl::RESULT,
            req: msg.req,
            err,
            listener,
            flow: msg.flow,
            ..Default::default()
        };
        io.app_msg(app, &m);
    }

    fn reply_err(&mut self, io: &mut impl StackIo, app: AppId, msg: &CtlMsg, err: i32) {
        self.stats.ctl_errors += 1;
        self.reply(io, app, msg, err, msg.listener);
    }

    /// Next hop for `dst`: the kernel's in shared mode, else
    /// [`Stack::next_hop`].
    fn route(&self, dst: u32, io: &mut impl StackIo) -> Option<u32> {
        match io.kernel_route(dst) {
            Some(r) => r,
            None => self.next_hop(dst),
        }
    }

    /// Next hop for `dst`: itself on our subnet, else the gateway.
    fn next_hop(&self, dst: u32) -> Option<u32> {
        let p = self.cfg.prefix_len.min(32) as u32;
        let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        if dst & mask == self.cfg.local_ip & mask {
            Some(dst)
        } else {
            self.cfg.gateway
        }
    }

    /// Whether `ip` may be the source or destination of a unicast
    /// connection (not 0, broadcast, multicast, loopback, our subnet's
    /// broadcast).
    fn unicast_ok(&self, ip: u32) -> bool {
        let p = self.cfg.prefix_len.min(32) as u32;
        let host_mask = if p >= 31 { 0 } else { u32::MAX >> p };
        let subnet_bcast = host_mask != 0
            && ip & !host_mask == self.cfg.local_ip & !host_mask
            && ip & host_mask == host_mask;
        ip != 0 && ip >> 24 != 127 && ip < 0xE000_0000 && !subnet_bcast
    }

    fn next_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    #[cfg(test)]
    pub(crate) fn set_isn_override(&mut self, isn: Option<u32>) {
        self.isn_override = isn;
    }
}
