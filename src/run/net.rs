//! Run-time values: the run id, resource names, and subnets carved from a pool.
//!
//! Nothing here is in the manifest: one build can run many times at once, so every value that
//! two runs must not share is chosen here, when a run starts. A run takes its subnets from a
//! pool (`--subnet-pool`, `BOTTLE_SUBNET_POOL`, default [`DEFAULT_POOL`]) carved in
//! [`SUBNET_PREFIX`]-bit blocks: the gateway is the block's first host (`.1`), the bundle the
//! second (`.2`). Blocks any docker network already uses are skipped; the engine itself has
//! the last word (a create that overlaps is refused and the run tries the next block), so two
//! runs starting at the same moment never share a subnet.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use crate::manifest::BUNDLE_IP_TEMPLATE;

/// The default pool subnets are carved from.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";
/// Each network of a run gets a /28: 14 hosts, of which a run uses three.
pub const SUBNET_PREFIX: u8 = 28;

/// An IPv4 network in CIDR form, its address masked to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net {
            base: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    /// Parses `a.b.c.d/n`; the address may have host bits set (they are masked off).
    pub fn parse(s: &str) -> Result<Ipv4Net> {
        let text = s.trim();
        let Some((addr, prefix)) = text.split_once('/') else {
            bail!("{s:?} is not an IPv4 subnet: write it as ADDRESS/PREFIX, e.g. 10.213.0.0/16");
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| anyhow::anyhow!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= 32 => p,
            _ => bail!("{s:?}: the prefix length must be a number from 0 to 32"),
        };
        Ok(Ipv4Net::new(addr, prefix))
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(n))
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    pub fn bundle_ip(&self) -> Ipv4Addr {
        self.host(2)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let p = self.prefix.min(other.prefix);
        (self.base & mask(p)) == (other.base & mask(p))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & mask(self.prefix)) == self.base
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// The pool a run's subnets come from.
#[derive(Debug, Clone, Copy)]
pub struct SubnetPool {
    pub net: Ipv4Net,
}

impl SubnetPool {
    pub fn parse(s: &str) -> Result<SubnetPool> {
        let net = Ipv4Net::parse(s)?;
        if net.prefix > SUBNET_PREFIX {
            bail!(
                "subnet pool {net} is smaller than one /{SUBNET_PREFIX} network; give a pool of /{SUBNET_PREFIX} or larger, e.g. 10.213.0.0/16"
            );
        }
        Ok(SubnetPool { net })
    }

    /// How many blocks the pool holds.
    pub fn blocks(&self) -> u64 {
        self.net.size() >> (32 - SUBNET_PREFIX as u32)
    }

    /// Every block of the pool once, starting at a place derived from `seed` (so concurrent
    /// runs rarely try the same block first) and wrapping around.
    pub fn candidates(&self, seed: u64) -> impl Iterator<Item = Ipv4Net> + '_ {
        let n = self.blocks();
        let start = seed % n;
        let step = 1u64 << (32 - SUBNET_PREFIX as u32);
        (0..n).map(move |i| {
            let block = (start + i) % n;
            Ipv4Net {
                base: self.net.base.wrapping_add((block * step) as u32),
                prefix: SUBNET_PREFIX,
            }
        })
    }
}

/// A fresh run id: 10 hex digits from the clock, the pid and a counter, through blake3.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize().to_hex()[..10].to_string()
}

/// A number derived from the run id, to spread runs over the pool.
pub fn seed_of(run_id: &str) -> u64 {
    let d = blake3::hash(run_id.as_bytes());
    u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Names of the run's resources; every one starts with `bottle-RUNID`.
#[derive(Debug, Clone)]
pub struct Names {
    pub run_id: String,
}

impl Names {
    pub fn new(run_id: &str) -> Names {
        Names {
            run_id: run_id.to_string(),
        }
    }
    fn name(&self, what: &str) -> String {
        format!("bottle-{}-{what}", self.run_id)
    }
    /// The guest's network: internal for a container guest, the bundle's only one for smolvm.
    pub fn guest_net(&self) -> String {
        self.name("net")
    }
    /// The bundle's way out (container guests only).
    pub fn outbound_net(&self) -> String {
        self.name("out")
    }
    pub fn bundle(&self) -> String {
        self.name("bundle")
    }
    pub fn guest(&self) -> String {
        self.name("guest")
    }
}

/// Label keys every resource of a run carries.
pub const LABEL_RUN: &str = "bottle.run";
pub const LABEL_HASH: &str = "bottle.hash";
/// The store's folder: `bottle down --all` with one store never touches another store's runs.
pub const LABEL_STORE: &str = "bottle.store";

/// The guest env with [`BUNDLE_IP_TEMPLATE`] filled, as `K=V` entries in name order.
pub fn fill_guest_env(env: &BTreeMap<String, String>, bundle_ip: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.clone(), v.replace(BUNDLE_IP_TEMPLATE, bundle_ip)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let n = Ipv4Net::parse("10.213.7.9/16").unwrap();
        assert_eq!(n.to_string(), "10.213.0.0/16");
        assert!(Ipv4Net::parse("10.0.0.0").is_err());
        assert!(Ipv4Net::parse("10.0.0.0/33").is_err());
        assert!(Ipv4Net::parse("300.0.0.0/8").is_err());
    }

    #[test]
    fn carves_blocks() {
        let pool = SubnetPool::parse("10.213.0.0/24").unwrap();
        assert_eq!(pool.blocks(), 16);
        let all: Vec<Ipv4Net> = pool.candidates(18).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all[0].to_string(), "10.213.0.32/28");
        assert_eq!(all[15].to_string(), "10.213.0.16/28");
        assert_eq!(all[0].gateway().to_string(), "10.213.0.33");
        assert_eq!(all[0].bundle_ip().to_string(), "10.213.0.34");
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert!(SubnetPool::parse("10.213.0.0/29").is_err());
        assert_eq!(SubnetPool::parse("10.213.0.0/28").unwrap().blocks(), 1);
    }

    #[test]
    fn overlap() {
        let a = Ipv4Net::parse("10.213.0.0/16").unwrap();
        let b = Ipv4Net::parse("10.213.5.16/28").unwrap();
        let c = Ipv4Net::parse("10.214.0.0/28").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(b.contains("10.213.5.20".parse().unwrap()));
    }

    #[test]
    fn fills_template() {
        let env = BTreeMap::from([
            ("A".to_string(), "http://{{bundle_ip}}:8888".to_string()),
            ("B".to_string(), "x".to_string()),
        ]);
        let f = fill_guest_env(&env, "10.0.0.2");
        assert_eq!(f[0].1, "http://10.0.0.2:8888");
        assert_eq!(f[1].1, "x");
    }

    #[test]
    fn run_ids_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
    }
}
