//! The trace (`proxify run --trace FILE`): one JSON line per decision and per outcome.
//!
//! Written as the logger writes (`sys/logger.rs`): each line is formatted into a buffer on the
//! stack and written with one raw `SYS_write` to a file opened once, at start-up, with
//! `O_APPEND | O_CLOEXEC`. No lock and no allocation on the way (proxy URLs are written
//! from the parsed URL, never rendered to a `String`), so a forked child or a thread racing a
//! `fork` always writes whole lines; every line carries its pid, and `O_APPEND` makes lines of
//! processes sharing the file interleave whole. An exec'd program opens the file again (its
//! path is in `PROXIFY_TRACE`).
//!
//! The fd is moved to a high number (below 1024, so `select` users are not disturbed), out of
//! the way of the small numbers programs reuse. Like the logger's fd it is not otherwise
//! protected: a program that closes every fd closes it (lines are then lost, `EBADF`).
//!
//! Bounded: past `PROXIFY_TRACE_MAX` bytes (default 16 MiB) lines are dropped and one
//! `{"ev":"truncated"}` line is written (by the first process past the cap: another one that
//! finds the file ending with it writes none; two processes crossing the cap at the same moment
//! may each write one). The count is an atomic, started at the file's size and brought up to
//! it again every 64 KiB written, so processes sharing the file overrun the cap by at most
//! 64 KiB each.
//!
//! Untraced, every call site pays one relaxed atomic load ([`on`]).

use proxify_core::config::Chain;
use proxify_core::url::{Host, ProxyUrl};
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// The trace fd; -1 when not tracing.
static FD: AtomicI32 = AtomicI32::new(-1);
/// Bytes in the file (as far as this process knows).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static CAP: AtomicU64 = AtomicU64::new(DEFAULT_CAP);
static TRUNCATED: AtomicBool = AtomicBool::new(false);

pub const DEFAULT_CAP: u64 = 16 << 20;
/// The count is brought up to the file's size each time it crosses a multiple of this.
const RESYNC: u64 = 64 << 10;
const LINE_MAX: usize = 2048;

/// Is a trace being written? (One relaxed load: the whole cost when it is not.)
#[inline]
pub fn on() -> bool {
    FD.load(Ordering::Relaxed) >= 0
}

/// Opens the trace file (`O_APPEND | O_CREAT | O_CLOEXEC`; read too, for [`ends_truncated`])
/// and moves it to a high fd.
/// Returns the error text if it cannot be opened.
pub fn init(path: &str, cap: u64) -> Result<(), String> {
    let c = std::ffi::CString::new(path).map_err(|_| "the path contains a NUL".to_string())?;
    // SAFETY: a NUL-terminated path; `open` is not hooked by proxify.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fd = move_high(fd);
    // SAFETY: libc::stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our own fd into a zeroed stat.
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        WRITTEN.store(st.st_size.max(0) as u64, Ordering::Relaxed);
    }
    CAP.store(cap, Ordering::Relaxed);
    FD.store(fd, Ordering::Relaxed);
    Ok(())
}

/// `fd` moved to the lowest free number from 64 below min(RLIMIT_NOFILE, 1024) (the original
/// closed); `fd` itself if that fails.
fn move_high(fd: i32) -> i32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into our rlimit.
    let lim = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(1024) as i32
    } else {
        1024
    };
    let want = (lim - 64).max(fd + 1);
    // SAFETY: F_DUPFD_CLOEXEC of our own fd (the real fcntl, not proxify's hook).
    let high = unsafe { crate::sys::real::fcntl(fd, libc::F_DUPFD_CLOEXEC, want as libc::c_ulong) };
    if high < 0 {
        return fd;
    }
    // SAFETY: the original number, ours and now unused.
    unsafe { crate::sys::real::close(fd) };
    high
}

/// What happened: a decision (where a destination goes) or an outcome (how it went).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    Decision,
    Outcome,
}

/// The route of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via<'a> {
    Chain(&'a Chain),
    /// Through the proxy, the chain not known here (a name left to the proxy to resolve).
    Proxy,
    Direct,
    Deny,
}

/// One line's fields. `result`: `Some(0)` ok, `Some(errno)` (negative: an `EAI_*` code);
/// `ms`: the handshake (or connect) time.
pub struct Event<'a> {
    pub ev: Ev,
    pub call: &'a str,
    pub dest: &'a dyn Display,
    pub via: Via<'a>,
    pub rule: Option<&'a dyn Display>,
    pub result: Option<i32>,
    pub ms: Option<f64>,
}

