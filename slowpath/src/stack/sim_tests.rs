//! In-process integration tests: two hosts, each a real fast path and slow
//! path, over the simulated wire (see [`super::sim`]).

use tas_abi::{ctl, CtlMsg};
use tas_engine::flow::st;

use super::sim::*;
use super::{AppId, StackConfig};

const SERVER: AppId = 1;
const CLIENT: AppId = 2;
const PORT: u16 = 8080;
const MB: usize = 1 << 20;

fn server_template(data: Vec<u8>) -> FlowApp {
    FlowApp {
        tx_data: data,
        fin: FinPolicy::AfterEof,
        close_when_done: true,
        ..Default::default()
    }
}

fn client_template(data: Vec<u8>) -> FlowApp {
    FlowApp {
        tx_data: data,
        fin: FinPolicy::AfterSend,
        close_when_done: true,
        ..Default::default()
    }
}

/// Server app on host 0 (A), client app on host 1 (B).
fn setup(sim: &mut Sim, up: usize, down: usize) -> (Vec<u8>, Vec<u8>) {
    let to_server = pattern(1, up);
    let to_client = pattern(2, down);
    sim.hosts[0]
        .apps
        .insert(SERVER, App::new(server_template(to_client.clone())));
    sim.hosts[1]
        .apps
        .insert(CLIENT, App::new(client_template(to_server.clone())));
    (to_server, to_client)
}

fn only_flow(sim: &mut Sim, host: usize, app: AppId) -> FlowApp {
    let a = sim.hosts[host].app(app);
    assert_eq!(a.flows.len(), 1, "expected one flow");
    a.flows.values().next().cloned().unwrap()
}

fn all_released(s: &Sim, host: usize, app: AppId, n: usize) -> bool {
    s.hosts[host].apps.get(&app).is_some_and(|a| {
        a.flows.len() + a.history.len() == n
            && a.flows.values().all(|f| f.released)
            && a.history.iter().all(|f| f.released)
    })
}

/// Handshake, 1 MB each way, graceful close initiated by the client, then
/// checks of everything that must hold afterwards.
fn transfer_and_close(sim: &mut Sim, limit: u64) {
    transfer_and_close_with(sim, limit, MB, MB)
}

fn transfer_and_close_with(sim: &mut Sim, limit: u64, up: usize, down: usize) {
    let (up, down) = setup(sim, up, down);
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    let ok = sim.run_until(limit, |s| {
        all_released(s, 0, SERVER, 1) && all_released(s, 1, CLIENT, 1)
    });
    let (c, sv) = (only_flow(sim, 1, CLIENT), only_flow(sim, 0, SERVER));
    assert!(
        ok,
        "transfer did not finish: client rx {} tx_acked {} eof {} rel {}, server rx {} tx_acked {} eof {} rel {}; flows A {:?} B {:?}",
        c.rx_data.len(),
        c.tx_acked,
        c.eof,
        c.released,
        sv.rx_data.len(),
        sv.tx_acked,
        sv.eof,
        sv.released,
        sim.hosts[0].stack.flows(),
        sim.hosts[1].stack.flows()
    );
    assert!(sv.rx_data == up, "server received corrupted data");
    assert!(c.rx_data == down, "client received corrupted data");
    // (F_TX_FIN_ACKED may be overtaken by RELEASED; EOF may not.)
    assert!(c.eof && sv.eof);
    assert_eq!(c.reset, None);
    assert_eq!(sv.reset, None);
    assert_eq!(sim.wire.rsts, [0, 0], "a graceful close never sends RST");
    for h in 0..2 {
        let host = &sim.hosts[h];
        assert_eq!(host.table.len(), 0, "host {h} table not empty");
        // TIME_WAIT holds a 4-tuple, no flow and no rings.
        assert!(host
            .stack
            .flows()
            .iter()
            .all(|f| f.state == "LISTEN" || (f.state == "TIME_WAIT" && f.flow.is_none())));
        assert_eq!(host.bad_cmds, 0);
    }
    assert_eq!(sim.hosts[0].io.used(SERVER), 0, "server rings leaked");
    assert_eq!(sim.hosts[1].io.used(CLIENT), 0, "client rings leaked");
}

#[test]
fn handshake_transfer_close_clean_link() {
    let mut sim = Sim::new(1);
    transfer_and_close(&mut sim, 10_000 * MS);
    let (a, b) = (sim.hosts[0].stack.stats(), sim.hosts[1].stack.stats());
    assert_eq!((a.accepted, b.connected), (1, 1));
    // The client sent its FIN first: it (only) went through TIME_WAIT.
    assert_eq!((a.time_wait_entered, b.time_wait_entered), (0, 1));
    sim.run_for(2500 * MS);
    assert_eq!(sim.hosts[1].stack.stats().time_wait_expired, 1);
    assert_eq!(a.rto_retransmits + b.rto_retransmits, 0);
    // ARP: B resolved A once; A learned B from the request.
    assert_eq!(b.arp_requests_sent, 1);
    assert_eq!(a.arp_replies_sent, 1);
}

