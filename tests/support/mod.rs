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
//!   `engine/build_pipeline.rs`), so a machine too fast or too slow fails it instead of
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
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
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
    /// `name` must be unique among the tests: it makes the guest's build context unique.
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
        let test_id_path = format!("/etc/bottle-test-id-{name}-{}", std::process::id());
        std::fs::write(
            recipes.join("guest/Dockerfile"),
            dockerfile(true, &test_id_path),
        )
        .unwrap();
        // The guest's key holds its build context, not the recipe's name: this file keeps
        // tests from sharing (and removing under each other) one guest image.
        std::fs::write(
            recipes.join("guest/test-id"),
            format!("{name} {}\n", std::process::id()),
        )
        .unwrap();
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

    /// Starts `bottle ARGS` and waits for the line `bottle run: paused at step 'STEP'`.
    pub fn spawn_paused(&self, step: &str, args: &[&str], envs: &[(&str, &str)]) -> Spawned {
        let mut c = self.cmd();
        c.env("BOTTLE_PAUSE_AT", step);
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut s = Spawned::start(c, args);
        let seen = s.wait_for_stderr("paused at step", Duration::from_secs(120));
        assert!(
            seen.contains(&format!("paused at step '{step}'")),
            "paused elsewhere: {seen}"
        );
        s
    }

    /// Starts `bottle ARGS` with stdin null, stdout and stderr read by threads.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned::start(self.cmd(), args)
    }

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

/// A `bottle` process the test started, its stdout and stderr read by threads. Dropped while
/// still running (a failing test), it is asked to stop (SIGTERM, so it tears down itself),
/// then killed.
pub struct Spawned {
    pub child: Child,
    stdout: Option<Receiver<String>>,
    lines: Receiver<String>,
    seen: String,
}

impl Spawned {
    pub fn start(mut cmd: Command, args: &[&str]) -> Spawned {
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bottle");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Bytes, shown lossily: a guest's binary output must not empty the whole capture.
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
        });
        Spawned {
            child,
            stdout: Some(stdout),
            lines,
            seen: String::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns stderr so far. Panics with what
    /// was printed if the process ends first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return self.seen.clone();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "bottle ended ({status}) before printing {needle:?}:\nstdout: {}\nstderr: {}",
                        self.stdout
                            .take()
                            .and_then(|r| r.recv().ok())
                            .unwrap_or_default(),
                        self.seen
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} on stderr within {timeout:?}:\n{}", self.seen)
                }
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        signal_pid(self.child.id(), sig);
    }

    /// Waits for the process: (exit code, stdout, the whole stderr).
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let status = self.wait(timeout);
        let out = self
            .stdout
            .take()
            .and_then(|r| r.recv_timeout(Duration::from_secs(10)).ok())
            .unwrap_or_default();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        (status.code(), out, std::mem::take(&mut self.seen))
    }

    /// Waits for the process to end; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("bottle did not end within {timeout:?}:\n{}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_pid(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[allow(unsafe_code)] // kill(2)
pub fn signal_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

pub fn build_hash(hash: &str) -> BuildHash {
    BuildHash::parse(hash).unwrap_or_else(|| panic!("{hash:?} is not an entry hash"))
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

/// The guest's Dockerfile; `home`: whether the image has /home/node (owned by root, so the
/// run's chown matters). The test's `test-id` goes in first, at a path naming the test
/// (`test_id_path`): every layer of the build is then the test's own, and its guard removes
/// the whole chain without touching another test's build cache.
pub fn dockerfile(home: bool, test_id_path: &str) -> String {
    let mut s = format!(
        "FROM scratch\nCOPY test-id {test_id_path}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /tmp && chmod 1777 /tmp\n",
    );
    if home {
        s.push_str("RUN mkdir -p /home/node\n");
    }
    s.push_str("USER node\n");
    s
}

/// A docker-guest recipe for runs, named `name`; `extra` is appended.
pub fn recipe(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
home = "/home/node"
command = ["sh", "-c", "echo hello from $(id -un)"]
env = {{ EDITOR = "vi", BOTTLE_TEST_MARK = "mark-{name}" }}

[pipelock]
allow = ["example.com"]
{extra}"#
    )
}

/// The build tests' recipe: every input kind (context, prompt, skills).
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

/// The programs of the tools guest ([`TestContext::use_tools_guest`]): Debian's curl, and git
/// with its HTTP transport (`git-remote-https` is a link to `git-remote-http`; the guest gets
/// both as real files).
pub const TOOLS: &[&str] = &[
    "/usr/bin/curl",
    "/usr/bin/git",
    "/usr/lib/git-core/git-remote-http",
    "/usr/lib/git-core/git-remote-https",
];

/// What Debian binaries need to run on an empty image: each of them and every file `ldd`
/// lists for them (shared libraries and the loader), by the path ldd names, sorted, each once.
pub fn with_libraries(binaries: &[&str]) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    for bin in binaries {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run scripts/setup (it installs Debian's curl and git)"
        );
        files.insert(PathBuf::from(bin));
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        assert!(out.status.success(), "ldd {bin}: {}", stderr(&out));
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)";
        // linux-vdso has no file.
        for line in stdout(&out).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = match words.as_slice() {
                [_, "=>", p, ..] if p.starts_with('/') => p,
                [p, ..] if p.starts_with('/') => p,
                _ => continue,
            };
            files.insert(PathBuf::from(path));
        }
    }
    files.into_iter().collect()
}

impl TestContext {
    /// Makes this test's guest (`recipes/guest/`, its `test-id` step first as ever) a
    /// `FROM scratch` image with real network clients: Debian's curl, git and git-remote-http(s)
    /// ([`TOOLS`]) with the shared libraries and loader they link against (copied as real files
    /// to the paths `ldd` names), busybox, a `node` user owning `/home/node`, and an empty
    /// `/etc/ssl/certs/ca-certificates.crt`, which the run's provisioning fills with the run's
    /// CA: the guest trusts that CA only (curl also through `SSL_CERT_FILE`; git's libcurl
    /// reads only the bundle file).
    pub fn use_tools_guest(&self) {
        let guest = self.recipes.join("guest");
        let root = guest.join("root");
        for file in with_libraries(TOOLS) {
            let to = root.join(file.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // fs::copy follows links: a real file, with the target's mode.
            std::fs::copy(&file, &to)
                .unwrap_or_else(|e| panic!("copy {} into the guest: {e}", file.display()));
        }
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), "").unwrap();
        std::fs::write(
            guest.join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY test-id {}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /tmp /home/node && chmod 1777 /tmp && chown node:node /home/node\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\nUSER node\nWORKDIR /home/node\n",
                self.test_id_path
            ),
        )
        .unwrap();
    }
}

/// A section of a guest script's output: the text after the line `== NAME` up to the next
/// `== ` line. Panics (showing the start of `out`) when there is none.
pub fn section<'a>(out: &'a str, name: &str) -> &'a str {
    try_section(out, name).unwrap_or_else(|| {
        let start: String = out.chars().take(4000).collect();
        panic!("no section {name} in:\n{start}")
    })
}

/// [`section`], or `None`.
pub fn try_section<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("== {name}\n");
    let rest = &out[out.find(&marker)? + marker.len()..];
    let end = if rest.starts_with("== ") {
        0
    } else {
        rest.find("\n== ").map(|i| i + 1).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}
