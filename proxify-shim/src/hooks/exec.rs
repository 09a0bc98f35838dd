//! `execve` and the rest of the exec family, `posix_spawn`/`posix_spawnp`, `system`, `popen`.
//!
//! Two jobs, so that a proxied program cannot start an unproxied one:
//! - **Refuse programs the shim cannot reach** (static, Go, an exec that changes the effective
//!   ids or raises capabilities, other architecture; scripts by their interpreter, the dynamic
//!   loader by the program it runs; see `proxify_core::progcheck`): the call fails with EPERM
//!   (`posix_spawn*` return it) and one warning is logged, unless `PROXIFY_ALLOW_UNPROXIED`
//!   was set when the program started (then one warning says it runs without the proxy).
//!   Programs that do not exist are left to the real call, which fails with its own errno
//!   (shells search `PATH` that way). `posix_spawn*` are judged where the child will exec:
//!   after its chdir/fchdir file actions, with `POSIX_SPAWN_RESETIDS`'s ids.
//! - **Keep the shim in the child's environment**: when the environment passed on lacks our
//!   `LD_PRELOAD` entry (`env -i`, a program building its own `envp`) or a `PROXIFY_*` variable
//!   we started with, the child gets a copy with them added back. An environment that gives a
//!   `PROXIFY_*` setting another value (or adds one) is refused with EPERM and one line: every
//!   program of the tree keeps the settings `proxify run` started with (only the variables of
//!   `may_change`, about what proxify says, may differ).
//!
//! glibc's `execv`, `execvp`, `execl*`, `fexecve` and `posix_spawnp` reach `execve` through
//! internal calls that an LD_PRELOAD library cannot see, so each is hooked itself. The variadic
//! `execl`, `execle` and `execlp` are defined in C (`csrc/variadic.c`) and call
//! [`proxify_execve`]/[`proxify_execvpe`]. `system` and `popen` always run `/bin/sh` (judged
//! like any program when it execs something); they only get the environment repaired.
//!
//! Cost: the environment is scanned once; a new one is only built when something is missing.
//! The check reads /proc/self/status (the caller's ids), then a `stat`, an `open`, one read of
//! the first bytes, for ELF files an `fgetxattr`, an `fstatvfs` and a few bounded reads
//! (program headers, notes, section headers and their names), and a `close`.
//!
//! Size: ~1,070 lines, no unit tests: twelve entry points and two jobs (the environment repair:
//! `State`, `NewEnv`, ~250 lines; the posix_spawn file-action plan, ~120 lines). Should be split:
//! the environment repair and the spawn plan into modules of their own; not done yet.

use crate::state::runtime;
use crate::sys::guard::{hook, set_errno};
use crate::sys::real;
use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t, FILE};
use proxify_core::progcheck::{self, spawn, Creds, Exec, Judge, Verdict, ENV_ALLOW_UNPROXIED};
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

extern "C" {
    static mut environ: *const *const c_char;
}

const PRELOAD: &[u8] = b"LD_PRELOAD=";
/// At most this many `PROXIFY_*` variables are carried over (a bit mask tracks them).
const MAX_VARS: usize = 64;

/// What the child must inherit, taken from our environment when the library is loaded.
struct State {
    /// This library's path as the loader has it, and canonical (what is added back).
    shim_loaded: Option<Vec<u8>>,
    shim: Option<Vec<u8>>,
    /// `PROXIFY_NAME=value\0` entries.
    vars: Vec<Vec<u8>>,
    allow: bool,
    /// `PROXIFY_ENFORCE=1` (`proxify run --enforce`): the tree runs under the seccomp
    /// supervisor, so static and Go programs may run (the inherited filter supervises them).
    /// A fixed setting: a child's environment cannot change it (`may_change`).
    enforce: bool,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(snapshot)
}

/// Called by the constructor, before `main` (and before any thread or fork), so the exec hooks
/// never initialise anything in a child: the environment snapshot and this process's loader.
pub(crate) fn init() {
    state();
    progcheck::loader::host_loader();
}

