//! Golden hashes: what `bottle hash --json` prints for the shipped recipes (and for a recipe
//! that sets every key of the config), compared with values committed here. A component's
//! hash is blake3 over its key's canonical JSON, so renaming a key's field, reordering an
//! enum's tag or changing how a plan value is written changes the hash of every store entry
//! built before; this test is where that shows.
//!
//! What is pinned, and what cannot be:
//!
//! - `config`: of every shipped recipe as it is (`recipes/demo.toml` read in place; the Claude
//!   recipes from a copy, see below). A config key holds only the recipe's own text and the
//!   digests of its committed files, so it is the same on every machine.
//! - `guest`: depends on this machine when read in place. The demo's build context holds
//!   `recipes/demo/busybox`, which `scripts/setup` copies from the host's `/bin/busybox` (its
//!   bytes are those of whichever Debian busybox-static package the machine installed); the
//!   Claude guest's context is `fetched/root/`, the host's git, curl, bash and ripgrep with
//!   their libraries, filled by the recipe's `prepare` step; and `recipes/claude.toml` starts
//!   from a smolvm pack, whose key holds `smolvm --version` (the smolvm CLI of this machine).
//!   So the guests are pinned from copies of the shipped recipes in which those inputs are
//!   stand-ins of fixed content: the shipped Dockerfile, passwd and group; a fixed `busybox`
//!   and `fetched/root/` tree; `BOTTLE_SMOLVM` pointing at a script that prints a fixed
//!   version; and no `prepare` (which would fill `fetched/` from the host).
//! - `bundle`: its key is [`BUILDER`], a digest of bottle's own sources computed at compile
//!   time, so it changes with every change to `src/`. Pinned instead through the library with a
//!   fixed builder; the binary's bundle hash is checked to be the hash of the key with
//!   [`BUILDER`].
//! - the entry: blake3 of the manifest, which holds the bundle's hash, so it changes with
//!   bottle's sources too. Pinned through the library over fixed component hashes; the
//!   binary's entry hash is checked to be that of the manifest of its own components.
use crate::support;

use std::path::{Path, PathBuf};

use bottle::digest::Digest;
use bottle::hash::{
    BUILDER, BUNDLE_FORMAT, BundleKey, CONFIG_FORMAT, ComponentHash, ComponentKey, GUEST_FORMAT,
};
use bottle::manifest::{Components, MANIFEST_FORMAT, Manifest};
use support::TestContext;
use support::claude::shipped;

/// What to do when a value here no longer matches.
const ON_CHANGE: &str = "\
a component's key (or the manifest) now encodes differently, so every entry built before \
gets another hash. If the change is meant: bump the format constant of that key in \
src/hash.rs (GUEST_FORMAT, BUNDLE_FORMAT or CONFIG_FORMAT; MANIFEST_FORMAT in \
src/manifest.rs for the manifest), update the value in tests/golden_hash.rs, and say in the \
commit why the hashes change. If it is not meant: the change must keep the key's serialized \
form (field names, order, tags, `skip_serializing_if`) as it was";

/// The committed values (the format constants they were taken under are checked too).
const GOLDEN_FORMATS: (u32, u32, u32, u32) = (1, 1, 2, 2);
const DEMO_CONFIG: &str = "bb72b21d12a4fc1dc31f0435a939daede2a0ded3fecb37db38a2ea39c1a76ea9";
const DEMO_GUEST: &str = "12fcad9f04d3f6bb82879c41fef3c6a2b38677264f9db3714e5e9391b6da2187";
const CLAUDE_CONFIG: &str = "8ce23608cbe963a927af1a6603011e2b8c14e42c70ed2fd73fe406b0928d2de5";
const CLAUDE_GUEST: &str = "29b67867b79a8a5418d76af0f7f12e50007b3b40e7e5ab68663c3035114a2d48";
const CLAUDE_DOCKER_GUEST: &str =
    "0af344db025113de6966c8d8a17e0781ce39bc126b740090a365a12f5f08cef2";
const SINK_CONFIG: &str = "d631f506c0c9cfa4ffc21fd529998e79409657db264616bbe16822e544303c63";
const SINK_GUEST: &str = "f0a8d81c52e0ab0a610a0f19f29680e1eb6400a548614714a29dca0f029890d2";
const REFERENCE_GUEST: &str = "88eda3ae1a72662a95feceb17698cc3209aac651bcc2153d449a2d0b82f4d820";
const BUNDLE_OF_GOLDEN_BUILDER: &str =
    "4849edda25da6c67428f2e64928ca3e389b76bc5fe54027d1ad08a674bb1c4f3";
const ENTRY_OF_FIXED_COMPONENTS: &str =
    "686c06465c2cc37fbb4dd1060a7df07496674c25370b9757ec36998b4b7e43b6";

