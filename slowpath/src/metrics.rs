//! The metrics endpoint (`tasd --metrics-addr IP:PORT`): a minimal HTTP/1.x
//! server that answers `GET /metrics` with a text page built by the daemon
//! (Prometheus text exposition format 0.0.4; the page itself is written by
//! `daemon::prom`), and helpers to write that format correctly.
//!
//! Like the attach and control sockets it is an untrusted listener served
//! from the slow-path loop without ever blocking it: non-blocking sockets,
//! at most [`MAX_CLIENTS`] connections (the one idle longest is dropped for
//! a new one), a request head of at most [`MAX_REQUEST`] bytes, one request
//! per connection (`Connection: close`), idle connections closed after
//! [`IDLE_TIMEOUT`]. Only `GET` and `HEAD` of `/metrics` are served; other
//! paths get 404, other methods 405, garbage 400, an oversized head 431.
//!
//! Must not: keep more than one page per client or read a client's input
//! while its answer is being written.

use nix::poll::{PollFd, PollFlags};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Most concurrent connections.
pub const MAX_CLIENTS: usize = 16;
/// Longest request head (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Connections without progress are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Client {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// The answer is complete in `out`: close once it is written.
    answered: bool,
    last: Instant,
}

/// Counters of the endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsCounters {
    pub requests: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Connections dropped to make room or for idling.
    pub dropped: u64,
}

/// The metrics listener and its connections.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    clients: Vec<Client>,
    pub counters: MetricsCounters,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let err = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        Ok(MetricsServer {
            listener,
            addr,
            clients: Vec::new(),
            counters: MetricsCounters::default(),
        })
    }

    /// The bound address (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends the file descriptors to poll, with their events, to `out`.
    pub fn poll_fds<'a>(&'a self, out: &mut Vec<PollFd<'a>>) {
        out.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for c in &self.clients {
            let ev = if c.answered {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            out.push(PollFd::new(c.stream.as_fd(), ev));
        }
    }

    /// Accepts, reads, answers and writes whatever is ready, without
    /// blocking. `page` builds the metrics text (called once per `GET`).
    pub fn service(&mut self, mut page: impl FnMut() -> String) {
        let now = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        if let Some(i) =
                            (0..self.clients.len()).min_by_key(|&i| self.clients[i].last)
                        {
                            self.clients.swap_remove(i);
                            self.counters.dropped += 1;
                        }
                    }
                    if s.set_nonblocking(true).is_ok() {
                        let _ = s.set_nodelay(true);
                        self.clients.push(Client {
                            stream: s,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            sent: 0,
                            answered: false,
                            last: now,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::warn_limited!("metrics accept: {e}");
                    break;
                }
            }
        }
        let counters = &mut self.counters;
        self.clients.retain_mut(|c| {
            let keep = serve(c, now, &mut page, counters);
            if !keep && !c.answered {
                counters.dropped += 1;
            }
            keep
        });
    }
}

