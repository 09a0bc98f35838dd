//! Programs the shim cannot reach (static, Go, setuid/setgid/capabilities; scripts by their
//! interpreter): `proxify run` refuses them, and the shim refuses the command's own attempts to
//! run one, unless --allow-unproxied / PROXIFY_ALLOW_UNPROXIED=1. Also: the shim keeps itself
//! in the environment of programs run with an emptied one (`env -i`).
//!
//! The CLI checks run with a harmless empty shared object as the shim. The shim checks need
//! the real one, `target/release/libproxify.so` (`cargo build --release -p proxify-shim`):
//! a missing or out-of-date one is a failure that says so. No network is used: the proxy
//! address (198.51.100.1, documentation range) is never contacted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

const BIN: &str = env!("CARGO_BIN_EXE_proxify");
const PROXY: &str = "socks5h://198.51.100.1:1080";
const STATIC_SAYS: &str = "STATIC PROGRAM RAN";

fn tmp_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("proxify-unreachable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Tests run in parallel threads: a file being written must not be open in a child forked by
/// another thread when it is executed (ETXTBSY). Files are written under the write lock,
/// processes are started under the read lock.
static SPAWN: RwLock<()> = RwLock::new(());

fn writing() -> RwLockWriteGuard<'static, ()> {
    SPAWN.write().unwrap_or_else(|e| e.into_inner())
}

fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWN.read().unwrap_or_else(|e| e.into_inner())
}

/// Starts `cmd` (under the spawn lock) and collects its output.
fn output(cmd: &mut Command) -> std::io::Result<Output> {
    use std::process::Stdio;
    let child = {
        let _held = spawning();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?
    };
    child.wait_with_output()
}

