#![cfg_attr(not(test), no_main)]
// Under `cargo test` the harness supplies `main`: the entry path below is not reached there.
#![cfg_attr(test, allow(dead_code))]
//! `proxify run [-x URL] ... COMMAND`: merges the settings (flags > PROXIFY_* environment >
//! config file), finds the shim, puts it first in LD_PRELOAD, exports the settings for it and
//! execs the command in place (no fork, so the exit status is the command's).
//! `proxify config [...]`: prints those settings and where each came from.
//! `proxify check [...] [HOST:PORT]`: checks the proxies step by step (see `check`).
//! `proxify completions SHELL`, `proxify man`: generated from the clap definitions.
//!
//! `proxify run` is a launcher, and its start-up is most of what it costs: the `run`
//! subcommand is parsed with its own definition (`parse_run`), the command is judged with only
//! what its file needs (`progcheck::judge`), and the exec passes the inherited environment on
//! as it is (`exec`).
//!
//! Size: ~990 lines, ~200 of them unit tests: every subcommand's glue, of which `proxify run`
//! (`run` to `preload_with`, ~330 lines) is the largest. Should be split: `run` into run.rs and the
//! password scrubbing (`scrub` and its helpers) into a module of its own; not done yet.

mod alias;
mod check;
mod cli;
mod docs;
mod exec;
mod fastrun;
mod file;
mod settings;
mod shellenv;
mod show;
mod trace;
mod values;

use clap::error::ErrorKind;
use cli::{Cli, ConfigArgs, EnvArgs, RunArgs, ShellArgs, Sub};
use proxify_core::config::ENV_DNS_FD;
use proxify_core::progcheck::{self, Verdict, ENV_ALLOW_UNPROXIED};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{exit, Command};

/// Exit status for proxify's own errors (bad input, missing shim).
const EXIT_USAGE: i32 = 2;
/// Exit status when the command cannot be run (as in shells).
const EXIT_CANNOT_RUN: i32 = 127;

const NO_PROXY: &str =
    "no proxy given: use -x URL, set PROXIFY_PROXY, or give a config file (-f FILE, --proxychains)";
const SHIM_NAME: &str = "libproxify.so";
const ENV_SHIM: &str = "PROXIFY_SHIM";

// No `fn main`: std's runtime set-up (the main thread's stack-guard probe, which parses
// /proc/self/maps through pthread_getattr_np, about a sixth of this process's instructions)
// is skipped. Everything else std needs works without it on glibc (arguments come from
// .init_array); SIGPIPE is ignored here as std would (a closed pipe is an error we report).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions; exec resets it
    // to the default for the command (std's Command does).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    real_main();
    0
}

/// The command line, parsed. The clap definition is large and this process is about to exec
/// or exit: it is left to the exit rather than freed (freeing it cost as much as parsing).
fn parse(argv: &[OsString]) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    if let Some(args) = fastrun::parse(argv) {
        return Ok(Cli {
            command: Sub::Run(args),
        });
    }
    if let Some(cli) = parse_run(argv) {
        return Ok(cli);
    }
    let cmd = Box::leak(Box::new(Cli::command()));
    let mut m = cmd.try_get_matches_from_mut(argv)?;
    Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(cmd))
}

/// `proxify run ...` parsed with a command line of the `run` subcommand alone: building the
/// whole definition (every subcommand, each with the settings flags and their help texts) was
/// most of the time `proxify run` spent before its exec. The `run` subcommand is the same
/// definition, so a command line it takes is parsed as the whole one would; anything else
/// (help, a usage error) is `None`, and the whole definition parses it again for its message.
fn parse_run(argv: &[OsString]) -> Option<Cli> {
    use clap::{Args, FromArgMatches};
    if argv.get(1).is_none_or(|a| a != "run") {
        return None;
    }
    let run = RunArgs::augment_args(clap::Command::new("run"));
    let cmd = Box::leak(Box::new(clap::Command::new("proxify").subcommand(run)));
    let mut m = cmd.try_get_matches_from_mut(argv).ok()?;
    let (name, mut sub) = m.remove_subcommand()?;
    if name != "run" {
        return None;
    }
    let args = RunArgs::from_arg_matches_mut(&mut sub).ok()?;
    Some(Cli {
        command: Sub::Run(args),
    })
}

