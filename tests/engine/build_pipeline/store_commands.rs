//! The commands that read and tidy the store: `bottle gc` (roots, leftovers, old layouts, a
//! run's pin), `bottle diff`, `bottle ls` and `bottle show`, and any command ending quietly
//! when its stdout is closed.

use crate::support;

use std::process::Stdio;

use bottle::hash::ComponentKind;
use support::{TestContext, base_recipe, build_hash, paths, stderr, stdout};

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
