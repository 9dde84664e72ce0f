//! The checks of the machine itself: the Docker Engine, KVM for a smolvm guest, and free
//! disk where the store and the engine keep their bytes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bollard::Docker;

use super::check::Check;
use super::needs::{ImageNeed, Needs};
use crate::runtime::docker;
use crate::store::Store;

pub const KVM_DEVICE: &str = "/dev/kvm";

/// The KVM device checked: `BOTTLE_KVM_DEVICE` (a test hook: the real device's mode is the
/// machine's, shared by every test), else [`KVM_DEVICE`].
pub fn kvm_device() -> String {
    std::env::var("BOTTLE_KVM_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| KVM_DEVICE.to_string())
}

/// Free bytes required where no entry tells the images' sizes: a build writes each image
/// into the store and the engine holds it too (a Claude guest is about 300 MB).
pub const FLOOR_UNKNOWN: u64 = 2 << 30;
/// Headroom beyond the images a run loads: containers' writable layers, the run's folder and
/// logs.
pub const HEADROOM: u64 = 256 << 20;

/// The engine answers its API (and the client with it), or why not.
pub async fn engine() -> (Check, Option<Docker>) {
    let host = docker::engine_host();
    match docker::connect_checked().await {
        Ok(d) => {
            let version = d
                .version()
                .await
                .ok()
                .and_then(|v| v.version)
                .map(|v| format!("Docker Engine {v}"))
                .unwrap_or_else(|| "the Docker Engine".to_string());
            (
                Check::pass("engine", format!("{version} at {host}")),
                Some(d),
            )
        }
        Err(e) => (Check::fail("engine", e.problem, e.fix), None),
    }
}

/// Why the KVM device cannot be used by this user, if it cannot: it must open read-write.
pub fn kvm_problem(device: &str) -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "{device} does not exist: this machine offers no KVM (virtualization off, the kvm module not loaded, or a VM without nested virtualization)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "{device} exists but this user may not open it read-write (permission denied)"
        )),
        Err(e) => Some(format!("{device} cannot be opened read-write ({e})")),
    }
}

/// KVM for a smolvm guest; `twin` says how to run without it.
pub fn kvm(device: &str, twin: &str) -> Check {
    match kvm_problem(device) {
        None => Check::pass("kvm", format!("{device} opens read-write")),
        Some(p) => {
            let access = if Path::new(device).exists() {
                format!(
                    "give this user access (`sudo usermod -aG kvm $USER` and log in again, or `sudo chmod 666 {device}`), or "
                )
            } else {
                String::new()
            };
            Check::fail(
                "kvm",
                format!("the smolvm guest needs KVM, and {p}"),
                format!("{access}{twin}"),
            )
        }
    }
}

/// KVM without a target: said, never a failure (docker recipes need none).
pub fn kvm_note(device: &str) -> Check {
    match kvm_problem(device) {
        None => Check::pass(
            "kvm",
            format!("{device} opens read-write: smolvm guests can run"),
        ),
        Some(p) => Check::note(
            "kvm",
            format!("not usable ({p}): only docker-guest recipes run here"),
        ),
    }
}

/// A place whose filesystem must hold `need` more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub label: String,
    pub path: PathBuf,
    /// The filesystem's device: places on one filesystem add up.
    pub dev: u64,
    pub free: u64,
    pub need: u64,
    /// What the need is for, for the message.
    pub for_what: String,
}

/// Free space for the store and the engine's root dir.
pub async fn disk(store: &Store, needs: Option<&Needs>, docker: Option<&Docker>) -> Vec<Check> {
    let images = needs.and_then(|n| n.images.as_ref());
    let mut places = Vec::new();
    let (store_need, store_for) = match images {
        Some(_) => (HEADROOM, "the run's folder and logs".to_string()),
        None => (
            FLOOR_UNKNOWN,
            "building the images (no entry yet)".to_string(),
        ),
    };
    match place("store", store.root(), store_need, store_for) {
        Ok(p) => places.push(p),
        Err(c) => return vec![c],
    }
    if let Some(d) = docker
        && let Some(root) = docker_root(d).await
    {
        let (need, for_what) = match images {
            Some(list) => engine_need(d, list).await,
            None => (FLOOR_UNKNOWN, "the images (no entry yet)".to_string()),
        };
        // The engine's root may lie where this user cannot look (a remote or rootless engine).
        if let Ok(p) = place("the engine's root dir", Path::new(&root), need, for_what) {
            places.push(p);
        }
    }
    verdict(&places)
}

