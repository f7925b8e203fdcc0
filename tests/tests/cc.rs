//! Congestion control against real kernel queueing: DCTCP flows from TAS to
//! Linux receivers through a rate-limited, ECN-marking bottleneck on
//! veth-tas' egress.
//!
//! tasd runs with `--nic af_packet` here whatever `TAS_TEST_NIC` says:
//! AF_PACKET frames pass through veth-tas' qdisc (AF_XDP transmit bypasses
//! it). The bottleneck is `tbf` (the rate limit and the real queue). ECN
//! marking: `red ... ecn` in front of tbf when the kernel has sch_red;
//! kernels without it (like the CI VMs: no red, fq_codel or netem) get an
//! eBPF classifier on the clsact egress hook that keeps a virtual queue
//! drained at the tbf rate and sets CE (rewriting the TOS byte and the IPv4 checksum) on ECN-capable
//! frames that find it above K, i.e. DCTCP's step marking. Both are kernel
//! mechanisms on the real packet path.

use std::process::Command;
use std::time::{Duration, Instant};
use tas_system_tests::*;
use tasd::stack::FlowDetail;

const RATE_MBIT: u64 = 150;
/// Marking threshold (bytes of queue): 14 full frames (~1.1 ms at 150 Mbit/s).
const K_BYTES: u64 = 21_000;

