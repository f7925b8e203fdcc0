//! Common-case TCP for established flows: receive, ACK, transmit.
//!
//! Sans-I/O: [`FastPath`] methods take the frame bytes and `now` (nanoseconds
//! on any monotonic clock) and produce frames through an [`Output`], app
//! notifications through a delivery callback, and [`Exception`]s for the slow
//! path. No thread, clock, syscall or allocation happens inside; the poll loop
//! that wires this to NICs and context queues is a thin layer on top.
//!
//! What stays here: the sequence check of RFC 9293 §3.10.7.4, in-order data
//! (copied into the flow's RX ring, ACKed at once with the scaled window,
//! echoed timestamp and ECE when CE-marked), several out-of-order intervals
//! per flow reported as SACK blocks (RFC 2018) and duplicates as D-SACK
//! blocks (RFC 2883), window trimming, an in-order FIN, ACK processing
//! (freeing TX ring space, feedback counters, RTT estimate, the RFC 5961
//! §5.2 ACK checks), loss recovery (SACK-based as RFC 6675, NewReno without
//! SACK, retransmission after the slow path's timeout, tail-loss probes it
//! asks for: `recovery.rs`), and segment transmission cut from the TX ring
//! when the [`TxScheduler`] allows. What leaves as an exception: SYN, RST,
//! URG or a missing ACK flag, unknown flows, bad checksums, malformed
//! frames, non-TCP frames and flows the slow path owns.

use crate::fifo::{Fifo, TailFifo};
use crate::flow::{cfg, notify, st, FlowCold, FlowKey, FlowState};
use crate::flowtable::{FlowId, FlowTable};
use crate::sched::TxScheduler;
use crate::wire::frame::TmplLocal;
use crate::wire::{self, frame, ipv4, tcp, WireError};
use std::sync::Arc;
use tas_abi::{event, AppCmd, AppEvent, PayloadMem};

mod ack;
mod recovery;
mod ring;
mod rx;
mod tx;

use ack::ChallengeLimit;
pub use ack::CHALLENGE_ACKS_PER_SEC;
use ring::ring_add;
use tx::{
    build_segment, can_send, fin_pending, may_activate, may_resend, payload_max, send_ack,
    send_allowance, template,
};

/// Why a frame was handed to the slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// Not IPv4/TCP (ARP, ICMP, ...): the slow path's business.
    NotTcp,
    /// A frame that does not parse.
    Malformed(WireError),
    /// TCP checksum mismatch.
    BadChecksum,
    /// No established flow for the 4-tuple.
    NoFlow,
    /// SYN on an established flow.
    Syn,
    /// RST on an established flow.
    Rst,
    /// Flags the fast path does not handle (URG, no ACK).
    UnusualFlags,
    /// The flow is marked for slow-path handling.
    SlowPathFlow,
    /// The peer's FIN arrived in order and was ACKed (informational).
    FinReceived,
    /// Our FIN was acknowledged (informational).
    FinAcked,
}

/// Where the fast path puts its outputs.
pub trait Output {
    /// Room for one outgoing frame: the buffer to write it into, `None`
    /// when no room is left. The frame counts once [`Output::tx_commit`]
    /// gives its length.
    fn tx_buf(&mut self) -> Option<&mut [u8]>;
    /// The frame written into the buffer the last [`Output::tx_buf`] gave
    /// is `len` bytes long (0: nothing was written, nothing is sent).
    fn tx_commit(&mut self, len: usize);
    /// Room for one outgoing frame: `fill` writes it and returns its length.
    /// Returns false (and does not call `fill`) when no room is left.
    #[inline(always)]
    fn tx<F: FnOnce(&mut [u8]) -> usize>(&mut self, fill: F) -> bool {
        let Some(b) = self.tx_buf() else {
            return false;
        };
        let n = fill(b);
        self.tx_commit(n);
        true
    }
    /// An exception for the slow path, with the frame that caused it.
    fn exception(&mut self, reason: Exception, flow: Option<FlowId>, frame: &[u8]);
    /// Flow `id` may send, but its TX scheduler is on lane `lane` (another
    /// engine instance): hand the activation over (the poll loop queues a
    /// kick for that lane). Only segments of one lane go out for a flow, so
    /// a flow's data is never reordered between lanes.
    fn forward(&mut self, lane: u16, id: FlowId);
}

/// Why an app command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppCmdError {
    #[error("unknown command kind {0}")]
    BadKind(u8),
    #[error("no such flow")]
    NoFlow,
    #[error("flow belongs to another app")]
    NotOwner,
    #[error("more bytes added than the TX ring has free")]
    TxOverflow,
    #[error("more bytes freed than the RX ring holds")]
    RxOverflow,
    #[error("data added after FIN")]
    AfterFin,
}

/// Fast-path counters (per core; the slow path sums them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_frames: u64,
    pub rx_payload_bytes: u64,
    pub tx_frames: u64,
    pub tx_payload_bytes: u64,
    pub acks_sent: u64,
    /// ACKs for in-order data held to ride on our next segment, and those
    /// of them sent alone because no segment came within the delay.
    pub acks_held: u64,
    pub acks_delayed: u64,
    /// Of those sent alone, the ones after which the peer sent more data
    /// before we answered: it waited for that ACK (a request written in
    /// two parts by a Nagle sender, whose second part waits for it), so a
    /// longer hold would only delay the exchange.
    pub acks_awaited: u64,
    /// Held-ACK entries that came due after a segment of ours had carried
    /// their ACK and a newer hold of the same flow had begun: skipped (the
    /// newer hold has its own entry and deadline).
    pub acks_superseded: u64,
    /// Segments an app command cut at once ([`FastPath::with_direct_tx`]).
    pub tx_direct: u64,
    /// Held ACKs such a segment carried whose entry was the newest in the
    /// held queue: taken back at once, so the flow is not locked again
    /// when the delay ends.
    pub acks_carried: u64,
    /// Segments whose ACK went out with others' at the end of their poll
    /// round (one ACK for the round's segments of a flow).
    pub acks_coalesced: u64,
    pub exceptions: u64,
    pub bad_checksum: u64,
    pub not_for_us: u64,
    pub dup_segments: u64,
    pub ooo_accepted: u64,
    pub ooo_dropped: u64,
    pub window_trimmed: u64,
    pub dupacks: u64,
    /// Fast recoveries entered (RFC 6675 with SACK, RFC 6582 without).
    pub fast_retransmits: u64,
    /// Of those, entered with SACK information in the scoreboard.
    pub sack_recoveries: u64,
    /// Recoveries after the slow path's retransmission timeout.
    pub rto_recoveries: u64,
    /// Retransmitted segments and their payload (recovery, probes).
    pub rexmit_segments: u64,
    pub rexmit_bytes: u64,
    /// Recovery rounds restarted because a retransmission was lost.
    pub rexmit_lost: u64,
    /// Tail-loss probes sent (RFC 8985 §7).
    pub tlp_probes: u64,
    /// SACK blocks ignored: reaching beyond SND.NXT or empty / below
    /// SND.UNA (D-SACK, RFC 2883).
    pub sack_invalid: u64,
    pub dsack_blocks: u64,
    /// Fast-recovery episodes whose retransmissions the peer all reported
    /// back as duplicates (D-SACK, RFC 2883; detection as RFC 3708): not
    /// reported to congestion control as a loss.
    pub spurious_recoveries: u64,
    /// Spurious recoveries that raised the flow's DupThresh (reordering
    /// seen, `TxCold::reo`).
    pub reordering_seen: u64,
    /// Retransmissions found lost by RACK's timer in recovery (a probe
    /// request while recovery runs, RFC 8985 §6.3); also in `rexmit_lost`.
    pub rack_timeouts: u64,
    /// SACKed ranges forgotten for lack of room in the scoreboard.
    pub sack_ranges_dropped: u64,
    /// Scoreboards discarded by a second timeout (receiver reneging).
    pub sack_reneged: u64,
    /// ACKs for data never sent (RFC 5961 §5.2): segment dropped.
    pub future_acks: u64,
    /// ACKs below SND.UNA - MAX.SND.WND (RFC 5961 §5.2): segment dropped.
    pub acks_too_old: u64,
    /// ACKs below SND.UNA but acceptable: ACK ignored, data taken.
    pub acks_old: u64,
    /// Challenge ACKs sent, and not sent for the rate limit (RFC 5961 §7).
    pub challenge_acks: u64,
    pub challenge_acks_limited: u64,
    pub app_cmd_invalid: u64,
    pub notify_backpressure: u64,
    pub tx_full: u64,
    pub mem_errors: u64,
    /// Segments that failed the sequence check of RFC 9293 §3.10.7.4
    /// (old duplicates included): dropped, answered with an ACK.
    pub seq_unacceptable: u64,
    /// Unacceptable zero-length segments left unanswered by the ACK rate
    /// limit (RFC 5961 §10).
    pub unacceptable_acks_limited: u64,
    /// Out-of-order segments that needed a new interval while all of the
    /// flow's intervals were in use (dropped; counted in `ooo_dropped` too).
    pub ooo_intervals_full: u64,
    /// ACKs sent with a D-SACK block (RFC 2883).
    pub dsack_sent: u64,
}

