//! The shipped Claude recipes (see `support::claude`): both hash under `--pure` (their guest is
//! built `FROM scratch`, with nothing to pull); the docker twin's guest runs the Claude Code
//! version its fetch step pins, with the tools the agent needs (git and its HTTP helper, curl,
//! bash, ripgrep); a run without the token refuses to start and creates nothing; and
//! `claude -p` in that bottle talks to a stand-in for the Messages API on this host, which gets
//! the real token from the route while the guest holds only the placeholder.
//!
//! Nothing here is skipped: the guest's files come from the recipe's own `prepare` step, which
//! `bottle build` runs (and `scripts/setup --tests` runs once ahead).

use crate::support;

use std::time::Duration;

use support::claude::{self, API, StandIn};
use support::upstream::{Answer, Server, TestCa};
use support::*;

/// The route's token variable, as the shipped recipe names it.
const TOKEN_ENV: &str = "CLAUDE_CODE_OAUTH_TOKEN";

#[test]
fn the_shipped_claude_recipes_hash_pure() {
    let ctx = TestContext::new("claude-hash-pure");
    let mut hashes = Vec::new();
    for recipe in ["claude.toml", "claude-docker.toml"] {
        let path = claude::shipped().join(recipe);
        let out = ctx.output(&["hash", "--pure", "--json", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{recipe} does not hash under --pure: {}",
            stderr(&out)
        );
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        hashes.push(v);
    }
    // Twins by construction: one guest context, one config; only the backend differs.
    let (smolvm, docker) = (&hashes[0], &hashes[1]);
    assert_eq!(docker["name"], "claude-docker", "{docker}");
    assert_eq!(smolvm["name"], "claude", "{smolvm}");
    assert_eq!(
        smolvm["components"]["config"], docker["components"]["config"],
        "the twins' configs differ:\n{smolvm}\n{docker}"
    );
    assert_ne!(smolvm["components"]["guest"], docker["components"]["guest"]);
}

#[test]
fn the_claude_guest_runs_the_pinned_claude_code_with_its_tools_and_needs_the_token() {
    let ctx = TestContext::new("claude-version");
    let repo = claude::local_repo(&ctx);
    let path = claude::recipes(&ctx, "claude-version", &repo, None);
    let hash = ctx.build(&path);

    // Without the token (unset, then empty) the run refuses to start, naming the variable,
    // and leaves nothing behind.
    for value in [None, Some("")] {
        let mut cmd = ctx.cmd();
        match value {
            None => cmd.env_remove(TOKEN_ENV),
            Some(v) => cmd.env(TOKEN_ENV, v),
        };
        let out = ctx.output_of(cmd, &["run", &hash, "--", "true"]);
        assert!(!out.status.success(), "ran without a token ({value:?})");
        let err = stderr(&out);
        assert!(err.contains(TOKEN_ENV), "the variable is not named: {err}");
        ctx.assert_nothing_left();
    }

    let script = r#"claude --version; git --version; curl --version | head -1; bash --version | head -1
rg --version | head -1; git ls-remote --heads origin; pwd; git -C ~/work log --oneline"#;
    let mut cmd = ctx.cmd();
    cmd.env(TOKEN_ENV, claude::token("version"));
    let out = ctx.output_of(cmd, &["run", &hash, "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{} (Claude Code)", claude::pinned_version()).as_str()),
        "{text}"
    );
    for tool in ["git version", "curl ", "GNU bash", "ripgrep "] {
        assert!(
            lines.iter().any(|l| l.starts_with(tool)),
            "no {tool}:\n{text}"
        );
    }
    // The workspace: the local upstream's main, cloned through the gate; the agent starts in it.
    let head = claude::git(&repo, &["rev-parse", "main"]);
    assert!(text.contains(&format!("{head}\trefs/heads/main")), "{text}");
    assert!(lines.contains(&"/home/node/work"), "{text}");
    assert!(text.contains("first"), "{text}");
    ctx.assert_nothing_left();
}

#[test]
fn claude_p_in_a_bottle_gets_its_answer_with_the_real_token_upstream() {
    const REPLY: &str = "The stand-in answers: hello from the host.";
    const PROMPT: &str = "Say hello to the bottle test.";
    let ctx = TestContext::new("claude-messages");
    let repo = claude::local_repo(&ctx);
    let ca = TestCa::new("claude-messages upstream CA");
    let standin = Server::tls(Answer::Messages(REPLY.into()), &ca, &[API]);
    let standin_at = StandIn {
        ca: &ca,
        port: standin.port,
    };
    let path = claude::recipes(&ctx, "claude-messages", &repo, Some(standin_at));
    let hash = ctx.build(&path);

    let token = claude::token("messages");
    // claude's answer, then what the guest holds: its env and every file it could have written.
    // (claude's output goes to files: it makes its stdout non-blocking, which the shell shares.)
    let script = r#"claude -p "$1" </dev/null >/tmp/answer.txt 2>/tmp/answer.err; c=$?
echo "== exit=$c"
echo "== answer"; cat /tmp/answer.txt
echo "== stderr"; cat /tmp/answer.err
echo "== env"; env
echo "== files"; find /home/node /tmp /etc -type f -exec cat {} + 2>/dev/null
echo "== end"; exit $c"#;
    let mut cmd = ctx.cmd();
    cmd.env(TOKEN_ENV, &token);
    let run = Spawned::start(cmd, &["run", &hash, "--", "sh", "-c", script, "sh", PROMPT]);
    let (code, out, err) = run.finish(Duration::from_secs(600));
    let claude = |out: &str| {
        format!(
            "claude's stdout:\n{}\nits stderr:\n{}\nbottle's stderr:\n{err}\nthe run's whole stdout:\n{}",
            try_section(out, "answer").unwrap_or("(none)"),
            try_section(out, "stderr").unwrap_or("(none)"),
            out.chars().take(3000).collect::<String>()
        )
    };
    assert!(out.contains("== exit=0\n"), "{}", claude(&out));
    assert_eq!(code, Some(0), "{}", claude(&out));
    assert_eq!(section(&out, "answer").trim(), REPLY, "{}", claude(&out));

    // The stand-in: Claude Code's request, the real token in the route's header, never the
    // placeholder.
    let seen = standin.requests();
    let asks: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.target.starts_with("/v1/messages"))
        .collect();
    assert!(!asks.is_empty(), "no Messages API request: {seen:#?}");
    assert!(
        asks.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(PROMPT)),
        "no request carries the prompt: {seen:#?}"
    );
    let want = format!("Bearer {token}");
    for r in &seen {
        assert_eq!(
            r.header("authorization"),
            Some(want.as_str()),
            "{}",
            r.text()
        );
        assert!(
            !r.text().contains("egress-placeholder"),
            "the stand-in got the placeholder:\n{}",
            r.text()
        );
    }

    // The guest: the placeholder under the token's name, the token nowhere.
    let env = section(&out, "env");
    assert!(
        env.lines()
            .any(|l| l == format!("{TOKEN_ENV}=egress-placeholder")),
        "{TOKEN_ENV} in the guest:\n{env}"
    );
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the token reached the guest or bottle's output"
    );
    ctx.assert_nothing_left();
}
