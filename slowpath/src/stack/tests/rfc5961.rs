//! RFC 5961 in the slow path, where the fast path sends every RST and SYN
//! of an installed flow (`Exception::Rst`, `Exception::Syn`): §3 (an RST
//! resets only at exactly RCV.NXT; in the window it draws a challenge ACK;
//! outside it is dropped), §4 (a SYN on a synchronized connection draws a
//! challenge ACK and never resets it) and §7 (challenge ACKs are
//! rate-limited: a token bucket of 1000 a second for the whole daemon,
//! Linux's `net.ipv4.tcp_challenge_ack_limit`).

use super::*;

/// An RST from the peer with sequence number `seq`.
fn rst_at(fx: &Fx, seq: u32) -> Vec<u8> {
    let mut r = ack_seg(seq, 0, 0, None);
    r.flags = tcp::RST;
    fx.peer(r, &[])
}

/// Asserts that exactly one challenge ACK went out: <SEQ=SND.NXT>
/// <ACK=RCV.NXT><CTL=ACK> with our window and timestamps (RFC 5961 §3.2).
fn assert_challenge(fx: &mut Fx, id: FlowId) {
    let f = fx.state(id);
    let ch = fx.one_tcp();
    assert_eq!(
        (ch.t.flags, ch.t.seq, ch.t.ack),
        (tcp::ACK, { f.tx_next_seq }, { f.rx_next_seq }),
        "challenge ACK"
    );
    assert_eq!(ch.t.window as u32, f.rx_avail >> f.rcv_wscale);
    assert!(ch.payload.is_empty());
    assert!(ch.t.options.timestamp.is_some());
}

fn assert_alive(fx: &mut Fx, id: FlowId) {
    assert!(fx.msgs().is_empty(), "the app hears nothing");
    assert_eq!(fx.table.len(), 1);
    assert_eq!(fx.state(id).local_port, PORT, "flow still installed");
}

#[test]
fn rst_resets_only_at_rcv_nxt_in_window_draws_a_challenge_ack() {
    let mut fx = Fx::new();
    fx.listen(16);
    // RCV.NXT close to 2^32: the window wraps.
    let (id, irs, _) = fx.accept_one(0xFFFF_FF00);
    let nxt = irs.wrapping_add(1);
    let wnd = fx.state(id).rx_avail;
    assert_eq!(wnd, 256 << 10);
    // §3.2: in the window but not exact -> challenge ACK, no reset.
    for s in [1, 100, 0x100, wnd / 2, wnd - 1] {
        fx.rx(Exception::Rst, Some(id), &rst_at(&fx, nxt.wrapping_add(s)));
        assert_challenge(&mut fx, id);
        assert_alive(&mut fx, id);
    }
    // Outside the window (right of it, left of it, far away): dropped.
    for s in [
        wnd,
        wnd + 1,
        1 << 31,
        0u32.wrapping_sub(1),
        0u32.wrapping_sub(wnd),
    ] {
        fx.rx(Exception::Rst, Some(id), &rst_at(&fx, nxt.wrapping_add(s)));
        assert!(fx.frames().is_empty(), "RST at RCV.NXT+{s} is dropped");
        assert_alive(&mut fx, id);
    }
    // The window is what we have room for: with 1000 bytes free, RCV.NXT+999
    // is in it and RCV.NXT+1000 is not.
    fx.set(id, |f| f.rx_avail = 1000);
    fx.rx(
        Exception::Rst,
        Some(id),
        &rst_at(&fx, nxt.wrapping_add(1000)),
    );
    assert!(fx.frames().is_empty());
    fx.rx(
        Exception::Rst,
        Some(id),
        &rst_at(&fx, nxt.wrapping_add(999)),
    );
    assert_challenge(&mut fx, id);
    // A zero window: only RCV.NXT itself is acceptable.
    fx.set(id, |f| f.rx_avail = 0);
    fx.rx(Exception::Rst, Some(id), &rst_at(&fx, nxt.wrapping_add(1)));
    assert!(fx.frames().is_empty());
    assert_alive(&mut fx, id);
    // RST|ACK and RST|SYN|ACK carry the same rule (checked before SYN, as in
    // RFC 9293 §3.10.7.4).
    let mut r = ack_seg(nxt.wrapping_add(1 << 20), 5, 0, None);
    r.flags = tcp::RST | tcp::SYN | tcp::ACK;
    fx.rx(Exception::Rst, Some(id), &fx.peer(r, &[]));
    assert!(fx.frames().is_empty());
    assert_alive(&mut fx, id);
    // Exactly RCV.NXT: the connection is reset.
    fx.rx(Exception::Rst, Some(id), &rst_at(&fx, nxt));
    let m = fx.one_msg();
    assert_eq!((m.kind, m.flow, m.err), (ctl::RESET, id, libc::ECONNRESET));
    assert!(fx.frames().is_empty(), "never answer an RST with an RST");
    let s = fx.stack.stats();
    assert_eq!(s.rst_rx, 1);
    assert_eq!(s.rst_challenged, 6);
    assert_eq!(s.rst_out_of_window, 8);
    assert_eq!(s.challenge_acks, 6);
}