/// Per-core constants.
impl Stats {
    /// Adds another lane's counters (for totals over all lanes).
    pub fn add(&mut self, o: &Stats) {
        // Destructured without `..`: a new counter must be added here.
        let Stats {
            rx_frames,
            rx_payload_bytes,
            tx_frames,
            tx_payload_bytes,
            acks_sent,
            acks_held,
            acks_delayed,
            acks_awaited,
            acks_superseded,
            tx_direct,
            acks_carried,
            acks_coalesced,
            exceptions,
            bad_checksum,
            not_for_us,
            dup_segments,
            ooo_accepted,
            ooo_dropped,
            window_trimmed,
            dupacks,
            fast_retransmits,
            sack_recoveries,
            rto_recoveries,
            rexmit_segments,
            rexmit_bytes,
            rexmit_lost,
            tlp_probes,
            sack_invalid,
            dsack_blocks,
            spurious_recoveries,
            reordering_seen,
            rack_timeouts,
            sack_ranges_dropped,
            sack_reneged,
            future_acks,
            acks_too_old,
            acks_old,
            challenge_acks,
            challenge_acks_limited,
            app_cmd_invalid,
            notify_backpressure,
            tx_full,
            mem_errors,
            seq_unacceptable,
            unacceptable_acks_limited,
            ooo_intervals_full,
            dsack_sent,
        } = *o;
        self.rx_frames += rx_frames;
        self.rx_payload_bytes += rx_payload_bytes;
        self.tx_frames += tx_frames;
        self.tx_payload_bytes += tx_payload_bytes;
        self.acks_sent += acks_sent;
        self.acks_held += acks_held;
        self.acks_delayed += acks_delayed;
        self.acks_awaited += acks_awaited;
        self.acks_superseded += acks_superseded;
        self.tx_direct += tx_direct;
        self.acks_carried += acks_carried;
        self.acks_coalesced += acks_coalesced;
        self.exceptions += exceptions;
        self.bad_checksum += bad_checksum;
        self.not_for_us += not_for_us;
        self.dup_segments += dup_segments;
        self.ooo_accepted += ooo_accepted;
        self.ooo_dropped += ooo_dropped;
        self.window_trimmed += window_trimmed;
        self.dupacks += dupacks;
        self.fast_retransmits += fast_retransmits;
        self.sack_recoveries += sack_recoveries;
        self.rto_recoveries += rto_recoveries;
        self.rexmit_segments += rexmit_segments;
        self.rexmit_bytes += rexmit_bytes;
        self.rexmit_lost += rexmit_lost;
        self.tlp_probes += tlp_probes;
        self.sack_invalid += sack_invalid;
        self.dsack_blocks += dsack_blocks;
        self.spurious_recoveries += spurious_recoveries;
        self.reordering_seen += reordering_seen;
        self.rack_timeouts += rack_timeouts;
        self.sack_ranges_dropped += sack_ranges_dropped;
        self.sack_reneged += sack_reneged;
        self.future_acks += future_acks;
        self.acks_too_old += acks_too_old;
        self.acks_old += acks_old;
        self.challenge_acks += challenge_acks;
        self.challenge_acks_limited += challenge_acks_limited;
        self.app_cmd_invalid += app_cmd_invalid;
        self.notify_backpressure += notify_backpressure;
        self.tx_full += tx_full;
        self.mem_errors += mem_errors;
        self.seq_unacceptable += seq_unacceptable;
        self.unacceptable_acks_limited += unacceptable_acks_limited;
        self.ooo_intervals_full += ooo_intervals_full;
        self.dsack_sent += dsack_sent;
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub local_mac: [u8; 6],
    pub ttl: u8,
    /// Accept frames for any destination MAC (multicast, promiscuous tests).
    pub any_mac: bool,
    /// How long an ACK may be held for a segment of ours to carry it (0:
    /// until the end of the poll round). It covers later segments that
    /// only extend what was reported, up to `notify::ACK_COALESCE_MAX` plus
    /// one segments (then it goes at once); a segment that opens a hole or
    /// fills the last one, a duplicate, a CE mark, window-trimmed data, a
    /// FIN and out-of-order data without SACK are ACKed at once (see
    /// `FastPath::rx`).
    pub ack_delay_ns: u64,
}

/// Held ACKs queued per lane at most (beyond, ACKs go out at once).
const HELD_ACKS_MAX: usize = 1 << 16;

/// One fast-path core's state around the shared flow table.
pub struct FastPath {
    table: Arc<FlowTable>,
    cfg: Config,
    sched: TxScheduler,
    pending: Fifo<FlowId>,
    /// This round's notifications, built under the flow's lock by `rx`.
    notes: Notes,
    /// Flows whose ACK is held, with the time it must go out by (FIFO: the
    /// delay is the same for all). An entry whose flow sent a segment since
    /// (its `ACK_HELD` bit is clear) is skipped.
    held: TailFifo<(FlowId, u32, u64)>,
    /// How long an ACK is held now (`Config::ack_delay_ns` unless
    /// [`FastPath::set_ack_delay`] changed it).
    ack_delay_ns: u64,
    /// Flows owed an ACK at the end of this round (`notify::ACK_ROUND`),
    /// each at most once: room for every flow of the table.
    round: Fifo<FlowId>,
    /// The lane (NIC queue + TX scheduler) this instance serves; flows whose
    /// `group` differs are scheduled on their own lane.
    lane: u16,
    /// Challenge-ACK rate limit (RFC 5961 §7), per engine.
    challenge: ChallengeLimit,
    /// The NIC completes TCP checksums of the frames we build
    /// ([`FastPath::with_tx_csum_offload`]).
    tx_local: TmplLocal,
    /// App commands of flows in group `direct_lane` cut their flow's next
    /// segment at once when the flow need not wait its turn: `lane` when
    /// [`FastPath::with_direct_tx`] is on, else [`NO_DIRECT`] (no group
    /// has it), so that one compare tests both.
    direct_lane: u32,
    /// Flow candidates the last [`FastPath::prefetch`] found, in frame
    /// order: (frame address, flow id). `rx` of the frame at that address
    /// tries the candidate first (locked, 4-tuple compared) and skips the
    /// hash and the index probe; anything else does the full lookup.
    hints: [(usize, FlowId); PREFETCH_MAX],
    hint_n: u8,
    hint_next: u8,
    /// `cfg.local_mac` as [`mac_word`] packs it (one compare per frame).
    mac_word: u64,
    pub stats: Stats,
}

/// A MAC address in the low 48 bits of a word.
#[inline(always)]
fn mac_word(m: [u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

/// Frames one [`FastPath::prefetch`] call looks at.
const PREFETCH_MAX: usize = 64;
const _: () = assert!(PREFETCH_MAX.is_power_of_two());

/// Queues flow `id` on this lane's scheduler, or forwards the activation to
/// the flow's own lane.
#[inline]
fn activate<O: Output>(
    sched: &mut TxScheduler,
    lane: u16,
    group: u16,
    id: FlowId,
    now: u64,
    out: &mut O,
) {
    if group == lane {
        sched.activate(id, now);
    } else {
        out.forward(group, id);
    }
}

/// What receiving one segment asks of the caller. (`repr(C)`, in this
/// order: returned in one register, the fields the receive path tests
/// every time lie in its low 32 bits, where a test takes an immediate.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct RxResult {
    /// Send an ACK (data, duplicate, or out-of-window segment).
    ack: bool,
    /// The ACK may go out with the others of this round
    /// (`notify::ACK_ROUND`): the segment extended what the last ACK
    /// reported (in-order data with no hole, or the most recent
    /// out-of-order interval at its right edge with SACK), so an ACK that
    /// covers later segments tells the peer everything this one would.
    coalesce: bool,
    /// App-visible progress (data received or TX space freed, FIN).
    notify: bool,
    /// The flow may be able to send now.
    tx_ready: bool,
    fin_rx: bool,
    fin_acked: bool,
    /// The ACK should carry ECE.
    ece: bool,
    /// The ACK should report `RxCold::dsack` first (RFC 2883).
    dsack: bool,
}

/// Sends flow `f`'s ACK now: `flags` (ECE), a D-SACK block first when
/// `dsack`, the SACK blocks of the out-of-order data held. It says all an
/// owed (held or round) ACK would, so those bits are cleared. The flow's
/// parts (`FlowGuard::parts_tx`), not its guard: a guard whose address
/// went to this out-of-line call would live in memory on the receive path.
#[allow(clippy::too_many_arguments)]
#[inline]
fn ack_now<M: PayloadMem, O: Output>(
    cfg: &Config,
    local: TmplLocal,
    (fs, fc, ft): (&mut FlowState, &mut FlowCold, &mut frame::HdrTemplate),
    flags: u8,
    dsack: bool,
    now_ts: u32,
    mem: &M,
    out: &mut O,
    stats: &mut Stats,
) {
    let ft = template(cfg, local, fs, ft);
    send_ack(cfg, fs, ft, &fc.rx, flags, dsack, now_ts, mem, out, stats);
    fs.notify &= !(notify::ACK_OWED | notify::ACK_ALONE);
}

/// New data (and FIN) of `len` bytes sent with `flags`: SND.NXT moves.
#[inline(always)]
fn take_sent(f: &mut FlowState, len: u32, fin: bool, flags: u8) {
    // The segment carries the owed ACK, unless out-of-order data is held
    // (its SACK blocks go on a pure ACK, RFC 2018 §4: our data segments
    // carry none).
    if f.rx_ooo_len == 0 {
        f.notify &= !(notify::ACK_OWED | notify::ACK_ALONE);
    }
    f.tx_next_pos = ring_add(f.tx_next_pos, len, f.tx_len);
    f.tx_avail -= len;
    f.tx_sent += len + fin as u32;
    f.tx_next_seq = f.tx_next_seq.wrapping_add(len + fin as u32);
    if fin {
        f.st |= st::TX_FIN_SENT;
    }
    if flags & tcp::CWR != 0 {
        f.st &= !st::CWR_PENDING;
    }
}

/// Builds one segment of flow `f` (template `t`, no SACK blocks) into
/// the NIC batch: `Sent` with its payload length, `Full` when the batch
/// has no room, `MemError` when the payload could not be read (counted).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit<M: PayloadMem, O: Output>(
    out: &mut O,
    cfgc: &Config,
    f: &FlowState,
    t: &crate::wire::frame::HdrTemplate,
    seq: u32,
    flags: u8,
    now_ts: u32,
    (pos, len): (u32, u32),
    mem: &M,
    stats: &mut Stats,
) -> Cut {
    // Built in place (no closure: the NIC batch's slot is written here).
    let Some(b) = out.tx_buf() else {
        return Cut::Full;
    };
    let n = build_segment(b, cfgc, f, t, seq, flags, &[], now_ts, (pos, len), mem);
    out.tx_commit(n);
    if n == 0 {
        stats.mem_errors += 1;
        Cut::MemError
    } else {
        Cut::Sent(len)
    }
}

/// What the send loop's rare path did for one flow.
enum Rare {
    /// Sent a segment of this payload length.
    Sent(u32),
    /// Nothing to send now.
    Idle,
    /// The NIC batch is full.
    Full,
}

/// The send loop for a flow in loss recovery or a probe episode: what
/// `recovery::poll_cut` chooses (a retransmission or new data), built and
/// sent. Retransmissions go out not-ECT and without CWR (RFC 3168
/// §6.1.5, §6.1.2).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn tx_rare<M: PayloadMem, O: Output>(
    cfgc: &Config,
    local: TmplLocal,
    stats: &mut Stats,
    f: &mut crate::flowtable::FlowGuard<'_>,
    now_ts: u32,
    mem: &M,
    out: &mut O,
) -> Rare {
    let seg_max = payload_max(f);
    let (fs, fc, ft) = f.parts_tx();
    let ft = template(cfgc, local, fs, ft);
    let Some(cut) = recovery::poll_cut(fs, &mut fc.tx, seg_max, now_ts, stats) else {
        return Rare::Idle;
    };
    let mut flags = if cut.fin { tcp::FIN } else { 0 };
    if cut.psh {
        flags |= tcp::PSH;
    }
    if cut.len > 0 && !cut.rexmit && fs.st & st::CWR_PENDING != 0 {
        flags |= tcp::CWR;
    }
    let plain;
    let fb: &FlowState = if cut.rexmit && fs.cfg & cfg::ECN != 0 {
        plain = FlowState {
            cfg: fs.cfg & !cfg::ECN,
            ..*fs
        };
        &plain
    } else {
        fs
    };
    match emit(
        out,
        cfgc,
        fb,
        ft,
        cut.seq,
        flags,
        now_ts,
        (cut.pos, cut.len),
        mem,
        stats,
    ) {
        Cut::Full => return Rare::Full,
        Cut::MemError | Cut::Idle => return Rare::Idle,
        Cut::Sent(_) => {}
    }
    if !cut.rexmit {
        take_sent(fs, cut.len, cut.fin, flags);
    }
    recovery::sent(fs, &mut fc.tx, &cut, now_ts, stats);
    stats.tx_frames += 1;
    stats.tx_payload_bytes += cut.len as u64;
    Rare::Sent(cut.len)
}

