//! The dynamic loader run as a program (`ld-linux-x86-64.so.2 [OPTIONS] PROGRAM [ARGS]`, what
//! `ldd` and `uv`'s libc probe do). It has no `PT_INTERP`, so it looks statically linked, but
//! it honours `LD_PRELOAD` (the shim is loaded into PROGRAM): it is judged by the program it
//! is asked to run.
//!
//! The loader is recognised by being this process's own loader (the same file), or by having
//! its `DT_SONAME` (a copy, another path to it).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// This process's dynamic loader: its (device, inode) and `DT_SONAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLoader {
    pub id: Option<(u64, u64)>,
    pub soname: Option<Vec<u8>>,
}

static HOST: OnceLock<HostLoader> = OnceLock::new();

/// The loader that loaded this process: the `PT_INTERP` of `/proc/self/exe`, or that file
/// itself when it has none and is a shared object (the process was started as
/// `ld.so PROGRAM`). Computed once; call it early (before threads and forks) in a library.
pub fn host_loader() -> &'static HostLoader {
    HOST.get_or_init(|| find_mapped().or_else(find_host).unwrap_or_default())
}

/// The loader as this process has it mapped: the object at `AT_BASE` (the kernel's load
/// address of the interpreter), its name as the loader recorded it (the `PT_INTERP` path) and
/// its `DT_SONAME` read from the mapped dynamic section. One `stat`, no file read: the shim's
/// constructor runs this in every process. None when the process has no interpreter
/// (`AT_BASE` 0: a static program, or the loader run as a program) or its mapping is not as
/// expected; [`find_host`] reads the files then.
fn find_mapped() -> Option<HostLoader> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_BASE) } as usize;
    if base == 0 {
        return None;
    }
    struct Found {
        base: usize,
        name: Option<Vec<u8>>,
        soname: Option<Vec<u8>>,
    }
    extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Found` passed to dl_iterate_phdr below, `info` the loader's
        // description of one loaded object, valid during this call.
        let (found, info) = unsafe { (&mut *(data as *mut Found), &*info) };
        if info.dlpi_addr as usize != found.base || info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: dlpi_name is the object's NUL-terminated name, checked non-null.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
        found.name = (!name.is_empty()).then(|| name.to_vec());
        // SAFETY: dlpi_phdr points at the object's dlpi_phnum mapped program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        found.soname = mapped_soname(found.base, phdrs);
        1
    }
    let mut found = Found {
        base,
        name: None,
        soname: None,
    };
    // SAFETY: `each` matches the callback type and only uses `found` while this call runs.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut found as *mut Found as *mut libc::c_void) };
    let meta = std::fs::metadata(OsStr::from_bytes(&found.name?)).ok()?;
    Some(HostLoader {
        id: Some((meta.dev(), meta.ino())),
        soname: found.soname,
    })
}

#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// `DT_SONAME` of the object mapped at `base` with these program headers, from its mapped
/// `PT_DYNAMIC`. Every address is checked to lie in one of its `PT_LOAD` segments.
fn mapped_soname(base: usize, phdrs: &[Phdr]) -> Option<Vec<u8>> {
    let loads: Vec<(usize, usize)> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD)
        .map(|p| {
            let start = base.wrapping_add(p.p_vaddr as usize);
            (start, start.wrapping_add(p.p_memsz as usize))
        })
        .collect();
    // The bytes [addr, addr + len) lie in one mapped segment.
    let mapped = |addr: usize, len: usize| {
        loads
            .iter()
            .any(|&(s, e)| addr >= s && addr.checked_add(len).is_some_and(|end| end <= e))
    };
    let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
    let dyn_at = base.wrapping_add(dynamic.p_vaddr as usize);
    let word = std::mem::size_of::<usize>();
    let count = dynamic.p_memsz as usize / (2 * word);
    if !mapped(dyn_at, count * 2 * word) || !dyn_at.is_multiple_of(word) {
        return None;
    }
    let (mut strtab, mut strsz, mut soname) = (None, None, None);
    for i in 0..count {
        // SAFETY: entry `i` of the dynamic array (tag, value: two words), checked above to lie
        // in a mapped segment and aligned.
        let (tag, val) = unsafe {
            let e = (dyn_at as *const usize).add(2 * i);
            (*e as isize, *e.add(1))
        };
        match tag as i64 {
            0 => break,               // DT_NULL
            5 => strtab = Some(val),  // DT_STRTAB
            10 => strsz = Some(val),  // DT_STRSZ
            14 => soname = Some(val), // DT_SONAME
            _ => {}
        }
    }
    let (strtab, strsz, off) = (strtab?, strsz?, soname?);
    // The loader relocates its own DT_STRTAB in place where the dynamic section is writable
    // (x86_64); elsewhere it stays the link-time address.
    let table = if mapped(strtab, strsz) {
        strtab
    } else {
        base.wrapping_add(strtab)
    };
    if off >= strsz || !mapped(table, strsz) {
        return None;
    }
    // SAFETY: [table, table + strsz) lies in a mapped segment (checked above).
    let bytes = unsafe { std::slice::from_raw_parts(table as *const u8, strsz) };
    let name = &bytes[off..];
    let end = name.iter().position(|&b| b == 0)?;
    (end > 0).then(|| name[..end].to_vec())
}

/// The loader found from the files: the `PT_INTERP` of `/proc/self/exe` read with the ELF
/// reader, then that file inspected for its `DT_SONAME`.
fn find_host() -> Option<HostLoader> {
    let exe = File::open("/proc/self/exe").ok()?;
    let len = exe.metadata().ok()?.len();
    let path = match super::elf::interpreter(&super::elf::Bounded::cache(&exe, len)) {
        Some(p) => PathBuf::from(OsStr::from_bytes(&p)),
        None => PathBuf::from("/proc/self/exe"),
    };
    let file = File::open(&path).ok()?;
    let meta = file.metadata().ok()?;
    let cache = super::elf::Bounded::cache(&file, meta.len());
    let soname = match super::elf::inspect(&cache) {
        Ok(super::elf::Kind::Static { soname, .. }) => soname,
        _ => None,
    };
    if soname.is_none() && path.as_os_str() == "/proc/self/exe" {
        // A static program: no loader.
        return None;
    }
    Some(HostLoader {
        id: Some((meta.dev(), meta.ino())),
        soname,
    })
}

impl HostLoader {
    /// Is a file with this identity and `DT_SONAME` the host's loader?
    pub fn is(&self, id: (u64, u64), soname: Option<&[u8]>) -> bool {
        self.id == Some(id) || (soname.is_some() && soname == self.soname.as_deref())
    }
}

/// What the loader will do with its arguments (those after `argv[0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run<'a> {
    /// It runs no program: `--help`, `--version`, `--list-tunables`, `--list-diagnostics`,
    /// `--list`/`--verify` (which load PROGRAM without running it), a bad option, or none.
    Nothing,
    /// It runs `program` (argument `index`); the rest are its arguments.
    Program { program: &'a OsStr, index: usize },
}

/// Options of glibc's `ld.so` (elf/rtld.c) that take a value.
const WITH_VALUE: [&str; 7] = [
    "--library-path",
    "--inhibit-rpath",
    "--audit",
    "--preload",
    "--argv0",
    "--glibc-hwcaps-prepend",
    "--glibc-hwcaps-mask",
];
/// Options after which it exits without running a program.
const EXITS: [&str; 4] = [
    "--help",
    "--version",
    "--list-tunables",
    "--list-diagnostics",
];
/// Options after which the program is loaded but not run.
const LOADS_ONLY: [&str; 2] = ["--list", "--verify"];

/// The program `ld.so` runs for `args` (argv without argv[0]), parsed as rtld.c does: options
/// in any order until the first argument that does not start with `--`; `--` ends them.
pub fn program<'a>(args: &[&'a OsStr]) -> Run<'a> {
    let mut runs = true;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let s = a.as_bytes();
        if s == b"--" {
            i += 1;
            break;
        }
        if !s.starts_with(b"--") {
            break;
        }
        let opt = a.to_str().unwrap_or("");
        if WITH_VALUE.contains(&opt) {
            if i + 1 >= args.len() {
                // Without its value it is an unknown option: usage, exit.
                return Run::Nothing;
            }
            i += 2;
        } else if EXITS.contains(&opt) {
            return Run::Nothing;
        } else if LOADS_ONLY.contains(&opt) {
            runs = false;
            i += 1;
        } else if opt == "--inhibit-cache" {
            i += 1;
        } else {
            // Unrecognised option: usage, exit.
            return Run::Nothing;
        }
    }
    match args.get(i) {
        Some(p) if runs => Run::Program {
            program: p,
            index: i,
        },
        _ => Run::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Run<'static> {
        let v: Vec<&'static OsStr> = args
            .iter()
            .map(|a| OsStr::new(Box::leak(a.to_string().into_boxed_str())))
            .collect();
        program(&v)
    }

    fn prog(p: &'static str, index: usize) -> Run<'static> {
        Run::Program {
            program: OsStr::new(p),
            index,
        }
    }

    #[test]
    fn loader_arguments() {
        assert_eq!(run(&["/bin/ls", "-l"]), prog("/bin/ls", 0));
        assert_eq!(
            run(&["--library-path", "/x", "/bin/ls"]),
            prog("/bin/ls", 2)
        );
        assert_eq!(
            run(&[
                "--inhibit-cache",
                "--argv0",
                "ls",
                "--preload",
                "a.so",
                "./ls"
            ]),
            prog("./ls", 5)
        );
        assert_eq!(run(&["--", "/bin/ls"]), prog("/bin/ls", 1));
        assert_eq!(run(&["--", "--weird"]), prog("--weird", 1));
        // A single dash is a program name to rtld.
        assert_eq!(run(&["-x"]), prog("-x", 0));
        for nothing in [
            &[][..],
            &["--version"],
            &["--help", "/bin/ls"],
            &["--list-tunables"],
            &["--list", "/bin/ls"],
            &["--verify", "/bin/ls"],
            &["--bogus", "/bin/ls"],
            &["--library-path"],
            &["--inhibit-cache"],
        ] {
            assert_eq!(run(nothing), Run::Nothing, "{nothing:?}");
        }
    }

    #[test]
    fn the_mapped_loader_is_the_one_the_files_name() {
        let mapped = find_mapped().expect("a dynamically linked test binary");
        assert_eq!(Some(mapped), find_host());
    }

    #[test]
    fn this_process_has_a_loader() {
        // Test binaries are dynamically linked on the machines this project supports.
        let h = host_loader();
        assert!(h.id.is_some(), "{h:?}");
        assert!(
            h.soname.as_deref().is_some_and(|s| s.starts_with(b"ld")),
            "{h:?}"
        );
    }
}
