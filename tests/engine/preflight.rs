//! Preflight, with the real binary: `bottle doctor` names every problem of a set-up in one
//! run, each with its fix; `bottle run` refuses the same set-up before it builds or creates
//! anything; a good set-up passes; a token's value is never shown. The engine's socket is
//! reached as another user (`setpriv` to `nobody`, since root opens any socket) to tell
//! permission denied apart from an engine that is not there.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const NOBODY: &str = "65534";

/// A recipe with three routes (tokens `vars`) and one git-gate upstream on
/// `upstream.test:2222` with `key` and `known_hosts`.
fn preflight_recipe(name: &str, vars: [&str; 3], key: &Path, known_hosts: &Path) -> String {
    let mut extra = String::new();
    for (i, var) in vars.iter().enumerate() {
        extra.push_str(&format!(
            "\n[[egress.routes]]\nhost = \"api{i}.example.test\"\ntoken_env = \"{var}\"\nheader = \"Authorization\"\nscheme = \"Bearer\"\n"
        ));
    }
    extra.push_str(&format!(
        "\n[[git-gate.upstreams]]\nname = \"origin\"\nurl = \"ssh://git@upstream.test:2222/x.git\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nbranches = [\"agent/*\"]\n",
        key.display(),
        known_hosts.display()
    ));
    recipe(name, &extra)
}

/// `ssh-keygen -q -t ed25519 -N PASSPHRASE -f PATH`; returns the public `type base64` words.
fn keygen_with(path: &Path, passphrase: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "t", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Vars {
    unset: String,
    empty: String,
    set: String,
    value: String,
}

fn vars() -> Vars {
    let pid = std::process::id();
    Vars {
        unset: format!("BOTTLE_PF_UNSET_{pid}"),
        empty: format!("BOTTLE_PF_EMPTY_{pid}"),
        set: format!("BOTTLE_PF_SET_{pid}"),
        value: format!("pf-token-value-{pid}-do-not-show"),
    }
}

/// `bottle` with the test's store and the three variables as the bad set-up has them.
fn bad_cmd(ctx: &TestContext, v: &Vars) -> Command {
    let mut cmd = ctx.cmd();
    cmd.env_remove(&v.unset)
        .env(&v.empty, "")
        .env(&v.set, &v.value);
    cmd
}

/// The bad set-up: one token unset, one empty, a passphrase-protected key, a known_hosts file
/// lacking the upstream's host. Returns (recipe, key, known_hosts).
fn bad_setup(ctx: &TestContext, name: &str, v: &Vars) -> (PathBuf, PathBuf, PathBuf) {
    let key = ctx.dir.path().join("id_locked");
    keygen_with(&key, "secret");
    let other = keygen_with(&ctx.dir.path().join("other_host"), "");
    let known = ctx.dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("[other.test]:2222 {other}\nupstream.test {other}\n"),
    )
    .unwrap();
    let r = ctx.write_recipe(
        "r.toml",
        &preflight_recipe(name, [&v.unset, &v.empty, &v.set], &key, &known),
    );
    (r, key, known)
}

/// Asserts the four problems are named, each with its fix, and the token value nowhere.
fn assert_four_named(text: &str, v: &Vars, key: &Path, known: &Path) {
    assert!(text.contains(&format!("{} is unset", v.unset)), "{text}");
    assert!(text.contains(&format!("{} is empty", v.empty)), "{text}");
    assert!(text.contains(&format!("export {}=", v.unset)), "{text}");
    assert!(
        text.contains(&format!(
            "identity key {} is protected by a passphrase",
            key.display()
        )),
        "{text}"
    );
    assert!(text.contains("ssh-keygen -p -N ''"), "{text}");
    assert!(text.contains("upstream.test port 2222 is not in"), "{text}");
    assert!(
        text.contains(&format!(
            "ssh-keyscan -p 2222 upstream.test >> {}",
            known.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains(&v.value),
        "the token's value is shown:\n{text}"
    );
}

fn networks_of(ctx: &TestContext) -> Vec<String> {
    lines(&docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={LABEL_STORE}={}", ctx.store_label),
        "--format",
        "{{.Name}}",
    ]))
}

fn containers_of(ctx: &TestContext) -> Vec<String> {
    lines(&docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL_STORE}={}", ctx.store_label),
        "--format",
        "{{.Names}}",
    ]))
}

