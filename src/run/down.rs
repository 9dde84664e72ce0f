//! `bottle down`, and the sweep that removes whatever a run left behind (also the end of every
//! run's own teardown).
//!
//! A run's resources are found by its record and by the `bottle.run` label, so a run whose
//! process died by SIGKILL is cleaned as well as one that is merely stale. `bottle down` asks a
//! live run's process to stop (SIGTERM, so it tears down itself, in order) before sweeping;
//! `--all` also sweeps what this store's runs left without a (readable) record.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bollard::Docker;
use serde::Serialize;

use super::names::{LABEL_RUN, LABEL_STORE, store_label};
use super::record::{self, Resource, RunRecord, find};
use crate::plan::GuestBackend;
use crate::runtime::docker;
use crate::runtime::docker_run as engine;
use crate::runtime::smolvm::Smolvm;
use crate::store::Store;

/// How long `bottle down` waits for a live run to tear itself down after SIGTERM.
const DOWN_WAIT: Duration = Duration::from_secs(30);

/// Removes everything of a run that may still exist: its machines (from the record; skipped
/// when `machines` is false, after an undo stack that deleted them), then the containers and
/// networks carrying its label.
pub async fn sweep(
    docker: &Docker,
    smolvm: Option<&Smolvm>,
    record: &RunRecord,
    machines: bool,
) -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    let machines: Vec<&str> = record
        .created
        .iter()
        .filter_map(|r| match r {
            Resource::Machine { name } => Some(name.as_str()),
            _ => None,
        })
        .filter(|_| machines)
        .collect();
    if !machines.is_empty() {
        let located;
        let smolvm = match smolvm {
            Some(s) => Some(s),
            None => match Smolvm::locate() {
                Ok(mut s) => {
                    if record.smolvm_state_dir.is_some() {
                        s.state_dir = record.smolvm_state_dir.clone();
                    }
                    located = s;
                    Some(&located)
                }
                Err(e) => {
                    errors.push(format!("cannot remove machines {machines:?}: {e:#}"));
                    None
                }
            },
        };
        if let Some(s) = smolvm {
            for m in machines {
                let _ = s.machine_stop(m).await;
                if let Err(e) = s.machine_delete(m).await {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    let (mut containers, mut networks) =
        engine::by_label(docker, LABEL_RUN, &record.run_id).await?;
    for r in &record.created {
        match r {
            Resource::Container { name } if !containers.contains(name) => {
                containers.push(name.clone())
            }
            Resource::Network { name } if !networks.contains(name) => networks.push(name.clone()),
            _ => {}
        }
    }
    // Guest before bundle, then the networks they were on.
    containers.sort_by_key(|c| !c.ends_with("-guest"));
    for c in &containers {
        if let Err(e) = engine::remove_container(docker, c).await {
            errors.push(format!("{e:#}"));
        }
    }
    for n in &networks {
        let mut last = None;
        for attempt in 0..20 {
            match engine::remove_network(docker, n).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                // An endpoint still going away: give the engine a moment.
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
            }
        }
        if let Some(e) = last {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// What `bottle down` did to one run.
#[derive(Debug, Serialize)]
pub struct DownRow {
    pub run_id: String,
    /// The run's process was alive and was asked to stop (SIGTERM).
    pub signalled: bool,
    /// The process tore the run down itself.
    pub torn_down_by_run: bool,
    /// No record: found by its `bottle.store` label only.
    pub orphan: bool,
    pub error: Option<String>,
}

/// `bottle down RUN` / `bottle down --all`.
pub async fn down(store: &Store, id: Option<&str>, all: bool) -> Result<Vec<DownRow>> {
    let docker = docker::connect().await?;
    let mut rows = Vec::new();
    let mut targets: Vec<RunRecord> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    if all {
        for r in RunRecord::list(store)? {
            match r {
                Ok(r) => targets.push(r),
                Err((run_id, _)) => unreadable.push(run_id),
            }
        }
    } else if let Some(id) = id {
        targets.push(find(store, id)?);
    } else {
        bail!("name a run (`bottle ps` lists them) or give --all");
    }
    for rec in targets {
        let mut row = DownRow {
            run_id: rec.run_id.clone(),
            signalled: false,
            torn_down_by_run: false,
            orphan: false,
            error: None,
        };
        if rec.is_live() && rec.pid != std::process::id() {
            // The pid's start time matches the record's: it is that process.
            if let Some(pid) = rustix::process::Pid::from_raw(rec.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            row.signalled = true;
            // A run that tears itself down removes its record (keeping, at most, its log).
            let record = record::run_dir(store, &rec.run_id).join(record::RECORD_FILE);
            let deadline = Instant::now() + DOWN_WAIT;
            while record.exists() && rec.is_live() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !record.exists() {
                row.torn_down_by_run = true;
                rows.push(row);
                continue;
            }
        }
        match sweep(&docker, None, &rec, true).await {
            Ok(()) => {
                let removed = store
                    .unpin(&rec.run_id)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| RunRecord::end(store, &rec.run_id));
                if let Err(e) = removed {
                    row.error = Some(format!("{e:#}"));
                }
            }
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        rows.push(row);
    }
    if all {
        down_orphans(store, &docker, &mut rows, unreadable).await?;
    }
    Ok(rows)
}

/// `bottle down --all`'s second half: resources of this store whose run left no (readable)
/// record, its machines, and pins of runs that have no record.
async fn down_orphans(
    store: &Store,
    docker: &Docker,
    rows: &mut Vec<DownRow>,
    unreadable: Vec<String>,
) -> Result<()> {
    // Resources of this store whose run left no (readable) record.
    let known: Vec<String> = rows.iter().map(|r| r.run_id.clone()).collect();
    let mut orphans =
        engine::label_values(docker, LABEL_STORE, &store_label(store), LABEL_RUN).await?;
    orphans.extend(unreadable);
    orphans.sort();
    orphans.dedup();
    for run_id in orphans.into_iter().filter(|r| !known.contains(r)) {
        let rec = orphan_record(&run_id);
        let error = sweep(docker, None, &rec, true)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        if error.is_none() {
            let _ = store.unpin(&run_id);
            let _ = RunRecord::end(store, &run_id);
        }
        rows.push(DownRow {
            run_id,
            signalled: false,
            torn_down_by_run: false,
            orphan: true,
            error,
        });
    }
    sweep_machines(store, rows).await;
    // Pins whose run left no record: a run writes its record before its pin and removes
    // its pin before its record, so such a pin belongs to no run.
    for (run_id, _) in store.pins_list()? {
        if !record::run_dir(store, &run_id)
            .join(record::RECORD_FILE)
            .exists()
        {
            store.unpin(&run_id)?;
        }
    }
    Ok(())
}

/// smolvm machines labelled with this store whose run is gone (best effort: skipped when the
/// smolvm CLI is not installed).
async fn sweep_machines(store: &Store, rows: &mut Vec<DownRow>) {
    let Ok(smolvm) = Smolvm::locate() else {
        return;
    };
    let Ok(machines) = smolvm.machine_ls().await else {
        return;
    };
    let label = store_label(store);
    for m in machines {
        let labels = &m["labels"];
        if labels[LABEL_STORE].as_str() != Some(label.as_str()) {
            continue;
        }
        let (Some(name), Some(run_id)) = (m["name"].as_str(), labels[LABEL_RUN].as_str()) else {
            continue;
        };
        let _ = smolvm.machine_stop(name).await;
        let error = smolvm
            .machine_delete(name)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        if !rows.iter().any(|r| r.run_id == run_id) {
            rows.push(DownRow {
                run_id: run_id.to_string(),
                signalled: false,
                torn_down_by_run: false,
                orphan: true,
                error,
            });
        }
    }
}

fn orphan_record(run_id: &str) -> RunRecord {
    let mut r = record::new_record(run_id, None, "", GuestBackend::Docker, None);
    r.pid = 0;
    r.pid_start = None;
    r
}
