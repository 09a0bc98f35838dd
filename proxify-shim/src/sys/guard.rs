//! Fail closed on panics.
//!
//! redhook's `hook!` calls the real function when a hook panics: a silent direct connection.
//! Our hooks are plain `extern "C"` functions whose bodies run inside [`guarded`]: a panic is
//! caught at the hook boundary, the panic hook has already logged one line (no backtrace), and
//! the call fails with the errno the hook names. The real function is never called as a
//! fallback.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// The stack address of this thread's outermost hook body in progress (0: none). A
    /// const-initialised `Cell` with no destructor: reading it is a plain TLS access, safe in a
    /// signal handler.
    static FRAME: Cell<usize> = const { Cell::new(0) };
}

pub fn set_errno(e: libc::c_int) {
    // SAFETY: errno is this thread's own int, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

/// Runs `f`; if it panics, sets errno to `errno` and returns `failed`.
#[inline]
pub fn guarded<R>(failed: R, errno: libc::c_int, f: impl FnOnce() -> R) -> R {
    match caught(f) {
        Some(r) => r,
        None => {
            set_errno(errno);
            failed
        }
    }
}

/// The body of a hook: runs `f` inside the panic guard ([`guarded`]), unless this thread is
/// already inside a hook — a signal handler interrupted proxify's code and called a hook
/// (`connect`, `close`, `poll`, … are async-signal-safe in POSIX, and handlers call them).
/// Then the interrupted code may hold a spin lock or be inside `malloc`, so `reentered` runs
/// instead: it must not allocate, lock, log or panic — it calls the real function where that
/// is safe and fails with an errno where it is not (never a direct connection).
///
/// "Inside" is told by the stack: a handler runs deeper on the interrupted stack than the hook
/// frame it interrupted. A frame recorded above the current one is stale — the program left it
/// with `siglongjmp` from a handler — and is forgotten, so such a program is not locked out.
#[inline(never)]
pub fn hook<R>(
    reentered: impl FnOnce() -> R,
    failed: R,
    errno: libc::c_int,
    f: impl FnOnce() -> R,
) -> R {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let outer = FRAME.with(|c| c.get());
    if outer != 0 && here < outer {
        return reentered();
    }
    FRAME.with(|c| c.set(here));
    let r = guarded(failed, errno, f);
    FRAME.with(|c| c.set(0));
    r
}

/// Runs `f` (a real libc function that may call our hooks itself, such as the resolver
/// through its NSS modules) outside the hook region: the hooks it reaches run as the
/// program's own calls, not as a signal handler's re-entry.
#[inline]
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    let saved = FRAME.with(|c| c.replace(0));
    let r = f();
    FRAME.with(|c| c.set(saved));
    r
}

/// Called right before a real exec inside a hook body: the new program starts outside any
/// hook. (A `vfork` child shares the parent's memory, so the frame it would leave recorded is
/// the parent's; `hook` clears it anyway if the exec fails and returns.)
#[inline]
pub fn leave_for_exec() {
    FRAME.with(|c| c.set(0));
}

/// Runs `f`; None if it panicked (the panic hook has logged it). For callers that must undo
/// state of their own before failing closed (`nbconnect`, the dup hooks closing an unrecorded
/// copy); everything else uses [`guarded`].
/// The one place the shim catches panics.
#[inline]
pub fn caught<R>(f: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// Replaces the default panic output (multi-line, with a backtrace hint) with one log line.
/// The shim carries its own copy of std, so this hook never affects a Rust host program.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("internal error ({msg}); the call fails, nothing is sent directly");
    }));
}
