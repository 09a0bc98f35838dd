//! Errors of the shim: the errno of the last system call, its text, and the one error type of
//! a failed proxied call ([`Failure`]: errno, one-line reason, the hop that proved dead),
//! defined in proxify-core so that every engine and the chain handshake share it.

use libc::c_int;

pub use proxify_core::chain::Failure;

/// errno of the last failed call (EIO if there is none).
pub fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The C library's text for `e`.
pub fn strerror(e: c_int) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Logs a failure line at warn level unless the very same line was logged in the last two
/// seconds: a program that tries every address of a name (IPv4 and IPv6 placeholders) through
/// a proxy that refuses it gets one line, not one per address. Lock-free.
pub fn warn_once(line: std::fmt::Arguments) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_HASH: AtomicU64 = AtomicU64::new(0);
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    if !log::log_enabled!(log::Level::Warn) {
        return;
    }
    let text = line.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000;
    let prev = LAST_HASH.swap(h, Ordering::Relaxed);
    let at = LAST_MS.swap(now, Ordering::Relaxed);
    if prev == h && now.saturating_sub(at) < 2000 {
        return;
    }
    log::warn!("{text}");
}
