//! git-gate in real runs: the tools guest's real git (Debian's, with git-remote-http) fetches
//! and pushes through the bundle's git-gate to a real OpenSSH server on the host
//! ([`support::sshd`]), reached by a name only the bundle resolves (`[network] hosts =
//! { "upstream.test" = "host-gateway" }`), with an identity key that is mounted into the bundle
//! only: it is nowhere in the guest (files, env, processes), the store, an argv, bottle's
//! output, the audit log or the bundle's log.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::sshd::{self, Sshd};
use support::*;

const UPSTREAM: &str = "upstream.test";

fn gate_recipe(name: &str, sshd: &Sshd, known_hosts: &Path) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["git", "--version"]

[pipelock]
allow = ["example.com"]

[network]
hosts = {{ "{UPSTREAM}" = "host-gateway" }}

[[git-gate.upstreams]]
name = "origin"
url = "ssh://root@{UPSTREAM}:{}{}"
identity = "{}"
known_hosts = "{}"
branches = ["agent/*"]

[provision]
git_name = "Agent"
git_email = "agent@bottle.invalid"
"#,
        sshd.port,
        sshd.bare.display(),
        sshd.client_key.display(),
        known_hosts.display()
    )
}

/// Fetches, pushes `agent/x`, then tries each refused kind of push; sections per step.
const SCRIPT: &str = r#"cd /home/node && git init -q -b work repo && cd repo || exit 1
echo "== fetch"; git fetch origin 2>&1; echo "exit=$?"
echo "== push"; git checkout -q -b agent/x origin/main && echo agent > agent.txt && git add agent.txt && git commit -qm "the agent's commit" && git push origin agent/x 2>&1; echo "exit=$?"
echo "== head"; git rev-parse HEAD
echo "== main"; git push origin HEAD:main 2>&1; echo "exit=$?"
echo "== force"; git reset -q --hard HEAD~1 && echo other > other.txt && git add other.txt && git commit -qm "a rewrite" && git push --force origin HEAD:agent/x 2>&1; echo "exit=$?"
echo "== delete"; git push origin :agent/x 2>&1; echo "exit=$?"
echo "== tag"; git tag v1 && git push origin v1 2>&1; echo "exit=$?"
echo "== end""#;

/// The private key's base64 lines: what must appear nowhere but in its file and the bundle.
fn key_lines(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect()
}

fn assert_no_key(what: &str, text: &str, lines: &[String]) {
    for l in lines {
        assert!(!text.contains(l.as_str()), "{what} holds the identity key");
    }
}

/// Every file under `root` with one of `lines`.
fn store_files_with(root: &Path, lines: &[String]) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .filter(|(_, bytes)| {
            let t = String::from_utf8_lossy(bytes);
            lines.iter().any(|l| t.contains(l.as_str()))
        })
        .map(|(p, _)| p)
        .collect()
}

