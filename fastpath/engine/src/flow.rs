//! Per-flow fast-path state.
//!
//! [`FlowState`] is the ~120 bytes the fast path needs to handle the common
//! case of one established TCP connection (the paper's Table 3). It lives in a
//! [`FlowSlot`] together with the per-flow lock and a generation counter, and a
//! slot is exactly two cache lines.
//!
//! | line | bytes   | fields | written by |
//! |------|---------|--------|-----------|
//! | 0    | 0..64   | `opaque`, 4-tuple, `remote_mac`, `context`, `mem`, `group`, `cfg`, `mss`, window shifts, `ring_gen`, RX/TX ring base and length, `tx_rate`, `tx_cwnd`; `note` | slow path (install, congestion control); fast path only reads, except `note` (the byte that was padding) |
//! | 1    | 64..124 | `rx_avail`, `rx_next_pos`, `rx_next_seq`, `rx_remote_avail`, `rx_ooo_start`, `rx_ooo_len`, `tx_avail`, `tx_sent`, `tx_next_pos`, `tx_next_seq`, `tx_next_ts`, `rtt_est`, `cnt_ackb`, `cnt_ecnb`, `dupack_cnt`, `cnt_frexmits`, `st`, `notify` | the owning fast-path core; the slow path reads the feedback counters and resets them, under the flow lock |
//! | 1    | 124..128| `lock`, `gen` (in [`FlowSlot`]) | atomics |
//!
//! All access to a `FlowState` goes through the flow lock (see
//! [`crate::flowtable::FlowGuard`]); the slow path is the only writer of
//! line 0 but for `note` (a notification's place in the lane's table, see
//! the engine's `Notes`), the owning core the only writer of line 1.
//!
//! What only rare paths need (out-of-order intervals beyond the lowest, SACK
//! and D-SACK blocks to report, the SACK scoreboard and loss-recovery state,
//! the RFC 5961 bounds) lives in a [`FlowCold`] record at the same index in
//! a separate array of the flow table, under the same lock: the in-order
//! common case never loads its cache lines (the send side's part is written
//! there only when the peer's window grows, to keep MAX.SND.WND). The
//! [`st::TX_RECOVERY`] and [`st::TX_PROBE`] bits tell the common case when
//! to leave for the rare paths.
//!
//! | cold line | bytes | fields |
//! |------|---------|--------|
//! | 0 | 0..64 | [`RxCold`]: `ooo_n`, `oow_acked`, `oow_ack_ts`, `dsack`, `ooo[0..6]` |
//! | 1 | 64..128 | `RxCold::ooo[6..14]` |
//! | 2 | 128..192 | `RxCold::ooo[14..16]`; [`TxCold`]: `max_snd_wnd`, `sacked[0..5]` |
//! | 3 | 192..256 | `TxCold`: `sacked[5..8]`, `sacked_n`, `flags`, `undo_retrans`, `recover`, `high_rxt`, `lost_floor`, `rxt_nxt`, `tlp_end`, `rxt_ts`, `undo_marker`, `reo` (to 245), padding |
//!
//! The receive side touches lines 0–2 for an out-of-order segment or an
//! ACK carrying SACK blocks it reports (line 0 alone while at most six
//! intervals are held); the send side lines 2–3 only in recovery, for a
//! probe, or when the peer's window grows.
//!
//! Every segment a flow sends is built from its header template
//! (`wire::frame::HdrTemplate`: Ethernet, IPv4 and the ports prebuilt, with
//! the checksums' constant partial sums), one more cache line per flow in
//! an array of the flow table's own, not part of `FlowState`.