/// Writes one line for `e` (nothing if not tracing or past the cap).
pub fn write(e: &Event) {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // SAFETY: errno is thread-local; kept as the program's call left it.
    let saved = unsafe { *libc::__errno_location() };
    let mut line = Line {
        buf: [0; LINE_MAX],
        len: 0,
        cut: false,
    };
    format(&mut line, e, true);
    if line.cut {
        // Too long (a long chain, a long rule): without those fields, marked.
        line.len = 0;
        line.cut = false;
        format(&mut line, e, false);
    }
    if !line.cut {
        emit(fd, &line.buf[..line.len]);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn emit(fd: i32, b: &[u8]) {
    let n = b.len() as u64;
    let cap = CAP.load(Ordering::Relaxed);
    let before = WRITTEN.fetch_add(n, Ordering::Relaxed);
    let mut after = before + n;
    if before / RESYNC != after / RESYNC {
        // Other processes may share the file: take its real size.
        // SAFETY: libc::stat is plain data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of the trace fd into a zeroed stat.
        if unsafe { libc::fstat(fd, &mut st) } == 0 {
            let size = st.st_size.max(0) as u64;
            WRITTEN.fetch_max(size + n, Ordering::Relaxed);
            after = after.max(size + n);
        }
    }
    if after > cap {
        // Once per process, and not again after another process's (an exec'd program of the
        // same run opens the file past the cap).
        if !TRUNCATED.swap(true, Ordering::Relaxed) && !ends_truncated(fd) {
            let mut l = Line {
                buf: [0; LINE_MAX],
                len: 0,
                cut: false,
            };
            head(&mut l);
            let _ = writeln!(
                l,
                "\"ev\":\"truncated\",\"cap\":{cap},\"note\":\"the trace reached its size cap \
                 (PROXIFY_TRACE_MAX); later lines were dropped\"}}"
            );
            crate::sys::logger::write_all(fd, &l.buf[..l.len]);
        }
        return;
    }
    crate::sys::logger::write_all(fd, b);
}

/// Does the file's last line say it was truncated?
fn ends_truncated(fd: i32) -> bool {
    // SAFETY: libc::stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of the trace fd into a zeroed stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    let size = st.st_size.max(0) as usize;
    let n = size.min(buf.len());
    // SAFETY: pread into our buffer of at least `n` bytes (raw SYS_pread64: never a hook).
    let got = unsafe {
        crate::sys::real::syscall6(
            libc::SYS_pread64,
            fd as libc::c_long,
            buf.as_mut_ptr() as libc::c_long,
            n as libc::c_long,
            (size - n) as libc::c_long,
            0,
            0,
        )
    };
    if got <= 0 {
        return false;
    }
    let tail = &buf[..got as usize];
    let tail = tail.strip_suffix(b"\n").unwrap_or(tail);
    let last = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => &tail[i + 1..],
        None => tail,
    };
    last.windows(16).any(|w| w == b"\"ev\":\"truncated\"")
}

struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.cut || self.len + s.len() > LINE_MAX {
            self.cut = true;
            return Err(std::fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Writes what it is given as the inside of a JSON string.
struct Esc<'a>(&'a mut Line);

impl std::fmt::Write for Esc<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let rep: Option<&str> = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                c if (c as u32) < 0x20 => None,
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            match rep {
                Some(r) => self.0.write_str(r)?,
                None => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

fn string(l: &mut Line, v: &dyn Display) {
    let _ = l.write_str("\"");
    let _ = write!(Esc(l), "{v}");
    let _ = l.write_str("\"");
}

/// `{"t":SECONDS.MICROS,"pid":PID,`
fn head(l: &mut Line) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    // SAFETY: getpid has no preconditions (and is right in a forked child).
    let pid = unsafe { libc::getpid() };
    let _ = write!(
        l,
        "{{\"t\":{}.{:06},\"pid\":{pid},",
        ts.tv_sec,
        ts.tv_nsec / 1000
    );
}

/// A proxy URL without its password (`scheme://[user@]host:port`), written as it goes.
struct Hop<'a>(&'a ProxyUrl);

impl Display for Hop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = self.0;
        write!(f, "{}://", u.scheme.as_str())?;
        if let Some(user) = &u.user {
            for ch in String::from_utf8_lossy(user).chars() {
                f.write_char(ch)?;
            }
            f.write_char('@')?;
        }
        match &u.host {
            Host::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Host::Ip(ip) => write!(f, "{ip}")?,
            Host::Name(n) => f.write_str(n)?,
        }
        write!(f, ":{}", u.port)
    }
}

