//! Runs the built `proxify` binary: user errors, the environment the command gets, exec.
//!
//! Commands that really run get a harmless empty shared object as the shim (built here with
//! `cc`), so these tests check the CLI alone; the shim itself is tested elsewhere.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_proxify");
const SECRET: &str = "Sup3rS3cretPw";

fn tmp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("proxify-cli-tests")
}

/// A temp file path unique to the calling test.
fn tmp_path(name: &str) -> PathBuf {
    let dir = tmp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

/// An empty shared object built with `cc`: loading it changes nothing.
fn empty_so(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let base = BUILT.get_or_init(|| {
        let dir = tmp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("empty-{}.so", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-o"])
            .arg(&out)
            .args(["-x", "c", "/dev/null"])
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run cc ({e}): these tests need a C compiler: apt-get install gcc")
            });
        assert!(
            status.success(),
            "cc -shared failed building {}",
            out.display()
        );
        out
    });
    if name.is_empty() {
        return base.clone();
    }
    let copy = tmp_path(name);
    std::fs::copy(base, &copy).unwrap();
    copy
}

/// An empty directory for `XDG_CONFIG_HOME`.
fn empty_config_home() -> PathBuf {
    let d = tmp_dir().join(format!("empty-config-home-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `proxify ARGS` with a clean proxify environment plus `env`.
fn proxify(args: &[&str], env: &[(&str, &str)]) -> Output {
    proxify_at(Path::new(BIN), args, env)
}

fn proxify_at(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PROXIFY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("LD_PRELOAD");
    // No inherited routing or configuration files: an empty config home.
    for k in ["NO_PROXY", "no_proxy", "PROXYCHAINS_CONF_FILE"] {
        cmd.env_remove(k);
    }
    cmd.env("XDG_CONFIG_HOME", empty_config_home());
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A binary copied by another test (lone_binary) can be briefly "busy" while a process
    // forked by a concurrent test still holds the copy's write fd: retry that, bounded.
    let mut tries = 0;
    loop {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.expect("cannot start proxify"),
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exactly one line "proxify: ..." on stderr containing `want`, nothing on stdout, exit `code`.
#[track_caller]
fn assert_one_line_error(o: &Output, code: i32, want: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "status {:?}, stderr: {err}",
        o.status
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.ends_with('\n'), "{err:?}");
    assert!(err.starts_with("proxify: "), "{err:?}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    assert!(o.stdout.is_empty(), "stdout: {:?}", stdout(o));
    err
}

#[track_caller]
fn assert_no_secret(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    for piece in [SECRET, "Sup3r", "S3cretPw"] {
        assert!(!all.contains(piece), "password shown: {all:?}");
    }
}

#[track_caller]
fn write_file(name: &str, text: &str) -> PathBuf {
    let p = tmp_path(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unknown_scheme() {
    let o = proxify(&["run", "-x", "gopher://proxy.example:8080", "true"], &[]);
    let e = assert_one_line_error(&o, 2, "scheme");
    assert!(e.contains("gopher"), "{e}");
    let o = proxify(&["run", "-x", "https://proxy.example", "true"], &[]);
    assert_one_line_error(&o, 2, "https:// proxies");
}

#[test]
fn bad_port() {
    for url in [
        "socks5h://proxy.example:99999",
        "socks5h://proxy.example:0",
        "socks5h://proxy.example:x",
    ] {
        let o = proxify(&["run", "-x", url, "true"], &[]);
        assert_one_line_error(&o, 2, "port");
    }
}

#[test]
fn bad_percent_encoding() {
    let o = proxify(
        &["run", "-x", "socks5h://us%zzer:pw@proxy.example", "true"],
        &[],
    );
    assert_one_line_error(&o, 2, "percent-encoding");
}

#[test]
fn password_is_never_shown() {
    let with_pw = |rest: &str| format!("socks5h://alice:{SECRET}{rest}");
    let bad_pct = format!("socks5h://alice:{SECRET}%zz@proxy.example");
    let cases: Vec<Vec<String>> = vec![
        vec!["-x".into(), with_pw("@proxy.example:99999")],
        vec!["-x".into(), with_pw("@proxy.example:1/path")],
        vec!["-x".into(), with_pw("@[2001:db8::1")],
        vec!["-x".into(), format!("ftp://alice:{SECRET}@proxy.example")],
        vec!["-x".into(), bad_pct],
        vec![
            "-x".into(),
            with_pw("@proxy.example"),
            "-x".into(),
            with_pw("@proxy2.example:0"),
        ],
        vec![
            "-x".into(),
            format!("http://alice:{SECRET}@proxy.example:x"),
        ],
    ];
    for case in cases {
        let mut args = vec!["run"];
        args.extend(case.iter().map(String::as_str));
        args.push("true");
        let o = proxify(&args, &[]);
        assert_one_line_error(&o, 2, "");
        assert_no_secret(&o);
    }
    // The same through the environment and the config file.
    for value in [
        with_pw("@proxy.example:99999"),
        format!("socks5h://alice:{SECRET}%zz@proxy.example"),
        format!("{},socks5h://bob:x@h:0", with_pw("@proxy.example")),
    ] {
        let o = proxify(&["run", "true"], &[("PROXIFY_PROXY", &value)]);
        assert_one_line_error(&o, 2, "");
        assert_no_secret(&o);
        let f = write_file(
            "secret.toml",
            &format!("proxy = \"{}\"\n", value.replace(',', "\", \"")),
        );
        let o = proxify(&["run", "-f", f.to_str().unwrap(), "true"], &[]);
        assert_one_line_error(&o, 2, "");
        assert_no_secret(&o);
    }
}

#[test]
fn unreadable_config_file() {
    let o = proxify(
        &[
            "run",
            "-f",
            "/nonexistent/proxify.toml",
            "-x",
            "socks5h://h",
            "true",
        ],
        &[],
    );
    assert_one_line_error(
        &o,
        2,
        "cannot read /nonexistent/proxify.toml: No such file or directory",
    );
    let o = proxify(&["run", "-f", "/", "-x", "socks5h://h", "true"], &[]);
    assert_one_line_error(&o, 2, "cannot read /: ");
}

#[test]
fn config_file_errors_name_file_and_line() {
    let f = write_file(
        "unknown-key.toml",
        "proxy = \"socks5h://proxy.example\"\n\nbogus_key = 1\n",
    );
    let name = f.to_str().unwrap();
    let o = proxify(&["run", "-f", name, "true"], &[]);
    let e = assert_one_line_error(&o, 2, &format!("{name}:3: "));
    assert!(e.contains("bogus_key"), "{e}");

    let f = write_file("syntax.toml", "log = \"info\"\nquiet = = true\n");
    let name = f.to_str().unwrap();
    let o = proxify(&["run", "-f", name, "true"], &[]);
    assert_one_line_error(&o, 2, &format!("{name}:2: "));

    let f = write_file(
        "bad-values.toml",
        "proxy = \"socks5h://proxy.example\"\ntimeout = 2\ndirect = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\",\n]\n",
    );
    let name = f.to_str().unwrap();
    let o = proxify(&["run", "-f", name, "true"], &[]);
    assert_one_line_error(&o, 2, &format!("{name}:5: direct: "));

    let f = write_file("bad-url.toml", "\n\nproxy = \"socks9://h\"\n");
    let name = f.to_str().unwrap();
    let o = proxify(&["run", "-f", name, "true"], &[]);
    assert_one_line_error(&o, 2, &format!("{name}:3: proxy: "));

    let f = write_file(
        "bad-type.toml",
        "proxy = \"socks5://h\"\nconnect_timeout = \"5\"\n",
    );
    let name = f.to_str().unwrap();
    let o = proxify(&["run", "-f", name, "true"], &[]);
    assert_one_line_error(&o, 2, &format!("{name}:2: "));
}

#[test]
fn chains_are_passed_to_the_shim() {
    let shim = empty_so("");
    let shim_s = shim.to_str().unwrap();
    let (_, vars) = child_env(
        &[
            "-x",
            "socks5h://a.example",
            "-x",
            "http://u:p%40w@b.example",
        ],
        &[("PROXIFY_SHIM", shim_s)],
    );
    assert_eq!(
        var(&vars, "PROXIFY_PROXY"),
        Some("socks5h://a.example:1080,http://u:p%40w@b.example:8080")
    );
    // A strict default chain needs no PROXIFY_CHAINS line.
    assert_eq!(var(&vars, "PROXIFY_CHAINS"), None);
    let (_, vars) = child_env(
        &[
            "-x",
            "socks5://192.0.2.1",
            "-x",
            "socks5://192.0.2.2",
            "--chain-mode",
            "round-robin",
            "--chain-len",
            "2",
        ],
        &[("PROXIFY_SHIM", shim_s)],
    );
    assert_eq!(var(&vars, "PROXIFY_CHAINS"), Some("default round_robin 2"));
    // The environment and the file make chains too.
    let (_, vars) = child_env(
        &[],
        &[
            ("PROXIFY_SHIM", shim_s),
            ("PROXIFY_PROXY", "socks5h://a.example,socks4://192.0.2.9"),
        ],
    );
    assert_eq!(
        var(&vars, "PROXIFY_PROXY"),
        Some("socks5h://a.example:1080,socks4://192.0.2.9:1080")
    );
    let f = write_file(
        "chain.toml",
        "proxy = [\"socks5h://a.example\", \"socks4://b.example\"]\n",
    );
    let (_, vars) = child_env(&["-f", f.to_str().unwrap()], &[("PROXIFY_SHIM", shim_s)]);
    assert_eq!(
        var(&vars, "PROXIFY_PROXY"),
        Some("socks5h://a.example:1080,socks4://b.example:1080")
    );
    // Impossible chain settings.
    for (args, want) in [
        (
            &["-x", "socks5://h", "--chain-mode", "fast"][..],
            "--chain-mode: ",
        ),
        (
            &["-x", "socks5://h", "--chain-len", "2"],
            "--chain-len counts only",
        ),
        (
            &[
                "-x",
                "socks5://h",
                "--chain-mode",
                "random",
                "--chain-len",
                "2",
            ],
            "chain_len 2 is more than its 1 proxy",
        ),
        (
            &[
                "-x",
                "socks5://h",
                "--chain-mode",
                "random",
                "--chain-len",
                "0",
            ],
            "--chain-len: ",
        ),
        (&["--chain-mode", "dynamic"], "need proxies"),
    ] {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.push("true");
        let o = proxify(&a, &[("PROXIFY_SHIM", shim_s)]);
        assert_one_line_error(&o, 2, want);
    }
}

#[test]
fn no_proxy() {
    let o = proxify(
        &["run", "true"],
        &[("PROXIFY_SHIM", empty_so("").to_str().unwrap())],
    );
    assert_one_line_error(&o, 2, "");
    assert_eq!(
        stderr(&o),
        "proxify: no proxy given: use -x URL, set PROXIFY_PROXY, or give a config file \
         (-f FILE, --proxychains)\n"
    );
    // An empty variable is no proxy either.
    let o = proxify(&["run", "true"], &[("PROXIFY_PROXY", "")]);
    assert_one_line_error(&o, 2, "no proxy given");
}

#[test]
fn bad_flag_values() {
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://h",
            "--direct",
            "10.0.0.0/33",
            "true",
        ],
        &[],
    );
    assert_one_line_error(&o, 2, "--direct: ");
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://h",
            "--connect-timeout",
            "soon",
            "true",
        ],
        &[],
    );
    assert_one_line_error(&o, 2, "--connect-timeout: ");
    let o = proxify(&["run", "-x", "socks5h://h", "--timeout", "0", "true"], &[]);
    assert_one_line_error(&o, 2, "--timeout: ");
    let o = proxify(
        &["run", "-x", "socks5h://h", "true"],
        &[("PROXIFY_TIMEOUT", "-3")],
    );
    assert_one_line_error(&o, 2, "PROXIFY_TIMEOUT: ");
}

#[test]
fn missing_shim() {
    let o = proxify(
        &["run", "-x", "socks5h://proxy.example", "true"],
        &[("PROXIFY_SHIM", "/nonexistent/libproxify.so")],
    );
    assert_one_line_error(
        &o,
        2,
        "PROXIFY_SHIM=/nonexistent/libproxify.so: No such file or directory",
    );
    let o = proxify(
        &["run", "-x", "socks5h://proxy.example", "true"],
        &[("PROXIFY_SHIM", "/")],
    );
    assert_one_line_error(&o, 2, "PROXIFY_SHIM=/: not a file");
}

/// A copy of the binary in a directory of its own, with or without a shim beside it.
fn lone_binary(name: &str, with_shim: bool) -> PathBuf {
    let dir = tmp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("proxify");
    std::fs::copy(BIN, &bin).unwrap();
    if with_shim {
        std::fs::copy(empty_so(""), dir.join("libproxify.so")).unwrap();
    }
    std::fs::canonicalize(bin).unwrap()
}

#[test]
fn shim_is_looked_for_beside_the_executable() {
    let bin = lone_binary("no-shim-dir", false);
    let o = proxify_at(&bin, &["run", "-x", "socks5h://proxy.example", "true"], &[]);
    assert_one_line_error(&o, 2, "");
    assert_eq!(
        stderr(&o),
        format!(
            "proxify: cannot find libproxify.so in {}/../lib/proxify/ or beside it \
             (reinstall with scripts/install.sh, or set PROXIFY_SHIM)\n",
            bin.parent().unwrap().display()
        )
    );

    let bin = lone_binary("shim-dir", true);
    let o = proxify_at(
        &bin,
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "sh",
            "-c",
            "echo $LD_PRELOAD",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want = bin.with_file_name("libproxify.so");
    assert_eq!(stdout(&o), format!("{}\n", want.display()));
}

#[test]
fn the_installed_layout_finds_lib_proxify_first() {
    // PREFIX/bin/proxify and PREFIX/lib/proxify/libproxify.so, reached through a symlink
    // (the real path counts), with a decoy shim beside the link.
    let prefix = tmp_path("installed-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::create_dir_all(prefix.join("lib/proxify")).unwrap();
    std::fs::copy(BIN, prefix.join("bin/proxify")).unwrap();
    std::fs::copy(empty_so(""), prefix.join("lib/proxify/libproxify.so")).unwrap();
    let links = tmp_path("installed-links");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(prefix.join("bin/proxify"), links.join("proxify")).unwrap();
    std::fs::copy(empty_so(""), links.join("libproxify.so")).unwrap();
    let o = proxify_at(
        &links.join("proxify"),
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "sh",
            "-c",
            "echo $LD_PRELOAD",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::canonicalize(prefix.join("lib/proxify/libproxify.so")).unwrap();
    assert_eq!(stdout(&o), format!("{}\n", want.display()));
}

#[test]
fn command_not_found_is_127() {
    let shim = empty_so("");
    let env = [("PROXIFY_SHIM", shim.to_str().unwrap())];
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "no-such-command-4242",
        ],
        &env,
    );
    assert_one_line_error(
        &o,
        127,
        "proxify: cannot run 'no-such-command-4242': No such file or directory",
    );
    let o = proxify(&["run", "-x", "socks5h://proxy.example", "/"], &env);
    assert_one_line_error(&o, 127, "proxify: cannot run '/': Permission denied");
}

#[test]
fn exit_status_is_the_commands() {
    let shim = empty_so("");
    let env = [("PROXIFY_SHIM", shim.to_str().unwrap())];
    for code in [0, 1, 7, 127, 255] {
        let script = format!("exit {code}");
        let o = proxify(
            &["run", "-x", "socks5h://proxy.example", "sh", "-c", &script],
            &env,
        );
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
    }
    // A signal too: the command replaced proxify (exec, no fork).
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        &env,
    );
    assert_eq!(o.status.signal(), Some(15), "{:?}", o.status);
}

#[test]
fn the_command_replaces_proxify() {
    let shim = empty_so("");
    let child = Command::new(BIN)
        .args([
            "run",
            "-x",
            "socks5h://proxy.example",
            "sh",
            "-c",
            "echo $$",
        ])
        .env("PROXIFY_SHIM", &shim)
        .env_remove("PROXIFY_PROXY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), pid.to_string());
}

#[test]
fn arguments_are_passed_untouched() {
    let shim = empty_so("");
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "sh",
            "-c",
            "printf '<%s>' \"$@\"",
            "sh",
            "-x",
            "socks4://other",
            "-v",
            "--",
            "--proxy",
            "",
            "a b",
        ],
        &[("PROXIFY_SHIM", shim.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "<-x><socks4://other><-v><--><--proxy><><a b>");
    // With "--" the command may start with a dash... and "--" itself is not passed.
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://proxy.example",
            "--",
            "sh",
            "-c",
            "echo \"$0 $1\"",
            "-v",
            "x",
        ],
        &[("PROXIFY_SHIM", shim.to_str().unwrap())],
    );
    assert_eq!(stdout(&o), "-v x\n", "{}", stderr(&o));
}

/// Runs  under proxify.
fn child_env(args: &[&str], env: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["sh", "-c", "echo $LD_PRELOAD; env | grep ^PROXIFY_"]);
    let o = proxify(&all, env);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines().map(str::to_string);
    let preload = lines.next().unwrap();
    let mut vars: Vec<String> = lines.collect();
    // The placeholder table's fd is made afresh for each run: check its form, then leave it
    // out of the comparisons.
    let dns: Vec<String> = vars
        .iter()
        .filter(|l| l.starts_with("PROXIFY_DNS_FD="))
        .cloned()
        .collect();
    assert_eq!(dns.len(), 1, "{vars:?}");
    let (fd, token) = dns[0]["PROXIFY_DNS_FD=".len()..].split_once(':').unwrap();
    assert!(fd.parse::<u32>().unwrap() >= 3, "{dns:?}");
    assert!(
        token.len() == 16 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{dns:?}"
    );
    vars.retain(|l| !l.starts_with("PROXIFY_DNS_FD="));
    vars.sort();
    (preload, vars)
}

#[test]
fn the_command_inherits_the_placeholder_table() {
    let shim = empty_so("");
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://192.0.2.1:1080",
            "sh",
            "-c",
            "readlink /proc/self/fd/${PROXIFY_DNS_FD%%:*}; echo ${PROXIFY_DNS_FD#*:}",
        ],
        &[("PROXIFY_SHIM", shim.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut l = out.lines();
    let link = l.next().unwrap_or("");
    let token = l.next().unwrap_or("");
    assert_eq!(
        link,
        format!("/memfd:proxify-dns-{token} (deleted)"),
        "{out}"
    );
}

#[test]
fn the_command_gets_the_shim_and_the_settings() {
    let shim = empty_so("");
    let shim_s = shim.to_str().unwrap();
    let other = empty_so("other.so");
    let other_s = other.to_str().unwrap();

    let (preload, vars) = child_env(
        &[
            "-x",
            "socks5h://al%40ice:p%3Ass@[2001:db8::1]:1081",
            "--direct",
            "10.1.2.3/8",
            "--direct",
            "2001:db8::/32",
            "--connect-timeout",
            "2.5",
            "--timeout",
            "7",
            "-vv",
        ],
        &[
            ("PROXIFY_SHIM", shim_s),
            ("PROXIFY_LOG_FILE", "/tmp/proxify-test.log"),
        ],
    );
    assert_eq!(preload, shim_s);
    let want_proxy = "socks5h://al%40ice:p%3Ass@[2001:db8::1]:1081"
        .parse::<proxify_core::url::ProxyUrl>()
        .unwrap()
        .to_url_string();
    assert_eq!(
        vars,
        [
            "PROXIFY_BIND=auto".to_string(),
            "PROXIFY_CONNECT_TIMEOUT=2.5".to_string(),
            // Where the hop's credentials came from, for a rejected password's line.
            "PROXIFY_CRED_FROM=default\t0\tthe proxy URL given with -x".to_string(),
            "PROXIFY_DIRECT=10.0.0.0/8,2001:db8::/32".to_string(),
            "PROXIFY_LOG=debug".to_string(),
            "PROXIFY_LOG_FILE=/tmp/proxify-test.log".to_string(),
            format!("PROXIFY_PROXY={want_proxy}"),
            format!("PROXIFY_SHIM={shim_s}"),
            "PROXIFY_QUIET=0".to_string(),
            "PROXIFY_TIMEOUT=7".to_string(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    // What the command gets reads back to the same settings.
    let cfg = proxify_core::config::Config::from_env_with(|k| {
        vars.iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
    })
    .unwrap();
    assert_eq!(cfg.proxies[0].user.as_deref(), Some(&b"al@ice"[..]));
    assert_eq!(cfg.proxies[0].pass.as_deref(), Some(&b"p:ss"[..]));
    assert_eq!(cfg.proxies[0].port, 1081);

    // LD_PRELOAD: the shim first, what was there kept, never twice.
    let prev = format!("{other_s}:{shim_s}");
    let (preload, _) = child_env(
        &["-x", "socks4a://proxy.example"],
        &[("PROXIFY_SHIM", shim_s), ("LD_PRELOAD", &prev)],
    );
    assert_eq!(preload, format!("{shim_s}:{other_s}"));
    let (preload, _) = child_env(
        &["-x", "socks4a://proxy.example"],
        &[("PROXIFY_SHIM", shim_s), ("LD_PRELOAD", shim_s)],
    );
    assert_eq!(preload, shim_s);
}

/// The value of `key` among `vars` ("KEY=value" lines).
fn var<'a>(vars: &'a [String], key: &str) -> Option<&'a str> {
    vars.iter().find_map(|l| l.strip_prefix(&format!("{key}=")))
}

#[test]
fn verbosity_and_quiet() {
    let shim = empty_so("");
    let shim_s = shim.to_str().unwrap();
    let x = ["-x", "socks5://proxy.example"];
    let run = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = x.to_vec();
        args.extend_from_slice(flags);
        let mut e = vec![("PROXIFY_SHIM", shim_s)];
        e.extend_from_slice(env);
        child_env(&args, &e).1
    };
    let vars = run(&[], &[]);
    assert_eq!(var(&vars, "PROXIFY_LOG"), None);
    assert_eq!(var(&vars, "PROXIFY_QUIET"), Some("0"));
    assert_eq!(var(&run(&["-v"], &[]), "PROXIFY_LOG"), Some("info"));
    assert_eq!(var(&run(&["-vv"], &[]), "PROXIFY_LOG"), Some("debug"));
    assert_eq!(
        var(&run(&["-v", "-v", "-v"], &[]), "PROXIFY_LOG"),
        Some("trace")
    );
    // Without -v, PROXIFY_LOG from the environment is kept; -v wins over it.
    let env = [("PROXIFY_LOG", "proxify=debug")];
    assert_eq!(var(&run(&[], &env), "PROXIFY_LOG"), Some("proxify=debug"));
    assert_eq!(var(&run(&["-v"], &env), "PROXIFY_LOG"), Some("info"));
    // -q: quiet, and no log at all.
    let vars = run(&["-q"], &env);
    assert_eq!(var(&vars, "PROXIFY_QUIET"), Some("1"));
    assert_eq!(var(&vars, "PROXIFY_LOG"), None);
    // -q and -v together is a usage error.
    let o = proxify(
        &["run", "-q", "-v", "-x", "socks5://h", "true"],
        &[("PROXIFY_SHIM", shim_s)],
    );
    assert_one_line_error(&o, 2, "--quiet");
}

#[test]
fn flags_win_over_environment_over_file() {
    let shim = empty_so("");
    let shim_s = shim.to_str().unwrap();
    let f = write_file(
        "precedence.toml",
        "proxy = \"socks5h://file.example\"\n\
         direct = [\"198.51.100.0/24\"]\n\
         connect_timeout = 3\n\
         timeout = 4.5\n\
         log = \"warn\"\n\
         log_file = \"/tmp/file.log\"\n\
         quiet = true\n",
    );
    let file = ["-f", f.to_str().unwrap()];
    let run = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = file.to_vec();
        args.extend_from_slice(flags);
        let mut e = vec![("PROXIFY_SHIM", shim_s)];
        e.extend_from_slice(env);
        child_env(&args, &e).1
    };

    // The file alone.
    let vars = run(&[], &[]);
    assert_eq!(
        var(&vars, "PROXIFY_PROXY"),
        Some("socks5h://file.example:1080")
    );
    assert_eq!(var(&vars, "PROXIFY_DIRECT"), Some("198.51.100.0/24"));
    assert_eq!(var(&vars, "PROXIFY_CONNECT_TIMEOUT"), Some("3"));
    assert_eq!(var(&vars, "PROXIFY_TIMEOUT"), Some("4.5"));
    assert_eq!(var(&vars, "PROXIFY_LOG"), Some("warn"));
    assert_eq!(var(&vars, "PROXIFY_LOG_FILE"), Some("/tmp/file.log"));
    assert_eq!(var(&vars, "PROXIFY_QUIET"), Some("1"));

    // The environment over the file.
    let env = [
        ("PROXIFY_PROXY", "socks4a://env.example:1"),
        ("PROXIFY_DIRECT", "203.0.113.0/24"),
        ("PROXIFY_CONNECT_TIMEOUT", "1"),
        ("PROXIFY_TIMEOUT", "2"),
        ("PROXIFY_LOG", "info"),
        ("PROXIFY_LOG_FILE", "/tmp/env.log"),
        ("PROXIFY_QUIET", "0"),
    ];
    let vars = run(&[], &env);
    assert_eq!(var(&vars, "PROXIFY_PROXY"), Some("socks4a://env.example:1"));
    assert_eq!(var(&vars, "PROXIFY_DIRECT"), Some("203.0.113.0/24"));
    assert_eq!(var(&vars, "PROXIFY_CONNECT_TIMEOUT"), Some("1"));
    assert_eq!(var(&vars, "PROXIFY_TIMEOUT"), Some("2"));
    assert_eq!(var(&vars, "PROXIFY_LOG"), Some("info"));
    assert_eq!(var(&vars, "PROXIFY_LOG_FILE"), Some("/tmp/env.log"));
    assert_eq!(var(&vars, "PROXIFY_QUIET"), Some("0"));

    // The flags over both; a broken variable that a flag overrides does not matter.
    let env2 = [("PROXIFY_PROXY", "nonsense"), ("PROXIFY_TIMEOUT", "never")];
    let vars = run(
        &[
            "-x",
            "socks5://flag.example:2",
            "--direct",
            "192.0.2.0/24",
            "--connect-timeout",
            "0.25",
            "--timeout",
            "9",
            "-vvv",
        ],
        &[env.as_slice(), env2.as_slice()].concat(),
    );
    assert_eq!(var(&vars, "PROXIFY_PROXY"), Some("socks5://flag.example:2"));
    assert_eq!(var(&vars, "PROXIFY_DIRECT"), Some("192.0.2.0/24"));
    assert_eq!(var(&vars, "PROXIFY_CONNECT_TIMEOUT"), Some("0.25"));
    assert_eq!(var(&vars, "PROXIFY_TIMEOUT"), Some("9"));
    assert_eq!(var(&vars, "PROXIFY_LOG"), Some("trace"));
    assert_eq!(var(&vars, "PROXIFY_QUIET"), Some("0"));
}

#[test]
fn sigpipe_is_default_in_the_command() {
    // Rust ignores SIGPIPE in its own programs; the command must not inherit that.
    let shim = empty_so("");
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5://h",
            "sh",
            "-c",
            "grep ^SigIgn: /proc/$$/status",
        ],
        &[("PROXIFY_SHIM", shim.to_str().unwrap())],
    );
    let out = stdout(&o);
    let hex = out.trim().strip_prefix("SigIgn:").expect(&out).trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    assert_eq!(
        mask & (1 << (13 - 1)),
        0,
        "SIGPIPE ignored in the command: {out}"
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for args in [
        &[][..],
        &["run"],
        &["run", "-x"],
        &["run", "--bogus", "true"],
        &["walk"],
    ] {
        let o = proxify(args, &[]);
        assert_one_line_error(&o, 2, "");
    }
}

