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

use crate::state::fakedns::{self, Miss};
use crate::state::{hosts, runtime};
use crate::sys::guard::guarded;
use crate::sys::{real, sockaddr};
use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, socklen_t};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;

fn set_h_errno(v: c_int) {
    unsafe { *__h_errno_location() = v };
}

/// What a forward look-up of a (non-numeric) name answers.
struct Answer {
    canon: String,
    addrs: Vec<IpAddr>,
}

/// Resolves `name` without the system resolver: localhost, /etc/hosts, or a placeholder.
/// `family` and `v4mapped` filter the addresses as `getaddrinfo` would.
fn answer(name: &str, family: c_int, v4mapped: bool) -> Result<Answer, Miss> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (canon, addrs, placeholder) = if lower == "localhost" || lower.ends_with(".localhost") {
        let a: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        (lower.to_string(), a, false)
    } else if let Some((canon, addrs)) = hosts::lookup_name(name) {
        (canon, addrs, false)
    } else {
        if lower.is_empty() || lower.len() > 255 {
            return Err(Miss::NoName);
        }
        let i = fakedns::index_for(lower)?;
        let v4 = IpAddr::V4(fakedns::v4(i));
        let v6 = IpAddr::V6(fakedns::v6(i));
        let prefer_v6 = runtime::get()
            .first_hop()
            .map(|p| matches!(p.host, proxify_core::url::Host::Ip(IpAddr::V6(_))))
            .unwrap_or(false);
        let both = if prefer_v6 {
            vec![v6, v4]
        } else {
            vec![v4, v6]
        };
        (fakedns::normalize(name), both, true)
    };
    let pick: Vec<IpAddr> = match family {
        libc::AF_INET => addrs.iter().filter(|a| a.is_ipv4()).copied().collect(),
        libc::AF_INET6 => {
            let v6: Vec<IpAddr> = addrs.iter().filter(|a| a.is_ipv6()).copied().collect();
            if v6.is_empty() && v4mapped {
                addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
                        _ => None,
                    })
                    .collect()
            } else {
                v6
            }
        }
        // AF_UNSPEC: every address the file lists; one placeholder (the family the proxy can
        // be reached with from a socket of that family, IPv4 unless the proxy is IPv6).
        _ if placeholder => addrs.into_iter().take(1).collect(),
        _ => addrs,
    };
    if pick.is_empty() {
        return Err(Miss::NoName);
    }
    Ok(Answer { canon, addrs: pick })
}

/// Is `name` an address literal (including the legacy inet_aton forms glibc accepts)?
fn is_numeric(name: &CStr) -> bool {
    let Ok(s) = name.to_str() else {
        return false;
    };
    if s.split('%').next().unwrap_or(s).parse::<IpAddr>().is_ok() {
        return true;
    }
    let mut a: libc::in_addr = unsafe { std::mem::zeroed() };
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
        return real::getaddrinfo(node, service, hints, res);
    }
    guarded(libc::EAI_FAIL, libc::EIO, || gai(node, service, hints, res))
}

