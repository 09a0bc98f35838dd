//! The program check's parsers on arbitrary bytes: the ELF reader (`progcheck::elf::inspect`,
//! the `object` crate underneath), the `#!` line splitter and `env -S` parser, and the dynamic
//! loader's argument parser. None may panic; the ELF verdict is deterministic and agrees
//! with the header it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxify_core::progcheck::{elf, loader, script};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"#!") {
        if let Some((interp, arg)) = script::parse_shebang(data) {
            assert!(!interp.is_empty() && interp.len() <= script::SHEBANG_MAX - 2);
            assert!(!interp.iter().any(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0)));
            if let Some(a) = arg {
                assert!(!a.is_empty() && !a.contains(&b'\n'));
                assert!(!a.starts_with(b" ") && !a.ends_with(b" "));
                if let Some(cmd) = script::env_command(a) {
                    assert!(!cmd.is_empty());
                }
            }
        }
    }
    // The loader's arguments: NUL-separated pieces of the input.
    let args: Vec<&OsStr> = data.split(|&b| b == 0).map(OsStr::from_bytes).collect();
    if let loader::Run::Program { program, index } = loader::program(&args) {
        assert!(index < args.len());
        assert_eq!(args[index], program);
    }

    let r = elf::inspect(data);
    assert_eq!(r, elf::inspect(data), "not deterministic");
    if let Ok(kind) = &r {
        let arch = match kind {
            elf::Kind::NotExecutable => return,
            elf::Kind::Dynamic { arch } | elf::Kind::Go { arch } => *arch,
            elf::Kind::Static { arch, .. } => *arch,
        };
        // Only from a complete header of the class and byte order it names.
        assert!(data.starts_with(b"\x7fELF"));
        assert_eq!(arch.bits, if data[4] == 2 { 64 } else { 32 });
        assert!(data.len() >= if arch.bits == 64 { 64 } else { 52 });
        assert_eq!(arch.big_endian, data[5] == 2);
        let m = [data[18], data[19]];
        let machine = if arch.big_endian {
            u16::from_be_bytes(m)
        } else {
            u16::from_le_bytes(m)
        };
        assert_eq!(arch.machine, machine);
        let _ = arch.to_string();
    }
    let _ = elf::interpreter(data);
});
