//! The connection to the first hop: resolved locally (as the shim does), connected within
//! the connect timeout, then read and written against one deadline.

use crate::io_error_text;
use proxify_core::config::format_seconds;
use proxify_core::url::{Host, ProxyUrl};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A duration for messages: "5 s", "1.5 s".
pub(super) fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_nanos() == 0 || s >= 10.0 {
        format!("{} s", format_seconds(Duration::from_secs(d.as_secs())))
    } else {
        format!("{s:.1} s")
    }
}

/// A TCP connection whose reads and writes end at a deadline.
pub(super) struct Conn {
    pub(super) s: TcpStream,
    pub(super) deadline: Instant,
}

fn timed_out() -> io::Error {
    io::Error::from(io::ErrorKind::TimedOut)
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Conn {
    fn remaining(&self) -> io::Result<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(timed_out());
        }
        Ok(self.deadline - now)
    }

    pub(super) fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let left = self.remaining()?;
            self.s.set_write_timeout(Some(left))?;
            match self.s.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) fn read(&mut self, buf: &mut [u8], peek: bool) -> io::Result<usize> {
        loop {
            let left = self.remaining()?;
            self.s.set_read_timeout(Some(left))?;
            let r = if peek {
                self.s.peek(buf)
            } else {
                self.s.read(buf)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                other => return other,
            }
        }
    }
}

/// Resolves the first hop (locally, as the shim does) and connects to it.
pub(super) fn connect_first(
    hop: &ProxyUrl,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match &hop.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, hop.port)],
        Host::Name(n) => match (n.as_str(), hop.port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => return Err(format!("cannot resolve {n}: {e}")),
        },
    };
    let mut errors = Vec::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, a));
            }
            Err(e) if is_timeout(&e) => {
                errors.push(format!("{a}: no answer within {}", secs_text(timeout)))
            }
            Err(e) => errors.push(format!("{a}: {}", io_error_text(&e))),
        }
    }
    if errors.is_empty() {
        errors.push(format!("{}: no address", hop.port));
    }
    Err(errors.join("; "))
}
