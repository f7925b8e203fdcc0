//! Transparent huge pages for the fast path's big memory: the flow table's
//! arrays ([`flow_table`]) and the apps' shared regions ([`advise_shared`]).
//!
//! At 64K flows the table is ~29 MiB and the rings of a region hundreds of
//! MiB; on 4 KiB pages nearly every flow visit also misses the TLB and
//! walks the page table, which the fast path's prefetches do not hide
//! (docs/fastpath-bench.md, session 22). `madvise(MADV_HUGEPAGE)` asks for
//! 2 MiB pages where the kernel allows it: anonymous memory when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`,
//! shared memory (memfd) when `shmem_enabled` (or the 2 MiB size's own
//! `hugepages-2048kB/shmem_enabled`) is `always`, `within_size`, `advise`
//! or `force`. No reserved hugetlbfs pages are needed. Where the kernel
//! refuses, the memory stays on 4 KiB pages: counted in [`stats`] and
//! logged once per kind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tas_engine::flowtable::{FlowTable, HUGE_PAGE};

static ADVISED_BYTES: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static SHARED_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);
static LOGGED_REFUSED: AtomicBool = AtomicBool::new(false);
static LOGGED_SHARED: AtomicBool = AtomicBool::new(false);

/// What was asked for so far, process-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HugeStats {
    /// Bytes `madvise(MADV_HUGEPAGE)` accepted (whole huge pages).
    pub advised_bytes: u64,
    /// Calls the kernel refused (no THP support: the memory stays on 4 KiB
    /// pages).
    pub refused: u64,
    /// Shared regions advised while the kernel's `shmem_enabled` does not
    /// give shared memory huge pages on request (they stay on 4 KiB pages).
    pub shared_unavailable: u64,
}

/// Counters of every advice given in this process.
pub fn stats() -> HugeStats {
    HugeStats {
        advised_bytes: ADVISED_BYTES.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        shared_unavailable: SHARED_UNAVAILABLE.load(Ordering::Relaxed),
    }
}

/// The whole huge pages inside `[start, start + len)`.
fn huge_range(start: usize, len: usize) -> Option<(usize, usize)> {
    let a = start.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let e = start.checked_add(len)? & !(HUGE_PAGE - 1);
    (e > a).then_some((a, e - a))
}

/// Asks for huge pages on the whole 2 MiB pages of `[start, start + len)`
/// (memory this process mapped and owns). True when the kernel accepted
/// the advice (for shared memory see [`shared_allowed`]); a refusal is
/// counted and logged once. Setup only: one syscall.
pub fn advise(start: *mut u8, len: usize) -> bool {
    let Some((a, n)) = huge_range(start as usize, len) else {
        return false;
    };
    // SAFETY: [a, a + n) lies inside the caller's mapping; MADV_HUGEPAGE
    // changes only how the kernel backs those pages, never their contents
    // or validity.
    let rc = unsafe { libc::madvise(a as *mut libc::c_void, n, libc::MADV_HUGEPAGE) };
    if rc == 0 {
        ADVISED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        return true;
    }
    REFUSED.fetch_add(1, Ordering::Relaxed);
    if !LOGGED_REFUSED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            "madvise(MADV_HUGEPAGE) refused ({}): fast-path memory stays on 4 KiB pages",
            std::io::Error::last_os_error()
        );
    }
    false
}

/// Whether shared memory (memfd, shmem) gets huge pages on
/// `MADV_HUGEPAGE`, from the THP sysfs settings (false where they are
/// missing).
pub fn shared_allowed() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let top = read("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    let pmd = read("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled");
    shared_allowed_by(top.as_deref(), pmd.as_deref())
}

/// The selected mode of a sysfs THP setting (`always [advise] never`).
fn selected(s: &str) -> Option<&str> {
    let a = s.find('[')?;
    let e = a + s[a..].find(']')?;
    Some(&s[a + 1..e])
}

