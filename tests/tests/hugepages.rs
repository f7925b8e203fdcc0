//! App regions on reserved hugetlbfs pages (`tasd --huge-pages auto`, the
//! default) and the fallback to 4 KiB pages when too few are free.
//!
//! The 2 MiB hugetlb pool is machine-wide: each test sets how many pages
//! are free (`/proc/sys/vm/nr_hugepages`) and puts the old count back when
//! it ends, also on failure; the tests of this file take turns.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tas_system_tests::*;

/// The tests here share the machine's hugetlb pool.
static POOL: Mutex<()> = Mutex::new(());

const HUGE: u64 = 2 << 20;
/// `--app-mem-mib` of the tests' tasd: a region of 8 huge pages.
const REGION_MIB: u64 = 16;
const REGION_PAGES: u64 = REGION_MIB * (1 << 20) / HUGE;

fn pool_file(name: &str) -> String {
    format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{name}")
}

fn pool_read(name: &str) -> u64 {
    let p = pool_file(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e} (kernel without 2 MiB hugetlb pages?)"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Free 2 MiB pages not promised to a mapping yet.
fn available() -> u64 {
    pool_read("free_hugepages").saturating_sub(pool_read("resv_hugepages"))
}

/// Sets the pool so that exactly `free` pages are available; the old
/// `nr_hugepages` comes back on drop.
struct Pool {
    old: u64,
}

impl Pool {
    fn with_available(free: u64) -> Pool {
        let old = pool_read("nr_hugepages");
        let pool = Pool { old };
        let want = (old + free).saturating_sub(available());
        std::fs::write(pool_file("nr_hugepages"), want.to_string())
            .unwrap_or_else(|e| panic!("writing nr_hugepages = {want}: {e}"));
        // The kernel may need a moment (compaction) and may give fewer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while available() != free && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            available(),
            free,
            "could not make {free} huge pages available (nr_hugepages {want}, free {}, reserved {})",
            pool_read("free_hugepages"),
            pool_read("resv_hugepages")
        );
        pool
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(pool_file("nr_hugepages"), self.old.to_string()) {
            eprintln!("restoring nr_hugepages = {}: {e}", self.old);
        }
    }
}

/// One mapping of `/proc/PID/smaps`: its header line and its `Key: N kB`
/// fields.
struct Mapping {
    header: String,
    fields: Vec<(String, u64)>,
}

impl Mapping {
    fn get(&self, k: &str) -> u64 {
        self.fields
            .iter()
            .find(|(n, _)| n == k)
            .map_or(0, |(_, v)| *v)
    }
}

/// The mappings of process `pid` whose path contains `name`.
fn mappings(pid: u32, name: &str) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/smaps: {e}"));
    let mut out: Vec<Mapping> = Vec::new();
    let mut cur: Option<Mapping> = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_header =
            first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if is_header {
            out.extend(cur.take().filter(|m| m.header.contains(name)));
            cur = Some(Mapping {
                header: line.to_string(),
                fields: Vec::new(),
            });
        } else if let Some(m) = cur.as_mut() {
            if let Some((k, v)) = line.split_once(':') {
                if let Some(n) = v.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    m.fields.push((k.trim().to_string(), n));
                }
            }
        }
    }
    out.extend(cur.filter(|m| m.header.contains(name)));
    out
}

/// App `id`'s region as process `pid` maps it (`memfd:tas-app-ID`, of
/// `REGION_MIB`): its mappings (THP advice may split a 4 KiB-page one in
/// three) summed, all of one page size.
fn region_of(pid: u32, id: u32, who: &str) -> Mapping {
    let maps = mappings(pid, &format!("/memfd:tas-app-{id} "));
    let headers: Vec<&String> = maps.iter().map(|m| &m.header).collect();
    assert!(!maps.is_empty(), "{who}: no mapping of app {id}'s region");
    let page = maps[0].get("KernelPageSize");
    assert!(
        maps.iter().all(|m| m.get("KernelPageSize") == page),
        "{who}: mixed page sizes: {headers:?}"
    );
    let sum = |k: &str| maps.iter().map(|m| m.get(k)).sum::<u64>();
    let m = Mapping {
        header: format!("{headers:?}"),
        fields: ["Size", "Shared_Hugetlb", "Private_Hugetlb"]
            .iter()
            .map(|k| (k.to_string(), sum(k)))
            .chain([("KernelPageSize".to_string(), page)])
            .collect(),
    };
    assert_eq!(m.get("Size"), REGION_MIB * 1024, "{who}: {}", m.header);
    m
}

