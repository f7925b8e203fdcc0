//! Ring growth (`conn/grow.rs`): the RX ring switches only when all in-order
//! data was read (held out-of-order data moves along) and
//! only after its `RING` went to the app; the TX switch is refused while
//! anything is in flight; pinned sizes never grow; the window scale is for
//! the maximum.

use super::*;
use crate::stack::conn::wscale_for_test;

const KIB: u32 = 1024;

fn growing() -> Fx {
    let mut c = host_cfg(A_IP, A_MAC);
    c.init_rx_buf = 32 * KIB;
    c.init_tx_buf = 32 * KIB;
    Fx::with(c)
}

/// Accepts one connection; returns its id and the SYN-ACK's window scale.
fn accept(fx: &mut Fx) -> (FlowId, u8) {
    fx.nf(&fx.peer(syn(1000, full_opts(500)), &[]));
    let sa = fx.one_tcp();
    fx.now += 100_000;
    let ack = ack_seg(
        1001,
        sa.t.seq + 1,
        1000,
        Some((501, sa.t.options.timestamp.unwrap().0)),
    );
    fx.nf(&fx.peer(ack, &[]));
    let m = fx.one_msg();
    assert_eq!(m.kind, ctl::ACCEPTED);
    (m.flow, sa.t.options.wscale.unwrap())
}

/// Rounds of the control loop over `ms` milliseconds while `each` shapes
/// the flow before every one; the RING messages sent, with the flow's
/// generation at the time each was seen.
fn rounds(
    fx: &mut Fx,
    id: FlowId,
    ms: u64,
    mut each: impl FnMut(&mut FlowState),
) -> Vec<(CtlMsg, u8)> {
    let mut rings = Vec::new();
    for _ in 0..ms {
        fx.set(id, &mut each);
        let t = fx.now + MS;
        fx.at(t);
        for (app, m) in fx.msgs() {
            assert_eq!(app, APP);
            if m.kind == ctl::RING {
                rings.push((m, fx.state(id).ring_gen));
            }
        }
        fx.frames();
        fx.cmds();
    }
    rings
}

/// Rounds (up to 20) in which a fast reader's data keeps arriving but
/// `unread` bytes stay in the ring (never empty), until the slow path
/// reserves a larger RX ring: the RING messages of that round (empty if
/// none came).
fn until_ring(fx: &mut Fx, id: FlowId, unread: u32) -> Vec<(CtlMsg, u8)> {
    for _ in 0..20 {
        let rings = rounds(fx, id, 1, |f| {
            f.rx_next_seq = f.rx_next_seq.wrapping_add(40_000);
            f.rx_avail = f.rx_len - unread;
        });
        if !rings.is_empty() {
            return rings;
        }
    }
    Vec::new()
}

/// The app reads everything as fast as it arrives: 100 KB per
/// millisecond (more than half of a 128 KiB ring).
fn fast_reader(f: &mut FlowState) {
    f.rx_next_seq = f.rx_next_seq.wrapping_add(100_000);
    f.rx_avail = f.rx_len;
}