/// Configuration flags (`FlowState::cfg`), written by the slow path.
pub mod cfg {
    /// TCP timestamps were negotiated: every segment we send carries TSopt.
    pub const TS: u16 = 1 << 0;
    /// SACK-permitted was negotiated: pure ACKs carry SACK blocks for the
    /// out-of-order intervals held and D-SACK blocks for duplicates.
    pub const SACK: u16 = 1 << 1;
    /// ECN was negotiated: data goes out ECT(0), CE is echoed with ECE.
    pub const ECN: u16 = 1 << 2;
    /// `tx_rate` is enforced (rate bucket). Without it only the window applies.
    pub const RATE: u16 = 1 << 3;
    /// Every segment of this flow is an exception (slow path handles it).
    pub const SLOWPATH: u16 = 1 << 4;
}

/// `FlowState::notify` flags (written under the flow's lock by whichever
/// lane holds it).
pub mod notify {
    /// A notification for the app is queued in a lane's pending list, to
    /// be built from the flow's state when it is delivered (a delivery
    /// that found the app's queue full, or a round with more notifying
    /// flows than the lane's table of built ones holds; see the engine's
    /// `Notes`).
    pub const PENDING: u8 = 1 << 0;
    /// An ACK is held (in a lane's held-ACK queue) to ride on the next
    /// segment we send, for received segments that only extended what the
    /// last ACK reported (in-order data without holes, or with SACK the
    /// most recent out-of-order interval); a segment of the flow that goes
    /// out carries it and clears this, unless out-of-order data is held
    /// (its SACK blocks need a pure ACK).
    pub const ACK_HELD: u8 = 1 << 1;
    /// An ACK is owed at the end of this poll round (the lane's round
    /// queue; with no ACK delay configured, where `ACK_HELD` would be).
    pub const ACK_ROUND: u8 = 1 << 2;
    /// How many received segments the owed ACK (`ACK_HELD` or `ACK_ROUND`)
    /// covers, 1..=[`ACK_COALESCE_MAX`], in these three bits.
    pub const ACK_COUNT: u8 = 0b111 << ACK_COUNT_SHIFT;
    pub const ACK_COUNT_SHIFT: u8 = 3;
    /// Segments one owed ACK covers at most; the next is ACKed at once.
    pub const ACK_COALESCE_MAX: u8 = 7;
    /// Everything about an owed ACK: cleared when an ACK (or a segment
    /// carrying it) goes out.
    pub const ACK_OWED: u8 = ACK_HELD | ACK_ROUND | ACK_COUNT;
    /// The last ACK held for the flow went out alone when its time was up,
    /// and neither a segment of ours nor another ACK has gone out since:
    /// data from the peer now means it waited for that ACK
    /// (`Stats::acks_awaited`).
    pub const ACK_ALONE: u8 = 1 << 6;
}

/// Fast-path state flags (`FlowState::st`), written by the owning core.
pub mod st {
    /// The app asked to close its send side: FIN follows the last byte.
    pub const TX_FIN_REQ: u8 = 1 << 0;
    /// Our FIN is in flight (counted in `tx_sent` as one sequence number).
    pub const TX_FIN_SENT: u8 = 1 << 1;
    /// The peer's FIN arrived in order (counted in `rx_next_seq`).
    /// (`RX_FIN` and `TX_FIN_ACKED` are the app event's `F_RX_FIN` and
    /// `F_TX_FIN_ACKED` shifted by [`EVENT_SHIFT`]: a notification's flags
    /// are one shift and mask of the state.)
    pub const RX_FIN: u8 = 1 << 2;
    /// Our FIN was acknowledged.
    pub const TX_FIN_ACKED: u8 = 1 << 3;
    /// An ACK carried ECE: the next data segment carries CWR (RFC 3168
    /// §6.1.2), so a classic-ECN receiver stops echoing.
    pub const CWR_PENDING: u8 = 1 << 4;
    /// The peer's FIN arrived before ours was sent (a passive close: no
    /// TIME_WAIT on our side), recorded when the FIN is processed so the
    /// slow path need not guess from later state.
    pub const RX_FIN_FIRST: u8 = 1 << 5;
    /// Loss recovery is running: fast recovery with SACK (RFC 6675 §5) or
    /// without (RFC 6582), or retransmission after a timeout (RFC 6675
    /// §5.1). Its state is in [`TxCold`](super::TxCold); ACK processing and
    /// the send loop leave their common case while it is set.
    pub const TX_RECOVERY: u8 = 1 << 6;
    /// A tail-loss probe episode (RFC 8985 §7): the slow path asked for a
    /// probe, or one is out and SND.UNA has not reached `TxCold::tlp_end`.
    /// Like [`TX_RECOVERY`], sends and ACKs go through the rare paths.
    pub const TX_PROBE: u8 = 1 << 7;

