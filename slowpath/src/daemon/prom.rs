//! The page of the metrics endpoint: the daemon's live state in the
//! Prometheus text format, every family named `tas_*` with `# HELP` and
//! `# TYPE` (served by [`crate::metrics`]).
//!
//! The named families cover what an operator graphs and alerts on (frames
//! and bytes per direction, drops and exceptions by reason, flows by state,
//! apps, cores, retransmissions, congestion control); `tas_counter` carries
//! every other counter of `tasctl stats` under its dotted name, so nothing
//! `tasctl` shows is missing here.

use super::control::CtlCtx;
use crate::metrics::{Kind, Page};
use std::collections::BTreeMap;

/// Exception reasons in the order of the daemon's per-reason counters.
pub(super) const EXCEPTION_REASONS: [&str; 10] = [
    "not_tcp",
    "malformed",
    "bad_checksum",
    "no_flow",
    "syn",
    "rst",
    "unusual_flags",
    "slow_path_flow",
    "fin_received",
    "fin_acked",
];

/// Index of an exception's reason in [`EXCEPTION_REASONS`].
pub(super) fn exception_index(e: &tas_engine::engine::Exception) -> usize {
    use tas_engine::engine::Exception as E;
    match e {
        E::NotTcp => 0,
        E::Malformed(_) => 1,
        E::BadChecksum => 2,
        E::NoFlow => 3,
        E::Syn => 4,
        E::Rst => 5,
        E::UnusualFlags => 6,
        E::SlowPathFlow => 7,
        E::FinReceived => 8,
        E::FinAcked => 9,
    }
}

/// Frames dropped, by reason: (label, counter of `tasctl stats`).
const DROPS: &[(&str, &str)] = &[
    ("bad_checksum", "fastpath.bad_checksum"),
    ("not_for_us", "fastpath.not_for_us"),
    ("out_of_order_no_room", "fastpath.ooo_dropped"),
    ("sequence_unacceptable", "fastpath.seq_unacceptable"),
    ("ack_of_unsent_data", "fastpath.future_acks"),
    ("ack_too_old", "fastpath.acks_too_old"),
    ("tx_ring_full", "fastpath.tx_full"),
    ("malformed", "slowpath.dropped_malformed"),
    ("unusual_flags", "slowpath.dropped_unusual_flags"),
    ("not_ours", "slowpath.dropped_not_ours"),
    ("late_segment", "slowpath.late_segments"),
    ("other", "slowpath.dropped_other"),
    ("syn_backlog_full", "slowpath.syn_dropped_backlog"),
    ("syn_half_open_full", "slowpath.syn_dropped_overflow"),
    ("syn_no_room", "slowpath.syn_dropped_no_room"),
    ("accept_queue_full", "slowpath.accept_overflow"),
    ("accept_no_room", "slowpath.accept_no_room"),
    ("rst_out_of_window", "slowpath.rst_out_of_window"),
];

