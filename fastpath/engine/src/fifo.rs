//! A bounded FIFO of plain values for the engine's per-core queues.

#![allow(unsafe_code)] // unchecked indexing, each with its SAFETY note

/// A bounded FIFO of plain values over a fixed power-of-two array: push
/// and pop are a few instructions, inline, and never allocate (the
/// standard `VecDeque`'s push keeps an out-of-line growth path).
pub(crate) struct Fifo<T: Copy + Default> {
    buf: Box<[T]>,
    head: usize,
    len: usize,
}

impl<T: Copy + Default> Fifo<T> {
    /// Room for at least `cap` values.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let n = cap.max(1).next_power_of_two();
        Fifo {
            buf: vec![T::default(); n].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// Appends `v`; false (and nothing changes) when full.
    #[inline]
    pub(crate) fn push_back(&mut self, v: T) -> bool {
        if self.len == self.buf.len() {
            return false;
        }
        let mask = self.buf.len() - 1;
        let i = (self.head + self.len) & mask;
        debug_assert!(i < self.buf.len());
        // SAFETY: `buf.len()` is a power of two (`with_capacity`), so
        // `i & (buf.len() - 1)` is below it.
        unsafe { *self.buf.get_unchecked_mut(i) = v };
        self.len += 1;
        true
    }
    #[inline]
    pub(crate) fn front(&self) -> Option<&T> {
        if self.len == 0 {
            None
        } else {
            self.buf.get(self.head)
        }
    }
    /// Removes the newest value if `pred` holds for it; true when it did.
    #[inline(always)]
    pub(crate) fn pop_back_if(&mut self, pred: impl FnOnce(&T) -> bool) -> bool {
        if self.len == 0 {
            return false;
        }
        let i = (self.head + self.len - 1) & (self.buf.len() - 1);
        match self.buf.get(i) {
            Some(v) if pred(v) => {
                self.len -= 1;
                if self.len == 0 {
                    self.head = 0;
                }
                true
            }
            _ => false,
        }
    }
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        debug_assert!(self.head < self.buf.len());
        // SAFETY: `head` is always below `buf.len()`: it starts at 0 and is
        // only ever set to 0 or to a value masked with `buf.len() - 1`.
        let v = unsafe { *self.buf.get_unchecked(self.head) };
        self.len -= 1;
        // Emptied: start over at the front, so a queue that is drained
        // every round stays on its first cache lines instead of sweeping
        // its whole (flow-table sized) array through the cache.
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + 1) & (self.buf.len() - 1)
        };
        Some(v)
    }
}

/// A [`Fifo`] whose newest value is kept apart, in a field of its own:
/// pushing a value and taking it back again (the common use of the
/// held-ACK queue: an ACK held, then carried by the app's response) never
/// touches the array. The same queue otherwise, one value larger.
pub(crate) struct TailFifo<T: Copy + Default> {
    /// All values but the newest, oldest first.
    head: Fifo<T>,
    /// The newest value, when not empty.
    last: Option<T>,
}

impl<T: Copy + Default> TailFifo<T> {
    /// Room for at least `cap` values.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        TailFifo {
            head: Fifo::with_capacity(cap.saturating_sub(1)),
            last: None,
        }
    }
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.last.is_some() as usize
    }
    /// Appends `v`; false (and nothing changes) when full.
    #[inline(always)]
    pub(crate) fn push_back(&mut self, v: T) -> bool {
        if let Some(prev) = self.last {
            if !self.head.push_back(prev) {
                return false;
            }
        }
        self.last = Some(v);
        true
    }
    #[inline]
    pub(crate) fn front(&self) -> Option<&T> {
        match self.head.front() {
            Some(v) => Some(v),
            None => self.last.as_ref(),
        }
    }
    /// Removes the newest value if `pred` holds for it; true when it did.
    #[inline(always)]
    pub(crate) fn pop_back_if(&mut self, pred: impl FnOnce(&T) -> bool) -> bool {
        match self.last {
            Some(v) => {
                if !pred(&v) {
                    return false;
                }
                self.last = None;
                true
            }
            None => self.head.pop_back_if(pred),
        }
    }
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        match self.head.pop_front() {
            Some(v) => Some(v),
            None => self.last.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fifo, TailFifo};

    #[test]
    fn bounded_in_order_and_wraps() {
        let mut q = Fifo::<u32>::with_capacity(3);
        assert!(q.front().is_none());
        assert_eq!(q.pop_front(), None);
        for round in 0..10u32 {
            for i in 0..4 {
                assert!(q.push_back(round * 10 + i));
            }
            assert!(!q.push_back(99), "capacity is 3 rounded up to 4");
            assert_eq!(q.len(), 4);
            assert_eq!(q.front(), Some(&(round * 10)));
            for i in 0..4 {
                assert_eq!(q.pop_front(), Some(round * 10 + i));
            }
            assert_eq!(q.len(), 0);
            assert!(q.push_back(7));
            assert_eq!(q.pop_front(), Some(7));
        }
    }

    #[test]
    fn pop_back_if_takes_only_the_newest_when_it_matches() {
        let mut q = Fifo::<u32>::with_capacity(4);
        assert!(!q.pop_back_if(|_| true));
        for round in 0..6u32 {
            // Wraps around the array: head moves every round.
            assert!(q.push_back(round));
            assert!(q.push_back(100 + round));
            assert!(q.push_back(200 + round));
            assert!(!q.pop_back_if(|&v| v == 100 + round), "not the newest");
            assert!(q.pop_back_if(|&v| v == 200 + round));
            assert_eq!(q.len(), 2);
            assert_eq!(q.pop_front(), Some(round));
            assert!(q.pop_back_if(|&v| v == 100 + round));
            assert_eq!(q.len(), 0);
            assert_eq!(q.pop_front(), None);
            // Leave one behind so the next round starts elsewhere.
            assert!(q.push_back(300));
            assert_eq!(q.pop_front(), Some(300));
        }
    }

    /// `TailFifo` behaves as a plain FIFO with one more value of room,
    /// in every order of pushes, pops and take-backs (compared with a
    /// `VecDeque` model).
    #[test]
    fn tail_fifo_is_the_same_queue_as_a_model() {
        use std::collections::VecDeque;
        for cap in [1usize, 2, 4, 5] {
            let mut q = TailFifo::<u32>::with_capacity(cap);
            let room = Fifo::<u32>::with_capacity(cap.saturating_sub(1)).buf.len() + 1;
            let mut m: VecDeque<u32> = VecDeque::new();
            let mut x = 12345u32;
            for i in 0..4000u32 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                match x % 4 {
                    0 | 1 => {
                        let ok = q.push_back(i);
                        assert_eq!(ok, m.len() < room, "cap {cap} step {i}");
                        if ok {
                            m.push_back(i);
                        }
                    }
                    2 => assert_eq!(q.pop_front(), m.pop_front()),
                    _ => {
                        let want = x & 8 != 0;
                        let took = q.pop_back_if(|_| want);
                        assert_eq!(took, want && !m.is_empty());
                        if took {
                            m.pop_back();
                        }
                    }
                }
                assert_eq!(q.len(), m.len());
                assert_eq!(q.front(), m.front());
            }
        }
    }
}