fn snapshot() -> State {
    let mut vars = Vec::new();
    let mut allow = false;
    let mut enforce = false;
    // SAFETY: `environ` is the process's NULL-terminated environment, read before any thread can change it (the constructor) or as libc reads it.
    for e in unsafe { entries(environ) } {
        if !e.starts_with(b"PROXIFY_") || !e.contains(&b'=') || vars.len() >= MAX_VARS {
            continue;
        }
        if let Some(v) = e.strip_prefix(format!("{ENV_ALLOW_UNPROXIED}=").as_bytes()) {
            allow = progcheck::parse_allow(&String::from_utf8_lossy(v)).unwrap_or(false);
        }
        if e == b"PROXIFY_ENFORCE=1" {
            enforce = true;
        }
        let mut owned = e.to_vec();
        owned.push(0);
        vars.push(owned);
    }
    let shim_loaded = own_path();
    let shim = shim_loaded.as_ref().and_then(|p| {
        let canonical = std::fs::canonicalize(OsStr::from_bytes(p))
            .map(|c| c.into_os_string().into_vec())
            .unwrap_or_else(|_| p.clone());
        // The loader splits LD_PRELOAD at ':' and blanks: such a path cannot be carried.
        (!canonical.is_empty() && !canonical.iter().any(|&b| is_sep(b))).then_some(canonical)
    });
    State {
        shim_loaded,
        shim,
        vars,
        allow,
        enforce,
    }
}

/// This library's file name, from the loader.
fn own_path() -> Option<Vec<u8>> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = own_path as *const libc::c_void;
    // SAFETY: dladdr writes into a Dl_info we own.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname was checked non-null: the loader's NUL-terminated path of our object.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    (!name.is_empty()).then(|| name.to_vec())
}

fn is_sep(b: u8) -> bool {
    matches!(b, b':' | b' ' | b'\t' | b'\n')
}

/// The entries of a NULL-terminated environment (none for a NULL pointer).
unsafe fn entries<'a>(envp: *const *const c_char) -> impl Iterator<Item = &'a [u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if envp.is_null() {
            return None;
        }
        // SAFETY: `envp` is non-null and NULL-terminated (the contract); `i` stops at the NULL.
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            return None;
        }
        i += 1;
        // SAFETY: an entry before the NULL is a NUL-terminated string (the contract).
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    })
}

fn var_name(entry: &[u8]) -> &[u8] {
    match entry.iter().position(|&b| b == b'=') {
        Some(i) => &entry[..i],
        None => entry,
    }
}

/// A repaired environment: pointers into the original entries, our static state and `owned`.
struct NewEnv {
    ptrs: Vec<*const c_char>,
    _owned: Vec<u8>,
}

impl State {
    fn preload_has_us(&self, value: &[u8]) -> bool {
        value
            .split(|&b| is_sep(b))
            .any(|e| Some(e) == self.shim.as_deref() || Some(e) == self.shim_loaded.as_deref())
    }

    /// `None`: `envp` is fine as it is. `Err`: the child cannot be given the settings this
    /// program started with: the shim's own path is unknown (it would run unproxied), or the
    /// environment changes one of the settings.
    unsafe fn repair<'e>(&self, envp: *const *const c_char) -> Result<Option<NewEnv>, Unfit<'e>> {
        let mut preload_ok = true;
        let mut preloads = 0;
        let mut present: u64 = 0;
        // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment (repair's contract).
        for e in unsafe { entries(envp) } {
            if let Some(v) = e.strip_prefix(PRELOAD) {
                preloads += 1;
                preload_ok &= self.preload_has_us(v);
            } else if e.starts_with(b"PROXIFY_") {
                let name = var_name(e);
                let mut known = false;
                for (i, v) in self.vars.iter().enumerate() {
                    if var_name(v) == name {
                        known = true;
                        present |= 1 << i;
                        // `v` ends with the NUL the child's copy needs; `e` has none.
                        if v[..v.len() - 1] != *e && !may_change(name) {
                            return Err(Unfit::Changed(name));
                        }
                    }
                }
                if !known && !may_change(name) {
                    return Err(Unfit::Changed(name));
                }
            }
        }
        let all_vars = if self.vars.is_empty() {
            0
        } else {
            u64::MAX >> (64 - self.vars.len())
        };
        if preloads > 0 && preload_ok && present == all_vars {
            return Ok(None);
        }
        let mut ptrs = Vec::new();
        // LD_PRELOAD=<shim>:<the other libraries, in order>
        let mut owned = PRELOAD.to_vec();
        if preloads > 0 && preload_ok {
            owned.clear();
        } else {
            let Some(shim) = &self.shim else {
                return Err(Unfit::NoShimPath);
            };
            owned.extend_from_slice(shim);
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment (as above).
            for e in unsafe { entries(envp) } {
                if let Some(v) = e.strip_prefix(PRELOAD) {
                    for lib in v.split(|&b| is_sep(b)) {
                        let ours = Some(lib) == self.shim.as_deref()
                            || Some(lib) == self.shim_loaded.as_deref();
                        if !lib.is_empty() && !ours {
                            owned.push(b':');
                            owned.extend_from_slice(lib);
                        }
                    }
                }
            }
            owned.push(0);
        }
        let mut i = 0;
        // SAFETY: a non-null `envp` is NULL-terminated (the contract); `i` stops at the NULL.
        while !envp.is_null() && !unsafe { *envp.add(i) }.is_null() {
            // SAFETY: as above, entry `i` is before the NULL.
            let p = unsafe { *envp.add(i) };
            i += 1;
            // SAFETY: `p` is a non-null entry of `envp`, a NUL-terminated string.
            if owned.is_empty() || !unsafe { CStr::from_ptr(p) }.to_bytes().starts_with(PRELOAD) {
                ptrs.push(p);
            }
        }
        for (i, v) in self.vars.iter().enumerate() {
            if present & (1 << i) == 0 {
                ptrs.push(v.as_ptr().cast());
            }
        }
        if !owned.is_empty() {
            // The Vec's heap buffer does not move when the Vec itself is moved below.
            ptrs.push(owned.as_ptr().cast());
        }
        ptrs.push(std::ptr::null());
        Ok(Some(NewEnv {
            ptrs,
            _owned: owned,
        }))
    }
}

