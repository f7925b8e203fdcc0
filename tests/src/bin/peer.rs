//! `peer`: the test programs of the system tests, on either stack.
//!
//! Every mode runs on the Linux kernel stack (std::net) or, with `--tas`, on
//! TAS through the low-level API, so the same program is both sides of a test:
//!
//! ```text
//! peer [--tas] echo-server PORT [MAX_CONNS]
//! peer [--tas] echo-client IP PORT COUNT SIZE [CONNS]   prints rtt percentiles
//! peer [--tas] send IP PORT BYTES SEED                  connect, send pattern, close
//! peer [--tas] recv PORT BYTES SEED [RCVBUF]            accept one, verify pattern (--tas: RCVBUF
//!                                                      set on the listener after listen)
//! peer [--tas] serve-send PORT BYTES SEED               accept one, send pattern, close
//! peer [--tas] connect-recv IP PORT BYTES SEED          connect, verify pattern
//! peer [--tas] connect IP PORT                          prints "connected" or the errno
//! peer [--tas] echo-trace IP PORT SECS SIZE             one connection, RPCs for SECS s;
//!                                                       prints "T SENT_NS RTT_NS" per RPC
//! peer --tas accept-hold PORT N BACKLOG [RING]          accept N connections (RING-byte rings,
//!                                                       4096; 0: tasd's default),
//!                                                       print "accepted N", hold them until
//!                                                       the peer resets or closes each,
//!                                                       print "ended N", then idle
//! peer --tas reattach-echo PORT                        serve echo connections one at a time;
//!                                                       when tasd goes away, print "lost: ERR"
//!                                                       and listen again (reattaching) until
//!                                                       a tasd answers
//! peer recv-slow PORT BYTES SEED US                    like recv, reading 16 KiB per read and
//!                                                       sleeping US µs after each
//! peer --tas send-exit IP PORT BYTES SEED               connect, send pattern, close, exit at
//!                                                       once (prints "closed" first)
//! peer --tas slow-echo PORT US                        echo, one connection at a time, each
//!                                                       message answered US µs after it was read
//! peer --tas idle-wait N                               N one-millisecond waits with nothing
//!                                                       to wait for; prints "idle-wait N
//!                                                       cpu_ns T" (the thread's CPU time)
//! peer [--tas] churn IP PORT N SIZE                   N connections one after the other:
//!                                                       connect, SIZE bytes echoed, close;
//!                                                       prints "progress K" every N/10 and
//!                                                       "churn ok K failed F of N" (exit 0)
//! peer connect-hold IP PORT N SECS [SRC|-] [WINDOW]     N non-blocking connects (SO_LINGER 0:
//!                                                       exiting resets them all), at most
//!                                                       WINDOW in progress at once (0 or
//!                                                       none: all at once), print
//!                                                       "connected K of N" within SECS, idle
//! ```
//! Data is a seeded xorshift stream, so the receiver checks every byte.
//! Exit status 0 only when everything was as expected.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::exit;
use std::time::{Duration, Instant};
use tas_system_tests::monotonic_ns;

struct Pattern(u64);
impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// A byte stream on either stack.
trait Stream {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()>;
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize>;
    fn shutdown_write(&mut self) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, b)
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        Read::read(self, b)
    }
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

struct TasStream<'a> {
    tas: &'a mut tas::Tas,
    c: tas::ConnId,
}

impl Stream for TasStream<'_> {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.tas.send_all(self.c, b)
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.tas.recv_blocking(self.c, b)
    }
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.tas.shutdown_write(self.c)
    }
}

/// A Linux stream that reads at most 16 KiB at a time and sleeps after
/// each read (a slow reader).
struct SlowStream {
    s: TcpStream,
    pause: Duration,
}

impl Stream for SlowStream {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        Write::write_all(&mut self.s, b)
    }
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        let k = b.len().min(16 * 1024);
        let n = Read::read(&mut self.s, &mut b[..k])?;
        std::thread::sleep(self.pause);
        Ok(n)
    }
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.s.shutdown(std::net::Shutdown::Write)
    }
}

fn arg<T: std::str::FromStr>(a: &[String], i: usize, what: &str) -> T {
    match a.get(i).map(|s| s.parse()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("peer: missing or bad {what}");
            exit(2)
        }
    }
}

