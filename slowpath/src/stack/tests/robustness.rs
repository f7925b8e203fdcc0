//! Hostile input never panics the stack: arbitrary control messages from
//! apps, arbitrary frames from the wire.

use super::*;

#[test]
fn hostile_control_messages_never_panic() {
    let mut fx = Fx::new();
    fx.listen(16);
    fx.accept_one(1000);
    let mut r = Rng::mixed(99);
    for _ in 0..50_000 {
        let kinds = [1, 2, 3, 4, 5, 6, 7, 101, 0, u32::MAX];
        let mut m = CtlMsg {
            kind: kinds[r.below(kinds.len() as u64) as usize],
            req: r.next_u64() as u32,
            listener: r.below(4) as u32,
            flow: r.below(4) as u32,
            ..Default::default()
        };
        for a in m.arg.iter_mut() {
            *a = match r.below(4) {
                0 => 0,
                1 => r.below(70_000) as u32,
                2 => B_IP,
                _ => r.next_u64() as u32,
            };
        }
        let app = r.below(4) as AppId;
        fx.now += r.below(5 * MS);
        fx.ctl(app, m);
        let t = fx.now;
        fx.at(t);
        fx.msgs();
        fx.frames();
        fx.cmds();
        if r.below(100) == 0 {
            fx.rx(
                Exception::NotTcp,
                None,
                &arp_frame(arp::OP_REPLY, B_MAC, B_IP, A_MAC, A_IP, A_MAC),
            );
        }
    }
    let now = fx.now;
    fx.stack.shutdown(now, &mut fx.io);
    assert!(fx.table.is_empty());
    for app in 0..4 {
        assert_eq!(fx.io.used(app), 0, "app {app} memory");
    }
}

#[test]
fn random_frames_never_panic() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, iss) = fx.accept_one(1000);
    let mut r = Rng::mixed(7);
    let reasons = [
        Exception::NoFlow,
        Exception::NotTcp,
        Exception::Rst,
        Exception::Syn,
        Exception::FinAcked,
        Exception::FinReceived,
        Exception::UnusualFlags,
    ];
    for i in 0..100_000u32 {
        let mut t = ack_seg(
            irs + r.below(3) as u32,
            iss + r.below(3) as u32,
            r.next_u64() as u16,
            None,
        );
        t.flags = r.next_u64() as u8;
        if r.below(2) == 0 {
            t.src_port = r.next_u64() as u16;
        }
        let mut f = fx.peer(t, &[1, 2, 3][..r.below(4) as usize]);
        if r.below(3) == 0 {
            let n = f.len();
            f[r.below(n as u64) as usize] ^= r.next_u64() as u8;
        }
        if r.below(5) == 0 {
            let n = r.below(f.len() as u64) as usize;
            f.truncate(n);
        }
        let reason = reasons[r.below(reasons.len() as u64) as usize];
        let flow = if r.below(2) == 0 {
            Some(id)
        } else {
            Some(i % 70)
        };
        fx.rx(reason, flow, &f);
        if i % 1000 == 0 {
            let t = fx.now + 50 * MS;
            fx.at(t);
        }
        fx.frames();
        fx.msgs();
        fx.cmds();
    }
}
