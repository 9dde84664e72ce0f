//! The command line a person meets: recipe names and files as targets, the newest build of a
//! name kept by gc (with the older entry's engine images removed), `bottle rm`, `ls` columns
//! and JSON, diff's exit codes, `exec` without `--`, Ctrl-C during a build, completions,
//! `--version` and colour — the real binary against the real Docker Engine.

use crate::support;

use std::time::{Duration, Instant};

use bottle::hash::ComponentKind;
use support::*;

/// Whether the engine holds an image (by id or reference).
fn image_exists(reference: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .expect("docker CLI")
        .status
        .success()
}

/// The test's guest with `content` in its `test-id` file (a new guest component).
fn new_guest(ctx: &TestContext, content: &str) {
    std::fs::write(ctx.recipes.join("guest/test-id"), content).unwrap();
}

/// The build-cache image the store recorded for an entry's guest build.
fn build_parent(ctx: &TestContext, hash: &str) -> String {
    let id = ctx.manifest(hash).components.get(ComponentKind::Guest);
    ctx.store()
        .build_parent(&id)
        .unwrap_or_else(|| panic!("no build cache recorded for {id}"))
}

#[test]
fn run_by_name_runs_the_newest_entry_and_gc_keeps_it_but_removes_the_older_images() {
    let ctx = TestContext::new("names-run");
    let marker = |n: u32| format!("names-run {} build {n}\n", std::process::id());
    let read_marker = ["--", "cat", ctx.test_id_path.as_str()];
    let run_name = |want: &str| {
        let mut args = vec!["run", "names-run"];
        args.extend(read_marker);
        let out = ctx.output(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), want, "{}", stderr(&out));
    };

    new_guest(&ctx, &marker(1));
    let older = ctx.build(&ctx.recipe());
    run_name(&marker(1));
    let older_image = ctx.entry(&older).guest.image().id.clone();
    let older_cache = build_parent(&ctx, &older);
    assert!(image_exists(&older_image), "the run loaded {older_image}");
    assert!(image_exists(&older_cache), "the build left {older_cache}");

    new_guest(&ctx, &marker(2));
    let newer = ctx.build(&ctx.recipe());
    assert_ne!(older, newer);
    // The name is the newest build of it, from any folder.
    run_name(&marker(2));
    let newer_image = ctx.entry(&newer).guest.image().id.clone();
    assert!(image_exists(&newer_image));

    let out = ctx.output(&["gc", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["removed_entries"], serde_json::json!([older]), "{r}");
    assert_eq!(r["kept"], serde_json::json!([newer]), "{r}");
    let removed: Vec<&str> = r["removed_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(removed.contains(&older_image.as_str()), "{r}");
    assert!(removed.contains(&older_cache.as_str()), "{r}");
    assert!(!image_exists(&older_image), "gc left the older guest image");
    assert!(
        !image_exists(&older_cache),
        "gc left the older build's cache"
    );
    assert!(
        image_exists(&newer_image),
        "gc removed the newest build's image"
    );
    assert!(ctx.output(&["verify", &newer]).status.success());
    // Nothing more to remove: what a person just built stays.
    let r: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(r["removed_entries"], serde_json::json!([]), "{r}");
    run_name(&marker(2));
    ctx.assert_nothing_left();
}

#[test]
fn a_missing_recipe_file_is_named_and_nothing_is_made() {
    let ctx = TestContext::with_build_recipe("names-missing");
    for path in ["nope/r.toml", "absent.toml", "./absent"] {
        for args in [
            vec!["run", path],
            vec!["show", path],
            vec!["rm", path],
            vec!["diff", path, "abc"],
            vec!["build", path],
        ] {
            let out = ctx.output(&args);
            let err = stderr(&out);
            if args[0] == "build" {
                // build takes a file only; its error names the file too.
                assert!(
                    err.contains(path.trim_start_matches("./")),
                    "{args:?}: {err}"
                );
                continue;
            }
            let code = if args[0] == "diff" { 2 } else { 1 };
            assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
            assert!(
                err.contains(&format!("no such recipe file: {path}")),
                "{args:?}: {err}"
            );
        }
    }
    // A bare word that is no name and no hash says so, naming the way out.
    let out = ctx.output(&["run", "no-such-name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no entry named \"no-such-name\""),
        "{}",
        stderr(&out)
    );
    assert!(!ctx.store.exists(), "a store appeared");
}

#[test]
fn rm_removes_a_name_or_recipe_at_once_and_refuses_an_entry_a_run_uses() {
    let ctx = TestContext::with_build_recipe("names-rm");
    let store = ctx.store();
    let hash = ctx.build(&ctx.recipe());
    let cache = build_parent(&ctx, &hash);
    assert!(image_exists(&cache));
    let dirs: Vec<_> = ComponentKind::ALL
        .iter()
        .map(|k| ctx.component_dir(&hash, *k))
        .collect();

    // A run's pin keeps it: the refusal names the run, and nothing changes.
    store.pin("0123456789", &build_hash(&hash)).unwrap();
    let before = ctx.snapshot();
    let out = ctx.output(&["rm", "names-rm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by run 0123456789"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ctx.snapshot(), before, "a refused rm changed the store");
    store.unpin("0123456789").unwrap();

    // By name: the entry, its newest-of-name record, its components and their images go.
    let out = ctx.ok(&["rm", "names-rm"]);
    assert!(
        out.contains(&format!("removed entry {hash} (names-rm)")),
        "{out}"
    );
    assert!(out.contains("removed root latest:names-rm"), "{out}");
    assert_eq!(out.matches("removed component").count(), 3, "{out}");
    assert!(!ctx.entry_file(&hash).exists());
    assert!(!store.latest_dir().join("names-rm").exists());
    for d in &dirs {
        assert!(!d.exists(), "{} stayed", d.display());
    }
    assert!(!image_exists(&cache), "rm left the build cache {cache}");
    let ls: serde_json::Value = serde_json::from_str(&ctx.ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls, serde_json::json!([]));
    let out = ctx.output(&["show", "names-rm"]);
    assert!(stderr(&out).contains("no entry named"), "{}", stderr(&out));

    // By recipe file: the entry it hashes to.
    let again = ctx.build(&ctx.recipe());
    assert_eq!(again, hash);
    let out = ctx.ok(&["rm", ctx.recipe().to_str().unwrap()]);
    assert!(out.contains(&format!("removed entry {hash}")), "{out}");
    assert!(store.hashes().unwrap().is_empty());
    // A recipe file whose entry is not built is not built by rm.
    let out = ctx.output(&["rm", ctx.recipe().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bottle build"), "{}", stderr(&out));
    assert!(store.hashes().unwrap().is_empty());
}

#[test]
fn ls_has_a_header_and_columns_and_json_has_full_values() {
    let ctx = TestContext::with_build_recipe("names-ls");
    let a = ctx.build(&ctx.recipe());
    let other = base_recipe("names-ls-b").replace("EDITOR = \"vi\"", "EDITOR = \"ed\"");
    let b_recipe = ctx.write_recipe("b.toml", &other);
    let b = ctx
        .ok(&[
            "build",
            "-q",
            "--root",
            "pinned-b",
            b_recipe.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    // An older entry of names-ls-b, replaced as the newest of its name: kept by nothing.
    let older = ctx.build(&ctx.write_recipe("b0.toml", &base_recipe("names-ls-b")));
    // b again (found in the store): the newest of its name once more.
    assert_eq!(ctx.build(&b_recipe), b);

    let text = ctx.ok(&["ls"]);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["HASH", "NAME", "AGE", "SIZE", "ROOTED"], "{text}");
    assert_eq!(rows.len(), 4, "{text}");
    let row = |h: &str| {
        rows.iter()
            .find(|r| r[0] == &h[..12])
            .unwrap_or_else(|| panic!("no row for {h}:\n{text}"))
    };
    for (h, name, rooted) in [
        (&a, "names-ls", "latest"),
        (&b, "names-ls-b", "latest,root:pinned-b"),
        (&older, "names-ls-b", "-"),
    ] {
        let r = row(h);
        assert_eq!(r[1], name, "{text}");
        let age = r[2];
        assert!(
            age.len() >= 2 && age[..age.len() - 1].bytes().all(|c| c.is_ascii_digit()),
            "age {age:?}: {text}"
        );
        assert!("smhdw".contains(&age[age.len() - 1..]), "{text}");
        assert!(r[4].ends_with('B'), "size unit: {text}");
        assert_eq!(r[5], rooted, "{text}");
    }
    // No line wraps a full hash any more.
    assert!(text.lines().all(|l| l.len() < 100), "{text}");

    let v: serde_json::Value = serde_json::from_str(&ctx.ok(&["ls", "--json"])).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for e in v.as_array().unwrap() {
        let h = e["hash"].as_str().unwrap();
        assert_eq!(h.len(), 64, "{e}");
        assert_eq!(e["size"].as_u64().unwrap(), ctx.entry(h).size(), "{e}");
        let created = e["created"].as_u64().unwrap();
        assert!(created <= now && created + 3600 > now, "{e}");
        assert!(e["age_seconds"].as_u64().unwrap() < 3600, "{e}");
        let roots = e["roots"].clone();
        let want = if h == b {
            serde_json::json!(["latest", "root:pinned-b"])
        } else if h == a {
            serde_json::json!(["latest"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(roots, want, "{e}");
        assert_eq!(e["pins"], serde_json::json!([]), "{e}");
    }
    // Without the record of the newest build (an entry pulled, or built by an older
    // bottle), a name is its entry published last.
    std::fs::remove_file(ctx.store().latest_dir().join("names-ls-b")).unwrap();
    assert_eq!(ctx.show("names-ls-b")["hash"], older.as_str());
    assert_eq!(ctx.show("names-ls")["hash"], a.as_str());
    // gc removes exactly the entry nothing keeps.
    let r: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(r["removed_entries"], serde_json::json!([older]), "{r}");
}

#[test]
fn diff_exits_0_when_the_same_1_when_different_2_on_an_error() {
    let ctx = TestContext::with_build_recipe("names-diff");
    let first = ctx.build(&ctx.recipe());
    let changed = base_recipe("names-diff").replace("EDITOR = \"vi\"", "EDITOR = \"ed\"");
    let second_recipe = ctx.write_recipe("second.toml", &changed);
    let second = ctx.build(&second_recipe);
    let code = |a: &str, b: &str| {
        let out = ctx.output(&["diff", a, b]);
        (out.status.code(), stdout(&out), stderr(&out))
    };
    // The name is the newest entry (second); a recipe file is the entry it hashes to.
    let (c, out, err) = code("names-diff", &first);
    assert_eq!(c, Some(1), "{out}{err}");
    assert!(
        out.contains("field  guest.env.EDITOR: \"ed\" → \"vi\""),
        "{out}"
    );
    let (c, out, err) = code(
        ctx.recipe().to_str().unwrap(),
        second_recipe.to_str().unwrap(),
    );
    assert_eq!(c, Some(1), "{out}{err}");
    let (c, out, err) = code("names-diff", &second[..10]);
    assert_eq!(c, Some(0), "{out}{err}");
    assert!(out.contains("no differences"), "{out}");
    let (c, _, err) = code(&first, "0000000000000000");
    assert_eq!(c, Some(2), "{err}");
    // A name wins over the hash prefix it spells; more digits mean the hash.
    let spelled = &first[..6];
    let named = ctx.build(&ctx.write_recipe("spelled.toml", &base_recipe(spelled)));
    assert_eq!(ctx.show(spelled)["hash"], named.as_str());
    assert_eq!(ctx.show(&first[..8])["hash"], first.as_str());
    let out = ctx.output(&["diff", "--json", &first, &second]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["same"], false);
}

#[test]
fn exec_takes_its_command_without_a_double_dash() {
    let ctx = TestContext::new("names-exec");
    let hash = ctx.build(&ctx.recipe());
    let run = ctx.spawn(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "while [ ! -f /tmp/done ]; do sleep 0.1; done",
    ]);
    let (run_id, _) = ctx.wait_live();
    // The command's own flags (-n) are the command's, not bottle's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let plain = loop {
        let out = ctx.output(&["exec", &run_id, "echo", "-n", "hello", "--", "x"]);
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(plain, "hello -- x");
    let dashed = ctx.ok(&["exec", &run_id, "--", "echo", "-n", "hello"]);
    assert_eq!(dashed, "hello");
    let out = ctx.output(&["exec", &run_id, "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    ctx.ok(&["exec", &run_id, "touch", "/tmp/done"]);
    let (code, _, err) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    ctx.assert_nothing_left();
}

#[test]
fn ctrl_c_during_a_build_exits_130_stops_the_engine_build_and_stores_nothing() {
    let ctx = TestContext::with_build_recipe("names-sigint");
    let mark = unique("sigint-mark");
    let mut dockerfile = ctx.dockerfile(false);
    dockerfile.push_str(&format!("RUN sleep 97 && echo {mark}\n"));
    std::fs::write(ctx.recipes.join("guest/Dockerfile"), dockerfile).unwrap();
    let builder_containers = || {
        lines(&docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.Command}}",
        ]))
        .into_iter()
        .filter(|c| c.contains(&mark))
        .count()
    };
    let _building = ctx.building();
    let mut build = Spawned::start(ctx.cmd(), &["build", ctx.recipe().to_str().unwrap()]);
    // The context is sent: the engine is building.
    build.wait_for_stderr("build context sent", Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(120);
    while builder_containers() == 0 {
        assert!(
            Instant::now() < deadline,
            "the engine never ran the sleep step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    build.signal(libc::SIGINT);
    let (code, out, err) = build.finish(Duration::from_secs(60));
    assert_eq!(code, Some(130), "{err}");
    assert!(out.is_empty(), "a hash was printed: {out}");
    assert!(err.contains("interrupted; nothing was added"), "{err}");
    assert!(ctx.store().hashes().unwrap().is_empty());
    // The engine stops the build when its request closes, and removes the step's container
    // (long before the step's 97 s sleep would end).
    let deadline = Instant::now() + Duration::from_secs(60);
    while builder_containers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the engine's build went on after the interrupt"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn completions_version_and_no_colour_on_a_pipe() {
    let ctx = TestContext::with_build_recipe("names-term");
    let bash = ctx.ok(&["completions", "bash"]);
    assert!(bash.contains("complete -F _bottle"), "{bash}");
    let script = ctx.dir.path().join("bottle.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p bottle", script.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("_bottle"), "{}", stdout(&out));
    assert!(
        bash.contains("completions") && bash.contains("rm"),
        "subcommands"
    );
    assert!(
        ctx.ok(&["completions", "zsh"])
            .starts_with("#compdef bottle")
    );
    assert!(
        ctx.ok(&["completions", "fish"])
            .contains("complete -c bottle")
    );

    // --version names the commit this binary was built from.
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .unwrap();
    let head = stdout(&head).trim().to_string();
    assert_eq!(head.len(), 12, "the crate is a git checkout");
    let version = ctx.ok(&["--version"]);
    assert!(
        version.starts_with(&format!("bottle {} ({head}", env!("CARGO_PKG_VERSION"))),
        "{version} does not name {head}"
    );

    // A log line on a pipe (gc with no engine to reach warns): no ANSI escapes, -v too.
    for verbose in [&[][..], &["-v"][..], &["-vv"][..]] {
        let mut cmd = ctx.cmd();
        cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        cmd.args(verbose);
        let out = ctx.output_of(cmd, &["gc"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("engine images not removed"), "{err}");
        assert!(!err.contains('\x1b'), "ANSI escapes on a pipe: {err:?}");
    }
}
