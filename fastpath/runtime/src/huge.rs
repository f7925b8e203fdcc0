//! Huge pages for the fast path's big memory: the flow table's arrays
//! ([`flow_table`]) and the apps' shared regions ([`shared_region`]).
//!
//! At 64K flows the table is ~29 MiB and the rings of a region hundreds of
//! MiB; on 4 KiB pages nearly every flow visit also misses the TLB and
//! walks the page table, which the fast path's prefetches do not hide
//! (docs/fastpath-bench.md, sessions 22 and 24).
//!
//! Two kinds. Transparent huge pages: `madvise(MADV_HUGEPAGE)` ([`advise`])
//! asks for 2 MiB pages where the kernel allows it: anonymous memory when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`,
//! shared memory (memfd) when `shmem_enabled` (or the 2 MiB size's own
//! `hugepages-2048kB/shmem_enabled`) is `always`, `within_size`, `advise`
//! or `force`. Reserved hugetlbfs pages: an app region whose size is a whole
//! number of 2 MiB pages is a `memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)`
//! file when enough pages the administrator reserved
//! (`/proc/sys/vm/nr_hugepages`) are free ([`shared_region`],
//! [`HugePages::Auto`]), whatever the THP settings. Its mapping (without
//! `MAP_NORESERVE`) reserves every page of the region up front, so a
//! mapping that succeeds never faults for want of a page later (no
//! `SIGBUS`); one that cannot reserve fails with `ENOMEM` and the region
//! falls back to a 4 KiB-page memfd with THP advice. Where the kernel
//! refuses, the memory stays on 4 KiB pages: counted in [`stats`] and
//! logged once per kind.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tas_engine::flowtable::{FlowTable, HUGE_PAGE};

static ADVISED_BYTES: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static SHARED_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);
static LOGGED_REFUSED: AtomicBool = AtomicBool::new(false);
static LOGGED_SHARED: AtomicBool = AtomicBool::new(false);
static HUGETLB_REGIONS: AtomicU64 = AtomicU64::new(0);
static HUGETLB_BYTES: AtomicU64 = AtomicU64::new(0);
static HUGETLB_FALLBACKS: AtomicU64 = AtomicU64::new(0);
static LOGGED_HUGETLB: AtomicBool = AtomicBool::new(false);

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
    /// Shared regions created on reserved hugetlbfs pages.
    pub hugetlb_regions: u64,
    /// Their bytes (all reserved at creation).
    pub hugetlb_bytes: u64,
    /// Shared regions [`HugePages::Auto`] wanted on hugetlbfs pages that
    /// got 4 KiB pages instead (too few free pages, no hugetlbfs, a size
    /// that is not whole 2 MiB pages).
    pub hugetlb_fallbacks: u64,
}

/// Counters of every advice given in this process.
pub fn stats() -> HugeStats {
    HugeStats {
        advised_bytes: ADVISED_BYTES.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        shared_unavailable: SHARED_UNAVAILABLE.load(Ordering::Relaxed),
        hugetlb_regions: HUGETLB_REGIONS.load(Ordering::Relaxed),
        hugetlb_bytes: HUGETLB_BYTES.load(Ordering::Relaxed),
        hugetlb_fallbacks: HUGETLB_FALLBACKS.load(Ordering::Relaxed),
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

/// Whether app regions may use reserved hugetlbfs pages (tasd's
/// `--huge-pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// On hugetlbfs pages when the region is whole 2 MiB pages and enough
    /// reserved pages are free; otherwise 4 KiB pages with THP advice
    /// (counted in [`HugeStats::hugetlb_fallbacks`], logged once).
    #[default]
    Auto,
    /// Always a 4 KiB-page memfd with THP advice.
    Off,
}

/// Why a region could not have hugetlbfs pages.
#[derive(Debug, thiserror::Error)]
pub enum HugetlbError {
    #[error("{0} bytes is not a whole number of 2 MiB pages")]
    Unaligned(usize),
    #[error("{available} free 2 MiB huge pages, {need} needed (/proc/sys/vm/nr_hugepages)")]
    TooFew { need: u64, available: u64 },
    #[error("hugetlbfs memfd: {0}")]
    Create(std::io::Error),
    #[error("reserving the huge pages at mmap: {0}")]
    Map(std::io::Error),
}

/// Reads a number from a sysfs file of the 2 MiB hugetlb pool.
fn pool(file: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 2 MiB hugetlbfs pages that are free and not yet promised to a mapping
/// (`free_hugepages - resv_hugepages`; 0 where the pool is missing).
pub fn hugetlb_available() -> u64 {
    let free = pool("free_hugepages").unwrap_or(0);
    free.saturating_sub(pool("resv_hugepages").unwrap_or(0))
}

/// A memfd of `len` bytes (whole 2 MiB pages) on hugetlbfs pages, when at
/// least as many pages are free ([`hugetlb_available`]). Its pages are not
/// reserved yet: the first shared mapping without `MAP_NORESERVE`
/// reserves them (and fails with `ENOMEM` when another took them since).
pub fn hugetlb_memfd(name: &str, len: usize) -> Result<OwnedFd, HugetlbError> {
    use nix::sys::memfd::MemFdCreateFlag as F;
    if len == 0 || !len.is_multiple_of(HUGE_PAGE) {
        return Err(HugetlbError::Unaligned(len));
    }
    let need = (len / HUGE_PAGE) as u64;
    let available = hugetlb_available();
    if available < need {
        return Err(HugetlbError::TooFew { need, available });
    }
    sized_memfd(name, len, F::MFD_HUGETLB | F::MFD_HUGE_2MB).map_err(HugetlbError::Create)
}

/// A close-on-exec memfd named `name` with `flags` besides, `len` bytes long.
fn sized_memfd(
    name: &str,
    len: usize,
    flags: nix::sys::memfd::MemFdCreateFlag,
) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag as F};
    let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let cname = std::ffi::CString::new(name).map_err(|_| invalid())?;
    let fd = memfd_create(&cname, F::MFD_CLOEXEC | flags)?;
    nix::unistd::ftruncate(&fd, i64::try_from(len).map_err(|_| invalid())?)?;
    Ok(fd)
}

