//! The build phase end to end: the real `bottle` binary against the real Docker Engine.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use bottle::hash::{ComponentId, ComponentKind};
use bottle::manifest::{Manifest, MountSource, RECORD_FILE};
use support::{TestContext, base_recipe, build_hash, paths, stderr, stdout};

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
fn eight_concurrent_builds_of_one_recipe_build_once() {
    let ctx = TestContext::with_build_recipe("concurrent");
    let r = ctx.recipe();
    let outs: Vec<_> = {
        let _building = ctx.building();
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
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    };
    let mut hashes = BTreeSet::new();
    let mut built = 0;
    for out in outs {
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        hashes.insert(v["hash"].as_str().unwrap().to_string());
        if v["cached"] == false {
            built += 1;
            // The one that built made every component; the others found them all.
            for c in v["components"].as_array().unwrap() {
                assert_eq!(c["cached"], false, "{v}");
            }
        }
    }
    assert_eq!(hashes.len(), 1, "all eight print the same hash");
    assert_eq!(
        built, 1,
        "exactly one process built; the others found its entry"
    );
    assert!(ctx.temporary().is_empty(), "{:?}", ctx.temporary());
    for kind in ComponentKind::ALL {
        assert_eq!(ctx.store().component_hashes(kind).unwrap().len(), 1);
    }
    let h = hashes.into_iter().next().unwrap();
    let v = ctx.output(&["verify", &h]);
    assert!(v.status.success(), "{}", stdout(&v));
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_partial_entry_or_component() {
    let ctx = TestContext::with_build_recipe("sigkill");
    let r = ctx.recipe();
    // How long one build takes here once the engine has its layers cached (as for every
    // trial below), to spread the kills over it.
    // `bottle rm`: a build is the newest of its name, which gc keeps.
    let hash = ctx.build(&r);
    ctx.ok(&["rm", &hash]);
    let t0 = std::time::Instant::now();
    assert_eq!(ctx.build(&r), hash);
    let full = t0.elapsed();
    ctx.ok(&["rm", &hash]);
    assert!(!ctx.entry_file(&hash).exists());
    let store = ctx.store();

    let mut rng = 0x2545f4914f6cdd1du64;
    let mut killed_mid_build = 0;
    {
        let _building = ctx.building();
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
            ctx.scan_store();
            // Whatever moment it died at, a component is absent or whole (its record written
            // last), and an entry is absent or whole with every component it names.
            for kind in ComponentKind::ALL {
                for h in store.component_hashes(kind).unwrap() {
                    let id = ComponentId { kind, hash: h };
                    assert!(
                        store.has_component(&id),
                        "trial {trial}: partial component {id}"
                    );
                }
            }
            for h in store.hashes().unwrap() {
                let damage = store.verify(&h).unwrap();
                assert!(damage.is_empty(), "trial {trial}: {h}: {damage:?}");
            }
            if ctx.entry_file(&hash).exists() {
                ctx.ok(&["rm", &hash]);
            }
        }
    }
    assert!(
        killed_mid_build >= 5,
        "only {killed_mid_build} of 24 kills landed during a build"
    );
    // The next build succeeds and verifies; gc removes what killed builds left in tmp/, and
    // nothing of the entry.
    assert_eq!(ctx.build(&r), hash);
    assert!(ctx.output(&["verify", &hash]).status.success());
    let report: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["gc", "--json", "--keep", &hash])).unwrap();
    assert_eq!(report["removed_entries"], serde_json::json!([]));
    assert_eq!(report["removed_components"], serde_json::json!([]));
    assert!(
        ctx.temporary().is_empty(),
        "leftovers of killed builds remain: {:?}",
        ctx.temporary()
    );
    assert!(ctx.output(&["verify", &hash]).status.success());
}

