//! The event loop: one epoll set for the listener, our signalfd and every socket in the middle
//! of a connect. Each notification becomes an [`Op`] with its own state machine and deadline,
//! so a slow proxy for one connect never holds up another.
//!
//! Every socket is the program's own: a `pidfd_getfd` duplicate of it, connected in place (to
//! the proxy, or directly for loopback and direct routes) and closed by us when the call is
//! answered. The supervisor never lets the kernel run a connect itself
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE` would read the address again from the program's memory).
//!
//! What a notification costs (issue 15): a switch to us and one back are the floor, so each
//! call is answered with few system calls of ours. The listener asks for synchronous wake-ups
//! (`sys::notif_set_sync`); the thread's pidfd is kept for its next calls (`dup_fd`); the
//! call's memory and fd are read first and the notification id checked once after them;
//! a socket's status flags are read once; an op's socket joins the epoll set once (ADD and
//! DEL, no MOD while it waits for the same events); the handshake's first send is tried
//! right after a connect to the proxy that is under way (usually done already); a datagram
//! socket's connect is answered without an op. A DNS query sent to the program's resolver
//! (glibc's sendmmsg of A and AAAA) is answered in the send itself (`answer_inline`): the
//! replies are in the program's socket when the call returns. Per connect through a SOCKS5
//! proxy: 23 system calls of ours by address (31 before), and by name (static glibc: five
//! notifications, one fewer with the filter's short-sendto rule) 72 (115 before).
//!
//! Size: ~1,860 lines, no unit tests: one `Supervisor` in four `impl` blocks (set-up and the
//! connect notification, the ops' state machine, getpeername and the sends, the DNS responder).
//! Should be split into connect, send and dns modules (an `impl Supervisor` each); not done yet.

use crate::filter::{NR_CONNECT, NR_GETPEERNAME, NR_SENDMMSG, NR_SENDMSG, NR_SENDTO};
use crate::names::Names;
use crate::route::{self, Route};
use crate::sockaddr;
use crate::sys::{self, errno, strerror};
use libc::{c_int, c_void};
use proxify_core::chain::{Failure, Handshake, ReadMode, State as HsState};
use proxify_core::config::{ChainMode, Config};
use proxify_core::socks::{Command, TargetAddr};
use proxify_core::url::{Host, ProxyUrl};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

/// Epoll tokens: the listener, our signalfd, the responder's sockets; streams and ops take
/// tokens from 2 up.
const TOKEN_LISTENER: u64 = 0;
const TOKEN_SIGNALS: u64 = 1;
const TOKEN_DNS: u64 = u64::MAX;
const TOKEN_DNS_TCP: u64 = u64::MAX - 1;
/// The most DNS-over-TCP streams open at once (a program's resolver opens one per query).
const MAX_STREAMS: usize = 256;
use proxify_core::hops::{Attempts, DEAD_FOR};
const MAX_PEERS: usize = 65536;
/// The most pidfds kept open (one per thread that made a notified call).
const MAX_PIDFDS: usize = 64;
/// Largest datagram the supervisor sends for a program.
const MAX_DATAGRAM: usize = 65536;

pub struct Log {
    pub quiet: bool,
    pub verbose: bool,
}

impl Log {
    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("proxify: {msg}");
        }
    }
    pub fn debug(&self, msg: &str) {
        if self.verbose && !self.quiet {
            eprintln!("proxify: {msg}");
        }
    }
}

enum Stage {
    /// A blocking direct connect the kernel is completing.
    Direct,
    /// Connecting to the first hop; the handshake follows.
    ProxyConnect(Box<Handshake>),
    Handshake(Box<Handshake>),
}

struct Op {
    id: u64,
    /// Its epoll token while its socket is in the epoll set (0: it is not).
    token: u64,
    /// Later notifications of a connect on the same blocking socket while this one is under
    /// way: the same call restarted after a signal (SA_RESTART; the first id is then gone), or
    /// another thread's. Each gets the result, as the kernel's connect would give it.
    waiters: Vec<u64>,
    fd: c_int,
    /// The file's status flags (F_GETFL) when the call came.
    fl: c_int,
    inode: u64,
    domain: c_int,
    /// The address the program gave (getpeername reports it).
    raw: Vec<u8>,
    stage: Stage,
    /// The TCP connect to the first hop may still be under way (the handshake's first send
    /// was tried without waiting for it: see [`Supervisor::start_proxy`]).
    connecting: bool,
    deadline: Option<Instant>,
    events: u32,
    // Proxied:
    chain: usize,
    target: Option<TargetAddr>,
    hops: Vec<(usize, ProxyUrl)>,
    attempts: Option<Attempts>,
    proxy: Option<SocketAddr>,
}

struct Peer {
    raw: Vec<u8>,
    /// The proxy side of the connection, to tell a reused inode from ours.
    proxy: SocketAddr,
    /// Whether a connect call was told the result (false: every notification had gone
    /// away, and the call restarted after a signal is still to be told).
    answered: bool,
}

pub struct Supervisor {
    /// Where each hop's credentials came from (`PROXIFY_CRED_FROM`).
    pub cred_from: Option<String>,
    listener: c_int,
    /// The listener hung up: no supervised process is left (for good: only a supervised
    /// process could make another). It has left the epoll set then.
    listener_gone: bool,
    epfd: c_int,
    cfg: Config,
    names: Names,
    pub log: Log,
    ops: HashMap<u64, Op>,
    next_token: u64,
    peers: HashMap<u64, Peer>,
    peer_order: VecDeque<u64>,
    hop_addrs: HashMap<String, Vec<SocketAddr>>,
    dead_until: HashMap<(usize, usize), Instant>,
    rr_next: HashMap<usize, usize>,
    notif_buf: Vec<u8>,
    /// pidfds of the threads that made calls, by thread id (at most [`MAX_PIDFDS`], the
    /// oldest closed first): each notified call needs one to take the program's fd.
    pidfds: HashMap<libc::pid_t, c_int>,
    pidfd_order: VecDeque<libc::pid_t>,
    rand: u64,
    /// The DNS responder: a UDP socket on loopback that the program's queries to its system
    /// resolver are sent to instead (-1 if it could not be made: such queries are refused).
    dns_sock: c_int,
    /// DNS over TCP: a listener on 127.0.0.1 that a program's TCP connect to its resolver is
    /// connected to, and the streams accepted from it (by epoll token: fd, bytes so far).
    dns_tcp: c_int,
    dns_tcp_addr: Option<SocketAddr>,
    streams: HashMap<u64, (c_int, Vec<u8>)>,
    dns_addr: Option<SocketAddr>,
    nameservers: Vec<std::net::IpAddr>,
    /// Under `--enforce`: the proxy addresses a first hop may have (connected as they are:
    /// the shim is connecting to its proxy), and every hop's IP (datagrams to it go as they
    /// are: the shim's UDP ASSOCIATE relay, whose address the proxy chose).
    proxy_eps: Vec<SocketAddr>,
    proxy_ips: Vec<std::net::IpAddr>,
}

/// The nameservers of /etc/resolv.conf (what Go's resolver and musl ask).
fn nameservers() -> Vec<std::net::IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// A non-blocking socket of type `ty` on 127.0.0.1 (any port) for the responder: UDP for
/// queries in datagrams, a TCP listener for DNS over TCP.
fn loopback_socket(ty: c_int) -> Option<(c_int, SocketAddr)> {
    // SAFETY: plain socket calls on a socket we own; `raw` is a valid sockaddr_in.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return None;
        }
        let raw = sockaddr::to_raw("127.0.0.1:0".parse().unwrap(), libc::AF_INET)?;
        if libc::bind(fd, raw.as_ptr() as *const libc::sockaddr, raw.len() as u32) != 0
            || (ty == libc::SOCK_STREAM && libc::listen(fd, 64) != 0)
        {
            libc::close(fd);
            return None;
        }
        let addr = sockaddr::name_of(fd, false)?;
        Some((fd, addr))
    }
}

fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, events: u32, token: u64) -> bool {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event.
    unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) == 0 }
}

fn fstat_inode(fd: c_int) -> Option<u64> {
    // SAFETY: `st` is written by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

fn fcntl_getfl(fd: c_int) -> c_int {
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn fcntl_setfl(fd: c_int, flags: c_int) {
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
}

/// connect(2) on our duplicate without waiting: the file (status flags `flags`, as F_GETFL
/// gave them) is made non-blocking for the call only (it is shared with the program, whose
/// thread waits in its own connect meanwhile). Returns 0 or the errno (EINPROGRESS: under
/// way).
fn connect_nowait(fd: c_int, raw: &[u8], flags: c_int) -> c_int {
    let set = flags >= 0 && flags & libc::O_NONBLOCK == 0;
    if set {
        fcntl_setfl(fd, flags | libc::O_NONBLOCK);
    }
    let e = connect_now(fd, raw);
    if set {
        fcntl_setfl(fd, flags);
    }
    e
}

/// connect(2) as it is, for a call that never waits (a datagram socket's, AF_UNSPEC's).
fn connect_now(fd: c_int, raw: &[u8]) -> c_int {
    // SAFETY: `raw` is a sockaddr of `raw.len()` bytes.
    let rc = unsafe { libc::connect(fd, raw.as_ptr() as *const libc::sockaddr, raw.len() as u32) };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

/// Dissolves a connection attempt (connect with AF_UNSPEC), so a failed proxied connect
/// leaves the program's socket unconnected, as a failed connect does.
fn disconnect(fd: c_int) {
    let sa = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid AF_UNSPEC sockaddr.
    unsafe { libc::connect(fd, &sa, std::mem::size_of::<libc::sockaddr>() as u32) };
}

impl Supervisor {
    pub fn new(
        listener: c_int,
        signal_fd: c_int,
        cfg: Config,
        log: Log,
        dns_table: Option<&str>,
    ) -> Result<Self, String> {
        let sizes = sys::notif_sizes().map_err(|e| format!("seccomp: {e}"))?;
        // SAFETY: plain system call.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!("epoll_create1: {}", strerror(errno())));
        }
        epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            listener,
            libc::EPOLLIN as u32,
            TOKEN_LISTENER,
        );
        epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            signal_fd,
            libc::EPOLLIN as u32,
            TOKEN_SIGNALS,
        );
        // Synchronous wake-ups (Linux 6.6; older kernels refuse it and we do without): see
        // `sys::notif_set_sync`.
        sys::notif_set_sync(listener);
        let names = Names::new(cfg.remote_dns_subnet(), dns_table);
        let (dns_sock, dns_addr) = match loopback_socket(libc::SOCK_DGRAM) {
            Some((fd, a)) => {
                epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_ADD,
                    fd,
                    libc::EPOLLIN as u32,
                    TOKEN_DNS,
                );
                (fd, Some(a))
            }
            None => (-1, None),
        };
        let (dns_tcp, dns_tcp_addr) = match loopback_socket(libc::SOCK_STREAM) {
            Some((fd, a)) => {
                epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_ADD,
                    fd,
                    libc::EPOLLIN as u32,
                    TOKEN_DNS_TCP,
                );
                (fd, Some(a))
            }
            None => (-1, None),
        };
        let mut seed = [0u8; 8];
        // SAFETY: fills `seed`.
        unsafe { libc::getrandom(seed.as_mut_ptr() as *mut c_void, 8, 0) };
        Ok(Supervisor {
            cred_from: None,
            listener,
            listener_gone: false,
            epfd,
            cfg,
            names,
            log,
            ops: HashMap::new(),
            next_token: 2,
            peers: HashMap::new(),
            peer_order: VecDeque::new(),
            hop_addrs: HashMap::new(),
            dead_until: HashMap::new(),
            rr_next: HashMap::new(),
            notif_buf: vec![0u8; usize::from(sizes.notif).max(128)],
            pidfds: HashMap::new(),
            pidfd_order: VecDeque::new(),
            rand: u64::from_ne_bytes(seed) | 1,
            dns_sock,
            dns_addr,
            dns_tcp,
            dns_tcp_addr,
            streams: HashMap::new(),
            nameservers: nameservers(),
            proxy_eps: Vec::new(),
            proxy_ips: Vec::new(),
        })
    }

    /// `--enforce`: the shim (preloaded in the command) connects to the proxy itself, and its
    /// connects reach us. `resolved`: the proxy host names as `proxify run` resolved them for
    /// the shim (`NAME:PORT`, addresses). Every hop that can be a first hop (a strict chain's
    /// first, any hop of the other modes) is connected as it is; datagrams to any hop's IP
    /// (any port) are sent as they are.
    pub fn enforce(&mut self, resolved: Vec<(String, Vec<SocketAddr>)>) {
        for (k, v) in resolved {
            self.hop_addrs.insert(k, v);
        }
        let chains = self.cfg.chains.clone();
        for c in &chains {
            for (i, hop) in c.hops.iter().enumerate() {
                let Ok(addrs) = self.hop_addrs(hop) else {
                    continue;
                };
                for a in addrs {
                    let a = route::unmap(a);
                    if (i == 0 || c.mode != ChainMode::Strict) && !self.proxy_eps.contains(&a) {
                        self.proxy_eps.push(a);
                    }
                    if !self.proxy_ips.contains(&a.ip()) {
                        self.proxy_ips.push(a.ip());
                    }
                }
            }
        }
    }

    /// Under `--enforce`, a connect to a proxy (TCP: a first hop's address; UDP: any hop's
    /// IP) goes as it is.
    fn to_proxy(&self, ty: c_int, dest: &SocketAddr) -> Option<Route> {
        let d = route::unmap(*dest);
        let hit = if ty == libc::SOCK_STREAM {
            self.proxy_eps.contains(&d)
        } else {
            self.proxy_ips.contains(&d.ip())
        };
        hit.then(|| Route::Direct(None, "it is the proxy".into()))
    }

    /// Waits for events until one of our signals arrives (returns true) or the listener hangs
    /// up (every supervised process is gone: returns false).
    pub fn wait(&mut self) -> bool {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = self.next_timeout();
            // SAFETY: `events` has room for 64 entries.
            let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), 64, timeout) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                self.log
                    .warn(&format!("supervisor: epoll_wait: {}", strerror(errno())));
                return false;
            }
            let mut signalled = false;
            for ev in &events[..n as usize] {
                let (flags, token) = (ev.events, ev.u64);
                match token {
                    TOKEN_LISTENER => {
                        if flags & libc::EPOLLIN as u32 != 0 {
                            self.receive();
                        } else if flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                            // For good: out of the set, so that it does not wake us again
                            // while the last ops finish.
                            self.listener_gone = true;
                            epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, self.listener, 0, 0);
                        }
                    }
                    TOKEN_SIGNALS => signalled = true,
                    TOKEN_DNS => self.answer_dns(),
                    TOKEN_DNS_TCP => self.accept_streams(),
                    t if self.streams.contains_key(&t) => self.serve_stream(t),
                    t => self.on_event(t, flags),
                }
            }
            self.expire();
            if signalled {
                return true;
            }
            if self.listener_gone && self.ops.is_empty() {
                return false;
            }
        }
    }

    /// Is any supervised process left? (The listener hangs up when none is.)
    pub fn listener_alive(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.listener,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        !(n > 0
            && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
            && p.revents & libc::POLLIN == 0)
    }

    fn next_timeout(&self) -> c_int {
        let now = Instant::now();
        self.ops
            .values()
            .filter_map(|o| o.deadline)
            .map(|d| d.saturating_duration_since(now).as_millis() as c_int + 1)
            .min()
            .unwrap_or(-1)
    }

    fn reply(&self, id: u64, r: Result<i64, c_int>) -> bool {
        sys::notif_send(self.listener, id, r)
    }

    fn cont(&self, id: u64) {
        sys::notif_continue(self.listener, id);
    }

    /// One notification from the listener.
    fn receive(&mut self) {
        let n = match sys::notif_recv(self.listener, &mut self.notif_buf) {
            Ok(n) => n,
            Err(_) => return, // ENOENT: the call went away before we took it
        };
        let tid = n.pid as libc::pid_t;
        match n.data.nr {
            NR_CONNECT => self.on_connect(n.id, tid, &n.data.args),
            NR_GETPEERNAME => self.on_getpeername(n.id, tid, &n.data.args),
            NR_SENDTO | NR_SENDMSG | NR_SENDMMSG => {
                self.on_send(n.id, tid, n.data.nr, &n.data.args)
            }
            _ => {
                self.reply(n.id, Err(libc::ENOSYS));
            }
        }
    }

    /// The fd `fd` of thread `tid` as our duplicate. Not yet known to be the notified call's:
    /// the caller asks [`Self::valid`] after its last look at the thread (its memory, its
    /// fds), which proves `tid` was that thread all along (a thread waiting in a notified
    /// call cannot exit, so its id cannot be reused meanwhile).
    ///
    /// The thread's pidfd is kept for its next calls. A kept pidfd stands for the thread it
    /// was opened for, never for a later holder of the same id: for one that is gone the
    /// kernel fails the call (ESRCH), and any failure is tried again with a fresh pidfd.
    fn dup_fd(&mut self, tid: libc::pid_t, fd: u64) -> Result<c_int, c_int> {
        if let Some(&pidfd) = self.pidfds.get(&tid) {
            if let Ok(dup) = sys::pidfd_getfd(pidfd, fd as c_int) {
                return Ok(dup);
            }
            self.pidfds.remove(&tid);
            self.pidfd_order.retain(|t| *t != tid);
            sys::close(pidfd);
        }
        let pidfd = sys::pidfd_open(tid)?;
        let r = sys::pidfd_getfd(pidfd, fd as c_int);
        if r.is_err() {
            sys::close(pidfd);
            return r;
        }
        self.pidfds.insert(tid, pidfd);
        self.pidfd_order.push_back(tid);
        while self.pidfd_order.len() > MAX_PIDFDS {
            if let Some(old) = self.pidfd_order.pop_front() {
                if let Some(f) = self.pidfds.remove(&old) {
                    sys::close(f);
                }
            }
        }
        r
    }

    /// Is notification `id` still pending (its thread still waits in the call)?
    fn valid(&self, id: u64) -> bool {
        sys::notif_id_valid(self.listener, id)
    }

    /// The program's fd `fd` as our duplicate, checked to belong to the notified call
    /// (ENOENT: the call went away).
    fn take_fd(&mut self, id: u64, tid: libc::pid_t, fd: u64) -> Result<c_int, c_int> {
        let dup = self.dup_fd(tid, fd)?;
        if !self.valid(id) {
            sys::close(dup);
            return Err(libc::ENOENT);
        }
        Ok(dup)
    }

    fn sock_kind(fd: c_int) -> Result<(c_int, c_int), c_int> {
        let domain = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok_or_else(errno)?;
        let ty = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok_or_else(errno)?;
        Ok((domain, ty))
    }

    /// The address a connect passes, read from the thread's memory (not yet known to be the
    /// notified call's: see [`Self::dup_fd`]).
    fn read_addr(tid: libc::pid_t, ptr: u64, len: u64) -> Result<Vec<u8>, c_int> {
        let len = (len as usize).min(128);
        let mut raw = vec![0u8; len];
        let n = sys::read_mem(tid, ptr, &mut raw).map_err(|_| libc::EFAULT)?;
        raw.truncate(n);
        Ok(raw)
    }

    fn on_connect(&mut self, id: u64, tid: libc::pid_t, args: &[u64; 6]) {
        // The address and the socket first, then one check that the call is still there
        // (which proves both were the calling thread's).
        let raw = match Self::read_addr(tid, args[1], args[2]) {
            Ok(r) => r,
            Err(e) => {
                self.reply(id, Err(e));
                return;
            }
        };
        let fd = match self.dup_fd(tid, args[0]) {
            Ok(fd) => fd,
            Err(e) => {
                self.reply(id, Err(e));
                return;
            }
        };
        if !self.valid(id) {
            sys::close(fd);
            return;
        }
        let (domain, ty) = match Self::sock_kind(fd) {
            Ok(k) => k,
            Err(e) => {
                sys::close(fd);
                self.reply(id, Err(e));
                return;
            }
        };
        if domain != libc::AF_INET && domain != libc::AF_INET6 {
            // AF_UNIX, netlink...: the socket cannot reach the network whatever the address.
            sys::close(fd);
            self.cont(id);
            return;
        }
        let fam = sockaddr::family(&raw);
        if fam == Some(libc::AF_UNSPEC) {
            // Dissolving an association: harmless; done on the program's socket.
            let inode = fstat_inode(fd).unwrap_or(0);
            let e = connect_now(fd, &raw);
            self.peers.remove(&inode);
            sys::close(fd);
            self.reply(id, if e == 0 { Ok(0) } else { Err(e) });
            return;
        }
        let Some(dest) = sockaddr::parse(&raw) else {
            sys::close(fd);
            self.reply(
                id,
                Err(
                    if fam == Some(libc::AF_INET6) || fam == Some(libc::AF_INET) {
                        libc::EINVAL
                    } else {
                        libc::EAFNOSUPPORT
                    },
                ),
            );
            return;
        };
        if ty == libc::SOCK_DGRAM {
            // A datagram socket's connect never waits and is never proxied: it is answered
            // here and now.
            let r = self.connect_datagram(fd, domain, raw, dest);
            sys::close(fd);
            self.reply(id, r);
            return;
        }
        if ty == libc::SOCK_STREAM && fam != Some(domain) {
            // The kernel refuses another family on a TCP socket.
            sys::close(fd);
            self.reply(id, Err(libc::EAFNOSUPPORT));
            return;
        }
        let inode = fstat_inode(fd).unwrap_or(0);
        let fl = fcntl_getfl(fd);
        if inode != 0 {
            let blocking = fl & libc::O_NONBLOCK == 0;
            if let Some(op) = self.ops.values_mut().find(|o| o.inode == inode) {
                // In flight: a blocking caller waits for the result (the call restarted after
                // a signal, or another thread), a non-blocking one is told EALREADY.
                sys::close(fd);
                if blocking {
                    op.waiters.push(id);
                    self.log.debug(
                        "a connect on a socket whose connect is under way (restarted after a \
                         signal?): it gets that connect's result",
                    );
                } else {
                    self.reply(id, Err(libc::EALREADY));
                }
                return;
            }
            if ty == libc::SOCK_STREAM && self.peers.contains_key(&inode) {
                let actual = sockaddr::name_of(fd, true).map(route::unmap);
                if let Some(p) = self.peers.get_mut(&inode) {
                    if actual == Some(route::unmap(p.proxy)) {
                        // Connected by us: the restarted call of a connect whose answer was
                        // lost gets its result; any later connect, EISCONN.
                        let r = if p.answered {
                            Err(libc::EISCONN)
                        } else {
                            Ok(0)
                        };
                        p.answered = true;
                        self.log.debug(&format!(
                            "a connect on a socket connected through the proxy: {}",
                            if r.is_ok() {
                                "its restarted call, 0"
                            } else {
                                "EISCONN"
                            }
                        ));
                        sys::close(fd);
                        self.reply(id, r);
                        return;
                    }
                }
            }
        }
        let tcp_resolver = ty == libc::SOCK_STREAM && self.is_resolver(&dest);
        let mut op = Op {
            id,
            token: 0,
            waiters: Vec::new(),
            fd,
            fl,
            inode,
            domain,
            raw,
            stage: Stage::Direct,
            connecting: false,
            deadline: None,
            events: 0,
            chain: 0,
            target: None,
            hops: Vec::new(),
            attempts: None,
            proxy: None,
        };
        if tcp_resolver {
            // DNS over TCP to the program's resolver (Go's and musl's after a truncated reply,
            // or with `options use-vc`): to our stream responder, never to the resolver.
            let Some(to) = self.dns_tcp_addr.and_then(|a| sockaddr::to_raw(a, domain)) else {
                self.finish(op, Err(libc::ECONNREFUSED));
                return;
            };
            if let Some(a) = self.dns_tcp_addr {
                self.remember_peer(op.inode, op.raw.clone(), a, true);
            }
            self.log
                .debug(&format!("{dest}: DNS over TCP, answered by the supervisor"));
            op.raw = to;
            self.start_direct(op);
            return;
        }
        let decided = self
            .to_proxy(ty, &dest)
            .unwrap_or_else(|| route::route(&self.cfg, &self.names, dest));
        match decided {
            Route::Deny(e, why) => {
                self.log
                    .warn(&format!("refusing a connect to {dest}: {why}"));
                self.finish(op, Err(e));
            }
            Route::Direct(to, why) => {
                self.log.debug(&format!("{dest}: direct ({why})"));
                if let Some(to) = to {
                    match sockaddr::to_raw(to, domain) {
                        Some(r) => op.raw = r,
                        None => {
                            self.finish(op, Err(libc::EAFNOSUPPORT));
                            return;
                        }
                    }
                }
                self.start_direct(op);
            }
            Route::Proxy(chain, target) => {
                if ty != libc::SOCK_STREAM {
                    let msg = format!(
                        "refusing to connect a datagram socket to {dest}: supervised UDP \
                         does not go through the proxy"
                    );
                    self.log.warn(&msg);
                    self.finish(op, Err(libc::EOPNOTSUPP));
                    return;
                }
                op.chain = chain;
                op.target = Some(target);
                op.attempts = Some(Attempts::new(&self.cfg.chains[chain]));
                self.start_proxy(op);
            }
        }
    }

    /// The connect of a datagram socket (`fd`, of `domain`) to `dest` (`raw` as the program
    /// gave it): to our responder for the program's resolver, as it is (or where `dnat`
    /// sends it) for a direct route, refused otherwise (supervised UDP is not proxied).
    fn connect_datagram(
        &mut self,
        fd: c_int,
        domain: c_int,
        raw: Vec<u8>,
        dest: SocketAddr,
    ) -> Result<i64, c_int> {
        if self.is_resolver(&dest) {
            // The program's resolver (Go's, musl's, glibc's): its queries go to our responder.
            let (Some(a), Some(r)) = (
                self.dns_addr,
                self.dns_addr.and_then(|a| sockaddr::to_raw(a, domain)),
            ) else {
                return Err(libc::ECONNREFUSED);
            };
            match connect_now(fd, &r) {
                0 => {
                    let inode = fstat_inode(fd).unwrap_or(0);
                    self.remember_peer(inode, raw, a, true);
                    return Ok(0);
                }
                e => return Err(e),
            }
        }
        let decided = self
            .to_proxy(libc::SOCK_DGRAM, &dest)
            .unwrap_or_else(|| route::route(&self.cfg, &self.names, dest));
        let to = match decided {
            Route::Deny(e, why) => {
                self.log
                    .warn(&format!("refusing a connect to {dest}: {why}"));
                return Err(e);
            }
            Route::Direct(to, why) => {
                self.log.debug(&format!("{dest}: direct ({why})"));
                match to {
                    None => raw,
                    Some(to) => sockaddr::to_raw(to, domain).ok_or(libc::EAFNOSUPPORT)?,
                }
            }
            Route::Proxy(..) => {
                let msg = format!(
                    "refusing to connect a datagram socket to {dest}: supervised UDP does \
                     not go through the proxy"
                );
                if self.names.is_placeholder(&dest.ip()) {
                    // Address sorting (glibc's getaddrinfo, Go's) probes each address so: it
                    // sends nothing and takes the failure in its stride. Not worth a line.
                    self.log.debug(&msg);
                } else {
                    self.log.warn(&msg);
                }
                return Err(libc::EOPNOTSUPP);
            }
        };
        match connect_now(fd, &to) {
            0 => Ok(0),
            e => Err(e),
        }
    }

    /// Answers the call, drops our duplicate and forgets the op.
    fn finish(&mut self, mut op: Op, r: Result<i64, c_int>) {
        self.unpark(&mut op);
        if r.is_err() && !matches!(op.stage, Stage::Direct) {
            disconnect(op.fd);
        }
        sys::close(op.fd);
        let mut answered = self.reply(op.id, r);
        for w in &op.waiters {
            answered |= self.reply(*w, r);
        }
        if r.is_ok() {
            if let (Some(proxy), Stage::Handshake(_)) = (op.proxy, &op.stage) {
                self.remember_peer(op.inode, op.raw, proxy, answered);
            }
        }
    }

    fn remember_peer(&mut self, inode: u64, raw: Vec<u8>, proxy: SocketAddr, answered: bool) {
        let peer = Peer {
            raw,
            proxy,
            answered,
        };
        if self.peers.insert(inode, peer).is_none() {
            self.peer_order.push_back(inode);
        }
        while self.peers.len() > MAX_PEERS {
            match self.peer_order.pop_front() {
                Some(old) => {
                    self.peers.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Parks `op` until `events` on its socket (or its deadline). The socket joins the epoll
    /// set once, under one token, and is changed there only when it waits for other events.
    fn park(&mut self, mut op: Op, events: u32) {
        let ok = if op.token == 0 {
            let token = self.next_token;
            self.next_token += 1;
            let added = epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, op.fd, events, token);
            if added {
                op.token = token;
            }
            added
        } else if op.events != events {
            epoll_ctl(self.epfd, libc::EPOLL_CTL_MOD, op.fd, events, op.token)
        } else {
            true
        };
        if !ok {
            let e = errno();
            self.log
                .warn(&format!("supervisor: epoll_ctl failed: {}", strerror(e)));
            self.finish(op, Err(libc::EIO));
            return;
        }
        op.events = events;
        self.ops.insert(op.token, op);
    }

    /// `op` no longer waits for its socket: out of the epoll set.
    fn unpark(&mut self, op: &mut Op) {
        if op.token != 0 {
            epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, op.fd, 0, 0);
        }
        op.token = 0;
        op.events = 0;
    }

    fn start_direct(&mut self, op: Op) {
        let nonblocking = op.fl & libc::O_NONBLOCK != 0;
        match connect_nowait(op.fd, &op.raw, op.fl) {
            0 => self.finish(op, Ok(0)),
            libc::EINPROGRESS if nonblocking => self.finish(op, Err(libc::EINPROGRESS)),
            libc::EINPROGRESS => self.park(op, libc::EPOLLOUT as u32),
            e => self.finish(op, Err(e)),
        }
    }

    fn hop_addrs(&mut self, url: &ProxyUrl) -> Result<Vec<SocketAddr>, String> {
        let name = match &url.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, url.port)]),
            Host::Name(n) => n.clone(),
        };
        let key = format!("{name}:{}", url.port);
        if let Some(v) = self.hop_addrs.get(&key) {
            return Ok(v.clone());
        }
        let v: Vec<SocketAddr> = (name.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve proxy host {name}: {e}"))?
            .collect();
        self.hop_addrs.insert(key, v.clone());
        Ok(v)
    }

    fn select_hops(&mut self, ci: usize) -> Vec<(usize, ProxyUrl)> {
        let now = Instant::now();
        let dead = &self.dead_until;
        let rand = &mut self.rand;
        let rr = &mut self.rr_next;
        proxify_core::hops::select(
            &self.cfg.chains[ci],
            |i| dead.get(&(ci, i)).is_some_and(|d| *d > now),
            |n| (xorshift(rand) % n.max(1) as u64) as usize,
            |len| {
                let start = rr.entry(ci).or_insert(0);
                let s = *start;
                *start = s + len;
                s
            },
        )
    }

    /// Which proxy address this socket can use: its own family, or IPv4-mapped on a
    /// dual-stack AF_INET6 socket.
    fn pick_proxy(fd: c_int, domain: c_int, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        let v6only = domain == libc::AF_INET6
            && sys::sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0) != 0;
        addrs
            .iter()
            .find(|a| (domain == libc::AF_INET) == a.is_ipv4())
            .or_else(|| {
                if domain == libc::AF_INET6 && !v6only {
                    addrs.iter().find(|a| a.is_ipv4())
                } else {
                    None
                }
            })
            .copied()
    }

    fn target_text(op: &Op) -> String {
        match &op.target {
            Some(TargetAddr::Ip(a)) => a.to_string(),
            Some(TargetAddr::Domain(n, p)) => format!("{n}:{p}"),
            None => "?".into(),
        }
    }

    /// (Re)starts the proxied connect of `op`: the hops, the first hop's address, the TCP
    /// connect of the program's socket to it.
    fn start_proxy(&mut self, mut op: Op) {
        let hops = self.select_hops(op.chain);
        let Some((_, first)) = hops.first().cloned() else {
            self.fail(op, Failure::new(libc::EACCES, "the chain has no proxy"));
            return;
        };
        op.hops = hops;
        let addrs = match self.hop_addrs(&first) {
            Ok(a) => a,
            Err(msg) => {
                self.fail(
                    op,
                    Failure {
                        dead_hop: Some(0),
                        ..Failure::new(libc::EHOSTUNREACH, msg)
                    },
                );
                return;
            }
        };
        let Some(proxy) = Self::pick_proxy(op.fd, op.domain, &addrs) else {
            let fam = if op.domain == libc::AF_INET {
                "IPv4"
            } else {
                "IPv6"
            };
            self.fail(
                op,
                Failure::new(
                    libc::EAFNOSUPPORT,
                    format!("the proxy has no {fam} address this socket can use"),
                ),
            );
            return;
        };
        let urls: Vec<ProxyUrl> = op.hops.iter().map(|(_, u)| u.clone()).collect();
        let target = op.target.clone().expect("a proxied op has a target");
        let hs = match Handshake::new(&urls, Command::Connect, target) {
            Ok(h) => h,
            Err(f) => {
                self.fail(op, f);
                return;
            }
        };
        let Some(praw) = sockaddr::to_raw(proxy, op.domain) else {
            self.fail(
                op,
                Failure::new(libc::EAFNOSUPPORT, "no usable proxy address"),
            );
            return;
        };
        op.proxy = Some(proxy);
        match connect_nowait(op.fd, &praw, op.fl) {
            0 => {
                op.stage = Stage::Handshake(Box::new(hs));
                op.deadline = Some(Instant::now() + self.cfg.handshake_timeout);
                self.advance(op);
            }
            libc::EINPROGRESS if !hs.pending_output().is_empty() => {
                // Often connected already (a proxy on this host or nearby answers the SYN
                // before we get here): the handshake's first send is tried at once. While
                // the connect is under way it fails with EAGAIN and the op waits for it as
                // below; a failed connect fails that send with the connect's error.
                op.stage = Stage::Handshake(Box::new(hs));
                op.connecting = true;
                op.deadline = Some(Instant::now() + self.cfg.connect_timeout);
                self.advance(op);
            }
            libc::EINPROGRESS => {
                op.stage = Stage::ProxyConnect(Box::new(hs));
                op.deadline = Some(Instant::now() + self.cfg.connect_timeout);
                self.park(op, libc::EPOLLOUT as u32);
            }
            e => self.fail(
                op,
                Failure {
                    dead_hop: Some(0),
                    ..Failure::new(e, format!("cannot reach proxy {proxy}: {}", strerror(e)))
                },
            ),
        }
    }
}

/// Small non-cryptographic randomness for random chains (xorshift64).
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl Supervisor {
    /// Events on a parked op's socket.
    fn on_event(&mut self, token: u64, flags: u32) {
        let Some(mut op) = self.ops.remove(&token) else {
            return;
        };
        match std::mem::replace(&mut op.stage, Stage::Direct) {
            Stage::Direct => {
                let e = sys::sockopt_int(op.fd, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(0);
                self.finish(op, if e == 0 { Ok(0) } else { Err(e) });
            }
            Stage::ProxyConnect(hs) => {
                let mut e = 0;
                if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    e = sys::sockopt_int(op.fd, libc::SOL_SOCKET, libc::SO_ERROR)
                        .unwrap_or(libc::ECONNREFUSED);
                    if e == 0 {
                        e = libc::ECONNREFUSED;
                    }
                }
                op.stage = Stage::Handshake(hs);
                op.connecting = false;
                if e != 0 {
                    let proxy = op.proxy.map(|p| p.to_string()).unwrap_or_default();
                    self.fail(
                        op,
                        Failure {
                            dead_hop: Some(0),
                            ..Failure::new(
                                e,
                                format!("cannot reach proxy {proxy}: {}", strerror(e)),
                            )
                        },
                    );
                    return;
                }
                op.deadline = Some(Instant::now() + self.cfg.handshake_timeout);
                self.advance(op);
            }
            Stage::Handshake(hs) => {
                op.stage = Stage::Handshake(hs);
                self.advance(op);
            }
        }
    }

    /// Ops past their deadline fail with ETIMEDOUT.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            let Some(op) = self.ops.remove(&t) else {
                continue;
            };
            let proxy = op.proxy.map(|p| p.to_string()).unwrap_or_default();
            let f = match op.stage {
                Stage::ProxyConnect(_) => Failure {
                    dead_hop: Some(0),
                    ..Failure::new(
                        libc::ETIMEDOUT,
                        format!("timed out connecting to proxy {proxy}"),
                    )
                },
                _ => Failure::new(libc::ETIMEDOUT, "timed out waiting for the proxy's reply"),
            };
            self.fail(op, f);
        }
    }

    /// A proxied connect failed: a dynamic chain tries again without the dead hop; otherwise
    /// one line and the errno.
    fn fail(&mut self, mut op: Op, mut f: Failure) {
        let chain = &self.cfg.chains[op.chain];
        // A rejected username/password: say where it came from (the fix is there).
        if let Some((idx, _)) = f.auth_hop.and_then(|i| op.hops.get(i)) {
            let from =
                proxify_core::config::cred_from(self.cred_from.as_deref(), &chain.name, *idx);
            f.msg = format!("{}; the credentials come from {from}", f.msg);
        }
        let retry = op
            .attempts
            .as_mut()
            .and_then(|a| a.retry_without(chain, &op.hops, &f))
            .cloned();
        if let Some((idx, url)) = retry {
            self.log.debug(&format!(
                "dynamic chain {}: skipping dead hop {}: {}",
                chain.name,
                url.masked(),
                f.msg
            ));
            self.dead_until
                .insert((op.chain, idx), Instant::now() + DEAD_FOR);
            self.unpark(&mut op);
            op.connecting = false;
            disconnect(op.fd);
            op.deadline = None;
            self.start_proxy(op);
            return;
        }
        let via = op
            .hops
            .first()
            .map(|(_, u)| u.masked())
            .unwrap_or_else(|| "the proxy".into());
        self.log.warn(&format!(
            "cannot connect to {} through {via}: {}",
            Self::target_text(&op),
            f.msg
        ));
        if matches!(op.stage, Stage::Direct) {
            // Not connected to anything yet; still dissolve any attempt.
            disconnect(op.fd);
        }
        self.finish(op, Err(f.errno));
    }

    /// Moves the handshake of `op` as far as it goes without waiting (MSG_DONTWAIT on every
    /// send and receive: the program's file stays as it was).
    fn advance(&mut self, mut op: Op) {
        let Stage::Handshake(hs) = &mut op.stage else {
            return;
        };
        let fd = op.fd;
        let mut buf = [0u8; 1024];
        let outcome: Result<Option<u32>, Failure> = 'outer: loop {
            let mut sent = false;
            let mut wait = None;
            while !hs.pending_output().is_empty() {
                let out = hs.pending_output();
                // SAFETY: sends from a live buffer.
                let n = unsafe {
                    libc::send(
                        fd,
                        out.as_ptr() as *const c_void,
                        out.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    hs.consume_output(n as usize);
                    sent = true;
                    if op.connecting {
                        // Connected: the handshake's own time starts.
                        op.connecting = false;
                        op.deadline = Some(Instant::now() + self.cfg.handshake_timeout);
                    }
                    continue;
                }
                match errno() {
                    libc::EINTR => {}
                    libc::EAGAIN => {
                        wait = Some(libc::EPOLLOUT as u32);
                        break;
                    }
                    e if op.connecting => {
                        // The connect's own error (EPIPE: the socket closed, its error
                        // already taken).
                        let e = if e == libc::EPIPE {
                            match sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                                Some(x) if x != 0 => x,
                                _ => libc::ECONNREFUSED,
                            }
                        } else {
                            e
                        };
                        let proxy = op.proxy.map(|p| p.to_string()).unwrap_or_default();
                        break 'outer Err(Failure {
                            dead_hop: Some(0),
                            ..Failure::new(
                                e,
                                format!("cannot reach proxy {proxy}: {}", strerror(e)),
                            )
                        });
                    }
                    e => {
                        break 'outer Err(Failure::new(
                            e,
                            format!("lost the proxy while sending: {}", strerror(e)),
                        ));
                    }
                }
            }
            if let Some(w) = wait {
                break Ok(Some(w));
            }
            match hs.state() {
                HsState::Done(_) => break Ok(None),
                HsState::Failed(f) => break Err(f.clone()),
                HsState::Running => {}
            }
            if sent && hs.read_mode() != ReadMode::Nothing {
                break Ok(Some(libc::EPOLLIN as u32));
            }
            let (want, peek) = match hs.read_mode() {
                ReadMode::Exact(n) => (n.min(buf.len()), false),
                ReadMode::Peek(n) => (n.min(buf.len()), true),
                ReadMode::Nothing => {
                    break Err(Failure::new(
                        libc::EIO,
                        "proxy handshake stalled (internal error)",
                    ))
                }
            };
            let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
            // SAFETY: receives into `buf` (at most `want` <= its length).
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut c_void, want, flags) };
            if n > 0 {
                if peek {
                    let take = hs.feed_peeked(&buf[..n as usize]);
                    if take > 0 {
                        // SAFETY: as above; those bytes are queued already.
                        let got = unsafe {
                            libc::recv(
                                fd,
                                buf.as_mut_ptr() as *mut c_void,
                                take,
                                libc::MSG_DONTWAIT,
                            )
                        };
                        if got != take as isize {
                            break Err(Failure::new(
                                libc::EIO,
                                "proxy reply vanished while reading it",
                            ));
                        }
                    }
                } else {
                    hs.feed(&buf[..n as usize]);
                }
            } else if n == 0 {
                hs.eof();
            } else {
                match errno() {
                    libc::EINTR => {}
                    libc::EAGAIN => break Ok(Some(libc::EPOLLIN as u32)),
                    e => {
                        break Err(Failure::new(
                            e,
                            format!("lost the proxy while reading its reply: {}", strerror(e)),
                        ))
                    }
                }
            }
        };
        match outcome {
            Ok(None) => {
                self.log.debug(&format!(
                    "{}: connected through the proxy",
                    Self::target_text(&op)
                ));
                self.finish(op, Ok(0));
            }
            Ok(Some(events)) => {
                if op.connecting {
                    // The connect is still under way: wait for it as for any other.
                    if let Stage::Handshake(hs) = std::mem::replace(&mut op.stage, Stage::Direct) {
                        op.stage = Stage::ProxyConnect(hs);
                    }
                }
                self.park(op, events)
            }
            Err(f) => self.fail(op, f),
        }
    }
}

/// A program's `struct msghdr` (x86-64 layout), as read from its memory.
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
}

/// The size of a `struct mmsghdr` (a msghdr and the `msg_len` the call fills in).
const MMSGHDR: usize = 64;
/// The most iovecs in one message (the kernel's UIO_MAXIOV).
const MAX_IOV: usize = 1024;

fn parse_msghdr(b: &[u8]) -> MsgHdr {
    let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
    MsgHdr {
        name: u64_at(0),
        namelen: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
        iov: u64_at(16),
        iovlen: u64_at(24),
        control: u64_at(32),
        controllen: u64_at(40),
    }
}

/// One datagram a send call passes, copied from the program's memory.
struct Datagram {
    /// The destination (None: the socket's connected peer).
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    control: Vec<u8>,
}

/// The destination of a send, at most 128 bytes of it (None for a null pointer or length).
fn read_name(tid: libc::pid_t, ptr: u64, len: u64) -> Result<Option<Vec<u8>>, c_int> {
    if ptr == 0 || len == 0 {
        return Ok(None);
    }
    let mut raw = vec![0u8; (len as usize).min(128)];
    let n = sys::read_mem(tid, ptr, &mut raw).map_err(|_| libc::EFAULT)?;
    raw.truncate(n);
    Ok(Some(raw))
}

/// The datagram a msghdr describes: its name, its data (every iovec, read in one call) and
/// its control messages.
fn read_datagram(tid: libc::pid_t, m: &MsgHdr) -> Result<Datagram, c_int> {
    let name = read_name(tid, m.name, u64::from(m.namelen))?;
    if m.iovlen as usize > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    let mut iov = vec![0u8; 16 * m.iovlen as usize];
    if !iov.is_empty() && sys::read_mem(tid, m.iov, &mut iov) != Ok(iov.len()) {
        return Err(libc::EFAULT);
    }
    let mut parts = Vec::with_capacity(m.iovlen as usize);
    let mut total = 0usize;
    for v in iov.chunks_exact(16) {
        let base = u64::from_ne_bytes(v[..8].try_into().unwrap());
        let len = u64::from_ne_bytes(v[8..].try_into().unwrap()) as usize;
        total = total.saturating_add(len);
        if total > MAX_DATAGRAM {
            return Err(libc::EMSGSIZE);
        }
        if len > 0 {
            parts.push((base, len));
        }
    }
    let mut data = vec![0u8; total];
    if sys::read_mem_parts(tid, &parts, &mut data) != Ok(total) {
        return Err(libc::EFAULT);
    }
    let mut control = vec![0u8; (m.controllen as usize).min(4096)];
    if !control.is_empty() && sys::read_mem(tid, m.control, &mut control) != Ok(control.len()) {
        return Err(libc::EFAULT);
    }
    Ok(Datagram {
        name,
        data,
        control,
    })
}

/// The datagrams of a notified sendto, sendmsg or sendmmsg, in order, up to the first that
/// cannot be read (its errno, when there is one).
fn read_datagrams(tid: libc::pid_t, nr: c_int, args: &[u64; 6]) -> (Vec<Datagram>, Option<c_int>) {
    let one = |r: Result<Datagram, c_int>| match r {
        Ok(d) => (vec![d], None),
        Err(e) => (Vec::new(), Some(e)),
    };
    match nr {
        NR_SENDTO => one((|| {
            let name = read_name(tid, args[4], args[5])?;
            let len = (args[2] as usize).min(MAX_DATAGRAM);
            let mut data = vec![0u8; len];
            if sys::read_mem(tid, args[1], &mut data) != Ok(len) {
                return Err(libc::EFAULT);
            }
            Ok(Datagram {
                name,
                data,
                control: Vec::new(),
            })
        })()),
        NR_SENDMSG => {
            let mut b = [0u8; 56];
            if sys::read_mem(tid, args[1], &mut b) != Ok(56) {
                return (Vec::new(), Some(libc::EFAULT));
            }
            one(read_datagram(tid, &parse_msghdr(&b)))
        }
        _ => {
            // sendmmsg: every mmsghdr in one read.
            let vlen = (args[2] as usize).min(1024);
            let mut v = vec![0u8; vlen * MMSGHDR];
            let got = match sys::read_mem(tid, args[1], &mut v) {
                Ok(n) => n / MMSGHDR,
                Err(_) => 0,
            };
            let mut out = Vec::with_capacity(got);
            for i in 0..got {
                match read_datagram(tid, &parse_msghdr(&v[i * MMSGHDR..i * MMSGHDR + 56])) {
                    Ok(d) => out.push(d),
                    Err(e) => return (out, Some(e)),
                }
            }
            let err = (got < vlen).then_some(libc::EFAULT);
            (out, err)
        }
    }
}

impl Supervisor {
    /// getpeername: a socket we connected through the proxy reports the destination the
    /// program asked for; any other is the kernel's business.
    fn on_getpeername(&mut self, id: u64, tid: libc::pid_t, args: &[u64; 6]) {
        let fd = match self.take_fd(id, tid, args[0]) {
            Ok(fd) => fd,
            Err(_) => {
                // Not ours to answer (EBADF, ENOTSOCK...): the kernel says it.
                self.cont(id);
                return;
            }
        };
        let inode = fstat_inode(fd);
        let peer = sockaddr::name_of(fd, true);
        sys::close(fd);
        let raw = match (inode.and_then(|i| self.peers.get(&i)), peer) {
            (Some(p), Some(actual)) if route::unmap(actual) == route::unmap(p.proxy) => {
                p.raw.clone()
            }
            _ => {
                self.cont(id);
                return;
            }
        };
        let (addr, lenp) = (args[1], args[2]);
        let r = (|| {
            let mut lb = [0u8; 4];
            if sys::read_mem(tid, lenp, &mut lb) != Ok(4) {
                return Err(libc::EFAULT);
            }
            let room = u32::from_ne_bytes(lb) as usize;
            sys::write_mem(tid, addr, &raw[..room.min(raw.len())])?;
            sys::write_mem(tid, lenp, &(raw.len() as u32).to_ne_bytes())?;
            Ok(0)
        })();
        self.reply(id, r);
    }

    /// sendto with a destination, sendmsg, sendmmsg. TCP ignores the address and other
    /// families cannot reach the network: the kernel runs those. A datagram on an internet
    /// socket is sent by us, from our copy of the program's bytes, when its destination is
    /// direct (loopback, rules); otherwise it is refused: it never leaves directly. A query
    /// to the program's resolver is answered on the spot (see [`Self::answer_inline`]).
    fn on_send(&mut self, id: u64, tid: libc::pid_t, nr: c_int, args: &[u64; 6]) {
        let fd = match self.dup_fd(tid, args[0]) {
            Ok(fd) => fd,
            Err(_) => {
                // Not ours to answer (EBADF, ENOTSOCK...): the kernel says it.
                self.cont(id);
                return;
            }
        };
        let (domain, ty) = Self::sock_kind(fd).unwrap_or((-1, -1));
        if (domain != libc::AF_INET && domain != libc::AF_INET6) || ty == libc::SOCK_STREAM {
            sys::close(fd);
            self.cont(id);
            return;
        }
        // Everything the call passes first, then one check that it is still there (which
        // proves the bytes were the calling thread's), and only then anything is sent.
        let (grams, read_err) = read_datagrams(tid, nr, args);
        if !self.valid(id) {
            sys::close(fd);
            return;
        }
        // sendmsg(fd, msg, flags); sendto(fd, buf, len, flags, ...), sendmmsg(fd, vec, n, flags)
        let flags = (if nr == NR_SENDMSG { args[2] } else { args[3] }) as c_int;
        let flags = (flags & !libc::MSG_FASTOPEN) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let mut ends = Ends::default();
        let mut sent: Vec<usize> = Vec::with_capacity(grams.len());
        let mut err = None;
        for g in &grams {
            match self.send_datagram(fd, domain, flags, g, &mut ends) {
                Ok(n) => sent.push(n),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        sys::close(fd);
        let err = err.or(read_err);
        let r = match nr {
            NR_SENDMMSG => {
                // Each message's msg_len, then the count (an error only when none went).
                let mut wrote = Ok(());
                for (i, n) in sent.iter().enumerate() {
                    let at = args[1] + (MMSGHDR * i) as u64 + 56;
                    wrote = wrote.and(sys::write_mem(tid, at, &(*n as u32).to_ne_bytes()));
                }
                match (sent.len(), err, wrote) {
                    (_, _, Err(_)) => Err(libc::EFAULT),
                    (0, Some(e), _) => Err(e),
                    (n, _, _) => Ok(n as i64),
                }
            }
            _ => match (sent.first(), err) {
                (Some(n), _) => Ok(*n as i64),
                (None, Some(e)) => Err(e),
                (None, None) => Err(libc::EIO),
            },
        };
        self.reply(id, r);
    }

    /// Sends one datagram of the program's on our duplicate `fd` (or answers it, when it is
    /// a query to the resolver): the count of bytes sent, or the errno.
    fn send_datagram(
        &mut self,
        fd: c_int,
        domain: c_int,
        flags: c_int,
        g: &Datagram,
        ends: &mut Ends,
    ) -> Result<usize, c_int> {
        let to_resolver = match &g.name {
            Some(raw) => sockaddr::parse(raw).is_some_and(|d| self.is_resolver(&d)),
            None => {
                let peer = *ends.peer.get_or_insert_with(|| sockaddr::name_of(fd, true));
                peer.is_some_and(|p| Some(route::unmap(p)) == self.dns_addr)
            }
        };
        if to_resolver && self.answer_inline(fd, &g.data, ends) {
            return Ok(g.data.len());
        }
        let dest = self.datagram_dest(g.name.as_deref(), domain)?;
        let mut iov = libc::iovec {
            iov_base: g.data.as_ptr() as *mut c_void,
            iov_len: g.data.len(),
        };
        let d = dest.unwrap_or_default();
        // SAFETY: every pointer in `msg` points at our own buffers of the lengths given (the
        // kernel only reads them).
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            if !d.is_empty() {
                msg.msg_name = d.as_ptr() as *mut c_void;
                msg.msg_namelen = d.len() as u32;
            }
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !g.control.is_empty() {
                msg.msg_control = g.control.as_ptr() as *mut c_void;
                msg.msg_controllen = g.control.len();
            }
            libc::sendmsg(fd, &msg, flags)
        };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    }

    /// A query the program sends to its resolver, answered at once: the reply goes from
    /// our responder's socket (the address a query sent on would have reached) to the
    /// program's socket, and is waiting there when the send returns. That saves sending the
    /// query through the responder's socket and reading it back, and the program a wait for
    /// the reply. False when the program's socket has no IPv4 address and port yet (then
    /// the query is sent to the responder as it is).
    fn answer_inline(&mut self, fd: c_int, query: &[u8], ends: &mut Ends) -> bool {
        if self.dns_sock < 0 {
            return false;
        }
        let local = *ends
            .local
            .get_or_insert_with(|| sockaddr::name_of(fd, false));
        let to = match local.map(route::unmap) {
            Some(SocketAddr::V4(a)) if a.port() != 0 => {
                let ip = if a.ip().is_unspecified() {
                    std::net::Ipv4Addr::LOCALHOST
                } else {
                    *a.ip()
                };
                SocketAddr::new(ip.into(), a.port())
            }
            _ => return false,
        };
        let Some(to) = sockaddr::to_raw(to, libc::AF_INET) else {
            return false;
        };
        let mut out = [0u8; 4096];
        if let Some(len) = self.dns_reply(query, false, &mut out) {
            // SAFETY: sends our reply to a sockaddr of `to.len()` bytes.
            unsafe {
                libc::sendto(
                    self.dns_sock,
                    out.as_ptr() as *const c_void,
                    len,
                    libc::MSG_DONTWAIT,
                    to.as_ptr() as *const libc::sockaddr,
                    to.len() as u32,
                )
            };
        }
        true
    }

    /// Where a datagram to `raw` (None: the socket's connected peer) may go: the address to
    /// send to, or the errno.
    fn datagram_dest(&self, raw: Option<&[u8]>, domain: c_int) -> Result<Option<Vec<u8>>, c_int> {
        let Some(raw) = raw else {
            // The peer was set by a connect we allowed (only direct ones are).
            return Ok(None);
        };
        let Some(dest) = sockaddr::parse(raw) else {
            return Err(libc::EINVAL);
        };
        if self.is_resolver(&dest) {
            return match self.dns_addr.and_then(|a| sockaddr::to_raw(a, domain)) {
                Some(r) => Ok(Some(r)),
                None => Err(libc::ECONNREFUSED),
            };
        }
        let decided = self
            .to_proxy(libc::SOCK_DGRAM, &dest)
            .unwrap_or_else(|| route::route(&self.cfg, &self.names, dest));
        match decided {
            Route::Direct(None, _) => Ok(Some(raw.to_vec())),
            Route::Direct(Some(to), _) => sockaddr::to_raw(to, domain)
                .map(Some)
                .ok_or(libc::EAFNOSUPPORT),
            Route::Deny(e, why) => {
                self.log
                    .warn(&format!("refusing a datagram to {dest}: {why}"));
                Err(e)
            }
            Route::Proxy(..) => {
                self.log.warn(&format!(
                    "refusing a datagram to {dest}: supervised UDP does not go through the proxy"
                ));
                Err(libc::EOPNOTSUPP)
            }
        }
    }
}

/// What a send call's datagrams learn about the program's socket, asked once per call.
#[derive(Default)]
struct Ends {
    peer: Option<Option<SocketAddr>>,
    local: Option<Option<SocketAddr>>,
}

impl Supervisor {
    /// A query to the system resolver (a resolv.conf nameserver, port 53)?
    /// Accepts the DNS-over-TCP streams waiting at our listener.
    fn accept_streams(&mut self) {
        for _ in 0..64 {
            // SAFETY: accept4 with no address wanted.
            let fd = unsafe {
                libc::accept4(
                    self.dns_tcp,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            if self.streams.len() >= MAX_STREAMS {
                self.log
                    .warn("supervisor: too many DNS-over-TCP streams at once; closing one");
                sys::close(fd);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if !epoll_ctl(
                self.epfd,
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
                token,
            ) {
                sys::close(fd);
                continue;
            }
            self.streams.insert(token, (fd, Vec::new()));
        }
    }

    /// Reads what a DNS-over-TCP stream has and answers each whole length-prefixed query on
    /// it; closes it at its end, on an error, or when a reply cannot be sent at once.
    fn serve_stream(&mut self, token: u64) {
        let Some((fd, mut buf)) = self.streams.remove(&token) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut open = true;
        loop {
            // SAFETY: receives into our buffer of its length.
            let n = unsafe {
                libc::recv(
                    fd,
                    chunk.as_mut_ptr() as *mut c_void,
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                buf.extend_from_slice(&chunk[..n as usize]);
                if buf.len() > 65537 * 4 {
                    open = false;
                    break;
                }
                continue;
            }
            if n == 0 || errno() != libc::EAGAIN {
                open = false;
            }
            break;
        }
        let mut out = [0u8; 4096];
        let mut frame = [0u8; 4098];
        while let proxify_core::dns::Frame::Message(msg, used) = proxify_core::dns::take_frame(&buf)
        {
            let len = self.dns_reply(msg, true, &mut out);
            buf.drain(..used);
            let Some(len) = len else { continue };
            let Some(n) = proxify_core::dns::write_frame(&out[..len], &mut frame) else {
                continue;
            };
            // SAFETY: sends our frame of `n` bytes.
            let sent = unsafe {
                libc::send(
                    fd,
                    frame.as_ptr() as *const c_void,
                    n,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent != n as isize {
                open = false;
                break;
            }
        }
        if open {
            self.streams.insert(token, (fd, buf));
        } else {
            epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
            sys::close(fd);
        }
    }

    /// The reply to one DNS message (UDP, or a TCP frame's): placeholders from the shared
    /// table (names the proxy resolves), local answers for names that go direct; nothing is
    /// forwarded from here, so any other query fails (SERVFAIL) rather than go anywhere.
    /// None: no reply at all (a response sent to us, a message that is not DNS).
    fn dns_reply(&self, msg: &[u8], tcp: bool, out: &mut [u8]) -> Option<usize> {
        let mut r = crate::names::Resolver {
            cfg: &self.cfg,
            names: &self.names,
        };
        let (verdict, q) = proxify_core::dns::respond(msg, &mut r, false, tcp, out);
        let len = match verdict {
            proxify_core::dns::Verdict::Reply { len, .. } => len,
            proxify_core::dns::Verdict::Drop => return None,
            _ => proxify_core::dns::error_reply(q.as_ref()?, 2, out),
        };
        if let Some(name) = q.as_ref().and_then(|q| q.name.as_ref()) {
            let via = if tcp { "DNS over TCP" } else { "DNS" };
            self.log
                .debug(&format!("{via}: answered a query for {name}"));
        }
        Some(len)
    }

    fn is_resolver(&self, dest: &SocketAddr) -> bool {
        let d = route::unmap(*dest);
        d.port() == 53 && self.nameservers.contains(&d.ip())
    }

    /// Answers every query waiting at the responder: placeholders from the shared table
    /// (names the proxy resolves), local answers for names that go direct.
    fn answer_dns(&mut self) {
        let mut buf = [0u8; 4096];
        let mut out = [0u8; 4096];
        for _ in 0..64 {
            let mut from = [0u8; 128];
            let mut flen = from.len() as libc::socklen_t;
            // SAFETY: receives into our buffers of the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.dns_sock,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    from.as_mut_ptr() as *mut libc::sockaddr,
                    &mut flen,
                )
            };
            if n < 0 {
                return;
            }
            let Some(len) = self.dns_reply(&buf[..n as usize], false, &mut out) else {
                continue;
            };
            // SAFETY: sends our reply to the sockaddr the query came from.
            unsafe {
                libc::sendto(
                    self.dns_sock,
                    out.as_ptr() as *const c_void,
                    len,
                    libc::MSG_DONTWAIT,
                    from.as_ptr() as *const libc::sockaddr,
                    flen,
                )
            };
        }
    }
}
