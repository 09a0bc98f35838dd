//! Socket helpers over the real libc functions: options, type and family, the local address,
//! the non-blocking toggle, and dissolving a connection. Used by every engine; they never go
//! through proxify's own hooks.

use super::error::{errno, strerror, Failure};
use super::{real, sockaddr};
use libc::{c_int, c_void};
use std::net::SocketAddr;

/// An integer socket option (None if getsockopt failed: errno is set).
pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our int.
    let rc = unsafe {
        real::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

/// SO_TYPE and SO_PROTOCOL of a socket.
pub fn socket_type(fd: c_int) -> Option<(c_int, c_int)> {
    Some((
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0),
    ))
}

/// SO_DOMAIN of a socket (-1 if unknown).
pub fn socket_domain(fd: c_int) -> c_int {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1)
}

/// Reads (and so clears) the kernel's pending socket error.
pub fn so_error(fd: c_int) -> c_int {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our int.
    let rc = unsafe {
        real::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut v as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    if rc == 0 {
        v
    } else {
        errno()
    }
}

/// The socket's local address (getsockname), if it has an Internet one.
pub fn local_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into our storage.
    let rc = unsafe { real::getsockname(fd, &mut st as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel filled `len` bytes of the storage.
    unsafe { sockaddr::read(&st as *const _ as *const libc::sockaddr, len) }
}

/// Is the socket in non-blocking mode?
pub fn is_nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    // SAFETY: fcntl commands used here take an integer argument, no pointer.
    unsafe { real::fcntl(fd, cmd, arg as libc::c_ulong) }
}

/// Closes our control fd `ctrl` that the fd table handed back (`fdtable::forget`), if any.
/// Async-signal-safe: one `close`.
pub fn close_ours(ctrl: Option<c_int>) {
    if let Some(c) = ctrl {
        // SAFETY: one of proxify's own fds, handed back once by the table that owned it.
        unsafe { real::close(c) };
    }
}

/// Dissolves whatever connection `fd` has (connect with AF_UNSPEC), so a failed proxied
/// connect never leaves the socket connected to the proxy.
pub fn disconnect(fd: c_int) {
    let sa = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid AF_UNSPEC sockaddr of its size.
    unsafe {
        real::connect(
            fd,
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Runs `f` with `fd` non-blocking, then puts the file status flags back as the program left
/// them. If `f` fails (or panics) the socket is disconnected again.
pub fn with_nonblocking<T>(
    fd: c_int,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let flags = fcntl(fd, libc::F_GETFL, 0);
    if flags < 0 {
        let e = errno();
        return Err(Failure::new(e, format!("fcntl failed: {}", strerror(e))));
    }
    let mut restore = Restore {
        fd,
        flags,
        blocking: flags & libc::O_NONBLOCK == 0,
        succeeded: false,
    };
    if restore.blocking && fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
        restore.blocking = false;
        let e = errno();
        return Err(Failure::new(e, format!("fcntl failed: {}", strerror(e))));
    }
    let r = f()?;
    restore.succeeded = true;
    Ok(r)
}

/// Puts the socket back as the program left it, on every exit path (errors and panics too):
/// its file status flags, and, unless the handshake succeeded, no connection at all.
struct Restore {
    fd: c_int,
    flags: c_int,
    blocking: bool,
    succeeded: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.succeeded {
            disconnect(self.fd);
        }
        if self.blocking {
            fcntl(self.fd, libc::F_SETFL, self.flags);
        }
    }
}

/// Reads a socket option into `buf`; returns its length, or None if the socket has no such
/// option (or getsockopt failed).
fn sockopt_raw(fd: c_int, level: c_int, name: c_int, buf: &mut [u8]) -> Option<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len and sets len.
    let rc =
        unsafe { real::getsockopt(fd, level, name, buf.as_mut_ptr() as *mut c_void, &mut len) };
    (rc == 0).then_some(len as usize)
}

fn set_raw(fd: c_int, level: c_int, name: c_int, val: &[u8]) -> bool {
    // SAFETY: val is readable for its length; setsockopt only reads it.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val.as_ptr() as *const c_void,
            val.len() as libc::socklen_t,
        ) == 0
    }
}

/// A socket option: (level, name).
type Opt = (c_int, c_int);

/// Options carried over as they are (same level and name in both families), when they differ
/// from a new socket's: a value the program never set is left to the new socket's default.
const CARRIED: &[Opt] = &[
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_LINGER),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO),
    (libc::SOL_SOCKET, libc::SO_MARK),
    (libc::SOL_SOCKET, libc::SO_BINDTODEVICE),
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    (libc::IPPROTO_TCP, libc::TCP_CONGESTION),
    (libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT),
    // The other family's own option is carried too (TRANSLATED); these keep the program's
    // read-back of its own option true where the kernel accepts them on the new socket.
    (libc::IPPROTO_IP, libc::IP_TOS),
    (libc::IPPROTO_IP, libc::IP_TTL),
    (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
];

/// Options whose name differs between the families: (IPv4, IPv6).
const TRANSLATED: &[(Opt, Opt)] = &[
    (
        (libc::IPPROTO_IP, libc::IP_TOS),
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
    ),
    (
        (libc::IPPROTO_IP, libc::IP_TTL),
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
    ),
];

