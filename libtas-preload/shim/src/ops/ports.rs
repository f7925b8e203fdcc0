//! Ports bound by TAS sockets of this process ([`Ports`], kept in
//! `Global::ports`): conflicts as Linux judges them (`SO_REUSEADDR`,
//! `SO_REUSEPORT`, listening), registration, and ephemeral port choice.
//! `bind()` itself does not reach the daemon: conflicts among this
//! process's sockets are judged here.

use crate::global::global;
use crate::opts::Opts;
use crate::sock::Sock;
use crate::sys::{self, Res};
use std::collections::HashMap;

const EPHEMERAL: (u16, u16) = (32768, 60999);

/// Ports bound by TAS sockets of this process.
#[derive(Default)]
pub struct Ports {
    pub map: HashMap<u16, Vec<PortUse>>,
}

#[derive(Clone, Copy, Debug)]
pub struct PortUse {
    pub sock: (usize, u64),
    pub ip: u32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub listening: bool,
}

pub(super) fn port_conflict(ports: &Ports, me: (usize, u64), ip: u32, port: u16, o: &Opts) -> bool {
    let Some(v) = ports.map.get(&port) else {
        return false;
    };
    v.iter().any(|u| {
        if u.sock == me {
            return false;
        }
        if u.ip != 0 && ip != 0 && u.ip != ip {
            return false;
        }
        let both_reuseaddr = o.reuseaddr && u.reuseaddr && !u.listening;
        let both_reuseport = o.reuseport && u.reuseport;
        !(both_reuseaddr || both_reuseport)
    })
}

pub(super) fn register_port(ctx: usize, s: &Sock, ip: u32, port: u16) {
    let mut p = global().ports.lock();
    p.map.entry(port).or_default().push(PortUse {
        sock: (ctx, s.id),
        ip,
        reuseaddr: s.opts.reuseaddr,
        reuseport: s.opts.reuseport,
        listening: false,
    });
}

pub(super) fn unregister_port(ctx: usize, s: &Sock) {
    if !s.port_registered {
        return;
    }
    let mut p = global().ports.lock();
    if let Some(v) = p.map.get_mut(&s.local.1) {
        v.retain(|u| u.sock != (ctx, s.id));
        if v.is_empty() {
            p.map.remove(&s.local.1);
        }
    }
}

pub(super) fn set_port_listening(ctx: usize, s: &Sock, on: bool) {
    let mut p = global().ports.lock();
    if let Some(v) = p.map.get_mut(&s.local.1) {
        for u in v.iter_mut() {
            if u.sock == (ctx, s.id) {
                u.listening = on;
                u.reuseaddr = s.opts.reuseaddr;
                u.reuseport = s.opts.reuseport;
            }
        }
    }
}

pub(super) fn pick_port(ctx: usize, s: &Sock, ip: u32) -> Res<u16> {
    let ports = global().ports.lock();
    let span = (EPHEMERAL.1 - EPHEMERAL.0) as u64 + 1;
    let mut x = sys::monotonic_ns() ^ (s.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for _ in 0..span {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = EPHEMERAL.0 + ((x >> 33) % span) as u16;
        if !ports.map.contains_key(&p) && !port_conflict(&ports, (ctx, s.id), ip, p, &s.opts) {
            return Ok(p);
        }
    }
    Err(libc::EADDRINUSE)
}