/// Every process's argv on this machine (the containers' included), joined.
fn all_cmdlines() -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
            out.push_str(&String::from_utf8_lossy(&b).replace('\0', " "));
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_guest_pushes_through_git_gate_and_the_key_stays_in_the_bundle() {
    let ctx = TestContext::new("git-gate-run");
    ctx.use_tools_guest();
    let sshd = Sshd::start(ctx.dir.path());
    let kh = ctx.dir.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line(UPSTREAM)).unwrap();
    ctx.write_recipe("r.toml", &gate_recipe("git-gate-run", &sshd, &kh));
    let hash = ctx.build(&ctx.recipe());
    let main_before = sshd.rev("refs/heads/main").unwrap();
    let key = key_lines(&sshd.client_key);

    let child = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let out = ctx.ok(&["exec", &run_id, "--", "sh", "-c", SCRIPT]);
    assert!(section(&out, "fetch").contains("exit=0"), "{out}");
    let push = section(&out, "push");
    assert!(
        push.contains("exit=0") && push.contains("agent/x -> agent/x"),
        "{out}"
    );
    let head = section(&out, "head").trim().to_string();
    assert_eq!(
        sshd.rev("refs/heads/agent/x").as_deref(),
        Some(head.as_str())
    );
    for (step, needle) in [
        (
            "main",
            r#"! [remote rejected] HEAD -> main (git-gate: branch "main" is not in this bottle's [[git-gate.upstreams]] branches ["agent/*"])"#,
        ),
        ("force", r#"git-gate: force push to "agent/x" refused"#),
        ("delete", "git-gate: deleting refs/heads/agent/x is refused"),
        ("tag", r#"git-gate: tag "v1" is refused"#),
    ] {
        let s = section(&out, step);
        assert!(s.contains(needle) && s.contains("exit=1"), "{step}:\n{s}");
    }
    // The upstream: main as it was, agent/x at the agent's commit, no tag, and only that
    // commit's three objects added (a refused push that leaked would add its own).
    assert_eq!(sshd.rev("refs/heads/main"), Some(main_before));
    assert_eq!(sshd.rev("refs/tags/v1"), None);
    assert!(sshd.state().ends_with("objects: 6\n"), "{}", sshd.state());

    // The key: not in the guest (env, processes, files), the bundle's log, an argv, the store.
    let guest = format!("bottle-{run_id}-guest");
    let bundle = format!("bottle-{run_id}-bundle");
    let seen = docker(&[
        "exec",
        "-u",
        "0",
        &guest,
        "sh",
        "-c",
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; find /etc /home /tmp /root /var /run -type f -exec cat {} + 2>/dev/null; echo END",
    ]);
    assert!(seen.contains("END"), "{seen}");
    assert_no_key("the guest", &seen, &key);
    assert!(
        !seen.contains("OPENSSH PRIVATE KEY"),
        "the guest holds a private key"
    );
    let logs = docker(&["logs", &bundle]);
    let logs_err = {
        let o = std::process::Command::new("docker")
            .args(["logs", &bundle])
            .output()
            .unwrap();
        stderr(&o)
    };
    assert!(logs_err.contains("git-gate: listening on"), "{logs_err}");
    assert_no_key("the bundle's log", &(logs + &logs_err), &key);
    assert_no_key("an argv", &all_cmdlines(), &key);
    assert!(store_files_with(&ctx.store, &key).is_empty());

    child.signal(libc::SIGTERM);
    let (code, stdout, stderr) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    assert_no_key("bottle's output", &(stdout + &stderr), &key);
    ctx.assert_nothing_left();
    assert!(store_files_with(&ctx.store, &key).is_empty());

    // The audit log, after the run: a line per ref update, by rule.
    let logs = ctx.ok(&["logs", "--json", &run_id]);
    assert_no_key("the audit log", &logs, &key);
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |name: &str, decision: &str, rule: &str| {
        events
            .iter()
            .any(|e| e["git"]["ref_name"] == name && e["decision"] == decision && e["rule"] == rule)
    };
    assert!(has("refs/heads/agent/x", "allowed", "upstream"), "{logs}");
    for (name, rule) in [
        ("refs/heads/main", "branches"),
        ("refs/heads/agent/x", "force-push"),
        ("refs/heads/agent/x", "deletion"),
        ("refs/tags/v1", "tags"),
    ] {
        assert!(has(name, "refused", rule), "no {rule} for {name}:\n{logs}");
    }
    let human = ctx.ok(&["logs", &run_id]);
    assert!(human.contains("refs/heads/main"), "{human}");
    drop(sshd);
}

#[test]
fn a_wrong_known_hosts_refuses_the_upstream_naming_its_fingerprint() {
    let ctx = TestContext::new("git-gate-hostkey");
    ctx.use_tools_guest();
    let sshd = Sshd::start(ctx.dir.path());
    let other = sshd::keygen(&ctx.dir.path().join("another_host_key"));
    let kh = ctx.dir.path().join("known_hosts");
    std::fs::write(&kh, format!("[{UPSTREAM}]:{} {other}\n", sshd.port)).unwrap();
    ctx.write_recipe("r.toml", &gate_recipe("git-gate-hostkey", &sshd, &kh));
    let hash = ctx.build(&ctx.recipe());
    let fingerprint = {
        let o = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(sshd.dir.join("host_ed25519.pub"))
            .output()
            .unwrap();
        stdout(&o).split_whitespace().nth(1).unwrap().to_string()
    };
    let before = sshd.state();
    let out = ctx.ok(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "git ls-remote origin 2>&1; echo exit=$?",
    ]);
    assert!(out.contains("exit=128") || out.contains("exit=1"), "{out}");
    assert!(out.contains(&fingerprint), "no {fingerprint} in:\n{out}");
    assert!(out.contains("does NOT match"), "{out}");
    assert!(
        out.contains(&format!("ssh-keyscan -p {} {UPSTREAM}", sshd.port)),
        "{out}"
    );
    assert_eq!(sshd.state(), before);
    ctx.assert_nothing_left();
}

