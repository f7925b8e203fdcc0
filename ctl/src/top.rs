//! `tasctl top`: a live view of a running tasd — per-core busy share,
//! packet and payload rates, flows by state, and the busiest flows with
//! their RTT and congestion state — refreshed every interval.
//!
//! On a terminal it redraws in place within the terminal's size (80×24 when
//! unknown: `COLUMNS`/`LINES` or `stty size` tell otherwise) and quits on
//! `q` or Ctrl-C (the terminal is put in non-canonical mode without echo and
//! restored on every exit). With `-b` or when stdout is not a terminal it
//! prints plain frames one after another, `-n` of them (like `top -b`).

use crate::{call, decode, human_rate, Cli, Failure};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tasd::ctlsock::{Request, Status};
use tasd::stack::FlowDetail;

/// What `top` was asked for.
pub struct TopArgs {
    pub interval: Duration,
    pub iterations: Option<u64>,
    pub batch: bool,
}

/// Payload counters of a flow at the previous frame.
type Seen = HashMap<u32, (u64, u64)>;

pub fn top(cli: &Cli, args: &TopArgs) -> Result<(), Failure> {
    let interactive =
        !args.batch && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let _raw = if interactive { RawMode::enter() } else { None };
    let mut seen: Seen = HashMap::new();
    let mut last = Instant::now();
    let mut frame = 0u64;
    let mut out = std::io::stdout();
    loop {
        let status: Status = decode(call(cli, &Request::Status)?)?;
        let flows: Vec<FlowDetail> = decode(call(cli, &Request::Flows)?)?;
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let (cols, rows) = if interactive {
            term_size()
        } else {
            (80, usize::MAX)
        };
        let text = render(
            &status,
            &flows,
            &mut seen,
            (frame > 0).then_some(dt),
            cols,
            rows,
        );
        frame += 1;
        if interactive {
            // Home, clear, the frame (output processing stays on: the
            // terminal turns each newline into CR LF).
            let _ = write!(out, "\x1b[H\x1b[2J{text}");
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
        if args.iterations.is_some_and(|n| frame >= n) {
            return Ok(());
        }
        if interactive {
            if wait_for_quit(args.interval) {
                let _ = writeln!(out);
                return Ok(());
            }
        } else {
            std::thread::sleep(args.interval);
        }
    }
}

/// Waits `d` for keys on stdin; true on `q`, `Q` or Ctrl-C (or a closed
/// terminal).
fn wait_for_quit(d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let stdin = std::io::stdin();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return false,
            Ok(_) => {
                let mut b = [0u8; 64];
                match stdin.lock().read(&mut b) {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => {
                        if b[..n].iter().any(|&c| c == b'q' || c == b'Q' || c == 3) {
                            return true;
                        }
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// The terminal in non-canonical mode without echo or signal keys (Ctrl-C
/// arrives as a key), cursor hidden; restored when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut t = saved.clone();
        t.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &t).ok()?;
        let mut o = std::io::stdout();
        let _ = write!(o, "\x1b[?25l");
        let _ = o.flush();
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let mut o = std::io::stdout();
        let _ = write!(o, "\x1b[?25h");
        let _ = o.flush();
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// (columns, rows) of the terminal: `COLUMNS`/`LINES`, else `stty size`,
/// else 80×24.
fn term_size() -> (usize, usize) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    if let (Some(c), Some(r)) = (env("COLUMNS"), env("LINES")) {
        return (c.max(40), r.max(10));
    }
    let stty = std::process::Command::new("stty")
        .arg("size")
        .stdin(std::process::Stdio::inherit())
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            let mut it = s.split_whitespace().map(|x| x.parse::<usize>().ok());
            Some((it.next()??, it.next()??))
        });
    match stty {
        Some((r, c)) if r > 0 && c > 0 => (c.max(40), r.max(10)),
        _ => (80, 24),
    }
}

fn mbit(bytes: u64, dt: f64) -> f64 {
    bytes as f64 * 8.0 / dt / 1e6
}

/// One frame, at most `cols` wide and `rows` high. `dt`: seconds since the
/// previous frame (None on the first, when flow rates are not known yet).
pub fn render(
    s: &Status,
    flows: &[FlowDetail],
    seen: &mut Seen,
    dt: Option<f64>,
    cols: usize,
    rows: usize,
) -> String {
    let mut lines: Vec<String> = Vec::new();
    let up = s.uptime_s as u64;
    lines.push(format!(
        "tasd {} pid {} up {}h{:02}m{:02}s  {} {} {}  cc {}",
        s.version,
        s.pid,
        up / 3600,
        up / 60 % 60,
        up % 60,
        s.ip,
        s.iface,
        s.nic,
        s.cc
    ));
    lines.push(format!(
        "rx {:>8.0} pkt/s {:>8.1} Mbit/s   tx {:>8.0} pkt/s {:>8.1} Mbit/s",
        s.rx_pps, s.rx_mbps, s.tx_pps, s.tx_mbps
    ));
    lines.push(format!(
        "drops {:.0}/s  exceptions {:.0}/s  apps {}  flows {}",
        s.drops_ps,
        s.exceptions_ps,
        s.apps.len(),
        s.flows_total
    ));
    let states: Vec<String> = s.flows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    lines.push(format!(
        "states {}",
        if states.is_empty() {
            "-".into()
        } else {
            states.join("  ")
        }
    ));
    let mut cores = String::from("cores");
    for c in &s.cores {
        let bar_w = 10;
        let fill = ((c.busy_pct / 100.0) * bar_w as f64).round() as usize;
        cores.push_str(&format!(
            "  #{}{} [{}{}] {:>5.1}%",
            c.id,
            if c.active { "" } else { "(off)" },
            "#".repeat(fill.min(bar_w)),
            ".".repeat(bar_w - fill.min(bar_w)),
            c.busy_pct
        ));
    }
    lines.push(cores);
    lines.push(String::new());

    // Flow rates from payload counters since the previous frame.
    let mut rated: Vec<(f64, f64, &FlowDetail)> = Vec::new();
    let mut next: Seen = HashMap::with_capacity(flows.len());
    for f in flows {
        let Some(id) = f.id else { continue };
        next.insert(id, (f.bytes_in, f.bytes_out));
        let (rin, rout) = match (dt, seen.get(&id)) {
            (Some(dt), Some(&(i, o))) if dt > 0.0 => (
                mbit(f.bytes_in.saturating_sub(i), dt),
                mbit(f.bytes_out.saturating_sub(o), dt),
            ),
            _ => (0.0, 0.0),
        };
        rated.push((rin, rout, f));
    }
    *seen = next;
    rated.sort_by(|a, b| (b.0 + b.1).total_cmp(&(a.0 + a.1)));
    lines.push(format!(
        "{:<6} {:<21} {:<11} {:>7} {:>7} {:>6} {:>9} {:>4}",
        "PORT", "REMOTE", "STATE", "IN Mb/s", "OUTMb/s", "RTT", "RATE/WND", "RETX"
    ));
    let room = rows.saturating_sub(lines.len());
    let shown = rated.len().min(room);
    for (rin, rout, f) in rated.iter().take(shown) {
        let rtt = f.rtt_us.map_or("-".to_string(), |r| {
            if r >= 10_000 {
                format!("{}ms", r / 1000)
            } else {
                format!("{r}us")
            }
        });
        let cc = match (&f.cc, f.rate_kbps, f.cwnd) {
            (None, ..) => "-".to_string(),
            (Some(_), Some(0), _) => "unlimited".to_string(),
            (Some(_), Some(r), _) => human_rate(r),
            (Some(_), None, Some(w)) => format!("w{}", w),
            (Some(a), None, None) => a.clone(),
        };
        let cc = if f.slow_start == Some(true) {
            format!("{cc}(ss)")
        } else {
            cc
        };
        lines.push(format!(
            "{:<6} {:<21} {:<11} {:>7.1} {:>7.1} {:>6} {:>9} {:>4}",
            f.local
                .rsplit_once(':')
                .map_or(f.local.as_str(), |(_, p)| p),
            f.remote,
            f.state,
            rin,
            rout,
            rtt,
            cc,
            f.fast_retransmits + f.timeouts
        ));
    }
    if shown < rated.len() && !lines.is_empty() {
        let last = lines.len() - 1;
        lines[last] = format!("... {} more flows", rated.len() - shown + 1);
    }
    lines.truncate(rows);
    let mut out = String::new();
    for l in lines {
        let cut: String = l.chars().take(cols).collect();
        out.push_str(&cut);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasd::ctlsock::CoreStatus;

    fn flow(id: u32, bin: u64, bout: u64) -> FlowDetail {
        FlowDetail {
            id: Some(id),
            local: "198.18.0.1:5001".into(),
            remote: format!("198.18.0.2:{}", 40000 + id),
            state: "ESTABLISHED".into(),
            app: 1,
            cc: Some("dctcp-rate".into()),
            slow_start: Some(false),
            rate_kbps: Some(2_000_000),
            cwnd: None,
            rtt_us: Some(85),
            send_rate_kbps: None,
            bytes_in: bin,
            bytes_out: bout,
            in_flight: 0,
            queued: 0,
            fast_retransmits: 1,
            timeouts: 0,
            ecn: false,
            rx_buf: 32 << 10,
            tx_buf: 32 << 10,
            ecn_fraction: None,
            alpha: None,
        }
    }

    #[test]
    fn frames_fit_80x24_and_rank_flows_by_rate() {
        let st = Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_s: 3723.0,
            ip: "198.18.0.1/24".into(),
            iface: "veth-tas".into(),
            nic: "af_xdp".into(),
            mode: "exclusive".into(),
            goal: "throughput".into(),
            mac: "02:00:00:00:00:01".into(),
            socket: "/run/tas/tasd.sock".into(),
            cores: vec![CoreStatus {
                id: 0,
                busy_pct: 50.0,
                active: true,
                lanes: vec![0],
                ..Default::default()
            }],
            apps: vec![],
            flows: [("ESTABLISHED".to_string(), 100u64)].into_iter().collect(),
            flows_total: 100,
            rx_pps: 1000.0,
            tx_pps: 2000.0,
            rx_mbps: 1.0,
            tx_mbps: 900.0,
            drops_ps: 0.0,
            exceptions_ps: 0.0,
            cc: "dctcp-rate".into(),
        };
        let mut seen = Seen::new();
        let first: Vec<FlowDetail> = (0..100).map(|i| flow(i, 0, 0)).collect();
        let f0 = render(&st, &first, &mut seen, None, 80, 24);
        assert!(f0.contains("up 1h02m03s"), "{f0}");
        // One second later flow 7 sent 125 MB: it is first, at 1000 Mbit/s.
        let second: Vec<FlowDetail> = (0..100)
            .map(|i| flow(i, 0, if i == 7 { 125_000_000 } else { i as u64 }))
            .collect();
        let f1 = render(&st, &second, &mut seen, Some(1.0), 80, 24);
        let lines: Vec<&str> = f1.lines().collect();
        assert_eq!(lines.len(), 24, "{f1}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{f1}");
        assert!(
            lines[7].starts_with("5001 ")
                && lines[7].contains(":40007")
                && lines[7].contains("1000.0"),
            "{f1}"
        );
        assert!(
            lines[7].contains("85us") && lines[7].contains("2gbps"),
            "{f1}"
        );
        assert!(
            lines[23].starts_with("... ") && lines[23].contains("more flows"),
            "{f1}"
        );
        assert!(f1.contains("#0 [#####.....]  50.0%"), "{f1}");
    }
}
