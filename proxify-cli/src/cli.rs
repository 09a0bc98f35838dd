//! The command line, as clap definitions. Kept apart from the logic: shell completions
//! (`proxify completions`) and the man page (`proxify man`) are generated from the same
//! definitions (`Cli::command()`).
//!
//! Size: ~640 lines, ~155 of them unit tests: one set of clap definitions, ~175 lines of them
//! help texts (`--help`, the completions and the man page are all generated from them).

use crate::values::{self, HostPort};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use proxify_core::cidr::Cidr;
use proxify_core::config::{BindPolicy, ChainMode};
use proxify_core::rules::{Dnat, Rule};
use proxify_core::url::ProxyUrl;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
  http://[USER[:PASSWORD]@]HOST[:PORT]      HTTP CONNECT (Basic auth), names sent to the proxy
USER and PASSWORD are percent-decoded (write '@' as %40, ':' as %3A); an IPv6 HOST
goes in brackets ([2001:db8::1]); PORT defaults to 1080 (8080 for http).
A SOCKS5 URL takes ?pipeline=1 (greeting, auth and request in one write) and, without
credentials on a single-hop route, ?optimistic=1 (connect() returns once greeting and
request are sent; a refused request is then the first read's ECONNRESET).
Several -x make a chain, first hop first: strict unless --chain-mode says dynamic
(dead hops skipped), random or round_robin (--chain-len hops each time).

Rules pick, first match wins, where a destination goes: --rule 'PATTERN ACTION', with
PATTERN an address block (10.0.0.0/8, [2001:db8::/32]:22), a name (host.example), a domain
(*.corp.example: names under it; .corp.example: it and the names under it) or *, each
with an optional :PORT or :LOW-HIGH, and ACTION direct, deny or proxy [CHAIN]. No match:
the default chain. --direct blocks come before the rules. NO_PROXY/no_proxy are ignored
(they are set for browsers and curl, and would widen the direct paths): with
--no-proxy-env (or no_proxy_env = true in the file) their entries become direct rules
after yours, each direct decision they cause logged at -v. --dnat 'ORIG[:PORT]
NEW[:PORT]' sends connections for ORIG to NEW.

Each setting comes from the flags, else from the environment, else from the file
(lists such as --rule or --direct replace the environment's and the file's):
  PROXIFY_PROXY            like -x URL (comma-separated: a chain)
  PROXIFY_CHAINS           chains, one a line: NAME MODE CHAIN_LEN URL...
  PROXIFY_RULES            like --rule, one a line
  PROXIFY_DNAT             like --dnat, one a line
  PROXIFY_DIRECT           like --direct, comma-separated CIDR blocks
  PROXIFY_PROXY_DNS        1: names go to the proxy; 0: resolved locally
  PROXIFY_REMOTE_DNS_SUBNET  placeholder addresses for remote DNS (default 240.0.0.0/4)
  PROXIFY_CONNECT_TIMEOUT  like --connect-timeout
  PROXIFY_TIMEOUT          like --timeout
  PROXIFY_LOG              log filter (env_logger syntax: error, warn, info, debug, trace)
  PROXIFY_LOG_FILE         log to this file instead of stderr
  PROXIFY_TRACE            like --trace FILE
  PROXIFY_TRACE_MAX        the trace's size cap in bytes (default 16777216)
  PROXIFY_DNS_SERVER       like --dns-server ADDR
  PROXIFY_QUIET=1          like -q
  PROXIFY_BIND             auto, always or never: when listen() becomes a SOCKS BIND
  PROXIFY_ALLOW_UNPROXIED=1  like --allow-unproxied
The file is -f FILE, the proxychains.conf proxychains would read (--proxychains), or
else $XDG_CONFIG_HOME/proxify/config.toml or /etc/proxify/config.toml. proxify's own
file is TOML, e.g.:
  proxy = \"socks5h://proxy.example:1080\"
  direct = [\"10.0.0.0/8\", \"2001:db8::/32\"]
  connect_timeout = 5
  [[chain]]
  name = \"corp\"
  mode = \"dynamic\"
  hops = [\"socks5://192.0.2.1\", \"http://192.0.2.2:3128\"]
  [[rule]]
  match = \"*.corp.example\"
  action = \"proxy corp\"
'proxify config' shows the result and where each value came from.

Loopback destinations (127.0.0.0/8, ::1) are always reached directly.

Some programs cannot be reached by the shim, and their connections would bypass the
proxy: statically linked programs, Go programs (Go's network code does not use the C
library), programs whose exec changes the effective uid or gid or raises capabilities
(setuid, setgid or file capabilities, unless run by the user they switch to: the loader
then ignores LD_PRELOAD), and programs of another architecture; a script counts as its
#! interpreter, and the dynamic loader run as a program (ld.so PROGRAM, ldd) as the
program it runs. proxify refuses to run them, and the shim makes the command's own
attempts to run one fail with \"Operation not permitted\", unless --allow-unproxied is
given; then each one started says so in one line (none with -q), and its connections
and name look-ups go directly, not through the proxy. Static and Go programs can be
proxified instead: --mode auto (the default) supervises such a COMMAND, and --mode
supervise the whole command, with the programs it runs.

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
  PROXIFY_PROXY=socks4a://[2001:db8::1] proxify run -v ssh host.example
  proxify run -x socks5://192.0.2.1 -x http://198.51.100.2:3128 curl http://internal.example/
  proxify run -x socks5h://proxy.example --rule '*.lan direct' --rule '*:25 deny' mutt
  proxify run -f /etc/proxychains4.conf curl https://example.com/";

const CONFIG_LONG_ABOUT: &str = "\
Print the effective configuration, as 'proxify run' with the same flags, environment and
file would use it, and where each value came from: a flag, an environment variable, a
file and line, or the default. Passwords are shown as ***.";

const CONFIG_AFTER_HELP: &str = "\
Examples:
  proxify config
  proxify config -f /etc/proxychains4.conf
  proxify config --proxychains --json";

const TOP_AFTER_HELP: &str = "\
Examples:
  proxify run -x socks5h://proxy.example:1080 curl https://internal.example/
  proxify check -x socks5h://alice:s%40cret@proxy.example:1080 internal.example:443
  proxify config -f /etc/proxychains4.conf
Run 'proxify run --help' for proxy URLs, settings and more examples.";

const CHECK_LONG_ABOUT: &str = "\
Check the default chain (the one 'proxify run' would use, from the same flags, environment
and file) step by step, each with the time it took:
  - reachability of each hop: a TCP connection to the first one, then each next hop through
    the ones before it (CONNECT);
  - authentication at each hop: for SOCKS5 the method offered and the one the proxy chose,
    then the username/password result; SOCKS4 has no authentication exchange (the user id
    goes with the request); an HTTP proxy checks Basic credentials with the CONNECT;
  - with HOST:PORT, a CONNECT to it through the whole chain (the name goes to the proxy when
    names are resolved remotely, e.g. socks5h://);
  - UDP ASSOCIATE and BIND at the last hop, on a connection of their own that is closed after
    the first reply; only for a chain of one hop, as a chain cannot carry them ('n/a (chain)');
  - pipelining: whether the first SOCKS5 hop (and any hop with ?pipeline=1) takes greeting,
    authentication and request in one write. The pipelined request is a CONNECT to HOST:PORT,
    else to the next hop, else to the proxy's own address (closed at once, nothing sent; any
    reply proves the proxy read the pipelined request). A proxy that cannot take it usually
    waits forever: after a short wait (4 times the normal handshake, 1 s at least, at most
    --timeout) the answer is 'no'.
Chains that are not strict are checked as a strict chain of all their hops.

The exit status is 0 when everything asked for works: every hop reachable and
authenticated, the CONNECT to HOST:PORT (when given), the features named by --require, and
pipelining on hops configured with ?pipeline=1. It is 1 otherwise, and 2 for a usage or
configuration error. Marks are \u{2713}/\u{2717} in a UTF-8 locale, OK/FAIL otherwise; -q
prints nothing (the exit status tells). Passwords are never printed.";

const CHECK_AFTER_HELP: &str = "\
Examples:
  proxify check -x socks5h://alice:s%40cret@proxy.example:1080 internal.example:443
  proxify check -x socks5://192.0.2.1 -x http://198.51.100.2:3128 203.0.113.7:22
  proxify check --require udp,bind,pipeline -x socks5h://proxy.example
  proxify check -f /etc/proxychains4.conf --json example.com:80";

const COMPLETIONS_LONG_ABOUT: &str = "\
Print a completion script for SHELL (bash, zsh or fish) to standard output.";

const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  proxify completions bash > /etc/bash_completion.d/proxify
  proxify completions zsh > \"${fpath[1]}/_proxify\"
  proxify completions fish > ~/.config/fish/completions/proxify.fish
  source <(proxify completions bash)";

const MAN_LONG_ABOUT: &str = "\
Print the manual page (roff, section 1), generated from the same definitions as --help.";

const MAN_AFTER_HELP: &str = "\
Examples:
  proxify man > proxify.1
  proxify man | man -l -
  proxify man | gzip > /usr/local/share/man/man1/proxify.1.gz";

#[derive(Parser, Debug)]
#[command(
    name = "proxify",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    subcommand_required = true,
    after_help = TOP_AFTER_HELP
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
    /// Print the effective configuration and where each value came from
    #[command(long_about = CONFIG_LONG_ABOUT, after_help = CONFIG_AFTER_HELP)]
    Config(ConfigArgs),
    /// Check the proxies step by step: reachability, authentication, CONNECT, UDP, BIND
    #[command(long_about = CHECK_LONG_ABOUT, after_help = CHECK_AFTER_HELP)]
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish)
    #[command(long_about = COMPLETIONS_LONG_ABOUT, after_help = COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff)
    #[command(long_about = MAN_LONG_ABOUT, after_help = MAN_AFTER_HELP)]
    Man,
    /// Open your $SHELL with every command in it proxied ('exit' leaves)
    #[command(long_about = SHELL_LONG_ABOUT, after_help = SHELL_AFTER_HELP)]
    Shell(ShellArgs),
    /// Print the lines that proxify the current shell: eval "$(proxify env -x URL)"
    #[command(long_about = ENV_LONG_ABOUT, after_help = ENV_AFTER_HELP)]
    Env(EnvArgs),
    /// Print a trace written by 'proxify run --trace FILE' as a table by destination
    #[command(long_about = TRACE_LONG_ABOUT, after_help = TRACE_AFTER_HELP)]
    Trace(TraceArgs),
}