/// Data both ways through a TAS app (`peer --tas echo-server` on `port`,
/// already listening): echoed messages and a verified 4 MB stream.
fn traffic(tb: &mut Testbed, port: u16) {
    let o = tb.run_lnx(
        &bin("peer"),
        &[
            "echo-client",
            TAS_IP,
            &port.to_string(),
            "2000",
            "1000",
            "4",
        ],
        Duration::from_secs(60),
    );
    assert_ok(&o, "echo-client against the TAS echo server");
    tb.spawn_tas(
        &bin("peer"),
        &[
            "--tas",
            "serve-send",
            &(port + 1).to_string(),
            "4000000",
            "7",
        ],
        Some("listening"),
    );
    let o = tb.run_lnx(
        &bin("peer"),
        &[
            "connect-recv",
            TAS_IP,
            &(port + 1).to_string(),
            "4000000",
            "7",
        ],
        Duration::from_secs(60),
    );
    assert_ok(&o, "connect-recv from the TAS sender");
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FALLBACK_LOG: &str = "app region not on hugetlbfs pages";

#[test]
fn app_region_on_reserved_huge_pages() {
    require_root();
    let _turn = POOL.lock().unwrap_or_else(|e| e.into_inner());
    // Two apps' regions and two pages to spare.
    let spare = REGION_PAGES + 2;
    let _pool = Pool::with_available(REGION_PAGES + spare);
    let mib = REGION_MIB.to_string();
    let mut tb = Testbed::with_args("hugetlb", Backend::from_env(), &["--app-mem-mib", &mib]);
    assert_eq!(
        available(),
        REGION_PAGES + spare,
        "tasd took huge pages before any app"
    );
    let free_before = pool_read("free_hugepages");
    // App 0.
    let app = tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", "5000"],
        Some("listening"),
    );
    // The whole region is reserved at once: nothing can fault later.
    assert_eq!(
        available(),
        spare,
        "an attached app's region should hold all its {REGION_PAGES} huge pages"
    );
    // And app 1 (the sender) for a while.
    traffic(&mut tb, 5000);
    // Pages touched (the header, the rings) came from the pool.
    let free_after = pool_read("free_hugepages");
    assert!(
        free_after < free_before,
        "HugePages_Free did not drop ({free_before} -> {free_after})"
    );
    let tasd = tb.tasd_pid().expect("tasd pid");
    for (pid, who) in [(tasd, "tasd"), (app, "the app")] {
        let m = region_of(pid, 0, who);
        assert_eq!(m.get("KernelPageSize"), 2048, "{who}: {}", m.header);
        assert!(
            m.get("Shared_Hugetlb") + m.get("Private_Hugetlb") >= 2048,
            "{who}: region not on hugetlb pages: {}",
            m.header
        );
    }
    assert_eq!(
        tb.tasd_counter("huge.hugetlb_regions"),
        2,
        "two apps attached"
    );
    assert_eq!(
        tb.tasd_counter("huge.hugetlb_bytes"),
        (2 * REGION_MIB) << 20
    );
    assert_eq!(tb.tasd_counter("huge.hugetlb_fallbacks"), 0);
    assert!(!tb.tasd_log().contains(FALLBACK_LOG), "{}", tb.tasd_log());
    // The pages go back when the apps are gone.
    tb.kill(app);
    assert!(
        wait_until(Duration::from_secs(10), || available()
            == REGION_PAGES + spare
            && pool_read("free_hugepages") == free_before),
        "huge pages not given back after the apps exited: {} available, {} free",
        available(),
        pool_read("free_hugepages")
    );
    assert!(tb.tasd_alive());
}

#[test]
fn app_region_falls_back_to_small_pages_counted() {
    require_root();
    let _turn = POOL.lock().unwrap_or_else(|e| e.into_inner());
    // One page free: fewer than a region needs.
    let _pool = Pool::with_available(1);
    let mib = REGION_MIB.to_string();
    let mut tb = Testbed::with_args("hugefb", Backend::from_env(), &["--app-mem-mib", &mib]);
    let app = tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", "5000"],
        Some("listening"),
    );
    traffic(&mut tb, 5000);
    assert_eq!(available(), 1, "a fallback region must not hold huge pages");
    let tasd = tb.tasd_pid().expect("tasd pid");
    for (pid, who) in [(tasd, "tasd"), (app, "the app")] {
        let m = region_of(pid, 0, who);
        assert_eq!(m.get("KernelPageSize"), 4, "{who}: {}", m.header);
        assert_eq!(m.get("Shared_Hugetlb") + m.get("Private_Hugetlb"), 0);
    }
    assert_eq!(tb.tasd_counter("huge.hugetlb_regions"), 0);
    assert_eq!(
        tb.tasd_counter("huge.hugetlb_fallbacks"),
        2,
        "two apps attached"
    );
    let log = tb.tasd_log();
    assert_eq!(
        log.matches(FALLBACK_LOG).count(),
        1,
        "the fallback is logged once:\n{log}"
    );
    assert!(log.contains("1 free 2 MiB huge pages, 8 needed"), "{log}");
    drop(tb);

    // `--huge-pages off` leaves free pages alone and counts nothing.
    let _pool2 = Pool::with_available(REGION_PAGES + 2);
    let mut tb = Testbed::with_args(
        "hugeoff",
        Backend::from_env(),
        &["--app-mem-mib", &mib, "--huge-pages", "off"],
    );
    let app = tb.spawn_tas(
        &bin("peer"),
        &["--tas", "echo-server", "5000"],
        Some("listening"),
    );
    traffic(&mut tb, 5000);
    assert_eq!(available(), REGION_PAGES + 2);
    let m = region_of(app, 0, "the app");
    assert_eq!(m.get("KernelPageSize"), 4, "{}", m.header);
    assert_eq!(tb.tasd_counter("huge.hugetlb_regions"), 0);
    assert_eq!(tb.tasd_counter("huge.hugetlb_fallbacks"), 0);
    assert!(!tb.tasd_log().contains(FALLBACK_LOG));
}
