//! ARP (RFC 826): answering requests for our address, resolving next hops
//! with retries and a timeout, and a cache with expiry.
//!
//! We learn from requests aimed at us and from replies; other ARP traffic
//! (gratuitous ARP included) only refreshes entries we already have or are
//! waiting for. A changed MAC is written into the installed flows that use
//! that next hop.

use std::collections::HashMap;

use tas_engine::flow::FlowKey;
use tas_engine::wire::{arp, eth};

use super::{KernelNeigh, Stack, StackIo, Timer};

#[derive(Debug, Clone, Copy)]
struct ArpEntry {
    mac: [u8; 6],
    expires: u64,
}

#[derive(Debug)]
struct ArpPending {
    /// Requests sent so far.
    sent: u32,
    deadline: u64,
    /// Connections waiting for this address.
    waiters: Vec<FlowKey>,
}

#[derive(Debug, Default)]
pub(super) struct ArpState {
    cache: HashMap<u32, ArpEntry>,
    pending: HashMap<u32, ArpPending>,
}

/// Ethernet frames shorter than this are padded.
const MIN_FRAME: usize = 60;

impl Stack {
    /// The cached MAC of `ip`, if fresh.
    pub(super) fn arp_lookup(&mut self, now: u64, ip: u32) -> Option<[u8; 6]> {
        match self.arp.cache.get(&ip) {
            Some(e) if e.expires > now => Some(e.mac),
            Some(_) => {
                self.arp.cache.remove(&ip);
                self.stats.arp_expired += 1;
                None
            }
            None => None,
        }
    }

    /// Starts (or joins) resolution of `ip` for connection `waiter`.
    pub(super) fn arp_resolve(
        &mut self,
        now: u64,
        ip: u32,
        waiter: FlowKey,
        io: &mut impl StackIo,
    ) {
        if let Some(p) = self.arp.pending.get_mut(&ip) {
            if !p.waiters.contains(&waiter) {
                p.waiters.push(waiter);
            }
            return;
        }
        let deadline = now.saturating_add(self.cfg.arp_timeout_ns.max(1));
        self.arp.pending.insert(
            ip,
            ArpPending {
                sent: 1,
                deadline,
                waiters: vec![waiter],
            },
        );
        self.schedule(deadline, Timer::Arp(ip));
        self.solicit(now, ip, io);
    }

    /// Asks for `ip`'s MAC: the kernel in shared mode (learnt at once if it
    /// has it, else its answer comes as [`Stack::neighbour`]), else an ARP
    /// request of our own.
    fn solicit(&mut self, now: u64, ip: u32, io: &mut impl StackIo) {
        match io.kernel_neighbour(ip) {
            KernelNeigh::NotShared => self.send_arp_request(ip, io),
            KernelNeigh::Known(mac) => {
                self.stats.arp_kernel_resolves += 1;
                self.neighbour(now, ip, mac, io);
            }
            KernelNeigh::Resolving => self.stats.arp_kernel_resolves += 1,
        }
    }

    fn send_arp_request(&mut self, ip: u32, io: &mut impl StackIo) {
        let r = arp::ArpRepr {
            op: arp::OP_REQUEST,
            sender_mac: self.cfg.local_mac,
            sender_ip: self.cfg.local_ip,
            target_mac: [0; 6],
            target_ip: ip,
        };
        self.stats.arp_requests_sent += 1;
        send_arp(io, eth::BROADCAST, self.cfg.local_mac, &r);
    }

    pub(super) fn arp_timer(&mut self, now: u64, t: u64, ip: u32, io: &mut impl StackIo) {
        let Some(p) = self.arp.pending.get_mut(&ip) else {
            return;
        };
        if p.deadline != t {
            return;
        }
        if p.sent <= self.cfg.arp_retries {
            p.sent += 1;
            p.deadline = now.saturating_add(self.cfg.arp_timeout_ns.max(1));
            let d = p.deadline;
            self.schedule(d, Timer::Arp(ip));
            self.solicit(now, ip, io);
            return;
        }
        let Some(p) = self.arp.pending.remove(&ip) else {
            return;
        };
        self.stats.arp_failures += 1;
        for k in p.waiters {
            self.connect_arp_failed(k, io);
        }
    }

