//! What a test's runs leave behind, for "nothing left" checks: run folders (live and ended),
//! pins, smolvm machines, containers and networks labelled with the store, and files named
//! after a run outside its folder.

use std::path::Path;
use std::process::Command;

use super::{LABEL_STORE, TestContext, docker, lines};

impl TestContext {
    /// The run folders of this store (`runs/RUNID`).
    /// The runs of this store that are not over: folders with a record, or with neither a
    /// record nor the `ended` marker a complete teardown leaves beside the run's audit log.
    pub fn records(&self) -> Vec<String> {
        let runs = self.store().runs();
        names_in(&runs)
            .into_iter()
            .filter(|r| {
                let dir = runs.join(r);
                dir.join(bottle::store::RUN_RECORD).exists()
                    || !dir.join(bottle::store::RUN_ENDED).exists()
            })
            .collect()
    }

    /// The folders of runs that ended and kept their audit log (until `bottle gc`).
    pub fn ended_runs(&self) -> Vec<String> {
        let runs = self.store().runs();
        names_in(&runs)
            .into_iter()
            .filter(|r| runs.join(r).join(bottle::store::RUN_ENDED).exists())
            .collect()
    }

    /// The pins of this store (`pins/RUNID`).
    pub fn pins(&self) -> Vec<String> {
        names_in(&self.store().pins())
    }

    /// Everything of this store's runs that still exists: containers, networks, machines,
    /// run folders, pins, files named after a run outside its folder. Empty when the runs
    /// left nothing behind.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let label = format!("label={LABEL_STORE}={}", self.store_label);
        for c in lines(&docker(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.Names}}",
        ])) {
            out.push(format!("container {c}"));
        }
        for n in lines(&docker(&[
            "network",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}}",
        ])) {
            out.push(format!("network {n}"));
        }
        for m in self.machines() {
            out.push(format!("machine {m}"));
        }
        for r in self.records() {
            out.push(format!("run record {r}"));
        }
        for p in self.pins() {
            out.push(format!("pin {p}"));
        }
        out.extend(self.files_outside_run_folders());
        out
    }

    /// Files named after one of this store's runs anywhere but its run folder: in the rest of
    /// the store (pins are counted apart) or in the system's temporary folder. A run keeps
    /// what it makes (CA, audit log, supervise queue) in `runs/RUNID/`.
    fn files_outside_run_folders(&self) -> Vec<String> {
        let runs = names_in(&self.store().runs());
        let mut found = Vec::new();
        let look = |dir: &Path, depth: usize, found: &mut Vec<String>| {
            let mut stack = vec![(dir.to_path_buf(), depth)];
            while let Some((d, left)) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let path = e.path();
                    if path == self.store().runs() || path == self.store().pins() {
                        continue;
                    }
                    let name = e.file_name().to_string_lossy().to_string();
                    if runs.iter().any(|r| name.contains(r.as_str())) {
                        found.push(format!("file {}", path.display()));
                    }
                    if left > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((path, left - 1));
                    }
                }
            }
        };
        if !runs.is_empty() {
            look(self.store().root(), 8, &mut found);
            look(&std::env::temp_dir(), 0, &mut found);
        }
        found
    }

    pub fn assert_nothing_left(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "the run left: {left:?}");
    }

    /// Names of the machines in this test's smolvm state folder.
    pub fn machines(&self) -> Vec<String> {
        let out = Command::new("smolvm")
            .args(["machine", "ls", "--json", "--state-dir"])
            .arg(&self.smolvm_state)
            .output();
        let Ok(out) = out else { return Vec::new() };
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}
