//! Answers to `tasctl`: each [`Request`] of the control socket served from
//! the daemon's live state (stack, apps, lanes and cores, scaler, rates),
//! including the two that change it (`cc_set`/`cc_unset`, `cores_set`).

use super::meter::{lane_sum, lane_totals, Meter};
use super::{assign_lanes, Shared};
use crate::apps::Apps;
use crate::config::Config;
use crate::ctlsock::{
    AppStatus, CcShow, CoreStatus, CoresView, Reply, Request, Stats, Status, TuneView,
};
use crate::scale::ScaleController;
use crate::stack::Stack;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tas_runtime::now_ns;

/// `name: value` pairs of a struct's `Debug` output that are numbers, so
/// that every counter of the fast path's `Stats` shows up without a list
/// kept here.
fn debug_counters(prefix: &str, dbg: &str, out: &mut BTreeMap<String, u64>) {
    let inner = dbg.split_once('{').map(|(_, r)| r).unwrap_or(dbg);
    for part in inner.trim_end_matches('}').split(',') {
        if let Some((k, v)) = part.split_once(':') {
            if let Ok(n) = v.trim().parse::<u64>() {
                out.insert(format!("{prefix}.{}", k.trim()), n);
            }
        }
    }
}

/// What the control socket needs to answer, borrowed from the loop.
pub(super) struct CtlCtx<'a> {
    pub(super) cfg: &'a Config,
    pub(super) started: Instant,
    pub(super) nic: &'a str,
    pub(super) mac: [u8; 6],
    pub(super) stack: &'a mut Stack,
    pub(super) apps: &'a mut Apps,
    pub(super) shared: &'a Shared,
    pub(super) cmds: &'a tas_runtime::LaneCommands,
    pub(super) scaler: &'a mut ScaleController,
    pub(super) meter: &'a Meter,
    pub(super) ctl_requests: u64,
    pub(super) ctl_errors: u64,
    pub(super) ctl_dropped: u64,
    /// Exceptions taken from the lanes, by reason
    /// ([`super::prom::EXCEPTION_REASONS`]).
    pub(super) exceptions: &'a [u64; 10],
    /// The metrics endpoint's counters (zero without `--metrics-addr`).
    pub(super) metrics: crate::metrics::MetricsCounters,
    pub(super) captures: &'a mut super::capture::Captures,
}

