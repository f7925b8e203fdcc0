//! The flow table: 4-tuple → flow, shared by the fast-path cores and the slow
//! path.
//!
//! Lookups are lock-free probes of an open-addressing index of 64-bit words
//! (`hash << 32 | id + 1`); the candidate flow is then locked and its 4-tuple
//! and generation verified under the lock, so a concurrent removal or reuse of
//! the slot is always detected. Only the slow path inserts and removes (its
//! bookkeeping sits behind a mutex the fast path never touches). Lookups and
//! updates are constant time at the load factor used (index ≥ 2× flows).
//!
//! Beside each slot, at the same index in arrays of their own and under the
//! same lock: the flow's cold record ([`FlowCold`]) and its header template
//! (`wire::frame::HdrTemplate`, one cache line, built by the engine). A
//! received batch is looked up in three prefetch stages
//! ([`FlowTable::prefetch_index`], [`FlowTable::prefetch_slot`],
//! [`FlowTable::peek_rings`]) before it is processed.

#![allow(unsafe_code)] // the per-flow lock and slot access; each block has its SAFETY note

use crate::flow::{FlowCold, FlowKey, FlowSlot, FlowState, TxCold};
use crate::wire::frame::HdrTemplate;
use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;

/// Index of a flow's slot in the table.
pub type FlowId = u32;

const EMPTY: u64 = 0;
const TOMB: u64 = u64::MAX;

/// Default capacity: 64K flows (two cache lines each: 8 MiB).
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("flow table full")]
    Full,
    #[error("a flow with this 4-tuple exists")]
    Exists,
}

struct Writer {
    free: Vec<FlowId>,
    used: usize,
}

/// Arrays of the table at least this large are allocated aligned to
/// [`HUGE_PAGE`] and rounded up to a multiple of it, and offered to the
/// caller's advice hook ([`FlowTable::with_advice`]) before their first
/// touch, so that the kernel can back them with transparent huge pages.
pub const HUGE_MIN: usize = 1 << 20;
/// Index size up to which [`FlowTable::index_cached`] holds: 64 KiB,
/// 8K entries, tables of up to 4K flows.
pub const INDEX_CACHED_MAX: usize = 64 << 10;
/// The huge page size the table's large arrays are aligned to (x86-64 PMD).
pub const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length array of `T`, allocated directly (huge-page aligned when
/// large) and initialized with `T::default()`; derefs to `[T]`.
struct Array<T> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    layout: std::alloc::Layout,
}

impl<T: Default> Array<T> {
    /// `len` (≥ 1) defaults. `advise(start, bytes)` sees the memory after
    /// allocation and before it is first written, when the array is at
    /// least [`HUGE_MIN`] bytes (then `start` is [`HUGE_PAGE`] aligned and
    /// `bytes` a multiple of it).
    fn new(len: usize, advise: &mut dyn FnMut(*mut u8, usize)) -> Self {
        assert!(len > 0 && std::mem::size_of::<T>() > 0);
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("table size");
        let big = bytes >= HUGE_MIN;
        let (size, align) = if big {
            (bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE, HUGE_PAGE)
        } else {
            (bytes, std::mem::align_of::<T>())
        };
        let layout =
            std::alloc::Layout::from_size_align(size, align.max(std::mem::align_of::<T>()))
                .expect("table layout");
        // SAFETY: `layout` has a non-zero size (len ≥ 1, T not zero-sized).
        let raw = unsafe { std::alloc::alloc(layout) } as *mut T;
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        if big {
            advise(raw as *mut u8, size);
        }
        for i in 0..len {
            // SAFETY: `i < len` elements of `T` fit in the allocation
            // (`size ≥ len * size_of::<T>()`, aligned for `T`); each is
            // written once, before any read.
            unsafe { raw.add(i).write(T::default()) };
        }
        Array { ptr, len, layout }
    }
}

