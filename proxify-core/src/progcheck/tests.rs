//! Tests of the verdicts on real programs built here (static, static-pie, dynamic, setuid,
//! setgid and capability copies, scripts, the dynamic loader) and on crafted ELF files.
//!
//! Size: ~1,160 lines: 18 tests on programs built here (cc: static, static-pie, Go; setuid,
//! setgid and capability copies; scripts, the loader) and on crafted ELF files, sharing helpers.
//! The crafted-ELF builder (`Crafted`, ~170 lines) could move to a file of its own; not done yet.

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
                    .and_then(|n| n.strip_prefix("proxify-progcheck-"));
                if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let d = std::env::temp_dir().join(format!("proxify-progcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    })
    .clone()
}

/// Files are written under the write lock and programs started under the read lock: a file
/// being written must not be open in a child another test thread forks (ETXTBSY).
static FILES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn write_exec(name: &str, data: &[u8], mode: u32) -> PathBuf {
    let _held = FILES.write().unwrap_or_else(|e| e.into_inner());
    let p = tmp().join(name);
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn copy_exec(from: &Path, name: &str, mode: u32) -> PathBuf {
    write_exec(name, &std::fs::read(from).unwrap(), mode)
}

fn output(cmd: &mut Command) -> std::process::Output {
    let _held = FILES.read().unwrap_or_else(|e| e.into_inner());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install with scripts/setup.sh)"))
}

/// A C program built here (once per name; tests run in parallel).
fn cc(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = tmp().join(name);
    if out.exists() {
        return out;
    }
    let src = tmp().join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let o = {
        let _w = FILES.write().unwrap_or_else(|e| e.into_inner());
        Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run cc ({e}): these tests need it: apt-get install gcc libc6-dev")
            })
    };
    assert!(
        o.status.success(),
        "cc {flags:?} failed (static programs need glibc's static libraries: apt-get install \
         libc6-dev): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn static_binary(name: &str, pie: bool) -> PathBuf {
    let flag = if pie { "-static-pie" } else { "-static" };
    cc(name, "int main(void) { return 0; }\n", &[flag])
}

/// The verdict of `Judge::current()`, checked against the one `judge` gives (this process,
/// its credentials and loader looked up only when needed): the two must never differ.
fn judged(exec: &Exec) -> Verdict {
    let v = Judge::current().judge(exec);
    assert_eq!(Walk(&Current::default()).judge(exec), v, "{exec:?}");
    v
}

fn judge_path(p: &Path) -> Verdict {
    judged(&Exec::path(p))
}

fn judge_args(p: &Path, args: &[&str]) -> Verdict {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    judged(&Exec {
        path: p,
        args: &args,
        search_path: None,
        cwd: None,
    })
}

fn judge_with(p: &Path, search: Option<&OsStr>) -> Verdict {
    judged(&Exec {
        path: p,
        args: &[],
        search_path: search,
        cwd: None,
    })
}

fn judge_bytes(b: &[u8]) -> Result<elf::Kind, String> {
    elf::inspect(b)
}

/// The verdict a file of these bytes gets on disk.
fn judge_file_bytes(b: &[u8]) -> Verdict {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = write_exec(&format!("bytes-{n}"), b, 0o755);
    judge_path(&p)
}

fn host_loader_path() -> PathBuf {
    let exe = std::fs::File::open("/proc/self/exe").unwrap();
    let len = exe.metadata().unwrap().len();
    let interp = elf::interpreter(&elf::Bounded::cache(&exe, len)).expect("a dynamic test binary");
    PathBuf::from(OsStr::from_bytes(&interp))
}

#[test]
fn dynamic_programs_are_preloadable() {
    assert_eq!(judge_path(Path::new("/bin/true")), Verdict::Preloadable);
    assert_eq!(judge_path(Path::new("/bin/sh")), Verdict::Preloadable);
    let v = judge_file_bytes(&Crafted::host().build());
    assert_eq!(v, Verdict::Preloadable);
}

