//! The control socket that `tasctl` talks to, and its protocol.
//!
//! A Unix stream socket next to the attach socket, at `<attach path>.ctl`
//! (e.g. `/run/tas/tasd.sock.ctl`), mode 0600: only root (tasd's user)
//! may connect; control is privileged. Like the attach socket it is never
//! bound over a live one and removed at exit only if it is still ours
//! (`runfiles`). The protocol is line-delimited JSON: each request is one
//! JSON object on one line, each answer one JSON object on one line, in
//! order; a client may send several requests on one connection.
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"flows"}
//! {"cmd":"cc_show"}
//! {"cmd":"cc_set","algo":"timely","params":[["t_low","30us"]],"port":null}
//! {"cmd":"cc_unset","port":8080}
//! {"cmd":"stats"}
//! {"cmd":"cores"}
//! {"cmd":"cores_set","min":1,"max":2}
//! {"cmd":"listeners"}
//! → {"ok":true,"data":{...}}   or   {"ok":false,"error":"..."}
//! ```
//!
//! The types of every answer's `data` are defined here ([`Status`],
//! [`FlowDetail`](crate::stack::FlowDetail) list, [`CcShow`], [`Stats`],
//! [`CoresView`]);
//! `tasctl` decodes them with the same definitions. The server is
//! non-blocking and serviced from the slow-path loop: at most
//! [`MAX_CLIENTS`] connections, requests up to [`MAX_LINE`] bytes, idle
//! connections closed after [`IDLE_TIMEOUT`].
//!
//! Memory per client is bounded: a client's next request is neither read
//! nor answered while the answer to the previous one has not been written
//! out (the client's own socket buffer then fills and it blocks), so a
//! client holds at most one request line and one answer; an answer larger
//! than [`MAX_OUT`] closes the connection.

use nix::poll::{PollFd, PollFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::runfiles::{self, RunFileError, SockFile, SockPerms};

/// Most concurrent control connections.
pub const MAX_CLIENTS: usize = 32;
/// Longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections without activity are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer kept for a client (a `flows` of 65,536 flows is ~30 MB).
pub const MAX_OUT: usize = 64 << 20;
/// Requests answered per client and service round (others wait their turn).
const REQUESTS_PER_ROUND: usize = 64;

/// The control socket for an attach socket path.
pub fn ctl_path(attach: &Path) -> PathBuf {
    let mut s = attach.as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

/// A request from `tasctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Flows,
    CcShow,
    CcSet {
        algo: String,
        #[serde(default)]
        params: Vec<(String, String)>,
        #[serde(default)]
        port: Option<u16>,
    },
    CcUnset {
        port: u16,
    },
    Stats,
    /// `cores`: the core budget and per-core utilisation.
    Cores,
    /// `tune GOAL`: what the self-tuning optimises from now on
    /// (latency, throughput, efficiency). Answer: [`TuneView`].
    Tune {
        goal: String,
    },
    /// `tune` without a goal: the goal and what the controllers chose.
    TuneShow,
    /// `cores MIN-MAX`: change the budget at runtime.
    CoresSet {
        min: u32,
        max: u32,
    },
    /// `listeners`: every listener with its accept queue
    /// ([`ListenerInfo`](crate::stack::ListenerInfo) list).
    Listeners,
    /// `capture`: start copying the frames the lanes receive and send
    /// (of TCP `port` only, if given; `snaplen` bytes of each). One capture
    /// at a time; it stops by itself when not read for
    /// [`CAPTURE_IDLE_STOP`]. Answer: [`CaptureStarted`].
    CaptureStart {
        #[serde(default)]
        port: Option<u16>,
        snaplen: u32,
    },
    /// The frames captured since the last read ([`CaptureBatch`]).
    CaptureRead {
        id: u64,
    },
    /// Stop capture `id` (answer: the last [`CaptureBatch`]).
    CaptureStop {
        id: u64,
    },
}

/// A capture nobody reads for this long is stopped.
pub const CAPTURE_IDLE_STOP: Duration = Duration::from_secs(5);

/// Answer to `capture_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub id: u64,
    pub snaplen: u32,
    pub lanes: u32,
}

