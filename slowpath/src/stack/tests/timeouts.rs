//! The retransmission timeout's backoff (RFC 6298 §5.5, Linux's bounds)
//! and the tail-loss probe timer (RFC 8985 §7.2).

use super::*;

/// Runs the stack's timers event by event until `until`, collecting the
/// fast-path commands with their times (relative to the start).
fn run_cmds(fx: &mut Fx, until: u64) -> Vec<(u64, FpCmd)> {
    let t0 = fx.now;
    let mut out = Vec::new();
    while let Some(t) = fx.stack.poll_at() {
        if t > t0 + until {
            break;
        }
        fx.at(t.max(fx.now));
        for c in fx.cmds() {
            out.push((fx.now - t0, c));
        }
        if !fx.io.msgs.is_empty() {
            break;
        }
    }
    out
}

/// An accepted flow with `sent` bytes in flight that nothing acknowledges,
/// an RTT estimate of `rtt_us`.
fn stuck_flow(c: StackConfig, sent: u32, rtt_us: u32) -> (Fx, FlowId) {
    let mut fx = Fx::with(c);
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.tx_sent = sent;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(sent);
        f.rtt_est = rtt_us;
    });
    (fx, id)
}

#[test]
fn rto_doubles_per_expiry_up_to_120_seconds() {
    let mut c = host_cfg(A_IP, A_MAC);
    c.data_retries = 14;
    let (mut fx, id) = stuck_flow(c, 5000, 0);
    let cmds = run_cmds(&mut fx, 1000 * 1000 * MS);
    assert!(
        cmds.iter().all(|(_, c)| *c == FpCmd::Retransmit(id)),
        "{cmds:?}"
    );
    assert_eq!(cmds.len(), 14);
    let times: Vec<u64> = cmds.iter().map(|(t, _)| *t).collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| (w[1] - w[0]) / MS).collect();
    // 400, 800, ... 102.4 s, then the 120 s cap (checked every 100 ms).
    let want = [
        400u64, 800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 102_400, 120_000, 120_000, 120_000,
        120_000,
    ];
    for (g, w) in gaps.iter().zip(want) {
        assert!(*g >= w && *g <= w + 100, "gaps {gaps:?}");
    }
    // The 15th expiry gives up.
    assert_eq!(fx.one_msg().kind, ctl::RESET);
    assert_eq!(fx.stack.stats().data_timeouts, 1);
}

#[test]
fn tail_loss_probe_comes_two_rtts_after_the_flow_goes_quiet() {
    // SRTT 1 ms, several segments in flight: PTO = 2 ms + 2 ms.
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 5000, 1000);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    assert_eq!(cmds[0].1, FpCmd::Probe(id), "{cmds:?}");
    assert_eq!(cmds[1].1, FpCmd::Retransmit(id), "{cmds:?}");
    // The first inspection notices the flow (within 100 ms); the probe is
    // one PTO later, the RTO (200 ms minimum) after it, one probe only.
    let (probe, rto) = (cmds[0].0, cmds[1].0);
    assert!(probe <= 105 * MS, "{cmds:?}");
    assert!(
        rto - probe >= 200 * MS && rto - probe <= 205 * MS,
        "{cmds:?}"
    );
    assert_eq!(fx.stack.stats().tlp_probes, 1, "{cmds:?}");
    assert_eq!(fx.stack.stats().rto_retransmits, 2, "{cmds:?}");
}

#[test]
fn tail_loss_probe_waits_for_a_quiet_flow_and_probes_each_quiet_state_once() {
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 5000, 1000);
    let t0 = fx.now;
    let mut probes = Vec::new();
    let mut t = t0;
    // SND.NXT moves every 2 ms (new data goes out) for 150 ms: no probe.
    while t < t0 + 200 * MS {
        t += MS / 2;
        fx.at(t);
        for c in fx.cmds() {
            assert_eq!(c, FpCmd::Probe(id));
            probes.push(t - t0);
        }
        if t < t0 + 150 * MS && (t - t0) % (2 * MS) == 0 {
            fx.set(id, |f| {
                f.tx_sent += 100;
                f.tx_next_seq = f.tx_next_seq.wrapping_add(100);
            });
        }
    }
    assert_eq!(probes.len(), 1, "{probes:?}");
    // The last move is at 148 ms; seen within a PTO, probed a PTO later.
    assert!(probes[0] >= 152 * MS && probes[0] <= 157 * MS, "{probes:?}");
    // The probe's new data moves SND.NXT: the new quiet state gets its
    // own probe.
    fx.set(id, |f| {
        f.tx_sent += 100;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(100);
    });
    let cmds = run_cmds(&mut fx, 150 * MS);
    assert_eq!(
        cmds.iter().filter(|(_, c)| *c == FpCmd::Probe(id)).count(),
        1,
        "{cmds:?}"
    );
}