/// Host git on `dir` with no config but the test's identity.
fn host_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn rev(repo: &Path, name: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "-q", name])
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| stdout(&out).trim().to_string())
}

fn local_recipe(name: &str, upstream: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["git", "--version"]

[pipelock]
allow = ["example.com"]

[[git-gate.upstreams]]
name = "origin"
{upstream}
branches = ["agent/*"]

[provision]
git_name = "Agent"
git_email = "agent@bottle.invalid"
"#
    )
}

/// Clones through the gate, pushes `agent/x`, tries `main`.
const LOCAL_SCRIPT: &str = r#"cd /home/node || exit 1
url=$(git config --get remote.origin.url)
echo "== clone"; git clone -q -o gate "$url" work 2>&1; echo "exit=$?"
cd work || exit 1
echo "== seen"; cat README
echo "== push"; git checkout -q -b agent/x && echo agent > agent.txt && git add agent.txt && git commit -qm "the agent's commit" && git push origin HEAD:agent/x 2>&1; echo "exit=$?"
echo "== head"; git rev-parse HEAD
echo "== main"; git push origin HEAD:main 2>&1; echo "exit=$?"
echo "== end""#;

#[test]
fn a_local_upstream_takes_the_agents_branch_and_stays_out_of_the_guest() {
    let ctx = TestContext::new("git-gate-local");
    ctx.use_tools_guest();
    let repo = ctx.dir.path().join("project");
    std::fs::create_dir_all(&repo).unwrap();
    host_git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "the person's project\n").unwrap();
    host_git(&repo, &["add", "README"]);
    host_git(&repo, &["commit", "-qm", "first"]);
    // Never committed: what the guest could only see if the repository were visible to it.
    let marker = format!("uncommitted-{}-Qx7", std::process::id());
    std::fs::write(repo.join("notes.txt"), &marker).unwrap();
    let main_before = rev(&repo, "refs/heads/main").unwrap();
    let path = repo.display().to_string();
    ctx.write_recipe(
        "r.toml",
        &local_recipe("git-gate-local", &format!("path = \"{path}\"")),
    );
    let hash = ctx.build(&ctx.recipe());

    let child = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let out = ctx.ok(&["exec", &run_id, "--", "sh", "-c", LOCAL_SCRIPT]);
    assert!(section(&out, "clone").contains("exit=0"), "{out}");
    assert!(
        section(&out, "seen").contains("the person's project"),
        "{out}"
    );
    let push = section(&out, "push");
    assert!(
        push.contains("exit=0") && push.contains("HEAD -> agent/x"),
        "{out}"
    );
    let head = section(&out, "head").trim().to_string();
    assert_eq!(
        rev(&repo, "refs/heads/agent/x").as_deref(),
        Some(head.as_str())
    );
    let main = section(&out, "main");
    assert!(
        main.contains(r#"git-gate: branch "main" is not in this bottle's [[git-gate.upstreams]] branches ["agent/*"]"#)
            && main.contains("exit=1"),
        "{main}"
    );
    assert_eq!(rev(&repo, "refs/heads/main"), Some(main_before));
    host_git(&repo, &["fsck", "--no-progress"]);

    // The repository: mounted into neither container, named nowhere in the guest.
    let guest = format!("bottle-{run_id}-guest");
    let bundle = format!("bottle-{run_id}-bundle");
    for c in [&guest, &bundle] {
        let mounts = docker(&["inspect", "--format", "{{json .Mounts}}", c]);
        assert!(
            !mounts.contains(&path),
            "{c} mounts the repository: {mounts}"
        );
    }
    let guest_mounts = docker(&["inspect", "--format", "{{json .Mounts}}", &guest]);
    assert!(!guest_mounts.contains("git-gate"), "{guest_mounts}");
    let seen = docker(&[
        "exec",
        "-u",
        "0",
        &guest,
        "sh",
        "-c",
        "env; cat /proc/mounts; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; find / -xdev -type f -not -path '/proc/*' -exec cat {} + 2>/dev/null; echo END",
    ]);
    assert!(seen.contains("END"), "{seen}");
    assert!(
        !seen.contains(&path),
        "the guest names the repository's path"
    );
    assert!(
        !seen.contains(&marker),
        "the guest sees the repository's files"
    );
    assert!(!out.contains(&path), "{out}");
    // git's own words about the repository reach the guest without its host path.
    let aside = ctx.dir.path().join("project-aside");
    std::fs::rename(&repo, &aside).unwrap();
    let gone = ctx.ok(&[
        "exec",
        &run_id,
        "--",
        "sh",
        "-c",
        "git ls-remote origin 2>&1; echo exit=$?",
    ]);
    std::fs::rename(&aside, &repo).unwrap();
    assert!(
        gone.contains("exit=128") && gone.contains("<upstream origin>"),
        "{gone}"
    );
    assert!(!gone.contains(&path), "{gone}");

    child.signal(libc::SIGTERM);
    let (code, _stdout, stderr) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    ctx.assert_nothing_left();
    assert!(
        !ctx.store().runs().join(&run_id).join("git-gate").exists(),
        "the socket outlived the run"
    );

    let logs = ctx.ok(&["logs", "--json", &run_id]);
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |name: &str, decision: &str, rule: &str| {
        events
            .iter()
            .any(|e| e["git"]["ref_name"] == name && e["decision"] == decision && e["rule"] == rule)
    };
    assert!(has("refs/heads/agent/x", "allowed", "upstream"), "{logs}");
    assert!(has("refs/heads/main", "refused", "branches"), "{logs}");
}

