//! The shipped Claude recipes in a test: `recipes/claude.toml` and its docker twin
//! `recipes/claude-docker.toml`, copied with their guest context into the test's recipe
//! folder. What a test changes is only what points them at this machine: the git-gate
//! upstream (a local repository of the test), and where a stand-in API is, the API's name
//! mapped to this host by `[network] hosts`, its CA trusted by `upstream_ca`, and Claude Code
//! pointed at the stand-in's port by `ANTHROPIC_BASE_URL`. Everything else — hosts, routes,
//! settings, workspace, prompt — is the shipped recipe's.
//!
//! The guest's files come from the recipe's own `prepare` step (`recipes/claude/fetch`), run by
//! `bottle build`; `scripts/setup --tests` runs it once so the copies here are hard links.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestContext;
use super::upstream::TestCa;

/// The API host Claude Code talks to: one of the recipe's two routes.
pub const API: &str = "api.anthropic.com";

/// The repository's `recipes/` folder.
pub fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

/// The Claude Code version the recipe's fetch step pins (`CLAUDE_CODE_VERSION=…`).
pub fn pinned_version() -> String {
    let fetch = std::fs::read_to_string(shipped().join("claude/fetch")).unwrap();
    fetch
        .lines()
        .find_map(|l| l.strip_prefix("CLAUDE_CODE_VERSION="))
        .expect("recipes/claude/fetch pins CLAUDE_CODE_VERSION")
        .trim()
        .to_string()
}

/// A stand-in API for the recipe: its CA's file name in the recipe folder and its port.
pub struct StandIn<'a> {
    pub ca: &'a TestCa,
    pub port: u16,
}

/// Copies the shipped Claude recipes and guest context into the test's recipe folder: the base
/// renamed `name-base`, the twin `name`, the upstream `origin` at `repo`, and — given a
/// stand-in — both route hosts mapped to this host with the stand-in's CA. Returns the twin's
/// path (the docker guest).
pub fn recipes(ctx: &TestContext, name: &str, repo: &Path, standin: Option<StandIn>) -> PathBuf {
    copy_context(ctx);
    let text = std::fs::read_to_string(shipped().join("claude.toml")).unwrap();
    let mut base: toml::Table = text.parse().unwrap();
    base.insert("name".into(), format!("{name}-base").into());
    let ups = base["git-gate"]["upstreams"].as_array_mut().unwrap();
    let origin = ups
        .iter_mut()
        .map(|u| u.as_table_mut().unwrap())
        .find(|u| u["name"].as_str() == Some("origin"))
        .expect("the shipped recipe's upstream origin");
    origin.insert("path".into(), repo.to_str().unwrap().into());
    if let Some(s) = standin {
        std::fs::write(ctx.recipes.join("standin-ca.pem"), s.ca.pem()).unwrap();
        let mut hosts = toml::Table::new();
        for route in base["egress"]["routes"].as_array_mut().unwrap() {
            let route = route.as_table_mut().unwrap();
            route.insert("upstream_ca".into(), "standin-ca.pem".into());
            hosts.insert(
                route["host"].as_str().unwrap().into(),
                "host-gateway".into(),
            );
        }
        let mut network = toml::Table::new();
        network.insert("hosts".into(), hosts.into());
        base.insert("network".into(), network.into());
        let guest = base["guest"].as_table_mut().unwrap();
        let env = guest
            .entry("env")
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .unwrap();
        env.insert(
            "ANTHROPIC_BASE_URL".into(),
            format!("https://{API}:{}", s.port).into(),
        );
    }
    std::fs::write(
        ctx.recipes.join("claude.toml"),
        toml::to_string(&base).unwrap(),
    )
    .unwrap();
    let twin = std::fs::read_to_string(shipped().join("claude-docker.toml")).unwrap();
    let mut twin: toml::Table = twin.parse().unwrap();
    assert_eq!(twin["extends"].as_str(), Some("claude.toml"), "{twin:?}");
    twin.insert("name".into(), name.into());
    let path = ctx.recipes.join("claude-docker.toml");
    std::fs::write(&path, toml::to_string(&twin).unwrap()).unwrap();
    path
}

/// Copies (hard-links where it can) the shipped guest context `recipes/claude/` into the test's
/// recipe folder, its Dockerfile's first step after `FROM scratch` copying the test's `test-id`
/// (so the guard removes the test's whole build chain; the other steps are the shipped ones).
fn copy_context(ctx: &TestContext) {
    let from = shipped().join("claude");
    let to = ctx.recipes.join("claude");
    for ent in walkdir::WalkDir::new(&from) {
        let ent = ent.unwrap();
        let dest = to.join(ent.path().strip_prefix(&from).unwrap());
        if ent.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if std::fs::hard_link(ent.path(), &dest).is_err() {
            std::fs::copy(ent.path(), &dest).unwrap();
        }
    }
    let dockerfile = std::fs::read_to_string(from.join("Dockerfile")).unwrap();
    let from_line = "FROM scratch\n";
    assert!(dockerfile.contains(from_line), "{dockerfile}");
    std::fs::remove_file(to.join("Dockerfile")).unwrap();
    std::fs::write(
        to.join("Dockerfile"),
        dockerfile.replacen(
            from_line,
            &format!("{from_line}COPY test-id {}\n", ctx.test_id_path),
            1,
        ),
    )
    .unwrap();
    let ignore = std::fs::read_to_string(from.join(".dockerignore")).unwrap();
    std::fs::remove_file(to.join(".dockerignore")).unwrap();
    std::fs::write(to.join(".dockerignore"), format!("{ignore}!test-id\n")).unwrap();
    std::fs::copy(ctx.recipes.join("guest/test-id"), to.join("test-id")).unwrap();
}

/// A repository on this host with one commit on `main` (a README), for git-gate's `path`.
pub fn local_repo(ctx: &TestContext) -> PathBuf {
    let repo = ctx.dir.path().join("project");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "# project\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README.md"],
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@t.invalid",
            "commit",
            "-qm",
            "first",
        ],
    ] {
        git(&repo, args);
    }
    repo
}

/// `git -C repo ARGS`, which must succeed; its stdout, trimmed.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git command's stdout in `repo`, or `None` when it fails (a ref that does not exist).
pub fn git_maybe(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A token made of pieces, so no argv of the test holds it whole; unique to the test process.
pub fn token(tag: &str) -> String {
    let var = format!("BOTTLE_TEST_CLAUDE_{tag}_{}", std::process::id());
    format!(
        "sk-ant-oat01-{}-{}",
        "test",
        blake3::hash(var.as_bytes()).to_hex()
    )
}
