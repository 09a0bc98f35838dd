//! The shim's logger: lock-free and allocation-free, so a forked child, a signal handler or
//! a thread racing a `fork` can always log.
//!
//! env_logger (used before) formats into a buffer behind a mutex and writes through std's
//! locked stderr: a child forked while another thread held either lock blocked forever on
//! its first line. Here each line is formatted into a buffer on the stack (cut at 1 KiB) and
//! written with one `write(2)` system call (raw `SYS_write`, so never through the shim's own
//! `write` hook), to stderr or to the `PROXIFY_LOG_FILE` opened with `O_APPEND`. No state is
//! shared but two atomics set once at start-up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};

struct Logger;

static LOGGER: Logger = Logger;
/// Where lines go (stderr unless a log file was opened).
static FD: AtomicI32 = AtomicI32::new(2);

const LINE_MAX: usize = 1024;

/// A line being formatted on the stack; what does not fit is cut (with "...").
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = LINE_MAX - 4 - self.len; // keep room for "...\n"
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.cut = true;
        }
        Ok(())
    }
}

fn level_name(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// Writes all of `b` to `fd` with raw system calls (retrying EINTR and short writes, a bounded
/// number of times).
pub(crate) fn write_all(fd: i32, mut b: &[u8]) {
    for _ in 0..64 {
        if b.is_empty() {
            return;
        }
        // SAFETY: `b` is a valid buffer of `b.len()` bytes; SYS_write touches nothing else.
        // (libc's own `syscall`, not proxify's hook of it.)
        let n = unsafe {
            crate::sys::real::syscall6(
                libc::SYS_write,
                fd as libc::c_long,
                b.as_ptr() as libc::c_long,
                b.len() as libc::c_long,
                0,
                0,
                0,
            )
        };
        if n > 0 {
            b = &b[(n as usize).min(b.len())..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, rec: &log::Record) {
        if !self.enabled(rec.metadata()) {
            return;
        }
        // Keep errno as the program's call left it: a failed write here must not change it.
        // SAFETY: errno is thread-local.
        let saved = unsafe { *libc::__errno_location() };
        let mut line = Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        };
        let _ = match rec.level() {
            log::Level::Error | log::Level::Warn => write!(line, "proxify: {}", rec.args()),
            // SAFETY: getpid has no preconditions (and is right in a forked child).
            l => write!(
                line,
                "proxify[{}] {}: {}",
                // SAFETY: getpid takes no argument.
                unsafe { libc::getpid() },
                level_name(l),
                rec.args()
            ),
        };
        if line.cut {
            line.buf[line.len..line.len + 3].copy_from_slice(b"...");
            line.len += 3;
        }
        line.buf[line.len] = b'\n';
        line.len += 1;
        write_all(FD.load(Ordering::Relaxed), &line.buf[..line.len]);
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved };
    }

    fn flush(&self) {}
}

/// The most verbose level an env_logger-style filter asks for (`warn`, `debug`,
/// `proxify=trace,warn`...; the shim is one module, so module paths only carry their level).
pub fn parse_filter(filter: &str) -> log::LevelFilter {
    let mut max = None;
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let lvl = d.rsplit('=').next().unwrap_or(d).trim();
        let l = match lvl.to_ascii_lowercase().as_str() {
            "off" => log::LevelFilter::Off,
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            // A bare module name: everything from it.
            _ if !d.contains('=') => log::LevelFilter::Trace,
            _ => continue,
        };
        max = Some(max.map_or(l, |m: log::LevelFilter| m.max(l)));
    }
    max.unwrap_or(log::LevelFilter::Warn)
}

/// Installs the logger: `filter` as [`parse_filter`], lines to `fd` (stderr: 2).
pub fn init(filter: log::LevelFilter, fd: i32) {
    FD.store(fd, Ordering::Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn filters() {
        use log::LevelFilter::*;
        assert_eq!(parse_filter("warn"), Warn);
        assert_eq!(parse_filter("off"), Off);
        assert_eq!(parse_filter("debug"), Debug);
        assert_eq!(parse_filter("proxify=trace,warn"), Trace);
        assert_eq!(parse_filter(""), Warn);
        assert_eq!(parse_filter("INFO"), Info);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut l = Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        };
        let big = "x".repeat(3000);
        let _ = write!(l, "{big}");
        assert!(l.cut && l.len == LINE_MAX - 4);
    }
}
