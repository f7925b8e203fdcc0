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
        Self::free_conn_rings(&c, io);
        if c.orphan {
            self.orphan_done(c.app);
        } else {
            Self::send_app(io, c.app, ctl::RELEASED, id, &c, 0);
        }
    }

    /// One orphan of `app` is gone.
    fn orphan_done(&mut self, app: AppId) {
        if let Some(n) = self.orphans.get_mut(&app) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.orphans.remove(&app);
            }
        }
    }

    /// Orphaned connections left of app `app` (gone): its region must stay
    /// mapped while this is not 0.
    pub fn orphans_of(&self, app: AppId) -> u32 {
        self.orphans.get(&app).copied().unwrap_or(0)
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

    /// App `app` exited or crashed: it stops holding the flows and
    /// listeners it shared with other processes (those live on with them);
    /// its other listeners and opens in progress go (half-open connections
    /// reset), and its other connections are closed as
    /// Linux closes an exiting process's sockets, living on as orphans
    /// until their data and FIN are done (see the module doc). Returns how
    /// many orphans it left: its region must stay mapped until
    /// [`Stack::orphans_of`] is 0. No message goes to the app.
    pub fn app_gone(&mut self, now: u64, app: AppId, io: &mut impl StackIo) -> u32 {
        // Shared flows and listeners lose this holder only (share.rs).
        self.shares_app_gone(now, app, io);
        self.drop_opens(Some(app), io);
        let mut ids: Vec<FlowId> = self
            .conns
            .iter()
            .filter(|(id, c)| c.app == app && !self.kept_for_others(**id, app))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut total: u32 = self.orphans.values().sum();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            match c.phase {
                Phase::Open if total >= self.cfg.max_orphans => {
                    self.stats.orphans_overflow += 1;
                    if let Some(c) = self.conns.remove(&id) {
                        self.abort_removed(now, id, c, io);
                    }
                }
                Phase::Open => {
                    total += 1;
                    self.make_orphan(now, id);
                }
                Phase::Done if c.time_wait => {
                    // Both FINs done, we closed first: the close moves it
                    // to TIME_WAIT as `CLOSE` would.
                    c.app_closed = true;
                    c.orphan = true;
                    *self.orphans.entry(app).or_default() += 1;
                    self.start_time_wait(now, id, io);
                }
                Phase::Done | Phase::Dead => {
                    if let Some(c) = self.conns.remove(&id) {
                        if c.phase == Phase::Done || c.placeholder {
                            self.table.remove(id);
                        }
                        Self::free_conn_rings(&c, io);
                    }
                }
            }
        }
        self.orphans_of(app)
    }

    /// Installed flow `id` of an app that is gone becomes an orphan.
    fn make_orphan(&mut self, now: u64, id: FlowId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.orphan = true;
        if !c.app_closed {
            c.app_closed = true;
            c.closed_at = now;
            c.exit_close = true;
        }
        let (app, key) = (c.app, c.key);
        // Inspected when the close grace ends (or earlier if due).
        let at = c
            .next_check
            .min(c.closed_at.saturating_add(super::timers::CLOSE_FIN_GRACE))
            .max(now + 1);
        *self.orphans.entry(app).or_default() += 1;
        self.stats.orphaned += 1;
        if let Some(mut g) = self.table.lock(id) {
            if g.key() == key {
                // No notifications for an app that is gone (the fast path
                // drops those for an unknown context); `mem` stays, the
                // rings are still in the app's region.
                g.context = RESERVED_APP;
            }
        }
        self.schedule_check(id, at);
    }

    /// RST toward the peer of removed connection `c` (if installed), out of
    /// the table, rings freed.
    fn abort_removed(&mut self, now: u64, id: FlowId, c: Conn, io: &mut impl StackIo) {
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
        Self::free_conn_rings(&c, io);
        if c.orphan {
            self.orphan_done(c.app);
        }
    }

    /// The daemon is stopping: every live flow is reset toward its peer and
    /// removed, listeners and half-open connections dropped.
    pub fn shutdown(&mut self, now: u64, io: &mut impl StackIo) {
        self.teardown(now, None, io);
    }

    fn teardown(&mut self, now: u64, app: Option<AppId>, io: &mut impl StackIo) {
        self.drop_opens(app, io);
        let mut ids: Vec<FlowId> = self
            .conns
            .iter()
            .filter(|(_, c)| app.is_none() || app == Some(c.app))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                self.abort_removed(now, id, c, io);
            }
        }
    }

    /// Listeners (resetting their half-open connections) and active opens
    /// in progress of `app` (all: None) go.
    fn drop_opens(&mut self, app: Option<AppId>, io: &mut impl StackIo) {
        let mine = |a: AppId| app.is_none() || app == Some(a);
        let lids: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(id, l)| {
                mine(l.app) && !app.is_some_and(|a| self.listener_held_elsewhere(**id, a))
            })
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
    }
}