#[test]
fn static_programs() {
    for (name, pie) in [("static", false), ("static-pie", true)] {
        let s = static_binary(name, pie);
        let v = judge_path(&s);
        assert_eq!(v, Verdict::Static, "{name}");
        assert!(!v.is_proxied());
        assert_eq!(v.innermost(), &Verdict::Static);
        assert_eq!(
            v.to_string(),
            "it is statically linked (no dynamic loader loads the shim) \u{2014} its connections \
             would bypass the proxy (run the whole command with proxify run --mode supervise to \
             proxify it through the seccomp supervisor, or use proxify run --allow-unproxied to \
             run it anyway: its connections and name look-ups then go directly, not through the \
             proxy)"
        );
    }
    // The crafted form: no PT_INTERP.
    let c = Crafted {
        interp: false,
        ..Crafted::host()
    };
    assert!(matches!(
        judge_bytes(&c.build()),
        Ok(elf::Kind::Static { soname: None, .. })
    ));
}

#[test]
fn go_programs() {
    // No Go toolchain needed: the markers the check looks for, in crafted files.
    let mut c = Crafted::host();
    assert!(matches!(
        judge_bytes(&c.build()),
        Ok(elf::Kind::Dynamic { .. })
    ));
    for sections in [
        vec![".text", ".go.buildinfo", ".data"],
        vec![".gopclntab"],
        vec![".note.go.buildid"],
    ] {
        c.sections = sections;
        assert!(matches!(judge_bytes(&c.build()), Ok(elf::Kind::Go { .. })));
    }
    // Only the build ID note (section headers stripped away).
    c.sections = vec![".text"];
    c.go_note = true;
    let mut b = c.build();
    assert!(matches!(judge_bytes(&b), Ok(elf::Kind::Go { .. })));
    let shoff_at = if c.wide { 40 } else { 32 };
    b[shoff_at..shoff_at + 4].fill(0);
    if c.wide {
        b[shoff_at + 4..shoff_at + 8].fill(0);
    }
    assert!(matches!(judge_bytes(&b), Ok(elf::Kind::Go { .. })));
    assert_eq!(judge_file_bytes(&b), Verdict::Go);
    // Static Go programs say Go, the more useful reason.
    c.interp = false;
    assert_eq!(judge_file_bytes(&c.build()), Verdict::Go);
    assert!(Verdict::Go.to_string().starts_with("it is a Go program"));
    // The way to proxify it (the supervisor), then the flag and its cost.
    let fix = Verdict::Go.fix();
    assert!(fix.starts_with("run the whole command with proxify run --mode supervise"));
    assert!(fix.ends_with(ALLOW_FIX), "{fix}");
    // No supervisor for a program of another architecture or one that cannot be checked.
    for v in [
        Verdict::Unjudged("x".into()),
        Verdict::OtherArch {
            found: elf::Arch {
                bits: 32,
                big_endian: false,
                machine: 3,
            },
            host: elf::Arch::host().unwrap(),
        },
    ] {
        assert_eq!(v.fix(), ALLOW_FIX);
    }
    assert!(ALLOW_FIX.contains("not through the proxy"));
    // Every class and byte order.
    for (wide, big) in [(false, false), (false, true), (true, false), (true, true)] {
        let c = Crafted {
            wide,
            big,
            sections: vec![".go.buildinfo"],
            ..Crafted::host()
        };
        assert!(
            matches!(judge_bytes(&c.build()), Ok(elf::Kind::Go { .. })),
            "{wide} {big}"
        );
    }
}