#[test]
fn an_upstream_is_a_url_or_a_path_and_a_path_is_a_repository() {
    let ctx = TestContext::new("git-gate-local-bad");
    let here = ctx.dir.path().display().to_string();
    for (upstream, needle) in [
        (
            format!("url = \"git@h.invalid:r.git\"\nidentity = \"~/.ssh/k\"\npath = \"{here}\""),
            "has both url and path",
        ),
        (String::new(), "has neither url nor path"),
        (
            "path = \"relative/repo\"".to_string(),
            "absolute or under ~/",
        ),
        (
            format!("path = \"{here}\"\nidentity = \"~/.ssh/k\""),
            "takes no identity",
        ),
        ("url = \"git@h.invalid:r.git\"".to_string(), "no identity"),
    ] {
        let r = ctx.write_recipe("bad.toml", &local_recipe("bad", &upstream));
        let out = ctx.output(&["build", "-q", r.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{upstream}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{upstream}: {}",
            stderr(&out)
        );
    }

    // A path that is no repository: refused by `bottle run` before it creates anything.
    ctx.use_tools_guest();
    let not_repo = ctx.dir.path().join("plain-folder");
    std::fs::create_dir_all(&not_repo).unwrap();
    let r = ctx.write_recipe(
        "r.toml",
        &local_recipe(
            "git-gate-local-bad",
            &format!("path = \"{}\"", not_repo.display()),
        ),
    );
    let hash = ctx.build(&r);
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#"git-gate upstream "origin""#)
            && err.contains("is not a git repository")
            && err.contains(&not_repo.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("step '"), "it got as far as a step: {err}");
    ctx.assert_nothing_left();
}
