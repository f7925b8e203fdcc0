//! Ring growth (docs/design.md, "Ring memory"): a connection whose app
//! asked for no particular size starts with `init_*_buf` rings that double
//! up to `default_*_buf` while the flow needs them, as Linux's buffer
//! autotuning does; a size the app asks for (`SO_RCVBUF`/`SO_SNDBUF`) is
//! pinned (Linux's `SOCK_RCVBUF_LOCK`/`SOCK_SNDBUF_LOCK`).
//!
//! * **RX** (slow path, from the congestion-control round): when the app
//!   freed more than half the ring per round trip since the last look
//!   (Linux's `tcp_rcv_space_adjust`: the peer is limited by our window),
//!   a ring twice as large is reserved and announced to the app (`RING`
//!   with a generation of its own: one past the last announced, so a ring
//!   given back never lends its number to the next). At each later round,
//!   under the flow lock, if the ring is empty (everything received was
//!   freed, so the app has copied all of it, and no out-of-order data is
//!   held) the flow switches: new base and length, position 0, the
//!   announced generation (`FlowState::ring_gen`, relayed in every event),
//!   and the old ring is freed. The fast path
//!   needs nothing: it writes at `rx_next_pos` of whatever ring is
//!   installed, under the same lock. The app applies the `RING` of an
//!   event's newer generation before the event (holding such an event until
//!   the `RING` is read, should it come first). After [`RX_SWITCH_TRIES`]
//!   rounds without an empty ring the reserved ring is given back.
//! * **TX** (the app asks, `TX_GROW`, when it finds its ring full): granted
//!   when the ring is what limits the sender (the peer's window and the
//!   congestion window exceed it, or half of it is in flight: Linux grows
//!   `sk_sndbuf` with the congestion window). The app then writes nothing
//!   more, waits until everything it wrote is acknowledged and sends
//!   `TX_SWITCH`; under the flow lock the switch is made only if nothing is
//!   queued or in flight, no FIN is requested and no recovery or probe
//!   state is left, else it is refused and the reserved ring given back.
//! * Never while several contexts hold the flow (after a fork: each would
//!   need the news), never past the maximum, never while the app closes;
//!   and only while the region keeps, beyond the new ring, the floor
//!   reserve [`Stack::ring_sizes`] keeps for new connections: under region
//!   pressure growth stops first. A live ring never shrinks.

use tas_abi::{ctl, CtlMsg};
use tas_engine::flow::st;
use tas_engine::flowtable::FlowGuard;
use tas_engine::flowtable::FlowId;
use tas_engine::seq;

use super::{Phase, Ring};
use crate::stack::{AppId, Stack, StackIo, MS};

/// Rounds a reserved RX ring waits for the ring to be empty before it is
/// given back (growth may be tried again later).
pub(super) const RX_SWITCH_TRIES: u32 = 64;

/// How often the congestion-control round comes for a flow that receives
/// and may still grow its RX ring (otherwise an idle sender's rounds are
/// `max_interval` apart).
pub(in crate::stack) const GROW_ROUND: u64 = MS;

/// The least round trip the RX rule assumes (ns). A receiver's RTT
/// estimate comes from the handshake alone (nothing it sends is timed),
/// which underestimates the round trip a window-limited sender sees (its
/// ACK clock includes our ACK batching and the app's reads): on veth the
/// handshake says ~50 µs while a 64 KiB window gives ~400 µs. Linux's
/// receiver estimate (`tcp_rcv_rtt_measure`: the time one window takes to
/// arrive) is coarse in the same direction. With 1 ms a flow grows its
/// ring while it receives more than half the ring per millisecond (16 MB/s
/// for 32 KiB, 128 MB/s to reach 256 KiB).
const RX_RTT_FLOOR_NS: u64 = MS;

/// A connection's ring growth state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Grow {
    /// The most each ring grows to (its length when pinned).
    pub(super) rx_max: u32,
    pub(super) tx_max: u32,
    /// A larger RX ring reserved and announced, not switched to yet, and
    /// the rounds it waited.
    rx_next: Option<Ring>,
    rx_tries: u32,
    /// The generation the last `RING` announced (None: none yet). A ring
    /// given back keeps its number: the next one is announced under a new
    /// one, so an app that has not read the newer `RING` yet when the
    /// switch's first event reaches it holds the event instead of taking
    /// the abandoned ring (whose memory may belong to another flow by
    /// then).
    rx_announced: Option<u8>,
    /// A larger TX ring reserved by `TX_GROW`.
    tx_next: Option<Ring>,
    /// The first byte the app had not freed at the last look, and when
    /// (0: not yet looked).
    mark_seq: u32,
    mark_at: u64,
}