/// TIME_WAIT keeps the 4-tuple, not the flow: the side that closed first
/// is released (its rings back in its region) as soon as both FINs are done
/// and the app has closed, and the 4-tuple stays in TIME_WAIT for
/// `time_wait_ns` (issue 13: rings used to stay allocated through it).
#[test]
fn time_wait_keeps_the_tuple_and_frees_the_rings() {
    let mut sim = Sim::new(2);
    setup(&mut sim, 1000, 1000);
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| all_released(s, 0, SERVER, 1)
        && all_released(s, 1, CLIENT, 1)));
    // Both released; the client (closed first) holds TIME_WAIT.
    let flows = sim.hosts[1].stack.flows();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].state, "TIME_WAIT");
    assert_eq!(flows[0].flow, None);
    assert_eq!(sim.hosts[1].table.len(), 0);
    assert_eq!(sim.hosts[1].io.used(CLIENT), 0, "rings freed at once");
    assert_eq!(sim.hosts[1].stack.stats().time_wait_now, 1);
    let t0 = sim.now;
    assert!(sim.run_until(5000 * MS, |s| s.hosts[1].stack.stats().time_wait_now == 0));
    let waited = sim.now - t0;
    assert!(
        (1800 * MS..2300 * MS).contains(&waited),
        "TIME_WAIT lasted {waited} ns"
    );
    assert_eq!(sim.hosts[1].stack.stats().time_wait_expired, 1);
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn server_closes_first() {
    let mut sim = Sim::new(3);
    let up = pattern(5, 300_000);
    let down = pattern(6, 500_000);
    let mut server = server_template(down.clone());
    server.fin = FinPolicy::AfterSend;
    let mut client = client_template(up.clone());
    client.fin = FinPolicy::AfterEof;
    sim.hosts[0].apps.insert(SERVER, App::new(server));
    sim.hosts[1].apps.insert(CLIENT, App::new(client));
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(10_000 * MS, |s| all_released(s, 0, SERVER, 1)
        && all_released(s, 1, CLIENT, 1)));
    assert!(only_flow(&mut sim, 0, SERVER).rx_data == up);
    assert!(only_flow(&mut sim, 1, CLIENT).rx_data == down);
    let (a, b) = (sim.hosts[0].stack.stats(), sim.hosts[1].stack.stats());
    assert_eq!((a.time_wait_entered, b.time_wait_entered), (1, 0));
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn transfer_with_loss_reorder_duplication_and_corruption() {
    for seed in [11u64, 12, 13] {
        let mut sim = Sim::new(seed);
        sim.wire.faults = Faults {
            loss: 10_000,
            reorder: 20_000,
            dup: 10_000,
            corrupt: 2_000,
        };
        transfer_and_close(&mut sim, 120_000 * MS);
        let (a, b) = (sim.hosts[0].stack.stats(), sim.hosts[1].stack.stats());
        assert!(
            sim.hosts[0].fp.stats.fast_retransmits + sim.hosts[1].fp.stats.fast_retransmits > 0,
            "seed {seed}: loss never triggered a fast retransmit"
        );
        eprintln!(
            "seed {seed}: t={} ms, rto {}+{}, frexmit {}+{}, bad csum {}+{}",
            sim.now / MS,
            a.rto_retransmits,
            b.rto_retransmits,
            sim.hosts[0].fp.stats.fast_retransmits,
            sim.hosts[1].fp.stats.fast_retransmits,
            a.dropped_bad_checksum,
            b.dropped_bad_checksum
        );
    }
}

#[test]
fn sequence_and_timestamp_wraparound() {
    // ISNs just below 2^32 on both sides, and the µs timestamp clock about
    // to wrap, with some loss so retransmissions straddle the wrap.
    let start = (u32::MAX as u64 - 5_000) * 1000;
    let mut sim = Sim::with(9, host_cfg(A_IP, A_MAC), host_cfg(B_IP, B_MAC), start);
    sim.hosts[0]
        .stack
        .set_isn_override(Some(u32::MAX - 100_000));
    sim.hosts[1].stack.set_isn_override(Some(u32::MAX - 3000));
    sim.wire.faults.loss = 5_000;
    transfer_and_close(&mut sim, 60_000 * MS);
    assert!(sim.now / 1000 > u32::MAX as u64, "the TS clock wrapped");
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut sim = Sim::new(4);
    sim.hosts[1]
        .apps
        .insert(CLIENT, App::new(client_template(vec![])));
    let req = sim.connect(1, CLIENT, A_IP, 9999);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .result_for(req)
        .is_some()));
    let r = sim.hosts[1].app(CLIENT).result_for(req).unwrap();
    assert_eq!((r.kind, r.err), (ctl::RESULT, libc::ECONNREFUSED));
    assert_eq!(sim.hosts[1].io.used(CLIENT), 0);
    assert_eq!(sim.wire.rsts, [1, 0]);
    assert!(sim.hosts[1].stack.flows().is_empty());
}

#[test]
fn connect_to_silent_address_fails_with_ehostunreach() {
    let mut sim = Sim::new(5);
    sim.hosts[1]
        .apps
        .insert(CLIENT, App::new(client_template(vec![])));
    let req = sim.connect(1, CLIENT, 0xC612_0063, PORT); // 198.18.0.99: nobody
    let t0 = sim.now;
    assert!(sim.run_until(10_000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .result_for(req)
        .is_some()));
    let r = sim.hosts[1].app(CLIENT).result_for(req).unwrap();
    assert_eq!(r.err, libc::EHOSTUNREACH);
    // Four requests 500 ms apart.
    assert_eq!(sim.hosts[1].stack.stats().arp_requests_sent, 4);
    assert!((1900 * MS..2200 * MS).contains(&(sim.now - t0)));
    assert_eq!(sim.hosts[1].io.used(CLIENT), 0);
    // Off-subnet with no gateway: refused at once.
    let req = sim.connect(1, CLIENT, 0x0A00_0001, PORT);
    sim.run_for(MS);
    assert_eq!(
        sim.hosts[1].app(CLIENT).result_for(req).unwrap().err,
        libc::ENETUNREACH
    );
}

#[test]
fn silent_peer_after_arp_times_out_the_syn() {
    // A answers ARP (its stack runs) but never answers the SYN: the wire
    // drops every TCP frame toward A.
    let mut cfg_b = host_cfg(B_IP, B_MAC);
    cfg_b.syn_retries = 3;
    let mut sim = Sim::with(6, host_cfg(A_IP, A_MAC), cfg_b, 0);
    sim.wire.filter = Some(Box::new(|_, src, f| {
        src != 1 || tas_engine::wire::frame::parse_tcp_frame(f).is_err()
    }));
    sim.hosts[1]
        .apps
        .insert(CLIENT, App::new(client_template(vec![])));
    let req = sim.connect(1, CLIENT, A_IP, PORT);
    let t0 = sim.now;
    assert!(sim.run_until(60_000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .result_for(req)
        .is_some()));
    assert_eq!(
        sim.hosts[1].app(CLIENT).result_for(req).unwrap().err,
        libc::ETIMEDOUT
    );
    // 200 + 400 + 800 + 1600 ms.
    let took = sim.now - t0;
    assert!((3000 * MS..3100 * MS).contains(&took), "took {took}");
    assert_eq!(sim.hosts[1].stack.stats().syn_sent, 4);
}

