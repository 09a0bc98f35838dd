//! proxify's supervisor mode: a program the dynamic loader cannot preload into (static, Go)
//! runs under a seccomp filter whose `connect`, `getpeername` and datagram sends are
//! notified to us. Each connect is carried out on the program's own socket (a `pidfd_getfd`
//! duplicate): to the proxy, with proxify-core's chain handshake, or directly for loopback and
//! direct routes. See [`supervisor`] for the event loop and [`filter`] for the filter.
//!
//! Fail closed: when the supervisor is gone, every notified call fails (the kernel answers
//! ENOSYS); nothing goes direct. A kernel without the needed features (or a program already
//! under a seccomp listener) is refused with one line unless `--allow-unproxied`.

pub mod filter;
mod launch;
mod names;
pub mod route;
mod sockaddr;
mod supervisor;
mod sys;

use proxify_core::config::Config;
use std::process::Command;
use supervisor::{Log, Supervisor};

/// Exit status for proxify's own errors.
const EXIT_USAGE: i32 = 2;
/// Exit status when the command cannot be run.
const EXIT_CANNOT_RUN: i32 = 127;

pub struct Options {
    pub allow_unproxied: bool,
    /// Where each hop's credentials came from (`PROXIFY_CRED_FROM`'s value), for the line of
    /// a rejected username/password.
    pub cred_from: Option<String>,
    /// `--enforce`: the command is preloaded with the shim too (its environment is set), and
    /// the shim's own connects to the proxy go as they are.
    pub enforce: bool,
    /// The `FD:TOKEN` of the remote-DNS placeholder table the command was given (shared with
    /// the shim), if any.
    pub dns_table: Option<String>,
}

/// Each proxy host name of the configuration (`NAME:PORT`) and its addresses, resolved here
/// with the system resolver; a name that does not resolve is left out (the shim then fails
/// to reach that proxy, as it would without us).
fn resolve_hops(cfg: &Config) -> Vec<(String, Vec<std::net::SocketAddr>)> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<(String, Vec<std::net::SocketAddr>)> = Vec::new();
    for c in &cfg.chains {
        for h in &c.hops {
            let proxify_core::url::Host::Name(n) = &h.host else {
                continue;
            };
            let key = format!("{n}:{}", h.port);
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Ok(it) = (n.as_str(), h.port).to_socket_addrs() {
                let mut v: Vec<std::net::SocketAddr> = Vec::new();
                for a in it {
                    if !v.contains(&a) {
                        v.push(a);
                    }
                }
                if !v.is_empty() {
                    out.push((key, v));
                }
            }
        }
    }
    out
}

/// Whether this kernel can supervise programs: None, or what is missing.
pub fn kernel_support() -> Option<String> {
    launch::probe()
}

/// The configuration exactly as the shim would read it from the environment `cfg` exports,
/// so both modes decide alike.
fn as_the_shim_sees_it(cfg: &Config) -> Result<Config, String> {
    let env: std::collections::HashMap<&str, String> = cfg
        .to_env()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    Config::from_env_with(|k| env.get(k).cloned()).map_err(|e| e.to_string())
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
    }
    set
}

/// Ends this process as the command ended: its exit code, or the same signal.
fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: resets the disposition and mask of one signal, limits core dumps, raises it.
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::signal(sig, libc::SIG_DFL);
            let set = sigset(&[sig]);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

