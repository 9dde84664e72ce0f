//! smolvm guests. With the real smolvm CLI (its own `--state-dir` per test): the machine is
//! created restricted to the bundle IP with the whole guest env, `machine start` fails on
//! these machines (a real fault), and teardown removes machine, bundle and network. The success
//! path — start, chown, every exec carrying `-e K=V` for the whole guest env, stop, delete, in
//! that order — can only be checked here against a stand-in for the CLI that records its argv.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bottle::builder::guest::{IMAGE_ARCHIVE, PACK};
use bottle::digest::file_digest;
use bottle::hash::ComponentKind;
use bottle::manifest::{Artifact, BUNDLE_IP_TEMPLATE, ImageRef, RECORD_FORMAT, Record};
use support::*;

fn smolvm_recipe(name: &str, extra: &str) -> String {
    recipe(name, extra).replace(
        "backend = \"docker\"",
        "backend = \"smolvm\"\nstart = \"image\"",
    )
}

/// The guest env of an entry with the bundle IP filled.
fn guest_env(ctx: &TestContext, hash: &str, bundle_ip: &str) -> BTreeMap<String, String> {
    ctx.entry(hash)
        .guest_spec()
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.replace(BUNDLE_IP_TEMPLATE, bundle_ip)))
        .collect()
}

/// The env smolvm stored for a machine. `machine ls --json` (smolvm 1.32.2) shows the
/// allowed CIDRs and labels but not the env, so it is read from the state folder's database.
fn stored_env(state: &Path, machine: &str) -> BTreeMap<String, String> {
    let db = state.join(".local/share/smolvm/server/smolvm.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,json\nc=sqlite3.connect(sys.argv[1])\nr=c.execute('select data from vms where name=?',(sys.argv[2],)).fetchone()\nd=r[0]\nd=d.decode() if isinstance(d,bytes) else d\nprint(json.dumps(json.loads(d)['env']))",
        ])
        .arg(&db)
        .arg(machine)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    pairs.into_iter().collect()
}

#[test]
fn real_smolvm_machine_is_restricted_start_fails_teardown_removes_all() {
    let ctx = TestContext::new("run-smolvm-real");
    ctx.write_recipe("r.toml", &smolvm_recipe("run-smolvm-real", ""));
    let hash = ctx.build(&ctx.recipe());

    // Paused before start: the machine exists as created.
    let child = ctx.spawn_paused("guest start", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let bundle_ip = ps[0]["bundle_ip"].as_str().unwrap().to_string();
    let machine = ps[0]["guest"].as_str().unwrap().to_string();
    let out = std::process::Command::new("smolvm")
        .args(["machine", "ls", "--json", "--state-dir"])
        .arg(&ctx.smolvm_state)
        .output()
        .unwrap();
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == machine.as_str())
        .unwrap_or_else(|| panic!("no machine {machine} in {ls}"));
    assert_eq!(
        m["allowed_cidrs"],
        serde_json::json!([format!("{bundle_ip}/32")]),
        "{m}"
    );
    assert_eq!(m["labels"][LABEL_RUN], run_id.as_str());
    assert_eq!(m["labels"][LABEL_HASH], hash.as_str());
    assert_eq!(
        stored_env(&ctx.smolvm_state, &machine),
        guest_env(&ctx, &hash, &bundle_ip)
    );
    // The bundle runs at the pinned IP, on a network of the run.
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &format!("bottle-{run_id}-bundle"),
    ]);
    assert_eq!(ip.trim(), bundle_ip);
    child.signal(libc::SIGTERM);
    let (code, _, stderr) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    ctx.assert_nothing_left();

    // `machine start` fails on these machines: a real fault, unwound completely.
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bottle run: step 'guest start' failed: smolvm machine start failed"),
        "{stderr}"
    );
    ctx.assert_nothing_left();
}