#[test]
fn full_backlog_drops_syns_until_the_app_accepts() {
    let mut sim = Sim::new(7);
    setup(&mut sim, 0, 0);
    sim.hosts[0].app(SERVER).auto_accept = false;
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    let lid = sim.listen(0, SERVER, PORT, 1);
    let r1 = sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(100 * MS, |s| !s.hosts[0].apps[&SERVER].flows.is_empty()));
    let r2 = sim.connect(1, CLIENT, A_IP, PORT);
    sim.run_for(1000 * MS);
    let c = sim.hosts[1].app(CLIENT);
    assert_eq!(c.result_for(r1).map(|m| m.kind), Some(ctl::CONNECTED));
    assert!(c.result_for(r2).is_none(), "second connection must wait");
    assert_eq!(sim.hosts[0].app(SERVER).flows.len(), 1);
    assert!(sim.hosts[0].stack.stats().syn_dropped_backlog >= 2);
    // The app takes the first connection: the next SYN retransmission wins.
    sim.ctl(
        0,
        SERVER,
        CtlMsg {
            kind: ctl::ACCEPT,
            listener: lid,
            arg: [1, 0, 0, 0, 0],
            ..Default::default()
        },
    );
    assert!(sim.run_until(3000 * MS, |s| s.hosts[0].apps[&SERVER].flows.len() == 2));
    assert_eq!(
        sim.hosts[1].app(CLIENT).result_for(r2).unwrap().kind,
        ctl::CONNECTED
    );
    assert_eq!(sim.hosts[0].app(SERVER).flows.len(), 2);
    // No RST anywhere: dropping SYNs is silent.
    assert_eq!(sim.wire.rsts, [0, 0]);
}

/// The server app writes 200 KB, requests its FIN, closes and exits at
/// once while the client is not reading (its 32 KiB window is shut): the
/// connection lives on as an orphan and the client gets every byte and a
/// clean end of stream; then the orphan goes and its rings with it. Before,
/// the exit reset the connection with most of the data undelivered.
#[test]
fn an_exited_apps_closed_connection_delivers_its_data_and_fin() {
    let b = StackConfig {
        default_rx_buf: 32 << 10,
        ..host_cfg(B_IP, B_MAC)
    };
    let mut sim = Sim::with(21, host_cfg(A_IP, A_MAC), b, 0);
    let data = pattern(5, 200_000);
    sim.hosts[0].apps.insert(
        SERVER,
        App::new(FlowApp {
            tx_data: data.clone(),
            fin: FinPolicy::AfterSend,
            ..Default::default()
        }),
    );
    sim.hosts[1].apps.insert(
        CLIENT,
        App::new(FlowApp {
            fin: FinPolicy::AfterEof,
            close_when_done: true,
            read_paused_until: 300 * MS,
            ..Default::default()
        }),
    );
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[0].apps[&SERVER]
        .flows
        .values()
        .any(|f| f.fin_requested)));
    let fid = *sim.hosts[0].app(SERVER).flows.keys().next().unwrap();
    sim.hosts[0]
        .app(SERVER)
        .flows
        .get_mut(&fid)
        .unwrap()
        .close_sent = true;
    sim.ctl(
        0,
        SERVER,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: fid,
            ..Default::default()
        },
    );
    // It exits at once, with most of the data unacknowledged.
    assert!(only_flow(&mut sim, 0, SERVER).tx_acked < 100_000);
    sim.hosts[0].apps.remove(&SERVER);
    let now = sim.now;
    let h = &mut sim.hosts[0];
    assert_eq!(h.stack.app_gone(now, SERVER, &mut h.io), 1);
    assert!(sim.run_until(10_000 * MS, |s| all_released(s, 1, CLIENT, 1)));
    let c = only_flow(&mut sim, 1, CLIENT);
    assert_eq!(c.reset, None);
    assert!(c.eof, "a clean end of stream");
    assert!(
        c.rx_data == data,
        "every byte, in order ({} of {})",
        c.rx_data.len(),
        data.len()
    );
    assert_eq!(sim.wire.rsts, [0, 0]);
    let h = &sim.hosts[0];
    assert_eq!(h.stack.orphans_of(SERVER), 0);
    assert_eq!(h.io.used(SERVER), 0, "the orphan's rings are freed");
    assert_eq!(h.table.len(), 0);
    let st = h.stack.stats();
    assert_eq!((st.orphaned, st.orphans_now, st.time_wait_now), (1, 0, 1));
}