#[test]
fn verify_names_each_flipped_truncated_or_deleted_file() {
    let ctx = TestContext::with_build_recipe("tamper");
    let hash = ctx.build(&ctx.recipe());
    let entry = ctx.entry(&hash);
    // (what verify calls it, the file)
    let mut files = vec![("manifest".to_string(), ctx.entry_file(&hash))];
    for c in entry.components() {
        files.push((format!("{}/{RECORD_FILE}", c.id.kind), c.path(RECORD_FILE)));
        for a in &c.record.files {
            files.push((format!("{}/{}", c.id.kind, a.path), c.path(&a.path)));
        }
    }
    let labels: Vec<&str> = files.iter().map(|(l, _)| l.as_str()).collect();
    for want in [
        format!("guest/{}", bottle::builder::guest::IMAGE_ARCHIVE),
        format!("bundle/{}", bottle::builder::bundle::IMAGE_ARCHIVE),
        format!("config/{}", paths::GUEST_SPEC),
        format!("config/{}", paths::BUNDLE_SPEC),
        format!("config/{}", bottle::daemons::Daemon::Pipelock.config_file()),
        format!("config/{}", paths::PROMPT),
        format!("config/{}/one/SKILL.md", paths::SKILLS),
    ] {
        assert!(labels.contains(&want.as_str()), "{want} not in {labels:?}");
    }

    for (label, path) in &files {
        let pristine = std::fs::read(path).unwrap();
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        // A record's middle byte may fall in a file's digest, which verify then reports
        // against that file: in a record, flip its format instead.
        let flip_at = if label.ends_with(RECORD_FILE) {
            let at = pristine
                .windows(9)
                .position(|w| w == b"\"format\":")
                .unwrap();
            at + pristine[at..].iter().position(u8::is_ascii_digit).unwrap()
        } else {
            pristine.len() / 2
        };
        for how in ["flip", "truncate", "delete"] {
            match how {
                "flip" => {
                    let mut b = pristine.clone();
                    b[flip_at] ^= 0x01;
                    std::fs::write(path, b).unwrap();
                }
                "truncate" => std::fs::write(path, &pristine[..pristine.len() / 2]).unwrap(),
                _ => std::fs::remove_file(path).unwrap(),
            }
            let out = ctx.output(&["verify", &hash[..10]]);
            if label == "manifest" && how == "delete" {
                // Without its manifest, there is no entry of that name.
                assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
                assert!(
                    stderr(&out).contains("no store entry matches"),
                    "{}",
                    stderr(&out)
                );
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(3),
                    "{how} {label}: {}",
                    stdout(&out)
                );
                let text = stdout(&out);
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("damaged  {hash}  {label}: "))),
                    "{how} {label} not named:\n{text}"
                );
            }
            std::fs::write(path, &pristine).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                ctx.output(&["verify", &hash]).status.success(),
                "restored {label}"
            );
        }
    }
    // A whole component gone.
    let config = ctx.component_dir(&hash, ComponentKind::Config);
    let aside = ctx.dir.path().join("config-aside");
    std::fs::rename(&config, &aside).unwrap();
    let out = ctx.output(&["verify", &hash]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains(&format!("config/{RECORD_FILE}: component"))
            && stdout(&out).contains("is missing"),
        "{}",
        stdout(&out)
    );
    std::fs::rename(&aside, &config).unwrap();
    // A file slipped into a component is named too.
    std::fs::write(config.join("extra.json"), "{}").unwrap();
    let out = ctx.output(&["verify", "--json", &hash]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["damage"][0]["path"], "config/extra.json", "{v}");
    assert_eq!(v[0]["ok"], false);
}

