//! Old BSD and NSS calls that look names up or connect *inside* libc, where the calls they make
//! (`getaddrinfo`, `connect`, the resolver's `sendto`) are internal and never reach proxify's
//! hooks:
//! - `rcmd`, `rcmd_af`, `rexec`, `rexec_af` resolve the host and connect to it by themselves
//!   (and rcmd needs a privileged local port, which a proxy cannot give): refused, with one
//!   line, unless the host is the local host (`localhost` or a loopback address).
//! - `ruserok`, `ruserok_af`, `iruserok`, `iruserok_af` resolve the host (and the names of
//!   `/etc/hosts.equiv`, `~/.rhosts`): under remote DNS they answer "not trusted" (-1), so no
//!   name goes to the resolver.
//! - `getnetbyname`, `getnetbyaddr` and their `_r` forms ask the `networks:` sources of
//!   /etc/nsswitch.conf: under remote DNS, when those include `dns`, "not found".
//!
//! With local DNS, everything but rcmd/rexec goes straight to libc.

use crate::policy::decide;
use crate::state::runtime;
use crate::sys::guard::{hook, set_errno};
use crate::sys::real;
use libc::{c_char, c_int, c_ushort, c_void, size_t};
use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

/// Is the host `*ahost` names this host (so libc's own connect to it stays local)?
unsafe fn local_host(ahost: *mut *mut c_char) -> bool {
    // SAFETY: a non-null `ahost` is the caller's valid `char **` (rcmd's contract).
    if ahost.is_null() || unsafe { *ahost }.is_null() {
        return false;
    }
    // SAFETY: `*ahost` is non-null, the caller's NUL-terminated host name.
    let Ok(h) = unsafe { CStr::from_ptr(*ahost) }.to_str() else {
        return false;
    };
    if h.eq_ignore_ascii_case("localhost") || h.eq_ignore_ascii_case("localhost.localdomain") {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(ip) => decide::trivially_direct(&SocketAddr::new(ip, 0)),
        Err(_) => false,
    }
}

fn host_text(ahost: *mut *mut c_char) -> String {
    // SAFETY: checked for null; the caller's NUL-terminated host name.
    unsafe {
        if ahost.is_null() || (*ahost).is_null() {
            return "(null)".into();
        }
        CStr::from_ptr(*ahost).to_string_lossy().into_owned()
    }
}

/// Refuses an rcmd/rexec to a host other than this one; None: let libc run it.
fn refuse_remote_exec(what: &str, ahost: *mut *mut c_char) -> Option<c_int> {
    // SAFETY: ahost as the program passed it.
    if unsafe { local_host(ahost) } {
        return None;
    }
    hook(
        || (),
        (),
        libc::EIO,
        || {
            log::warn!(
                "refusing {what}() to {}: it looks the host up and connects inside libc, \
                 around the proxy (use ssh through the proxy instead)",
                host_text(ahost)
            )
        },
    );
    set_errno(libc::EACCES);
    Some(-1)
}

#[no_mangle]
pub unsafe extern "C" fn rcmd(
    ahost: *mut *mut c_char,
    port: c_ushort,
    locuser: *const c_char,
    remuser: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
) -> c_int {
    refuse_remote_exec("rcmd", ahost)
        // SAFETY: the caller's arguments, unchanged, under libc's rcmd contract.
        .unwrap_or_else(|| unsafe { real::rcmd(ahost, port, locuser, remuser, cmd, fd2p) })
}

#[no_mangle]
pub unsafe extern "C" fn rcmd_af(
    ahost: *mut *mut c_char,
    port: c_ushort,
    locuser: *const c_char,
    remuser: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
    af: libc::sa_family_t,
) -> c_int {
    refuse_remote_exec("rcmd_af", ahost)
        // SAFETY: the caller's arguments, unchanged, under libc's rcmd_af contract.
        .unwrap_or_else(|| unsafe { real::rcmd_af(ahost, port, locuser, remuser, cmd, fd2p, af) })
}

#[no_mangle]
pub unsafe extern "C" fn rexec(
    ahost: *mut *mut c_char,
    port: c_int,
    user: *const c_char,
    passwd: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
) -> c_int {
    refuse_remote_exec("rexec", ahost)
        // SAFETY: the caller's arguments, unchanged, under libc's rexec contract.
        .unwrap_or_else(|| unsafe { real::rexec(ahost, port, user, passwd, cmd, fd2p) })
}

#[no_mangle]
pub unsafe extern "C" fn rexec_af(
    ahost: *mut *mut c_char,
    port: c_int,
    user: *const c_char,
    passwd: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
    af: libc::sa_family_t,
) -> c_int {
    refuse_remote_exec("rexec_af", ahost)
        // SAFETY: the caller's arguments, unchanged, under libc's rexec_af contract.
        .unwrap_or_else(|| unsafe { real::rexec_af(ahost, port, user, passwd, cmd, fd2p, af) })
}

fn remote_dns() -> bool {
    hook(|| true, true, libc::EIO, || runtime::get().remote_dns())
}

/// Under remote DNS: a host-trust check would resolve names; "not trusted" instead.
fn untrusted(what: &str) -> bool {
    if !remote_dns() {
        return false;
    }
    hook(
        || (),
        (),
        libc::EIO,
        || log::info!("{what}(): not trusted (remote DNS: it would resolve names locally)"),
    );
    true
}