/// An app that exits without closing: as Linux's process exit, a
/// connection with received data left unread is reset, the other closed
/// with a FIN (and finished as an orphan). Listeners go: a new connection
/// is refused.
#[test]
fn an_exiting_app_resets_unread_connections_and_finishes_the_others() {
    let mut sim = Sim::new(8);
    setup(&mut sim, 20_000, 0);
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    // The server frees nothing it receives (until told otherwise).
    sim.hosts[0].app(SERVER).template.read_paused_until = u64::MAX;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(
        sim.run_until(2000 * MS, |s| s.hosts[0].apps[&SERVER].flows.len() == 2
            && s.hosts[0].apps[&SERVER]
                .flows
                .values()
                .all(|f| f.rx_data.len() == 20_000 && f.eof))
    );
    // One flow's data is read (freed); the other's is left unread.
    let ids: Vec<_> = sim.hosts[0].app(SERVER).flows.keys().copied().collect();
    sim.hosts[0]
        .app(SERVER)
        .flows
        .get_mut(&ids[1])
        .unwrap()
        .read_paused_until = 0;
    sim.run_for(5 * MS);
    let (p0, p1) = {
        let fl = &sim.hosts[0].app(SERVER).flows;
        (fl[&ids[0]].info.remote_port, fl[&ids[1]].info.remote_port)
    };
    // The server app crashes.
    sim.hosts[0].apps.remove(&SERVER);
    let now = sim.now;
    let h = &mut sim.hosts[0];
    assert_eq!(h.stack.app_gone(now, SERVER, &mut h.io), 2);
    assert!(
        h.stack.flows().iter().all(|f| f.state != "LISTEN"),
        "listener dropped"
    );
    assert!(sim.run_until(3000 * MS, |s| all_released(s, 1, CLIENT, 2)
        && s.hosts[0].stack.orphans_of(SERVER) == 0));
    let by_port = |sim: &mut Sim, p: u16| {
        sim.hosts[1]
            .app(CLIENT)
            .flows
            .values()
            .find(|f| f.info.local_port == p)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_port(&mut sim, p0).reset, Some(libc::ECONNRESET));
    let fin = by_port(&mut sim, p1);
    assert_eq!((fin.reset, fin.eof), (None, true));
    let h = &sim.hosts[0];
    assert_eq!(h.stack.orphans_of(SERVER), 0);
    assert_eq!(h.io.used(SERVER), 0);
    assert_eq!(h.table.len(), 0);
    let st = h.stack.stats();
    assert_eq!((st.orphaned, st.abort_on_close), (2, 1));
    assert_eq!(sim.hosts[1].table.len(), 0);
    assert_eq!(sim.hosts[1].io.used(CLIENT), 0);
    // A new connection to the closed port is refused.
    let req = sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .result_for(req)
        .is_some()));
    assert_eq!(
        sim.hosts[1].app(CLIENT).result_for(req).unwrap().err,
        libc::ECONNREFUSED
    );
}

#[test]
fn abort_resets_the_peer() {
    let mut sim = Sim::new(10);
    setup(&mut sim, 100_000, 0);
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(2000 * MS, |s| s.hosts[0].apps[&SERVER]
        .flows
        .values()
        .any(|f| f.rx_data.len() > 10_000)));
    let fid = *sim.hosts[1].app(CLIENT).flows.keys().next().unwrap();
    sim.hosts[1]
        .app(CLIENT)
        .flows
        .get_mut(&fid)
        .unwrap()
        .close_sent = true;
    sim.ctl(
        1,
        CLIENT,
        CtlMsg {
            kind: ctl::ABORT,
            flow: fid,
            ..Default::default()
        },
    );
    assert!(sim.run_until(1000 * MS, |s| all_released(s, 0, SERVER, 1)
        && all_released(s, 1, CLIENT, 1)));
    assert_eq!(only_flow(&mut sim, 0, SERVER).reset, Some(libc::ECONNRESET));
    // The abort RST, then one per segment A still sends toward the
    // closed flow (ACKs of data in flight).
    assert!(sim.wire.rsts[1] >= 1);
    assert_eq!(sim.wire.rsts[0], 0);
    assert_eq!(sim.hosts[0].table.len() + sim.hosts[1].table.len(), 0);
}

#[test]
fn rst_with_bad_sequence_gets_a_challenge_ack() {
    let mut sim = Sim::new(14);
    setup(&mut sim, 5000, 0);
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[0].apps[&SERVER]
        .flows
        .values()
        .any(|f| f.rx_data.len() == 5000)));
    sim.run_for(MS);
    let sf = only_flow(&mut sim, 0, SERVER);
    let fl = sim.hosts[0].table.lock(sf.info.flow).map(|g| *g).unwrap();
    let rst = |seq: u32| {
        super::tests::tcp_frame_to(
            A_MAC,
            B_MAC,
            B_IP,
            A_IP,
            fl.remote_port,
            fl.local_port,
            seq,
            0,
            tas_engine::wire::tcp::RST,
            &[],
        )
    };
    // In the window but not exact: challenge ACK, flow stays.
    let before = sim.wire.tcp_log.len();
    sim.hosts[0]
        .inbox
        .push(rst(fl.rx_next_seq.wrapping_add(100)));
    sim.run_for(MS);
    let acks: Vec<_> = sim.wire.tcp_log[before..]
        .iter()
        .filter(|(_, src, _)| *src == 0)
        .collect();
    assert_eq!(acks.len(), 1, "one challenge ACK");
    assert_eq!(acks[0].2, tas_engine::wire::tcp::ACK);
    assert_eq!(sim.hosts[0].stack.stats().challenge_acks, 1);
    // Out of the window: ignored silently.
    sim.hosts[0]
        .inbox
        .push(rst(fl.rx_next_seq.wrapping_sub(5000)));
    sim.run_for(MS);
    assert_eq!(sim.hosts[0].stack.stats().rst_out_of_window, 1);
    assert_eq!(sim.hosts[0].table.len(), 1);
    assert_eq!(only_flow(&mut sim, 0, SERVER).reset, None);
    // Exact: the connection is reset.
    sim.hosts[0].inbox.push(rst(fl.rx_next_seq));
    sim.run_for(MS);
    assert_eq!(only_flow(&mut sim, 0, SERVER).reset, Some(libc::ECONNRESET));
    assert!(only_flow(&mut sim, 0, SERVER).released);
    assert_eq!(sim.hosts[0].table.len(), 0);
}

