//! fork(): the `pthread_atfork` handlers. Every lock of the shim is taken
//! before `fork()` and released after it in the parent; in the child (where
//! only the forking thread exists) they are reset and a new generation
//! starts. The parent's contexts are left untouched, so sockets inherited
//! from the parent give clean errors in the child, and the child's own new
//! sockets attach a new context.

use crate::global::try_global;
use std::sync::atomic::Ordering;

extern "C" fn atfork_prepare() {
    let Some(g) = try_global() else { return };
    g.create.raw_lock();
    g.ports.raw_lock();
    g.local_cache.raw_lock();
    for i in 0..g.nctx.load(Ordering::Acquire) {
        if let Some(c) = g.ctx(i) {
            c.inner.raw_lock();
        }
    }
}

extern "C" fn atfork_parent() {
    let Some(g) = try_global() else { return };
    // SAFETY: atfork_prepare took each of these locks without a guard, on
    // this thread (the one that forked); each is released once.
    unsafe {
        for i in (0..g.nctx.load(Ordering::Acquire)).rev() {
            if let Some(c) = g.ctx(i) {
                c.inner.raw_unlock();
            }
        }
        g.local_cache.raw_unlock();
        g.ports.raw_unlock();
        g.create.raw_unlock();
    }
}

extern "C" fn atfork_child() {
    let Some(g) = try_global() else { return };
    // SAFETY: in the child only the forking thread exists, and it took every
    // lock in atfork_prepare.
    unsafe {
        for i in 0..g.nctx.load(Ordering::Acquire) {
            if let Some(c) = g.ctx(i) {
                c.inner.reset();
            }
        }
        g.local_cache.reset();
        g.ports.reset();
        g.create.reset();
    }
    g.gen.fetch_add(1, Ordering::AcqRel);
}

pub fn register_atfork() {
    // SAFETY: the handlers are extern "C" functions of this library, which
    // stays loaded for the life of the process (LD_PRELOAD).
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        )
    };
}