fn real_main() {
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

    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv.first().is_some_and(|a| alias::is_alias(a)) {
        let quiet = std::env::var_os("PROXYCHAINS_QUIET_MODE");
        match alias::translate(&argv[1..], quiet.as_deref()) {
            alias::Alias::Run(args) => {
                argv = std::iter::once("proxify".into()).chain(args).collect()
            }
            alias::Alias::Usage => {
                eprint!("{}", alias::usage(&argv[0]));
                exit(1)
            }
        }
    }
    let cli = match parse(&argv) {
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
        Sub::Config(args) => show_config(args),
        Sub::Check(args) => check::main(args),
        Sub::Completions(args) => {
            write_stdout_bytes(&docs::completions(args.shell));
            exit(0)
        }
        Sub::Man => {
            write_stdout(&docs::man_page());
            exit(0)
        }
        Sub::Shell(args) => {
            let (code, msg) = shell(args);
            fail(code, &msg)
        }
        Sub::Env(args) => env_lines(args),
        Sub::Trace(args) => show_trace(args),
    }
}

/// `proxify trace [--summary] FILE`.
fn show_trace(args: cli::TraceArgs) -> ! {
    let data = match std::fs::read(&args.file) {
        Ok(d) => d,
        Err(e) => fail(
            EXIT_USAGE,
            &format!(
                "cannot read the trace {}: {}",
                args.file.display(),
                io_error_text(&e)
            ),
        ),
    };
    let t = trace::Trace::parse(&String::from_utf8_lossy(&data));
    write_stdout(&if args.summary {
        t.summary()
    } else {
        t.render()
    });
    if t.bad > 0 {
        eprintln!(
            "proxify: {} of {} lines of {} are not trace lines: skipped",
            t.bad,
            t.lines,
            args.file.display()
        );
    }
    exit(0)
}

/// `proxify shell`: `proxify run -- $SHELL`, with the prompt marker (see `shellenv`).
fn shell(args: ShellArgs) -> (i32, String) {
    let plan = shellenv::plan(std::env::var_os("SHELL").as_deref());
    let mut command = plan.argv;
    for (k, v) in &plan.env {
        std::env::set_var(k, v);
    }
    if let Some(rc) = plan.bash_rc {
        // An inheritable memfd (no MFD_CLOEXEC) that bash reads as --rcfile; the rc file
        // closes it again, so the shell's commands do not inherit it.
        // SAFETY: a NUL-terminated name; memfd_create has no other preconditions.
        let fd = unsafe { libc::memfd_create(c"proxify-bashrc".as_ptr(), 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return (
                EXIT_USAGE,
                format!("cannot create the shell's rc file: {}", io_error_text(&e)),
            );
        }
        let text = format!("{rc}exec {fd}<&-\n");
        // SAFETY: fd is the memfd just created; the buffer is valid for its length.
        let n = unsafe { libc::pwrite(fd, text.as_ptr().cast(), text.len(), 0) };
        if n != text.len() as isize {
            return (EXIT_USAGE, "cannot write the shell's rc file".to_string());
        }
        command.push("--rcfile".into());
        command.push(format!("/dev/fd/{fd}").into());
        command.push("-i".into());
    }
    run(RunArgs {
        settings: args.settings,
        allow_unproxied: false,
        mode: None,
        enforce: false,
        command,
    })
}

/// `proxify env [--off]`: prints `export`/`unset` lines for `eval`.
fn env_lines(args: EnvArgs) -> ! {
    let mut names: Vec<&str> = proxify_core::config::Config::default()
        .to_env()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.extend([ENV_DNS_FD, ENV_ALLOW_UNPROXIED, shellenv::ENV_SHELL]);
    if args.off {
        let ld = std::env::var_os("LD_PRELOAD");
        write_stdout(&shellenv::off_lines(&names, ld.as_deref(), SHIM_NAME));
        exit(0)
    }
    let eff = match settings::effective(&args.settings) {
        Ok(e) => e,
        Err(msg) => fail(EXIT_USAGE, &msg),
    };
    if eff.config.chains.is_empty() {
        fail(EXIT_USAGE, NO_PROXY);
    }
    let shim = find_shim().unwrap_or_else(|msg| fail(EXIT_USAGE, &msg));
    let preload = preload_with(shim.as_os_str(), std::env::var_os("LD_PRELOAD").as_deref());
    let mut vars: Vec<(String, Option<OsString>)> = eff
        .config
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(OsString::from)))
        .collect();
    // No placeholder table can outlive this command: each proxied command makes its own.
    vars.push((ENV_DNS_FD.to_string(), None));
    vars.push(("LD_PRELOAD".to_string(), Some(preload)));
    write_stdout(&shellenv::export_lines(&vars));
    exit(0)
}

