//! `proxify check` against real proxies on loopback: microsocks (SOCKS5 CONNECT only; hangs on a
//! pipelined handshake) and Dante (CONNECT, BIND, UDP ASSOCIATE; takes a pipelined handshake),
//! with an echo server of our own as the target. `scripts/setup.sh` installs the servers; a
//! missing one is a failure that says so.
//!
//! Every server listens on 127.0.0.1 at a port the kernel picked, and is stopped by its PID
//! (SIGTERM, then SIGKILL) when its guard is dropped. Every `proxify` run is bounded in time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_proxify");
const SETUP: &str = "run scripts/setup.sh";
/// The system user for Dante's `socksmethod: username` (created if missing).
const DANTE_USER: &str = "proxifycheck";
const MS_USER: &str = "checkuser";
const MS_PASS: &str = "Secret-Pass-7531";

/// A program the tests need: found in PATH or the sbin directories, else a failure.
fn need(program: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let p = d.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("{program} is not installed (Debian package {package}): {SETUP}");
}

fn tmp_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("proxify-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server we started; stopped by its PID when dropped.
struct Server {
    child: Child,
    name: String,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own child, not yet reaped (we wait below).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} (pid {pid}) ignored SIGTERM: killing it", self.name);
        // Child::kill sends SIGKILL to the same PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `argv` (with `{port}` replaced by a fresh port) until it listens on 127.0.0.1;
/// a few attempts in case another process took the port meanwhile.
fn start(name: &str, argv: &[String], conf: Option<&dyn Fn(u16) -> String>) -> Server {
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_port();
        let log = tmp_dir().join(format!("{name}-{port}.log"));
        let args: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &tmp_dir().display().to_string())
            })
            .collect();
        if let Some(conf) = conf {
            let path = tmp_dir().join(format!("{name}-{port}.conf"));
            std::fs::write(&path, conf(port)).unwrap();
        }
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = Server {
            child,
            name: name.to_string(),
            port,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                last = format!(
                    "{name} exited ({status}) on attempt {}: {}",
                    attempt + 1,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                break;
            }
            if Instant::now() > end {
                last = format!("{name} did not listen on 127.0.0.1:{port} within 10 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(server);
    }
    panic!("{last}");
}

fn microsocks(auth: bool) -> Server {
    let bin = need("microsocks", "microsocks").display().to_string();
    let mut argv = vec![
        bin,
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        "{port}".into(),
    ];
    if auth {
        for a in ["-u", MS_USER, "-P", MS_PASS] {
            argv.push(a.into());
        }
    }
    start("microsocks", &argv, None)
}

fn dante_conf(port: u16, method: &str) -> String {
    format!(
        "logoutput: {dir}/dante-{port}.log\n\
         internal: 127.0.0.1 port = {port}\n\
         external: 127.0.0.1\n\
         clientmethod: none\n\
         socksmethod: {method}\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  log: error\n}}\n\
         socks pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n\
         \x20 command: connect bind udpassociate bindreply udpreply\n  log: error\n}}\n",
        dir = tmp_dir().display()
    )
}

fn dante(method: &'static str) -> Server {
    let bin = need("danted", "dante-server").display().to_string();
    // Foreground (no -D): the PID we hold is the server's.
    let argv = vec![
        bin,
        "-f".into(),
        "{dir}/dante-{port}.conf".into(),
        "-p".into(),
        "{dir}/dante-{port}.pid".into(),
    ];
    start("dante", &argv, Some(&move |port| dante_conf(port, method)))
}

/// The password of [`DANTE_USER`], set once per test process.
fn dante_user() -> &'static str {
    static PASS: OnceLock<String> = OnceLock::new();
    PASS.get_or_init(|| {
        let useradd = need("useradd", "passwd");
        let chpasswd = need("chpasswd", "passwd");
        let known = Command::new(need("getent", "libc-bin"))
            .args(["passwd", DANTE_USER])
            .output()
            .unwrap();
        if !known.status.success() {
            let st = Command::new(useradd)
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    DANTE_USER,
                ])
                .status()
                .unwrap();
            assert!(
                st.success(),
                "useradd {DANTE_USER} failed (tests run as root)"
            );
        }
        let pass = format!("Dante-{}-{}", std::process::id(), free_port());
        let mut c = Command::new(chpasswd)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{DANTE_USER}:{pass}\n").as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "chpasswd failed");
        pass
    })
}

