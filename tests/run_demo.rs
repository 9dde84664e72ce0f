//! `bottle run` end to end against the real Docker Engine: the guest user and its home, the
//! whole guest env in separate execs, exit codes, two runs at once, images loaded once, and
//! nothing left behind.

mod run_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use run_support::*;

fn guest_env(ctx: &RunCtx, hash: &str, bundle_ip: &str) -> BTreeMap<String, String> {
    let m = ctx.manifest(hash);
    m["guest"]["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().unwrap().replace("{{bundle_ip}}", bundle_ip),
            )
        })
        .collect()
}

fn env_of(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn demo_end_to_end_user_home_env_exit_codes() {
    let ctx = RunCtx::new("run-e2e");
    let hash = ctx.build(&ctx.recipe());

    // Exit code 7 passes through; user and home ownership are the guest's.
    let out = ctx.output(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "echo user=$(id -un); echo owner=$(ls -ld /home/node | awk '{print $3\":\"$4}'); echo pwd=$(pwd); exit 7",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("user=node"), "{stdout}");
    assert!(stdout.contains("owner=node:node"), "{stdout}");
    assert!(stdout.contains("pwd=/home/node"), "{stdout}");
    ctx.assert_nothing_left();

    // The recipe's own command, exit 0.
    let out = ctx.output(&["run", &hash]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from node"));
    ctx.assert_nothing_left();

    // Every guest env entry, in two separate execs: the run's command and `bottle exec`.
    let mut child = ctx
        .cmd()
        .args([
            "run",
            &hash,
            "--",
            "sh",
            "-c",
            "env; echo ===; while [ ! -f /tmp/done ]; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the run to be up: `bottle ps --json` shows it live with a guest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (run_id, bundle_ip) = loop {
        let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
        if let Some(r) = ps.as_array().and_then(|a| a.first())
            && r["live"] == true
            && r["guest"].is_string()
            && r["bundle_ip"].is_string()
        {
            break (
                r["run_id"].as_str().unwrap().to_string(),
                r["bundle_ip"].as_str().unwrap().to_string(),
            );
        }
        assert!(Instant::now() < deadline, "the run did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    let want = guest_env(&ctx, &hash, &bundle_ip);
    assert!(want.contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
    assert!(want["HTTPS_PROXY"].contains(&bundle_ip));
    // The command step may still be starting: retry `bottle exec` until the guest answers.
    let exec_env = loop {
        let out = ctx.output(&["exec", &run_id[..6], "--", "env"]);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let got = env_of(&exec_env);
    for (k, v) in &want {
        assert_eq!(
            got.get(k),
            Some(v),
            "bottle exec: {k} missing or wrong:\n{exec_env}"
        );
    }
    let out = ctx.output(&[
        "exec",
        &run_id,
        "--",
        "sh",
        "-c",
        "id -un; touch /tmp/done; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node");
    let out = child_output(&mut child, Duration::from_secs(60));
    assert_eq!(out.0, Some(0), "stderr: {}", out.2);
    let first = out.1.split("===").next().unwrap().to_string();
    let got = env_of(&first);
    for (k, v) in &want {
        assert_eq!(
            got.get(k),
            Some(v),
            "the run's command: {k} missing or wrong:\n{first}"
        );
    }
    ctx.assert_nothing_left();
    assert!(ctx.ok(&["ps", "--json"]).trim() == "[]");
}

fn child_output(
    child: &mut std::process::Child,
    timeout: Duration,
) -> (Option<i32>, String, String) {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bottle run did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stdout, stderr)
}

#[test]
fn two_runs_of_one_hash_at_once_use_different_subnets() {
    let ctx = RunCtx::new("run-concurrent");
    let hash = ctx.build(&ctx.recipe());
    let spawn = || {
        ctx.cmd()
            .args(["run", "--json", &hash, "--", "sh", "-c", "sleep 2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let (ra, rb) = (
        child_output(&mut a, Duration::from_secs(120)),
        child_output(&mut b, Duration::from_secs(120)),
    );
    assert_eq!(ra.0, Some(0), "{}", ra.2);
    assert_eq!(rb.0, Some(0), "{}", rb.2);
    let ja: serde_json::Value = serde_json::from_str(&ra.1).unwrap();
    let jb: serde_json::Value = serde_json::from_str(&rb.1).unwrap();
    assert_ne!(ja["run_id"], jb["run_id"]);
    assert!(ja["subnet"].is_string());
    assert_ne!(ja["subnet"], jb["subnet"], "both runs got {}", ja["subnet"]);
    assert_ne!(ja["bundle_ip"], jb["bundle_ip"]);
    ctx.assert_nothing_left();
}

#[test]
fn a_second_run_loads_no_image() {
    let ctx = RunCtx::new("run-load-once");
    let hash = ctx.build(&ctx.recipe());
    let m = ctx.manifest(&hash);
    let guest = m["guest"]["image_id"].as_str().unwrap().to_string();
    let bundle = m["bundle"]["image_id"].as_str().unwrap().to_string();
    // The images are this test's own (its hash labels them): take them out of the engine.
    docker(&["rmi", "-f", "--no-prune", &guest, &bundle]);
    let first: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["run", "--json", &hash, "--", "true"])).unwrap();
    let loaded: Vec<&str> = first["images_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        loaded.contains(&guest.as_str()) && loaded.contains(&bundle.as_str()),
        "{first}"
    );
    let second: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["run", "--json", &hash, "--", "true"])).unwrap();
    assert_eq!(second["images_loaded"], serde_json::json!([]), "{second}");
    ctx.assert_nothing_left();
}

#[test]
fn a_recipe_is_built_first() {
    let ctx = RunCtx::new("run-recipe");
    let out = ctx.output(&[
        "run",
        ctx.recipe().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo built-and-ran",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-and-ran"));
    // Remember the hash for the guard.
    ctx.build(&ctx.recipe());
    ctx.assert_nothing_left();
}

#[test]
fn provisioning_and_bundle_mounts() {
    let ctx = RunCtx::new("run-provision");
    ctx.write_recipe(
        "r.toml",
        &recipe("run-provision", &ctx.provisioning_extra()),
    );
    let hash = ctx.build(&ctx.recipe());
    let script = "head -1 $SSL_CERT_FILE; cat ~/.claude/CLAUDE.md; cat ~/.claude/skills/one/SKILL.md; cat ~/.gitconfig; cat ~/.bottle/supervise.json; ls -ln ~/.claude/CLAUDE.md ~/.gitconfig ~/.bottle/supervise.json ~/.claude/skills/one/SKILL.md | awk '{print \"own \" $3 \":\" $4}'; echo \"EOF\"";
    let out = ctx.ok(&["run", "--json", &hash, "--", "sh", "-c", script]);
    let (text, json) = out.split_at(out.find("EOF").unwrap());
    let report: serde_json::Value = serde_json::from_str(json.trim_start_matches("EOF")).unwrap();
    let ip = report["bundle_ip"].as_str().unwrap();
    assert!(text.contains("-----BEGIN CERTIFICATE-----"), "{text}");
    assert!(text.contains("be careful"), "{text}");
    assert!(text.contains("a skill"), "{text}");
    assert!(text.contains("name = \"Agent\""), "{text}");
    assert!(text.contains("email = \"agent@bottle.invalid\""), "{text}");
    assert!(
        text.contains(&format!("url = git://{ip}:9418/origin")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"url\": \"http://{ip}:7777\"")),
        "{text}"
    );
    let owners: Vec<&str> = text.lines().filter(|l| l.starts_with("own ")).collect();
    assert_eq!(owners, vec!["own 1000:1000"; 4], "{text}");
    ctx.assert_nothing_left();

    let key = ctx.dir.path().join("id_test");
    // The bundle's mounts: read-only but for the supervise queue; the key in the bundle only.
    let (child, _) = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let mounts: serde_json::Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &format!("bottle-{run_id}-bundle"),
    ]))
    .unwrap();
    let mut rw = Vec::new();
    let mut seen_key = false;
    for m in mounts.as_array().unwrap() {
        if m["RW"] == true {
            rw.push(m["Destination"].as_str().unwrap().to_string());
        }
        if m["Source"].as_str() == key.to_str() {
            seen_key = true;
            assert_eq!(m["Destination"], "/etc/bottle/git-gate/keys/origin");
        }
    }
    assert!(seen_key, "{mounts}");
    assert_eq!(rw, vec!["/var/lib/bottle/supervise"], "{mounts}");
    let cmd = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        &format!("bottle-{run_id}-bundle"),
    ]);
    assert_eq!(
        cmd.trim(),
        r#"["--daemons","egress,pipelock,git-gate,supervise"]"#
    );
    let guest_mounts = docker(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &format!("bottle-{run_id}-guest"),
    ]);
    assert_eq!(
        guest_mounts.trim(),
        "[]",
        "the guest mounts nothing of the host"
    );
    signal(&child, libc::SIGTERM);
    let (code, _, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    ctx.assert_nothing_left();
}

#[test]
fn a_run_rehashes_small_artifacts_only() {
    let ctx = RunCtx::new("run-rehash");
    let hash = ctx.build(&ctx.recipe());
    let entry = ctx.store.join("v1/builds").join(&hash);
    // A byte changed in the middle of the (> 1 MiB) guest archive, size kept: not rehashed,
    // and not read either while the engine holds the image.
    let archive = entry.join("guest/image.tar");
    let original = std::fs::read(&archive).unwrap();
    assert!(original.len() > 1 << 20);
    let mut changed = original.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 0xff;
    std::fs::write(&archive, &changed).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&archive, &original).unwrap();
    // A changed config (small, mounted into the bundle) is caught before anything is created.
    let config = entry.join("config/pipelock.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("example.com", "example.org")).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("artifact config/pipelock.json")
            && stderr.contains("differs from its manifest"),
        "{stderr}"
    );
    std::fs::write(&config, text).unwrap();
    ctx.assert_nothing_left();
}
