//! # tas-testkit
//!
//! What every test and benchmark of the workspace needs once, written once:
//! a seeded PRNG ([`Rng`]), the test addresses and MACs ([`addr`]), running
//! code inside a network namespace ([`netns`]), percentiles ([`pct`]) and a
//! cleanup handler for SIGINT and SIGTERM ([`on_interrupt`]).
//!
//! Must not: be a dependency of anything that ships (only dev-dependencies,
//! tests and benchmarks use it), or hold protocol logic: checksums and frame
//! formats are the engine's (`tas_engine::wire`), used from there.

pub mod addr;
pub mod netns;

/// Installs `handler` for SIGINT and SIGTERM (a tool's or benchmark's
/// cleanup when Ctrl-C or `kill` ends it).
///
/// # Safety
///
/// `handler` may only make async-signal-safe calls, and whatever it reads
/// must be fully written before this is called.
pub unsafe fn on_interrupt(handler: extern "C" fn(libc::c_int)) {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: signal takes no pointers; the handler's own safety is
        // the caller's contract.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// xorshift64*: tiny, fast, deterministic. Every failure replays from its
/// seed. Not for anything but tests, simulations and benchmarks.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose state is `seed` (forced odd, so never zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A generator for small or similar seeds (1, 2, 3 …): the seed is
    /// spread by a multiplication first, so neighbouring seeds give
    /// unrelated streams.
    pub fn mixed(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    /// Uniform-enough in `0..n` (0 when `n` is 0).
    pub fn below<T: Bound>(&mut self, n: T) -> T {
        let n = n.to_u64();
        T::from_u64(if n == 0 { 0 } else { self.next_u64() % n })
    }

    /// True with probability `ppm` / 1,000,000.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next_u64() % 1_000_000 < u64::from(ppm)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u32) -> bool {
        self.below(n) == 0
    }

    /// One element of `v` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = (self.next_u64() >> 56) as u8;
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// The integer types [`Rng::below`] works in.
pub trait Bound: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
}

macro_rules! bound {
    ($($t:ty),*) => {$(
        impl Bound for $t {
            fn to_u64(self) -> u64 {
                self as u64
            }
            fn from_u64(v: u64) -> Self {
                v as $t
            }
        }
    )*};
}
// i32 only so that an untyped literal (`below(10) as usize`) works.
bound!(u16, u32, u64, usize, i32);

/// The `p`-quantile (0.0..=1.0) of `sorted` (ascending), nearest rank
/// rounded down; None for an empty slice.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    Some(sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.below(10u32);
            assert!(x < 10);
            assert_eq!(x, b.below(10u32));
            assert_eq!(a.below(0usize), 0);
        }
        assert_ne!(Rng::mixed(1).next_u64(), Rng::mixed(2).next_u64());
        let mut p = Rng::new(3).permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<u32>>());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(pct(&v, 0.5), Some(51));
        assert_eq!(pct(&v, 0.99), Some(100));
        assert_eq!(pct(&v, 1.0), Some(100));
        assert_eq!(pct::<u32>(&[], 0.5), None);
    }
}