impl<T> std::ops::Deref for Array<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialized `T`s owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Array<T> {
    fn drop(&mut self) {
        // SAFETY: the `len` elements are initialized and dropped once here;
        // the memory was allocated with `self.layout`.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, self.layout);
        }
    }
}

pub struct FlowTable {
    slots: Array<FlowSlot>,
    /// Each flow's cold record, same index as its slot, guarded by the
    /// slot's lock.
    cold: Array<UnsafeCell<FlowCold>>,
    /// Each flow's header template (one cache line), same index, guarded
    /// by the slot's lock; built by the engine on the flow's first segment.
    tmpl: Array<UnsafeCell<HdrTemplate>>,
    index: Array<AtomicU64>,
    mask: usize,
    /// Flows removed so far ([`FlowTable::removals`]): one more after each
    /// removal's generation change.
    removals: AtomicU64,
    writer: Mutex<Writer>,
}

// SAFETY: every access to a slot's `UnsafeCell<FlowState>`, and to the
// `UnsafeCell<FlowCold>` and `UnsafeCell<HdrTemplate>` of the same index,
// happens through a `FlowGuard` (or `peek_rings`, which holds the lock too),
// which holds the slot's spinlock (acquire on lock, release on unlock), so
// no two threads touch a flow's state at the same time.
unsafe impl Sync for FlowTable {}
// SAFETY: the table owns its slots; moving it between threads moves plain data.
unsafe impl Send for FlowTable {}