fn send_pattern(s: &mut dyn Stream, bytes: u64, seed: u64) -> std::io::Result<()> {
    let mut p = Pattern(seed | 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown_write()
}

fn recv_pattern(s: &mut dyn Stream, bytes: u64, seed: u64) -> Result<(), String> {
    let mut p = Pattern(seed | 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    // The pattern generator works in 64 KiB chunks (as the sender writes);
    // keep a cursor into the current chunk.
    let mut chunk_left = 0usize;
    let mut chunk_pos = 0usize;
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read after {got} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        let mut i = 0;
        while i < n {
            if chunk_left == 0 {
                let remaining = bytes.saturating_sub(got + i as u64);
                let len = remaining.min(want.len() as u64) as usize;
                if len == 0 {
                    return Err(format!("more than {bytes} bytes received"));
                }
                p.fill(&mut want[..len]);
                chunk_left = len;
                chunk_pos = 0;
            }
            let take = chunk_left.min(n - i);
            if buf[i..i + take] != want[chunk_pos..chunk_pos + take] {
                return Err(format!("byte mismatch near offset {}", got + i as u64));
            }
            chunk_pos += take;
            chunk_left -= take;
            i += take;
        }
        got += n as u64;
    }
    if got != bytes {
        return Err(format!("stream ended after {got} of {bytes} bytes"));
    }
    Ok(())
}

fn echo_client(
    streams: &mut [Box<dyn Stream + '_>],
    count: usize,
    size: usize,
) -> Result<Vec<Duration>, String> {
    let mut rtts = Vec::with_capacity(count);
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    for i in 0..count {
        let s = &mut streams[i % streams.len()];
        for (j, b) in msg.iter_mut().enumerate() {
            *b = (i * 31 + j) as u8;
        }
        let t = Instant::now();
        s.write_all(&msg).map_err(|e| format!("write {i}: {e}"))?;
        let mut got = 0;
        while got < size {
            let n = s
                .read(&mut back[got..])
                .map_err(|e| format!("read {i}: {e}"))?;
            if n == 0 {
                return Err(format!("server closed during message {i}"));
            }
            got += n;
        }
        rtts.push(t.elapsed());
        if back != msg {
            return Err(format!("echo {i} differs"));
        }
    }
    Ok(rtts)
}

fn report(rtts: &mut [Duration], size: usize) {
    rtts.sort();
    let pct =
        |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "echo ok: {} x {} B, rtt p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
        rtts.len(),
        size,
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
}

/// One churned connection's exchange: SIZE bytes out, the same back.
fn churn_once(s: &mut dyn Stream, msg: &[u8], back: &mut [u8]) -> Result<(), String> {
    s.write_all(msg).map_err(|e| format!("send: {e}"))?;
    let mut got = 0;
    while got < back.len() {
        match s.read(&mut back[got..]) {
            Ok(0) => return Err("closed early".into()),
            Ok(n) => got += n,
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    if back != msg {
        return Err("echo differs".into());
    }
    Ok(())
}

/// The churn loop of either stack: `one(i)` makes connection `i`.
fn churn(n: usize, mut one: impl FnMut(usize) -> Result<(), String>) {
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut last_err = String::new();
    let step = (n / 10).max(1);
    for i in 0..n {
        match one(i) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                last_err = e;
            }
        }
        if (i + 1) % step == 0 {
            println!("progress {}", i + 1);
            let _ = std::io::stdout().flush();
        }
    }
    if failed > 0 {
        eprintln!("peer: churn: last error: {last_err}");
    }
    println!("churn ok {ok} failed {failed} of {n}");
}

fn fail(msg: String) -> ! {
    eprintln!("peer: {msg}");
    println!("FAILED: {msg}");
    exit(1)
}

fn run_linux(a: &[String]) {
    match a[0].as_str() {
        "echo-server" => {
            let port: u16 = arg(a, 1, "PORT");
            let max: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            let l =
                TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| fail(format!("bind: {e}")));
            println!("listening");
            let mut handles = Vec::new();
            for s in l.incoming().take(max) {
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                // A finished thread keeps its stack until joined: let those
                // go, or tens of thousands of short connections exhaust
                // the address space and the next spawn fails.
                handles.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
                handles.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        match Read::read(&mut s, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if Write::write_all(&mut s, &buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
            }
            for h in handles {
                let _ = h.join();
            }
        }
        "echo-client" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let port: u16 = arg(a, 2, "PORT");
            let count: usize = arg(a, 3, "COUNT");
            let size: usize = arg(a, 4, "SIZE");
            let conns: usize = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
            let mut streams: Vec<Box<dyn Stream>> = (0..conns)
                .map(|_| {
                    let s = TcpStream::connect(SocketAddrV4::new(ip, port))
                        .unwrap_or_else(|e| fail(format!("connect: {e}")));
                    s.set_nodelay(true).ok();
                    Box::new(s) as Box<dyn Stream>
                })
                .collect();
            let mut rtts = echo_client(&mut streams, count, size).unwrap_or_else(|e| fail(e));
            report(&mut rtts, size);
        }
        "send" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let mut s = TcpStream::connect(SocketAddrV4::new(ip, arg(a, 2, "PORT")))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            send_pattern(&mut s, arg(a, 3, "BYTES"), arg(a, 4, "SEED"))
                .unwrap_or_else(|e| fail(format!("send: {e}")));
            // Wait for the peer's close so every byte is acknowledged.
            let mut b = [0u8; 1];
            let _ = Read::read(&mut s, &mut b);
            println!("sent");
        }
        "recv" => {
            let l = TcpListener::bind(("0.0.0.0", arg::<u16>(a, 1, "PORT")))
                .unwrap_or_else(|e| fail(format!("bind: {e}")));
            println!("listening");
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            recv_pattern(&mut s, arg(a, 2, "BYTES"), arg(a, 3, "SEED")).unwrap_or_else(|e| fail(e));
            println!("received ok");
        }
        "serve-send" => {
            let l = TcpListener::bind(("0.0.0.0", arg::<u16>(a, 1, "PORT")))
                .unwrap_or_else(|e| fail(format!("bind: {e}")));
            println!("listening");
            let (mut s, _) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            send_pattern(&mut s, arg(a, 2, "BYTES"), arg(a, 3, "SEED"))
                .unwrap_or_else(|e| fail(format!("send: {e}")));
            let mut b = [0u8; 1];
            let _ = Read::read(&mut s, &mut b);
            println!("sent");
        }
        "connect-recv" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let mut s = TcpStream::connect(SocketAddrV4::new(ip, arg(a, 2, "PORT")))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            recv_pattern(&mut s, arg(a, 3, "BYTES"), arg(a, 4, "SEED")).unwrap_or_else(|e| fail(e));
            println!("received ok");
        }
        "connect" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            match TcpStream::connect_timeout(
                &SocketAddrV4::new(ip, arg(a, 2, "PORT")).into(),
                Duration::from_secs(30),
            ) {
                Ok(_) => println!("connected"),
                Err(e) => println!("error {}", e.raw_os_error().unwrap_or(0)),
            }
        }
        "recv-slow" => {
            let l = TcpListener::bind(("0.0.0.0", arg::<u16>(a, 1, "PORT")))
                .unwrap_or_else(|e| fail(format!("bind: {e}")));
            println!("listening");
            let (s, _) = l.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
            let mut s = SlowStream {
                s,
                pause: Duration::from_micros(arg(a, 4, "US")),
            };
            recv_pattern(&mut s, arg(a, 2, "BYTES"), arg(a, 3, "SEED")).unwrap_or_else(|e| fail(e));
            println!("received ok");
        }
        "churn" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let port: u16 = arg(a, 2, "PORT");
            let size: usize = arg(a, 4, "SIZE");
            let msg: Vec<u8> = (0..size).map(|j| (j * 7) as u8).collect();
            let mut back = vec![0u8; size];
            churn(arg(a, 3, "N"), |_| {
                let mut s = TcpStream::connect(SocketAddrV4::new(ip, port))
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).ok();
                churn_once(&mut s, &msg, &mut back)
            });
        }
        "connect-hold" => connect_hold(
            arg(a, 1, "IP"),
            arg(a, 2, "PORT"),
            arg(a, 3, "N"),
            arg(a, 4, "SECS"),
            a.get(5).filter(|s| *s != "-").map(|_| arg(a, 5, "SRC")),
            a.get(6).map_or(0, |_| arg(a, 6, "WINDOW")),
        ),
        "echo-trace" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let mut s = TcpStream::connect(SocketAddrV4::new(ip, arg(a, 2, "PORT")))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            s.set_nodelay(true).ok();
            echo_trace(&mut s, arg(a, 3, "SECS"), arg(a, 4, "SIZE")).unwrap_or_else(|e| fail(e));
        }
        m => fail(format!("unknown mode {m}")),
    }
}

