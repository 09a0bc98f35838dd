//! What an ELF file is, read with the `object` crate's ELF reader: its class, byte order and
//! machine, whether it names a dynamic loader (`PT_INTERP`), whether it is a Go program, and
//! its `DT_SONAME` (to recognise the dynamic loader itself).
//!
//! The decisions follow the kernel's ELF loader (`fs/binfmt_elf.c`): a file the kernel would
//! refuse (`ENOEXEC`: not `ET_EXEC`/`ET_DYN`, program header entries of the wrong size, none,
//! or a table over 64 KiB) is [`Kind::NotExecutable`]; a file whose header or program headers
//! cannot be read is an error (the caller refuses it: it could run unproxied).
//!
//! Reads go through [`Source`]: a bounded, cached positioned reader for files (never more than
//! [`MAX_READ`] bytes in all, whatever the offsets and counts in the file say), or a byte
//! slice (unit tests, the fuzz target).

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::read::ReadRef;
use object::Endianness;
use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::ops::Range;
use std::os::unix::io::AsRawFd;

/// Most bytes read from one file (headers, notes, section headers, names, dynamic section).
pub const MAX_READ: u64 = 4 << 20;
/// The kernel refuses program header tables larger than this (`ELF_MIN_ALIGN`-sized).
const MAX_PHDRS_BYTES: u64 = 65536;
/// Note segments larger than this are not searched for the Go note.
const MAX_NOTE_SEGMENT: u64 = 65536;
const MAX_NOTE_SEGMENTS: usize = 8;
/// Section header tables larger than this are not searched for Go's sections.
const MAX_SHDRS_BYTES: u64 = 1 << 20;
/// `n_type` of the Go build ID note (owner "Go").
const NT_GO_BUILD_ID: u32 = 4;
const GO_SECTIONS: [&[u8]; 3] = [b".go.buildinfo", b".gopclntab", b".note.go.buildid"];

/// An ELF class, byte order and machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    pub bits: u8,
    pub big_endian: bool,
    /// `e_machine`.
    pub machine: u16,
}

impl Arch {
    /// The shim's own: this build's class, byte order and machine (`None`: a target the table
    /// does not know, then architectures are not compared).
    pub fn host() -> Option<Arch> {
        let machine = if cfg!(target_arch = "x86_64") {
            elf::EM_X86_64
        } else if cfg!(target_arch = "x86") {
            elf::EM_386
        } else if cfg!(target_arch = "aarch64") {
            elf::EM_AARCH64
        } else if cfg!(target_arch = "arm") {
            elf::EM_ARM
        } else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
            elf::EM_RISCV
        } else if cfg!(target_arch = "powerpc64") {
            elf::EM_PPC64
        } else if cfg!(target_arch = "powerpc") {
            elf::EM_PPC
        } else if cfg!(target_arch = "s390x") {
            elf::EM_S390
        } else if cfg!(target_arch = "loongarch64") {
            elf::EM_LOONGARCH
        } else if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
            elf::EM_MIPS
        } else {
            return None;
        };
        Some(Arch {
            bits: if cfg!(target_pointer_width = "64") {
                64
            } else {
                32
            },
            big_endian: cfg!(target_endian = "big"),
            machine: machine.0,
        })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match elf::Machine(self.machine) {
            elf::EM_386 => "x86",
            elf::EM_X86_64 => "x86-64",
            elf::EM_ARM => "ARM",
            elf::EM_AARCH64 => "AArch64",
            elf::EM_RISCV => "RISC-V",
            elf::EM_PPC => "PowerPC",
            elf::EM_PPC64 => "PowerPC64",
            elf::EM_S390 => "S/390",
            elf::EM_LOONGARCH => "LoongArch",
            elf::EM_MIPS => "MIPS",
            m => return write!(f, "{}-bit{} machine {}", self.bits, self.order(), m.0),
        };
        write!(f, "{}-bit{} {name}", self.bits, self.order())
    }
}

impl Arch {
    fn order(&self) -> &'static str {
        if self.big_endian {
            " big-endian"
        } else {
            ""
        }
    }
}