/// Frames captured since the previous read, oldest first per lane and in
/// time order across lanes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureBatch {
    pub frames: Vec<CapturedFrame>,
    /// Frames not copied since the capture started because the capture
    /// buffer was full (traffic itself is never affected).
    pub dropped: u64,
    /// False once the capture has ended (stopped, or idle too long).
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// Wall-clock time (ns since the Unix epoch).
    pub t_ns: u64,
    /// true: received from the NIC; false: sent.
    pub rx: bool,
    /// Length on the wire (`data` may be cut to the snap length).
    pub len: u32,
    /// The bytes, in hex.
    pub data: String,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok<T: Serialize>(v: &T) -> Reply {
        match serde_json::to_value(v) {
            Ok(data) => Reply {
                ok: true,
                data: Some(data),
                error: None,
            },
            Err(e) => Reply::err(format!("internal error: {e}")),
        }
    }
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            data: None,
            error: Some(msg.into()),
        }
    }
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_s: f64,
    pub ip: String,
    pub iface: String,
    pub nic: String,
    /// `shared` (beside the kernel on its address) or `exclusive`.
    #[serde(default)]
    pub mode: String,
    pub mac: String,
    pub socket: String,
    pub cores: Vec<CoreStatus>,
    pub apps: Vec<AppStatus>,
    /// Flows (and listeners, opens in progress) by state.
    pub flows: BTreeMap<String, u64>,
    pub flows_total: u64,
    /// Over about the last second.
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_mbps: f64,
    pub tx_mbps: f64,
    pub drops_ps: f64,
    pub exceptions_ps: f64,
    /// Global congestion control algorithm.
    pub cc: String,
    /// The self-tuning goal (`tasctl tune`).
    #[serde(default)]
    pub goal: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CoreStatus {
    pub id: u32,
    /// Share of about the last second the core spent in polling rounds that
    /// found work (%); spinning on empty queues and sleeping count as idle.
    pub busy_pct: f64,
    /// Whether the core currently serves NIC lanes (inactive cores sleep).
    #[serde(default)]
    pub active: bool,
    /// The NIC lanes (queues with their TX scheduler) this core polls.
    #[serde(default)]
    pub lanes: Vec<u32>,
    /// The idle spin the core uses now (µs): self-tuned, or --idle-spin-us.
    #[serde(default)]
    pub spin_us: f64,
    /// Share of the core's last epoch spent waiting for a CPU (%).
    #[serde(default)]
    pub contention_pct: f64,
    /// Share of the core's last epoch in which some task of the machine
    /// waited for a CPU (%, the kernel's PSI); the idle spin is priced with
    /// the larger of this (scaled down by `idle_cpus`) and
    /// `contention_pct` (less its own wake-ups' latency).
    #[serde(default)]
    pub pressure_pct: f64,
    /// What a wake-up of the core costs, measured (µs): how late its sleeps
    /// to a deadline end.
    #[serde(default)]
    pub wake_us: f64,
    /// CPU the machine left idle over the last few epochs (in CPUs); with
    /// half a CPU idle or more the pressure is wake-up latency, not CPUs
    /// short, and does not price the spin.
    #[serde(default)]
    pub idle_cpus: f64,
    /// How long the core holds an ACK for the app's answer now (µs):
    /// `--ack-delay-us`, or up to 500 while answers come later.
    #[serde(default)]
    pub ack_hold_us: f64,
    /// The CPU the core's thread last ran on.
    #[serde(default)]
    pub cpu: Option<u32>,
    /// The CPU it is pinned to (`--cpus`), if any.
    #[serde(default)]
    pub pinned: Option<u32>,
}

/// `tune`: the self-tuning goal and what the controllers chose for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneView {
    /// latency, throughput or efficiency.
    pub goal: String,
    /// "self-tuned" or the fixed value.
    pub idle_spin: String,
    /// Idle cores yield their CPU between polls (`--no-idle-yield`: no).
    #[serde(default)]
    pub idle_yield: bool,
    pub scale_up_below_idle: f64,
    pub scale_down_above_idle: f64,
    /// The thresholds were given on the command line (`tune` keeps them).
    pub scale_fixed: bool,
    pub cores: Vec<CoreStatus>,
}