#[test]
fn real_go_programs_when_installed() {
    // The crafted files above prove the markers; real Go builds (static and cgo) are checked
    // too when this machine has some.
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
        assert_eq!(judge_path(&p), Verdict::Go, "{}", p.display());
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
        let v = judge_file_bytes(&c.build());
        assert!(matches!(v, Verdict::OtherArch { .. }), "{v:?}");
        assert!(v.to_string().contains("cannot be loaded into it"), "{v}");
        // Static ones too: the architecture is the first problem.
        let c = Crafted { interp: false, ..c };
        assert!(matches!(
            judge_file_bytes(&c.build()),
            Verdict::OtherArch { .. }
        ));
    }
    let v = Verdict::OtherArch {
        found: Arch {
            bits: 32,
            big_endian: false,
            machine: 3,
        },
        host: Arch {
            bits: 64,
            big_endian: false,
            machine: 62,
        },
    };
    assert_eq!(
        v.reason().to_string(),
        "it is a 32-bit x86 program (the shim, 64-bit x86-64, cannot be loaded into it)"
    );
    assert_eq!(
        Arch {
            bits: 64,
            big_endian: true,
            machine: 0x1234
        }
        .to_string(),
        "64-bit big-endian machine 4660"
    );
    // Not an executable type: the kernel refuses it.
    let c = Crafted {
        e_type: 1,
        interp: false,
        ..Crafted::host()
    };
    assert_eq!(judge_bytes(&c.build()), Ok(elf::Kind::NotExecutable));
    assert_eq!(judge_file_bytes(&c.build()), Verdict::Preloadable);
}

/// `getauxval(AT_SECURE)`: what the kernel says about secure-execution mode.
const SECURE_C: &str = "#include <stdio.h>\n#include <sys/auxv.h>\n\
    int main(void) { printf(\"%lu\\n\", getauxval(AT_SECURE)); return 0; }\n";

fn set_caps(p: &Path, effective: bool) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // vfs_cap_data revision 2, permitted = CAP_NET_RAW (13).
    let mut cap = [0u8; 20];
    let magic = 0x0200_0000u32 | u32::from(effective);
    cap[..4].copy_from_slice(&magic.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    // SAFETY: valid strings and buffer.
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
        "cannot set file capabilities on {} ({}): run the tests as root on a file system with \
         xattrs",
        p.display(),
        io::Error::last_os_error()
    );
}

fn chown(p: &Path, uid: u32, gid: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::chown(c.as_ptr(), uid, gid) },
        0,
        "chown (run as root)"
    );
}

const NOBODY: u32 = 65534;

/// `argv` run as uid/gid 65534 (setpriv, util-linux).
fn as_nobody(argv: &[&OsStr]) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ]);
    cmd.args(argv);
    output(&mut cmd)
}

