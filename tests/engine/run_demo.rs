//! `bottle run` end to end against the real Docker Engine: the guest user and its home, the
//! whole guest env in separate execs, exit codes, two runs at once, images loaded once, the
//! entry checked before anything is created, and nothing left behind.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bottle::hash::ComponentKind;
use bottle::manifest::BUNDLE_IP_TEMPLATE;
use support::*;

/// The guest env of an entry with the bundle IP filled.
fn guest_env(ctx: &TestContext, hash: &str, bundle_ip: &str) -> BTreeMap<String, String> {
    ctx.entry(hash)
        .guest_spec()
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.replace(BUNDLE_IP_TEMPLATE, bundle_ip)))
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
    let ctx = TestContext::new("run-e2e");
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
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(7), "stdout: {so}\nstderr: {se}");
    assert!(so.contains("user=node"), "{so}");
    assert!(so.contains("owner=node:node"), "{so}");
    assert!(so.contains("pwd=/home/node"), "{so}");
    ctx.assert_nothing_left();

    // The recipe's own command, exit 0.
    let out = ctx.output(&["run", &hash]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("hello from node"));
    ctx.assert_nothing_left();

    // Every guest env entry, in two separate execs: the run's command and `bottle exec`.
    let child = ctx.spawn(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "env; echo ===; while [ ! -f /tmp/done ]; do sleep 0.1; done",
    ]);
    let (run_id, bundle_ip) = ctx.wait_live();
    let want = guest_env(&ctx, &hash, &bundle_ip);
    assert!(want.contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
    assert!(want["HTTPS_PROXY"].contains(&bundle_ip));
    // The command step may still be starting: retry `bottle exec` until the guest answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exec_env = loop {
        let out = ctx.output(&["exec", &run_id[..6], "--", "env"]);
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
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
    assert_eq!(stdout(&out).trim(), "node");
    let (code, out, err) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "stderr: {err}");
    let first = out.split("===").next().unwrap().to_string();
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

#[test]
fn two_runs_of_one_hash_at_once_use_different_subnets() {
    let ctx = TestContext::new("run-concurrent");
    let hash = ctx.build(&ctx.recipe());
    let args = ["run", "--json", &hash, "--", "sh", "-c", "sleep 2"];
    let (a, b) = (ctx.spawn(&args), ctx.spawn(&args));
    let (ra, rb) = (
        a.finish(Duration::from_secs(120)),
        b.finish(Duration::from_secs(120)),
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
    let ctx = TestContext::new("run-load-once");
    let hash = ctx.build(&ctx.recipe());
    let entry = ctx.entry(&hash);
    let guest = entry.guest.image().id.clone();
    let bundle = entry.bundle.image().id.clone();
    // The build left no image of the entry in the engine (it removes the image it built once
    // saved; runs load the normalized archives): the guest image is the test's own and is not
    // there. The bundle image is shared by every test; it goes unless another test's
    // container uses it. By id: the tag may name another build of the same bundle.
    assert!(
        !ctx.remove_image(&guest),
        "the build left the guest image {guest} in the engine"
    );
    ctx.remove_image(&bundle);
    // From here on no other test removes the (shared) bundle image; whether the first run
    // finds it depends on the other tests' runs, which load it when they need it.
    let _kept = ctx.keep_images();
    let first: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["run", "--json", &hash, "--", "true"])).unwrap();
    let loaded: Vec<&str> = first["images_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(loaded.contains(&guest.as_str()), "{first}");
    assert!(
        loaded.iter().all(|l| *l == guest || *l == bundle),
        "{first}"
    );
    let second: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["run", "--json", &hash, "--", "true"])).unwrap();
    assert_eq!(second["images_loaded"], serde_json::json!([]), "{second}");
    ctx.assert_nothing_left();
}