/// `cores` and `cores MIN-MAX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoresView {
    /// Fast-path cores polling now.
    pub active: u32,
    pub min: u32,
    pub max: u32,
    /// NIC lanes opened at start: the upper bound for `max`.
    pub lanes: u32,
    /// Aggregate idle over the controller's last window, in cores.
    pub idle_cores: f64,
    /// Scale-ups and scale-downs since start.
    pub scale_ups: u64,
    pub scale_downs: u64,
    /// Every fast-path thread, active or not.
    pub cores: Vec<CoreStatus>,
    /// Lanes fed by software steering from the lanes that own NIC queues
    /// (an interface with fewer RX queues than lanes); empty when every
    /// lane has a queue of its own.
    #[serde(default)]
    pub steered_lanes: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub id: u16,
    pub pid: i32,
    pub flows: u64,
    /// The app has exited; `flows` are its orphans (closed connections
    /// still delivering their data and FIN), its region stays until they
    /// are done.
    #[serde(default)]
    pub exited: bool,
    /// Bytes of its region in use: its flows' rings, plus the header and
    /// the event and command rings.
    #[serde(default)]
    pub region_used: u64,
}

/// `cc show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CcShow {
    pub global: CcSettingView,
    pub ports: Vec<CcSettingView>,
    /// Installed flows by the algorithm that currently controls them.
    pub flows_by_algo: BTreeMap<String, u64>,
    pub algorithms: Vec<AlgoView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CcSettingView {
    /// None: the global setting.
    pub port: Option<u16>,
    pub algo: String,
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgoView {
    pub name: String,
    pub help: String,
    pub params: Vec<ParamView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamView {
    pub name: String,
    pub default: String,
    pub help: String,
}

/// `stats`: every counter, by dotted name (`fastpath.rx_frames`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub counters: BTreeMap<String, u64>,
}

impl CcShow {
    pub fn new(cfg: &crate::cc::CcConfig, flows_by_algo: BTreeMap<String, u64>) -> CcShow {
        let view = |port, s: &crate::cc::Setting| CcSettingView {
            port,
            algo: s.algo.name.to_string(),
            params: s.to_text(),
        };
        let algorithms = crate::cc::ALGORITHMS
            .iter()
            .map(|a| AlgoView {
                name: a.name.to_string(),
                help: a.help.to_string(),
                params: a
                    .params
                    .iter()
                    .chain(crate::cc::LOOP_PARAMS)
                    .map(|p| ParamView {
                        name: p.name.to_string(),
                        default: crate::cc::fmt_value(p.unit, p.default),
                        help: p.help.to_string(),
                    })
                    .collect(),
            })
            .collect();
        CcShow {
            global: view(None, &cfg.global),
            ports: cfg.ports.iter().map(|(p, s)| view(Some(*p), s)).collect(),
            flows_by_algo,
            algorithms,
        }
    }
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    last: Instant,
    /// Stop reading (peer closed or sent garbage); close once `out` is sent.
    closing: bool,
}

impl Client {
    fn has_line(&self) -> bool {
        self.inbuf.contains(&b'\n')
    }

    /// Poll events: input only while nothing is waiting to be answered or
    /// written; output while an answer waits (or a request is ready to be
    /// answered, so that the loop comes back to it).
    fn events(&self) -> PollFlags {
        let mut ev = PollFlags::empty();
        let writing = self.sent < self.out.len();
        if !self.closing && !writing && !self.has_line() {
            ev |= PollFlags::POLLIN;
        }
        if writing || self.has_line() {
            ev |= PollFlags::POLLOUT;
        }
        ev
    }
}

/// Counters of the control socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct CtlCounters {
    pub requests: u64,
    pub errors: u64,
    /// Clients closed because their answer exceeded [`MAX_OUT`].
    pub dropped: u64,
}

/// The control socket server.
pub struct CtlServer {
    listener: UnixListener,
    file: SockFile,
    clients: Vec<Client>,
    pub requests: u64,
    pub errors: u64,
    pub dropped: u64,
}