/// Why a child's environment cannot be made to carry this program's settings.
enum Unfit<'e> {
    /// The shim's own path is unknown, so it cannot be put back into LD_PRELOAD.
    NoShimPath,
    /// The environment gives this `PROXIFY_*` variable another value than the one this program
    /// started with (or adds it).
    Changed(&'e [u8]),
}

/// `PROXIFY_*` variables a child may set differently: what proxify says, not where connections
/// go or what is refused (verbosity, the log file, the prompt marker of `proxify shell`, the
/// trace file and its cap, where credentials came from).
fn may_change(name: &[u8]) -> bool {
    matches!(
        name,
        b"PROXIFY_LOG"
            | b"PROXIFY_QUIET"
            | b"PROXIFY_LOG_FILE"
            | b"PROXIFY_SHELL"
            | b"PROXIFY_TRACE"
            | b"PROXIFY_TRACE_MAX"
            | b"PROXIFY_CRED_FROM"
    )
}

/// The line for a child whose environment changes a setting.
struct ChangedSetting<'a>(&'a [u8]);

impl std::fmt::Display for ChangedSetting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its environment changes {}, one of the settings proxify run started this program \
             with; every program it starts keeps them (to use other settings, start a new \
             proxify run outside this one)",
            String::from_utf8_lossy(self.0)
        )
    }
}

/// The real exec calls, made as the hook body's last step: this thread is no longer inside
/// proxify once the new program runs. (A `vfork` child shares its parent's memory, the hook
/// depth of `sys::guard::hook` with it; a successful exec never returns to put it back.)
mod leaving {
    use crate::sys::guard::leave_for_exec;
    use crate::sys::real;
    use libc::{c_char, c_int};

    pub unsafe fn execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int {
        leave_for_exec();
        // SAFETY: the caller's arguments, unchanged, under libc's execve contract.
        unsafe { real::execve(path, argv, envp) }
    }

    pub unsafe fn execvpe(
        file: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int {
        leave_for_exec();
        // SAFETY: the caller's arguments, unchanged, under libc's execvpe contract.
        unsafe { real::execvpe(file, argv, envp) }
    }

    pub unsafe fn fexecve(
        fd: c_int,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int {
        leave_for_exec();
        // SAFETY: the caller's arguments, unchanged, under libc's fexecve contract.
        unsafe { real::fexecve(fd, argv, envp) }
    }

    pub unsafe fn execveat(
        dirfd: c_int,
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
        flags: c_int,
    ) -> c_int {
        leave_for_exec();
        // SAFETY: the caller's arguments, unchanged, under libc's execveat contract.
        unsafe { real::execveat(dirfd, path, argv, envp, flags) }
    }
}

fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

unsafe fn path_of<'a>(p: *const c_char) -> &'a Path {
    // SAFETY: `p` is a non-null NUL-terminated path (the caller's contract).
    Path::new(OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes()))
}

/// `PATH` in an environment (what `env NAME` in a `#!` line searches).
unsafe fn env_path<'a>(envp: *const *const c_char) -> Option<&'a OsStr> {
    // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment (env_path's contract).
    unsafe { entries(envp) }
        .find_map(|e| e.strip_prefix(b"PATH="))
        .map(OsStr::from_bytes)
}

/// Our own `PATH`, as `execvp` and `posix_spawnp` search it (no Rust lock: we may be in a
/// child of a multi-threaded `fork`).
unsafe fn own_path_var<'a>() -> Option<&'a OsStr> {
    // SAFETY: a C string literal; the environment is read unlocked, as libc's execvp reads it.
    let p = unsafe { libc::getenv(c"PATH".as_ptr()) };
    // SAFETY: `p` is non-null: getenv's NUL-terminated value.
    (!p.is_null()).then(|| OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes()))
}