fn format(l: &mut Line, e: &Event, full: bool) {
    head(l);
    let ev = match e.ev {
        Ev::Decision => "decision",
        Ev::Outcome => "outcome",
    };
    let _ = write!(l, "\"ev\":\"{ev}\",\"call\":");
    string(l, &e.call);
    let _ = l.write_str(",\"dest\":");
    string(l, e.dest);
    let route = match e.via {
        Via::Chain(_) | Via::Proxy => "chain",
        Via::Direct => "direct",
        Via::Deny => "deny",
    };
    let _ = write!(l, ",\"route\":\"{route}\"");
    if full {
        if let Via::Chain(c) = e.via {
            let _ = l.write_str(",\"chain\":");
            string(l, &c.name);
            let _ = l.write_str(",\"proxies\":[");
            for (i, h) in c.hops.iter().enumerate() {
                if i > 0 {
                    let _ = l.write_str(",");
                }
                string(l, &Hop(h));
            }
            let _ = l.write_str("]");
        }
        if let Some(r) = e.rule {
            let _ = l.write_str(",\"rule\":");
            string(l, r);
        }
    } else {
        let _ = l.write_str(",\"cut\":true");
    }
    if let Some(r) = e.result {
        let _ = l.write_str(",\"result\":");
        if r == 0 {
            let _ = l.write_str("\"ok\"");
        } else {
            match errno_name(r) {
                Some(n) => {
                    let _ = write!(l, "\"{n}\"");
                }
                None => {
                    let _ = write!(l, "\"errno {r}\"");
                }
            }
        }
    }
    if let Some(ms) = e.ms {
        let _ = write!(l, ",\"ms\":{ms:.3}");
    }
    let _ = l.write_str("}\n");
}

/// The symbolic name of an errno the shim's calls fail with.
/// Negative: a `getaddrinfo` `EAI_*` code.
pub fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::EAI_NONAME => "EAI_NONAME",
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_FAMILY => "EAI_FAMILY",
        libc::EAI_MEMORY => "EAI_MEMORY",
        libc::EAI_SERVICE => "EAI_SERVICE",
        libc::EAI_SYSTEM => "EAI_SYSTEM",
        libc::EAI_NODATA => "EAI_NODATA",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::EPROTO => "EPROTO",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Event) -> String {
        let mut l = Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        };
        format(&mut l, e, true);
        assert!(!l.cut);
        String::from_utf8(l.buf[..l.len].to_vec()).unwrap()
    }

    #[test]
    fn a_line_is_json_and_escapes() {
        let url: ProxyUrl = "socks5h://alice:secret@198.51.100.1:1080".parse().unwrap();
        let chain = Chain::strict("default", vec![url]);
        let rule = "rule 2 \"*.lan direct\" (c.toml:7)";
        let dest = "we\"ird\n.example:80";
        let s = line(&Event {
            ev: Ev::Outcome,
            call: "connect",
            dest: &dest,
            via: Via::Chain(&chain),
            rule: Some(&rule),
            result: Some(libc::ECONNREFUSED),
            ms: Some(1.5),
        });
        assert!(s.ends_with("}\n") && !s.contains("secret"), "{s}");
        assert!(s.contains("\"dest\":\"we\\\"ird\\n.example:80\""), "{s}");
        assert!(
            s.contains("\"proxies\":[\"socks5h://alice@198.51.100.1:1080\"]"),
            "{s}"
        );
        assert!(s.contains("\"rule\":\"rule 2 \\\"*.lan direct\\\" (c.toml:7)\""));
        assert!(
            s.contains("\"result\":\"ECONNREFUSED\",\"ms\":1.500}"),
            "{s}"
        );
    }

    #[test]
    fn too_long_a_line_is_cut_whole() {
        let big = "x".repeat(LINE_MAX);
        let mut l = Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        };
        let e = Event {
            ev: Ev::Decision,
            call: "connect",
            dest: &"a:1",
            via: Via::Direct,
            rule: Some(&big),
            result: None,
            ms: None,
        };
        format(&mut l, &e, true);
        assert!(l.cut);
        l.len = 0;
        l.cut = false;
        format(&mut l, &e, false);
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(s.contains("\"cut\":true") && s.ends_with("}\n"), "{s}");
    }
}
