//! The run record: what a run created, kept in the store until its teardown completes.
//!
//! ```text
//! cache/v2/runs/RUNID/
//! ├── record.json     run id, hash, pid (and its start time), and every resource the run
//! │                   creates, written *before* it is created and kept until it is removed
//! ├── ca/             the run's CAs (folder 0700, keys 0600), removed at teardown
//! └── supervise/      folders the bundle mounts read-write (`RunDir` mounts), one per name
//! ```
//!
//! The record is written before anything is created and rewritten (by rename) as each resource
//! is about to be created, so a run killed at any moment — SIGKILL included — leaves a record
//! naming everything it may have left; `bottle down` removes those, then the folder. A clean
//! teardown removes the folder itself. The record holds no secret: names and ids only.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::hash::BuildHash;
use crate::plan::GuestBackend;
use crate::store::Store;

pub const RECORD_FILE: &str = crate::store::RUN_RECORD;
const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A docker network, by name.
    Network { name: String },
    /// A docker container, by name.
    Container { name: String },
    /// A smolvm machine, by name (in the record's smolvm state folder).
    Machine { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub run_id: String,
    /// The entry the run runs; none for a record `bottle down` makes up for resources it
    /// found by label only.
    pub hash: Option<BuildHash>,
    pub name: String,
    pub backend: GuestBackend,
    /// The process running the bring-up and the agent, and its start time (clock ticks after
    /// boot, from /proc) so a reused pid is not mistaken for it.
    pub pid: u32,
    pub pid_start: Option<u64>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub subnet: Option<String>,
    pub bundle_ip: Option<String>,
    /// The guest container or machine name, once chosen.
    pub guest: Option<String>,
    /// smolvm's `--state-dir`, when one was set, so `bottle down` finds the machine.
    pub smolvm_state_dir: Option<PathBuf>,
    /// Everything the run may have created, in creation order.
    pub created: Vec<Resource>,
    /// Set when the guest is up and provisioned and the agent's command starts: `bottle exec`
    /// and `bottle supervise` have a guest to talk to from then on.
    #[serde(default)]
    pub ready: bool,
    /// Set when a teardown ran but could not remove everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown_error: Option<String>,
}

/// The store's run folders (`runs/`).
pub fn runs_dir(store: &Store) -> PathBuf {
    store.runs()
}

pub fn run_dir(store: &Store, run_id: &str) -> PathBuf {
    runs_dir(store).join(run_id)
}

impl RunRecord {
    /// Writes the record by one rename, so a reader sees the old record or the new one.
    pub fn save(&self, store: &Store) -> Result<()> {
        let dir = run_dir(store, &self.run_id);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut bytes = serde_json::to_vec_pretty(self).expect("a record serializes");
        bytes.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{RECORD_FILE}."))
            .tempfile_in(&dir)
            .with_context(|| format!("cannot write a record in {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, &bytes)
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        let dest = dir.join(RECORD_FILE);
        tmp.persist(&dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(())
    }

    /// Adds a resource (before it is created) and saves.
    pub fn add(&mut self, store: &Store, r: Resource) -> Result<()> {
        if !self.created.contains(&r) {
            self.created.push(r);
        }
        self.save(store)
    }

    pub fn load(path: &Path) -> Result<RunRecord> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let r: RunRecord = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a run record; remove its folder by hand",
                path.display()
            )
        })?;
        if r.format != RECORD_FORMAT {
            anyhow::bail!(
                "{}: run record format {} is not {RECORD_FORMAT}",
                path.display(),
                r.format
            );
        }
        Ok(r)
    }

    /// Every record in the store, oldest first; unreadable ones are reported by id.
    pub fn list(store: &Store) -> Result<Vec<Result<RunRecord, (String, anyhow::Error)>>> {
        let dir = runs_dir(store);
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        for ent in rd.flatten() {
            let id = ent.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || !ent.path().is_dir() {
                continue;
            }
            let path = ent.path().join(RECORD_FILE);
            if !path.exists() {
                // A folder left without a record: nothing was ever created from it.
                continue;
            }
            out.push(RunRecord::load(&path).map_err(|e| (id, e)));
        }
        out.sort_by_key(|r| match r {
            Ok(r) => (r.started, r.run_id.clone()),
            Err((id, _)) => (0, id.clone()),
        });
        Ok(out)
    }

    /// Whether the process that made the run is still running.
    pub fn is_live(&self) -> bool {
        match (process_start(self.pid), self.pid_start) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Removes the run's folder (record and run folders): for a run that never started.
    pub fn remove(store: &Store, run_id: &str) -> Result<()> {
        let dir = run_dir(store, run_id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }

    /// The last act of a complete teardown: removes everything of the run's folder but its
    /// audit log, which stays (with an `ended` marker) until `bottle gc`, so `bottle logs`
    /// answers for every run; a run that never got as far as its bundle leaves nothing.
    pub fn end(store: &Store, run_id: &str) -> Result<()> {
        let dir = run_dir(store, run_id);
        let keep = crate::daemons::audit::AUDIT_RUN_DIR;
        if !dir.join(keep).is_dir() {
            return RunRecord::remove(store, run_id);
        }
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let marker = dir.join(crate::store::RUN_ENDED);
        fs::write(&marker, format!("{}\n", now_secs()))
            .with_context(|| format!("cannot write {}", marker.display()))?;
        for ent in rd.flatten() {
            let name = ent.file_name();
            if name == keep || name == crate::store::RUN_ENDED {
                continue;
            }
            let path = ent.path();
            let r = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }
}

/// A process's start time in clock ticks after boot (field 22 of /proc/PID/stat), or `None`
/// when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is index 19; a zombie counts as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new record for a run about to start, owned by this process.
pub fn new_record(
    run_id: &str,
    hash: Option<BuildHash>,
    name: &str,
    backend: GuestBackend,
    smolvm_state_dir: Option<PathBuf>,
) -> RunRecord {
    let pid = std::process::id();
    RunRecord {
        format: RECORD_FORMAT,
        run_id: run_id.to_string(),
        hash,
        name: name.to_string(),
        backend,
        pid,
        pid_start: process_start(pid),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        subnet: None,
        bundle_ip: None,
        guest: None,
        smolvm_state_dir,
        created: Vec::new(),
        ready: false,
        teardown_error: None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_live() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some());
        let r = RunRecord {
            pid: me,
            pid_start: start,
            ..RunRecord::new_for_test("abc")
        };
        assert!(r.is_live());
        let other = RunRecord {
            pid_start: start.map(|s| s + 1),
            ..r.clone()
        };
        assert!(!other.is_live());
    }

    #[test]
    fn saves_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let mut r = RunRecord::new_for_test("r1");
        r.save(&store).unwrap();
        r.add(
            &store,
            Resource::Network {
                name: "bottle-r1-net".into(),
            },
        )
        .unwrap();
        let all = RunRecord::list(&store).unwrap();
        assert_eq!(all.len(), 1);
        let got = all[0].as_ref().unwrap();
        assert_eq!(got.created, r.created);
        RunRecord::remove(&store, "r1").unwrap();
        assert!(RunRecord::list(&store).unwrap().is_empty());
    }

    impl RunRecord {
        fn new_for_test(id: &str) -> RunRecord {
            RunRecord {
                format: RECORD_FORMAT,
                run_id: id.into(),
                hash: None,
                name: "demo".into(),
                backend: GuestBackend::Docker,
                pid: 1,
                pid_start: None,
                started: 0,
                subnet: None,
                bundle_ip: None,
                guest: None,
                smolvm_state_dir: None,
                created: vec![],
                ready: false,
                teardown_error: None,
            }
        }
    }
}
