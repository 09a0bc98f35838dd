//! `proxify run ...` parsed without clap, for the command lines people type (issue 15, bench
//! row 1). `proxify run` is a launcher that execs its command at once, so its own start-up is
//! paid by every proxied command; building clap's definition of `run` and matching the
//! arguments against it was most of the page faults and time the launcher spent before its
//! exec.
//!
//! The parser accepts only what it understands completely, and gives exactly the [`RunArgs`]
//! clap would; anything else is `None`, and clap parses the command line again (with its own
//! messages for help and errors). So it falls back on: an option not in [`TABLE`]; help and
//! version; an option argument that is not UTF-8; a value that is empty or starts with `-`, or
//! that is attached to a short option and starts with `=`; short options run together, except
//! `-vv...`; a repeated option that takes one value or none; the pairs clap refuses together
//! (`--quiet`/`--verbose`, `--proxychains`/`--config`, `--no-proxy-env`/`--ignore-no-proxy`);
//! a value that the value parser clap uses (the same function) refuses; a lone `-`; no command.
//! The first argument that is not an option starts the command, and it and everything after it
//! are the command's, untouched (clap's `trailing_var_arg`); so is everything after `--`.
//!
//! The table is checked against clap's definition of `run` by a test, in both directions.

use crate::cli::{RunArgs, Settings};
use crate::values;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What an option takes, as clap's action for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// No value; once (`ArgAction::SetTrue`).
    Flag,
    /// No value; counted (`ArgAction::Count`).
    Count,
    /// One value; once (`ArgAction::Set`).
    One,
    /// One value each time; repeatable (`ArgAction::Append`).
    Many,
}

/// The options of `run`: long name, short name, what it takes.
pub const TABLE: &[(&str, Option<char>, Takes)] = &[
    ("proxy", Some('x'), Takes::Many),
    ("config", Some('f'), Takes::One),
    ("proxychains", None, Takes::Flag),
    ("chain-mode", None, Takes::One),
    ("chain-len", None, Takes::One),
    ("rule", None, Takes::Many),
    ("direct", None, Takes::Many),
    ("dnat", None, Takes::Many),
    ("no-proxy-env", None, Takes::Flag),
    ("ignore-no-proxy", None, Takes::Flag),
    ("connect-timeout", None, Takes::One),
    ("timeout", None, Takes::One),
    ("bind", None, Takes::One),
    ("quiet", Some('q'), Takes::Flag),
    ("verbose", Some('v'), Takes::Count),
    ("trace", None, Takes::One),
    ("dns-server", None, Takes::One),
    ("allow-unproxied", None, Takes::Flag),
    ("mode", None, Takes::One),
    ("enforce", None, Takes::Flag),
];

/// `argv` (with `argv[0]` and `argv[1] == "run"`) as clap would parse it, or `None` when it
/// is not a command line this parser takes (clap parses it then).
pub fn parse(argv: &[OsString]) -> Option<RunArgs> {
    if argv.get(1)? != "run" {
        return None;
    }
    let mut a = RunArgs {
        settings: Settings::default(),
        allow_unproxied: false,
        mode: None,
        enforce: false,
        command: Vec::new(),
    };
    let mut seen = 0u32;
    let mut i = 2;
    while i < argv.len() {
        let raw = argv[i].as_bytes();
        if raw == b"--" {
            a.command = argv[i + 1..].to_vec();
            break;
        }
        if raw.first() != Some(&b'-') {
            a.command = argv[i..].to_vec();
            break;
        }
        if raw == b"-" {
            return None;
        }
        let arg = argv[i].to_str()?;
        i += 1;
        // The option's index in TABLE and its value, if it takes one.
        let (idx, value): (usize, Option<&str>) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let idx = TABLE.iter().position(|&(l, _, _)| l == name)?;
            match (TABLE[idx].2, inline) {
                (Takes::Flag | Takes::Count, Some(_)) => return None,
                (Takes::Flag | Takes::Count, None) => (idx, None),
                (_, Some(v)) => (idx, Some(v)),
                (_, None) => (idx, Some(next_value(argv, &mut i)?)),
            }
        } else {
            let shorts = &arg[1..];
            if shorts.bytes().all(|b| b == b'v') {
                a.settings.verbose = a
                    .settings
                    .verbose
                    .checked_add(u8::try_from(shorts.len()).ok()?)?;
                continue;
            }
            let c = shorts.chars().next()?;
            let idx = TABLE.iter().position(|&(_, s, _)| s == Some(c))?;
            let rest = &shorts[c.len_utf8()..];
            match TABLE[idx].2 {
                Takes::Flag | Takes::Count if rest.is_empty() => (idx, None),
                Takes::Flag | Takes::Count => return None,
                _ if rest.is_empty() => (idx, Some(next_value(argv, &mut i)?)),
                _ if rest.starts_with('=') => return None,
                _ => (idx, Some(rest)),
            }
        };
        if let Some(v) = value {
            if v.is_empty() || v.starts_with('-') {
                return None;
            }
        }
        let (name, _, takes) = TABLE[idx];
        if matches!(takes, Takes::Flag | Takes::One) {
            if seen & (1 << idx) != 0 {
                return None;
            }
            seen |= 1 << idx;
        }
        set(&mut a, name, value)?;
    }
    let s = &a.settings;
    if a.command.is_empty()
        || (s.quiet && s.verbose > 0)
        || (s.proxychains && s.config.is_some())
        || (s.no_proxy_env && s.ignore_no_proxy)
    {
        return None;
    }
    Some(a)
}