impl CtlCtx<'_> {
    /// The whole metrics page.
    pub(super) fn metrics_page(&self) -> String {
        let status = self.status();
        let stats = self.stats().counters;
        let c = |k: &str| stats.get(k).copied().unwrap_or(0) as f64;
        let mut p = Page::default();

        p.family(
            "tas_info",
            Kind::Gauge,
            "Constant 1, labelled with what this tasd runs.",
        )
        .sample(
            "tas_info",
            &[
                ("version", &status.version),
                ("iface", &status.iface),
                ("nic", &status.nic),
                ("ip", &status.ip),
                ("cc", &status.cc),
            ],
            1.0,
        );
        p.single(
            "tas_uptime_seconds",
            Kind::Gauge,
            "Seconds since tasd started.",
            status.uptime_s,
        );

        let dir = |p: &mut Page, name: &str, help: &str, rx: &str, tx: &str| {
            p.family(name, Kind::Counter, help)
                .sample(name, &[("direction", "rx")], c(rx))
                .sample(name, &[("direction", "tx")], c(tx));
        };
        dir(
            &mut p,
            "tas_packets_total",
            "Frames the fast path received and sent.",
            "fastpath.rx_frames",
            "fastpath.tx_frames",
        );
        dir(
            &mut p,
            "tas_payload_bytes_total",
            "TCP payload bytes the fast path received and sent (retransmissions included).",
            "fastpath.rx_payload_bytes",
            "fastpath.tx_payload_bytes",
        );
        p.single(
            "tas_acks_sent_total",
            Kind::Counter,
            "Pure ACKs the fast path sent.",
            c("fastpath.acks_sent"),
        );

        p.family(
            "tas_drops_total",
            Kind::Counter,
            "Frames dropped, by reason.",
        );
        for (label, key) in DROPS {
            p.sample("tas_drops_total", &[("reason", label)], c(key));
        }
        p.family(
            "tas_exceptions_total",
            Kind::Counter,
            "Frames the fast path handed to the slow path, by reason.",
        );
        for (i, reason) in EXCEPTION_REASONS.iter().enumerate() {
            p.sample(
                "tas_exceptions_total",
                &[("reason", reason)],
                self.exceptions[i] as f64,
            );
        }

        p.family(
            "tas_flows",
            Kind::Gauge,
            "Connections and listeners by state.",
        );
        for (state, n) in &status.flows {
            p.sample("tas_flows", &[("state", state)], *n as f64);
        }
        p.single(
            "tas_time_wait",
            Kind::Gauge,
            "4-tuples in TIME_WAIT (kept without buffers).",
            c("slowpath.time_wait_now"),
        );
        p.single(
            "tas_apps",
            Kind::Gauge,
            "Attached app contexts.",
            status.apps.len() as f64,
        );
        p.family(
            "tas_connections_total",
            Kind::Counter,
            "Connections established, by side.",
        )
        .sample(
            "tas_connections_total",
            &[("side", "passive")],
            c("slowpath.accepted"),
        )
        .sample(
            "tas_connections_total",
            &[("side", "active")],
            c("slowpath.connected"),
        );
        p.family("tas_resets_total", Kind::Counter, "RSTs sent and acted on.")
            .sample(
                "tas_resets_total",
                &[("direction", "tx")],
                c("slowpath.rst_sent"),
            )
            .sample(
                "tas_resets_total",
                &[("direction", "rx")],
                c("slowpath.rst_rx"),
            );

        p.family(
            "tas_core_busy_ratio",
            Kind::Gauge,
            "Share of about the last second each fast-path core spent in rounds that found work.",
        );
        for core in &status.cores {
            let id = core.id.to_string();
            p.sample(
                "tas_core_busy_ratio",
                &[("core", &id)],
                core.busy_pct / 100.0,
            );
        }
        p.family(
            "tas_core_busy_seconds_total",
            Kind::Counter,
            "Time each fast-path core spent in rounds that found work.",
        );
        for core in &status.cores {
            let id = core.id.to_string();
            let ns = c(&format!("core{id}.busy_ns"));
            p.sample("tas_core_busy_seconds_total", &[("core", &id)], ns / 1e9);
        }
        p.single(
            "tas_cores_active",
            Kind::Gauge,
            "Fast-path cores polling now.",
            c("cores.active"),
        );
        p.family(
            "tas_core_scalings_total",
            Kind::Counter,
            "Core scaling decisions.",
        )
        .sample(
            "tas_core_scalings_total",
            &[("direction", "up")],
            c("cores.scale_ups"),
        )
        .sample(
            "tas_core_scalings_total",
            &[("direction", "down")],
            c("cores.scale_downs"),
        );

        p.family(
            "tas_retransmits_total",
            Kind::Counter,
            "Loss recoveries: fast (RFC 6675/6582), after a timeout, tail-loss probes.",
        )
        .sample(
            "tas_retransmits_total",
            &[("kind", "fast")],
            c("fastpath.fast_retransmits"),
        )
        .sample(
            "tas_retransmits_total",
            &[("kind", "timeout")],
            c("slowpath.rto_retransmits"),
        )
        .sample(
            "tas_retransmits_total",
            &[("kind", "probe")],
            c("fastpath.tlp_probes"),
        );
        p.single(
            "tas_retransmitted_segments_total",
            Kind::Counter,
            "Segments sent again.",
            c("fastpath.rexmit_segments"),
        );
        p.single(
            "tas_spurious_recoveries_total",
            Kind::Counter,
            "Fast recoveries proven spurious by D-SACK (not reported to congestion control).",
            c("fastpath.spurious_recoveries"),
        );

        // Congestion control, summed per algorithm over the flows it runs.
        let mut per_algo: BTreeMap<String, (f64, f64, f64, f64)> = BTreeMap::new();
        for f in self.stack.flow_details() {
            let Some(algo) = f.cc.clone() else { continue };
            let e = per_algo.entry(algo).or_default();
            e.0 += 1.0;
            e.1 += f.rate_kbps.unwrap_or(0) as f64 * 1e3;
            e.2 += f.send_rate_kbps.unwrap_or(0) as f64 * 1e3;
            e.3 += f.cwnd.unwrap_or(0) as f64;
        }
        p.family(
            "tas_cc_flows",
            Kind::Gauge,
            "Flows by congestion-control algorithm.",
        );
        for (a, v) in &per_algo {
            p.sample("tas_cc_flows", &[("algo", a)], v.0);
        }
        p.family(
            "tas_cc_rate_limit_bits_per_second",
            Kind::Gauge,
            "Sum of the rate limits of rate-controlled flows (0: unlimited).",
        );
        for (a, v) in &per_algo {
            p.sample("tas_cc_rate_limit_bits_per_second", &[("algo", a)], v.1);
        }
        p.family(
            "tas_cc_send_rate_bits_per_second",
            Kind::Gauge,
            "Sum of the flows' measured send rates at their last update.",
        );
        for (a, v) in &per_algo {
            p.sample("tas_cc_send_rate_bits_per_second", &[("algo", a)], v.2);
        }
        p.family(
            "tas_cc_cwnd_bytes",
            Kind::Gauge,
            "Sum of the congestion windows of window-controlled flows.",
        );
        for (a, v) in &per_algo {
            p.sample("tas_cc_cwnd_bytes", &[("algo", a)], v.3);
        }

        p.family(
            "tas_counter",
            Kind::Untyped,
            "Every counter of `tasctl stats`, by its dotted name.",
        );
        for (k, v) in &stats {
            p.sample("tas_counter", &[("name", k)], *v as f64);
        }
        p.finish()
    }
}