#[test]
fn zero_window_is_probed_when_the_window_update_is_lost() {
    let mut sim = Sim::new(15);
    let up = pattern(3, 200_000);
    sim.hosts[0]
        .apps
        .insert(SERVER, App::new(server_template(vec![])));
    sim.hosts[1]
        .apps
        .insert(CLIENT, App::new(client_template(up.clone())));
    // The server reads nothing for 300 ms: its 16 KiB window closes.
    sim.hosts[0].app(SERVER).template.read_paused_until = 300 * MS;
    let req = sim.ctl(
        0,
        SERVER,
        CtlMsg {
            kind: ctl::LISTEN,
            arg: [PORT as u32, 16, 16384, 0, 0],
            ..Default::default()
        },
    );
    sim.run_for(MS);
    assert_eq!(sim.hosts[0].app(SERVER).result_for(req).unwrap().err, 0);
    sim.connect(1, CLIENT, A_IP, PORT);
    // Everything from A is lost between 290 and 310 ms: that includes the
    // window update sent when the app starts reading again.
    sim.wire.filter = Some(Box::new(|now, src, _| {
        !(src == 0 && (290 * MS..310 * MS).contains(&now))
    }));
    assert!(sim.run_until(20_000 * MS, |s| all_released(s, 0, SERVER, 1)
        && all_released(s, 1, CLIENT, 1)));
    assert!(only_flow(&mut sim, 0, SERVER).rx_data == up);
    assert!(sim.hosts[1].stack.stats().persist_probes >= 1);
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn blackholed_peer_times_out_with_etimedout() {
    let mut cfg_b = host_cfg(B_IP, B_MAC);
    cfg_b.data_retries = 4;
    cfg_b.rto_max_ns = 200 * MS;
    let mut sim = Sim::with(16, host_cfg(A_IP, A_MAC), cfg_b, 0);
    setup(&mut sim, 100_000, 0);
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    sim.hosts[1].app(CLIENT).template.tx_data.clear();
    assert!(sim.run_until(40 * MS, |s| !s.hosts[1].apps[&CLIENT].flows.is_empty()));
    sim.run_for(20 * MS);
    // From now on nothing gets through; the client writes, and nothing
    // will ever be acknowledged.
    sim.wire.filter = Some(Box::new(|_, _, _| false));
    for f in sim.hosts[1].app(CLIENT).flows.values_mut() {
        f.tx_data = pattern(4, 50_000);
    }
    assert!(sim.run_until(10_000 * MS, |s| all_released(s, 1, CLIENT, 1)));
    let f = only_flow(&mut sim, 1, CLIENT);
    assert_eq!(f.reset, Some(libc::ETIMEDOUT));
    let b = sim.hosts[1].stack.stats();
    assert_eq!((b.rto_retransmits, b.data_timeouts), (4, 1));
    assert_eq!(sim.wire.rsts[1], 1, "the timeout resets the peer");
    assert_eq!(sim.hosts[1].table.len(), 0);
}

#[test]
fn fin_wait2_is_bounded_after_close() {
    let mut cfg_b = host_cfg(B_IP, B_MAC);
    cfg_b.fin_timeout_ns = 3000 * MS;
    let mut sim = Sim::with(17, host_cfg(A_IP, A_MAC), cfg_b, 0);
    setup(&mut sim, 1000, 0);
    // The server never closes; the client closes without waiting for EOF.
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[0].app(SERVER).template.close_when_done = false;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .flows
        .values()
        .any(|f| f.fin_acked)));
    let fid = *sim.hosts[1].app(CLIENT).flows.keys().next().unwrap();
    sim.hosts[1]
        .app(CLIENT)
        .flows
        .get_mut(&fid)
        .unwrap()
        .close_sent = true;
    sim.ctl(
        1,
        CLIENT,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: fid,
            ..Default::default()
        },
    );
    sim.run_for(100 * MS);
    assert_eq!(sim.hosts[1].stack.flows()[0].state, "FIN_WAIT2");
    let t0 = sim.now;
    assert!(sim.run_until(10_000 * MS, |s| all_released(s, 1, CLIENT, 1)));
    assert!(sim.now - t0 < 3100 * MS);
    assert_eq!(sim.hosts[1].stack.stats().fin_timeouts, 1);
    // The server learns through the RST.
    sim.run_for(10 * MS);
    assert_eq!(only_flow(&mut sim, 0, SERVER).reset, Some(libc::ECONNRESET));
}