/// The argument after an option that takes a value (`--proxy URL`), as UTF-8.
fn next_value<'a>(argv: &'a [OsString], i: &mut usize) -> Option<&'a str> {
    let v = argv.get(*i)?.to_str()?;
    *i += 1;
    Some(v)
}

/// Stores option `name`'s `value` (None for a flag) as clap would.
fn set(a: &mut RunArgs, name: &str, value: Option<&str>) -> Option<()> {
    let s = &mut a.settings;
    match name {
        "proxy" => s.proxy.push(values::proxy_url(value?).ok()?),
        "config" => s.config = Some(PathBuf::from(value?)),
        "proxychains" => s.proxychains = true,
        "chain-mode" => s.chain_mode = Some(values::chain_mode(value?).ok()?),
        "chain-len" => s.chain_len = Some(values::chain_len(value?).ok()?),
        "rule" => s.rule.push(values::rule(value?).ok()?),
        "direct" => s.direct.push(values::cidr(value?).ok()?),
        "dnat" => s.dnat.push(values::dnat(value?).ok()?),
        "no-proxy-env" => s.no_proxy_env = true,
        "ignore-no-proxy" => s.ignore_no_proxy = true,
        "connect-timeout" => s.connect_timeout = Some(values::seconds(value?).ok()?),
        "timeout" => s.timeout = Some(values::seconds(value?).ok()?),
        "bind" => s.bind = Some(values::bind_policy(value?).ok()?),
        "quiet" => s.quiet = true,
        "verbose" => s.verbose = s.verbose.checked_add(1)?,
        "trace" => s.trace = Some(PathBuf::from(value?)),
        "dns-server" => s.dns_server = Some(values::dns_server(value?).ok()?),
        "allow-unproxied" => a.allow_unproxied = true,
        "mode" => match value? {
            m @ ("auto" | "preload" | "supervise") => a.mode = Some(m.to_string()),
            _ => return None,
        },
        "enforce" => a.enforce = true,
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{ArgAction, Args, FromArgMatches};

    /// clap's parse of `argv` with the `run` definition (what main.rs falls back to).
    fn clap_parse(argv: &[OsString]) -> Option<RunArgs> {
        let run = RunArgs::augment_args(clap::Command::new("run"));
        let mut cmd = clap::Command::new("proxify").subcommand(run);
        let mut m = cmd.try_get_matches_from_mut(argv).ok()?;
        let (name, mut sub) = m.remove_subcommand()?;
        assert_eq!(name, "run");
        RunArgs::from_arg_matches_mut(&mut sub).ok()
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        ["proxify", "run"]
            .iter()
            .chain(args)
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn the_table_is_clap_s_definition_of_run() {
        let mut cmd = RunArgs::augment_args(clap::Command::new("run"));
        cmd.build();
        let mut named = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else {
                assert!(arg.is_positional(), "{:?}", arg.get_id());
                continue;
            };
            if long == "help" {
                continue; // clap's own (the fast path leaves it to clap)
            }
            named += 1;
            let &(_, short, takes) = TABLE
                .iter()
                .find(|&&(l, _, _)| l == long)
                .unwrap_or_else(|| panic!("--{long} is not in fastrun::TABLE"));
            assert_eq!(arg.get_short(), short, "--{long}");
            let want = match arg.get_action() {
                ArgAction::SetTrue => Takes::Flag,
                ArgAction::Count => Takes::Count,
                ArgAction::Set => Takes::One,
                ArgAction::Append => Takes::Many,
                other => panic!("--{long}: action {other:?} has no fast form"),
            };
            assert_eq!(takes, want, "--{long}");
            let nvals = arg.get_num_args().expect("built");
            let takes_value = matches!(takes, Takes::One | Takes::Many);
            assert_eq!(nvals.takes_values(), takes_value, "--{long}");
            if takes_value {
                assert_eq!((nvals.min_values(), nvals.max_values()), (1, 1), "--{long}");
            }
            assert!(arg.get_value_delimiter().is_none(), "--{long}");
            assert!(!arg.is_allow_hyphen_values_set(), "--{long}");
            // (SetTrue and Count have their implicit `false` / 0, as the fast path starts from.)
            if takes_value {
                assert!(arg.get_default_values().is_empty(), "--{long}");
            }
            assert!(
                arg.get_all_aliases().is_none_or(|a| a.is_empty()),
                "--{long}"
            );
            assert!(
                arg.get_all_short_aliases().is_none_or(|a| a.is_empty()),
                "--{long}"
            );
        }
        assert_eq!(
            named,
            TABLE.len(),
            "fastrun::TABLE has options clap's run has not"
        );
        assert!(TABLE.len() < 32, "`seen` is a u32 bit set");
    }

    /// A value each option takes.
    fn value_of(long: &str) -> &'static str {
        match long {
            "proxy" => "socks5h://user:pw@proxy.example:1080",
            "config" | "trace" => "/tmp/some file",
            "chain-mode" => "dynamic",
            "chain-len" => "2",
            "rule" => "*.corp.example direct",
            "direct" => "10.0.0.0/8",
            "dnat" => "192.0.2.1 192.0.2.2:80",
            "connect-timeout" | "timeout" => "1.5",
            "bind" => "always",
            "dns-server" => "192.0.2.53",
            "mode" => "supervise",
            other => panic!("no value for --{other}"),
        }
    }

    /// Every accepted form of one option: `--name`, `--name V`, `--name=V`, `-s V`, `-sV`.
    fn forms(long: &str, short: Option<char>, takes: Takes) -> Vec<Vec<String>> {
        let mut out = vec![];
        match takes {
            Takes::Flag | Takes::Count => {
                out.push(vec![format!("--{long}")]);
                if let Some(c) = short {
                    out.push(vec![format!("-{c}")]);
                }
            }
            Takes::One | Takes::Many => {
                let v = value_of(long);
                out.push(vec![format!("--{long}"), v.to_string()]);
                out.push(vec![format!("--{long}={v}")]);
                if let Some(c) = short {
                    out.push(vec![format!("-{c}"), v.to_string()]);
                    out.push(vec![format!("-{c}{v}")]);
                }
            }
        }
        out
    }

    fn check(args: &[String]) -> Option<RunArgs> {
        let v: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = argv(&v);
        let fast = parse(&a);
        if let Some(f) = &fast {
            let slow = clap_parse(&a).unwrap_or_else(|| panic!("clap refuses {args:?}"));
            assert_eq!(format!("{f:?}"), format!("{slow:?}"), "{args:?}");
        }
        fast
    }

    #[test]
    fn whatever_it_takes_clap_parses_the_same() {
        let cmds: [&[&str]; 4] = [
            &["curl", "-x", "http://a", "--", "-v", "x"],
            &["--", "ls", "-l"],
            &["sh", "-c", "echo --proxy"],
            &["--", "--", "x"],
        ];
        let mut accepted = 0;
        let all: Vec<Vec<String>> = TABLE.iter().flat_map(|&(l, s, t)| forms(l, s, t)).collect();
        for cmd in cmds {
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            // Each form alone, and every pair of forms (of the same option or of two).
            for a in &all {
                accepted += check(&[a.clone(), cmd.clone()].concat()).is_some() as usize;
                for b in &all {
                    accepted +=
                        check(&[a.clone(), b.clone(), cmd.clone()].concat()).is_some() as usize;
                }
            }
        }
        // Counts and several proxies, as people type them.
        for args in [
            vec!["-vv", "-x", "socks5://a:1", "-x", "http://b:3128", "true"],
            vec!["-v", "-v", "--verbose", "-vvv", "true"],
            vec!["-xsocks5h://a:1", "--proxy=socks4a://b:2", "--", "true"],
            vec!["--rule", "*:25 deny", "--rule", "10.0.0.0/8 direct", "true"],
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            assert!(check(&args).is_some(), "{args:?}");
        }
        assert!(accepted > 1000, "only {accepted} command lines taken");
    }

    #[test]
    fn what_it_does_not_take_falls_back_to_clap() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["-V", "x"],
            &["--version"],
            &[],
            &["-x", "socks5://a:1"],
            &["-x", "socks5://a:1", "--"],
            &["--unknown", "x"],
            &["--prox", "socks5://a:1", "x"],
            &["-qv", "x"],
            &["-xq", "x"],
            &["-vq", "x"],
            &["-q", "-v", "x"],
            &["--quiet", "--verbose", "x"],
            &["-f", "a", "--proxychains", "x"],
            &["--no-proxy-env", "--ignore-no-proxy", "x"],
            &["--quiet", "--quiet", "x"],
            &["-f", "a", "-f", "b", "x"],
            &["--timeout", "1", "--timeout", "2", "x"],
            &["--proxy=", "x"],
            &["--proxy", "-x", "x"],
            &["-x", "", "x"],
            &["-x=socks5://a:1", "x"],
            &["--quiet=yes", "x"],
            &["--timeout", "soon", "x"],
            &["--mode", "Auto", "x"],
            &["--chain-len", "0", "x"],
            &["--proxy", "ftp://a:1", "x"],
            &["-", "x"],
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            assert!(check(&args).is_none(), "{args:?} should fall back");
        }
        // Non-UTF-8: an option's value falls back; the command's bytes are passed untouched.
        use std::os::unix::ffi::OsStringExt;
        let mut a = argv(&["--config"]);
        a.push(OsString::from_vec(vec![0xff, b'f']));
        a.push("x".into());
        assert!(parse(&a).is_none());
        let mut a = argv(&["-x", "socks5://a:1"]);
        a.push(OsString::from_vec(vec![b'/', 0xff]));
        a.push("--proxy".into());
        let f = parse(&a).expect("taken");
        assert_eq!(f.command, a[4..].to_vec());
        assert_eq!(format!("{f:?}"), format!("{:?}", clap_parse(&a).unwrap()));
    }

    #[test]
    fn the_proxychains4_alias_lines_take_it_too() {
        use crate::alias::{translate, Alias};
        for line in [
            &["-q", "-f", "pc.conf", "curl", "-q", "-f", "x"][..],
            &["-f", "pc.conf", "nmap", "-sT", "host"],
            &["telnet", "host.example"],
        ] {
            for quiet in [None, Some(std::ffi::OsStr::new("1"))] {
                let args: Vec<OsString> = line.iter().map(OsString::from).collect();
                let Alias::Run(run) = translate(&args, quiet) else {
                    panic!("{line:?}: not a run")
                };
                let a: Vec<OsString> = std::iter::once("proxify".into()).chain(run).collect();
                let f = parse(&a).unwrap_or_else(|| panic!("{a:?} falls back"));
                assert_eq!(format!("{f:?}"), format!("{:?}", clap_parse(&a).unwrap()));
            }
        }
    }

    #[test]
    fn the_usual_command_lines() {
        let a = parse(&argv(&[
            "-x",
            "socks5h://127.0.0.1:1080",
            "--",
            "curl",
            "-v",
            "u",
        ]))
        .unwrap();
        assert_eq!(a.settings.proxy.len(), 1);
        assert_eq!(a.command, ["curl", "-v", "u"].map(OsString::from).to_vec());
        let a = parse(&argv(&["-q", "--mode=preload", "ssh", "-x", "host"])).unwrap();
        assert!(a.settings.quiet);
        assert_eq!(a.mode.as_deref(), Some("preload"));
        assert_eq!(
            a.command,
            ["ssh", "-x", "host"].map(OsString::from).to_vec()
        );
        let a = parse(&argv(&["-vvv", "-f", "/etc/p.toml", "--enforce", "true"])).unwrap();
        assert_eq!(a.settings.verbose, 3);
        assert_eq!(a.settings.config, Some(PathBuf::from("/etc/p.toml")));
        assert!(a.enforce);
    }
}
