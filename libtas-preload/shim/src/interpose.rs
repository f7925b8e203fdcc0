//! How the exported C functions are made: the `interpose!` macro. Every
//! `#[no_mangle]` function of the library is an item of one of its
//! invocations in `lib.rs`, so the export attributes, the `# Safety`
//! contract and the common "a TAS socket, or libc's function" shape are
//! written once, here.

/// Defines the exported C functions: `#[no_mangle] pub unsafe extern "C"`,
/// each documented with the same `# Safety` contract (libc's, for the
/// function of the same name). A list of items, each one of:
///
/// * `tas fn NAME(fd: c_int, ARG: TYPE, ...) -> RET => |c, s| EXPR;` — the
///   common case. When `fd` is a TAS socket (and the calling thread is not
///   already inside the shim), the result is `EXPR`, with `c` and `s` bound
///   to the socket's context and id; for every other fd, libc's `NAME` is
///   called with the same arguments.
/// * `tas_or_libc fn ...` — the same, but `EXPR` is an `Option<RET>`:
///   `None` (the socket has just become a kernel socket) hands the call to
///   libc's `NAME` after all.
/// * `fn NAME(ARG: TYPE, ...) -> RET { BODY }` — a function with its own
///   body (calls that are not "one fd, ours or libc's").
///
/// Bodies and `EXPR`s are in an `unsafe fn`: their unsafe operations need
/// their own `unsafe {}` blocks (`unsafe_op_in_unsafe_fn`), justified by
/// the function's contract.
macro_rules! interpose {
    () => {};
    (@export
        $(#[$m:meta])*
        fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? $body:block
    ) => {
        $(#[$m])*
        ///
        /// # Safety
        ///
        #[doc = concat!(
            "The contract of libc's `", stringify!($name), "`: every pointer ",
            "argument is null (where that call allows or reports it) or valid ",
            "for the reads and writes the call makes, for the lengths and ",
            "counts given."
        )]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) $(-> $r)? $body
    };
    (
        $(#[$m:meta])*
        tas fn $name:ident($fd:ident: c_int $(, $a:ident: $t:ty)* $(,)?) -> $r:ty
            => |$c:pat_param, $s:pat_param| $tas:expr;
        $($rest:tt)*
    ) => {
        interpose! {
            @export
            $(#[$m])*
            fn $name($fd: c_int $(, $a: $t)*) -> $r {
                if !$crate::sys::in_shim() {
                    if let $crate::fdtab::Kind::Sock($c, $s) = $crate::fdtab::kind($fd) {
                        $crate::debug::enter(stringify!($name), $fd);
                        return $tas;
                    }
                }
                // SAFETY: libc's own function of this name with the caller's
                // arguments, unchanged: the caller meets its contract (the
                // # Safety of this function).
                unsafe { $crate::sys::real::$name::get()($fd $(, $a)*) }
            }
        }
        interpose!($($rest)*);
    };
    (
        $(#[$m:meta])*
        tas_or_libc fn $name:ident($fd:ident: c_int $(, $a:ident: $t:ty)* $(,)?) -> $r:ty
            => |$c:pat_param, $s:pat_param| $tas:expr;
        $($rest:tt)*
    ) => {
        interpose! {
            @export
            $(#[$m])*
            fn $name($fd: c_int $(, $a: $t)*) -> $r {
                if !$crate::sys::in_shim() {
                    if let $crate::fdtab::Kind::Sock($c, $s) = $crate::fdtab::kind($fd) {
                        $crate::debug::enter(stringify!($name), $fd);
                        if let Some(r) = $tas {
                            return r;
                        }
                    }
                }
                // SAFETY: libc's own function of this name with the caller's
                // arguments, unchanged: the caller meets its contract (the
                // # Safety of this function).
                unsafe { $crate::sys::real::$name::get()($fd $(, $a)*) }
            }
        }
        interpose!($($rest)*);
    };
    (
        $(#[$m:meta])*
        fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block
        $($rest:tt)*
    ) => {
        interpose! {
            @export
            $(#[$m])*
            fn $name($($a: $t),*) $(-> $r)? $body
        }
        interpose!($($rest)*);
    };
}