#[test]
fn rx_ring_switches_only_when_empty_after_its_ring_message() {
    let mut fx = growing();
    fx.listen(16);
    let (id, ws) = accept(&mut fx);
    // The window scale is for the maximum, so the window can grow.
    assert_eq!(ws, wscale_for_test(256 * KIB));
    let f0 = fx.state(id);
    assert_eq!((f0.rx_len, f0.tx_len, f0.ring_gen), (32 * KIB, 32 * KIB, 0));

    // A fast reader makes the slow path reserve a 64 KiB ring and say so.
    // Data waits in the ring at each round: never empty.
    let rings = until_ring(&mut fx, id, 100);
    assert_eq!(rings.len(), 1, "one RING for the first growth");
    let (m, gen_then) = rings[0];
    assert_eq!(m.flow, id);
    assert_eq!(gen_then, 0, "the RING goes out before the switch");
    assert_eq!(m.arg[0], 1, "the next generation");
    assert_eq!(m.arg[2], 64 * KIB);
    let new_base = m.arg[1];

    // Unread data: no switch.
    rounds(&mut fx, id, 5, |f| f.rx_avail = f.rx_len - 100);
    let f = fx.state(id);
    assert_eq!((f.rx_base, f.rx_len, f.ring_gen), (f0.rx_base, 32 * KIB, 0));

    // Everything in order read, two out-of-order intervals held (the
    // second wrapping around the old ring's end): the flow switches, from
    // position 0 of the new ring, and the held bytes move to the same
    // distance from RCV.NXT there.
    let nxt = fx.state(id).rx_next_seq;
    fx.set_cold(id, |c| {
        c.rx.ooo[0] = (nxt.wrapping_add(3000), nxt.wrapping_add(4000));
        c.rx.ooo[1] = (nxt.wrapping_add(8000), nxt.wrapping_add(10_000));
        c.rx.ooo_n = 2;
    });
    rounds(&mut fx, id, 20, |f| {
        if f.rx_len == 32 * KIB {
            f.rx_avail = f.rx_len;
            f.rx_next_seq = nxt;
            f.rx_next_pos = 32 * KIB - 9000;
            f.rx_ooo_start = nxt.wrapping_add(3000);
            f.rx_ooo_len = 1000;
        }
    });
    let f = fx.state(id);
    assert_eq!(
        (f.rx_base, f.rx_len, f.rx_avail, f.rx_next_pos, f.ring_gen),
        (new_base, 64 * KIB, 64 * KIB, 0, 1)
    );
    assert_eq!(
        (f.rx_ooo_start, f.rx_ooo_len),
        (nxt.wrapping_add(3000), 1000),
        "the intervals are sequence numbers: unchanged"
    );
    let old = f0.rx_base;
    assert_eq!(
        fx.io.copies,
        [
            (APP, old + 26_768, new_base + 3000, 1000),
            (APP, old + 31_768, new_base + 8000, 1000),
            (APP, old, new_base + 9000, 1000),
        ],
        "held bytes moved, wrapping at the old ring's end"
    );
    fx.set_cold(id, |c| c.rx.ooo_n = 0);
    fx.set(id, |f| f.rx_ooo_len = 0);
    assert_eq!(fx.stack.stats().rx_rings_grown, 1);

    // On to the maximum, one doubling at a time, then no more.
    let rings = rounds(&mut fx, id, 60, fast_reader);
    let lens: Vec<u32> = rings.iter().map(|(m, _)| m.arg[2]).collect();
    let gens: Vec<u32> = rings.iter().map(|(m, _)| m.arg[0]).collect();
    assert_eq!(lens, [128 * KIB, 256 * KIB]);
    assert_eq!(gens, [2, 3]);
    let f = fx.state(id);
    assert_eq!((f.rx_len, f.ring_gen), (256 * KIB, 3));
    assert_eq!(fx.stack.stats().rx_rings_grown, 3);
    // Old rings went back: the flow holds its two rings and nothing else.
    assert_eq!(fx.io.used(APP), 2);
}

#[test]
fn rx_ring_reserved_but_never_empty_is_given_back() {
    let mut fx = growing();
    fx.listen(16);
    let (id, _) = accept(&mut fx);
    assert!(!until_ring(&mut fx, id, 1).is_empty());
    assert_eq!(fx.io.used(APP), 3, "two rings and the reserved one");
    rounds(&mut fx, id, 70, |f| {
        f.rx_next_seq = f.rx_next_seq.wrapping_add(1000);
        f.rx_avail = f.rx_len - 1;
    });
    assert_eq!(fx.io.used(APP), 2);
    assert_eq!(fx.stack.stats().rx_grow_abandoned, 1);
    assert_eq!(fx.state(id).rx_len, 32 * KIB);
}

/// A ring given back keeps its generation: the next `RING` names another,
/// and the switch installs that one. With the number reused, an app that
/// still held the first `RING` (not yet read the second when the switch's
/// first event arrived) would read from the ring given back, memory that
/// may hold another flow's ring by then.
#[test]
fn rx_ring_given_back_never_lends_its_generation_to_the_next() {
    let mut fx = growing();
    fx.listen(16);
    let (id, _) = accept(&mut fx);
    let first = until_ring(&mut fx, id, 1);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0.arg[0], 1);
    // Never empty: given back.
    rounds(&mut fx, id, 70, |f| {
        f.rx_next_seq = f.rx_next_seq.wrapping_add(1000);
        f.rx_avail = f.rx_len - 1;
    });
    assert_eq!(fx.stack.stats().rx_grow_abandoned, 1);
    assert_eq!(fx.state(id).ring_gen, 0);
    // A fast reader with an empty ring: grown under generation 2.
    let mut rings = Vec::new();
    for _ in 0..10 {
        rings.extend(rounds(&mut fx, id, 1, fast_reader));
        if fx.state(id).rx_len != 32 * KIB {
            break;
        }
    }
    assert_eq!(rings.len(), 1, "grows again: {rings:?}");
    assert_eq!(
        rings[0].0.arg[0], 2,
        "a new generation, not the one given back"
    );
    let f = fx.state(id);
    assert_eq!(
        (f.ring_gen, f.rx_len, f.rx_base),
        (2, 64 * KIB, rings[0].0.arg[1])
    );
}