#[test]
fn no_ca_key_or_token_value_is_in_the_store() {
    let ctx = TestContext::with_build_recipe("secrets");
    let secret = format!("sk-test-{}-{}", std::process::id(), "Zq7Xv93LmT");
    let text = format!(
        "{}\n[[egress.routes]]\nhost = \"api.example.org\"\ntoken_env = \"BOTTLE_TEST_TOKEN\"\n\n[supervise]\nenabled = true\n\n[[git-gate.upstreams]]\nname = \"origin\"\nurl = \"ssh://git@example.org/x.git\"\nidentity = \"~/.ssh/id_test\"\n",
        base_recipe("secrets")
    );
    let r = ctx.write_recipe("r.toml", &text);
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_TEST_TOKEN", &secret);
    let out = ctx.output_of(cmd, &["-v", "build", r.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).lines().last().unwrap().to_string();
    assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret));
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_TEST_TOKEN", &secret);
    let show = ctx.output_of(cmd, &["show", "--json", &hash]);
    assert!(!stdout(&show).contains(&secret));
    // Neither the token's value nor any private key is in a file of the store: CAs are
    // minted per run, on the machine that runs.
    let a_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert!(
        holds_pem_key(a_key.as_bytes()),
        "the check finds a real key"
    );
    for (path, bytes) in ctx.snapshot() {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token value is in store file {path}"
        );
        assert!(
            !holds_pem_key(&bytes),
            "a private key is in store file {path}"
        );
        assert!(!path.ends_with(".key"), "store file {path}");
    }
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let bundle = &show["bundle"]["spec"];
    assert_eq!(bundle["secrets"], serde_json::json!(["BOTTLE_TEST_TOKEN"]));
    let daemons: Vec<&str> = bundle["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(daemons, ["pipelock", "git-gate", "supervise"]);
    // The bundle mounts the run's CA from the run's folder, and no key from the config.
    let spec = ctx.entry(&hash).bundle_spec().clone();
    let ca: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Ca(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    // One CA per run, pipelock's: egress is a stage of pipelock.
    use bottle::config::ca_files::{PIPELOCK_CERT, PIPELOCK_KEY};
    for f in [PIPELOCK_CERT, PIPELOCK_KEY] {
        assert!(ca.iter().any(|c| c == f), "{f} not mounted: {ca:?}");
    }
    let env = &show["guest"]["spec"]["env"];
    assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "egress-placeholder");
    for k in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
        assert_eq!(env[k], show["guest"]["spec"]["ca_guest_path"], "{k}");
    }
    assert!(
        env["HTTPS_PROXY"]
            .as_str()
            .unwrap()
            .contains("{{bundle_ip}}")
    );

    // Without routes, the bundle takes no token.
    let plain = ctx.build(&ctx.write_recipe("p.toml", &base_recipe("secrets-plain")));
    let spec = ctx.entry(&plain).bundle_spec().clone();
    assert!(spec.secrets.is_empty());
    let ca: Vec<&MountSource> = spec
        .mounts
        .iter()
        .map(|m| &m.source)
        .filter(|s| matches!(s, MountSource::Ca(_)))
        .collect();
    assert_eq!(
        ca,
        [
            &MountSource::Ca(PIPELOCK_CERT.into()),
            &MountSource::Ca(PIPELOCK_KEY.into())
        ]
    );
}

