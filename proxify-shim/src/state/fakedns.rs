//! Placeholder addresses for names the proxy resolves (remote DNS).
//!
//! A thin wrapper over [`proxify_core::placeholder`] (the block arithmetic and the lock-free
//! table layout): this file maps the table and holds the process's block.
//!
//! A name gets an index `i`; its placeholders are the `i`-th usable address of the IPv4 block
//! (240.0.0.0/4 by default, `remote_dns_subnet` moves it; honoured exactly: never its network,
//! broadcast or an address outside it) and `100:: + i` (IPv6, the discard-only prefix
//! 100::/64, RFC 6666). A connect to a placeholder
//! sends the name to the proxy; a placeholder that reaches the network by any other path goes
//! nowhere.
//!
//! One table for the whole process tree of one `proxify run`: the CLI creates a memfd and hands
//! it down (`PROXIFY_DNS_FD=N:TOKEN`, inherited across fork and exec), so a name resolved by
//! one process can be connected by another it handed the address to (`addr=$(getent ...);
//! curl http://$addr/`). Without it (LD_PRELOAD set by hand) the table is an anonymous shared
//! mapping: shared with forked children, not across exec.
//!
//! The table is lock-free, so it needs no fork handler and a process killed in the middle of
//! an insert cannot block the others: a slot is written and published (its length stored last)
//! before its index enters the open-addressing hash, and a racing insert of the same name
//! simply loses the compare-and-swap and uses the winner's index.
//!
//! Memory is bounded: at most `CAPACITY` names (65,536; fewer when the block is smaller), 260
//! bytes of slot each plus the hash: a 17.5 MiB mapping, of which only the pages touched are
//! ever backed. When full, a new name fails to resolve (EAI_AGAIN, one warning line for the
//! whole run) rather than reuse an address another process may still hold.

use proxify_core::cidr::Cidr;
use proxify_core::placeholder::{self as ph, Block, Refused, Table, MAX_NAME, TABLE_BYTES};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};

use proxify_core::config::{dns_table_name, ENV_DNS_FD};

/// The IPv4 placeholder block (default 240.0.0.0/4; `remote_dns_subnet` can move it), as
/// base and prefix (atomics: set once by the runtime, read lock-free by every look-up).
static V4_BASE: AtomicU32 = AtomicU32::new(0xF000_0000);
static V4_PREFIX: AtomicU8 = AtomicU8::new(4);

fn block() -> Block {
    let c = Cidr {
        addr: IpAddr::V4(Ipv4Addr::from(V4_BASE.load(Ordering::Relaxed))),
        prefix: V4_PREFIX.load(Ordering::Relaxed),
    };
    Block::new(&c).unwrap_or_default()
}

/// The table, in the shared mapping (never unmapped once published).
static TABLE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Maps the tree-wide table handed down by the CLI, else an anonymous shared one. Called once
/// by the runtime (before any thread); a look-up before that maps an anonymous table.
pub fn init() {
    if !TABLE.load(Ordering::Acquire).is_null() {
        return;
    }
    let t = from_env().or_else(anonymous);
    if let Some(t) = t {
        if TABLE
            .compare_exchange(std::ptr::null_mut(), t, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: our own mapping, lost the race to be published: nobody else has it.
            unsafe { libc::munmap(t as *mut libc::c_void, TABLE_BYTES) };
        }
    }
}

fn table() -> Option<&'static Table> {
    let mut p = TABLE.load(Ordering::Acquire);
    if p.is_null() {
        init();
        p = TABLE.load(Ordering::Acquire);
    }
    // SAFETY: a mapping of TABLE_BYTES, read-write, checked by `Table::at` before it was
    // published, never unmapped afterwards.
    (!p.is_null())
        .then(|| unsafe { Table::at(p, TABLE_BYTES) })
        .flatten()
}

fn map(fd: libc::c_int) -> Option<*mut u8> {
    // SAFETY: mmap of TABLE_BYTES; the result is checked against MAP_FAILED below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            TABLE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | if fd < 0 { libc::MAP_ANONYMOUS } else { 0 },
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: our fresh mapping of TABLE_BYTES (page-aligned): zeroed, or the memfd another
    // process of this run stamped. `at` stamps or checks the magic.
    if unsafe { Table::at(p as *mut u8, TABLE_BYTES) }.is_none() {
        // SAFETY: unmapping what we just mapped.
        unsafe { libc::munmap(p, TABLE_BYTES) };
        return None;
    }
    Some(p as *mut u8)
}

fn anonymous() -> Option<*mut u8> {
    map(-1)
}

