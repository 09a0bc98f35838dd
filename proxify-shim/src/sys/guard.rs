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
    /// How many hook bodies this thread is inside (0 or 1, unless a signal handler that runs on
    /// this thread called a hook while the thread was inside one). A const-initialised `Cell`
    /// with no destructor: reading it is a plain TLS access, safe in a signal handler.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

pub fn set_errno(e: libc::c_int) {
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
#[inline]
pub fn hook<R>(
    reentered: impl FnOnce() -> R,
    failed: R,
    errno: libc::c_int,
    f: impl FnOnce() -> R,
) -> R {
    let depth = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v
    });
    let r = if depth > 0 {
        reentered()
    } else {
        guarded(failed, errno, f)
    };
    DEPTH.with(|d| d.set(depth));
    r
}

/// Called right before a real exec inside a hook body: the new program starts outside any
/// hook. (A `vfork` child shares the parent's memory, so the depth it leaves behind is the
/// parent's; `hook` puts the saved depth back anyway if the exec fails and returns.)
#[inline]
pub fn leave_for_exec() {
    DEPTH.with(|d| d.set(0));
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