#[no_mangle]
pub unsafe extern "C" fn ruserok(
    rhost: *const c_char,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
) -> c_int {
    if untrusted("ruserok") {
        return -1;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's ruserok contract.
    unsafe { real::ruserok(rhost, superuser, ruser, luser) }
}

#[no_mangle]
pub unsafe extern "C" fn ruserok_af(
    rhost: *const c_char,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
    af: libc::sa_family_t,
) -> c_int {
    if untrusted("ruserok_af") {
        return -1;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's ruserok_af contract.
    unsafe { real::ruserok_af(rhost, superuser, ruser, luser, af) }
}

#[no_mangle]
pub unsafe extern "C" fn iruserok(
    raddr: u32,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
) -> c_int {
    if untrusted("iruserok") {
        return -1;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's iruserok contract.
    unsafe { real::iruserok(raddr, superuser, ruser, luser) }
}

#[no_mangle]
pub unsafe extern "C" fn iruserok_af(
    raddr: *const c_void,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
    af: libc::sa_family_t,
) -> c_int {
    if untrusted("iruserok_af") {
        return -1;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's iruserok_af contract.
    unsafe { real::iruserok_af(raddr, superuser, ruser, luser, af) }
}

/// Does the `networks:` line of /etc/nsswitch.conf name `dns` (read once)?
fn networks_use_dns() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| {
        nsswitch_networks_dns(&std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default())
    })
}

fn nsswitch_networks_dns(text: &str) -> bool {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        if let Some(rest) = line.trim_start().strip_prefix("networks:") {
            return rest
                .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
                .any(|w| w == "dns");
        }
    }
    // glibc's default for a database the file does not list: "dns [!UNAVAIL=return] files".
    true
}

/// Under remote DNS with `dns` among the networks sources: the look-up is not made.
fn network_lookup_refused(what: &str) -> bool {
    if !remote_dns() {
        return false;
    }
    hook(
        || true,
        true,
        libc::EIO,
        || {
            if !networks_use_dns() {
                return false;
            }
            log::info!(
                "{what}(): not found (remote DNS: /etc/nsswitch.conf would ask the resolver)"
            );
            true
        },
    )
}

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

#[no_mangle]
pub unsafe extern "C" fn getnetbyname(name: *const c_char) -> *mut libc::c_void {
    if network_lookup_refused("getnetbyname") {
        // SAFETY: glibc's __h_errno_location returns this thread's h_errno, always valid.
        unsafe { *__h_errno_location() = 1 }; // HOST_NOT_FOUND
        return std::ptr::null_mut();
    }
    // SAFETY: the caller's arguments, unchanged, under libc's getnetbyname contract.
    unsafe { real::getnetbyname(name) }
}

#[no_mangle]
pub unsafe extern "C" fn getnetbyaddr(net: u32, ty: c_int) -> *mut libc::c_void {
    if network_lookup_refused("getnetbyaddr") {
        // SAFETY: glibc's __h_errno_location returns this thread's h_errno, always valid.
        unsafe { *__h_errno_location() = 1 };
        return std::ptr::null_mut();
    }
    // SAFETY: the caller's arguments, unchanged, under libc's getnetbyaddr contract.
    unsafe { real::getnetbyaddr(net, ty) }
}

#[no_mangle]
pub unsafe extern "C" fn getnetbyname_r(
    name: *const c_char,
    ret: *mut c_void,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut c_void,
    h_errnop: *mut c_int,
) -> c_int {
    if network_lookup_refused("getnetbyname_r") {
        if !result.is_null() {
            // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
            unsafe { *result = std::ptr::null_mut() };
        }
        if !h_errnop.is_null() {
            // SAFETY: a non-null `h_errnop` is the caller's out-pointer (the _r call's contract).
            unsafe { *h_errnop = 1 };
        }
        return libc::ENOENT;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's getnetbyname_r contract.
    unsafe { real::getnetbyname_r(name, ret, buf, buflen, result, h_errnop) }
}

#[no_mangle]
pub unsafe extern "C" fn getnetbyaddr_r(
    net: u32,
    ty: c_int,
    ret: *mut c_void,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut c_void,
    h_errnop: *mut c_int,
) -> c_int {
    if network_lookup_refused("getnetbyaddr_r") {
        if !result.is_null() {
            // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
            unsafe { *result = std::ptr::null_mut() };
        }
        if !h_errnop.is_null() {
            // SAFETY: a non-null `h_errnop` is the caller's out-pointer (the _r call's contract).
            unsafe { *h_errnop = 1 };
        }
        return libc::ENOENT;
    }
    // SAFETY: the caller's arguments, unchanged, under libc's getnetbyaddr_r contract.
    unsafe { real::getnetbyaddr_r(net, ty, ret, buf, buflen, result, h_errnop) }
}

#[cfg(test)]
mod tests {
    use super::nsswitch_networks_dns;

    #[test]
    fn nsswitch() {
        assert!(!nsswitch_networks_dns(
            "hosts: files dns\nnetworks:       files\n"
        ));
        assert!(nsswitch_networks_dns("networks: files dns # x\n"));
        assert!(nsswitch_networks_dns(
            "networks: files [NOTFOUND=return] dns\n"
        ));
        assert!(!nsswitch_networks_dns("# networks: dns\nnetworks: files\n"));
        assert!(nsswitch_networks_dns("hosts: files\n"));
    }
}