fn shared_allowed_by(top: Option<&str>, pmd: Option<&str>) -> bool {
    let yes = |m: Option<&str>| matches!(m, Some("always" | "within_size" | "advise" | "force"));
    let top = top.and_then(selected);
    match pmd.and_then(selected) {
        // The 2 MiB size's own setting, unless it defers to the top one.
        Some("inherit") | None => yes(top),
        m => yes(m),
    }
}

/// [`advise`] for an app's shared region (a memfd mapping): also counts
/// and logs once when the kernel's `shmem_enabled` keeps shared memory on
/// 4 KiB pages whatever the advice. True when huge pages may back it.
pub fn advise_shared(start: *mut u8, len: usize) -> bool {
    let ok = advise(start, len);
    if ok && !shared_allowed() {
        SHARED_UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
        if !LOGGED_SHARED.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "shared memory huge pages off (transparent_hugepage/shmem_enabled): app regions stay on 4 KiB pages"
            );
        }
        return false;
    }
    ok
}

/// A flow table for `capacity` flows whose large arrays are advised
/// ([`advise`]) before their first touch.
pub fn flow_table(capacity: usize) -> FlowTable {
    FlowTable::with_advice(capacity, &mut |p, n| {
        advise(p, n);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_modes_are_read() {
        assert_eq!(
            selected("always within_size advise [never] deny force"),
            Some("never")
        );
        assert!(!shared_allowed_by(
            Some("always within_size advise [never] deny force"),
            None
        ));
        assert!(shared_allowed_by(
            Some("always within_size [advise] never deny force"),
            None
        ));
        assert!(!shared_allowed_by(
            Some("always within_size advise [never] deny force"),
            Some("always [inherit] within_size advise never")
        ));
        assert!(shared_allowed_by(
            Some("always within_size advise [never] deny force"),
            Some("always inherit within_size [advise] never")
        ));
        assert!(!shared_allowed_by(
            Some("always [advise] never"),
            Some("always inherit within_size advise [never]")
        ));
        assert!(!shared_allowed_by(Some("[deny]"), None));
        assert!(!shared_allowed_by(None, None));
    }

    #[test]
    fn huge_range_is_the_whole_pages_inside() {
        assert_eq!(huge_range(0, HUGE_PAGE - 1), None);
        assert_eq!(huge_range(1, 2 * HUGE_PAGE), Some((HUGE_PAGE, HUGE_PAGE)));
        assert_eq!(
            huge_range(HUGE_PAGE, 2 * HUGE_PAGE),
            Some((HUGE_PAGE, 2 * HUGE_PAGE))
        );
    }

    /// The table's large arrays are huge-page aligned and advised, and the
    /// kernel's AnonHugePages for the process grows when THP is available
    /// for anonymous memory (`enabled` not `never`).
    #[test]
    fn flow_table_arrays_are_advised() {
        let before = stats().advised_bytes;
        let mut seen = Vec::new();
        let t = FlowTable::with_advice(64 * 1024, &mut |p, n| seen.push((p as usize, n)));
        assert_eq!(t.capacity(), 64 * 1024);
        // slots 8 MiB, cold records, templates 4 MiB, index 1 MiB.
        assert_eq!(seen.len(), 4, "{seen:?}");
        for &(p, n) in &seen {
            assert_eq!(p % HUGE_PAGE, 0);
            assert_eq!(n % HUGE_PAGE, 0);
        }
        drop(t);
        let t = flow_table(64 * 1024);
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .ok()
            .and_then(|s| selected(&s).map(str::to_owned));
        if matches!(thp.as_deref(), Some("always" | "madvise")) {
            assert!(stats().advised_bytes >= before + seen.iter().map(|s| s.1 as u64).sum::<u64>());
        }
        // Small tables are not advised (and still work).
        let mut small = 0;
        let s = FlowTable::with_advice(1024, &mut |_, _| small += 1);
        assert_eq!(small, 0);
        assert_eq!(s.capacity(), 1024);
        drop(t);
    }
}