impl CtlServer {
    /// Binds the control socket at `path` (mode 0600; a stale file is
    /// replaced, a live one is an error).
    pub fn bind(path: &Path) -> Result<CtlServer, RunFileError> {
        let (fd, file) = runfiles::bind_socket(
            path,
            nix::sys::socket::SockType::Stream,
            SockPerms {
                mode: 0o600,
                gid: None,
            },
            MAX_CLIENTS as i32,
        )?;
        Ok(CtlServer {
            listener: UnixListener::from(fd),
            file,
            clients: Vec::new(),
            requests: 0,
            errors: 0,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends the file descriptors to poll, with their events, to `out`.
    pub fn poll_fds<'a>(&'a self, out: &mut Vec<PollFd<'a>>) {
        out.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for c in &self.clients {
            out.push(PollFd::new(c.stream.as_fd(), c.events()));
        }
    }

    /// Accepts, reads, answers and writes whatever is ready, without
    /// blocking. `handle` answers one request.
    pub fn service(&mut self, mut handle: impl FnMut(Request) -> Reply) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        // Oldest idle first: drop the connection that waited longest.
                        if let Some(i) = self
                            .clients
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, c)| c.last)
                            .map(|(i, _)| i)
                        {
                            self.clients.swap_remove(i);
                        }
                    }
                    if s.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream: s,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            sent: 0,
                            last: Instant::now(),
                            closing: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::warn_limited!("control socket accept: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut n = CtlCounters::default();
        self.clients
            .retain_mut(|c| serve_client(c, now, &mut handle, &mut n));
        self.requests += n.requests;
        self.errors += n.errors;
        self.dropped += n.dropped;
    }
}