/// Reads, answers and writes for one client until it would block; false
/// when the connection is to be closed.
fn serve(
    c: &mut Client,
    now: Instant,
    page: &mut impl FnMut() -> String,
    n: &mut MetricsCounters,
) -> bool {
    let mut buf = [0u8; 2048];
    while !c.answered {
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(k) => {
                c.last = now;
                c.inbuf.extend_from_slice(&buf[..k]);
                if let Some(end) = head_end(&c.inbuf) {
                    let (status, body) = answer(&c.inbuf[..end], page);
                    n.requests += 1;
                    if status != 200 {
                        n.errors += 1;
                    }
                    let head_only = c.inbuf.starts_with(b"HEAD ");
                    c.out = response(status, &body, head_only);
                    c.inbuf = Vec::new();
                    c.answered = true;
                } else if c.inbuf.len() > MAX_REQUEST {
                    n.requests += 1;
                    n.errors += 1;
                    c.out = response(431, "request head too large\n", false);
                    c.inbuf = Vec::new();
                    c.answered = true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if c.answered {
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => return false,
                Ok(k) => {
                    c.sent += k;
                    c.last = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if c.sent == c.out.len() {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            return false;
        }
    }
    now.duration_since(c.last) < IDLE_TIMEOUT
}

/// Where the request head ends (after the blank line), if it is complete.
fn head_end(b: &[u8]) -> Option<usize> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Status and body for a complete request head.
fn answer(head: &[u8], page: &mut impl FnMut() -> String) -> (u16, String) {
    let Ok(head) = std::str::from_utf8(head) else {
        return (400, "bad request\n".into());
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (400, "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "bad request\n".into());
    }
    if method != "GET" && method != "HEAD" {
        return (405, "only GET and HEAD\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (200, page()),
        "/" => (200, "tasd: the metrics are at /metrics\n".into()),
        _ => (404, "not found: the metrics are at /metrics\n".into()),
    }
}

fn response(status: u16, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let ctype = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

/// Writes a Prometheus text page one family at a time: a family's
/// `# HELP` and `# TYPE` lines, then its samples.
#[derive(Default)]
pub struct Page {
    text: String,
}

impl Page {
    /// Starts family `name` (must be a valid metric name; counters end in
    /// `_total`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name), "{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        if value.is_nan() {
            self.text.push_str(" NaN\n");
        } else if value.is_infinite() {
            self.text
                .push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
        } else if value.fract() == 0.0 && value.abs() < 9.0e15 {
            let _ = writeln!(self.text, " {}", value as i64);
        } else {
            let _ = writeln!(self.text, " {value}");
        }
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `fastpath.rx_frames` -> `fastpath_rx_frames` (anything outside the name
/// alphabet becomes `_`).
pub fn sanitize(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == b'_' {
                c as char
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, req: &[u8], srv: &mut MetricsServer) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            srv.service(|| "tas_x 1\n".to_string());
            match s.read(&mut buf) {
                Ok(0) => return String::from_utf8(out).unwrap(),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no answer: {}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn answers_metrics_and_errors() {
        let mut srv = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = srv.local_addr();
        let ok = get(a, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &mut srv);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntas_x 1\n"), "{ok}");
        let head = get(a, b"HEAD /metrics HTTP/1.0\r\n\r\n", &mut srv);
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(a, b"GET /x HTTP/1.1\r\n\r\n", &mut srv).starts_with("HTTP/1.1 404"));
        assert!(get(a, b"POST /metrics HTTP/1.1\r\n\r\n", &mut srv).starts_with("HTTP/1.1 405"));
        assert!(get(a, b"\x00\xff garbage\r\n\r\n", &mut srv).starts_with("HTTP/1.1 400"));
        let big = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST + 10],
        ]
        .concat();
        assert!(get(a, &big, &mut srv).starts_with("HTTP/1.1 431"));
        assert_eq!(srv.counters.requests, 6);
        assert_eq!(srv.counters.errors, 4);
    }

    #[test]
    fn silent_clients_are_bounded() {
        let mut srv = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = srv.local_addr();
        let mut silent = Vec::new();
        for _ in 0..(MAX_CLIENTS * 3) {
            silent.push(TcpStream::connect(a).unwrap());
            srv.service(String::new);
            assert!(srv.clients.len() <= MAX_CLIENTS);
        }
        // A real request still gets its answer.
        let ok = get(a, b"GET /metrics HTTP/1.1\r\n\r\n", &mut srv);
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(srv.counters.dropped >= (MAX_CLIENTS * 2) as u64);
    }

    #[test]
    fn page_writes_valid_families() {
        let mut p = Page::default();
        p.family("tas_packets_total", Kind::Counter, "Frames.\nSecond line")
            .sample("tas_packets_total", &[("direction", "rx")], 12.0)
            .sample("tas_packets_total", &[("direction", "t\"x")], 0.5);
        p.single("tas_up", Kind::Gauge, "Up.", 1.0);
        let t = p.finish();
        assert_eq!(
            t,
            "# HELP tas_packets_total Frames.\\nSecond line\n# TYPE tas_packets_total counter\n\
             tas_packets_total{direction=\"rx\"} 12\ntas_packets_total{direction=\"t\\\"x\"} 0.5\n\
             # HELP tas_up Up.\n# TYPE tas_up gauge\ntas_up 1\n"
        );
        assert!(valid_name("tas_a:b_1") && !valid_name("1tas") && !valid_name("tas-x"));
        assert_eq!(sanitize("fastpath.rx-frames"), "fastpath_rx_frames");
    }
}
