//! posix_spawn(): TAS sockets the spawned program inherits keep working in
//! it.
//!
//! glibc's `posix_spawn` runs its child with `clone(CLONE_VM|CLONE_VFORK)`
//! and calls its internal `dup2`, `close`, `open` and `execve` there: no
//! interposed function runs in the child. The interposed `posix_spawn`
//! and `posix_spawnp` therefore do in the parent what exec does
//! (`exec.rs`): if the program to be spawned is under the shim too
//! ([`child_under_shim`]: `LD_PRELOAD` of the `envp` it gets names this
//! library, or `/etc/ld.so.preload` does), they ask tasd for a grant
//! before the real call (`SHARE`), describe each TAS socket the child
//! inherits in `TAS_INHERIT` in a copy of `envp` (the caller's array is
//! never changed), and name the child once the real call returns its pid
//! (`SHARE_PID`; a failed spawn cancels the grant). The new image's shim
//! adopts the sockets as after an exec.
//!
//! Which fd numbers a socket has in the child depends on the file actions
//! (`adddup2(conn, 0)` for an inetd-style child, `addclose`, `addopen`
//! over a number, `addclosefrom_np`) and on `FD_CLOEXEC`. Their
//! `posix_spawn_file_actions_t` is glibc's opaque structure; it is not
//! read. Instead `posix_spawn_file_actions_init`, `_destroy` and the
//! `_add*` calls that change descriptors are interposed (calling libc's)
//! and each object's list of actions is recorded here, keyed by its
//! address ([`FA`]: at most [`MAX_OBJS`] objects, the oldest forgotten
//! first, at most [`MAX_ACTIONS`] actions each), and [`child_fds`] plays
//! the list over the parent's numbers at spawn time. An object whose list
//! is not known (initialised before the shim loaded, copied, or one with
//! more actions than recorded) is taken as no actions: each socket is
//! described under its own numbers without `FD_CLOEXEC`, and a socket
//! the unseen actions moved elsewhere reads as a hung-up Unix socket in
//! the child (with a `TAS_PRELOAD_DEBUG` line).

use crate::exec;
use crate::global::try_global;
use crate::sys::{self, in_shim, log, r_fcntl, Lock};
use libc::{c_char, c_int, pid_t};
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// One file action of a `posix_spawn_file_actions_t`, as far as fd
/// numbers are concerned (`addchdir_np` and the like change none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Close(c_int),
    /// `adddup2(fd, newfd)`.
    Dup2(c_int, c_int),
    /// `addopen(fd, ...)`: a file that is not a TAS socket under `fd`.
    Open(c_int),
    /// `addclosefrom_np(from)`.
    CloseFrom(c_int),
}

/// At most this many file-action objects are followed at a time.
pub const MAX_OBJS: usize = 64;
/// At most this many actions are recorded per object (more: its list is
/// not known).
pub const MAX_ACTIONS: usize = 1024;

pub struct Rec {
    key: usize,
    seq: u64,
    actions: Vec<Action>,
    /// More actions than recorded: the list is not known.
    overflow: bool,
}

/// The recorded file-action objects. Taken across `fork` by the atfork
/// handlers like the shim's other locks (`fork.rs`); nothing else is
/// locked while it is held.
pub(crate) static FA: Lock<Vec<Rec>> = Lock::new(Vec::new());
static SEQ: AtomicU64 = AtomicU64::new(0);

/// `posix_spawn_file_actions_init` of the object at `key` succeeded.
pub fn fa_init(key: usize) {
    let _e = sys::Enter::new();
    let mut t = FA.lock();
    t.retain(|r| r.key != key);
    if t.len() >= MAX_OBJS {
        // An object never destroyed (or one on a stack that is gone).
        if let Some(i) = (0..t.len()).min_by_key(|&i| t[i].seq) {
            t.swap_remove(i);
        }
    }
    t.push(Rec {
        key,
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        actions: Vec::new(),
        overflow: false,
    });
}