#[test]
fn privilege_verdicts_agree_with_the_kernel() {
    assert_eq!(
        // SAFETY: geteuid takes no argument.
        unsafe { libc::geteuid() },
        0,
        "the privilege tests need root (setuid copies, chown, setcap)"
    );
    let prog = cc("secure", SECURE_C, &[]);
    let plain = copy_exec(&prog, "sec-plain", 0o755);
    let suid_root = copy_exec(&prog, "sec-suid-root", 0o4755);
    let sgid_root = copy_exec(&prog, "sec-sgid-root", 0o2755);
    let suid_nobody = copy_exec(&prog, "sec-suid-nobody", 0o755);
    chown(&suid_nobody, NOBODY, NOBODY);
    std::fs::set_permissions(&suid_nobody, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let sgid_lock = copy_exec(&prog, "sec-sgid-lock", 0o2745);
    let caps_e = copy_exec(&prog, "sec-caps-e", 0o755);
    set_caps(&caps_e, true);
    let caps_p = copy_exec(&prog, "sec-caps-p", 0o755);
    set_caps(&caps_p, false);

    let root = Judge::current();
    let status = as_nobody(&[OsStr::new("cat"), OsStr::new("/proc/self/status")]);
    assert!(status.status.success(), "setpriv: {status:?}");
    let nobody_creds = Creds::parse_status(&String::from_utf8_lossy(&status.stdout)).unwrap();
    assert_eq!(nobody_creds.ruid, NOBODY);
    let nobody = Judge {
        creds: nobody_creds,
        loader: root.loader.clone(),
    };

    let mut seen = Vec::new();
    for (p, root_secure, nobody_secure) in [
        (&plain, false, false),
        (&suid_root, false, true),
        (&sgid_root, false, true),
        (&suid_nobody, true, false),
        (&sgid_lock, false, false),
        (&caps_e, false, true),
        (&caps_p, false, true),
    ] {
        // What the kernel says, as root and as nobody.
        let o = output(&mut Command::new(p));
        let k_root = String::from_utf8_lossy(&o.stdout).trim() == "1";
        let o = as_nobody(&[p.as_os_str()]);
        assert!(o.status.success(), "{}: {o:?}", p.display());
        let k_nobody = String::from_utf8_lossy(&o.stdout).trim() == "1";
        assert_eq!(
            (k_root, k_nobody),
            (root_secure, nobody_secure),
            "{}: the kernel's AT_SECURE",
            p.display()
        );
        let v_root = root.judge(&Exec::path(p));
        let v_nobody = nobody.judge(&Exec::path(p));
        assert_eq!(!v_root.is_proxied(), k_root, "{}: {v_root:?}", p.display());
        assert_eq!(
            !v_nobody.is_proxied(),
            k_nobody,
            "{}: {v_nobody:?}",
            p.display()
        );
        seen.push((v_root, v_nobody));
    }
    // The reasons and the fixes.
    let v = &seen[1].1;
    assert_eq!(
        v,
        &Verdict::PrivilegeChange(Privilege::Uid {
            real: NOBODY,
            to: 0,
            setuid: true
        })
    );
    let text = v.to_string();
    assert!(
        text.starts_with("it is setuid (to uid 0; this user is uid 65534)"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "(run proxify as uid 0, or use proxify run --allow-unproxied to run it anyway: its \
             connections and name look-ups then go directly, not through the proxy)"
        ),
        "{text}"
    );
    assert!(matches!(
        &seen[2].1,
        Verdict::PrivilegeChange(Privilege::Gid { setgid: true, .. })
    ));
    assert!(seen[2].1.to_string().starts_with("it is setgid"));
    assert!(matches!(
        &seen[3].0,
        Verdict::PrivilegeChange(Privilege::Uid { to: NOBODY, .. })
    ));
    assert_eq!(seen[5].1, Verdict::PrivilegeChange(Privilege::Capabilities));
    assert!(seen[5]
        .1
        .to_string()
        .starts_with("it has file capabilities"));
    // A shipped setuid program: root runs it with the shim, other users do not.
    let shipped = ["/usr/bin/passwd", "/bin/su", "/usr/bin/newgrp"]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & libc::S_ISUID != 0))
        .expect("no setuid program found: apt-get install passwd (for /usr/bin/passwd)");
    assert_eq!(
        root.judge(&Exec::path(Path::new(shipped))),
        Verdict::Preloadable
    );
    assert!(matches!(
        nobody.judge(&Exec::path(Path::new(shipped))),
        Verdict::PrivilegeChange(Privilege::Uid { to: 0, .. })
    ));
}

