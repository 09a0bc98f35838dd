//! The command line, as clap definitions. Kept apart from the logic so that shell completions
//! and a man page can later be generated from the same definitions (`Cli::command()`).

use clap::{ArgAction, Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const ABOUT: &str =
    "Run a program with its TCP connections and name lookups sent through a SOCKS proxy";

const LONG_ABOUT: &str = "\
Run an unmodified program with an LD_PRELOAD shim (libproxify.so) that sends its
TCP connections and name lookups through a SOCKS4/4a/5 proxy. Nothing leaks: when
the proxy cannot be used, the program's connection fails; it is never made directly.";

const RUN_LONG_ABOUT: &str = "\
Run COMMAND with its TCP connections sent through the proxy given by -x URL.

Proxy URLs are written as curl writes them:
  socks5h://[USER[:PASSWORD]@]HOST[:PORT]   SOCKS5, names resolved by the proxy (remote DNS)
  socks5://...                              SOCKS5, names resolved locally
  socks4a://[USER@]HOST[:PORT]              SOCKS4a, names resolved by the proxy (remote DNS)
  socks4://[USER@]HOST[:PORT]               SOCKS4, names resolved locally
USER and PASSWORD are percent-decoded (write '@' as %40, ':' as %3A); an IPv6 HOST
goes in brackets ([2001:db8::1]); PORT defaults to 1080.

Each setting comes from the flags, else from the environment, else from the -f FILE
(--direct replaces the list from PROXIFY_DIRECT or the file):
  PROXIFY_PROXY            like -x URL
  PROXIFY_DIRECT           like --direct, comma-separated CIDR blocks
  PROXIFY_CONNECT_TIMEOUT  like --connect-timeout
  PROXIFY_TIMEOUT          like --timeout
  PROXIFY_LOG              log filter (env_logger syntax: error, warn, info, debug, trace)
  PROXIFY_LOG_FILE         log to this file instead of stderr
  PROXIFY_QUIET=1          like -q
  PROXIFY_ALLOW_UNPROXIED=1  like --allow-unproxied
The -f FILE is TOML with the keys proxy, direct, connect_timeout, timeout, log,
log_file and quiet, e.g.:
  proxy = \"socks5h://proxy.example:1080\"
  direct = [\"10.0.0.0/8\", \"2001:db8::/32\"]
  connect_timeout = 5

Loopback destinations (127.0.0.0/8, ::1) are always reached directly.

Some programs cannot be reached by the shim, and their connections would bypass the
proxy: statically linked programs, Go programs (Go's network code does not use the C
library), setuid, setgid and file-capability programs (the loader ignores LD_PRELOAD),
and programs of another architecture; a script counts as its #! interpreter. proxify
refuses to run them, and the shim makes the command's own attempts to run one fail
with \"Operation not permitted\", unless --allow-unproxied is given.

The exit status is COMMAND's; 127 if it cannot be run; 2 for proxify's own errors and
for a COMMAND refused because the shim cannot reach it.";

const RUN_AFTER_SHORT_HELP: &str = "\
socks5h:// and socks4a:// URLs have names resolved by the proxy (remote DNS); socks5:// and
socks4:// resolve names locally. 'proxify run --help' says more.

Example:
  proxify run -x socks5h://alice:s%40cret@proxy.example:1080 curl https://internal.example/";

const RUN_AFTER_HELP: &str = "\
Examples:
  proxify run -x socks5h://alice:s%40cret@proxy.example:1080 curl https://internal.example/
  PROXIFY_PROXY=socks4a://[2001:db8::1] proxify run -v ssh host.example";

#[derive(Parser, Debug)]
#[command(
    name = "proxify",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    subcommand_required = true,
    after_help = "Run 'proxify run --help' for proxy URLs, settings and an example."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Run COMMAND with its connections sent through a SOCKS proxy
    #[command(
        long_about = RUN_LONG_ABOUT,
        after_help = RUN_AFTER_SHORT_HELP,
        after_long_help = RUN_AFTER_HELP
    )]
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Proxy URL, e.g. socks5h://user:password@host:1080 (or PROXIFY_PROXY)
    #[arg(short = 'x', long = "proxy", value_name = "URL", action = ArgAction::Append)]
    pub proxy: Vec<String>,

    /// Read settings from this TOML file (flags and environment win)
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Reach this CIDR block directly, not through the proxy (repeatable)
    #[arg(long = "direct", value_name = "CIDR", action = ArgAction::Append)]
    pub direct: Vec<String>,

    /// Seconds to wait for the TCP connection to the proxy (default 5)
    #[arg(long = "connect-timeout", value_name = "SECS")]
    pub connect_timeout: Option<String>,

    /// Seconds allowed for the SOCKS handshake (default 5)
    #[arg(long = "timeout", value_name = "SECS")]
    pub timeout: Option<String>,

    /// No output at all from proxify, not even one-line failure notices
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log decisions to stderr: -v info, -vv debug, -vvv trace
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    /// Also run programs the shim cannot reach (static, Go, setuid...): their connections
    /// bypass the proxy (or PROXIFY_ALLOW_UNPROXIED=1)
    #[arg(long = "allow-unproxied")]
    pub allow_unproxied: bool,

    /// The program to run and its arguments, passed untouched
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    pub command: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> RunArgs {
        let mut v = vec!["proxify", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Sub::Run(a) => a,
        }
    }

    fn cmd(a: &RunArgs) -> Vec<&str> {
        a.command.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn everything_after_the_command_is_passed_untouched() {
        let a = run(&["-x", "socks5://h", "curl", "-v", "-x", "y", "--", "--proxy"]);
        assert_eq!(a.proxy, ["socks5://h"]);
        assert_eq!(a.verbose, 0);
        assert_eq!(cmd(&a), ["curl", "-v", "-x", "y", "--", "--proxy"]);
    }

    #[test]
    fn double_dash_is_optional() {
        let a = run(&["-vv", "--", "-weird", "-q"]);
        assert_eq!(a.verbose, 2);
        assert!(!a.quiet);
        assert_eq!(cmd(&a), ["-weird", "-q"]);
    }

    #[test]
    fn all_flags() {
        let a = run(&[
            "--proxy=socks4a://h",
            "-f",
            "c.toml",
            "--direct",
            "10.0.0.0/8",
            "--direct",
            "::1",
            "--connect-timeout",
            "2",
            "--timeout",
            "0.5",
            "-q",
            "--allow-unproxied",
            "true",
        ]);
        assert_eq!(a.proxy, ["socks4a://h"]);
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("c.toml")));
        assert_eq!(a.direct, ["10.0.0.0/8", "::1"]);
        assert_eq!(a.connect_timeout.as_deref(), Some("2"));
        assert_eq!(a.timeout.as_deref(), Some("0.5"));
        assert!(a.quiet);
        assert!(a.allow_unproxied);
        assert_eq!(cmd(&a), ["true"]);
        assert!(!run(&["true"]).allow_unproxied);
        let a = run(&["-v", "-vv", "-x", "a", "-x", "b", "true"]);
        assert_eq!(a.verbose, 3);
        assert_eq!(a.proxy, ["a", "b"]);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["proxify"][..],
            &["proxify", "run"],
            &["proxify", "run", "-x"],
            &["proxify", "run", "-q", "-v", "true"],
            &["proxify", "run", "--bogus", "true"],
            &["proxify", "walk"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