#[test]
fn bad_input_gives_a_located_error_and_leaves_the_store_unchanged() {
    let ctx = TestContext::with_build_recipe("bad");
    let good = ctx.build(&ctx.recipe());
    let before = ctx.snapshot();
    let base = base_recipe("bad");
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
            let out = ctx.output(&[cmd, r.to_str().unwrap()]);
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

    // Names and hash prefixes: neither a name nor hex, unknown, ambiguous.
    let out = ctx.output(&["show", "xyz"]);
    assert!(
        stderr(&out).contains("no entry named \"xyz\""),
        "{}",
        stderr(&out)
    );
    let other = if good.starts_with('0') { "1" } else { "0" };
    let out = ctx.output(&["show", other]);
    assert!(
        stderr(&out).contains("no store entry matches"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ctx.snapshot(), before, "the store changed");

    let fake = |c: char| ctx.entry_file(&format!("ab{}", c.to_string().repeat(62)));
    std::fs::write(fake('1'), "{}").unwrap();
    std::fs::write(fake('2'), "{}").unwrap();
    let out = ctx.output(&["show", "ab"]);
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
    std::fs::remove_file(fake('1')).unwrap();
    std::fs::remove_file(fake('2')).unwrap();
    assert_eq!(ctx.snapshot(), before, "the store changed");
}

#[test]
fn a_recipe_error_never_creates_a_store() {
    let ctx = TestContext::with_build_recipe("nostore");
    let r = ctx.write_recipe("r.toml", "name = \"x\"\n[guest\n");
    let out = ctx.output(&["build", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("r.toml:2:"), "{}", stderr(&out));
    assert!(!ctx.store.exists());
}

#[test]
fn unpinned_from_is_a_warning_and_refused_under_pure() {
    let ctx = TestContext::with_build_recipe("impure");
    std::fs::write(
        ctx.recipes.join("guest/Dockerfile"),
        "FROM debian:bookworm\nRUN true\n",
    )
    .unwrap();
    let r = ctx.recipe();
    let out = ctx.output(&["hash", r.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("guest/Dockerfile:1: FROM debian:bookworm names a tag"),
        "{}",
        stderr(&out)
    );
    let out = ctx.output(&["hash", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pin it as debian@sha256:DIGEST"),
        "{}",
        stderr(&out)
    );
    let out = ctx.output(&["build", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !ctx.store.exists(),
        "a refused build leaves no store behind"
    );
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
fn smolvm_pack_failure_is_clear_and_leaves_nothing_behind() {
    let ctx = TestContext::with_build_recipe("smolpack");
    let text = base_recipe("smolpack").replace(
        "backend = \"docker\"",
        "backend = \"smolvm\"\nstart = \"pack\"",
    );
    let r = ctx.write_recipe("r.toml", &text);
    let keys = ctx.keys(&r);
    let hash = keys["hash"].as_str().unwrap().to_string();
    let out = ctx.output(&["build", r.to_str().unwrap()]);
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
    assert!(!ctx.entry_file(&hash).exists());
    let guest =
        bottle::hash::ComponentHash::parse(keys["components"]["guest"].as_str().unwrap()).unwrap();
    assert!(
        !ctx.store().has_component(&ComponentId {
            kind: ComponentKind::Guest,
            hash: guest
        }),
        "no guest component without its pack"
    );
    assert!(
        ctx.temporary().is_empty(),
        "leftovers in tmp/: {:?}",
        ctx.temporary()
    );

    // The way out the error names works: a smolvm guest created from the image archive.
    let r2 = ctx.write_recipe(
        "r2.toml",
        &text.replace("start = \"pack\"", "start = \"image\""),
    );
    let h2 = ctx.build(&r2);
    let show = ctx.show(&h2);
    assert_eq!(show["guest"]["backend"], "smolvm");
    assert_eq!(show["guest"]["start"], "image");
    assert!(show["guest"]["pack"].is_null(), "{show}");
}

#[test]
fn gc_removes_what_no_root_keeps_leftovers_and_old_layouts_and_says_what_it_freed() {
    let ctx = TestContext::with_build_recipe("gc");
    let out = ctx.ok(&["build", "--root", "keepme", ctx.recipe().to_str().unwrap()]);
    let rooted = out.lines().last().unwrap().to_string();
    // The loose entry has a config of its own; it shares the guest and bundle.
    let loose_text = base_recipe("gc-loose").replace("EDITOR = \"vi\"", "EDITOR = \"ed\"");
    let loose = ctx.build(&ctx.write_recipe("b.toml", &loose_text));
    let kept_by_flag = ctx.build(&ctx.write_recipe("c.toml", &base_recipe("gc-flag")));
    // Each build is the newest of its name until another build of that name: newer builds
    // of both names leave the two older entries with no root (one config for the two).
    for name in ["gc-loose", "gc-flag"] {
        let newer = base_recipe(name).replace("EDITOR = \"vi\"", "EDITOR = \"nano\"");
        ctx.build(&ctx.write_recipe(&format!("{name}-newer.toml"), &newer));
    }
    let loose_config = ctx.manifest(&loose).components.config;
    assert_ne!(loose_config, ctx.manifest(&rooted).components.config);
    let tmp = ctx
        .store()
        .tmp()
        .join(format!("guest-{}.abc123", "e".repeat(64)));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("image.tar"), vec![0u8; 4096]).unwrap();
    // The previous layout, as an older bottle left it.
    std::fs::create_dir_all(ctx.store.join("v1/builds")).unwrap();

    let dry = ctx.ok(&["gc", "--dry-run", "--keep", &kept_by_flag[..12]]);
    assert!(
        dry.contains(&format!("would remove entry {loose}")),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("would remove component config/{loose_config}")),
        "{dry}"
    );
    assert!(ctx.entry_file(&loose).exists(), "--dry-run removes nothing");

    let out = ctx.output(&["gc", "--json", "--keep", &kept_by_flag[..12]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["removed_entries"], serde_json::json!([loose]));
    assert_eq!(
        r["removed_components"],
        serde_json::json!([format!("config/{loose_config}")])
    );
    assert_eq!(r["removed_temporary"].as_array().unwrap().len(), 1);
    assert_eq!(r["removed_layouts"], serde_json::json!(["v1"]));
    assert!(r["freed_bytes"].as_u64().unwrap() > 4096);
    assert!(ctx.entry_file(&rooted).exists() && ctx.entry_file(&kept_by_flag).exists());
    assert!(!ctx.entry_file(&loose).exists() && !ctx.store.join("v1").exists());
    for h in [&rooted, &kept_by_flag] {
        assert!(ctx.output(&["verify", h]).status.success());
    }
    let text = ctx.ok(&["gc"]);
    // kept_by_flag has no root; its components are the rooted entry's.
    assert!(text.contains("removed 1 entries, 0 components"), "{text}");
    assert!(ctx.entry_file(&rooted).exists());
    assert!(ctx.output(&["verify", &rooted]).status.success());
}

#[test]
fn diff_says_which_components_fields_and_inputs_made_a_new_hash() {
    let ctx = TestContext::with_build_recipe("diff");
    let a = ctx.build(&ctx.recipe());
    std::fs::write(ctx.recipes.join("prompt.md"), "be bold\n").unwrap();
    let text = base_recipe("diff").replace("EDITOR = \"vi\"", "EDITOR = \"ed\"");
    let b = ctx.build(&ctx.write_recipe("r.toml", &text));
    assert_ne!(a, b);
    let (ca, cb) = (
        ctx.manifest(&a).components.config.short(),
        ctx.manifest(&b).components.config.short(),
    );
    // As diff(1): exit 1 when the entries differ, 0 when they are the same.
    let differs = |x: &str, y: &str| {
        let out = ctx.output(&["diff", x, y]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stdout(&out)
    };
    let out = differs(&a[..8], &b[..8]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "guest   unchanged".to_string(),
            "bundle  unchanged".to_string(),
            format!("config  changed ({ca} → {cb})"),
            "  field  guest.env.EDITOR: \"vi\" → \"ed\"".to_string(),
            "  input  provision.prompt: content changed".to_string(),
        ],
        "{out}"
    );
    // A changed context file makes a new guest: the diff names the file.
    std::fs::write(ctx.recipes.join("guest/passwd"), "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\nextra:x:1001:1001::/:/bin/sh\n").unwrap();
    let c = ctx.build(&ctx.recipe());
    let out = differs(&b, &c);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("guest   changed ("), "{out}");
    assert_eq!(
        lines[1], "  input  context/passwd: content changed",
        "{out}"
    );
    assert_eq!(
        &lines[2..],
        ["bundle  unchanged", "config  unchanged"],
        "{out}"
    );
    let same = ctx.ok(&["diff", &a, &a]);
    assert!(same.contains("no differences"));
}

#[test]
fn ls_and_show_list_entries_and_components_for_people_and_scripts() {
    let ctx = TestContext::with_build_recipe("listing");
    let h = ctx.build(&ctx.recipe());
    let m = ctx.manifest(&h);
    let ls = ctx.ok(&["ls"]);
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["HASH", "NAME", "AGE", "SIZE", "ROOTED"], "{ls}");
    assert_eq!(rows[1][..2], [&h[..12], "listing"], "{ls}");
    assert_eq!(rows[1].last(), Some(&"latest"), "{ls}");
    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["ls", "--json"])).unwrap();
    for kind in ComponentKind::ALL {
        let hash = m.components.get(kind).hash.hex();
        assert_eq!(v[0]["components"][kind.name()], hash.as_str(), "{v}");
    }
    assert_eq!(v[0]["hash"], h.as_str());
    assert_eq!(v[0]["name"], "listing");
    assert_eq!(v[0]["backend"], "docker");
    assert_eq!(
        v[0]["components"]["config"],
        m.components.config.hex().as_str()
    );

    let show: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["show", "--json", &h[..6]])).unwrap();
    assert_eq!(show["hash"], h.as_str());
    assert_eq!(show["name"], "listing");
    assert_eq!(show["guest"]["spec"]["user"], "node");
    assert_eq!(show["guest"]["backend"], "docker");
    let entry = ctx.entry(&h);
    assert_eq!(show["guest"]["image_id"], entry.guest.image().id.as_str());
    assert_eq!(show["bundle"]["image_id"], entry.bundle.image().id.as_str());
    assert_eq!(show["size"].as_u64().unwrap(), entry.size());
    let comps = show["components"].as_array().unwrap();
    assert_eq!(comps.len(), 3);
    for (c, kind) in comps.iter().zip(ComponentKind::ALL) {
        assert_eq!(c["name"], kind.name());
        assert_eq!(c["hash"], m.components.get(kind).hash.hex().as_str());
        assert!(!c["files"].as_array().unwrap().is_empty());
    }
    let text = ctx.ok(&["show", &h[..6]]);
    for kind in ComponentKind::ALL {
        assert!(
            text.contains(&m.components.get(kind).hash.hex()),
            "{kind} not shown: {text}"
        );
    }
    assert!(
        text.contains("image.tar") && text.contains(paths::GUEST_SPEC),
        "{text}"
    );
    assert!(!text.contains(".key"), "no key is part of an entry: {text}");
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