/// What [`cut_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A segment with this many payload bytes.
    Sent(u32),
    /// Nothing to send (window, or no data).
    Idle,
    /// The NIC batch is full.
    Full,
    /// The payload could not be read (counted in `mem_errors`).
    MemError,
}

/// Cuts flow `f`'s next segment of new data (and FIN) in the common case
/// (not in recovery): up to the window and one MSS, PSH when it empties
/// the ring, CWR when pending (RFC 3168 §6.1.2). The send loop's common
/// case and an app command's direct send ([`FastPath::with_direct_tx`]);
/// the caller charges the scheduler.
#[inline(always)]
fn cut_new<M: PayloadMem, O: Output>(
    cfgc: &Config,
    local: TmplLocal,
    stats: &mut Stats,
    f: &mut crate::flowtable::FlowGuard<'_>,
    now_ts: u32,
    mem: &M,
    out: &mut O,
) -> Cut {
    let allowed = send_allowance(f);
    let seg_max = payload_max(f);
    let len = f.tx_avail.min(allowed).min(seg_max);
    let fin = fin_pending(f) && len == f.tx_avail;
    if len == 0 && !fin {
        return Cut::Idle;
    }
    let mut flags = if fin { tcp::FIN } else { 0 };
    if len > 0 && len == f.tx_avail {
        flags |= tcp::PSH;
    }
    if len > 0 && f.st & st::CWR_PENDING != 0 {
        flags |= tcp::CWR;
    }
    let (fs, _, ft) = f.parts_tx();
    let ft = template(cfgc, local, fs, ft);
    let (seq, pos) = (fs.tx_next_seq, fs.tx_next_pos);
    match emit(
        out,
        cfgc,
        fs,
        ft,
        seq,
        flags,
        now_ts,
        (pos, len),
        mem,
        stats,
    ) {
        // (The two counters apart: side by side LLVM adds them as one
        // vector, six instructions for two.)
        Cut::Sent(_) => stats.tx_frames += 1,
        Cut::Full => {
            stats.tx_full += 1;
            return Cut::Full;
        }
        e => return e,
    }
    take_sent(fs, len, fin, flags);
    stats.tx_payload_bytes += len as u64;
    Cut::Sent(len)
}

