//! Will an `LD_PRELOAD` library reach a program? [`inspect`] looks at an executable file the way
//! the kernel and the dynamic loader will and says whether the shim would be loaded into it.
//!
//! It is not reached when:
//! - the ELF file has no `PT_INTERP` (statically linked, static-pie): no dynamic loader runs;
//! - it is a Go program: Go's `net` package makes its own system calls, even when the binary is
//!   dynamically linked;
//! - it is setuid, setgid or has file capabilities (`security.capability`): the loader runs in
//!   secure-execution mode and drops `LD_PRELOAD` entries that contain a `/`. (Setuid-root run
//!   by root would keep it, but the check does not guess: it is refused too.)
//! - it is an ELF file of another class or architecture (a 32-bit program on a 64-bit host):
//!   the loader refuses the shim with a message and runs the program anyway.
//!
//! Scripts (`#!`) are judged by their interpreter, `/usr/bin/env NAME` by NAME found through
//! the search path, at most [`MAX_DEPTH`] levels deep. The setuid bit of a script itself is
//! ignored, as the kernel does.
//!
//! The file is read with a few positioned reads: the first 4 KiB (ELF header, program headers
//! and usually the notes), then, for ELF files, the section header table and its name table,
//! never more than [`MAX_READ`] bytes in all. Garbage never panics: every offset is checked.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// `1`/`true`/`yes`: run programs the shim cannot reach anyway (`--allow-unproxied`).
pub const ENV_ALLOW_UNPROXIED: &str = "PROXIFY_ALLOW_UNPROXIED";
/// Levels of `#!` interpreters (and `env NAME`) followed; the kernel allows 4 nested scripts.
pub const MAX_DEPTH: usize = 4;
/// Most bytes read from one file (headers, notes, section headers and names).
pub const MAX_READ: usize = 4 << 20;
/// The search path `execvp` uses when `PATH` is unset.
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";

const HEAD: usize = 4096;
/// The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;
/// The kernel refuses program header tables larger than this.
const MAX_PHDRS_BYTES: usize = 65536;
const MAX_NOTE_SEGMENT: usize = 65536;
const MAX_NOTE_SEGMENTS: usize = 8;
const MAX_SHDRS_BYTES: usize = 1 << 20;
const MAX_SHSTRTAB: usize = 1 << 20;

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

/// What [`inspect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The dynamic loader will load `LD_PRELOAD` into it. Also files that are neither ELF nor
    /// scripts: `execve` fails with ENOEXEC and `execvp` hands them to `/bin/sh`.
    Reachable,
    /// The kernel will not run it at all (missing, not a regular file, no execute bit, missing
    /// interpreter): `execve` fails by itself and nothing runs.
    CannotRun,
    /// It would run without the shim.
    Unreachable(Reason),
}

/// Why a program would run without the shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Static,
    Go,
    Setuid,
    Setgid,
    Capabilities,
    /// Another ELF class or architecture than the shim's, e.g. `found` "32-bit x86".
    Foreign {
        found: String,
        host: String,
    },
    /// A script whose interpreter (at any depth) is unreachable for `reason`.
    Interpreter {
        path: PathBuf,
        reason: Box<Reason>,
    },
}

impl Reason {
    /// The reason as a predicate ("is statically linked ..."), for the innermost program.
    fn predicate(&self) -> String {
        match self {
            Reason::Static => "is statically linked (no dynamic loader loads the shim)".into(),
            Reason::Go => {
                "is a Go program (Go's network code does not go through the C library)".into()
            }
            Reason::Setuid => "is setuid (the loader ignores LD_PRELOAD for it)".into(),
            Reason::Setgid => "is setgid (the loader ignores LD_PRELOAD for it)".into(),
            Reason::Capabilities => {
                "has file capabilities (the loader ignores LD_PRELOAD for it)".into()
            }
            Reason::Foreign { found, host } => {
                format!("is a {found} program (the shim, {host}, cannot be loaded into it)")
            }
            Reason::Interpreter { reason, .. } => reason.predicate(),
        }
    }

    /// `reason` for the interpreter `path`, keeping the innermost interpreter of a chain.
    fn via(path: &Path, reason: Reason) -> Reason {
        match reason {
            Reason::Interpreter { .. } => reason,
            r => Reason::Interpreter {
                path: path.to_path_buf(),
                reason: Box::new(r),
            },
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Interpreter { path, reason } => write!(
                f,
                "its interpreter {} {}",
                path.display(),
                reason.predicate()
            ),
            r => write!(f, "it {}", r.predicate()),
        }
    }
}

/// Inspects the program at `path`, following `env NAME` through `$PATH`.
///
/// `Err` means the file exists but could not be judged (unreadable, malformed ELF program
/// headers, too many interpreters): callers should treat it as unreachable.
pub fn inspect(path: &Path) -> Result<Verdict, String> {
    inspect_with(path, std::env::var_os("PATH").as_deref())
}

/// [`inspect`] with the search path for `env NAME` given (`None`: [`DEFAULT_PATH`]).
pub fn inspect_with(path: &Path, search_path: Option<&OsStr>) -> Result<Verdict, String> {
    judge(path, search_path, 0)
}

