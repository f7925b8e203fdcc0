//! ACKs that wait for data to ride on (`Config::ack_delay_ns`): an ACK for
//! in-order data is held; a segment of ours carries it, else it goes out
//! alone when the delay ends. Up to 8 segments share it (the 8th is ACKed
//! at once); out-of-order data that opens a hole, the last hole filled,
//! duplicates and FINs are ACKed at once (RFC 5681 §4.2, RFC 9293
//! §3.8.6.3; the rest in `round.rs`).

use super::*;

const DELAY: u64 = 40_000;

fn dfx() -> Fx {
    Fx::new(FlowOpts {
        ack_delay_ns: DELAY,
        ..Default::default()
    })
}

/// The app answers the 10 bytes received first with 20 of its own; the
/// response carries the ACK of those 10.
fn respond(fx: &mut Fx) {
    answer(fx, 0, 10);
}

/// The app sends 20 bytes, our stream's bytes `at..at + 20`; the segment
/// carries the ACK of the peer's first `acked` bytes.
fn answer(fx: &mut Fx, at: u32, acked: u32) {
    fx.write(20, 0).unwrap();
    fx.poll();
    recv!(
        fx,
        Seg {
            flags: ACK | PSH,
            ..fx.ours_data(at, 20, acked, 32_768 - acked)
        }
    );
}

#[test]
fn a_held_ack_goes_out_alone_when_no_data_follows() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), Some(T0 + DELAY));
    assert_eq!(fx.flush_acks(), 0, "not due yet");
    fx.now += DELAY - 1;
    assert_eq!(fx.flush_acks(), 0);
    recv_nothing!(fx);
    fx.now += 1;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!(fx.fp.poll_at(), None);
    assert_eq!(fx.flow().notify & notify::ACK_HELD, 0);
    assert_eq!((fx.fp.stats.acks_held, fx.fp.stats.acks_delayed), (1, 1));
    // The data reached the app at once all the same.
    assert_eq!(fx.notifications(), vec![fx.ev(10, 0, 0)]);
}

#[test]
fn a_held_ack_rides_on_the_response() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    fx.now += 5_000;
    respond(&mut fx);
    recv_nothing!(fx);
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 0, "the response carried the ACK");
    recv_nothing!(fx);
    assert_eq!((fx.fp.stats.acks_sent, fx.fp.stats.acks_delayed), (0, 0));
}

/// A held ACK that went out alone and was followed by more data from the
/// peer before any answer is counted (`acks_awaited`): the peer waited for
/// it (a Nagle sender's second part), which a longer hold would only
/// delay. One followed by our answer is not, nor one followed by an
/// immediate ACK.
#[test]
fn data_right_after_a_lone_ack_shows_the_peer_waited_for_it() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_ne!(fx.flow().notify & notify::ACK_ALONE, 0);
    // The second part: the peer waited.
    send!(fx, fx.data(10, 10));
    assert_eq!(fx.flow().notify & notify::ACK_ALONE, 0);
    assert_eq!((fx.fp.stats.acks_delayed, fx.fp.stats.acks_awaited), (1, 1));
    // Its ACK also goes alone; then our answer: not awaited.
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 20, 32_768 - 20));
    answer(&mut fx, 0, 20);
    assert_eq!(fx.flow().notify & notify::ACK_ALONE, 0, "answered");
    send!(fx, fx.data(20, 10));
    assert_eq!((fx.fp.stats.acks_delayed, fx.fp.stats.acks_awaited), (2, 1));
}

/// The poll loop lengthens the hold while answers come after it
/// (`FastPath::set_ack_delay`): the next ACK waits the longer hold, and an
/// answer within it still carries the ACK; an ACK held before keeps its
/// deadline; 0 (or a fast path configured without holding) is not taken.
#[test]
fn a_longer_hold_waits_longer_for_the_answer() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    fx.fp.set_ack_delay(5 * DELAY);
    assert_eq!(fx.fp.ack_delay(), 5 * DELAY);
    assert_eq!(
        fx.fp.poll_at(),
        Some(T0 + DELAY),
        "held before: its deadline"
    );
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    // The next one is held five times as long, and the answer at 4x the
    // old hold carries it.
    let t = fx.now;
    send!(fx, fx.data(10, 10));
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), Some(t + 5 * DELAY));
    fx.now += 4 * DELAY;
    assert_eq!(fx.flush_acks(), 0, "not due yet");
    recv_nothing!(fx);
    answer(&mut fx, 0, 20);
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 0, "the response carried the ACK");
    assert_eq!((fx.fp.stats.acks_held, fx.fp.stats.acks_delayed), (2, 1));
    fx.fp.set_ack_delay(0);
    assert_eq!(fx.fp.ack_delay(), 5 * DELAY, "0 is not taken");
    // Without holding configured, nothing is held whatever is asked.
    let mut off = Fx::new(FlowOpts::default());
    off.fp.set_ack_delay(DELAY);
    assert_eq!(off.fp.ack_delay(), 0);
}