#[test]
fn four_bad_setups_are_named_at_once_and_run_creates_nothing() {
    let ctx = TestContext::new("preflight-four");
    let v = vars();
    let (r, key, known) = bad_setup(&ctx, "preflight-four", &v);
    let rp = r.to_str().unwrap();

    // doctor: one run names all four, each with its fix, and exits 1.
    let out = ctx.output_of(bad_cmd(&ctx, &v), &["doctor", rp]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_four_named(&text, &v, &key, &known);
    let failed = stdout(&out).lines().filter(|l| l.starts_with('✗')).count();
    assert_eq!(failed, 4, "{text}");
    assert!(text.contains(&format!("{} is set", v.set)), "{text}");

    // --json: {check, ok, problem, fix} per check; the four failures have fixes.
    let out = ctx.output_of(bad_cmd(&ctx, &v), &["doctor", "--json", rp]);
    assert_eq!(out.status.code(), Some(1));
    let json = stdout(&out);
    assert!(!json.contains(&v.value));
    let checks: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
            c["check"].as_str().unwrap()
        })
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        ["identity", "known_hosts", "token", "token"],
        "{json}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "engine" && c["ok"] == true),
        "{json}"
    );

    // run of the recipe: refused naming all four, before building or creating anything.
    let out = ctx.output_of(bad_cmd(&ctx, &v), &["run", rp, "--", "true"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_four_named(&text, &v, &key, &known);
    assert!(text.contains("nothing was created"), "{text}");
    assert!(
        ctx.store().hashes().unwrap_or_default().is_empty(),
        "run built the recipe"
    );
    assert_eq!(networks_of(&ctx), Vec::<String>::new());
    assert_eq!(containers_of(&ctx), Vec::<String>::new());

    // run of the built entry: the same refusal, no network, no container, no run record.
    let hash = ctx.build(&r);
    let out = ctx.output_of(bad_cmd(&ctx, &v), &["run", &hash, "--", "true"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_four_named(&text, &v, &key, &known);
    assert_eq!(networks_of(&ctx), Vec::<String>::new());
    assert_eq!(containers_of(&ctx), Vec::<String>::new());
    assert!(
        ctx.records().is_empty() && ctx.ended_runs().is_empty(),
        "a run record was written"
    );
    ctx.assert_nothing_left();
}

#[test]
fn a_good_setup_passes_doctor_and_runs_without_showing_the_token() {
    let ctx = TestContext::new("preflight-good");
    let v = vars();
    let key = ctx.dir.path().join("id_deploy");
    keygen_with(&key, "");
    let host = keygen_with(&ctx.dir.path().join("host"), "");
    let known = ctx.dir.path().join("known_hosts");
    std::fs::write(&known, format!("[upstream.test]:2222 {host}\n")).unwrap();
    let r = ctx.write_recipe(
        "r.toml",
        &preflight_recipe("preflight-good", [&v.set, &v.set, &v.set], &key, &known),
    );
    let rp = r.to_str().unwrap();
    let good = || {
        let mut cmd = ctx.cmd();
        cmd.env(&v.set, &v.value);
        cmd
    };
    let out = ctx.output_of(good(), &["doctor", rp]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains('✗'), "{text}");
    for check in ["engine", "token", "identity", "known_hosts", "disk"] {
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.starts_with(&format!("✓ {check}"))),
            "no passing {check} in:\n{text}"
        );
    }
    assert!(!text.contains(&v.value), "{text}");

    let out = ctx.output_of(good(), &["run", rp, "--", "echo", "ran"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert_eq!(stdout(&out).trim(), "ran", "{text}");
    assert!(!text.contains(&v.value), "{text}");
    // Doctor on the built entry, by hash prefix, passes as well.
    let hash = ctx.build(&r);
    let out = ctx.output_of(good(), &["doctor", &hash[..12]]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // And by its recipe name, without the token: named.
    let out = ctx.output(&["doctor", "preflight-good"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{} is unset", v.set)),
        "{}",
        stdout(&out)
    );
    ctx.assert_nothing_left();
}

/// `setpriv` to nobody, with a store nobody may use and the test's environment.
fn as_nobody(ctx: &TestContext, docker_host: Option<&str>) -> Command {
    let store = ctx.dir.path().join("nobody-store");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        BIN,
        "--no-progress",
    ])
    .env("BOTTLE_STORE", &store)
    .env("BOTTLE_CONFIG", "/dev/null")
    .env("HOME", "/nonexistent")
    .env_remove("BOTTLE_LOG");
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd
}

fn engine_check(out: &std::process::Output) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)));
    checks
        .into_iter()
        .find(|c| c["check"] == "engine")
        .expect("an engine check")
}

