//! The host's memory floor under the fast path's access pattern
//! (`fastpath-bench --floor`).
//!
//! Issue 15 asks for at most 30 % more wall clock per `pair` at 64K flows
//! than at 1K. Part of that growth is not the fast path's code but the
//! host: at 64K flows every visit touches per-flow lines that are no longer
//! in any cache. This module measures what those lines alone cost on the
//! machine at hand, so that a missed target can be told apart from a floor.
//!
//! The pattern is the `pair` unit's data access with no TCP in it: the
//! lines that callgrind's cache simulation counts beyond a 1 MiB L2 for
//! `pair` at 64K flows (about 6 per unit: the index entry, both lines of
//! the flow slot, its header template, the RX ring line the payload is
//! written to and the TX ring line the answer is read from). Arrays of the
//! fast path's sizes ([`FlowSlot`], [`HdrTemplate`], [`FlowCold`], the
//! index of `2 × flows` rounded up to a power of two) and a ring region of
//! the benchmark's layout, on the same pages (the table advised for huge
//! pages as tasd does; the rings as `--thp` / `--4k` / `--hugetlb` say),
//! visited in the same random order, in batches of [`BATCH`] with the
//! engine's three prefetch passes (index entry; slot; ring lines, then
//! template) before the batch is processed. It owns no fast-path logic and
//! must not grow any: a change to the engine's layout or prefetching is
//! reflected here by hand, and the docs say which build it modelled.

use std::mem::size_of;
use std::time::Instant;

use tas_engine::flow::{FlowCold, FlowSlot};
use tas_engine::wire::frame::HdrTemplate;

use tas_testkit::Rng;

use crate::fastpath::{region_len, HugetlbRings, BATCH, PAYLOAD};

const HUGE: usize = 2 << 20;
const LINE: usize = 64;

/// What the floor is measured over.
#[derive(Debug, Clone, Copy)]
pub struct FloorSetup {
    pub flows: usize,
    /// Per-flow RX and TX ring size (bytes, a multiple of 64).
    pub ring: u32,
    /// The table's arrays advised for huge pages (tasd's default).
    pub huge_table: bool,
    /// The ring region advised for transparent huge pages.
    pub thp: bool,
    /// The ring region on reserved hugetlbfs pages.
    pub hugetlb: bool,
    pub seed: u64,
}

/// A zeroed byte array whose first `len` bytes start 2 MiB-aligned.
struct Aligned {
    buf: Vec<u8>,
    pad: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, advise: bool) -> Aligned {
        let mut buf = vec![0u8; len + HUGE];
        let pad = (HUGE - buf.as_ptr() as usize % HUGE) % HUGE;
        if advise {
            // Before the first touch, as tasd's table does.
            tas_runtime::huge::advise(buf[pad..].as_mut_ptr(), len);
        }
        Aligned { buf, pad, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.pad..self.pad + self.len]
    }
}

/// The arrays of one measurement.
pub struct Floor {
    setup: FloorSetup,
    slots: Aligned,
    tmpl: Aligned,
    /// Allocated (and advised) like the engine's, never touched by the
    /// pattern: it takes its share of the address space and huge pages.
    _cold: Aligned,
    index: Aligned,
    mask: usize,
    /// Dropped before `rings`, whose pages it replaced.
    _hugetlb: Option<HugetlbRings>,
    rings: Vec<u8>,
    ring_base: usize,
    order: Vec<u32>,
    cursor: usize,
    rng: Rng,
    sink: u64,
}

