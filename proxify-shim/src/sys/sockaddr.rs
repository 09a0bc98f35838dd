//! Conversions between C socket addresses and `std::net::SocketAddr`.

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Reads an AF_INET/AF_INET6 address; None for other families or a short length.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: `addr` is non-null with `len` >= sizeof(sa_family_t) readable bytes (the contract).
    match unsafe { (*addr).sa_family } as c_int {
        libc::AF_INET if len as usize >= std::mem::size_of::<sockaddr_in>() => {
            // SAFETY: the family is AF_INET and `len` >= sizeof(sockaddr_in) bytes are readable.
            let a = unsafe { &*(addr as *const sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        // 24 bytes is the RFC 2133 sockaddr_in6 without scope id, which the kernel accepts.
        libc::AF_INET6 if len as usize >= 24 => {
            let a = addr as *const sockaddr_in6;
            let scope = if len as usize >= std::mem::size_of::<sockaddr_in6>() {
                // SAFETY: `len` >= sizeof(sockaddr_in6), so sin6_scope_id is within the bytes.
                unsafe { (*a).sin6_scope_id }
            } else {
                0
            };
            // SAFETY: `len` >= 24 readable bytes cover sin6_port, sin6_flowinfo and sin6_addr.
            let (ip, port, flow) =
                unsafe { ((*a).sin6_addr.s6_addr, (*a).sin6_port, (*a).sin6_flowinfo) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be(port),
                u32::from_be(flow),
                scope,
            )))
        }
        _ => None,
    }
}

/// The family field, if readable.
///
/// # Safety
/// As for [`read`].
#[inline(always)]
pub unsafe fn family(addr: *const sockaddr, len: socklen_t) -> Option<c_int> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        None
    } else {
        // SAFETY: `addr` is non-null with `len` >= sizeof(sa_family_t) readable bytes (contract).
        Some(unsafe { (*addr).sa_family } as c_int)
    }
}

/// Encodes `a` for the kernel.
pub fn to_storage(a: &SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(&mut st as *mut _ as *mut sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut st as *mut _ as *mut sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo().to_be();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<sockaddr_in6>()
        }
    };
    (st, len as socklen_t)
}

/// Writes `a` to a caller's buffer as getpeername/getsockname/recvfrom do: truncates to the
/// buffer and stores the full length in `*len`.
///
/// # Safety
/// `out` must point to `*len` writable bytes, `len` must be valid.
pub unsafe fn write_out(a: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) {
    let (st, full) = to_storage(a);
    // SAFETY: `len` is valid to read (the caller's contract).
    let n = unsafe { *len }.min(full) as usize;
    // SAFETY: `out` has `*len` >= `n` writable bytes (the contract), `st` has `full` >= `n`, and
    // the local `st` cannot overlap the caller's buffer.
    unsafe { std::ptr::copy_nonoverlapping(&st as *const _ as *const u8, out as *mut u8, n) };
    // SAFETY: `len` is valid to write (the caller's contract).
    unsafe { *len = full };
}

/// Expresses `a` in the socket's family: an IPv4 address on an AF_INET6 socket becomes
/// IPv4-mapped. None when it cannot be expressed (IPv6 on an AF_INET socket).
pub fn for_family(a: SocketAddr, family: c_int) -> Option<SocketAddr> {
    match (family, a) {
        (libc::AF_INET, SocketAddr::V4(_)) | (libc::AF_INET6, SocketAddr::V6(_)) => Some(a),
        (libc::AF_INET6, SocketAddr::V4(v4)) => Some(SocketAddr::new(
            IpAddr::V6(v4.ip().to_ipv6_mapped()),
            v4.port(),
        )),
        (libc::AF_INET, SocketAddr::V6(v6)) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
        _ => None,
    }
}

/// IPv4-mapped IPv6 addresses are judged (and sent to the proxy) as the IPv4 address.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The address family of `a` (AF_INET or AF_INET6).
pub fn af(a: &SocketAddr) -> c_int {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}