/// Writes, answers and reads for one client until it would block; false
/// when the connection is to be closed.
fn serve_client(
    c: &mut Client,
    now: Instant,
    handle: &mut impl FnMut(Request) -> Reply,
    n: &mut CtlCounters,
) -> bool {
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    loop {
        // 1. Write what waits; nothing else happens until it is out.
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
        if c.sent < c.out.len() {
            break;
        }
        c.out.clear();
        c.sent = 0;
        // 2. Answer the next complete request.
        if let Some(i) = c.inbuf.iter().position(|&b| b == b'\n') {
            if answered == REQUESTS_PER_ROUND {
                break;
            }
            let line: Vec<u8> = c.inbuf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]).trim().to_string();
            if line.is_empty() {
                continue;
            }
            answered += 1;
            n.requests += 1;
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(req),
                Err(e) => Reply::err(format!("bad request: {e}")),
            };
            if !reply.ok {
                n.errors += 1;
            }
            push_reply(&mut c.out, &reply);
            if c.out.len() > MAX_OUT {
                n.dropped += 1;
                crate::warn_limited!(
                    "control client closed: an answer of {} bytes exceeds {MAX_OUT}",
                    c.out.len()
                );
                return false;
            }
            continue;
        }
        if c.closing {
            return false;
        }
        // 3. Read more.
        match c.stream.read(&mut buf) {
            Ok(0) => c.closing = true,
            Ok(k) => {
                c.last = now;
                c.inbuf.extend_from_slice(&buf[..k]);
                if c.inbuf.len() > MAX_LINE && !c.has_line() {
                    n.errors += 1;
                    let r = Reply::err(format!("request longer than {MAX_LINE} bytes"));
                    c.inbuf.clear();
                    push_reply(&mut c.out, &r);
                    c.closing = true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    now.duration_since(c.last) < IDLE_TIMEOUT
}

fn push_reply(out: &mut Vec<u8>, r: &Reply) {
    match serde_json::to_writer(&mut *out, r) {
        Ok(()) => out.push(b'\n'),
        Err(e) => {
            let _ = serde_json::to_writer(&mut *out, &Reply::err(format!("internal error: {e}")));
            out.push(b'\n');
        }
    }
}

/// Client side: one request, one answer (used by `tasctl` and tests).
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| ClientError::Connect {
        path: path.to_owned(),
        source: e,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(ClientError::Io)?;
    s.set_write_timeout(Some(timeout))
        .map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(ClientError::Io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ClientError::Timeout(timeout))
            }
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
    if buf.is_empty() {
        return Err(ClientError::Protocol(
            "the daemon closed the connection without answering".into(),
        ));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| ClientError::Protocol(format!("bad answer from the daemon: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach tasd at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no answer from tasd within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json() {
        for r in [
            Request::Status,
            Request::Flows,
            Request::CcShow,
            Request::Stats,
            Request::Cores,
            Request::CoresSet { min: 1, max: 2 },
            Request::Listeners,
            Request::CaptureStart {
                port: Some(80),
                snaplen: 256,
            },
            Request::CaptureRead { id: 3 },
            Request::CaptureStop { id: 3 },
            Request::CcUnset { port: 80 },
            Request::CcSet {
                algo: "timely".into(),
                params: vec![("t_low".into(), "30us".into())],
                port: Some(8080),
            },
        ] {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r, "{s}");
        }
        let r: Request = serde_json::from_str(r#"{"cmd":"cc_set","algo":"const-rate"}"#).unwrap();
        assert_eq!(
            r,
            Request::CcSet {
                algo: "const-rate".into(),
                params: vec![],
                port: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn server_answers_lines_and_survives_garbage() {
        let dir = std::env::temp_dir().join(format!("tas-ctl-test-{}", std::process::id()));
        let path = dir.join("t.sock.ctl");
        let mut srv = CtlServer::bind(&path).unwrap();
        let handler = |r: Request| match r {
            Request::Status => Reply::ok(&"fine"),
            _ => Reply::err("nope"),
        };
        let p2 = path.clone();
        let t = std::thread::spawn(move || {
            let a = request(&p2, &Request::Status, Duration::from_secs(5)).unwrap();
            let b = request(&p2, &Request::Stats, Duration::from_secs(5)).unwrap();
            // Garbage and two requests on one connection.
            let mut s = UnixStream::connect(&p2).unwrap();
            s.write_all(b"not json\n{\"cmd\":\"status\"}\n").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            (a, b, out)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() && Instant::now() < deadline {
            srv.service(handler);
            std::thread::sleep(Duration::from_millis(1));
        }
        let (a, b, out) = t.join().unwrap();
        assert_eq!(
            a,
            Reply {
                ok: true,
                data: Some(serde_json::json!("fine")),
                error: None
            }
        );
        assert_eq!(b.error.as_deref(), Some("nope"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("bad request"), "{out}");
        assert!(lines[1].contains("fine"), "{out}");
        drop(srv);
        assert!(!path.exists());
        let e = request(&path, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_client_that_does_not_read_costs_one_answer() {
        let dir = std::env::temp_dir().join(format!("tas-ctl-slow-{}", std::process::id()));
        let path = dir.join("t.sock.ctl");
        let mut srv = CtlServer::bind(&path).unwrap();
        let handler = |_: Request| Reply::ok(&"x".repeat(1000));
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_nonblocking(true).unwrap();
        let line = b"{\"cmd\":\"status\"}\n";
        let mut written = 0usize;
        let mut pend: &[u8] = &[];
        let batch = line.repeat(1000);
        for _ in 0..300 {
            if pend.is_empty() {
                pend = &batch;
            }
            match c.write(pend) {
                Ok(n) => {
                    written += n;
                    pend = &pend[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            srv.service(handler);
            let sc = &srv.clients[0];
            assert!(sc.inbuf.len() <= MAX_LINE + 4096, "{}", sc.inbuf.len());
            assert!(sc.out.len() <= 2048, "{}", sc.out.len());
        }
        let requests = written / line.len();
        assert!(requests > 100, "only {requests} requests went out");
        // Everything written is answered once the client reads (a partly
        // written request line is completed first).
        c.write_all(&line[written % line.len()..]).ok();
        let total = requests + usize::from(written % line.len() != 0);
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < total && Instant::now() < deadline {
            srv.service(handler);
            match c.read(&mut buf) {
                Ok(n) => got += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, total);
        assert_eq!(srv.requests as usize, total);
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
