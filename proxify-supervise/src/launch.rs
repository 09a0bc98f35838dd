//! Starting a supervised command: the child sets no_new_privs, installs the filter with a
//! listener, hands the listener to us over a socketpair (SCM_RIGHTS) and execs the command.

use crate::filter;
use crate::sys::{self, errno};
use libc::c_int;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The signals forwarded to the command (when sent to us by another process; those a
/// terminal sends reach the whole process group by themselves).
pub const FORWARDED: [c_int; 9] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
];

pub enum Started {
    /// Supervised: the child and the listener.
    Supervised(Child, c_int),
    /// The kernel refused the filter (errno), and --allow-unproxied let it run anyway.
    Unsupervised(Child, c_int),
}

pub enum LaunchError {
    /// The kernel refused the filter (errno); the command did not run.
    Filter(c_int),
    /// The command could not be run (exec failed).
    Exec(io::Error),
    Other(String),
}

/// `killable`: ask for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+: once we have
/// taken a notification, only a fatal signal interrupts the call). Without it (older kernels,
/// or `PROXIFY_TEST_FAULT=no-killable-wait` in tests), a signal interrupts a call we are
/// working on, and with SA_RESTART the kernel restarts it as a new notification.
fn install_filter(prog: &[libc::sock_filter], killable: bool) -> Result<c_int, c_int> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain system calls; `fprog` points at the program, alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(errno());
        }
        let mut flags = sys::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if killable {
            flags |= sys::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        }
        loop {
            let fd = libc::syscall(
                libc::SYS_seccomp,
                sys::SECCOMP_SET_MODE_FILTER as libc::c_long,
                flags as libc::c_long,
                &fprog as *const libc::sock_fprog,
            );
            if fd >= 0 {
                return Ok(fd as c_int);
            }
            let e = errno();
            // Before Linux 5.19 there is no killable wait: work without it.
            if e == libc::EINVAL && flags & sys::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
                flags &= !sys::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
                continue;
            }
            return Err(e);
        }
    }
}

fn pipe() -> Result<(c_int, c_int), LaunchError> {
    let mut p = [-1 as c_int; 2];
    // SAFETY: `p` receives two fds.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Other(format!(
            "pipe failed: {}",
            sys::strerror(errno())
        )));
    }
    Ok((p[0], p[1]))
}

/// Writes all of `b` (async-signal-safe).
fn write_all(fd: c_int, b: &[u8]) -> bool {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: writes from a live buffer.
        let n = unsafe { libc::write(fd, b[off..].as_ptr() as *const libc::c_void, b.len() - off) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        off += n as usize;
    }
    true
}

/// Reads exactly `b.len()` bytes, or fewer at EOF (async-signal-safe).
fn read_full(fd: c_int, b: &mut [u8]) -> usize {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: reads into a live buffer.
        let n = unsafe {
            libc::read(
                fd,
                b[off..].as_mut_ptr() as *mut libc::c_void,
                b.len() - off,
            )
        };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            break;
        }
        off += n as usize;
    }
    off
}