/// The flow key of a received Ethernet/IPv4 (no options)/TCP frame, read
/// at fixed offsets without parsing or checking it (for prefetching and
/// software steering; [`FastPath::rx`] does the real parse). `None` for
/// anything else.
#[inline]
pub fn frame_key(f: &[u8]) -> Option<FlowKey> {
    let b = f.first_chunk::<38>()?;
    if b[12..14] != [0x08, 0x00] || b[14] != 0x45 || b[23] != ipv4::PROTO_TCP {
        return None;
    }
    // Source and destination address in one load, the ports in another:
    // as big-endian words they are `FlowKey::words` already.
    let a = u64::from_be_bytes([b[26], b[27], b[28], b[29], b[30], b[31], b[32], b[33]]);
    let p = u32::from_be_bytes([b[34], b[35], b[36], b[37]]);
    Some(FlowKey {
        local_ip: a as u32,
        remote_ip: (a >> 32) as u32,
        local_port: p as u16,
        remote_port: (p >> 16) as u16,
    })
}

/// The third prefetch stage for one flow (`FastPath::prefetch`): the TX
/// ring line its next segment is cut from, and for a frame with payload
/// also the RX ring line that payload is written to. The TX line for data
/// too: in a request/response exchange the answer follows within the ACK
/// hold and reads that line (issue 15's `rpc` unit: without it the
/// response's payload read was the one miss of the unit that no stage
/// covered). For a flow that only receives the TX position does not move,
/// so its line stays cached and the hint costs an instruction.
#[inline(always)]
fn prefetch_rings<M: PayloadMem>(mem: &M, region: u16, rx: u32, tx: u32, data: bool) {
    mem.prefetch(region, tx);
    if data {
        mem.prefetch(region, rx);
    }
}

/// [`frame_key`], and whether the segment carries payload (by the IPv4
/// total length and the TCP data offset, unchecked: a prefetch hint).
#[inline]
fn frame_key_data(f: &[u8]) -> Option<(FlowKey, bool)> {
    let key = frame_key(f)?;
    let b = f.first_chunk::<{ 14 + 20 + 13 }>()?;
    let total = u16::from_be_bytes([b[16], b[17]]) as usize;
    let hdrs = 20 + (b[46] >> 4) as usize * 4;
    Some((key, total > hdrs))
}

/// Microsecond timestamp clock for TSval, from `now` in ns.
#[inline]
pub fn ts_now(now: u64) -> u32 {
    (now / 1000) as u32
}

/// The segment's timestamp option (TSval, TSecr) when the flow negotiated
/// timestamps (RFC 7323 §3.2: otherwise it is ignored), else `None`.
#[inline(always)]
pub(super) fn seg_timestamp(f: &FlowState, seg: &tcp::TcpSegment<'_>) -> Option<(u32, u32)> {
    if f.cfg & cfg::TS != 0 {
        seg.timestamp()
    } else {
        None
    }
}

/// Receive processing of one segment on an established flow (flags already
/// checked: ACK set, no SYN/RST/URG). `limit` rate-limits challenge ACKs.
#[allow(clippy::too_many_arguments)]
fn rx_segment<M: PayloadMem>(
    f: &mut FlowState,
    c: &mut FlowCold,
    seg: &tcp::TcpSegment<'_>,
    ce: bool,
    now_ts: u32,
    mem: &mut M,
    limit: &mut ChallengeLimit,
    stats: &mut Stats,
) -> RxResult {
    let mut r = RxResult::default();
    // RFC 9293 §3.10.7.4: the sequence number is checked before any other
    // field of the segment is used. One at RCV.NXT always passes: that is
    // the common case, and with a zero window the RFC's "special allowance"
    // for the ACK field of a segment that carries data (`rx_data` trims the
    // data to the window, the ACK is answered).
    if seg.seq() != f.rx_next_seq && !rx::seq_check(f, &mut c.rx, *seg, now_ts, stats, &mut r) {
        return r;
    }
    let ts = seg_timestamp(f, seg);
    if !ack::rx_ack(f, &mut c.tx, seg, ts, now_ts, limit, stats, &mut r) {
        return r;
    }
    if seg.payload().is_empty() && seg.flags() & tcp::FIN == 0 {
        // A pure ACK inside the window (`rx_data`'s first case, inline):
        // only one at RCV.NXT is in sequence; its TSval is the one to echo
        // (RFC 7323 §4.3).
        if seg.seq() == f.rx_next_seq {
            if let Some((val, _)) = ts {
                f.tx_next_ts = val;
            }
        }
        return r;
    }
    rx::rx_data(f, &mut c.rx, seg, ce, ts, mem, stats, &mut r);
    r
}

/// The notification the app gets for flow `id` in state `f`: absolute
/// sequence numbers, FIN flags, ring generation.
#[inline(always)]
fn flow_event(f: &FlowState, id: FlowId) -> AppEvent {
    AppEvent {
        kind: event::FLOW_UPDATE,
        flags: event_flags(f),
        gen: f.ring_gen,
        flow: id,
        opaque: f.opaque,
        rx_seq: f.rx_data_seq(),
        tx_acked_seq: f.tx_acked_seq(),
        ..Default::default()
    }
}

/// [`flow_event`]'s flags: the FINs received and acknowledged.
#[inline(always)]
fn event_flags(f: &FlowState) -> u8 {
    // The two state bits are the event's flags, shifted (asserted in `st`).
    (f.st >> st::EVENT_SHIFT) & (event::F_RX_FIN | event::F_TX_FIN_ACKED)
}

/// `FastPath::direct_lane` when app commands do not send at once (no flow
/// group is this large).
const NO_DIRECT: u32 = u32::MAX;

/// Notifications built in one poll round, at most [`NOTES_MAX`].
const NOTES_MAX: usize = 256;

/// One built notification: the event, its context queue, and the slot
/// generation of the flow it was built for.
#[derive(Debug, Clone, Copy, Default)]
struct Note {
    ev: AppEvent,
    ctx: u16,
    slot_gen: u16,
}

/// This round's notifications, one per flow, built by `rx` under the
/// flow's lock (which it holds anyway) so that
/// [`FastPath::flush_notifications`] need not lock the flow again. A flow
/// finds its entry by `FlowState::note`, checked against the entry's flow
/// id (an entry of an earlier round, or of another lane, does not name
/// it): a later segment of the round rewrites it with the newer state, so
/// the app still gets one notification per flow and round, with the
/// latest sequence numbers. A flow already in the lane's `pending` queue
/// (its PENDING bit) stays there; so does one that finds the table full.
struct Notes {
    /// Indexed by a `u8`: no bounds checks.
    buf: Box<[Note; NOTES_MAX]>,
    n: usize,
    /// `FlowTable::removals` before any of these notes was built (read
    /// when the table was last emptied).
    removals: u64,
}

impl Notes {
    fn new(removals: u64) -> Self {
        Notes {
            // The fields every event has (kind, padding, reserved) are
            // written here, once: `mark`, which alone writes entries,
            // writes the others.
            buf: Box::new(
                [Note {
                    ev: AppEvent {
                        kind: event::FLOW_UPDATE,
                        ..Default::default()
                    },
                    ..Default::default()
                }; NOTES_MAX],
            ),
            n: 0,
            removals,
        }
    }

