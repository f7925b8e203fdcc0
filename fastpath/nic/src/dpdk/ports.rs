//! DPDK ports: finding them by name, describing them in errors, the mbuf
//! pools their queues need, and hot-plugging a `net_af_xdp`/`net_af_packet`
//! device over a Linux interface.

use super::*;

/// Is `name` a network interface in the calling thread's namespace?
pub(super) fn is_linux_netdev(name: &str) -> bool {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return false;
    }
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Port id of the ethdev named `name`, if any.
pub(super) fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut port = 0u16;
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut port) };
    (rc == 0).then_some(port)
}

pub(super) fn port_name(port: u16) -> String {
    let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: `buf` holds RTE_ETH_NAME_MAX_LEN bytes, as the API requires.
    if unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) } != 0 {
        return format!("port{port}");
    }
    // SAFETY: the name is NUL-terminated inside `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// All valid ports, by id.
pub(super) fn all_ports() -> Vec<u16> {
    let mut v = Vec::new();
    // SAFETY: plain queries of the ethdev port table.
    let mut p = unsafe { sys::rte_eth_find_next(0) };
    while (p as u32) < sys::RTE_MAX_ETHPORTS {
        v.push(p);
        // SAFETY: as above.
        p = unsafe { sys::rte_eth_find_next(p + 1) };
    }
    v
}

pub(super) fn describe_ports(claimed: &[u16]) -> String {
    let ports: Vec<String> = all_ports()
        .into_iter()
        .map(|p| {
            let used = if claimed.contains(&p) {
                " (in use)"
            } else {
                ""
            };
            format!("{p}: {}{used}", port_name(p))
        })
        .collect();
    if ports.is_empty() {
        "none".into()
    } else {
        ports.join(", ")
    }
}

/// The mbuf pool size for the given rings: every descriptor holding an mbuf,
/// the bursts in flight, the per-lcore caches, and slack; rounded up to
/// 2^k - 1 (the size a mempool uses best).
pub(super) fn pool_size(rx_desc: u16, tx_desc: u16, cache: u32) -> u32 {
    let need = u32::from(rx_desc) * 2
        + u32::from(tx_desc)
        + (RX_BURST + TX_BURST) as u32
        + 4 * cache
        + 512;
    (need + 1).next_power_of_two() - 1
}

pub(super) const POOL_CACHE: u32 = 256;

/// Bytes one mbuf may take in the pool: a 4 KiB page each in a pool made by
/// `rte_pktmbuf_pool_create` without huge pages (packed pools take 2368).
pub(super) const MBUF_FOOTPRINT: usize = 4096;