fn run_tas(a: &[String]) {
    let mut t = tas::Tas::attach().unwrap_or_else(|e| fail(format!("attach: {e}")));
    match a[0].as_str() {
        "slow-echo" => {
            // One connection at a time; each message answered `US` µs after
            // it was read (a server that takes its time).
            let port: u16 = arg(a, 1, "PORT");
            let us: u64 = arg(a, 2, "US");
            let l = t
                .listen(port, 16)
                .unwrap_or_else(|e| fail(format!("listen: {e}")));
            println!("listening");
            let mut buf = vec![0u8; 65536];
            loop {
                let c = t.accept(l).unwrap_or_else(|e| fail(format!("accept: {e}")));
                loop {
                    match t.recv_blocking(c, &mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = t.close(c);
                            break;
                        }
                        Ok(n) => {
                            std::thread::sleep(Duration::from_micros(us));
                            if t.send_all(c, &buf[..n]).is_err() {
                                let _ = t.abort(c);
                                break;
                            }
                        }
                    }
                }
            }
        }
        "echo-server" => {
            let port: u16 = arg(a, 1, "PORT");
            let l = t
                .listen(port, 512)
                .unwrap_or_else(|e| fail(format!("listen: {e}")));
            println!("listening");
            let mut conns: Vec<tas::ConnId> = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                while let Some(c) = t
                    .try_accept(l)
                    .unwrap_or_else(|e| fail(format!("accept: {e}")))
                {
                    conns.push(c);
                }
                let mut progress = false;
                let mut i = 0;
                while i < conns.len() {
                    let c = conns[i];
                    let free = t
                        .conn(c)
                        .map(|s| s.tx_free() as usize)
                        .unwrap_or(0)
                        .min(buf.len());
                    if free == 0 {
                        i += 1;
                        continue;
                    }
                    match t.recv(c, &mut buf[..free]) {
                        Ok(0) => {
                            let _ = t.close(c);
                            conns.swap_remove(i);
                            continue;
                        }
                        Ok(n) => {
                            progress = true;
                            if t.send_all(c, &buf[..n]).is_err() {
                                let _ = t.abort(c);
                                conns.swap_remove(i);
                                continue;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            let _ = t.abort(c);
                            conns.swap_remove(i);
                            continue;
                        }
                    }
                    i += 1;
                }
                if !progress {
                    t.wait(Some(Duration::from_millis(50)))
                        .unwrap_or_else(|e| fail(format!("wait: {e}")));
                }
            }
        }
        "echo-client" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let port: u16 = arg(a, 2, "PORT");
            let count: usize = arg(a, 3, "COUNT");
            let size: usize = arg(a, 4, "SIZE");
            let conns: usize = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
            let ids: Vec<_> = (0..conns)
                .map(|_| {
                    t.connect(ip, port)
                        .unwrap_or_else(|e| fail(format!("connect: {e}")))
                })
                .collect();
            // One Tas handle serves all connections; run them round-robin.
            let mut rtts = Vec::with_capacity(count);
            let mut msg = vec![0u8; size];
            let mut back = vec![0u8; size];
            for i in 0..count {
                let c = ids[i % ids.len()];
                for (j, b) in msg.iter_mut().enumerate() {
                    *b = (i * 31 + j) as u8;
                }
                let start = Instant::now();
                t.send_all(c, &msg)
                    .unwrap_or_else(|e| fail(format!("send {i}: {e}")));
                let mut got = 0;
                while got < size {
                    let n = t
                        .recv_blocking(c, &mut back[got..])
                        .unwrap_or_else(|e| fail(format!("recv {i}: {e}")));
                    if n == 0 {
                        fail(format!("server closed during message {i}"));
                    }
                    got += n;
                }
                rtts.push(start.elapsed());
                if back != msg {
                    fail(format!("echo {i} differs"));
                }
            }
            for c in ids {
                let _ = t.close(c);
            }
            report(&mut rtts, size);
            let _ = t.wait(Some(Duration::from_millis(20)));
        }
        "send" | "connect-recv" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let c = t
                .connect(ip, arg(a, 2, "PORT"))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            let bytes: u64 = arg(a, 3, "BYTES");
            let seed: u64 = arg(a, 4, "SEED");
            let mut s = TasStream { tas: &mut t, c };
            if a[0] == "send" {
                send_pattern(&mut s, bytes, seed).unwrap_or_else(|e| fail(format!("send: {e}")));
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
                println!("sent");
            } else {
                recv_pattern(&mut s, bytes, seed).unwrap_or_else(|e| fail(e));
                println!("received ok");
            }
            let _ = t.close(c);
            let _ = t.wait(Some(Duration::from_millis(20)));
        }
        "churn" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let port: u16 = arg(a, 2, "PORT");
            let size: usize = arg(a, 4, "SIZE");
            let msg: Vec<u8> = (0..size).map(|j| (j * 7) as u8).collect();
            let mut back = vec![0u8; size];
            churn(arg(a, 3, "N"), |_| {
                let c = t.connect(ip, port).map_err(|e| format!("connect: {e}"))?;
                let r = churn_once(&mut TasStream { tas: &mut t, c }, &msg, &mut back);
                let _ = t.close(c);
                r
            });
            let _ = t.wait(Some(Duration::from_millis(20)));
        }
        "send-exit" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let c = t
                .connect(ip, arg(a, 2, "PORT"))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            let mut s = TasStream { tas: &mut t, c };
            send_pattern(&mut s, arg(a, 3, "BYTES"), arg(a, 4, "SEED"))
                .unwrap_or_else(|e| fail(format!("send: {e}")));
            t.close(c).unwrap_or_else(|e| fail(format!("close: {e}")));
            println!("closed");
            let _ = std::io::stdout().flush();
            // Gone at once: what is still unsent or unacknowledged, and
            // the FIN, are tasd's to deliver (an orphan, as on Linux).
            exit(0);
        }
        "recv" | "serve-send" => {
            let l = t
                .listen(arg(a, 1, "PORT"), 16)
                .unwrap_or_else(|e| fail(format!("listen: {e}")));
            // RCVBUF: a receive ring size set on the listener after
            // listen() (pinned), reported after 500 ms without reading.
            let pinned: Option<u32> = a.get(4).map(|_| arg(a, 4, "RCVBUF"));
            if let Some(rb) = pinned {
                t.listen_update(l, rb, 0)
                    .unwrap_or_else(|e| fail(format!("listen_update: {e}")));
            }
            println!("listening");
            let c = t.accept(l).unwrap_or_else(|e| fail(format!("accept: {e}")));
            if pinned.is_some() {
                let end = std::time::Instant::now() + Duration::from_millis(500);
                while std::time::Instant::now() < end {
                    let _ = t.wait(Some(Duration::from_millis(50)));
                }
                let cn = t.conn(c).unwrap_or_else(|| fail("conn gone".into()));
                println!("rx_len {} queued {}", cn.rx_len(), cn.rx_available());
            }
            let bytes: u64 = arg(a, 2, "BYTES");
            let seed: u64 = arg(a, 3, "SEED");
            let mut s = TasStream { tas: &mut t, c };
            if a[0] == "recv" {
                recv_pattern(&mut s, bytes, seed).unwrap_or_else(|e| fail(e));
                println!("received ok");
            } else {
                send_pattern(&mut s, bytes, seed).unwrap_or_else(|e| fail(format!("send: {e}")));
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
                println!("sent");
            }
            let _ = t.close(c);
            let _ = t.wait(Some(Duration::from_millis(20)));
        }
        "connect" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            match t.connect(ip, arg(a, 2, "PORT")) {
                Ok(_) => println!("connected"),
                Err(e) => println!("error {}", e.raw_os_error().unwrap_or(0)),
            }
        }
        "reattach-echo" => reattach_echo(&mut t, arg(a, 1, "PORT")),
        "idle-wait" => {
            // N waits of 1 ms with nothing to wait for: the thread's own
            // CPU time across them is what `Tas::wait` spins (and what its
            // wake-ups cost), the wall time whether each lasted its 1 ms.
            let n: u32 = arg(a, 1, "N");
            let t0 = thread_cpu_ns();
            let w0 = std::time::Instant::now();
            for _ in 0..n {
                t.wait(Some(Duration::from_millis(1)))
                    .unwrap_or_else(|e| fail(format!("wait: {e}")));
            }
            println!(
                "idle-wait {n} cpu_ns {} wall_ns {}",
                thread_cpu_ns() - t0,
                w0.elapsed().as_nanos()
            );
        }
        "accept-hold" => accept_hold(
            &mut t,
            arg(a, 1, "PORT"),
            arg(a, 2, "N"),
            arg(a, 3, "BACKLOG"),
            a.get(4).and_then(|s| s.parse().ok()).unwrap_or(4096),
        ),
        "echo-trace" => {
            let ip: Ipv4Addr = arg(a, 1, "IP");
            let c = t
                .connect(ip, arg(a, 2, "PORT"))
                .unwrap_or_else(|e| fail(format!("connect: {e}")));
            let mut s = TasStream { tas: &mut t, c };
            echo_trace(&mut s, arg(a, 3, "SECS"), arg(a, 4, "SIZE")).unwrap_or_else(|e| fail(e));
            let _ = t.close(c);
            let _ = t.wait(Some(Duration::from_millis(20)));
        }
        m => fail(format!("unknown mode {m}")),
    }
}

