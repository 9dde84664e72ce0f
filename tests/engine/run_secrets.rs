//! Secrets: a token value given in the host env of `bottle run` reaches the bundle's daemon
//! process (a request from the guest arrives at a TLS server of this test carrying exactly
//! that value), and appears in no process's argv (every `/proc/*/cmdline`, scanned during the
//! run), no file of the store, no line bottle prints (at `-vv`, its debug lines shown), and
//! nowhere in the guest.
//! The run's CAs are minted for the run: keys mode 0600 in a 0700 folder of the run, mounted
//! into the bundle only, and gone at teardown.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bottle::config::ca_files;
use support::upstream::{Answer, Server, TestCa};
use support::*;

/// The route's upstream: resolved by the bundle only, to this host.
const UPSTREAM: &str = "api.secrets.test";

fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

fn cmdlines_containing(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path().join("cmdline"))
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(format!("{name}: {}", String::from_utf8_lossy(&bytes)));
        }
    }
    hits
}

/// The docker CLI's stderr (where `docker logs` prints a container's stderr).
fn docker_stderr(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_token_reaches_the_bundle_and_nothing_else() {
    let ctx = TestContext::new("run-secrets");
    ctx.use_tools_guest();
    let ca = TestCa::new("run-secrets upstream CA");
    std::fs::write(ctx.recipes.join("upstream-ca.pem"), ca.pem()).unwrap();
    let server = Server::tls(Answer::Text("ok\n".into()), &ca, &[UPSTREAM]);
    let var = format!("BOTTLE_TEST_TOKEN_{}", std::process::id());
    // Built from pieces so that this test's own argv never holds it.
    let value = format!(
        "tok{}-{}",
        "en-value",
        blake3::hash(var.as_bytes()).to_hex()
    );
    ctx.write_recipe(
        "r.toml",
        &recipe(
            "run-secrets",
            &format!(
                "\n[[egress.routes]]\nhost = \"{UPSTREAM}\"\ntoken_env = \"{var}\"\nheader = \"Authorization\"\nscheme = \"Bearer\"\nupstream_ca = \"upstream-ca.pem\"\n\n[network]\nhosts = {{ \"{UPSTREAM}\" = \"host-gateway\" }}\n"
            ),
        ),
    );
    let hash = ctx.build(&ctx.recipe());
    let child = ctx.spawn_paused(
        "command",
        &["-vv", "run", &hash, "--", "true"],
        &[(&var, &value)],
    );
    let ps: serde_json::Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    let run_id = ps[0]["run_id"].as_str().unwrap().to_string();
    let bundle = format!("bottle-{run_id}-bundle");
    let guest = format!("bottle-{run_id}-guest");

    // The bundle got it on its stdin: a request the guest makes (with the placeholder)
    // reaches the upstream with exactly the value, through the bundle's daemon; neither the
    // container's config (`docker inspect`) nor the daemon's environment holds the value.
    let out = docker(&[
        "exec",
        &guest,
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-H",
        &format!("Authorization: Bearer ${var}-from-the-guest"),
        &format!("https://{UPSTREAM}:{}/check", server.port),
    ]);
    assert_eq!(out, "ok\n", "the guest's request through the bundle");
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Compared, not printed: a failure shows lengths only.
    let got = seen[0].header("authorization").unwrap_or_default();
    assert!(
        got == format!("Bearer {value}"),
        "the upstream did not get the token's value: {} bytes where {} were due",
        got.len(),
        "Bearer ".len() + value.len()
    );
    let logs = docker(&["logs", &bundle]) + &docker_stderr(&["logs", &bundle]);
    assert!(
        logs.contains("1 secret(s)"),
        "the bundle got no secret:\n{logs}"
    );
    assert!(!logs.contains(&value), "the bundle's log holds the token");
    let inspect = docker(&["inspect", &bundle]);
    assert!(
        !inspect.contains(&value),
        "docker inspect of the bundle shows the token"
    );
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &bundle]);
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    assert!(
        !environ.windows(value.len()).any(|w| w == value.as_bytes()),
        "the bundle's environment holds the token"
    );
    // No argv anywhere on this machine holds it (the bundle's and the guest's included).
    let hits = cmdlines_containing(value.as_bytes());
    assert!(hits.is_empty(), "the token is on an argv: {hits:?}");
    // Nowhere in the guest: its env, its processes' env, its files.
    let out = docker(&[
        "exec",
        "-u",
        "0",
        &guest,
        "sh",
        "-c",
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo FILES; grep -rlF \"$1\" /etc /home /tmp /root 2>/dev/null; echo END",
        "scan",
        &value,
    ]);
    let files = out.split("FILES").nth(1).unwrap_or_default().trim();
    assert_eq!(files, "END", "guest files hold the token: {files}");
    let out = out.split("FILES").next().unwrap_or_default().to_string();
    assert!(!out.contains(&value), "the guest holds the token:\n{out}");
    // Under the token's name, the guest holds the placeholder.
    assert!(
        out.contains(&format!("{var}=egress-placeholder")),
        "the guest lacks the placeholder under {var}:\n{out}"
    );
    let inspect = docker(&["inspect", "--format", "{{json .Config.Env}}", &guest]);
    assert!(!inspect.contains(&value), "{inspect}");
    // No file of the store (entry, run record, run folders).
    let hits = files_containing(&ctx.store, value.as_bytes());
    assert!(hits.is_empty(), "the token is in store files: {hits:?}");

    // The run's CA: key private, in the run's own folder.
    let ca = ctx.store().runs().join(&run_id).join("ca");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca), 0o700);
    for (file, want) in [
        (ca_files::PIPELOCK_KEY, 0o600),
        (ca_files::PIPELOCK_CERT, 0o644),
    ] {
        assert_eq!(mode(&ca.join(file)), want, "{file}");
    }
    // The key is the bundle's only: no other file of the store, nothing in the guest.
    let key = std::fs::read(ca.join(ca_files::PIPELOCK_KEY)).unwrap();
    let pem_body: Vec<u8> = key
        .split(|b| *b == b'\n')
        .nth(1)
        .expect("a PEM body line")
        .to_vec();
    let hits: Vec<String> = files_containing(&ctx.store, &pem_body)
        .into_iter()
        .filter(|p| !p.ends_with(ca_files::PIPELOCK_KEY))
        .collect();
    assert!(hits.is_empty(), "the CA key is copied to {hits:?}");
    let out = docker(&[
        "exec",
        "-u",
        "0",
        &guest,
        "sh",
        "-c",
        "grep -rlF \"$1\" /etc /home /tmp /root 2>/dev/null; echo END",
        "scan",
        &String::from_utf8_lossy(&pem_body),
    ]);
    assert_eq!(out.trim(), "END", "the guest holds the CA key: {out}");

    child.signal(libc::SIGTERM);
    let (code, stdout, stderr) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(143), "{stderr}");
    assert!(
        !stdout.contains(&value) && !stderr.contains(&value),
        "bottle printed the token"
    );
    // `-vv` took effect: bottle's debug lines (its teardown's, among others) were printed,
    // and none held the token (checked above).
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("undo:")),
        "no debug line at -vv:\n{stderr}"
    );
    ctx.assert_nothing_left();
    assert!(!ca.exists(), "the run's CA outlived it");
    let hits = files_containing(&ctx.store, value.as_bytes());
    assert!(hits.is_empty(), "the token is in store files: {hits:?}");
}