#[test]
fn ring_generations_stay_within_the_serial_window() {
    use crate::stack::conn::next_gen_for_test as next_gen;
    assert_eq!(next_gen(0, None), 1);
    assert_eq!(next_gen(5, Some(5)), 6);
    assert_eq!(next_gen(5, Some(6)), 7);
    assert_eq!(next_gen(255, Some(255)), 0);
    assert_eq!(next_gen(250, Some(3)), 4);
    // 64 ahead of the installed one: back to one past it.
    assert_eq!(next_gen(10, Some(73)), 11);
    assert_eq!(next_gen(10, Some(72)), 73);
}

fn tx_msg(kind: u32, req: u32, flow: FlowId) -> CtlMsg {
    CtlMsg {
        kind,
        req,
        flow,
        ..Default::default()
    }
}

#[test]
fn tx_switch_is_refused_with_data_in_flight() {
    let mut fx = growing();
    fx.listen(16);
    let (id, _) = accept(&mut fx);
    let f0 = fx.state(id);
    // Not limited by the ring (the peer's window is small): not now.
    fx.set(id, |f| f.rx_remote_avail = 8000);
    fx.ctl(APP, tx_msg(ctl::TX_GROW, 1, id));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.req, m.err), (ctl::RESULT, 1, libc::EAGAIN));

    // Limited: half the ring in flight and a wide window.
    fx.set(id, |f| {
        f.rx_remote_avail = 1 << 20;
        f.tx_sent = 20_000;
        f.tx_next_seq = f.tx_next_seq.wrapping_add(20_000);
    });
    fx.ctl(APP, tx_msg(ctl::TX_GROW, 2, id));
    let m = fx.one_msg();
    assert_eq!(
        (m.kind, m.req, m.err, m.arg[1]),
        (ctl::RESULT, 2, 0, 64 * KIB)
    );
    assert_eq!(fx.io.used(APP), 3);

    // The switch with data in flight is refused and the ring given back.
    fx.ctl(APP, tx_msg(ctl::TX_SWITCH, 3, id));
    let m = fx.one_msg();
    assert_eq!((m.req, m.err), (3, libc::EAGAIN));
    assert_eq!(
        (fx.state(id).tx_base, fx.state(id).tx_len),
        (f0.tx_base, 32 * KIB)
    );
    assert_eq!(fx.io.used(APP), 2);
    // ... and with data queued.
    fx.ctl(APP, tx_msg(ctl::TX_GROW, 4, id));
    assert_eq!(fx.one_msg().err, 0);
    fx.set(id, |f| {
        f.tx_sent = 0;
        f.tx_avail = 10;
    });
    fx.ctl(APP, tx_msg(ctl::TX_SWITCH, 5, id));
    assert_eq!(fx.one_msg().err, libc::EAGAIN);

    // Everything acknowledged: switched, from position 0.
    fx.ctl(APP, tx_msg(ctl::TX_GROW, 6, id));
    let m = fx.one_msg();
    assert_eq!(m.err, 0);
    fx.set(id, |f| {
        f.tx_avail = 0;
        f.tx_next_pos = 777;
    });
    fx.ctl(APP, tx_msg(ctl::TX_SWITCH, 7, id));
    assert_eq!(fx.one_msg().err, 0);
    let f = fx.state(id);
    assert_eq!(
        (f.tx_base, f.tx_len, f.tx_next_pos),
        (m.arg[0], 64 * KIB, 0)
    );
    assert_eq!(fx.io.used(APP), 2);
    assert_eq!(fx.stack.stats().tx_rings_grown, 1);
    // A switch nobody reserved is invalid.
    fx.ctl(APP, tx_msg(ctl::TX_SWITCH, 8, id));
    assert_eq!(fx.one_msg().err, libc::EINVAL);
    // Another app's flow: EBADF.
    fx.ctl(APP + 1, tx_msg(ctl::TX_GROW, 9, id));
    assert_eq!(fx.msgs()[0].1.err, libc::EBADF);
}

/// SO_RCVBUF/SO_SNDBUF pin: the rings start at the request and never grow,
/// also when set on the listener after `listen()` (`LISTEN_UPDATE`); and a
/// pinned size is not lowered to the floor under region pressure.
#[test]
fn pinned_sizes_never_grow_and_listen_update_applies_to_new_connections() {
    let mut fx = growing();
    let l = fx.listen(16);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::LISTEN_UPDATE,
            req: 2,
            listener: l,
            arg: [0, 0, 96 * KIB, 0, 0],
            ..Default::default()
        },
    );
    assert_eq!(fx.one_msg().err, 0);
    let (id, ws) = accept(&mut fx);
    assert_eq!(ws, wscale_for_test(96 * KIB));
    let f = fx.state(id);
    assert_eq!(
        (f.rx_len, f.tx_len),
        (96 * KIB, 32 * KIB),
        "rx pinned, tx grows"
    );
    let rings = rounds(&mut fx, id, 30, fast_reader);
    assert!(rings.is_empty(), "a pinned ring grew: {rings:?}");
    assert_eq!(fx.state(id).rx_len, 96 * KIB);
    // Only a holder of the listener may change it.
    fx.ctl(
        APP + 1,
        CtlMsg {
            kind: ctl::LISTEN_UPDATE,
            req: 3,
            listener: l,
            arg: [0, 0, 8 * KIB, 0, 0],
            ..Default::default()
        },
    );
    assert_eq!(fx.msgs()[0].1.err, libc::EBADF);
}

