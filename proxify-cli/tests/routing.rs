//! Chains, rules, dnat, NO_PROXY, configuration files (proxify TOML, proxychains.conf, the
//! default locations) and `proxify config`, through the built binary.
//!
//! Commands that really run get a harmless empty shared object as the shim (built with `cc`),
//! and print their environment: these tests check what the shim would be told.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_proxify");
const SECRET: &str = "Sup3rS3cretPw";
const STOCK: &str = "/etc/proxychains4.conf";

fn tmp_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("proxify-routing-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_file(name: &str, text: &str) -> PathBuf {
    let p = tmp_dir().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../proxify-core/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// An empty shared object built with `cc`: loading it changes nothing.
fn empty_so() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = tmp_dir().join("empty.so");
        let status = Command::new("cc")
            .args(["-shared", "-o"])
            .arg(&out)
            .args(["-x", "c", "/dev/null"])
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run cc ({e}): these tests need a C compiler: apt-get install gcc")
            });
        assert!(status.success(), "cc -shared failed");
        out.to_str().unwrap().to_string()
    })
}

fn stock_file() {
    assert!(
        Path::new(STOCK).is_file(),
        "{STOCK} is missing: these tests need Debian's stock file; apt-get install proxychains4"
    );
}

struct Run<'a> {
    args: Vec<&'a str>,
    env: Vec<(&'a str, String)>,
    dir: Option<PathBuf>,
}

fn run<'a>(args: &[&'a str]) -> Run<'a> {
    Run {
        args: args.to_vec(),
        env: Vec::new(),
        dir: None,
    }
}

impl<'a> Run<'a> {
    fn env(mut self, k: &'a str, v: &str) -> Self {
        self.env.push((k, v.to_string()));
        self
    }
    fn dir(mut self, d: &Path) -> Self {
        self.dir = Some(d.to_path_buf());
        self
    }
    /// Runs proxify with a clean environment: no PROXIFY_*, NO_PROXY or proxychains
    /// variables, an empty config home and HOME.
    fn output(&self) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("PROXIFY_")
                || [
                    "NO_PROXY",
                    "no_proxy",
                    "PROXYCHAINS_CONF_FILE",
                    "LD_PRELOAD",
                ]
                .contains(&k.as_str())
            {
                cmd.env_remove(&k);
            }
        }
        let home = tmp_dir().join("home");
        std::fs::create_dir_all(&home).unwrap();
        cmd.env("HOME", &home);
        cmd.env("XDG_CONFIG_HOME", home.join("config"));
        cmd.env("PROXIFY_SHIM", empty_so());
        cmd.current_dir(self.dir.clone().unwrap_or_else(tmp_dir));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("cannot start proxify")
    }
    /// `proxify run ARGS env -0`: the PROXIFY_* variables the command gets.
    fn child_vars(&self) -> BTreeMap<String, String> {
        let mut all = vec!["run"];
        all.extend_from_slice(&self.args);
        all.extend_from_slice(&["env", "-0"]);
        let o = Run {
            args: all,
            env: self.env.clone(),
            dir: self.dir.clone(),
        }
        .output();
        assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
        o.stdout
            .split(|&b| b == 0)
            .filter_map(|e| {
                let e = String::from_utf8_lossy(e);
                let (k, v) = e.split_once('=')?;
                (k.starts_with("PROXIFY_") && k != "PROXIFY_SHIM")
                    .then(|| (k.to_string(), v.to_string()))
            })
            .collect()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, one line "proxify: ..." containing `want`, nothing on stdout.
#[track_caller]
fn one_line_error(o: &Output, want: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("proxify: ") && err.contains(want),
        "{err:?} lacks {want:?}"
    );
    assert!(o.stdout.is_empty());
    err
}

#[track_caller]
fn no_secret(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(!all.contains(SECRET) && !all.contains("S3cret"), "{all}");
}

