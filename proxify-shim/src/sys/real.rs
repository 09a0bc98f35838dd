//! The real libc functions, found once with `dlsym(RTLD_NEXT, ...)`.
//!
//! Each wrapper resolves its symbol on first use and caches the pointer in an atomic, so a hook
//! that runs before our constructor (another library's constructor calling `connect`) still
//! works, and the constructor resolves them all up front so later calls never enter `dlsym`.

use libc::{c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t, ssize_t};
use std::sync::atomic::{AtomicUsize, Ordering};

// The one place that may call libc's `dlsym` itself (the hook would answer with ours).
#[allow(clippy::disallowed_methods)]
fn lookup(name: &'static [u8]) -> usize {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
    if p == 0 && name == b"fcntl64\0" {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"fcntl".as_ptr()) } as usize;
    }
    p
}

/// Resolves `name` (NUL-terminated) in the libraries after ours. Aborts if a libc function we
/// interpose does not exist when it is called: nothing sensible can be done and carrying on
/// could leak.
#[cold]
fn resolve(name: &'static [u8], slot: &AtomicUsize) -> usize {
    let p = lookup(name);
    if p == 0 {
        // No message: every way to write one goes through a function we interpose.
        // SAFETY: abort takes no argument and does not return.
        unsafe { libc::abort() };
    }
    slot.store(p, Ordering::Relaxed);
    p
}

macro_rules! real_fns {
    ($( fn $name:ident = $sym:literal ($($arg:ident: $ty:ty),*) -> $ret:ty; )*) => {
        /// One cached pointer per real function (0 = not resolved yet).
        #[allow(non_upper_case_globals)]
        mod slot {
            use std::sync::atomic::AtomicUsize;
            $( pub static $name: AtomicUsize = AtomicUsize::new(0); )*
        }
        $(
            #[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let p = slot::$name.load(Ordering::Relaxed);
                if p == 0 {
                    // Out of line, so that the resolved path is a plain tail call: a hook's
                    // fast path then saves no registers around it (bench row 3).
                    // SAFETY: the caller's contract, passed on.
                    return unsafe { first::$name($($arg),*) };
                }
                // SAFETY: `p` is the non-zero address dlsym gave for `$sym`, a C function with
                // this signature.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller meets `$sym`'s C contract for these arguments (this
                // function's only requirement).
                unsafe { f($($arg),*) }
            }
        )*
        /// The first call of each wrapper, before its symbol is resolved.
        mod first {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
                #[cold]
                #[inline(never)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let p = resolve(concat!($sym, "\0").as_bytes(), &super::slot::$name);
                    let f: unsafe extern "C" fn($($ty),*) -> $ret =
                        // SAFETY: `p` is the non-zero address dlsym gave for `$sym`, a C
                        // function with this signature.
                        unsafe { std::mem::transmute(p) };
                    // SAFETY: the caller meets `$sym`'s C contract for these arguments.
                    unsafe { f($($arg),*) }
                }
            )*
        }
        /// Resolves every symbol now (called from the constructor).
        pub fn resolve_all() {
            $( if slot::$name.load(Ordering::Relaxed) == 0 {
                slot::$name.store(lookup(concat!($sym, "\0").as_bytes()), Ordering::Relaxed);
            } )*
        }
    };
}