#[test]
fn half_close_keeps_the_flow_until_the_app_closes() {
    let mut sim = Sim::new(18);
    setup(&mut sim, 3000, 4000);
    // Neither app sends CLOSE by itself.
    sim.hosts[0].app(SERVER).template.close_when_done = false;
    sim.hosts[1].app(CLIENT).template.close_when_done = false;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| {
        s.hosts[0].apps[&SERVER]
            .flows
            .values()
            .any(|f| f.fin_acked && f.eof)
            && s.hosts[1].apps[&CLIENT]
                .flows
                .values()
                .any(|f| f.fin_acked && f.eof)
    }));
    sim.run_for(3000 * MS);
    // Server (closed second) keeps its flow installed; the client's
    // TIME_WAIT ended but its id stays reserved.
    assert_eq!(sim.hosts[0].stack.flows()[1].state, "CLOSED");
    assert_eq!(sim.hosts[0].table.len(), 1);
    assert_eq!(sim.hosts[1].stack.flows()[0].state, "CLOSED");
    assert_eq!(sim.hosts[1].table.len(), 1, "placeholder holds the id");
    for (h, app) in [(0, SERVER), (1, CLIENT)] {
        let fid = *sim.hosts[h].app(app).flows.keys().next().unwrap();
        sim.hosts[h]
            .app(app)
            .flows
            .get_mut(&fid)
            .unwrap()
            .close_sent = true;
        sim.ctl(
            h,
            app,
            CtlMsg {
                kind: ctl::CLOSE,
                flow: fid,
                ..Default::default()
            },
        );
    }
    sim.run_for(MS);
    assert!(all_released(&sim, 0, SERVER, 1) && all_released(&sim, 1, CLIENT, 1));
    assert_eq!(sim.hosts[0].table.len() + sim.hosts[1].table.len(), 0);
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn close_without_fin_request_still_sends_fin() {
    let mut sim = Sim::new(19);
    setup(&mut sim, 2000, 0);
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.close_when_done = false;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| s.hosts[0].apps[&SERVER]
        .flows
        .values()
        .any(|f| f.rx_data.len() == 2000)));
    let fid = *sim.hosts[1].app(CLIENT).flows.keys().next().unwrap();
    sim.hosts[1]
        .app(CLIENT)
        .flows
        .get_mut(&fid)
        .unwrap()
        .close_sent = true;
    sim.ctl(
        1,
        CLIENT,
        CtlMsg {
            kind: ctl::CLOSE,
            flow: fid,
            ..Default::default()
        },
    );
    assert!(sim.run_until(5000 * MS, |s| all_released(s, 0, SERVER, 1)
        && all_released(s, 1, CLIENT, 1)));
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn syn_to_time_wait_flow_starts_a_new_connection() {
    let mut sim = Sim::new(20);
    setup(&mut sim, 1000, 1000);
    // Server closes first, so the server holds TIME_WAIT...
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::AfterSend;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::AfterEof;
    sim.listen(0, SERVER, PORT, 16);
    let r1 = sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| all_released(s, 1, CLIENT, 1)));
    assert_eq!(
        sim.hosts[0]
            .stack
            .flows()
            .iter()
            .filter(|f| f.state == "TIME_WAIT")
            .count(),
        1
    );
    let port = sim.hosts[1]
        .app(CLIENT)
        .result_for(r1)
        .unwrap()
        .info
        .local_port;
    // ...and the client reconnects from the same port at once.
    let req = sim.ctl(
        1,
        CLIENT,
        CtlMsg {
            kind: ctl::CONNECT,
            arg: [A_IP, PORT as u32, port as u32, 0, 0],
            ..Default::default()
        },
    );
    assert!(sim.run_until(1000 * MS, |s| s.hosts[1].apps[&CLIENT]
        .result_for(req)
        .is_some()));
    assert_eq!(
        sim.hosts[1].app(CLIENT).result_for(req).unwrap().kind,
        ctl::CONNECTED
    );
    assert!(sim.run_until(5000 * MS, |s| all_released(s, 0, SERVER, 2)
        && all_released(s, 1, CLIENT, 2)));
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn many_connections_reuseport_and_unique_ports() {
    let mut sim = Sim::new(21);
    setup(&mut sim, 20_000, 10_000);
    sim.hosts[0]
        .apps
        .insert(3, App::new(server_template(pattern(2, 10_000))));
    for app in [SERVER, 3] {
        let req = sim.ctl(
            0,
            app,
            CtlMsg {
                kind: ctl::LISTEN,
                arg: [PORT as u32, 64, 0, 0, ctl::F_REUSEPORT],
                ..Default::default()
            },
        );
        sim.run_for(MS);
        assert_eq!(sim.hosts[0].app(app).result_for(req).unwrap().err, 0);
    }
    // 12 flows x 512 KiB of rings fit the 8 MiB test region.
    let n = 12;
    for _ in 0..n {
        sim.connect(1, CLIENT, A_IP, PORT);
    }
    assert!(sim.run_until(20_000 * MS, |s| {
        let a = &s.hosts[0].apps;
        all_released(s, 1, CLIENT, n) && a[&SERVER].flows.len() + a[&3].flows.len() == n
    }));
    let (s1, s3) = (
        sim.hosts[0].app(SERVER).flows.len(),
        sim.hosts[0].app(3).flows.len(),
    );
    assert!(
        s1 > 0 && s3 > 0,
        "both listeners got connections ({s1}, {s3})"
    );
    let mut ports: Vec<u16> = sim.hosts[1]
        .app(CLIENT)
        .flows
        .values()
        .map(|f| f.info.local_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), n);
    for f in sim.hosts[1].app(CLIENT).flows.values() {
        assert_eq!(f.rx_data, pattern(2, 10_000));
    }
    assert_eq!(sim.wire.rsts, [0, 0]);
}

#[test]
fn daemon_shutdown_resets_live_flows() {
    let mut sim = Sim::new(22);
    setup(&mut sim, 100_000, 0);
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(1000 * MS, |s| !s.hosts[0].apps[&SERVER].flows.is_empty()));
    let now = sim.now;
    let h = &mut sim.hosts[0];
    h.stack.shutdown(now, &mut h.io);
    assert_eq!(h.table.len(), 0);
    assert!(h.stack.flows().is_empty());
    sim.hosts[0].apps.clear();
    assert!(sim.run_until(1000 * MS, |s| all_released(s, 1, CLIENT, 1)));
    assert_eq!(only_flow(&mut sim, 1, CLIENT).reset, Some(libc::ECONNRESET));
}

#[test]
fn ecn_and_rate_are_configured_on_both_sides() {
    let mut a = host_cfg(A_IP, A_MAC);
    let mut b = host_cfg(B_IP, B_MAC);
    a.ecn = true;
    b.ecn = true;
    b.cc = crate::cc::CcConfig::with("const-rate", &[("rate", "100mbps")]).unwrap();
    a.cc = crate::cc::CcConfig::with("const-rate", &[("rate", "0")]).unwrap();
    let mut sim = Sim::with(23, a, b, 0);
    setup(&mut sim, 50_000, 50_000);
    sim.hosts[0].app(SERVER).template.fin = FinPolicy::Never;
    sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
    sim.listen(0, SERVER, PORT, 16);
    sim.connect(1, CLIENT, A_IP, PORT);
    assert!(sim.run_until(2000 * MS, |s| s.hosts[0].apps[&SERVER]
        .flows
        .values()
        .any(|f| f.rx_data.len() == 50_000)));
    let fa = only_flow(&mut sim, 0, SERVER).info.flow;
    let fb = only_flow(&mut sim, 1, CLIENT).info.flow;
    let sa = sim.hosts[0].table.lock(fa).map(|g| *g).unwrap();
    let sb = sim.hosts[1].table.lock(fb).map(|g| *g).unwrap();
    use tas_engine::flow::cfg;
    assert_eq!(
        sa.cfg & (cfg::ECN | cfg::RATE | cfg::TS | cfg::SACK),
        cfg::ECN | cfg::TS | cfg::SACK
    );
    assert_eq!(
        sb.cfg & (cfg::ECN | cfg::RATE | cfg::TS | cfg::SACK),
        cfg::ECN | cfg::RATE | cfg::TS | cfg::SACK
    );
    assert_eq!({ sb.tx_rate }, 100_000);
    // 256 KiB rings: shift 3 both ways.
    assert_eq!(
        (sa.snd_wscale, sa.rcv_wscale, sb.snd_wscale, sb.rcv_wscale),
        (3, 3, 3, 3)
    );
    assert_eq!(sa.st & st::RX_FIN, 0);
}