impl CtlCtx<'_> {
    pub(super) fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply::ok(&self.status()),
            Request::Flows => Reply::ok(&self.stack.flow_details()),
            Request::CcShow => {
                Reply::ok(&CcShow::new(self.stack.cc_config(), self.stack.cc_usage()))
            }
            Request::CcSet { algo, params, port } => {
                match self.stack.cc_set(port, &algo, &params) {
                    Ok(()) => {
                        let scope =
                            port.map_or("globally".to_string(), |p| format!("for port {p}"));
                        tracing::info!("congestion control set {scope}: {algo} {params:?}");
                        Reply::ok(&CcShow::new(self.stack.cc_config(), self.stack.cc_usage()))
                    }
                    Err(e) => Reply::err(e.to_string()),
                }
            }
            Request::CcUnset { port } => match self.stack.cc_unset(port) {
                Ok(()) => Reply::ok(&CcShow::new(self.stack.cc_config(), self.stack.cc_usage())),
                Err(e) => Reply::err(e.to_string()),
            },
            Request::Stats => Reply::ok(&self.stats()),
            Request::CaptureStart { port, snaplen } => {
                match self.captures.start(self.shared, port, snaplen) {
                    Ok(s) => Reply::ok(&s),
                    Err(e) => Reply::err(e.to_string()),
                }
            }
            Request::CaptureRead { id } => match self.captures.read(self.shared, id, false) {
                Ok(b) => Reply::ok(&b),
                Err(e) => Reply::err(e.to_string()),
            },
            Request::CaptureStop { id } => match self.captures.read(self.shared, id, true) {
                Ok(b) => Reply::ok(&b),
                Err(e) => Reply::err(e.to_string()),
            },
            Request::Listeners => Reply::ok(&self.stack.listeners()),
            Request::Cores => Reply::ok(&self.cores()),
            Request::Tune { goal } => {
                let g: tas_tune::Goal = match goal.parse() {
                    Ok(g) => g,
                    Err(e) => return Reply::err(format!("tune: {e}")),
                };
                self.shared.set_goal(g);
                self.apps.set_goal(g);
                if !self.cfg.scale_fixed {
                    let (up, down) = g.scale_thresholds();
                    if let Err(e) = self.scaler.set_thresholds(up, down) {
                        return Reply::err(format!("tune: {e}"));
                    }
                }
                tracing::info!("self-tuning goal set to {g}");
                Reply::ok(&self.tune_view())
            }
            Request::TuneShow => Reply::ok(&self.tune_view()),
            Request::CoresSet { min, max } => {
                let lanes = self.shared.lanes.len() as u32;
                if max > lanes {
                    return Reply::err(format!(
                        "cores: max {max} exceeds the {lanes} lane(s) tasd opened at start (restart it with --cores {min}-{max})"
                    ));
                }
                match self.scaler.set_budget(min, max, now_ns()) {
                    Ok(active) => {
                        assign_lanes(self.shared, active);
                        tracing::info!("core budget set to {min}-{max}; {active} active");
                        Reply::ok(&self.cores())
                    }
                    Err(e) => Reply::err(format!("cores: {e}")),
                }
            }
        }
    }

    pub(super) fn status(&self) -> Status {
        let mut flows: BTreeMap<String, u64> = BTreeMap::new();
        let mut per_app: BTreeMap<u16, u64> = BTreeMap::new();
        let summary = self.stack.flows();
        for f in &summary {
            *flows.entry(f.state.to_string()).or_default() += 1;
            if f.flow.is_some() {
                *per_app.entry(f.app).or_default() += 1;
            }
        }
        let mut st = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            ip: format!(
                "{}/{}",
                std::net::Ipv4Addr::from(self.cfg.ip),
                self.cfg.prefix_len
            ),
            iface: self.cfg.iface.clone(),
            nic: self.nic.to_string(),
            mode: if self.cfg.shared {
                "shared"
            } else {
                "exclusive"
            }
            .to_string(),
            mac: tas_engine::wire::eth::fmt_mac(self.mac).to_string(),
            socket: self.cfg.socket.display().to_string(),
            cores: self.core_status(),
            apps: self
                .apps
                .iter()
                .map(|a| AppStatus {
                    id: a.id,
                    pid: a.pid,
                    flows: per_app.get(&a.id).copied().unwrap_or(0),
                    exited: a.orphaned,
                    region_used: u64::from(self.apps.region_size)
                        .saturating_sub(a.alloc.free_bytes()),
                })
                .collect(),
            flows,
            flows_total: summary.len() as u64,
            rx_pps: 0.0,
            tx_pps: 0.0,
            rx_mbps: 0.0,
            tx_mbps: 0.0,
            drops_ps: 0.0,
            exceptions_ps: 0.0,
            cc: self.stack.cc_config().global.algo.name.to_string(),
            goal: self.shared.goal().to_string(),
        };
        if let Some((new, old)) = self.meter.window() {
            let dt = new.at.duration_since(old.at).as_secs_f64();
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            st.rx_pps = rate(new.rx_frames, old.rx_frames);
            st.tx_pps = rate(new.tx_frames, old.tx_frames);
            st.rx_mbps = rate(new.rx_bytes, old.rx_bytes) * 8.0 / 1e6;
            st.tx_mbps = rate(new.tx_bytes, old.tx_bytes) * 8.0 / 1e6;
            st.drops_ps = rate(new.drops, old.drops);
            st.exceptions_ps = rate(new.exceptions, old.exceptions);
        }
        st
    }

    /// Every fast-path thread with its lanes and its busy share over about
    /// the last second.
    fn tune_view(&self) -> TuneView {
        let c = self.scaler.config();
        TuneView {
            goal: self.shared.goal().to_string(),
            idle_spin: match self.cfg.idle_spin_us {
                Some(us) => format!("fixed {us} us (--idle-spin-us)"),
                None => "self-tuned".to_string(),
            },
            idle_yield: self.cfg.idle_yield,
            scale_up_below_idle: c.up_below_idle,
            scale_down_above_idle: c.down_above_idle,
            scale_fixed: self.cfg.scale_fixed,
            cores: self.core_status(),
        }
    }

    fn core_status(&self) -> Vec<CoreStatus> {
        let win = self.meter.window();
        self.shared
            .cores
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mask = c.lanes_held.load(Ordering::Relaxed);
                let lanes: Vec<u32> = (0..64).filter(|b| mask & (1u64 << b) != 0).collect();
                let busy_pct = win.map_or(0.0, |(new, old)| {
                    let dt = new.at.duration_since(old.at).as_nanos() as f64;
                    let b = new.busy_ns[i].saturating_sub(old.busy_ns[i]) as f64;
                    (100.0 * b / dt).clamp(0.0, 100.0)
                });
                CoreStatus {
                    id: i as u32,
                    busy_pct,
                    active: (i as u32) < self.scaler.active(),
                    lanes,
                    spin_us: c.spin_ns.load(Ordering::Relaxed) as f64 / 1000.0,
                    contention_pct: c.contention_ppm.load(Ordering::Relaxed) as f64 / 1e4,
                    pressure_pct: c.pressure_ppm.load(Ordering::Relaxed) as f64 / 1e4,
                    wake_us: c.wake_ns.load(Ordering::Relaxed) as f64 / 1e3,
                    idle_cpus: c.idle_cpu_milli.load(Ordering::Relaxed) as f64 / 1e3,
                    ack_hold_us: c.ack_hold_ns.load(Ordering::Relaxed) as f64 / 1e3,
                    cpu: thread_cpu(c.tid.load(Ordering::Relaxed)),
                    pinned: (!self.cfg.cpus.is_empty())
                        .then(|| self.cfg.cpus[i % self.cfg.cpus.len()]),
                }
            })
            .collect()
    }

    fn cores(&self) -> CoresView {
        let c = self.scaler.config();
        CoresView {
            active: self.scaler.active(),
            min: c.min,
            max: c.max,
            lanes: self.shared.lanes.len() as u32,
            idle_cores: self.scaler.last_idle_cores(),
            scale_ups: self.scaler.scale_ups(),
            scale_downs: self.scaler.scale_downs(),
            cores: self.core_status(),
            steered_lanes: self
                .shared
                .lanes
                .iter()
                .filter(|l| !l.hw_fed.load(Ordering::Relaxed))
                .map(|l| l.id as u32)
                .collect(),
        }
    }

    pub(super) fn stats(&self) -> Stats {
        let mut c = BTreeMap::new();
        let fp = lane_totals(self.shared);
        debug_counters("fastpath", &format!("{fp:?}"), &mut c);
        for (i, core) in self.shared.cores.iter().enumerate() {
            c.insert(
                format!("core{i}.busy_ns"),
                core.busy_ns.load(Ordering::Relaxed),
            );
            c.insert(
                format!("core{i}.idle_ns"),
                core.idle_ns.load(Ordering::Relaxed),
            );
        }
        c.insert("cores.active".into(), self.scaler.active() as u64);
        c.insert("cores.scale_ups".into(), self.scaler.scale_ups());
        c.insert("cores.scale_downs".into(), self.scaler.scale_downs());
        // The queues between lanes and the slow path (see tas_runtime):
        // what had to wait, never what was dropped (nothing is).
        let r = Ordering::Relaxed;
        let lanes = [
            (
                "lanes.exceptions_deferred",
                lane_sum(self.shared, |l| l.exc_deferred.load(r)),
            ),
            (
                "lanes.exceptions_waiting",
                lane_sum(self.shared, |l| l.exc_overflow.load(r)),
            ),
            (
                "lanes.nic_backpressure_rounds",
                lane_sum(self.shared, |l| l.exc_backpressure.load(r)),
            ),
            ("lanes.commands_deferred", self.cmds.deferred.iter().sum()),
            (
                "lanes.steered_frames",
                lane_sum(self.shared, |l| l.steered_in.load(r)),
            ),
            (
                "lanes.steer_dropped",
                lane_sum(self.shared, |l| l.steer_dropped.load(r)),
            ),
            ("lanes.commands_waiting", self.cmds.waiting() as u64),
            (
                "lanes.app_commands",
                lane_sum(self.shared, |l| l.app_cmds.load(r)),
            ),
            (
                "lanes.app_commands_forwarded",
                lane_sum(self.shared, |l| l.app_cmds_forwarded.load(r)),
            ),
        ];
        for (k, v) in lanes {
            c.insert(k.into(), v);
        }
        // Where the lanes' rounds spend their time (estimates from one
        // round in `STAGE_SAMPLE`; see `tas_runtime::StageStats`).
        c.insert(
            "lanes.rounds".into(),
            lane_sum(self.shared, |l| l.stages.rounds.load(r)),
        );
        c.insert(
            "lanes.nic_sends".into(),
            lane_sum(self.shared, |l| l.stages.nic_sends.load(r)),
        );
        c.insert(
            "lanes.app_wakes".into(),
            lane_sum(self.shared, |l| l.stages.app_wakes.load(r)),
        );
        c.insert(
            "lanes.app_kicks_skipped".into(),
            lane_sum(self.shared, |l| l.stages.app_kicks_skipped.load(r)),
        );
        for (i, name) in tas_runtime::STAGES.iter().enumerate() {
            c.insert(
                format!("lanes.stage_{name}_ns"),
                lane_sum(self.shared, |l| l.stages.ns[i].load(r)),
            );
        }
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(self.stack.stats()) {
            for (k, v) in m {
                if let Some(n) = v.as_u64() {
                    c.insert(format!("slowpath.{k}"), n);
                }
            }
        }
        let a = &self.apps.stats;
        let waiting: usize = self.apps.iter().map(|x| x.outbox.len()).sum();
        let huge = tas_runtime::huge::stats();
        for (k, v) in [
            ("apps.attached", self.apps.count() as u64),
            ("apps.attached_total", a.attached_total),
            ("apps.attach_refused", a.attach_refused),
            ("apps.attach_timeouts", a.attach_timeouts),
            ("apps.msgs_deferred", a.msgs_deferred),
            ("apps.msgs_waiting", waiting as u64),
            ("apps.msgs_undeliverable", a.msgs_undeliverable),
            ("apps.outbox_peak", a.outbox_peak),
            ("apps.throttled", a.throttled),
            ("huge.hugetlb_regions", huge.hugetlb_regions),
            ("huge.hugetlb_bytes", huge.hugetlb_bytes),
            ("huge.hugetlb_fallbacks", huge.hugetlb_fallbacks),
            ("huge.advised_bytes", huge.advised_bytes),
            ("huge.advice_refused", huge.refused),
            ("huge.shared_unavailable", huge.shared_unavailable),
            ("ctl.requests", self.ctl_requests),
            ("ctl.errors", self.ctl_errors),
            ("ctl.clients_dropped", self.ctl_dropped),
            ("log.suppressed", crate::ratelimit::suppressed_total()),
            ("metrics.requests", self.metrics.requests),
            ("metrics.errors", self.metrics.errors),
            ("metrics.clients_dropped", self.metrics.dropped),
        ] {
            c.insert(k.into(), v);
        }
        for (i, r) in super::prom::EXCEPTION_REASONS.iter().enumerate() {
            c.insert(format!("exceptions.{r}"), self.exceptions[i]);
        }
        Stats { counters: c }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tas_engine::engine;

    #[test]
    fn debug_counters_reads_every_number() {
        let mut m = BTreeMap::new();
        let s = engine::Stats {
            rx_frames: 7,
            tx_full: 3,
            seq_unacceptable: 5,
            dsack_sent: 2,
            ..Default::default()
        };
        debug_counters("fastpath", &format!("{s:?}"), &mut m);
        assert_eq!(m.get("fastpath.rx_frames"), Some(&7));
        assert_eq!(m.get("fastpath.tx_full"), Some(&3));
        assert_eq!(m.get("fastpath.seq_unacceptable"), Some(&5));
        assert_eq!(m.get("fastpath.dsack_sent"), Some(&2));
        assert_eq!(m.get("fastpath.ooo_intervals_full"), Some(&0));
        assert_eq!(m.get("fastpath.acks_sent"), Some(&0));
    }
}

/// The CPU thread `tid` of this process last ran on (field 39 of its
/// `/proc/self/task/TID/stat`).
fn thread_cpu(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(36)?.parse().ok()
}