#[test]
fn syn_on_a_synchronized_connection_never_resets_it() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, _) = fx.accept_one(1000);
    let nxt = irs + 1;
    // §4.2: whatever the sequence number (left of, at, in and right of the
    // window), with or without ACK, SYN gets a challenge ACK.
    let seqs = [
        irs,
        nxt,
        nxt + 1,
        nxt + 5000,
        nxt + (1 << 30),
        irs.wrapping_sub(100_000),
    ];
    for (i, &s) in seqs.iter().enumerate() {
        let mut t = syn(s, full_opts(1));
        if i % 2 == 1 {
            t.flags |= tcp::ACK;
            t.ack = 77;
        }
        fx.rx(Exception::Syn, Some(id), &fx.peer(t, &[]));
        assert_challenge(&mut fx, id);
        assert_alive(&mut fx, id);
    }
    // Also after the peer's FIN (CLOSE_WAIT): still synchronized.
    fx.set(id, |f| {
        f.st |= st::RX_FIN;
        f.rx_next_seq = f.rx_next_seq.wrapping_add(1);
    });
    fx.rx(
        Exception::FinReceived,
        Some(id),
        &fx.peer(ack_seg(nxt, 0, 0, None), &[]),
    );
    assert_eq!(fx.stack.flows()[1].state, "CLOSE_WAIT");
    fx.rx(
        Exception::Syn,
        Some(id),
        &fx.peer(syn(nxt + 10, full_opts(1)), &[]),
    );
    assert_challenge(&mut fx, id);
    assert_alive(&mut fx, id);
    let s = fx.stack.stats();
    assert_eq!((s.syn_challenged, s.challenge_acks), (7, 7));
}

#[test]
fn syn_in_time_wait_is_challenged_unless_it_is_a_new_incarnation() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, _) = fx.accept_one(1000);
    let nxt = irs + 1;
    let key_frame = fx.peer(ack_seg(nxt, 0, 0, None), &[]);
    // Active close: our FIN acknowledged, then theirs -> TIME_WAIT.
    fx.set(id, |f| f.st |= st::TX_FIN_REQ | st::TX_FIN_SENT);
    fx.ctl(
        APP,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: id,
            ..Default::default()
        },
    );
    fx.set(id, |f| f.st |= st::TX_FIN_ACKED);
    fx.rx(Exception::FinAcked, Some(id), &key_frame);
    fx.set(id, |f| {
        f.st |= st::RX_FIN;
        f.rx_next_seq = f.rx_next_seq.wrapping_add(1);
    });
    let last = fx.state(id);
    fx.rx(Exception::FinReceived, Some(id), &key_frame);
    assert_eq!(fx.stack.flows()[1].state, "TIME_WAIT");
    // TIME_WAIT keeps only the 4-tuple (timewait.rs): its segments arrive as
    // unknown-flow exceptions. An old SYN, and a SYN|ACK: challenge ACKs
    // from the final state (at most one per 100 ms), TIME_WAIT stays.
    let challenged = |fx: &mut Fx| {
        let ch = fx.one_tcp();
        assert_eq!(
            (ch.t.flags, ch.t.seq, ch.t.ack),
            (tcp::ACK, { last.tx_next_seq }, { last.rx_next_seq }),
            "challenge ACK"
        );
    };
    fx.nf(&fx.peer(syn(irs, tcp::TcpOptions::default()), &[]));
    challenged(&mut fx);
    fx.now += 100 * MS;
    let mut sa = syn(nxt + 100, tcp::TcpOptions::default());
    sa.flags |= tcp::ACK;
    fx.nf(&fx.peer(sa, &[]));
    challenged(&mut fx);
    assert_eq!(fx.stack.flows()[1].state, "TIME_WAIT");
    assert_eq!(fx.stack.stats().syn_challenged, 2);
}