/// Checks `json` with python3 and returns what `expr` (over `d`) prints.
fn py_json(json: &str, expr: &str) -> String {
    let mut child = Command::new("python3")
        .args([
            "-c",
            &format!("import json,sys\nd=json.load(sys.stdin)\nprint({expr})"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): apt-get install python3"));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "python3 could not read {json}");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn rules_and_dnat_reach_the_shim() {
    let v = run(&[
        "-x",
        "socks5h://h.example",
        "--rule",
        "*.lan direct",
        "--rule",
        "[2001:db8::/32]:22 deny",
        "--dnat",
        "192.0.2.1:80 198.51.100.1:8080",
        "--direct",
        "10.0.0.0/8",
    ])
    .child_vars();
    assert_eq!(
        v["PROXIFY_RULES"],
        "*.lan direct #--rule\n[2001:db8::/32]:22 deny #--rule"
    );
    assert_eq!(v["PROXIFY_DNAT"], "192.0.2.1:80 198.51.100.1:8080");
    assert_eq!(v["PROXIFY_DIRECT"], "10.0.0.0/8");
    // Read back as the shim reads it.
    let cfg = proxify_core::config::Config::from_env_with(|k| v.get(k).cloned()).unwrap();
    assert_eq!(cfg.rules.rules.len(), 2);
    assert_eq!(
        cfg.decide(None, Some("printer.lan"), 631).verdict,
        proxify_core::rules::Verdict::Direct
    );

    // A rule naming a chain nobody defined, and bad values.
    for (args, want) in [
        (
            &["--rule", "*.corp proxy corp"][..],
            "names chain corp, which is not defined",
        ),
        (&["--rule", "*.corp"], "--rule: "),
        (&["--rule", "10.0.0/8 direct"], "--rule: "),
        (&["--rule", "* allow"], "--rule: bad action"),
        (&["--dnat", "192.0.2.1"], "--dnat: "),
    ] {
        let mut a = vec!["run", "-x", "socks5://h"];
        a.extend_from_slice(args);
        a.push("true");
        one_line_error(&run(&a).output(), want);
    }
    // The file defines the chain the flag names.
    let f = write_file(
        "corp.toml",
        "proxy = \"socks5h://h.example\"\n[[chain]]\nname = \"corp\"\nmode = \"dynamic\"\n\
         hops = [\"socks5://192.0.2.7\", \"http://192.0.2.8:3128\"]\n",
    );
    let v = run(&["-f", f.to_str().unwrap(), "--rule", "*.corp proxy corp"]).child_vars();
    assert_eq!(v["PROXIFY_RULES"], "*.corp proxy corp #--rule");
    assert_eq!(
        v["PROXIFY_CHAINS"],
        "corp dynamic 1 socks5://192.0.2.7:1080 http://192.0.2.8:3128"
    );
}

#[test]
fn lists_replace_lower_layers() {
    let f = write_file(
        "layers.toml",
        "proxy = \"socks5h://file.example\"\n\
         dnat = [\"192.0.2.1 192.0.2.2\"]\n\
         [[rule]]\nmatch = \"*.file\"\naction = \"deny\"\n",
    );
    let file = f.to_str().unwrap();
    let v = run(&["-f", file]).child_vars();
    assert_eq!(v["PROXIFY_RULES"], format!("*.file deny #{file}:4"));
    assert_eq!(v["PROXIFY_DNAT"], "192.0.2.1 192.0.2.2");
    let v = run(&["-f", file])
        .env("PROXIFY_RULES", "*.env direct")
        .env("PROXIFY_DNAT", "192.0.2.3 192.0.2.4")
        .child_vars();
    assert_eq!(v["PROXIFY_RULES"], "*.env direct #env%20PROXIFY_RULES");
    assert_eq!(v["PROXIFY_DNAT"], "192.0.2.3 192.0.2.4");
    // Flags win; a broken variable they override does not matter.
    let v = run(&[
        "-f",
        file,
        "--rule",
        "*.flag direct",
        "--dnat",
        "192.0.2.5 192.0.2.6",
    ])
    .env("PROXIFY_RULES", "nonsense")
    .env("PROXIFY_DNAT", "nonsense")
    .child_vars();
    assert_eq!(v["PROXIFY_RULES"], "*.flag direct #--rule");
    assert_eq!(v["PROXIFY_DNAT"], "192.0.2.5 192.0.2.6");
    // Environment chains replace the file's chain of the same name.
    let f = write_file(
        "named.toml",
        "proxy = \"socks5h://file.example\"\n\
         [[chain]]\nname = \"a\"\nhops = [\"socks5://192.0.2.1\"]\n\
         [[chain]]\nname = \"b\"\nhops = [\"socks5://192.0.2.2\"]\n",
    );
    let v = run(&["-f", f.to_str().unwrap()])
        .env(
            "PROXIFY_CHAINS",
            "b random 1 socks4://192.0.2.3 socks4://192.0.2.4",
        )
        .child_vars();
    assert_eq!(
        v["PROXIFY_CHAINS"],
        "a strict 1 socks5://192.0.2.1:1080\nb random 1 socks4://192.0.2.3:1080 socks4://192.0.2.4:1080"
    );
    let o = run(&["run", "-x", "socks5://h", "true"])
        .env("PROXIFY_RULES", "* proxy nowhere")
        .output();
    one_line_error(&o, "nowhere");
    let o = run(&["run", "-x", "socks5://h", "true"])
        .env("PROXIFY_CHAINS", "x strict 1")
        .output();
    one_line_error(&o, "PROXIFY_CHAINS: chain x has no proxies");
}

#[test]
fn no_proxy_is_ignored_by_default() {
    // Set for browsers and curl: it must not widen proxify's direct paths (issue 17 item 4).
    let v = run(&["-x", "socks5h://h"])
        .env("NO_PROXY", ".lan,10.0.0.0/8,*")
        .env("no_proxy", "lower.example")
        .child_vars();
    assert!(!v.contains_key("PROXIFY_RULES"), "{v:?}");
    // Not even a bad entry is looked at, and '*' warns of nothing.
    let o = run(&["run", "-x", "socks5h://h", "true"])
        .env("NO_PROXY", "ok.example,bad..example,*")
        .output();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    let v = run(&["-x", "socks5h://h", "--ignore-no-proxy"])
        .env("NO_PROXY", "upper.example")
        .child_vars();
    assert!(!v.contains_key("PROXIFY_RULES"));
    // A file that says false, and `proxify config` saying why.
    let d = tmp_dir().join("np-false");
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("c.toml");
    std::fs::write(&f, "proxy = \"socks5h://h\"\nno_proxy_env = false\n").unwrap();
    let v = run(&["-f", f.to_str().unwrap()])
        .env("NO_PROXY", "upper.example")
        .child_vars();
    assert!(!v.contains_key("PROXIFY_RULES"));
    let o = run(&["config", "-x", "socks5h://h"])
        .env("NO_PROXY", "upper.example")
        .output();
    assert!(
        stdout(&o).contains("no_proxy_env:        no (NO_PROXY/no_proxy ignored)  (default)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn no_proxy_env_makes_direct_rules_after_the_others() {
    let v = run(&[
        "-x",
        "socks5h://h",
        "--no-proxy-env",
        "--rule",
        "*.evil.lan deny",
    ])
    .env("NO_PROXY", ".lan, 10.0.0.0/8,[2001:db8::1]:22")
    .child_vars();
    assert_eq!(
        v["PROXIFY_RULES"],
        "*.evil.lan deny #--rule\n.lan direct #env%20NO_PROXY\n\
         10.0.0.0/8 direct #env%20NO_PROXY\n[2001:db8::1/128]:22 direct #env%20NO_PROXY"
    );
    // no_proxy first, as curl.
    let v = run(&["-x", "socks5h://h", "--no-proxy-env"])
        .env("NO_PROXY", "upper.example")
        .env("no_proxy", "lower.example")
        .child_vars();
    assert_eq!(v["PROXIFY_RULES"], ".lower.example direct #env%20no_proxy");
    // The file key asks the same.
    let d = tmp_dir().join("np-true");
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("c.toml");
    std::fs::write(&f, "proxy = \"socks5h://h\"\nno_proxy_env = true\n").unwrap();
    let v = run(&["-f", f.to_str().unwrap()])
        .env("NO_PROXY", "upper.example")
        .child_vars();
    assert_eq!(v["PROXIFY_RULES"], ".upper.example direct #env%20NO_PROXY");
    let o = run(&["config", "-f", f.to_str().unwrap()])
        .env("NO_PROXY", "upper.example")
        .output();
    let want = format!(
        "no_proxy_env:        yes (NO_PROXY/no_proxy entries are direct rules)  ({}:2)",
        f.display()
    );
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    // A bad entry is an error that says why the variable was read.
    let o = run(&["run", "-x", "socks5h://h", "--no-proxy-env", "true"])
        .env("NO_PROXY", "ok.example,bad..example")
        .output();
    let e = one_line_error(&o, "NO_PROXY: ");
    assert!(e.contains("--no-proxy-env"), "{e}");
    // '*' turns the proxy off: said once on stderr (not with -q).
    let o = run(&["run", "-x", "socks5h://h", "--no-proxy-env", "true"])
        .env("NO_PROXY", "*")
        .output();
    assert!(o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("proxify: warning: NO_PROXY contains '*'"),
        "{err}"
    );
    let o = run(&["run", "-q", "-x", "socks5h://h", "--no-proxy-env", "true"])
        .env("NO_PROXY", "*")
        .output();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn proxychains_conf_with_f() {
    stock_file();
    let v = run(&["-f", STOCK]).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks4a://127.0.0.1:9050");
    assert_eq!(v["PROXIFY_PROXY_DNS"], "1");
    assert_eq!(v["PROXIFY_REMOTE_DNS_SUBNET"], "224.0.0.0/8");
    assert_eq!(v["PROXIFY_CONNECT_TIMEOUT"], "8");
    assert_eq!(v["PROXIFY_TIMEOUT"], "15");
    assert!(!v.contains_key("PROXIFY_CHAINS"), "strict: {v:?}");

    let full = fixture("variant-full.conf");
    let v = run(&["-f", &full]).child_vars();
    assert_eq!(v["PROXIFY_CHAINS"], "default random 2");
    assert_eq!(v["PROXIFY_QUIET"], "1");
    assert_eq!(v["PROXIFY_REMOTE_DNS_SUBNET"], "10.0.0.0/8");
    assert_eq!(v["PROXIFY_CONNECT_TIMEOUT"], "1.5");
    assert_eq!(v["PROXIFY_TIMEOUT"], "2.5");
    assert!(
        v["PROXIFY_RULES"].starts_with("192.168.1.0/24:80 direct #"),
        "{v:?}"
    );
    assert_eq!(v["PROXIFY_RULES"].lines().count(), 4);
    assert_eq!(
        v["PROXIFY_DNAT"],
        "192.0.2.1:1234 198.51.100.2:443\n192.0.2.2 198.51.100.3"
    );
    // Passwords are taken literally and percent-encoded for the shim.
    assert!(v["PROXIFY_PROXY"].ends_with(",socks5h://alice:pa%25ss@192.0.2.14:1081"));
    // Flags still win over the file.
    let v = run(&["-f", &full, "-x", "socks5://192.0.2.99", "--timeout", "3"]).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks5://192.0.2.99:1080");
    assert!(!v.contains_key("PROXIFY_CHAINS"));
    assert_eq!(v["PROXIFY_TIMEOUT"], "3");
    // Without proxy_dns, the file's own proxies resolve locally, flags' proxies decide
    // for themselves.
    let local = fixture("variant-dynamic-local-dns.conf");
    let v = run(&["-f", &local]).child_vars();
    assert_eq!(v["PROXIFY_PROXY_DNS"], "0");
    assert_eq!(v["PROXIFY_CHAINS"], "default dynamic 1");
    let v = run(&["-f", &local, "-x", "socks5h://h"]).child_vars();
    assert!(!v.contains_key("PROXIFY_PROXY_DNS"), "{v:?}");

    for (name, want) in [
        (
            "broken-unknown-key.conf",
            ":3: unknown setting \"proxy_dsn_typo\"",
        ),
        ("broken-raw.conf", ":5: raw proxies are not supported"),
        (
            "broken-proxy-dns-daemon.conf",
            ":2: proxy_dns_daemon is not supported",
        ),
    ] {
        let path = fixture(name);
        let o = run(&["run", "-f", &path, "true"]).output();
        one_line_error(&o, &format!("{path}{want}"));
    }
    // A .toml name is always read as TOML.
    let f = write_file(
        "pc-named.toml",
        "strict_chain\n[ProxyList]\nsocks5 192.0.2.1 1080\n",
    );
    let o = run(&["run", "-f", f.to_str().unwrap(), "true"]).output();
    one_line_error(&o, &format!("{}:1: ", f.display()));
}

#[test]
fn proxychains_search_order() {
    stock_file();
    // Nothing closer: Debian's file in /etc (no /etc/proxychains.conf here).
    if !Path::new("/etc/proxychains.conf").exists() {
        let o = run(&["config", "--proxychains"]).output();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("{STOCK} (proxychains.conf)")),
            "{}",
            stdout(&o)
        );
    }
    // ~/.proxychains/proxychains.conf, then ./proxychains.conf, then the variable.
    let home_file = tmp_dir().join("home/.proxychains/proxychains.conf");
    std::fs::create_dir_all(home_file.parent().unwrap()).unwrap();
    std::fs::write(&home_file, "[ProxyList]\nsocks5 192.0.2.31 1080\n").unwrap();
    let cwd = tmp_dir().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let v = run(&["--proxychains"]).dir(&cwd).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks5://192.0.2.31:1080");
    std::fs::write(
        cwd.join("proxychains.conf"),
        "[ProxyList]\nsocks5 192.0.2.32 1080\n",
    )
    .unwrap();
    let v = run(&["--proxychains"]).dir(&cwd).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks5://192.0.2.32:1080");
    let v = run(&["--proxychains"])
        .dir(&cwd)
        .env(
            "PROXYCHAINS_CONF_FILE",
            &fixture("variant-dynamic-local-dns.conf"),
        )
        .child_vars();
    assert!(v["PROXIFY_PROXY"].starts_with("socks5://192.0.2.20:1080,"));
    // A named file that cannot be read is an error, not a fall-back.
    let o = run(&["run", "--proxychains", "true"])
        .env("PROXYCHAINS_CONF_FILE", "/nonexistent/pc.conf")
        .output();
    one_line_error(&o, "cannot read /nonexistent/pc.conf");
    std::fs::remove_file(home_file).unwrap();
}

#[test]
fn default_config_file() {
    let cfg_home = tmp_dir().join("xdg");
    let path = cfg_home.join("proxify/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "proxy = \"socks5h://default-file.example\"\ntimeout = 4\n",
    )
    .unwrap();
    let xdg = cfg_home.to_str().unwrap();
    let v = run(&[]).env("XDG_CONFIG_HOME", xdg).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks5h://default-file.example:1080");
    assert_eq!(v["PROXIFY_TIMEOUT"], "4");
    let o = run(&["config"]).env("XDG_CONFIG_HOME", xdg).output();
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{} (proxify TOML)", path.display())),
        "{out}"
    );
    assert!(out.contains(&format!("({}:2)", path.display())), "{out}");
    // -f wins over the default file.
    let other = write_file("other.toml", "proxy = \"socks4a://other.example\"\n");
    let v = run(&["-f", other.to_str().unwrap()])
        .env("XDG_CONFIG_HOME", xdg)
        .child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "socks4a://other.example:1080");
    // A broken default file is an error naming it.
    std::fs::write(&path, "proxy = \"socks5h://x\"\nbogus = 1\n").unwrap();
    let o = run(&["run", "true"]).env("XDG_CONFIG_HOME", xdg).output();
    one_line_error(&o, &format!("{}:2: ", path.display()));
    // None: 'proxify config' says where it looked.
    let o = run(&["config"]).output();
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("none (looked for "), "{out}");
    assert!(out.contains("/etc/proxify/config.toml"), "{out}");
    assert!(out.contains("'proxify run' would refuse to start"), "{out}");
}

