//! Links libgcc's unwinder into the `proxify` binary (`libgcc_eh.a`, what `gcc -static-libgcc`
//! links) instead of loading `libgcc_s.so.1` at run time. `proxify run` is a launcher that
//! execs its command at once: the dynamic loader then maps, relocates and binds one library
//! fewer, and libgcc_s's constructor, which probes the CPU with a dozen `cpuid` instructions
//! (each one traps to the hypervisor in a virtual machine, several microseconds apiece), does
//! not run. That was a quarter of `proxify run`'s own time. For the binary alone: the shim (a
//! shared library) and the tests are linked as before.
//!
//! How: std asks the linker for `-lgcc_s`; a directory searched before the compiler's own has
//! a `libgcc_s` that is a linker script naming libgcc's static archives. The C library stays
//! shared (a statically linked proxify would itself be a program the shim refuses to run from
//! a proxied shell, and would resolve names without the system's NSS modules).
//!
//! Linked as before, with a warning, when the archives are not found, and without one for
//! targets other than Linux/glibc or when `PROXIFY_LIBGCC_S=1` asks for it.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROXIFY_LIBGCC_S");
    println!("cargo:rerun-if-env-changed=CC");
    match scripts() {
        Ok(Some(dir)) => println!("cargo:rustc-link-arg-bins=-L{}", dir.display()),
        Ok(None) => {}
        Err(why) => println!("cargo:warning=proxify is linked with libgcc_s.so.1: {why}"),
    }
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

/// The directory with the `libgcc_s` linker script, or `None` to link as std asks.
fn scripts() -> Result<Option<PathBuf>, String> {
    if env::var_os("PROXIFY_LIBGCC_S").is_some_and(|v| v != "0" && !v.is_empty()) {
        return Ok(None);
    }
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return Ok(None);
    }
    if var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static")
    {
        // Statically linked already (rustflags): std links libgcc_eh itself.
        return Ok(None);
    }
    // The target's compiler driver (the one rustc links with, unless told otherwise).
    let cc = env::var(format!("CC_{}", var("TARGET").replace('-', "_")))
        .or_else(|_| env::var("CC"))
        .unwrap_or_else(|_| "cc".into());
    let mut archives = Vec::new();
    for file in ["libgcc_eh.a", "libgcc.a"] {
        let out = Command::new(&cc)
            .arg(format!("-print-file-name={file}"))
            .output()
            .map_err(|e| format!("cannot run {cc}: {e}"))?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !path.is_absolute() || !path.is_file() {
            return Err(format!("{cc} does not find {file}"));
        }
        archives.push(format!("\"{}\"", path.display()));
    }
    let dir = PathBuf::from(var("OUT_DIR")).join("libgcc");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = format!("GROUP ( {} )\n", archives.join(" "));
    // Under both names: where -Bdynamic is in effect the linker looks for the .so first.
    for name in ["libgcc_s.so", "libgcc_s.a"] {
        let p = dir.join(name);
        fs::write(&p, &script).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(Some(dir))
}