/// An app's shared region: its memfd (handed to the app) and our mapping.
pub struct SharedRegion {
    pub fd: OwnedFd,
    pub map: memmap2::MmapMut,
    /// On reserved hugetlbfs pages (every page reserved at creation).
    pub hugetlb: bool,
}

/// Creates and maps a shared region of `len` bytes named `name` (a memfd):
/// on reserved hugetlbfs pages when `mode` is [`HugePages::Auto`] and that
/// works ([`hugetlb_memfd`]; its mapping reserves every page, so it never
/// faults for want of one), else on 4 KiB pages advised for THP
/// ([`advise_shared`]). A fallback under `Auto` is counted
/// ([`HugeStats::hugetlb_fallbacks`]) and logged once. Setup only.
pub fn shared_region(name: &str, len: usize, mode: HugePages) -> std::io::Result<SharedRegion> {
    if mode == HugePages::Auto {
        let huge = hugetlb_memfd(name, len).and_then(|fd| {
            // SAFETY: the memfd is ours, `len` bytes; without MAP_NORESERVE
            // the kernel reserves every huge page of it here (or fails), so
            // no later touch can SIGBUS; the mapping is owned by the result.
            let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&fd) }
                .map_err(HugetlbError::Map)?;
            Ok(SharedRegion {
                fd,
                map,
                hugetlb: true,
            })
        });
        match huge {
            Ok(r) => {
                HUGETLB_REGIONS.fetch_add(1, Ordering::Relaxed);
                HUGETLB_BYTES.fetch_add(len as u64, Ordering::Relaxed);
                return Ok(r);
            }
            Err(e) => {
                HUGETLB_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                if !LOGGED_HUGETLB.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "app region not on hugetlbfs pages ({e}): 4 KiB pages instead (logged once; counted in huge.hugetlb_fallbacks)"
                    );
                }
            }
        }
    }
    let fd = sized_memfd(name, len, nix::sys::memfd::MemFdCreateFlag::empty())?;
    // SAFETY: the memfd is ours and sized; the mapping is owned by the result.
    let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&fd)? };
    // Rings on 2 MiB pages where the kernel gives shared memory huge
    // pages (counted and logged once where it does not).
    advise_shared(map.as_mut_ptr(), map.len());
    Ok(SharedRegion {
        fd,
        map,
        hugetlb: false,
    })
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

    /// A region hugetlbfs cannot take falls back to 4 KiB pages, counted;
    /// `Off` never tries. (The hugetlbfs path itself needs reserved pages,
    /// a machine-wide setting: tests/tests/hugepages.rs.)
    #[test]
    fn a_region_without_free_huge_pages_falls_back_counted() {
        let before = stats();
        let r = shared_region("huge-test-unaligned", 3 << 20, HugePages::Auto).unwrap();
        assert!(!r.hugetlb);
        assert_eq!(r.map.len(), 3 << 20);
        assert!(matches!(
            hugetlb_memfd("x", 3 << 20),
            Err(HugetlbError::Unaligned(_))
        ));
        // More pages than are free.
        let need = hugetlb_available() as usize + 1;
        let mut r = shared_region("huge-test-too-few", need * HUGE_PAGE, HugePages::Auto).unwrap();
        assert!(!r.hugetlb);
        r.map[0] = 1;
        r.map[need * HUGE_PAGE - 1] = 2;
        assert!(matches!(
            hugetlb_memfd("x", need * HUGE_PAGE),
            Err(HugetlbError::TooFew { .. })
        ));
        let mid = stats();
        assert!(mid.hugetlb_fallbacks >= before.hugetlb_fallbacks + 2);
        let r = shared_region("huge-test-off", 4 << 20, HugePages::Off).unwrap();
        assert!(!r.hugetlb);
        let meta = std::fs::File::from(r.fd.try_clone().unwrap())
            .metadata()
            .unwrap();
        assert_eq!(meta.len(), 4 << 20);
        assert_eq!(stats().hugetlb_fallbacks, mid.hugetlb_fallbacks);
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
