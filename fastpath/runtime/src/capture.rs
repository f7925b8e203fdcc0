//! Packet capture for `tasctl capture`: copies of the frames a lane
//! receives from and sends to its NIC, for the slow path to collect.
//!
//! Off (the normal case) it costs a lane one relaxed atomic load per NIC
//! batch received and one per batch flushed. On, each frame (of the chosen
//! TCP port, if one is set) is copied, up to the snap length, into a buffer
//! taken from a fixed pool that the slow path filled when the capture
//! started; when the pool is empty because the collector lags, the copy is
//! skipped and counted in [`Capture::dropped`] — capture never holds up or
//! drops traffic, and a lane never allocates for it.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Capture buffers per lane (and so the most frames waiting per lane).
pub const CAPTURE_SLOTS: usize = 1024;
/// Largest snap length (bytes copied per frame).
pub const CAPTURE_SNAP_MAX: u32 = 16 * 1024;

/// Which way a captured frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received from the NIC.
    Rx,
    /// Handed to the NIC.
    Tx,
}

/// One captured frame.
#[derive(Debug)]
pub struct Captured {
    /// `now_ns()` (CLOCK_MONOTONIC) of the lane's round.
    pub t_ns: u64,
    pub dir: Dir,
    /// The frame's length on the wire (`data` may be shorter: snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A lane's capture state, shared with the slow path.
pub struct Capture {
    on: AtomicBool,
    /// TCP port to keep (either end); 0: every frame.
    port: AtomicU32,
    snap: AtomicU32,
    free: ArrayQueue<Vec<u8>>,
    full: ArrayQueue<Captured>,
    /// Frames not copied because no buffer was free.
    pub dropped: AtomicU64,
    /// Frames copied.
    pub taken: AtomicU64,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            on: AtomicBool::new(false),
            port: AtomicU32::new(0),
            snap: AtomicU32::new(0),
            free: ArrayQueue::new(CAPTURE_SLOTS),
            full: ArrayQueue::new(CAPTURE_SLOTS),
            dropped: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }
}

/// The TCP ports of an Ethernet/IPv4/TCP frame.
fn tcp_ports(f: &[u8]) -> Option<(u16, u16)> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let t = f.get(14 + ihl..14 + ihl + 4)?;
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
    ))
}

impl Capture {
    /// Whether frames are being captured (the lane's only check when off).
    #[inline]
    pub fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Copies `frame` if it passes the port filter and a buffer is free.
    /// Called by the lane only while [`Self::active`].
    pub fn record(&self, dir: Dir, t_ns: u64, frame: &[u8]) {
        let port = self.port.load(Ordering::Relaxed);
        if port != 0 {
            match tcp_ports(frame) {
                Some((s, d)) if u32::from(s) == port || u32::from(d) == port => {}
                _ => return,
            }
        }
        let Some(mut buf) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(self.snap.load(Ordering::Relaxed) as usize);
        buf.clear();
        buf.extend_from_slice(&frame[..n]);
        let c = Captured {
            t_ns,
            dir,
            orig_len: frame.len() as u32,
            data: buf,
        };
        // `full` holds every buffer of the pool: room by construction.
        if self.full.push(c).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Slow path: starts capturing frames of TCP `port` (0: all), `snap`
    /// bytes of each. Frames left from an earlier capture are discarded and
    /// the pool is filled (its buffers are allocated here, not by the lane).
    pub fn start(&self, port: u16, snap: u32) {
        self.on.store(false, Ordering::SeqCst);
        while self.full.pop().is_some() {}
        let snap = snap.clamp(64, CAPTURE_SNAP_MAX);
        while self.free.pop().is_some() {}
        for _ in 0..CAPTURE_SLOTS {
            let _ = self.free.push(Vec::with_capacity(snap as usize));
        }
        self.port.store(u32::from(port), Ordering::Relaxed);
        self.snap.store(snap, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.on.store(true, Ordering::SeqCst);
    }

    /// Slow path: stops capturing and frees the pool (a buffer a lane holds
    /// at this moment comes back with its frame and is freed by the next
    /// [`Self::start`] or [`Self::take`]).
    pub fn stop(&self) {
        self.on.store(false, Ordering::SeqCst);
        while self.free.pop().is_some() {}
        while self.full.pop().is_some() {}
    }

    /// Slow path: up to `max` captured frames, oldest first, each given to
    /// `f`; their buffers go back to the pool while the capture runs.
    pub fn take(&self, max: usize, mut f: impl FnMut(&Captured)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(c) = self.full.pop() else { break };
            f(&c);
            n += 1;
            if self.active() {
                let _ = self.free.push(c.data);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(sport: u16, dport: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(54)];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn off_captures_nothing_and_a_full_pool_drops_copies_only() {
        let c = Capture::default();
        assert!(!c.active());
        c.start(5001, 100);
        c.record(Dir::Rx, 7, &tcp_frame(40000, 5001, 1514));
        c.record(Dir::Tx, 8, &tcp_frame(5001, 40000, 60));
        c.record(Dir::Rx, 9, &tcp_frame(40000, 22, 60)); // other port
        c.record(Dir::Rx, 9, &[0u8; 20]); // not TCP
        let mut got = Vec::new();
        assert_eq!(
            c.take(10, |x| got.push((x.t_ns, x.dir, x.orig_len, x.data.len()))),
            2
        );
        assert_eq!(got, vec![(7, Dir::Rx, 1514, 100), (8, Dir::Tx, 60, 60)]);
        // The collector does not come: the pool runs dry, copies are skipped.
        for _ in 0..CAPTURE_SLOTS + 10 {
            c.record(Dir::Rx, 1, &tcp_frame(1, 5001, 60));
        }
        assert_eq!(c.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(c.take(usize::MAX, |_| {}), CAPTURE_SLOTS);
        // Buffers came back: capturing goes on.
        c.record(Dir::Rx, 1, &tcp_frame(1, 5001, 60));
        assert_eq!(c.take(10, |_| {}), 1);
        c.stop();
        assert!(!c.active());
        assert_eq!(c.free.len() + c.full.len(), 0);
    }
}