#[test]
fn config_says_where_each_value_came_from() {
    let f = write_file(
        "sources.toml",
        &format!(
            "proxy = [\n  \"socks5h://alice:{SECRET}@proxy.example\",\n  \"http://bob:{SECRET}@192.0.2.5:3128\",\n]\n\
             connect_timeout = 3\n\
             [[chain]]\nname = \"corp\"\nmode = \"random\"\nchain_len = 2\n\
             hops = [\"socks5://c:{SECRET}@192.0.2.6\", \"socks4://192.0.2.7\"]\n\
             [[rule]]\nmatch = \"*.corp.example\"\naction = \"proxy corp\"\n"
        ),
    );
    let file = f.to_str().unwrap();
    let o = run(&[
        "config",
        "-f",
        file,
        "--timeout",
        "7",
        "--direct",
        "10.0.0.0/8",
        "--no-proxy-env",
    ])
    .env("PROXIFY_LOG", "debug")
    .env("NO_PROXY", ".lan")
    .output();
    assert!(o.status.success(), "{}", stderr(&o));
    no_secret(&o);
    let out = stdout(&o);
    for want in [
        format!("config file:         {file} (proxify TOML)"),
        "chain default: strict  (default)".to_string(),
        format!("  1. socks5h://alice:***@proxy.example:1080  ({file}:2)"),
        format!("  2. http://bob:***@192.0.2.5:3128  ({file}:3)"),
        format!("chain corp: random, chain_len 2  ({file}:7)"),
        "  1. socks5://c:***@192.0.2.6:1080".to_string(),
        "  -  loopback direct  (built in)".to_string(),
        "  -  10.0.0.0/8 direct  (--direct)".to_string(),
        format!("  1. *.corp.example proxy corp  ({file}:12)"),
        "  2. .lan direct  (env NO_PROXY)".to_string(),
        "  -  everything else: proxy default  (built in)".to_string(),
        format!("connect_timeout:     3 s  ({file}:5)"),
        "timeout:             7 s  (--timeout)".to_string(),
        "log:                 debug  (env PROXIFY_LOG)".to_string(),
        "remote_dns_subnet:   240.0.0.0/4  (default)".to_string(),
        "proxy_dns:           on for the default chain (names go to the proxy)  (default"
            .to_string(),
        "bind:                auto  (default)".to_string(),
    ] {
        assert!(out.contains(&want), "lacks {want:?}:\n{out}");
    }

    let o = run(&["config", "-f", file, "--json", "-x", "socks4://192.0.2.9"])
        .env("PROXIFY_PROXY_DNS", "1")
        .output();
    assert!(o.status.success(), "{}", stderr(&o));
    no_secret(&o);
    let json = stdout(&o);
    assert_eq!(json.lines().count(), 1);
    for (expr, want) in [
        ("d['file']['kind']", "toml".to_string()),
        (
            "d['chains'][0]['hops'][0]['url']",
            "socks4://192.0.2.9:1080".into(),
        ),
        ("d['chains'][0]['hops'][0]['source']", "-x".into()),
        ("d['chains'][1]['name']", "corp".into()),
        (
            "d['chains'][1]['hops'][0]['url']",
            "socks5://c:***@192.0.2.6:1080".into(),
        ),
        ("d['chains'][1]['source']", format!("{file}:7")),
        ("d['rules'][0]['match']", "*.corp.example".into()),
        ("d['rules'][0]['action']", "proxy corp".into()),
        ("d['proxy_dns']['value']", "True".into()),
        ("d['proxy_dns']['source']", "env PROXIFY_PROXY_DNS".into()),
        ("d['connect_timeout']['value']", "3".into()),
        ("d['timeout']['source']", "default".into()),
        ("d['log']['value']", "None".into()),
        ("d['warnings']", "[]".into()),
    ] {
        assert_eq!(py_json(&json, expr), want, "{expr} in {json}");
    }

    // A proxychains.conf is named as such.
    stock_file();
    let o = run(&["config", "-f", STOCK]).output();
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{STOCK} (proxychains.conf)")),
        "{out}"
    );
    assert!(
        out.contains("proxy_dns:           on (names go to the proxy)  (/etc/proxychains4.conf:"),
        "{out}"
    );
    // Errors are the same one line as for run.
    let o = run(&["config", "--rule", "bogus"]).output();
    one_line_error(&o, "--rule: ");
}

#[test]
fn http_scheme_and_toml_errors() {
    let v = run(&["-x", "http://u:p@192.0.2.1"]).child_vars();
    assert_eq!(v["PROXIFY_PROXY"], "http://u:p@192.0.2.1:8080");
    for (text, want) in [
        ("[[chain]]\nname = \"x\"\nhops = [\"socks5://h\"]\n[[rule]]\nmatch = \"*\"\naction = \"proxy y\"\n", "names chain y"),
        ("[[rule]]\nmatch = \"*\"\naction = \"proxy\"\n", "no proxy is configured"),
        ("proxy = \"socks5://h\"\n[[rule]]\nmatch = \"*\"\naction = \"proxy\"\nextra = 1\n", ":5: unknown field `extra`"),
        ("proxy = \"socks5://h\"\ndnat = [\"nonsense\"]\n", ":2: dnat: "),
    ] {
        let f = write_file("errors.toml", text);
        let o = run(&["run", "-f", f.to_str().unwrap(), "true"]).output();
        one_line_error(&o, want);
    }
}