#[test]
fn a_recipe_is_built_first() {
    let ctx = TestContext::new("run-recipe");
    let out = ctx.output(&[
        "run",
        ctx.recipe().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo built-and-ran",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("built-and-ran"));
    // The run built the entry the recipe hashes to.
    let hash = ctx.hash(&ctx.recipe());
    assert!(ctx.entry_file(&hash).is_file());
    assert!(ctx.output(&["verify", &hash]).status.success());
    ctx.assert_nothing_left();
}

#[test]
fn provisioning_and_bundle_mounts() {
    let ctx = TestContext::new("run-provision");
    ctx.write_recipe(
        "r.toml",
        &recipe("run-provision", &ctx.provisioning_extra()),
    );
    let hash = ctx.build(&ctx.recipe());
    let script = "head -1 $SSL_CERT_FILE; cat ~/.claude/CLAUDE.md; cat ~/.claude/skills/one/SKILL.md; cat ~/.gitconfig; cat ~/.config/git/config; cat ~/.bottle/supervise.json; ls -ln ~/.claude/CLAUDE.md ~/.gitconfig ~/.config/git/config ~/.bottle/supervise.json ~/.claude/skills/one/SKILL.md | awk '{print \"own \" $3 \":\" $4}'; echo \"EOF\"";
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
        text.contains(&format!("url = http://{ip}:9418/origin")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"url\": \"http://{ip}:7777\"")),
        "{text}"
    );
    let owners: Vec<&str> = text.lines().filter(|l| l.starts_with("own ")).collect();
    assert_eq!(owners, vec!["own 1000:1000"; 5], "{text}");
    ctx.assert_nothing_left();

    let key = ctx.dir.path().join("id_test");
    // The bundle's mounts: read-only but for the supervise queue and the audit log; the key
    // in the bundle only;
    // configs from the config component, the CA from the run's own folder.
    let child = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let mounts: serde_json::Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &format!("bottle-{run_id}-bundle"),
    ]))
    .unwrap();
    let config_dir = ctx.component_dir(&hash, ComponentKind::Config);
    let run_dir = ctx.store().runs().join(&run_id);
    let mut rw = Vec::new();
    let mut seen_key = false;
    let mut by_target = BTreeMap::new();
    for m in mounts.as_array().unwrap() {
        let (src, dst) = (
            m["Source"].as_str().unwrap().to_string(),
            m["Destination"].as_str().unwrap().to_string(),
        );
        if m["RW"] == true {
            rw.push(dst.clone());
        }
        if Some(src.as_str()) == key.to_str() {
            seen_key = true;
            assert_eq!(dst, "/etc/bottle/git-gate/keys/origin");
        }
        by_target.insert(dst, src);
    }
    assert!(seen_key, "{mounts}");
    rw.sort();
    assert_eq!(
        rw,
        vec!["/var/lib/bottle/supervise", "/var/log/bottle"],
        "{mounts}"
    );
    assert_eq!(
        by_target["/etc/bottle/pipelock.json"],
        config_dir.join("pipelock.json").to_str().unwrap()
    );
    assert_eq!(
        by_target["/etc/bottle/ca/pipelock.key"],
        run_dir
            .join("ca")
            .join(bottle::config::ca_files::PIPELOCK_KEY)
            .to_str()
            .unwrap()
    );
    let cmd = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        &format!("bottle-{run_id}-bundle"),
    ]);
    assert_eq!(cmd.trim(), r#"["--daemons","pipelock,git-gate,supervise"]"#);
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
    child.signal(libc::SIGTERM);
    let (code, _, stderr) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    ctx.assert_nothing_left();
}

#[test]
fn a_run_refuses_files_changed_since_they_were_verified() {
    let ctx = TestContext::new("run-rehash");
    let hash = ctx.build(&ctx.recipe());
    let out = ctx.output(&["run", &hash, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The run checked every file once and left a machine-local marker per component, so
    // later runs rehash only what changed since.
    let markers: Vec<String> = std::fs::read_dir(ctx.store().local().join("verified"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let m = ctx.manifest(&hash);
    for id in m.components.ids() {
        assert!(
            markers.iter().any(|f| f.contains(&id.hash.hex())),
            "no marker for {id}: {markers:?}"
        );
    }
    // A byte changed in the middle of the (> 1 MiB) guest archive, size kept: it changed
    // since it was verified, so the run rehashes and refuses it before creating anything.
    let archive = ctx
        .component_dir(&hash, ComponentKind::Guest)
        .join(&ctx.entry(&hash).guest.image().archive);
    let original = std::fs::read(&archive).unwrap();
    assert!(original.len() > 1 << 20);
    let mut changed = original.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 0xff;
    std::fs::write(&archive, &changed).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "guest/{}: content differs from its blake3 in the record",
            bottle::builder::guest::IMAGE_ARCHIVE
        )),
        "{err}"
    );
    ctx.assert_nothing_left();
    // Its content back (a new ctime): rehashed, and accepted.
    std::fs::write(&archive, &original).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The record's digest of that file edited after the check (the file untouched): the run
    // rehashes it and refuses, as verify does.
    let record_path = ctx
        .component_dir(&hash, ComponentKind::Guest)
        .join(bottle::manifest::RECORD_FILE);
    let record_text = std::fs::read_to_string(&record_path).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&record_text).unwrap();
    let name = bottle::builder::guest::IMAGE_ARCHIVE;
    let file = record["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == name)
        .unwrap();
    let digest = file["blake3"].as_str().unwrap().to_string();
    let last = if digest.ends_with('0') { "1" } else { "0" };
    file["blake3"] = format!("{}{last}", &digest[..digest.len() - 1]).into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let verify = ctx.output(&["verify", &hash]);
    assert_eq!(verify.status.code(), Some(3), "{}", stderr(&verify));
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "guest/{name}: content differs from its blake3 in the record"
        )),
        "{err}"
    );
    ctx.assert_nothing_left();
    std::fs::write(&record_path, &record_text).unwrap();
    // A changed config (small, mounted into the bundle) is caught before anything is created.
    let config = ctx
        .component_dir(&hash, ComponentKind::Config)
        .join(bottle::daemons::Daemon::Pipelock.config_file());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("example.com", "example.org")).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "config/{}: differs from what the component's key renders",
            bottle::daemons::Daemon::Pipelock.config_file()
        )),
        "{err}"
    );
    ctx.assert_nothing_left();
    std::fs::write(&config, text).unwrap();
    assert!(ctx.output(&["verify", &hash]).status.success());
}

