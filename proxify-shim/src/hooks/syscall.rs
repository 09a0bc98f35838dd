//! `syscall()`: a program that calls `syscall(SYS_connect, ...)` (or sendto, close, dup2, ...)
//! directly gets the same hooks as through the libc wrappers. Everything else goes to libc's
//! `syscall` unchanged. (The variadic entry point is in `csrc/variadic.c`.)

use crate::hooks::{connect, exec, fd, io, listen, poll, sockopt, udp};
use crate::sys::real;
use libc::{c_int, c_long, c_uint, c_void};

#[no_mangle]
pub unsafe extern "C" fn proxify_syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let i = |x: c_long| x as c_int;
    let p = |x: c_long| x as *mut c_void;
    match n {
        libc::SYS_connect => connect::connect(i(a1), p(a2) as _, a3 as _) as c_long,
        libc::SYS_getpeername => connect::getpeername(i(a1), p(a2) as _, p(a3) as _) as c_long,
        libc::SYS_sendto => {
            udp::sendto(i(a1), p(a2), a3 as _, i(a4), p(a5) as _, a6 as _) as c_long
        }
        libc::SYS_sendmsg => udp::sendmsg(i(a1), p(a2) as _, i(a3)) as c_long,
        libc::SYS_sendmmsg => udp::sendmmsg(i(a1), p(a2) as _, a3 as c_uint, i(a4)) as c_long,
        libc::SYS_recvfrom => {
            udp::recvfrom(i(a1), p(a2), a3 as _, i(a4), p(a5) as _, p(a6) as _) as c_long
        }
        libc::SYS_recvmsg => udp::recvmsg(i(a1), p(a2) as _, i(a3)) as c_long,
        libc::SYS_recvmmsg => {
            udp::recvmmsg(i(a1), p(a2) as _, a3 as c_uint, i(a4), p(a5) as _) as c_long
        }
        libc::SYS_read => io::read(i(a1), p(a2), a3 as _) as c_long,
        libc::SYS_write => io::write(i(a1), p(a2), a3 as _) as c_long,
        libc::SYS_readv => io::readv(i(a1), p(a2) as _, i(a3)) as c_long,
        libc::SYS_writev => io::writev(i(a1), p(a2) as _, i(a3)) as c_long,
        libc::SYS_close => fd::close(i(a1)) as c_long,
        libc::SYS_close_range => fd::close_range(a1 as c_uint, a2 as c_uint, i(a3)) as c_long,
        libc::SYS_dup => fd::dup(i(a1)) as c_long,
        libc::SYS_dup2 => fd::dup2(i(a1), i(a2)) as c_long,
        libc::SYS_dup3 => fd::dup3(i(a1), i(a2), i(a3)) as c_long,
        libc::SYS_fcntl => fd::proxify_fcntl(i(a1), i(a2), a3 as _) as c_long,
        libc::SYS_bind => listen::bind(i(a1), p(a2) as _, a3 as _) as c_long,
        libc::SYS_listen => listen::listen(i(a1), i(a2)) as c_long,
        libc::SYS_accept => listen::accept(i(a1), p(a2) as _, p(a3) as _) as c_long,
        libc::SYS_accept4 => listen::accept4(i(a1), p(a2) as _, p(a3) as _, i(a4)) as c_long,
        libc::SYS_getsockname => listen::getsockname(i(a1), p(a2) as _, p(a3) as _) as c_long,
        libc::SYS_getsockopt => {
            sockopt::getsockopt(i(a1), i(a2), i(a3), p(a4), p(a5) as _) as c_long
        }
        // Readiness waits (a pending non-blocking handshake is driven there). pselect6 is
        // not routed: a handshake waited on that way still completes, without overlap.
        libc::SYS_ppoll => poll::ppoll(p(a1) as _, a2 as _, p(a3) as _, p(a4) as _) as c_long,
        libc::SYS_epoll_ctl => poll::epoll_ctl(i(a1), i(a2), i(a3), p(a4) as _) as c_long,
        libc::SYS_epoll_pwait => {
            poll::epoll_pwait(i(a1), p(a2) as _, i(a3), i(a4), p(a5) as _) as c_long
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll => poll::poll(p(a1) as _, a2 as _, i(a3)) as c_long,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select => {
            poll::select(i(a1), p(a2) as _, p(a3) as _, p(a4) as _, p(a5) as _) as c_long
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait => poll::epoll_wait(i(a1), p(a2) as _, i(a3), i(a4)) as c_long,
        libc::SYS_execve => exec::execve(p(a1) as _, p(a2) as _, p(a3) as _) as c_long,
        libc::SYS_execveat => {
            exec::execveat(i(a1), p(a2) as _, p(a3) as _, p(a4) as _, i(a5)) as c_long
        }
        libc::SYS_io_uring_setup => {
            io_uring_note();
            real::syscall6(n, a1, a2, a3, a4, a5, a6)
        }
        _ => real::syscall6(n, a1, a2, a3, a4, a5, a6),
    }
}

/// io_uring submissions never pass through libc: say so (once, at `-v`).
#[cold]
fn io_uring_note() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        crate::sys::guard::guarded((), 0, || {
            log::info!(
                "the program set up io_uring: connects and I/O it submits there are not seen \
                 by proxify (README, Limits)"
            )
        });
    }
}