/// An echo server on 127.0.0.1 (lives as long as the test process).
fn echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> u16 {
    free_port()
}

/// Runs proxify with a clean environment (no PROXIFY_* variables, no config file); killed by
/// its PID if it runs for more than 30 s. Returns the output and the time it took.
fn proxify(args: &[&str], lang: &str) -> (Output, Duration) {
    let home = tmp_dir().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let t = Instant::now();
    let child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("LANG", lang)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(30)).is_err() {
            // Not reaped yet (the main thread signals before waiting): still our child.
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    // Both pipes are read to their end, then the watchdog is told, then the child reaped.
    let mut child = child;
    let mut err_pipe = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err_pipe.read_to_end(&mut e);
        e
    });
    let mut stdout = Vec::new();
    let _ = child.stdout.take().unwrap().read_to_end(&mut stdout);
    let stderr = err_reader.join().unwrap();
    let _ = done.send(());
    let status = child.wait().unwrap();
    let took = t.elapsed();
    assert!(
        !watchdog.join().unwrap(),
        "proxify {args:?} did not finish within 30 s"
    );
    (
        Output {
            status,
            stdout,
            stderr,
        },
        took,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `proxify check --json ...` parsed by python3's json module into flat keys:
/// `ok`, `exit`, `verdict`, `supports.udp`, `STEP.HOP.FIELD` (e.g. `auth.1.chosen`); values as
/// JSON text.
fn check_json(args: &[&str]) -> (HashMap<String, String>, Output, Duration) {
    let python = need("python3", "python3");
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let (out, took) = proxify(&all, "C.UTF-8");
    assert!(
        out.stdout.ends_with(b"}\n") && out.stdout.iter().filter(|&&b| b == b'\n').count() == 1,
        "not one JSON line: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let script = r#"
import json, sys
d = json.load(sys.stdin)
def out(k, v): print(k + "\t" + json.dumps(v))
for k in ("ok", "exit", "verdict", "target", "required", "notes"): out(k, d[k])
for k, v in d["supports"].items(): out("supports." + k, v)
out("chain.remote_dns", d["chain"]["remote_dns"])
out("chain.hops", [h["url"] for h in d["chain"]["hops"]])
for s in d["steps"]:
    hop = "null" if s["hop"] is None else str(s["hop"])
    for k, v in s.items(): out("%s.%s.%s" % (s["step"], hop, k), v)
"#;
    let mut py = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "invalid JSON: {}\n{}",
        text(&out.stdout),
        text(&parsed.stderr)
    );
    let map = text(&parsed.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (map, out, took)
}

/// The value at `key` (a JSON string unquoted); panics with the whole map if missing.
fn get(m: &HashMap<String, String>, key: &str) -> String {
    let v = m
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {m:#?}"))
        .clone();
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(s) => s.to_string(),
        None => v,
    }
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn dante_supports_everything() {
    let d = dante("none");
    let e = echo();
    let proxy = format!("socks5://127.0.0.1:{}", d.port);
    let target = format!("127.0.0.1:{e}");
    let (m, out, _) = check_json(&["-x", &proxy, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "ok"), "true");
    assert_eq!(get(&m, "reach.1.status"), "ok");
    assert_eq!(get(&m, "auth.1.status"), "ok");
    assert_eq!(get(&m, "auth.1.offered"), "[\"none\"]");
    assert_eq!(get(&m, "auth.1.chosen"), "none");
    assert_eq!(get(&m, "connect.1.status"), "ok");
    assert_eq!(get(&m, "supports.udp"), "yes");
    assert_eq!(get(&m, "supports.bind"), "yes");
    assert_eq!(get(&m, "supports.pipeline"), "yes");
    assert!(get(&m, "udp.1.bound").starts_with("127.0.0.1:"));
    assert!(get(&m, "bind.1.bound").starts_with("127.0.0.1:"));
    assert_eq!(get(&m, "pipeline.1.target"), target);
    // Every step that ran was timed.
    for step in [
        "reach.1",
        "auth.1",
        "connect.1",
        "udp.1",
        "bind.1",
        "pipeline.1",
    ] {
        let ms: f64 = get(&m, &format!("{step}.ms")).parse().unwrap();
        assert!((0.0..10_000.0).contains(&ms), "{step}: {ms}");
    }

    // Everything required works.
    let (out, _) = proxify(
        &[
            "check",
            "--require",
            "udp,bind",
            "--require",
            "pipeline",
            "-x",
            &proxy,
            &target,
        ],
        "C.UTF-8",
    );
    assert_exit(&out, 0);
    let human = text(&out.stdout);
    for want in [
        "\u{2713} hop 1 reachable: TCP connection to 127.0.0.1:",
        "\u{2713} hop 1 authentication: offered none, the proxy chose none",
        &format!("\u{2713} CONNECT {target} through the chain: hop 1 connected"),
        "\u{2713} UDP ASSOCIATE at hop 1: supported",
        "\u{2713} BIND at hop 1: supported",
        "\u{2713} pipelining at hop 1: yes",
        "OK: the proxy is reachable and accepts us; CONNECT to",
        "UDP ASSOCIATE: yes, BIND: yes, pipelining: yes",
    ] {
        assert!(human.contains(want), "{want:?} not in:\n{human}");
    }
    // Each step line carries its time.
    for line in human.lines().filter(|l| l.starts_with('\u{2713}')) {
        assert!(line.ends_with(" ms]"), "{line}");
    }
    println!("{human}");

    // Without a target: the pipelined CONNECT goes to the proxy's own address, and any reply
    // counts.
    let (m, out, _) = check_json(&["-x", &proxy]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "connect.null.status"), "n/a");
    assert_eq!(get(&m, "supports.pipeline"), "yes");
    assert_eq!(
        get(&m, "pipeline.1.target"),
        format!("127.0.0.1:{}", d.port)
    );
    assert_eq!(get(&m, "supports.udp"), "yes");
}

#[test]
fn microsocks_connect_only_and_no_hang_on_pipelining() {
    let ms = microsocks(false);
    let e = echo();
    let proxy = format!("socks5h://127.0.0.1:{}", ms.port);
    let target = format!("127.0.0.1:{e}");
    let (m, out, took) = check_json(&["--timeout", "10", "-x", &proxy, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "connect.1.status"), "ok");
    assert_eq!(get(&m, "supports.udp"), "no");
    assert_eq!(get(&m, "udp.1.reply"), "7");
    assert!(get(&m, "udp.1.detail").contains("not supported (SOCKS5 reply 7"));
    assert_eq!(get(&m, "supports.bind"), "no");
    assert_eq!(get(&m, "bind.1.reply"), "7");
    assert_eq!(get(&m, "supports.pipeline"), "no");
    let detail = get(&m, "pipeline.1.detail");
    assert!(
        detail.contains("answered the greeting, then no reply"),
        "{detail}"
    );
    // microsocks waits forever on a pipelined handshake: the probe gives up after its short
    // wait (1 s, or 4 times the normal handshake), well before --timeout (10 s).
    let wait: u64 = get(&m, "pipeline.1.wait_ms").parse().unwrap();
    assert!((1000..=4000).contains(&wait), "{wait}");
    let ms_pipe: f64 = get(&m, "pipeline.1.ms").parse().unwrap();
    assert!(
        ms_pipe >= 990.0 && ms_pipe < wait as f64 + 1000.0,
        "{ms_pipe}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // Informational unless required.
    for req in ["udp", "bind", "pipeline"] {
        let (out, took) = proxify(
            &[
                "check",
                "--timeout",
                "10",
                "--require",
                req,
                "-x",
                &proxy,
                &target,
            ],
            "C.UTF-8",
        );
        assert_exit(&out, 1);
        assert!(took < Duration::from_secs(6), "took {took:?}");
        let last = text(&out.stdout).lines().last().unwrap().to_string();
        assert!(last.starts_with("FAIL: "), "{last}");
    }
    // A hop configured for pipelining that cannot take it fails the check.
    let piped = format!("{proxy}?pipeline=1");
    let (m, out, _) = check_json(&["-x", &piped, &target]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "pipeline.1.required"), "true");
    assert_eq!(get(&m, "pipeline.1.configured"), "true");
    assert!(get(&m, "verdict").contains("remove ?pipeline=1"));
}

#[test]
fn password_auth_with_microsocks() {
    let ms = microsocks(true);
    let e = echo();
    let target = format!("127.0.0.1:{e}");
    let good = format!("socks5://{MS_USER}:{MS_PASS}@127.0.0.1:{}", ms.port);
    let (m, out, _) = check_json(&["-x", &good, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "auth.1.offered"), "[\"username/password\"]");
    assert_eq!(get(&m, "auth.1.chosen"), "username/password");
    assert_eq!(get(&m, "auth.1.user"), MS_USER);
    assert_eq!(get(&m, "connect.1.status"), "ok");
    assert!(get(&m, "chain.hops").contains(&format!("{MS_USER}:***@")));

    // Wrong password: auth fails, exit 1, nothing after it tried.
    let wrong_pass = "Wrong-Pass-2468";
    let bad = format!("socks5://{MS_USER}:{wrong_pass}@127.0.0.1:{}", ms.port);
    let (m, out, _) = check_json(&["-x", &bad, &target]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "auth.1.status"), "fail");
    assert!(
        get(&m, "auth.1.detail").contains("rejected the password"),
        "{m:#?}"
    );
    assert_eq!(get(&m, "connect.1.status"), "not tried");
    assert!(get(&m, "verdict").starts_with("FAIL: hop 1 authentication"));
    let (human, _) = proxify(&["check", "-x", &bad, &target], "C.UTF-8");
    assert_exit(&human, 1);
    let h = text(&human.stdout);
    assert!(h.contains("\u{2717} hop 1 authentication"), "{h}");
    // Passwords never appear, in either output.
    for o in [&out, &human] {
        for secret in [wrong_pass, MS_PASS] {
            assert!(!text(&o.stdout).contains(secret) && !text(&o.stderr).contains(secret));
        }
    }

    // No credentials: the proxy accepts none of the methods offered.
    let none = format!("socks5://127.0.0.1:{}", ms.port);
    let (m, out, _) = check_json(&["-x", &none, &target]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "auth.1.chosen"), "no acceptable method (0xFF)");
    assert!(get(&m, "auth.1.detail").contains("give user:password in the proxy URL"));
}