/// What the ELF file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The kernel refuses it (`ENOEXEC`).
    NotExecutable,
    /// An executable with a `PT_INTERP`: a dynamic loader runs first.
    Dynamic { arch: Arch },
    /// No `PT_INTERP` (static, static-pie, or a dynamic loader run as a program). `soname` is
    /// its `DT_SONAME` when it has one (the dynamic loader has).
    Static { arch: Arch, soname: Option<Vec<u8>> },
    /// A Go program (a Go build ID note, or one of Go's sections), dynamic or not.
    Go { arch: Arch },
}

/// Bytes to inspect: a byte slice or a bounded, cached file reader.
pub trait Source<'a>: ReadRef<'a> {}
impl<'a, T: ReadRef<'a>> Source<'a> for T {}

/// A file read with positioned reads, at most [`MAX_READ`] bytes in all. Small reads (the ELF
/// reader asks for headers a few dozen bytes at a time) are served from read-ahead blocks of
/// [`BLOCK`] bytes, so that inspecting a program costs a few system calls, not dozens: the
/// headers and notes come from the first block, the section headers and their names usually
/// from one at the end (a block is never read past the end of the file when it can start
/// earlier). Blocks are kept until the reader is dropped, at most [`SLOTS`] of them: a read
/// that would need another fails, as one past the budget does (a real program needs a few;
/// only a crafted file scatters its headers and names over more).
///
/// Its own [`ReadRef`] rather than `object`'s `ReadCache` over a stream: no copy of each
/// header into an allocation of its own, no hashing, and no `memchr` (whose first call
/// detects the CPU's features with `cpuid`, which traps to the hypervisor in a virtual
/// machine: it cost `proxify run` more than the rest of the inspection).
pub struct Bounded<'f> {
    file: &'f File,
    len: u64,
    left: Cell<u64>,
    used: Cell<usize>,
    blocks: Box<[OnceCell<Block>]>,
}

/// Bytes of the file from `at`.
struct Block {
    at: u64,
    data: Vec<u8>,
}

/// The read-ahead block's size: the ELF header, the program headers and the notes of a
/// program are in its first few KiB, its section headers and their names in its last ones.
/// (Larger blocks cost more than the system calls they save: each fresh page of the buffer is
/// a page fault.)
pub const BLOCK: usize = 8 << 10;
/// Most blocks one reader keeps.
pub const SLOTS: usize = 64;
/// Longest string [`ReadRef::read_bytes_at_until`] looks through (section names, `DT_SONAME`),
/// as `object`'s `ReadCache` does.
const MAX_STRING: u64 = 4096;

