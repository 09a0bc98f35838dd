//! `proxify run [-x URL] ... COMMAND`: merges the settings (flags > PROXIFY_* environment >
//! config file), finds the shim, puts it first in LD_PRELOAD, exports the settings for it and
//! execs the command in place (no fork, so the exit status is the command's).

mod cli;
mod file;

use clap::error::ErrorKind;
use clap::Parser;
use cli::{Cli, RunArgs, Sub};
use proxify_core::cidr::Cidr;
use proxify_core::config::{
    parse_seconds, Config, ENV_CONNECT_TIMEOUT, ENV_DIRECT, ENV_HANDSHAKE_TIMEOUT, ENV_LOG,
    ENV_LOG_FILE, ENV_PROXY, ENV_QUIET,
};
use proxify_core::elfcheck::{self, Verdict, ENV_ALLOW_UNPROXIED};
use proxify_core::url::ProxyUrl;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{exit, Command};

/// Exit status for proxify's own errors (bad input, missing shim).
const EXIT_USAGE: i32 = 2;
/// Exit status when the command cannot be run (as in shells).
const EXIT_CANNOT_RUN: i32 = 127;

const CHAIN_UNSUPPORTED: &str = "proxy chains (several -x) are not supported yet";
const NO_PROXY: &str = "no proxy given: use -x URL or set PROXIFY_PROXY";
const SHIM_NAME: &str = "libproxify.so";
const ENV_SHIM: &str = "PROXIFY_SHIM";

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let msg = msg.lines().next().unwrap_or("").to_string();
        match info.location() {
            Some(l) => eprintln!(
                "proxify: internal error: {msg} (at {}:{})",
                l.file(),
                l.line()
            ),
            None => eprintln!("proxify: internal error: {msg}"),
        }
        exit(EXIT_USAGE);
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            // Help and version go to stdout with status 0.
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => fail(
                EXIT_USAGE,
                "no subcommand given: use 'proxify run [OPTIONS] COMMAND [ARGS...]' \
                 (see 'proxify --help')",
            ),
            _ => fail(EXIT_USAGE, &clap_error_line(&e)),
        },
    };
    match cli.command {
        Sub::Run(args) => {
            let (code, msg) = run(args);
            fail(code, &msg)
        }
    }
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("proxify: {msg}");
    exit(code)
}

/// clap's error as one line: its first paragraph, without the "error: " prefix.
fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if parts.is_empty() {
                continue;
            }
            break;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    let help = if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        "proxify run --help"
    } else {
        "proxify --help"
    };
    format!("{} (see '{help}')", parts.join(" "))
}

/// Does everything and execs the command; returns only on failure, with the exit status and
/// the one-line message.
fn run(args: RunArgs) -> (i32, String) {
    let cfg = match effective_config(&args) {
        Ok(cfg) => cfg,
        Err(msg) => return (EXIT_USAGE, msg),
    };
    let shim = match find_shim() {
        Ok(p) => p,
        Err(msg) => return (EXIT_USAGE, msg),
    };
    let preload = preload_with(shim.as_os_str(), std::env::var_os("LD_PRELOAD").as_deref());
    let allow = match allow_unproxied(&args) {
        Ok(allow) => allow,
        Err(msg) => return (EXIT_USAGE, msg),
    };

    let program = &args.command[0];
    if !allow {
        if let Some(msg) = refusal(program) {
            return (EXIT_USAGE, msg);
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..]);
    for (key, value) in cfg.to_env() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env("LD_PRELOAD", preload);
    if allow {
        // The shim reads it too: the command may then run such programs itself.
        cmd.env(ENV_ALLOW_UNPROXIED, "1");
    }
    let err = cmd.exec();
    (
        EXIT_CANNOT_RUN,
        format!(
            "cannot run '{}': {}",
            program.to_string_lossy(),
            io_error_text(&err)
        ),
    )
}