fn main() {
    let mut a: Vec<String> = std::env::args().skip(1).collect();
    let use_tas = a.first().map(|s| s == "--tas").unwrap_or(false);
    if use_tas {
        a.remove(0);
    }
    if a.is_empty() {
        eprintln!("usage: see the doc comment of tests/src/bin/peer.rs");
        exit(2);
    }
    if use_tas {
        run_tas(&a)
    } else {
        run_linux(&a)
    }
}

/// `echo-trace`: back-to-back RPCs of `size` bytes on one connection for
/// `secs` seconds; one line "T SENT_NS RTT_NS" per RPC (SENT_NS on
/// CLOCK_MONOTONIC), then "echo-trace ok: N rpcs". Every echo is verified.
fn echo_trace(s: &mut dyn Stream, secs: f64, size: usize) -> Result<(), String> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut msg = vec![0u8; size.max(1)];
    let mut back = vec![0u8; msg.len()];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut i = 0usize;
    while Instant::now() < end {
        for (j, b) in msg.iter_mut().enumerate() {
            *b = (i * 31 + j) as u8;
        }
        let t0 = monotonic_ns();
        s.write_all(&msg).map_err(|e| format!("write {i}: {e}"))?;
        let mut got = 0;
        while got < back.len() {
            let n = s
                .read(&mut back[got..])
                .map_err(|e| format!("read {i}: {e}"))?;
            if n == 0 {
                return Err(format!("server closed during message {i}"));
            }
            got += n;
        }
        let rtt = monotonic_ns() - t0;
        if back != msg {
            return Err(format!("echo {i} differs"));
        }
        let _ = writeln!(out, "T {t0} {rtt}");
        i += 1;
    }
    let _ = writeln!(out, "echo-trace ok: {i} rpcs");
    let _ = out.flush();
    Ok(())
}

