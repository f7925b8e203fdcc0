//! The end of a connection: FINs seen in each direction, TIME_WAIT or a
//! lingering 4-tuple after a graceful close, the flow leaving the table
//! (with a placeholder holding its id until the app lets go), `RESET` and
//! `RELEASED` to the app, and tearing down everything of an app that is
//! gone or of the whole stack at shutdown.

use tas_abi::{ctl, CtlMsg, FlowInfo};
use tas_engine::flow::{cfg as fcfg, st, FlowKey, FlowState};
use tas_engine::flowtable::FlowId;

use super::{Conn, Phase};
use crate::stack::{AppId, Stack, StackIo, RESERVED_APP};

impl Stack {
    fn send_app(io: &mut impl StackIo, app: AppId, kind: u32, id: FlowId, c: &Conn, err: i32) {
        let m = CtlMsg {
            kind,
            err,
            flow: id,
            info: FlowInfo {
                flow: id,
                local_ip: c.key.local_ip,
                remote_ip: c.key.remote_ip,
                local_port: c.key.local_port,
                remote_port: c.key.remote_port,
                rx_base: c.rx.base,
                rx_len: c.rx.len,
                tx_base: c.tx.base,
                tx_len: c.tx.len,
                opaque: c.opaque,
                ..Default::default()
            },
            ..Default::default()
        };
        io.app_msg(app, &m);
    }

    /// The flow's TCP life is over: out of the table. If the app has closed
    /// it, it is released; otherwise the app gets `RESET(err)` (if any) and
    /// a placeholder keeps the id until the app closes it.
    pub(super) fn tcp_gone(&mut self, id: FlowId, err: Option<i32>, io: &mut impl StackIo) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if c.phase == Phase::Dead {
            return;
        }
        if c.app_closed {
            self.release(id, io);
            return;
        }
        self.table.remove(id);
        let placeholder = FlowState {
            local_port: (id >> 16) as u16,
            remote_port: id as u16,
            mem: RESERVED_APP,
            context: RESERVED_APP,
            cfg: fcfg::SLOWPATH,
            ..Default::default()
        };
        let held = match self.table.insert(placeholder) {
            Ok(got) if got == id => true,
            Ok(other) => {
                // Not our slot after all (cannot happen with a single
                // writer); give it back.
                self.table.remove(other);
                false
            }
            Err(_) => false,
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Dead;
        c.placeholder = held;
        if let Some(e) = err {
            Self::send_app(io, c.app, ctl::RESET, id, c, e);
        }
    }

    /// The app is done with the flow and TCP is done (or being torn down):
    /// remove it, free its rings, `RELEASED`.
    pub(super) fn release(&mut self, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if c.phase != Phase::Dead || c.placeholder {
            self.table.remove(id);
        }
        Self::free_rings(c.app, c.rx, c.tx, io);
        Self::send_app(io, c.app, ctl::RELEASED, id, &c, 0);
    }

    /// Both FINs are done and we closed second: no TIME_WAIT. Late
    /// duplicates for the 4-tuple (e.g. ACKs of retransmissions that
    /// crossed our last ACK) are dropped silently for a while instead of
    /// being answered with RST.
    fn finish_graceful(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        self.stats.closed_graceful += 1;
        self.lingering
            .insert(c.key, now.saturating_add(self.cfg.time_wait_ns));
        if c.app_closed {
            self.release(id, io);
        } else {
            c.phase = Phase::Done;
        }
    }

    pub(super) fn fin_received(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let st_now = self.table.lock(id).map(|g| g.st).unwrap_or(0);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase != Phase::Open || c.fin_rx {
            return;
        }
        c.fin_rx = true;
        if c.fin_acked {
            self.stats.closed_graceful += 1;
            self.enter_time_wait(now, id, io);
        } else if st_now & st::RX_FIN_FIRST == 0
            && st_now & (st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_FIN_ACKED) != 0
        {
            // Our FIN was sent before theirs arrived (the fast path records
            // which came first): simultaneous close, keep TIME_WAIT. An app
            // that closed after the peer's FIN is a passive close, even if
            // its FIN request is visible by now.
            c.active_close = true;
        }
    }

    pub(super) fn fin_acked(&mut self, now: u64, id: FlowId, io: &mut impl StackIo) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.phase != Phase::Open || c.fin_acked {
            return;
        }
        c.fin_acked = true;
        c.fin_acked_at = now;
        if !c.fin_rx {
            c.active_close = true;
        } else if c.active_close {
            self.stats.closed_graceful += 1;
            self.enter_time_wait(now, id, io);
        } else {
            self.finish_graceful(now, id, io);
        }
    }

    /// App `app` exited or crashed: RST its connections toward their peers,
    /// remove them, drop its listeners (resetting their half-open
    /// connections) and free its ring memory. No message goes to the app.
    pub fn app_gone(&mut self, now: u64, app: AppId, io: &mut impl StackIo) {
        // Shared flows and listeners lose this holder only (share.rs).
        self.shares_app_gone(app, io);
        self.teardown(now, Some(app), io);
    }

    /// The daemon is stopping: every live flow is reset toward its peer and
    /// removed, listeners and half-open connections dropped.
    pub fn shutdown(&mut self, now: u64, io: &mut impl StackIo) {
        self.teardown(now, None, io);
    }

    fn teardown(&mut self, now: u64, app: Option<AppId>, io: &mut impl StackIo) {
        let mine = |a: AppId| match app {
            None => true,
            Some(x) => x == a,
        };
        let lids: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(id, l)| mine(l.app) && !app.is_some_and(|a| self.listener_held_elsewhere(**id, a)))
            .map(|(id, _)| *id)
            .collect();
        for lid in lids {
            self.remove_listener(lid, io);
        }
        let keys: Vec<FlowKey> = self
            .connecting
            .iter()
            .filter(|(_, c)| mine(c.app))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(c) = self.connecting.remove(&k) {
                Self::free_rings(c.app, c.rx, c.tx, io);
            }
        }
        let mut ids: Vec<FlowId> = self
            .conns
            .iter()
            .filter(|(id, c)| mine(c.app) && !app.is_some_and(|a| self.kept_for_others(**id, a)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let Some(c) = self.conns.remove(&id) else {
                continue;
            };
            match c.phase {
                Phase::Open => {
                    if let Some(f) = self.snapshot(id, &c.key) {
                        self.stats.aborted += 1;
                        self.send_flow_rst(now, &f, io);
                    }
                    self.table.remove(id);
                }
                Phase::Done => {
                    self.table.remove(id);
                }
                Phase::Dead => {
                    if c.placeholder {
                        self.table.remove(id);
                    }
                }
            }
            Self::free_rings(c.app, c.rx, c.tx, io);
        }
    }
}