/// `--allow-unproxied`, else `PROXIFY_ALLOW_UNPROXIED`.
fn allow_unproxied(args: &RunArgs) -> Result<bool, String> {
    if args.allow_unproxied {
        return Ok(true);
    }
    match std::env::var_os(ENV_ALLOW_UNPROXIED) {
        None => Ok(false),
        Some(v) => match v.to_str() {
            Some(v) => elfcheck::parse_allow(v),
            None => Err(format!("{ENV_ALLOW_UNPROXIED} is not valid UTF-8")),
        },
    }
}

/// Why `program` must not run: the shim cannot reach it (a static, Go, setuid... program, or
/// a script run by one), so its connections would bypass the proxy. `program` is found
/// through `$PATH` as the exec will find it; a command that is not found is left to the exec
/// (which fails with 127).
fn refusal(program: &OsStr) -> Option<String> {
    let search = std::env::var_os("PATH");
    let path = elfcheck::find_in_path(program, search.as_deref())?;
    let name = program.to_string_lossy();
    let hint = "(use --allow-unproxied to run it anyway)";
    match elfcheck::inspect_with(&path, search.as_deref()) {
        Ok(Verdict::Reachable) | Ok(Verdict::CannotRun) => None,
        Ok(Verdict::Unreachable(why)) => Some(format!(
            "refusing to run {name}: {why} \u{2014} its connections would bypass the proxy {hint}"
        )),
        Err(e) => Some(format!(
            "refusing to run {name}: {e} \u{2014} its connections could bypass the proxy {hint}"
        )),
    }
}

/// The settings: flags > environment > config file > defaults.
fn effective_config(args: &RunArgs) -> Result<Config, String> {
    // Flags first: they are the cheapest to check and win anyway.
    if args.proxy.len() > 1 {
        return Err(CHAIN_UNSUPPORTED.to_string());
    }
    let flag_proxy = match args.proxy.first() {
        Some(raw) => Some(
            raw.parse::<ProxyUrl>()
                .map_err(|e| format!("-x: {}", scrub(&e.to_string(), raw)))?,
        ),
        None => None,
    };
    let mut flag_direct = Vec::new();
    for raw in &args.direct {
        flag_direct.push(raw.parse::<Cidr>().map_err(|e| format!("--direct: {e}"))?);
    }
    let seconds = |flag: &str, v: &Option<String>| match v {
        Some(s) => parse_seconds(s)
            .map(Some)
            .map_err(|e| format!("{flag}: {e}")),
        None => Ok(None),
    };
    let flag_connect_timeout = seconds("--connect-timeout", &args.connect_timeout)?;
    let flag_timeout = seconds("--timeout", &args.timeout)?;
    let flag_log = match args.verbose {
        0 => None,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    };
    // -q and -v both decide the log settings; clap rejects them together.
    let flag_sets_log = args.quiet || flag_log.is_some();

    let mut cfg = Config::default();

    // The file, when given: read and checked whole, whatever overrides it.
    if let Some(path) = &args.config {
        let f = file::load(path)?;
        if let Some(v) = f.proxies {
            cfg.proxies = v;
        }
        if let Some(v) = f.direct {
            cfg.direct = v;
        }
        if let Some(v) = f.connect_timeout {
            cfg.connect_timeout = v;
        }
        if let Some(v) = f.handshake_timeout {
            cfg.handshake_timeout = v;
        }
        if f.log.is_some() {
            cfg.log = f.log;
        }
        if f.log_file.is_some() {
            cfg.log_file = f.log_file;
        }
        if let Some(v) = f.quiet {
            cfg.quiet = v;
        }
    }

    // The environment, except the variables a flag overrides. Empty counts as unset.
    let overridden = |key: &str| match key {
        ENV_PROXY => flag_proxy.is_some(),
        ENV_DIRECT => !flag_direct.is_empty(),
        ENV_CONNECT_TIMEOUT => flag_connect_timeout.is_some(),
        ENV_HANDSHAKE_TIMEOUT => flag_timeout.is_some(),
        ENV_LOG | ENV_QUIET => flag_sets_log,
        _ => false,
    };
    let mut env: Vec<(&str, String)> = Vec::new();
    for key in [
        ENV_PROXY,
        ENV_DIRECT,
        ENV_CONNECT_TIMEOUT,
        ENV_HANDSHAKE_TIMEOUT,
        ENV_LOG,
        ENV_LOG_FILE,
        ENV_QUIET,
    ] {
        if overridden(key) {
            continue;
        }
        if let Some(v) = std::env::var_os(key).filter(|v| !v.is_empty()) {
            match v.into_string() {
                Ok(s) => env.push((key, s)),
                Err(_) => return Err(format!("{key} is not valid UTF-8")),
            }
        }
    }
    if !env.is_empty() {
        let get = |key: &str| -> Option<String> {
            env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
        };
        let from_env = Config::from_env_with(get).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(list) = get(ENV_PROXY) {
                for raw in list.split(',') {
                    msg = scrub(&msg, raw.trim());
                }
            }
            msg
        })?;
        for (key, _) in &env {
            match *key {
                ENV_PROXY => cfg.proxies = from_env.proxies.clone(),
                ENV_DIRECT => cfg.direct = from_env.direct.clone(),
                ENV_CONNECT_TIMEOUT => cfg.connect_timeout = from_env.connect_timeout,
                ENV_HANDSHAKE_TIMEOUT => cfg.handshake_timeout = from_env.handshake_timeout,
                ENV_LOG => cfg.log = from_env.log.clone(),
                ENV_LOG_FILE => cfg.log_file = from_env.log_file.clone(),
                ENV_QUIET => cfg.quiet = from_env.quiet,
                _ => {}
            }
        }
    }

    // The flags.
    if let Some(p) = flag_proxy {
        cfg.proxies = vec![p];
    }
    if !flag_direct.is_empty() {
        cfg.direct = flag_direct;
    }
    if let Some(t) = flag_connect_timeout {
        cfg.connect_timeout = t;
    }
    if let Some(t) = flag_timeout {
        cfg.handshake_timeout = t;
    }
    if args.quiet {
        cfg.quiet = true;
        cfg.log = None;
    } else if let Some(level) = flag_log {
        cfg.quiet = false;
        cfg.log = Some(level.to_string());
    }

    match cfg.proxies.len() {
        0 => Err(NO_PROXY.to_string()),
        1 => Ok(cfg),
        _ => Err(CHAIN_UNSUPPORTED.to_string()),
    }
}