#[test]
fn the_command_gets_a_terminal_of_the_callers_size() {
    let ctx = TestContext::new("run-tty");
    let hash = ctx.build(&ctx.recipe());
    // script(1) (util-linux) runs bottle on a new pty, sized by stty first; bottle's stdin
    // and stdout are that terminal, so the guest command gets one of the same size. The
    // Engine (20.10, API 1.41) takes no size when an exec is created: bottle sets it right
    // after the exec starts, so the command waits (up to 5 s) for a size other than 0 0.
    let probe = "i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; i=$((i+1)); sleep 0.05; done; echo \"size=$s\"; [ -t 0 ] && [ -t 1 ] && echo on-a-tty";
    let inner =
        format!("stty rows 31 cols 97; exec {BIN} --no-progress run {hash} -- sh -c '{probe}'");
    let out = std::process::Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env("BOTTLE_STORE", &ctx.store)
        .env("BOTTLE_SMOLVM_STATE_DIR", &ctx.smolvm_state)
        .env_remove("BOTTLE_PAUSE_AT")
        .env_remove("BOTTLE_FAILPOINT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux; scripts/setup installs it)");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    // Lines end in \r\n on a terminal; what the pty echoes of script's input (^@) may precede.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.iter().any(|l| l.ends_with("size=31 97")),
        "the guest's terminal size:\n{text}"
    );
    assert!(lines.contains(&"on-a-tty"), "{text}");
    // Without a terminal, none: plain pipes, no \r\n.
    let out = ctx.ok(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "[ -t 0 ] || [ -t 1 ] || echo no-tty",
    ]);
    assert_eq!(out, "no-tty\n");
    ctx.assert_nothing_left();
}

/// `bottle logs --follow --json RUN`, its stdout read line by line as it comes; killed if
/// still running when dropped (a failing test).
struct Follow {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follow {
    fn start(ctx: &TestContext, run: &str) -> Follow {
        use std::io::BufRead;
        let mut child = ctx
            .cmd()
            .args(["logs", "--follow", "--json", run])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line holding `needle`, as `--follow` prints it.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "no line with {needle:?} from logs --follow ({e:?}):\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for `--follow` to end by itself; its exit code and every line it printed.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "logs --follow did not end with the run"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_runs_audit_log_follows_the_run_and_stays_until_gc() {
    let ctx = TestContext::new("run-logs");
    let hash = ctx.build(&ctx.recipe());
    // The guest asks for a denied host (busybox wget through http_proxy), waits, asks again,
    // waits.
    let run = ctx.spawn(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "wget -q -O /dev/null http://denied.test/x?token=abc; while [ ! -f /tmp/go ]; do sleep 0.1; done; \
         wget -q -O /dev/null http://denied.test/later?token=abc; while [ ! -f /tmp/done ]; do sleep 0.1; done",
    ]);
    let (id, _) = ctx.wait_live();
    let mut follow = Follow::start(&ctx, &id[..6]);
    // The first refusal (the backlog, or live), then the second: written only once the first
    // was printed, it is a line appended while `--follow` follows.
    follow.wait_for("\"/x?token=\"");
    ctx.ok(&["exec", &id, "--", "touch", "/tmp/go"]);
    follow.wait_for("\"/later?token=\"");
    ctx.ok(&["exec", &id, "--", "touch", "/tmp/done"]);
    let (code, _, err) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    // `--follow` ends by itself when the run does, having printed both refusals.
    let (code, out) = follow.finish();
    assert_eq!(code, Some(0), "{out}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for path in ["/x?token=", "/later?token="] {
        assert_eq!(
            events
                .iter()
                .filter(|e| e["host"] == "denied.test"
                    && e["decision"] == "refused"
                    && e["rule"] == "allowlist"
                    && e["path"] == path)
                .count(),
            1,
            "{path}: {out}"
        );
    }
    assert!(!out.contains("abc"), "a query value is in the log: {out}");
    // After the run, until gc: the log stays, the run does not.
    ctx.assert_nothing_left();
    assert_eq!(ctx.ended_runs(), vec![id.clone()]);
    let text = ctx.ok(&["logs", &id]);
    assert!(
        text.lines()
            .any(|l| l.contains("denied.test:80/x?token=") && l.contains("refused (allowlist)")),
        "{text}"
    );
    let gc: serde_json::Value = serde_json::from_str(&ctx.ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["removed_runs"], serde_json::json!([id]));
    let out = ctx.output(&["logs", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no run"), "{}", stderr(&out));
}
