//! Reproducible artifacts: the same hash built on a fresh engine gives bit-identical `guest`
//! and `bundle` components.
//!
//! One test in its own binary, outside the engine harness (`tests/engine/`): between its two
//! builds it removes every image its first build made (found as the images that appeared in
//! the engine during that build) and prunes the engine's whole build cache (`docker builder
//! prune -af`), which no other test can be using at that moment only because cargo runs test
//! binaries one after another and this one holds nothing else. (Starting a second `dockerd`
//! is not an option on these machines: stopping one removed the other's bridge.) The demo's
//! Dockerfile gets one leading step of this test's own, so the images it removes are its own,
//! never a layer other builds share.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bottle");

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all_images() -> BTreeSet<String> {
    docker(&["image", "ls", "-a", "-q", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Of `ids`, the images of this test's builds: those descending from the image of its own
/// leading step (`COPY test-id /etc/test-id`), so images other work made meanwhile are kept.
fn ours(ids: &BTreeSet<String>) -> BTreeSet<String> {
    let inspect = |id: &str, what: &str| {
        docker(&["image", "inspect", "--format", what, id])
            .trim()
            .to_string()
    };
    ids.iter()
        .filter(|id| {
            let mut cur = id.to_string();
            for _ in 0..64 {
                if inspect(&cur, "{{.ContainerConfig.Cmd}}").contains("/etc/test-id") {
                    return true;
                }
                cur = inspect(&cur, "{{.Parent}}");
                if cur.is_empty() {
                    return false;
                }
            }
            false
        })
        .cloned()
        .collect()
}

/// Removes images (children before parents: `docker rmi` refuses a parent first).
fn remove_images(ids: &BTreeSet<String>) {
    for _ in 0..ids.len().max(1) {
        let left: Vec<&String> = ids.iter().filter(|i| all_images().contains(*i)).collect();
        if left.is_empty() {
            return;
        }
        for id in left {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
    }
}

/// Removes what the test made from the engine, also when it fails.
struct Images(BTreeSet<String>);

impl Drop for Images {
    fn drop(&mut self) {
        remove_images(&self.0);
    }
}

fn build(store: &Path, recipe: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .env("BOTTLE_STORE", store)
        .args(["--json", "build"])
        .arg(recipe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of a component, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_builds_on_a_fresh_engine_give_bit_identical_guest_and_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let recipes = tmp.path().join("recipes");
    std::fs::create_dir_all(recipes.join("demo")).unwrap();
    for f in ["Dockerfile", "passwd", "group"] {
        std::fs::copy(
            format!("{root}/recipes/demo/{f}"),
            recipes.join("demo").join(f),
        )
        .unwrap();
    }
    std::fs::copy("/bin/busybox", recipes.join("demo/busybox"))
        .expect("/bin/busybox (run scripts/setup)");
    std::fs::copy(
        format!("{root}/recipes/demo.toml"),
        recipes.join("demo.toml"),
    )
    .unwrap();
    let id = format!(
        "reproducible-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(recipes.join("demo/test-id"), &id).unwrap();
    let dockerfile = std::fs::read_to_string(recipes.join("demo/Dockerfile")).unwrap();
    assert!(dockerfile.contains("FROM scratch\n"), "{dockerfile}");
    std::fs::write(
        recipes.join("demo/Dockerfile"),
        dockerfile.replacen(
            "FROM scratch\n",
            "FROM scratch\nCOPY test-id /etc/test-id\n",
            1,
        ),
    )
    .unwrap();
    let recipe = recipes.join("demo.toml");

    let mut made = Images(BTreeSet::new());
    let before = all_images();
    let first = build(&tmp.path().join("store1"), &recipe);
    made.0
        .extend(ours(&all_images().difference(&before).cloned().collect()));
    assert!(
        !made.0.is_empty(),
        "the first build left no image of its own in the engine"
    );

    // As on a fresh engine: none of the first build's images, no build cache.
    remove_images(&made.0);
    assert!(all_images().is_disjoint(&made.0));
    let out = Command::new("docker")
        .args(["builder", "prune", "-af"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Timestamps of the second build differ from the first's.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let before = all_images();
    let second = build(&tmp.path().join("store2"), &recipe);
    made.0
        .extend(ours(&all_images().difference(&before).cloned().collect()));
    assert_eq!(first["hash"], second["hash"]);
    for (i, name) in ["guest", "bundle"].iter().enumerate() {
        let (a, b) = (&first["components"][i], &second["components"][i]);
        assert_eq!(a["name"], *name);
        assert_eq!(a["cached"], false, "{name} was built the first time");
        assert_eq!(b["cached"], false, "{name} was built again the second time");
        let (fa, fb) = (
            files(Path::new(a["path"].as_str().unwrap())),
            files(Path::new(b["path"].as_str().unwrap())),
        );
        assert_eq!(
            fa.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            fb.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        for ((path, x), (_, y)) in fa.iter().zip(&fb) {
            assert!(
                x == y,
                "{name}/{path} differs between two builds of one hash on a fresh engine"
            );
        }
    }
}