/// `posix_spawn_file_actions_destroy` of the object at `key`.
pub fn fa_destroy(key: usize) {
    let _e = sys::Enter::new();
    FA.lock().retain(|r| r.key != key);
}

/// An action was added (libc accepted it) to the object at `key`.
pub fn fa_add(key: usize, a: Action) {
    let _e = sys::Enter::new();
    let mut t = FA.lock();
    if let Some(r) = t.iter_mut().find(|r| r.key == key) {
        if r.actions.len() >= MAX_ACTIONS {
            r.overflow = true;
        } else {
            r.actions.push(a);
        }
    }
}

/// The actions of the object at `key`, if known.
fn actions(key: usize) -> Option<Vec<Action>> {
    FA.lock()
        .iter()
        .find(|r| r.key == key && !r.overflow)
        .map(|r| r.actions.clone())
}

/// The fd numbers that, in the child, refer to the files of parent fd
/// numbers `fds`, once `actions` ran in order and exec closed what is
/// close-on-exec (`cloexec(fd)`: the parent's flag of `fd`). As glibc's
/// child does: `dup2` onto another number clears `FD_CLOEXEC` there, and
/// `dup2` of a number onto itself clears it on that number (glibc 2.29,
/// POSIX.1-2024); `open` puts another file under its number; `closefrom`
/// closes every number from its argument up.
pub fn child_fds(actions: &[Action], fds: &[c_int], cloexec: impl Fn(c_int) -> bool) -> Vec<c_int> {
    // Child number -> the parent number whose file it holds (None: no
    // file, or one that is not among the parent's numbers), for numbers
    // the actions changed; any other number holds the parent's file of the
    // same number with its flag, unless at or above `floor`.
    let mut over: HashMap<c_int, Option<c_int>> = HashMap::new();
    let mut floor: Option<c_int> = None;
    let floored = |floor: Option<c_int>, fd: c_int| floor.is_some_and(|f| fd >= f);
    for a in actions {
        match *a {
            Action::Close(fd) | Action::Open(fd) => {
                over.insert(fd, None);
            }
            Action::Dup2(src, dst) => {
                let file = match over.get(&src) {
                    Some(v) => *v,
                    None if floored(floor, src) => None,
                    None => Some(src),
                };
                over.insert(dst, file);
            }
            Action::CloseFrom(from) => {
                over.retain(|&k, _| k < from);
                floor = Some(floor.map_or(from, |f| f.min(from)));
            }
        }
    }
    let mut out: Vec<c_int> = over
        .iter()
        .filter(|(_, v)| v.is_some_and(|p| fds.contains(&p)))
        .map(|(&k, _)| k)
        .collect();
    // Numbers the actions did not touch keep the parent's file and flag.
    out.extend(
        fds.iter()
            .copied()
            .filter(|&f| !over.contains_key(&f) && !floored(floor, f) && !cloexec(f)),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// The file name of this library (what `LD_PRELOAD` names), if known.
fn shim_name() -> Option<&'static [u8]> {
    static NAME: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    NAME.get_or_init(|| {
        // SAFETY: a zeroed Dl_info (pointers and integers) is a valid
        // value for dladdr to fill.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr reads the address of a function of this library
        // and writes into the live local `info`.
        let ok = unsafe { libc::dladdr(shim_name as *const libc::c_void, &mut info) } != 0;
        if !ok || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: dladdr gave a C string that lives as long as the
        // library is loaded (for good: LD_PRELOAD).
        let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
        Some(base(path).to_vec())
    })
    .as_deref()
}

fn base(p: &[u8]) -> &[u8] {
    p.rsplit(|&c| c == b'/').next().unwrap_or(p)
}

/// Whether a preload list (`LD_PRELOAD`'s value, or `/etc/ld.so.preload`:
/// names separated by `:`, spaces or newlines) names the library `name`.
fn names(list: &[u8], name: &[u8]) -> bool {
    list.split(|&c| c == b':' || c == b' ' || c == b'\n' || c == b'\t')
        .any(|e| !e.is_empty() && base(e) == name)
}

/// Whether a program started with environment `envp` loads this library:
/// its `LD_PRELOAD` or `/etc/ld.so.preload` names it (by file name). When
/// this library's own name is unknown, assumed so.
///
/// # Safety
///
/// `envp` is a NULL-terminated array of C strings.
pub unsafe fn child_under_shim(envp: *const *const c_char) -> bool {
    let Some(name) = shim_name() else {
        return true;
    };
    let mut i = 0;
    loop {
        // SAFETY: within the NULL-terminated array (contract).
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: a C string of the array (contract).
        let v = unsafe { CStr::from_ptr(p) }.to_bytes();
        if let Some(list) = v.strip_prefix(b"LD_PRELOAD=") {
            if names(list, name) {
                return true;
            }
        }
        i += 1;
    }
    // The shim's own file calls: libc's, straight.
    let _e = sys::Enter::new();
    std::fs::read("/etc/ld.so.preload").is_ok_and(|l| names(&l, name))
}

fn cloexec(fd: c_int) -> bool {
    r_fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC != 0)
}