#[test]
fn scripts_are_judged_by_their_interpreter() {
    let sh = write_exec("sh-script", b"#!/bin/sh\necho hi\n", 0o755);
    assert_eq!(judge_path(&sh), Verdict::Preloadable);
    let py = write_exec("py-script", b"#!/usr/bin/env python3\nprint(1)\n", 0o755);
    assert_eq!(judge_path(&py), Verdict::Preloadable);

    let st = static_binary("static", false);
    let text = format!("#! {} -x \nexit\n", st.display());
    let direct = write_exec("static-script", text.as_bytes(), 0o755);
    let v = judge_path(&direct);
    assert_eq!(
        v,
        Verdict::Script {
            interpreter: st.clone(),
            verdict: Box::new(Verdict::Static)
        }
    );
    assert_eq!(v.innermost(), &Verdict::Static);
    assert_eq!(v.innermost_path(), Some(st.as_path()));
    assert_eq!(
        v.reason().to_string(),
        format!(
            "its interpreter {} is statically linked (no dynamic loader loads the shim)",
            st.display()
        )
    );
    // A script whose interpreter is a script whose interpreter is static.
    let text = format!("#!{}\n", direct.display());
    let nested = write_exec("nested-script", text.as_bytes(), 0o755);
    assert_eq!(judge_path(&nested), v);

    // env NAME, found through the search path given.
    let bin = tmp().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let name = copy_exec(&st, "bin/mystatic", 0o755);
    let search = format!("/nonexistent:{}:/usr/bin", bin.display());
    let search = Some(OsStr::new(&search));
    let want = Verdict::Script {
        interpreter: name.clone(),
        verdict: Box::new(Verdict::Static),
    };
    for line in [
        "#!/usr/bin/env mystatic\n",
        "#!/usr/bin/env -S mystatic -v\n",
        "#!/usr/bin/env -S -i A=b mystatic\n",
        "#!/usr/bin/env -S -u X -- mystatic\n",
        "#!/usr/bin/env mystatic", // no newline
    ] {
        let s = write_exec("env-script", line.as_bytes(), 0o755);
        assert_eq!(judge_with(&s, search), want, "{line:?}");
        // Without that directory in the path, env runs and fails to find it.
        assert_eq!(
            judge_with(&s, Some(OsStr::new("/usr/bin:/bin"))),
            Verdict::Preloadable,
            "{line:?}"
        );
    }

    // Missing interpreter: the kernel fails the exec.
    let s = write_exec("missing-interp", b"#!/nonexistent/interp\n", 0o755);
    assert_eq!(judge_path(&s), Verdict::WillNotRun);
    // Empty #! line: ENOEXEC, execvp hands it to /bin/sh.
    let s = write_exec("empty-shebang", b"#!   \n", 0o755);
    assert_eq!(judge_path(&s), Verdict::Preloadable);
    // Setuid scripts are not setuid: the interpreter decides.
    let s = write_exec("suid-script", b"#!/bin/sh\n", 0o4755);
    chown(&s, NOBODY, NOBODY);
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(judge_path(&s), Verdict::Preloadable);
    // But a setuid interpreter counts.
    let suid = copy_exec(Path::new("/bin/true"), "suid-interp", 0o755);
    chown(&suid, NOBODY, NOBODY);
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let text = format!("#!{}\n", suid.display());
    let s = write_exec("suid-interp-script", text.as_bytes(), 0o755);
    let v = judge_path(&s);
    assert!(
        matches!(
            v.innermost(),
            Verdict::PrivilegeChange(Privilege::Uid { to: NOBODY, .. })
        ),
        "{v:?}"
    );
    assert!(v
        .reason()
        .to_string()
        .starts_with(&format!("its interpreter {} is setuid", suid.display())));
}

#[test]
fn interpreter_chains_are_bounded() {
    // s0 -> s1 -> ... -> /bin/true: 4 levels of scripts is what the kernel accepts.
    let mut prev = PathBuf::from("/bin/true");
    let mut results = Vec::new();
    for i in 0..6 {
        let text = format!("#!{}\n", prev.display());
        prev = write_exec(&format!("chain-{i}"), text.as_bytes(), 0o755);
        results.push(judge_path(&prev));
    }
    assert_eq!(results[0], Verdict::Preloadable);
    assert_eq!(results[3], Verdict::Preloadable);
    assert!(matches!(&results[4], Verdict::Unjudged(e) if e.contains("levels")));
    assert!(!results[5].is_proxied());
    assert!(results[5].to_string().contains("could bypass"));
    // A script that is its own interpreter.
    let p = tmp().join("loop-script");
    let text = format!("#!{}\n", p.display());
    write_exec("loop-script", text.as_bytes(), 0o755);
    assert!(!judge_path(&p).is_proxied());
}

