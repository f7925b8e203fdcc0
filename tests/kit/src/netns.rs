//! Running code inside a network namespace, and the root check every
//! namespace test starts with.

use std::os::fd::AsRawFd;

/// Fails the test loudly unless it runs as root (namespaces, veth, raw
/// sockets and AF_XDP need it). Never a silent skip.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (network namespaces, veth, raw sockets); run the tests as root"
    );
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`
/// (`/run/netns/NS`), so sockets it opens live there; the calling thread's
/// namespace is untouched.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {path}: {e} (does the namespace exist?)"));
            // SAFETY: setns on a namespace fd we hold open; it changes only
            // this (fresh, scoped) thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