#[test]
fn gc_keeps_an_entry_a_run_pins_until_the_pin_goes() {
    let ctx = TestContext::with_build_recipe("gc-run");
    let h = ctx.build(&ctx.recipe());
    let store = ctx.store();
    // A run pins the entry it uses (`pins/RUNID`): gc keeps it and its components.
    store.pin("0123456789", &build_hash(&h)).unwrap();
    let out = ctx.ok(&["gc"]);
    assert!(out.contains("removed 0 entries, 0 components"), "{out}");
    assert!(ctx.entry_file(&h).exists());
    assert!(ctx.output(&["verify", &h]).status.success());
    // A pin whose run left no record belongs to no run: `bottle down --all` removes it.
    ctx.ok(&["down", "--all"]);
    assert!(ctx.pins().is_empty(), "{:?}", ctx.pins());
    // The newest build of its name, it stays until `bottle rm` (or a newer build).
    let out = ctx.ok(&["gc"]);
    assert!(out.contains("removed 0 entries, 0 components"), "{out}");
    let out = ctx.ok(&["rm", &h]);
    assert!(out.contains(&format!("removed entry {h}")), "{out}");
    assert_eq!(out.matches("removed component").count(), 3, "{out}");
    assert!(!ctx.entry_file(&h).exists());
    // And pinning an entry the store lacks fails.
    assert!(store.pin("0123456789", &build_hash(&h)).is_err());
    assert!(ctx.pins().is_empty());
}

