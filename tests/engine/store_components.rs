//! Entries as closures of content-addressed components, each stored once and shared: what a
//! change to a recipe or to bottle rebuilds, what two recipes share, what an import from
//! another store folder accepts and refuses, which edits of an entry `verify` and `run`
//! refuse, and what `gc` keeps. The real binary against the real Docker Engine.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bottle::builder::guest::IMAGE_ARCHIVE;
use bottle::config::ca_files;
use bottle::digest::file_digest;
use bottle::hash::{ComponentKind, keys, keys_with_builder};
use bottle::manifest::{Manifest, RECORD_FILE, Record};
use bottle::store::Store;
use support::*;

fn planned(recipe: &Path) -> bottle::plan::Planned {
    bottle::plan::plan(&bottle::recipe::Recipe::load(recipe).unwrap()).unwrap()
}

fn component_hash(build: &serde_json::Value, kind: ComponentKind) -> (String, bool) {
    let c = build["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == kind.name())
        .unwrap_or_else(|| panic!("no {kind} in {build}"));
    (
        c["hash"].as_str().unwrap().to_string(),
        c["cached"].as_bool().unwrap(),
    )
}

#[test]
fn adding_an_allowlist_host_shares_guest_and_bundle_and_builds_no_image() {
    let ctx = TestContext::new("share-allow");
    let first = ctx.build_json(&ctx.recipe());
    let before = bytes_under(&ctx.store);
    let text = recipe("share-allow", "").replace(
        "allow = [\"example.com\"]",
        "allow = [\"example.com\", \"api.example.net\"]",
    );
    let r2 = ctx.write_recipe("more.toml", &text);
    // No engine to reach: the second build can only succeed if it builds and saves no image.
    let mut cmd = ctx.cmd();
    cmd.env("DOCKER_HOST", "unix:///nonexistent.sock");
    let out = ctx.output_of(cmd, &["build", "--json", r2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(second["hash"], first["hash"]);
    assert_eq!(second["cached"], false);
    for kind in [ComponentKind::Guest, ComponentKind::Bundle] {
        let (h, cached) = component_hash(&second, kind);
        assert_eq!(h, component_hash(&first, kind).0, "{kind} is shared");
        assert!(cached, "{kind} was found, not built");
    }
    let (config, cached) = component_hash(&second, ComponentKind::Config);
    assert_ne!(config, component_hash(&first, ComponentKind::Config).0);
    assert!(!cached);
    let grown = bytes_under(&ctx.store) - before;
    assert!(grown <= 64 << 10, "the store grew by {grown} bytes");
    // One guest and one bundle in the store, two configs; both entries whole.
    let store = ctx.store();
    assert_eq!(
        store.component_hashes(ComponentKind::Guest).unwrap().len(),
        1
    );
    assert_eq!(
        store.component_hashes(ComponentKind::Bundle).unwrap().len(),
        1
    );
    assert_eq!(
        store.component_hashes(ComponentKind::Config).unwrap().len(),
        2
    );
    let out = ctx.ok(&["verify"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{out}"
    );
    // `bottle diff` says it is the allowlist, in the config only.
    let out = ctx.output(&[
        "diff",
        first["hash"].as_str().unwrap(),
        second["hash"].as_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "entries that differ: exit 1");
    let out = stdout(&out);
    assert!(
        out.contains("guest   unchanged\nbundle  unchanged\nconfig  changed"),
        "{out}"
    );
    assert!(out.contains("field  pipelock.allow"), "{out}");
}

#[test]
fn a_build_of_changed_sources_reuses_the_guest_and_config_built_before() {
    let ctx = TestContext::new("share-builder");
    let hash = ctx.build(&ctx.recipe());
    let planned = planned(&ctx.recipe());
    let (now, _) = keys(&planned, None).unwrap();
    let (other, _) = keys_with_builder(&planned, "another-builder", None).unwrap();
    assert_eq!(Manifest::of(&now).hash().to_string(), hash);
    let (a, b) = (Manifest::of(&now), Manifest::of(&other));
    assert_eq!(a.name, b.name);
    assert_eq!(a.components.guest, b.components.guest);
    assert_eq!(a.components.config, b.components.config);
    assert_ne!(a.components.bundle, b.components.bundle);
    assert_ne!(a.hash(), b.hash());
    // The store holds what that build reuses; building it makes the bundle only.
    let store = ctx.store();
    assert!(store.has_component(&b.components.get(ComponentKind::Guest)));
    assert!(store.has_component(&b.components.get(ComponentKind::Config)));
    assert!(!store.has_component(&b.components.get(ComponentKind::Bundle)));
    let built = {
        let _building = ctx.building();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let progress = bottle::progress::Progress::new(true, true);
        let built = rt
            .block_on(bottle::builder::build(&store, &planned, &other, &progress))
            .unwrap();
        ctx.scan_store();
        built
    };
    assert_eq!(built.hash, b.hash());
    let how: Vec<(ComponentKind, bool)> = built
        .components
        .iter()
        .map(|c| (c.name, c.cached))
        .collect();
    assert_eq!(
        how,
        [
            (ComponentKind::Guest, true),
            (ComponentKind::Bundle, false),
            (ComponentKind::Config, true)
        ]
    );
    drop(built);
    let other_hash = b.hash().to_string();
    assert!(ctx.output(&["verify", &other_hash]).status.success());
    assert!(ctx.output(&["verify", &hash]).status.success());
    assert_eq!(
        store.component_hashes(ComponentKind::Guest).unwrap().len(),
        1
    );
    assert_eq!(
        store.component_hashes(ComponentKind::Config).unwrap().len(),
        1
    );
}

#[test]
fn recipes_with_one_dockerfile_and_context_share_one_guest() {
    let ctx = TestContext::new("share-guest");
    let a = ctx.write_recipe("a.toml", &recipe("share-guest-a", ""));
    let b = ctx.write_recipe(
        "b.toml",
        &recipe("share-guest-b", "")
            .replace("user = \"node\"", "user = \"root\"")
            .replace("EDITOR = \"vi\"", "EDITOR = \"ed\", PAGER = \"less\""),
    );
    let ja = ctx.build_json(&a);
    let jb = ctx.build_json(&b);
    assert_ne!(ja["hash"], jb["hash"]);
    let (ga, _) = component_hash(&ja, ComponentKind::Guest);
    let (gb, cached) = component_hash(&jb, ComponentKind::Guest);
    assert_eq!(ga, gb, "the guest does not depend on name, user or env");
    assert!(cached, "the second recipe's guest was found, not built");
    assert_ne!(
        component_hash(&ja, ComponentKind::Config).0,
        component_hash(&jb, ComponentKind::Config).0
    );
    let guests = ctx.store().component_hashes(ComponentKind::Guest).unwrap();
    assert_eq!(guests.len(), 1, "{guests:?}");
    assert_eq!(guests[0].hex(), ga);
    // Both run from the one guest, each as its own user with its own env.
    for (j, user, editor) in [(&ja, "node", "vi"), (&jb, "root", "ed")] {
        let out = ctx.ok(&[
            "run",
            j["hash"].as_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo $(id -un) $EDITOR",
        ]);
        assert_eq!(out.trim(), format!("{user} {editor}"));
    }
    ctx.assert_nothing_left();
}

#[test]
fn an_entry_imported_into_an_empty_store_verifies_and_runs_with_its_own_ca() {
    let src = TestContext::new("import-src");
    let dst = TestContext::new("import-dst");
    let hash = src.build(&src.recipe());
    let h = build_hash(&hash);
    assert!(!dst.store.exists());
    let imported = dst.store().import_from(&src.store(), &h).unwrap();
    assert_eq!(imported.len(), 3, "{imported:?}");
    dst.scan_store();
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    assert_eq!(
        std::fs::read(dst.entry_file(&hash)).unwrap(),
        std::fs::read(src.entry_file(&hash)).unwrap()
    );
    // Nothing more to import the second time.
    assert!(
        dst.store()
            .import_from(&src.store(), &h)
            .unwrap()
            .is_empty()
    );

    // It runs in the second store, with a CA minted there for the run.
    let child = dst.spawn(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "echo ok; while [ ! -f /tmp/go ]; do sleep 0.1; done",
    ]);
    let run_id = dst.wait_live().0;
    let ca = dst.store().runs().join(&run_id).join("ca");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca.join(ca_files::PIPELOCK_KEY)), 0o600);
    assert_eq!(mode(&ca), 0o700);
    assert!(src.records().is_empty(), "the run is the second store's");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = dst.output(&["exec", &run_id, "--", "touch", "/tmp/go"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, err) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "ok");
    assert!(!ca.exists(), "the run's CA outlived it");
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

/// Flips the byte in the middle of a file.
fn flip(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_import_from_a_damaged_copy_is_refused_and_changes_nothing() {
    let src = TestContext::new("import-bad-src");
    let dst = TestContext::new("import-bad-dst");
    let hash = src.build(&src.recipe());
    let h = build_hash(&hash);
    dst.build(&dst.recipe());
    let m = src.manifest(&hash);
    let copies = src.dir.path().join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    // The bundle last: `dst` has it already (one per build of bottle), so importing into
    // `dst` reads none of the copy's bundle and succeeds.
    let cases = [
        (Some(ComponentKind::Guest), IMAGE_ARCHIVE),
        (Some(ComponentKind::Config), paths::GUEST_SPEC),
        (Some(ComponentKind::Config), "pipelock.json"),
        (Some(ComponentKind::Config), RECORD_FILE),
        (None, "manifest"),
        (Some(ComponentKind::Bundle), IMAGE_ARCHIVE),
    ];
    for (i, (kind, file)) in cases.into_iter().enumerate() {
        // The source store's folder copied by hand, one byte of it flipped.
        let copy = copies.join(format!("{i}"));
        copy_tree(&src.store, &copy);
        let other = Store::new(&copy);
        let what = match kind {
            Some(kind) => {
                let path = other.component_dir(&m.components.get(kind)).join(file);
                if file == RECORD_FILE {
                    // In the record, a bit of its format ('1' → '0'): a flip in the middle
                    // may land in a file's digest, which names that file instead.
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(text.contains("\"format\": 1"), "{text}");
                    std::fs::write(&path, text.replacen("\"format\": 1", "\"format\": 0", 1))
                        .unwrap();
                } else {
                    flip(&path);
                }
                format!("{kind}/{file}")
            }
            None => {
                flip(&other.entry_file(&h));
                "manifest".to_string()
            }
        };
        // Into an empty store (which must not even appear) and into one with an entry.
        let empty = dst.dir.path().join(format!("empty-{i}"));
        let err = Store::new(&empty).import_from(&other, &h).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("refused"), "{what}: {text}");
        assert!(text.contains(&what), "{what} not named: {text}");
        assert!(!empty.exists(), "{what}: the refused import made a store");
        let before = dst.snapshot();
        if kind == Some(ComponentKind::Bundle) {
            // Nothing damaged enters: the destination's own bundle serves the entry.
            let imported = dst.store().import_from(&other, &h).unwrap();
            assert!(
                imported.iter().all(|id| id.kind != ComponentKind::Bundle),
                "{imported:?}"
            );
            assert_eq!(imported.len(), 2, "{imported:?}");
            dst.scan_store();
            assert!(dst.output(&["verify", &hash]).status.success());
        } else {
            let err = dst.store().import_from(&other, &h).unwrap_err();
            assert!(format!("{err:#}").contains(&what), "{what}: {err:#}");
            assert_eq!(dst.snapshot(), before, "{what}: the destination changed");
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    assert!(dst.output(&["verify"]).status.success());
}

/// `bottle verify` exits 3 naming `what` (and `field`), and `bottle run` exits 1 naming them
/// and creates nothing.
fn assert_refused(ctx: &TestContext, hash: &str, what: &str, field: Option<&str>) {
    let out = ctx.output(&["verify", hash]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{what}: {text}{}", stderr(&out));
    let named: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("damaged  {hash}  {what}: ")))
        .collect();
    assert!(!named.is_empty(), "{what} not named:\n{text}");
    if let Some(field) = field {
        assert!(
            named.iter().any(|l| l.contains(&format!(
                "differs from what the component's key renders in {field}"
            ))),
            "field {field} not named:\n{text}"
        );
    }
    let out = ctx.output(&["run", hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.contains(&format!("{what}: ")),
        "{what} not named: {err}"
    );
    if let Some(field) = field {
        assert!(err.contains(&format!("renders in {field}")), "{err}");
    }
    assert!(!err.contains("bottle run: run "), "the run started: {err}");
    ctx.assert_nothing_left();
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap();
    bytes.push(b'\n');
    std::fs::write(path, bytes).unwrap();
}

/// Rewrites a config record so it lists `file` with its current digest and size.
fn record_matches(record_path: &Path, dir: &Path, file: &str) {
    let mut r = json(record_path);
    let (digest, size) = file_digest(&dir.join(file)).unwrap();
    for a in r["files"].as_array_mut().unwrap() {
        if a["path"] == file {
            a["blake3"] = digest.hex().into();
            a["size"] = size.into();
        }
    }
    write_json(record_path, &r);
}

#[test]
fn an_edited_entry_is_refused_by_verify_and_run() {
    let ctx = TestContext::new("edited");
    let hash = ctx.build(&ctx.recipe());
    let other = ctx.build(&ctx.write_recipe(
        "other.toml",
        &recipe("edited", "").replace("EDITOR = \"vi\"", "EDITOR = \"ed\""),
    ));
    assert!(ctx.output(&["run", &hash, "--", "true"]).status.success());
    let config = ctx.component_dir(&hash, ComponentKind::Config);
    let guest_json = config.join(paths::GUEST_SPEC);
    let bundle_json = config.join(paths::BUNDLE_SPEC);
    let record = config.join(RECORD_FILE);
    let entry = ctx.entry_file(&hash);
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = [&guest_json, &bundle_json, &record, &entry]
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).unwrap()))
        .collect();
    let restore = || {
        for (p, b) in &saved {
            std::fs::write(p, b).unwrap();
        }
        assert!(ctx.output(&["verify", &hash]).status.success());
    };
    let guest_spec = format!("config/{}", paths::GUEST_SPEC);

    // (a) guest.json edited to run as root.
    let mut g = json(&guest_json);
    g["user"] = "root".into();
    write_json(&guest_json, &g);
    assert_refused(&ctx, &hash, &guest_spec, Some("user"));
    restore();

    // (b) a guest env var added.
    let mut g = json(&guest_json);
    g["env"]["BOTTLE_ADDED"] = "1".into();
    write_json(&guest_json, &g);
    assert_refused(&ctx, &hash, &guest_spec, Some("env.BOTTLE_ADDED"));
    restore();

    // (c) a mount target of the bundle changed.
    let mut b = json(&bundle_json);
    b["mounts"][0]["target"] = "/etc/passwd".into();
    write_json(&bundle_json, &b);
    assert_refused(
        &ctx,
        &hash,
        &format!("config/{}", paths::BUNDLE_SPEC),
        Some("mounts"),
    );
    restore();

    // (d) the manifest names another entry's config.
    let mut m = ctx.manifest(&hash);
    m.components.config = ctx.manifest(&other).components.config;
    std::fs::write(&entry, m.to_json()).unwrap();
    assert_refused(&ctx, &hash, "manifest", None);
    restore();

    // (e) guest.json edited and its digest in the record updated to match: the record holds,
    // the rendering of the key does not.
    let mut g = json(&guest_json);
    g["user"] = "root".into();
    write_json(&guest_json, &g);
    record_matches(&record, &config, paths::GUEST_SPEC);
    assert_refused(&ctx, &hash, &guest_spec, Some("user"));
    let out = stdout(&ctx.output(&["verify", &hash]));
    assert_eq!(out.lines().count(), 1, "only the rendering differs:\n{out}");
    restore();

    // (f) the key edited too, consistently: the key no longer hashes to the component's name.
    let mut r = json(&record);
    r["key"]["guest"]["user"] = "root".into();
    write_json(&record, &r);
    let mut g = json(&guest_json);
    g["user"] = "root".into();
    write_json(&guest_json, &g);
    record_matches(&record, &config, paths::GUEST_SPEC);
    assert_refused(&ctx, &hash, &format!("config/{RECORD_FILE}"), None);
    restore();

    assert!(ctx.output(&["run", &hash, "--", "true"]).status.success());
    ctx.assert_nothing_left();
}

#[test]
fn gc_removes_what_only_an_unrooted_entry_used_and_never_what_a_run_pins() {
    let ctx = TestContext::new("gc-roots");
    let build_rooted = |root: &str, file: &str, text: &str| {
        let r = ctx.write_recipe(file, text);
        let out = ctx.ok(&["build", "-q", "--root", root, r.to_str().unwrap()]);
        out.lines().last().unwrap().to_string()
    };
    let a = build_rooted("a", "a.toml", &recipe("gc-roots", ""));
    let b = build_rooted(
        "b",
        "b.toml",
        &recipe("gc-roots", "").replace("EDITOR = \"vi\"", "EDITOR = \"ed\""),
    );
    let c = build_rooted(
        "c",
        "c.toml",
        &recipe("gc-roots", "").replace("\"example.com\"", "\"example.com\", \"example.net\""),
    );
    let (ma, mb, mc) = (ctx.manifest(&a), ctx.manifest(&b), ctx.manifest(&c));
    assert_eq!(ma.components.guest, mb.components.guest);
    assert_eq!(ma.components.guest, mc.components.guest);
    assert_eq!(ma.components.bundle, mb.components.bundle);
    assert!(
        ma.components.config != mb.components.config
            && mb.components.config != mc.components.config
    );

    // A run of c, live (paused before its command) while its root and b's go.
    let run = ctx.spawn_paused("command", &["run", &c, "--", "true"], &[]);
    let store = ctx.store();
    for root in ["b", "c"] {
        std::fs::remove_file(store.roots().join(root)).unwrap();
    }
    // c is also the newest build of the name: that record goes too.
    std::fs::remove_file(store.latest_dir().join("gc-roots")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(
        report["removed_entries"],
        serde_json::json!([b]),
        "{report}"
    );
    assert_eq!(
        report["removed_components"],
        serde_json::json!([format!("config/{}", mb.components.config)]),
        "{report}"
    );
    let mut kept: Vec<String> = report["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    kept.sort();
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(kept, want);
    for h in [&a, &c] {
        assert!(ctx.output(&["verify", h]).status.success(), "{h}");
    }
    run.signal(libc::SIGTERM);
    let (code, _, err) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{err}");
    ctx.assert_nothing_left();

    // The run is down: c goes with the config only it used; a keeps the guest and bundle.
    let report: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(
        report["removed_entries"],
        serde_json::json!([c]),
        "{report}"
    );
    assert_eq!(
        report["removed_components"],
        serde_json::json!([format!("config/{}", mc.components.config)]),
        "{report}"
    );
    assert!(ctx.output(&["verify", &a]).status.success());
    let report: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(report["removed_entries"], serde_json::json!([]));
    assert_eq!(report["removed_components"], serde_json::json!([]));
}

#[test]
fn a_component_record_names_its_key_and_every_file() {
    // The record of each component, read through the library, hashes to its folder's name
    // and lists exactly the files of the folder (the record itself aside).
    let ctx = TestContext::new("records");
    let hash = ctx.build(&ctx.recipe());
    let store = ctx.store();
    for id in ctx.manifest(&hash).components.ids() {
        let dir = store.component_dir(&id);
        let record = Record::read(&dir.join(RECORD_FILE), &id).unwrap();
        assert_eq!(record.key.hash(), id.hash);
        let mut on_disk: Vec<String> = walk(&dir)
            .into_iter()
            .filter(|p| p != RECORD_FILE)
            .collect();
        on_disk.sort();
        let listed: Vec<String> = record.files.iter().map(|a| a.path.clone()).collect();
        assert_eq!(listed, on_disk, "{id}");
        assert_eq!(
            record.image.is_some(),
            id.kind != ComponentKind::Config,
            "{id}"
        );
    }
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}
