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