/// Runs `cmd` supervised and exits with its status; returns only when it could not be run,
/// with the exit status and the one line to print.
pub fn run(mut cmd: Command, cfg: &Config, opts: Options) -> (i32, String) {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let cfg = match as_the_shim_sees_it(cfg) {
        Ok(c) => c,
        Err(e) => return (EXIT_USAGE, e),
    };
    let verbose = cfg
        .log
        .as_deref()
        .is_some_and(|l| l.contains("debug") || l.contains("trace") || l.contains("info"));
    let log = Log {
        quiet: cfg.quiet,
        verbose,
    };
    let resolved = if opts.enforce {
        let r = resolve_hops(&cfg);
        cmd.env(
            proxify_core::config::ENV_HOP_ADDRS,
            proxify_core::config::format_hop_addrs(&r),
        );
        r
    } else {
        Vec::new()
    };
    let mut all = launch::FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    let set = sigset(&all);
    // SAFETY: sigset_t is plain data; sigprocmask/signalfd take valid pointers.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let sfd = unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sfd < 0 {
        return (EXIT_USAGE, "signalfd failed".into());
    }
    let started = launch::start(&mut cmd, opts.allow_unproxied, old);
    let (child, listener) = match started {
        Ok(launch::Started::Supervised(c, l)) => (c, Some(l)),
        Ok(launch::Started::Unsupervised(c, e)) => {
            log.warn(&format!(
                "running {program} unsupervised (--allow-unproxied): the kernel refused the \
                 seccomp filter: {}",
                sys::strerror(e)
            ));
            (c, None)
        }
        Err(launch::LaunchError::Filter(e)) => {
            let why = if e == libc::EBUSY {
                "a seccomp listener is already installed (is it supervised already?)".to_string()
            } else {
                format!(
                    "the kernel refused the seccomp filter: {}",
                    sys::strerror(e)
                )
            };
            return (
                EXIT_USAGE,
                format!(
                    "cannot supervise {program}: {why} \u{2014} its connections would bypass \
                     the proxy ({})",
                    proxify_core::progcheck::ALLOW_FIX
                ),
            );
        }
        Err(launch::LaunchError::Exec(e)) => {
            let text = match e.raw_os_error() {
                Some(c) => sys::strerror(c),
                None => e.to_string(),
            };
            return (EXIT_CANNOT_RUN, format!("cannot run '{program}': {text}"));
        }
        Err(launch::LaunchError::Other(m)) => return (EXIT_USAGE, m),
    };
    let pid = child.id() as libc::pid_t;
    drop(child); // we reap it ourselves
    let Some(listener) = listener else {
        // Unsupervised: just forward signals and wait.
        loop {
            match handle_signals(sfd, Some(pid)) {
                Some(status) => exit_like(status),
                None => {
                    let mut p = libc::pollfd {
                        fd: sfd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd.
                    unsafe { libc::poll(&mut p, 1, -1) };
                }
            }
        }
    };
    let mut sup = match Supervisor::new(listener, sfd, cfg, log, opts.dns_table.as_deref()) {
        Ok(mut s) => {
            s.cred_from = opts.cred_from;
            if opts.enforce {
                s.enforce(resolved);
            }
            s
        }
        Err(e) => {
            // SAFETY: kills the child we started (the listener dies with us anyway).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return (EXIT_USAGE, format!("cannot supervise: {e}"));
        }
    };
    let mut child_pid = Some(pid);
    loop {
        let signalled = sup.wait();
        if signalled {
            if let Some(status) = handle_signals(sfd, child_pid) {
                child_pid = None;
                if !sup.listener_alive() {
                    exit_like(status);
                }
                // Processes the command left behind (daemons) are still supervised: their
                // supervisor goes on in the background while we exit with the status.
                // SAFETY: single-threaded; the child only continues the loop.
                let f = unsafe { libc::fork() };
                if f != 0 {
                    exit_like(status);
                }
                // SAFETY: detaches the background supervisor from the terminal's group.
                unsafe { libc::setsid() };
            }
        } else {
            match child_pid {
                None => std::process::exit(0),
                Some(p) => {
                    let mut status = 0;
                    // SAFETY: waits for our child.
                    unsafe { libc::waitpid(p, &mut status, 0) };
                    exit_like(status);
                }
            }
        }
    }
}

/// Reads pending signals: forwards those sent by other processes to `child`, reaps `child`
/// on SIGCHLD. Returns its wait status once it ended.
fn handle_signals(sfd: libc::c_int, child: Option<libc::pid_t>) -> Option<libc::c_int> {
    let mut ended = None;
    loop {
        // SAFETY: signalfd_siginfo is plain data.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let sz = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads one signalfd_siginfo into `si`.
        let n = unsafe { libc::read(sfd, &mut si as *mut _ as *mut libc::c_void, sz) };
        if n != sz as isize {
            break;
        }
        let sig = si.ssi_signo as libc::c_int;
        if sig == libc::SIGCHLD {
            if let Some(p) = child {
                let mut status = 0;
                // SAFETY: non-blocking wait for our child.
                if unsafe { libc::waitpid(p, &mut status, libc::WNOHANG) } == p {
                    ended = Some(status);
                }
            }
            // Reap anything else (nothing else is ours, but stay tidy).
            continue;
        }
        // SI_USER (0), SI_QUEUE (-1)...: sent by a process. A terminal's signals (SI_KERNEL)
        // reached the command's process group already.
        if si.ssi_code <= 0 {
            if let Some(p) = child {
                // SAFETY: forwards the signal to our child.
                unsafe { libc::kill(p, sig) };
            }
        }
    }
    ended
}
