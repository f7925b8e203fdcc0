//! `STATS`: the statistics an app reads as `TCP_INFO`, only for its own
//! flows.

use super::*;
use tas_abi::{stats, FlowStats};

fn ask(fx: &mut Fx, app: AppId, flow: FlowId) -> CtlMsg {
    fx.ctl(
        app,
        CtlMsg {
            kind: ctl::STATS,
            req: 31,
            flow,
            ..Default::default()
        },
    );
    let out = fx.msgs();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, out[0].1.req), (app, 31));
    out[0].1
}

#[test]
fn stats_of_an_accepted_flow_carry_options_rtt_and_window() {
    let mut fx = Fx::new();
    fx.listen(8);
    let (id, _, _) = fx.accept_one(1000);
    fx.set(id, |f| {
        f.rtt_est = 250;
        f.tx_sent = 2896;
        f.tx_avail = 100;
        f.rx_remote_avail = 500_000;
    });
    let m = ask(&mut fx, APP, id);
    assert_eq!((m.kind, m.flow), (ctl::STATS_OK, id));
    let s = FlowStats::from_msg(&m).unwrap();
    let want = stats::F_TS | stats::F_SACK | stats::F_WSCALE | stats::F_OPEN;
    assert_eq!(s.flags & want, want, "{s:?}");
    assert_eq!(s.flags & stats::F_ECN, 0);
    assert_eq!(s.snd_wscale, 7);
    assert!(s.rcv_wscale > 0, "{s:?}");
    assert_eq!(
        (s.rtt_us, s.in_flight, s.not_sent, s.snd_wnd),
        (250, 2896, 100, 500_000)
    );
    assert!(s.rttvar_us > 0 && s.rto_us >= 20_000, "{s:?}");
    assert_eq!((s.retransmits, s.timeouts), (0, 0));
    if s.flags & stats::F_RATE != 0 {
        assert!(s.rate_kbps > 0);
        assert_eq!(s.cwnd_bytes as u64, s.rate_kbps * 250 / 8000, "{s:?}");
    } else {
        assert!(s.cwnd_bytes > 0, "{s:?}");
    }
}

#[test]
fn stats_of_flows_the_app_does_not_hold_are_refused() {
    let mut fx = Fx::new();
    fx.listen(8);
    let (id, _, _) = fx.accept_one(1000);
    for (app, flow) in [(2, id), (APP, id + 1), (APP, u32::MAX)] {
        let m = ask(&mut fx, app, flow);
        assert_eq!(
            (m.kind, m.err),
            (ctl::RESULT, libc::EBADF),
            "app {app} flow {flow}"
        );
    }
}
