//! Fail closed on panics.
//!
//! redhook's `hook!` calls the real function when a hook panics: a silent direct connection.
//! Our hooks are plain `extern "C"` functions whose bodies run inside [`guarded`]: a panic is
//! caught at the hook boundary, the panic hook has already logged one line (no backtrace), and
//! the call fails with the errno the hook names. The real function is never called as a
//! fallback.

use std::panic::{catch_unwind, AssertUnwindSafe};

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