/// `accept-hold`: see the module docs. Progress lines go to stdout as they
/// happen (flushed), so a test can follow them.
fn accept_hold(t: &mut tas::Tas, port: u16, n: usize, backlog: u32, ring: u32) -> ! {
    let out = |l: String| {
        println!("{l}");
        let _ = std::io::stdout().flush();
    };
    let l = t
        .listen_with(port, backlog, ring, ring, false)
        .unwrap_or_else(|e| fail(format!("listen: {e}")));
    out("listening".into());
    let mut conns = Vec::with_capacity(n);
    let mut last = Instant::now();
    while conns.len() < n {
        while let Some(c) = t
            .try_accept(l)
            .unwrap_or_else(|e| fail(format!("accept: {e}")))
        {
            conns.push(c);
        }
        if last.elapsed() > Duration::from_secs(1) {
            last = Instant::now();
            out(format!("progress accepted {}", conns.len()));
        }
        if conns.len() < n {
            t.wait(Some(Duration::from_millis(50)))
                .unwrap_or_else(|e| fail(format!("wait: {e}")));
        }
    }
    out(format!("accepted {}", conns.len()));
    let mut ended = 0;
    while ended < n {
        t.poll().unwrap_or_else(|e| fail(format!("poll: {e}")));
        ended = conns
            .iter()
            .filter(|&&c| t.conn(c).is_some_and(|x| x.error().is_some() || x.at_eof()))
            .count();
        if last.elapsed() > Duration::from_secs(1) {
            last = Instant::now();
            out(format!("progress ended {ended}"));
        }
        if ended < n {
            t.wait(Some(Duration::from_millis(50)))
                .unwrap_or_else(|e| fail(format!("wait: {e}")));
        }
    }
    out(format!("ended {ended}"));
    for c in conns {
        let _ = t.close(c);
    }
    loop {
        t.wait(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| fail(format!("wait: {e}")));
    }
}

