//! Entries and components are whole or absent: eight concurrent builds of one recipe build
//! once, SIGKILL at random moments never leaves a partial one, and `bottle verify` names each
//! flipped, truncated or deleted file.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use bottle::hash::{ComponentId, ComponentKind};
use bottle::manifest::RECORD_FILE;
use support::{TestContext, paths, stderr, stdout};

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
