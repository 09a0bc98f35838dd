//! Which hops of a chain one connection uses, and what a failed attempt does to the next.
//!
//! Shared by every driver of a chain handshake — the shim's blocking and non-blocking engines
//! and the supervisor — so that a dynamic chain skips a dead hop the same way everywhere.
//! It keeps no state between connections and has no clock, randomness or I/O of its own: the
//! caller says which hops are dead (it remembers them for [`DEAD_FOR`]), where a round-robin
//! chain starts and gives the random numbers.
//!
//! - [`select`]: the hops of the next attempt, by the chain's mode.
//! - [`Attempts`]: the retries of one connection. A dynamic chain tries again, at most once per
//!   hop, when a failure proved one of the hops it used dead; every other failure (and every
//!   failure of a strict, random or round-robin chain) is the connection's.

use crate::chain::Failure;
use crate::config::{Chain, ChainMode};
use crate::url::ProxyUrl;
use std::time::Duration;

/// How long a hop that proved dead is skipped by the dynamic chain it belongs to.
pub const DEAD_FOR: Duration = Duration::from_secs(30);

/// The hops (index in the chain, URL) one attempt through `chain` uses, first hop first.
///
/// - strict: every hop;
/// - dynamic: the hops `dead` does not name, in order; all of them when every hop is dead
///   (trying again beats refusing outright);
/// - random: `chain_len` distinct hops, each picked by `random(n)` (an index below `n`);
/// - round robin: `chain_len` hops from `start(chain_len)` on (the caller's counter, which it
///   moves by `chain_len`), wrapping.
pub fn select(
    chain: &Chain,
    dead: impl Fn(usize) -> bool,
    mut random: impl FnMut(usize) -> usize,
    start: impl FnOnce(usize) -> usize,
) -> Vec<(usize, ProxyUrl)> {
    let all = || chain.hops.iter().cloned().enumerate();
    let n = chain.hops.len();
    let len = chain.chain_len.clamp(1, n.max(1));
    match chain.mode {
        ChainMode::Strict => all().collect(),
        ChainMode::Dynamic => {
            let live: Vec<_> = all().filter(|(i, _)| !dead(*i)).collect();
            if live.is_empty() {
                all().collect()
            } else {
                live
            }
        }
        ChainMode::Random => {
            let mut pool: Vec<_> = all().collect();
            let mut out = Vec::with_capacity(len);
            while out.len() < len && !pool.is_empty() {
                let k = random(pool.len()) % pool.len();
                out.push(pool.swap_remove(k));
            }
            out
        }
        ChainMode::RoundRobin => {
            if n == 0 {
                return Vec::new();
            }
            let s = start(len);
            (0..len)
                .map(|k| {
                    let i = (s + k) % n;
                    (i, chain.hops[i].clone())
                })
                .collect()
        }
    }
}

/// The attempts of one connection through one chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts still allowed, this one included: one per hop of the chain.
    left: usize,
}

impl Attempts {
    /// The first attempt through `chain`.
    pub fn new(chain: &Chain) -> Attempts {
        Attempts {
            left: chain.hops.len().max(1),
        }
    }