    /// Where the app event's FIN flags sit in the state (see [`RX_FIN`]).
    pub const EVENT_SHIFT: u32 = 2;
    const _: () = assert!(
        RX_FIN >> EVENT_SHIFT == tas_abi::event::F_RX_FIN
            && TX_FIN_ACKED >> EVENT_SHIFT == tas_abi::event::F_TX_FIN_ACKED
    );
}

/// Per-flow fast-path state; see the module doc for the cache-line layout.
/// `packed(4)` only lowers the 8-byte `opaque` to 4-byte alignment, so the
/// struct is 124 bytes and the slot's lock and generation fit in line 1.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowState {
    // ---- cache line 0: slow path writes, fast path reads ----
    /// The app's id for this flow, relayed in every notification.
    pub opaque: u64,
    /// Our IPv4 address (host order).
    pub local_ip: u32,
    /// The peer's IPv4 address (host order).
    pub remote_ip: u32,
    pub local_port: u16,
    pub remote_port: u16,
    /// Next-hop MAC for this flow's frames.
    pub remote_mac: [u8; 6],
    /// App context queue that receives this flow's notifications.
    pub context: u16,
    /// Payload memory region (one per attached app) holding the rings.
    pub mem: u16,
    /// Flow group (steering to a fast-path core).
    pub group: u16,
    /// [`cfg`] flags.
    pub cfg: u16,
    /// Largest TCP payload per segment toward the peer (options excluded).
    pub mss: u16,
    /// Shift applied to windows the peer announces.
    pub snd_wscale: u8,
    /// Shift applied to windows we announce.
    pub rcv_wscale: u8,
    /// RX ring generation (slow path: one more per switch to a larger
    /// ring), relayed in every notification (`AppEvent::gen`).
    pub ring_gen: u8,
    /// Where this flow's notification of the current poll round is in its
    /// lane's table of them (the engine's `Notes`): meaningful only while
    /// that entry names this flow, which the engine checks. Fast path
    /// only; any value is safe.
    pub note: u8,
    /// RX ring: offset and length inside region `mem`.
    pub rx_base: u32,
    pub rx_len: u32,
    /// TX ring: offset and length inside region `mem`.
    pub tx_base: u32,
    pub tx_len: u32,
    /// Rate limit in kbit/s (used when `cfg::RATE`); 0 means unlimited.
    pub tx_rate: u32,
    /// Congestion window in bytes; 0 means no window limit beyond the peer's.
    pub tx_cwnd: u32,

    // ---- cache line 1: owning fast-path core writes ----
    /// Free bytes in the RX ring starting at `rx_next_pos`.
    pub rx_avail: u32,
    /// Ring offset where the next in-order byte goes.
    pub rx_next_pos: u32,
    /// Next expected sequence number (RCV.NXT).
    pub rx_next_seq: u32,
    /// Peer's receive window in bytes (already scaled).
    pub rx_remote_avail: u32,
    /// The out-of-order interval closest to RCV.NXT (the lowest of those in
    /// [`RxCold::ooo`]): start sequence and length; length 0 when none is
    /// held. The in-order path looks at the cold record only when it
    /// reaches this one.
    pub rx_ooo_start: u32,
    pub rx_ooo_len: u32,
    /// Bytes in the TX ring that were not sent yet.
    pub tx_avail: u32,
    /// Sequence space in flight, not yet acknowledged (FIN counts 1).
    pub tx_sent: u32,
    /// Ring offset of the next byte to send.
    pub tx_next_pos: u32,
    /// SND.NXT.
    pub tx_next_seq: u32,
    /// Peer timestamp to echo (TS.Recent).
    pub tx_next_ts: u32,
    /// Smoothed RTT in microseconds (EWMA 7/8), 0 until sampled.
    pub rtt_est: u32,
    /// Feedback for the slow path: bytes acknowledged / acknowledged with ECE.
    pub cnt_ackb: u32,
    pub cnt_ecnb: u32,
    pub dupack_cnt: u8,
    /// Fast-recovery episodes that ended (or were found lossy) since the
    /// slow path last read the counters, less those D-SACK proved spurious
    /// (`engine/recovery.rs`): a D-SACK arriving just after an episode
    /// ended may decrement it again before the slow path reads it.
    pub cnt_frexmits: u8,
    /// [`st`] flags.
    pub st: u8,
    /// [`notify`] flags: a notification is pending, an ACK is held.
    pub notify: u8,
}

