//! proxify as a drop-in for proxychains-ng: invoked as `proxychains4` or `proxychains` (a
//! symlink, `scripts/install.sh --proxychains-alias`), it takes proxychains-ng's command line
//! and turns it into the equivalent `proxify run`:
//!
//! | proxychains-ng                         | proxify                                        |
//! |----------------------------------------|------------------------------------------------|
//! | `proxychains4 CMD ARGS…`               | `proxify run --proxychains -- CMD ARGS…`        |
//! | `proxychains4 -q …`                    | `… -q …`                                        |
//! | `proxychains4 -f FILE …`               | `proxify run -f FILE -- …`                      |
//! | `PROXYCHAINS_QUIET_MODE=1`             | `-q`                                            |
//!
//! `--proxychains` reads the proxychains.conf proxychains-ng would ($PROXYCHAINS_CONF_FILE,
//! ./proxychains.conf, ~/.proxychains/proxychains.conf, /etc/proxychains.conf,
//! /etc/proxychains4.conf). Options are read as proxychains-ng reads them: only `-q` and
//! `-f FILE`, in any order, before the program; the first other word is the program.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The names that make proxify speak proxychains-ng's command line.
pub const NAMES: &[&str] = &["proxychains4", "proxychains", "proxychains-ng"];

/// Whether `argv0` (as the program was invoked) is one of [`NAMES`].
pub fn is_alias(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| NAMES.iter().any(|a| n == OsStr::new(a)))
}

/// proxychains-ng's usage text (its wording, our program name).
pub fn usage(argv0: &OsStr) -> String {
    let name = Path::new(argv0)
        .file_name()
        .unwrap_or(argv0)
        .to_string_lossy()
        .into_owned();
    format!(
        "Usage:\t{name} -q -f config_file program_name [arguments]\n\
         \t-q makes proxychains quiet - this overrides the config setting\n\
         \t-f allows one to manually specify a configfile to use\n\
         \tfor example : {name} telnet somehost.com\n\
         More help in README file\n\
         (this is proxify's proxychains-ng compatible mode: see 'proxify run --help')\n"
    )
}

/// What the alias was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Alias {
    /// The equivalent `proxify` argument vector (without argv[0]).
    Run(Vec<OsString>),
    /// Print the usage and exit non-zero (no program given, `-f` without a file, `--help`).
    Usage,
}

/// Translates proxychains-ng's arguments (after argv[0]); `quiet_env` is
/// `PROXYCHAINS_QUIET_MODE`.
pub fn translate(args: &[OsString], quiet_env: Option<&OsStr>) -> Alias {
    let mut quiet = quiet_env.is_some_and(|v| v.as_bytes() == b"1");
    let mut file: Option<OsString> = None;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let b = a.as_bytes();
        if b == b"--help" || b == b"-h" {
            return Alias::Usage;
        }
        if b.len() >= 2 && b[0] == b'-' && b[1] == b'q' {
            quiet = true;
            i += 1;
        } else if b.len() >= 2 && b[0] == b'-' && b[1] == b'f' {
            match args.get(i + 1) {
                Some(f) => file = Some(f.clone()),
                None => return Alias::Usage,
            }
            i += 2;
        } else {
            break;
        }
    }
    if i >= args.len() {
        return Alias::Usage;
    }
    let mut out: Vec<OsString> = vec!["run".into()];
    match file {
        Some(f) => {
            out.push("-f".into());
            out.push(f);
        }
        None => out.push("--proxychains".into()),
    }
    if quiet {
        out.push("-q".into());
    }
    out.push("--".into());
    out.extend(args[i..].iter().cloned());
    Alias::Run(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str], quiet: Option<&str>) -> Alias {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        translate(&v, quiet.map(OsStr::new))
    }

    fn run(v: &[&str]) -> Alias {
        Alias::Run(v.iter().map(OsString::from).collect())
    }

    #[test]
    fn names() {
        assert!(is_alias(OsStr::new("/usr/local/bin/proxychains4")));
        assert!(is_alias(OsStr::new("proxychains")));
        assert!(!is_alias(OsStr::new("/usr/bin/proxify")));
        assert!(!is_alias(OsStr::new("proxychains4.sh")));
    }

    #[test]
    fn proxychains_command_lines() {
        // From proxychains-ng's README and usage.
        assert_eq!(
            t(&["telnet", "targethost.com"], None),
            run(&["run", "--proxychains", "--", "telnet", "targethost.com"])
        );
        assert_eq!(
            t(
                &[
                    "-f",
                    "/etc/proxychains-other.conf",
                    "telnet",
                    "targethost2.com"
                ],
                None
            ),
            run(&[
                "run",
                "-f",
                "/etc/proxychains-other.conf",
                "--",
                "telnet",
                "targethost2.com"
            ])
        );
        assert_eq!(
            t(&["-q", "-f", "c.conf", "curl", "-q", "-f", "x"], None),
            run(&["run", "-f", "c.conf", "-q", "--", "curl", "-q", "-f", "x"])
        );
        assert_eq!(
            t(&["-f", "c.conf", "-q", "nmap", "-sT"], None),
            run(&["run", "-f", "c.conf", "-q", "--", "nmap", "-sT"])
        );
        assert_eq!(
            t(&["true"], Some("1")),
            run(&["run", "--proxychains", "-q", "--", "true"])
        );
        assert_eq!(
            t(&["true"], Some("0")),
            run(&["run", "--proxychains", "--", "true"])
        );
        // The first word that is not -q/-f is the program, even if it looks like an option.
        assert_eq!(
            t(&["--", "true"], None),
            run(&["run", "--proxychains", "--", "--", "true"])
        );
    }

    #[test]
    fn usage_cases() {
        assert_eq!(t(&[], None), Alias::Usage);
        assert_eq!(t(&["-q"], None), Alias::Usage);
        assert_eq!(t(&["-f"], None), Alias::Usage);
        assert_eq!(t(&["-f", "x.conf"], None), Alias::Usage);
        assert_eq!(t(&["--help"], None), Alias::Usage);
    }
}