real_fns! {
    fn connect = "connect"(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn getpeername = "getpeername"(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn close = "close"(fd: c_int) -> c_int;
    fn dup = "dup"(fd: c_int) -> c_int;
    fn dup2 = "dup2"(fd: c_int, fd2: c_int) -> c_int;
    fn dup3 = "dup3"(fd: c_int, fd2: c_int, flags: c_int) -> c_int;
    fn fcntl = "fcntl64"(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int;
    fn close_range = "close_range"(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int;
    fn closefrom = "closefrom"(first: c_int) -> ();
    fn sendto = "sendto"(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    fn sendmsg = "sendmsg"(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t;
    fn sendmmsg = "sendmmsg"(fd: c_int, msgs: *mut libc::mmsghdr, n: libc::c_uint, flags: c_int) -> c_int;
    fn send = "send"(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    fn recv = "recv"(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t;
    fn getaddrinfo = "getaddrinfo"(node: *const c_char, service: *const c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int;
    fn getaddrinfo_a = "getaddrinfo_a"(mode: c_int, list: *mut *mut c_void, n: c_int, sev: *mut c_void) -> c_int;
    fn freeaddrinfo = "freeaddrinfo"(ai: *mut libc::addrinfo) -> ();
    fn getnameinfo = "getnameinfo"(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int;
    fn gethostbyname = "gethostbyname"(name: *const c_char) -> *mut hostent;
    fn gethostbyname2 = "gethostbyname2"(name: *const c_char, af: c_int) -> *mut hostent;
    fn gethostbyname_r = "gethostbyname_r"(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fn gethostbyname2_r = "gethostbyname2_r"(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fn gethostbyaddr = "gethostbyaddr"(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut hostent;
    fn gethostbyaddr_r = "gethostbyaddr_r"(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fn read = "read"(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn write = "write"(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn readv = "readv"(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    fn writev = "writev"(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t;
    fn recvfrom = "recvfrom"(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    fn recvmsg = "recvmsg"(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t;
    fn recvmmsg = "recvmmsg"(fd: c_int, msgs: *mut libc::mmsghdr, n: libc::c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    fn listen = "listen"(fd: c_int, backlog: c_int) -> c_int;
    fn accept = "accept"(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4 = "accept4"(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn getsockname = "getsockname"(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn bind = "bind"(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn res_query = "res_query"(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_search = "res_search"(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_querydomain = "res_querydomain"(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_send = "res_send"(msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_nquery = "res_nquery"(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_nsearch = "res_nsearch"(statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_nquerydomain = "res_nquerydomain"(statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn res_nsend = "res_nsend"(statp: *mut c_void, msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int) -> c_int;
    fn execve = "execve"(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn execvpe = "execvpe"(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn fexecve = "fexecve"(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn execveat = "execveat"(dirfd: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: c_int) -> c_int;
    fn posix_spawn = "posix_spawn"(pid: *mut libc::pid_t, path: *const c_char, actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn posix_spawnp = "posix_spawnp"(pid: *mut libc::pid_t, file: *const c_char, actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn system = "system"(command: *const c_char) -> c_int;
    fn popen = "popen"(command: *const c_char, mode: *const c_char) -> *mut libc::FILE;
    fn poll = "poll"(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int;
    fn ppoll = "ppoll"(fds: *mut libc::pollfd, n: libc::nfds_t, tmo: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    fn poll_chk = "__poll_chk"(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn ppoll_chk = "__ppoll_chk"(fds: *mut libc::pollfd, n: libc::nfds_t, tmo: *const libc::timespec, sigmask: *const libc::sigset_t, fdslen: size_t) -> c_int;
    fn select = "select"(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, tmo: *mut libc::timeval) -> c_int;
    fn pselect = "pselect"(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, tmo: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    fn epoll_ctl = "epoll_ctl"(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int;
    fn epoll_wait = "epoll_wait"(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int;
    fn epoll_pwait = "epoll_pwait"(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: c_int, sigmask: *const libc::sigset_t) -> c_int;
    fn epoll_pwait2 = "epoll_pwait2"(epfd: c_int, ev: *mut libc::epoll_event, max: c_int, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> c_int;
    fn shutdown = "shutdown"(fd: c_int, how: c_int) -> c_int;
    fn rcmd = "rcmd"(ahost: *mut *mut c_char, port: libc::c_ushort, locuser: *const c_char, remuser: *const c_char, cmd: *const c_char, fd2p: *mut c_int) -> c_int;
    fn rcmd_af = "rcmd_af"(ahost: *mut *mut c_char, port: libc::c_ushort, locuser: *const c_char, remuser: *const c_char, cmd: *const c_char, fd2p: *mut c_int, af: libc::sa_family_t) -> c_int;
    fn rexec = "rexec"(ahost: *mut *mut c_char, port: c_int, user: *const c_char, passwd: *const c_char, cmd: *const c_char, fd2p: *mut c_int) -> c_int;
    fn rexec_af = "rexec_af"(ahost: *mut *mut c_char, port: c_int, user: *const c_char, passwd: *const c_char, cmd: *const c_char, fd2p: *mut c_int, af: libc::sa_family_t) -> c_int;
    fn ruserok = "ruserok"(rhost: *const c_char, superuser: c_int, ruser: *const c_char, luser: *const c_char) -> c_int;
    fn ruserok_af = "ruserok_af"(rhost: *const c_char, superuser: c_int, ruser: *const c_char, luser: *const c_char, af: libc::sa_family_t) -> c_int;
    fn iruserok = "iruserok"(raddr: u32, superuser: c_int, ruser: *const c_char, luser: *const c_char) -> c_int;
    fn iruserok_af = "iruserok_af"(raddr: *const c_void, superuser: c_int, ruser: *const c_char, luser: *const c_char, af: libc::sa_family_t) -> c_int;
    fn getnetbyname = "getnetbyname"(name: *const c_char) -> *mut c_void;
    fn getnetbyaddr = "getnetbyaddr"(net: u32, ty: c_int) -> *mut c_void;
    fn getnetbyname_r = "getnetbyname_r"(name: *const c_char, ret: *mut c_void, buf: *mut c_char, buflen: size_t, result: *mut *mut c_void, h_errnop: *mut c_int) -> c_int;
    fn getnetbyaddr_r = "getnetbyaddr_r"(net: u32, ty: c_int, ret: *mut c_void, buf: *mut c_char, buflen: size_t, result: *mut *mut c_void, h_errnop: *mut c_int) -> c_int;
    fn getsockopt = "getsockopt"(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
}

/// The real variadic `syscall` (Rust can call a variadic function, not define one).
#[allow(clippy::too_many_arguments)]
pub unsafe fn syscall6(
    n: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let mut p = SLOT.load(Ordering::Relaxed);
    if p == 0 {
        p = resolve(b"syscall\0", &SLOT);
    }
    // SAFETY: `p` is the non-zero address dlsym gave for libc's variadic `syscall`.
    let f: unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long =
        unsafe { std::mem::transmute(p) };
    // SAFETY: the caller passes arguments valid for syscall `n` (this function's requirement);
    // the unused trailing ones are plain integers the kernel ignores.
    unsafe { f(n, a1, a2, a3, a4, a5, a6) }
}