/// The images the engine lacks, and the headroom: the bytes its root dir must take.
async fn engine_need(d: &Docker, images: &[ImageNeed]) -> (u64, String) {
    let mut need = HEADROOM;
    let mut parts = Vec::new();
    for i in images {
        if d.inspect_image(&i.id).await.is_err() {
            need = need.saturating_add(i.bytes);
            parts.push(format!("the {} image, {}", i.what, human(i.bytes)));
        }
    }
    let for_what = if parts.is_empty() {
        "containers (the images are loaded already)".to_string()
    } else {
        format!("{} and containers", parts.join(", "))
    };
    (need, for_what)
}

async fn docker_root(d: &Docker) -> Option<String> {
    d.info().await.ok()?.docker_root_dir
}

/// The filesystem of `path` (or of its nearest existing parent).
fn place(label: &str, path: &Path, need: u64, for_what: String) -> Result<Place, Check> {
    let mut at = path;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let fail = |e: std::io::Error| {
        Check::fail(
            "disk",
            format!(
                "cannot tell the free space at {} ({label}): {e}",
                at.display()
            ),
            "make the folder readable, or choose another with --store / BOTTLE_STORE",
        )
    };
    let st = rustix::fs::statvfs(at).map_err(|e| fail(e.into()))?;
    let dev = std::fs::metadata(at).map_err(fail)?.dev();
    Ok(Place {
        label: label.to_string(),
        path: path.to_path_buf(),
        dev,
        free: st.f_bavail.saturating_mul(st.f_frsize),
        need,
        for_what,
    })
}

/// One check per filesystem: places on one filesystem add their needs up.
pub fn verdict(places: &[Place]) -> Vec<Check> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for dev in places.iter().map(|p| p.dev) {
        if seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        let on: Vec<&Place> = places.iter().filter(|p| p.dev == dev).collect();
        let need = on.iter().fold(0u64, |t, p| t.saturating_add(p.need));
        let free = on[0].free;
        let names = on
            .iter()
            .map(|p| format!("{} {}", p.label, p.path.display()))
            .collect::<Vec<_>>()
            .join(" and ");
        let uses = on
            .iter()
            .map(|p| p.for_what.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if free >= need {
            out.push(Check::pass(
                "disk",
                format!("{} free for {names} (needs {})", human(free), human(need)),
            ));
        } else {
            out.push(Check::fail(
                "disk",
                format!(
                    "{} free for {names}, which need {} ({uses})",
                    human(free),
                    human(need)
                ),
                format!(
                    "free {} there (`bottle gc`, `docker image prune`), or move the store (--store / BOTTLE_STORE) to a larger filesystem",
                    human(need - free)
                ),
            ));
        }
    }
    out
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(label: &str, dev: u64, free: u64, need: u64) -> Place {
        Place {
            label: label.into(),
            path: PathBuf::from(format!("/{label}")),
            dev,
            free,
            need,
            for_what: format!("{label}'s images"),
        }
    }

    #[test]
    fn places_on_one_filesystem_add_up() {
        let one = verdict(&[at("store", 1, 300, 200), at("engine", 1, 300, 200)]);
        assert_eq!(one.len(), 1);
        assert!(!one[0].ok, "{one:?}");
        let problem = one[0].problem.as_deref().unwrap();
        assert!(
            problem.contains("store /store and engine /engine"),
            "{problem}"
        );
        let two = verdict(&[at("store", 1, 300, 200), at("engine", 2, 300, 200)]);
        assert_eq!(two.len(), 2);
        assert!(two.iter().all(|c| c.ok), "{two:?}");
    }

    #[test]
    fn a_missing_device_is_no_kvm() {
        let c = kvm(
            "/nonexistent/kvm",
            "use recipes/x-docker.toml, the docker twin",
        );
        assert!(!c.ok);
        assert!(c.problem.unwrap().contains("does not exist"));
        assert!(c.fix.unwrap().contains("x-docker.toml"));
        assert!(kvm_note("/nonexistent/kvm").ok);
    }
}
