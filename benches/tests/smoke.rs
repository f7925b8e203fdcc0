//! Smoke tests for `fastpath-bench`: every scenario at small sizes, checking
//! that the benchmark measures what it claims (every data segment
//! acknowledged — by a pure ACK or on our response, ACKs held as tasd holds
//! them by default — one segment per ACK, the right bytes in the RX ring and
//! on the wire). Never asserts on timing.

use std::process::Command;
use tas_benches::fastpath::{
    flow_index, tx_byte, Bench, Scenario, Setup, LOCAL_IP, LOCAL_MAC, LOCAL_PORT, PAYLOAD, PEER_MAC,
};
use tas_engine::wire::{frame, tcp};
use tas_nic::FrameBatch;

/// What the checker saw in the measured output batches.
#[derive(Debug, Default)]
struct Seen {
    acks: u64,
    segments: u64,
    frames: u64,
}

/// Runs `units` measured visits of one scenario with every output frame
/// checked against the peer's expectations.
fn check_scenario(scenario: Scenario, flows: usize, ring: u32, units: u64) {
    let ctx = format!("{} with {flows} flows, {ring} B rings", scenario.name());
    let mut setup = Setup::new(scenario, flows);
    setup.ring = ring;
    let mut b = Bench::new(setup).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    b.warm_up();
    b.verify()
        .unwrap_or_else(|e| panic!("{ctx}, after warm-up: {e}"));

    // Next ACK number and next segment sequence number we expect per flow.
    let mut next_ack: Vec<u32> = (0..flows).map(|fi| b.peer_seq(fi)).collect();
    let mut next_seg: Vec<u32> = (0..flows)
        .map(|fi| b.peer_acked(fi).wrapping_add(PAYLOAD as u32))
        .collect();
    // Where the first expected segment of each flow starts in its TX ring
    // (the checker cannot borrow the bench while it runs).
    let first_seg = next_seg.clone();
    let tx_pos0: Vec<u32> = (0..flows).map(|fi| b.tx_pos(fi, first_seg[fi])).collect();
    let stats0 = b.stats();
    let events0 = b.events().delivered;

    let mut seen = Seen::default();
    let mut check = |batch: &FrameBatch| {
        for f in batch.iter() {
            seen.frames += 1;
            let p = frame::parse_tcp_frame(f).unwrap_or_else(|e| panic!("{ctx}: bad frame {e:?}"));
            assert!(
                tcp::verify_checksum(p.ip.src(), p.ip.dst(), p.ip.payload()),
                "{ctx}: bad TCP checksum"
            );
            assert_eq!(p.eth.src(), LOCAL_MAC, "{ctx}");
            assert_eq!(p.eth.dst(), PEER_MAC, "{ctx}");
            assert_eq!(p.ip.src(), LOCAL_IP, "{ctx}");
            assert_eq!(p.tcp.src_port(), LOCAL_PORT, "{ctx}");
            assert!(p.tcp.timestamp().is_some(), "{ctx}: no timestamp option");
            let fi = flow_index(p.ip.dst(), p.tcp.dst_port())
                .filter(|&fi| fi < flows)
                .unwrap_or_else(|| panic!("{ctx}: frame to an unknown peer"));
            let payload = p.tcp.payload();
            match payload.len() {
                0 => {
                    assert_eq!(p.tcp.flags(), tcp::ACK, "{ctx}: pure ACK flags");
                    // Cumulative: one or more whole segments (a held ACK
                    // covers the segments that came meanwhile).
                    let adv = p.tcp.ack().wrapping_sub(next_ack[fi]);
                    assert!(
                        adv > 0 && adv.is_multiple_of(PAYLOAD as u32) && adv < 1 << 30,
                        "{ctx}: flow {fi} ACK number advances by {adv}"
                    );
                    next_ack[fi] = p.tcp.ack();
                    seen.acks += 1;
                }
                PAYLOAD => {
                    assert_eq!(p.tcp.flags(), tcp::ACK | tcp::PSH, "{ctx}: segment flags");
                    // The segment carries the ACK of what came in so far.
                    let adv = p.tcp.ack().wrapping_sub(next_ack[fi]);
                    assert!(
                        adv.is_multiple_of(PAYLOAD as u32) && adv < 1 << 30,
                        "{ctx}: flow {fi} ACK on a segment moves by {adv}"
                    );
                    next_ack[fi] = p.tcp.ack();
                    assert_eq!(p.tcp.seq(), next_seg[fi], "{ctx}: flow {fi} segment seq");
                    // Ring position of this segment's first byte.
                    let off = p.tcp.seq().wrapping_sub(first_seg[fi]) % ring;
                    let k0 = (tx_pos0[fi] + off) % ring;
                    for (k, &byte) in payload.iter().enumerate() {
                        let pos = (k0 + k as u32) % ring;
                        assert_eq!(byte, tx_byte(fi, pos, ring), "{ctx}: flow {fi} byte {k}");
                    }
                    next_seg[fi] = next_seg[fi].wrapping_add(PAYLOAD as u32);
                    seen.segments += 1;
                }
                n => panic!("{ctx}: unexpected {n}-byte segment"),
            }
        }
    };
    let rs = b.run(units, Some(&mut check));

    let data_in = match scenario {
        Scenario::Rx | Scenario::Pair | Scenario::Rpc => units,
        Scenario::AckTx => 0,
    };
    let segs_out = match scenario {
        Scenario::Rx => 0,
        Scenario::AckTx | Scenario::Pair | Scenario::Rpc => units,
    };
    assert_eq!(rs.units, units, "{ctx}");
    assert_eq!(rs.frames_in, units * scenario.frames_in(), "{ctx}");
    assert!(seen.acks <= data_in, "{ctx}: more ACKs than data segments");
    if scenario == Scenario::Rx {
        // Held ACKs go out alone at the end of each batch, and a flow's
        // segments of one batch (one poll round) share one ACK.
        assert!(
            seen.acks * tas_benches::fastpath::BATCH as u64 >= data_in,
            "{ctx}: {} ACKs for {data_in} segments",
            seen.acks
        );
    }
    assert_eq!(seen.segments, segs_out, "{ctx}: one segment per ACK");
    if scenario == Scenario::Rpc {
        // Every request's ACK rides on its response.
        assert_eq!(seen.acks, 0, "{ctx}: pure ACKs in a request/response");
    }
    assert_eq!(seen.frames, seen.acks + seen.segments, "{ctx}");
    assert_eq!(rs.frames_out, seen.frames, "{ctx}: frames counted");
    assert!(rs.frames_out <= units * scenario.frames_out(), "{ctx}");
    assert!(rs.events > 0, "{ctx}: no app notifications");
    assert_eq!(rs.events, b.events().delivered - events0, "{ctx}");

    let s = b.stats();
    assert_eq!(
        s.rx_frames - stats0.rx_frames,
        units * scenario.frames_in(),
        "{ctx}: rx_frames"
    );
    assert_eq!(
        s.rx_payload_bytes - stats0.rx_payload_bytes,
        data_in * PAYLOAD as u64,
        "{ctx}: payload bytes into RX rings"
    );
    assert_eq!(s.tx_frames - stats0.tx_frames, segs_out, "{ctx}: tx_frames");
    assert_eq!(s.exceptions, 0, "{ctx}: {:?}", b.exceptions());
    // Every flow's state agrees with the peer, and the last `ring` bytes
    // of every RX ring are the peer's bytes in order.
    b.verify().unwrap_or_else(|e| panic!("{ctx}: {e}"));
    for fi in 0..flows {
        // The last ACK (pure or on a segment) covered everything the peer
        // sent; the last segment is the one still in flight.
        if data_in > 0 {
            assert_eq!(next_ack[fi], b.peer_seq(fi), "{ctx}: flow {fi} last ACK");
        }
        if segs_out > 0 {
            // In flight: [peer_acked, peer_acked + 64); the next one follows.
            let want = b.peer_acked(fi).wrapping_add(PAYLOAD as u32);
            assert_eq!(next_seg[fi], want, "{ctx}: flow {fi} last segment");
        }
    }
}

