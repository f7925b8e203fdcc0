//! The transmit side of a flow: how much it may send, and building its
//! segments (data, FIN and pure ACKs) into frames.

use super::ring::ring_read;
use super::{rx, Config, Output, Stats};
use crate::flow::{cfg, st, FlowState, RxCold};
use crate::wire::frame::{self, HdrTemplate, TmplLocal, TmplPath};
use crate::wire::{ipv4, tcp};
use tas_abi::PayloadMem;

/// Bytes the flow may put on the wire now (window and congestion window).
#[inline]
pub(super) fn send_allowance(f: &FlowState) -> u32 {
    let mut allowed = f.rx_remote_avail.saturating_sub(f.tx_sent);
    if f.tx_cwnd != 0 {
        allowed = allowed.min(f.tx_cwnd.saturating_sub(f.tx_sent));
    }
    allowed
}

#[inline]
pub(super) fn fin_pending(f: &FlowState) -> bool {
    f.st & (st::TX_FIN_REQ | st::TX_FIN_SENT) == st::TX_FIN_REQ
}

/// Largest payload of one segment (the MSS less our options).
#[inline]
pub(super) fn payload_max(f: &FlowState) -> u32 {
    (f.mss as u32).saturating_sub(f.opt_len()).max(1)
}

/// Whether the scheduler should be asked to send for this flow (new data or
/// FIN; see [`may_resend`] for loss recovery).
#[inline(always)]
pub(super) fn can_send(f: &FlowState) -> bool {
    (f.tx_avail > 0 && send_allowance(f) > 0) || (fin_pending(f) && f.tx_avail == 0)
}

/// [`can_send`] or [`may_resend`]: the send loop should look at the flow.
/// With nothing queued (a request/response flow whose ACK just came in)
/// one mask test of the state says no.
#[inline(always)]
pub(super) fn may_activate(f: &FlowState) -> bool {
    if f.tx_avail == 0 {
        let s = f.st & (st::TX_FIN_REQ | st::TX_FIN_SENT | st::TX_RECOVERY | st::TX_PROBE);
        s != 0 && (s & (st::TX_FIN_REQ | st::TX_FIN_SENT) == st::TX_FIN_REQ || may_resend(f))
    } else {
        send_allowance(f) > 0 || may_resend(f)
    }
}

/// A flow in loss recovery or a probe episode may have something to
/// (re)send that only its cold record knows: the send loop should look.
#[inline]
pub(super) fn may_resend(f: &FlowState) -> bool {
    f.st & (st::TX_RECOVERY | st::TX_PROBE) != 0
}

/// Flow `f`'s header template `t`, first rebuilt if it does not describe
/// the flow's addresses, ports and next hop and this engine's MAC, TTL and
/// checksum offload (never built yet, or the slow path changed the next
/// hop).
#[inline(always)]
pub(super) fn template<'a>(
    cfgc: &Config,
    local: TmplLocal,
    f: &FlowState,
    t: &'a mut HdrTemplate,
) -> &'a HdrTemplate {
    let path = TmplPath::new(
        f.local_ip,
        f.remote_ip,
        f.local_port,
        f.remote_port,
        f.remote_mac,
    );
    if !t.matches_path(local, path) {
        rebuild_template(cfgc, local.offload(), f, t);
    }
    t
}

#[cold]
#[inline(never)]
fn rebuild_template(cfgc: &Config, offload: bool, f: &FlowState, t: &mut HdrTemplate) {
    *t = HdrTemplate::new(
        cfgc.local_mac,
        f.remote_mac,
        f.local_ip,
        f.remote_ip,
        f.local_port,
        f.remote_port,
        cfgc.ttl,
        offload,
    );
}