/// The interposed `posix_spawn`/`posix_spawnp`: `real(pid, envp)` is
/// libc's with the caller's other arguments. See the module documentation.
///
/// # Safety
///
/// `pid` is null or valid for a write; `fa` is null or an initialised
/// file-actions object; `envp` is null or a NULL-terminated array of C
/// strings; `real` calls libc's function under its contract.
pub unsafe fn spawn(
    pid: *mut pid_t,
    fa: *const libc::posix_spawn_file_actions_t,
    envp: *const *mut c_char,
    real: impl FnOnce(*mut pid_t, *const *mut c_char) -> c_int,
) -> c_int {
    let envc = envp as *const *const c_char;
    // A NULL envp is an empty environment for glibc's (and Linux's)
    // execve: no LD_PRELOAD, nothing to describe.
    // SAFETY: envp is non-null and NULL-terminated (contract).
    if in_shim() || envc.is_null() || try_global().is_none() || !unsafe { child_under_shim(envc) } {
        return real(pid, envp);
    }
    let acts = if fa.is_null() {
        Some(Vec::new())
    } else {
        actions(fa as usize)
    };
    let known = acts.is_some();
    let map = |fds: &[c_int]| match &acts {
        Some(a) => child_fds(a, fds, cloexec),
        None => fds.iter().copied().filter(|&f| !cloexec(f)).collect(),
    };
    let Some(p) = exec::prepare_for(&map, true) else {
        return real(pid, envp);
    };
    if !known && try_global().is_some_and(|g| g.cfg.debug) {
        log("posix_spawn: file actions the shim did not see; inherited sockets are described under their own fd numbers");
    }
    // SAFETY: envp as the caller passed it (contract).
    let env = unsafe { exec::with_var(envc, &p.var) };
    let mut child: pid_t = 0;
    let r = real(&mut child, env.as_ptr() as *const *mut c_char);
    let e = sys::errno();
    // glibc writes the pid only on success.
    if r == 0 && !pid.is_null() {
        // SAFETY: pid is non-null and valid for a write (contract).
        unsafe { *pid = child };
    }
    exec::spawned(p, if r == 0 { child } else { 0 });
    sys::set_errno(e);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    #[test]
    fn file_actions_move_close_and_replace_numbers() {
        let none = |_| false;
        // inetd/sshd style: dup2 onto 0 and 1, close the original.
        assert_eq!(
            child_fds(&[Dup2(5, 0), Dup2(5, 1), Close(5)], &[5], none),
            vec![0, 1]
        );
        // Without the close, the original number stays too.
        assert_eq!(child_fds(&[Dup2(5, 0)], &[5], none), vec![0, 5]);
        // Close-on-exec: the original goes, the dup2'ed number stays.
        assert_eq!(child_fds(&[Dup2(5, 0)], &[5], |f| f == 5), vec![0]);
        assert_eq!(child_fds(&[], &[5, 6], |f| f == 5), vec![6]);
        // dup2 onto itself clears FD_CLOEXEC.
        assert_eq!(child_fds(&[Dup2(5, 5)], &[5], |_| true), vec![5]);
        // open over a socket's number replaces it; dup2 of another file
        // over it too.
        assert_eq!(child_fds(&[Open(5)], &[5], none), Vec::<c_int>::new());
        assert_eq!(child_fds(&[Dup2(9, 5)], &[5], none), Vec::<c_int>::new());
        // Order matters: dup2 from a number already closed gives nothing.
        assert_eq!(
            child_fds(&[Close(5), Dup2(5, 0)], &[5], none),
            Vec::<c_int>::new()
        );
        // A chain: 5 -> 7 -> 0.
        assert_eq!(
            child_fds(&[Dup2(5, 7), Close(5), Dup2(7, 0), Close(7)], &[5], none),
            vec![0]
        );
        // closefrom: every number from 3 up, except what is put back later.
        assert_eq!(child_fds(&[CloseFrom(3)], &[5, 1], none), vec![1]);
        assert_eq!(child_fds(&[Dup2(5, 1), CloseFrom(3)], &[5], none), vec![1]);
        assert_eq!(
            child_fds(&[CloseFrom(3), Dup2(1, 8)], &[1], none),
            vec![1, 8]
        );
        assert_eq!(
            child_fds(&[Dup2(5, 8), CloseFrom(3)], &[5], none),
            Vec::<c_int>::new()
        );
        // Another socket's actions do not touch this one.
        assert_eq!(child_fds(&[Dup2(6, 0), Close(6)], &[5], none), vec![5]);
    }

    #[test]
    fn the_file_action_table_is_keyed_bounded_and_forgets_on_destroy() {
        // Keys no real object has (odd addresses), so that tests running
        // alongside cannot collide.
        let k = |i: usize| 0x10_0001 + 2 * i;
        fa_init(k(0));
        fa_add(k(0), Dup2(4, 0));
        fa_add(k(0), Close(4));
        assert_eq!(actions(k(0)), Some(vec![Dup2(4, 0), Close(4)]));
        // Re-initialised: a new, empty list.
        fa_init(k(0));
        assert_eq!(actions(k(0)), Some(vec![]));
        fa_destroy(k(0));
        assert_eq!(actions(k(0)), None);
        // An object never initialised here is unknown.
        fa_add(k(1), Close(3));
        assert_eq!(actions(k(1)), None);
        // Too many actions: unknown.
        fa_init(k(2));
        for _ in 0..=MAX_ACTIONS {
            fa_add(k(2), Close(3));
        }
        assert_eq!(actions(k(2)), None);
        fa_destroy(k(2));
        // Bounded: the oldest object is forgotten first.
        for i in 10..10 + MAX_OBJS + 1 {
            fa_init(k(i));
        }
        assert_eq!(actions(k(10)), None);
        assert_eq!(actions(k(11)), Some(vec![]));
        assert!(FA.lock().len() <= MAX_OBJS);
        for i in 10..10 + MAX_OBJS + 1 {
            fa_destroy(k(i));
        }
    }

    #[test]
    fn preload_lists_name_the_library_by_file_name() {
        let n = b"libtas_preload.so";
        assert!(names(b"/x/target/release/libtas_preload.so", n));
        assert!(names(b"libfoo.so:/a/libtas_preload.so", n));
        assert!(names(b"libfoo.so /a/libtas_preload.so\n", n));
        assert!(!names(b"", n));
        assert!(!names(b"/a/libtas_preload.so.1", n));
        assert!(!names(b"/libtas_preload.so/other.so", n));
    }
}