#[test]
fn the_dynamic_loader_is_judged_by_its_program() {
    let ld = host_loader_path();
    let st = static_binary("static", false);
    let st_s = st.to_str().unwrap();
    let ldd = ld.to_str().unwrap();
    // Dynamic programs run through it get the shim; the loader on its own runs nothing.
    assert_eq!(judge_args(&ld, &["/bin/true"]), Verdict::Preloadable);
    assert_eq!(judge_args(&ld, &["/bin/ls", "-l"]), Verdict::Preloadable);
    assert_eq!(judge_args(&ld, &[]), Verdict::Preloadable);
    assert_eq!(judge_args(&ld, &["--version"]), Verdict::Preloadable);
    assert_eq!(
        judge_args(&ld, &["--library-path", "/nonexistent", "/bin/true"]),
        Verdict::Preloadable
    );
    // ldd's first step: --verify loads the program without running it.
    assert_eq!(judge_args(&ld, &["--verify", st_s]), Verdict::Preloadable);
    // A static program run through the loader: the loader runs it, unproxied.
    let want = Verdict::Loader {
        program: st.clone(),
        verdict: Box::new(Verdict::Static),
    };
    assert_eq!(judge_args(&ld, &[st_s]), want);
    assert_eq!(judge_args(&ld, &["--argv0", "x", st_s, "-v"]), want);
    assert_eq!(judge_args(&ld, &["--", st_s]), want);
    assert_eq!(
        want.reason().to_string(),
        format!(
            "the program the dynamic loader runs, {st_s}, is statically linked (no dynamic \
             loader loads the shim)"
        )
    );
    // The loader running the loader running a static program.
    assert_eq!(judge_args(&ld, &[ldd, st_s]), want);
    // A Go program through the loader.
    let go = write_exec(
        "go-for-ld",
        &Crafted {
            go_note: true,
            ..Crafted::host()
        }
        .build(),
        0o644,
    );
    assert_eq!(
        judge_args(&ld, &[go.to_str().unwrap()]).innermost(),
        &Verdict::Go
    );
    // A relative path is relative to the directory the loader runs in.
    let args = [OsStr::new("./static")];
    let v = Judge::current().judge(&Exec {
        path: &ld,
        args: &args,
        search_path: None,
        cwd: Some(&tmp()),
    });
    assert_eq!(v.innermost(), &Verdict::Static);
    // A name without a slash: the loader searches library directories, which is not judged.
    assert!(matches!(
        judge_args(&ld, &["static"]).innermost(),
        Verdict::Unjudged(_)
    ));
    // Missing programs or ones it cannot load: it fails by itself.
    assert_eq!(
        judge_args(&ld, &["/nonexistent/prog"]),
        Verdict::Preloadable
    );
    let text = write_exec("text-for-ld", b"echo hi\n", 0o755);
    assert_eq!(
        judge_args(&ld, &[text.to_str().unwrap()]),
        Verdict::Preloadable
    );
    // A copy of the loader (another file, the same DT_SONAME) is the loader too.
    let copy = copy_exec(&ld, "ld-copy.so", 0o755);
    assert_eq!(judge_args(&copy, &["/bin/true"]), Verdict::Preloadable);
    assert_eq!(judge_args(&copy, &[st_s]).innermost(), &Verdict::Static);
    // A script whose interpreter is the loader.
    let s = write_exec(
        "ld-script",
        format!("#!{} {st_s}\n", ld.display()).as_bytes(),
        0o755,
    );
    let v = judge_path(&s);
    assert_eq!(v.innermost(), &Verdict::Static, "{v:?}");
    assert!(v
        .reason()
        .to_string()
        .contains("is the dynamic loader, and the program it runs"));
}

