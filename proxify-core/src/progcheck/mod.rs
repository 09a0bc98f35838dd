//! Will an `LD_PRELOAD` library reach a program? [`Judge::judge`] looks at what `execve` is
//! given the way the kernel and the dynamic loader will, and returns a [`Verdict`]: the shim
//! is loaded into it ([`Verdict::Preloadable`]), nothing runs ([`Verdict::WillNotRun`]), or
//! why it would run without the shim, with the fix (its `Display`).
//!
//! The parts:
//! - [`elf`]: what an ELF file is (the `object` crate's reader): dynamic, static, Go, which
//!   class and machine, its `DT_SONAME`;
//! - [`script`]: `#!` lines and `/usr/bin/env NAME`;
//! - [`privilege`]: setuid/setgid/file capabilities against the caller's credentials
//!   (secure-execution mode);
//! - [`loader`]: the dynamic loader run as a program (`ld.so PROGRAM`, `ldd`), judged by the
//!   program it runs;
//! - [`spawn`]: the directory a `posix_spawn` child execs in after its file actions.
//!
//! Used by `proxify run` (its command) and by the shim's exec hooks (everything the command
//! runs), and meant for a supervisor that runs [`Verdict::Static`]/[`Verdict::Go`] programs
//! under its own control instead of refusing them ([`Verdict::innermost`]).
//!
//! Size: ~650 lines: `Verdict` with its user-facing texts (~160 lines) and `Judge`, the one
//! recursive procedure that ties the parts together (`Walk`, for a `Judge` given its caller's
//! credentials and loader, or for this process with each looked up only when a file needs it);
//! the parts and the tests already have files of their own.

pub mod elf;
pub mod loader;
pub mod privilege;
pub mod script;
pub mod spawn;

pub use elf::Arch;
pub use privilege::{Creds, Privilege};

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The flag that runs a refused program anyway, and what it costs (the end of every refusal).
pub const ALLOW_FIX: &str = "use proxify run --allow-unproxied to run it anyway: its \
     connections and name look-ups then go directly, not through the proxy";

/// `1`/`true`/`yes`: run programs the shim cannot reach anyway (`--allow-unproxied`).
pub const ENV_ALLOW_UNPROXIED: &str = "PROXIFY_ALLOW_UNPROXIED";
/// Levels of `#!` interpreters, `env NAME` and loaders followed (the kernel allows 4 nested
/// scripts).
pub const MAX_DEPTH: usize = 4;
/// The search path `execvp` uses when `PATH` is unset.
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";
pub use elf::MAX_READ;

/// The value of [`ENV_ALLOW_UNPROXIED`]: `1`/`true`/`yes` or `0`/`false`/`no`/empty.
pub fn parse_allow(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(format!(
            "{ENV_ALLOW_UNPROXIED}: \"{}\" is not 1/true/yes or 0/false/no",
            v.chars().take(40).collect::<String>().escape_debug()
        )),
    }
}

/// What running a program would do, as far as the shim is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The dynamic loader will load `LD_PRELOAD` into it. Also files that are neither
    /// programs nor scripts (`execve` fails with ENOEXEC; `execvp` hands them to `/bin/sh`),
    /// and programs the dynamic loader is asked to run but will refuse to.
    Preloadable,
    /// `execve` fails by itself and nothing runs: missing, not a regular file, no execute
    /// bit, a `#!` interpreter that is missing.
    WillNotRun,
    /// No dynamic loader runs (no `PT_INTERP`: static, static-pie).
    Static,
    /// A Go program: Go's network code makes its own system calls, even when dynamically
    /// linked.
    Go,
    /// Exec would change its effective ids or raise its capabilities: the loader runs in
    /// secure-execution mode and ignores `LD_PRELOAD`.
    PrivilegeChange(Privilege),
    /// Another ELF class or machine than the shim's: its loader refuses the shim.
    OtherArch { found: Arch, host: Arch },
    /// A `#!` script whose interpreter (the innermost of a chain, or `env NAME`'s NAME) is
    /// not reached, for `verdict`.
    Script {
        interpreter: PathBuf,
        verdict: Box<Verdict>,
    },
    /// The dynamic loader run as a program: the program it runs is not reached, for
    /// `verdict`.
    Loader {
        program: PathBuf,
        verdict: Box<Verdict>,
    },
    /// It could not be judged (unreadable, malformed ELF headers, too many levels): it could
    /// run without the shim.
    Unjudged(String),
}