/// Starts `cmd` under the filter. `old_mask` is the signal mask to give the command (ours
/// blocks the forwarded signals and SIGCHLD for the signalfd).
///
/// The listener crosses without sendmsg (which the filter notifies, with nobody yet to
/// answer): the child writes its pid and the listener's number to a pipe and waits; a thread
/// of ours takes the fd with pidfd_getfd and says so; the child closes its copy and execs.
pub fn start(
    cmd: &mut Command,
    allow_unproxied: bool,
    old_mask: libc::sigset_t,
) -> Result<Started, LaunchError> {
    let (info_r, info_w) = pipe()?;
    let (ack_r, ack_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            sys::close(info_r);
            sys::close(info_w);
            return Err(e);
        }
    };
    let prog = filter::program();
    let killable = std::env::var("PROXIFY_TEST_FAULT").as_deref() != Ok("no-killable-wait");
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (sigprocmask, prctl, seccomp, getpid, write, read, close) on memory prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
            let mut msg = [0u8; 9];
            match install_filter(&prog, killable) {
                Ok(fd) => {
                    msg[0] = b'F';
                    msg[1..5].copy_from_slice(&libc::getpid().to_ne_bytes());
                    msg[5..9].copy_from_slice(&fd.to_ne_bytes());
                    let mut ack = [0u8; 1];
                    let ok = write_all(info_w, &msg) && read_full(ack_r, &mut ack) == 1;
                    libc::close(fd);
                    if ok && ack[0] == b'Y' {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(libc::EPIPE))
                    }
                }
                Err(e) => {
                    msg[0] = b'E';
                    msg[5..9].copy_from_slice(&e.to_ne_bytes());
                    write_all(info_w, &msg);
                    if allow_unproxied {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(e))
                    }
                }
            }
        });
    }
    // What the child said: Ok(our listener) or Err(errno of the filter); None: nothing.
    let taker = std::thread::spawn(move || -> Option<Result<c_int, c_int>> {
        let mut msg = [0u8; 9];
        let n = read_full(info_r, &mut msg);
        sys::close(info_r);
        let r = if n != 9 {
            None
        } else {
            let pid = i32::from_ne_bytes(msg[1..5].try_into().unwrap());
            let num = i32::from_ne_bytes(msg[5..9].try_into().unwrap());
            match msg[0] {
                b'F' => {
                    let got = sys::pidfd_open(pid).and_then(|pfd| {
                        let r = sys::pidfd_getfd(pfd, num);
                        sys::close(pfd);
                        r
                    });
                    write_all(ack_w, if got.is_ok() { b"Y" } else { b"N" });
                    Some(got.map_err(|e| -e))
                }
                _ => Some(Err(num)),
            }
        };
        sys::close(ack_w);
        r
    });
    let spawned = cmd.spawn();
    sys::close(info_w);
    sys::close(ack_r);
    let said = taker.join().ok().flatten();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if let Some(Ok(fd)) = said {
                sys::close(fd);
            }
            return Err(match said {
                Some(Err(err)) if err > 0 => LaunchError::Filter(err),
                _ => LaunchError::Exec(e),
            });
        }
    };
    match said {
        Some(Ok(fd)) => Ok(Started::Supervised(child, fd)),
        Some(Err(e)) if e > 0 => Ok(Started::Unsupervised(child, e)),
        _ => {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            Err(LaunchError::Other(
                "could not take over the command's seccomp listener".into(),
            ))
        }
    }
}

/// Whether this kernel can supervise: a child installs the filter and reports; None if it
/// can, else the missing piece.
pub fn probe() -> Option<String> {
    if cfg!(not(target_arch = "x86_64")) {
        return Some("supervision is only built for x86-64".into());
    }
    if let Err(e) = sys::notif_sizes() {
        return Some(format!(
            "seccomp user notification is not available: {}",
            sys::strerror(e.raw_os_error().unwrap_or(libc::EIO))
        ));
    }
    // pidfd_getfd (Linux 5.6): an invalid pidfd gives EBADF when the call exists.
    // SAFETY: plain system call on an invalid fd.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    if r < 0 && errno() == libc::ENOSYS {
        return Some("pidfd_getfd is not available (Linux 5.6 or later is needed)".into());
    }
    let prog = filter::program();
    // SAFETY: the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Some(format!("fork failed: {}", sys::strerror(errno())));
    }
    if pid == 0 {
        let code = match install_filter(&prog, true) {
            Ok(_) => 0,
            Err(e) => e.clamp(1, 255),
        };
        // SAFETY: leaves the forked child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        None
    } else if libc::WIFEXITED(status) {
        let e = libc::WEXITSTATUS(status);
        Some(if e == libc::EBUSY {
            "a seccomp listener is already installed (supervised already?)".into()
        } else {
            format!(
                "the kernel refused a seccomp filter with a listener: {}",
                sys::strerror(e)
            )
        })
    } else {
        Some("the seccomp probe died".into())
    }
}
