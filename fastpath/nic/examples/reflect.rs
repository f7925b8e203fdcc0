//! Bare backend reflector and traffic generator: measures how many frames per
//! second a NIC backend moves across a link, with no TCP stack in the way.
//!
//! ```text
//! reflect --nic af_packet|af_xdp --iface IF [options]
//!   --mode reflect|gen   reflect: send every received frame back (swap MACs);
//!                        gen: send test frames and count the reflected ones
//!                        (default reflect)
//!   --queue N            AF_XDP queue (default 0)
//!   --xdp-mode drv|skb   force the AF_XDP attach mode (default: try drv)
//!   --batch N            frames per recv/send batch (default 32)
//!   --secs S             run time in seconds (default 10)
//!   --block              sleep in poll() when idle instead of busy polling
//!   --size BYTES         gen: frame size incl. Ethernet header (default 64)
//!   --window N           gen: frames in flight at most (default 512)
//!   --dst MAC            gen: destination MAC (default ff:ff:ff:ff:ff:ff)
//! ```
//!
//! Typical use, on test hosts made by `tools/testhosts.sh up bench`:
//!
//! ```text
//! tools/testhosts.sh exec bench tas target/release/examples/reflect --nic af_xdp --iface veth-tas --secs 12 &
//! tools/testhosts.sh exec bench lnx target/release/examples/reflect --nic af_xdp --iface veth-lnx --mode gen --secs 10
//! ```
//!
//! The generator's frames use the IEEE local experimental EtherType 0x88b5,
//! so nothing else on the link mistakes them for real traffic. Both sides
//! print one line per second and a summary.

use std::process::ExitCode;
use std::time::{Duration, Instant};
use tas_nic::af_packet::AfPacketNic;
use tas_nic::af_xdp::{AfXdpConfig, AfXdpNic, XdpMode};
use tas_nic::{FrameBatch, Nic};

const ETHERTYPE: u16 = 0x88b5;

struct Args {
    nic: String,
    iface: String,
    mode: String,
    queue: u32,
    xdp_mode: Option<XdpMode>,
    batch: usize,
    secs: u64,
    block: bool,
    size: usize,
    window: u64,
    dst: [u8; 6],
}