impl Verdict {
    /// True when the program runs with the shim, or does not run at all.
    pub fn is_proxied(&self) -> bool {
        matches!(self, Verdict::Preloadable | Verdict::WillNotRun)
    }

    /// The program that would run without the shim, through scripts and loaders: the
    /// verdict that says why ([`Verdict::Static`], [`Verdict::Go`], ...).
    pub fn innermost(&self) -> &Verdict {
        match self {
            Verdict::Script { verdict, .. } | Verdict::Loader { verdict, .. } => {
                verdict.innermost()
            }
            v => v,
        }
    }

    /// The path of the innermost program when it is not the one executed (its interpreter,
    /// or the program the loader runs).
    pub fn innermost_path(&self) -> Option<&Path> {
        match self {
            Verdict::Script {
                interpreter: p,
                verdict,
            }
            | Verdict::Loader {
                program: p,
                verdict,
            } => Some(verdict.innermost_path().unwrap_or(p)),
            _ => None,
        }
    }

    /// What the user can do about it: the way to proxify it when there is one (static and
    /// Go programs: the supervisor; setuid ones: the user they switch to), then the flag that
    /// runs it anyway and what that costs.
    pub fn fix(&self) -> String {
        match self.innermost() {
            Verdict::PrivilegeChange(p) => format!("{}, or {ALLOW_FIX}", p.fix()),
            Verdict::Static | Verdict::Go => format!(
                "run the whole command with proxify run --mode supervise to proxify it \
                 through the seccomp supervisor, or {ALLOW_FIX}"
            ),
            _ => ALLOW_FIX.to_string(),
        }
    }

    /// The reason alone, without "its connections would bypass the proxy" and the fix.
    pub fn reason(&self) -> Reason<'_> {
        Reason(self)
    }

    /// The innermost reason as a predicate ("is statically linked (...)").
    fn predicate(&self) -> String {
        match self.innermost() {
            Verdict::Preloadable => "is reached by the shim".into(),
            Verdict::WillNotRun => "cannot run".into(),
            Verdict::Static => "is statically linked (no dynamic loader loads the shim)".into(),
            Verdict::Go => {
                "is a Go program (Go's network code does not go through the C library)".into()
            }
            Verdict::PrivilegeChange(p) => p.predicate(),
            Verdict::OtherArch { found, host } => {
                format!("is a {found} program (the shim, {host}, cannot be loaded into it)")
            }
            Verdict::Unjudged(e) => format!("cannot be checked: {e}"),
            Verdict::Script { .. } | Verdict::Loader { .. } => unreachable!("innermost"),
        }
    }
}

/// [`Verdict::reason`]'s `Display`.
pub struct Reason<'a>(&'a Verdict);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        match v {
            Verdict::Script {
                interpreter,
                verdict,
            } => match &**verdict {
                Verdict::Loader { .. } => write!(
                    f,
                    "its interpreter {} is the dynamic loader, and the program it runs, {}, {}",
                    interpreter.display(),
                    v.innermost_path().unwrap_or(interpreter).display(),
                    v.predicate()
                ),
                _ => write!(
                    f,
                    "its interpreter {} {}",
                    v.innermost_path().unwrap_or(interpreter).display(),
                    v.predicate()
                ),
            },
            Verdict::Loader { program, .. } => write!(
                f,
                "the program the dynamic loader runs, {}, {}",
                v.innermost_path().unwrap_or(program).display(),
                v.predicate()
            ),
            _ => write!(f, "it {}", v.predicate()),
        }
    }
}

/// "REASON — its connections would bypass the proxy (FIX)".
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let would = if matches!(self.innermost(), Verdict::Unjudged(_)) {
            "could"
        } else {
            "would"
        };
        write!(
            f,
            "{} \u{2014} its connections {would} bypass the proxy ({})",
            self.reason(),
            self.fix()
        )
    }
}

/// What `execve` is asked to run.
#[derive(Clone, Copy, Debug)]
pub struct Exec<'a> {
    /// The file (as found through `PATH` for `execvp`), relative to `cwd`.
    pub path: &'a Path,
    /// Its arguments after `argv[0]` (the loader's options and program).
    pub args: &'a [&'a OsStr],
    /// `PATH` of the new environment (what `env NAME` in a `#!` line searches); `None`:
    /// [`DEFAULT_PATH`].
    pub search_path: Option<&'a OsStr>,
    /// The directory it runs in, when not the caller's (a `posix_spawn` chdir action).
    pub cwd: Option<&'a Path>,
}