fn sh(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

fn sh_ok(ns: &str, args: &[&str]) {
    let o = sh(ns, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------
// A minimal eBPF loader for the marking classifier.
// ---------------------------------------------------------------------------

mod ebpf {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use tas_nic::bpf::{self, insn as i};

    /// The marker: map (virtual queue bytes, last time, marks) and program.
    pub struct Marker {
        map: OwnedFd,
        prog: OwnedFd,
    }

    impl Marker {
        /// A classifier that drains a virtual queue at `rate_mbit` and marks
        /// CE on frames that find more than `k_bytes` in it.
        pub fn load(rate_mbit: u64, k_bytes: u64) -> Result<Marker, String> {
            // value: vq, last_ns, marks
            let map = bpf::map_create(bpf::BPF_MAP_TYPE_ARRAY, 4, 24, 1, "tas_marker")
                .map_err(|e| format!("map create: {e}"))?;
            let map_fd = map.as_raw_fd();
            // Drained bytes = elapsed_ns · rate_num >> 20.
            let rate_num = (rate_mbit as f64 * 1e6 / 8.0 * (1u64 << 20) as f64 / 1e9) as i32;
            let prog = [
                i(0xbf, 6, 1, 0, 0),               // 0: r6 = skb
                i(0x85, 0, 0, 0, 5),               // 1: call ktime_get_ns
                i(0xbf, 8, 0, 0, 0),               // 2: r8 = now
                i(0x62, 10, 0, -4, 0),             // 3: *(u32 *)(fp - 4) = 0 (key)
                i(0xbf, 2, 10, 0, 0),              // 4: r2 = fp
                i(0x07, 2, 0, 0, -4),              // 5: r2 += -4
                i(0x18, 1, 1, 0, map_fd),          // 6: r1 = map (pseudo fd)
                i(0x00, 0, 0, 0, 0),               // 7:   (ld_imm64 upper half)
                i(0x85, 0, 0, 0, 1),               // 8: call map_lookup_elem
                i(0x15, 0, 0, 45, 0),              // 9: if r0 == 0 goto 55
                i(0xbf, 7, 0, 0, 0),               // 10: r7 = value
                i(0x79, 1, 7, 0, 0),               // 11: r1 = vq
                i(0x79, 2, 7, 8, 0),               // 12: r2 = last
                i(0x7b, 7, 8, 8, 0),               // 13: last = now
                i(0xbf, 3, 8, 0, 0),               // 14: r3 = now
                i(0x1f, 3, 2, 0, 0),               // 15: r3 -= last
                i(0x25, 3, 0, 3, 1_000_000_000),   // 16: if r3 > 1 s goto 20
                i(0x27, 3, 0, 0, rate_num),        // 17: r3 *= rate_num
                i(0x77, 3, 0, 0, 20),              // 18: r3 >>= 20 (drained bytes)
                i(0x2d, 1, 3, 2, 0),               // 19: if vq > drained goto 22
                i(0xb7, 1, 0, 0, 0),               // 20: vq = 0
                i(0x05, 0, 0, 1, 0),               // 21: goto 23
                i(0x1f, 1, 3, 0, 0),               // 22: vq -= drained
                i(0x61, 4, 6, 0, 0),               // 23: r4 = skb->len
                i(0x0f, 1, 4, 0, 0),               // 24: vq += len
                i(0x7b, 7, 1, 0, 0),               // 25: store vq
                i(0xb5, 1, 0, 28, k_bytes as i32), // 26: if vq <= K goto 55
                // Set CE by hand: bpf_skb_ecn_set_ce trusts the skb's
                // network header, which AF_PACKET (SOCK_RAW) frames do not
                // have set; the frame itself is plain Ethernet + IPv4, but
                // may sit in page fragments: pull the headers in first.
                i(0xbf, 1, 6, 0, 0),     // +0: r1 = skb
                i(0xb7, 2, 0, 0, 34),    // +1: r2 = 34
                i(0x85, 0, 0, 0, 39),    // +2: call skb_pull_data
                i(0x61, 2, 6, 76, 0),    // 27: r2 = skb->data
                i(0x61, 3, 6, 80, 0),    // 28: r3 = skb->data_end
                i(0xbf, 4, 2, 0, 0),     // 29: r4 = data
                i(0x07, 4, 0, 0, 34),    // 30: r4 += 34 (Ethernet + IPv4 header)
                i(0x2d, 4, 3, 20, 0),    // 31: if r4 > data_end goto 52
                i(0x69, 5, 2, 12, 0),    // 32: r5 = ethertype (network order)
                i(0x55, 5, 0, 18, 8),    // 33: if r5 != 0x0800 goto 52
                i(0x69, 5, 2, 14, 0),    // 34: r5 = version/IHL + TOS word
                i(0xbf, 4, 5, 0, 0),     // 35: r4 = r5
                i(0x77, 4, 0, 0, 8),     // 36: r4 >>= 8 (TOS)
                i(0x57, 4, 0, 0, 3),     // 37: r4 &= 3 (ECN field)
                i(0x15, 4, 0, 13, 0),    // 38: if not-ECT goto 52
                i(0x15, 4, 0, 12, 3),    // 39: if CE already goto 52
                i(0xbf, 8, 5, 0, 0),     // 40: r8 = word
                i(0x47, 8, 0, 0, 0x300), // 41: r8 |= CE
                i(0x6b, 2, 8, 14, 0),    // 42: store the word
                i(0xbf, 3, 5, 0, 0),     // 43: r3 = old word
                i(0xbf, 4, 8, 0, 0),     // 44: r4 = new word
                i(0xbf, 1, 6, 0, 0),     // 45: r1 = skb
                i(0xb7, 2, 0, 0, 24),    // 46: r2 = offset of the IPv4 checksum
                i(0xb7, 5, 0, 0, 2),     // 47: r5 = 2 bytes
                i(0x85, 0, 0, 0, 10),    // 48: call l3_csum_replace
                i(0x79, 2, 7, 16, 0),    // 49: r2 = marks
                i(0x07, 2, 0, 0, 1),     // 50: r2 += 1
                i(0x7b, 7, 2, 16, 0),    // 51: store marks
                i(0xb7, 0, 0, 0, 0),     // 52: r0 = TC_ACT_OK
                i(0x95, 0, 0, 0, 0),     // 53: exit
            ];
            let prog = bpf::prog_load(bpf::BPF_PROG_TYPE_SCHED_CLS, 0, &prog, c"MIT", "tas_marker")
                .map_err(|e| e.to_string())?;
            Ok(Marker { map, prog })
        }

        pub fn pin(&self, path: &std::path::Path) -> Result<(), String> {
            bpf::obj_pin(self.prog.as_fd(), path)
                .map_err(|e| format!("pin {}: {e}", path.display()))
        }

        /// Frames marked so far.
        pub fn marks(&self) -> u64 {
            let mut val = [0u8; 24];
            match bpf::map_lookup(self.map.as_fd(), &0u32.to_ne_bytes(), &mut val) {
                Ok(()) => u64::from_ne_bytes(val[16..24].try_into().unwrap()),
                Err(_) => 0,
            }
        }
    }
}

/// The bottleneck on veth-tas' egress; removes its bpffs mount when dropped.
struct Bottleneck {
    bpffs: Option<std::path::PathBuf>,
    marker: Option<ebpf::Marker>,
    ns: String,
}

impl Bottleneck {
    fn new(tb: &Testbed) -> Bottleneck {
        let ns = tb.tas_ns.clone();
        let dev = "veth-tas";
        let rate = format!("{RATE_MBIT}mbit");
        // Preferred: red with ECN under tbf.
        sh_ok(
            &ns,
            &[
                "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", &rate,
                "burst", "15k", "latency", "100ms",
            ],
        );
        let red = sh(
            &ns,
            &[
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "parent",
                "1:1",
                "handle",
                "10:",
                "red",
                "limit",
                "2000000",
                "min",
                &K_BYTES.to_string(),
                "max",
                &(K_BYTES + 1500).to_string(),
                "avpkt",
                "1500",
                "burst",
                "21",
                "probability",
                "1.0",
                "bandwidth",
                &rate,
                "ecn",
            ],
        );
        if red.status.success() {
            eprintln!("bottleneck: tbf {rate} + red ecn (K = {K_BYTES} B)");
            return Bottleneck {
                bpffs: None,
                marker: None,
                ns,
            };
        }
        // No sch_red: the eBPF step marker on the clsact egress hook.
        let marker = ebpf::Marker::load(RATE_MBIT, K_BYTES).unwrap_or_else(|e| {
            panic!(
                "this kernel has neither sch_red nor a usable eBPF classifier for ECN marking: {e}"
            )
        });
        let dir = tb.dir.join("bpffs");
        std::fs::create_dir_all(&dir).expect("bpffs dir");
        let o = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            o.status.success(),
            "mount bpffs: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let pin = dir.join("tas_ecn_marker");
        marker.pin(&pin).expect("pin");
        sh_ok(&ns, &["tc", "qdisc", "add", "dev", dev, "clsact"]);
        let p = pin.to_string_lossy().into_owned();
        sh_ok(
            &ns,
            &[
                "tc",
                "filter",
                "add",
                "dev",
                dev,
                "egress",
                "bpf",
                "direct-action",
                "object-pinned",
                &p,
            ],
        );
        eprintln!("bottleneck: tbf {rate} + eBPF step marker (K = {K_BYTES} B; no sch_red in this kernel)");
        Bottleneck {
            bpffs: Some(dir),
            marker: Some(marker),
            ns,
        }
    }

    /// CE marks applied so far (None with red: see `tc -s qdisc`).
    fn marks(&self) -> Option<u64> {
        self.marker.as_ref().map(|m| m.marks())
    }

    fn qdisc_stats(&self) -> String {
        let o = sh(&self.ns, &["tc", "-s", "qdisc", "show", "dev", "veth-tas"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Bottleneck {
    fn drop(&mut self) {
        self.marker = None;
        if let Some(d) = &self.bpffs {
            let _ = Command::new("umount").arg(d).output();
        }
    }
}

fn flows(tb: &mut Testbed) -> Vec<FlowDetail> {
    let o = tb.run_tas(
        &bin("tasctl"),
        &["flows", "--json"],
        Duration::from_secs(10),
    );
    assert_ok(&o, "tasctl flows --json");
    serde_json::from_slice(&o.stdout).expect("tasctl flows --json parses")
}

fn bytes_out(f: &[FlowDetail], port: u16) -> u64 {
    f.iter()
        .filter(|d| d.remote.ends_with(&format!(":{port}")) && d.id.is_some())
        .map(|d| d.bytes_out)
        .sum()
}

#[test]
fn dctcp_flows_back_off_on_marks_and_share_the_link() {
    let mut tb = Testbed::with_args(
        "ccdctcp",
        Backend::AfPacket,
        &["--ecn", "--cc", "dctcp-rate"],
    );
    let bn = Bottleneck::new(&tb);
    const FLOWS: u16 = 3;
    const BYTES: &str = "30000000";
    let ports: Vec<u16> = (0..FLOWS).map(|i| 5011 + i).collect();
    for &p in &ports {
        tb.spawn_lnx(
            &bin("peer"),
            &["recv", &p.to_string(), BYTES, &p.to_string()],
            Some("listening"),
        );
    }
    let mut senders = Vec::new();
    for &p in &ports {
        let ps = p.to_string();
        senders.push(tb.spawn_tas(
            &bin("peer"),
            &["--tas", "send", LNX_IP, &ps, BYTES, &ps],
            None,
        ));
    }
    // Let slow start settle, then measure 2 s of sharing.
    let t0 = Instant::now();
    while flows(&mut tb)
        .iter()
        .filter(|d| d.state == "ESTABLISHED")
        .count()
        < FLOWS as usize
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "flows did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let a = flows(&mut tb);
    let ta = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let b = flows(&mut tb);
    let secs = ta.elapsed().as_secs_f64();
    let mut rates = Vec::new();
    for &p in &ports {
        let mbit = (bytes_out(&b, p) - bytes_out(&a, p)) as f64 * 8.0 / secs / 1e6;
        rates.push(mbit);
    }
    let total: f64 = rates.iter().sum();
    eprintln!("per-flow Mbit/s {rates:.1?}, total {total:.1} of {RATE_MBIT}");
    for d in b.iter().filter(|d| d.id.is_some()) {
        eprintln!(
            "{} {} cc {:?} rate {:?} rtt {:?} ecn {:?} alpha {:?} retx {}/{}",
            d.remote,
            d.state,
            d.cc,
            d.rate_kbps,
            d.rtt_us,
            d.ecn_fraction,
            d.alpha,
            d.fast_retransmits,
            d.timeouts
        );
    }
    let marks = bn.marks();
    eprintln!("marks {marks:?}\n{}", bn.qdisc_stats());
    // The link is used (≥ 60 % of the tbf rate in payload: the 2-core VMs
    // are shared, the CPU must not be the bottleneck) and shared: every
    // flow within 2× of an equal share.
    assert!(total >= RATE_MBIT as f64 * 0.6, "total {total:.1} Mbit/s");
    let fair = total / FLOWS as f64;
    for r in &rates {
        assert!(*r >= fair / 2.0 && *r <= fair * 2.0, "unfair: {rates:.1?}");
    }
    // They backed off on marks: ECN negotiated, marks echoed, and the rate
    // limits sit near the bottleneck instead of growing without bound.
    let live: Vec<&FlowDetail> = b
        .iter()
        .filter(|d| d.id.is_some() && d.state == "ESTABLISHED")
        .collect();
    assert_eq!(live.len(), FLOWS as usize);
    for d in &live {
        assert!(d.ecn, "ECN not negotiated: {d:?}");
        assert!(
            d.ecn_fraction.unwrap_or(0.0) > 0.0,
            "no ECN feedback: {d:?}"
        );
        assert_eq!(d.cc.as_deref(), Some("dctcp-rate"));
        let rate_mbit = d.rate_kbps.unwrap_or(0) as f64 / 1000.0;
        assert!(
            rate_mbit > 0.0 && rate_mbit <= RATE_MBIT as f64 * 1.5,
            "rate {rate_mbit} Mbit/s: {d:?}"
        );
    }
    if let Some(m) = marks {
        assert!(m > 0, "the marker never marked");
    }
    // And every byte arrived intact.
    for s in senders {
        assert_eq!(
            tb.wait_child(s, Duration::from_secs(60)),
            Some(true),
            "a TAS sender failed"
        );
    }
}