impl<'f> Bounded<'f> {
    /// A reader of `file` (of `len` bytes) for the ELF reader; use it as `&Bounded`.
    pub fn cache(file: &'f File, len: u64) -> Bounded<'f> {
        Bounded {
            file,
            len,
            left: Cell::new(MAX_READ),
            used: Cell::new(0),
            blocks: (0..SLOTS).map(|_| OnceCell::new()).collect(),
        }
    }

    /// The bytes `at..end` from a block read before.
    fn cached(&self, at: u64, end: u64) -> Option<&[u8]> {
        // Newest first: the reader's next request is usually near its last one.
        self.blocks[..self.used.get()]
            .iter()
            .rev()
            .filter_map(OnceCell::get)
            .find(|b| at >= b.at && end <= b.at + b.data.len() as u64)
            .map(|b| &b.data[(at - b.at) as usize..(end - b.at) as usize])
    }

    /// Reads up to `want` bytes at `at` (fewer at the end of the file or of the budget) into a
    /// new block; `exact`: all of them or nothing (a read larger than what is left of the budget
    /// fails without reading).
    fn fill(&self, at: u64, want: u64, exact: bool) -> Result<&Block, ()> {
        let slot = self.blocks.get(self.used.get()).ok_or(())?;
        if exact && want > self.left.get() {
            return Err(());
        }
        let want = want.min(self.left.get()).min(self.len.saturating_sub(at)) as usize;
        if want == 0 {
            return Err(());
        }
        // Read into the vector's spare capacity: zeroing a block first cost as much as the
        // rest of the inspection.
        let mut data: Vec<u8> = Vec::with_capacity(want);
        let fd = self.file.as_raw_fd();
        while data.len() < want {
            let got = data.len();
            // SAFETY: the destination is the vector's spare capacity, `want - got` bytes from
            // its initialised length; pread writes at most that many bytes there.
            let n = unsafe {
                libc::pread(
                    fd,
                    data.as_mut_ptr().add(got).cast(),
                    want - got,
                    (at + got as u64) as libc::off_t,
                )
            };
            match n {
                0 => break,
                // SAFETY: pread initialised `n` more bytes after the first `got`.
                n if n > 0 => unsafe { data.set_len(got + n as usize) },
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return Err(()),
            }
        }
        self.left.set(self.left.get() - data.len() as u64);
        self.used.set(self.used.get() + 1);
        Ok(slot.get_or_init(|| Block { at, data }))
    }
}

impl<'a> ReadRef<'a> for &'a Bounded<'_> {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let end = offset.checked_add(size).ok_or(())?;
        if end > self.len {
            return Err(());
        }
        if let Some(bytes) = self.cached(offset, end) {
            return Ok(bytes);
        }
        let block = if size > BLOCK as u64 / 2 {
            // A large read (a table): exactly what is asked for.
            self.fill(offset, size, true)?
        } else {
            // From the page below `offset` (the reader's next headers are usually near), or
            // the file's last BLOCK bytes when that ends past the file's end (the section
            // headers are there, and their names just before them).
            let start = (offset & !4095).min(self.len.saturating_sub(BLOCK as u64));
            self.fill(start, BLOCK as u64, false)?
        };
        let from = offset - block.at;
        if end - block.at > block.data.len() as u64 {
            return Err(()); // the file ended early, or the budget did
        }
        Ok(&block.data[from as usize..(end - block.at) as usize])
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        if range.start > range.end || range.end > self.len {
            return Err(());
        }
        let window = (range.end - range.start).min(MAX_STRING);
        let bytes = self.read_bytes_at(range.start, window)?;
        let n = bytes.iter().position(|&b| b == delimiter).ok_or(())?;
        Ok(&bytes[..n])
    }
}

/// Inspects the ELF file in `data` (which starts with the ELF magic).
pub fn inspect<'a, R: Source<'a>>(data: R) -> Result<Kind, String> {
    let ident = data
        .read_bytes_at(0, 16)
        .map_err(|()| "truncated ELF header".to_string())?;
    // The kernel's loader only takes the classes and byte orders it knows (ENOEXEC).
    match (ident[4], ident[5]) {
        (1, 1) | (1, 2) => inspect_as::<elf::FileHeader32<Endianness>, R>(data),
        (2, 1) | (2, 2) => inspect_as::<elf::FileHeader64<Endianness>, R>(data),
        _ => Ok(Kind::NotExecutable),
    }
}

fn inspect_as<'a, E: FileHeader<Endian = Endianness>, R: Source<'a>>(
    data: R,
) -> Result<Kind, String> {
    let size = std::mem::size_of::<E>() as u64;
    if data.len().map_err(|()| "cannot read it")? < size {
        // Shorter than its header: the kernel refuses it.
        return Ok(Kind::NotExecutable);
    }
    let header = E::parse(data).map_err(|e| format!("malformed ELF header ({e})"))?;
    let endian = header
        .endian()
        .map_err(|e| format!("malformed ELF header ({e})"))?;
    let arch = Arch {
        bits: if header.is_type_64() { 64 } else { 32 },
        big_endian: header.is_big_endian(),
        machine: header.e_machine(endian).0,
    };
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Ok(Kind::NotExecutable);
    }
    // The kernel's own limits on the program header table (it knows no PN_XNUM extension).
    let phnum = u64::from(header.e_phnum(endian));
    let phentsize = u64::from(header.e_phentsize(endian));
    let phdr_size = std::mem::size_of::<E::ProgramHeader>() as u64;
    if phentsize != phdr_size || phnum == 0 || phnum * phdr_size > MAX_PHDRS_BYTES {
        return Ok(Kind::NotExecutable);
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|_| "truncated ELF program headers".to_string())?;
    let mut interp = false;
    let mut dynamic = None;
    let mut go = false;
    let mut notes_seen = 0;
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_INTERP => interp = true,
            elf::PT_DYNAMIC => dynamic = Some(ph),
            elf::PT_NOTE if !go && notes_seen < MAX_NOTE_SEGMENTS => {
                notes_seen += 1;
                if ph.p_filesz(endian).into() <= MAX_NOTE_SEGMENT {
                    go = has_go_note(endian, ph, data);
                }
            }
            _ => {}
        }
    }
    if !go {
        go = has_go_section(header, endian, data);
    }
    if go {
        return Ok(Kind::Go { arch });
    }
    if interp {
        return Ok(Kind::Dynamic { arch });
    }
    let soname = dynamic.and_then(|d| soname(header, endian, d, phdrs, data));
    Ok(Kind::Static { arch, soname })
}