#[test]
fn rx_scenario_acks_every_segment_and_fills_rings() {
    for flows in [1, 5, 64, 300] {
        check_scenario(Scenario::Rx, flows, 1024, 3000);
    }
    // Default ring size: with one flow the app frees half a ring at a time.
    check_scenario(Scenario::Rx, 1, 4096, 3000);
}

#[test]
fn ack_tx_scenario_sends_one_segment_per_ack() {
    for flows in [1, 5, 64, 300] {
        check_scenario(Scenario::AckTx, flows, 1024, 3000);
    }
}

#[test]
fn pair_scenario_does_both() {
    for flows in [1, 5, 64, 300] {
        check_scenario(Scenario::Pair, flows, 1024, 3000);
    }
}

#[test]
fn rpc_scenario_answers_every_request_with_one_frame() {
    for flows in [1, 5, 64, 300] {
        check_scenario(Scenario::Rpc, flows, 1024, 3000);
    }
}

#[test]
fn binary_quick_run_and_callgrind_mode() {
    let bin = env!("CARGO_BIN_EXE_fastpath-bench");
    let out = Command::new(bin)
        .args(["--quick", "--flows", "1,64", "--packets", "2000"])
        .output()
        .expect("run fastpath-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fastpath-bench failed:\n{stdout}\n{stderr}"
    );
    for s in Scenario::ALL {
        assert!(
            stdout.contains(s.label()),
            "no row for {}:\n{stdout}",
            s.name()
        );
    }
    assert!(stdout.contains("1->64"), "no slowdown column:\n{stdout}");
    assert!(!stderr.contains("BROKEN"), "{stderr}");

    let out = Command::new(bin)
        .args(["--callgrind", "ack_tx", "--flows", "8", "--packets", "1000"])
        .output()
        .expect("run fastpath-bench --callgrind");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("units=1000 frames_in=1000 frames_out=1000"),
        "{stdout}"
    );

    // --floor: the memory floor's row at each flow count and the pair's
    // comparison line (numbers are not checked: a benchmark).
    let out = Command::new(bin)
        .args([
            "--quick",
            "--flows",
            "1,64",
            "--packets",
            "2000",
            "--scenarios",
            "pair",
            "--floor",
        ])
        .output()
        .expect("run fastpath-bench --floor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("the pair's lines, no TCP")
            && stdout.contains("floor's increase 1 -> 64 flows")
            && stdout.contains("grown by the floor alone"),
        "{stdout}"
    );

    let bad = Command::new(bin)
        .args(["--callgrind", "nope"])
        .output()
        .expect("run fastpath-bench");
    assert_eq!(bad.status.code(), Some(2), "bad mode must be a usage error");
}
