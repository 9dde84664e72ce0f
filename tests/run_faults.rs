//! Faults at every step of `bottle run`, real where they exist, fail points
//! (`BOTTLE_FAILPOINT`) for the rest; SIGINT and SIGTERM while each step runs
//! (`BOTTLE_PAUSE_AT`); SIGKILL then `bottle down --all`. Each must leave nothing behind.

mod run_support;

use std::time::Duration;

use run_support::*;

fn assert_failed_at(out: &std::process::Output, step: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bottle run succeeded:\n{stderr}");
    assert!(
        stderr.contains(&format!("bottle run: step '{step}' failed")),
        "the message does not name step {step:?}:\n{stderr}"
    );
}

#[test]
fn a_fail_point_at_every_step_unwinds_everything() {
    let ctx = RunCtx::new("run-failpoints");
    let hash = ctx.build(&ctx.recipe());
    for step in STEPS {
        let out = ctx
            .cmd()
            .args(["run", &hash, "--", "true"])
            .env("BOTTLE_FAILPOINT", step)
            .output()
            .unwrap();
        assert_failed_at(&out, step);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("BOTTLE_FAILPOINT"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1));
        ctx.assert_nothing_left();
    }
}

#[test]
fn real_fault_no_free_subnet_in_the_pool() {
    let ctx = RunCtx::new("run-pool-full");
    let hash = ctx.build(&ctx.recipe());
    // A one-block pool that a network of the test already holds.
    let pool = "10.214.77.0/28";
    ctx.make_network(&unique("bottle-test-pool"), Some(pool));
    let out = ctx.output(&["run", "--subnet-pool", pool, &hash, "--", "true"]);
    assert_failed_at(&out, "network");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no free /28 subnet left in pool 10.214.77.0/28"),
        "{stderr}"
    );
    assert!(stderr.contains("--subnet-pool"), "{stderr}");
    // The environment variable works as well.
    let out = ctx
        .cmd()
        .args(["run", &hash, "--", "true"])
        .env("BOTTLE_SUBNET_POOL", pool)
        .output()
        .unwrap();
    assert_failed_at(&out, "network");
    // Only the test's own network remains (it is not the run's).
    let left: Vec<String> = ctx
        .leftovers()
        .into_iter()
        .filter(|l| !l.contains("bottle-test-pool"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn real_fault_guest_image_without_home() {
    let ctx = RunCtx::new("run-no-home");
    std::fs::write(ctx.recipes.join("guest/Dockerfile"), dockerfile(false)).unwrap();
    let hash = ctx.build(&ctx.recipe());
    let out = ctx.output(&["run", &hash, "--", "true"]);
    assert_failed_at(&out, "chown");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chown -R node:node /home/node"), "{stderr}");
    ctx.assert_nothing_left();
}

#[test]
fn real_fault_missing_command() {
    let ctx = RunCtx::new("run-no-command");
    let hash = ctx.build(&ctx.recipe());
    let out = ctx.output(&["run", &hash, "--", "no-such-agent", "--flag"]);
    assert_failed_at(&out, "command");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`no-such-agent` is not a command in the guest"),
        "{stderr}"
    );
    ctx.assert_nothing_left();
    // A command that exists and exits 127 itself is no fault of the run.
    let out = ctx.output(&["run", &hash, "--", "sh", "-c", "exit 127"]);
    assert_eq!(out.status.code(), Some(127));
    ctx.assert_nothing_left();
}

#[test]
fn real_fault_token_missing_from_the_environment() {
    let ctx = RunCtx::new("run-no-token");
    let var = "BOTTLE_TEST_TOKEN_UNSET_1234";
    ctx.write_recipe(
        "r.toml",
        &recipe(
            "run-no-token",
            &format!(
                "\n[[egress.routes]]\nhost = \"api.example.com\"\ntoken_env = \"{var}\"\nheader = \"Authorization\"\nscheme = \"Bearer\"\n"
            ),
        ),
    );
    let hash = ctx.build(&ctx.recipe());
    let out = ctx
        .cmd()
        .args(["run", &hash, "--", "true"])
        .env_remove(var)
        .output()
        .unwrap();
    assert_failed_at(&out, "bundle start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("export {var}=")), "{stderr}");
    ctx.assert_nothing_left();
}

fn signals_at_every_step(sig: i32, name: &str) {
    let ctx = RunCtx::new(&format!("run-sig{sig}"));
    let hash = ctx.build(&ctx.recipe());
    for step in STEPS {
        let (child, _) = ctx.spawn_paused(step, &["run", &hash, "--", "true"], &[]);
        signal(&child, sig);
        let (code, _, stderr) = finish(child, Duration::from_secs(60));
        assert_eq!(code, Some(128 + sig), "{name} at {step}: {stderr}");
        // The bundle's start runs alongside the guest's steps: the line names every step
        // under way, the paused one among them.
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("bottle run: {name} during")))
            .unwrap_or_else(|| panic!("{name} at {step}: no signal line in {stderr}"));
        assert!(
            line.contains(&format!("step '{step}'")),
            "{name} at {step}: {line}"
        );
        let left = ctx.leftovers();
        assert!(left.is_empty(), "{name} at {step} left {left:?}:\n{stderr}");
    }
}

