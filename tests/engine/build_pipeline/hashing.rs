//! What an entry's hash and its components' hashes depend on: the same recipe twice gives the
//! same hash (and the second build does no work), every input file and recipe field changes
//! it, layout and location do not, the shipped recipes hash, and a new builder version gives a
//! new hash.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use bottle::hash::ComponentKind;
use bottle::manifest::{Manifest, RECORD_FILE};
use support::{TestContext, base_recipe, stderr};

#[test]
fn same_recipe_twice_gives_same_hash_and_the_second_build_does_no_work() {
    let ctx = TestContext::with_build_recipe("twice");
    let r = ctx.recipe();
    let first = ctx.build_json(&r);
    assert_eq!(first["cached"], false);
    let hash = first["hash"].as_str().unwrap().to_string();
    assert_eq!(
        first["path"].as_str().unwrap(),
        ctx.entry_file(&hash).to_str().unwrap()
    );
    assert_eq!(first["name"], "twice");
    assert_eq!(
        hash,
        ctx.hash(&r),
        "`bottle hash` must agree with `bottle build`"
    );
    // Each component: built now (the store was empty), where the library says it lies,
    // and the hash `bottle hash --json` names.
    let keys = ctx.keys(&r);
    assert_eq!(keys["hash"], hash.as_str());
    let comps = first["components"].as_array().unwrap();
    let names: Vec<&str> = comps.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["guest", "bundle", "config"]);
    for c in comps {
        let kind = ComponentKind::parse(c["name"].as_str().unwrap()).unwrap();
        assert_eq!(c["cached"], false, "{c}");
        assert_eq!(c["hash"], keys["components"][kind.name()], "{c}");
        let id = ctx.manifest(&hash).components.get(kind);
        assert_eq!(c["hash"], id.hash.hex().as_str());
        let dir = ctx.store().component_dir(&id);
        assert_eq!(c["path"].as_str().unwrap(), dir.to_str().unwrap());
        assert!(dir.join(RECORD_FILE).is_file(), "{}", dir.display());
    }
    let manifest_before = std::fs::read(ctx.entry_file(&hash)).unwrap();

    // With no engine reachable at all, the second build must still succeed: it does no work.
    let mut cmd = ctx.cmd();
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let second = ctx.output_of(cmd, &["build", "--json", r.to_str().unwrap()]);
    assert!(second.status.success(), "{}", stderr(&second));
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["hash"], hash.as_str());
    assert_eq!(second["cached"], true);
    for c in second["components"].as_array().unwrap() {
        assert_eq!(c["cached"], true, "{c}");
    }
    assert_eq!(
        std::fs::read(ctx.entry_file(&hash)).unwrap(),
        manifest_before
    );
    assert!(ctx.temporary().is_empty(), "temporary leftovers");
}

#[test]
fn changing_any_input_file_or_recipe_field_changes_the_hash() {
    let ctx = TestContext::with_build_recipe("changes");
    let r = ctx.recipe();
    let base = ctx.keys(&r);
    let base_hash = base["hash"].as_str().unwrap().to_string();
    let mut seen = BTreeSet::from([base_hash.clone()]);
    // A new entry hash, and exactly the components `changed` with new hashes (the bundle
    // depends on bottle only).
    let mut expect_new = |what: &str, changed: &[&str], ctx: &TestContext| {
        let k = ctx.keys(&r);
        assert!(
            seen.insert(k["hash"].as_str().unwrap().to_string()),
            "changing {what} did not change the hash"
        );
        for kind in ["guest", "bundle", "config"] {
            assert_eq!(
                k["components"][kind] != base["components"][kind],
                changed.contains(&kind),
                "changing {what}: component {kind}"
            );
        }
    };

    // Input files: a context file, the Dockerfile, the prompt, a new skills file, an
    // executable bit.
    let restore = |p: &std::path::Path, bytes: &[u8]| std::fs::write(p, bytes).unwrap();
    for (rel, component) in [
        ("guest/passwd", "guest"),
        ("guest/Dockerfile", "guest"),
        ("prompt.md", "config"),
        ("skills/one/SKILL.md", "config"),
    ] {
        let p = ctx.recipes.join(rel);
        let orig = std::fs::read(&p).unwrap();
        let mut changed = orig.clone();
        changed.push(b'\n');
        std::fs::write(&p, &changed).unwrap();
        expect_new(rel, &[component], &ctx);
        restore(&p, &orig);
        assert_eq!(
            ctx.hash(&r),
            base_hash,
            "restoring {rel} must restore the hash"
        );
    }
    std::fs::write(ctx.recipes.join("skills/two.md"), "new").unwrap();
    expect_new("a new skills file", &["config"], &ctx);
    std::fs::remove_file(ctx.recipes.join("skills/two.md")).unwrap();
    let passwd = ctx.recipes.join("guest/passwd");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_new("the executable bit of a context file", &["guest"], &ctx);
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(ctx.hash(&r), base_hash);

    // Recipe fields, one at a time. The name is the entry's only: no component changes.
    let text = base_recipe("changes");
    let edits: &[(&str, &str, &str, &[&str])] = &[
        ("name", "name = \"changes\"", "name = \"changes2\"", &[]),
        (
            "guest.user",
            "user = \"node\"",
            "user = \"agent\"",
            &["config"],
        ),
        ("guest.command", "\"id -un\"", "\"id -u\"", &["config"]),
        (
            "guest.env",
            "EDITOR = \"vi\"",
            "EDITOR = \"nano\"",
            &["config"],
        ),
        (
            "pipelock.allow",
            "\"example.com\",",
            "\"example.net\",",
            &["config"],
        ),
        (
            "provision.git_name",
            "git_name = \"Agent\"",
            "git_name = \"Other\"",
            &["config"],
        ),
        (
            "guest.backend",
            "backend = \"docker\"",
            "backend = \"smolvm\"\nstart = \"image\"",
            &["guest"],
        ),
    ];
    for (field, from, to, changed) in edits {
        assert!(text.contains(from), "{from}");
        ctx.write_recipe("r.toml", &text.replace(from, to));
        expect_new(field, changed, &ctx);
    }
    for (field, extra) in [
        ("supervise.enabled", "\n[supervise]\nenabled = true\n"),
        ("pipelock.dlp", "\n[pipelock]\ndlp = false\n"),
        (
            "egress.routes",
            "\n[[egress.routes]]\nhost = \"api.example.org\"\ntoken_env = \"SOME_TOKEN\"\n",
        ),
    ] {
        let t = if field == "pipelock.dlp" {
            text.replace("[pipelock]\n", "[pipelock]\ndlp = false\n")
        } else {
            format!("{text}{extra}")
        };
        ctx.write_recipe("r.toml", &t);
        expect_new(field, &["config"], &ctx);
    }
    ctx.write_recipe("r.toml", &text);
    assert_eq!(ctx.hash(&r), base_hash);
}

