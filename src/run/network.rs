//! The `network` step: the run's subnets, carved from a pool, and its networks.
//!
//! A run takes its subnets from a pool (`--subnet-pool`, `BOTTLE_SUBNET_POOL`, default
//! `super::subnet::DEFAULT_POOL`) in blocks, each address of a block with its role (see
//! `super::subnet`). Blocks any docker network already uses are skipped; the engine has the
//! last word (a create that overlaps is refused and the run tries the next block), so two runs
//! starting at the same moment never share a subnet.
//!
//! A docker guest gets an internal network (no host address on its bridge: the bundle is its
//! only peer) and the bundle an outbound one; a smolvm guest needs one bridge for the bundle.
//! Both are created at once, each as a task of its own whose undo waits for it: a signal that
//! arrives while a network is being created cuts the step short, but not the creation, and the
//! teardown removes the network once it exists.

use anyhow::{Result, anyhow};
use ipnet::Ipv4Net;

use super::names;
use super::record::Resource;
use super::steps::{Ctx, tracked};
use super::subnet::{SUBNET_PREFIX, overlaps};
use super::undo::{UndoFuture, UndoStack};
use crate::runtime::docker_run::{self as engine, NetworkCreated};

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