const USAGE: &str = "usage: reflect --nic af_packet|af_xdp --iface IF [--mode reflect|gen] \
[--queue N] [--xdp-mode drv|skb] [--batch N] [--secs S] [--block] [--size BYTES] \
[--window N] [--dst MAC]";

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nic: String::new(),
        iface: String::new(),
        mode: "reflect".into(),
        queue: 0,
        xdp_mode: None,
        batch: 32,
        secs: 10,
        block: false,
        size: 64,
        window: 512,
        dst: [0xff; 6],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if flag == "--block" {
            a.block = true;
            continue;
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--nic" => a.nic = val,
            "--iface" => a.iface = val,
            "--mode" => a.mode = val,
            "--queue" => a.queue = num(&val)? as u32,
            "--xdp-mode" => {
                a.xdp_mode = Some(match val.as_str() {
                    "drv" | "driver" | "native" => XdpMode::Driver,
                    "skb" | "generic" => XdpMode::Generic,
                    _ => return Err(format!("--xdp-mode: drv or skb, not {val}")),
                })
            }
            "--batch" => a.batch = num(&val)?.clamp(1, 1024) as usize,
            "--secs" => a.secs = num(&val)?.max(1),
            "--size" => a.size = num(&val)?.clamp(60, 1514) as usize,
            "--window" => a.window = num(&val)?.max(1),
            "--dst" => a.dst = parse_mac(&val).ok_or_else(|| format!("--dst: bad MAC {val}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.iface.is_empty() {
        return Err("--iface is required".into());
    }
    if a.mode != "reflect" && a.mode != "gen" {
        return Err(format!("--mode: reflect or gen, not {}", a.mode));
    }
    Ok(a)
}

fn open(a: &Args) -> Result<Box<dyn Nic>, String> {
    match a.nic.as_str() {
        "af_packet" => AfPacketNic::open(&a.iface)
            .map(|n| Box::new(n) as Box<dyn Nic>)
            .map_err(|e| e.to_string()),
        "af_xdp" => {
            let cfg = AfXdpConfig {
                mode: a.xdp_mode,
                ..AfXdpConfig::default()
            };
            let n = AfXdpNic::open_with(&a.iface, a.queue, cfg).map_err(|e| e.to_string())?;
            eprintln!(
                "af_xdp: {} queue {} attached in {:?} mode",
                a.iface,
                a.queue,
                n.mode()
            );
            Ok(Box::new(n))
        }
        other => Err(format!("--nic: af_packet or af_xdp, not '{other}'")),
    }
}

fn wait(nic: &dyn Nic, ms: i32) {
    if let Some(fd) = nic.wait_fd() {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
}

/// Sends the whole batch, retrying briefly while the TX ring is full; drops
/// what still does not fit. Returns frames sent.
fn send_batch(nic: &mut dyn Nic, batch: &mut FrameBatch) -> Result<u64, String> {
    let mut sent = 0;
    for _ in 0..64 {
        if batch.is_empty() {
            break;
        }
        let n = nic.send(batch).map_err(|e| e.to_string())?;
        batch.consume_front(n);
        sent += n as u64;
    }
    batch.clear();
    Ok(sent)
}

fn reflect(a: &Args, nic: &mut dyn Nic) -> Result<(), String> {
    let mac = nic.mac();
    let mut batch = FrameBatch::new(a.batch);
    let (mut total, mut second) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let mut tick = start + Duration::from_secs(1);
    let mut first: Option<Instant> = None;
    let mut last = start;
    while Instant::now() < end {
        batch.clear();
        let n = nic.recv(&mut batch).map_err(|e| e.to_string())?;
        if n > 0 {
            first.get_or_insert_with(Instant::now);
            for i in 0..batch.len() {
                let f = batch.frame_mut(i);
                if f.len() >= 14 {
                    f.copy_within(6..12, 0);
                    f[6..12].copy_from_slice(&mac);
                }
            }
            second += send_batch(nic, &mut batch)?;
            last = Instant::now();
        } else if a.block {
            wait(nic, 100);
        }
        let now = Instant::now();
        if now >= tick {
            println!("reflect: {second} frames/s");
            total += second;
            second = 0;
            tick += Duration::from_secs(1);
        }
    }
    total += second;
    let active = first
        .map(|f| last.saturating_duration_since(f))
        .unwrap_or_default();
    println!(
        "reflect summary: {} {}: {total} frames reflected, {:.0} frames/s while traffic flowed ({:.2} s)",
        nic.kind(),
        a.iface,
        total as f64 / active.as_secs_f64().max(1e-9),
        active.as_secs_f64()
    );
    Ok(())
}

fn generate(a: &Args, nic: &mut dyn Nic) -> Result<(), String> {
    let mac = nic.mac();
    let mut tx = FrameBatch::new(a.batch);
    let mut rx = FrameBatch::new(a.batch);
    let (mut sent, mut got, mut seq) = (0u64, 0u64, 0u64);
    let (mut sec_sent, mut sec_got) = (0u64, 0u64);
    let mut in_flight = 0u64;
    let mut lost_credit = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let mut tick = start + Duration::from_secs(1);
    let mut last_rx = Instant::now();
    while Instant::now() < end {
        // Fill the window.
        while in_flight + (tx.len() as u64) < a.window && !tx.is_full() {
            let s = seq;
            tx.push_with(|slot| {
                slot[0..6].copy_from_slice(&a.dst);
                slot[6..12].copy_from_slice(&mac);
                slot[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
                slot[14..22].copy_from_slice(&s.to_be_bytes());
                slot[22..a.size].fill(0x5a);
                a.size
            });
            seq += 1;
        }
        if !tx.is_empty() {
            let n = send_batch(nic, &mut tx)?;
            sent += n;
            sec_sent += n;
            in_flight += n;
        }
        rx.clear();
        let n = nic.recv(&mut rx).map_err(|e| e.to_string())?;
        let mine = rx
            .iter()
            .filter(|f| f.len() >= 14 && f[0..6] == mac && f[12..14] == ETHERTYPE.to_be_bytes())
            .count() as u64;
        got += mine;
        sec_got += mine;
        in_flight = in_flight.saturating_sub(mine);
        if n > 0 {
            last_rx = Instant::now();
        } else if last_rx.elapsed() > Duration::from_millis(20) && in_flight > 0 {
            // Frames were lost (or there is no reflector): reopen the window.
            lost_credit += in_flight;
            in_flight = 0;
            last_rx = Instant::now();
            if a.block {
                wait(nic, 10);
            }
        }
        let now = Instant::now();
        if now >= tick {
            println!("gen: sent {sec_sent}/s, reflected back {sec_got}/s");
            sec_sent = 0;
            sec_got = 0;
            tick += Duration::from_secs(1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = got as f64 / secs;
    // Little's law: with the window always full, RTT = window / throughput.
    println!(
        "gen rtt estimate: {:.1} us (window / reflected rate; exact for --window 1)",
        a.window as f64 / rate.max(1e-9) * 1e6
    );
    println!(
        "gen summary: {} {} size {} window {}: sent {sent} ({:.0}/s), reflected back {got} ({:.0}/s), \
         window reopened after loss for {lost_credit} frames",
        nic.kind(),
        a.iface,
        a.size,
        a.window,
        sent as f64 / secs,
        got as f64 / secs
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("reflect: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut nic = match open(&a) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("reflect: cannot open {} on {}: {e}", a.nic, a.iface);
            return ExitCode::FAILURE;
        }
    };
    let r = if a.mode == "gen" {
        generate(&a, nic.as_mut())
    } else {
        reflect(&a, nic.as_mut())
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reflect: {e}");
            ExitCode::FAILURE
        }
    }
}