    /// Drops expired cache entries (memory hygiene; lookups check expiry).
    pub(super) fn arp_sweep(&mut self, now: u64) {
        let before = self.arp.cache.len();
        self.arp.cache.retain(|_, e| e.expires > now);
        self.stats.arp_expired += (before - self.arp.cache.len()) as u64;
    }

    /// An ARP frame (its Ethernet payload) arrived.
    pub(super) fn on_arp(&mut self, now: u64, payload: &[u8], io: &mut impl StackIo) {
        let Ok(p) = arp::ArpPacket::parse(payload) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        self.stats.arp_rx += 1;
        let me = self.cfg.local_ip;
        if me == 0 {
            return;
        }
        let (sip, smac) = (p.sender_ip(), p.sender_mac());
        if sip == me {
            // Someone else claims our address (or our own request looped).
            if smac != self.cfg.local_mac {
                self.stats.arp_conflicts += 1;
            }
            return;
        }
        let for_us = p.target_ip() == me;
        let valid_sender = sip != 0 && smac != eth::BROADCAST && smac[0] & 1 == 0;
        if valid_sender {
            let known = self.arp.cache.contains_key(&sip) || self.arp.pending.contains_key(&sip);
            if for_us || known {
                self.arp_learn(now, sip, smac, io);
            }
        }
        // Shared mode: the kernel owns the address and answers for it.
        if for_us && p.op() == arp::OP_REQUEST && self.cfg.shared_ports.is_none() {
            let r = arp::ArpRepr {
                op: arp::OP_REPLY,
                sender_mac: self.cfg.local_mac,
                sender_ip: me,
                target_mac: smac,
                target_ip: sip,
            };
            self.stats.arp_replies_sent += 1;
            let dst = if valid_sender { smac } else { eth::BROADCAST };
            send_arp(io, dst, self.cfg.local_mac, &r);
        }
    }

    /// Records `ip` → `mac`, updates flows whose next hop moved and resumes
    /// connections that waited for it.
    fn arp_learn(&mut self, now: u64, ip: u32, mac: [u8; 6], io: &mut impl StackIo) {
        let expires = now.saturating_add(self.cfg.arp_ttl_ns);
        let old = self.arp.cache.insert(ip, ArpEntry { mac, expires });
        match old {
            None => self.stats.arp_learned += 1,
            Some(e) if e.mac != mac => {
                self.stats.arp_learned += 1;
                self.update_next_hop_mac(ip, mac);
            }
            Some(_) => {}
        }
        if let Some(p) = self.arp.pending.remove(&ip) {
            for k in p.waiters {
                self.connect_arp_resolved(now, k, mac, io);
            }
        }
    }

    /// A neighbour from the kernel's own table (shared mode: the daemon
    /// dumps it and follows its changes over rtnetlink), learnt as if it
    /// had answered our request.
    pub fn neighbour(&mut self, now: u64, ip: u32, mac: [u8; 6], io: &mut impl StackIo) {
        if ip == 0 || ip == self.cfg.local_ip || mac[0] & 1 != 0 || mac == [0; 6] {
            return;
        }
        self.arp_learn(now, ip, mac, io);
    }

    /// ARP cache contents (for `tasctl`): (ip, mac, expiry time).
    pub fn arp_entries(&self) -> Vec<(u32, [u8; 6], u64)> {
        let mut v: Vec<_> = self
            .arp
            .cache
            .iter()
            .map(|(ip, e)| (*ip, e.mac, e.expires))
            .collect();
        v.sort();
        v
    }
}

fn send_arp(io: &mut impl StackIo, dst: [u8; 6], src: [u8; 6], r: &arp::ArpRepr) {
    let mut buf = [0u8; MIN_FRAME];
    if eth::emit(&mut buf, dst, src, eth::ETHERTYPE_ARP).is_err() {
        return;
    }
    if r.emit(&mut buf[eth::HDR_LEN..]).is_err() {
        return;
    }
    // Bytes after the ARP packet stay zero: Ethernet padding to 60.
    io.send_frame(&buf);
}