#[test]
fn a_spawn_directory_is_where_paths_are_resolved() {
    let st = static_binary("static", false);
    let _ = st;
    let v = Judge::current().judge(&Exec {
        path: Path::new("./static"),
        args: &[],
        search_path: None,
        cwd: Some(&tmp()),
    });
    assert_eq!(v, Verdict::Static);
    // Without the directory it is looked up here (where no such file is).
    assert_eq!(judge_path(Path::new("./static")), Verdict::WillNotRun);
    // PATH entries relative to it.
    assert_eq!(
        find_in_path_from(OsStr::new("static"), Some(OsStr::new(".")), Some(&tmp())),
        Some(PathBuf::from("./static"))
    );
}

#[test]
fn files_that_cannot_run_or_are_not_programs() {
    assert_eq!(judge_path(Path::new("/nonexistent/x")), Verdict::WillNotRun);
    assert_eq!(judge_path(Path::new("/")), Verdict::WillNotRun);
    let p = copy_exec(Path::new("/bin/true"), "no-x-bit", 0o644);
    assert_eq!(judge_path(&p), Verdict::WillNotRun);
    let p = write_exec("text-file", b"echo not a script\n", 0o755);
    assert_eq!(judge_path(&p), Verdict::Preloadable);
    let p = write_exec("empty-file", b"", 0o755);
    assert_eq!(judge_path(&p), Verdict::Preloadable);
    // A FIFO is not opened (it would block).
    let fifo = tmp().join("fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o755) }, 0);
    assert_eq!(judge_path(&fifo), Verdict::WillNotRun);
    assert!(Verdict::Preloadable.is_proxied() && Verdict::WillNotRun.is_proxied());
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
                assert!(
                    matches!(v, Ok(elf::Kind::NotExecutable) | Err(_)),
                    "{real} cut at {n}: {v:?}"
                );
            }
        }
        // Through real files too.
        for n in [0, 3, 4, 17, 63, 64, 100, 4096] {
            let _ = judge_file_bytes(&full[..n.min(full.len())]);
        }
    }
    let st = std::fs::read(static_binary("static", false)).unwrap();
    // Program headers complete, rest cut: still static.
    assert!(matches!(
        judge_bytes(&st[..4096]),
        Ok(elf::Kind::Static { .. })
    ));
    // A header that says ELF but is malformed is refused (it could run).
    let mut bad = Crafted::host().build();
    bad[6] = 0; // EI_VERSION
    assert!(matches!(judge_file_bytes(&bad), Verdict::Unjudged(_)));
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

#[test]
fn garbage_never_panics() {
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
        let _ = judge_bytes(&b);
    }
    // Pure noise after the magic.
    for _ in 0..5000 {
        let mut b = b"\x7fELF".to_vec();
        let n = (rng.next() % 300) as usize;
        b.extend((0..n).map(|_| rng.next() as u8));
        let _ = judge_bytes(&b);
    }
}