fn write_exec(name: &str, data: &[u8], mode: u32) -> PathBuf {
    let _held = writing();
    let p = tmp_dir().join(name);
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn copy_exec(from: &str, name: &str, mode: u32) -> PathBuf {
    write_exec(name, &std::fs::read(from).unwrap(), mode)
}

/// Compiles C source with `cc` (once per name; tests run in parallel).
fn cc(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = tmp_dir().join(name);
    if out.exists() {
        return out;
    }
    let src = tmp_dir().join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let o =
        output(Command::new("cc").args(flags).arg("-o").arg(&out).arg(&src)).unwrap_or_else(|e| {
            panic!("cannot run cc ({e}): these tests need it: apt-get install gcc libc6-dev")
        });
    assert!(
        o.status.success(),
        "cc {flags:?} {name} failed (static programs need glibc's libc.a: apt-get install \
         libc6-dev): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A statically linked program that says it ran.
fn static_prog() -> PathBuf {
    cc(
        "static-prog",
        &format!("#include <stdio.h>\nint main(void) {{ puts(\"{STATIC_SAYS}\"); return 0; }}\n"),
        &["-static"],
    )
}

/// A directory holding `pxstatic` (the static program) for PATH lookups.
fn static_dir() -> PathBuf {
    let dir = tmp_dir().join("bin");
    let prog = dir.join("pxstatic");
    if !prog.exists() {
        let st = static_prog();
        let _held = writing();
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".pxstatic-{:?}", std::thread::current().id()));
        std::fs::copy(st, &tmp).unwrap();
        std::fs::rename(&tmp, &prog).unwrap();
    }
    dir
}

fn path_with_static() -> String {
    format!(
        "{}:{}",
        static_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// An empty shared object: the CLI checks need a shim file, not a working shim.
fn empty_so() -> PathBuf {
    cc("empty.so", "", &["-shared", "-x", "c"])
}

/// The real shim, built and up to date.
fn real_shim() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let shim = target.join("release").join("libproxify.so");
    let built = std::fs::metadata(&shim)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the shim first: cargo build --release -p proxify-shim",
                shim.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut stack = vec![root.join("proxify-shim"), root.join("proxify-core/src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs" || x == "c") {
                let changed = std::fs::metadata(&p).unwrap().modified().unwrap();
                assert!(
                    changed <= built,
                    "{} is newer than {}: rebuild it: cargo build --release -p proxify-shim",
                    p.display(),
                    shim.display()
                );
            }
        }
    }
    shim
}

/// `proxify ARGS` with a clean proxify environment, the given shim and `env`.
fn proxify(shim: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    proxify_as(None, shim, args, env)
}

/// The unprivileged user the privilege tests run as (setpriv, util-linux).
const NOBODY: u32 = 65534;

/// [`proxify`] as the user `uid` (its group too, no supplementary groups, no inheritable
/// capabilities), or as this (root) user.
fn proxify_as(uid: Option<u32>, shim: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd_home = None;
    let mut cmd = match uid {
        None => Command::new(BIN),
        Some(uid) => {
            // root's config directory is not theirs to read.
            cmd_home = Some(tmp_dir());
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--inh-caps=-all", BIN]);
            c
        }
    };
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PROXIFY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("LD_PRELOAD");
    cmd.env("PROXIFY_SHIM", shim);
    if let Some(home) = cmd_home {
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("no-config"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd).expect("cannot start proxify (setpriv is in util-linux: scripts/setup.sh)")
}

/// `proxify run --mode preload`: the refusals are those of the preload mode (the default mode
/// supervises static and Go programs instead, see `static_programs_are_supervised_by_default`).
fn run(shim: &Path, cmd: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["run", "-x", PROXY, "--mode", "preload", "--"];
    args.extend_from_slice(cmd);
    proxify(shim, &args, env)
}

fn run_allowed(shim: &Path, cmd: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "run",
        "-x",
        PROXY,
        "--mode",
        "preload",
        "--allow-unproxied",
        "--",
    ];
    args.extend_from_slice(cmd);
    proxify(shim, &args, env)
}

/// `proxify run` as [`NOBODY`], with `opts` before `--`.
fn run_nobody(shim: &Path, opts: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["run", "-x", PROXY];
    args.extend_from_slice(opts);
    args.push("--");
    args.extend_from_slice(cmd);
    proxify_as(Some(NOBODY), shim, &args, env)
}

/// The `--allow-unproxied` line for `name`.
#[track_caller]
fn assert_allowed_line(o: &Output, name: &str, why: &str) {
    let err = stderr(o);
    let line = format!("proxify: running {name} without the proxy (--allow-unproxied): ");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("proxify: ")).collect();
    assert_eq!(lines.len(), 1, "not one proxify line: {err:?}");
    assert!(lines[0].starts_with(&line), "{err:?}");
    assert!(lines[0].contains(why), "{err:?} lacks {why:?}");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The CLI's refusal: one line, exit 2, nothing run.
#[track_caller]
fn assert_refused(o: &Output, name: &str, why: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "status {:?}: {err}", o.status);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    let want_start = format!("proxify: refusing to run {name}: ");
    assert!(err.starts_with(&want_start), "{err:?}");
    assert!(err.contains(why), "{err:?} lacks {why:?}");
    assert!(
        err.contains(" \u{2014} its connections would bypass the proxy (")
            && err.ends_with(
                "use proxify run --allow-unproxied to run it anyway: its connections and name \
                 look-ups then go directly, not through the proxy)\n"
            ),
        "{err:?}"
    );
    assert!(o.stdout.is_empty(), "the command ran: {}", stdout(o));
}

// ---- proxify run: the CLI's own check -------------------------------------------------------

