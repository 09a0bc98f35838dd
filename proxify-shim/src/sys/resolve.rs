//! The one local name look-up proxify itself makes: a proxy given by host name is resolved
//! with the system resolver (through the real `getaddrinfo`, never our hook).

use super::{real, sockaddr};
use libc::addrinfo;
use std::ffi::{CStr, CString};
use std::net::SocketAddr;

/// Resolves the proxy's own host name with the system resolver (the one local look-up).
pub fn resolve_locally(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let c = CString::new(name).map_err(|_| "name contains NUL".to_string())?;
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut hints: addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut addrinfo = std::ptr::null_mut();
    // The resolver's NSS modules call connect/sendto/poll through the PLT, that is ours: they
    // are served as the program's own calls, not as a signal handler's re-entry.
    // SAFETY: a NUL-terminated name, valid hints and an out-pointer for the result.
    let rc = super::guard::outside(|| unsafe {
        real::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res)
    });
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(msg.to_string_lossy().into_owned());
    }
    let mut out = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getaddrinfo returned, freed only below.
        let ai = unsafe { &*p };
        // SAFETY: ai_addr/ai_addrlen as getaddrinfo filled them.
        if let Some(mut a) = unsafe { sockaddr::read(ai.ai_addr, ai.ai_addrlen) } {
            a.set_port(port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        p = ai.ai_next;
    }
    // SAFETY: the list getaddrinfo returned, freed once.
    unsafe { real::freeaddrinfo(res) };
    if out.is_empty() {
        Err("no address".into())
    } else {
        Ok(out)
    }
}