unsafe fn gai(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let rt = runtime::get();
    if !rt.remote_dns() {
        return real::getaddrinfo(node, service, hints, res);
    }
    let mut h: addrinfo = if hints.is_null() {
        let mut d: addrinfo = std::mem::zeroed();
        d.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
        d
    } else {
        *hints
    };
    let flags = h.ai_flags;
    // Numeric hosts (the common, fast case) are answered by libc without any resolver: ask
    // it with AI_NUMERICHOST first; only EAI_NONAME means "a name".
    h.ai_flags |= libc::AI_NUMERICHOST;
    let rc = real::getaddrinfo(node, service, &h, res);
    if rc != libc::EAI_NONAME || flags & libc::AI_NUMERICHOST != 0 {
        return rc;
    }
    let name = CStr::from_ptr(node);
    let Ok(name) = name.to_str() else {
        return libc::EAI_NONAME;
    };
    if !crate::policy::decide::name_goes_remote(name) {
        // Going direct (a rule) or through a chain with local DNS: the system resolver.
        log::debug!("getaddrinfo({name}): resolved locally (its route does not use remote DNS)");
        return real::getaddrinfo(node, service, hints, res);
    }
    if rt.fault == runtime::Fault::PanicResolve {
        panic!("injected fault (PROXIFY_TEST_FAULT=panic-resolve)");
    }
    let ans = match answer(name, h.ai_family, flags & libc::AI_V4MAPPED != 0) {
        Ok(a) => a,
        // The placeholder block is full: the name may well exist, the look-up cannot be
        // served (the one warning line was written by the first).
        Err(Miss::Full) => return libc::EAI_AGAIN,
        Err(Miss::NoName) => {
            log::debug!("getaddrinfo({name}): no address of the requested family");
            return libc::EAI_NONAME;
        }
    };
    log::debug!("getaddrinfo({name}) -> {:?} (no local DNS)", ans.addrs);
    // Each address is turned into glibc's own list by a numeric look-up (no resolver).
    h.ai_flags = (flags | libc::AI_NUMERICHOST) & !(libc::AI_CANONNAME | libc::AI_ADDRCONFIG);
    let mut head: *mut addrinfo = std::ptr::null_mut();
    let mut tail: *mut addrinfo = std::ptr::null_mut();
    for ip in &ans.addrs {
        let Ok(lit) = CString::new(ip.to_string()) else {
            continue;
        };
        let mut part: *mut addrinfo = std::ptr::null_mut();
        let rc = real::getaddrinfo(lit.as_ptr(), service, &h, &mut part);
        if rc != 0 {
            if !head.is_null() {
                real::freeaddrinfo(head);
            }
            return rc;
        }
        if head.is_null() {
            head = part;
        } else {
            (*tail).ai_next = part;
        }
        tail = part;
        while !(*tail).ai_next.is_null() {
            tail = (*tail).ai_next;
        }
    }
    if head.is_null() {
        return libc::EAI_NONAME;
    }
    if flags & libc::AI_CANONNAME != 0 {
        let Ok(c) = CString::new(ans.canon) else {
            real::freeaddrinfo(head);
            return libc::EAI_NONAME;
        };
        // glibc's freeaddrinfo frees ai_canonname with free(): allocate it with strdup.
        (*head).ai_canonname = libc::strdup(c.as_ptr());
    }
    *res = head;
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
    let aliases = addr_list.add(addrs.len() + 1);
    let mut data = (aliases as *mut u8).add(ptr);
    for (i, ip) in addrs.iter().enumerate() {
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, alen);
        *addr_list.add(i) = data as *mut c_char;
        data = data.add(alen);
    }
    *addr_list.add(addrs.len()) = std::ptr::null_mut();
    *aliases = std::ptr::null_mut();
    std::ptr::copy_nonoverlapping(name.as_ptr(), data, name.len());
    *data.add(name.len()) = 0;
    (*ret).h_name = data as *mut c_char;
    (*ret).h_aliases = aliases;
    (*ret).h_addrtype = af;
    (*ret).h_length = alen as c_int;
    (*ret).h_addr_list = addr_list;
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
    if !rt.remote_dns() || name.is_null() || is_numeric(CStr::from_ptr(name)) {
        return None;
    }
    if !result.is_null() {
        *result = std::ptr::null_mut();
    }
    // Some callers (CPython) read the global h_errno even after the _r calls.
    let set_herr = |v: c_int| {
        if !h_errnop.is_null() {
            *h_errnop = v;
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
    let Some(n) = CStr::from_ptr(name).to_str().ok() else {
        set_herr(HOST_NOT_FOUND);
        return Some(libc::ENOENT);
    };
    if !crate::policy::decide::name_goes_remote(n) {
        return None;
    }
    let ans = match answer(n, af, true) {
        Ok(a) => a,
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
    match fill_hostent(&ans.canon, af, &ans.addrs, ret, buf, buflen) {
        Ok(()) => {
            if !result.is_null() {
                *result = ret;
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
    let r = guarded(Some(libc::EIO), libc::EIO, || {
        ghbn_r(name, af, ret, buf, buflen, result, h_errnop)
    });
    match r {
        Some(rc) => rc,
        None => real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop),
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
    let r = guarded(Some(libc::EIO), libc::EIO, || {
        ghbn_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop)
    });
    match r {
        Some(rc) => rc,
        None => real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop),
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
        let s = &mut *s.get();
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
    into_static(|ret, buf, buflen, result, herr| ghbn_r(name, af, ret, buf, buflen, result, herr))
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    match guarded(Some(std::ptr::null_mut()), libc::EIO, || {
        ghbn_static(name, libc::AF_INET)
    }) {
        Some(p) => p,
        None => real::gethostbyname(name),
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    match guarded(Some(std::ptr::null_mut()), libc::EIO, || {
        ghbn_static(name, af)
    }) {
        Some(p) => p,
        None => real::gethostbyname2(name, af),
    }
}

/// The name we know for `ip` without DNS: a placeholder's name, or /etc/hosts.
fn reverse(ip: &IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        v4 => *v4,
    };
    if fakedns::is_placeholder(&ip) {
        return fakedns::name_of(&ip);
    }
    hosts::lookup_addr(&ip)
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
    let pass = || real::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return pass();
    }
    guarded(libc::EAI_FAIL, libc::EIO, || {
        if !runtime::get().remote_dns() {
            return pass();
        }
        let Some(addr) = sockaddr::read(sa, salen) else {
            return pass();
        };
        let numeric = flags | libc::NI_NUMERICHOST;
        match reverse(&addr.ip()) {
            Some(name) => {
                let rc = real::getnameinfo(
                    sa,
                    salen,
                    host,
                    hostlen,
                    serv,
                    servlen,
                    numeric & !libc::NI_NAMEREQD,
                );
                if rc != 0 {
                    return rc;
                }
                if name.len() + 1 > hostlen as usize {
                    return libc::EAI_OVERFLOW;
                }
                std::ptr::copy_nonoverlapping(name.as_ptr(), host as *mut u8, name.len());
                *host.add(name.len()) = 0;
                0
            }
            None if flags & libc::NI_NAMEREQD != 0 => libc::EAI_NONAME,
            None => real::getnameinfo(sa, salen, host, hostlen, serv, servlen, numeric),
        }
    })
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
    let ip: IpAddr = match (ty, len) {
        (libc::AF_INET, 4) => {
            let mut b = [0u8; 4];
            std::ptr::copy_nonoverlapping(addr as *const u8, b.as_mut_ptr(), 4);
            IpAddr::from(b)
        }
        (libc::AF_INET6, 16) => {
            let mut b = [0u8; 16];
            std::ptr::copy_nonoverlapping(addr as *const u8, b.as_mut_ptr(), 16);
            IpAddr::from(b)
        }
        _ => return None,
    };
    if !result.is_null() {
        *result = std::ptr::null_mut();
    }
    // Some callers (CPython) read the global h_errno even after the _r calls.
    let set_herr = |v: c_int| {
        if !h_errnop.is_null() {
            *h_errnop = v;
        }
        set_h_errno(v);
    };
    let Some(name) = reverse(&ip) else {
        set_herr(HOST_NOT_FOUND);
        return Some(libc::ENOENT);
    };
    match fill_hostent(&name, ty, &[ip], ret, buf, buflen) {
        Ok(()) => {
            if !result.is_null() {
                *result = ret;
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
    match guarded(Some(libc::EIO), libc::EIO, || {
        ghba_r(addr, len, ty, ret, buf, buflen, result, h_errnop)
    }) {
        Some(rc) => rc,
        None => real::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop),
    }
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
) -> *mut hostent {
    let r = guarded(Some(std::ptr::null_mut()), libc::EIO, || {
        into_static(|ret, buf, buflen, result, herr| {
            ghba_r(addr, len, ty, ret, buf, buflen, result, herr)
        })
    });
    match r {
        Some(p) => p,
        None => real::gethostbyaddr(addr, len, ty),
    }
}

/// The `res_*` calls send DNS queries themselves: under remote DNS they fail (h_errno
/// NO_RECOVERY) with one log line instead of querying the local resolver.
fn refuse_res(what: &str) -> Option<c_int> {
    let rt = guarded(None, libc::EIO, || Some(runtime::get()))?;
    if !rt.remote_dns() {
        return None;
    }
    log::warn!("refusing {what}(): a local DNS query under remote DNS would leak");
    set_h_errno(NO_RECOVERY);
    Some(-1)
}

macro_rules! res_hooks {
    ($( $name:ident $alias:ident ($($arg:ident: $ty:ty),*); )*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                match refuse_res(stringify!($name)) {
                    Some(r) => r,
                    None => real::$name($($arg),*),
                }
            }
            #[no_mangle]
            pub unsafe extern "C" fn $alias($($arg: $ty),*) -> c_int {
                $name($($arg),*)
            }
        )*
    };
}

res_hooks! {
    res_query __res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_search __res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_querydomain __res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_send __res_send(msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int);
    res_nquery __res_nquery(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_nsearch __res_nsearch(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_nquerydomain __res_nquerydomain(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int);
    res_nsend __res_nsend(statp: *mut c_void, msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int);
}