const TRACE_LONG_ABOUT: &str = "\
Print the trace that 'proxify run --trace FILE' wrote (one JSON line per decision and per
outcome: time, pid, call, destination as the program asked, route and the rule that chose
it, result or errno, handshake time) as a table grouped by destination: the calls, how many
decisions, the route (the proxies, direct or deny), how many failed, and the median
handshake time in ms. --summary prints the totals (connects, proxied, direct, denied,
failed, UDP associations, look-ups) and the ten most used destinations. Lines that are not
trace lines are skipped, and their count said on standard error.";

const TRACE_AFTER_HELP: &str = "\
Examples:
  proxify run --trace /tmp/t.jsonl -x socks5h://proxy.example:1080 curl https://example.com/
  proxify trace /tmp/t.jsonl
  proxify trace --summary /tmp/t.jsonl";

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Print the totals and the top 10 destinations only
    #[arg(long = "summary")]
    pub summary: bool,

    /// The trace file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

const SHELL_LONG_ABOUT: &str = "Open your $SHELL (else /bin/sh) with every command in it proxied, \
as if each were started with 'proxify run'. bash, sh, dash and ksh show '(proxify) ' in the \
prompt; every shell gets PROXIFY_SHELL=1 for prompts of its own. 'exit' leaves. Takes the same \
settings as 'proxify run'. Remote-DNS placeholders are shared by the whole shell session.";
const SHELL_AFTER_HELP: &str = "Examples:\n  proxify shell -x socks5h://proxy.example:1080\n  \
proxify shell --proxychains";
const ENV_LONG_ABOUT: &str = "Print the 'export' lines that proxify the current shell, the way \
'. torsocks on' does: eval \"$(proxify env -x URL)\". Every command started from that shell \
afterwards is proxied. 'proxify env --off' prints the lines that undo it. Unlike \
'proxify shell', each command then keeps its own remote-DNS placeholders: a name looked up by \
one command (getent, dig) is not known to the next one.";
const ENV_AFTER_HELP: &str =
    "Examples:\n  eval \"$(proxify env -x socks5h://proxy.example:1080)\"\n  \
eval \"$(proxify env --off)\"";

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// Print the lines that undo a previous 'proxify env' instead
    #[arg(long = "off")]
    pub off: bool,
}