fn has_go_note<'a, P: ProgramHeader<Endian = Endianness>, R: Source<'a>>(
    endian: Endianness,
    ph: &P,
    data: R,
) -> bool {
    let Ok(Some(mut notes)) = ph.notes(endian, data) else {
        return false;
    };
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"Go" && note.n_type(endian).0 == NT_GO_BUILD_ID {
            return true;
        }
    }
    false
}

/// A section named like Go's. Sections are not used by the kernel, so a table that cannot be
/// read only means none is found (the Go note is the first test).
fn has_go_section<'a, E: FileHeader<Endian = Endianness>, R: Source<'a>>(
    header: &E,
    endian: Endianness,
    data: R,
) -> bool {
    let Ok(shnum) = header.shnum(endian, data) else {
        return false;
    };
    let sh_size = std::mem::size_of::<E::SectionHeader>() as u64;
    if u64::from(shnum) * sh_size > MAX_SHDRS_BYTES {
        return false;
    }
    let Ok(sections) = header.sections(endian, data) else {
        return false;
    };
    sections.iter().any(|s| {
        sections
            .section_name(endian, s)
            .is_ok_and(|n| GO_SECTIONS.contains(&n))
    })
}

/// `DT_SONAME` from the `PT_DYNAMIC` segment, its string table found through `PT_LOAD`.
fn soname<'a, E: FileHeader<Endian = Endianness>, R: Source<'a>>(
    _header: &E,
    endian: Endianness,
    dynamic: &E::ProgramHeader,
    phdrs: &[E::ProgramHeader],
    data: R,
) -> Option<Vec<u8>> {
    use object::read::elf::Dyn;
    if dynamic.p_filesz(endian).into() > MAX_SHDRS_BYTES {
        return None;
    }
    let entries = dynamic.dynamic(endian, data).ok()??;
    let mut strtab = None;
    let mut strsz = None;
    let mut name = None;
    for d in entries {
        let val = d.val(endian);
        match d.tag(endian) {
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = Some(val),
            elf::DT_SONAME => name = Some(val),
            _ => {}
        }
    }
    let (strtab, strsz, name) = (strtab?, strsz?.min(MAX_SHDRS_BYTES), name?);
    // The string table's address to a file offset.
    let load = phdrs.iter().find(|p| {
        let (va, sz) = (p.p_vaddr(endian).into(), p.p_filesz(endian).into());
        p.p_type(endian) == elf::PT_LOAD && strtab >= va && strtab - va < sz
    })?;
    let off = load.p_offset(endian).into() + (strtab - load.p_vaddr(endian).into());
    if name >= strsz {
        return None;
    }
    let bytes = data.read_bytes_at_until(off + name..off + strsz, 0).ok()?;
    Some(bytes.to_vec())
}

/// The `PT_INTERP` path of an ELF file, if it has one.
pub fn interpreter<'a, R: Source<'a>>(data: R) -> Option<Vec<u8>> {
    fn of<'a, E: FileHeader<Endian = Endianness>, R: Source<'a>>(data: R) -> Option<Vec<u8>> {
        let h = E::parse(data).ok()?;
        let e = h.endian().ok()?;
        if u64::from(h.e_phnum(e)) * std::mem::size_of::<E::ProgramHeader>() as u64
            > MAX_PHDRS_BYTES
        {
            return None;
        }
        h.program_headers(e, data)
            .ok()?
            .iter()
            .find_map(|p| p.interpreter(e, data).ok().flatten())
            .map(<[u8]>::to_vec)
    }
    match data.read_bytes_at(4, 1).ok()?.first()? {
        1 => of::<elf::FileHeader32<Endianness>, R>(data),
        2 => of::<elf::FileHeader64<Endianness>, R>(data),
        _ => None,
    }
}