#[test]
fn sigint_at_every_step_unwinds_everything() {
    signals_at_every_step(libc::SIGINT, "SIGINT");
}

#[test]
fn sigterm_at_every_step_unwinds_everything() {
    signals_at_every_step(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigterm_while_the_command_runs() {
    let ctx = RunCtx::new("run-sig-cmd");
    let hash = ctx.build(&ctx.recipe());
    let mut child = ctx
        .cmd()
        .args(["run", &hash, "--", "sh", "-c", "echo started; sleep 60"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "started");
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    ctx.assert_nothing_left();
}

#[test]
fn sigkill_mid_run_then_down_all_leaves_nothing() {
    let ctx = RunCtx::new("run-sigkill");
    let hash = ctx.build(&ctx.recipe());
    for step in ["guest start", "command"] {
        let (mut child, _) = ctx.spawn_paused(step, &["run", &hash, "--", "true"], &[]);
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        // The run is dead and left its resources and its record.
        let left = ctx.leftovers();
        assert!(left.iter().any(|l| l.starts_with("container")), "{left:?}");
        assert!(left.iter().any(|l| l.starts_with("run record")), "{left:?}");
        let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
        assert_eq!(ps[0]["live"], false, "{ps}");
        let out = ctx.ok(&["down", "--all"]);
        assert!(out.contains("removed"), "{out}");
        ctx.assert_nothing_left();
    }
}

#[test]
fn down_stops_a_live_run_which_tears_itself_down() {
    let ctx = RunCtx::new("run-down-live");
    let hash = ctx.build(&ctx.recipe());
    let (child, _) = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let id = ps[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(ps[0]["live"], true);
    let out = ctx.ok(&["down", &id]);
    assert!(out.contains("stopped"), "{out}");
    let (code, _, _) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(143));
    ctx.assert_nothing_left();
}

#[test]
fn down_all_finds_what_a_run_left_without_its_record() {
    let ctx = RunCtx::new("run-orphan");
    let hash = ctx.build(&ctx.recipe());
    let (mut child, _) = ctx.spawn_paused("command", &["run", &hash, "--", "true"], &[]);
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    // The record is lost (say, the store folder was cleaned by hand): the labels remain.
    std::fs::remove_dir_all(ctx.store.join("v1/runs")).unwrap();
    let left = ctx.leftovers();
    assert!(left.iter().any(|l| l.starts_with("network")), "{left:?}");
    let out = ctx.ok(&["down", "--all", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["orphan"], true, "{out}");
    ctx.assert_nothing_left();
}
