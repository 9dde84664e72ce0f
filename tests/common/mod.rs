//! Shared test context: a temporary store and recipe folder per test, the real `bottle`
//! binary, and cleanup of every docker image the test's builds made (also when it fails).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

pub const BIN: &str = env!("CARGO_BIN_EXE_bottle");

pub struct Ctx {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub recipes: PathBuf,
    hashes: Mutex<BTreeSet<String>>,
}

impl Ctx {
    /// A fresh store and a recipe folder holding a FROM-scratch busybox guest whose recipe is
    /// named `name` (unique per test, so tests never share a hash or an image).
    pub fn new(name: &str) -> Ctx {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let recipes = dir.path().join("recipes");
        std::fs::create_dir_all(recipes.join("guest")).unwrap();
        std::fs::copy("/bin/busybox", recipes.join("guest/busybox"))
            .expect("/bin/busybox (Debian's busybox-static; run scripts/setup)");
        std::fs::write(
            recipes.join("guest/Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /home/node && chown 1000:1000 /home/node\nUSER node\n",
        )
        .unwrap();
        std::fs::write(
            recipes.join("guest/passwd"),
            "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(recipes.join("guest/group"), "root:x:0:\nnode:x:1000:\n").unwrap();
        std::fs::create_dir_all(recipes.join("skills/one")).unwrap();
        std::fs::write(recipes.join("skills/one/SKILL.md"), "a skill\n").unwrap();
        std::fs::write(recipes.join("prompt.md"), "be careful\n").unwrap();
        let ctx = Ctx {
            dir,
            store,
            recipes,
            hashes: Mutex::new(BTreeSet::new()),
        };
        ctx.write_recipe("r.toml", &base_recipe(name));
        ctx
    }

    pub fn recipe(&self) -> PathBuf {
        self.recipes.join("r.toml")
    }

    pub fn write_recipe(&self, file: &str, text: &str) -> PathBuf {
        let p = self.recipes.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("BOTTLE_STORE", &self.store)
            .env_remove("BOTTLE_LOG")
            .arg("--no-progress");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("run bottle");
        self.note_hashes(&out);
        out
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bottle {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `bottle build RECIPE`; returns the hash (the last line of stdout).
    pub fn build(&self, recipe: &Path) -> String {
        let out = self.ok(&["build", recipe.to_str().unwrap()]);
        let hash = out.lines().last().expect("a hash line").to_string();
        assert_eq!(hash.len(), 64, "{out}");
        self.remember(&hash);
        hash
    }

    pub fn hash(&self, recipe: &Path) -> String {
        self.ok(&["hash", recipe.to_str().unwrap()])
            .trim()
            .to_string()
    }

    pub fn remember(&self, hash: &str) {
        self.hashes.lock().unwrap().insert(hash.to_string());
    }

    fn note_hashes(&self, out: &Output) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let t = line.trim().trim_matches(|c| c == '"' || c == ',');
            let t = t.rsplit(' ').next().unwrap_or(t).trim_matches('"');
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.remember(t);
            }
        }
    }

    pub fn entry(&self, hash: &str) -> PathBuf {
        self.store.join("v1/builds").join(hash)
    }

    pub fn manifest(&self, hash: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.entry(hash).join("manifest.json")).unwrap())
            .unwrap()
    }

    /// Every file of the store with its content, for "the store is unchanged" checks.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        snapshot(&self.store)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for h in self.hashes.lock().unwrap().iter() {
            remove_images_of(h);
        }
    }
}

/// Removes every image labelled with this build hash. `--no-prune`: the untagged parent layers
/// are the engine's build cache, shared by tests building at the same moment; pruning them
/// under a build in flight fails that build ("failed to get digest …").
pub fn remove_images_of(hash: &str) {
    let out = Command::new("docker")
        .args([
            "image",
            "ls",
            "-q",
            "--filter",
            &format!("label=bottle.hash={hash}"),
        ])
        .output();
    if let Ok(out) = out {
        let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|s| s.to_string())
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f", "--no-prune"])
                .args(&ids)
                .output();
        }
    }
}

pub fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.push((rel + "/", Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

pub fn base_recipe(name: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["sh", "-c", "id -un"]
env = {{ EDITOR = "vi", LANG = "C.UTF-8" }}

[pipelock]
allow = ["example.com", "api.example.org"]

[provision]
prompt = "prompt.md"
skills = "skills"
git_name = "Agent"
"#
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
