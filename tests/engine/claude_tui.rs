//! Claude Code as its user meets it: the shipped docker Claude recipe (see `support::claude`)
//! run with `bottle run` on a real terminal (tmux), against a stand-in API on this host.
//!
//! - The first screen is the session, or the bypass-permissions confirmation (the user's
//!   consent): no onboarding, no folder-trust question, no "Unable to connect".
//! - A typed prompt shows the stand-in's reply; `/exit` ends the run, which leaves nothing.
//! - The stand-in got the real token on every request, never the placeholder.
//!
//! And the agent's way out, in the same guest: the provisioned workspace, a commit, a push of
//! `agent/x` that lands in the local upstream repository on the host, a push to `main` refused;
//! a supervise request filed with the guide's curl line, and its approval letting the next
//! request through.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::claude::{self, API, StandIn};
use support::upstream::{Answer, Server, TestCa};
use support::*;

const TOKEN_ENV: &str = "CLAUDE_CODE_OAUTH_TOKEN";

/// A tmux server of the test's own (its socket under the test's folder), started with the
/// environment given, running one command in a 120×40 window. Killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, envs: &[(&str, &str)], command: &str) -> Tmux {
        let socket = dir.join("tmux.sock");
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&socket).args(["-f", "/dev/null"]);
        cmd.args(["new-session", "-d", "-x", "120", "-y", "40", command]);
        // The server inherits this environment, and the window's shell inherits the server's.
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .env("HOME", std::env::var("HOME").unwrap_or_default());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .expect("tmux (scripts/setup --tests installs it)");
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The window as a person sees it now.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Waits until the screen shows one of `wanted`; returns the screen. Panics, showing it,
    /// after `timeout` or when it shows one of `never`.
    fn wait_for(&self, wanted: &[&str], never: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if let Some(bad) = never.iter().find(|n| s.contains(*n)) {
                panic!("the screen shows {bad:?}:\n{s}");
            }
            if wanted.iter().any(|w| s.contains(w)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "none of {wanted:?} within {timeout:?}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Types text literally (no key names), then Enter.
    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
        std::thread::sleep(Duration::from_millis(300));
        self.keys(&["Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// What a first screen must never be.
const NOT_THE_SESSION: &[&str] = &[
    "Unable to connect",
    "Choose the text style",
    "Do you trust the files",
    "Select login method",
];

#[test]
fn claude_codes_tui_answers_a_typed_prompt_and_exits_clean() {
    const REPLY: &str = "The stand-in answers the typed prompt.";
    const PROMPT: &str = "Say hello from the terminal";
    let ctx = TestContext::new("claude-tui");
    let repo = claude::local_repo(&ctx);
    let ca = TestCa::new("claude-tui upstream CA");
    let standin = Server::tls(Answer::Messages(REPLY.into()), &ca, &[API]);
    let at = StandIn {
        ca: &ca,
        port: standin.port,
    };
    let path = claude::recipes(&ctx, "claude-tui", &repo, Some(at));
    let hash = ctx.build(&path);

    let token = claude::token("tui");
    let exit_file = ctx.dir.path().join("exit-code");
    let command = format!("'{BIN}' run {hash}; echo $? > '{}'", exit_file.display());
    let store = ctx.store.to_str().unwrap().to_string();
    let smolvm = ctx.smolvm_state.to_str().unwrap().to_string();
    let tmux = Tmux::start(
        ctx.dir.path(),
        &[
            ("BOTTLE_STORE", &store),
            ("BOTTLE_SMOLVM_STATE_DIR", &smolvm),
            ("BOTTLE_CONFIG", "/dev/null"),
            (TOKEN_ENV, &token),
        ],
        &command,
    );

    // The first screen: the bypass confirmation (the user's consent) or the session itself.
    let first = tmux.wait_for(
        &["Bypass Permissions mode", "bypass permissions on"],
        NOT_THE_SESSION,
        Duration::from_secs(300),
    );
    if first.contains("Bypass Permissions mode") {
        assert!(first.contains("Yes, I accept"), "{first}");
        tmux.keys(&["Down"]);
        std::thread::sleep(Duration::from_millis(300));
        tmux.keys(&["Enter"]);
    }
    let session = tmux.wait_for(
        &["bypass permissions on"],
        NOT_THE_SESSION,
        Duration::from_secs(60),
    );
    assert!(
        session.contains("~/work"),
        "not in the workspace:\n{session}"
    );

    tmux.type_line(PROMPT);
    let answered = tmux.wait_for(&[REPLY], NOT_THE_SESSION, Duration::from_secs(120));
    assert!(answered.contains(PROMPT), "{answered}");

    tmux.type_line("/exit");
    let deadline = Instant::now() + Duration::from_secs(120);
    let code = loop {
        if let Ok(c) = std::fs::read_to_string(&exit_file) {
            break c.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end after /exit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, "0", "bottle run exited {code}");
    ctx.assert_nothing_left();

    // Every request the stand-in served carried the real token, never the placeholder.
    let seen = standin.requests();
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.target.starts_with("/v1/messages")),
        "no Messages API request: {seen:#?}"
    );
    let want = format!("Bearer {token}");
    for r in &seen {
        assert_eq!(
            r.header("authorization"),
            Some(want.as_str()),
            "{}",
            r.text()
        );
        assert!(!r.text().contains("egress-placeholder"), "{}", r.text());
    }
}

#[test]
fn the_agent_pushes_an_agent_branch_home_and_asks_a_person() {
    let ctx = TestContext::new("claude-way-out");
    let repo = claude::local_repo(&ctx);
    let main_before = claude::git(&repo, &["rev-parse", "main"]);
    let server = Server::plain(Answer::Text("reached".into()));
    let path = claude::recipes(&ctx, "claude-way-out", &repo, None);
    // A host the recipe does not allow, mapped to this host: what the agent asks for.
    let mut base: toml::Table = std::fs::read_to_string(ctx.recipes.join("claude.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut hosts = toml::Table::new();
    hosts.insert("asked.test".into(), "host-gateway".into());
    let mut network = toml::Table::new();
    network.insert("hosts".into(), hosts.into());
    base.insert("network".into(), network.into());
    std::fs::write(
        ctx.recipes.join("claude.toml"),
        toml::to_string(&base).unwrap(),
    )
    .unwrap();
    let hash = ctx.build(&path);

    let url = format!("http://asked.test:{}/", server.port);
    // As the agent's instructions say: commit in ~/work, push agent/<topic>; then the refused
    // host, the request line from the guide, and the host again once it is approved.
    let script = r#"cd ~/work || exit 9
echo "change" >> README.md && git commit -qam "agent change" || exit 8
echo "== push-agent"; git push origin HEAD:agent/x 2>&1; echo "exit=$?"
echo "== push-main"; git push origin HEAD:main 2>&1; echo "exit=$?"
echo "== before"; curl -sS -o /dev/null -w '%{http_code}\n' "$1"
echo "== request"; curl -sS -X POST "$BOTTLE_SUPERVISE_URL/v1/requests?wait=120" -H 'content-type: application/json' -d '{"kind":"allow_host","host":"asked.test","why":"the test"}'; echo
echo "== after"; curl -sS "$1"; echo
echo "== end""#;
    let mut cmd = ctx.cmd();
    cmd.env(TOKEN_ENV, claude::token("way-out"));
    let run = Spawned::start(cmd, &["run", &hash, "--", "sh", "-c", script, "sh", &url]);

    // The person: the pending request, approved.
    let (run_id, _) = ctx.wait_live();
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        let listed: serde_json::Value =
            serde_json::from_str(&ctx.ok(&["supervise", &run_id, "--json"])).unwrap();
        if let Some(r) = listed
            .as_array()
            .and_then(|a| a.iter().find(|r| r["host"] == "asked.test"))
        {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no request filed: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    ctx.ok(&["supervise", &run_id, "--approve", &id]);
    let (code, out, err) = run.finish(Duration::from_secs(300));
    assert_eq!(code, Some(0), "{out}\n{err}");

    let pushed = section(&out, "push-agent");
    assert!(pushed.contains("exit=0"), "{pushed}");
    let agent = claude::git_maybe(&repo, &["rev-parse", "refs/heads/agent/x"])
        .unwrap_or_else(|| panic!("agent/x did not land in the repository:\n{pushed}"));
    assert_eq!(
        claude::git(&repo, &["log", "-1", "--format=%s", &agent]),
        "agent change"
    );
    let refused = section(&out, "push-main");
    assert!(
        // Refused by the gate's policy, naming the rule (not by the repository's own checks).
        refused.contains("git-gate: branch \"main\"") && !refused.contains("exit=0"),
        "{refused}"
    );
    assert_eq!(claude::git(&repo, &["rev-parse", "main"]), main_before);

    assert_eq!(section(&out, "before").trim(), "403", "{out}");
    assert!(section(&out, "request").contains("\"approved\""), "{out}");
    assert_eq!(section(&out, "after").trim(), "reached", "{out}");
    ctx.assert_nothing_left();
}