#[test]
fn real_smolvm_damaged_pack_fails_guest_create() {
    // A pack-started guest whose pack is damaged: `machine create --from` fails at once. The
    // pack cannot be built on these machines (`pack create` fails), so the test imports a
    // guest component holding the built image archive and a pack that is no pack, consistent
    // with its record (as a broken remote cache might serve it), under the key a pack-started
    // recipe has.
    let ctx = TestContext::new("run-smolvm-pack");
    let text = smolvm_recipe("run-smolvm-pack", "");
    ctx.write_recipe("r.toml", &text);
    let built = ctx.build(&ctx.recipe());
    let archive = ctx.entry(&built).guest.clone();
    let pack_recipe = ctx.write_recipe(
        "pack.toml",
        &text.replace("start = \"image\"", "start = \"pack\""),
    );
    let planned = bottle::plan::plan(&bottle::recipe::Recipe::load(&pack_recipe).unwrap()).unwrap();
    let smolvm = bottle::runtime::smolvm::Smolvm::pack_version(planned.plan.guest.start).unwrap();
    let (keys, _) = bottle::hash::keys(&planned, smolvm.as_deref()).unwrap();
    let key = keys.component(ComponentKind::Guest);
    let id = key.id();
    let src = ctx.dir.path().join("served");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        archive.path(&archive.image().archive),
        src.join(IMAGE_ARCHIVE),
    )
    .unwrap();
    std::fs::write(src.join(PACK), b"not a pack").unwrap();
    let mut files: Vec<Artifact> = [IMAGE_ARCHIVE, PACK]
        .into_iter()
        .map(|f| {
            let (blake3, size) = file_digest(&src.join(f)).unwrap();
            Artifact {
                path: f.to_string(),
                blake3,
                size,
                mode: 0o644,
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let record = Record {
        format: RECORD_FORMAT,
        key,
        image: Some(ImageRef {
            archive: IMAGE_ARCHIVE.to_string(),
            id: archive.image().id.clone(),
            pack: Some(PACK.to_string()),
        }),
        files,
    };
    let store = ctx.store();
    let imported = store
        .import_component(id, &record.to_json(), |rel| {
            Ok(Box::new(std::fs::File::open(src.join(rel))?) as Box<dyn std::io::Read>)
        })
        .unwrap();
    assert!(imported);
    // The entry: the same bundle and config (neither depends on how the guest starts).
    let manifest = bottle::manifest::Manifest::of(&keys);
    assert_eq!(
        manifest.components.config,
        ctx.manifest(&built).components.config
    );
    let hash = manifest.hash().to_string();
    store
        .import_entry(&manifest.to_json(), &manifest.hash())
        .unwrap();
    assert!(ctx.output(&["verify", &hash]).status.success());
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bottle run: step 'guest create' failed: smolvm machine create failed"),
        "{err}"
    );
    ctx.assert_nothing_left();
}

/// A stand-in for the smolvm CLI: records each call's argv (arguments end in 0x1f, calls in
/// 0x1e: the provisioning script holds newlines) and succeeds; `machine ls` prints `[]`; `exec … -- stand-in-agent N` exits N.
fn stand_in(dir: &Path, log: &Path) -> std::path::PathBuf {
    let path = dir.join("smolvm-stand-in");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\037' "$a"; done >> '{log}'
printf '\036' >> '{log}'
[ "$2" = ls ] && echo '[]'
agent=0
for a in "$@"; do
  if [ "$agent" = 1 ]; then echo "stand-in agent ran"; exit "$a"; fi
  [ "$a" = stand-in-agent ] && agent=1
done
exit 0
"#,
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn smolvm_success_path_against_a_stand_in_that_records_argv() {
    let ctx = TestContext::new("run-smolvm-stand-in");
    ctx.write_recipe(
        "r.toml",
        &smolvm_recipe("run-smolvm-stand-in", &ctx.provisioning_extra()),
    );
    let hash = ctx.build(&ctx.recipe());
    let log = ctx.dir.path().join("argv.log");
    let bin = stand_in(ctx.dir.path(), &log);
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_SMOLVM", &bin);
    let out = ctx.output_of(cmd, &["run", "--json", &hash, "--", "stand-in-agent", "5"]);
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(stdout.contains("stand-in agent ran"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim_start_matches("stand-in agent ran\n")).unwrap();
    let bundle_ip = report["bundle_ip"].as_str().unwrap().to_string();
    let env = guest_env(&ctx, &hash, &bundle_ip);
    let calls: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .split('\u{1e}')
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split('\u{1f}')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    let verbs: Vec<String> = calls.iter().map(|c| c[1].clone()).collect();
    // create, start, chown, provisioning (mkdir, copies, script), the agent, stop, delete.
    assert_eq!(
        verbs.first().map(String::as_str),
        Some("create"),
        "{verbs:?}"
    );
    assert_eq!(verbs[1], "start", "{verbs:?}");
    assert_eq!(&verbs[verbs.len() - 2..], ["stop", "delete"], "{verbs:?}");
    let after = |c: &Vec<String>| -> Vec<String> {
        c.iter()
            .skip_while(|a| *a != "--")
            .skip(1)
            .cloned()
            .collect()
    };
    let execs: Vec<&Vec<String>> = calls.iter().filter(|c| c[1] == "exec").collect();
    assert_eq!(
        after(execs[0]),
        ["chown", "-R", "node:node", "/home/node"],
        "chown comes first: {calls:?}"
    );
    assert_eq!(
        after(execs.last().unwrap()),
        ["stand-in-agent", "5"],
        "the agent comes last: {calls:?}"
    );
    let agent = execs.last().unwrap();
    assert!(
        agent.windows(2).any(|w| w == ["--user", "node"]),
        "{agent:?}"
    );
    assert!(
        agent.windows(2).any(|w| w == ["--workdir", "/home/node"]),
        "{agent:?}"
    );
    let copies: Vec<String> = calls
        .iter()
        .filter(|c| c[1] == "cp")
        .filter_map(|c| c.iter().find(|a| a.starts_with("bottle-")).cloned())
        .collect();
    let machine = format!("bottle-{}-guest", report["run_id"].as_str().unwrap());
    for want in [
        "/etc/bottle/ca.crt",
        "/home/node/.claude/CLAUDE.md",
        "/home/node/.claude/skills/one/SKILL.md",
        "/home/node/.gitconfig",
        "/home/node/.bottle/supervise.json",
    ] {
        assert!(
            copies.contains(&format!("{machine}:{want}")),
            "no copy to {want}: {copies:?}"
        );
    }
    // Every exec, and the create, re-pass the whole guest env; global flags precede `--`.
    for c in calls.iter().filter(|c| c[1] == "exec" || c[1] == "create") {
        let before: Vec<&String> = c.iter().take_while(|a| *a != "--").collect();
        for (k, v) in &env {
            let kv = format!("{k}={v}");
            assert!(
                before.windows(2).any(|w| w[0] == "-e" && *w[1] == kv),
                "{} lacks -e {kv}: {c:?}",
                c[1]
            );
        }
        assert!(before.iter().any(|a| *a == "--state-dir"), "{c:?}");
        assert!(before.iter().any(|a| *a == "--error-format"), "{c:?}");
    }
    let create = &calls[0];
    assert!(
        create
            .windows(2)
            .any(|w| w[0] == "--allow-cidr" && w[1] == format!("{bundle_ip}/32")),
        "{create:?}"
    );
    assert!(create.windows(2).any(|w| w[0] == "--image"), "{create:?}");
    assert!(
        create
            .windows(2)
            .any(|w| w[0] == "--label" && w[1] == format!("{LABEL_HASH}={hash}")),
        "{create:?}"
    );
    // The bundle started with git-gate and supervise, and its network went at teardown.
    ctx.assert_nothing_left();
}