    /// The attempt through `hops` failed with `f`. Returns the hop (index in the chain, URL)
    /// the failure proved dead when `chain` tries again without it — the caller marks it
    /// dead, logs the skip, disconnects and selects again — or None when `f` is the
    /// connection's failure.
    pub fn retry_without<'h>(
        &mut self,
        chain: &Chain,
        hops: &'h [(usize, ProxyUrl)],
        f: &Failure,
    ) -> Option<&'h (usize, ProxyUrl)> {
        if chain.mode != ChainMode::Dynamic || self.left <= 1 || hops.len() <= 1 {
            return None;
        }
        let hop = hops.get(f.dead_hop?)?;
        self.left -= 1;
        Some(hop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(mode: ChainMode, n: usize, len: usize) -> Chain {
        Chain {
            name: "c".into(),
            mode,
            chain_len: len,
            hops: (0..n)
                .map(|i| format!("socks5://192.0.2.{}:1080", i + 1).parse().unwrap())
                .collect(),
        }
    }

    fn idx(v: &[(usize, ProxyUrl)]) -> Vec<usize> {
        v.iter().map(|(i, _)| *i).collect()
    }

    fn dead_at(f_hop: usize) -> Failure {
        Failure {
            dead_hop: Some(f_hop),
            ..Failure::new(libc::ECONNREFUSED, "refused")
        }
    }

    #[test]
    fn strict_uses_every_hop_and_never_retries() {
        let c = chain(ChainMode::Strict, 3, 1);
        let hops = select(&c, |_| true, |_| 0, |_| 0);
        assert_eq!(idx(&hops), [0, 1, 2]);
        let mut a = Attempts::new(&c);
        assert_eq!(a.retry_without(&c, &hops, &dead_at(1)), None);
    }

    #[test]
    fn dynamic_skips_dead_hops_and_tries_all_when_all_are_dead() {
        let c = chain(ChainMode::Dynamic, 3, 1);
        assert_eq!(idx(&select(&c, |i| i == 1, |_| 0, |_| 0)), [0, 2]);
        assert_eq!(idx(&select(&c, |_| true, |_| 0, |_| 0)), [0, 1, 2]);
    }

    #[test]
    fn dynamic_retries_once_per_hop_without_the_dead_one() {
        let c = chain(ChainMode::Dynamic, 3, 1);
        let mut a = Attempts::new(&c);
        let hops = select(&c, |_| false, |_| 0, |_| 0);
        assert_eq!(
            a.retry_without(&c, &hops, &dead_at(0)).map(|h| h.0),
            Some(0)
        );
        let hops = select(&c, |i| i == 0, |_| 0, |_| 0);
        // Index 0 of these hops is hop 1 of the chain.
        assert_eq!(
            a.retry_without(&c, &hops, &dead_at(0)).map(|h| h.0),
            Some(1)
        );
        let hops = select(&c, |i| i < 2, |_| 0, |_| 0);
        assert_eq!(idx(&hops), [2]);
        // One hop left (and no attempt left): its failure is the connection's.
        assert_eq!(a.retry_without(&c, &hops, &dead_at(0)), None);
    }

    #[test]
    fn a_failure_that_proves_no_hop_dead_is_the_connections() {
        let c = chain(ChainMode::Dynamic, 2, 1);
        let hops = select(&c, |_| false, |_| 0, |_| 0);
        let mut a = Attempts::new(&c);
        assert_eq!(
            a.retry_without(
                &c,
                &hops,
                &Failure::new(libc::ECONNREFUSED, "the destination refused")
            ),
            None
        );
        // An out-of-range hop index is not a retry either.
        assert_eq!(a.retry_without(&c, &hops, &dead_at(5)), None);
        assert_eq!(a, Attempts::new(&c));
    }

    #[test]
    fn random_picks_distinct_hops() {
        let c = chain(ChainMode::Random, 4, 3);
        let mut k = 0;
        let hops = select(
            &c,
            |_| false,
            |n| {
                k += 7;
                k % n
            },
            |_| 0,
        );
        let mut v = idx(&hops);
        assert_eq!(v.len(), 3);
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 3);
        let mut a = Attempts::new(&c);
        assert_eq!(a.retry_without(&c, &hops, &dead_at(0)), None);
    }

    #[test]
    fn round_robin_starts_where_told_and_wraps() {
        let c = chain(ChainMode::RoundRobin, 3, 2);
        assert_eq!(idx(&select(&c, |_| false, |_| 0, |len| len)), [2, 0]);
        assert_eq!(idx(&select(&c, |_| false, |_| 0, |_| 0)), [0, 1]);
        // chain_len beyond the hops is clamped.
        let c = chain(ChainMode::RoundRobin, 2, 5);
        assert_eq!(idx(&select(&c, |_| false, |_| 0, |_| 1)), [1, 0]);
    }
}
