//! In-memory backend: two ends of a virtual wire, for tests, the simulator and
//! loopback. Deterministic; frames are delivered in order.

use super::{FrameBatch, Nic, NicError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// One end of an in-memory link.
pub struct MemoryNic {
    mac: [u8; 6],
    mtu: usize,
    rx: Queue,
    tx: Queue,
}

impl MemoryNic {
    /// A connected pair of ends with the given MACs.
    pub fn pair(mac_a: [u8; 6], mac_b: [u8; 6]) -> (MemoryNic, MemoryNic) {
        let ab: Queue = Arc::default();
        let ba: Queue = Arc::default();
        (
            MemoryNic {
                mac: mac_a,
                mtu: 1500,
                rx: ba.clone(),
                tx: ab.clone(),
            },
            MemoryNic {
                mac: mac_b,
                mtu: 1500,
                rx: ab,
                tx: ba,
            },
        )
    }
    /// Frames sent by this end that the other end has not received yet.
    pub fn in_flight(&self) -> usize {
        self.tx.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Nic for MemoryNic {
    fn recv(&mut self, batch: &mut FrameBatch) -> Result<usize, NicError> {
        let mut q = self.rx.lock().expect("memory nic poisoned");
        let mut n = 0;
        while !batch.is_full() {
            match q.pop_front() {
                Some(f) => {
                    batch.push(&f);
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
    fn send(&mut self, batch: &FrameBatch) -> Result<usize, NicError> {
        let mut q = self.tx.lock().expect("memory nic poisoned");
        for f in batch.iter() {
            q.push_back(f.to_vec());
        }
        Ok(batch.len())
    }
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn mtu(&self) -> usize {
        self.mtu
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}
