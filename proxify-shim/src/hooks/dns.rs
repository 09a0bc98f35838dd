//! Name look-ups under remote DNS (socks5h, socks4a): `getaddrinfo`, `gethostbyname*`,
//! `getnameinfo`, `gethostbyaddr*`, and the `res_*` resolver calls.
//!
//! A name that is neither numeric nor in /etc/hosts gets a placeholder address (see
//! `fakedns.rs`) and is never given to the system resolver. Result lists are built by glibc's
//! own `getaddrinfo` from the numeric placeholder (so service names, socket types, flags and
//! the memory layout are exactly glibc's, and the program's `freeaddrinfo` frees them: that is
//! why `freeaddrinfo` needs no hook). Reverse look-ups answer from the placeholder map and
//! /etc/hosts, else numerically: a PTR query would be a local DNS query too.
//! With local DNS (socks5, socks4) every call here goes straight to libc.
//!
//! Size: ~900 lines, no unit tests: 24 entry points (getaddrinfo, the `gethostbyname*` and
//! `gethostbyaddr*` families with per-thread buffers, getnameinfo, 16 `res_*` names by a macro).
//! Could be split: the `res_*` hooks (~200 lines at the end) into hooks/res.rs; not done yet.

use crate::policy::names::{answer, reverse};
use crate::state::fakedns::Miss;
use crate::state::runtime;
use crate::sys::guard::{hook, outside};
use crate::sys::{real, sockaddr};
use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, socklen_t};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;

fn set_h_errno(v: c_int) {
    // SAFETY: glibc's h_errno location is this thread's, always valid.
    unsafe { *__h_errno_location() = v };
}