#[test]
fn permission_denied_on_the_socket_is_told_apart_from_an_engine_not_there() {
    let ctx = TestContext::new("preflight-socket");
    // nobody must reach the test's folder (tempdirs are 0700).
    std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The engine's own socket (root:docker 0660), as a user outside the docker group.
    let out = as_nobody(&ctx, None)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let engine = engine_check(&out);
    let (problem, fix) = (
        engine["problem"].as_str().unwrap(),
        engine["fix"].as_str().unwrap(),
    );
    assert!(problem.contains("permission denied"), "{problem}");
    assert!(problem.contains("/var/run/docker.sock"), "{problem}");
    assert!(fix.contains("`docker` group"), "{fix}");
    assert!(fix.contains("DOCKER_HOST"), "{fix}");
    assert!(!fix.contains("start it"), "{fix}");

    // A socket of the test's, mode 000, owned by root: the same refusal, naming that socket.
    let dir = ctx.dir.path().join("sock");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("engine.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
    let host = format!("unix://{}", sock.display());
    let out = as_nobody(&ctx, Some(&host))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let engine = engine_check(&out);
    let problem = engine["problem"].as_str().unwrap();
    assert!(problem.contains("permission denied"), "{problem}");
    assert!(problem.contains(sock.to_str().unwrap()), "{problem}");

    // No socket at all: unreachable, and the fix is to start the engine.
    let missing = format!("unix://{}", dir.join("no-such.sock").display());
    let mut cmd = ctx.cmd();
    cmd.env("DOCKER_HOST", &missing);
    let out = ctx.output_of(cmd, &["doctor"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("✗ engine"))
        .expect(&text);
    assert!(
        line.contains(&format!("cannot reach the Docker Engine at {missing}")),
        "{line}"
    );
    assert!(!line.contains("permission denied"), "{line}");
    assert!(text.contains("start it"), "{text}");
    assert!(
        text.contains(&format!("DOCKER_HOST is {missing}")),
        "{text}"
    );

    // The other commands say the same: `bottle ps` needs no engine, `bottle down --all` does.
    let out = as_nobody(&ctx, None)
        .args(["down", "--all"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("permission denied on the Docker Engine's socket"),
        "{err}"
    );
    assert!(!err.contains("start it"), "{err}");
}

/// The KVM device is stood in by a file of the test's (`BOTTLE_KVM_DEVICE`): the real
/// `/dev/kvm`'s mode is the machine's, and other tests change it.
#[test]
fn a_smolvm_recipe_without_usable_kvm_names_its_docker_twin_stand_in_device() {
    let ctx = TestContext::new("preflight-kvm");
    std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let smolvm = recipe("preflight-kvm", "").replace(
        "backend = \"docker\"",
        "backend = \"smolvm\"\nstart = \"image\"",
    );
    let r = ctx.write_recipe("r.toml", &smolvm);
    let twin = ctx.write_recipe(
        "preflight-kvm-docker.toml",
        &recipe("preflight-kvm-docker", ""),
    );
    let twin_fix = format!(
        "use {}, the docker twin, or a machine with KVM",
        twin.display()
    );
    let kvm_of = |out: &std::process::Output| -> Option<serde_json::Value> {
        let checks: Vec<serde_json::Value> =
            serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(out)));
        checks.into_iter().find(|c| c["check"] == "kvm")
    };

    // A device this user may not open (root's, mode 0600; run as nobody).
    let device = ctx.dir.path().join("kvm");
    std::fs::write(&device, "").unwrap();
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_nobody(&ctx, None)
        .env("BOTTLE_KVM_DEVICE", &device)
        .args(["doctor", "--json", r.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let kvm = kvm_of(&out).expect("a kvm check");
    assert_eq!(kvm["ok"], false, "{kvm}");
    let problem = kvm["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!("{} exists but", device.display())),
        "{problem}"
    );
    assert!(problem.contains("permission denied"), "{problem}");
    let fix = kvm["fix"].as_str().unwrap();
    assert!(fix.contains("kvm") && fix.contains(&twin_fix), "{fix}");

    // No device at all: the twin, and no chmod to try.
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_KVM_DEVICE", ctx.dir.path().join("no-kvm"));
    let out = ctx.output_of(cmd, &["doctor", "--json", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let kvm = kvm_of(&out).expect("a kvm check");
    assert!(
        kvm["problem"].as_str().unwrap().contains("does not exist"),
        "{kvm}"
    );
    assert_eq!(kvm["fix"].as_str().unwrap(), twin_fix, "{kvm}");

    // `bottle run` refuses it too, before building or creating anything.
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_KVM_DEVICE", ctx.dir.path().join("no-kvm"));
    let out = ctx.output_of(cmd, &["run", r.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&twin_fix), "{}", stderr(&out));
    assert!(ctx.store().hashes().unwrap_or_default().is_empty());

    // A docker recipe has no KVM check.
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_KVM_DEVICE", ctx.dir.path().join("no-kvm"));
    let out = ctx.output_of(cmd, &["doctor", "--json", twin.to_str().unwrap()]);
    assert!(kvm_of(&out).is_none(), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    ctx.assert_nothing_left();
}

#[test]
fn a_key_this_user_cannot_read_is_named_unreadable() {
    let ctx = TestContext::new("preflight-unreadable");
    std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let v = vars();
    // root's key, 0600 as ssh-keygen makes it; the known_hosts file readable by all.
    let key = ctx.dir.path().join("id_root");
    keygen_with(&key, "");
    let host = keygen_with(&ctx.dir.path().join("host"), "");
    let known = ctx.dir.path().join("known_hosts");
    std::fs::write(&known, format!("[upstream.test]:2222 {host}\n")).unwrap();
    let r = ctx.write_recipe(
        "r.toml",
        &preflight_recipe(
            "preflight-unreadable",
            [&v.set, &v.set, &v.set],
            &key,
            &known,
        ),
    );
    let out = as_nobody(&ctx, None)
        .env(&v.set, &v.value)
        .args(["doctor", "--json", r.to_str().unwrap()])
        .output()
        .unwrap();
    let json = stdout(&out);
    assert!(!json.contains(&v.value), "{json}");
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&json).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    let identity = checks.iter().find(|c| c["check"] == "identity").unwrap();
    assert_eq!(identity["ok"], false, "{identity}");
    let problem = identity["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!("cannot read identity key {}", key.display())),
        "{problem}"
    );
    assert!(problem.contains("permission denied"), "{problem}");
    assert!(
        identity["fix"].as_str().unwrap().contains("chmod 600"),
        "{identity}"
    );
    // The same key, read by its owner, passes.
    let mut cmd = ctx.cmd();
    cmd.env(&v.set, &v.value);
    let out = ctx.output_of(cmd, &["doctor", "--json", r.to_str().unwrap()]);
    let checks: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
}

#[test]
fn a_local_upstream_that_is_no_repository_is_named_with_the_others() {
    let ctx = TestContext::new("preflight-local");
    let v = vars();
    let missing = ctx.dir.path().join("no-such-project");
    let repo = ctx.dir.path().join("project");
    std::fs::create_dir(&repo).unwrap();
    support::sshd::git(&repo, &["init", "-q", "-b", "main"]);
    let upstream = |name: &str, path: &Path| {
        format!(
            "\n[[git-gate.upstreams]]\nname = \"{name}\"\npath = \"{}\"\nbranches = [\"agent/*\"]\n",
            path.display()
        )
    };
    let extra = format!(
        "\n[[egress.routes]]\nhost = \"api.example.test\"\ntoken_env = \"{}\"\n{}{}",
        v.unset,
        upstream("gone", &missing),
        upstream("home", &repo)
    );
    let r = ctx.write_recipe("r.toml", &recipe("preflight-local", &extra));
    let out = ctx.output_of(
        bad_cmd(&ctx, &v),
        &["doctor", "--json", r.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let checks: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let repos: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["check"] == "repository")
        .collect();
    assert_eq!(repos.len(), 2, "{checks:?}");
    let gone = repos
        .iter()
        .find(|c| c["ok"] == false)
        .expect("a failed repository check");
    assert!(
        gone["problem"].as_str().unwrap().contains("\"gone\""),
        "{gone}"
    );
    assert!(
        gone["fix"].as_str().unwrap().contains("git repository"),
        "{gone}"
    );
    assert!(repos.iter().any(|c| c["ok"] == true), "{repos:?}");
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "token" && c["ok"] == false),
        "{checks:?}"
    );
}