#[test]
fn reordering_keys_whitespace_comments_and_location_keep_the_hash() {
    let ctx = TestContext::with_build_recipe("reorder");
    let base = ctx.hash(&ctx.recipe());
    let reordered = r#"
# the same recipe, written differently
[provision]
git_name   =   "Agent"
skills = "./skills"
prompt = "prompt.md"

[pipelock]
allow = [ "api.example.org", "EXAMPLE.com", "example.com" ]   # order, case and repeats do not matter

[guest]
env = { LANG = "C.UTF-8", EDITOR = "vi" }
command = [ "sh", "-c", "id -un" ]
user = "node"
image = { dockerfile = "guest/../guest/Dockerfile" }
backend = "docker"

name = "reorder"
"#;
    // Top-level `name` after tables would belong to [guest]: keep TOML's rules by moving it up.
    let reordered = format!(
        "name = \"reorder\"\n{}",
        reordered.replace("\nname = \"reorder\"\n", "\n")
    );
    let r2 = ctx.write_recipe("r2.toml", &reordered);
    assert_eq!(ctx.hash(&r2), base);

    // The same folder copied elsewhere hashes the same: paths are relative to the recipe.
    let elsewhere = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", ctx.recipes.display()))
        .arg(elsewhere.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(ctx.hash(&elsewhere.path().join("r.toml")), base);
}

#[test]
fn shipped_recipes_hash_and_claude_is_pure() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ctx = TestContext::with_build_recipe("shipped");
    let claude = format!("{root}/recipes/claude.toml");
    let a = ctx.ok(&["hash", "--pure", &claude]);
    assert_eq!(a.trim().len(), 64);
    let m: serde_json::Value = serde_json::from_str(&ctx.ok(&["hash", "--json", &claude])).unwrap();
    assert_eq!(m["hash"], a.trim());
    assert_eq!(m["name"], "claude");
    for kind in ComponentKind::ALL {
        let h = m["components"][kind.name()].as_str().unwrap_or_default();
        assert!(bottle::hash::ComponentHash::parse(h).is_some(), "{m}");
    }
    let demo: serde_json::Value = serde_json::from_str(&ctx.ok(&[
        "hash",
        "--pure",
        "--json",
        &format!("{root}/recipes/demo.toml"),
    ]))
    .unwrap();
    assert_eq!(demo["hash"].as_str().unwrap().len(), 64);
    // Both shipped recipes are built by this bottle: one bundle for both.
    assert_eq!(demo["components"]["bundle"], m["components"]["bundle"]);
}

#[test]
fn a_new_builder_version_gives_a_new_hash() {
    let ctx = TestContext::with_build_recipe("builder");
    let recipe = bottle::recipe::Recipe::load(&ctx.recipe()).unwrap();
    let planned = bottle::plan::plan(&recipe).unwrap();
    let (now, _) = bottle::hash::keys(&planned, None).unwrap();
    let (next, _) = bottle::hash::keys_with_builder(&planned, "bottle-build/999", None).unwrap();
    assert_eq!(
        Manifest::of(&now).hash().to_string(),
        ctx.hash(&ctx.recipe()),
        "the CLI hashes with the current builder"
    );
    assert_eq!(now.bundle.builder, bottle::hash::BUILDER);
    assert_ne!(Manifest::of(&now).hash(), Manifest::of(&next).hash());
    assert_eq!(now.guest, next.guest);
    assert_eq!(now.config, next.config);
}