#[test]
fn password_auth_with_dante() {
    let pass = dante_user();
    let d = dante("username");
    let e = echo();
    let target = format!("127.0.0.1:{e}");
    let good = format!("socks5://{DANTE_USER}:{pass}@127.0.0.1:{}", d.port);
    let (m, out, _) = check_json(&["-x", &good, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "auth.1.chosen"), "username/password");
    assert_eq!(get(&m, "supports.udp"), "yes");
    assert_eq!(get(&m, "supports.pipeline"), "yes");
    assert!(!text(&out.stdout).contains(pass));
    let bad = format!("socks5://{DANTE_USER}:not-{pass}@127.0.0.1:{}", d.port);
    let (m, out, _) = check_json(&["-x", &bad, &target]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "auth.1.status"), "fail");
    assert!(!text(&out.stdout).contains(pass));
}

#[test]
fn dead_proxy_is_unreachable() {
    let port = dead_port();
    let proxy = format!("socks5h://127.0.0.1:{port}");
    let (m, out, took) = check_json(&["-x", &proxy, "127.0.0.1:9"]);
    assert_exit(&out, 1);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(get(&m, "reach.1.status"), "fail");
    assert!(get(&m, "reach.1.detail").starts_with("unreachable: 127.0.0.1:"));
    assert!(get(&m, "reach.1.detail").ends_with("Connection refused"));
    assert_eq!(get(&m, "auth.1.status"), "not tried");
    assert_eq!(get(&m, "connect.1.status"), "not tried");
    assert_eq!(get(&m, "supports.udp"), "unknown");
    assert_eq!(
        get(&m, "verdict"),
        format!("FAIL: hop 1 reachable: unreachable: 127.0.0.1:{port}: Connection refused")
    );
    // ASCII marks outside a UTF-8 locale.
    let (out, _) = proxify(&["check", "-x", &proxy], "C");
    assert_exit(&out, 1);
    let h = text(&out.stdout);
    assert!(h.is_ascii(), "{h}");
    assert!(h.contains("\nFAIL hop 1 reachable: unreachable"), "{h}");
    assert!(h.contains("\n--   hop 1 authentication: not tried"), "{h}");
    // -q: nothing printed, the exit status tells.
    let (out, _) = proxify(&["check", "-q", "-x", &proxy], "C.UTF-8");
    assert_exit(&out, 1);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn two_hops_microsocks_then_dante() {
    let ms = microsocks(false);
    let d = dante("none");
    let e = echo();
    let first = format!("socks5://127.0.0.1:{}", ms.port);
    let second = format!("socks5h://127.0.0.1:{}", d.port);
    let target = format!("127.0.0.1:{e}");
    let (m, out, took) = check_json(&["--timeout", "10", "-x", &first, "-x", &second, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "reach.1.status"), "ok");
    assert_eq!(get(&m, "reach.2.status"), "ok");
    assert!(get(&m, "reach.2.detail").contains(&format!("127.0.0.1:{}", d.port)));
    assert_eq!(get(&m, "auth.2.status"), "ok");
    assert_eq!(get(&m, "connect.2.status"), "ok");
    assert_eq!(get(&m, "supports.udp"), "n/a");
    assert_eq!(get(&m, "supports.bind"), "n/a");
    assert!(get(&m, "udp.2.detail").starts_with("n/a (chain)"));
    // The first SOCKS5 hop is microsocks: no, and no hang.
    assert_eq!(get(&m, "supports.pipeline"), "no");
    assert_eq!(
        get(&m, "pipeline.1.target"),
        format!("127.0.0.1:{}", d.port)
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // A chain cannot carry UDP: required, it fails.
    let (out, _) = proxify(
        &[
            "check",
            "--require",
            "udp",
            "-x",
            &first,
            "-x",
            &second,
            &target,
        ],
        "C.UTF-8",
    );
    assert_exit(&out, 1);
    // Second hop down: hop 2 unreachable through hop 1.
    let dead = format!("socks5h://127.0.0.1:{}", dead_port());
    let (m, out, _) = check_json(&["-x", &first, "-x", &dead, &target]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "reach.2.status"), "fail");
    assert!(get(&m, "reach.2.detail").contains("hop 1 could not connect to it"));
    assert_eq!(get(&m, "auth.2.status"), "not tried");
}

#[test]
fn connect_refused_by_the_destination_and_names() {
    let d = dante("none");
    let e = echo();
    let proxy = format!("socks5h://127.0.0.1:{}", d.port);
    let closed = format!("127.0.0.1:{}", dead_port());
    let (m, out, _) = check_json(&["-x", &proxy, &closed]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "auth.1.status"), "ok");
    assert_eq!(get(&m, "connect.1.status"), "fail");
    assert_eq!(get(&m, "connect.1.reply"), "5");
    // The features of the proxy are still checked.
    assert_eq!(get(&m, "supports.udp"), "yes");

    // socks5h: the name goes to the proxy; socks5: resolved here.
    let by_name = format!("localhost:{e}");
    let (m, out, _) = check_json(&["-x", &proxy, &by_name]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "chain.remote_dns"), "true");
    assert!(get(&m, "notes").contains("the name is sent to the proxy"));
    assert_eq!(
        get(&m, "connect.1.title"),
        format!("CONNECT {by_name} through the chain")
    );
    let local = format!("socks5://127.0.0.1:{}", d.port);
    let (m, out, _) = check_json(&["-x", &local, &by_name]);
    assert_exit(&out, 0);
    assert!(get(&m, "notes").contains("resolved locally to 127.0.0.1"));
    assert_eq!(
        get(&m, "connect.1.title"),
        format!("CONNECT 127.0.0.1:{e} through the chain")
    );
}

