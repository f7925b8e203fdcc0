//! `tasctl capture`: records the frames tasd's fast path receives and sends
//! — what the kernel's tcpdump cannot see on an interface whose frames
//! AF_XDP or DPDK take before the kernel stack. With `-w FILE` it writes a
//! pcap file (nanosecond timestamps, Ethernet) that `tcpdump -r` and
//! Wireshark read; without, it prints one line per frame like tcpdump.
//! Stops after `-c COUNT` frames or on Ctrl-C / SIGTERM, then says on stderr
//! how many frames were captured and how many the capture buffer dropped
//! (traffic itself is never affected).

use crate::{call, decode, Cli, Failure};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use tasd::ctlsock::{CaptureBatch, CaptureStarted, CapturedFrame, Request};

pub struct CaptureArgs {
    pub write: Option<PathBuf>,
    pub count: Option<u64>,
    pub port: Option<u16>,
    pub snaplen: u32,
}

/// The pcap global header: nanosecond-resolution magic, version 2.4,
/// LINKTYPE_ETHERNET.
pub fn pcap_header(snaplen: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// One pcap record.
pub fn pcap_record(t_ns: u64, orig_len: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(16 + data.len());
    r.extend_from_slice(&((t_ns / 1_000_000_000) as u32).to_le_bytes());
    r.extend_from_slice(&((t_ns % 1_000_000_000) as u32).to_le_bytes());
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
    r.extend_from_slice(data);
    r
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A tcpdump-like one-line summary of a frame.
pub fn summary(t_ns: u64, rx: bool, len: u32, f: &[u8]) -> String {
    let secs = t_ns / 1_000_000_000;
    let t = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        t_ns % 1_000_000_000 / 1000
    );
    let dir = if rx { "rx" } else { "tx" };
    let what = describe(f, len);
    format!("{t} {dir} {what}")
}

fn describe(f: &[u8], len: u32) -> String {
    if f.len() < 14 {
        return format!("truncated frame, length {len}");
    }
    let et = u16::from_be_bytes([f[12], f[13]]);
    match et {
        0x0806 if f.len() >= 42 => {
            let op = u16::from_be_bytes([f[20], f[21]]);
            let ip = |o: usize| format!("{}.{}.{}.{}", f[o], f[o + 1], f[o + 2], f[o + 3]);
            match op {
                1 => format!(
                    "ARP, Request who-has {} tell {}, length {len}",
                    ip(38),
                    ip(28)
                ),
                2 => format!(
                    "ARP, Reply {} is-at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, length {len}",
                    ip(28),
                    f[22],
                    f[23],
                    f[24],
                    f[25],
                    f[26],
                    f[27]
                ),
                _ => format!("ARP, op {op}, length {len}"),
            }
        }
        0x0800 if f.len() >= 34 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let ip = |o: usize| format!("{}.{}.{}.{}", f[o], f[o + 1], f[o + 2], f[o + 3]);
            let (src, dst) = (ip(26), ip(30));
            let t = 14 + ihl;
            if f[23] == 6 && f.len() >= t + 20 {
                let p = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
                let w = |o: usize| u32::from_be_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
                let doff = usize::from(f[t + 12] >> 4) * 4;
                let fl = f[t + 13];
                let mut flags = String::new();
                for (bit, c) in [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x20, 'U'),
                    (0x40, 'E'),
                    (0x80, 'W'),
                ] {
                    if fl & bit != 0 {
                        flags.push(c);
                    }
                }
                if fl & 0x10 != 0 {
                    flags.push('.');
                }
                let payload = tot.saturating_sub(ihl + doff);
                format!(
                    "IP {src}.{} > {dst}.{}: Flags [{flags}], seq {}, ack {}, win {}, length {payload}",
                    p(t),
                    p(t + 2),
                    w(t + 4),
                    w(t + 8),
                    p(t + 14)
                )
            } else {
                format!("IP {src} > {dst}: proto {}, length {len}", f[23])
            }
        }
        _ => format!("ethertype 0x{et:04x}, length {len}"),
    }
}