    /// Flow `id` (state `f`, slot generation `slot_gen`, locked) made
    /// app-visible progress: its notification of this round is (re)built
    /// from its state now. (The state, not its guard: the compiler knows
    /// that the note's stores do not touch it, so it reads the guard's
    /// pointer once, not again after every store.)
    #[inline(always)]
    fn mark(&mut self, pending: &mut Fifo<FlowId>, f: &mut FlowState, id: FlowId, slot_gen: u16) {
        if f.notify & notify::PENDING != 0 {
            return;
        }
        let mut i = f.note;
        if i as usize >= self.n || self.buf[i as usize].ev.flow != id {
            if self.n == NOTES_MAX {
                // Table full: read from the flow when delivered, as before.
                if pending.push_back(id) {
                    f.notify |= notify::PENDING;
                }
                return;
            }
            i = self.n as u8;
            f.note = i;
            self.n += 1;
        }
        // [`flow_event`]'s fields but those `new` wrote, each stored as
        // soon as it is read (few values live at once in the receive
        // path's registers).
        let n = &mut self.buf[i as usize];
        n.ev.flags = event_flags(f);
        n.ev.gen = f.ring_gen;
        n.ev.flow = id;
        n.ev.opaque = f.opaque;
        n.ev.rx_seq = f.rx_data_seq();
        n.ev.tx_acked_seq = f.tx_acked_seq();
        n.ctx = f.context;
        n.slot_gen = slot_gen;
        debug_assert_eq!(n.ev, flow_event(f, id));
    }
}

const _: () = assert!(
    NOTES_MAX == u8::MAX as usize + 1,
    "indexed by FlowState::note, a u8"
);

impl FastPath {
    pub fn new(table: Arc<FlowTable>, cfg: Config) -> Self {
        let cap = table.capacity();
        let removals = table.removals();
        FastPath {
            table,
            cfg,
            sched: TxScheduler::new(cap),
            pending: Fifo::with_capacity(cap * 2),
            notes: Notes::new(removals),
            held: TailFifo::with_capacity(if cfg.ack_delay_ns > 0 {
                cap.min(HELD_ACKS_MAX)
            } else {
                0
            }),
            ack_delay_ns: cfg.ack_delay_ns,
            round: Fifo::with_capacity(cap),
            lane: 0,
            challenge: ChallengeLimit::new(),
            tx_local: TmplLocal::new(cfg.local_mac, cfg.ttl, false),
            direct_lane: NO_DIRECT,
            hints: [(0, 0); PREFETCH_MAX],
            hint_n: 0,
            hint_next: 0,
            mac_word: mac_word(cfg.local_mac),
            stats: Stats::default(),
        }
    }

    /// This instance serves lane `lane` (default 0): flows of other lanes
    /// are forwarded through [`Output::forward`] instead of scheduled here.
    pub fn with_lane(mut self, lane: u16) -> Self {
        self.lane = lane;
        if self.direct_lane != NO_DIRECT {
            self.direct_lane = lane as u32;
        }
        self
    }

    /// Frames this instance builds leave their TCP checksum to the NIC
    /// (default off): the field holds the pseudo header's sum, as Linux's
    /// `CHECKSUM_PARTIAL` and DPDK's `RTE_ETH_TX_OFFLOAD_TCP_CKSUM` expect
    /// (`tas_nic::Nic::tx_csum_offload` says whether the backend does).
    /// The IPv4 header checksum is always computed here (one add per
    /// segment from the template). Segments with SACK blocks are still
    /// summed in full (the NIC recomputes the same value).
    pub fn with_tx_csum_offload(mut self, on: bool) -> Self {
        self.tx_local = TmplLocal::new(self.cfg.local_mac, self.cfg.ttl, on);
        self
    }

    /// An app command that lets an idle flow send (new data, FIN) cuts
    /// the flow's next segment at once, under the lock the command holds,
    /// instead of queueing the flow for the next [`FastPath::poll_tx`]
    /// (default off). Only for a flow of this lane that is neither queued
    /// (it would jump the queue) nor paced nor in loss recovery, and only
    /// one segment: a flow with more to send is queued as before. The
    /// segment is the one `poll_tx` would have cut this round; it goes
    /// into the same NIC batch (a full batch: queued instead). Counted in
    /// `Stats::tx_direct`.
    pub fn with_direct_tx(mut self, on: bool) -> Self {
        self.direct_lane = if on { self.lane as u32 } else { NO_DIRECT };
        self
    }

    /// Whether frames are built for a NIC that completes TCP checksums.
    pub fn tx_csum_offload(&self) -> bool {
        self.tx_local.offload()
    }

    pub fn lane(&self) -> u16 {
        self.lane
    }

    pub fn table(&self) -> &Arc<FlowTable> {
        &self.table
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes how long an ACK may be held for a segment of ours to carry
    /// it (the poll loop lengthens it while the apps answer more slowly
    /// than the configured delay). Only where ACKs are held at all
    /// (`Config::ack_delay_ns` > 0 at construction): 0 is not taken.
    /// ACKs held already keep their deadline; the held queue stays in
    /// deadline order except right after a shortening, when an entry may
    /// wait behind an older one by at most the difference.
    pub fn set_ack_delay(&mut self, ns: u64) {
        if self.cfg.ack_delay_ns > 0 && ns > 0 {
            self.ack_delay_ns = ns;
        }
    }

    /// How long an ACK may be held now ([`FastPath::set_ack_delay`]; the
    /// configured `Config::ack_delay_ns` until changed).
    pub fn ack_delay(&self) -> u64 {
        self.ack_delay_ns
    }

    /// Starts loading the flow-table entries, flow state, header templates
    /// and ring lines that `frames` will need, so that a batch's cache
    /// misses overlap instead of following one another (TAS's batched
    /// prefetch). Call once per received batch, before `rx`. Three passes
    /// over up to 64 frames: hash the 4-tuple and prefetch the index entry
    /// (and the next index line for an entry in the upper half of its
    /// own); read the entry (following the probe chain to the end of the
    /// line after the entry's) and prefetch the flow's slot; then, per
    /// flow whose lock is free at that moment, prefetch the TX ring line
    /// the next segment comes from (a pure ACK may open the window; data
    /// is likely a request whose answer follows while its ACK is held)
    /// and, for data, the RX ring line its payload goes to, and then (lock
    /// free or not) the flow's header template. A table whose
    /// index is at most 64 KiB (`FlowTable::index_cached`, up to 4K flows)
    /// stays in the cache: there the three passes are one that reads each
    /// index entry at once (following its probe chain to the end, not only
    /// to the end of the next line), prefetches no slot or template, and prefetches
    /// the flow's ring line at once. Hints only:
    /// no flow is changed, and a wrong guess costs a wasted line. The flow
    /// found for each frame is remembered for `rx` of that frame (by its
    /// address), which then locks it and compares the 4-tuple instead of
    /// looking it up again; a frame that is not the one prefetched at that
    /// address, or not the next one, is looked up in full.
    pub fn prefetch<'a, M: PayloadMem>(&mut self, frames: impl Iterator<Item = &'a [u8]>, mem: &M) {
        let mut m = 0;
        if self.table.index_cached() {
            // A small table stays in the cache: read each index entry at
            // once, prefetch no slot or template, and the flow's ring line
            // at once too (the three passes in one).
            // (The table once: the flow locks' atomics would make the
            // compiler read it from `self` again for every frame.)
            let table = &*self.table;
            let hints = &mut self.hints;
            for f in frames.take(PREFETCH_MAX) {
                let Some((key, data)) = frame_key_data(f) else {
                    continue;
                };
                if let Some(id) = table.candidate_chain(key.hash()) {
                    // (m < PREFETCH_MAX: the mask only spares the bounds check.)
                    hints[m & (PREFETCH_MAX - 1)] = (f.as_ptr() as usize, id);
                    m += 1;
                    if let Some((region, rx, tx)) = table.peek_rings(id) {
                        prefetch_rings(mem, region, rx, tx, data);
                    }
                }
            }
            self.hint_n = m as u8;
            self.hint_next = 0;
            return;
        }
        // (hash, then flow id) << 1 | carries payload, and the frame's address
        let mut seen = [0u64; PREFETCH_MAX];
        let mut at = [0usize; PREFETCH_MAX];
        let mut n = 0;
        for f in frames.take(PREFETCH_MAX) {
            let Some((key, data)) = frame_key_data(f) else {
                continue;
            };
            let h = key.hash();
            self.table.prefetch_index(h);
            seen[n] = (h as u64) << 1 | data as u64;
            at[n] = f.as_ptr() as usize;
            n += 1;
        }
        for i in 0..n {
            let e = seen[i];
            if let Some(id) = self.table.prefetch_slot((e >> 1) as u32) {
                seen[m] = (id as u64) << 1 | (e & 1);
                self.hints[m & (PREFETCH_MAX - 1)] = (at[i], id);
                m += 1;
            }
        }
        self.hint_n = m as u8;
        self.hint_next = 0;
        // Not again for the flow the previous entry hinted, unless this
        // frame wants its RX line and that one did not: segments of one
        // flow follow one another in a batch (a request and the ACK of the
        // answer before it, a burst), the flow's positions have not moved
        // since, and a second locked read of the slot right after the
        // first made `pair` at 64K flows 19 % slower (docs/fastpath-bench.md,
        // session 33). (An entry is the flow id << 1 | carries payload.)
        let mut prev = u64::MAX;
        for &e in &seen[..m] {
            if e == prev || e | 1 == prev {
                continue;
            }
            prev = e;
            let id = (e >> 1) as u32;
            if let Some((region, rx, tx)) = self.table.peek_rings(id) {
                prefetch_rings(mem, region, rx, tx, e & 1 != 0);
            }
            self.table.prefetch_tmpl(id);
        }
    }