#[test]
fn with_one_segment_out_the_probe_goes_at_the_rto_instead_of_it() {
    // One segment out: PTO gets 200 ms for the delayed ACK, more than the
    // RTO; the probe goes when the RTO would, and the RTO restarts from
    // it (RFC 8985 §7.2-7.3, as Linux).
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 1000, 1000);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    assert_eq!(cmds[0].1, FpCmd::Probe(id), "{cmds:?}");
    assert_eq!(cmds[1].1, FpCmd::Retransmit(id), "{cmds:?}");
    let gap = cmds[1].0 - cmds[0].0;
    assert!((200 * MS..=205 * MS).contains(&gap), "{cmds:?}");
    assert!(cmds[0].0 >= 200 * MS, "{cmds:?}");
    assert!(
        cmds[2..].iter().all(|(_, c)| *c == FpCmd::Retransmit(id)),
        "{cmds:?}"
    );
}

#[test]
fn no_tail_loss_probe_without_an_rtt_sample() {
    // RFC 8985 §7.2: without SRTT the PTO is 1 s (Linux: the initial
    // RTO); the RTO comes first.
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 5000, 0);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    assert!(!cmds.is_empty());
    assert!(
        cmds.iter().all(|(_, c)| *c == FpCmd::Retransmit(id)),
        "{cmds:?}"
    );
}

#[test]
fn during_recovery_probe_requests_every_pto_then_timeouts_and_none_when_disabled() {
    // In recovery the probe request is RACK's timer for the fast path
    // (RFC 8985 §6.3): every PTO (2 RTT + 2 ms = 4 ms here) while nothing
    // progresses, the RTO still counting from the last progress; after a
    // timeout (backoff) only timeouts.
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 5000, 1000);
    fx.set(id, |f| f.st |= st::TX_RECOVERY);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    let first_rto = cmds
        .iter()
        .position(|(_, c)| *c == FpCmd::Retransmit(id))
        .expect("a timeout");
    assert!(first_rto >= 10, "{cmds:?}");
    assert!(
        cmds[..first_rto]
            .iter()
            .all(|(_, c)| matches!(c, FpCmd::Probe(p) if *p == id)),
        "{cmds:?}"
    );
    assert!(
        cmds[first_rto..]
            .iter()
            .all(|(_, c)| *c == FpCmd::Retransmit(id)),
        "{cmds:?}"
    );
    // The timeout is not put off by the probes (RTO 200 ms from the first
    // inspection that saw the flow busy).
    let at = cmds[first_rto].0;
    assert!((200 * MS..=300 * MS).contains(&at), "{at}");
    let mut c = host_cfg(A_IP, A_MAC);
    c.tlp = false;
    let (mut fx, id) = stuck_flow(c, 5000, 1000);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    assert!(
        cmds.iter().all(|(_, c)| *c == FpCmd::Retransmit(id)),
        "{cmds:?}"
    );
}

#[test]
fn in_recovery_a_single_segment_out_gets_no_delayed_ack_allowance() {
    // Only a FIN (one sequence number) outstanding, recovery running: the
    // request comes a PTO (2 RTT + 2 ms) after the flow went quiet, not
    // 200 ms later as for a tail-loss probe with one segment out.
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 1, 1000);
    fx.set(id, |f| f.st |= st::TX_RECOVERY);
    let cmds = run_cmds(&mut fx, 1000 * MS);
    let (at, c) = cmds.first().expect("a command");
    assert!(matches!(c, FpCmd::Probe(p) if *p == id), "{cmds:?}");
    assert!(*at < 120 * MS, "{at}");
}

#[test]
fn a_flow_idle_at_its_last_inspection_gets_its_probe_timer_when_it_sends_again() {
    // Inspected while idle (nothing in flight): the next inspection would
    // be 4 ticks (400 ms) away. The flow then sends and loses everything in
    // recovery: the congestion-control round that sees data in flight
    // brings the inspection forward, so the probe (RACK's timer) comes
    // within milliseconds, not at the idle inspection.
    let (mut fx, id) = stuck_flow(host_cfg(A_IP, A_MAC), 0, 1000);
    let cmds = run_cmds(&mut fx, 150 * MS);
    assert!(cmds.is_empty(), "{cmds:?}");
    fx.set(id, |f| {
        f.tx_sent = 5000;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(5000);
        f.st |= st::TX_RECOVERY;
    });
    let cmds = run_cmds(&mut fx, 100 * MS);
    let (at, c) = cmds.first().expect("a probe within 100 ms");
    assert!(matches!(c, FpCmd::Probe(p) if *p == id), "{cmds:?}");
    assert!(*at < 40 * MS, "{at}");
}
