//! Acting on a live run by its record: `bottle ps` lists the runs, `bottle exec` runs a command
//! in a run's guest. A run is found by its record in the store (`super::record::find`);
//! `bottle down` and the sweep of what a run left are `super::down`, its audit log
//! `super::audit`.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::names;
use super::record::{RunRecord, find};
use crate::hash::BuildHash;
use crate::plan::GuestBackend;
use crate::runtime::docker;
use crate::runtime::guest::Guest;
use crate::runtime::smolvm::Smolvm;
use crate::store::Store;

/// One row of `bottle ps`.
#[derive(Debug, Serialize)]
pub struct PsRow {
    pub run_id: String,
    pub name: String,
    pub hash: Option<BuildHash>,
    pub backend: GuestBackend,
    pub pid: u32,
    /// Whether the process that made the run still runs; a dead one left a stale record.
    pub live: bool,
    /// Whether the guest is up and the agent's command has started (`bottle exec` works).
    pub ready: bool,
    pub started: u64,
    pub subnet: Option<String>,
    pub bundle_ip: Option<String>,
    pub guest: Option<String>,
    /// How many of the agent's supervise requests wait for a person (`bottle supervise`);
    /// none when the run has no supervise queue.
    pub pending_requests: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown_error: Option<String>,
}

pub fn ps(store: &Store) -> Result<Vec<PsRow>> {
    let mut rows = Vec::new();
    for r in RunRecord::list(store)? {
        match r {
            Ok(r) => rows.push(PsRow {
                live: r.is_live(),
                ready: r.ready,
                pending_requests: super::supervise::pending_count(store, &r.run_id),
                run_id: r.run_id,
                name: r.name,
                hash: r.hash,
                backend: r.backend,
                pid: r.pid,
                started: r.started,
                subnet: r.subnet,
                bundle_ip: r.bundle_ip,
                guest: r.guest,
                teardown_error: r.teardown_error,
            }),
            Err((id, e)) => tracing::warn!("run {id}: {e:#}"),
        }
    }
    Ok(rows)
}

/// `bottle exec RUN -- CMD`: runs CMD in a live run's guest as its user, in its home, with the
/// whole guest env; returns its exit code.
pub async fn exec(store: &Store, id: &str, cmd: &[String]) -> Result<i64> {
    let rec = find(store, id)?;
    if !rec.is_live() {
        bail!(
            "run {} is not live (its process {} ended); `bottle down {}` removes what it left",
            rec.run_id,
            rec.pid,
            rec.run_id
        );
    }
    let hash = rec.hash.context("the run record names no entry")?;
    let entry = store
        .load(&hash)
        .with_context(|| format!("the entry {hash} of run {} is gone", rec.run_id))?;
    let g = entry.guest_spec();
    let bundle_ip = rec
        .bundle_ip
        .clone()
        .context("the run has no network yet; wait for it to come up")?;
    let guest_name = rec
        .guest
        .clone()
        .context("the run has no guest yet; wait for it to come up")?;
    let env = names::fill_guest_env(&g.env, &bundle_ip);
    let guest = match rec.backend {
        GuestBackend::Docker => Guest::Docker {
            docker: docker::connect().await?,
            container: guest_name,
        },
        GuestBackend::Smolvm => {
            let mut s = Smolvm::locate()?;
            if rec.smolvm_state_dir.is_some() {
                s.state_dir = rec.smolvm_state_dir.clone();
            }
            Guest::Smolvm {
                smolvm: s,
                machine: guest_name,
            }
        }
    };
    if cmd.is_empty() {
        bail!("give the command to run after `--`, e.g. `bottle exec RUN -- sh`");
    }
    guest
        .exec_attached(&g.user, Some(super::provision::workdir(g)), &env, cmd)
        .await
}
