//! Docker resources and their removal: the networks and containers a test makes itself,
//! image removal under the build lock, the Drop guard of [`TestContext`] (see the module doc
//! of `mod.rs`) with the removal of a test's build chain, and the docker CLI helpers.

use std::process::Command;

use super::{BUILDS, LABEL_COMPONENT, LABEL_STORE, TestContext, lines, stderr, stdout};

impl TestContext {
    /// A docker network the test makes itself, labelled with the store so the guard removes it.
    pub fn make_network(&self, name: &str, subnet: Option<&str>) {
        let label = format!("{LABEL_STORE}={}", self.store_label);
        let mut args = vec!["network", "create", "--label", &label];
        if let Some(s) = subnet {
            args.push("--subnet");
            args.push(s);
        }
        args.push(name);
        let out = Command::new("docker").args(&args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        self.extra_networks.lock().unwrap().push(name.to_string());
    }

    pub fn note_container(&self, name: &str) {
        self.extra_containers.lock().unwrap().push(name.to_string());
    }

    /// Removes an image from the engine (`docker rmi --no-prune`, no `-f`) under the write
    /// side of the build lock; returns whether the engine removed it.
    pub fn remove_image(&self, reference: &str) -> bool {
        let _lock = BUILDS.write().unwrap_or_else(|e| e.into_inner());
        Command::new("docker")
            .args(["rmi", "--no-prune", reference])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        // No asserting here: a panic while a failed test unwinds would abort.
        let _ = self.cmd().args(["down", "--all"]).output();
        let label = format!("label={LABEL_STORE}={}", self.store_label);
        let mut containers = lines(&docker(&["ps", "-a", "-q", "--filter", &label]));
        containers.extend(self.extra_containers.lock().unwrap().iter().cloned());
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args);
        }
        let mut nets = lines(&docker(&["network", "ls", "-q", "--filter", &label]));
        nets.extend(self.extra_networks.lock().unwrap().iter().cloned());
        if !nets.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(nets.iter().map(String::as_str));
            docker(&args);
        }
        for m in self.machines() {
            let _ = Command::new("smolvm")
                .args(["machine", "delete", "-f", "--name", &m, "--state-dir"])
                .arg(&self.smolvm_state)
                .output();
        }
        self.scan_store();
        let components = self.components.lock().unwrap().clone();
        let _lock = BUILDS.write().unwrap_or_else(|e| e.into_inner());
        remove_build_chain(&self.test_id_path);
        for id in components {
            let filter = format!("label={LABEL_COMPONENT}={}/{}", id.kind, id.hash);
            let listed = docker(&[
                "image",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ]);
            for line in lines(&listed) {
                let (image, tag) = line.split_once(' ').unwrap_or((&line, ""));
                // By tag: an image with another tag too only loses this one.
                let reference = if tag.contains("<none>") { image } else { tag };
                let _ = Command::new("docker")
                    .args(["rmi", "--no-prune", reference])
                    .output();
            }
        }
    }
}

/// Removes the images a test's guest builds left in the engine: the chain that starts with the
/// step copying its `test-id` to `test_id_path` (bottle removes the image it built once
/// saved; its parent layers stay as build cache). Leaves first; untagged parents go with them.
fn remove_build_chain(test_id_path: &str) {
    let ids = lines(&docker(&["image", "ls", "-a", "-q", "--no-trunc"]));
    if ids.is_empty() {
        return;
    }
    let mut args = vec![
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Parent}} {{json .ContainerConfig.Cmd}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    let mut parent_of = std::collections::BTreeMap::new();
    let mut roots = Vec::new();
    for line in lines(&docker(&args)) {
        let mut words = line.splitn(3, ' ');
        let (id, parent, cmd) = (
            words.next().unwrap_or_default().to_string(),
            words.next().unwrap_or_default().to_string(),
            words.next().unwrap_or_default(),
        );
        if cmd.contains(test_id_path) {
            roots.push(id.clone());
        }
        parent_of.insert(id, parent);
    }
    let ours = |id: &String| {
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            if roots.contains(&c) {
                return true;
            }
            cur = parent_of.get(&c).filter(|p| !p.is_empty()).cloned();
        }
        false
    };
    let chain: Vec<&String> = parent_of.keys().filter(|id| ours(id)).collect();
    let leaves: Vec<&String> = chain
        .iter()
        .filter(|id| !parent_of.values().any(|p| p == **id))
        .copied()
        .collect();
    for leaf in leaves {
        let _ = Command::new("docker").args(["rmi", leaf]).output();
    }
}

/// Runs the docker CLI (for checking and cleaning only); returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A docker CLI command that must succeed; returns its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out).trim().to_string()
}
