//! The run's subnets: the pool they are carved from, in [`SUBNET_PREFIX`]-bit blocks, and the
//! addresses within a block (gateway `.1`, bundle `.2`, a container guest `.3`). Arithmetic
//! only; the `network` step (`super::network`) creates the networks on them.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow, bail};
use ipnet::Ipv4Net;

/// The default pool subnets are carved from.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";
/// Each network of a run gets a /28: 14 hosts, of which a run uses three.
pub const SUBNET_PREFIX: u8 = 28;

/// The `n`th address of a network (0 is the network address itself).
pub fn host(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

pub fn gateway(net: &Ipv4Net) -> Ipv4Addr {
    host(net, 1)
}

/// The gateway of the /28 the bundle's address lies in.
pub fn gateway_of_bundle(bundle_ip: Ipv4Addr) -> Ipv4Addr {
    let net = Ipv4Net::new(bundle_ip, SUBNET_PREFIX)
        .expect("a valid prefix")
        .trunc();
    gateway(&net)
}

pub fn bundle_ip(net: &Ipv4Net) -> Ipv4Addr {
    host(net, 2)
}

/// A container guest's address: pinned, so a guest created while the bundle starts never
/// takes the bundle's.
pub fn guest_ip(net: &Ipv4Net) -> Ipv4Addr {
    host(net, 3)
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The pool a run's subnets come from.
#[derive(Debug, Clone, Copy)]
pub struct SubnetPool {
    pub net: Ipv4Net,
}

impl SubnetPool {
    pub fn parse(s: &str) -> Result<SubnetPool> {
        let net: Ipv4Net = s.trim().parse().map_err(|_| {
            anyhow!("{s:?} is not an IPv4 subnet: write it as ADDRESS/PREFIX, e.g. 10.213.0.0/16")
        })?;
        let net = net.trunc();
        if net.prefix_len() > SUBNET_PREFIX {
            bail!(
                "subnet pool {net} is smaller than one /{SUBNET_PREFIX} network; give a pool of /{SUBNET_PREFIX} or larger, e.g. 10.213.0.0/16"
            );
        }
        Ok(SubnetPool { net })
    }

    /// How many blocks the pool holds.
    pub fn blocks(&self) -> u64 {
        1u64 << (SUBNET_PREFIX - self.net.prefix_len())
    }

    /// Every block of the pool once, starting at a place derived from `seed` (so concurrent
    /// runs rarely try the same block first) and wrapping around.
    pub fn candidates(&self, seed: u64) -> impl Iterator<Item = Ipv4Net> + '_ {
        let n = self.blocks();
        let start = seed % n;
        let step = 1u64 << (32 - SUBNET_PREFIX as u32);
        let base = u32::from(self.net.network()) as u64;
        (0..n).map(move |i| {
            let block = (start + i) % n;
            let addr = Ipv4Addr::from((base + block * step) as u32);
            Ipv4Net::new(addr, SUBNET_PREFIX).expect("a valid prefix")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_blocks() {
        let pool = SubnetPool::parse("10.213.0.0/24").unwrap();
        assert_eq!(pool.blocks(), 16);
        let all: Vec<Ipv4Net> = pool.candidates(18).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all[0].to_string(), "10.213.0.32/28");
        assert_eq!(all[15].to_string(), "10.213.0.16/28");
        assert_eq!(gateway(&all[0]).to_string(), "10.213.0.33");
        assert_eq!(bundle_ip(&all[0]).to_string(), "10.213.0.34");
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert!(SubnetPool::parse("10.213.0.0/29").is_err());
        assert!(SubnetPool::parse("10.0.0.0").is_err());
        assert!(SubnetPool::parse("300.0.0.0/8").is_err());
        assert_eq!(SubnetPool::parse("10.213.0.0/28").unwrap().blocks(), 1);
        assert_eq!(
            SubnetPool::parse("10.213.7.9/16").unwrap().net.to_string(),
            "10.213.0.0/16"
        );
    }

    #[test]
    fn overlap() {
        let a: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        let b: Ipv4Net = "10.213.5.16/28".parse().unwrap();
        let c: Ipv4Net = "10.214.0.0/28".parse().unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(!overlaps(&a, &c));
    }
}