#[test]
fn transfer_over_a_rate_limited_lossy_link() {
    // 1 Gbit/s: windows queue on the link, RTTs grow, RTOs scale with them.
    let mut sim = Sim::new(41);
    sim.wire.rate_mbps = 1000;
    sim.wire.faults = Faults {
        loss: 10_000,
        reorder: 10_000,
        dup: 5_000,
        corrupt: 1_000,
    };
    transfer_and_close(&mut sim, 120_000 * MS);
}

#[test]
fn lost_fins_are_recovered_by_the_retransmission_timeout() {
    let mut sim = Sim::new(42);
    setup(&mut sim, 20_000, 20_000);
    // The first three FIN-carrying frames of each side are lost: nothing
    // follows a FIN, so only the slow path's RTO can recover them.
    let mut dropped = [0u32; 2];
    sim.wire.filter = Some(Box::new(move |_, src, f| {
        let fin = tas_engine::wire::frame::parse_tcp_frame(f).is_ok_and(|p| p.tcp.flags() & 1 != 0);
        if fin && dropped[src] < 3 {
            dropped[src] += 1;
            return false;
        }
        true
    }));
    transfer_and_close_with(&mut sim, 20_000 * MS, 20_000, 20_000);
    let (a, b) = (sim.hosts[0].stack.stats(), sim.hosts[1].stack.stats());
    // With only the FIN out, the first expiry is a tail-loss probe (at the
    // RTO, in its place), the others timeouts.
    assert!(
        a.rto_retransmits + a.tlp_probes >= 3 && b.rto_retransmits + b.tlp_probes >= 3,
        "{} {} {} {}",
        a.rto_retransmits,
        a.tlp_probes,
        b.rto_retransmits,
        b.tlp_probes
    );
}

#[test]
#[ignore]
fn stress_many_seeds_lossy() {
    // cargo test --release -p tasd stress_many_seeds -- --ignored --nocapture
    let n: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 100..100 + n {
        let mut sim = Sim::new(seed);
        sim.wire.rate_mbps = if seed % 2 == 0 { 0 } else { 1000 };
        sim.wire.faults = Faults {
            loss: 20_000,
            reorder: 30_000,
            dup: 20_000,
            corrupt: 5_000,
        };
        transfer_and_close(&mut sim, 300_000 * MS);
        let rto =
            sim.hosts[0].stack.stats().rto_retransmits + sim.hosts[1].stack.stats().rto_retransmits;
        eprintln!("seed {seed}: ok t={} ms rto={rto}", sim.now / MS);
    }
}

/// A server whose half-open table never has room: every connection is made
/// through a SYN cookie (RFC 4987 §3.6).
fn cookie_server_sim(seed: u64, start: u64) -> Sim {
    let mut a = host_cfg(A_IP, A_MAC);
    a.max_half_open = 0;
    Sim::with(seed, a, host_cfg(B_IP, B_MAC), start)
}

#[test]
fn syn_cookie_connection_transfers_and_closes() {
    let mut sim = cookie_server_sim(21, 0);
    transfer_and_close(&mut sim, 10_000 * MS);
    let a = sim.hosts[0].stack.stats();
    assert_eq!(
        (a.syncookies_sent, a.syncookies_recv, a.accepted),
        (1, 1, 1)
    );
    assert_eq!((a.syncookies_failed, a.syncookies_dropped), (0, 0));
    assert_eq!(
        a.rto_retransmits + sim.hosts[1].stack.stats().rto_retransmits,
        0
    );
}

#[test]
fn syn_cookie_connections_survive_loss_and_clock_wraparound() {
    // The µs timestamp clock wraps during the transfer (the cookie's TSval
    // is just below the wrap); SYN-ACKs and final ACKs get lost, so cookies
    // are resent and checked from later segments.
    let start = (u32::MAX as u64 - 5_000) * 1000;
    for seed in [31u64, 32, 33] {
        let mut sim = cookie_server_sim(seed, start);
        sim.wire.faults = Faults {
            loss: 20_000,
            reorder: 20_000,
            dup: 10_000,
            corrupt: 2_000,
        };
        transfer_and_close(&mut sim, 120_000 * MS);
        let a = sim.hosts[0].stack.stats();
        assert!(
            a.syncookies_recv >= 1 && a.accepted == 1,
            "seed {seed}: {a:?}"
        );
        assert_eq!(a.syncookies_failed, 0, "seed {seed}");
        assert!(sim.now / 1000 > u32::MAX as u64, "the TS clock wrapped");
        eprintln!(
            "seed {seed}: cookies sent {} recv {}, t={} ms",
            a.syncookies_sent,
            a.syncookies_recv,
            (sim.now - start) / MS
        );
    }
}