/// The settings flags, shared by `run` and `config`.
#[derive(Args, Debug, Default)]
pub struct Settings {
    /// Proxy URL, e.g. socks5h://user:password@host:1080; several make a chain, first hop
    /// first (or PROXIFY_PROXY)
    #[arg(short = 'x', long = "proxy", value_name = "URL", action = ArgAction::Append,
          value_parser = values::proxy_url)]
    pub proxy: Vec<ProxyUrl>,

    /// Read settings from this file: proxify TOML or a proxychains.conf (flags and
    /// environment win)
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Read the proxychains.conf proxychains would: $PROXYCHAINS_CONF_FILE,
    /// ./proxychains.conf, ~/.proxychains/proxychains.conf, /etc/proxychains.conf,
    /// /etc/proxychains4.conf
    #[arg(long = "proxychains", conflicts_with = "config")]
    pub proxychains: bool,

    /// How the -x chain uses its proxies: strict (default), dynamic, random, round_robin
    #[arg(long = "chain-mode", value_name = "MODE", value_parser = values::chain_mode)]
    pub chain_mode: Option<ChainMode>,

    /// Proxies per connection for random and round_robin chains (default 1)
    #[arg(long = "chain-len", value_name = "N", value_parser = values::chain_len)]
    pub chain_len: Option<usize>,

    /// Routing rule 'PATTERN ACTION', first match wins, e.g. '*.corp.example direct',
    /// '10.0.0.0/8:22 proxy corp', '*:25 deny' (repeatable)
    #[arg(long = "rule", value_name = "RULE", action = ArgAction::Append,
          value_parser = values::rule)]
    pub rule: Vec<Rule>,

    /// Reach this CIDR block directly, not through the proxy (repeatable)
    #[arg(long = "direct", value_name = "CIDR", action = ArgAction::Append,
          value_parser = values::cidr)]
    pub direct: Vec<Cidr>,

    /// Rewrite a destination: 'ORIG[:PORT] NEW[:PORT]' (repeatable)
    #[arg(long = "dnat", value_name = "MAP", action = ArgAction::Append,
          value_parser = values::dnat)]
    pub dnat: Vec<Dnat>,

    /// Turn NO_PROXY/no_proxy entries into direct rules (ignored by default: they widen the
    /// direct paths; each direct decision they cause is logged at -v)
    #[arg(long = "no-proxy-env", conflicts_with = "ignore_no_proxy")]
    pub no_proxy_env: bool,

    /// Ignore NO_PROXY/no_proxy (the default; kept for older scripts)
    #[arg(long = "ignore-no-proxy", hide = true)]
    pub ignore_no_proxy: bool,

    /// Seconds to wait for the TCP connection to the proxy (default 5)
    #[arg(long = "connect-timeout", value_name = "SECS", value_parser = values::seconds)]
    pub connect_timeout: Option<Duration>,

    /// Seconds allowed for the proxy handshake (default 5)
    #[arg(long = "timeout", value_name = "SECS", value_parser = values::seconds)]
    pub timeout: Option<Duration>,

    /// When listen() becomes a SOCKS BIND: auto (default: an ephemeral port after a proxied
    /// connection, when the program shows it will announce the address, as FTP clients do),
    /// always or never (or PROXIFY_BIND)
    #[arg(long = "bind", value_name = "POLICY", value_parser = values::bind_policy)]
    pub bind: Option<BindPolicy>,

    /// No output at all from proxify, not even one-line failure notices
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log decisions to stderr: -v info, -vv debug, -vvv trace
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    /// Write one JSON line per decision and outcome (connects, UDP associations, listeners,
    /// name look-ups) to FILE, emptied first by 'proxify run'; read it with 'proxify trace FILE'
    /// (or PROXIFY_TRACE; PROXIFY_TRACE_MAX caps it, default 16 MiB)
    #[arg(long = "trace", value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Under remote DNS, send the DNS queries proxify cannot answer itself (MX, TXT, SRV, ...)
    /// over TCP through the proxy to this server: ADDR, ADDR:PORT, [V6ADDR]:PORT or NAME[:PORT]
    /// (a name is resolved by the proxy); without it they are refused at once (or
    /// PROXIFY_DNS_SERVER)
    #[arg(long = "dns-server", value_name = "ADDR", value_parser = values::dns_server)]
    pub dns_server: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// Print JSON (for scripts)
    #[arg(long = "json")]
    pub json: bool,
}