#[test]
fn a_recipe_that_is_not_utf8_is_refused_naming_the_file_and_byte() {
    let ctx = TestContext::with_build_recipe("latin1");
    // A Latin-1 é in a comment, and a lone continuation byte in a value further on.
    let base = base_recipe("latin1");
    let cases: Vec<(Vec<u8>, usize)> = vec![
        {
            let mut b = b"# recipe by Jos".to_vec();
            let at = b.len();
            b.push(0xe9);
            b.extend_from_slice(b"\n");
            b.extend_from_slice(base.as_bytes());
            (b, at)
        },
        {
            let text = base.replace("EDITOR = \"vi\"", "EDITOR = \"v@\"");
            let at = text.find("v@").unwrap() + 1;
            let mut b = text.into_bytes();
            b[at] = 0x80;
            (b, at)
        },
    ];
    for (bytes, at) in cases {
        let r = ctx.recipes.join("latin1.toml");
        std::fs::write(&r, &bytes).unwrap();
        for cmd in ["build", "hash"] {
            let out = ctx.output(&[cmd, r.to_str().unwrap()]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            assert!(
                err.contains(&format!(
                    "{}:{line}: not valid UTF-8 at byte {at}",
                    r.display()
                )),
                "{cmd}: expected the file, line {line} and byte {at}:\n{err}"
            );
            assert!(stdout(&out).is_empty());
        }
    }
    assert!(!ctx.store.exists(), "a refused recipe makes no store");
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let ctx = TestContext::with_build_recipe("pipe");
    let hash = ctx.build(&ctx.recipe());
    // Hundreds of entries (manifests naming the one entry's components, so they cost nothing
    // to make): `bottle ls` prints more than a pipe holds, so it writes after the reader is
    // gone.
    let store = ctx.store();
    let m = ctx.manifest(&hash);
    for i in 0..1200 {
        let mut other = m.clone();
        other.name = format!("pipe-{i}");
        std::fs::write(store.entry_file(&other.hash()), other.to_json()).unwrap();
    }
    let ls = ctx.ok(&["ls"]);
    assert_eq!(ls.lines().count(), 1202, "a header and 1201 rows");
    assert!(ls.len() > 1 << 16, "{} bytes fit in a pipe", ls.len());
    let recipe = ctx.recipe();
    for args in [
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["show", &hash],
        vec!["hash", recipe.to_str().unwrap()],
    ] {
        let mut child = ctx
            .cmd()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command writes (as `| true` does).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

/// Whether `bytes` hold a PEM private key: a `…PRIVATE KEY-----` line followed by a line of
/// base64. (The bundle image holds bottle's binary, whose key parsers name the marker itself.)
fn holds_pem_key(bytes: &[u8]) -> bool {
    const MARKER: &[u8] = b"PRIVATE KEY-----";
    bytes.windows(MARKER.len()).enumerate().any(|(i, w)| {
        w == MARKER && {
            let rest = &bytes[i + MARKER.len()..];
            let rest = rest.strip_prefix(b"\r").unwrap_or(rest);
            rest.strip_prefix(b"\n").is_some_and(|line| {
                line.len() >= 40
                    && line[..40]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            })
        }
    })
}
