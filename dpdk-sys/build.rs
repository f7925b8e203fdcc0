//! Build script of tas-dpdk-sys.
//!
//! With the `system` feature: finds the system DPDK with pkg-config
//! (`libdpdk`), compiles the C shim (csrc/shim.c) with DPDK's cflags, runs
//! bindgen over csrc/wrapper.h keeping only the allow-listed items, and links
//! the DPDK libraries pkg-config names. Without the feature it does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "system")]
    system::build();
}

#[cfg(feature = "system")]
mod system {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    /// Functions the bindings keep (everything else in the headers is dropped).
    const FUNCTIONS: &[&str] = &[
        // EAL
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_eal_hotplug_add",
        "rte_eal_hotplug_remove",
        "rte_strerror",
        "rte_socket_id",
        "rte_thread_register",
        "rte_thread_unregister",
        // mempool / mbuf (out-of-line ones)
        "rte_pktmbuf_pool_create",
        "rte_pktmbuf_pool_init",
        "rte_pktmbuf_init",
        "rte_mbuf_best_mempool_ops",
        "rte_mempool_create_empty",
        "rte_mempool_set_ops_byname",
        "rte_mempool_populate_default",
        "rte_mempool_obj_iter",
        "rte_mempool_mem_iter",
        "rte_pktmbuf_free_bulk",
        "rte_mempool_free",
        "rte_mempool_avail_count",
        "rte_mempool_in_use_count",
        // ethdev control path
        "rte_eth_dev_count_avail",
        "rte_eth_find_next",
        "rte_eth_dev_is_valid_port",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_dev_info_get",
        "rte_eth_dev_socket_id",
        "rte_eth_dev_configure",
        "rte_eth_dev_adjust_nb_rx_tx_desc",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_macaddr_get",
        "rte_eth_dev_get_mtu",
        "rte_eth_promiscuous_enable",
        "rte_eth_link_get_nowait",
        "rte_eth_stats_get",
        // our shim (csrc/shim.h)
        "tas_rte_.*",
    ];

    /// Types the bindings keep by name (types reached from the functions
    /// above are kept too).
    const TYPES: &[&str] = &[
        "rte_eth_conf",
        "rte_eth_dev_info",
        "rte_eth_rxconf",
        "rte_eth_txconf",
        "rte_eth_stats",
        "rte_eth_link",
        "rte_ether_addr",
        "rte_pktmbuf_pool_private",
        "rte_eth_rx_mq_mode",
        "rte_eth_tx_mq_mode",
    ];

    /// Constants the bindings keep.
    const VARS: &[&str] = &[
        "RTE_PKTMBUF_HEADROOM",
        "RTE_MEMPOOL_CACHE_MAX_SIZE",
        "RTE_MEMPOOL_F_NO_IOVA_CONTIG",
        "RTE_MAX_ETHPORTS",
        "RTE_MAX_LCORE",
        "RTE_ETH_NAME_MAX_LEN",
        "RTE_DEV_NAME_MAX_LEN",
        "RTE_ETHER_ADDR_LEN",
        "SOCKET_ID_ANY",
        "LCORE_ID_ANY",
        "RTE_ETH_LINK_UP",
        "RTE_ETH_LINK_DOWN",
    ];

    /// Types that stay opaque: Rust only passes pointers to them around, and
    /// reads their fields through the shim's accessors.
    const OPAQUE: &[&str] = &[
        "rte_mbuf",
        "rte_mempool",
        "rte_mempool_memhdr",
        "rte_device",
        "rte_eth_dev",
    ];

    /// Runs `pkg-config ARGS libdpdk`; fails the build with a clear message
    /// when pkg-config or libdpdk is missing.
    fn pkg_config(args: &[&str]) -> String {
        let exe = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
        let out = Command::new(&exe).args(args).arg("libdpdk").output();
        let hint = "tas-dpdk-sys (feature `system`, enabled by `tas-fastpath/dpdk`) needs the \
                    DPDK development files: install them with \
                    `apt-get install -y libdpdk-dev pkg-config clang libclang-dev` (Debian 12 \
                    ships DPDK 22.11), or point PKG_CONFIG_PATH at the directory holding \
                    libdpdk.pc. Build without `--features dpdk` to leave DPDK out.";
        match out {
            Err(e) => panic!("\n\n`{exe}` could not be run ({e}).\n{hint}\n\n"),
            Ok(o) if !o.status.success() => panic!(
                "\n\n`{exe} {} libdpdk` failed: pkg-config cannot find libdpdk.\n\
                 pkg-config said: {}\n{hint}\n\n",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(o) => String::from_utf8(o.stdout)
                .expect("pkg-config printed non-UTF-8")
                .trim()
                .to_string(),
        }
    }

    pub(super) fn build() {
        println!("cargo:rerun-if-changed=csrc/shim.c");
        println!("cargo:rerun-if-changed=csrc/shim.h");
        println!("cargo:rerun-if-changed=csrc/wrapper.h");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_SYSROOT_DIR");

        let version = pkg_config(&["--modversion"]);
        if !version.starts_with("22.") {
            println!(
                "cargo:warning=tas-dpdk-sys is written against DPDK 22.11; found {version}. \
                 The bindings are generated from the installed headers, but the fast path's \
                 use of them is only tested with 22.11."
            );
        }
        println!("cargo:version={version}");
        let cflags: Vec<String> = pkg_config(&["--cflags"])
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let libs: Vec<String> = pkg_config(&["--libs"])
            .split_whitespace()
            .map(str::to_string)
            .collect();

        // The C shim first, so that its static library comes before the DPDK
        // libraries it uses on the link line.
        let mut cc = cc::Build::new();
        cc.file("csrc/shim.c").include("csrc").opt_level(2);
        for f in &cflags {
            cc.flag(f);
        }
        cc.compile("tas_dpdk_shim");

        for l in &libs {
            if let Some(name) = l.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={name}");
            } else if let Some(dir) = l.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            } else if l == "-Wl,--as-needed" || l == "-Wl,--no-as-needed" {
                // rustc already links with --as-needed.
            } else {
                println!("cargo:rustc-link-arg={l}");
            }
        }

        let mut b = bindgen::Builder::default()
            .header("csrc/wrapper.h")
            .clang_arg("-Icsrc")
            .clang_args(&cflags)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .use_core()
            .layout_tests(true)
            .derive_default(true)
            .derive_debug(false)
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .generate_comments(false);
        for f in FUNCTIONS {
            b = b.allowlist_function(f);
        }
        for t in TYPES {
            b = b.allowlist_type(t);
        }
        for v in VARS {
            b = b.allowlist_var(v);
        }
        for o in OPAQUE {
            b = b.opaque_type(o);
            // Their inner (anonymous) types are not needed either.
            b = b.blocklist_type(format!("{o}__bindgen_.+"));
        }
        let bindings = b.generate().unwrap_or_else(|e| {
            panic!(
                "\n\nbindgen failed on the DPDK {version} headers: {e}\n\
                 bindgen needs libclang: `apt-get install -y clang libclang-dev`.\n\n"
            )
        });
        let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
        bindings
            .write_to_file(&out)
            .expect("writing bindings.rs failed");
    }
}