/// Whether the host has a configured IPv4 / IPv6 address other than loopback (and, for IPv6,
/// link-local): what `AI_ADDRCONFIG` asks.
fn host_families() -> (bool, bool) {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head`, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return (true, true);
    }
    let (mut v4, mut v6) = (false, false);
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family.
            match unsafe {
                sockaddr::read(
                    ifa.ifa_addr,
                    std::mem::size_of::<libc::sockaddr_in6>() as socklen_t,
                )
            } {
                Some(SocketAddr::V4(a)) if !a.ip().is_loopback() => v4 = true,
                Some(SocketAddr::V6(a))
                    if !a.ip().is_loopback() && (a.ip().segments()[0] & 0xffc0) != 0xfe80 =>
                {
                    v6 = true
                }
                _ => {}
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    (v4, v6)
}

/// Is `name` an address literal (including the legacy inet_aton forms glibc accepts)?
fn is_numeric(name: &CStr) -> bool {
    let Ok(s) = name.to_str() else {
        return false;
    };
    if s.split('%').next().unwrap_or(s).parse::<IpAddr>().is_ok() {
        return true;
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut a: libc::in_addr = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated; inet_aton writes one in_addr we own.
    unsafe { inet_aton(name.as_ptr(), &mut a) != 0 }
}

extern "C" {
    fn inet_aton(cp: *const c_char, inp: *mut libc::in_addr) -> c_int;
}

#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    if node.is_null() || res.is_null() {
        // SAFETY: the caller's arguments, unchanged, under libc's getaddrinfo contract.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    }
    hook(
        || libc::EAI_AGAIN,
        libc::EAI_FAIL,
        libc::EIO,
        // SAFETY: `node` and `res` are non-null (checked); `service`, `hints` as getaddrinfo takes.
        || unsafe { gai(node, service, hints, res) },
    )
}

unsafe fn gai(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let rt = runtime::get();
    if !rt.remote_dns() {
        // The system resolver: its NSS modules' own connect/sendto/poll calls are served as
        // the program's (sys::guard::outside), not as a signal handler's re-entry.
        // SAFETY: the caller's arguments, unchanged, under libc's getaddrinfo contract.
        return outside(|| unsafe { real::getaddrinfo(node, service, hints, res) });
    }
    let mut h: addrinfo = if hints.is_null() {
        // SAFETY: all-zero bytes are a valid addrinfo (integers and null pointers).
        let mut d: addrinfo = unsafe { std::mem::zeroed() };
        d.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
        d
    } else {
        // SAFETY: a non-null `hints` is a valid addrinfo (getaddrinfo's contract).
        unsafe { *hints }
    };
    let flags = h.ai_flags;
    // Numeric hosts (the common, fast case) are answered by libc without any resolver: ask
    // it with AI_NUMERICHOST first; only EAI_NONAME means "a name".
    h.ai_flags |= libc::AI_NUMERICHOST;
    // SAFETY: the caller's `node`, `service` and non-null `res`; `h` is a local addrinfo.
    let rc = unsafe { real::getaddrinfo(node, service, &h, res) };
    if rc != libc::EAI_NONAME || flags & libc::AI_NUMERICHOST != 0 {
        return rc;
    }
    // SAFETY: `node` is non-null, a NUL-terminated name (getaddrinfo's contract).
    let name = unsafe { CStr::from_ptr(node) };
    let Ok(name) = name.to_str() else {
        return libc::EAI_NONAME;
    };
    if !crate::policy::decide::name_goes_remote(name) {
        // Going direct (a rule) or through a chain with local DNS: the system resolver.
        log::debug!("getaddrinfo({name}): resolved locally (its route does not use remote DNS)");
        // SAFETY: the caller's arguments, unchanged, under libc's getaddrinfo contract.
        let rc = outside(|| unsafe { real::getaddrinfo(node, service, hints, res) });
        trace_lookup("getaddrinfo", name, false, rc);
        return rc;
    }
    if rt.fault == runtime::Fault::PanicResolve {
        panic!("injected fault (PROXIFY_TEST_FAULT=panic-resolve)");
    }
    let mut ans = match answer(name, h.ai_family, flags & libc::AI_V4MAPPED != 0) {
        Ok(a) => a,
        // The placeholder block is full: the name may well exist, the look-up cannot be
        // served (the one warning line was written by the first).
        Err(Miss::Full) => {
            trace_lookup("getaddrinfo", name, true, libc::EAI_AGAIN);
            return libc::EAI_AGAIN;
        }
        Err(Miss::NoName) => {
            log::debug!("getaddrinfo({name}): no address of the requested family");
            trace_lookup("getaddrinfo", name, true, libc::EAI_NONAME);
            return libc::EAI_NONAME;
        }
    };
    trace_lookup("getaddrinfo", name, true, 0);
    if flags & libc::AI_ADDRCONFIG != 0 && h.ai_family == libc::AF_UNSPEC {
        // Only the families this host has a (non-loopback) address of, as glibc does.
        let (has4, has6) = host_families();
        if has4 || has6 {
            ans.addrs.retain(|a| if a.is_ipv4() { has4 } else { has6 });
        }
        if ans.addrs.is_empty() {
            return libc::EAI_NONAME;
        }
    }
    log::debug!("getaddrinfo({name}) -> {:?} (no local DNS)", ans.addrs);
    // Each address is turned into glibc's own list by a numeric look-up (no resolver).
    h.ai_flags = (flags | libc::AI_NUMERICHOST) & !(libc::AI_CANONNAME | libc::AI_ADDRCONFIG);
    let mut head: *mut addrinfo = std::ptr::null_mut();
    let mut tail: *mut addrinfo = std::ptr::null_mut();
    for ip in &ans.addrs {
        // The family's unspecified address, then the address written into each node: libc
        // builds the same list for any address of a family, and nothing is formatted.
        let lit = if ip.is_ipv4() { c"0.0.0.0" } else { c"::" };
        let mut part: *mut addrinfo = std::ptr::null_mut();
        // SAFETY: `lit` is a C string, `service` the caller's, `h` and `part` are locals.
        let rc = unsafe { real::getaddrinfo(lit.as_ptr(), service, &h, &mut part) };
        // SAFETY: `part` is the list libc's getaddrinfo just returned, ours until linked.
        if rc == 0 && !unsafe { set_addrs(part, *ip) } {
            // A node of another family than asked (never seen): it would hold the unspecified
            // address, so nothing of this answer is handed out.
            // SAFETY: `part` is that list, not given to anyone.
            unsafe { real::freeaddrinfo(part) };
            if !head.is_null() {
                // SAFETY: `head` is our list from libc's getaddrinfo, not given to the caller.
                unsafe { real::freeaddrinfo(head) };
            }
            return libc::EAI_FAIL;
        }
        if rc != 0 {
            if !head.is_null() {
                // SAFETY: `head` is our list from libc's getaddrinfo, not given to the caller.
                unsafe { real::freeaddrinfo(head) };
            }
            return rc;
        }
        if head.is_null() {
            head = part;
        } else {
            // SAFETY: `head` is set, so `tail` is the last node of our list from getaddrinfo.
            unsafe { (*tail).ai_next = part };
        }
        tail = part;
        // SAFETY: `tail` is a node of the non-null list getaddrinfo just returned in `part`.
        while !unsafe { (*tail).ai_next }.is_null() {
            // SAFETY: as above; the loop follows that list's links.
            tail = unsafe { (*tail).ai_next };
        }
    }
    if head.is_null() {
        return libc::EAI_NONAME;
    }
    if flags & libc::AI_CANONNAME != 0 {
        let Ok(c) = CString::new(ans.canon) else {
            // SAFETY: `head` is our list from libc's getaddrinfo, not given to the caller.
            unsafe { real::freeaddrinfo(head) };
            return libc::EAI_NONAME;
        };
        // glibc's freeaddrinfo frees ai_canonname with free(): allocate it with strdup.
        // SAFETY: `head` is the non-null first node of our list; `c` is a C string.
        unsafe { (*head).ai_canonname = libc::strdup(c.as_ptr()) };
    }
    // SAFETY: `res` is non-null, the caller's out-pointer (getaddrinfo's contract).
    unsafe { *res = head };
    0
}

/// Lays out a `hostent` for `name` and `addrs` (all of family `af`) inside `buf`.
unsafe fn fill_hostent(
    name: &str,
    af: c_int,
    addrs: &[IpAddr],
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
) -> Result<(), c_int> {
    let alen = if af == libc::AF_INET6 { 16 } else { 4 };
    let ptr = std::mem::size_of::<*mut c_char>();
    let start = buf as usize;
    let base = (start + ptr - 1) & !(ptr - 1);
    let lists = (addrs.len() + 1 + 1) * ptr; // address list + NULL, aliases: NULL
    let need = (base - start) + lists + addrs.len() * alen + name.len() + 1;
    if need > buflen {
        return Err(libc::ERANGE);
    }
    let addr_list = base as *mut *mut c_char;
    // SAFETY: the lists at `base` lie within the `need` <= `buflen` bytes of `buf`.
    let aliases = unsafe { addr_list.add(addrs.len() + 1) };
    // SAFETY: the data area, just after the aliases list, is within those `need` bytes too.
    let mut data = unsafe { (aliases as *mut u8).add(ptr) };
    for (i, ip) in addrs.iter().enumerate() {
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        // SAFETY: address i's `alen` bytes and list slot i are within the `need` bytes checked;
        // `bytes` is a local Vec of at least `alen` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, alen);
            *addr_list.add(i) = data as *mut c_char;
            data = data.add(alen);
        }
    }
    // SAFETY: the two list terminators are pointer-aligned slots within the `need` bytes.
    unsafe {
        *addr_list.add(addrs.len()) = std::ptr::null_mut();
        *aliases = std::ptr::null_mut();
    }
    // SAFETY: the name and its NUL are the last `name.len() + 1` of the `need` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), data, name.len());
        *data.add(name.len()) = 0;
    }
    // SAFETY: `ret` is the caller's writable hostent (the _r call's contract).
    unsafe {
        (*ret).h_name = data as *mut c_char;
        (*ret).h_aliases = aliases;
        (*ret).h_addrtype = af;
        (*ret).h_length = alen as c_int;
        (*ret).h_addr_list = addr_list;
    }
    Ok(())
}

/// gethostbyname2_r under remote DNS. Returns None when libc should answer (numeric names).
unsafe fn ghbn_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    let rt = runtime::get();
    // SAFETY: `name` is non-null here, a NUL-terminated name (gethostbyname_r's contract).
    if !rt.remote_dns() || name.is_null() || is_numeric(unsafe { CStr::from_ptr(name) }) {
        return None;
    }
    if !result.is_null() {
        // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
        unsafe { *result = std::ptr::null_mut() };
    }
    // Some callers (CPython) read the global h_errno even after the _r calls.
    let set_herr = |v: c_int| {
        if !h_errnop.is_null() {
            // SAFETY: a non-null `h_errnop` is the caller's out-pointer (the _r call's contract).
            unsafe { *h_errnop = v };
        }
        set_h_errno(v);
    };
    if af != libc::AF_INET && af != libc::AF_INET6 {
        set_herr(NO_RECOVERY);
        return Some(libc::EAFNOSUPPORT);
    }
    if rt.fault == runtime::Fault::PanicResolve {
        panic!("injected fault (PROXIFY_TEST_FAULT=panic-resolve)");
    }
    // SAFETY: `name` is non-null (checked above), a NUL-terminated name.
    let Some(n) = unsafe { CStr::from_ptr(name) }.to_str().ok() else {
        set_herr(HOST_NOT_FOUND);
        return Some(libc::ENOENT);
    };
    if !crate::policy::decide::name_goes_remote(n) {
        trace_lookup("gethostbyname", n, false, 0);
        return None;
    }
    let ans = match answer(n, af, true) {
        Ok(a) => {
            trace_lookup("gethostbyname", n, true, 0);
            a
        }
        Err(Miss::Full) => {
            set_herr(TRY_AGAIN);
            return Some(libc::EAGAIN);
        }
        Err(Miss::NoName) => {
            set_herr(HOST_NOT_FOUND);
            return Some(libc::ENOENT);
        }
    };
    log::debug!("gethostbyname({n}) -> {:?} (no local DNS)", ans.addrs);
    // SAFETY: `ret` and `buf` of `buflen` bytes are the caller's, as gethostbyname_r promised.
    match unsafe { fill_hostent(&ans.canon, af, &ans.addrs, ret, buf, buflen) } {
        Ok(()) => {
            if !result.is_null() {
                // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
                unsafe { *result = ret };
            }
            set_herr(0);
            Some(0)
        }
        Err(e) => {
            set_herr(NO_RECOVERY);
            Some(e)
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let r = hook(
        || Some(libc::EAGAIN),
        Some(libc::EIO),
        libc::EIO,
        // SAFETY: the caller's arguments, under gethostbyname2_r's contract.
        || unsafe { ghbn_r(name, af, ret, buf, buflen, result, h_errnop) },
    );
    match r {
        Some(rc) => rc,
        // SAFETY: the caller's arguments, unchanged, under libc's gethostbyname2_r contract.
        None => unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let r = hook(
        || Some(libc::EAGAIN),
        Some(libc::EIO),
        libc::EIO,
        // SAFETY: the caller's arguments, under gethostbyname_r's contract.
        || unsafe { ghbn_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop) },
    );
    match r {
        Some(rc) => rc,
        // SAFETY: the caller's arguments, unchanged, under libc's gethostbyname_r contract.
        None => unsafe { real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) },
    }
}

/// Storage for the non-reentrant calls, one per thread (glibc's is one per process).
struct Static {
    he: hostent,
    buf: [u64; 128],
}

thread_local! {
    static STATIC: std::cell::UnsafeCell<Static> = const { std::cell::UnsafeCell::new(Static {
        he: hostent {
            h_name: std::ptr::null_mut(),
            h_aliases: std::ptr::null_mut(),
            h_addrtype: 0,
            h_length: 0,
            h_addr_list: std::ptr::null_mut(),
        },
        buf: [0; 128],
    }) };
}

/// Runs a `_r` answer (`fill(ret, buf, buflen, result, h_errnop)`, None = "libc answers")
/// into this thread's static storage, as the non-reentrant calls return it.
unsafe fn into_static(
    fill: impl FnOnce(*mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> Option<c_int>,
) -> Option<*mut hostent> {
    STATIC.with(|s| {
        // SAFETY: this thread's own storage; only `hook` bodies (never re-entered) get here, so
        // no other reference to it is live.
        let s = unsafe { &mut *s.get() };
        let mut result: *mut hostent = std::ptr::null_mut();
        let mut herr: c_int = 0;
        let rc = fill(
            &mut s.he,
            s.buf.as_mut_ptr() as *mut c_char,
            std::mem::size_of_val(&s.buf),
            &mut result,
            &mut herr,
        )?;
        if rc != 0 || result.is_null() {
            set_h_errno(if herr == 0 { HOST_NOT_FOUND } else { herr });
            return Some(std::ptr::null_mut());
        }
        Some(result)
    })
}

unsafe fn ghbn_static(name: *const c_char, af: c_int) -> Option<*mut hostent> {
    let fill = |ret, buf, buflen, result, herr| {
        // SAFETY: the caller's `name`; the rest is into_static's storage for this thread.
        unsafe { ghbn_r(name, af, ret, buf, buflen, result, herr) }
    };
    // SAFETY: called from a `hook` body only (gethostbyname, gethostbyname2).
    unsafe { into_static(fill) }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    match hook(
        || Some(std::ptr::null_mut()),
        Some(std::ptr::null_mut()),
        libc::EIO,
        // SAFETY: inside `hook`, with the caller's `name` (NULL or a C string).
        || unsafe { ghbn_static(name, libc::AF_INET) },
    ) {
        Some(p) => p,
        // SAFETY: the caller's argument, unchanged, under libc's gethostbyname contract.
        None => unsafe { real::gethostbyname(name) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    match hook(
        || Some(std::ptr::null_mut()),
        Some(std::ptr::null_mut()),
        libc::EIO,
        // SAFETY: inside `hook`, with the caller's `name` (NULL or a C string).
        || unsafe { ghbn_static(name, af) },
    ) {
        Some(p) => p,
        // SAFETY: the caller's arguments, unchanged, under libc's gethostbyname2 contract.
        None => unsafe { real::gethostbyname2(name, af) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const libc::sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, unchanged, under libc's getnameinfo contract.
    let pass = || unsafe { real::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) };
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return pass();
    }
    hook(
        || libc::EAI_AGAIN,
        libc::EAI_FAIL,
        libc::EIO,
        || {
            if !runtime::get().remote_dns() {
                // A PTR query through the system resolver (see `gai`).
                return outside(pass);
            }
            // SAFETY: `sa` has `salen` readable bytes (getnameinfo's contract).
            let Some(addr) = (unsafe { sockaddr::read(sa, salen) }) else {
                return pass();
            };
            let numeric = flags | libc::NI_NUMERICHOST;
            match reverse(&addr.ip()) {
                Some(name) => {
                    // SAFETY: the caller's address and buffers; only the flags differ.
                    let rc = unsafe {
                        real::getnameinfo(
                            sa,
                            salen,
                            host,
                            hostlen,
                            serv,
                            servlen,
                            numeric & !libc::NI_NAMEREQD,
                        )
                    };
                    if rc != 0 {
                        return rc;
                    }
                    if name.len() + 1 > hostlen as usize {
                        return libc::EAI_OVERFLOW;
                    }
                    // SAFETY: `host` has `hostlen` > name.len() writable bytes (checked above).
                    unsafe {
                        std::ptr::copy_nonoverlapping(name.as_ptr(), host as *mut u8, name.len());
                        *host.add(name.len()) = 0;
                    }
                    0
                }
                None if flags & libc::NI_NAMEREQD != 0 => libc::EAI_NONAME,
                // SAFETY: the caller's address and buffers; only the flags differ.
                None => unsafe {
                    real::getnameinfo(sa, salen, host, hostlen, serv, servlen, numeric)
                },
            }
        },
    )
}

/// gethostbyaddr_r under remote DNS; None when libc should answer.
#[allow(clippy::too_many_arguments)]
unsafe fn ghba_r(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    if !runtime::get().remote_dns() || addr.is_null() {
        return None;
    }
    if !result.is_null() {
        // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
        unsafe { *result = std::ptr::null_mut() };
    }
    // Some callers (CPython) read the global h_errno even after the _r calls.
    let set_herr = |v: c_int| {
        if !h_errnop.is_null() {
            // SAFETY: a non-null `h_errnop` is the caller's out-pointer (the _r call's contract).
            unsafe { *h_errnop = v };
        }
        set_h_errno(v);
    };
    // Every family and length is answered here, never by libc (which would send a PTR query
    // for any AF_INET length of 4 or more): the first 4 / 16 bytes, as glibc reads them.
    let ip: IpAddr = match (ty, len) {
        (libc::AF_INET, l) if l >= 4 => {
            let mut b = [0u8; 4];
            // SAFETY: `addr` is non-null with `len` >= 4 readable bytes (gethostbyaddr's contract).
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, b.as_mut_ptr(), 4) };
            IpAddr::from(b)
        }
        (libc::AF_INET6, l) if l >= 16 => {
            let mut b = [0u8; 16];
            // SAFETY: `addr` is non-null with `len` >= 16 readable bytes (gethostbyaddr's).
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, b.as_mut_ptr(), 16) };
            IpAddr::from(b)
        }
        _ => {
            log::debug!("gethostbyaddr(family {ty}, length {len}): no such address");
            set_herr(NO_RECOVERY);
            return Some(libc::EINVAL);
        }
    };
    let Some(name) = reverse(&ip) else {
        log::debug!("gethostbyaddr({ip}): not a placeholder nor in /etc/hosts (no PTR query)");
        set_herr(HOST_NOT_FOUND);
        return Some(libc::ENOENT);
    };
    log::debug!("gethostbyaddr({ip}) -> {name} (no PTR query)");
    // SAFETY: `ret` and `buf` of `buflen` bytes are the caller's, as gethostbyaddr_r promised.
    match unsafe { fill_hostent(&name, ty, &[ip], ret, buf, buflen) } {
        Ok(()) => {
            if !result.is_null() {
                // SAFETY: a non-null `result` is the caller's out-pointer (the _r call's contract).
                unsafe { *result = ret };
            }
            Some(0)
        }
        Err(e) => {
            set_herr(NO_RECOVERY);
            Some(e)
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    match hook(
        || Some(libc::EAGAIN),
        Some(libc::EIO),
        libc::EIO,
        // SAFETY: the caller's arguments, under gethostbyaddr_r's contract.
        || unsafe { ghba_r(addr, len, ty, ret, buf, buflen, result, h_errnop) },
    ) {
        Some(rc) => rc,
        // SAFETY: the caller's arguments, unchanged, under libc's gethostbyaddr_r contract.
        None => unsafe { real::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
) -> *mut hostent {
    let r = hook(
        || Some(std::ptr::null_mut()),
        Some(std::ptr::null_mut()),
        libc::EIO,
        || {
            let fill = |ret, buf, buflen, result, herr| {
                // SAFETY: the caller's address; the rest is into_static's storage for this thread.
                unsafe { ghba_r(addr, len, ty, ret, buf, buflen, result, herr) }
            };
            // SAFETY: inside this `hook` body, which is never re-entered.
            unsafe { into_static(fill) }
        },
    );
    match r {
        Some(p) => p,
        // SAFETY: the caller's arguments, unchanged, under libc's gethostbyaddr contract.
        None => unsafe { real::gethostbyaddr(addr, len, ty) },
    }
}

/// The `res_*` calls build and send DNS queries themselves (glibc's internal sockets, which
/// the send hooks never see): under remote DNS the query is answered by the in-process
/// responder instead (`dnsresp`), exactly as a query to the system resolver would be.
/// A name the rules send direct goes to libc.
fn remote_res() -> bool {
    hook(
        || None,
        None,
        libc::EIO,
        || Some(runtime::get().remote_dns()),
    )
    .unwrap_or(true)
}

/// A standard query for `name`/`class`/`ty` (RD set), or None when `name` cannot be one.
fn make_query(name: &str, class: c_int, ty: c_int) -> Option<Vec<u8>> {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut m = vec![0u8; 12];
    m[0..2].copy_from_slice(&id.to_be_bytes());
    m[2] = 0x01;
    m[5] = 1;
    let n = name.strip_suffix('.').unwrap_or(name);
    for l in n.split('.') {
        if l.is_empty() || l.len() > 63 {
            return None;
        }
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    if m.len() > 12 + 255 {
        return None;
    }
    m.extend_from_slice(&(ty as u16).to_be_bytes());
    m.extend_from_slice(&(class as u16).to_be_bytes());
    Some(m)
}

/// Runs `msg` through the responder into `answer`; returns what `res_send` returns (the
/// reply's length, or -1), and the reply's rcode and answer count. `Err(())`: libc answers.
unsafe fn res_answer(
    what: &str,
    msg: &[u8],
    answer: *mut u8,
    anslen: c_int,
) -> Result<(c_int, u8, u16), ()> {
    let mut out = [0u8; proxify_core::dns::MAX_REPLY];
    match crate::engine::dnsresp::answer_msg(msg, true, &mut out, what) {
        proxify_core::dns::Verdict::Reply {
            len,
            rcode,
            answers,
        } => {
            if answer.is_null() || anslen <= 0 {
                return Ok((-1, rcode, answers));
            }
            let n = len.min(anslen as usize);
            // SAFETY: `answer` is non-null with `anslen` >= `n` writable bytes (res_query's).
            unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), answer, n) };
            Ok((n as c_int, rcode, answers))
        }
        proxify_core::dns::Verdict::Pass => Err(()),
        _ => Ok((-1, proxify_core::dns::rcode::REFUSED, 0)),
    }
}

/// res_query's result from the reply: its length, or -1 with h_errno as glibc sets it.
fn query_result(r: (c_int, u8, u16)) -> c_int {
    use proxify_core::dns::rcode;
    let (len, rc, answers) = r;
    if len > 0 && rc == rcode::NOERROR && answers > 0 {
        return len;
    }
    set_h_errno(match rc {
        rcode::NXDOMAIN => HOST_NOT_FOUND,
        rcode::SERVFAIL => 2, // TRY_AGAIN
        rcode::NOERROR => 4,  // NO_DATA
        _ => NO_RECOVERY,
    });
    -1
}

unsafe fn res_query_like(
    what: &str,
    name: *const c_char,
    domain: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut u8,
    anslen: c_int,
) -> Option<c_int> {
    if !remote_res() {
        return None;
    }
    hook(
        || Some(-1),
        Some(-1),
        libc::EIO,
        || {
            if name.is_null() {
                set_h_errno(NO_RECOVERY);
                return Some(-1);
            }
            // SAFETY: `name` is non-null, a NUL-terminated name (res_query's contract).
            let mut n = unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            if !domain.is_null() {
                // SAFETY: a non-null `domain` is a NUL-terminated name (res_querydomain's).
                let d = unsafe { CStr::from_ptr(domain) }.to_string_lossy();
                n = format!("{}.{}", n.trim_end_matches('.'), d);
            }
            let Some(q) = make_query(&n, class, ty) else {
                set_h_errno(NO_RECOVERY);
                return Some(-1);
            };
            // SAFETY: `answer` is NULL or has `anslen` writable bytes (res_query's contract).
            match unsafe { res_answer(&format!("{what}()"), &q, answer, anslen) } {
                Ok(r) => Some(query_result(r)),
                Err(()) => None,
            }
        },
    )
}

unsafe fn res_send_like(
    what: &str,
    msg: *const u8,
    msglen: c_int,
    answer: *mut u8,
    anslen: c_int,
) -> Option<c_int> {
    if !remote_res() {
        return None;
    }
    hook(
        || Some(-1),
        Some(-1),
        libc::EIO,
        || {
            if msg.is_null() || msglen <= 0 {
                return Some(-1);
            }
            // SAFETY: `msg` is non-null with `msglen` > 0 readable bytes (res_send's contract).
            let m = unsafe { std::slice::from_raw_parts(msg, msglen as usize) };
            // SAFETY: `answer` is NULL or has `anslen` writable bytes (res_send's contract).
            match unsafe { res_answer(&format!("{what}()"), m, answer, anslen) } {
                Ok((len, _, _)) => Some(len),
                Err(()) => None,
            }
        },
    )
}

macro_rules! res_hooks {
    ($( $name:ident $alias:ident ($($arg:ident: $ty:ty),*) => $how:expr; )*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                // SAFETY: res_query_like/res_send_like get the caller's pointers, which meet
                // this res_* call's contract.
                match unsafe { $how } {
                    Some(r) => r,
                    // SAFETY: the caller's arguments, unchanged, under libc's own contract.
                    None => unsafe { real::$name($($arg),*) },
                }
            }
            #[no_mangle]
            pub unsafe extern "C" fn $alias($($arg: $ty),*) -> c_int {
                // SAFETY: the same hook under its other name, with the caller's arguments.
                unsafe { $name($($arg),*) }
            }
        )*
    };
}

res_hooks! {
    res_query __res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_query", dname, std::ptr::null(), class, ty, answer, anslen);
    res_search __res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_search", dname, std::ptr::null(), class, ty, answer, anslen);
    res_querydomain __res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_querydomain", name, domain, class, ty, answer, anslen);
    res_send __res_send(msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int)
        => res_send_like("res_send", msg, msglen, answer, anslen);
    res_nquery __res_nquery(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_nquery", dname, std::ptr::null(), class, ty, answer, anslen);
    res_nsearch __res_nsearch(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_nsearch", dname, std::ptr::null(), class, ty, answer, anslen);
    res_nquerydomain __res_nquerydomain(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int)
        => res_query_like("res_nquerydomain", name, domain, class, ty, answer, anslen);
    res_nsend __res_nsend(statp: *mut c_void, msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int)
        => res_send_like("res_nsend", msg, msglen, answer, anslen);
}

/// Writes `ip` into the socket address of every node of `list` (a numeric look-up of the
/// family's unspecified address): for an IPv4 node the `sin_addr`, for an IPv6 one the
/// `sin6_addr`; the port, the flow info and the scope id stay as libc set them. False when a
/// node is not of `ip`'s family (it then keeps the unspecified address).
///
/// # Safety
/// `list` is null or a list from libc's getaddrinfo that nobody else uses yet.
unsafe fn set_addrs(mut list: *mut addrinfo, ip: IpAddr) -> bool {
    while !list.is_null() {
        // SAFETY: `list` is a node of that list (the caller's contract).
        let n = unsafe { &mut *list };
        match ip {
            IpAddr::V4(a)
                if n.ai_family == libc::AF_INET
                    && !n.ai_addr.is_null()
                    && n.ai_addrlen as usize >= std::mem::size_of::<libc::sockaddr_in>() =>
            {
                // SAFETY: an AF_INET node's ai_addr is a sockaddr_in of ai_addrlen bytes.
                let sin = unsafe { &mut *(n.ai_addr as *mut libc::sockaddr_in) };
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            }
            IpAddr::V6(a)
                if n.ai_family == libc::AF_INET6
                    && !n.ai_addr.is_null()
                    && n.ai_addrlen as usize >= std::mem::size_of::<libc::sockaddr_in6>() =>
            {
                // SAFETY: an AF_INET6 node's ai_addr is a sockaddr_in6 of ai_addrlen bytes.
                let sin6 = unsafe { &mut *(n.ai_addr as *mut libc::sockaddr_in6) };
                sin6.sin6_addr.s6_addr = a.octets();
            }
            _ => return false,
        }
        list = n.ai_next;
    }
    true
}

/// The trace's line for a name look-up: `remote`, the name goes to the proxy (a placeholder
/// answers); else it is resolved locally. `rc`: 0, or the `EAI_*` code (negative).
fn trace_lookup(call: &str, name: &str, remote: bool, rc: c_int) {
    use crate::sys::trace;
    if !trace::on() {
        return;
    }
    let (via, rule) = if remote {
        (
            trace::Via::Proxy,
            "remote DNS: a placeholder address, the name goes to the proxy",
        )
    } else {
        (
            trace::Via::Direct,
            "resolved locally (its route does not use remote DNS)",
        )
    };
    trace::write(&trace::Event {
        ev: trace::Ev::Decision,
        call,
        dest: &name,
        via,
        rule: Some(&rule),
        result: (remote || rc != 0).then_some(rc),
        ms: None,
    });
}