#[test]
fn pinned_sizes_are_not_lowered_to_the_floor_under_pressure() {
    let mut c = host_cfg(A_IP, A_MAC);
    // The 8 MiB test region keeps a floor pair for each of 64 flows
    // (2 MiB), so a 6 MiB ring leaves too little beyond the reserve.
    c.ring_floor = 16 * KIB;
    let mut fx = Fx::with(c);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::LISTEN,
            req: 1,
            arg: [PORT as u32, 16, 6 << 20, 0, 0],
            ..Default::default()
        },
    );
    assert_eq!(fx.one_msg().err, 0);
    let (id, _) = accept(&mut fx);
    let f = fx.state(id);
    assert_eq!(f.rx_len, 6 << 20, "pinned: as asked");
    assert_eq!(f.tx_len, 16 * KIB, "not pinned: the floor");
}

/// A fork while a larger RX ring is announced but not switched to: once the
/// child adopts the flow (two holders), the switch never happens (each
/// holder would need the news) and the reserved ring is given back; the
/// child's adoption answer names the ring installed. When the parent lets
/// go, growth resumes for the child alone, under a new generation.
#[test]
fn a_fork_racing_a_rx_switch_keeps_both_holders_on_the_installed_ring() {
    const CHILD: AppId = APP + 1;
    const TOKEN: u64 = 0x0bad_cafe_1234_5678;
    let grant = |kind: u32, req: u32, pid: u32, flow: FlowId| {
        let mut m = CtlMsg::new(kind);
        m.req = req;
        m.flow = flow;
        m.arg[0] = TOKEN as u32;
        m.arg[1] = (TOKEN >> 32) as u32;
        m.arg[2] = pid;
        m
    };
    let mut fx = growing();
    fx.io.pids.extend([(APP, 100), (CHILD, 200)]);
    // A forked child's rings come from its parent's region.
    fx.io.mem.insert(CHILD, APP);
    fx.listen(16);
    let (id, _) = accept(&mut fx);
    let f0 = fx.state(id);
    let first = until_ring(&mut fx, id, 1);
    assert_eq!(first.len(), 1, "a RING announced to the parent");
    assert_eq!(fx.io.used(APP), 3, "two rings and the reserved one");
    // The parent forks; the child adopts the connection.
    fx.ctl(APP, grant(ctl::SHARE, 7, 0, 0));
    fx.ctl(APP, grant(ctl::SHARE_PID, 0, 200, 0));
    fx.msgs();
    fx.ctl(CHILD, grant(ctl::ADOPT, 9, 0, id));
    let m = fx.msgs();
    let r = m
        .iter()
        .find(|(a, m)| *a == CHILD && m.kind == ctl::RESULT)
        .expect("adoption answered")
        .1;
    assert_eq!(r.err, 0);
    assert_eq!(
        (r.info.rx_base, r.info.rx_len, r.info.ring_gen),
        (f0.rx_base, 32 * KIB, 0),
        "the answer names the ring installed, not the one announced"
    );
    // Empty rings from now on: still no switch while two hold the flow.
    let rings = rounds(&mut fx, id, 10, fast_reader);
    assert!(rings.is_empty(), "no RING while shared: {rings:?}");
    let f = fx.state(id);
    assert_eq!((f.rx_base, f.rx_len, f.ring_gen), (f0.rx_base, 32 * KIB, 0));
    assert_eq!(fx.stack.stats().rx_grow_abandoned, 1);
    assert_eq!(fx.io.used(APP), 2, "the reserved ring went back");
    // The parent closes its copy: the child alone grows, under generation 2.
    fx.ctl(APP, grant(ctl::DROP, 10, 0, id));
    fx.msgs();
    let mut rings = Vec::new();
    for _ in 0..10 {
        let t = fx.now + MS;
        fx.set(id, fast_reader);
        fx.at(t);
        for (app, m) in fx.msgs() {
            if m.kind == ctl::RING {
                rings.push((app, m));
            }
        }
        fx.frames();
        fx.cmds();
        if fx.state(id).rx_len != 32 * KIB {
            break;
        }
    }
    assert_eq!(rings.len(), 1, "{rings:?}");
    assert_eq!((rings[0].0, rings[0].1.arg[0]), (CHILD, 2));
    assert_eq!(fx.state(id).ring_gen, 2);
}
