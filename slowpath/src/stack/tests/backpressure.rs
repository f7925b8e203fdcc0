//! Back-pressure from an app's control channel: while the daemon reports
//! that an app does not take its messages ([`Stack::set_app_throttled`]),
//! SYNs for its listeners are dropped as listen overflows, other apps are
//! unaffected, and everything resumes when it is cleared.

use super::*;

#[test]
fn a_throttled_app_gets_no_new_connections_until_cleared() {
    let mut fx = Fx::new();
    fx.listen(16);
    // Another app's listener on another port.
    fx.ctl(
        2,
        CtlMsg {
            kind: ctl::LISTEN,
            req: 7,
            arg: [PORT as u32 + 1, 16, 0, 0, 0],
            ..Default::default()
        },
    );
    assert_eq!(fx.msgs().len(), 1);
    fx.stack.set_app_throttled(APP, true);
    fx.nf(&fx.peer(syn(1000, full_opts(1)), &[]));
    assert!(fx.frames().is_empty(), "SYN answered for a throttled app");
    let s = fx.stack.stats();
    assert_eq!((s.syn_dropped_backlog, s.listen_overflows), (1, 1));
    // The other app is served.
    let mut s2 = syn(2000, full_opts(1));
    s2.dst_port = PORT + 1;
    fx.nf(&fx.peer(s2, &[]));
    assert_eq!(fx.one_tcp().t.flags, tcp::SYN | tcp::ACK);
    // Cleared: the retransmitted SYN gets its SYN-ACK and the connection
    // is announced.
    fx.stack.set_app_throttled(APP, false);
    fx.accept_one(1000);
    // Accept-queue drops count as listen overflows too.
    assert_eq!(fx.stack.stats().listen_overflows, 1);
}
