//! `bottle sidecar --daemons git-gate`: the real binary on 127.0.0.1, Debian's real git
//! (clone, push) and curl against it, and a real OpenSSH server as the upstream
//! ([`crate::support::sshd`]) holding a bare repository.
//!
//! The upstream is `ssh://root@127.0.0.1:PORT/…`, its host key in a known_hosts file of the
//! test as `[127.0.0.1]:PORT`; git-gate's identity is the key the server authorizes.

use crate::git_gate_kit;
use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use git_gate_kit::*;
use support::sshd::{self, Sshd};

#[test]
fn pushes_through_git_gate_reach_the_upstream_and_refusals_name_their_rule() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let mut gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        1 << 20,
    );
    let work = clone(dir.path(), &gate);
    assert_eq!(
        std::fs::read_to_string(work.join("README")).unwrap(),
        "upstream\n"
    );

    // A new branch, then a fast-forward of it: both arrive.
    let w = |args: &[&str]| sshd::git(&work, args);
    w(&["checkout", "-q", "-b", "agent/x"]);
    std::fs::write(work.join("a.txt"), "one\n").unwrap();
    w(&["add", "a.txt"]);
    w(&["commit", "-qm", "agent's first"]);
    let out = git_out(&work, &["push", "origin", "agent/x"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sshd.rev("refs/heads/agent/x"),
        Some(w(&["rev-parse", "HEAD"]))
    );
    std::fs::write(work.join("a.txt"), "two\n").unwrap();
    w(&["commit", "-qam", "agent's second"]);
    let out = git_out(&work, &["push", "origin", "agent/x"]);
    assert!(out.status.success(), "{}", text(&out));
    let pushed = w(&["rev-parse", "HEAD"]);
    assert_eq!(
        sshd.rev("refs/heads/agent/x").as_deref(),
        Some(pushed.as_str())
    );

    // Each rule, in git push's own output; the upstream unchanged each time.
    refused(
        &work,
        &sshd,
        &["push", "origin", "HEAD:main"],
        r#"! [remote rejected] HEAD -> main (git-gate: branch "main" is not in this bottle's [[git-gate.upstreams]] branches ["agent/*"])"#,
    );
    w(&["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(work.join("a.txt"), "rewritten\n").unwrap();
    w(&["commit", "-qam", "a rewrite"]);
    let t = refused(
        &work,
        &sshd,
        &["push", "--force", "origin", "agent/x"],
        "git-gate: force push to \"agent/x\" refused",
    );
    assert!(t.contains("[remote rejected] agent/x -> agent/x"), "{t}");
    refused(
        &work,
        &sshd,
        &["push", "origin", ":agent/x"],
        "git-gate: deleting refs/heads/agent/x is refused",
    );
    w(&["tag", "v1"]);
    refused(
        &work,
        &sshd,
        &["push", "origin", "v1"],
        r#"git-gate: tag "v1" is refused"#,
    );
    refused(
        &work,
        &sshd,
        &["push", "origin", "HEAD:refs/notes/x"],
        "outside refs/heads/ and refs/tags/",
    );
    // All or nothing: agent/y alone would pass, with main it does not.
    let t = refused(
        &work,
        &sshd,
        &["push", "origin", "HEAD:agent/y", "HEAD:main"],
        "refuses a push as a whole",
    );
    assert!(t.contains("not pushed"), "{t}");
    assert_eq!(sshd.rev("refs/heads/agent/y"), None);
    assert_eq!(
        sshd.rev("refs/heads/agent/x").as_deref(),
        Some(pushed.as_str())
    );

    // The audit log: one line per ref update, allowed or refused by its rule; never the key.
    let events = gate.events();
    let rule_of = |name: &str, rule: &str| {
        events
            .iter()
            .any(|e| e["git"]["ref_name"] == name && e["rule"] == rule)
    };
    assert!(rule_of("refs/heads/agent/x", "upstream"), "{events:#?}");
    for (name, rule) in [
        ("refs/heads/main", "branches"),
        ("refs/heads/agent/x", "force-push"),
        ("refs/heads/agent/x", "deletion"),
        ("refs/tags/v1", "tags"),
        ("refs/notes/x", "ref-namespace"),
        ("refs/heads/agent/y", "together"),
    ] {
        assert!(
            rule_of(name, rule),
            "no {rule} line for {name}: {events:#?}"
        );
    }
    let allowed = events
        .iter()
        .filter(|e| e["decision"] == "allowed" && e["git"].is_object())
        .count();
    assert_eq!(allowed, 2, "{events:#?}");
    let key = std::fs::read_to_string(&sshd.client_key).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    let audit = std::fs::read_to_string(&gate.audit).unwrap();
    assert!(!audit.contains(secret_line) && !gate.log().contains(secret_line));
    assert!(gate.alive());
}

#[test]
fn bad_input_is_refused_clearly_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let mut gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        64 << 10,
    );
    let before = sshd.state();
    let zero = "0".repeat(40);
    let new = "1".repeat(40);
    let short_body_head =
        "POST /origin/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";

    // Not pkt-lines.
    let (status, body) = post(&gate, dir.path(), b"zzzz-not-a-pkt-line");
    assert_eq!(status, "400", "{body}");
    assert!(
        body.contains("git-gate: malformed push:") && body.contains("four hex digits"),
        "{body}"
    );
    // A good command, then bytes that are no pack: refused in git's report-status.
    let mut req = pkt(&format!(
        "{zero} {new} refs/heads/agent/z\0report-status side-band-64k\n"
    ));
    req.extend_from_slice(b"0000PACK\0\0\0\x02\0\0\0\x01garbage-garbage-garbage-garbage-garbage");
    let (status, body) = post(&gate, dir.path(), &req);
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("ng refs/heads/agent/z git-gate: malformed push: bad pack data"),
        "{body}"
    );
    assert!(body.contains("checksum"), "{body}");
    // A truncated pkt-line.
    let (status, body) = post(
        &gate,
        dir.path(),
        &pkt(&format!("{zero} {new} refs/heads/agent/z"))[..30],
    );
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("truncated pkt-line"), "{body}");
    // Larger than max_push_bytes (64 KiB): cut off with 413, whatever follows.
    let mut big = pkt(&format!("{zero} {new} refs/heads/agent/z\0report-status\n"));
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    let (status, body) = post(&gate, dir.path(), &big);
    assert_eq!(status, "413", "{body}");
    assert!(
        body.contains(
            "larger than this bottle's max_push_bytes for upstream \"origin\" (65536 bytes)"
        ),
        "{body}"
    );
    // A body that ends (the client half-closes) before its Content-Length: this exact 400,
    // and one audit line saying the request was malformed; the daemon stays.
    let logged = gate.events().len();
    let mut s = TcpStream::connect(("127.0.0.1", gate.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(70))).unwrap();
    s.write_all(short_body_head.as_bytes()).unwrap();
    s.write_all(&pkt(&format!("{zero} {new} refs/heads/agent/z")))
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("the connection ends (no reset, no timeout)");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert_eq!(
        body, "git-gate: the request's body cannot be read: error reading a body from connection\n",
        "{answer:?}"
    );
    let events = gate.events();
    let new_lines: Vec<_> = events[logged..]
        .iter()
        .map(|e| {
            (
                e["method"].clone(),
                e["decision"].clone(),
                e["rule"].clone(),
                e["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        new_lines,
        vec![(
            serde_json::json!("git-receive-pack"),
            serde_json::json!("invalid"),
            serde_json::json!("malformed"),
            serde_json::json!(400)
        )],
        "{events:#?}"
    );

    // A real git push over the limit fails, and nothing arrived.
    let work = clone(dir.path(), &gate);
    sshd::git(&work, &["checkout", "-q", "-b", "agent/big"]);
    let mut noise = vec![0u8; 200_000];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    std::fs::write(work.join("noise.bin"), noise).unwrap();
    sshd::git(&work, &["add", "noise.bin"]);
    sshd::git(&work, &["commit", "-qm", "big"]);
    let out = git_out(&work, &["push", "origin", "agent/big"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(sshd.state(), before, "something reached the upstream");

    // Still serving: a fetch's advertisement, and the audit log names each refusal.
    let out = git_out(dir.path(), &["ls-remote", &gate.url()]);
    assert!(
        out.status.success() && text(&out).contains("refs/heads/main"),
        "{}",
        text(&out)
    );
    assert!(gate.alive());
    let events = gate.events();
    for rule in ["malformed", "max-push-bytes"] {
        assert!(
            events.iter().any(|e| e["rule"] == rule),
            "no {rule}: {events:#?}"
        );
    }
}

#[test]
fn an_unknown_or_changed_host_key_is_refused_naming_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let fingerprint = {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(sshd.dir.join("host_ed25519.pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert!(fingerprint.starts_with("SHA256:"));
    // Another key under the upstream's name: a mismatch.
    let other = sshd::keygen(&dir.path().join("other_host"));
    let kh = format!("[127.0.0.1]:{} {other}\n", sshd.port);
    let gate = Gate::start(dir.path(), &sshd, &kh, 1 << 20);
    let before = sshd.state();
    let out = git_out(dir.path(), &["ls-remote", &gate.url()]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(&fingerprint), "{t}");
    assert!(t.contains("does NOT match"), "{t}");
    assert!(t.contains(&format!("127.0.0.1 port {}", sshd.port)), "{t}");
    drop(gate);

    // No line for it: unknown, and how to add it.
    let dir2 = dir.path().join("second");
    std::fs::create_dir_all(&dir2).unwrap();
    let gate = Gate::start(&dir2, &sshd, "", 1 << 20);
    let out = git_out(&dir2, &["clone", &gate.url(), "w"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(&fingerprint), "{t}");
    assert!(
        t.contains(&format!(
            "ssh-keyscan -p {} 127.0.0.1 >> KNOWN_HOSTS",
            sshd.port
        )),
        "{t}"
    );
    assert_eq!(sshd.state(), before);
    let events = gate.events();
    assert!(
        events
            .iter()
            .any(|e| e["rule"] == "host-key" && e["decision"] == "failed"),
        "{events:#?}"
    );
}
