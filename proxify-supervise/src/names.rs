//! Remote-DNS placeholders for supervised programs: proxify-core's shared table (the one the
//! shim uses: the memfd of `PROXIFY_DNS_FD` when one is handed down, else a mapping of our
//! own) and its block arithmetic, and the resolver behind the DNS responder that answers the
//! program's queries to its system resolver.

use proxify_core::cidr::Cidr;
use proxify_core::config::{Config, ENV_DNS_FD};
use proxify_core::dns::{self, AddrList, Lookup};
use proxify_core::placeholder::{self, Block, Table, MAX_NAME, TABLE_BYTES};
use proxify_core::rules::Verdict;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

pub struct Names {
    block: Block,
    table: Option<&'static Table>,
}

fn map(fd: libc::c_int) -> Option<&'static Table> {
    // SAFETY: a fresh shared mapping of the table's size (anonymous, or of the memfd checked
    // by the caller); never unmapped, so 'static holds.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            TABLE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | if fd < 0 { libc::MAP_ANONYMOUS } else { 0 },
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        Table::at(p as *mut u8, TABLE_BYTES)
    }
}

/// The memfd named in `given` or else `PROXIFY_DNS_FD` (`FD:TOKEN`), checked to be the CLI's.
fn from_env(given: Option<&str>) -> Option<&'static Table> {
    let v = match given {
        Some(v) => v.to_string(),
        None => std::env::var(ENV_DNS_FD).ok()?,
    };
    let (fd, token) = v.split_once(':')?;
    let fd: libc::c_int = fd.parse().ok()?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let want = format!(
        "/memfd:{} (deleted)",
        proxify_core::config::dns_table_name(token)
    );
    if link.to_str()? != want {
        return None;
    }
    map(fd)
}

impl Names {
    /// `table`: the `FD:TOKEN` of the table the command shares (under `--enforce`, the one
    /// `proxify run` made for the shim), else `PROXIFY_DNS_FD`'s.
    pub fn new(cidr: Cidr, table: Option<&str>) -> Names {
        let block = Block::new(&cidr).unwrap_or_default();
        Names {
            block,
            table: from_env(table).or_else(|| map(-1)),
        }
    }

    #[cfg(test)]
    pub fn none() -> Names {
        Names {
            block: Block::default(),
            table: None,
        }
    }

    fn index_of(&self, ip: &IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => self.block.index_of(*a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => self.block.index_of(m),
                None => placeholder::v6_index(*a),
            },
        }
    }

    pub fn is_placeholder(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.block.contains(*a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => self.block.contains(m),
                None => placeholder::v6_index(*a).is_some(),
            },
        }
    }

    pub fn name_of(&self, ip: &IpAddr) -> Option<String> {
        let i = self.index_of(ip)?;
        let n = self.table?.name(i)?;
        std::str::from_utf8(n).ok().map(str::to_string)
    }

    /// The placeholder of `name` (assigning one).
    pub fn addr_for(&self, name: &str, v6: bool) -> Option<IpAddr> {
        let mut buf = [0u8; MAX_NAME];
        let n = placeholder::normalize(name.as_bytes(), &mut buf)?;
        let i = self.table?.index_for(n, self.block.capacity()).ok()?;
        if v6 {
            Some(IpAddr::V6(placeholder::v6(i)))
        } else {
            self.block.addr(i).map(IpAddr::V4)
        }
    }
}

/// The resolver behind the supervisor's DNS responder: a name the configuration sends through
/// a chain with remote DNS gets a placeholder; a name that goes direct, or through a chain
/// with local DNS, is resolved locally (by the supervisor); a denied name does not exist.
pub struct Resolver<'a> {
    pub cfg: &'a Config,
    pub names: &'a Names,
}

impl dns::Resolver for Resolver<'_> {
    fn addrs(&mut self, name: &str, v6: bool) -> Lookup {
        let remote = match self.cfg.decide(None, Some(name), 0).verdict {
            Verdict::Proxy(c) => self
                .cfg
                .chain(c)
                .map(|c| self.cfg.remote_dns(c))
                .unwrap_or(true),
            Verdict::Deny => return Lookup::NxDomain,
            Verdict::Direct => false,
        };
        if remote {
            return match self.names.addr_for(name, v6) {
                Some(ip) => Lookup::Found(AddrList::one(ip)),
                None => Lookup::Fail,
            };
        }
        match (name, 0u16).to_socket_addrs() {
            Ok(it) => {
                let mut l = AddrList::default();
                for a in it
                    .map(|a: SocketAddr| a.ip())
                    .filter(|ip| ip.is_ipv6() == v6)
                {
                    if !l.push(a) {
                        break;
                    }
                }
                if l.as_slice().is_empty() {
                    Lookup::NoData
                } else {
                    Lookup::Found(l)
                }
            }
            Err(_) => Lookup::NxDomain,
        }
    }

    fn name_of(&mut self, ip: IpAddr) -> Option<dns::Name> {
        dns::Name::new(&self.names.name_of(&ip)?)
    }
}