/// The file reported last (device, inode): a shell searching `PATH` tries the same file under
/// several names (`/usr/bin/x`, `/bin/x`); it is reported once. The same for the
/// `--allow-unproxied` line within one process (each program started by a fork of a shell is
/// reported).
static LAST_REFUSED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static LAST_ALLOWED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Logs `text` for `target` at warn level, or at debug level when `target` is the file `last`
/// named before.
fn report(last: &[AtomicU64; 2], target: &Path, text: &str) {
    runtime::get();
    let id = std::fs::metadata(target).ok().map(|m| (m.dev(), m.ino()));
    let again = id.is_some_and(|(dev, ino)| {
        last[0].swap(dev, Ordering::Relaxed) == dev && last[1].swap(ino, Ordering::Relaxed) == ino
    });
    if again {
        log::debug!("{text}");
    } else {
        log::warn!("{text}");
    }
}

/// Refuses `target` for `why` (the reason, what it means and the fix): EPERM.
fn refuse(target: &Path, why: &dyn std::fmt::Display) -> c_int {
    let text = format!("refusing to run {}: {why}", target.display());
    report(&LAST_REFUSED, target, &text);
    libc::EPERM
}

/// A reason that is not a verdict ("could bypass").
struct Could(&'static str);

impl std::fmt::Display for Could {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} \u{2014} its connections could bypass the proxy ({})",
            self.0,
            progcheck::ALLOW_FIX
        )
    }
}

/// What a check is about.
struct Target<'a> {
    path: &'a Path,
    /// `argv` (the loader's options and program are in it).
    argv: *const *const c_char,
    /// `PATH` of the new environment.
    search: Option<&'a OsStr>,
    /// Where the child execs, when not here.
    cwd: Option<&'a Path>,
    /// `path` is a `/proc/self/fd` path for a descriptor that exists, so a file that cannot be
    /// looked at is refused, not left to fail.
    by_fd: bool,
    creds: Option<Creds>,
}

impl<'a> Target<'a> {
    fn new(path: &'a Path, argv: *const *const c_char, search: Option<&'a OsStr>) -> Self {
        Target {
            path,
            argv,
            search,
            cwd: None,
            by_fd: false,
            creds: None,
        }
    }
}

/// `Some(errno)` when the target must not be run.
fn check(t: Target) -> Option<c_int> {
    // SAFETY: argv is the caller's NULL-terminated argument vector (or NULL).
    let args: Vec<&OsStr> = unsafe { entries(t.argv) }
        .skip(1)
        .map(OsStr::from_bytes)
        .collect();
    let judge = Judge {
        creds: t.creds.unwrap_or_else(Creds::current),
        loader: progcheck::loader::host_loader().clone(),
    };
    let verdict = judge.judge(&Exec {
        path: t.path,
        args: &args,
        search_path: t.search,
        cwd: t.cwd,
    });
    let shown = spawn::resolve(t.cwd, t.path);
    match verdict {
        Verdict::Preloadable => None,
        Verdict::WillNotRun if !t.by_fd => None,
        // Under --enforce the supervisor carries a static or Go program's connections.
        ref v if state().enforce && matches!(v.innermost(), Verdict::Static | Verdict::Go) => None,
        _ if state().allow => {
            if !verdict.is_proxied() {
                report(
                    &LAST_ALLOWED,
                    &shown,
                    &progcheck::allowed_line(&shown.display().to_string(), &verdict),
                );
            }
            None
        }
        Verdict::WillNotRun => Some(refuse(&shown, &Could("it cannot be checked"))),
        v => Some(refuse(&shown, &v)),
    }
}