/// `$PROXIFY_SHIM` (must exist), else `libproxify.so` beside our own executable. Absolute.
fn find_shim() -> Result<PathBuf, String> {
    let shim = match std::env::var_os(ENV_SHIM).filter(|v| !v.is_empty()) {
        Some(given) => {
            let given = PathBuf::from(given);
            let abs = std::fs::canonicalize(&given)
                .map_err(|e| format!("{ENV_SHIM}={}: {}", given.display(), io_error_text(&e)))?;
            if !abs.is_file() {
                return Err(format!("{ENV_SHIM}={}: not a file", given.display()));
            }
            abs
        }
        None => {
            let exe = std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .map_err(|e| {
                    format!(
                        "cannot find my own executable ({}); set {ENV_SHIM}",
                        io_error_text(&e)
                    )
                })?;
            let shim = exe.with_file_name(SHIM_NAME);
            if !shim.is_file() {
                return Err(format!(
                    "cannot find {SHIM_NAME} beside {} (set {ENV_SHIM})",
                    exe.display()
                ));
            }
            shim
        }
    };
    // The dynamic loader splits LD_PRELOAD at ':' and spaces: such a path would not load, and
    // the command would run without the shim.
    if shim
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b':' | b' ' | b'\t' | b'\n'))
    {
        return Err(format!(
            "the shim path {} contains ':' or a space, which LD_PRELOAD cannot carry",
            shim.display()
        ));
    }
    Ok(shim)
}