impl<'a> Exec<'a> {
    /// `path` with no arguments, `PATH` of this process, the caller's directory.
    pub fn path(path: &'a Path) -> Exec<'a> {
        Exec {
            path,
            args: &[],
            search_path: None,
            cwd: None,
        }
    }
}

/// Judges programs for a caller with these credentials and this dynamic loader.
#[derive(Clone, Debug)]
pub struct Judge {
    pub creds: Creds,
    pub loader: loader::HostLoader,
}

impl Judge {
    /// For this process as it is now.
    pub fn current() -> Judge {
        Judge {
            creds: Creds::current(),
            loader: loader::host_loader().clone(),
        }
    }

    /// The verdict for `exec`.
    pub fn judge(&self, exec: &Exec) -> Verdict {
        Walk(self).judge(exec)
    }
}

/// What the judge asks of the caller: would exec of a file with these ids change its
/// privileges, and is this file its dynamic loader.
trait Caller {
    fn exec_change(&self, ids: &privilege::FileIds) -> Option<Privilege>;
    fn is_loader(&self, id: (u64, u64), soname: Option<&[u8]>) -> bool;
}

impl Caller for Judge {
    fn exec_change(&self, ids: &privilege::FileIds) -> Option<Privilege> {
        privilege::exec_change(&self.creds, ids)
    }

    fn is_loader(&self, id: (u64, u64), soname: Option<&[u8]>) -> bool {
        self.loader.is(id, soname)
    }
}

/// This process as it is now, like [`Judge::current`], but each part looked up only when a
/// file needs it: the capability sets (`/proc/self/status`) for a set-id file or one with
/// file capabilities, the dynamic loader (two more ELF files to read) for a program without
/// `PT_INTERP`. A dynamically linked program needs neither: its verdict costs the id system
/// calls and its own inspection.
#[derive(Default)]
struct Current {
    creds: std::cell::OnceCell<Creds>,
}

impl Caller for Current {
    fn exec_change(&self, ids: &privilege::FileIds) -> Option<Privilege> {
        if ids.mode & (libc::S_ISUID | libc::S_ISGID) == 0 && ids.caps.is_none() {
            // Neither set-id bits nor capabilities: only the real and effective ids count.
            return privilege::exec_change(&Creds::ids(), ids);
        }
        privilege::exec_change(self.creds.get_or_init(Creds::current), ids)
    }

    fn is_loader(&self, id: (u64, u64), soname: Option<&[u8]>) -> bool {
        loader::host_loader().is(id, soname)
    }
}

/// The judging procedure, for a [`Caller`].
struct Walk<'c, C>(&'c C);

