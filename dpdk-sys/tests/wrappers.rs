//! Tests of the C shim's wrappers of DPDK's static-inline functions, against
//! the system DPDK. The EAL runs once per test binary, without huge pages or
//! PCI, with two virtual ports: `net_ring0` (what is transmitted comes back
//! on receive) and `net_null0` (receive makes up 64-byte packets, transmit
//! drops them).

#![cfg(feature = "system")]

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tas_dpdk_sys::*;

struct Fixture {
    ring_port: u16,
    null_port: u16,
}

// The pool pointer is only used through thread-safe DPDK calls.
struct Pool(*mut rte_mempool);
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

static FIXTURE: OnceLock<(Fixture, Pool)> = OnceLock::new();
/// The ring port's loopback is shared: one test at a time uses it.
static RING: Mutex<()> = Mutex::new(());
static POOL_SEQ: AtomicUsize = AtomicUsize::new(0);

fn strerror(e: i32) -> String {
    // SAFETY: rte_strerror returns a static or thread-local C string.
    unsafe { CStr::from_ptr(rte_strerror(e)) }
        .to_string_lossy()
        .into_owned()
}

/// A fresh pool of `n` mbufs with the default data room.
fn new_pool(n: u32) -> *mut rte_mempool {
    let name = CString::new(format!("tst{}", POOL_SEQ.fetch_add(1, Ordering::Relaxed))).unwrap();
    // SAFETY: valid C string; the EAL is initialised (callers ran fixture()).
    let mp = unsafe {
        rte_pktmbuf_pool_create(
            name.as_ptr(),
            n,
            0,
            0,
            RTE_MBUF_DEFAULT_BUF_SIZE,
            SOCKET_ID_ANY,
        )
    };
    assert!(
        !mp.is_null(),
        "rte_pktmbuf_pool_create: {}",
        strerror(unsafe { tas_rte_errno() })
    );
    mp
}

fn start_port(name: &str, pool: *mut rte_mempool) -> u16 {
    let cname = CString::new(name).unwrap();
    let mut port = 0u16;
    // SAFETY: valid pointers; EAL initialised.
    unsafe {
        assert_eq!(
            rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port),
            0,
            "{name}"
        );
        let conf: rte_eth_conf = std::mem::zeroed();
        assert_eq!(rte_eth_dev_configure(port, 1, 1, &conf), 0);
        assert_eq!(
            rte_eth_rx_queue_setup(port, 0, 256, SOCKET_ID_ANY as u32, std::ptr::null(), pool),
            0
        );
        assert_eq!(
            rte_eth_tx_queue_setup(port, 0, 256, SOCKET_ID_ANY as u32, std::ptr::null()),
            0
        );
        assert_eq!(rte_eth_dev_start(port), 0);
    }
    port
}

fn fixture() -> &'static (Fixture, Pool) {
    FIXTURE.get_or_init(|| {
        // rte_eal_init makes the calling thread the main lcore and pins it:
        // do it on a thread of its own.
        std::thread::spawn(|| {
            let args = [
                "tas-dpdk-sys-test",
                "--no-huge",
                "--no-pci",
                "--no-shconf",
                "--no-telemetry",
                "-m",
                "256",
                "-l",
                "0",
                "--log-level=warning",
                "--vdev=net_ring0",
                "--vdev=net_null0",
            ];
            // The EAL may keep pointers into argv: leak it.
            let argv: Vec<*mut c_char> = args
                .iter()
                .map(|a| CString::new(*a).unwrap().into_raw())
                .collect();
            let argv = argv.leak();
            // SAFETY: argc/argv describe valid, leaked C strings; first and
            // only call in this process.
            let rc = unsafe { rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
            assert!(
                rc >= 0,
                "rte_eal_init: {}",
                strerror(unsafe { tas_rte_errno() })
            );
        })
        .join()
        .expect("EAL init failed");
        let pool = new_pool(1023);
        let ring_port = start_port("net_ring0", pool);
        let null_port = start_port("net_null0", pool);
        (
            Fixture {
                ring_port,
                null_port,
            },
            Pool(pool),
        )
    })
}

fn in_use(mp: *mut rte_mempool) -> u32 {
    // SAFETY: valid pool.
    unsafe { rte_mempool_in_use_count(mp) }
}