#[test]
fn challenge_acks_are_a_token_bucket_of_1000_a_second() {
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, ..) = fx.accept_one(1000);
    let syn_frame = fx.peer(syn(12345, full_opts(1)), &[]);
    let burst = |fx: &mut Fx, n: usize| {
        for _ in 0..n {
            fx.rx(Exception::Syn, Some(id), &syn_frame);
        }
        fx.frames().len()
    };
    // A full bucket: 1000 at once.
    assert_eq!(burst(&mut fx, 1500), 1000);
    // It refills at one per millisecond.
    fx.now += 10 * MS;
    assert_eq!(burst(&mut fx, 100), 10);
    fx.now += 999 * MS;
    assert_eq!(burst(&mut fx, 1500), 999);
    // No second burst right after the first (a per-second window that
    // restarts would allow 2000 within a millisecond here).
    fx.now += MS;
    assert_eq!(burst(&mut fx, 1500), 1);
    // Over any second, at most 1000 plus the bucket's depth.
    let mut sent = 0;
    for _ in 0..1000 {
        fx.now += MS;
        sent += burst(&mut fx, 5);
    }
    assert_eq!(sent, 1000);
    let s = fx.stack.stats();
    assert_eq!(s.challenge_acks, 1000 + 10 + 999 + 1 + 1000);
    assert_eq!(s.challenge_acks_limited, 500 + 90 + 501 + 1499 + 4000);
    assert_eq!(s.syn_challenged, 1500 + 100 + 1500 + 1500 + 5000);
    assert_alive(&mut fx, id);
}

#[test]
fn blind_rsts_and_syns_with_random_sequence_numbers_never_reset() {
    // An off-path attacker knows the 4-tuple but not the sequence numbers:
    // 200k RSTs and SYNs with seq and ack uniform over 2^32 (seed fixed).
    let mut fx = Fx::new();
    fx.listen(16);
    let (id, irs, _) = fx.accept_one(0x8000_0000);
    let nxt = irs.wrapping_add(1);
    let mut rng = Rng::mixed(5961);
    let (mut in_window, mut exact) = (0u64, 0u64);
    for i in 0..200_000u32 {
        let s = rng.next_u32();
        if s == nxt {
            exact += 1;
            continue;
        }
        let mut t = ack_seg(s, rng.next_u32(), rng.next_u16(), None);
        t.flags = if i % 4 == 3 {
            tcp::SYN
        } else {
            tcp::RST | if i % 2 == 0 { tcp::ACK } else { 0 }
        };
        let exc = if t.flags & tcp::RST != 0 {
            if s.wrapping_sub(nxt) < 256 << 10 {
                in_window += 1;
            }
            Exception::Rst
        } else {
            Exception::Syn
        };
        fx.now += 10_000;
        fx.rx(exc, Some(id), &fx.peer(t, &[]));
    }
    assert_eq!(exact, 0, "the seed hits RCV.NXT: pick another");
    assert_alive(&mut fx, id);
    let s = fx.stack.stats();
    assert_eq!(s.rst_rx, 0);
    assert_eq!(s.syn_challenged, 50_000);
    assert!(in_window > 0, "some RSTs land in the window");
    assert_eq!(s.rst_challenged, in_window);
    assert_eq!(s.rst_out_of_window, 150_000 - in_window);
    // 2 s of attack: at most 1000 + 2 * 1000 challenge ACKs.
    assert!(s.challenge_acks <= 3000, "{}", s.challenge_acks);
    assert_eq!(
        s.challenge_acks + s.challenge_acks_limited,
        50_000 + in_window
    );
    assert_eq!(fx.frames().len() as u64, s.challenge_acks);
}
