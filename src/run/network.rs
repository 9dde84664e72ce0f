//! The `network` step: the run's subnets, carved from a pool, and its networks.
//!
//! A run takes its subnets from a pool (`--subnet-pool`, `BOTTLE_SUBNET_POOL`, default
//! [`DEFAULT_POOL`]) in [`SUBNET_PREFIX`]-bit blocks: the gateway is the block's first host
//! (`.1`), the bundle the second (`.2`), a container guest the third (`.3`). Blocks any docker
//! network already uses are skipped; the engine has the last word (a create that overlaps is
//! refused and the run tries the next block), so two runs starting at the same moment never
//! share a subnet.
//!
//! A docker guest gets an internal network (no host address on its bridge: the bundle is its
//! only peer) and the bundle an outbound one; a smolvm guest needs one bridge for the bundle.
//! Both are created at once, each as a task of its own whose undo waits for it: a signal that
//! arrives while a network is being created cuts the step short, but not the creation, and the
//! teardown removes the network once it exists.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow, bail};
use ipnet::Ipv4Net;

use super::names;
use super::record::Resource;
use super::steps::{Ctx, tracked};
use super::undo::{UndoFuture, UndoStack};
use crate::runtime::docker_run::{self as engine, NetworkCreated};

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

/// The run's networks: the guest's (internal for a docker guest) and, for a docker guest, the
/// bundle's outbound one, on two free blocks of the pool, created at once.
pub async fn networks(
    ctx: &Ctx,
    undo: &mut UndoStack,
    docker_guest: bool,
) -> Result<(Ipv4Net, Option<Ipv4Net>)> {
    let mut used = engine::used_subnets(&ctx.docker).await?;
    let seed = names::seed_of(&ctx.names.run_id);
    let mut wanted = vec![(ctx.names.guest_net(), docker_guest)];
    if docker_guest {
        wanted.push((ctx.names.outbound_net(), false));
    }
    let picks: Vec<Ipv4Net> = ctx
        .pool
        .candidates(seed)
        .filter(|c| !used.iter().any(|u| overlaps(u, c)))
        .take(wanted.len())
        .collect();
    if picks.len() < wanted.len() {
        return Err(no_free_subnet(ctx, 0));
    }
    let mut together: Vec<(String, UndoFuture)> = Vec::new();
    let mut creating = Vec::new();
    for ((name, internal), subnet) in wanted.iter().zip(&picks) {
        ctx.note(Resource::Network { name: name.clone() })?;
        let (handle, undo_one) = create_tracked(ctx, name, *subnet, *internal);
        together.push(undo_one);
        creating.push(handle);
    }
    undo.push_together(together);
    used.extend(picks.iter().copied());
    let mut got: Vec<Option<Ipv4Net>> = vec![None; wanted.len()];
    let mut retry = Vec::new();
    for (i, handle) in creating.into_iter().enumerate() {
        match handle.await?? {
            NetworkCreated::Created => got[i] = Some(picks[i]),
            // Taken since we listed (another run starting at this moment): try further on.
            NetworkCreated::Overlap(_) => retry.push(i),
        }
    }
    for i in retry {
        let (name, internal) = &wanted[i];
        got[i] = Some(allocate(ctx, undo, name, *internal, seed, &mut used).await?);
    }
    let subnet = got[0].expect("the guest's network exists");
    Ok((subnet, got.get(1).copied().flatten()))
}

/// Creates one network as a task of its own; the undo (removal) waits for the creation.
fn create_tracked(
    ctx: &Ctx,
    name: &str,
    subnet: Ipv4Net,
    internal: bool,
) -> (
    tokio::task::JoinHandle<Result<NetworkCreated>>,
    (String, UndoFuture),
) {
    let (docker, n, labels) = (ctx.docker.clone(), name.to_string(), ctx.labels.clone());
    let create =
        async move { engine::create_network(&docker, &n, subnet, internal, &labels).await };
    let (docker, n) = (ctx.docker.clone(), name.to_string());
    tracked(format!("remove network {name}"), create, move || {
        Box::pin(async move { engine::remove_network(&docker, &n).await })
    })
}

fn no_free_subnet(ctx: &Ctx, overlaps: usize) -> anyhow::Error {
    anyhow!(
        "no free /{} subnet left in pool {} ({} blocks; {} taken while choosing): docker networks use them; remove stale runs with `bottle down --all`, or give another pool with --subnet-pool or BOTTLE_SUBNET_POOL",
        SUBNET_PREFIX,
        ctx.pool.net,
        ctx.pool.blocks(),
        overlaps
    )
}

/// Takes the next free block of the pool and creates network `name` on it; pushes its undo.
async fn allocate(
    ctx: &Ctx,
    undo: &mut UndoStack,
    name: &str,
    internal: bool,
    seed: u64,
    used: &mut Vec<Ipv4Net>,
) -> Result<Ipv4Net> {
    let mut overlaps_seen = 0;
    for cand in ctx.pool.candidates(seed) {
        if used.iter().any(|u| overlaps(u, &cand)) {
            continue;
        }
        let (handle, (what, action)) = create_tracked(ctx, name, cand, internal);
        undo.push(what, action);
        used.push(cand);
        match handle.await?? {
            NetworkCreated::Created => return Ok(cand),
            NetworkCreated::Overlap(_) => overlaps_seen += 1,
        }
    }
    Err(no_free_subnet(ctx, overlaps_seen))
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