/// `connect-hold`: see the module docs.
fn connect_hold(
    ip: Ipv4Addr,
    port: u16,
    n: usize,
    secs: f64,
    src: Option<Ipv4Addr>,
    window: usize,
) -> ! {
    // SAFETY: plain libc calls on descriptors this function owns; every
    // pointer passed is to a live local of the right size.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // Starts connect number `_i` (non-blocking); its descriptor.
        let start = |_i: usize| -> libc::c_int {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                fail(format!("socket: {}", std::io::Error::last_os_error()));
            }
            let lg = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lg as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            if let Some(src) = src {
                // The port is chosen at connect() by the 4-tuple, as for
                // unbound sockets: a port bind() takes is never shared
                // with connect()'s choice for other addresses.
                let one: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                let local = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                if libc::bind(
                    fd,
                    &local as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ) != 0
                {
                    fail(format!("bind {src}: {}", std::io::Error::last_os_error()));
                }
            }
            let r = libc::connect(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if r != 0 && *libc::__errno_location() != libc::EINPROGRESS {
                fail(format!("connect: {}", std::io::Error::last_os_error()));
            }
            fd
        };
        // At most `window` handshakes in progress at once (0: all N at
        // once, a synchronous burst).
        let window = if window == 0 { n } else { window.min(n) };
        let mut fds: Vec<libc::c_int> = (0..window).map(start).collect();
        println!("started {window} of {n}");
        let _ = std::io::stdout().flush();
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut done = vec![false; n];
        let mut connected = 0;
        let mut failed = 0;
        while connected + failed < n && Instant::now() < end {
            let idx: Vec<usize> = (0..fds.len()).filter(|&i| !done[i]).collect();
            let mut pfds: Vec<libc::pollfd> = idx
                .iter()
                .map(|&i| libc::pollfd {
                    fd: fds[i],
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100);
            for (k, p) in pfds.iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                let i = idx[k];
                let mut err: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                libc::getsockopt(
                    fds[i],
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut libc::c_int as *mut libc::c_void,
                    &mut len,
                );
                done[i] = true;
                if err == 0 {
                    connected += 1;
                } else {
                    failed += 1;
                }
                if fds.len() < n {
                    fds.push(start(fds.len()));
                }
            }
        }
        println!("connected {connected} of {n}");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// `reattach-echo`: see the module docs.
fn reattach_echo(t: &mut tas::Tas, port: u16) -> ! {
    let say = |l: String| {
        println!("{l}");
        let _ = std::io::stdout().flush();
    };
    loop {
        let l = match t.listen(port, 16) {
            Ok(l) => l,
            Err(e) => {
                if !t.is_dead() {
                    fail(format!("listen: {e}"));
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        say("listening".into());
        let r = (|| -> std::io::Result<()> {
            loop {
                let c = t.accept(l)?;
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = t.recv_blocking(c, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    t.send_all(c, &buf[..n])?;
                }
                t.close(c)?;
                say("served".into());
            }
        })();
        match r {
            Err(e) if t.is_dead() => say(format!("lost: {e}")),
            Err(e) => fail(format!("serve: {e}")),
            Ok(()) => {}
        }
    }
}

/// The calling thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
