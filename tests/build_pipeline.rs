//! The build phase end to end: the real `bottle` binary against the real Docker Engine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Ctx, stderr, stdout};

#[test]
fn same_recipe_twice_gives_same_hash_and_the_second_build_does_no_work() {
    let ctx = Ctx::new("twice");
    let r = ctx.recipe();
    let first = ctx.run(&["build", "--json", r.to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["cached"], false);
    let hash = first["hash"].as_str().unwrap().to_string();
    ctx.remember(&hash);
    assert_eq!(
        hash,
        ctx.hash(&r),
        "`bottle hash` must agree with `bottle build`"
    );
    let manifest_before = std::fs::read(ctx.entry(&hash).join("manifest.json")).unwrap();

    // With no engine reachable at all, the second build must still succeed: it does no work.
    let second = ctx
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build", "--json", r.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["hash"], hash.as_str());
    assert_eq!(second["cached"], true);
    assert_eq!(
        std::fs::read(ctx.entry(&hash).join("manifest.json")).unwrap(),
        manifest_before
    );
    assert!(
        std::fs::read_dir(ctx.store.join("v1/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary leftovers"
    );
}

#[test]
fn changing_any_input_file_or_recipe_field_changes_the_hash() {
    let ctx = Ctx::new("changes");
    let r = ctx.recipe();
    let base = ctx.hash(&r);
    let mut seen = std::collections::BTreeSet::from([base.clone()]);
    let mut expect_new = |what: &str, ctx: &Ctx| {
        let h = ctx.hash(&r);
        assert!(seen.insert(h), "changing {what} did not change the hash");
    };

    // Input files: a context file, the Dockerfile, the prompt, a new skills file, an
    // executable bit.
    let restore = |p: &std::path::Path, bytes: &[u8]| std::fs::write(p, bytes).unwrap();
    for rel in [
        "guest/passwd",
        "guest/Dockerfile",
        "prompt.md",
        "skills/one/SKILL.md",
    ] {
        let p = ctx.recipes.join(rel);
        let orig = std::fs::read(&p).unwrap();
        let mut changed = orig.clone();
        changed.push(b'\n');
        std::fs::write(&p, &changed).unwrap();
        expect_new(rel, &ctx);
        restore(&p, &orig);
        assert_eq!(ctx.hash(&r), base, "restoring {rel} must restore the hash");
    }
    std::fs::write(ctx.recipes.join("skills/two.md"), "new").unwrap();
    expect_new("a new skills file", &ctx);
    std::fs::remove_file(ctx.recipes.join("skills/two.md")).unwrap();
    let passwd = ctx.recipes.join("guest/passwd");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_new("the executable bit of a context file", &ctx);
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(ctx.hash(&r), base);

    // Recipe fields, one at a time.
    let text = common::base_recipe("changes");
    let edits: &[(&str, &str, &str)] = &[
        ("name", "name = \"changes\"", "name = \"changes2\""),
        ("guest.user", "user = \"node\"", "user = \"agent\""),
        ("guest.command", "\"id -un\"", "\"id -u\""),
        ("guest.env", "EDITOR = \"vi\"", "EDITOR = \"nano\""),
        ("pipelock.allow", "\"example.com\",", "\"example.net\","),
        (
            "provision.git_name",
            "git_name = \"Agent\"",
            "git_name = \"Other\"",
        ),
    ];
    for (field, from, to) in edits {
        assert!(text.contains(from), "{from}");
        ctx.write_recipe("r.toml", &text.replace(from, to));
        expect_new(field, &ctx);
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
        expect_new(field, &ctx);
    }
    ctx.write_recipe("r.toml", &text);
    assert_eq!(ctx.hash(&r), base);
}

#[test]
fn reordering_keys_whitespace_comments_and_location_keep_the_hash() {
    let ctx = Ctx::new("reorder");
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
fn eight_concurrent_builds_of_one_recipe_build_once() {
    let ctx = Ctx::new("concurrent");
    let r = ctx.recipe();
    let children: Vec<_> = (0..8)
        .map(|_| {
            ctx.cmd()
                .args(["build", "--json", r.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut hashes = std::collections::BTreeSet::new();
    let mut built = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        hashes.insert(v["hash"].as_str().unwrap().to_string());
        if v["cached"] == false {
            built += 1;
        }
    }
    for h in &hashes {
        ctx.remember(h);
    }
    assert_eq!(hashes.len(), 1, "all eight print the same hash");
    assert_eq!(
        built, 1,
        "exactly one process built; the others found its entry"
    );
    assert!(
        std::fs::read_dir(ctx.store.join("v1/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let h = hashes.into_iter().next().unwrap();
    let v = ctx.run(&["verify", &h]);
    assert!(v.status.success(), "{}", stdout(&v));
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_partial_entry() {
    let ctx = Ctx::new("sigkill");
    let r = ctx.recipe();
    // How long one build takes here once the engine has its layers cached (as for every
    // trial below), to spread the kills over it.
    let hash = ctx.build(&r);
    ctx.ok(&["gc"]);
    let t0 = std::time::Instant::now();
    assert_eq!(ctx.build(&r), hash);
    let full = t0.elapsed();
    ctx.ok(&["gc"]);
    assert!(!ctx.entry(&hash).exists());

    let mut rng = 0x2545f4914f6cdd1du64;
    let mut killed_mid_build = 0;
    for trial in 0..24 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_micros(rng % (full.as_micros() as u64 + 1).max(1));
        let mut child = ctx
            .cmd()
            .args(["build", "-q", r.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_build += 1;
        }
        // Whatever moment it died at, an entry is either absent or whole.
        let builds = ctx.store.join("v1/builds");
        if let Ok(rd) = std::fs::read_dir(&builds) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    e.path().join("manifest.json").is_file(),
                    "trial {trial}: partial entry {name}"
                );
                let v = ctx.run(&["verify", &name]);
                assert!(v.status.success(), "trial {trial}: {}", stdout(&v));
            }
        }
        if ctx.entry(&hash).exists() {
            ctx.ok(&["gc"]);
        }
    }
    assert!(
        killed_mid_build >= 5,
        "only {killed_mid_build} of 24 kills landed during a build"
    );
    // The next build succeeds, cleans the leftovers of killed builds, and verifies.
    assert_eq!(ctx.build(&r), hash);
    let tmp: Vec<_> = std::fs::read_dir(ctx.store.join("v1/tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "leftovers of killed builds remain: {tmp:?}");
    assert!(ctx.run(&["verify", &hash]).status.success());
}

#[test]
fn verify_names_each_flipped_truncated_or_deleted_artifact() {
    let ctx = Ctx::new("tamper");
    let hash = ctx.build(&ctx.recipe());
    let entry = ctx.entry(&hash);
    let manifest = ctx.manifest(&hash);
    let artifacts: Vec<String> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        artifacts.iter().any(|a| a == "guest/image.tar"),
        "{artifacts:?}"
    );
    assert!(artifacts.iter().any(|a| a == "key.json"));
    assert!(artifacts.iter().any(|a| a == "provision/prompt.md"));

    for rel in &artifacts {
        let path = entry.join(rel);
        let pristine = std::fs::read(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        let damages: Vec<(&str, Box<dyn Fn()>)> = vec![
            ("flip", {
                let (path, p) = (path.clone(), pristine.clone());
                Box::new(move || {
                    let mut b = p.clone();
                    let i = b.len() / 2;
                    b[i] ^= 0x01;
                    std::fs::write(&path, b).unwrap();
                })
            }),
            ("truncate", {
                let (path, p) = (path.clone(), pristine.clone());
                Box::new(move || std::fs::write(&path, &p[..p.len() / 2]).unwrap())
            }),
            ("delete", {
                let path = path.clone();
                Box::new(move || std::fs::remove_file(&path).unwrap())
            }),
        ];
        for (how, damage) in damages {
            damage();
            let out = ctx.run(&["verify", &hash[..10]]);
            assert_eq!(out.status.code(), Some(3), "{how} {rel}: {}", stdout(&out));
            let text = stdout(&out);
            assert!(
                text.lines()
                    .any(|l| l.contains("damaged") && l.contains(&format!(" {rel}:"))),
                "{how} {rel} not named:\n{text}"
            );
            std::fs::write(&path, &pristine).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                ctx.run(&["verify", &hash]).status.success(),
                "restored {rel}"
            );
        }
    }
    // A file slipped into the entry is named too.
    std::fs::write(entry.join("config/extra.json"), "{}").unwrap();
    let out = ctx.run(&["verify", "--json", &hash]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["damage"][0]["path"], "config/extra.json");
}

#[test]
fn ca_keys_are_private_machine_local_and_configs_name_no_token_value() {
    let ctx = Ctx::new("secrets");
    let secret = format!("sk-test-{}-{}", std::process::id(), "Zq7Xv93LmT");
    let text = format!(
        "{}\n[[egress.routes]]\nhost = \"api.example.org\"\ntoken_env = \"BOTTLE_TEST_TOKEN\"\n\n[supervise]\nenabled = true\n\n[[git-gate.upstreams]]\nname = \"origin\"\nurl = \"ssh://git@example.org/x.git\"\nidentity = \"~/.ssh/id_test\"\n",
        common::base_recipe("secrets")
    );
    let r = ctx.write_recipe("r.toml", &text);
    let out = ctx
        .cmd()
        .env("BOTTLE_TEST_TOKEN", &secret)
        .args(["-v", "build", r.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).lines().last().unwrap().to_string();
    ctx.remember(&hash);
    assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret));
    let show = ctx
        .cmd()
        .env("BOTTLE_TEST_TOKEN", &secret)
        .args(["show", "--json", &hash])
        .output()
        .unwrap();
    assert!(!stdout(&show).contains(&secret));
    for (path, bytes) in ctx.snapshot() {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token value is in store file {path}"
        );
    }
    let m = ctx.manifest(&hash);
    assert_eq!(
        m["bundle"]["env_from_host"],
        serde_json::json!(["BOTTLE_TEST_TOKEN"])
    );
    let daemons: Vec<&str> = m["bundle"]["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(daemons, ["egress", "pipelock", "git-gate", "supervise"]);
    for key in ["ca/pipelock.key", "ca/egress.key"] {
        let meta = std::fs::metadata(ctx.entry(&hash).join(key)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key}");
        let a = m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["path"] == key)
            .unwrap();
        assert_eq!(a["machine_local"], true, "{key}");
        assert_eq!(a["mode"], 0o600);
    }
    assert!(ctx.entry(&hash).join("ca/egress.crt").is_file());
    let env = &m["guest"]["env"];
    assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "egress-placeholder");
    for k in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
        assert_eq!(env[k], m["guest"]["ca_guest_path"], "{k}");
    }
    assert!(
        env["HTTPS_PROXY"]
            .as_str()
            .unwrap()
            .contains("{{bundle_ip}}")
    );

    // Without routes, there is no egress CA.
    let plain = ctx.build(&ctx.write_recipe("p.toml", &common::base_recipe("secrets-plain")));
    assert!(!ctx.entry(&plain).join("ca/egress.crt").exists());
    assert!(ctx.entry(&plain).join("ca/pipelock.crt").exists());
}

#[test]
fn bad_input_gives_a_located_error_and_leaves_the_store_unchanged() {
    let ctx = Ctx::new("bad");
    let good = ctx.build(&ctx.recipe());
    let before = ctx.snapshot();
    let base = common::base_recipe("bad");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed TOML",
            base.replace("backend = \"docker\"", "backend = docker\""),
            "r.toml:4:",
        ),
        (
            "unknown key",
            format!("{base}\ncolour = \"red\"\n"),
            "unknown field `colour`",
        ),
        (
            "wrong type",
            base.replace("user = \"node\"", "user = 7"),
            "r.toml:6:8",
        ),
        (
            "path outside the folder",
            base.replace("prompt = \"prompt.md\"", "prompt = \"../outside.md\""),
            "leaves the recipe's folder",
        ),
        (
            "absolute path",
            base.replace("prompt = \"prompt.md\"", "prompt = \"/etc/passwd\""),
            "leaves the recipe's folder",
        ),
        (
            "missing input file",
            base.replace("prompt = \"prompt.md\"", "prompt = \"nope.md\""),
            "does not exist",
        ),
        (
            "unpinned image reference",
            base.replace(
                "{ dockerfile = \"guest/Dockerfile\" }",
                "{ reference = \"node:22\" }",
            ),
            "is not pinned",
        ),
        (
            "token value instead of a name",
            format!(
                "{base}\n[[egress.routes]]\nhost = \"a.example\"\ntoken_env = \"sk-ant-123\"\n"
            ),
            "NAME of an environment variable",
        ),
        (
            "reserved guest env",
            base.replace("EDITOR = \"vi\"", "HTTPS_PROXY = \"http://x\""),
            "set by bottle itself",
        ),
        (
            "two image sources",
            base.replace(
                "{ dockerfile = \"guest/Dockerfile\" }",
                "{ dockerfile = \"guest/Dockerfile\", archive = \"x.tar\" }",
            ),
            "exactly one of",
        ),
    ];
    for (what, text, expect) in &cases {
        let r = ctx.write_recipe("r.toml", text);
        for cmd in ["build", "hash"] {
            let out = ctx.run(&[cmd, r.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{what}: {cmd} should fail");
            let err = stderr(&out);
            assert!(
                err.contains(expect),
                "{what}: {cmd}: expected {expect:?} in:\n{err}"
            );
            assert!(
                err.contains("r.toml:"),
                "{what}: the error names the file: {err}"
            );
            assert!(stdout(&out).is_empty(), "{what}: nothing on stdout");
        }
    }
    let _ = std::fs::remove_file(ctx.recipes.join("x.tar"));

    // Hash prefixes: not hex, unknown, ambiguous.
    let fake = |c: char| {
        ctx.store
            .join("v1/builds")
            .join(format!("{}{}", "ab", c.to_string().repeat(62)))
    };
    let out = ctx.run(&["show", "xyz"]);
    assert!(
        stderr(&out).contains("is not a hash or hash prefix"),
        "{}",
        stderr(&out)
    );
    let other = if good.starts_with('0') { "1" } else { "0" };
    let out = ctx.run(&["show", other]);
    assert!(
        stderr(&out).contains("no store entry matches"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ctx.snapshot(), before, "the store changed");

    std::fs::create_dir_all(fake('1')).unwrap();
    std::fs::create_dir_all(fake('2')).unwrap();
    let out = ctx.run(&["show", "ab"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("matches 2 entries") || err.contains("matches 3 entries"),
        "{err}"
    );
    assert!(
        err.contains(&format!("ab{}", "1".repeat(62)))
            && err.contains(&format!("ab{}", "2".repeat(62))),
        "{err}"
    );
    std::fs::remove_dir(fake('1')).unwrap();
    std::fs::remove_dir(fake('2')).unwrap();
    assert_eq!(ctx.snapshot(), before, "the store changed");
}

#[test]
fn a_recipe_error_never_creates_a_store() {
    let ctx = Ctx::new("nostore");
    let r = ctx.write_recipe("r.toml", "name = \"x\"\n[guest\n");
    let out = ctx.run(&["build", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("r.toml:2:"), "{}", stderr(&out));
    assert!(!ctx.store.exists());
}

#[test]
fn unpinned_from_is_a_warning_and_refused_under_pure() {
    let ctx = Ctx::new("impure");
    std::fs::write(
        ctx.recipes.join("guest/Dockerfile"),
        "FROM debian:bookworm\nRUN true\n",
    )
    .unwrap();
    let r = ctx.recipe();
    let out = ctx.run(&["hash", r.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("guest/Dockerfile:1: FROM debian:bookworm names a tag"),
        "{}",
        stderr(&out)
    );
    let out = ctx.run(&["hash", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pin it as debian@sha256:DIGEST"),
        "{}",
        stderr(&out)
    );
    let out = ctx.run(&["build", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !ctx.store.exists(),
        "a refused build leaves no store behind"
    );
}

#[test]
fn shipped_recipes_hash_and_claude_is_pure() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ctx = Ctx::new("shipped");
    let claude = format!("{root}/recipes/claude.toml");
    let a = ctx.ok(&["hash", "--pure", &claude]);
    assert_eq!(a.trim().len(), 64);
    let m: serde_json::Value = serde_json::from_str(&ctx.ok(&["hash", "--json", &claude])).unwrap();
    assert_eq!(m["hash"], a.trim());
    let demo = ctx.ok(&["hash", "--pure", &format!("{root}/recipes/demo.toml")]);
    assert_eq!(demo.trim().len(), 64);
}

#[test]
fn smolvm_pack_failure_is_clear_and_leaves_nothing_behind() {
    let ctx = Ctx::new("smolpack");
    let text = common::base_recipe("smolpack").replace(
        "backend = \"docker\"",
        "backend = \"smolvm\"\nstart = \"pack\"",
    );
    let r = ctx.write_recipe("r.toml", &text);
    let hash = ctx.hash(&r);
    ctx.remember(&hash);
    let out = ctx.run(&["build", r.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pack create cannot succeed on this machine"
    );
    let err = stderr(&out);
    assert!(err.contains("smolvm pack create failed"), "{err}");
    assert!(
        err.contains("start = \"image\""),
        "the error says what to do: {err}"
    );
    assert!(!ctx.entry(&hash).exists());
    assert!(
        std::fs::read_dir(ctx.store.join("v1/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "leftovers in tmp/"
    );

    // The way out the error names works: a smolvm guest created from the image archive.
    let r2 = ctx.write_recipe(
        "r2.toml",
        &text.replace("start = \"pack\"", "start = \"image\""),
    );
    let h2 = ctx.build(&r2);
    let m = ctx.manifest(&h2);
    assert_eq!(m["guest"]["backend"], "smolvm");
    assert_eq!(m["guest"]["start"], "image");
    assert!(m["guest"].get("pack").is_none());
}

#[test]
fn gc_removes_unrooted_entries_leftovers_and_old_layouts_and_says_what_it_freed() {
    let ctx = Ctx::new("gc");
    let rooted = ctx.ok(&["build", "--root", "keepme", ctx.recipe().to_str().unwrap()]);
    let rooted = rooted.lines().last().unwrap().to_string();
    ctx.remember(&rooted);
    let loose = ctx.build(&ctx.write_recipe("b.toml", &common::base_recipe("gc-loose")));
    let kept_by_flag = ctx.build(&ctx.write_recipe("c.toml", &common::base_recipe("gc-flag")));
    std::fs::create_dir_all(ctx.store.join(format!("v1/tmp/{loose}.abc123/guest"))).unwrap();
    std::fs::write(
        ctx.store
            .join(format!("v1/tmp/{loose}.abc123/guest/image.tar")),
        vec![0u8; 4096],
    )
    .unwrap();
    std::fs::create_dir_all(ctx.store.join("v0/builds")).unwrap();

    let dry = ctx.ok(&["gc", "--dry-run", "--keep", &kept_by_flag[..12]]);
    assert!(
        dry.contains(&format!("would remove entry {loose}")),
        "{dry}"
    );
    assert!(ctx.entry(&loose).exists(), "--dry-run removes nothing");

    let out = ctx.run(&["gc", "--json", "--keep", &kept_by_flag[..12]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["removed_entries"], serde_json::json!([loose]));
    assert_eq!(r["removed_temporary"].as_array().unwrap().len(), 1);
    assert_eq!(r["removed_layouts"], serde_json::json!(["v0"]));
    assert!(r["freed_bytes"].as_u64().unwrap() > 4096);
    assert!(ctx.entry(&rooted).exists() && ctx.entry(&kept_by_flag).exists());
    assert!(!ctx.entry(&loose).exists() && !ctx.store.join("v0").exists());
    let text = ctx.ok(&["gc"]);
    assert!(text.contains("removed 1 entries"), "{text}"); // kept_by_flag has no root
    assert!(ctx.entry(&rooted).exists());
}

#[test]
fn diff_says_which_fields_and_inputs_made_a_new_hash() {
    let ctx = Ctx::new("diff");
    let a = ctx.build(&ctx.recipe());
    std::fs::write(ctx.recipes.join("prompt.md"), "be bold\n").unwrap();
    let text = common::base_recipe("diff").replace("EDITOR = \"vi\"", "EDITOR = \"ed\"");
    let b = ctx.build(&ctx.write_recipe("r.toml", &text));
    assert_ne!(a, b);
    let out = ctx.ok(&["diff", &a[..8], &b[..8]]);
    assert!(
        out.contains("field  guest.env.EDITOR: \"vi\" → \"ed\""),
        "{out}"
    );
    assert!(out.contains("input  prompt.md: content changed"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let same = ctx.ok(&["diff", &a, &a]);
    assert!(same.contains("no differences"));
}

#[test]
fn ls_and_show_list_entries_for_people_and_scripts() {
    let ctx = Ctx::new("listing");
    let h = ctx.build(&ctx.recipe());
    let ls = ctx.ok(&["ls"]);
    assert!(ls.starts_with(&h) && ls.contains("listing"), "{ls}");
    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["ls", "--json"])).unwrap();
    assert_eq!(v[0]["hash"], h.as_str());
    let show: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["show", "--json", &h[..6]])).unwrap();
    assert_eq!(show["hash"], h.as_str());
    assert_eq!(show["guest"]["user"], "node");
    let text = ctx.ok(&["show", &h[..6]]);
    assert!(
        text.contains("ca/pipelock.key") && text.contains("machine-local"),
        "{text}"
    );
}

#[test]
fn a_new_builder_version_gives_a_new_hash() {
    let ctx = Ctx::new("builder");
    let recipe = bottle::recipe::Recipe::load(&ctx.recipe()).unwrap();
    let planned = bottle::plan::plan(&recipe).unwrap();
    let (now, _) = bottle::hash::key(&planned).unwrap();
    let (next, _) = bottle::hash::key_with_builder(&planned, "bottle-build/999").unwrap();
    assert_eq!(
        now.hash().to_string(),
        ctx.hash(&ctx.recipe()),
        "the CLI hashes with the current builder"
    );
    assert_ne!(now.hash(), next.hash());
    assert_eq!(now.plan, next.plan);
    assert_eq!(now.inputs, next.inputs);
}

#[test]
fn gc_keeps_the_entry_of_a_run_until_the_run_is_down() {
    let ctx = Ctx::new("gc-run");
    let h = ctx.build(&ctx.recipe());
    let run = ctx.store.join("v1/runs/0123456789");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("record.json"), format!("{{\"hash\": \"{h}\"}}")).unwrap();
    let out = ctx.ok(&["gc"]);
    assert!(out.contains("removed 0 entries"), "{out}");
    assert!(ctx.entry(&h).exists());
    std::fs::remove_dir_all(&run).unwrap();
    ctx.ok(&["gc"]);
    assert!(!ctx.entry(&h).exists());
}