impl Grow {
    /// No growth: rings of `rx` and `tx` bytes for good.
    pub(super) fn fixed(rx: u32, tx: u32) -> Self {
        Grow {
            rx_max: rx,
            tx_max: tx,
            ..Default::default()
        }
    }

    /// The reserved rings not switched to (for freeing at teardown).
    pub(super) fn reserved(&self) -> impl Iterator<Item = Ring> {
        self.rx_next.into_iter().chain(self.tx_next)
    }
}

/// The generation to announce a new RX ring under, for a flow at `cur`
/// whose last announcement was `last`: one past the last, so that a ring
/// given back is never named again while the app may still hold its
/// `RING`; kept within 64 of `cur` (the app compares generations as serial
/// numbers, RFC 1982 style over 8 bits), which a flow reaches only after 64
/// rings given back, each after [`RX_SWITCH_TRIES`] rounds: seconds, by
/// which the app has long read (and evicted) the old announcements.
pub(super) fn next_gen(cur: u8, last: Option<u8>) -> u8 {
    let gen = last.unwrap_or(cur).wrapping_add(1);
    if gen == cur || gen.wrapping_sub(cur) >= 64 {
        cur.wrapping_add(1)
    } else {
        gen
    }
}

/// Copies the out-of-order intervals flow `g` holds in its RX ring to ring
/// `next`, whose position 0 is RCV.NXT (the old ring's `rx_next_pos`);
/// true when there is nothing to copy or all of it was copied.
fn move_ooo(g: &FlowGuard<'_>, next: Ring, app: AppId, io: &mut impl StackIo) -> bool {
    let (old_base, old_len) = (g.rx_base, g.rx_len);
    for &(s, e) in g.cold().rx.intervals() {
        let off = seq::dist(g.rx_next_seq, s);
        let len = seq::dist(s, e);
        // Held data lies within the old window, so within the new ring.
        if u64::from(off) + u64::from(len) > u64::from(next.len.min(old_len)) {
            return false;
        }
        let src = (g.rx_next_pos + off) % old_len;
        let first = len.min(old_len - src);
        if !io.copy(app, old_base + src, next.base + off, first) {
            return false;
        }
        if first < len && !io.copy(app, old_base, next.base + off + first, len - first) {
            return false;
        }
    }
    true
}

/// A ring's (start, max) for a requested size `req` (0: none): a request is
/// pinned (start = max = the request, clamped); otherwise `init` growing
/// to `default`.
pub(super) fn ring_span(req: u32, default: u32, init: u32) -> (u32, u32) {
    let max = super::requests::buf_len(req, default);
    if req != 0 {
        (max, max)
    } else {
        (super::requests::buf_len(init, default).min(max), max)
    }
}

impl Stack {
    /// Bytes of `app`'s region that new rings may take beyond what
    /// handshakes in progress were promised and the floor reserve of
    /// [`Stack::ring_sizes`].
    pub(super) fn spare_bytes(&self, app: AppId, io: &impl StackIo) -> u64 {
        let floor = self.cfg.ring_floor;
        let taken = self.table.len() + self.connecting.len() + self.half_open.len();
        let left = self.table.capacity().saturating_sub(taken) as u64;
        let reserve = left * 2 * u64::from(floor);
        let promised = self.promised.get(&app).copied().unwrap_or(0);
        io.free_bytes(app)
            .saturating_sub(promised)
            .saturating_sub(reserve)
    }