impl FlowState {
    /// Bytes of TCP options on every segment of this flow.
    #[inline]
    pub fn opt_len(&self) -> u32 {
        if self.cfg & cfg::TS != 0 {
            12
        } else {
            0
        }
    }
    /// First unacknowledged sequence number (SND.UNA).
    #[inline]
    pub fn snd_una(&self) -> u32 {
        self.tx_next_seq.wrapping_sub(self.tx_sent)
    }
    /// Payload bytes in flight (`tx_sent` without a FIN's sequence number).
    #[inline]
    pub fn tx_data_in_flight(&self) -> u32 {
        let fin = (self.st & (st::TX_FIN_SENT | st::TX_FIN_ACKED) == st::TX_FIN_SENT) as u32;
        self.tx_sent - fin
    }
    /// Sequence number up to which in-order payload has been received,
    /// excluding the peer's FIN.
    #[inline]
    pub fn rx_data_seq(&self) -> u32 {
        self.rx_next_seq
            .wrapping_sub((self.st & st::RX_FIN != 0) as u32)
    }
    /// Acknowledged payload, excluding our FIN.
    #[inline]
    pub fn tx_acked_seq(&self) -> u32 {
        let una = self.snd_una();
        una.wrapping_sub((self.st & st::TX_FIN_ACKED != 0) as u32)
    }
    pub fn key(&self) -> FlowKey {
        FlowKey {
            local_ip: self.local_ip,
            remote_ip: self.remote_ip,
            local_port: self.local_port,
            remote_port: self.remote_port,
        }
    }
}

/// A flow's rarely used state (see the module doc): the receive side's and
/// the send side's parts, each owned by its half of the engine
/// (`engine/rx.rs`, `engine/ack.rs` and `engine/tx.rs`). Reset to the
/// default when a flow is installed.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCold {
    pub rx: RxCold,
    pub tx: TxCold,
}

/// Out-of-order intervals a flow holds at most. RFC 2018 fixes no number;
/// one SACK option reports four (three beside a timestamp). A segment that
/// finds none free is dropped, which costs the sender a retransmission
/// (an interval already reported is never forgotten: a Linux sender waits
/// for its RTO on reneging, `engine/rx.rs::ooo_insert`), so each interval
/// held spares one. Sixteen: with eight, a Linux sender
/// through 5 % random loss (a 256 KiB window holds ~9 holes) had 3,594 of
/// its out-of-order segments dropped for want of an interval per 200 MB
/// (`fastpath.ooo_intervals_full`), each one more retransmission.
pub const RX_OOO_MAX: usize = 16;