/// Creates a pool of `n` mbufs with the default data room
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`).
///
/// `packed`: for net_af_xdp. That driver registers the pool's memory with
/// the kernel as the XDP socket's UMEM and computes each mbuf's place in it
/// as if all objects were back to back (`populated_size * object size` from
/// the first chunk). `rte_pktmbuf_pool_create` wants objects that do not
/// cross a page where memory is not IOVA-contiguous, which without huge
/// pages (4 KiB pages, `--no-huge`) spaces them one per page; mbufs beyond the
/// UMEM's computed end are then refused by the kernel, and frames sent in
/// them silently vanish (and their mbufs leak) after the first few hundred.
/// So the pool is made by hand with `RTE_MEMPOOL_F_NO_IOVA_CONTIG` (no page
/// constraint: nothing DMAs into it, the kernel copies), and must come in
/// one chunk.
pub(super) fn create_pool(
    name: &str,
    n: u32,
    socket: i32,
    packed: bool,
) -> Result<*mut sys::rte_mempool, String> {
    let cname = CString::new(name).expect("pool name");
    let describe = |e: i32| {
        format!(
            "{}{}",
            strerror(e),
            if e == libc::ENOMEM {
                " (give the EAL more memory: `-m MB`, or use fewer descriptors)"
            } else {
                ""
            }
        )
    };
    if !packed {
        // SAFETY: valid name; the EAL runs.
        let mp = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                POOL_CACHE,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE,
                socket,
            )
        };
        return if mp.is_null() {
            Err(describe(rte_errno()))
        } else {
            Ok(mp)
        };
    }
    // What rte_pktmbuf_pool_create does, with one flag more.
    let elt_size =
        std::mem::size_of::<sys::rte_mbuf>() as u32 + u32::from(sys::RTE_MBUF_DEFAULT_BUF_SIZE);
    // SAFETY: valid name; the EAL runs.
    let mp = unsafe {
        sys::rte_mempool_create_empty(
            cname.as_ptr(),
            n,
            elt_size,
            POOL_CACHE,
            std::mem::size_of::<sys::rte_pktmbuf_pool_private>() as u32,
            socket,
            sys::RTE_MEMPOOL_F_NO_IOVA_CONTIG,
        )
    };
    if mp.is_null() {
        return Err(describe(rte_errno()));
    }
    let fail = |mp: *mut sys::rte_mempool, msg: String| {
        // SAFETY: `mp` was created above and is not used afterwards.
        unsafe { sys::rte_mempool_free(mp) };
        Err(msg)
    };
    // SAFETY: `mp` is a fresh, empty pool; the ops name is DPDK's own string.
    let rc = unsafe {
        sys::rte_mempool_set_ops_byname(mp, sys::rte_mbuf_best_mempool_ops(), std::ptr::null_mut())
    };
    if rc != 0 {
        return fail(mp, format!("rte_mempool_set_ops_byname: {}", strerror(rc)));
    }
    let mut private = sys::rte_pktmbuf_pool_private {
        mbuf_data_room_size: sys::RTE_MBUF_DEFAULT_BUF_SIZE,
        mbuf_priv_size: 0,
        flags: 0,
    };
    // SAFETY: `private` describes this pool's mbufs; pool_init copies it
    // into the pool's private area (sized for it above).
    unsafe {
        sys::rte_pktmbuf_pool_init(
            mp,
            (&mut private as *mut sys::rte_pktmbuf_pool_private).cast(),
        )
    };
    // SAFETY: valid, empty pool.
    let rc = unsafe { sys::rte_mempool_populate_default(mp) };
    if rc < 0 {
        return fail(mp, describe(-rc));
    }
    // SAFETY: the callback does nothing; the count is the return value.
    let chunks = unsafe { sys::rte_mempool_mem_iter(mp, Some(count_chunk), std::ptr::null_mut()) };
    if chunks != 1 {
        return fail(
            mp,
            format!(
                "the pool's memory came in {chunks} pieces, net_af_xdp needs one (give the \
                 EAL more memory: `-m MB`)"
            ),
        );
    }
    // SAFETY: initialises every mbuf of the populated pool, as
    // rte_pktmbuf_pool_create does.
    unsafe { sys::rte_mempool_obj_iter(mp, Some(sys::rte_pktmbuf_init), std::ptr::null_mut()) };
    Ok(mp)
}

/// MTU of the Linux interface `name` in the calling thread's namespace
/// (an ioctl: /sys/class/net shows the namespace sysfs was mounted in).
pub(super) fn linux_mtu(name: &str) -> Option<u32> {
    crate::linux::link_info(name).ok().map(|l| l.mtu as u32)
}

/// Hot-plugs the virtual device that attaches Linux interface `iface`.
/// Returns its port and device name.
pub(super) fn hotplug_vdev(iface: &str, cfg: &DpdkConfig) -> Result<(u16, String), NicError> {
    if iface.contains([',', '=']) {
        return Err(NicError::NoSuchInterface(iface.to_string()));
    }
    let driver = cfg.vdev.driver();
    // The first unused name: drivers are matched by the name's prefix.
    let dev = (0..sys::RTE_MAX_ETHPORTS)
        .map(|i| format!("{driver}{i}"))
        .find(|n| port_by_name(n).is_none())
        .ok_or_else(|| dpdk_err("DPDK: all ethdev ports are in use".into()))?;
    let mut args = format!("iface={iface}");
    if !cfg.vdev_args.is_empty() {
        args.push(',');
        args.push_str(cfg.vdev_args.trim_matches(','));
    }
    let cdev = CString::new(dev.as_str()).expect("vdev name");
    let cargs = CString::new(args.as_str())
        .map_err(|_| dpdk_err(format!("vdev arguments {args:?} contain a NUL byte")))?;
    // SAFETY: valid C strings; the EAL runs; CONTROL is held by the caller.
    let rc = unsafe { sys::rte_eal_hotplug_add(c"vdev".as_ptr(), cdev.as_ptr(), cargs.as_ptr()) };
    if rc != 0 {
        let other = match cfg.vdev {
            LinuxVdev::AfXdp => "the net_af_packet virtual device (LinuxVdev::AfPacket)",
            LinuxVdev::AfPacket => "the net_af_xdp virtual device (LinuxVdev::AfXdp)",
        };
        return Err(dpdk_err(format!(
            "DPDK could not attach interface {iface} as `{dev},{args}`: {} (see the driver's \
             message on stderr; check that {iface} is up, that we run as root, or try {other})",
            strerror(rc)
        )));
    }
    match port_by_name(&dev) {
        Some(p) => Ok((p, dev)),
        None => {
            // SAFETY: as above; undo the hot-plug.
            unsafe { sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), cdev.as_ptr()) };
            Err(dpdk_err(format!(
                "DPDK device {dev} was created but has no ethdev port"
            )))
        }
    }
}