/// What `proxify check --require` can ask for beyond the chain and the CONNECT.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// UDP ASSOCIATE at the last hop
    Udp,
    /// BIND at the last hop
    Bind,
    /// A pipelined SOCKS5 handshake at the first SOCKS5 hop
    Pipeline,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Udp => "udp",
            Feature::Bind => "bind",
            Feature::Pipeline => "pipeline",
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// Print one JSON object (for scripts)
    #[arg(long = "json")]
    pub json: bool,

    /// Also fail unless these work: udp, bind, pipeline (comma-separated)
    #[arg(
        long = "require",
        value_name = "LIST",
        value_enum,
        value_delimiter = ',',
        action = ArgAction::Append
    )]
    pub require: Vec<Feature>,

    /// Where to CONNECT through the chain: HOST:PORT ([IPv6]:PORT)
    #[arg(value_name = "HOST:PORT", value_parser = values::host_port)]
    pub target: Option<HostPort>,
}

/// The shells `proxify completions` writes for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// Also run programs the shim cannot reach (static, Go, setuid...): their connections
    /// and name look-ups go directly, not through the proxy; one line says so for each one
    /// started, unless -q (or PROXIFY_ALLOW_UNPROXIED=1)
    #[arg(long = "allow-unproxied")]
    pub allow_unproxied: bool,

    /// How to reach the program's connections: auto (preload dynamically linked programs,
    /// supervise static and Go ones), preload (LD_PRELOAD only), supervise (a seccomp
    /// supervisor for everything) (or PROXIFY_MODE)
    #[arg(long = "mode", value_name = "MODE", value_parser = ["auto", "preload", "supervise"])]
    pub mode: Option<String>,

    /// Preload the shim and supervise too: a connection the shim does not carry (a system
    /// call made directly, a static program started by the command) is carried by the
    /// supervisor, never sent directly (or PROXIFY_ENFORCE=1, enforce = true)
    #[arg(long = "enforce")]
    pub enforce: bool,

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
            _ => unreachable!(),
        }
    }

    fn url(s: &str) -> ProxyUrl {
        s.parse().unwrap()
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
        assert_eq!(a.settings.proxy, [url("socks5://h")]);
        assert_eq!(a.settings.verbose, 0);
        assert_eq!(cmd(&a), ["curl", "-v", "-x", "y", "--", "--proxy"]);
    }

    #[test]
    fn double_dash_is_optional() {
        let a = run(&["-vv", "--", "-weird", "-q"]);
        assert_eq!(a.settings.verbose, 2);
        assert!(!a.settings.quiet);
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
            "--chain-mode",
            "dynamic",
            "--chain-len",
            "2",
            "--rule",
            "*.lan direct",
            "--rule",
            "* deny",
            "--dnat",
            "192.0.2.1 192.0.2.2",
            "--no-proxy-env",
            "true",
        ]);
        let s = &a.settings;
        assert_eq!(s.proxy, [url("socks4a://h")]);
        assert_eq!(s.config.as_deref(), Some(std::path::Path::new("c.toml")));
        assert_eq!(
            s.direct,
            [
                "10.0.0.0/8".parse().unwrap(),
                "::1".parse::<Cidr>().unwrap()
            ]
        );
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.timeout, Some(Duration::from_millis(500)));
        assert!(s.quiet);
        assert!(a.allow_unproxied);
        assert_eq!(s.chain_mode, Some(ChainMode::Dynamic));
        assert_eq!(s.chain_len, Some(2));
        let rules: Vec<String> = s.rule.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["*.lan direct", "* deny"]);
        assert!(s.rule.iter().all(|r| r.origin.as_deref() == Some("--rule")));
        assert_eq!(s.dnat, ["192.0.2.1 192.0.2.2".parse::<Dnat>().unwrap()]);
        assert!(s.no_proxy_env && !s.ignore_no_proxy && !s.proxychains);
        assert!(run(&["--ignore-no-proxy", "true"]).settings.ignore_no_proxy);
        assert_eq!(cmd(&a), ["true"]);
        assert!(!run(&["true"]).allow_unproxied);
        let a = run(&["-v", "-vv", "-x", "socks5://a", "-x", "socks5://b", "true"]);
        assert_eq!(a.settings.verbose, 3);
        assert_eq!(a.settings.proxy, [url("socks5://a"), url("socks5://b")]);
        assert!(run(&["--proxychains", "true"]).settings.proxychains);
    }

    #[test]
    fn config_takes_the_same_flags() {
        let c = match Cli::try_parse_from([
            "proxify",
            "config",
            "-x",
            "socks5://h",
            "--rule",
            "* deny",
            "--json",
            "-v",
        ])
        .unwrap()
        .command
        {
            Sub::Config(c) => c,
            _ => unreachable!(),
        };
        assert!(c.json);
        assert_eq!(c.settings.proxy, [url("socks5://h")]);
        assert_eq!(c.settings.rule[0].to_string(), "* deny");
        assert_eq!(c.settings.verbose, 1);
        // No command is taken.
        assert!(Cli::try_parse_from(["proxify", "config", "true"]).is_err());
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["proxify"][..],
            &["proxify", "run"],
            &["proxify", "run", "-x"],
            &["proxify", "run", "-q", "-v", "true"],
            &["proxify", "run", "--bogus", "true"],
            &["proxify", "run", "-f", "a", "--proxychains", "true"],
            &["proxify", "walk"],
            &[
                "proxify",
                "run",
                "--no-proxy-env",
                "--ignore-no-proxy",
                "true",
            ],
            &["proxify", "run", "-x", "socks9://h", "true"],
            &["proxify", "run", "--chain-len", "0", "true"],
            &["proxify", "run", "--direct", "10.0.0.0/33", "true"],
            &["proxify", "run", "--timeout", "soon", "true"],
            &["proxify", "run", "--bind", "sometimes", "true"],
            &["proxify", "run", "--rule", "* allow", "true"],
            &["proxify", "run", "--dnat", "192.0.2.1", "true"],
            &["proxify", "check", "-x", "socks5://h", "nowhere"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