#[test]
fn pktmbuf_alloc_gives_a_reset_mbuf_and_free_returns_it() {
    fixture();
    let mp = new_pool(63);
    unsafe {
        let m = tas_rte_pktmbuf_alloc(mp);
        assert!(!m.is_null());
        assert_eq!(in_use(mp), 1);
        assert_eq!(tas_rte_pktmbuf_data_len(m), 0);
        assert_eq!(tas_rte_pktmbuf_pkt_len(m), 0);
        assert_eq!(tas_rte_pktmbuf_nb_segs(m), 1);
        assert_eq!(tas_rte_pktmbuf_headroom(m) as u32, RTE_PKTMBUF_HEADROOM);
        assert_eq!(tas_rte_pktmbuf_tailroom(m), RTE_MBUF_DEFAULT_DATAROOM);
        tas_rte_pktmbuf_free(m);
        assert_eq!(in_use(mp), 0);
        // Exhaust the pool: the 64th allocation fails.
        let all: Vec<_> = (0..63).map(|_| tas_rte_pktmbuf_alloc(mp)).collect();
        assert!(all.iter().all(|m| !m.is_null()));
        assert!(tas_rte_pktmbuf_alloc(mp).is_null());
        for m in all {
            tas_rte_pktmbuf_free(m);
        }
        assert_eq!(in_use(mp), 0);
        // Freeing NULL is allowed, as in DPDK.
        tas_rte_pktmbuf_free(std::ptr::null_mut());
        rte_mempool_free(mp);
    }
}

#[test]
fn pktmbuf_alloc_bulk_is_all_or_nothing() {
    fixture();
    let mp = new_pool(31);
    unsafe {
        let mut ms = [std::ptr::null_mut(); 32];
        assert!(tas_rte_pktmbuf_alloc_bulk(mp, ms.as_mut_ptr(), 32) < 0);
        assert_eq!(in_use(mp), 0);
        assert_eq!(tas_rte_pktmbuf_alloc_bulk(mp, ms.as_mut_ptr(), 31), 0);
        assert_eq!(in_use(mp), 31);
        let mut seen: Vec<usize> = ms[..31].iter().map(|m| *m as usize).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 31, "the same mbuf was handed out twice");
        for &m in &ms[..31] {
            assert_eq!(tas_rte_pktmbuf_data_len(m), 0);
            assert_eq!(tas_rte_pktmbuf_pkt_len(m), 0);
            assert_eq!(tas_rte_pktmbuf_headroom(m) as u32, RTE_PKTMBUF_HEADROOM);
        }
        rte_pktmbuf_free_bulk(ms.as_mut_ptr(), 31);
        assert_eq!(in_use(mp), 0);
        rte_mempool_free(mp);
    }
}

#[test]
fn append_mtod_lengths_and_read() {
    let pool = fixture().1 .0;
    unsafe {
        let m = tas_rte_pktmbuf_alloc(pool);
        assert!(!m.is_null());
        let start = tas_rte_pktmbuf_mtod(m) as *mut u8;
        let p = tas_rte_pktmbuf_append(m, 100) as *mut u8;
        assert_eq!(p, start, "first append starts at the data pointer");
        assert_eq!(tas_rte_pktmbuf_data_len(m), 100);
        assert_eq!(tas_rte_pktmbuf_pkt_len(m), 100);
        for i in 0..100 {
            *p.add(i) = i as u8;
        }
        let q = tas_rte_pktmbuf_append(m, 50) as *mut u8;
        assert_eq!(q, start.add(100), "append continues at the tail");
        std::ptr::write_bytes(q, 0xab, 50);
        assert_eq!(tas_rte_pktmbuf_data_len(m), 150);
        assert_eq!(tas_rte_pktmbuf_pkt_len(m), 150);
        assert_eq!(tas_rte_pktmbuf_tailroom(m), RTE_MBUF_DEFAULT_DATAROOM - 150);
        // More than the tailroom: NULL, lengths unchanged.
        assert!(tas_rte_pktmbuf_append(m, RTE_MBUF_DEFAULT_DATAROOM).is_null());
        assert_eq!(tas_rte_pktmbuf_pkt_len(m), 150);

        let mut buf = [0u8; 20];
        let r = tas_rte_pktmbuf_read(m, 90, 20, buf.as_mut_ptr().cast()) as *const u8;
        assert!(!r.is_null());
        let got = std::slice::from_raw_parts(r, 20);
        let want: Vec<u8> = (90..100).chain([0xab; 10]).collect();
        assert_eq!(got, &want[..]);
        // Past the end of the packet: NULL.
        assert!(tas_rte_pktmbuf_read(m, 140, 20, buf.as_mut_ptr().cast()).is_null());
        tas_rte_pktmbuf_free(m);
    }
}