/// Writes `text` to standard output; a closed pipe is not an error (`proxify man | head`).
pub(crate) fn write_stdout(text: &str) {
    write_stdout_bytes(text.as_bytes())
}

fn write_stdout_bytes(data: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(data).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            fail(EXIT_USAGE, &format!("cannot write: {}", io_error_text(&e)));
        }
    }
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("proxify: {msg}");
    exit(code)
}

/// clap's error as one line: its first paragraph, without the "error: " prefix. A value a
/// typed parser refused is told as `--flag: why` (never echoing the value: it may be a URL
/// with a password).
fn clap_error_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use std::error::Error;
    if e.kind() == ErrorKind::ValueValidation {
        if let (Some(ContextValue::String(arg)), Some(why)) =
            (e.get(ContextKind::InvalidArg), e.source())
        {
            let name = arg.split_whitespace().next().unwrap_or(arg);
            return match name {
                "--proxy" => format!("-x: {why}"),
                n if n.starts_with('<') => format!("{} {why}", n.trim_matches(['<', '>'])),
                n => format!("{n}: {why}"),
            };
        }
    }
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
    let help = match std::env::args_os().nth(1) {
        Some(a) if a == "run" => "proxify run --help",
        Some(a) if a == "config" => "proxify config --help",
        Some(a) if a == "check" => "proxify check --help",
        Some(a) if a == "completions" => "proxify completions --help",
        Some(a) if a == "man" => "proxify man --help",
        Some(a) if a == "shell" => "proxify shell --help",
        Some(a) if a == "env" => "proxify env --help",
        _ => "proxify --help",
    };
    format!("{} (see '{help}')", parts.join(" "))
}

