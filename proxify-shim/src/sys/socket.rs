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
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    let rc = unsafe { real::getsockname(fd, &mut st as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    unsafe { sockaddr::read(&st as *const _ as *const libc::sockaddr, len) }
}

/// Is the socket in non-blocking mode?
pub fn is_nonblocking(fd: c_int) -> bool {
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    unsafe { real::fcntl(fd, cmd, arg as libc::c_ulong) }
}

/// Dissolves whatever connection `fd` has (connect with AF_UNSPEC), so a failed proxied
/// connect never leaves the socket connected to the proxy.
pub fn disconnect(fd: c_int) {
    let sa = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
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