#[test]
fn file_reads_are_bounded() {
    // A sparse file larger than the budget: a read past it fails instead of reading on.
    let p = tmp().join("big-sparse");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(3 * MAX_READ).unwrap();
    let cache = elf::Bounded::cache(&f, 3 * MAX_READ);
    use object::ReadRef;
    assert!((&cache).read_bytes_at(0, MAX_READ / 2).is_ok());
    assert!((&cache).read_bytes_at(MAX_READ, MAX_READ).is_err());
    // Huge counts and offsets in a crafted file: the section count in section 0
    // (e_shnum 0) is all ones, and the section name table is 4 GiB.
    let host = Crafted::host();
    let mut c = host.build();
    let (shnum_at, shoff_at) = if host.wide { (60, 40) } else { (48, 32) };
    c[shnum_at..shnum_at + 2].fill(0);
    let word = |b: &[u8], at: usize| -> usize {
        let mut v = [0u8; 8];
        let n = if host.wide { 8 } else { 4 };
        v[..n].copy_from_slice(&b[at..at + n]);
        if host.big {
            v[..n].reverse();
        }
        u64::from_le_bytes(v) as usize
    };
    let shoff = word(&c, shoff_at);
    let size_at = shoff + if host.wide { 32 } else { 20 };
    c[size_at..size_at + if host.wide { 8 } else { 4 }].fill(0xff);
    assert!(judge_bytes(&c).is_ok());
    assert_eq!(judge_file_bytes(&c), Verdict::Preloadable);
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
        let h = Arch::host().expect("an architecture the tests know");
        let (wide, big, machine) = (h.bits == 64, h.big_endian, h.machine);
        Crafted {
            wide,
            big,
            machine,
            e_type: 3,
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
            put32(&mut note, 4);
            note.extend_from_slice(b"Go\0\0buildid!");
        }
        let nph = 1 + usize::from(self.interp);
        let mut data_off = eh + nph * ph;
        let mut body = Vec::new();
        if self.interp {
            phdrs.push((3u32, data_off, interp_data.len()));
            body.extend_from_slice(&interp_data);
            data_off += interp_data.len();
        }
        while data_off % 4 != 0 {
            body.push(0);
            data_off += 1;
        }
        phdrs.push((4u32, data_off, note.len()));
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

#[test]
fn small_reads_come_from_the_read_ahead_block_and_match_the_file() {
    use object::ReadRef;
    let p = tmp().join("pattern");
    let len = 3 * elf::BLOCK + 123;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let cache = elf::Bounded::cache(&f, len as u64);
    // Within a block, across a block's end, at the file's end, past it, and one large read.
    for (at, n) in [
        (0, 64),
        (100, 900),
        (elf::BLOCK - 10, 40),
        (2 * elf::BLOCK + 5, 16),
        (len - 20, 20),
        (4096 * 3 + 1, elf::BLOCK),
    ] {
        let got = (&cache).read_bytes_at(at as u64, n as u64).unwrap();
        assert_eq!(got, &data[at..at + n], "at {at}, {n} bytes");
    }
    assert!((&cache).read_bytes_at(len as u64 - 5, 10).is_err());
    assert!((&cache).read_bytes_at(len as u64 + 10, 1).is_err());
}

#[test]
fn without_set_id_bits_or_capabilities_only_the_ids_count() {
    // What Creds::ids leaves out (capability sets, no_new_privs) never changes the answer
    // for such a file, whatever the ids, the mode's other bits and the mount.
    let ids = [
        (1000, 1000, 1000, 1000),
        (0, 0, 0, 0),
        (1000, 0, 1000, 1000),
        (1000, 1000, 1000, 42),
        (0, 1000, 0, 0),
    ];
    for (ruid, euid, rgid, egid) in ids {
        let exact = |inh, bnd, nnp| Creds {
            ruid,
            euid,
            rgid,
            egid,
            cap_inheritable: inh,
            cap_bounding: bnd,
            no_new_privs: nnp,
        };
        let assumed = exact(u64::MAX, u64::MAX, false);
        for mode in [0o755, 0o711, 0o1777, 0o750, 0o100] {
            for nosuid in [false, true] {
                let f = privilege::FileIds {
                    mode: libc::S_IFREG | mode,
                    uid: 0,
                    gid: 0,
                    caps: None,
                    nosuid,
                };
                for (inh, bnd, nnp) in
                    [(0, 0, false), (0, (1 << 41) - 1, true), (u64::MAX, 0, true)]
                {
                    assert_eq!(
                        privilege::exec_change(&exact(inh, bnd, nnp), &f),
                        privilege::exec_change(&assumed, &f),
                        "{mode:o} {nosuid} {ruid} {euid} {rgid} {egid}"
                    );
                }
            }
        }
    }
    // SAFETY: these calls only return ids.
    let me = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    let c = Creds::ids();
    assert_eq!((c.ruid, c.euid, c.rgid, c.egid), me);
    let full = Creds::current();
    assert_eq!((full.ruid, full.euid, full.rgid, full.egid), me);
}