impl FlowTable {
    /// A table for up to `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        Self::with_advice(capacity, &mut |_, _| {})
    }

    /// A table for up to `capacity` flows whose large arrays (slots, cold
    /// records, templates, index: each at least [`HUGE_MIN`] bytes) are
    /// [`HUGE_PAGE`] aligned and shown to `advise(start, bytes)` before
    /// their first touch (`tas_runtime::huge` asks the kernel for
    /// transparent huge pages there: at 64K flows 8 + 16 + 4 + 1 MiB that
    /// would otherwise take ~7,400 TLB entries).
    pub fn with_advice(capacity: usize, advise: &mut dyn FnMut(*mut u8, usize)) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize / 2);
        let index_len = (capacity * 2).next_power_of_two().max(16);
        let slots: Array<FlowSlot> = Array::new(capacity, advise);
        let cold: Array<UnsafeCell<FlowCold>> = Array::new(capacity, advise);
        let tmpl: Array<UnsafeCell<HdrTemplate>> = Array::new(capacity, advise);
        let index: Array<AtomicU64> = Array::new(index_len, advise);
        FlowTable {
            slots,
            cold,
            tmpl,
            index,
            mask: index_len - 1,
            removals: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                free: (0..capacity as u32).rev().collect(),
                used: 0,
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Installed flows (slow path's count).
    pub fn len(&self) -> usize {
        self.writer.lock().map(|w| w.used).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds and locks the flow with this 4-tuple.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowGuard<'_>> {
        let h = key.hash();
        let mut i = h as usize & self.mask;
        for _ in 0..=self.mask {
            let e = self.index[i].load(Ordering::Acquire);
            if e == EMPTY {
                return None;
            }
            if e != TOMB && (e >> 32) as u32 == h {
                let id = (e as u32).wrapping_sub(1);
                if let Some(g) = self.lock(id) {
                    if g.key().words() == key.words() {
                        return Some(g);
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Whether the index is small enough (≤ [`INDEX_CACHED_MAX`] bytes)
    /// to stay in the cache: then a batched lookup reads it at once and
    /// skips [`FlowTable::prefetch_index`].
    #[inline(always)]
    pub fn index_cached(&self) -> bool {
        self.mask < INDEX_CACHED_MAX / 8
    }

    /// Starts loading the index entry for a key hash (first stage of a
    /// batched lookup; a hint only), and the next cache line of the index
    /// when the entry is in the upper half of its own: a probe chain that
    /// starts there crosses into the next line for a few percent of the
    /// flows at the table's load factor, and a flow whose candidate the
    /// second stage does not find is looked up in full by `FastPath::rx`,
    /// its index line, slot, template and ring lines then missed one after
    /// another, with nothing prefetched (~600 ns on this host's memory).
    #[inline]
    pub fn prefetch_index(&self, hash: u32) {
        let i = hash as usize & self.mask;
        prefetch(&self.index[i] as *const AtomicU64 as *const u8);
        if i & 7 >= 4 {
            prefetch(&self.index[((i | 7) + 1) & self.mask] as *const AtomicU64 as *const u8);
        }
    }

    /// Starts loading the flow slot (both lines) the index entry for
    /// `hash` points to (second stage; call after
    /// `prefetch_index` had time to land). Returns that flow's id, for
    /// [`FlowTable::peek_rings`] and as a candidate for
    /// [`FlowTable::lock_candidate`] (the 4-tuple is not compared). Follows
    /// the probe chain up to the end of the cache line after the index
    /// entry's (at the load factor used, a quarter of the flows are not in
    /// their home entry; the rest of the line is loaded already, and the
    /// next one too where a chain is likely to reach it, see
    /// [`FlowTable::prefetch_index`]).
    #[inline]
    pub fn prefetch_slot(&self, hash: u32) -> Option<FlowId> {
        let id = self.candidate(hash)?;
        let slot = self.slots.get(id as usize)?;
        let p = slot as *const FlowSlot as *const u8;
        prefetch(p);
        prefetch(p.wrapping_add(64));
        Some(id)
    }

    /// Starts loading flow `id`'s header template (third stage of a batched
    /// lookup, after the flow's ring lines; a hint only). Asked for in the
    /// second stage beside the slot, the batch's template lines competed
    /// with the slot lines the third stage waits for: `rpc` at 64K flows
    /// took 27 % longer (docs/fastpath-bench.md, session 33).
    #[inline]
    pub fn prefetch_tmpl(&self, id: FlowId) {
        if let Some(t) = self.tmpl.get(id as usize) {
            prefetch(t.get() as *const u8);
        }
    }

    /// The flow the index entry for `hash` points to, within the entry's
    /// cache line and the next of the probe chain, without prefetching
    /// anything (the lookup of [`FlowTable::prefetch_slot`], for a table
    /// whose index does not stay in the cache).
    #[inline]
    pub fn candidate(&self, hash: u32) -> Option<FlowId> {
        self.probe::<false>(hash)
    }

    /// [`FlowTable::candidate`] for a table whose index stays in the cache
    /// ([`FlowTable::index_cached`]): follows the probe chain to its end,
    /// not only to the end of the entry's cache line (the next lines are
    /// cached too, and a flow found here is not looked up again by hash in
    /// `FastPath::rx`). At most one pass over the index.
    #[inline]
    pub fn candidate_chain(&self, hash: u32) -> Option<FlowId> {
        self.probe::<true>(hash)
    }

    /// The probe of [`FlowTable::candidate`] (`WHOLE` false: up to the end
    /// of the 64-byte line after the entry's) and
    /// [`FlowTable::candidate_chain`] (`WHOLE`: the whole chain, at most one
    /// pass).
    #[inline(always)]
    fn probe<const WHOLE: bool>(&self, hash: u32) -> Option<FlowId> {
        let index: &[AtomicU64] = &self.index;
        let start = hash as usize & self.mask;
        let mut i = start;
        // Where the probe ends: back at the start, or the first entry of
        // the second line after the entry's (8 entries per 64-byte line).
        let stop = if WHOLE {
            start
        } else {
            ((start | 7) + 9) & self.mask
        };
        loop {
            let e = index.get(i)?.load(Ordering::Relaxed);
            if e == EMPTY {
                return None;
            }
            if e != TOMB && (e >> 32) as u32 == hash {
                // (Below the capacity: `insert` wrote it. Every use of a
                // candidate checks it against the slots again.)
                return Some((e as u32).wrapping_sub(1));
            }
            i = (i + 1) & self.mask;
            if i == stop {
                return None;
            }
        }
    }

    /// Locks flow `id` if it is installed and has this 4-tuple: a lookup
    /// whose candidate came from [`FlowTable::prefetch_slot`]. `None` (the
    /// lock released) otherwise; the caller then does a full
    /// [`FlowTable::lookup`].
    #[inline]
    pub fn lock_candidate(&self, id: FlowId, key: &FlowKey) -> Option<FlowGuard<'_>> {
        let g = self.lock(id)?;
        if g.key().words() == key.words() {
            Some(g)
        } else {
            None
        }
    }

    /// Third stage of a batched lookup: flow `id`'s payload region and the
    /// region offsets of its next in-order RX byte and of its next TX byte
    /// to send — if its lock is free right now (taken and released at
    /// once, never waited for). A hint for prefetching ring lines.
    #[inline]
    pub fn peek_rings(&self, id: FlowId) -> Option<(u16, u32, u32)> {
        let slot = self.slots.get(id as usize)?;
        if slot
            .lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: this thread holds the slot's lock (taken just above), so
        // no other reference to the state exists until it is released below.
        let f = unsafe { &*slot.state.get() };
        let r = (
            f.mem,
            f.rx_base.wrapping_add(f.rx_next_pos),
            f.tx_base.wrapping_add(f.tx_next_pos),
        );
        slot.lock.store(0, Ordering::Release);
        Some(r)
    }

    /// Locks flow `id` if it is installed.
    #[inline]
    pub fn lock(&self, id: FlowId) -> Option<FlowGuard<'_>> {
        let slot = self.slots.get(id as usize)?;
        if slot
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            lock_contended(&slot.lock);
        }
        let g = FlowGuard {
            table: self,
            slot,
            id,
        };
        if slot.gen.load(Ordering::Relaxed) & 1 == 1 {
            Some(g)
        } else {
            None
        }
    }

    /// Generation of slot `id` (odd while installed); lets holders of a flow
    /// id detect that the slot was reused.
    #[inline]
    pub fn generation(&self, id: FlowId) -> u16 {
        self.slots
            .get(id as usize)
            .map(|s| s.gen.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// How many flows were removed so far. A flow locked (and found
    /// installed) after this read returned `n`, while it still returns
    /// `n`, has not been removed since, unless the removal is under way
    /// at this moment — as a [`FlowTable::generation`] read could not tell
    /// either. One load for a batch of flows instead of one generation
    /// each (`FastPath::flush_notifications`).
    #[inline]
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Installs a flow (slow path only). Returns its id.
    pub fn insert(&self, state: FlowState) -> Result<FlowId, TableError> {
        let key = state.key();
        let mut w = self.writer.lock().expect("flow table writer poisoned");
        if self.lookup(&key).is_some() {
            return Err(TableError::Exists);
        }
        let id = w.free.pop().ok_or(TableError::Full)?;
        let slot = &self.slots[id as usize];
        {
            let mut g = self.lock_raw(slot, id);
            *g = state;
            g.notify = 0;
            *g.cold_mut() = FlowCold::default();
            g.cold_mut().tx = TxCold::new(&state);
            *g.parts_tx().2 = HdrTemplate::default();
            slot.gen.fetch_add(1, Ordering::Relaxed);
        }
        let h = key.hash();
        let mut i = h as usize & self.mask;
        loop {
            let e = self.index[i].load(Ordering::Relaxed);
            if e == EMPTY || e == TOMB {
                self.index[i].store(((h as u64) << 32) | (id as u64 + 1), Ordering::Release);
                break;
            }
            i = (i + 1) & self.mask;
        }
        w.used += 1;
        Ok(id)
    }

    /// Removes flow `id` (slow path only), returning its final state.
    pub fn remove(&self, id: FlowId) -> Option<FlowState> {
        let mut w = self.writer.lock().expect("flow table writer poisoned");
        let slot = self.slots.get(id as usize)?;
        let state = {
            let g = self.lock_raw(slot, id);
            if slot.gen.load(Ordering::Relaxed) & 1 == 0 {
                return None;
            }
            slot.gen.fetch_add(1, Ordering::Relaxed);
            *g
        };
        // After the slot's lock was released: whoever sees the count
        // unchanged since before it locked the flow (`FlowTable::removals`)
        // may take the flow as still installed, as a generation read then
        // would have told.
        self.removals.fetch_add(1, Ordering::Release);
        let want = id as u64 + 1;
        let mut i = state.key().hash() as usize & self.mask;
        for _ in 0..=self.mask {
            let e = self.index[i].load(Ordering::Relaxed);
            if e == EMPTY {
                break;
            }
            if e != TOMB && e & 0xffff_ffff == want {
                // The next slot being empty means no chain runs through this one.
                let next = self.index[(i + 1) & self.mask].load(Ordering::Relaxed);
                self.index[i].store(if next == EMPTY { EMPTY } else { TOMB }, Ordering::Release);
                break;
            }
            i = (i + 1) & self.mask;
        }
        w.free.push(id);
        w.used -= 1;
        Some(state)
    }

    /// Ids of all installed flows (slow path; takes each flow's lock briefly).
    pub fn ids(&self) -> Vec<FlowId> {
        (0..self.slots.len() as u32)
            .filter(|&id| self.slots[id as usize].gen.load(Ordering::Acquire) & 1 == 1)
            .collect()
    }

    fn lock_raw<'a>(&'a self, slot: &'a FlowSlot, id: FlowId) -> FlowGuard<'a> {
        while slot
            .lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        FlowGuard {
            table: self,
            slot,
            id,
        }
    }
}

/// Takes a flow lock that its first try found held: spins, yielding the
/// CPU every 64 tries (out of line: the uncontended lock is one
/// `compare_exchange`).
#[cold]
#[inline(never)]
fn lock_contended(lock: &AtomicU16) {
    let mut spins = 0u32;
    while lock
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Hints the CPU to load the cache line at `p` (no effect elsewhere).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint that never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A locked flow. Dereferences to its [`FlowState`]; its [`FlowCold`]
/// record is reached through [`FlowGuard::cold`] / [`FlowGuard::parts`];
/// unlocks on drop.
pub struct FlowGuard<'a> {
    table: &'a FlowTable,
    /// `table.slots[id]` (so `id` is in bounds of `slots`, `cold` and `tmpl`,
    /// which have the same length).
    slot: &'a FlowSlot,
    id: FlowId,
}

impl FlowGuard<'_> {
    pub fn id(&self) -> FlowId {
        self.id
    }

    /// The slot's generation ([`FlowTable::generation`]); it cannot change
    /// while the guard holds the lock.
    #[inline]
    pub fn generation(&self) -> u16 {
        self.slot.gen.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn cold_cell(&self) -> &UnsafeCell<FlowCold> {
        debug_assert!((self.id as usize) < self.table.cold.len());
        // SAFETY: the guard was made for `slots[id]`, and `cold` has the
        // same length as `slots` (both built for `capacity` in `new`).
        unsafe { self.table.cold.get_unchecked(self.id as usize) }
    }

    #[inline(always)]
    fn tmpl_cell(&self) -> &UnsafeCell<HdrTemplate> {
        debug_assert!((self.id as usize) < self.table.tmpl.len());
        // SAFETY: as in `cold_cell`; `tmpl` has the length of `slots` too.
        unsafe { self.table.tmpl.get_unchecked(self.id as usize) }
    }

    /// The flow's cold record.
    #[inline]
    pub fn cold(&self) -> &FlowCold {
        // SAFETY: the guard holds the lock that guards this record too.
        unsafe { &*self.cold_cell().get() }
    }

    /// The flow's cold record, to change it.
    #[inline]
    pub fn cold_mut(&mut self) -> &mut FlowCold {
        // SAFETY: as in `cold`; `&mut self` makes this the only borrow.
        unsafe { &mut *self.cold_cell().get() }
    }

    /// The hot state and the cold record at once.
    #[inline]
    pub fn parts(&mut self) -> (&mut FlowState, &mut FlowCold) {
        // SAFETY: both cells are guarded by the lock this guard holds, are
        // distinct objects, and `&mut self` makes these the only borrows.
        unsafe { (&mut *self.slot.state.get(), &mut *self.cold_cell().get()) }
    }

    /// The hot state, the cold record and the header template at once
    /// (the template is the engine's to check and rebuild).
    #[inline]
    pub fn parts_tx(&mut self) -> (&mut FlowState, &mut FlowCold, &mut HdrTemplate) {
        // SAFETY: as in `parts`; the template cell is guarded by the same
        // lock and is a third distinct object.
        unsafe {
            (
                &mut *self.slot.state.get(),
                &mut *self.cold_cell().get(),
                &mut *self.tmpl_cell().get(),
            )
        }
    }
}

impl Deref for FlowGuard<'_> {
    type Target = FlowState;
    #[inline]
    fn deref(&self) -> &FlowState {
        // SAFETY: this guard holds the slot's lock, so no other reference to
        // the state exists while it lives.
        unsafe { &*self.slot.state.get() }
    }
}

impl DerefMut for FlowGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut FlowState {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow.
        unsafe { &mut *self.slot.state.get() }
    }
}

impl Drop for FlowGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.slot.lock.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(lp: u16, rp: u16) -> FlowState {
        FlowState {
            local_ip: 0xc612_0001,
            remote_ip: 0xc612_0002,
            local_port: lp,
            remote_port: rp,
            opaque: ((lp as u64) << 16) | rp as u64,
            ..Default::default()
        }
    }

    #[test]
    fn insert_lookup_remove_reuse() {
        let t = FlowTable::new(8);
        let a = t.insert(st(1, 2)).unwrap();
        let b = t.insert(st(1, 3)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.insert(st(1, 2)), Err(TableError::Exists));
        assert_eq!(t.removals(), 0, "inserts are no removals");
        assert_eq!(t.lookup(&st(1, 2).key()).unwrap().id(), a);
        assert_eq!({ t.lookup(&st(1, 3).key()).unwrap().opaque }, (1 << 16) | 3);
        assert!(t.lookup(&st(9, 9).key()).is_none());
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        assert_eq!(t.removals(), 1, "one removal counted, the refused one not");
        assert!(t.lookup(&st(1, 2).key()).is_none());
        assert!(t.lock(a).is_none());
        assert_eq!(t.lookup(&st(1, 3).key()).unwrap().id(), b);
        let c = t.insert(st(5, 5)).unwrap();
        assert_eq!(c, a, "slot reused");
        assert_eq!(t.len(), 2);
        assert!(t.remove(c).is_some());
        assert_eq!(t.removals(), 2);
    }

    /// Every installed flow is its hash's chained candidate (`candidate`
    /// stops at the end of the entry's cache line and misses some).
    #[test]
    fn candidate_chain_finds_every_flow() {
        let n = 1000;
        let t = FlowTable::new(n);
        let ids: Vec<FlowId> = (0..n)
            .map(|i| t.insert(st(i as u16, 80)).unwrap())
            .collect();
        let mut line_misses = 0;
        for (i, &id) in ids.iter().enumerate() {
            let h = st(i as u16, 80).key().hash();
            assert_eq!(t.candidate_chain(h), Some(id), "flow {i}");
            line_misses += (t.candidate(h) != Some(id)) as u32;
        }
        assert!(
            line_misses > 0,
            "no chain crossed a line: the test proves nothing"
        );
        assert_eq!(t.candidate_chain(st(9999, 1).key().hash()), None);
        // Removed flows leave tombstones the chain walks past.
        for &id in ids.iter().step_by(2) {
            t.remove(id).unwrap();
        }
        for (i, &id) in ids.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(t.candidate_chain(st(i as u16, 80).key().hash()), Some(id));
        }
    }

    /// At 64K flows (the index not cached), the second prefetch stage finds
    /// the candidate of nearly every flow: it follows the chain into the
    /// line after the entry's. Stopping at the entry's own line, as it did,
    /// missed every flow whose chain crossed it (3,268 of these 65,536,
    /// 5 %; now 49), and `rx` then looked each of those up in full with
    /// nothing prefetched: about a tenth of the 64K-flow wall clock of
    /// `pair`, `rpc` and `rx` in `fastpath-bench` (docs/fastpath-bench.md,
    /// session 33).
    #[test]
    fn candidates_reach_into_the_next_index_line() {
        let n = 65536;
        let t = FlowTable::new(n);
        assert!(!t.index_cached());
        let mut crossed = 0u32;
        let mut missed = 0u32;
        for i in 0..n {
            let s = FlowState {
                local_port: 80,
                remote_port: (i % 60000) as u16 + 1,
                remote_ip: 0xc612_0000 + (i / 60000) as u32 + 2,
                local_ip: 0xc612_0001,
                ..Default::default()
            };
            let id = t.insert(s).unwrap();
            let h = s.key().hash();
            let home = h as usize & t.mask;
            // Where the flow's entry is: its chain from home.
            let mut at = home;
            while (t.index[at].load(Ordering::Relaxed) as u32).wrapping_sub(1) != id {
                at = (at + 1) & t.mask;
            }
            crossed += (at / 8 != home / 8) as u32;
            missed += (t.candidate(h) != Some(id)) as u32;
        }
        assert!(
            crossed as usize > n / 50,
            "only {crossed} chains cross a line: the test proves nothing"
        );
        assert!(
            (missed as usize) < n / 500,
            "{missed} of {n} flows not found by the second stage ({crossed} chains cross a line)"
        );
    }

    #[test]
    fn fills_to_capacity_and_survives_churn() {
        let n = 1000;
        let t = FlowTable::new(n);
        // model: port -> (remote port, id)
        let mut live: Vec<(u16, FlowId)> = Vec::new();
        for i in 0..n {
            live.push((80, t.insert(st(i as u16, 80)).unwrap()));
        }
        assert_eq!(t.insert(st(60000, 1)), Err(TableError::Full));
        let mut x = 12345u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % n;
            let (rp, id) = live[i];
            assert_eq!(t.lookup(&st(i as u16, rp).key()).unwrap().id(), id);
            t.remove(id).unwrap();
            assert!(t.lookup(&st(i as u16, rp).key()).is_none());
            let rp2 = rp.wrapping_add(1);
            live[i] = (rp2, t.insert(st(i as u16, rp2)).unwrap());
        }
        for (i, &(rp, id)) in live.iter().enumerate() {
            assert_eq!(t.lookup(&st(i as u16, rp).key()).unwrap().id(), id);
        }
        assert_eq!(t.len(), n);
    }

    #[test]
    fn concurrent_readers_see_consistent_flows() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let t = Arc::new(FlowTable::new(256));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (t, stop) = (t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hits = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for p in 0..64u16 {
                        if let Some(g) = t.lookup(&st(p, 7).key()) {
                            assert_eq!(g.local_port, p);
                            assert_eq!({ g.opaque }, ((p as u64) << 16) | 7);
                            hits += 1;
                        }
                    }
                }
                hits
            })
        };
        for _ in 0..2000 {
            let ids: Vec<_> = (0..64u16).map(|p| t.insert(st(p, 7)).unwrap()).collect();
            for id in ids {
                t.remove(id).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}