#[test]
fn settings_come_from_the_same_places_as_run() {
    let d = dante("none");
    let proxy = format!("socks5://127.0.0.1:{}", d.port);
    // A TOML file.
    let file = tmp_dir().join(format!("check-{}.toml", d.port));
    std::fs::write(&file, format!("proxy = \"{proxy}\"\ntimeout = 3\n")).unwrap();
    let f = file.display().to_string();
    let (m, out, _) = check_json(&["-f", &f]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "chain.hops"), format!("[\"{proxy}\"]"));
    // A flag wins over the file.
    let dead = format!("socks5://127.0.0.1:{}", dead_port());
    let (m, out, _) = check_json(&["-f", &f, "-x", &dead]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "chain.hops"), format!("[\"{dead}\"]"));
    // Usage and configuration errors exit 2 with one line.
    for bad in [
        &["check"][..],
        &["check", "-x", &proxy, "no-port"],
        &["check", "-x", &proxy, "--require", "telepathy"],
        &["check", "-x", "socks9://h"],
    ] {
        let (out, _) = proxify(bad, "C.UTF-8");
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.starts_with("proxify: ") && err.lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn help_completions_and_man_page() {
    for sub in ["run", "config", "check", "completions", "man"] {
        let (out, _) = proxify(&[sub, "--help"], "C.UTF-8");
        assert_exit(&out, 0);
        assert!(
            text(&out.stdout).contains(&format!("\nExamples:\n  proxify {sub}")),
            "{sub}: {}",
            text(&out.stdout)
        );
    }
    let (out, _) = proxify(&["--help"], "C.UTF-8");
    assert!(text(&out.stdout).contains("Examples:"));

    let bash = need("bash", "bash");
    for shell in ["bash", "zsh", "fish"] {
        let (out, _) = proxify(&["completions", shell], "C.UTF-8");
        assert_exit(&out, 0);
        let script = text(&out.stdout);
        assert!(
            script.contains("check") && script.contains("completions"),
            "{shell}"
        );
        if shell == "bash" {
            // The script parses, and completes the subcommands.
            let path = tmp_dir().join("proxify.bash");
            std::fs::write(&path, &script).unwrap();
            let probe = format!(
                "source {}; COMP_WORDS=(proxify ch); COMP_CWORD=1; COMP_LINE='proxify ch'; \
                 COMP_POINT=10; _proxify proxify ch proxify; echo \"${{COMPREPLY[@]}}\"",
                path.display()
            );
            let o = Command::new(&bash).args(["-c", &probe]).output().unwrap();
            assert!(o.status.success(), "{}", text(&o.stderr));
            assert_eq!(text(&o.stdout).trim(), "check");
        }
    }
    let (out, _) = proxify(&["completions", "tcsh"], "C.UTF-8");
    assert_exit(&out, 2);

    let (out, _) = proxify(&["man"], "C.UTF-8");
    assert_exit(&out, 0);
    let page = text(&out.stdout);
    assert!(page.contains("\n.TH proxify 1 "));
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH \"PROXIFY RUN\"",
        ".SH \"PROXIFY CHECK\"",
        ".SH \"PROXIFY COMPLETIONS\"",
        ".SS EXAMPLES",
        "\\-\\-require",
    ] {
        assert!(page.contains(section), "{section}");
    }
}

#[test]
fn socks4_through_dante() {
    let d = dante("none");
    let e = echo();
    let proxy = format!("socks4://someone@127.0.0.1:{}", d.port);
    let target = format!("127.0.0.1:{e}");
    let (m, out, _) = check_json(&["-x", &proxy, &target]);
    assert_exit(&out, 0);
    assert_eq!(get(&m, "auth.1.status"), "ok");
    assert!(get(&m, "auth.1.detail").contains("SOCKS4 has no authentication exchange"));
    assert_eq!(get(&m, "auth.1.user"), "someone");
    assert_eq!(get(&m, "connect.1.status"), "ok");
    assert_eq!(get(&m, "supports.udp"), "no");
    assert_eq!(get(&m, "supports.bind"), "yes");
    assert_eq!(get(&m, "supports.pipeline"), "n/a");
    // Dante has no SOCKS4a: a name is refused (SOCKS4 reply 91).
    let proxy4a = format!("socks4a://127.0.0.1:{}", d.port);
    let (m, out, _) = check_json(&["-x", &proxy4a, &format!("localhost:{e}")]);
    assert_exit(&out, 1);
    assert_eq!(get(&m, "connect.1.reply"), "91");
}
