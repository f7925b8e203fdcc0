//! The RFC 5961 §5.2 ACK acceptability check (SND.UNA - MAX.SND.WND <=
//! SEG.ACK <= SND.NXT), its challenge ACKs and their rate limit (§7).

use super::*;
use crate::seq;

const M: u32 = 1448;

/// 3000 bytes written, only the first segment sent (congestion window).
fn fx_partly_sent() -> Fx {
    let mut fx = Fx::new(FlowOpts {
        tx_cwnd: M,
        ..Default::default()
    });
    fx.write(3000, 0).unwrap();
    assert_eq!(fx.poll(), 1);
    fx.out.frames.clear();
    fx
}

#[test]
fn ack_for_queued_but_unsent_data_is_challenged_and_dropped() {
    let mut fx = fx_partly_sent();
    let f = fx.flow();
    // The app queued 3000 bytes, 1448 went out: SND.NXT is at 1448.
    fx.peer_ack = 2000;
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(M, 0, 32_768));
    recv_nothing!(fx);
    assert_eq!(fx.flow(), f, "nothing freed, no data taken");
    assert!(fx.notifications().is_empty());
    let s = fx.fp.stats;
    assert_eq!((s.future_acks, s.challenge_acks), (1, 1));
    assert!(fx.mem.regions[MEM as usize][RX_BASE as usize..][..100]
        .iter()
        .all(|&b| b == GUARD));
    // SND.NXT itself is fine.
    fx.peer_ack = M;
    send!(fx, fx.peer(0));
    assert_eq!({ fx.flow().tx_sent }, 0);
}

#[test]
fn ack_below_snd_una_minus_max_window_is_challenged_and_dropped() {
    let mut fx = Fx::new(FlowOpts {
        tx_len: 65_536,
        ..Default::default()
    });
    // 64 KiB window (16384 << 2); the peer acknowledges 60000 bytes.
    fx.write(60_000, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.peer_ack = 60_000;
    send!(fx, fx.peer(0));
    // The window shrinks: MAX.SND.WND stays the largest ever seen.
    fx.peer_win = 100;
    send!(fx, fx.peer(0));
    let max_wnd = 16_384u32 << 2;
    // Just acceptable: ACK ignored, data taken, window not changed.
    fx.peer_ack = 60_000u32.wrapping_sub(max_wnd);
    fx.peer_win = 5000;
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(60_000, 10, 32_768 - 10));
    assert_eq!({ fx.flow().rx_remote_avail }, 100 << 2);
    // One older: dropped with a challenge ACK.
    fx.peer_ack = 60_000u32.wrapping_sub(max_wnd + 1);
    send!(fx, fx.data(10, 10));
    recv!(fx, fx.ours(60_000, 10, 32_768 - 10));
    assert_eq!(fx.notifications(), vec![fx.ev(10, 60_000, 0)]);
    assert_eq!({ fx.flow().rx_next_seq }, fx.rseq(10), "data dropped");
    let s = fx.fp.stats;
    assert_eq!((s.acks_old, s.acks_too_old, s.challenge_acks), (1, 1, 1));
}

#[test]
fn max_snd_wnd_starts_with_the_handshake_window() {
    // The flow is installed with a 64 KiB window; it shrinks right away.
    let mut fx = fx();
    fx.write(20_000, 0).unwrap();
    fx.poll();
    fx.out.frames.clear();
    fx.peer_ack = 20_000;
    fx.peer_win = 1;
    send!(fx, fx.peer(0));
    fx.peer_ack = 20_000u32.wrapping_sub(65_536);
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(20_000, 10, 32_768 - 10));
    assert_eq!((fx.fp.stats.acks_old, fx.fp.stats.acks_too_old), (1, 0));
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut fx = fx_partly_sent();
    fx.peer_ack = 2000;
    for _ in 0..1100 {
        send!(fx, fx.peer(0));
    }
    assert_eq!(fx.out.frames.len(), 1000);
    let s = fx.fp.stats;
    assert_eq!(
        (s.future_acks, s.challenge_acks, s.challenge_acks_limited),
        (1100, 1000, 100)
    );
    fx.out.frames.clear();
    // The bucket refills at 1000 per second.
    fx.now += 10_000_000;
    for _ in 0..20 {
        send!(fx, fx.peer(0));
    }
    assert_eq!(fx.out.frames.len(), 10);
    fx.out.frames.clear();
}

/// The off-path attack from the issue: blind ACKs with random numbers
/// (every one outside (SND.UNA, SND.NXT], which would be indistinguishable
/// from the peer's). Before, an ACK anywhere up to the end of the app's
/// queued data freed TX ring space the peer never got.
#[test]
fn hundred_thousand_blind_acks_change_nothing() {
    let mut fx = Fx::new(FlowOpts {
        tx_len: 1 << 20,
        tx_cwnd: 10 * M,
        ..Default::default()
    });
    fx.write(1 << 20, 0).unwrap();
    assert_eq!(fx.poll(), 10);
    fx.out.frames.clear();
    let before = fx.flow();
    let (una, nxt) = (before.snd_una(), { before.tx_next_seq });
    let mut rng = tas_testkit::Rng::mixed(5961);
    let mut n = 0;
    while n < 100_000 {
        let ack = rng.next_u64() as u32;
        if seq::gt(ack, una) && seq::le(ack, nxt) {
            continue;
        }
        let s = Seg { ack, ..fx.peer(0) };
        let frame = fx.frame(&s);
        fx.send_raw(&frame);
        n += 1;
        fx.now += 10_000;
    }
    fx.out.frames.clear();
    let after = fx.flow();
    assert_eq!(
        (after.snd_una(), { after.tx_avail }, { after.tx_sent }, {
            after.cnt_ackb
        }),
        (una, { before.tx_avail }, { before.tx_sent }, 0)
    );
    assert!(fx.notifications().is_empty());
    let s = fx.fp.stats;
    assert_eq!(s.future_acks + s.acks_too_old + s.acks_old, 100_000);
    assert!(s.challenge_acks <= 1000 + 1000, "{s:?}");
    // And the connection still works.
    fx.peer_ack = 10 * M;
    send!(fx, fx.peer(0));
    assert_eq!(fx.poll(), 10);
}

/// Half the sequence space away from SND.UNA, `seq::gt(ack, una)` and
/// `seq::le(ack, una)` both hold: with nothing in flight, that ACK once
/// "acknowledged" 2^31 bytes (found by `rx_never_panics`).
#[test]
fn ack_half_the_sequence_space_away_is_not_taken() {
    let mut fx = fx();
    fx.peer_ack = 1 << 31;
    let f = fx.flow();
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 0, 32_768));
    assert_eq!(fx.flow(), f);
    assert_eq!(fx.fp.stats.challenge_acks, 1);
}
