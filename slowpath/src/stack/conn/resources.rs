//! What a connection is given and holds: its initial sequence number
//! (RFC 6528), its ephemeral port (RFC 6056), its ring memory in the app's
//! region, and its entry in the flow table with the slow path's [`Conn`]
//! record next to it ([`Stack::install`]); and a consistent copy of an
//! installed flow's state ([`Stack::snapshot`]).

use tas_engine::flow::{FlowKey, FlowState};
use tas_engine::flowtable::FlowId;

use super::timers::tick;
use super::{Conn, Phase, Ring};
use crate::stack::ccloop::ConnCc;
use crate::stack::{hash, AppId, Stack, StackIo, Timer};

impl Stack {
    pub(super) fn isn(&self, key: &FlowKey, now: u64) -> u32 {
        #[cfg(test)]
        if let Some(v) = self.isn_override {
            return v;
        }
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&key.local_ip.to_be_bytes());
        b[4..8].copy_from_slice(&key.remote_ip.to_be_bytes());
        b[8..10].copy_from_slice(&key.local_port.to_be_bytes());
        b[10..12].copy_from_slice(&key.remote_port.to_be_bytes());
        let h = hash::siphash24(self.isn_key.0, self.isn_key.1, &b) as u32;
        // RFC 6528: a 4 µs clock plus a keyed hash of the 4-tuple.
        ((now / 4000) as u32).wrapping_add(h)
    }

    pub(super) fn tuple_in_use(&self, key: &FlowKey) -> bool {
        self.table.lookup(key).is_some()
            || self.connecting.contains_key(key)
            || self.half_open.contains_key(key)
    }

    /// An ephemeral port giving a unique 4-tuple (RFC 6056, algorithm 3).
    pub(super) fn pick_port(&mut self, remote_ip: u32, remote_port: u16) -> Option<u16> {
        let (mut lo, mut hi) = self.cfg.ephemeral;
        if lo == 0 || hi < lo {
            (lo, hi) = (32768, 60999);
        }
        let n = (hi - lo) as u32 + 1;
        let mut b = [0u8; 10];
        b[0..4].copy_from_slice(&self.cfg.local_ip.to_be_bytes());
        b[4..8].copy_from_slice(&remote_ip.to_be_bytes());
        b[8..10].copy_from_slice(&remote_port.to_be_bytes());
        let off = hash::siphash24(self.port_key.0, self.port_key.1, &b) as u32;
        for i in 0..n {
            let p = lo + (off.wrapping_add(self.port_counter).wrapping_add(i) % n) as u16;
            let key = FlowKey {
                local_ip: self.cfg.local_ip,
                remote_ip,
                local_port: p,
                remote_port,
            };
            if !self.ports.contains_key(&p) && !self.tuple_in_use(&key) {
                self.port_counter = self.port_counter.wrapping_add(i + 1);
                return Some(p);
            }
        }
        None
    }

    /// The ring sizes a new connection of `app` gets for configured sizes
    /// `rx` and `tx`: those while the app's region keeps room beyond them
    /// for a pair of `ring_floor`-sized rings for every flow the table could
    /// still take (flows, opens in progress and handshakes counted; what
    /// the app's handshakes in progress were promised is not free), else
    /// the floor (never more than configured). So one app can always hold
    /// as many connections as the flow table, and the first thousands of a
    /// region get full rings (docs/design.md, "Ring memory").
    ///
    /// A pinned size (`pin`: the app set `SO_RCVBUF`/`SO_SNDBUF`) is never
    /// lowered, as Linux never gives a socket less than its (clamped)
    /// request: when the region cannot hold it the connection is refused
    /// as with no memory at all.
    pub(super) fn ring_sizes(
        &self,
        app: AppId,
        rx: u32,
        tx: u32,
        pin: (bool, bool),
        io: &impl StackIo,
    ) -> (u32, u32) {
        let floor = self.cfg.ring_floor;
        if floor == 0 {
            return (rx, tx);
        }
        if self.spare_bytes(app, io) >= u64::from(rx) + u64::from(tx) {
            (rx, tx)
        } else {
            (
                if pin.0 { rx } else { rx.min(floor) },
                if pin.1 { tx } else { tx.min(floor) },
            )
        }
    }

    pub(super) fn alloc_rings(
        &mut self,
        app: AppId,
        rx: u32,
        tx: u32,
        io: &mut impl StackIo,
    ) -> Option<(Ring, Ring)> {
        let Some(rb) = io.alloc(app, rx) else {
            self.stats.alloc_failures += 1;
            return None;
        };
        let Some(tb) = io.alloc(app, tx) else {
            io.free(app, rb, rx);
            self.stats.alloc_failures += 1;
            return None;
        };
        Some((Ring { base: rb, len: rx }, Ring { base: tb, len: tx }))
    }

    /// Whether a new connection of `app` with rings of `rx` and `tx` bytes
    /// would find room now: the flow table below its fill watermark
    /// (15/16, leaving the rest to connections whose handshake state we
    /// hold) and the app's memory able to hold both rings (tried: allocated
    /// and given back at once).
    pub(super) fn room_for(&mut self, app: AppId, rx: u32, tx: u32, io: &mut impl StackIo) -> bool {
        let cap = self.table.capacity();
        if !crate::stack::below_watermark(self.table.len(), cap) {
            return false;
        }
        let Some(rb) = io.alloc(app, rx) else {
            return false;
        };
        let tb = io.alloc(app, tx);
        io.free(app, rb, rx);
        if let Some(tb) = tb {
            io.free(app, tb, tx);
        }
        tb.is_some()
    }

    pub(super) fn free_rings(app: AppId, rx: Ring, tx: Ring, io: &mut impl StackIo) {
        io.free(app, rx.base, rx.len);
        io.free(app, tx.base, tx.len);
    }

    /// Frees a connection's rings, with any reserved for growth.
    pub(super) fn free_conn_rings(c: &Conn, io: &mut impl StackIo) {
        Self::free_rings(c.app, c.rx, c.tx, io);
        for r in c.grow.reserved() {
            io.free(c.app, r.base, r.len);
        }
    }

    /// Installs `f` and starts its bookkeeping.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install(
        &mut self,
        now: u64,
        f: FlowState,
        app: AppId,
        rx: Ring,
        tx: Ring,
        next_hop: Option<u32>,
        hs_rtt: u64,
        cc: ConnCc,
    ) -> Option<FlowId> {
        let id = match self.table.insert(f) {
            Ok(id) => id,
            Err(_) => {
                self.stats.table_full += 1;
                return None;
            }
        };
        let c = Conn {
            key: f.key(),
            app,
            opaque: f.opaque,
            rx,
            tx,
            next_hop,
            phase: Phase::Open,
            placeholder: false,
            app_closed: false,
            orphan: false,
            exit_close: false,
            closed_at: 0,
            fin_rx: false,
            fin_acked: false,
            active_close: false,
            time_wait: false,
            fin_acked_at: 0,
            last_una: f.snd_una(),
            busy: false,
            una_since: now,
            backoff: 0,
            retries: 0,
            last_nxt: f.tx_next_seq,
            quiet_since: now,
            probed: false,
            zw: false,
            zw_since: now,
            persist_backoff: 0,
            soft_err: 0,
            next_check: 0,
            hs_rtt,
            cc,
            holders: vec![app],
            grow: super::grow::Grow::fixed(rx.len, tx.len),
        };
        let base = self.rto_base(&c, f.rtt_est);
        let cc_due = c.cc.due;
        self.conns.insert(id, c);
        self.schedule_check(id, now + tick(base));
        self.schedule(cc_due, Timer::Cc(id));
        Some(id)
    }

    /// A copy of flow `id`'s state, if it is installed with `key`.
    pub(super) fn snapshot(&self, id: FlowId, key: &FlowKey) -> Option<FlowState> {
        let g = self.table.lock(id)?;
        if g.key() != *key {
            return None;
        }
        Some(*g)
    }
}