/// 8 MB over a 1 Gbit/s link with 200 µs RTT that loses 1 %, 2 % or 5 % of
/// frames both ways (several losses per window): SACK recovery repairs
/// everything, including lost retransmissions, without a single timeout,
/// and resends little more than what was lost. (The go-back-N sender
/// before: 11 timeouts at 5 % even with its 20 ms minimum RTO, and 0.41 /
/// 0.56 / 1.55 MB resent, against 0.12 / 0.21 / 0.58 MB now. The time
/// taken is the congestion controller's.)
#[test]
fn bulk_transfer_over_lossy_links_needs_no_timeouts() {
    for (loss, seed) in [(10_000u32, 51u64), (20_000, 52), (50_000, 53)] {
        let mut sim = Sim::new(seed);
        sim.wire.rate_mbps = 1000;
        sim.wire.latency = 100 * US;
        sim.wire.faults = Faults {
            loss,
            ..Default::default()
        };
        let t0 = sim.now;
        transfer_and_close_with(&mut sim, 60_000 * MS, 8 * MB, 0);
        let (a, b) = (sim.hosts[0].stack.stats(), sim.hosts[1].stack.stats());
        let fp = sim.hosts[1].fp.stats;
        let msg = format!(
            "loss {loss} ppm: {} ms, rto {}+{}, recoveries {} (sack {}), resent {} segments {} bytes, {} lost retransmissions, {} spurious recoveries, {} reordering, {} rack timeouts",
            (sim.now - t0) / MS,
            a.rto_retransmits,
            b.rto_retransmits,
            fp.fast_retransmits,
            fp.sack_recoveries,
            fp.rexmit_segments,
            fp.rexmit_bytes,
            fp.rexmit_lost,
            fp.spurious_recoveries,
            fp.reordering_seen,
            fp.rack_timeouts
        );
        eprintln!("{msg}");
        assert_eq!(b.rto_retransmits, 0, "{msg}");
        assert!(fp.sack_recoveries > 0, "{msg}");
        // Each loss resent about once (retransmissions are lost too).
        let lost = 8 * MB as u64 * loss as u64 / 1_000_000;
        assert!(fp.rexmit_bytes < 3 * lost, "{msg}");
        assert!(sim.now - t0 < 10_000 * MS, "{msg}");
    }
}

/// A wire filter (see `Wire::filter`).
type WireFilter = Box<dyn FnMut(u64, usize, &[u8]) -> bool>;

/// Drops the first transmission of data segments from host `src` that
/// reach beyond stream offset `from` (retransmissions go through).
fn drop_from_offset(src: usize, from: u32) -> WireFilter {
    let mut first = None;
    let mut sent = 0u32;
    Box::new(move |_, sender, f| {
        let Ok(p) = tas_engine::wire::frame::parse_tcp_frame(f) else {
            return true;
        };
        let len = p.tcp.payload().len() as u32;
        if sender != src || len == 0 {
            return true;
        }
        let base = *first.get_or_insert(p.tcp.seq());
        let end = p.tcp.seq().wrapping_sub(base) + len;
        let new = end > sent;
        sent = sent.max(end);
        !(new && end > from)
    })
}

/// Drops the `which` (0-based) first transmissions of data segments from
/// host `src`; retransmissions of them go through.
fn drop_first_transmissions(src: usize, which: Vec<usize>) -> WireFilter {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    Box::new(move |_, from, f| {
        let Ok(p) = tas_engine::wire::frame::parse_tcp_frame(f) else {
            return true;
        };
        if from != src || p.tcp.payload().is_empty() || !seen.insert(p.tcp.seq()) {
            return true;
        }
        n += 1;
        !which.contains(&(n - 1))
    })
}

/// Three segments of one window lost: one recovery, only those resent
/// (plus what the receiver, which keeps one out-of-order interval, had
/// to drop), no timeout.
#[test]
fn several_losses_in_one_window_are_repaired_in_one_recovery() {
    let mut sim = Sim::new(54);
    sim.wire.rate_mbps = 1000;
    sim.wire.latency = 50 * US;
    sim.wire.filter = Some(drop_first_transmissions(1, vec![40, 43, 47]));
    transfer_and_close_with(&mut sim, 10_000 * MS, MB, 0);
    let b = sim.hosts[1].stack.stats();
    let fp = sim.hosts[1].fp.stats;
    eprintln!("{fp:?}");
    assert_eq!((b.rto_retransmits, b.tlp_probes), (0, 0));
    assert_eq!(fp.fast_retransmits, 1);
    assert!(
        fp.rexmit_segments >= 3 && fp.rexmit_segments <= 12,
        "{fp:?}"
    );
}

/// The last segments of a 16 MB transfer over 1 Gbit/s (about 135 ms) are
/// lost and nothing follows them (no FIN yet). Three of them: the
/// tail-loss probe goes about two round trips later, its SACK shows the
/// other two lost; one: the probe goes when the RTO would, in its place
/// (with one segment out the peer may just be delaying its ACK). No
/// timeout either way.
///
/// (The slow path notices that a flow has data in flight at its next
/// inspection, within 100 ms, and then looks once per PTO: a short burst
/// after an idle period gets its probe later than this.)
#[test]
fn lost_tail_is_repaired_by_a_probe_not_a_timeout() {
    let n = 16 * MB;
    // (Bytes lost at the end, segments to resend, time bounds.)
    for (lost_bytes, lost, ms) in [(3 * 1448, 3, 140..170), (1, 1, 300..400)] {
        let mut sim = Sim::new(55);
        sim.wire.latency = 50 * US;
        sim.wire.rate_mbps = 1000;
        setup(&mut sim, n, 0);
        sim.hosts[1].app(CLIENT).template.fin = FinPolicy::Never;
        sim.listen(0, SERVER, PORT, 16);
        sim.connect(1, CLIENT, A_IP, PORT);
        sim.wire.filter = Some(drop_from_offset(1, (n - lost_bytes) as u32));
        let t0 = sim.now;
        assert!(sim.run_until(5000 * MS, |s| {
            s.hosts[0]
                .apps
                .get(&SERVER)
                .is_some_and(|a| a.flows.values().any(|f| f.rx_data.len() == n))
        }));
        let b = sim.hosts[1].stack.stats();
        let fp = sim.hosts[1].fp.stats;
        let took = (sim.now - t0) / MS;
        eprintln!("{lost:?}: {took} ms");
        assert_eq!(
            (b.rto_retransmits, b.tlp_probes, fp.tlp_probes),
            (0, 1, 1),
            "{lost:?}: {fp:?}"
        );
        // (What was lost may straddle one more segment boundary.)
        assert!(fp.rexmit_segments <= lost as u64 + 1, "{lost:?}: {fp:?}");
        assert!(
            fp.rexmit_bytes <= (lost as u64 + 1) * 1448,
            "{lost:?}: {fp:?}"
        );
        assert!(ms.contains(&took), "{lost:?}: took {took} ms");
    }
}
