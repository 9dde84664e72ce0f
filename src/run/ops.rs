//! Acting on runs by their records: `bottle ps`, `bottle exec`, `bottle down`, and the sweep
//! that removes whatever a run left behind.
//!
//! A run is found by its record in the store (`bottle ps` lists them) and its resources by the
//! record and by the `bottle.run` label, so a run whose process died by SIGKILL is cleaned as
//! well as one that is merely stale. `bottle down` asks a live run's process to stop (SIGTERM,
//! so it tears down itself, in order) before sweeping.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use serde::Serialize;

use super::names::{self, LABEL_RUN, LABEL_STORE};
use super::record::{self, Resource, RunRecord};
use super::store_label;
use crate::hash::BuildHash;
use crate::plan::GuestBackend;
use crate::runtime::docker;
use crate::runtime::docker_run as engine;
use crate::runtime::guest::Guest;
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

/// The record of the run `id` names (a run id or a unique prefix of one).
pub fn find(store: &Store, id: &str) -> Result<RunRecord> {
    let all: Vec<RunRecord> = RunRecord::list(store)?
        .into_iter()
        .filter_map(|r| r.ok())
        .filter(|r| r.run_id.starts_with(id.trim()))
        .collect();
    match all.len() {
        0 => bail!(
            "no run {id:?} in {}; `bottle ps` lists the runs",
            store.root().display()
        ),
        1 => Ok(all.into_iter().next().expect("one")),
        n => bail!("{id:?} matches {n} runs; give more of the run id (`bottle ps`)"),
    }
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

/// A run's audit log (`runs/RUNID/audit/audit.jsonl`), read as it grows.
pub struct AuditReader {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// The reader starts mid-file: what comes before the first newline is a cut line.
    cut: bool,
}

impl AuditReader {
    /// The log of the run `id` names (a run id or a unique prefix of one), live or ended.
    pub fn open(store: &Store, id: &str) -> Result<AuditReader> {
        let id = id.trim();
        let mut found: Vec<String> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(record::runs_dir(store)) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if !id.is_empty() && name.starts_with(id) && ent.path().is_dir() {
                    found.push(name);
                }
            }
        }
        found.sort();
        let run_id = match found.len() {
            0 => bail!(
                "no run {id:?} in {} (an ended run's log stays until `bottle gc`); `bottle ps` lists the live runs",
                store.root().display()
            ),
            1 => found.remove(0),
            n => bail!(
                "{id:?} matches {n} runs ({}); give more of the run id",
                found.join(", ")
            ),
        };
        let dir = record::run_dir(store, &run_id);
        let path = dir
            .join(crate::daemons::audit::AUDIT_RUN_DIR)
            .join(crate::daemons::audit::AUDIT_FILE);
        Ok(AuditReader {
            dir,
            path,
            offset: 0,
            partial: Vec::new(),
            cut: false,
        })
    }

    /// Starts at the last `max_bytes` of the log (its first whole line there) instead of its
    /// beginning: for a reader that shows the recent lines of a long log.
    pub fn from_tail(mut self, max_bytes: u64) -> AuditReader {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len > max_bytes {
            // One byte before: when it is a newline, the line after it is whole and kept.
            self.offset = len - max_bytes - 1;
            self.cut = true;
        }
        self
    }

    /// Whether the run is over (no live record left).
    pub fn ended(&self) -> bool {
        let record = self.dir.join(record::RECORD_FILE);
        match RunRecord::load(&record) {
            Ok(r) => !r.is_live(),
            Err(_) => true,
        }
    }

    /// The events written since the last read (a line still being written waits).
    pub fn read_new(&mut self) -> Result<Vec<crate::daemons::audit::Event>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        let n = file.read_to_end(&mut bytes)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        if self.cut {
            match self.partial.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.partial.drain(..=end);
                    self.cut = false;
                }
                None => return Ok(Vec::new()),
            }
        }
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            match serde_json::from_slice(&line) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!("skipping an unreadable audit line: {e}"),
            }
        }
        Ok(events)
    }
}

/// One audit event as a line for people.
pub fn audit_line(e: &crate::daemons::audit::Event) -> String {
    let rule = e.rule.as_deref().unwrap_or("-");
    let decision = e.decision.name();
    // A git-gate line: the ref update after the repository's path.
    let git = e
        .git
        .as_ref()
        .map(|g| {
            use crate::daemons::audit::short;
            format!(" {} {}..{}", g.ref_name, short(&g.old), short(&g.new))
        })
        .unwrap_or_default();
    format!(
        "{}  {:<7} {}:{}{}{git}  {decision} ({rule})  {}  sent {} received {}  {} ms",
        utc(e.time_ms),
        e.method,
        e.host,
        e.port,
        e.path,
        e.status,
        indicatif::HumanBytes(e.bytes_out),
        indicatif::HumanBytes(e.bytes_in),
        e.duration_ms
    )
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn utc(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    i64::try_from(ms)
        .ok()
        .and_then(|ms| {
            time::OffsetDateTime::UNIX_EPOCH.checked_add(time::Duration::milliseconds(ms))
        })
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tail_starts_at_a_whole_line() {
        use crate::daemons::audit::{Decision, Event};
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::new(tmp.path());
        let dir = super::record::run_dir(&store, "r1").join(crate::daemons::audit::AUDIT_RUN_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Event::granted("r1", "a.test", "x");
        e.decision = Decision::Allowed;
        let mut text = String::new();
        for host in ["one.test", "two.test", "three.test"] {
            e.host = host.into();
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        std::fs::write(dir.join(crate::daemons::audit::AUDIT_FILE), &text).unwrap();
        let last = text.lines().last().unwrap().len() as u64 + 1;
        let hosts = |max: u64| -> Vec<String> {
            let mut r = super::AuditReader::open(&store, "r1")
                .unwrap()
                .from_tail(max);
            r.read_new().unwrap().into_iter().map(|e| e.host).collect()
        };
        assert_eq!(hosts(last + 5), ["three.test"]);
        assert_eq!(hosts(last), ["three.test"]);
        assert_eq!(hosts(1 << 20).len(), 3);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_795_981_234_567), "2026-11-29T19:40:34.567Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            super::utc(u64::MAX),
            format!("{} ms after the epoch", u64::MAX)
        );
    }
}