fn check(what: &str, got: &str, want: &str) {
    assert_eq!(
        got, want,
        "the hash of {what} changed (got {got}, committed {want}): {ON_CHANGE}"
    );
}

/// `bottle hash --json RECIPE` with `envs`; checks its bundle and entry hashes against the
/// library's, and returns it.
fn hash_json(ctx: &TestContext, recipe: &Path, envs: &[(&str, &Path)]) -> serde_json::Value {
    let mut cmd = ctx.cmd();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = ctx.output_of(cmd, &["hash", "--json", recipe.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "bottle hash --json {}: {}",
        recipe.display(),
        support::stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = ComponentKey::Bundle(BundleKey {
        format: BUNDLE_FORMAT,
        builder: BUILDER.to_string(),
    })
    .hash();
    assert_eq!(v["components"]["bundle"], bundle.hex(), "{v}");
    let parse = |k: &str| ComponentHash::parse(v["components"][k].as_str().unwrap()).unwrap();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: v["name"].as_str().unwrap().to_string(),
        components: Components {
            guest: parse("guest"),
            bundle: parse("bundle"),
            config: parse("config"),
        },
    };
    assert_eq!(v["hash"], manifest.hash().hex(), "{v}");
    v
}

fn component(v: &serde_json::Value, kind: &str) -> String {
    v["components"][kind].as_str().unwrap().to_string()
}

/// Copies `from` (a file, or a folder's files and subfolders) to `to`, skipping `skip`.
fn copy(from: &Path, to: &Path, skip: &[&str]) {
    if from.is_file() {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let name = ent.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        copy(&ent.path(), &to.join(&name), skip);
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A script standing in for the smolvm CLI: prints a fixed version.
fn fixed_smolvm(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write(
        &dir.join("fixed-smolvm/smolvm"),
        "#!/bin/sh\necho 'smolvm 1.32.2'\n",
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn formats_are_those_the_values_were_taken_under() {
    let now = (GUEST_FORMAT, BUNDLE_FORMAT, CONFIG_FORMAT, MANIFEST_FORMAT);
    assert_eq!(
        now, GOLDEN_FORMATS,
        "a format constant (guest, bundle, config, manifest) changed: update the values in \
         tests/golden_hash.rs to what the changed keys hash to, and GOLDEN_FORMATS with them"
    );
}

/// `recipes/demo.toml` read in place: its config (its guest holds the host's busybox).
#[test]
fn shipped_demo_config() {
    let ctx = TestContext::new("golden-demo");
    let v = hash_json(&ctx, &shipped().join("demo.toml"), &[]);
    check(
        "recipes/demo.toml's config",
        &component(&v, "config"),
        DEMO_CONFIG,
    );
}

/// The demo recipe and guest context as shipped, with a busybox of fixed content.
#[test]
fn shipped_demo_with_a_fixed_busybox() {
    let ctx = TestContext::new("golden-demo-copy");
    let dir = ctx.dir.path().join("golden");
    copy(&shipped().join("demo.toml"), &dir.join("demo.toml"), &[]);
    copy(&shipped().join("demo"), &dir.join("demo"), &["busybox"]);
    write(&dir.join("demo/busybox"), "a stand-in for busybox\n");
    let v = hash_json(&ctx, &dir.join("demo.toml"), &[]);
    check("the demo's config", &component(&v, "config"), DEMO_CONFIG);
    check("the demo's guest", &component(&v, "guest"), DEMO_GUEST);
}

/// The Claude recipes as shipped but for `prepare`, with a fixed `fetched/root/` and a smolvm
/// CLI of fixed version (`bottle hash` of the shipped files would run `recipes/claude/fetch`,
/// which copies this host's programs into the guest's context).
#[test]
fn shipped_claude_with_fixed_fetched_files() {
    let ctx = TestContext::new("golden-claude");
    let dir = ctx.dir.path().join("golden");
    let text = std::fs::read_to_string(shipped().join("claude.toml")).unwrap();
    let prepare = "prepare = \"claude/fetch\"\n";
    assert!(
        text.contains(prepare),
        "recipes/claude.toml has {prepare:?}"
    );
    write(&dir.join("claude.toml"), &text.replace(prepare, ""));
    copy(
        &shipped().join("claude-docker.toml"),
        &dir.join("claude-docker.toml"),
        &[],
    );
    copy(&shipped().join("claude"), &dir.join("claude"), &["fetched"]);
    write(&dir.join("claude/fetched/root/bin/busybox"), "busybox\n");
    write(&dir.join("claude/fetched/root/usr/bin/git"), "git\n");
    let smolvm = fixed_smolvm(ctx.dir.path());
    let envs = [("BOTTLE_SMOLVM", smolvm.as_path())];
    let v = hash_json(&ctx, &dir.join("claude.toml"), &envs);
    check(
        "the claude recipe's config",
        &component(&v, "config"),
        CLAUDE_CONFIG,
    );
    check(
        "the claude recipe's guest",
        &component(&v, "guest"),
        CLAUDE_GUEST,
    );
    let v = hash_json(&ctx, &dir.join("claude-docker.toml"), &[]);
    check(
        "claude-docker's config",
        &component(&v, "config"),
        CLAUDE_CONFIG,
    );
    check(
        "claude-docker's guest",
        &component(&v, "guest"),
        CLAUDE_DOCKER_GUEST,
    );
}

/// A recipe setting every key the config holds, with a guest source the shipped recipes do
/// not use (an archive, started as an image by smolvm).
#[test]
fn every_key_of_the_config_and_an_archive_guest() {
    let ctx = TestContext::new("golden-sink");
    let dir = ctx.dir.path().join("golden");
    write(&dir.join("img.tar"), "an image archive\n");
    write(&dir.join("ca.pem"), "a CA file\n");
    write(&dir.join("prompt.md"), "the prompt\n");
    write(&dir.join("skills/one/SKILL.md"), "a skill\n");
    write(&dir.join("settings.json"), "{}\n");
    let sink = write(
        &dir.join("sink.toml"),
        r#"name = "sink"
[guest]
backend = "smolvm"
start = "image"
image = { archive = "img.tar" }
user = "agent"
home = "/home/agent"
command = ["agent", "--go"]
env = { EDITOR = "vi", LANG = "C.UTF-8" }
[pipelock]
allow = ["example.com", "*.example.org"]
dlp = false
dlp_rules = [{ id = "acme-key", regex = "acme_[a-z0-9]{32}" }]
dlp_allow = ["AKIAIOSFODNN7EXAMPLE"]
allow_private = ["10.1.0.0/16"]
[egress]
upstream_proxy = "http://proxy.corp.example:3128"
[[egress.routes]]
host = "api.example.com"
token_env = "API_TOKEN"
header = "X-Api-Key"
scheme = ""
upstream_ca = "ca.pem"
[network]
hosts = { "api.internal.test" = "10.0.0.5", "stand-in.test" = "host-gateway" }
[[git-gate.upstreams]]
name = "origin"
url = "git@github.com:me/project.git"
identity = "~/.ssh/id_ed25519"
branches = ["agent/*", "wip/**"]
tags = true
max_push_bytes = 1048576
[[git-gate.upstreams]]
name = "local"
path = "~/src/project"
[supervise]
enabled = true
[bundle]
memory = "1GiB"
[provision]
prompt = "prompt.md"
skills = "skills"
workspace = "origin"
files = { ".config/settings.json" = "settings.json" }
git_name = "Agent"
git_email = "agent@example.invalid"
"#,
    );
    let v = hash_json(&ctx, &sink, &[]);
    check(
        "the sink recipe's config",
        &component(&v, "config"),
        SINK_CONFIG,
    );
    check(
        "the sink recipe's guest",
        &component(&v, "guest"),
        SINK_GUEST,
    );
}

/// The other guest source the shipped recipes do not use: a reference pinned by digest.
#[test]
fn a_reference_guest() {
    let ctx = TestContext::new("golden-reference");
    let dir = ctx.dir.path().join("golden");
    let reference = write(
        &dir.join("reference.toml"),
        &format!(
            "name = \"reference\"\n[guest]\nbackend = \"docker\"\nimage = {{ reference = \"registry.example/agent@sha256:{}\" }}\ncommand = [\"sh\"]\n",
            "ab".repeat(32)
        ),
    );
    let v = hash_json(&ctx, &reference, &[]);
    check(
        "a reference guest",
        &component(&v, "guest"),
        REFERENCE_GUEST,
    );
}

/// The bundle key and the manifest, which the binary's hashes cannot pin (both change with
/// bottle's sources), over fixed values.
#[test]
fn bundle_key_and_manifest() {
    let bundle = ComponentKey::Bundle(BundleKey {
        format: BUNDLE_FORMAT,
        builder: "golden".into(),
    });
    check(
        "a bundle key",
        &bundle.hash().hex(),
        BUNDLE_OF_GOLDEN_BUILDER,
    );
    let fixed = |s: &str| ComponentHash(Digest::of(s.as_bytes()));
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: "demo".into(),
        components: Components {
            guest: fixed("guest"),
            bundle: fixed("bundle"),
            config: fixed("config"),
        },
    };
    check(
        "a manifest",
        &manifest.hash().hex(),
        ENTRY_OF_FIXED_COMPONENTS,
    );
}