impl<C: Caller> Walk<'_, C> {
    fn judge(&self, exec: &Exec) -> Verdict {
        let path = spawn::resolve(exec.cwd, exec.path);
        self.file(&path, exec.args, exec, 0)
    }

    fn file(&self, path: &Path, args: &[&OsStr], exec: &Exec, depth: usize) -> Verdict {
        let Ok(meta) = std::fs::metadata(path) else {
            return Verdict::WillNotRun;
        };
        if !meta.is_file() || meta.mode() & 0o111 == 0 {
            return Verdict::WillNotRun;
        }
        // O_NONBLOCK and O_NOCTTY in case the file is swapped for a FIFO or a terminal.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) => {
                // Execute-only files can still be run: judge what can be seen without reading.
                if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
                    match privilege::FileIds::of_path(&c, &meta) {
                        Ok(ids) => {
                            if let Some(p) = self.0.exec_change(&ids) {
                                return Verdict::PrivilegeChange(p);
                            }
                        }
                        Err(e) => return cannot_read_caps(&e),
                    }
                }
                return Verdict::Unjudged(format!(
                    "cannot read {} to check it ({})",
                    path.display(),
                    err_text(&e)
                ));
            }
        };
        let mut head = [0u8; script::SHEBANG_MAX];
        let n = match read_head(&file, &mut head) {
            Ok(n) => n,
            Err(e) => {
                return Verdict::Unjudged(format!(
                    "cannot read {} to check it ({})",
                    path.display(),
                    err_text(&e)
                ))
            }
        };
        let head = &head[..n];
        if head.starts_with(b"#!") {
            return self.script(path, head, args, exec, depth);
        }
        if !head.starts_with(b"\x7fELF") {
            return Verdict::Preloadable;
        }
        match privilege::FileIds::of_file(&file, &meta) {
            Ok(ids) => {
                if let Some(p) = self.0.exec_change(&ids) {
                    return Verdict::PrivilegeChange(p);
                }
            }
            Err(e) => return cannot_read_caps(&e),
        }
        let cache = elf::Bounded::cache(&file, meta.len());
        let kind = match elf::inspect(&cache) {
            Ok(k) => k,
            Err(e) => return Verdict::Unjudged(format!("{}: {e}", path.display())),
        };
        match kind {
            elf::Kind::NotExecutable => Verdict::Preloadable,
            elf::Kind::Go { .. } => Verdict::Go,
            elf::Kind::Dynamic { arch } | elf::Kind::Static { arch, .. } if foreign(arch) => {
                Verdict::OtherArch {
                    found: arch,
                    host: Arch::host().unwrap_or(arch),
                }
            }
            elf::Kind::Dynamic { .. } => Verdict::Preloadable,
            elf::Kind::Static { soname, .. } => {
                if self
                    .0
                    .is_loader((meta.dev(), meta.ino()), soname.as_deref())
                {
                    self.loader_run(args, exec, depth)
                } else {
                    Verdict::Static
                }
            }
        }
    }

    fn script(
        &self,
        path: &Path,
        head: &[u8],
        args: &[&OsStr],
        exec: &Exec,
        depth: usize,
    ) -> Verdict {
        if depth >= MAX_DEPTH {
            return too_deep();
        }
        let Some((interp, arg)) = script::parse_shebang(head) else {
            // No interpreter: ENOEXEC, and execvp hands the file to /bin/sh.
            return Verdict::Preloadable;
        };
        let interp_path = spawn::resolve(exec.cwd, Path::new(OsStr::from_bytes(interp)));
        // The interpreter's arguments: the #! argument, the script, the script's arguments.
        let mut iargs: Vec<&OsStr> = Vec::with_capacity(args.len() + 2);
        iargs.extend(arg.map(OsStr::from_bytes));
        iargs.push(path.as_os_str());
        iargs.extend_from_slice(args);
        match self.file(&interp_path, &iargs, exec, depth + 1) {
            Verdict::WillNotRun => return Verdict::WillNotRun,
            Verdict::Preloadable => {}
            v => return wrap_script(interp_path, v),
        }
        if !script::is_env(interp) {
            return Verdict::Preloadable;
        }
        // `#!/usr/bin/env NAME`: env (reached, so its own exec is checked by the shim too)
        // runs NAME found through the search path.
        let Some(name) = arg.and_then(script::env_command) else {
            return Verdict::Preloadable;
        };
        let Some(target) = find_in_path_from(OsStr::from_bytes(name), exec.search_path, exec.cwd)
        else {
            return Verdict::Preloadable;
        };
        let target = spawn::resolve(exec.cwd, &target);
        let targs = [path.as_os_str()];
        match self.file(&target, &targs, exec, depth + 1) {
            // env itself runs and fails.
            Verdict::WillNotRun | Verdict::Preloadable => Verdict::Preloadable,
            v => wrap_script(target, v),
        }
    }

    /// The host's loader run with `args`: judged by the program it runs.
    fn loader_run(&self, args: &[&OsStr], exec: &Exec, depth: usize) -> Verdict {
        if depth >= MAX_DEPTH {
            return too_deep();
        }
        let (program, index) = match loader::program(args) {
            loader::Run::Nothing => return Verdict::Preloadable,
            loader::Run::Program { program, index } => (program, index),
        };
        if !program.as_bytes().contains(&b'/') {
            return Verdict::Loader {
                program: PathBuf::from(program),
                verdict: Box::new(Verdict::Unjudged(format!(
                    "the dynamic loader looks {} up in the library directories (give its path)",
                    Path::new(program).display()
                ))),
            };
        }
        let path = spawn::resolve(exec.cwd, Path::new(program));
        let v = self.loaded(&path, &args[index + 1..], exec, depth);
        if v.is_proxied() {
            return Verdict::Preloadable;
        }
        match v {
            Verdict::Loader { .. } => v,
            v => Verdict::Loader {
                program: path,
                verdict: Box::new(v),
            },
        }
    }

    /// A program the loader maps and runs: its permission bits do not matter (no exec), only
    /// what it is. Anything the loader cannot load makes it fail: [`Verdict::Preloadable`].
    fn loaded(&self, path: &Path, args: &[&OsStr], exec: &Exec, depth: usize) -> Verdict {
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        else {
            return Verdict::Preloadable;
        };
        let Ok(meta) = file.metadata() else {
            return Verdict::Preloadable;
        };
        if !meta.is_file() {
            return Verdict::Preloadable;
        }
        let mut head = [0u8; 4];
        if read_head(&file, &mut head).ok() != Some(4) || &head != b"\x7fELF" {
            return Verdict::Preloadable;
        }
        let cache = elf::Bounded::cache(&file, meta.len());
        match elf::inspect(&cache) {
            Err(e) => Verdict::Unjudged(format!("{}: {e}", path.display())),
            Ok(elf::Kind::Go { .. }) => Verdict::Go,
            Ok(elf::Kind::Dynamic { arch } | elf::Kind::Static { arch, .. }) if foreign(arch) => {
                Verdict::Preloadable
            }
            Ok(elf::Kind::Static { soname, .. }) => {
                if self
                    .0
                    .is_loader((meta.dev(), meta.ino()), soname.as_deref())
                {
                    // The loader asked to run itself as the program.
                    self.loader_run(args, exec, depth + 1)
                } else {
                    Verdict::Static
                }
            }
            Ok(elf::Kind::Dynamic { .. } | elf::Kind::NotExecutable) => Verdict::Preloadable,
        }
    }
}