#[test]
fn help_and_version() {
    let o = proxify(&["run", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for want in [
        "socks5h://",
        "socks4a://",
        "names resolved by the proxy (remote DNS)",
        "names resolved locally",
        "percent-decoded",
        "brackets",
        "1080",
        "PROXIFY_PROXY",
        "Loopback",
        "--direct",
        "--connect-timeout",
        "--timeout",
        "--quiet",
        "--verbose",
        "--config",
        "--proxychains",
        "--rule",
        "--dnat",
        "--chain-mode",
        "http://",
        "[[chain]]",
        "NO_PROXY",
        "proxify config",
        "Example",
    ] {
        assert!(help.contains(want), "run --help lacks {want:?}:\n{help}");
    }
    let o = proxify(&["run", "-h"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("remote DNS"));
    let o = proxify(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("run"));
    let o = proxify(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("proxify {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bind_policy_flag_beats_the_environment_and_is_checked() {
    let o = proxify(
        &[
            "config",
            "-x",
            "socks5h://192.0.2.1:1080",
            "--bind",
            "never",
        ],
        &[("PROXIFY_BIND", "always")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bind:") && l.contains("never") && l.contains("--bind")),
        "{out}"
    );
    let o = proxify(
        &["config", "-x", "socks5h://192.0.2.1:1080"],
        &[("PROXIFY_BIND", "always")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("bind:") && l.contains("always")),
        "{out}"
    );
    let o = proxify(
        &[
            "run",
            "-x",
            "socks5h://192.0.2.1:1080",
            "--bind",
            "sometimes",
            "true",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--bind"), "{err}");
}

/// A static program that exits 0 (built with `cc -static`).
fn static_true() -> PathBuf {
    let src = write_file("true.c", "int main(void) { return 0; }\n");
    let out = tmp_path("static-true");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cannot run cc (apt-get install gcc libc6-dev)");
    assert!(st.success(), "cc -static failed");
    out
}

#[test]
fn mode_from_the_file_and_its_precedence() {
    let shim = empty_so("");
    let shim_s = shim.to_str().unwrap();
    let f = write_file(
        "mode.toml",
        "proxy = \"socks5h://192.0.2.1:1080\"\nmode = \"preload\"\n",
    );
    let fs = f.to_str().unwrap();
    // proxify config shows it, with where it came from.
    let o = proxify(&["config", "-f", fs], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("mode:")).unwrap_or("");
    assert!(line.contains("preload") && line.contains(fs), "{out}");
    assert!(out.lines().any(|l| l.starts_with("enforce:")), "{out}");
    let o = proxify(&["config", "-f", fs], &[("PROXIFY_MODE", "supervise")]);
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("mode:")).unwrap_or("");
    assert!(
        line.contains("supervise") && line.contains("env PROXIFY_MODE"),
        "{out}"
    );
    // The file's preload refuses a static program; --mode beats it (auto supervises it).
    let prog = static_true();
    let p = prog.to_str().unwrap();
    let o = proxify(&["run", "-f", fs, p], &[("PROXIFY_SHIM", shim_s)]);
    assert_one_line_error(&o, 2, "refusing to run");
    let o = proxify(
        &["run", "-f", fs, "--mode", "auto", p],
        &[("PROXIFY_SHIM", shim_s)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A bad value in the file names the file and the line.
    let bad = write_file("badmode.toml", "mode = \"both\"\n");
    let o = proxify(&["config", "-f", bad.to_str().unwrap()], &[]);
    assert_one_line_error(&o, 2, "badmode.toml:1: mode: unknown mode 'both'");
}
