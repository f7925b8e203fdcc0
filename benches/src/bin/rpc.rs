//! `rpc`: the kernel-stack side of the echo benchmark (client and server).
//!
//! ```text
//! rpc server PORT [--busy]                       echo server; --busy spins on
//!                                                non-blocking sockets instead of
//!                                                blocking in the kernel
//! rpc client IP PORT [--conns N] [--secs S] [--size B] [--busy]
//! ```
//! The client keeps one 64-byte request outstanding per connection (closed
//! loop), records every round trip in an HDR histogram, and prints one line:
//! `rpc: conns N rps R p50 X p99 Y p999 Z (us)`.

use hdrhistogram::Histogram;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: rpc server PORT [--busy] | rpc client IP PORT [--conns N] [--secs S] [--size B] [--busy]");
    std::process::exit(2)
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage()),
        None => default,
    }
}

fn serve_blocking(mut s: TcpStream) {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn server(port: u16, busy: bool) {
    let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("rpc: bind {port}: {e}");
        std::process::exit(1)
    });
    println!("listening");
    if !busy {
        for s in l.incoming().flatten() {
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || serve_blocking(s));
        }
        return;
    }
    // Busy-polling: one thread spins over every connection.
    l.set_nonblocking(true).expect("nonblocking listener");
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        while let Ok((s, _)) = l.accept() {
            let _ = s.set_nodelay(true);
            s.set_nonblocking(true).expect("nonblocking");
            conns.push(s);
        }
        let mut i = 0;
        while i < conns.len() {
            match conns[i].read(&mut buf) {
                Ok(0) => {
                    conns.swap_remove(i);
                    continue;
                }
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        match conns[i].write(&buf[off..n]) {
                            Ok(w) => off += w,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                            Err(_) => break,
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    conns.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }
}

fn client(ip: Ipv4Addr, port: u16, conns: usize, secs: f64, size: usize, busy: bool) {
    let mut socks: Vec<TcpStream> = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(SocketAddrV4::new(ip, port)).unwrap_or_else(|e| {
                eprintln!("rpc: connect: {e}");
                std::process::exit(1)
            });
            s.set_nodelay(true).ok();
            s
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size];
    let warmup = Duration::from_millis(300);
    let start = Instant::now();
    let mut measured_from = None;
    let mut done = 0u64;
    if conns == 1 && !busy {
        let s = &mut socks[0];
        loop {
            let t = Instant::now();
            s.write_all(&msg).expect("write");
            s.read_exact(&mut buf).expect("read");
            let el = t.elapsed();
            if start.elapsed() > warmup {
                let m = *measured_from.get_or_insert(t);
                hist.record(el.as_nanos() as u64).ok();
                done += 1;
                if m.elapsed().as_secs_f64() >= secs {
                    break;
                }
            }
        }
    } else {
        // One request outstanding per connection; poll them all.
        for s in &socks {
            s.set_nonblocking(true).expect("nonblocking");
        }
        let mut sent_at = vec![Instant::now(); conns];
        let mut got = vec![0usize; conns];
        for (i, s) in socks.iter_mut().enumerate() {
            sent_at[i] = Instant::now();
            s.write_all(&msg).expect("write");
        }
        let mut pfds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(s),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        'outer: loop {
            if !busy {
                // SAFETY: pfds is a valid array of pollfd.
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
            }
            for i in 0..conns {
                if !busy && pfds[i].revents == 0 {
                    continue;
                }
                match socks[i].read(&mut buf[got[i]..]) {
                    Ok(0) => {
                        eprintln!("rpc: server closed");
                        std::process::exit(1)
                    }
                    Ok(n) => {
                        got[i] += n;
                        if got[i] == size {
                            got[i] = 0;
                            let now = Instant::now();
                            if start.elapsed() > warmup {
                                let m = *measured_from.get_or_insert(now);
                                hist.record((now - sent_at[i]).as_nanos() as u64).ok();
                                done += 1;
                                if m.elapsed().as_secs_f64() >= secs {
                                    break 'outer;
                                }
                            }
                            // Timestamp before the write: on a fast path
                            // the answer can be back before write() returns.
                            sent_at[i] = Instant::now();
                            let mut off = 0;
                            while off < size {
                                match socks[i].write(&msg[off..]) {
                                    Ok(w) => off += w,
                                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                        std::hint::spin_loop()
                                    }
                                    Err(e) => {
                                        eprintln!("rpc: write: {e}");
                                        std::process::exit(1)
                                    }
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        eprintln!("rpc: read: {e}");
                        std::process::exit(1)
                    }
                }
            }
        }
    }
    let el = measured_from
        .map(|m| m.elapsed().as_secs_f64())
        .unwrap_or(1.0);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "rpc: conns {conns} rps {:.0} p50 {:.1} p99 {:.1} p999 {:.1} (us)",
        done as f64 / el,
        us(0.5),
        us(0.99),
        us(0.999)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(
            args.get(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| usage()),
            flag(&args, "--busy"),
        ),
        Some("client") => {
            let ip: Ipv4Addr = args
                .get(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| usage());
            let port: u16 = args
                .get(2)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| usage());
            client(
                ip,
                port,
                opt(&args, "--conns", 1),
                opt(&args, "--secs", 3.0),
                opt(&args, "--size", 64),
                flag(&args, "--busy"),
            );
        }
        _ => usage(),
    }
}