/// Receive-side rare state (`engine/rx.rs`): out-of-order intervals beyond
/// what the hot [`FlowState`] mirrors, the D-SACK block to report, and the
/// rate limit for ACKs to unacceptable segments. 144 bytes, laid out so
/// the count, the D-SACK block and the first six intervals share the first
/// cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCold {
    /// Valid entries of `ooo`.
    pub ooo_n: u8,
    /// `oow_ack_ts` holds a time.
    pub oow_acked: bool,
    /// TSval clock (µs) of the last ACK sent for an unacceptable
    /// zero-length segment, when `oow_acked`.
    pub oow_ack_ts: u32,
    /// The duplicate range the next ACK reports first (RFC 2883), when the
    /// segment being processed sets `RxResult::dsack`.
    pub dsack: (u32, u32),
    /// Out-of-order data held in the RX ring (at its offset from
    /// RCV.NXT), as `[start, end)` in sequence space; the first `ooo_n` are
    /// valid. Most recently changed first, which is the order RFC 2018 §4
    /// reports them in. Disjoint and never adjacent (touching intervals are
    /// merged), all above RCV.NXT and below the window's right edge.
    /// `FlowState::rx_ooo_start/rx_ooo_len` mirror the lowest one, so the
    /// in-order path needs this record only when it reaches that one.
    pub ooo: [(u32, u32); RX_OOO_MAX],
}

impl RxCold {
    /// The out-of-order intervals held, most recently changed first.
    #[inline]
    pub fn intervals(&self) -> &[(u32, u32)] {
        &self.ooo[..self.ooo_n as usize]
    }
}

/// SACKed ranges the sender remembers. RFC 6675 §3 lets the scoreboard be
/// bounded: a range that does not fit is forgotten (the highest first), which
/// costs at most a needless retransmission of data the peer has, never a
/// lost byte (SACKed data stays in the TX ring until cumulatively ACKed).
pub const SACK_RANGES: usize = 8;

/// [`TxCold::flags`].
pub mod txf {
    /// The recovery in progress began with a retransmission timeout. A
    /// second timeout before it ends discards the scoreboard (the receiver
    /// may have reneged, RFC 2018 §8).
    pub const RTO: u8 = 1 << 0;
    /// The tail-loss probe of the current episode has been sent.
    pub const PROBE_SENT: u8 = 1 << 1;
    /// The peer has sent SACK blocks: what it does not SACK, it lacks.
    pub const SACK_SEEN: u8 = 1 << 2;
    /// A fast-recovery episode whose loss has not been proven (or refuted)
    /// yet: its retransmissions not reported back as duplicates are
    /// counted in `TxCold::undo_retrans` (RFC 3708 style detection).
    pub const UNDO: u8 = 1 << 3;
    /// The [`UNDO`] episode was reported to congestion control
    /// (`cnt_frexmits`) when it ended; D-SACKs arriving later may still
    /// take it back while the slow path has not read the counter.
    pub const UNDO_REPORTED: u8 = 1 << 4;
    /// A D-SACK reported one of the [`UNDO`] episode's retransmissions back
    /// as a duplicate: the episode is proven spurious, not merely one that
    /// resent nothing, when none is left (reordering seen).
    pub const UNDO_DSACKED: u8 = 1 << 5;
    /// A probe request came while recovery runs and RACK found no lost
    /// retransmission: if recovery has nothing to send, the first hole goes
    /// again (a probe that draws an ACK, instead of waiting for the RTO).
    pub const RXT_PROBE: u8 = 1 << 6;
}