/// LD_PRELOAD with `shim` first, then the previous entries (without `shim` itself).
fn preload_with(shim: &OsStr, old: Option<&OsStr>) -> OsString {
    let mut out: Vec<u8> = shim.as_bytes().to_vec();
    if let Some(old) = old {
        for entry in old
            .as_bytes()
            .split(|b| matches!(b, b':' | b' ' | b'\t' | b'\n'))
        {
            if !entry.is_empty() && entry != shim.as_bytes() {
                out.push(b':');
                out.extend_from_slice(entry);
            }
        }
    }
    OsString::from_vec(out)
}

/// The OS's text for an I/O error (strerror), without Rust's " (os error N)".
pub(crate) fn io_error_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            // SAFETY: strerror returns a valid NUL-terminated string; single-threaded process.
            let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) };
            s.to_string_lossy().into_owned()
        }
        None => e.to_string(),
    }
}

/// Byte range of the password in a raw proxy URL, if it has one.
fn password_range(raw: &str) -> Option<std::ops::Range<usize>> {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[start..];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    let range = start + colon + 1..start + at;
    (!range.is_empty()).then_some(range)
}

/// The raw URL with its password replaced by `***`, for messages.
fn mask_raw(raw: &str) -> String {
    match password_range(raw) {
        Some(r) => format!("{}***{}", &raw[..r.start], &raw[r.end..]),
        None => raw.to_string(),
    }
}

/// `msg` with every trace of the password of the raw URL `raw` replaced by `***`.
pub(crate) fn scrub(msg: &str, raw: &str) -> String {
    let Some(r) = password_range(raw) else {
        return msg.to_string();
    };
    let pass = &raw[r];
    let mut out = msg.replace(raw, &mask_raw(raw));
    out = out.replace(pass, "***");
    let decoded = percent_decode_lossy(pass);
    if !decoded.is_empty() {
        out = out.replace(&decoded, "***");
    }
    out
}

/// Percent-decoding that leaves invalid escapes as they are (only used to hide passwords).
fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(shim: &str, old: Option<&str>) -> String {
        preload_with(OsStr::new(shim), old.map(OsStr::new))
            .into_string()
            .unwrap()
    }

    #[test]
    fn preload_keeps_others_and_never_doubles() {
        assert_eq!(pre("/a/libproxify.so", None), "/a/libproxify.so");
        assert_eq!(pre("/a/libproxify.so", Some("")), "/a/libproxify.so");
        assert_eq!(
            pre("/a/libproxify.so", Some("/b/x.so")),
            "/a/libproxify.so:/b/x.so"
        );
        assert_eq!(
            pre("/a/libproxify.so", Some("/b/x.so:/a/libproxify.so /c/y.so")),
            "/a/libproxify.so:/b/x.so:/c/y.so"
        );
        assert_eq!(
            pre("/a/libproxify.so", Some("/a/libproxify.so")),
            "/a/libproxify.so"
        );
    }

    #[test]
    fn passwords_are_masked() {
        let raw = "socks5h://alice:s%40cret@proxy.example:1080";
        assert_eq!(mask_raw(raw), "socks5h://alice:***@proxy.example:1080");
        assert_eq!(
            scrub(&format!("bad thing in {raw}"), raw),
            "bad thing in socks5h://alice:***@proxy.example:1080"
        );
        assert_eq!(
            scrub("password s@cret rejected", raw),
            "password *** rejected"
        );
        assert_eq!(scrub("password s%40cret", raw), "password ***");
        // No password: nothing to hide.
        assert_eq!(mask_raw("socks5://bob@h"), "socks5://bob@h");
        assert_eq!(scrub("x", "socks5://h:1"), "x");
        assert_eq!(mask_raw("socks5://u:@h"), "socks5://u:@h");
    }

    #[test]
    fn lossy_decoding() {
        assert_eq!(percent_decode_lossy("a%41%zz%4"), "aA%zz%4");
        assert_eq!(percent_decode_lossy("%"), "%");
    }
}
