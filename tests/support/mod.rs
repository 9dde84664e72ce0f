//! The shared context of the engine tests (`tests/engine/`; the offline ones use only
//! [`sshd`]): per test, a temporary folder holding a store, a recipe folder (a FROM-scratch
//! busybox guest whose build context is unique to the test) and a smolvm state folder; the
//! real `bottle` binary against the real Docker Engine and smolvm CLI; and a Drop guard that
//! removes everything the test may have created, also when it fails:
//!
//! 1. `bottle down --all` with the test's store (live runs are asked to stop, dead ones swept);
//! 2. containers and networks labelled with the store, and those the test made itself;
//! 3. every machine in the test's smolvm state folder;
//! 4. the docker images of the guest and bundle components the test's store held at any point
//!    (label [`LABEL_COMPONENT`]`=KIND/HASH`), with `docker rmi --no-prune` and without `-f`,
//!    ignoring failures: the bundle image is shared by every test (one per build of bottle), so
//!    an image another test's container uses survives, and the run code reloads an image that
//!    vanished. `--no-prune` keeps the untagged parent layers: they are the engine's build
//!    cache, shared with builds in flight.
//!
//! Builds made through the context hold a process-wide read lock and image removal the write
//! lock, so one test never removes the shared bundle image between another test's build of it
//! and the build's `docker save` (tests of one binary run as threads of one process; cargo runs
//! the binaries one after another).
//!
//! Store paths, step names, config file names and labels come from the library, never copies.
//!
//! Beside this file: [`Spawned`] (`spawned.rs`: a `bottle` process a test started), what a
//! test's runs leave behind (`leftovers.rs`), the Drop guard and the docker CLI
//! (`cleanup.rs`), and the tests' guests and recipes (`guest.rs`).
//!
//! # How a test here proves it can fail
//!
//! A test is worth what the bug it names would do to it. Each one:
//!
//! - compares the value that matters (the bytes an upstream received, the reply a client got,
//!   the store byte for byte), never a stand-in for it (a log line saying a value arrived, a
//!   status prefix, "any line mentions the rule");
//! - searches for a leak in every form it can take (raw, in a header, percent-encoded,
//!   JSON-escaped, either half of a split value), where it can first appear: servers here
//!   record bytes as they arrive, not once a request is whole;
//! - counts: exactly one audit line per case, with its rule; a refusal's body naming its rule;
//! - waits on an event (a line printed, bytes arrived, a file written), never a sleep that
//!   hopes the moment has passed;
//! - guards its randomness: a test that kills or signals at random moments asserts that
//!   enough of them landed in the window it claims to test (`killed_mid_build >= 5` in
//!   `engine/build_pipeline/integrity.rs`), so a machine too fast or too slow fails it instead of
//!   passing it empty;
//! - never skips itself: a missing prerequisite is a failure naming the set-up step.
//!
//! The models: `offline/daemon_git_gate.rs` pushes with real git through real sshd and checks
//! each refusal's exact text, that the upstream's refs are unchanged, and one audit line per
//! ref; `engine/share_refusals.rs` damages a cache in nine ways and checks each refusal against a
//! byte-for-byte snapshot of the store, with a positive control (the undamaged cache pulls)
//! so that "refused" cannot mean "broken". Before a test is committed, the code it guards is
//! broken on purpose once (a hold-back shortened, a header dropped, a redaction skipped) and
//! the test is seen to fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bottle::hash::{BuildHash, ComponentHash, ComponentId, ComponentKind};
use bottle::manifest::Manifest;
use bottle::store::{Entry, Store};

pub use bottle::config::paths;
pub use bottle::run::STEPS;
pub use bottle::run::names::{LABEL_HASH, LABEL_RUN, LABEL_STORE};
pub use bottle::runtime::images::LABEL_COMPONENT;

pub const BIN: &str = env!("CARGO_BIN_EXE_bottle");

pub mod browser;
pub mod claude;
pub mod console;
#[allow(
    dead_code,
    reason = "for tests/share_{hostile,s3,transfers}.rs, binaries of their own (see their docs)"
)]
pub mod garage;
pub mod nginx;
pub mod ports;
pub mod share;
pub mod sshd;
pub mod upstream;

mod cleanup;
mod guest;
mod leftovers;
mod spawned;

