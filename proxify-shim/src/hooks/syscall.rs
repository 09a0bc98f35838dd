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
        // SAFETY: the program's raw SYS_connect arguments, under connect's contract.
        libc::SYS_connect => unsafe { connect::connect(i(a1), p(a2) as _, a3 as _) as c_long },
        // SAFETY: the program's raw SYS_getpeername arguments, under getpeername's contract.
        libc::SYS_getpeername => unsafe {
            connect::getpeername(i(a1), p(a2) as _, p(a3) as _) as c_long
        },
        libc::SYS_sendto => {
            // SAFETY: the program's raw SYS_sendto arguments, under sendto's contract.
            unsafe { udp::sendto(i(a1), p(a2), a3 as _, i(a4), p(a5) as _, a6 as _) as c_long }
        }
        // SAFETY: the program's raw SYS_sendmsg arguments, under sendmsg's contract.
        libc::SYS_sendmsg => unsafe { udp::sendmsg(i(a1), p(a2) as _, i(a3)) as c_long },
        // SAFETY: the program's raw SYS_sendmmsg arguments, under sendmmsg's contract.
        libc::SYS_sendmmsg => unsafe {
            udp::sendmmsg(i(a1), p(a2) as _, a3 as c_uint, i(a4)) as c_long
        },
        libc::SYS_recvfrom => {
            // SAFETY: the program's raw SYS_recvfrom arguments, under recvfrom's contract.
            unsafe { udp::recvfrom(i(a1), p(a2), a3 as _, i(a4), p(a5) as _, p(a6) as _) as c_long }
        }
        // SAFETY: the program's raw SYS_recvmsg arguments, under recvmsg's contract.
        libc::SYS_recvmsg => unsafe { udp::recvmsg(i(a1), p(a2) as _, i(a3)) as c_long },
        libc::SYS_recvmmsg => {
            // SAFETY: the program's raw SYS_recvmmsg arguments, under recvmmsg's contract.
            unsafe { udp::recvmmsg(i(a1), p(a2) as _, a3 as c_uint, i(a4), p(a5) as _) as c_long }
        }
        // SAFETY: the program's raw SYS_read arguments, under read's contract.
        libc::SYS_read => unsafe { io::read(i(a1), p(a2), a3 as _) as c_long },
        // SAFETY: the program's raw SYS_write arguments, under write's contract.
        libc::SYS_write => unsafe { io::write(i(a1), p(a2), a3 as _) as c_long },
        // SAFETY: the program's raw SYS_readv arguments, under readv's contract.
        libc::SYS_readv => unsafe { io::readv(i(a1), p(a2) as _, i(a3)) as c_long },
        // SAFETY: the program's raw SYS_writev arguments, under writev's contract.
        libc::SYS_writev => unsafe { io::writev(i(a1), p(a2) as _, i(a3)) as c_long },
        // SAFETY: the program's raw SYS_close arguments, under close's contract.
        libc::SYS_close => unsafe { fd::close(i(a1)) as c_long },
        // SAFETY: the program's raw SYS_close_range arguments, under close_range's contract.
        libc::SYS_close_range => unsafe {
            fd::close_range(a1 as c_uint, a2 as c_uint, i(a3)) as c_long
        },
        // SAFETY: the program's raw SYS_dup arguments, under dup's contract.
        libc::SYS_dup => unsafe { fd::dup(i(a1)) as c_long },
        // SAFETY: the program's raw SYS_dup2 arguments, under dup2's contract.
        libc::SYS_dup2 => unsafe { fd::dup2(i(a1), i(a2)) as c_long },
        // SAFETY: the program's raw SYS_dup3 arguments, under dup3's contract.
        libc::SYS_dup3 => unsafe { fd::dup3(i(a1), i(a2), i(a3)) as c_long },
        // SAFETY: the program's raw SYS_fcntl arguments, under fcntl's contract.
        libc::SYS_fcntl => unsafe { fd::proxify_fcntl(i(a1), i(a2), a3 as _) as c_long },
        // SAFETY: the program's raw SYS_bind arguments, under bind's contract.
        libc::SYS_bind => unsafe { listen::bind(i(a1), p(a2) as _, a3 as _) as c_long },
        // SAFETY: the program's raw SYS_listen arguments, under listen's contract.
        libc::SYS_listen => unsafe { listen::listen(i(a1), i(a2)) as c_long },
        // SAFETY: the program's raw SYS_accept arguments, under accept's contract.
        libc::SYS_accept => unsafe { listen::accept(i(a1), p(a2) as _, p(a3) as _) as c_long },
        // SAFETY: the program's raw SYS_accept4 arguments, under accept4's contract.
        libc::SYS_accept4 => unsafe {
            listen::accept4(i(a1), p(a2) as _, p(a3) as _, i(a4)) as c_long
        },
        // SAFETY: the program's raw SYS_getsockname arguments, under getsockname's contract.
        libc::SYS_getsockname => unsafe {
            listen::getsockname(i(a1), p(a2) as _, p(a3) as _) as c_long
        },
        libc::SYS_getsockopt => {
            // SAFETY: the program's raw SYS_getsockopt arguments, under getsockopt's contract.
            unsafe { sockopt::getsockopt(i(a1), i(a2), i(a3), p(a4), p(a5) as _) as c_long }
        }
        // Readiness waits (a pending non-blocking handshake is driven there). pselect6 is
        // not routed: a handshake waited on that way still completes, without overlap.
        // SAFETY: the program's raw SYS_ppoll arguments, under ppoll's contract.
        libc::SYS_ppoll => unsafe {
            poll::ppoll(p(a1) as _, a2 as _, p(a3) as _, p(a4) as _) as c_long
        },
        // SAFETY: the program's raw SYS_epoll_ctl arguments, under epoll_ctl's contract.
        libc::SYS_epoll_ctl => unsafe {
            poll::epoll_ctl(i(a1), i(a2), i(a3), p(a4) as _) as c_long
        },
        libc::SYS_epoll_pwait => {
            // SAFETY: the program's raw SYS_epoll_pwait arguments, under epoll_pwait's contract.
            unsafe { poll::epoll_pwait(i(a1), p(a2) as _, i(a3), i(a4), p(a5) as _) as c_long }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the program's raw SYS_poll arguments, under poll's contract.
        libc::SYS_poll => unsafe { poll::poll(p(a1) as _, a2 as _, i(a3)) as c_long },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select => {
            // SAFETY: the program's raw SYS_select arguments, under select's contract.
            unsafe { poll::select(i(a1), p(a2) as _, p(a3) as _, p(a4) as _, p(a5) as _) as c_long }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the program's raw SYS_epoll_wait arguments, under epoll_wait's contract.
        libc::SYS_epoll_wait => unsafe {
            poll::epoll_wait(i(a1), p(a2) as _, i(a3), i(a4)) as c_long
        },
        // SAFETY: the program's raw SYS_execve arguments, under execve's contract.
        libc::SYS_execve => unsafe { exec::execve(p(a1) as _, p(a2) as _, p(a3) as _) as c_long },
        libc::SYS_execveat => {
            // SAFETY: the program's raw SYS_execveat arguments, under execveat's contract.
            unsafe { exec::execveat(i(a1), p(a2) as _, p(a3) as _, p(a4) as _, i(a5)) as c_long }
        }
        libc::SYS_io_uring_setup => {
            io_uring_note();
            // SAFETY: the program's own syscall number and arguments, unchanged, to libc's syscall.
            unsafe { real::syscall6(n, a1, a2, a3, a4, a5, a6) }
        }
        // SAFETY: the program's own syscall number and arguments, unchanged, to libc's syscall.
        _ => unsafe { real::syscall6(n, a1, a2, a3, a4, a5, a6) },
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