/// The first `DIR/name` in the search path that is a regular file we may execute, as
/// `execvp` finds it (an empty entry is the current directory). A name with a `/` is returned
/// as it is; an empty name is never found.
pub fn find_in_path(name: &OsStr, search_path: Option<&OsStr>) -> Option<PathBuf> {
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
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && executable(&candidate) {
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

/// io::Error's text without Rust's " (os error N)".
fn err_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn judge(path: &Path, search: Option<&OsStr>, depth: usize) -> Result<Verdict, String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(Verdict::CannotRun);
    };
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Ok(Verdict::CannotRun);
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
            if let Some(r) = privileged(&meta, Xattr::Path(path))? {
                return Ok(Verdict::Unreachable(r));
            }
            return Err(format!(
                "cannot read {} to check it ({})",
                path.display(),
                err_text(&e)
            ));
        }
    };
    let mut src = Budget::new(&file);
    let head = src.read(0, HEAD).map_err(|e| {
        format!(
            "cannot read {} to check it ({})",
            path.display(),
            err_text(&e)
        )
    })?;
    if head.starts_with(b"#!") {
        return judge_script(&head, search, depth);
    }
    if !head.starts_with(b"\x7fELF") {
        return Ok(Verdict::Reachable);
    }
    if let Some(r) = privileged(&meta, Xattr::Fd(&file))? {
        return Ok(Verdict::Unreachable(r));
    }
    judge_elf(&mut src, &head).map_err(|e| format!("{}: {e}", path.display()))
}

enum Xattr<'a> {
    Path(&'a Path),
    Fd(&'a File),
}

/// Setuid, setgid or file capabilities: the loader's secure-execution mode.
fn privileged(meta: &Metadata, x: Xattr) -> Result<Option<Reason>, String> {
    let mode = meta.mode();
    if mode & libc::S_ISUID != 0 {
        return Ok(Some(Reason::Setuid));
    }
    // Setgid without group execute is mandatory locking, not setgid execution.
    if mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0 {
        return Ok(Some(Reason::Setgid));
    }
    let name = c"security.capability";
    // SAFETY: valid NUL-terminated strings; a NULL buffer of size 0 asks for the size only.
    let r = unsafe {
        match x {
            Xattr::Fd(f) => libc::fgetxattr(f.as_raw_fd(), name.as_ptr(), std::ptr::null_mut(), 0),
            Xattr::Path(p) => {
                let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
                    return Ok(None);
                };
                libc::getxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
            }
        }
    };
    if r >= 0 {
        return Ok(Some(Reason::Capabilities));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
        _ => Err(format!(
            "cannot read its file capabilities ({})",
            err_text(&e)
        )),
    }
}

fn judge_script(head: &[u8], search: Option<&OsStr>, depth: usize) -> Result<Verdict, String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "more than {MAX_DEPTH} levels of #! interpreters to follow"
        ));
    }
    let Some((interp, arg)) = parse_shebang(head) else {
        // No interpreter: ENOEXEC, and execvp hands the file to /bin/sh.
        return Ok(Verdict::Reachable);
    };
    let interp = PathBuf::from(OsStr::from_bytes(interp));
    match judge(&interp, search, depth + 1)? {
        Verdict::Unreachable(r) => return Ok(Verdict::Unreachable(Reason::via(&interp, r))),
        Verdict::CannotRun => return Ok(Verdict::CannotRun),
        Verdict::Reachable => {}
    }
    if interp.file_name() != Some(OsStr::new("env")) {
        return Ok(Verdict::Reachable);
    }
    // `#!/usr/bin/env NAME`: env (reached, so its own exec is checked by the shim too) runs
    // NAME found through the search path.
    let Some(name) = arg.and_then(env_command) else {
        return Ok(Verdict::Reachable);
    };
    let Some(target) = find_in_path(OsStr::from_bytes(name), search) else {
        return Ok(Verdict::Reachable);
    };
    match judge(&target, search, depth + 1)? {
        Verdict::Unreachable(r) => Ok(Verdict::Unreachable(Reason::via(&target, r))),
        // env itself runs and fails.
        Verdict::CannotRun | Verdict::Reachable => Ok(Verdict::Reachable),
    }
}

/// The interpreter and optional argument of a `#!` line, as the kernel splits it.
fn parse_shebang(head: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let line = head.get(2..)?;
    let line = &line[..line.len().min(SHEBANG_MAX - 2)];
    let line = match line.iter().position(|&b| b == b'\n' || b == 0) {
        Some(i) => &line[..i],
        None => line,
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !blank(b))?;
    let line = &line[start..];
    let end = line.iter().position(blank).unwrap_or(line.len());
    let interp = &line[..end];
    let rest = &line[end..];
    let arg = match rest.iter().position(|b| !blank(b)) {
        Some(i) => {
            let rest = &rest[i..];
            let last = rest.iter().rposition(|b| !blank(b)).unwrap_or(0);
            Some(&rest[..=last])
        }
        None => None,
    };
    Some((interp, arg))
}

/// The command `env` runs for the shebang argument `arg` (one argument, split only with `-S`).
fn env_command(arg: &[u8]) -> Option<&[u8]> {
    let split = arg
        .strip_prefix(b"--split-string=")
        .or_else(|| arg.strip_prefix(b"-S"));
    let tokens: Vec<&[u8]> = match split {
        Some(rest) => rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|t| !t.is_empty())
            .collect(),
        None => vec![arg],
    };
    let mut it = tokens.into_iter();
    while let Some(t) = it.next() {
        if t == b"--" {
            return it.next();
        }
        if t == b"-u" || t == b"-C" || t == b"--unset" || t == b"--chdir" {
            it.next();
            continue;
        }
        if t.starts_with(b"-") || t.contains(&b'=') {
            continue;
        }
        return Some(t);
    }
    None
}

/// Positioned reads with a total budget.
trait ReadAt {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let Ok(off) = usize::try_from(off) else {
            return Ok(0);
        };
        let Some(src) = self.get(off..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

struct Budget<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    left: usize,
}

impl<'a, R: ReadAt + ?Sized> Budget<'a, R> {
    fn new(src: &'a R) -> Self {
        Budget {
            src,
            left: MAX_READ,
        }
    }