/// The environment to pass on, or the errno when none can be made safe.
unsafe fn env_for(
    target: &Path,
    envp: *const *const c_char,
) -> Result<(Option<NewEnv>, *const *const c_char), c_int> {
    // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment (env_for's contract).
    match unsafe { state().repair(envp) } {
        Ok(Some(new)) => {
            log::debug!(
                "exec {}: LD_PRELOAD/PROXIFY_* added back to its environment",
                target.display()
            );
            let p = new.ptrs.as_ptr();
            Ok((Some(new), p))
        }
        Ok(None) => Ok((None, envp)),
        Err(Unfit::NoShimPath) => Err(refuse(
            target,
            &Could("the shim's own path is unknown, so it cannot be put back into its environment"),
        )),
        Err(Unfit::Changed(name)) => Err(refuse(target, &ChangedSetting(name))),
    }
}

unsafe fn do_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if path.is_null() {
        // SAFETY: the caller's arguments, unchanged: the real call fails on the NULL path.
        return unsafe { leaving::execve(path, argv, envp) };
    }
    // SAFETY: `path` is non-null, the caller's NUL-terminated path.
    let target = unsafe { path_of(path) };
    // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
    if let Some(e) = check(Target::new(target, argv, unsafe { env_path(envp) })) {
        return fail(e);
    }
    // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
    match unsafe { env_for(target, envp) } {
        // SAFETY: the caller's path and argv; `env` is `envp` or the copy `_keep` holds alive.
        Ok((_keep, env)) => unsafe { leaving::execve(path, argv, env) },
        Err(e) => fail(e),
    }
}

/// The file `execvp`/`posix_spawnp` will run for `file` from the directory `cwd` (None: not
/// found, the call fails).
unsafe fn search(file: *const c_char, cwd: Option<&Path>) -> Option<PathBuf> {
    progcheck::find_in_path_from(
        // SAFETY: `file` is a non-null NUL-terminated name (the caller's contract).
        OsStr::from_bytes(unsafe { CStr::from_ptr(file) }.to_bytes()),
        // SAFETY: reads our own environment unlocked, as libc's execvp does.
        unsafe { own_path_var() },
        cwd,
    )
}

unsafe fn do_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if file.is_null() {
        // SAFETY: the caller's arguments, unchanged: the real call fails on the NULL name.
        return unsafe { leaving::execvpe(file, argv, envp) };
    }
    // SAFETY: `file` is non-null, the caller's NUL-terminated name.
    let found = unsafe { search(file, None) };
    if let Some(target) = &found {
        // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
        if let Some(e) = check(Target::new(target, argv, unsafe { env_path(envp) })) {
            return fail(e);
        }
    }
    // SAFETY: `file` is non-null, the caller's NUL-terminated name.
    let shown = found.unwrap_or_else(|| unsafe { path_of(file) }.to_path_buf());
    // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
    match unsafe { env_for(&shown, envp) } {
        // SAFETY: the caller's file and argv; `env` is `envp` or the copy `_keep` holds alive.
        Ok((_keep, env)) => unsafe { leaving::execvpe(file, argv, env) },
        Err(e) => fail(e),
    }
}

#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments, under execve's contract.
        || unsafe { do_execve(path, argv, envp) },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments and `environ`, the process's environment, as execv uses.
        || unsafe { do_execve(path, argv, environ) },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments and `environ`, the process's environment, as execvp uses.
        || unsafe { do_execvpe(file, argv, environ) },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments, under execvpe's contract.
        || unsafe { do_execvpe(file, argv, envp) },
    )
}

