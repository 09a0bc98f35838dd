//! `dlsym`/`dlvsym` are defined in C (`csrc/dlsym.c`: the RTLD_NEXT case must be a tail call
//! into libc, which Rust cannot promise). This is the one line they log.

use libc::c_char;
use std::ffi::CStr;

#[no_mangle]
pub unsafe extern "C" fn proxify_dlsym_log(name: *const c_char, version: *const c_char) {
    if !log::log_enabled!(log::Level::Debug) || name.is_null() {
        return;
    }
    crate::sys::guard::guarded((), 0, || {
        // SAFETY: NUL-terminated strings from the program's dlsym/dlvsym call.
        let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        if version.is_null() {
            log::debug!("dlsym({n}): proxify's hook, not libc's");
        } else {
            // SAFETY: a non-null NUL-terminated version string from the program's dlvsym call.
            let v = unsafe { CStr::from_ptr(version) }.to_string_lossy();
            log::debug!("dlvsym({n}, {v}): proxify's hook, not libc's");
        }
    })
}