pub fn capture(cli: &Cli, a: &CaptureArgs) -> Result<(), Failure> {
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.thread_block()
        .map_err(|e| Failure::Unreachable(format!("capture: blocking signals: {e}")))?;
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::Unreachable(format!("capture: signalfd: {e}")))?;
    let mut out: Box<dyn Write> = match &a.write {
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdout()),
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| Failure::Usage(format!("capture: cannot write {}: {e}", p.display())),
        )?)),
        None => Box::new(std::io::stdout()),
    };
    let started: CaptureStarted = decode(call(
        cli,
        &Request::CaptureStart {
            port: a.port,
            snaplen: a.snaplen,
        },
    )?)?;
    let pcap = a.write.is_some();
    let io_err = |e: std::io::Error| Failure::Unreachable(format!("capture: write: {e}"));
    if pcap {
        out.write_all(&pcap_header(started.snaplen))
            .map_err(io_err)?;
    } else {
        eprintln!(
            "tasctl: capturing on {} lane(s){}, snap length {}; Ctrl-C stops",
            started.lanes,
            a.port.map_or(String::new(), |p| format!(", TCP port {p}")),
            started.snaplen
        );
    }
    let mut n: u64 = 0;
    let mut dropped;
    let emit = |b: &CaptureBatch, out: &mut Box<dyn Write>, n: &mut u64| -> Result<bool, Failure> {
        for f in &b.frames {
            if a.count.is_some_and(|c| *n >= c) {
                return Ok(true);
            }
            let data: Vec<u8> = unhex(&f.data)
                .ok_or_else(|| Failure::Unreachable("capture: bad frame data from tasd".into()))?;
            write_frame(out, pcap, f, &data).map_err(io_err)?;
            *n += 1;
        }
        out.flush().map_err(io_err)?;
        Ok(a.count.is_some_and(|c| *n >= c))
    };
    loop {
        let b: CaptureBatch = decode(call(cli, &Request::CaptureRead { id: started.id })?)?;
        dropped = b.dropped;
        if emit(&b, &mut out, &mut n)? || !b.running {
            break;
        }
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(50u8)).unwrap_or(0) > 0 {
            break;
        }
    }
    // The frames taken before the stop, then the end of the capture.
    if let Ok(v) = call(cli, &Request::CaptureStop { id: started.id }) {
        if let Ok(b) = decode::<CaptureBatch>(v) {
            dropped = b.dropped;
            emit(&b, &mut out, &mut n)?;
        }
    }
    out.flush().map_err(io_err)?;
    eprintln!("{n} packets captured\n{dropped} packets dropped by the capture buffer");
    Ok(())
}

fn write_frame(
    out: &mut Box<dyn Write>,
    pcap: bool,
    f: &CapturedFrame,
    data: &[u8],
) -> std::io::Result<()> {
    if pcap {
        out.write_all(&pcap_record(f.t_ns, f.len, data))
    } else {
        writeln!(out, "{}", summary(f.t_ns, f.rx, f.len, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_layout_and_summaries() {
        let h = pcap_header(2048);
        assert_eq!(h.len(), 24);
        assert_eq!(&h[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        let r = pcap_record(3_000_000_123, 1514, &[1, 2, 3]);
        assert_eq!(&r[..4], &3u32.to_le_bytes());
        assert_eq!(&r[4..8], &123u32.to_le_bytes());
        assert_eq!(&r[8..12], &3u32.to_le_bytes());
        assert_eq!(&r[12..16], &1514u32.to_le_bytes());
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        // A SYN from 198.18.0.2:40000 to 198.18.0.1:5001.
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&[198, 18, 0, 1]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5001u16.to_be_bytes());
        f[38..42].copy_from_slice(&7u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x02;
        f[48..50].copy_from_slice(&64240u16.to_be_bytes());
        let s = summary(3_723_000_001_000, true, 54, &f);
        assert_eq!(
            s,
            "01:02:03.000001 rx IP 198.18.0.2.40000 > 198.18.0.1.5001: Flags [S], seq 7, ack 0, win 64240, length 0"
        );
        assert!(summary(0, false, 60, &[0u8; 10]).contains("truncated"));
    }
}