/// Copies option `from` of `old` to option `to` of `new` if the program changed it (it differs
/// between `old` and `new`, a socket fresh from `socket()`). Buffer sizes are doubled by the
/// kernel on the way in, so they are handed over halved.
fn carry(old: c_int, new: c_int, from: Opt, to: Opt, halve: bool) {
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    let Some(la) = sockopt_raw(old, from.0, from.1, &mut a) else {
        return;
    };
    let lb = sockopt_raw(new, to.0, to.1, &mut b).unwrap_or(usize::MAX);
    if lb == la && a[..la] == b[..lb] {
        return;
    }
    let ok = if halve && la == std::mem::size_of::<c_int>() {
        let v = c_int::from_ne_bytes([a[0], a[1], a[2], a[3]]) / 2;
        set_raw(new, to.0, to.1, &v.to_ne_bytes())
    } else {
        set_raw(new, to.0, to.1, &a[..la])
    };
    if !ok {
        log::debug!(
            "replacement socket: option {}/{} not carried over: {}",
            to.0,
            to.1,
            strerror(errno())
        );
    }
}

/// Replaces the unconnected TCP or UDP socket `fd` by a new one of `family` (and the same
/// type), under the same fd number: its file status flags (`O_NONBLOCK`), close-on-exec and every option the program
/// set that exists in both families go with it (`IP_TOS` becomes `IPV6_TCLASS`, `IP_TTL`
/// `IPV6_UNICAST_HOPS`). For a proxy this socket's family cannot reach. A socket the program
/// bound to an address of its own is refused (`EADDRNOTAVAIL`): that address cannot be kept.
pub fn replace_family(fd: c_int, family: c_int) -> Result<(), Failure> {
    // A wildcard bind keeps its port (the other family's wildcard); an address cannot be kept.
    let keep_port = match local_addr(fd) {
        Some(local) if !local.ip().is_unspecified() => {
            return Err(Failure::new(
                libc::EADDRNOTAVAIL,
                format!(
                    "the socket is bound to {local}, and the proxy has no address of that family"
                ),
            ))
        }
        Some(local) => local.port(),
        None => 0,
    };
    let fl = fcntl(fd, libc::F_GETFL, 0);
    let fdfl = fcntl(fd, libc::F_GETFD, 0);
    if fl < 0 || fdfl < 0 {
        let e = errno();
        return Err(Failure::new(e, format!("fcntl failed: {}", strerror(e))));
    }
    let ty = match socket_type(fd) {
        Some((t @ (libc::SOCK_STREAM | libc::SOCK_DGRAM), _)) => t,
        _ => {
            return Err(Failure::new(
                libc::EAFNOSUPPORT,
                "only a TCP or UDP socket can be replaced for the proxy's family",
            ))
        }
    };
    // SAFETY: socket() takes no pointers; the new fd is ours until dup3 puts it in place.
    let new = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if new < 0 {
        let e = errno();
        return Err(Failure::new(
            e,
            format!("cannot create a socket for the proxy: {}", strerror(e)),
        ));
    }
    let old_family = socket_domain(fd);
    for &opt in CARRIED {
        carry(fd, new, opt, opt, false);
    }
    for &(v4, v6) in TRANSLATED {
        let (from, to) = if old_family == libc::AF_INET {
            (v4, v6)
        } else {
            (v6, v4)
        };
        carry(fd, new, from, to, false);
    }
    for name in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        carry(
            fd,
            new,
            (libc::SOL_SOCKET, name),
            (libc::SOL_SOCKET, name),
            true,
        );
    }
    if keep_port != 0 {
        if family == libc::AF_INET6 {
            // The old socket holds the IPv4 wildcard's port until dup3: an IPv6-only wildcard
            // does not collide with it (and the new socket only ever talks to the proxy).
            set_raw(
                new,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                &1i32.to_ne_bytes(),
            );
        }
        let any: std::net::IpAddr = if family == libc::AF_INET6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let (st, len) = sockaddr::to_storage(&SocketAddr::new(any, keep_port));
        // SAFETY: st is a valid sockaddr of len bytes; new is our socket.
        if unsafe { real::bind(new, &st as *const _ as *const libc::sockaddr, len) } != 0 {
            let e = errno();
            // SAFETY: new is ours and not yet visible to the program.
            unsafe { real::close(new) };
            return Err(Failure::new(
                e,
                format!(
                    "cannot keep the socket's port {keep_port} on a socket of the proxy's family: {}",
                    strerror(e)
                ),
            ));
        }
    }
    fcntl(new, libc::F_SETFL, fl);
    let cloexec = if fdfl & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: dup3 over the program's fd: it names the replacement from now on (the old
    // socket is closed by the kernel, atomically); `new` is our own copy, closed after.
    let rc = unsafe { real::dup3(new, fd, cloexec) };
    let e = errno();
    // SAFETY: `new` is the socket created above; nothing else knows its number.
    unsafe { real::close(new) };
    if rc < 0 {
        return Err(Failure::new(
            e,
            format!("cannot replace the socket: {}", strerror(e)),
        ));
    }
    Ok(())
}
