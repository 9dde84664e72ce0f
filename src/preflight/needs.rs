//! What a target needs from the machine, read from a plan or from a store entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::{GuestBackend, Planned, UpstreamPlan};
use crate::store::{Component, Entry};

/// An image the run loads into the engine (unless the engine holds it).
#[derive(Debug, Clone)]
pub struct ImageNeed {
    /// `bundle` or `guest`.
    pub what: &'static str,
    /// The engine's image id.
    pub id: String,
    /// The archive's bytes: about what the engine needs to hold it.
    pub bytes: u64,
}

/// What a run of one recipe or entry needs.
#[derive(Debug, Clone)]
pub struct Needs {
    pub name: String,
    pub backend: GuestBackend,
    /// The recipe file, when the target is one (to name its docker twin).
    pub recipe: Option<PathBuf>,
    /// Each egress route's (token variable, host).
    pub routes: Vec<(String, String)>,
    pub upstreams: Vec<UpstreamPlan>,
    /// The images a run loads; `None` when no entry is built yet.
    pub images: Option<Vec<ImageNeed>>,
}

impl Needs {
    /// A recipe's needs, from its plan; `entry` is its store entry when it is built.
    pub fn of_plan(planned: &Planned, recipe: &Path, entry: Option<&Entry>) -> Needs {
        let p = &planned.plan;
        Needs {
            name: p.name.clone(),
            backend: p.guest.backend,
            recipe: Some(recipe.to_path_buf()),
            routes: p
                .egress
                .routes
                .iter()
                .map(|r| (r.token_env.clone(), r.host.clone()))
                .collect(),
            upstreams: p.git_gate.upstreams.clone(),
            images: entry.map(images),
        }
    }

    /// A store entry's needs.
    pub fn of_entry(entry: &Entry) -> Needs {
        let key = entry.config_key();
        Needs {
            name: entry.manifest.name.clone(),
            backend: entry.guest_key().backend,
            recipe: None,
            routes: key
                .egress
                .routes
                .iter()
                .map(|r| (r.token_env.clone(), r.host.clone()))
                .collect(),
            upstreams: key.git_gate.upstreams.clone(),
            images: Some(images(entry)),
        }
    }

    /// Each token variable once, with the hosts whose routes send it.
    pub fn token_vars(&self) -> BTreeMap<String, Vec<String>> {
        let mut vars: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (var, host) in &self.routes {
            vars.entry(var.clone()).or_default().push(host.clone());
        }
        vars
    }

    /// How to run this without KVM: its docker twin, named by path when one lies beside the
    /// recipe (`NAME-docker.toml`), or in `recipes/` under the working folder.
    pub fn docker_twin(&self) -> String {
        let file = format!("{}-docker.toml", self.name);
        let beside = self
            .recipe
            .as_ref()
            .and_then(|r| r.parent())
            .map(|d| d.join(&file));
        let candidates = beside.into_iter().chain([Path::new("recipes").join(&file)]);
        for c in candidates {
            if c.is_file() {
                return format!(
                    "use {}, the docker twin, or a machine with KVM",
                    c.display()
                );
            }
        }
        "use a docker twin of this recipe (a copy with `backend = \"docker\"` under [guest]), or a machine with KVM".to_string()
    }
}

/// The bundle's image, and the guest's for a docker guest.
fn images(entry: &Entry) -> Vec<ImageNeed> {
    let mut out = vec![image("bundle", &entry.bundle)];
    if entry.guest_key().backend == GuestBackend::Docker {
        out.push(image("guest", &entry.guest));
    }
    out
}

fn image(what: &'static str, c: &Component) -> ImageNeed {
    let img = c.image();
    let bytes = c
        .record
        .files
        .iter()
        .find(|f| f.path == img.archive)
        .map_or(0, |f| f.size);
    ImageNeed {
        what,
        id: img.id.clone(),
        bytes,
    }
}
