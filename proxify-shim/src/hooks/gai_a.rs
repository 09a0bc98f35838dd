//! `getaddrinfo_a`: glibc's asynchronous look-up calls its internal getaddrinfo from a
//! helper thread, which no hook sees. Under remote DNS every request is answered by our
//! `getaddrinfo` hook instead (placeholders take no time), before `getaddrinfo_a` returns;
//! `gai_error`, `gai_suspend` and `gai_cancel` (glibc's own) then see finished requests. With
//! `GAI_NOWAIT` the notification (`SIGEV_SIGNAL`: `sigqueue` to the process; `SIGEV_THREAD`:
//! a new thread with the caller's attributes) follows once all are done, as glibc does.
//! Without remote DNS the call goes to libc unchanged.

use crate::state::runtime;
use crate::sys::guard::guarded;
use crate::sys::real;
use libc::{addrinfo, c_char, c_int, c_void};

/// glibc's `struct gaicb`.
#[repr(C)]
pub struct Gaicb {
    ar_name: *const c_char,
    ar_service: *const c_char,
    ar_request: *const addrinfo,
    ar_result: *mut addrinfo,
    ret: c_int,
    _reserved: [c_int; 5],
}

/// glibc's `struct sigevent` with the SIGEV_THREAD members of its union.
#[repr(C)]
pub struct SigEvent {
    value: *mut c_void,
    signo: c_int,
    notify: c_int,
    function: Option<unsafe extern "C" fn(*mut c_void)>,
    attributes: *const libc::pthread_attr_t,
    _pad: [c_int; 8],
}

const GAI_NOWAIT: c_int = 1;

struct Notify {
    function: unsafe extern "C" fn(*mut c_void),
    value: *mut c_void,
}

extern "C" fn notify_thread(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the Box<Notify> leaked by `notify` for this thread alone.
    let n = unsafe { Box::from_raw(arg as *mut Notify) };
    // SAFETY: the program's notification function with the value it gave.
    unsafe { (n.function)(n.value) };
    std::ptr::null_mut()
}

unsafe fn notify(sev: &SigEvent) {
    match sev.notify {
        libc::SIGEV_SIGNAL => {
            let v = libc::sigval {
                sival_ptr: sev.value,
            };
            // SAFETY: plain values: our own pid and the caller's signal number and value.
            unsafe { libc::sigqueue(libc::getpid(), sev.signo, v) };
        }
        libc::SIGEV_THREAD => {
            let Some(function) = sev.function else {
                return;
            };
            let arg = Box::into_raw(Box::new(Notify {
                function,
                value: sev.value,
            }));
            let mut tid: libc::pthread_t = 0;
            // SAFETY: `tid` is writable, `sev.attributes` is NULL or the caller's pthread_attr_t
            // (sigevent's contract), and notify_thread takes ownership of `arg`.
            if unsafe {
                libc::pthread_create(&mut tid, sev.attributes, notify_thread, arg as *mut c_void)
            } == 0
            {
                // SAFETY: `tid` is the thread just created, not yet joined or detached.
                unsafe { libc::pthread_detach(tid) };
            } else {
                // SAFETY: no thread started, so `arg` (Box::into_raw above) is still ours alone.
                drop(unsafe { Box::from_raw(arg) });
                log::warn!("getaddrinfo_a: cannot start the notification thread");
            }
        }
        _ => {}
    }
}

#[no_mangle]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut Gaicb,
    n: c_int,
    sev: *mut SigEvent,
) -> c_int {
    let remote = guarded(None, libc::EIO, || Some(runtime::get().remote_dns())).unwrap_or(true);
    if !remote {
        // SAFETY: the caller's arguments, unchanged, to libc's getaddrinfo_a (Gaicb and SigEvent
        // are glibc's layouts).
        return unsafe {
            real::getaddrinfo_a(mode, list as *mut *mut c_void, n, sev as *mut c_void)
        };
    }
    if list.is_null() || n < 0 {
        return libc::EAI_SYSTEM;
    }
    for i in 0..n as usize {
        // SAFETY: `list` is non-null with `n` entries (getaddrinfo_a's contract) and i < n.
        let r = unsafe { *list.add(i) };
        if r.is_null() {
            continue;
        }
        // SAFETY: a non-null entry is the caller's gaicb, handed to us to fill in.
        let r = unsafe { &mut *r };
        r.ar_result = std::ptr::null_mut();
        r.ret = if r.ar_name.is_null() && r.ar_service.is_null() {
            libc::EAI_NONAME
        } else {
            // SAFETY: name and service are NULL or C strings and ar_request NULL or an addrinfo
            // (getaddrinfo_a's contract); ar_result is a writable field of the gaicb.
            unsafe {
                crate::hooks::dns::getaddrinfo(
                    r.ar_name,
                    r.ar_service,
                    r.ar_request,
                    &mut r.ar_result,
                )
            }
        };
    }
    if mode == GAI_NOWAIT && !sev.is_null() {
        // SAFETY: `sev` is non-null, so the caller's sigevent (getaddrinfo_a's contract).
        unsafe { notify(&*sev) };
    }
    0
}