    /// Up to `len` bytes at `off` (fewer at the end of the file), within the budget.
    fn read(&mut self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let len = len.min(self.left);
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let Some(at) = off.checked_add(got as u64) else {
                break;
            };
            match self.src.read_at(&mut buf[got..], at) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        self.left -= len;
        Ok(buf)
    }
}

/// Fixed-width fields of an ELF file in its class and byte order; `None` when out of bounds.
#[derive(Clone, Copy)]
struct Fmt {
    wide: bool,
    big: bool,
}

impl Fmt {
    fn u16(self, b: &[u8], off: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }
    fn u32(self, b: &[u8], off: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
    fn u64(self, b: &[u8], off: usize) -> Option<u64> {
        let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    }
    /// An address or offset: 4 bytes in 32-bit files, 8 in 64-bit ones.
    fn word(self, b: &[u8], off: usize) -> Option<u64> {
        if self.wide {
            self.u64(b, off)
        } else {
            self.u32(b, off).map(u64::from)
        }
    }
}

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const SHT_NOBITS: u32 = 8;
const SHN_XINDEX: u16 = 0xffff;
/// Type of the Go build ID note (owner "Go").
const NT_GO_BUILDID: u32 = 4;
const GO_SECTIONS: [&[u8]; 3] = [b".go.buildinfo", b".gopclntab", b".note.go.buildid"];

/// This build's ELF class, byte order and machine: (wide, big, e_machine).
fn host() -> Option<(bool, bool, u16)> {
    let wide = cfg!(target_pointer_width = "64");
    let big = cfg!(target_endian = "big");
    let machine = if cfg!(target_arch = "x86_64") {
        62
    } else if cfg!(target_arch = "x86") {
        3
    } else if cfg!(target_arch = "aarch64") {
        183
    } else if cfg!(target_arch = "arm") {
        40
    } else if cfg!(target_arch = "riscv64") || cfg!(target_arch = "riscv32") {
        243
    } else if cfg!(target_arch = "powerpc64") {
        21
    } else if cfg!(target_arch = "powerpc") {
        20
    } else if cfg!(target_arch = "s390x") {
        22
    } else if cfg!(target_arch = "loongarch64") {
        258
    } else if cfg!(target_arch = "mips") || cfg!(target_arch = "mips64") {
        8
    } else {
        return None;
    };
    Some((wide, big, machine))
}

fn describe_arch(wide: bool, big: bool, machine: u16) -> String {
    let name = match machine {
        3 => "x86".to_string(),
        62 => "x86-64".to_string(),
        40 => "ARM".to_string(),
        183 => "AArch64".to_string(),
        243 => "RISC-V".to_string(),
        20 => "PowerPC".to_string(),
        21 => "PowerPC64".to_string(),
        22 => "S/390".to_string(),
        258 => "LoongArch".to_string(),
        8 => "MIPS".to_string(),
        m => format!("machine {m}"),
    };
    let bits = if wide { 64 } else { 32 };
    let order = if big { " big-endian" } else { "" };
    format!("{bits}-bit{order} {name}")
}

fn judge_elf<R: ReadAt + ?Sized>(src: &mut Budget<R>, head: &[u8]) -> Result<Verdict, String> {
    let wide = match head.get(4) {
        Some(1) => false,
        Some(2) => true,
        // The kernel's ELF loader rejects it (ENOEXEC).
        _ => return Ok(Verdict::Reachable),
    };
    let big = match head.get(5) {
        Some(1) => false,
        Some(2) => true,
        _ => return Ok(Verdict::Reachable),
    };
    let f = Fmt { wide, big };
    let (ehdr_size, phdr_size, shdr_size) = if wide { (64, 56, 64) } else { (52, 32, 40) };
    if head.len() < ehdr_size {
        return Ok(Verdict::Reachable);
    }
    let field = |o32: usize, o64: usize| if wide { o64 } else { o32 };
    let bad = || "malformed ELF header".to_string();
    let e_type = f.u16(head, 16).ok_or_else(bad)?;
    let machine = f.u16(head, 18).ok_or_else(bad)?;
    let phoff = f.word(head, field(28, 32)).ok_or_else(bad)?;
    let shoff = f.word(head, field(32, 40)).ok_or_else(bad)?;
    let phentsize = f.u16(head, field(42, 54)).ok_or_else(bad)?;
    let phnum = f.u16(head, field(44, 56)).ok_or_else(bad)?;
    let shentsize = f.u16(head, field(46, 58)).ok_or_else(bad)?;
    let shnum = f.u16(head, field(48, 60)).ok_or_else(bad)?;
    let shstrndx = f.u16(head, field(50, 62)).ok_or_else(bad)?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Ok(Verdict::Reachable);
    }
    // The kernel's own limits: other tables are refused with ENOEXEC.
    let ph_bytes = usize::from(phnum) * phdr_size;
    if usize::from(phentsize) != phdr_size || phnum == 0 || ph_bytes > MAX_PHDRS_BYTES {
        return Ok(Verdict::Reachable);
    }

    let phdrs = slice_or_read(src, head, phoff, ph_bytes)?;
    if phdrs.len() < ph_bytes {
        return Err("truncated ELF program headers".into());
    }
    let mut interp = false;
    let mut go = false;
    let mut notes_seen = 0;
    for i in 0..usize::from(phnum) {
        let p = &phdrs[i * phdr_size..(i + 1) * phdr_size];
        let p_type = f.u32(p, 0).ok_or_else(bad)?;
        match p_type {
            PT_INTERP => interp = true,
            PT_NOTE if !go && notes_seen < MAX_NOTE_SEGMENTS => {
                notes_seen += 1;
                let off = f.word(p, field(4, 8)).ok_or_else(bad)?;
                let size = f.word(p, field(16, 32)).ok_or_else(bad)?;
                let size = usize::try_from(size)
                    .unwrap_or(usize::MAX)
                    .min(MAX_NOTE_SEGMENT);
                let notes = slice_or_read(src, head, off, size)?;
                go = has_go_note(f, &notes);
            }
            _ => {}
        }
    }
    if !go && shoff != 0 && usize::from(shentsize) == shdr_size {
        go = has_go_section(src, f, shoff, shnum, shstrndx, shdr_size)?;
    }