/// Builds one segment of flow `f` into `buf`: ACK flag always, plus `flags`;
/// `payload` is (ring position, length) in the TX ring. Returns the frame
/// length, or 0 if it could not be built. `sack` are the SACK blocks to
/// send (pure ACKs only, see [`send_ack`]); data segments never carry any,
/// as the MSS only leaves room for the timestamp option. `t` is the flow's
/// header template ([`template`]); segments with SACK blocks are built
/// field by field instead.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn build_segment<M: PayloadMem>(
    buf: &mut [u8],
    cfgc: &Config,
    f: &FlowState,
    t: &HdrTemplate,
    seq_no: u32,
    flags: u8,
    sack: &[(u32, u32)],
    now_ts: u32,
    payload: (u32, u32),
    mem: &M,
) -> usize {
    let ecn = if payload.1 > 0 && f.cfg & cfg::ECN != 0 {
        ipv4::ECN_ECT0
    } else {
        ipv4::ECN_NOT_ECT
    };
    let window = (f.rx_avail >> f.rcv_wscale).min(u16::MAX as u32) as u16;
    let ts = if f.cfg & cfg::TS != 0 {
        Some((now_ts, f.tx_next_ts))
    } else {
        None
    };
    if !sack.is_empty() {
        return build_sack_segment(
            buf,
            cfgc,
            f,
            t.offload(),
            seq_no,
            flags,
            sack,
            ecn,
            window,
            ts,
        );
    }
    let len = payload.1 as usize;
    let Some((off, sum)) = t.emit(
        buf,
        ecn,
        seq_no,
        f.rx_next_seq,
        flags | tcp::ACK,
        window,
        ts,
        len,
    ) else {
        return 0;
    };
    let end = off + len;
    let Some(seg) = buf.get_mut(off..end) else {
        return 0;
    };
    if len > 0 && !t.offload() && f.tx_len - payload.0 >= payload.1 {
        // The common case: the payload does not wrap around the ring's
        // end, and is summed while it is copied.
        let Some(ps) = mem.read_sum(f.mem, f.tx_base.wrapping_add(payload.0), seg) else {
            return 0;
        };
        t.finish_sum(buf, sum, ps);
        return end;
    }
    if len > 0 && !ring_read(mem, f.mem, f.tx_base, f.tx_len, payload.0, seg) {
        return 0;
    }
    t.finish(buf, off, len, sum);
    end
}

/// A pure ACK with SACK blocks, field by field (out of line: only while
/// out-of-order data is held or after a duplicate).
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn build_sack_segment(
    buf: &mut [u8],
    cfgc: &Config,
    f: &FlowState,
    t_offload: bool,
    seq_no: u32,
    flags: u8,
    sack: &[(u32, u32)],
    ecn: u8,
    window: u16,
    ts: Option<(u32, u32)>,
) -> usize {
    let seg = frame::FastSeg {
        src_mac: cfgc.local_mac,
        dst_mac: f.remote_mac,
        src_ip: f.local_ip,
        dst_ip: f.remote_ip,
        ttl: cfgc.ttl,
        ecn,
        src_port: f.local_port,
        dst_port: f.remote_port,
        seq: seq_no,
        ack: f.rx_next_seq,
        flags: flags | tcp::ACK,
        window,
        ts,
        sack,
    };
    let Some(off) = frame::emit_fast(buf, &seg, 0) else {
        return 0;
    };
    frame::finish_fast(buf, &seg, off, 0);
    if t_offload {
        frame::tcp_csum_to_partial(&mut buf[..off]);
    }
    off
}

/// Emits a pure ACK of flow `f` (plus `flags`). When SACK was negotiated
/// it reports what the receive side holds (`c`): RFC 2018 §4 wants the
/// out-of-order intervals on every ACK while that data is held, RFC 2883 a
/// D-SACK block first on the ACK a duplicate draws (`dsack`).
#[allow(clippy::too_many_arguments)]
pub(super) fn send_ack<M: PayloadMem, O: Output>(
    cfgc: &Config,
    f: &FlowState,
    t: &HdrTemplate,
    c: &RxCold,
    flags: u8,
    dsack: bool,
    now_ts: u32,
    mem: &M,
    out: &mut O,
    stats: &mut Stats,
) {
    let blocks;
    let sack: &[(u32, u32)] = if f.cfg & cfg::SACK != 0 && (f.rx_ooo_len > 0 || dsack) {
        blocks = rx::sack_blocks(f, c, dsack);
        &blocks.0[..blocks.1]
    } else {
        &[]
    };
    // Built in place (no closure: the NIC batch's slot is written here).
    if let Some(b) = out.tx_buf() {
        let n = build_segment(
            b,
            cfgc,
            f,
            t,
            f.tx_next_seq,
            flags,
            sack,
            now_ts,
            (0, 0),
            mem,
        );
        out.tx_commit(n);
        stats.acks_sent += 1;
        if dsack && !sack.is_empty() {
            stats.dsack_sent += 1;
        }
    } else {
        stats.tx_full += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `may_activate` is `can_send || may_resend` for every state byte,
    /// queued or not, window and congestion window open or closed.
    #[test]
    fn may_activate_is_can_send_or_may_resend() {
        for st in 0..=255u8 {
            for tx_avail in [0, 1, 5000] {
                for (wnd, sent, cwnd) in [
                    (0, 0, 0),
                    (100, 0, 0),
                    (100, 100, 0),
                    (100, 0, 50),
                    (100, 50, 50),
                ] {
                    let f = FlowState {
                        st,
                        tx_avail,
                        rx_remote_avail: wnd,
                        tx_sent: sent,
                        tx_cwnd: cwnd,
                        ..Default::default()
                    };
                    assert_eq!(
                        may_activate(&f),
                        can_send(&f) || may_resend(&f),
                        "st {st:#x} avail {tx_avail} wnd {wnd} sent {sent} cwnd {cwnd}"
                    );
                }
            }
        }
    }
}