fn foreign(arch: Arch) -> bool {
    Arch::host().is_some_and(|h| h != arch)
}

fn wrap_script(interpreter: PathBuf, v: Verdict) -> Verdict {
    match v {
        // The innermost interpreter of a chain is named.
        Verdict::Script { .. } | Verdict::Unjudged(_) => v,
        v => Verdict::Script {
            interpreter,
            verdict: Box::new(v),
        },
    }
}

fn too_deep() -> Verdict {
    Verdict::Unjudged(format!(
        "more than {MAX_DEPTH} levels of #! interpreters or loaders to follow"
    ))
}

fn cannot_read_caps(e: &io::Error) -> Verdict {
    Verdict::Unjudged(format!(
        "cannot read its file capabilities ({})",
        err_text(e)
    ))
}

fn read_head(file: &std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// io::Error's text without Rust's " (os error N)".
fn err_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The one line `--allow-unproxied` prints when it lets the unproxied program `name` start.
pub fn allowed_line(name: &str, verdict: &Verdict) -> String {
    format!(
        "running {name} without the proxy (--allow-unproxied): {}",
        verdict.reason()
    )
}

/// The verdict for `path` run by this process with `args`, `PATH` of this process.
pub fn judge(path: &Path, args: &[&OsStr]) -> Verdict {
    let search = std::env::var_os("PATH");
    Walk(&Current::default()).judge(&Exec {
        path,
        args,
        search_path: search.as_deref(),
        cwd: None,
    })
}

/// The first `DIR/name` in the search path that is a regular file we may execute, as
/// `execvp` finds it (an empty entry is the current directory). A name with a `/` is returned
/// as it is; an empty name is never found.
pub fn find_in_path(name: &OsStr, search_path: Option<&OsStr>) -> Option<PathBuf> {
    find_in_path_from(name, search_path, None)
}

/// [`find_in_path`] for a process whose working directory is `cwd` (relative entries are
/// relative to it); the path returned is relative to `cwd` when the entry was.
pub fn find_in_path_from(
    name: &OsStr,
    search_path: Option<&OsStr>,
    cwd: Option<&Path>,
) -> Option<PathBuf> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    if bytes.contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let search = search_path.map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    for dir in search.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(name);
        let seen = spawn::resolve(cwd, &candidate);
        let Ok(meta) = std::fs::metadata(&seen) else {
            continue;
        };
        if meta.is_file() && executable(&seen) {
            return Some(candidate);
        }
    }
    None
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests;