/// Does everything and execs the command; returns only on failure, with the exit status and
/// the one-line message.
fn run(args: RunArgs) -> (i32, String) {
    let eff = match settings::effective(&args.settings) {
        Ok(e) => e,
        Err(msg) => return (EXIT_USAGE, msg),
    };
    if eff.config.chains.is_empty() {
        return (EXIT_USAGE, NO_PROXY.to_string());
    }
    if !eff.config.quiet {
        for w in &eff.warnings {
            eprintln!("proxify: {w}");
        }
    }
    let cred_from = proxify_core::config::format_cred_from(&settings::cred_sources(&eff));
    let (mode, enforce) = match run_mode(&args, &eff) {
        Ok(m) => m,
        Err(msg) => return (EXIT_USAGE, msg),
    };
    let cfg = eff.config;
    if let Some(path) = &cfg.trace {
        // Each run starts its trace afresh (the shim appends, and caps by the file's size).
        if let Err(e) = std::fs::File::create(path) {
            return (
                EXIT_USAGE,
                format!("cannot write the trace file {path}: {}", io_error_text(&e)),
            );
        }
    }
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
    let verdict = unproxied(program, &args.command[1..]);
    let supervise = match mode {
        // --enforce: preloaded and supervised, below.
        _ if enforce => false,
        Mode::Preload => false,
        Mode::Supervise => true,
        // Static and Go programs (and scripts run by one) are supervised.
        Mode::Auto => verdict.as_ref().is_some_and(supervisable),
    };
    if supervise {
        if let Some(v) = verdict.as_ref().filter(|v| !allow && refused_supervised(v)) {
            return (
                EXIT_USAGE,
                format!(
                    "refusing to run {}: {} \u{2014} under supervision it would not work as \
                     it should ({})",
                    program.to_string_lossy(),
                    v.reason(),
                    v.fix()
                ),
            );
        }
        let mut cmd = Command::new(program);
        cmd.args(&args.command[1..]);
        return proxify_supervise::run(
            cmd,
            &cfg,
            proxify_supervise::Options {
                allow_unproxied: allow,
                cred_from: (!cred_from.is_empty()).then(|| cred_from.clone()),
                enforce: false,
                dns_table: None,
            },
        );
    }
    if enforce {
        // Static and Go programs run supervised (the shim cannot reach them, the filter
        // does); setuid and other-architecture ones are refused as under supervision.
        if let Some(v) = verdict.as_ref().filter(|v| !allow && refused_supervised(v)) {
            return (
                EXIT_USAGE,
                format!(
                    "refusing to run {}: {} \u{2014} under --enforce it would not work as it \
                     should ({})",
                    program.to_string_lossy(),
                    v.reason(),
                    v.fix()
                ),
            );
        }
    } else if let Some(verdict) = verdict {
        if !allow {
            return (
                EXIT_USAGE,
                format!("refusing to run {}: {verdict}", program.to_string_lossy()),
            );
        }
        if !cfg.quiet {
            eprintln!(
                "proxify: {}",
                progcheck::allowed_line(&program.to_string_lossy(), &verdict)
            );
        }
    }
    // The command's environment: these variables set (Some) or removed (None), in order.
    let mut env: Vec<(&str, Option<OsString>)> = cfg
        .to_env()
        .into_iter()
        .map(|(k, v)| (k, v.map(OsString::from)))
        .collect();
    env.push(("LD_PRELOAD", Some(preload)));
    env.push((
        proxify_core::config::ENV_CRED_FROM,
        (!cred_from.is_empty()).then(|| cred_from.clone().into()),
    ));
    if allow {
        // The shim reads it too: the command may then run such programs itself.
        env.push((ENV_ALLOW_UNPROXIED, Some("1".into())));
    }
    let table = dns_table();
    env.push((ENV_DNS_FD, table.clone().map(OsString::from)));
    if enforce {
        let mut cmd = Command::new(program);
        cmd.args(&args.command[1..]);
        for (key, value) in &env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        // The shim's exec hook reads it as a fixed setting: static and Go children run (the
        // inherited filter supervises them).
        cmd.env(settings::ENV_ENFORCE, "1");
        return proxify_supervise::run(
            cmd,
            &cfg,
            proxify_supervise::Options {
                allow_unproxied: allow,
                cred_from: (!cred_from.is_empty()).then(|| cred_from.clone()),
                enforce: true,
                dns_table: table,
            },
        );
    }
    // Only --enforce hands the shim the proxies' addresses (proxify_supervise::run sets it).
    env.push((settings::ENV_ENFORCE, None));
    env.push((proxify_core::config::ENV_HOP_ADDRS, None));
    let env: Vec<(&str, Option<&OsStr>)> = env.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    let err = exec::exec(program, &args.command[1..], &env);
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
            Some(v) => progcheck::parse_allow(v),
            None => Err(format!("{ENV_ALLOW_UNPROXIED} is not valid UTF-8")),
        },
    }
}

/// How programs are reached (`--mode` > `PROXIFY_MODE` > the file's `mode` > auto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Auto,
    Preload,
    Supervise,
}

fn run_mode(args: &RunArgs, eff: &settings::Effective) -> Result<(Mode, bool), String> {
    let c = settings::run_choice_env(args.mode.as_deref(), args.enforce, eff)?;
    let mode = match c.mode.value.as_str() {
        "preload" => Mode::Preload,
        "supervise" => Mode::Supervise,
        _ => Mode::Auto,
    };
    Ok((mode, c.enforce.value))
}

/// Can the supervisor carry this program's connections? (Static and Go programs, and
/// scripts or the loader running one.)
fn supervisable(v: &Verdict) -> bool {
    matches!(v.innermost(), Verdict::Static | Verdict::Go)
}

/// Programs refused under supervision too: setuid/setgid/capability programs (under
/// no_new_privs they would run without their privileges) and other architectures (whose
/// system calls the filter refuses).
fn refused_supervised(v: &Verdict) -> bool {
    matches!(
        v.innermost(),
        Verdict::PrivilegeChange(_) | Verdict::OtherArch { .. }
    )
}

/// The verdict on `program` when the shim cannot reach it (a static, Go, setuid... program,
/// a script run by one, the dynamic loader running one), so that its connections would
/// bypass the proxy. `program` is found through `$PATH` as the exec will find it; a command
/// that is not found is left to the exec (which fails with 127).
fn unproxied(program: &OsStr, args: &[OsString]) -> Option<Verdict> {
    let search = std::env::var_os("PATH");
    let path = progcheck::find_in_path(program, search.as_deref())?;
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let verdict = progcheck::judge(&path, &args);
    (!verdict.is_proxied()).then_some(verdict)
}