#[test]
fn eight_segments_share_a_held_ack_and_the_eighth_sends_it() {
    let mut fx = dfx();
    for k in 0..7 {
        send!(fx, fx.data(k * 10, 10));
        recv_nothing!(fx);
    }
    assert_eq!(fx.fp.stats.acks_coalesced, 6);
    send!(fx, fx.data(70, 10));
    recv!(fx, fx.ours(0, 80, 32_768 - 80));
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 0, "the held one went with it");
    // And the next one is held again, and goes out when the delay ends.
    send!(fx, fx.data(80, 10));
    recv_nothing!(fx);
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(0, 90, 32_768 - 90));
}

#[test]
fn out_of_order_hole_filling_duplicate_and_fin_are_acked_at_once() {
    let mut fx = dfx();
    // Out of order: SACK at once.
    send!(fx, fx.data(100, 10));
    recv!(fx, fx.sack(fx.ours(0, 0, 32_768), &[(100, 110)]));
    // Filling the hole: at once.
    send!(fx, fx.data(0, 100));
    recv!(fx, fx.ours(0, 110, 32_768 - 110));
    // A duplicate: at once, with D-SACK.
    send!(fx, fx.data(50, 10));
    recv!(fx, fx.sack(fx.ours(0, 110, 32_768 - 110), &[(50, 60)]));
    // In order again: held.
    send!(fx, fx.data(110, 10));
    recv_nothing!(fx);
    // Data with FIN: at once (and the held ACK is covered by it).
    send!(
        fx,
        Seg {
            flags: ACK | PSH | FIN,
            ..fx.data(120, 5)
        }
    );
    recv!(fx, fx.ours(0, 126, 32_768 - 125));
    exc!(fx, Exception::FinReceived, Some(fx.id));
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 0);
    recv_nothing!(fx);
}

#[test]
fn a_window_trimmed_segment_is_acked_at_once() {
    let mut fx = Fx::new(FlowOpts {
        ack_delay_ns: DELAY,
        rx_len: 1000,
        ..Default::default()
    });
    send!(fx, fx.data(0, 990));
    recv_nothing!(fx);
    // Only 10 bytes fit: the ACK (window 0) goes out at once.
    send!(fx, fx.data(990, 100));
    recv!(fx, fx.ours(0, 1000, 0));
}

#[test]
fn without_a_delay_every_segment_is_acked() {
    let mut fx = fx();
    send!(fx, fx.data(0, 10));
    recv!(fx, fx.ours(0, 10, 32_768 - 10));
    assert_eq!(fx.fp.poll_at(), None);
    assert_eq!(fx.fp.stats.acks_held, 0);
}

/// A held ACK a response carried leaves no pure ACK behind, even when
/// every held entry is flushed; the next held ACK, with no data after it,
/// still goes out alone when its delay ends.
#[test]
fn a_carried_held_ack_leaves_no_pure_ack_and_the_next_one_still_goes_alone() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    respond(&mut fx);
    fx.now += DELAY;
    assert_eq!(fx.fp.flush_acks(fx.now, true, &fx.mem, &mut fx.out), 0);
    recv_nothing!(fx);
    assert_eq!((fx.fp.stats.acks_sent, fx.fp.stats.acks_delayed), (0, 0));
    assert_eq!(fx.fp.poll_at(), None);
    // No data follows the next one: a pure ACK when its delay ends, once.
    send!(fx, fx.data(10, 10));
    recv_nothing!(fx);
    fx.now += DELAY - 1;
    assert_eq!(fx.flush_acks(), 0);
    recv_nothing!(fx);
    fx.now += 1;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(20, 20, 32_768 - 20));
    recv_nothing!(fx);
    assert_eq!((fx.fp.stats.acks_held, fx.fp.stats.acks_delayed), (2, 1));
}