    if go {
        return Ok(Verdict::Unreachable(Reason::Go));
    }
    if !interp {
        return Ok(Verdict::Unreachable(Reason::Static));
    }
    if let Some((h_wide, h_big, h_machine)) = host() {
        if (wide, big, machine) != (h_wide, h_big, h_machine) {
            return Ok(Verdict::Unreachable(Reason::Foreign {
                found: describe_arch(wide, big, machine),
                host: describe_arch(h_wide, h_big, h_machine),
            }));
        }
    }
    Ok(Verdict::Reachable)
}

/// `len` bytes at `off`: from `head` when they are in it, else read (fewer at end of file).
fn slice_or_read<R: ReadAt + ?Sized>(
    src: &mut Budget<R>,
    head: &[u8],
    off: u64,
    len: usize,
) -> Result<Vec<u8>, String> {
    if let Ok(start) = usize::try_from(off) {
        if let Some(s) = start.checked_add(len).and_then(|end| head.get(start..end)) {
            return Ok(s.to_vec());
        }
    }
    src.read(off, len)
        .map_err(|e| format!("cannot read it ({})", err_text(&e)))
}

fn has_go_note(f: Fmt, notes: &[u8]) -> bool {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut i = 0usize;
    while let (Some(namesz), Some(descsz), Some(ty)) =
        (f.u32(notes, i), f.u32(notes, i + 4), f.u32(notes, i + 8))
    {
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let name_at = i + 12;
        let Some(name) = name_at
            .checked_add(namesz)
            .and_then(|end| notes.get(name_at..end))
        else {
            return false;
        };
        if ty == NT_GO_BUILDID && name.starts_with(b"Go\0") {
            return true;
        }
        let next = align4(namesz)
            .and_then(|n| name_at.checked_add(n))
            .and_then(|d| align4(descsz).and_then(|n| d.checked_add(n)));
        match next {
            Some(n) if n > i => i = n,
            _ => return false,
        }
    }
    false
}

fn has_go_section<R: ReadAt + ?Sized>(
    src: &mut Budget<R>,
    f: Fmt,
    shoff: u64,
    shnum: u16,
    shstrndx: u16,
    shdr_size: usize,
) -> Result<bool, String> {
    let wide = f.wide;
    let field = |o32: usize, o64: usize| if wide { o64 } else { o32 };
    let io = |e: io::Error| format!("cannot read it ({})", err_text(&e));
    // Section 0 holds the real count and name-table index when they do not fit the header.
    let first = src.read(shoff, shdr_size).map_err(io)?;
    if first.len() < shdr_size {
        return Ok(false);
    }
    let count = if shnum == 0 {
        f.word(&first, field(20, 32)).unwrap_or(0)
    } else {
        u64::from(shnum)
    };
    let strndx = if shstrndx == SHN_XINDEX {
        u64::from(f.u32(&first, field(24, 40)).unwrap_or(0))
    } else {
        u64::from(shstrndx)
    };
    let max = (MAX_SHDRS_BYTES / shdr_size) as u64;
    let count = count.min(max) as usize;
    if count == 0 || strndx == 0 || strndx >= count as u64 {
        return Ok(false);
    }
    let table = src.read(shoff, count * shdr_size).map_err(io)?;
    let count = table.len() / shdr_size;
    let strndx = strndx as usize;
    if strndx >= count {
        return Ok(false);
    }
    let s = &table[strndx * shdr_size..(strndx + 1) * shdr_size];
    let (Some(ty), Some(off), Some(size)) = (
        f.u32(s, 4),
        f.word(s, field(16, 24)),
        f.word(s, field(20, 32)),
    ) else {
        return Ok(false);
    };
    if ty == SHT_NOBITS {
        return Ok(false);
    }
    let size = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(MAX_SHSTRTAB);
    let names = src.read(off, size).map_err(io)?;
    for i in 0..count {
        let Some(name_off) = f.u32(&table, i * shdr_size) else {
            break;
        };
        let Some(rest) = names.get(name_off as usize..) else {
            continue;
        };
        let name = match rest.iter().position(|&b| b == 0) {
            Some(end) => &rest[..end],
            None => rest,
        };
        if GO_SECTIONS.contains(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::sync::OnceLock;

    fn tmp() -> PathBuf {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        DIR.get_or_init(|| {
            // Leftovers of earlier runs whose process is gone.
            if let Ok(list) = std::fs::read_dir(std::env::temp_dir()) {
                for e in list.flatten() {
                    let name = e.file_name();
                    let pid = name
                        .to_str()
                        .and_then(|n| n.strip_prefix("proxify-elfcheck-"));
                    if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            let d = std::env::temp_dir().join(format!("proxify-elfcheck-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .clone()
    }

    fn write_exec(name: &str, data: &[u8], mode: u32) -> PathBuf {
        let p = tmp().join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn copy_exec(from: &str, name: &str, mode: u32) -> PathBuf {
        write_exec(name, &std::fs::read(from).unwrap(), mode)
    }

    fn unreachable(v: Result<Verdict, String>) -> Reason {
        match v {
            Ok(Verdict::Unreachable(r)) => r,
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    /// A statically linked C program built here (glibc's libc.a is in libc6-dev).
    fn static_binary(name: &str, pie: bool) -> PathBuf {
        // Tests run in parallel: build each one once, under a lock.
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = tmp().join(name);
        if out.exists() {
            return out;
        }
        let src = tmp().join(format!("{name}.c"));
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let flag = if pie { "-static-pie" } else { "-static" };
        let o = Command::new("cc")
            .arg(flag)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run cc ({e}): these tests need it: apt-get install gcc libc6-dev")
            });
        assert!(
            o.status.success(),
            "cc {flag} failed (needs glibc's static libraries: apt-get install libc6-dev): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    struct Crafted {
        wide: bool,
        big: bool,
        machine: u16,
        e_type: u16,
        interp: bool,
        go_note: bool,
        sections: Vec<&'static str>,
    }

    impl Crafted {
        fn host() -> Self {
            let (wide, big, machine) = host().expect("an architecture the tests know");
            Crafted {
                wide,
                big,
                machine,
                e_type: ET_DYN,
                interp: true,
                go_note: false,
                sections: vec![".text", ".data"],
            }
        }

        /// A minimal ELF file: header, program headers (PT_INTERP, PT_NOTE), the interpreter
        /// name, a note, the section name table and section headers, in that order.
        fn build(&self) -> Vec<u8> {
            let Crafted { wide, big, .. } = *self;
            let (eh, ph, sh) = if wide { (64, 56, 64) } else { (52, 32, 40) };
            let mut phdrs = Vec::new(); // (type, offset, size)
            let interp_data = b"/lib/ld-test.so.1\0".to_vec();
            let mut note = Vec::new();
            let put32 = |v: &mut Vec<u8>, x: u32| {
                v.extend_from_slice(&if big {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                })
            };
            // A GNU build-id note first, so the Go note is not the first one.
            put32(&mut note, 4);
            put32(&mut note, 4);
            put32(&mut note, 3);
            note.extend_from_slice(b"GNU\0abcd");
            if self.go_note {
                put32(&mut note, 4);
                put32(&mut note, 8);
                put32(&mut note, NT_GO_BUILDID);
                note.extend_from_slice(b"Go\0\0buildid!");
            }
            let nph = 1 + usize::from(self.interp);
            let mut data_off = eh + nph * ph;
            let mut body = Vec::new();
            if self.interp {
                phdrs.push((PT_INTERP, data_off, interp_data.len()));
                body.extend_from_slice(&interp_data);
                data_off += interp_data.len();
            }
            while data_off % 4 != 0 {
                body.push(0);
                data_off += 1;
            }
            phdrs.push((PT_NOTE, data_off, note.len()));
            body.extend_from_slice(&note);
            data_off += note.len();
            let mut shstr = vec![0u8];
            let mut name_offs = Vec::new();
            let mut names: Vec<&str> = self.sections.clone();
            names.push(".shstrtab");
            for n in &names {
                name_offs.push(shstr.len() as u32);
                shstr.extend_from_slice(n.as_bytes());
                shstr.push(0);
            }
            let shstr_off = data_off;
            body.extend_from_slice(&shstr);
            data_off += shstr.len();
            while data_off % 8 != 0 {
                body.push(0);
                data_off += 1;
            }
            let shoff = data_off;
            let shnum = names.len() + 1;

            let mut out = Vec::new();
            let w16 = |v: &mut Vec<u8>, x: u16| {
                v.extend_from_slice(&if big {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                })
            };
            let w32 = |v: &mut Vec<u8>, x: u32| {
                v.extend_from_slice(&if big {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                })
            };
            let wword = |v: &mut Vec<u8>, x: u64| {
                if wide {
                    v.extend_from_slice(&if big {
                        x.to_be_bytes()
                    } else {
                        x.to_le_bytes()
                    })
                } else {
                    w32(v, x as u32)
                }
            };
            out.extend_from_slice(b"\x7fELF");
            out.push(if wide { 2 } else { 1 });
            out.push(if big { 2 } else { 1 });
            out.push(1);
            out.extend_from_slice(&[0; 9]);
            w16(&mut out, self.e_type);
            w16(&mut out, self.machine);
            w32(&mut out, 1);
            wword(&mut out, 0x1000); // entry
            wword(&mut out, eh as u64); // phoff
            wword(&mut out, shoff as u64);
            w32(&mut out, 0); // flags
            w16(&mut out, eh as u16);
            w16(&mut out, ph as u16);
            w16(&mut out, phdrs.len() as u16);
            w16(&mut out, sh as u16);
            w16(&mut out, shnum as u16);
            w16(&mut out, (shnum - 1) as u16);
            assert_eq!(out.len(), eh);
            for (ty, off, size) in &phdrs {
                let (off, size) = (*off as u64, *size as u64);
                if wide {
                    w32(&mut out, *ty);
                    w32(&mut out, 4); // flags
                    wword(&mut out, off);
                    wword(&mut out, off); // vaddr
                    wword(&mut out, off); // paddr
                    wword(&mut out, size);
                    wword(&mut out, size);
                    wword(&mut out, 4);
                } else {
                    w32(&mut out, *ty);
                    wword(&mut out, off);
                    wword(&mut out, off);
                    wword(&mut out, off);
                    wword(&mut out, size);
                    wword(&mut out, size);
                    w32(&mut out, 4);
                    w32(&mut out, 4);
                }
            }
            out.extend_from_slice(&body);
            assert_eq!(out.len(), shoff);
            out.extend_from_slice(&vec![0; sh]); // section 0
            for (i, off) in name_offs.iter().enumerate() {
                let is_str = i + 1 == name_offs.len();
                let start = out.len();
                w32(&mut out, *off);
                w32(&mut out, if is_str { 3 } else { 1 }); // SHT_STRTAB / SHT_PROGBITS
                wword(&mut out, 0); // flags
                wword(&mut out, 0); // addr
                wword(&mut out, if is_str { shstr_off as u64 } else { 0 });
                wword(&mut out, if is_str { shstr.len() as u64 } else { 0 });
                w32(&mut out, 0);
                w32(&mut out, 0);
                wword(&mut out, 1);
                wword(&mut out, 0);
                assert_eq!(out.len() - start, sh);
            }
            out
        }
    }

    fn judge_bytes(b: &[u8]) -> Result<Verdict, String> {
        let mut src = Budget::new(b);
        let head = src.read(0, HEAD).unwrap();
        judge_elf(&mut src, &head)
    }

    #[test]
    fn dynamic_programs_are_reachable() {
        assert_eq!(inspect(Path::new("/bin/true")), Ok(Verdict::Reachable));
        assert_eq!(inspect(Path::new("/bin/sh")), Ok(Verdict::Reachable));
    }

    #[test]
    fn setuid_setgid_and_capabilities() {
        let shipped = ["/usr/bin/passwd", "/bin/su", "/usr/bin/newgrp"]
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & libc::S_ISUID != 0))
            .expect("no setuid program found: apt-get install passwd (for /usr/bin/passwd)");
        assert_eq!(unreachable(inspect(Path::new(shipped))), Reason::Setuid);

        let p = copy_exec("/bin/true", "suid-true", 0o4755);
        assert_eq!(unreachable(inspect(&p)), Reason::Setuid);
        let p = copy_exec("/bin/true", "sgid-true", 0o2755);
        assert_eq!(unreachable(inspect(&p)), Reason::Setgid);
        // Setgid without group execute is mandatory locking: the loader is not affected.
        let p = copy_exec("/bin/true", "lock-true", 0o2745);
        assert_eq!(inspect(&p), Ok(Verdict::Reachable));

        let p = copy_exec("/bin/true", "cap-true", 0o755);
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (13).
        let mut cap = [0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"security.capability".as_ptr(),
                cap.as_ptr().cast(),
                cap.len(),
                0,
            )
        };
        assert_eq!(
            r,
            0,
            "cannot set file capabilities on {} ({}): run the tests as root on a file system \
             with xattrs",
            p.display(),
            io::Error::last_os_error()
        );
        assert_eq!(unreachable(inspect(&p)), Reason::Capabilities);
        let msg = Reason::Capabilities.to_string();
        assert!(msg.starts_with("it has file capabilities"), "{msg}");
    }

    #[test]
    fn static_programs() {
        let s = static_binary("static", false);
        assert_eq!(unreachable(inspect(&s)), Reason::Static);
        let s = static_binary("static-pie", true);
        assert_eq!(unreachable(inspect(&s)), Reason::Static);
        assert!(Reason::Static
            .to_string()
            .starts_with("it is statically linked"));
    }

    #[test]
    fn go_programs() {
        // No Go toolchain needed: the markers the check looks for, in crafted files.
        let mut c = Crafted::host();
        assert_eq!(judge_bytes(&c.build()), Ok(Verdict::Reachable));
        c.sections = vec![".text", ".go.buildinfo", ".data"];
        assert_eq!(unreachable(judge_bytes(&c.build())), Reason::Go);
        c.sections = vec![".gopclntab"];
        assert_eq!(unreachable(judge_bytes(&c.build())), Reason::Go);
        // Only the build ID note (section headers stripped away).
        c.sections = vec![".text"];
        c.go_note = true;
        let mut b = c.build();
        assert_eq!(unreachable(judge_bytes(&b)), Reason::Go);
        let shoff_at = if c.wide { 40 } else { 32 };
        b[shoff_at..shoff_at + 4].fill(0);
        if c.wide {
            b[shoff_at + 4..shoff_at + 8].fill(0);
        }
        assert_eq!(unreachable(judge_bytes(&b)), Reason::Go);
        // Static Go programs say Go, the more useful reason.
        c.interp = false;
        assert_eq!(unreachable(judge_bytes(&c.build())), Reason::Go);
        // The same through a file on disk.
        let p = write_exec("go-prog", &c.build(), 0o755);
        assert_eq!(unreachable(inspect(&p)), Reason::Go);
        assert!(Reason::Go.to_string().contains("Go program"));
        // Every class and byte order.
        for (wide, big) in [(false, false), (false, true), (true, false), (true, true)] {
            let c = Crafted {
                wide,
                big,
                sections: vec![".go.buildinfo"],
                ..Crafted::host()
            };
            assert_eq!(
                unreachable(judge_bytes(&c.build())),
                Reason::Go,
                "{wide} {big}"
            );
        }
    }

    #[test]
    fn real_go_programs_when_installed() {
        // The crafted files above prove the markers; real Go builds (static and cgo) are
        // checked too when this machine has some.
        let found: Vec<PathBuf> = ["kubectl", "docker", "terraform", "go", "gofmt", "kpt"]
            .iter()
            .filter_map(|n| {
                find_in_path(
                    OsStr::new(n),
                    Some(OsStr::new("/usr/local/bin:/usr/bin:/usr/local/go/bin")),
                )
            })
            .collect();
        if found.is_empty() {
            eprintln!("note: no real Go program installed; the crafted Go files are the test");
        }
        for p in found {
            assert_eq!(unreachable(inspect(&p)), Reason::Go, "{}", p.display());
        }
    }

    #[test]
    fn other_classes_and_architectures() {
        let host = Crafted::host();
        for (wide, big, machine) in [
            (!host.wide, host.big, 3),
            (host.wide, !host.big, host.machine),
            (host.wide, host.big, 0x1234),
        ] {
            let c = Crafted {
                wide,
                big,
                machine,
                ..Crafted::host()
            };
            let r = unreachable(judge_bytes(&c.build()));
            assert!(matches!(r, Reason::Foreign { .. }), "{r:?}");
            let msg = r.to_string();
            assert!(msg.contains("cannot be loaded into it"), "{msg}");
            // Statically linked says so first.
            let c = Crafted { interp: false, ..c };
            assert_eq!(unreachable(judge_bytes(&c.build())), Reason::Static);
        }
        let r = Reason::Foreign {
            found: describe_arch(false, false, 3),
            host: describe_arch(true, false, 62),
        };
        assert_eq!(
            r.to_string(),
            "it is a 32-bit x86 program (the shim, 64-bit x86-64, cannot be loaded into it)"
        );
        // Not an executable type: the kernel refuses it.
        let c = Crafted {
            e_type: 1,
            interp: false,
            ..Crafted::host()
        };
        assert_eq!(judge_bytes(&c.build()), Ok(Verdict::Reachable));
    }

    #[test]
    fn scripts_are_judged_by_their_interpreter() {
        let sh = write_exec("sh-script", b"#!/bin/sh\necho hi\n", 0o755);
        assert_eq!(inspect(&sh), Ok(Verdict::Reachable));
        let py = write_exec("py-script", b"#!/usr/bin/env python3\nprint(1)\n", 0o755);
        assert_eq!(inspect(&py), Ok(Verdict::Reachable));

        let st = static_binary("static", false);
        let text = format!("#! {} -x \nexit\n", st.display());
        let direct = write_exec("static-script", text.as_bytes(), 0o755);
        let r = unreachable(inspect(&direct));
        assert_eq!(
            r,
            Reason::Interpreter {
                path: st.clone(),
                reason: Box::new(Reason::Static)
            }
        );
        assert_eq!(
            r.to_string(),
            format!(
                "its interpreter {} is statically linked (no dynamic loader loads the shim)",
                st.display()
            )
        );
        // A script whose interpreter is a script whose interpreter is static.
        let text = format!("#!{}\n", direct.display());
        let nested = write_exec("nested-script", text.as_bytes(), 0o755);
        assert_eq!(unreachable(inspect(&nested)), r);

        // env NAME, found through the search path given.
        let bin = tmp().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let name = bin.join("mystatic");
        let _ = std::fs::remove_file(&name);
        std::fs::copy(&st, &name).unwrap();
        let search = format!("/nonexistent:{}:/usr/bin", bin.display());
        let search = Some(OsStr::new(&search));
        let want = Reason::Interpreter {
            path: name.clone(),
            reason: Box::new(Reason::Static),
        };
        for line in [
            "#!/usr/bin/env mystatic\n",
            "#!/usr/bin/env -S mystatic -v\n",
            "#!/usr/bin/env -S -i A=b mystatic\n",
            "#!/usr/bin/env -S -u X -- mystatic\n",
            "#!/usr/bin/env mystatic", // no newline
        ] {
            let s = write_exec("env-script", line.as_bytes(), 0o755);
            assert_eq!(unreachable(inspect_with(&s, search)), want, "{line:?}");
            // Without that directory in the path, env runs and fails to find it.
            assert_eq!(
                inspect_with(&s, Some(OsStr::new("/usr/bin:/bin"))),
                Ok(Verdict::Reachable),
                "{line:?}"
            );
        }

        // Missing interpreter: the kernel fails the exec.
        let s = write_exec("missing-interp", b"#!/nonexistent/interp\n", 0o755);
        assert_eq!(inspect(&s), Ok(Verdict::CannotRun));
        // Empty #! line: ENOEXEC, execvp hands it to /bin/sh.
        let s = write_exec("empty-shebang", b"#!   \n", 0o755);
        assert_eq!(inspect(&s), Ok(Verdict::Reachable));
        // Setuid scripts are not setuid: the interpreter decides.
        let s = write_exec("suid-script", b"#!/bin/sh\n", 0o4755);
        assert_eq!(inspect(&s), Ok(Verdict::Reachable));
        // But a setuid interpreter counts.
        let suid = copy_exec("/bin/true", "suid-interp", 0o4755);
        let text = format!("#!{}\n", suid.display());
        let s = write_exec("suid-interp-script", text.as_bytes(), 0o755);
        assert!(matches!(
            unreachable(inspect(&s)),
            Reason::Interpreter { reason, .. } if *reason == Reason::Setuid
        ));
    }

    #[test]
    fn interpreter_chains_are_bounded() {
        // s0 -> s1 -> ... -> /bin/true: 4 levels of scripts is what the kernel accepts.
        let mut prev = PathBuf::from("/bin/true");
        let mut results = Vec::new();
        for i in 0..6 {
            let text = format!("#!{}\n", prev.display());
            prev = write_exec(&format!("chain-{i}"), text.as_bytes(), 0o755);
            results.push(inspect(&prev));
        }
        assert_eq!(results[0], Ok(Verdict::Reachable));
        assert_eq!(results[3], Ok(Verdict::Reachable));
        assert!(results[4].is_err(), "{:?}", results[4]);
        assert!(results[5].as_ref().unwrap_err().contains("levels"));
        // A script that is its own interpreter.
        let p = tmp().join("loop-script");
        let text = format!("#!{}\n", p.display());
        write_exec("loop-script", text.as_bytes(), 0o755);
        assert!(inspect(&p).is_err());
    }

    #[test]
    fn files_that_cannot_run_or_are_not_programs() {
        assert_eq!(inspect(Path::new("/nonexistent/x")), Ok(Verdict::CannotRun));
        assert_eq!(inspect(Path::new("/")), Ok(Verdict::CannotRun));
        let p = copy_exec("/bin/true", "no-x-bit", 0o644);
        assert_eq!(inspect(&p), Ok(Verdict::CannotRun));
        let p = write_exec("text-file", b"echo not a script\n", 0o755);
        assert_eq!(inspect(&p), Ok(Verdict::Reachable));
        let p = write_exec("empty-file", b"", 0o755);
        assert_eq!(inspect(&p), Ok(Verdict::Reachable));
        // A FIFO is not opened (it would block).
        let fifo = tmp().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o755) }, 0);
        assert_eq!(inspect(&fifo), Ok(Verdict::CannotRun));
    }

    #[test]
    fn search_path() {
        assert_eq!(
            find_in_path(OsStr::new("true"), Some(OsStr::new("/nonexistent::/bin"))),
            Some(PathBuf::from("/bin/true"))
        );
        assert_eq!(
            find_in_path(OsStr::new("true"), None),
            Some(PathBuf::from("/bin/true"))
        );
        assert_eq!(find_in_path(OsStr::new("no-such-program-x"), None), None);
        assert_eq!(find_in_path(OsStr::new(""), None), None);
        assert_eq!(
            find_in_path(OsStr::new("./x"), None),
            Some(PathBuf::from("./x"))
        );
        // Not executable: skipped.
        let dir = tmp().join("noexec");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prog"), b"").unwrap();
        let search = format!("{}:/bin", dir.display());
        assert_eq!(
            find_in_path(OsStr::new("prog"), Some(OsStr::new(&search))),
            None
        );
    }

    #[test]
    fn allow_values() {
        assert_eq!(parse_allow("1"), Ok(true));
        assert_eq!(parse_allow(" Yes "), Ok(true));
        assert_eq!(parse_allow("TRUE"), Ok(true));
        assert_eq!(parse_allow("0"), Ok(false));
        assert_eq!(parse_allow(""), Ok(false));
        assert_eq!(parse_allow("no"), Ok(false));
        let e = parse_allow("maybe").unwrap_err();
        assert!(
            e.starts_with(ENV_ALLOW_UNPROXIED) && e.contains("maybe"),
            "{e}"
        );
    }

    #[test]
    fn shebang_parsing() {
        assert_eq!(parse_shebang(b"#!/bin/sh\n"), Some((&b"/bin/sh"[..], None)));
        assert_eq!(
            parse_shebang(b"#! \t/usr/bin/env  python3 -u \t\nrest"),
            Some((&b"/usr/bin/env"[..], Some(&b"python3 -u"[..])))
        );
        assert_eq!(parse_shebang(b"#!"), None);
        assert_eq!(parse_shebang(b"#!  \n/bin/sh"), None);
        let long = [b"#!/".to_vec(), vec![b'a'; 400]].concat();
        assert_eq!(parse_shebang(&long).unwrap().0.len(), SHEBANG_MAX - 2);
        assert_eq!(env_command(b"python3"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"-S python3 -u"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"-Spython3"), Some(&b"python3"[..]));
        assert_eq!(env_command(b"--split-string=A=1 node"), Some(&b"node"[..]));
        assert_eq!(env_command(b"-S -i"), None);
    }

    #[test]
    fn truncated_files_never_panic() {
        for real in ["/bin/true", "/usr/sbin/ldconfig"] {
            let full = std::fs::read(real)
                .unwrap_or_else(|e| panic!("{real}: {e} (apt-get install coreutils libc-bin)"));
            let mut cuts: Vec<usize> = (0..600).collect();
            cuts.extend((600..full.len()).step_by(997));
            cuts.push(full.len() - 1);
            for n in cuts {
                let v = judge_bytes(&full[..n]);
                if n < 64 {
                    assert_eq!(v, Ok(Verdict::Reachable), "{real} cut at {n}");
                }
            }
            // Through real files too.
            for n in [0, 3, 4, 17, 63, 64, 100, 4096] {
                let p = write_exec("cut", &full[..n.min(full.len())], 0o755);
                let _ = inspect(&p);
            }
        }
        let st = std::fs::read(static_binary("static", false)).unwrap();
        // Program headers complete, rest cut: still static.
        assert_eq!(
            judge_bytes(&st[..4096]),
            Ok(Verdict::Unreachable(Reason::Static))
        );
    }

    /// A cheap deterministic generator for the garbage tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Reads are counted: garbage sizes never make the check read (or allocate) much.
    struct Counting<'a>(&'a [u8], std::cell::Cell<usize>);
    impl ReadAt for Counting<'_> {
        fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
            self.1.set(self.1.get() + buf.len());
            self.0.read_at(buf, off)
        }
    }

    #[test]
    fn garbage_never_panics_and_reads_are_bounded() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = vec![
            std::fs::read("/bin/true").unwrap()[..8192].to_vec(),
            Crafted {
                go_note: true,
                sections: vec![".go.buildinfo"],
                ..Crafted::host()
            }
            .build(),
            Crafted {
                wide: false,
                big: true,
                ..Crafted::host()
            }
            .build(),
        ];
        for round in 0..20_000 {
            let mut b = seeds[round % seeds.len()].clone();
            let flips = 1 + rng.next() % 8;
            for _ in 0..flips {
                let i = (rng.next() as usize) % b.len().min(512);
                match rng.next() % 3 {
                    0 => b[i] = rng.next() as u8,
                    1 => b[i] = 0xff,
                    _ => b[i] = 0,
                }
            }
            if rng.next().is_multiple_of(4) {
                let n = (rng.next() as usize) % b.len();
                b.truncate(n);
            }
            let src = Counting(&b, std::cell::Cell::new(0));
            let mut budget = Budget::new(&src);
            let head = budget.read(0, HEAD).unwrap();
            let _ = judge_elf(&mut budget, &head);
            assert!(src.1.get() <= MAX_READ, "read {} bytes", src.1.get());
        }
        // Pure noise after the magic.
        for _ in 0..5000 {
            let mut b = b"\x7fELF".to_vec();
            let n = (rng.next() % 300) as usize;
            b.extend((0..n).map(|_| rng.next() as u8));
            let _ = judge_bytes(&b);
        }
        // Huge counts and offsets: the section count in section 0 (e_shnum 0) is all ones.
        let mut c = Crafted::host().build();
        let wide = Crafted::host().wide;
        let (shnum_at, shoff_at) = if wide { (60, 40) } else { (48, 32) };
        c[shnum_at..shnum_at + 2].fill(0);
        let f = Fmt {
            wide,
            big: Crafted::host().big,
        };
        let shoff = f.word(&c, shoff_at).unwrap() as usize;
        let size_at = shoff + if wide { 32 } else { 20 };
        c[size_at..size_at + if wide { 8 } else { 4 }].fill(0xff);
        let src = Counting(&c, std::cell::Cell::new(0));
        let mut budget = Budget::new(&src);
        let head = budget.read(0, HEAD).unwrap();
        let _ = judge_elf(&mut budget, &head);
        assert!(src.1.get() <= MAX_READ);
        c[shoff_at..shoff_at + 4].fill(0xff);
        let _ = judge_bytes(&c);
    }
}