/// `/proc/self/fd/N` for an open descriptor, or `None` when `fd` is not open.
fn fd_path(fd: c_int) -> Option<PathBuf> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a stat we own.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some(PathBuf::from(format!("/proc/self/fd/{fd}")))
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        || {
            let Some(target) = fd_path(fd) else {
                // SAFETY: the caller's arguments, unchanged: the real call fails on the bad fd.
                return unsafe { leaving::fexecve(fd, argv, envp) };
            };
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            let mut t = Target::new(&target, argv, unsafe { env_path(envp) });
            t.by_fd = true;
            if let Some(e) = check(t) {
                return fail(e);
            }
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            match unsafe { env_for(&target, envp) } {
                // SAFETY: the caller's fd and argv; `env` is `envp` or the copy `_keep` keeps.
                Ok((_keep, env)) => unsafe { leaving::fexecve(fd, argv, env) },
                Err(e) => fail(e),
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        || {
            if path.is_null() {
                // SAFETY: the caller's arguments, unchanged: the real call fails on the NULL path.
                return unsafe { leaving::execveat(dirfd, path, argv, envp, flags) };
            }
            // SAFETY: `path` is non-null, the caller's NUL-terminated path.
            let name = unsafe { CStr::from_ptr(path) }.to_bytes();
            let (target, by_fd) = if name.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
                match fd_path(dirfd) {
                    Some(t) => (t, true),
                    // SAFETY: the caller's arguments, unchanged: the real call fails on the bad fd.
                    None => return unsafe { leaving::execveat(dirfd, path, argv, envp, flags) },
                }
            } else if name.starts_with(b"/") || dirfd == libc::AT_FDCWD {
                // SAFETY: `path` is non-null, the caller's NUL-terminated path.
                (unsafe { path_of(path) }.to_path_buf(), false)
            } else {
                // SAFETY: all-zero bytes are a valid value of this plain C struct.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW;
                // SAFETY: `path` is the caller's NUL-terminated path; fstatat writes a local stat.
                if unsafe { libc::fstatat(dirfd, path, &mut st, nofollow) } != 0 {
                    // The real call fails the same way.
                    // SAFETY: the caller's arguments, unchanged.
                    return unsafe { leaving::execveat(dirfd, path, argv, envp, flags) };
                }
                let mut t = format!("/proc/self/fd/{dirfd}/").into_bytes();
                t.extend_from_slice(name);
                (PathBuf::from(std::ffi::OsString::from_vec(t)), true)
            };
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            let mut t = Target::new(&target, argv, unsafe { env_path(envp) });
            t.by_fd = by_fd;
            if let Some(e) = check(t) {
                return fail(e);
            }
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            match unsafe { env_for(&target, envp) } {
                // SAFETY: the caller's arguments; `env` is `envp` or the copy `_keep` holds alive.
                Ok((_keep, env)) => unsafe { leaving::execveat(dirfd, path, argv, env, flags) },
                Err(e) => fail(e),
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    hook(
        || libc::EAGAIN,
        libc::EPERM,
        libc::EPERM,
        || {
            let envp = envp as *const *const c_char;
            if path.is_null() {
                // SAFETY: the caller's arguments, unchanged, under libc's posix_spawn contract.
                return unsafe { real::posix_spawn(pid, path, actions, attr, argv, envp.cast()) };
            }
            // SAFETY: `path` is non-null, the caller's NUL-terminated path.
            let target = unsafe { path_of(path) };
            // SAFETY: `actions` and `attr` are NULL or initialised (posix_spawn's contract).
            let plan = match unsafe { spawn_plan(actions, attr) } {
                Ok(p) => p,
                Err(why) if target.is_relative() => return refuse(target, &Could(why)),
                Err(_) => SpawnPlan::default(),
            };
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            let mut t = Target::new(target, argv.cast(), unsafe { env_path(envp) });
            t.cwd = plan.cwd.as_deref();
            t.creds = plan.creds;
            if let Some(e) = check(t) {
                return e;
            }
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            match unsafe { env_for(target, envp) } {
                // SAFETY: the caller's arguments; `env` is `envp` or the copy `_keep` holds alive.
                Ok((_keep, env)) => unsafe {
                    real::posix_spawn(pid, path, actions, attr, argv, env.cast())
                },
                Err(e) => e,
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    hook(
        || libc::EAGAIN,
        libc::EPERM,
        libc::EPERM,
        || {
            let envp = envp as *const *const c_char;
            if file.is_null() {
                // SAFETY: the caller's arguments, unchanged, under libc's posix_spawnp contract.
                return unsafe { real::posix_spawnp(pid, file, actions, attr, argv, envp.cast()) };
            }
            // SAFETY: `actions` and `attr` are NULL or initialised (posix_spawnp's contract).
            let plan = match unsafe { spawn_plan(actions, attr) } {
                Ok(p) => p,
                // SAFETY: `file` is non-null, the caller's NUL-terminated name.
                Err(why) if unsafe { looks_here(file) } => {
                    // SAFETY: as above.
                    return refuse(unsafe { path_of(file) }, &Could(why));
                }
                Err(_) => SpawnPlan::default(),
            };
            // SAFETY: `file` is non-null, the caller's NUL-terminated name.
            let found = unsafe { search(file, plan.cwd.as_deref()) };
            if let Some(target) = &found {
                // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
                let mut t = Target::new(target, argv.cast(), unsafe { env_path(envp) });
                t.cwd = plan.cwd.as_deref();
                t.creds = plan.creds;
                if let Some(e) = check(t) {
                    return e;
                }
            }
            // SAFETY: `file` is non-null, the caller's NUL-terminated name.
            let shown = found.unwrap_or_else(|| unsafe { path_of(file) }.to_path_buf());
            // SAFETY: the caller's `envp`, NULL or a NULL-terminated environment.
            match unsafe { env_for(&shown, envp) } {
                // SAFETY: the caller's arguments; `env` is `envp` or the copy `_keep` holds alive.
                Ok((_keep, env)) => unsafe {
                    real::posix_spawnp(pid, file, actions, attr, argv, env.cast())
                },
                Err(e) => e,
            }
        },
    )
}

/// `system` and `popen` run `/bin/sh` with our environment through glibc's internal spawn:
/// if the program removed LD_PRELOAD or a `PROXIFY_*` variable from it, they are set again
/// first, or the shell and everything it runs would be unproxied.
unsafe fn restore_own_env() -> Result<(), Unfit<'static>> {
    let st = state();
    // SAFETY: `environ` is the process's NULL-terminated environment, read as system reads it.
    let Some(new) = unsafe { st.repair(environ) }? else {
        return Ok(());
    };
    runtime::get();
    log::debug!("LD_PRELOAD/PROXIFY_* were removed from the environment: set again");
    for &p in &new.ptrs {
        if p.is_null() {
            break;
        }
        // SAFETY: a non-null entry of the repaired environment, a NUL-terminated string.
        let e = unsafe { CStr::from_ptr(p) }.to_bytes();
        let name = var_name(e);
        if name == b"LD_PRELOAD" || name.starts_with(b"PROXIFY_") {
            let (Ok(k), Ok(v)) = (
                std::ffi::CString::new(name),
                std::ffi::CString::new(&e[(name.len() + 1).min(e.len())..]),
            ) else {
                return Err(Unfit::NoShimPath);
            };
            // SAFETY: `k` and `v` are C strings (setenv copies them); the environment is set
            // unlocked, just before libc's system/popen read it the same way.
            if unsafe { libc::setenv(k.as_ptr(), v.as_ptr(), 1) } != 0 {
                return Err(Unfit::NoShimPath);
            }
        }
    }
    Ok(())
}

/// The one line for `system`/`popen` when our environment cannot be passed on to `/bin/sh`.
fn refuse_env(u: Unfit) {
    let sh = Path::new("/bin/sh");
    match u {
        Unfit::NoShimPath => refuse(
            sh,
            &Could("the shim cannot be put back into its environment"),
        ),
        Unfit::Changed(name) => refuse(sh, &ChangedSetting(name)),
    };
}

#[no_mangle]
pub unsafe extern "C" fn system(command: *const c_char) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        || {
            // system(NULL) only asks whether a shell exists.
            if !command.is_null() {
                // SAFETY: sets our own environment back, as system is about to read it.
                if let Err(u) = unsafe { restore_own_env() } {
                    refuse_env(u);
                    return fail(libc::EPERM);
                }
            }
            // SAFETY: the caller's argument, unchanged, under libc's system contract.
            unsafe { real::system(command) }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE {
    hook(
        || {
            set_errno(libc::EAGAIN);
            std::ptr::null_mut()
        },
        std::ptr::null_mut(),
        libc::EPERM,
        || {
            // SAFETY: sets our own environment back, as popen is about to read it.
            if let Err(u) = unsafe { restore_own_env() } {
                refuse_env(u);
                set_errno(libc::EPERM);
                return std::ptr::null_mut();
            }
            // SAFETY: the caller's arguments, unchanged, under libc's popen contract.
            unsafe { real::popen(command, mode) }
        },
    )
}

// execl, execle and execlp are variadic: defined in csrc/variadic.c, which collects the
// arguments as glibc does and calls these.

/// `execve` for the C-defined `execl` and `execle`.
#[no_mangle]
pub unsafe extern "C" fn proxify_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments (from csrc/variadic.c), under execve's contract.
        || unsafe { do_execve(path, argv, envp) },
    )
}

/// `execvpe` for the C-defined `execlp`.
#[no_mangle]
pub unsafe extern "C" fn proxify_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    hook(
        || fail(libc::EAGAIN),
        -1,
        libc::EPERM,
        // SAFETY: the caller's arguments (from csrc/variadic.c), under execvpe's contract.
        || unsafe { do_execvpe(file, argv, envp) },
    )
}

/// Where and as whom a `posix_spawn` child execs.
#[derive(Default)]
struct SpawnPlan {
    /// Its directory after the file actions (None: ours).
    cwd: Option<PathBuf>,
    /// Its credentials when `POSIX_SPAWN_RESETIDS` changes them (None: ours).
    creds: Option<Creds>,
}

/// glibc's `struct __spawn_action` (posix/spawn_int.h, glibc 2.29 and later: the tags are
/// only ever appended to).
#[repr(C)]
struct SpawnAction {
    tag: c_int,
    action: SpawnActionData,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenAction {
    fd: c_int,
    path: *const c_char,
    oflag: c_int,
    mode: libc::mode_t,
}

#[repr(C)]
union SpawnActionData {
    fd: c_int,
    dup2: [c_int; 2],
    open: OpenAction,
    path: *const c_char,
}

/// glibc's `posix_spawn_file_actions_t`, whose fields are public in <spawn.h>.
#[repr(C)]
struct FileActions {
    allocated: c_int,
    used: c_int,
    actions: *const SpawnAction,
}

/// Reads the file actions and the attributes the way the child will apply them. `Err`: an
/// action this code does not know (a relative path cannot be judged then).
unsafe fn spawn_plan(
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
) -> Result<SpawnPlan, &'static str> {
    let mut plan = SpawnPlan::default();
    if !attr.is_null() {
        let mut flags: libc::c_short = 0;
        // SAFETY: attr is the caller's initialised attribute object.
        if unsafe { libc::posix_spawnattr_getflags(attr, &mut flags) } == 0
            && flags as c_int & libc::POSIX_SPAWN_RESETIDS != 0
        {
            plan.creds = Some(Creds::current().reset_ids());
        }
    }
    if actions.is_null() {
        return Ok(plan);
    }
    const UNKNOWN: &str = "a posix_spawn file action that cannot be read";
    // SAFETY: actions points to the caller's initialised file actions object, whose first
    // fields are these.
    let fa = unsafe { &*actions.cast::<FileActions>() };
    if fa.used == 0 {
        return Ok(plan);
    }
    if fa.used < 0 || fa.used > fa.allocated || fa.actions.is_null() {
        return Err(UNKNOWN);
    }
    let cpath = |p: *const c_char| -> Result<&Path, &'static str> {
        if p.is_null() {
            return Err(UNKNOWN);
        }
        // SAFETY: a NUL-terminated path the action owns.
        Ok(Path::new(OsStr::from_bytes(
            unsafe { CStr::from_ptr(p) }.to_bytes(),
        )))
    };
    let mut list = Vec::with_capacity(fa.used as usize);
    for i in 0..fa.used as usize {
        // SAFETY: `used` actions are initialised; the union member read is the one the tag
        // says was written.
        let a = unsafe { &*fa.actions.add(i) };
        // SAFETY: the union member read is the one the tag says glibc wrote.
        let act = unsafe {
            match a.tag {
                0 => spawn::Action::Close(a.action.fd),
                1 => spawn::Action::Dup2 {
                    fd: a.action.dup2[0],
                    newfd: a.action.dup2[1],
                },
                2 => spawn::Action::Open {
                    fd: a.action.open.fd,
                    path: cpath(a.action.open.path)?,
                },
                3 => spawn::Action::Chdir(cpath(a.action.path)?),
                4 => spawn::Action::Fchdir(a.action.fd),
                5 => spawn::Action::Closefrom(a.action.fd),
                6 => spawn::Action::Other,
                _ => spawn::Action::Unknown,
            }
        };
        list.push(act);
    }
    plan.cwd = spawn::child_dir(&list).map_err(|_| UNKNOWN)?;
    Ok(plan)
}

/// Would `posix_spawnp` look `file` up relative to the child's directory (a relative path,
/// or a name searched through a `PATH` with a relative entry)?
unsafe fn looks_here(file: *const c_char) -> bool {
    // SAFETY: a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(file) }.to_bytes();
    if name.contains(&b'/') {
        return !name.starts_with(b"/");
    }
    let path =
        // SAFETY: own_path_var reads the environment as libc does (see its own safety note).
        unsafe { own_path_var() }.map_or(progcheck::DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    path.split(|&b| b == b':').any(|d| !d.starts_with(b"/"))
}