/// Send-side rare state (`engine/ack.rs`, `engine/recovery.rs`): the SACK
/// scoreboard, loss-recovery and tail-loss-probe state, and the bound of
/// the RFC 5961 ACK check. 104 bytes; only read while a flow is in
/// recovery, gets SACK blocks or odd ACKs, and written on the common path
/// only when the peer's window grows (`max_snd_wnd`).
///
/// SND.MAX is not kept: the send side never moves SND.NXT back (every
/// retransmission is cut from the TX ring below SND.NXT), so SND.NXT is the
/// highest sequence number ever sent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCold {
    /// MAX.SND.WND (RFC 5961 §5.2): the largest window (scaled) the peer
    /// announced, including the handshake's (set at install).
    pub max_snd_wnd: u32,
    /// The scoreboard: SACKed ranges `[start, end)` strictly above SND.UNA
    /// and at most SND.NXT, disjoint, not touching, ascending; the first
    /// `sacked_n` are valid.
    pub sacked: [(u32, u32); SACK_RANGES],
    pub sacked_n: u8,
    /// [`txf`] flags.
    pub flags: u8,
    /// Retransmissions of the [`txf::UNDO`] episode not yet reported back
    /// as duplicates by D-SACK.
    pub undo_retrans: u16,
    /// RecoveryPoint (RFC 6675 §5 step 4.1; `recover` in RFC 6582 §3.2):
    /// SND.NXT when recovery began; it ends when SND.UNA reaches it.
    pub recover: u32,
    /// HighRxt (RFC 6675 §2): end of the highest retransmission of the
    /// current round; holes below it are not resent again in that round.
    pub high_rxt: u32,
    /// Unacknowledged data below this counts as lost whatever the
    /// scoreboard says: the first segment when fast recovery begins (RFC
    /// 6675 step 4.3), the first unacknowledged one after a partial ACK
    /// without SACK information (RFC 6582 §3.2 step 5), everything sent
    /// before a timeout (RFC 6675 §5.1).
    pub lost_floor: u32,
    /// SND.NXT when the last retransmission went out: SACKs for enough data
    /// above it show that a retransmission below it was lost as well.
    pub rxt_nxt: u32,
    /// TLP.end_seq (RFC 8985 §7.3): SND.NXT after the probe was sent.
    pub tlp_end: u32,
    /// When (TSval clock, µs) the last retransmission went out: a duplicate
    /// ACK more than a round trip later that still lacks SND.UNA means its
    /// retransmission (no later than that) was lost.
    pub rxt_ts: u32,
    /// SND.UNA when the [`txf::UNDO`] episode began: D-SACK blocks in
    /// `[undo_marker, recover)` report its retransmissions.
    pub undo_marker: u32,
    /// Reordering degree seen on the path, in segments (Linux's
    /// `tp->reordering`; 0 = none seen): DupThresh is the larger of 3 and
    /// this (RFC 6675 §2 allows a larger DupThresh, RFC 4653 and RFC 8985
    /// §6.2 adapt to reordering). Reset by a retransmission timeout.
    pub reo: u8,
}

impl TxCold {
    /// The send side's cold state of a flow being installed.
    pub fn new(f: &FlowState) -> TxCold {
        TxCold {
            max_snd_wnd: f.rx_remote_avail,
            ..Default::default()
        }
    }
}

/// The 4-tuple that identifies a flow, from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub local_ip: u32,
    pub remote_ip: u32,
    pub local_port: u16,
    pub remote_port: u16,
}

impl FlowKey {
    /// The key as two words (addresses; ports), for comparing: equal iff
    /// the keys are. (The fields of a received frame's key come from two
    /// byte-swapped loads that are these words already.)
    #[inline(always)]
    pub fn words(&self) -> (u64, u32) {
        (
            self.local_ip as u64 | (self.remote_ip as u64) << 32,
            self.local_port as u32 | (self.remote_port as u32) << 16,
        )
    }

    /// A well-mixed 32-bit hash (also selects the flow group).
    #[inline]
    pub fn hash(&self) -> u32 {
        // One 64×64→128-bit multiply of the addresses and the ports (each
        // mixed with a constant), folded: every input bit reaches the high
        // and the low half (the "mum" step of wyhash), ~6 instructions
        // instead of a three-round finalizer.
        // (The operands are `words`: a received frame's key is two loads
        // and two byte swaps.)
        let (a, b) = self.words();
        let b = b as u64;
        let m = (a ^ 0xa076_1d64_78bd_642f) as u128 * (b ^ 0xe703_7ed1_a0b4_28db) as u128;
        let h = (m as u64) ^ ((m >> 64) as u64);
        (h ^ (h >> 32)) as u32
    }
}