/// An ACK held again after a response carried the first one goes out by
/// its own entry's deadline, once: the first entry, due earlier, finds
/// the flow owing an ACK again but for a hold that began after our data
/// went out, and is skipped (it sent the ACK early before).
#[test]
fn an_ack_held_again_after_a_carried_one_goes_out_once() {
    let mut fx = dfx();
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    fx.now += 5_000;
    respond(&mut fx);
    send!(fx, fx.data(10, 10));
    recv_nothing!(fx);
    fx.now = T0 + DELAY;
    assert_eq!(fx.flush_acks(), 0);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_superseded, 1);
    fx.now = T0 + 5_000 + DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(20, 20, 32_768 - 20));
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), None);
    assert_eq!((fx.fp.stats.acks_held, fx.fp.stats.acks_delayed), (2, 1));
}

/// With out-of-order data held our data segments carry no SACK blocks
/// (RFC 2018 §4), so they do not carry a held ACK either: it goes out
/// alone, with the blocks, when its delay ends.
#[test]
fn a_held_ack_with_sack_blocks_is_not_dropped_by_a_data_segment() {
    let mut fx = dfx();
    send!(fx, fx.data(100, 10));
    recv!(fx, fx.sack(fx.ours(0, 0, 32_768), &[(100, 110)]));
    // Extends the most recent interval at its right edge: held.
    send!(fx, fx.data(110, 10));
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_held, 1);
    fx.write(20, 0).unwrap();
    fx.poll();
    let d = fx.next_frame().expect("our data segment");
    assert_eq!(d.payload, pat(0, 20));
    assert_eq!(d.ack, fx.rseq(0));
    assert!(d.sack.is_empty());
    fx.now += DELAY;
    assert_eq!(fx.flush_acks(), 1);
    let a = fx.next_frame().expect("the held ACK");
    assert!(a.payload.is_empty());
    assert_eq!(a.ack, fx.rseq(0));
    assert_eq!(a.sack, vec![(fx.rseq(100), fx.rseq(120))]);
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_delayed, 1);
}

/// An entry whose ACK our response carried stays queued (only the newest
/// is taken back, and only by a direct send); when the flow's next hold
/// began before that entry came due, the entry is skipped instead of
/// sending the newer hold's ACK early, and the newer entry keeps its own
/// deadline. With a grown hold (500 µs) and 60 µs round trips this sent a
/// quarter to a half of the held ACKs alone (a one-connection echo server
/// under tasd, `tasctl stats`).
#[test]
fn an_entry_whose_ack_was_carried_does_not_cut_the_next_hold_short() {
    let mut fx = dfx();
    fx.fp.set_ack_delay(5 * DELAY);
    send!(fx, fx.data(0, 10));
    recv_nothing!(fx);
    fx.now += DELAY;
    respond(&mut fx);
    // The next request, held from here until T0 + 7 x DELAY.
    fx.now += DELAY;
    send!(fx, fx.data(10, 10));
    recv_nothing!(fx);
    assert_eq!(fx.fp.poll_at(), Some(T0 + 5 * DELAY), "the first entry");
    fx.now = T0 + 5 * DELAY;
    assert_eq!(
        fx.flush_acks(),
        0,
        "the first entry's ACK went out with the response"
    );
    recv_nothing!(fx);
    assert_eq!(fx.fp.stats.acks_superseded, 1);
    assert_eq!(
        fx.fp.poll_at(),
        Some(T0 + 7 * DELAY),
        "the newer hold's own"
    );
    // The answer to the second request carries its ACK.
    fx.now += DELAY;
    answer(&mut fx, 20, 20);
    fx.now = T0 + 7 * DELAY;
    assert_eq!(fx.flush_acks(), 0);
    recv_nothing!(fx);
    assert_eq!((fx.fp.stats.acks_held, fx.fp.stats.acks_delayed), (2, 0));
}

/// The same without a newer hold: the entry left behind by a carried ACK
/// finds nothing owed. And a hold whose flow sent no new data since it
/// began is not skipped, whatever else happened.
#[test]
fn an_entry_is_skipped_only_for_a_newer_hold() {
    let mut fx = dfx();
    fx.fp.set_ack_delay(5 * DELAY);
    send!(fx, fx.data(0, 10));
    fx.now += DELAY;
    respond(&mut fx);
    fx.now = T0 + 5 * DELAY;
    assert_eq!(fx.flush_acks(), 0);
    assert_eq!(fx.fp.stats.acks_superseded, 0, "nothing was owed");
    // A hold with no data of ours since: its ACK goes out when due.
    let t = fx.now;
    send!(fx, fx.data(10, 10));
    fx.now = t + 5 * DELAY;
    assert_eq!(fx.flush_acks(), 1);
    recv!(fx, fx.ours(20, 20, 32_768 - 20));
    assert_eq!(
        (fx.fp.stats.acks_delayed, fx.fp.stats.acks_superseded),
        (1, 0)
    );
}