#[test]
fn tx_burst_and_rx_burst_through_ring_loopback() {
    let (fx, pool) = fixture();
    let pool = pool.0;
    let _g = RING.lock().unwrap();
    let port = fx.ring_port;
    unsafe {
        let mut ms = [std::ptr::null_mut(); 32];
        assert_eq!(tas_rte_pktmbuf_alloc_bulk(pool, ms.as_mut_ptr(), 32), 0);
        for (i, &m) in ms.iter().enumerate() {
            let len = 60 + i * 40;
            let p = tas_rte_pktmbuf_append(m, len as u16) as *mut u8;
            assert!(!p.is_null());
            for j in 0..len {
                *p.add(j) = (i * 7 + j) as u8;
            }
        }
        assert_eq!(tas_rte_eth_tx_burst(port, 0, ms.as_mut_ptr(), 32), 32);
        let mut rx = [std::ptr::null_mut(); 64];
        let n = tas_rte_eth_rx_burst(port, 0, rx.as_mut_ptr(), 64);
        assert_eq!(n, 32);
        for (i, &m) in rx[..32].iter().enumerate() {
            let len = 60 + i * 40;
            assert_eq!(tas_rte_pktmbuf_pkt_len(m) as usize, len, "frame {i}");
            assert_eq!(tas_rte_pktmbuf_data_len(m) as usize, len);
            let d = std::slice::from_raw_parts(tas_rte_pktmbuf_mtod(m) as *const u8, len);
            assert!(
                d.iter().enumerate().all(|(j, &b)| b == (i * 7 + j) as u8),
                "frame {i} changed"
            );
        }
        rte_pktmbuf_free_bulk(rx.as_mut_ptr(), 32);
        // Nothing more waiting.
        assert_eq!(tas_rte_eth_rx_burst(port, 0, rx.as_mut_ptr(), 64), 0);
    }
}

#[test]
fn rx_burst_and_tx_burst_on_null_port() {
    let (fx, pool) = fixture();
    let pool = pool.0;
    unsafe {
        let mut rx = [std::ptr::null_mut(); 16];
        let n = tas_rte_eth_rx_burst(fx.null_port, 0, rx.as_mut_ptr(), 16);
        assert_eq!(n, 16, "net_null makes up a full burst");
        for &m in &rx[..16] {
            assert_eq!(tas_rte_pktmbuf_pkt_len(m), 64);
        }
        // The null port takes (and frees) everything it is given.
        assert_eq!(
            tas_rte_eth_tx_burst(fx.null_port, 0, rx.as_mut_ptr(), 16),
            16
        );
        let m = tas_rte_pktmbuf_alloc(pool);
        let mut one = [m];
        assert_eq!(
            tas_rte_eth_tx_burst(fx.null_port, 0, one.as_mut_ptr(), 1),
            1
        );
    }
}

#[test]
fn rte_errno_is_per_thread_and_set_by_failures() {
    fixture();
    unsafe {
        tas_rte_errno_set(0);
        assert_eq!(tas_rte_errno(), 0);
        // A pool name that exists already: EEXIST.
        let name = CString::new("tas-dup").unwrap();
        let a = rte_pktmbuf_pool_create(name.as_ptr(), 15, 0, 0, 2176, SOCKET_ID_ANY);
        assert!(!a.is_null());
        let b = rte_pktmbuf_pool_create(name.as_ptr(), 15, 0, 0, 2176, SOCKET_ID_ANY);
        assert!(b.is_null());
        assert_eq!(tas_rte_errno(), libc_eexist());
        std::thread::spawn(|| assert_eq!(tas_rte_errno(), 0))
            .join()
            .unwrap();
        tas_rte_errno_set(1234);
        assert_eq!(tas_rte_errno(), 1234);
        rte_mempool_free(a);
    }
}

/// EEXIST on Linux.
fn libc_eexist() -> i32 {
    17
}

#[test]
fn lcore_id_of_registered_and_unregistered_threads() {
    fixture();
    std::thread::spawn(|| unsafe {
        assert_eq!(
            tas_rte_lcore_id(),
            LCORE_ID_ANY,
            "a plain thread has no lcore"
        );
        assert_eq!(rte_thread_register(), 0, "{}", strerror(tas_rte_errno()));
        let id = tas_rte_lcore_id();
        assert!(id < RTE_MAX_LCORE, "registered thread got lcore {id}");
        rte_thread_unregister();
        assert_eq!(tas_rte_lcore_id(), LCORE_ID_ANY);
    })
    .join()
    .unwrap();
}