/// The memfd named in `PROXIFY_DNS_FD`, checked to be ours before anything is written to it:
/// the fd must be a memfd carrying the token in its name, of the table's size.
fn from_env() -> Option<*mut u8> {
    let v = std::env::var(ENV_DNS_FD).ok()?;
    let (fd, token) = v.split_once(':')?;
    let fd: libc::c_int = fd.parse().ok()?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let want = format!("/memfd:{} (deleted)", dns_table_name(token));
    if link.to_str()? != want {
        return None;
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a stat we own.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_size as usize != TABLE_BYTES {
        return None;
    }
    let t = map(fd)?;
    // The fd stays open for our children; the program cannot close it by accident. (If it
    // cannot be marked, the mapping made above still serves this process; only a program
    // closing every fd could then drop the table for its children, who fall back to their own.)
    let _ = crate::state::fdtable::set(fd, crate::state::fdtable::Entry::Internal { owner: -1 });
    Some(t)
}

/// Moves the IPv4 placeholders into `block` (an IPv4 CIDR the configuration checked);
/// called once by the runtime before any look-up. The block is honoured exactly.
pub fn set_v4_block(block: Cidr) {
    if let Ok(b) = Block::new(&block) {
        let c = b.cidr();
        if let IpAddr::V4(base) = c.addr {
            V4_PREFIX.store(c.prefix, Ordering::Relaxed);
            V4_BASE.store(u32::from(base), Ordering::Relaxed);
        }
    }
}

/// Canonical form of a name: lower case, without one trailing dot.
pub fn normalize(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

/// Why a name got no placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Not a DNS name, or the table could not be mapped.
    NoName,
    /// The block is full (EAI_AGAIN; one warning line per run, for the first).
    Full,
}

/// The index for `name`, assigning one if needed. No allocation, no lock.
pub fn index_for(name: &str) -> Result<u32, Miss> {
    let mut buf = [0u8; MAX_NAME];
    let key = ph::normalize(name.as_bytes(), &mut buf).ok_or(Miss::NoName)?;
    let t = table().ok_or(Miss::NoName)?;
    let b = block();
    match t.index_for(key, b.capacity()) {
        Ok(i) => Ok(i),
        Err(Refused::Invalid) => Err(Miss::NoName),
        Err(Refused::Full) => {
            if t.first_full() {
                log::warn!(
                    "remote-DNS placeholder block {} is full ({} names): new names fail to \
                     resolve (EAI_AGAIN) from now on",
                    b.cidr(),
                    b.capacity()
                );
            }
            Err(Miss::Full)
        }
    }
}

/// The IPv4 placeholder of an index from [`index_for`] (0.0.0.0 for any other).
pub fn v4(index: u32) -> Ipv4Addr {
    block().addr(index).unwrap_or(Ipv4Addr::UNSPECIFIED)
}

pub fn v6(index: u32) -> Ipv6Addr {
    ph::v6(index)
}

/// The index encoded in a placeholder address (0: a placeholder with no name possible), if
/// `ip` is in a placeholder range.
pub fn index_of(ip: &IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => {
            let b = block();
            b.contains(*a).then(|| b.index_of(*a).unwrap_or(0))
        }
        IpAddr::V6(a) => {
            if let Some(m) = a.to_ipv4_mapped() {
                return index_of(&IpAddr::V4(m));
            }
            ph::v6_index(*a)
        }
    }
}

/// Is `ip` in a placeholder range (whether or not a name is behind it)?
pub fn is_placeholder(ip: &IpAddr) -> bool {
    index_of(ip).is_some()
}

/// The name behind a placeholder address.
pub fn name_of(ip: &IpAddr) -> Option<String> {
    let i = index_of(ip)?;
    if i == 0 || i > block().capacity() {
        return None;
    }
    let n = table()?.name(i)?;
    std::str::from_utf8(n).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let i = index_for("Internal.Example.").unwrap();
        assert_eq!(index_for("internal.example"), Ok(i));
        let j = index_for("other.example").unwrap();
        assert_ne!(i, j);
        let a = IpAddr::V4(v4(i));
        let b = IpAddr::V6(v6(i));
        assert_eq!(name_of(&a).as_deref(), Some("internal.example"));
        assert_eq!(name_of(&b).as_deref(), Some("internal.example"));
        let mapped = IpAddr::V6(v4(i).to_ipv6_mapped());
        assert_eq!(name_of(&mapped).as_deref(), Some("internal.example"));
        assert!(!is_placeholder(&"203.0.113.1".parse().unwrap()));
        assert!(!is_placeholder(&"2001:db8::1".parse().unwrap()));
        assert!(name_of(&"240.255.0.0".parse().unwrap()).is_none());
        assert!(index_for("").is_err());
        assert!(index_for(&"a".repeat(256)).is_err());
    }

    #[test]
    fn shared_with_a_forked_child() {
        let i = index_for("before-fork.example").unwrap();
        // SAFETY: fork in a single-threaded test process; the child only checks the map and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child sees the parent's names and adds one the parent will see.
            let ok = name_of(&IpAddr::V4(v4(i))).as_deref() == Some("before-fork.example")
                && index_for("from-child.example").is_ok();
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waitpid writes one int we own.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let k = index_for("from-child.example").unwrap();
        assert_eq!(
            name_of(&IpAddr::V4(v4(k))).as_deref(),
            Some("from-child.example")
        );
    }

    #[test]
    fn many_threads_one_index_per_name() {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..200)
                        .map(|n| index_for(&format!("n{n}.threads.example")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Vec<u32>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        for v in &all[1..] {
            assert_eq!(v, &all[0]);
        }
    }
}