    /// The flow candidate [`FastPath::prefetch`] found for the frame at
    /// `p`, if that frame is the next one it found one for.
    #[inline(always)]
    fn take_hint(&mut self, p: *const u8) -> Option<FlowId> {
        let i = self.hint_next as usize;
        if i < self.hint_n as usize {
            // (hint_n ≤ PREFETCH_MAX: the mask only spares the bounds check.)
            let (at, id) = self.hints[i & (PREFETCH_MAX - 1)];
            if at == p as usize {
                self.hint_next += 1;
                return Some(id);
            }
        }
        None
    }

    /// Processes one received frame.
    pub fn rx<M: PayloadMem, O: Output>(&mut self, buf: &[u8], now: u64, mem: &mut M, out: &mut O) {
        self.rx_inline(buf, now, mem, out)
    }

    /// [`FastPath::rx`], always inlined: for the loop over a received
    /// batch, where a call per frame would cost its prologue, epilogue and
    /// the spills of its arguments every time (~20 instructions).
    #[inline(always)]
    pub fn rx_inline<M: PayloadMem, O: Output>(
        &mut self,
        buf: &[u8],
        now: u64,
        mem: &mut M,
        out: &mut O,
    ) {
        self.stats.rx_frames += 1;
        // The common shape with both checksums right in one pass; anything
        // else (IPv4 options, bad checksums, malformed or other frames)
        // through the generic parse, which tells what it is.
        let fr = match frame::parse_rx_verified(buf) {
            Some(fr) => {
                let d = fr.eth_dst_word();
                if d != self.mac_word && !self.for_us_other(d) {
                    self.stats.not_for_us += 1;
                    return;
                }
                fr
            }
            None => match self.parse_checked(buf, out) {
                Some(fr) => fr,
                None => return,
            },
        };
        let seg = &fr.tcp;
        let (src, dst) = fr.ip_addrs();
        let key = FlowKey {
            local_ip: dst,
            remote_ip: src,
            local_port: seg.dst_port(),
            remote_port: seg.src_port(),
        };
        let hint = self.take_hint(buf.as_ptr());
        let table = &*self.table;
        let Some(mut f) = (match hint.and_then(|id| table.lock_candidate(id, &key)) {
            Some(g) => Some(g),
            None => table.lookup(&key),
        }) else {
            return self.exception(out, Exception::NoFlow, None, buf);
        };
        let id = f.id();
        let flags = seg.flags();
        // One test for all four exceptions; which one, out of line.
        if f.cfg & cfg::SLOWPATH != 0
            || flags & (tcp::RST | tcp::SYN | tcp::URG | tcp::ACK) != tcp::ACK
        {
            let slow = f.cfg & cfg::SLOWPATH != 0;
            drop(f);
            return self.rx_exception(out, slow, flags, id, buf);
        }
        let now_ts = ts_now(now);
        let ce = fr.ecn() == ipv4::ECN_CE;
        let (fs, fc) = f.parts();
        let r = rx_segment(
            fs,
            fc,
            seg,
            ce,
            now_ts,
            mem,
            &mut self.challenge,
            &mut self.stats,
        );
        if r.ack {
            // More data after a held ACK went out alone, before any answer:
            // the peer waited for that ACK.
            if f.notify & notify::ACK_ALONE != 0 {
                f.notify &= !notify::ACK_ALONE;
                self.stats.acks_awaited += 1;
            }
            let owed = f.notify & (notify::ACK_HELD | notify::ACK_ROUND) != 0;
            let n = (f.notify & notify::ACK_COUNT) >> notify::ACK_COUNT_SHIFT;
            // A segment that only extended what the last ACK reported (a
            // next in-order one; with SACK, one that extends the most
            // recent out-of-order interval) joins the ACK owed, up to
            // ACK_COALESCE_MAX segments, or starts one that is held for
            // `ack_delay_ns` (the app's response, or the next segment, may
            // come first) — at most 8 segments or 40 µs per ACK, as Linux
            // ACKs a GRO batch or compresses SACKs while out-of-order data
            // is queued (RFC 5681 §4.2 asks for an ACK at least every
            // second full-sized segment and at once for out-of-order data,
            // SHOULDs; the sender's SACK-based loss detection counts SACKed
            // bytes, RFC 6675 §4, not duplicate ACKs). A segment that opens
            // or fills a hole, a duplicate, a CE mark, out-of-order data
            // without SACK (there every duplicate ACK counts) and a FIN are
            // ACKed at once. Without a delay the ACK waits for the end of
            // the poll round (`end_round`).
            if r.coalesce && owed && n < notify::ACK_COALESCE_MAX {
                f.notify = (f.notify & !notify::ACK_COUNT) | ((n + 1) << notify::ACK_COUNT_SHIFT);
                self.stats.acks_coalesced += 1;
            } else if r.coalesce
                && !owed
                && self.ack_delay_ns > 0
                && self
                    .held
                    .push_back((id, f.tx_next_seq, now + self.ack_delay_ns))
            {
                f.notify |= notify::ACK_HELD | 1 << notify::ACK_COUNT_SHIFT;
                self.stats.acks_held += 1;
            } else if r.coalesce && !owed && self.cfg.ack_delay_ns == 0 && self.round.push_back(id)
            {
                // (A flow is queued once a round: room by construction;
                // should the queue be full all the same, the ACK goes out
                // at once below.)
                f.notify |= notify::ACK_ROUND | 1 << notify::ACK_COUNT_SHIFT;
            } else {
                let flags = if r.ece { tcp::ECE } else { 0 };
                let local = self.tx_local;
                ack_now(
                    &self.cfg,
                    local,
                    f.parts_tx(),
                    flags,
                    r.dsack,
                    now_ts,
                    mem,
                    out,
                    &mut self.stats,
                );
            }
        }
        if r.notify {
            let slot_gen = f.generation();
            self.notes.mark(&mut self.pending, &mut f, id, slot_gen);
        }
        if r.tx_ready && may_activate(&f) {
            activate(&mut self.sched, self.lane, f.group, id, now, out);
        }
        drop(f);
        if r.fin_rx | r.fin_acked {
            if r.fin_rx {
                self.exception(out, Exception::FinReceived, Some(id), buf);
            }
            if r.fin_acked {
                self.exception(out, Exception::FinAcked, Some(id), buf);
            }
        }
    }

    #[inline(always)]
    fn for_us(&self, dst: [u8; 6]) -> bool {
        self.for_us_word(mac_word(dst))
    }

    /// [`FastPath::for_us`] of a destination packed by [`mac_word`].
    #[inline(always)]
    fn for_us_word(&self, d: u64) -> bool {
        d == self.mac_word || self.cfg.any_mac || d == mac_word(wire::eth::BROADCAST)
    }

    /// [`FastPath::for_us_word`] for a destination that is not our MAC
    /// (out of line: broadcast, or `any_mac`).
    #[cold]
    #[inline(never)]
    fn for_us_other(&self, d: u64) -> bool {
        self.for_us_word(d)
    }