/// `proxify config`: prints the effective settings; exit 0, or 2 with one line on error.
fn show_config(args: ConfigArgs) -> ! {
    let eff = match settings::effective(&args.settings) {
        Ok(e) => e,
        Err(msg) => fail(EXIT_USAGE, &msg),
    };
    let text = if args.json {
        show::json(&eff)
    } else {
        let mut t = show::human(&eff);
        for w in &eff.warnings {
            t.push_str(w);
            t.push('\n');
        }
        t
    };
    write_stdout(&text);
    exit(0)
}

/// `$PROXIFY_SHIM` (must exist), else `../lib/proxify/libproxify.so` from our own executable's
/// real path (the installed layout), else `libproxify.so` beside it. Absolute.
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
            let exe = own_executable().map_err(|e| {
                format!(
                    "cannot find my own executable ({}); set {ENV_SHIM}",
                    io_error_text(&e)
                )
            })?;
            // Installed layout first (PREFIX/bin/proxify, PREFIX/lib/proxify/libproxify.so),
            // then the build layout (target/release: side by side).
            let installed = exe
                .parent()
                .and_then(|bin| bin.parent())
                .map(|prefix| prefix.join("lib/proxify").join(SHIM_NAME));
            match installed.filter(|p| p.is_file()) {
                Some(p) => p,
                None => {
                    let shim = exe.with_file_name(SHIM_NAME);
                    if !shim.is_file() {
                        return Err(format!(
                            "cannot find {SHIM_NAME} in {}/../lib/proxify/ or beside it \
                             (reinstall with scripts/install.sh, or set {ENV_SHIM})",
                            exe.parent().unwrap_or(&exe).display()
                        ));
                    }
                    shim
                }
            }
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

