//! The kernel interfaces the supervisor uses, as the UAPI headers define them (x86-64):
//! seccomp user notification, pidfds, reading and writing another process's memory.

use libc::{c_int, c_long, c_void};
use std::io;

pub const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
pub const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
pub const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
pub const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

pub const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
pub const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
pub const SECCOMP_IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
pub const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    pub nr: c_int,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompNotifResp {
    pub id: u64,
    pub val: i64,
    pub error: i32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NotifSizes {
    pub notif: u16,
    pub resp: u16,
    pub data: u16,
}

pub fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The sizes the kernel uses for the notification structures (they may grow).
pub fn notif_sizes() -> io::Result<NotifSizes> {
    let mut s = NotifSizes::default();
    // SAFETY: the kernel writes a seccomp_notif_sizes (3 u16) into `s`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES as c_long,
            0 as c_long,
            &mut s as *mut NotifSizes,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// Receives one notification (blocks if none is pending). ENOENT: the call went away.
pub fn notif_recv(listener: c_int, buf: &mut [u8]) -> Result<SeccompNotif, c_int> {
    buf.iter_mut().for_each(|b| *b = 0);
    // SAFETY: `buf` is at least the kernel's seccomp_notif size (checked by the caller) and
    // zeroed, as the kernel requires.
    let rc = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(errno());
    }
    let mut n = SeccompNotif::default();
    // SAFETY: the prefix of the kernel's structure is our SeccompNotif.
    unsafe {
        std::ptr::copy_nonoverlapping(
            buf.as_ptr(),
            &mut n as *mut SeccompNotif as *mut u8,
            std::mem::size_of::<SeccompNotif>(),
        )
    };
    Ok(n)
}

/// Answers notification `id`: `Ok(v)` is the call's return value, `Err(e)` fails it with
/// errno `e`. Returns false when the call is gone (ENOENT: killed or interrupted).
pub fn notif_send(listener: c_int, id: u64, result: Result<i64, c_int>) -> bool {
    let resp = match result {
        Ok(v) => SeccompNotifResp {
            id,
            val: v,
            error: 0,
            flags: 0,
        },
        Err(e) => SeccompNotifResp {
            id,
            val: 0,
            error: -e,
            flags: 0,
        },
    };
    send_resp(listener, resp)
}

/// Lets the call run in the kernel as the program made it.
pub fn notif_continue(listener: c_int, id: u64) -> bool {
    send_resp(
        listener,
        SeccompNotifResp {
            id,
            val: 0,
            error: 0,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        },
    )
}

fn send_resp(listener: c_int, mut resp: SeccompNotifResp) -> bool {
    // SAFETY: `resp` is a seccomp_notif_resp (its size has been stable since it was added).
    let rc = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    rc == 0
}

/// Is notification `id` still pending (the thread still waits in that call)?
pub fn notif_id_valid(listener: c_int, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// Asks for synchronous wake-ups (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6): a
/// notification wakes us as a hand-off from the calling thread, which waits for us (through
/// epoll: a WF_SYNC wake-up, which the scheduler may place on that thread's CPU), and the
/// answer wakes the thread on our CPU rather than across CPUs. Returns whether the kernel
/// took it (older kernels: EINVAL, and all works as before).
///
/// Measured (issue 15, a connect through a SOCKS proxy on this host): the supervised
/// connect rate ~3% up by address and ~7% by name. Waiting for the listener with poll()
/// instead, which would keep the kernel's wake-up on the calling thread's CPU
/// (WF_CURRENT_CPU), was worse: the proxy's threads then pile onto that CPU too.
pub fn notif_set_sync(listener: c_int) -> bool {
    // SAFETY: the ioctl takes its flags by value.
    unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// A pidfd for thread `tid` (PIDFD_THREAD, Linux 6.9), else for its thread group.
pub fn pidfd_open(tid: libc::pid_t) -> Result<c_int, c_int> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if fd >= 0 {
        return Ok(fd as c_int);
    }
    let tgid = tgid_of(tid).ok_or_else(errno)?;
    // SAFETY: plain system call.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if fd >= 0 {
        Ok(fd as c_int)
    } else {
        Err(errno())
    }
}

fn tgid_of(tid: libc::pid_t) -> Option<libc::pid_t> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A duplicate of the process's fd `fd` (close-on-exec in our process).
pub fn pidfd_getfd(pidfd: c_int, fd: c_int) -> Result<c_int, c_int> {
    // SAFETY: plain system call.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r >= 0 {
        Ok(r as c_int)
    } else {
        Err(errno())
    }
}

/// Reads `buf.len()` bytes at `addr` in process `pid`. Returns the count read.
pub fn read_mem(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> Result<usize, c_int> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes our own buffer; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Reads the remote ranges `parts` (address, length) of process `pid`, one after the other,
/// into `buf` in one call. Returns the count read.
pub fn read_mem_parts(
    pid: libc::pid_t,
    parts: &[(u64, usize)],
    buf: &mut [u8],
) -> Result<usize, c_int> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    let remote: Vec<libc::iovec> = parts
        .iter()
        .map(|&(a, l)| libc::iovec {
            iov_base: a as *mut c_void,
            iov_len: l,
        })
        .collect();
    // SAFETY: `local` describes our own buffer; the kernel checks the remote ranges.
    let n = unsafe {
        libc::process_vm_readv(
            pid,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Writes `data` at `addr` in process `pid` (all of it, or an error).
pub fn write_mem(pid: libc::pid_t, addr: u64, data: &[u8]) -> Result<(), c_int> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes our own buffer (only read); the kernel checks the remote one.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(errno())
    } else if n as usize != data.len() {
        Err(libc::EFAULT)
    } else {
        Ok(())
    }
}

pub fn close(fd: c_int) {
    if fd >= 0 {
        // SAFETY: closes an fd this process owns.
        unsafe { libc::close(fd) };
    }
}

pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the kernel to write.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

pub fn strerror(e: c_int) -> String {
    // SAFETY: strerror returns a valid NUL-terminated string (the supervisor thread is the
    // only one calling it).
    let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(e)) };
    s.to_string_lossy().into_owned()
}