    /// Sets the most flow `id`'s rings grow to (just installed).
    pub(super) fn set_ring_max(&mut self, id: FlowId, rx_max: u32, tx_max: u32) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.grow.rx_max = rx_max.max(c.rx.len);
            c.grow.tx_max = tx_max.max(c.tx.len);
        }
    }

    /// Reserves a ring of `len` bytes for growth if the region has room
    /// beyond the floor reserve.
    fn grow_alloc(&mut self, app: AppId, len: u32, io: &mut impl StackIo) -> Option<Ring> {
        if self.spare_bytes(app, io) < u64::from(len) {
            self.stats.ring_grow_no_room += 1;
            return None;
        }
        match io.alloc(app, len) {
            Some(base) => Some(Ring { base, len }),
            None => {
                self.stats.ring_grow_no_room += 1;
                None
            }
        }
    }

    /// One look at flow `id`'s RX ring (from its congestion-control round;
    /// `receiving`: data arrived since the last round): switches to the
    /// reserved ring if the ring is empty now, else may reserve and
    /// announce one. True while the ring may still grow (the caller then
    /// comes back within [`GROW_ROUND`] while data arrives). A flow that
    /// receives nothing and has no ring reserved costs one map lookup.
    pub(in crate::stack) fn rx_grow_round(
        &mut self,
        now: u64,
        id: FlowId,
        receiving: bool,
        io: &mut impl StackIo,
    ) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        let reserved = c.grow.rx_next;
        if reserved.is_none() && (c.rx.len >= c.grow.rx_max || !receiving) {
            return c.rx.len < c.grow.rx_max;
        }
        let stop = c.phase != Phase::Open || c.orphan || c.app_closed || c.holders.len() > 1;
        let (key, app, cur, announced) = (c.key, c.app, c.rx, c.grow.rx_announced);
        let Some(mut g) = self.table.lock(id) else {
            return false;
        };
        if g.key() != key {
            return false;
        }
        let fin = g.st & st::RX_FIN != 0;
        let gen = next_gen(g.ring_gen, announced);
        if let Some(next) = reserved {
            // Everything in order was read (so the app holds no position in
            // the old ring); out-of-order data held beyond RCV.NXT is
            // tasd's alone (the app never reads past RCV.NXT) and moves
            // with the switch, at the same distance from RCV.NXT. Under
            // loss an interval is nearly always held, and a ring that
            // switched only when empty did not grow at all then.
            let read_all = g.rx_avail == g.rx_len;
            if read_all && !stop && !fin && move_ooo(&g, next, app, io) {
                g.rx_base = next.base;
                g.rx_len = next.len;
                g.rx_next_pos = 0;
                g.rx_avail = next.len;
                // The generation its RING announced.
                g.ring_gen = announced.unwrap_or(gen);
                drop(g);
                // The app freed everything: nobody reads the old ring, and
                // the fast path writes only the installed one.
                io.free(app, cur.base, cur.len);
                self.stats.rx_rings_grown += 1;
                let Some(c) = self.conns.get_mut(&id) else {
                    return false;
                };
                c.rx = next;
                c.grow.rx_next = None;
                c.grow.rx_tries = 0;
                c.grow.mark_at = 0;
                return c.rx.len < c.grow.rx_max;
            }
            drop(g);
            let Some(c) = self.conns.get_mut(&id) else {
                return false;
            };
            c.grow.rx_tries += 1;
            if stop || fin || c.grow.rx_tries >= RX_SWITCH_TRIES {
                c.grow.rx_next = None;
                c.grow.rx_tries = 0;
                c.grow.mark_at = 0;
                io.free(app, next.base, next.len);
                self.stats.rx_grow_abandoned += 1;
                return !stop && !fin;
            }
            return true;
        }
        // What the app has freed so far: everything received in order but
        // what is still in the ring.
        let used = g.rx_len.saturating_sub(g.rx_avail);
        let freed = g.rx_data_seq().wrapping_sub(used);
        let rtt_ns = (u64::from(g.rtt_est) * 1000).max(RX_RTT_FLOOR_NS);
        drop(g);
        if stop || fin {
            return false;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        if c.grow.mark_at == 0 {
            c.grow.mark_seq = freed;
            c.grow.mark_at = now.max(1);
            return true;
        }
        let elapsed = now.saturating_sub(c.grow.mark_at);
        if elapsed < rtt_ns.max(GROW_ROUND) {
            return true;
        }
        let copied = u64::from(freed.wrapping_sub(c.grow.mark_seq));
        c.grow.mark_seq = freed;
        c.grow.mark_at = now.max(1);
        // Freed per round trip above half the ring: the ring limits.
        let per_rtt = copied.saturating_mul(rtt_ns) / elapsed.max(1);
        if per_rtt * 2 <= u64::from(cur.len) {
            return true;
        }
        let new = cur.len.saturating_mul(2).min(c.grow.rx_max);
        let Some(ring) = self.grow_alloc(app, new, io) else {
            return true;
        };
        let mut m = CtlMsg::new(ctl::RING);
        m.flow = id;
        m.arg = [u32::from(gen), ring.base, ring.len, 0, 0];
        io.app_msg(app, &m);
        if let Some(c) = self.conns.get_mut(&id) {
            c.grow.rx_next = Some(ring);
            c.grow.rx_tries = 0;
            c.grow.rx_announced = Some(gen);
        }
        true
    }

    /// `TX_GROW` from app `app` (see the module doc).
    pub(in crate::stack) fn app_tx_grow(
        &mut self,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let id = msg.flow;
        let Some(c) = self.conns.get(&id).filter(|c| c.app == app) else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        if c.phase != Phase::Open
            || c.app_closed
            || c.holders.len() > 1
            || c.tx.len >= c.grow.tx_max
        {
            return self.reply_err(io, app, msg, libc::ENOSPC);
        }
        let (key, cur, max, held) = (c.key, c.tx, c.grow.tx_max, c.grow.tx_next);
        let ring = match held {
            // Asked again: the same answer.
            Some(r) => r,
            None => {
                let Some(f) = self.snapshot(id, &key) else {
                    return self.reply_err(io, app, msg, libc::EBADF);
                };
                if f.st & (st::TX_FIN_REQ | st::TX_FIN_SENT) != 0 {
                    return self.reply_err(io, app, msg, libc::ENOSPC);
                }
                let cwnd = if f.tx_cwnd != 0 { f.tx_cwnd } else { u32::MAX };
                let limited =
                    f.rx_remote_avail.min(cwnd) > cur.len || f.tx_data_in_flight() * 2 >= cur.len;
                if !limited {
                    self.stats.tx_grow_refused += 1;
                    return self.reply_err(io, app, msg, libc::EAGAIN);
                }
                let new = cur.len.saturating_mul(2).min(max);
                let Some(r) = self.grow_alloc(app, new, io) else {
                    return self.reply_err(io, app, msg, libc::EAGAIN);
                };
                if let Some(c) = self.conns.get_mut(&id) {
                    c.grow.tx_next = Some(r);
                }
                r
            }
        };
        let mut m = CtlMsg::new(ctl::RESULT);
        m.req = msg.req;
        m.flow = id;
        m.arg[0] = ring.base;
        m.arg[1] = ring.len;
        io.app_msg(app, &m);
    }

    /// `TX_SWITCH` from app `app` (see the module doc).
    pub(in crate::stack) fn app_tx_switch(
        &mut self,
        app: AppId,
        msg: &CtlMsg,
        io: &mut impl StackIo,
    ) {
        let id = msg.flow;
        let Some(c) = self.conns.get_mut(&id).filter(|c| c.app == app) else {
            return self.reply_err(io, app, msg, libc::EBADF);
        };
        let Some(next) = c.grow.tx_next.take() else {
            return self.reply_err(io, app, msg, libc::EINVAL);
        };
        let ok_conn = c.phase == Phase::Open && !c.app_closed && c.holders.len() == 1;
        let (key, cur) = (c.key, c.tx);
        let mut switched = false;
        if ok_conn {
            if let Some(mut g) = self.table.lock(id) {
                let quiet = st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_RECOVERY | st::TX_PROBE;
                if g.key() == key && g.tx_avail == 0 && g.tx_sent == 0 && g.st & quiet == 0 {
                    g.tx_base = next.base;
                    g.tx_len = next.len;
                    g.tx_next_pos = 0;
                    switched = true;
                }
            }
        }
        if switched {
            io.free(app, cur.base, cur.len);
            if let Some(c) = self.conns.get_mut(&id) {
                c.tx = next;
            }
            self.stats.tx_rings_grown += 1;
            self.reply(io, app, msg, 0, 0);
        } else {
            io.free(app, next.base, next.len);
            self.stats.tx_grow_refused += 1;
            self.reply_err(io, app, msg, libc::EAGAIN);
        }
    }
}