/// Our own executable's real path: the path it was run by (`AT_EXECFN`, what `execve` was
/// given, relative to our working directory, which is still the one it was run in) with its
/// symbolic links resolved, else the target of `/proc/self/exe` resolved the same way (when
/// that path does not resolve, e.g. `fexecve` of a descriptor closed on exec). The same file
/// but for a binary replaced since it started (then the path, which is what the shim is
/// looked up by, is the one it was run by); reading `/proc/self/exe` costs more than the rest
/// of the look-up, as it is this process's first use of /proc.
fn own_executable() -> std::io::Result<PathBuf> {
    // SAFETY: getauxval has no preconditions; for AT_EXECFN it returns the address of a
    // NUL-terminated string the kernel put on the initial stack (never freed), or 0.
    let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if !execfn.is_null() {
        // SAFETY: see above: a NUL-terminated string that lives as long as the process.
        let given = unsafe { std::ffi::CStr::from_ptr(execfn) };
        if let Ok(real) = std::fs::canonicalize(OsStr::from_bytes(given.to_bytes())) {
            return Ok(real);
        }
    }
    std::env::current_exe().and_then(std::fs::canonicalize)
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

/// Creates the remote-DNS placeholder table that every process of this run shares: a memfd
/// (inherited across fork and exec, so not close-on-exec) of the table's size, moved to a high
/// fd number. Returns the `FD:TOKEN` value for the shim, or None (each process then keeps its
/// own table: placeholders still never leak, they only do not cross exec).
fn dns_table() -> Option<String> {
    let mut raw = [0u8; 8];
    // SAFETY: getrandom writes at most raw.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(raw.as_mut_ptr() as *mut libc::c_void, raw.len(), 0) };
    if n != raw.len() as isize {
        return None;
    }
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let name = std::ffi::CString::new(proxify_core::config::dns_table_name(&token)).ok()?;
    // SAFETY: memfd_create reads the NUL-terminated name we own.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    let size = proxify_core::config::DNS_TABLE_BYTES as libc::off_t;
    // SAFETY: ftruncate on the memfd we just created.
    if unsafe { libc::ftruncate(fd, size) } != 0 {
        // SAFETY: our own memfd, closed once.
        unsafe { libc::close(fd) };
        return None;
    }
    // Out of the way of programs that expect the low numbers to be free.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a struct we own.
    let high = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        (lim.rlim_cur.min(1024) as libc::c_int)
            .saturating_sub(64)
            .max(3)
    } else {
        3
    };
    // SAFETY: F_DUPFD of our own memfd takes no pointer.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD, high) };
    let fd = if moved >= 0 {
        // SAFETY: the original number of the memfd, replaced by its copy; closed once.
        unsafe { libc::close(fd) };
        moved
    } else {
        fd
    };
    Some(format!("{fd}:{token}"))
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
    fn run_alone_parses_as_the_whole_command_line() {
        use clap::{CommandFactory, FromArgMatches};
        let full = |argv: &[OsString]| -> Result<Cli, String> {
            let mut m = Cli::command()
                .try_get_matches_from(argv)
                .map_err(|e| e.to_string())?;
            Cli::from_arg_matches_mut(&mut m).map_err(|e| e.to_string())
        };
        let lines: &[&[&str]] = &[
            &[
                "run",
                "-x",
                "socks5h://198.51.100.1:1080",
                "--",
                "/bin/true",
            ],
            &[
                "run",
                "-x",
                "socks5://h",
                "curl",
                "-v",
                "-x",
                "y",
                "--",
                "--proxy",
            ],
            &["run", "-vv", "--", "-weird", "-q"],
            &[
                "run",
                "--proxy=socks4a://h",
                "-f",
                "c.toml",
                "--direct",
                "10.0.0.0/8",
            ],
            &[
                "run",
                "--connect-timeout",
                "2",
                "--timeout",
                "0.5",
                "-q",
                "true",
            ],
            &[
                "run",
                "--allow-unproxied",
                "--chain-mode",
                "dynamic",
                "--chain-len",
                "2",
                "t",
            ],
            &[
                "run",
                "--rule",
                "*.lan direct",
                "--rule",
                "* deny",
                "--dnat",
                "192.0.2.1 192.0.2.2",
                "t",
            ],
            &[
                "run",
                "--no-proxy-env",
                "--mode",
                "supervise",
                "--enforce",
                "t",
                "a",
            ],
            &[
                "run",
                "--ignore-no-proxy",
                "--proxychains",
                "--bind",
                "always",
                "t",
            ],
            &[
                "run",
                "--trace",
                "/tmp/t",
                "--dns-server",
                "192.0.2.1:53",
                "-vvv",
                "t",
            ],
            &[
                "run",
                "-x",
                "socks5://a",
                "-x",
                "socks5://b",
                "--mode=auto",
                "true",
            ],
            &["run", "true", "--help"],
            &["run", "--", "--help"],
            // Help and usage errors: left to the whole definition.
            &["run"],
            &["run", "--help"],
            &["run", "-h", "true"],
            &["run", "-V"],
            &["run", "--version", "true"],
            &["run", "-x"],
            &["run", "-q", "-v", "true"],
            &["run", "--bogus", "true"],
            &["run", "-f", "a", "--proxychains", "true"],
            &["run", "--no-proxy-env", "--ignore-no-proxy", "true"],
            &["run", "-x", "socks9://h", "true"],
            &["run", "--mode", "sometimes", "true"],
            &["run", "--chain-len", "0", "true"],
            &["config", "-x", "socks5://h"],
            &["runx", "true"],
            &["--version"],
            &[],
        ];
        for line in lines {
            let argv: Vec<OsString> = std::iter::once("proxify")
                .chain(line.iter().copied())
                .map(OsString::from)
                .collect();
            let whole = full(&argv);
            match parse_run(&argv) {
                Some(fast) => assert_eq!(
                    format!("{:?}", fast),
                    format!("{:?}", whole.expect("the whole definition takes it too")),
                    "{line:?}"
                ),
                None => assert!(
                    whole.is_err() || line.first() != Some(&"run"),
                    "{line:?}: only help and errors are left to the whole definition"
                ),
            }
        }
        // Non-UTF-8 arguments reach the command untouched on both paths.
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let argv: Vec<OsString> = ["proxify", "run", "-x", "socks5://h", "cat"]
            .into_iter()
            .map(OsString::from)
            .chain([odd.clone()])
            .collect();
        match parse_run(&argv).expect("parsed").command {
            Sub::Run(a) => assert_eq!(a.command.last(), Some(&odd)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn lossy_decoding() {
        assert_eq!(percent_decode_lossy("a%41%zz%4"), "aA%zz%4");
        assert_eq!(percent_decode_lossy("%"), "%");
    }
}