pub use cleanup::{docker, docker_ok};
pub use guest::{base_recipe, dockerfile, recipe, section, try_section};
pub use spawned::{Spawned, stop};

/// Held (read) by builds, (write) by image removal: see the module doc.
static BUILDS: RwLock<()> = RwLock::new(());

pub struct TestContext {
    /// Where the guest's Dockerfile copies `test-id` (its first step): names this test's
    /// build chain in the engine.
    pub test_id_path: String,
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub recipes: PathBuf,
    pub smolvm_state: PathBuf,
    /// The store's canonical path: the [`LABEL_STORE`] label of every resource of its runs.
    pub store_label: String,
    /// Guest and bundle components seen in the store (or about to be built): their images go.
    components: Mutex<BTreeSet<ComponentId>>,
    extra_networks: Mutex<Vec<String>>,
    extra_containers: Mutex<Vec<String>>,
}

/// A unique suffix for names in this test process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestContext {
    /// A fresh context whose `r.toml` is [`recipe`]`(name, "")`, a docker guest for runs.
    /// `name` says whose resources these are; the guest's build context is the context's own
    /// whatever the name (a number of this process's is added to it).
    pub fn new(name: &str) -> TestContext {
        let ctx = TestContext::bare(name);
        ctx.write_recipe("r.toml", &recipe(name, ""));
        ctx
    }

    /// A fresh context whose `r.toml` is [`base_recipe`]`(name)`, the build tests' recipe.
    pub fn with_build_recipe(name: &str) -> TestContext {
        let ctx = TestContext::bare(name);
        ctx.write_recipe("r.toml", &base_recipe(name));
        ctx
    }

    /// The folders and the recipe's inputs; no recipe file, no store (a store folder appears
    /// only when bottle makes one).
    fn bare(name: &str) -> TestContext {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let recipes = dir.path().join("recipes");
        let smolvm_state = dir.path().join("smolvm");
        std::fs::create_dir_all(recipes.join("guest")).unwrap();
        std::fs::create_dir_all(&smolvm_state).unwrap();
        std::fs::copy("/bin/busybox", recipes.join("guest/busybox"))
            .expect("/bin/busybox (Debian's busybox-static; run scripts/setup)");
        std::fs::write(
            recipes.join("guest/passwd"),
            "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(recipes.join("guest/group"), "root:x:0:\nnode:x:1000:\n").unwrap();
        // `name-PID-N.id`: the suffix ends the name, so no context's path is a part of
        // another's (`…-1` of `…-12`), which the guard's search for its build chain relies on.
        let id = unique(name);
        let test_id_path = format!("/etc/bottle-test-id-{id}.id");
        std::fs::write(
            recipes.join("guest/Dockerfile"),
            dockerfile(true, &test_id_path),
        )
        .unwrap();
        // The guest's key holds its build context, not the recipe's name: this file keeps
        // tests from sharing (and removing under each other) one guest image.
        std::fs::write(recipes.join("guest/test-id"), format!("{id}\n")).unwrap();
        std::fs::create_dir_all(recipes.join("skills/one")).unwrap();
        std::fs::write(recipes.join("skills/one/SKILL.md"), "a skill\n").unwrap();
        std::fs::write(recipes.join("prompt.md"), "be careful\n").unwrap();
        let store_label = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("store")
            .to_string_lossy()
            .into_owned();
        TestContext {
            test_id_path,
            dir,
            store,
            recipes,
            smolvm_state,
            store_label,
            components: Mutex::new(BTreeSet::new()),
            extra_networks: Mutex::new(Vec::new()),
            extra_containers: Mutex::new(Vec::new()),
        }
    }

    pub fn recipe(&self) -> PathBuf {
        self.recipes.join("r.toml")
    }

    pub fn write_recipe(&self, file: &str, text: &str) -> PathBuf {
        let p = self.recipes.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Recipe tables for every provisioning part: a git-gate upstream (with an identity key
    /// and known_hosts file of this test, [`TestContext::upstream_files`]), supervise, prompt, skills and git identity.
    pub fn provisioning_extra(&self) -> String {
        let (key, known) = self.upstream_files();
        format!(
            r#"
[[git-gate.upstreams]]
name = "origin"
url = "git@example.invalid:x/y.git"
identity = "{}"
known_hosts = "{}"

[supervise]
enabled = true

[provision]
prompt = "prompt.md"
skills = "skills"
git_name = "Agent"
git_email = "agent@bottle.invalid"
"#,
            key.display(),
            known.display()
        )
    }

    /// An identity key (`id_test`, real, no passphrase: `bottle run` checks it) and a
    /// known_hosts file (`known_hosts_test`) naming every host, for upstreams a test never
    /// reaches: the run mounts them, and nothing connects.
    pub fn upstream_files(&self) -> (PathBuf, PathBuf) {
        let key = self.dir.path().join("id_test");
        if !key.exists() {
            sshd::keygen(&key);
        }
        let host = self.dir.path().join("host_key_test");
        if !host.exists() {
            sshd::keygen(&host);
        }
        let public = std::fs::read_to_string(host.with_extension("pub")).unwrap();
        let stand_in = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let known = self.dir.path().join("known_hosts_test");
        std::fs::write(&known, format!("* {stand_in}\n")).unwrap();
        (key, known)
    }

    /// The test's store, through the library.
    pub fn store(&self) -> Store {
        Store::new(&self.store)
    }

    /// `bottle --no-progress` with this test's store and smolvm state folder, and none of the
    /// test hooks set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("BOTTLE_STORE", &self.store)
            .env("BOTTLE_SMOLVM_STATE_DIR", &self.smolvm_state)
            .env_remove("BOTTLE_LOG")
            .env_remove("BOTTLE_FAILPOINT")
            .env_remove("BOTTLE_PAUSE_AT")
            .env_remove("BOTTLE_SUBNET_POOL")
            .env_remove("BOTTLE_SMOLVM")
            // No substituter, trusted key or signing key of the machine's own: a test names
            // the ones it means.
            .env_remove("BOTTLE_SUBSTITUTERS")
            .env_remove("BOTTLE_TRUSTED_PUBLIC_KEYS")
            .env_remove("BOTTLE_SECRET_KEY_FILE")
            .env("BOTTLE_CONFIG", "/dev/null")
            .arg("--no-progress");
        c
    }

    /// Runs `cmd` (made by [`TestContext::cmd`]) with `args`: a command that may build holds
    /// the build lock, and the components it may make are remembered for the Drop guard.
    pub fn output_of(&self, mut cmd: Command, args: &[&str]) -> Output {
        let _build = may_build(args).then(|| self.building());
        cmd.args(args);
        let out = cmd.output().expect("run bottle");
        self.scan_store();
        out
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.output_of(self.cmd(), args)
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "bottle {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The build lock, held while a test drives builds itself (spawned `bottle build`s).
    /// Remembers the components of every recipe in the recipe folder first.
    pub fn building(&self) -> RwLockReadGuard<'static, ()> {
        self.remember_recipes();
        BUILDS.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The read side of the build lock without a build: while held, no test of this binary
    /// removes an image (their guards wait), so images in the engine stay there.
    pub fn keep_images(&self) -> RwLockReadGuard<'static, ()> {
        BUILDS.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `bottle build -q RECIPE`; returns the hash (the last line of stdout).
    pub fn build(&self, recipe: &Path) -> String {
        let out = self.ok(&["build", "-q", recipe.to_str().unwrap()]);
        let hash = out.lines().last().expect("a hash line").trim().to_string();
        assert_eq!(hash.len(), 64, "{out}");
        hash
    }

    /// `bottle build --json RECIPE`, which must succeed.
    pub fn build_json(&self, recipe: &Path) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["build", "--json", recipe.to_str().unwrap()])).unwrap()
    }

    /// Waits until `bottle ps --json` shows a live run whose agent's command has started (its
    /// guest is up: `bottle exec` works); returns (run id, bundle IP).
    pub fn wait_live(&self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ps: serde_json::Value = serde_json::from_str(&self.ok(&["ps", "--json"])).unwrap();
            if let Some(r) = ps.as_array().and_then(|a| a.first())
                && r["live"] == true
                && r["ready"] == true
                && r["guest"].is_string()
                && r["bundle_ip"].is_string()
            {
                return (
                    r["run_id"].as_str().unwrap().to_string(),
                    r["bundle_ip"].as_str().unwrap().to_string(),
                );
            }
            assert!(Instant::now() < deadline, "the run did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The guest's Dockerfile for this test (see [`dockerfile`]).
    pub fn dockerfile(&self, home: bool) -> String {
        dockerfile(home, &self.test_id_path)
    }

    /// `bottle hash RECIPE`.
    pub fn hash(&self, recipe: &Path) -> String {
        self.ok(&["hash", recipe.to_str().unwrap()])
            .trim()
            .to_string()
    }

    /// `bottle hash --json RECIPE`: `{hash, name, components: {guest, bundle, config}}`.
    pub fn keys(&self, recipe: &Path) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["hash", "--json", recipe.to_str().unwrap()])).unwrap()
    }

    /// `bottle show --json HASH`.
    pub fn show(&self, hash: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["show", "--json", hash])).unwrap()
    }

    /// An entry's manifest file in the store.
    pub fn entry_file(&self, hash: &str) -> PathBuf {
        self.store().entry_file(&build_hash(hash))
    }

    /// An entry's manifest, read through the library (checked to hash to its name).
    pub fn manifest(&self, hash: &str) -> Manifest {
        self.store()
            .manifest(&build_hash(hash))
            .unwrap()
            .unwrap_or_else(|| panic!("no entry {hash} in {}", self.store.display()))
    }

    /// An entry with its components' records, through the library.
    pub fn entry(&self, hash: &str) -> Entry {
        self.store().load(&build_hash(hash)).unwrap()
    }

    /// The folder of one component of an entry.
    pub fn component_dir(&self, hash: &str, kind: ComponentKind) -> PathBuf {
        let id = self.manifest(hash).components.get(kind);
        self.store().component_dir(&id)
    }

    /// Every file of the store with its content, for "the store is unchanged" checks.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        snapshot(&self.store)
    }

    /// What `bottle gc --dry-run` would remove from `tmp/`: leftovers of killed builds.
    pub fn temporary(&self) -> Vec<String> {
        match std::fs::read_dir(self.store().tmp()) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Remembers the guest and bundle components a recipe would make (`bottle hash --json`).
    pub fn remember_keys(&self, recipe: &Path) {
        let out = Command::new(BIN)
            .args(["-q", "hash", "--json"])
            .arg(recipe)
            .env("BOTTLE_SMOLVM_STATE_DIR", &self.smolvm_state)
            .env_remove("BOTTLE_SMOLVM")
            .output();
        let Ok(out) = out else { return };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return;
        };
        for kind in [ComponentKind::Guest, ComponentKind::Bundle] {
            if let Some(hash) = v["components"][kind.name()]
                .as_str()
                .and_then(ComponentHash::parse)
            {
                self.components
                    .lock()
                    .unwrap()
                    .insert(ComponentId { kind, hash });
            }
        }
    }

    /// Remembers the components of every recipe in the recipe folder.
    fn remember_recipes(&self) {
        for e in std::fs::read_dir(&self.recipes)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "toml") {
                self.remember_keys(&e.path());
            }
        }
    }

    /// Remembers the guest and bundle components in the store, published or under way.
    pub fn scan_store(&self) {
        let store = self.store();
        let mut found = BTreeSet::new();
        for kind in [ComponentKind::Guest, ComponentKind::Bundle] {
            for hash in store.component_hashes(kind).unwrap_or_default() {
                found.insert(ComponentId { kind, hash });
            }
        }
        // Temporary folders of components are named `KIND-HASH.XXXXXX`.
        for name in self.temporary() {
            let Some((kind, rest)) = name.split_once('-') else {
                continue;
            };
            let (Some(kind), Some(hash)) = (
                ComponentKind::parse(kind),
                rest.get(..64).and_then(ComponentHash::parse),
            ) else {
                continue;
            };
            if kind != ComponentKind::Config {
                found.insert(ComponentId { kind, hash });
            }
        }
        self.components.lock().unwrap().extend(found);
    }
}

/// Whether a bottle command line may build (and so make and save images).
fn may_build(args: &[&str]) -> bool {
    args.contains(&"build") || (args.contains(&"run") && args.iter().any(|a| a.ends_with(".toml")))
}

pub fn build_hash(hash: &str) -> BuildHash {
    BuildHash::parse(hash).unwrap_or_else(|| panic!("{hash:?} is not an entry hash"))
}

pub fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file and folder under `root` (folders with a trailing `/`), with file contents.
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

/// Bytes of every file under `root`.
pub fn bytes_under(root: &Path) -> u64 {
    snapshot(root).iter().map(|(_, b)| b.len() as u64).sum()
}