    /// The generic parse of a received frame and its TCP checksum check;
    /// `None` when the frame was dealt with (exception, or not for us).
    #[cold]
    #[inline(never)]
    fn parse_checked<'a, O: Output>(
        &mut self,
        buf: &'a [u8],
        out: &mut O,
    ) -> Option<frame::RxFrame<'a>> {
        let fr = match frame::parse_tcp_frame(buf) {
            Ok(fr) => fr,
            Err(WireError::Unsupported) => {
                self.exception(out, Exception::NotTcp, None, buf);
                return None;
            }
            Err(e) => {
                self.exception(out, Exception::Malformed(e), None, buf);
                return None;
            }
        };
        if !self.for_us(fr.eth.dst()) {
            self.stats.not_for_us += 1;
            return None;
        }
        if !tcp::verify_checksum(fr.ip.src(), fr.ip.dst(), fr.ip.payload()) {
            self.stats.bad_checksum += 1;
            self.exception(out, Exception::BadChecksum, None, buf);
            return None;
        }
        frame::RxFrame::from_frame(buf, &fr)
    }

    /// The exception of a segment on flow `id` that the receive path does
    /// not take: the flow is the slow path's (`slow`), or its `flags` have
    /// RST, SYN or URG set or ACK clear — in that order of precedence.
    #[cold]
    #[inline(never)]
    fn rx_exception<O: Output>(
        &mut self,
        out: &mut O,
        slow: bool,
        flags: u8,
        id: FlowId,
        buf: &[u8],
    ) {
        let reason = if slow {
            Exception::SlowPathFlow
        } else if flags & tcp::RST != 0 {
            Exception::Rst
        } else if flags & tcp::SYN != 0 {
            Exception::Syn
        } else {
            Exception::UnusualFlags
        };
        self.exception(out, reason, Some(id), buf);
    }

    fn exception<O: Output>(
        &mut self,
        out: &mut O,
        reason: Exception,
        flow: Option<FlowId>,
        buf: &[u8],
    ) {
        self.stats.exceptions += 1;
        out.exception(reason, flow, buf);
    }

    /// Applies a command an app wrote into its context queue. `mem` is the
    /// payload region of the app whose queue it came from: a flow of another
    /// app is refused.
    pub fn app_cmd<M: PayloadMem, O: Output>(
        &mut self,
        app_mem: u16,
        c: &AppCmd,
        now: u64,
        mem: &M,
        out: &mut O,
    ) -> Result<(), AppCmdError> {
        let res = self.app_cmd_inner(app_mem, c, now, mem, out);
        if res.is_err() {
            self.stats.app_cmd_invalid += 1;
        }
        res
    }

    #[inline(always)]
    fn app_cmd_inner<M: PayloadMem, O: Output>(
        &mut self,
        app_mem: u16,
        c: &AppCmd,
        now: u64,
        mem: &M,
        out: &mut O,
    ) -> Result<(), AppCmdError> {
        if c.kind != tas_abi::cmd::FLOW_UPDATE {
            return Err(AppCmdError::BadKind(c.kind));
        }
        let table = &*self.table;
        let mut f = table.lock(c.flow).ok_or(AppCmdError::NoFlow)?;
        if f.mem != app_mem {
            return Err(AppCmdError::NotOwner);
        }
        let fin = c.flags & tas_abi::cmd::F_TX_FIN != 0;
        if c.tx_added > 0 && f.st & st::TX_FIN_REQ != 0 {
            return Err(AppCmdError::AfterFin);
        }
        let used = f.tx_avail as u64 + f.tx_data_in_flight() as u64;
        if c.tx_added as u64 + used > f.tx_len as u64 {
            return Err(AppCmdError::TxOverflow);
        }
        if c.rx_freed as u64 + f.rx_avail as u64 > f.rx_len as u64 {
            return Err(AppCmdError::RxOverflow);
        }
        let old_avail = f.rx_avail;
        f.tx_avail += c.tx_added;
        f.rx_avail += c.rx_freed;
        if fin {
            f.st |= st::TX_FIN_REQ;
        }
        // Window update when the peer may be stalled on our window.
        let mss2 = 2 * f.mss as u32;
        let half = f.rx_len / 2;
        if c.rx_freed > 0
            && ((old_avail < mss2 && f.rx_avail >= mss2)
                || (old_avail < half && f.rx_avail >= half))
        {
            let local = self.tx_local;
            ack_now(
                &self.cfg,
                local,
                f.parts_tx(),
                0,
                false,
                ts_now(now),
                mem,
                out,
                &mut self.stats,
            );
        }
        if can_send(&f) {
            if f.group as u32 == self.direct_lane
                && f.cfg & cfg::RATE == 0
                && !may_resend(&f)
                && self.sched.idle_unpaced(c.flow)
            {
                let local = self.tx_local;
                let held = f.notify & notify::ACK_HELD;
                match cut_new(
                    &self.cfg,
                    local,
                    &mut self.stats,
                    &mut f,
                    ts_now(now),
                    mem,
                    out,
                ) {
                    Cut::Sent(_) => {
                        self.stats.tx_direct += 1;
                        // The segment carried the held ACK: its entry, if
                        // the newest, goes now (an older one is skipped
                        // when due, as always).
                        if held & !f.notify != 0
                            && self.held.pop_back_if(|&(id, _, _)| id == c.flow)
                        {
                            self.stats.acks_carried += 1;
                        }
                        if !can_send(&f) {
                            return Ok(());
                        }
                    }
                    // As the send loop does: not queued again.
                    Cut::MemError => return Ok(()),
                    // Queued: the send loop tries again.
                    Cut::Idle | Cut::Full => {}
                }
            }
            activate(&mut self.sched, self.lane, f.group, c.flow, now, out);
        }
        Ok(())
    }

    /// Slow-path command: retransmission timeout. Everything unacknowledged
    /// and not SACKed is resent from SND.UNA, in order, then new data (RFC
    /// 6675 §5.1); SND.NXT stays where it is.
    pub fn retransmit<O: Output>(&mut self, id: FlowId, now: u64, out: &mut O) {
        let table = &*self.table;
        let Some(mut f) = table.lock(id) else { return };
        let (fs, fc) = f.parts();
        if recovery::on_rto(fs, &mut fc.tx, &mut self.stats) {
            activate(&mut self.sched, self.lane, f.group, id, now, out);
        }
    }

    /// Slow-path command: tail-loss probe (RFC 8985 §7). The next send
    /// opportunity sends one segment beyond the congestion window: new data
    /// if the peer's window allows, else the highest unacknowledged one. A
    /// no-op while nothing is in flight. While recovery runs, RACK's
    /// reordering timer instead (RFC 8985 §6.3): retransmissions not
    /// acknowledged a round trip and a quarter after they went are resent.
    pub fn probe<O: Output>(&mut self, id: FlowId, now: u64, out: &mut O) {
        let table = &*self.table;
        let Some(mut f) = table.lock(id) else { return };
        let (fs, fc) = f.parts();
        if recovery::on_probe(fs, &mut fc.tx, ts_now(now), &mut self.stats) {
            activate(&mut self.sched, self.lane, f.group, id, now, out);
        }
    }

    /// Slow-path command: the flow's rate, window or state changed; send if
    /// it now can.
    pub fn kick<O: Output>(&mut self, id: FlowId, now: u64, out: &mut O) {
        let table = &*self.table;
        let Some(f) = table.lock(id) else { return };
        if can_send(&f) || may_resend(&f) {
            activate(&mut self.sched, self.lane, f.group, id, now, out);
        }
    }

    /// Sends segments for up to `budget` ready flows (one segment each; a
    /// flow that can send more is queued again). Returns segments sent.
    pub fn poll_tx<M: PayloadMem, O: Output>(
        &mut self,
        now: u64,
        budget: usize,
        mem: &M,
        out: &mut O,
    ) -> usize {
        // Nothing queued (a lane whose responses went out with their app
        // commands): none of the loop's setup.
        if self.sched.queued() == 0 {
            return 0;
        }
        let table = &*self.table;
        let now_ts = ts_now(now);
        let mut sent = 0;
        for _ in 0..budget {
            let Some(id) = self.sched.next_ready(now) else {
                break;
            };
            let Some(mut f) = table.lock(id) else {
                continue;
            };
            if may_resend(&f) {
                match tx_rare(
                    &self.cfg,
                    self.tx_local,
                    &mut self.stats,
                    &mut f,
                    now_ts,
                    mem,
                    out,
                ) {
                    Rare::Sent(len) => {
                        sent += 1;
                        let rate = if f.cfg & cfg::RATE != 0 { f.tx_rate } else { 0 };
                        self.sched.charge(id, len.max(1), rate, now);
                        if can_send(&f) || may_resend(&f) {
                            self.sched.activate(id, now);
                        }
                    }
                    Rare::Idle => {}
                    Rare::Full => {
                        self.stats.tx_full += 1;
                        self.sched.activate(id, now);
                        break;
                    }
                }
                continue;
            }
            let len = match cut_new(
                &self.cfg,
                self.tx_local,
                &mut self.stats,
                &mut f,
                now_ts,
                mem,
                out,
            ) {
                Cut::Sent(len) => len,
                Cut::Idle | Cut::MemError => continue,
                Cut::Full => {
                    // NIC batch full: try again next round.
                    self.sched.activate(id, now);
                    break;
                }
            };
            sent += 1;
            let rate = if f.cfg & cfg::RATE != 0 { f.tx_rate } else { 0 };
            self.sched.charge(id, len.max(1), rate, now);
            if can_send(&f) {
                self.sched.activate(id, now);
            }
        }
        sent
    }

    /// Delivers pending notifications: `deliver(context, event)` returns false
    /// when that context's queue is full, and the flow stays pending (its
    /// sequence numbers are absolute, so nothing is lost by waiting).
    ///
    /// This round's notifications were built by `rx` under the flow's lock
    /// ([`Notes`]), one per flow with its latest state: they go out
    /// without locking the flow again (one whose slot was freed since is
    /// dropped, as its lock would tell). One that finds its queue full
    /// makes the flow pending (locked, rare): from then on it is built
    /// from the flow's state when delivered, as those in `pending` are.
    pub fn flush_notifications(
        &mut self,
        mut deliver: impl FnMut(u16, &AppEvent) -> bool,
    ) -> usize {
        let table = &*self.table;
        let mut n = 0;
        // The flows pending from earlier rounds first: a note that finds
        // its queue full below joins them, for the next call.
        for _ in 0..self.pending.len() {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            let Some(mut f) = table.lock(id) else {
                continue;
            };
            if f.notify & notify::PENDING == 0 {
                continue;
            }
            let ev = flow_event(&f, id);
            if deliver(f.context, &ev) {
                f.notify &= !notify::PENDING;
                n += 1;
            } else {
                self.stats.notify_backpressure += 1;
                // Room: this flow's entry was just taken out.
                let _ = self.pending.push_back(id);
            }
        }
        // No flow removed since before the round's notes were built (the
        // count read at the end of the last flush): every note's flow is
        // still the one it was built for, without a generation read each.
        let removed = table.removals() != self.notes.removals;
        for note in &self.notes.buf[..self.notes.n.min(NOTES_MAX)] {
            let id = note.ev.flow;
            if removed && table.generation(id) != note.slot_gen {
                continue;
            }
            if deliver(note.ctx, &note.ev) {
                n += 1;
                continue;
            }
            self.stats.notify_backpressure += 1;
            let Some(mut f) = table.lock(id) else {
                continue;
            };
            // Room: each flow is in `pending` at most once (its PENDING
            // bit), and it holds two entries per flow of the table.
            if f.notify & notify::PENDING == 0 && self.pending.push_back(id) {
                f.notify |= notify::PENDING;
            }
        }
        // Every entry is delivered or pending now; the flows' `note`
        // indices no longer name them.
        self.notes.n = 0;
        self.notes.removals = table.removals();
        n
    }

    /// Sends the ACKs owed at the end of this round (`notify::ACK_ROUND`):
    /// one per flow for all its segments received in the round. Part of
    /// [`FastPath::flush_acks`]; returns how many went out.
    pub fn end_round<M: PayloadMem, O: Output>(&mut self, now: u64, mem: &M, out: &mut O) -> usize {
        let mut n = 0;
        while let Some(id) = self.round.pop_front() {
            n += self.ack_owed(id, notify::ACK_ROUND, 0, now, mem, out) as usize;
        }
        n
    }

    /// Sends flow `id`'s ACK if it still owes one of kind `bit`
    /// (`notify::ACK_ROUND` or `ACK_HELD`: a segment sent since may have
    /// carried it); true when it went out. For `ACK_HELD`, `sent_seq` is
    /// the flow's `tx_next_seq` when the entry was queued.
    #[inline(always)]
    fn ack_owed<M: PayloadMem, O: Output>(
        &mut self,
        id: FlowId,
        bit: u8,
        sent_seq: u32,
        now: u64,
        mem: &M,
        out: &mut O,
    ) -> bool {
        let Some(mut f) = self.table.lock(id) else {
            return false;
        };
        if f.notify & bit == 0 {
            return false;
        }
        // An entry whose ACK a data segment of ours carried stays queued
        // (only the newest is taken back); if a newer hold of the flow has
        // begun since, `ACK_HELD` is that hold's and so is the entry behind
        // this one. New data sent since this entry was queued, with no
        // out-of-order data held, means exactly that: such a segment
        // clears `ACK_HELD`, and only a hold that begins later sets it
        // again (a segment that opens a hole is ACKed at once, which ends
        // this entry's hold too). Sending here would cut the newer hold
        // short: an answer that comes later than the oldest entry's
        // deadline would follow a lone ACK.
        if bit == notify::ACK_HELD && f.tx_next_seq != sent_seq && f.rx_ooo_len == 0 {
            self.stats.acks_superseded += 1;
            return false;
        }
        ack_now(
            &self.cfg,
            self.tx_local,
            f.parts_tx(),
            0,
            false,
            ts_now(now),
            mem,
            out,
            &mut self.stats,
        );
        // A held ACK that went out alone: does the peer's next data or
        // our answer follow (`notify::ACK_ALONE`)?
        if bit == notify::ACK_HELD {
            f.notify |= notify::ACK_ALONE;
        }
        true
    }

    /// Sends the round's ACKs ([`FastPath::end_round`]), then the held ACKs
    /// that are due at `now` (all of them with `all`), for flows that sent
    /// no segment since; returns how many went out. The poll loop calls it
    /// every round, after the send loop.
    pub fn flush_acks<M: PayloadMem, O: Output>(
        &mut self,
        now: u64,
        all: bool,
        mem: &M,
        out: &mut O,
    ) -> usize {
        // Nothing owed (every held ACK went out with a segment): none of
        // the setup.
        if self.round.len() == 0 && self.held.front().is_none() {
            return 0;
        }
        let mut n = self.end_round(now, mem, out);
        while let Some(&(id, sent_seq, due)) = self.held.front() {
            if due > now && !all {
                break;
            }
            self.held.pop_front();
            if self.ack_owed(id, notify::ACK_HELD, sent_seq, now, mem, out) {
                self.stats.acks_delayed += 1;
                n += 1;
            }
        }
        n
    }

    /// When the scheduler next has work or a held ACK is due (`Some(0)`:
    /// now), for the poll loop.
    pub fn poll_at(&self) -> Option<u64> {
        if self.round.len() > 0 {
            return Some(0);
        }
        match (self.sched.poll_at(), self.held_ack_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the oldest held ACK is due, if one is held (a part of
    /// [`FastPath::poll_at`]: the poll loop may treat it apart, see
    /// `tas_runtime`'s core sleep).
    pub fn held_ack_due(&self) -> Option<u64> {
        self.held.front().map(|&(_, _, due)| due)
    }

    /// Notifications waiting for delivery.
    pub fn pending_notifications(&self) -> usize {
        self.pending.len() + self.notes.n
    }
}

#[cfg(test)]
mod tests;