/// A flow's state with its lock and generation: exactly two cache lines.
#[repr(C, align(64))]
pub struct FlowSlot {
    pub(crate) state: std::cell::UnsafeCell<FlowState>,
    /// Per-flow spinlock: 0 free, 1 held.
    pub(crate) lock: std::sync::atomic::AtomicU16,
    /// Odd while the slot holds an installed flow; bumped on install/remove.
    pub(crate) gen: std::sync::atomic::AtomicU16,
}

const _: () = assert!(std::mem::size_of::<FlowState>() <= 124);
const _: () = assert!(std::mem::size_of::<RxCold>() == 144);
const _: () = assert!(std::mem::offset_of!(RxCold, ooo) == 16);
const _: () = assert!(
    RX_OOO_MAX <= 32,
    "RxCold intervals are tracked in a u32 mask"
);
const _: () = assert!(std::mem::size_of::<FlowSlot>() == 128);
const _: () = assert!(std::mem::offset_of!(FlowCold, tx) == 144);
const _: () = assert!(std::mem::size_of::<FlowCold>() == 256);
const _: () = assert!(std::mem::align_of::<FlowSlot>() == 64);
const _: () = assert!(std::mem::offset_of!(FlowState, rx_avail) == 64);
const _: () = assert!(std::mem::size_of::<TxCold>() == 104);

impl Default for FlowSlot {
    fn default() -> Self {
        FlowSlot {
            state: std::cell::UnsafeCell::new(FlowState::default()),
            lock: std::sync::atomic::AtomicU16::new(0),
            gen: std::sync::atomic::AtomicU16::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FlowKey;

    /// `words` tells keys apart exactly: every field's every bit changes
    /// them, and equal keys give equal words.
    #[test]
    fn words_see_every_bit_of_the_key() {
        let k = FlowKey {
            local_ip: 0xc612_0001,
            remote_ip: 0x0a00_0203,
            local_port: 6379,
            remote_port: 40000,
        };
        assert_eq!(k.words(), { k }.words());
        for bit in 0..32 {
            for f in 0..4 {
                let mut m = k;
                match f {
                    0 => m.local_ip ^= 1 << bit,
                    1 => m.remote_ip ^= 1 << bit,
                    2 if bit < 16 => m.local_port ^= 1 << bit,
                    3 if bit < 16 => m.remote_port ^= 1 << bit,
                    _ => continue,
                }
                assert_ne!(m.words(), k.words(), "field {f} bit {bit}");
            }
        }
    }

    /// The table index uses the hash's low bits and compares all 32: keys
    /// that differ only in the remote port (or only in the remote address)
    /// must spread over the low bits and almost never collide in all 32.
    #[test]
    fn hash_spreads_ports_and_addresses() {
        for vary_port in [true, false] {
            let n = 1usize << 16;
            let bins = n * 2;
            let mut count = vec![0u8; bins];
            let mut all = std::collections::HashSet::new();
            for i in 0..n {
                let k = FlowKey {
                    local_ip: 0xc612_0001,
                    remote_ip: if vary_port {
                        0xc612_0002
                    } else {
                        0x0a00_0000 + i as u32
                    },
                    local_port: 6379,
                    remote_port: if vary_port { i as u16 } else { 40000 },
                };
                let h = k.hash();
                all.insert(h);
                let c = &mut count[h as usize & (bins - 1)];
                *c = c.saturating_add(1);
            }
            // Random placement of n keys in 2n bins: ~61 % of bins empty,
            // max load around 8.
            let empty = count.iter().filter(|&&c| c == 0).count();
            assert!(
                (empty as f64 / bins as f64 - 0.6065).abs() < 0.02,
                "{empty}"
            );
            assert!(*count.iter().max().unwrap() <= 12);
            assert!(all.len() >= n - 4, "{}", all.len());
        }
    }
}