/// The index position of flow `id` (a multiplicative hash, as spread as
/// the engine's).
fn home(id: u32, mask: usize) -> usize {
    ((id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

impl Floor {
    pub fn new(setup: FloorSetup) -> Result<Floor, String> {
        let flows = setup.flows;
        if flows == 0 || flows > u32::MAX as usize / 2 {
            return Err(format!("--floor: bad flow count {flows}"));
        }
        let ring = setup.ring as usize;
        if ring < 4 * PAYLOAD || !ring.is_multiple_of(LINE) {
            return Err(format!(
                "--floor: ring must be a multiple of {LINE} and at least {}",
                4 * PAYLOAD
            ));
        }
        let index_len = (flows * 2).next_power_of_two().max(16);
        let mut slots = Aligned::new(flows * size_of::<FlowSlot>(), setup.huge_table);
        let mut tmpl = Aligned::new(flows * size_of::<HdrTemplate>(), setup.huge_table);
        let mut cold = Aligned::new(flows * size_of::<FlowCold>(), setup.huge_table);
        let mut index = Aligned::new(index_len * 8, setup.huge_table);
        cold.bytes().fill(0);
        let mask = index_len - 1;
        // The index: flow id + 1 (0 = empty), linear probing from home.
        {
            let ix = index.bytes();
            for id in 0..flows as u32 {
                let mut i = home(id, mask);
                while ix[i * 8..i * 8 + 8] != [0; 8] {
                    i = (i + 1) & mask;
                }
                ix[i * 8..i * 8 + 8].copy_from_slice(&(id as u64 + 1).to_ne_bytes());
            }
        }
        let region = region_len(flows, setup.ring, setup.hugetlb) as usize;
        let mut rings = vec![0u8; region];
        let ring_base = (HUGE - rings.as_ptr() as usize % HUGE) % HUGE;
        let hugetlb = if setup.hugetlb {
            Some(HugetlbRings::over(&mut rings)?)
        } else {
            if setup.thp {
                tas_runtime::huge::advise(rings[ring_base..].as_mut_ptr(), region - ring_base);
            }
            None
        };
        let mut rng = Rng::new(setup.seed);
        // Each slot's first line holds its ring positions (RX, TX), random
        // line-aligned starts as the benchmark's flows have.
        let sl = size_of::<FlowSlot>();
        let lines = (ring / LINE) as u64;
        for (id, s) in slots.bytes().chunks_exact_mut(sl).enumerate() {
            let r = rng.next_u64();
            let rx = (r % lines) as u32 * LINE as u32;
            let tx = ((r >> 32) % lines) as u32 * LINE as u32;
            s[0..4].copy_from_slice(&rx.to_ne_bytes());
            s[4..8].copy_from_slice(&tx.to_ne_bytes());
            s[8..12].copy_from_slice(&(id as u32).to_ne_bytes());
        }
        tmpl.bytes().fill(1);
        // Touch every ring page once (the benchmark's flows start written).
        for p in (ring_base..region).step_by(4096) {
            rings[p] = 1;
        }
        let order: Vec<u32> = (0..flows as u32).collect();
        let mut f = Floor {
            setup,
            slots,
            tmpl,
            _cold: cold,
            index,
            mask,
            _hugetlb: hugetlb,
            rings,
            ring_base,
            order,
            cursor: flows,
            rng,
            sink: 0,
        };
        f.reshuffle();
        Ok(f)
    }

    fn reshuffle(&mut self) {
        // Fisher–Yates: every flow once per round, in a new order.
        for i in (1..self.order.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            self.order.swap(i, j);
        }
        self.cursor = 0;
    }

    /// The next `n` flows to visit (at most one round's remainder).
    fn next_batch(&mut self, out: &mut [u32; BATCH]) -> usize {
        if self.cursor == self.order.len() {
            self.reshuffle();
        }
        let n = BATCH.min(self.order.len() - self.cursor);
        out[..n].copy_from_slice(&self.order[self.cursor..self.cursor + n]);
        self.cursor += n;
        n
    }

    /// Runs `units` visits; returns the wall-clock ns they took.
    pub fn run(&mut self, units: u64) -> u64 {
        let mut visits = [0u32; BATCH];
        let mut done = 0u64;
        let mut ns = 0u64;
        let sl = size_of::<FlowSlot>();
        let tl = size_of::<HdrTemplate>();
        let ring = self.setup.ring as usize;
        let payload = [0x5au8; PAYLOAD];
        while done < units {
            let n = self.next_batch(&mut visits);
            let t = Instant::now();
            let slots = self.slots.bytes().as_mut_ptr();
            let tmpl = self.tmpl.bytes().as_ptr();
            let index = self.index.bytes().as_ptr();
            let rings = self.rings.as_mut_ptr();
            // Pass 1: the index entries (and the next index line for an
            // entry in the upper half of its own, as the engine does).
            for &v in &visits[..n] {
                let i = home(v, self.mask);
                prefetch(index.wrapping_add(i * 8));
                if i & 7 >= 4 {
                    prefetch(index.wrapping_add((((i | 7) + 1) & self.mask) * 8));
                }
            }
            // Pass 2: follow the probe chain to the flow's entry (the flow
            // id is the visit's own, so only the reads matter); the slot's
            // lines.
            for &v in &visits[..n] {
                let ix = self.index.bytes();
                let mut i = home(v, self.mask);
                loop {
                    let e = u64::from_ne_bytes(ix[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                    if e == v as u64 + 1 {
                        break;
                    }
                    i = (i + 1) & self.mask;
                }
                let s = slots.wrapping_add(v as usize * sl);
                prefetch(s);
                prefetch(s.wrapping_add(LINE));
            }
            // Pass 3: the ring lines, from the positions in the slot, then
            // the template.
            for &id in &visits[..n] {
                let s = &self.slots.bytes()[id as usize * sl..];
                let rx = u32::from_ne_bytes(s[0..4].try_into().expect("4 bytes")) as usize;
                let tx = u32::from_ne_bytes(s[4..8].try_into().expect("4 bytes")) as usize;
                let base = self.ring_base + id as usize * 2 * ring;
                prefetch(rings.wrapping_add(base + tx + ring));
                prefetch(rings.wrapping_add(base + rx));
                prefetch(tmpl.wrapping_add(id as usize * tl));
            }
            // The batch: payload into the RX line, the answer read from the
            // TX line, the template read, both slot lines written.
            let mut sum = 0u64;
            for &id in &visits[..n] {
                let so = id as usize * sl;
                let (rx, tx) = {
                    let s = &self.slots.bytes()[so..so + sl];
                    (
                        u32::from_ne_bytes(s[0..4].try_into().expect("4 bytes")) as usize,
                        u32::from_ne_bytes(s[4..8].try_into().expect("4 bytes")) as usize,
                    )
                };
                let base = self.ring_base + id as usize * 2 * ring;
                self.rings[base + rx..base + rx + PAYLOAD].copy_from_slice(&payload);
                sum = self.rings[base + ring + tx..base + ring + tx + PAYLOAD]
                    .chunks_exact(8)
                    .fold(sum, |a, w| {
                        a.wrapping_add(u64::from_ne_bytes(w.try_into().expect("8")))
                    });
                let to = id as usize * tl;
                sum = sum.wrapping_add(u64::from_ne_bytes(
                    self.tmpl.bytes()[to..to + 8].try_into().expect("8 bytes"),
                ));
                let s = &mut self.slots.bytes()[so..so + sl];
                s[0..4].copy_from_slice(&(((rx + PAYLOAD) % ring) as u32).to_ne_bytes());
                s[4..8].copy_from_slice(&(((tx + PAYLOAD) % ring) as u32).to_ne_bytes());
                let c = u64::from_ne_bytes(s[LINE..LINE + 8].try_into().expect("8 bytes"));
                s[LINE..LINE + 8].copy_from_slice(&c.wrapping_add(1).to_ne_bytes());
            }
            self.sink = self.sink.wrapping_add(std::hint::black_box(sum));
            ns += t.elapsed().as_nanos() as u64;
            done += n as u64;
        }
        ns
    }

    /// A round over every flow, untimed (pages faulted in, caches as in
    /// steady state).
    pub fn warm_up(&mut self) {
        let n = self.setup.flows as u64 * 2;
        self.run(n.max(4 * BATCH as u64));
    }
}

#[inline(always)]
fn prefetch(p: *const u8) {
    tas_abi::prefetch_line(p);
}

/// Best of `runs` runs of `units` visits: ns per unit.
pub fn floor_ns(setup: FloorSetup, units: u64, runs: u32) -> Result<f64, String> {
    let mut f = Floor::new(setup)?;
    f.warm_up();
    let mut best = u64::MAX;
    for _ in 0..runs.max(1) {
        best = best.min(f.run(units));
    }
    Ok(best as f64 / units as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_visits_every_flow_once_per_round_and_moves_its_rings() {
        let setup = FloorSetup {
            flows: 100,
            ring: 4096,
            huge_table: false,
            thp: false,
            hugetlb: false,
            seed: 7,
        };
        let mut f = Floor::new(setup).unwrap();
        let before: Vec<u32> = (0..100)
            .map(|id| {
                let s = &f.slots.bytes()[id * size_of::<FlowSlot>()..];
                u32::from_ne_bytes(s[0..4].try_into().unwrap())
            })
            .collect();
        f.run(100);
        for (id, b) in before.iter().enumerate() {
            let s = &f.slots.bytes()[id * size_of::<FlowSlot>()..];
            let rx = u32::from_ne_bytes(s[0..4].try_into().unwrap());
            let visits = u64::from_ne_bytes(s[LINE..LINE + 8].try_into().unwrap());
            assert_eq!(visits, 1, "flow {id} visited once in a round");
            assert_eq!(
                rx,
                (b + PAYLOAD as u32) % 4096,
                "flow {id}'s RX position moved one payload"
            );
        }
    }
}
