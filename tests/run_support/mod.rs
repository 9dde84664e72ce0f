//! Shared context of the run tests: a temporary store, recipe folder and smolvm state folder per
//! test, the real `bottle` binary against the real Docker Engine and smolvm CLI, and a Drop
//! guard that removes everything the test may have created (also when it fails): `bottle down
//! --all` with the test's store, then a sweep of containers and networks labelled with that
//! store, the images labelled with the test's hashes, and every machine in its state folder.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bottle");

/// The steps of a run, as `bottle run` names them.
pub const STEPS: &[&str] = &[
    "network",
    "image load",
    "bundle start",
    "guest create",
    "guest start",
    "chown",
    "provision",
    "command",
];

pub struct RunCtx {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub recipes: PathBuf,
    pub smolvm_state: PathBuf,
    /// The store's canonical path: the `bottle.store` label of every resource of its runs.
    pub store_label: String,
    hashes: Mutex<BTreeSet<String>>,
    /// Docker networks the test made itself.
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

impl RunCtx {
    /// A fresh store, and a recipe folder with a FROM-scratch busybox guest (user `node`,
    /// `/home/node` owned by root so that the run's chown matters).
    pub fn new(name: &str) -> RunCtx {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let recipes = dir.path().join("recipes");
        let smolvm_state = dir.path().join("smolvm");
        std::fs::create_dir_all(recipes.join("guest")).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(&smolvm_state).unwrap();
        std::fs::copy("/bin/busybox", recipes.join("guest/busybox"))
            .expect("/bin/busybox (Debian's busybox-static; run scripts/setup)");
        std::fs::write(
            recipes.join("guest/passwd"),
            "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(recipes.join("guest/group"), "root:x:0:\nnode:x:1000:\n").unwrap();
        std::fs::write(recipes.join("guest/Dockerfile"), dockerfile(true)).unwrap();
        std::fs::create_dir_all(recipes.join("skills/one")).unwrap();
        std::fs::write(recipes.join("skills/one/SKILL.md"), "a skill\n").unwrap();
        std::fs::write(recipes.join("prompt.md"), "be careful\n").unwrap();
        let store_label = std::fs::canonicalize(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ctx = RunCtx {
            dir,
            store,
            recipes,
            smolvm_state,
            store_label,
            hashes: Mutex::new(BTreeSet::new()),
            extra_networks: Mutex::new(Vec::new()),
            extra_containers: Mutex::new(Vec::new()),
        };
        ctx.write_recipe("r.toml", &recipe(name, ""));
        ctx
    }

    pub fn recipe(&self) -> PathBuf {
        self.recipes.join("r.toml")
    }

    /// Recipe tables for every provisioning part: a git-gate upstream (with a dummy identity
    /// file of this test), supervise, prompt, skills and git identity.
    pub fn provisioning_extra(&self) -> String {
        let key = self.dir.path().join("id_test");
        std::fs::write(&key, "not a real key\n").unwrap();
        format!(
            r#"
[[git-gate.upstreams]]
name = "origin"
url = "git@example.invalid:x/y.git"
identity = "{}"

[supervise]
enabled = true

[provision]
prompt = "prompt.md"
skills = "skills"
git_name = "Agent"
git_email = "agent@bottle.invalid"
"#,
            key.display()
        )
    }

    pub fn write_recipe(&self, file: &str, text: &str) -> PathBuf {
        let p = self.recipes.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `bottle` with this test's store and smolvm state folder.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("BOTTLE_STORE", &self.store)
            .env("BOTTLE_SMOLVM_STATE_DIR", &self.smolvm_state)
            .env_remove("BOTTLE_LOG")
            .env_remove("BOTTLE_FAILPOINT")
            .env_remove("BOTTLE_PAUSE_AT")
            .env_remove("BOTTLE_SUBNET_POOL")
            .arg("--no-progress");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run bottle")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "bottle {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Builds a recipe; returns its hash.
    pub fn build(&self, recipe: &Path) -> String {
        let out = self.ok(&["build", "-q", recipe.to_str().unwrap()]);
        let hash = out.lines().last().expect("a hash line").trim().to_string();
        assert_eq!(hash.len(), 64, "{out}");
        self.hashes.lock().unwrap().insert(hash.clone());
        hash
    }

    pub fn manifest(&self, hash: &str) -> serde_json::Value {
        let path = self
            .store
            .join("v1/builds")
            .join(hash)
            .join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Starts `bottle ARGS` with stderr piped, and waits for the line `bottle run: paused at
    /// step 'STEP'`; returns the child and the stderr read so far.
    pub fn spawn_paused(
        &self,
        step: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Child, String) {
        let mut c = self.cmd();
        c.args(args)
            .env("BOTTLE_PAUSE_AT", step)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn bottle");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            let mut sent = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                seen.push_str(&line);
                if !sent && line.contains("paused at step") {
                    let _ = tx.send(Some(seen.clone()));
                    sent = true;
                }
                line.clear();
            }
            if !sent {
                let _ = tx.send(None);
            }
            // Later lines go to a second message: the rest of stderr.
            let _ = tx.send(Some(seen));
        });
        let first = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("bottle paused or ended within 120 s");
        let Some(seen) = first else {
            let out = child.wait_with_output().unwrap();
            panic!(
                "bottle ended before pausing at {step:?} ({}):\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                rx.recv().ok().flatten().unwrap_or_default()
            );
        };
        assert!(
            seen.contains(&format!("paused at step '{step}'")),
            "paused elsewhere: {seen}"
        );
        STDERR_RX.with(|r| *r.borrow_mut() = Some(rx));
        (child, seen)
    }

    /// The run records of this store.
    pub fn records(&self) -> Vec<String> {
        let dir = self.store.join("v1/runs");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    /// Everything of this store's runs that still exists: containers, networks, machines,
    /// run records. Empty when the runs left nothing behind.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let label = format!("label=bottle.store={}", self.store_label);
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
        out
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

    pub fn assert_nothing_left(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "the run left: {left:?}");
    }

    /// A docker network the test makes itself, labelled with the store so the guard removes it.
    pub fn make_network(&self, name: &str, subnet: Option<&str>) {
        let label = format!("bottle.store={}", self.store_label);
        let mut args = vec!["network", "create", "--label", &label];
        if let Some(s) = subnet {
            args.push("--subnet");
            args.push(s);
        }
        args.push(name);
        let out = Command::new("docker").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.extra_networks.lock().unwrap().push(name.to_string());
    }

    pub fn note_container(&self, name: &str) {
        self.extra_containers.lock().unwrap().push(name.to_string());
    }
}

thread_local! {
    static STDERR_RX: std::cell::RefCell<Option<std::sync::mpsc::Receiver<Option<String>>>> =
        const { std::cell::RefCell::new(None) };
}

/// After [`RunCtx::spawn_paused`]: waits for the child and returns (exit code or signal, the
/// whole stderr).
pub fn finish(mut child: Child, timeout: Duration) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            if let Some(mut s) = child.stdout.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut stdout);
            }
            let stderr = STDERR_RX.with(|r| {
                r.borrow_mut()
                    .take()
                    .and_then(|rx| rx.recv_timeout(Duration::from_secs(10)).ok().flatten())
                    .unwrap_or_default()
            });
            return (status.code(), stdout, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bottle did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(child: &Child, sig: i32) {
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

impl Drop for RunCtx {
    fn drop(&mut self) {
        let _ = self.cmd().args(["down", "--all"]).output();
        let label = format!("label=bottle.store={}", self.store_label);
        let containers = lines(&docker(&["ps", "-a", "-q", "--filter", &label]));
        let mut extra = self.extra_containers.lock().unwrap().clone();
        extra.extend(containers);
        if !extra.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(extra.iter().map(String::as_str));
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
        for h in self.hashes.lock().unwrap().iter() {
            let ids = lines(&docker(&[
                "image",
                "ls",
                "-q",
                "--filter",
                &format!("label=bottle.hash={h}"),
            ]));
            let mut uniq: Vec<String> = ids;
            uniq.sort();
            uniq.dedup();
            if !uniq.is_empty() {
                let mut args = vec!["rmi", "-f", "--no-prune"];
                args.extend(uniq.iter().map(String::as_str));
                docker(&args);
            }
        }
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

pub fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The guest's Dockerfile; `home`: whether the image has /home/node (owned by root).
pub fn dockerfile(home: bool) -> String {
    let mut s = String::from(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /tmp && chmod 1777 /tmp\n",
    );
    if home {
        s.push_str("RUN mkdir -p /home/node\n");
    }
    s.push_str("USER node\n");
    s
}

/// A docker-guest recipe named `name` (unique per test: the name enters the hash, so tests
/// never share images); `extra` is appended.
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