#[test]
fn setuid_programs_are_refused_unless_allowed() {
    let shim = empty_so();
    // Root runs setuid-root programs with LD_PRELOAD kept: not refused (issue 17 item 5).
    let o = run(&shim, &["passwd", "--help"], &[]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(!stderr(&o).contains("proxify: "), "{}", stderr(&o));
    // Another user would switch to uid 0: refused, with the fix.
    let o = run_nobody(&shim, &[], &["passwd", "--help"], &[]);
    assert_refused(
        &o,
        "passwd",
        "it is setuid (to uid 0; this user is uid 65534)",
    );
    assert!(
        stderr(&o).contains("(run proxify as uid 0, or use proxify run --allow-unproxied"),
        "{}",
        stderr(&o)
    );

    // A setuid-root copy of `true`, run by path: root runs it; nobody is refused, and
    // allowed with the flag or the variable, with one line (none with -q).
    let suid = copy_exec("/bin/true", "suid-true", 0o4755);
    let s = suid.to_str().unwrap();
    let o = run(&shim, &[s], &[]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    assert_refused(&run_nobody(&shim, &[], &[s], &[]), s, "it is setuid");
    let o = run_nobody(&shim, &["--allow-unproxied"], &[s], &[]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_allowed_line(&o, s, "it is setuid (to uid 0");
    let o = run_nobody(&shim, &["--allow-unproxied", "-q"], &[s], &[]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    for v in ["1", "yes", "TRUE"] {
        let o = run_nobody(&shim, &[], &[s], &[("PROXIFY_ALLOW_UNPROXIED", v)]);
        assert!(o.status.success(), "{v}: {:?}: {}", o.status, stderr(&o));
        assert_allowed_line(&o, s, "setuid");
    }
    for v in ["0", "no", ""] {
        assert_refused(
            &run_nobody(&shim, &[], &[s], &[("PROXIFY_ALLOW_UNPROXIED", v)]),
            s,
            "setuid",
        );
    }
    let o = run(&shim, &[s], &[("PROXIFY_ALLOW_UNPROXIED", "maybe")]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "proxify: PROXIFY_ALLOW_UNPROXIED: \"maybe\" is not 1/true/yes or 0/false/no\n"
    );
    let sgid = copy_exec("/bin/true", "sgid-true", 0o2755);
    let s = sgid.to_str().unwrap();
    assert!(run(&shim, &[s], &[]).status.success());
    assert_refused(&run_nobody(&shim, &[], &[s], &[]), s, "it is setgid");
}

#[test]
fn the_override_reaches_the_command() {
    let shim = empty_so();
    let o = run_allowed(
        &shim,
        &["sh", "-c", "echo \"[$PROXIFY_ALLOW_UNPROXIED]\""],
        &[],
    );
    assert_eq!(stdout(&o), "[1]\n", "{}", stderr(&o));
    let o = run(
        &shim,
        &["sh", "-c", "echo \"[$PROXIFY_ALLOW_UNPROXIED]\""],
        &[],
    );
    assert_eq!(stdout(&o), "[]\n", "{}", stderr(&o));
}

#[test]
fn capability_programs_are_refused() {
    let shim = empty_so();
    let p = copy_exec("/bin/true", "cap-true", 0o755);
    let o = output(Command::new("setcap").arg("cap_net_raw+ep").arg(&p))
        .unwrap_or_else(|e| panic!("cannot run setcap ({e}): apt-get install libcap2-bin"));
    assert!(
        o.status.success(),
        "setcap failed (run the tests as root): {}",
        stderr(&o)
    );
    let s = p.to_str().unwrap();
    // Root: file capabilities do not put the loader in secure mode.
    let o = run(&shim, &[s], &[]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    let o = run_nobody(&shim, &[], &[s], &[]);
    assert_refused(&o, s, "it has file capabilities");
    assert!(
        stderr(&o).contains("(run proxify as root, or "),
        "{}",
        stderr(&o)
    );
    assert!(run_nobody(&shim, &["--allow-unproxied"], &[s], &[])
        .status
        .success());
}

#[test]
fn static_programs_are_refused_found_through_path() {
    let shim = empty_so();
    let path = path_with_static();
    let env = [("PATH", path.as_str())];
    assert_refused(
        &run(&shim, &["pxstatic"], &env),
        "pxstatic",
        "it is statically linked",
    );
    let o = run_allowed(&shim, &["pxstatic"], &env);
    assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    // One line says it runs without the proxy (issue 17 item 8); -q silences it.
    assert_allowed_line(&o, "pxstatic", "it is statically linked");
    let mut args = vec![
        "run",
        "-x",
        PROXY,
        "--allow-unproxied",
        "-q",
        "--",
        "pxstatic",
    ];
    let o = proxify(&shim, &args, &env);
    assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // No line for programs the shim reaches.
    args.truncate(4);
    args.extend(["--", "true"]);
    let o = proxify(&shim, &args, &env);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    // ldconfig is statically linked.
    assert_refused(
        &run(&shim, &["/usr/sbin/ldconfig", "-p"], &[]),
        "/usr/sbin/ldconfig",
        "statically linked",
    );
}

/// The dynamic loader of the system (`PT_INTERP` of /bin/true).
fn system_loader() -> String {
    let o = output(Command::new("readelf").args(["-l", "/bin/true"]))
        .unwrap_or_else(|e| panic!("cannot run readelf ({e}): apt-get install binutils"));
    let text = stdout(&o);
    let key = "[Requesting program interpreter: ";
    let at = text.find(key).expect("/bin/true has an interpreter");
    let rest = &text[at + key.len()..];
    rest[..rest.find(']').unwrap()].to_string()
}

#[test]
fn the_dynamic_loader_is_judged_by_its_program() {
    let shim = empty_so();
    let ld = system_loader();
    // It runs dynamic programs with the shim (issue 17 item 2): not refused.
    let o = run(&shim, &[&ld, "/bin/echo", "via the loader"], &[]);
    assert_eq!(stdout(&o), "via the loader\n", "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let o = run(&shim, &[&ld, "--version"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A static program through it is refused, naming that program.
    let st = static_prog();
    let st_s = st.to_str().unwrap();
    let o = run(&shim, &[&ld, st_s], &[]);
    assert_refused(
        &o,
        &ld,
        &format!("the program the dynamic loader runs, {st_s}, is statically linked"),
    );
    let o = run_allowed(&shim, &[&ld, st_s], &[]);
    assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    assert_allowed_line(&o, &ld, "the program the dynamic loader runs");
}

#[test]
fn static_programs_are_supervised_by_default() {
    let shim = empty_so();
    let path = path_with_static();
    for mode in [None, Some("auto"), Some("supervise")] {
        let mut args = vec!["run", "-x", PROXY];
        if let Some(m) = mode {
            args.extend(["--mode", m]);
        }
        args.extend(["--", "pxstatic"]);
        let o = proxify(&shim, &args, &[("PATH", path.as_str())]);
        assert!(o.status.success(), "mode {mode:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    }
    // PROXIFY_MODE=preload refuses it as --mode preload does.
    let args = ["run", "-x", PROXY, "--", "pxstatic"];
    let o = proxify(
        &shim,
        &args,
        &[("PATH", path.as_str()), ("PROXIFY_MODE", "preload")],
    );
    assert_refused(&o, "pxstatic", "it is statically linked");
    let o = proxify(
        &shim,
        &args,
        &[("PATH", path.as_str()), ("PROXIFY_MODE", "bogus")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown mode"), "{}", stderr(&o));
}

#[test]
fn go_programs_are_refused() {
    let shim = empty_so();
    // A Go build ID note and a .go.buildinfo section are what the check looks for; this file
    // has them (it is not runnable: the check refuses it before any exec).
    let go = write_exec("fake-go", &fake_go_elf(), 0o755);
    let s = go.to_str().unwrap();
    assert_refused(&run(&shim, &[s], &[]), s, "it is a Go program");
}

#[test]
fn scripts_are_judged_by_their_interpreter() {
    let shim = empty_so();
    let st = static_prog();
    let script = write_exec(
        "static-script",
        format!("#!{}\n", st.display()).as_bytes(),
        0o755,
    );
    let s = script.to_str().unwrap();
    let o = run(&shim, &[s], &[]);
    assert_refused(
        &o,
        s,
        &format!("its interpreter {} is statically linked", st.display()),
    );
    // #!/usr/bin/env NAME, NAME found through PATH.
    let path = path_with_static();
    let script = write_exec("env-script", b"#!/usr/bin/env pxstatic\n", 0o755);
    let s = script.to_str().unwrap();
    let o = run(&shim, &[s], &[("PATH", &path)]);
    assert_refused(
        &o,
        s,
        &format!(
            "its interpreter {} is statically linked",
            static_dir().join("pxstatic").display()
        ),
    );
    // Ordinary scripts and dynamic programs run.
    let ok = write_exec("sh-script", b"#!/bin/sh\necho script ran\n", 0o755);
    let o = run(&shim, &[ok.to_str().unwrap()], &[]);
    assert_eq!(stdout(&o), "script ran\n", "{}", stderr(&o));
    let ok = write_exec(
        "env-sh-script",
        b"#!/usr/bin/env sh\necho env script ran\n",
        0o755,
    );
    let o = run(&shim, &[ok.to_str().unwrap()], &[]);
    assert_eq!(stdout(&o), "env script ran\n", "{}", stderr(&o));
    let o = run(&shim, &["true"], &[]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn commands_that_do_not_exist_are_left_to_exec() {
    let o = run(&empty_so(), &["no-such-command-4242"], &[]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "proxify: cannot run 'no-such-command-4242': No such file or directory\n"
    );
}

/// A minimal 64-bit little-endian x86-64 ELF file with PT_INTERP, a Go build ID note and a
/// `.go.buildinfo` section.
fn fake_go_elf() -> Vec<u8> {
    let interp = b"/lib64/ld-linux-x86-64.so.2\0";
    let mut note = Vec::new();
    for v in [4u32, 8, 4] {
        note.extend_from_slice(&v.to_le_bytes());
    }
    note.extend_from_slice(b"Go\0\0buildid!");
    let shstr = b"\0.go.buildinfo\0.shstrtab\0";
    let interp_off = 64 + 2 * 56;
    let note_off = interp_off + interp.len() + 4 - interp.len() % 4;
    let shstr_off = note_off + note.len();
    let shoff = (shstr_off + shstr.len() + 7) & !7;
    let mut b = vec![0u8; shoff + 3 * 64];
    let put16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    put16(&mut b, 16, 2); // ET_EXEC
    put16(&mut b, 18, 62); // x86-64
    put32(&mut b, 20, 1);
    put64(&mut b, 32, 64); // phoff
    put64(&mut b, 40, shoff as u64);
    put16(&mut b, 52, 64);
    put16(&mut b, 54, 56);
    put16(&mut b, 56, 2);
    put16(&mut b, 58, 64);
    put16(&mut b, 60, 3);
    put16(&mut b, 62, 2);
    for (i, (ty, off, len)) in [(3u32, interp_off, interp.len()), (4, note_off, note.len())]
        .into_iter()
        .enumerate()
    {
        let at = 64 + i * 56;
        put32(&mut b, at, ty);
        put64(&mut b, at + 8, off as u64);
        put64(&mut b, at + 32, len as u64);
        put64(&mut b, at + 40, len as u64);
    }
    b[interp_off..interp_off + interp.len()].copy_from_slice(interp);
    b[note_off..note_off + note.len()].copy_from_slice(&note);
    b[shstr_off..shstr_off + shstr.len()].copy_from_slice(shstr);
    // Section 1: .go.buildinfo; section 2: .shstrtab.
    put32(&mut b, shoff + 64, 1);
    put32(&mut b, shoff + 64 + 4, 1);
    put32(&mut b, shoff + 128, 15);
    put32(&mut b, shoff + 128 + 4, 3);
    put64(&mut b, shoff + 128 + 24, shstr_off as u64);
    put64(&mut b, shoff + 128 + 32, shstr.len() as u64);
    b
}

// ---- the shim: what the command itself runs -------------------------------------------------

#[test]
fn env_dash_i_keeps_the_shim() {
    let shim = real_shim();
    let s = shim.to_str().unwrap();
    let o = run(
        &shim,
        &[
            "env",
            "-i",
            "sh",
            "-c",
            "echo \"LD_PRELOAD=$LD_PRELOAD\"; echo \"PROXIFY_PROXY=$PROXIFY_PROXY\"",
        ],
        &[],
    );
    assert_eq!(
        stdout(&o),
        format!("LD_PRELOAD={s}\nPROXIFY_PROXY={PROXY}\n"),
        "{}",
        stderr(&o)
    );
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // A program's own LD_PRELOAD without the shim: the shim goes first, the rest stays.
    let other = empty_so();
    let o = run(
        &shim,
        &[
            "env",
            "-i",
            &format!("LD_PRELOAD={}", other.display()),
            "A=b",
            "sh",
            "-c",
            "echo \"$LD_PRELOAD $A\"",
        ],
        &[],
    );
    assert_eq!(
        stdout(&o),
        format!("{s}:{} b\n", other.display()),
        "{}",
        stderr(&o)
    );
    // execve with an explicit empty environment, from Python.
    let o = run(
        &shim,
        &[
            "python3",
            "-c",
            "import os; os.execve('/bin/sh', ['sh', '-c', 'echo \"$LD_PRELOAD\"'], {})",
        ],
        &[],
    );
    assert_eq!(stdout(&o), format!("{s}\n"), "{}", stderr(&o));
    // A program that takes LD_PRELOAD out of its own environment, then runs a shell with it.
    let o = run(
        &shim,
        &[
            "python3",
            "-c",
            "import os, sys; del os.environ['LD_PRELOAD']; del os.environ['PROXIFY_PROXY']; \
             sys.stdout.flush(); os.execv('/bin/sh', ['sh', '-c', 'echo \"$LD_PRELOAD $PROXIFY_PROXY\"'])",
        ],
        &[],
    );
    assert_eq!(stdout(&o), format!("{s} {PROXY}\n"), "{}", stderr(&o));
}

#[test]
fn a_proxied_shell_cannot_run_a_static_program() {
    let shim = real_shim();
    let st = static_prog();
    let st_s = st.to_str().unwrap();
    let script = format!("{st_s}; echo \"rc=$?\"");
    let o = run(&shim, &["sh", "-c", &script], &[]);
    let err = stderr(&o);
    assert_eq!(stdout(&o), "rc=126\n", "{err}");
    assert!(!stdout(&o).contains(STATIC_SAYS));
    assert!(
        err.contains(&format!("{st_s}: Operation not permitted")),
        "{err}"
    );
    let warn = format!(
        "proxify: refusing to run {st_s}: it is statically linked (no dynamic loader loads the \
         shim) \u{2014} its connections would bypass the proxy (run the whole command with \
         proxify run --mode supervise to proxify it through the seccomp supervisor, or use \
         proxify run --allow-unproxied to run it anyway: its connections and name look-ups then \
         go directly, not through the proxy)\n"
    );
    assert!(err.contains(&warn), "{err}");
    assert_eq!(err.matches("proxify: ").count(), 1, "{err}");

    // Through PATH (the shell tries each directory): still one warning.
    let path = path_with_static();
    let o = run(
        &shim,
        &["sh", "-c", "pxstatic; echo \"rc=$?\""],
        &[("PATH", &path)],
    );
    assert_eq!(stdout(&o), "rc=126\n", "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("proxify: refusing").count(),
        1,
        "{}",
        stderr(&o)
    );

    // Quiet: refused all the same, without the line.
    let o = run(&shim, &["sh", "-c", &script], &[("PROXIFY_QUIET", "1")]);
    assert_eq!(stdout(&o), "rc=126\n");
    assert!(!stderr(&o).contains("proxify: "), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );

    // Allowed by the flag or the variable: it runs.
    let o = run_allowed(&shim, &["sh", "-c", &script], &[]);
    assert_eq!(
        stdout(&o),
        format!("{STATIC_SAYS}\nrc=0\n"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &shim,
        &["sh", "-c", &script],
        &[("PROXIFY_ALLOW_UNPROXIED", "1")],
    );
    assert_eq!(
        stdout(&o),
        format!("{STATIC_SAYS}\nrc=0\n"),
        "{}",
        stderr(&o)
    );
    // The override does not come from the command changing its own environment later.
    let o = run(
        &shim,
        &["sh", "-c", &format!("PROXIFY_ALLOW_UNPROXIED=1 {script}")],
        &[],
    );
    assert_eq!(stdout(&o), "rc=126\n", "{}", stderr(&o));
}

#[test]
fn a_proxied_shell_cannot_run_setuid_go_or_scripts_of_them() {
    let shim = real_shim();
    // Setuid to another user: exec would change root's effective uid.
    let suid = copy_exec("/bin/true", "suid-true-2", 0o755);
    {
        let _held = writing();
        let o = Command::new("chown")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(&suid)
            .output()
            .unwrap();
        assert!(o.status.success(), "chown (run as root): {o:?}");
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let go = write_exec("fake-go-2", &fake_go_elf(), 0o755);
    let st = static_prog();
    let script = write_exec(
        "static-script-2",
        format!("#!{}\n", st.display()).as_bytes(),
        0o755,
    );
    for (target, why) in [
        (&suid, "it is setuid"),
        (&go, "it is a Go program"),
        (&script, "its interpreter"),
    ] {
        let t = target.to_str().unwrap();
        let o = run(&shim, &["sh", "-c", &format!("{t}; echo \"rc=$?\"")], &[]);
        let err = stderr(&o);
        assert_eq!(stdout(&o), "rc=126\n", "{t}: {err}");
        assert!(
            err.contains(&format!("{t}: Operation not permitted")),
            "{err}"
        );
        assert!(
            err.contains(&format!("proxify: refusing to run {t}: {why}")),
            "{err}"
        );
    }
    // Ordinary programs are untouched.
    let o = run(&shim, &["sh", "-c", "/bin/echo ok; echo \"rc=$?\""], &[]);
    assert_eq!(stdout(&o), "ok\nrc=0\n", "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

const EXEC_HELPER: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* exec-helper MODE TARGET: runs TARGET with the exec call MODE; prints "MODE: <error>" when
 * the call fails (exit 3), or the spawned child's output. */
int main(int argc, char **argv)
{
    if (argc < 3)
        return 9;
    const char *mode = argv[1];
    char *target = argv[2];
    char *args[] = { target, "a", "b", NULL };
    char *empty[] = { NULL };
    char *one[] = { "FOO=bar", NULL };
    int r = -1, err = 0;
    pid_t pid;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "execve")) r = execve(target, args, environ);
    else if (!strcmp(mode, "execve-empty")) r = execve(target, args, empty);
    else if (!strcmp(mode, "execv")) r = execv(target, args);
    else if (!strcmp(mode, "execvp")) r = execvp(target, args);
    else if (!strcmp(mode, "execvpe")) r = execvpe(target, args, one);
    else if (!strcmp(mode, "execl"))
        r = execl(target, target, "a", "b", "c", "d", "e", "f", "g", (char *)NULL);
    else if (!strcmp(mode, "execle"))
        r = execle(target, target, "a", "b", "c", "d", "e", "f", "g", (char *)NULL, one);
    else if (!strcmp(mode, "execlp")) r = execlp(target, target, "a", "b", (char *)NULL);
    else if (!strcmp(mode, "fexecve")) {
        int fd = open(target, O_RDONLY);
        r = fexecve(fd, args, environ);
    } else if (!strcmp(mode, "execveat")) {
        int dir = open("/", O_RDONLY | O_DIRECTORY);
        r = execveat(dir, target + 1, args, environ, 0);
    } else if (!strcmp(mode, "execveat-fd")) {
        int fd = open(target, O_RDONLY);
        r = execveat(fd, "", args, one, AT_EMPTY_PATH);
    } else if (!strcmp(mode, "posix_spawn") || !strcmp(mode, "posix_spawnp")) {
        int (*f)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                 const posix_spawnattr_t *, char *const[], char *const[]) =
            mode[11] == 'p' ? posix_spawnp : posix_spawn;
        err = f(&pid, target, NULL, NULL, args, empty);
        if (err) {
            printf("%s: %s\n", mode, strerror(err));
            return 3;
        }
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 8;
    } else if (!strcmp(mode, "system") || !strcmp(mode, "popen")) {
        unsetenv("LD_PRELOAD");
        unsetenv("PROXIFY_PROXY");
        if (mode[0] == 's')
            return system(target);
        FILE *p = popen(target, "r");
        char buf[4096];
        size_t n = fread(buf, 1, sizeof buf, p);
        fwrite(buf, 1, n, stdout);
        return pclose(p) ? 4 : 0;
    }
    printf("%s: %s\n", mode, strerror(errno));
    return 3;
}
"#;

#[test]
fn every_exec_call_is_checked() {
    let shim = real_shim();
    let helper = cc("exec-helper", EXEC_HELPER, &[]);
    let h = helper.to_str().unwrap();
    let path = path_with_static();
    let env = [("PATH", path.as_str())];
    let st = static_prog();
    let st_s = st.to_str().unwrap();
    let modes = [
        ("execve", st_s),
        ("execve-empty", st_s),
        ("execv", st_s),
        ("execvp", "pxstatic"),
        ("execvpe", "pxstatic"),
        ("execl", st_s),
        ("execle", st_s),
        ("execlp", "pxstatic"),
        ("fexecve", st_s),
        ("execveat", st_s),
        ("execveat-fd", st_s),
        ("posix_spawn", st_s),
        ("posix_spawnp", "pxstatic"),
    ];
    for (mode, target) in modes {
        let o = run(&shim, &[h, mode, target], &env);
        let err = stderr(&o);
        assert_eq!(
            stdout(&o),
            format!("{mode}: Operation not permitted\n"),
            "{mode}: {err}"
        );
        assert_eq!(o.status.code(), Some(3), "{mode}: {err}");
        assert!(err.contains("proxify: refusing to run "), "{mode}: {err}");
        assert!(err.contains("it is statically linked"), "{mode}: {err}");
        // Allowed: the static program runs.
        let o = run_allowed(&shim, &[h, mode, target], &env);
        assert_eq!(
            stdout(&o),
            format!("{STATIC_SAYS}\n"),
            "{mode}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn every_exec_call_keeps_the_shim() {
    let shim = real_shim();
    let s = shim.to_str().unwrap();
    let helper = cc("exec-helper", EXEC_HELPER, &[]);
    let h = helper.to_str().unwrap();
    // A dynamic program that prints its arguments and the variables that matter.
    let show = write_exec(
        "show-env",
        b"#!/bin/sh\necho \"$# $*|$LD_PRELOAD|$PROXIFY_PROXY|$FOO\"\n",
        0o755,
    );
    let show_s = show.to_str().unwrap();
    let dir = show.parent().unwrap().to_str().unwrap().to_string();
    let path = format!("{dir}:/usr/bin:/bin");
    let env = [("PATH", path.as_str())];
    for (mode, target, want) in [
        ("execve", show_s, "2 a b||"),
        ("execve-empty", show_s, "2 a b||"),
        ("execv", show_s, "2 a b||"),
        ("execvp", "show-env", "2 a b||"),
        ("execvpe", "show-env", "2 a b||bar"),
        ("execl", show_s, "7 a b c d e f g||"),
        ("execle", show_s, "7 a b c d e f g||bar"),
        ("execlp", "show-env", "2 a b||"),
        ("execveat", show_s, "2 a b||"),
        ("posix_spawn", show_s, "2 a b||"),
        ("posix_spawnp", "show-env", "2 a b||"),
    ] {
        let o = run(&shim, &[h, mode, target], &env);
        let (head, foo) = want.split_once("||").unwrap();
        assert_eq!(
            stdout(&o),
            format!("{head}|{s}|{PROXY}|{foo}\n"),
            "{mode}: {}",
            stderr(&o)
        );
        assert!(o.stderr.is_empty(), "{mode}: {}", stderr(&o));
    }
    // system() and popen() after the program removed LD_PRELOAD from its environment.
    for mode in ["system", "popen"] {
        let o = run(
            &shim,
            &[h, mode, "echo \"$LD_PRELOAD|$PROXIFY_PROXY\""],
            &[],
        );
        assert_eq!(
            stdout(&o),
            format!("{s}|{PROXY}\n"),
            "{mode}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn posix_spawn_is_judged_where_the_child_execs() {
    // Issue 14 item 3: after a chdir/fchdir file action the child runs ./pxstatic of that
    // directory; the check looked for it in the caller's.
    let shim = real_shim();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/integration/csrc/exec_spawn.c"
    ))
    .unwrap();
    let helper = cc("exec-spawn", &src, &[]);
    let h = helper.to_str().unwrap();
    let dir = static_dir();
    let d = dir.to_str().unwrap();
    for (mode, prog) in [
        ("chdir", "./pxstatic"),
        ("fchdir", "./pxstatic"),
        ("open-fchdir", "./pxstatic"),
        ("spawnp-chdir", "pxstatic"),
    ] {
        let o = run(&shim, &[h, mode, d, prog], &[]);
        let err = stderr(&o);
        assert_eq!(
            stdout(&o),
            "spawn: Operation not permitted\n",
            "{mode}: {err}"
        );
        assert!(
            err.contains("proxify: refusing to run ") && err.contains("statically linked"),
            "{mode}: {err}"
        );
    }
    // A dynamic program there runs, though a static one of that name is here.
    let dyn_dir = tmp_dir().join("dyn-dir");
    {
        let _held = writing();
        std::fs::create_dir_all(&dyn_dir).unwrap();
        std::fs::copy("/bin/echo", dyn_dir.join("pxstatic")).unwrap();
    }
    let o = run(
        &shim,
        &[
            "sh",
            "-c",
            &format!(
                "cd {d} && exec {h} chdir {} ./pxstatic dynamic-ran",
                dyn_dir.display()
            ),
        ],
        &[],
    );
    assert_eq!(stdout(&o), "dynamic-ran\n", "{}", stderr(&o));
}

#[test]
fn the_loader_and_ldd_through_the_shim() {
    let shim = real_shim();
    // ldd runs the loader with --verify, then to list: both through the shim's exec hooks.
    let o = run(&shim, &["ldd", "/bin/true"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("libc.so.6") && out.contains("libproxify.so"),
        "{out}"
    );
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // The loader running a static program, from a proxied shell.
    let ld = system_loader();
    let st = static_prog();
    let st_s = st.to_str().unwrap();
    let o = run(
        &shim,
        &["sh", "-c", &format!("{ld} {st_s}; echo \"rc=$?\"")],
        &[],
    );
    assert_eq!(stdout(&o), "rc=126\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the program the dynamic loader runs, {st_s}, is statically linked"
        )),
        "{}",
        stderr(&o)
    );
    let o = run(
        &shim,
        &["sh", "-c", &format!("{ld} /bin/echo via-loader")],
        &[],
    );
    assert_eq!(stdout(&o), "via-loader\n", "{}", stderr(&o));
    // Allowed: it runs, and the shim says so in one line for each start (none with -q).
    let o = run_allowed(&shim, &["sh", "-c", &format!("{st_s}; true")], &[]);
    assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    assert_allowed_line(&o, st_s, "it is statically linked");
    let o = run_allowed(&shim, &["sh", "-c", &format!("{st_s}; {st_s}")], &[]);
    assert_eq!(
        stderr(&o).matches("without the proxy").count(),
        2,
        "{}",
        stderr(&o)
    );
    let o = proxify(
        &shim,
        &[
            "run",
            "-x",
            PROXY,
            "-q",
            "--allow-unproxied",
            "--",
            "sh",
            "-c",
            st_s,
        ],
        &[],
    );
    assert_eq!(stdout(&o), format!("{STATIC_SAYS}\n"), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}
