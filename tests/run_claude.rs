//! The shipped Claude recipes: both hash under `--pure` (their guest is built `FROM scratch`,
//! with nothing to pull); a test copy of `recipes/claude-docker.toml` builds and runs the Claude
//! Code version `scripts/setup` pins; and — once pipelock intercepts TLS — `claude -p` in that
//! bottle talks to a stand-in for the Messages API on this host, which gets the real token
//! from the route while the guest holds only the placeholder.
//!
//! The guest needs the files `scripts/setup` fetches into `recipes/claude/fetched/` (Claude
//! Code's 373 MB binary, the glibc files it links against, busybox); without them, the tests
//! that build it say so and pass without checking anything.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::upstream::{Answer, Server, TestCa};
use support::*;

/// The repository's `recipes/` folder.
fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

/// Whether `scripts/setup` fetched the Claude guest's files; says why not when it did not.
fn claude_files_present(test: &str) -> bool {
    let bin = shipped().join("claude/fetched/claude");
    let present = bin.is_file();
    if !present {
        eprintln!(
            "{test}: SKIPPED, checking nothing: {} is missing; run scripts/setup (it fetches Claude Code with npm)",
            bin.display()
        );
    }
    present
}

/// The Claude Code version `scripts/setup` pins (`CLAUDE_CODE_VERSION=…`).
fn pinned_version() -> String {
    let setup =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup"))
            .unwrap();
    setup
        .lines()
        .find_map(|l| l.strip_prefix("CLAUDE_CODE_VERSION="))
        .expect("scripts/setup pins CLAUDE_CODE_VERSION")
        .trim()
        .to_string()
}

/// Copies (hard-links where it can) the shipped guest context `recipes/claude/` into the test's
/// recipe folder, its Dockerfile's first step after `FROM scratch` copying the test's `test-id`
/// (so the guard removes the test's whole build chain; the other steps are the shipped ones).
fn copy_claude_context(ctx: &TestContext) {
    let from = shipped().join("claude");
    let to = ctx.recipes.join("claude");
    for ent in walkdir::WalkDir::new(&from) {
        let ent = ent.unwrap();
        let dest = to.join(ent.path().strip_prefix(&from).unwrap());
        if ent.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if std::fs::hard_link(ent.path(), &dest).is_err() {
            std::fs::copy(ent.path(), &dest).unwrap();
        }
    }
    let dockerfile = std::fs::read_to_string(from.join("Dockerfile")).unwrap();
    let from_line = "FROM scratch\n";
    assert!(dockerfile.contains(from_line), "{dockerfile}");
    std::fs::remove_file(to.join("Dockerfile")).unwrap();
    std::fs::write(
        to.join("Dockerfile"),
        dockerfile.replacen(
            from_line,
            &format!("{from_line}COPY test-id {}\n", ctx.test_id_path),
            1,
        ),
    )
    .unwrap();
    std::fs::copy(ctx.recipes.join("guest/test-id"), to.join("test-id")).unwrap();
}

/// `recipes/claude-docker.toml` as a table, renamed `name`, its git-gate identities a key of
/// the test and its known_hosts a file naming every host (a run checks and mounts them).
fn claude_docker_recipe(ctx: &TestContext, name: &str) -> toml::Table {
    let text = std::fs::read_to_string(shipped().join("claude-docker.toml")).unwrap();
    let mut recipe: toml::Table = text.parse().unwrap();
    recipe.insert("name".into(), name.into());
    let (key, known) = ctx.upstream_files();
    if let Some(ups) = recipe
        .get_mut("git-gate")
        .and_then(|g| g.get_mut("upstreams"))
        .and_then(|u| u.as_array_mut())
    {
        for up in ups {
            let up = up.as_table_mut().unwrap();
            up.insert("identity".into(), key.to_str().unwrap().into());
            up.insert("known_hosts".into(), known.to_str().unwrap().into());
        }
    }
    recipe
}

/// The route of `recipe` for `host`.
fn route<'a>(recipe: &'a mut toml::Table, host: &str) -> &'a mut toml::Table {
    recipe["egress"]["routes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|r| r.as_table_mut().unwrap())
        .find(|r| r["host"].as_str() == Some(host))
        .unwrap_or_else(|| panic!("recipes/claude-docker.toml has no route for {host}"))
}

#[test]
fn the_shipped_claude_recipes_hash_pure() {
    let ctx = TestContext::new("claude-hash-pure");
    for recipe in ["claude.toml", "claude-docker.toml"] {
        let path = shipped().join(recipe);
        let out = ctx.output(&["hash", "--pure", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{recipe} does not hash under --pure: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out).trim().len(), 64, "{}", stdout(&out));
    }
}

#[test]
fn the_claude_docker_guest_runs_the_pinned_claude_code() {
    if !claude_files_present("the_claude_docker_guest_runs_the_pinned_claude_code") {
        return;
    }
    let ctx = TestContext::new("claude-version");
    copy_claude_context(&ctx);
    let recipe = claude_docker_recipe(&ctx, "claude-version");
    let path = ctx.write_recipe("claude.toml", &toml::to_string(&recipe).unwrap());
    let hash = ctx.build(&path);

    // A run hands the route's token to the bundle, and refuses to start without it.
    let token_env = route(&mut recipe.clone(), "api.anthropic.com")["token_env"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cmd = ctx.cmd();
    cmd.env(&token_env, "any-value");
    let out = ctx.output_of(cmd, &["run", &hash, "--", "claude", "--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{} (Claude Code)\n", pinned_version()),
        "{}",
        stderr(&out)
    );
    ctx.assert_nothing_left();
}

#[test]
fn claude_p_in_a_bottle_gets_its_answer_with_the_real_token_upstream() {
    if !claude_files_present("claude_p_in_a_bottle_gets_its_answer_with_the_real_token_upstream") {
        return;
    }
    const API: &str = "api.anthropic.com";
    const REPLY: &str = "The stand-in answers: hello from the host.";
    const PROMPT: &str = "Say hello to the bottle test.";
    let ctx = TestContext::new("claude-messages");
    copy_claude_context(&ctx);
    let ca = TestCa::new("claude-messages upstream CA");
    std::fs::write(ctx.recipes.join("anthropic-ca.pem"), ca.pem()).unwrap();
    let standin = Server::tls(Answer::Messages(REPLY.into()), &ca, &[API]);

    // The shipped recipe, plus: the API's name resolves in the bundle to this host, egress
    // trusts the stand-in's CA, and Claude Code is pointed at the stand-in's port on that name.
    let mut recipe = claude_docker_recipe(&ctx, "claude-messages");
    let api_route = route(&mut recipe, API);
    api_route.insert("upstream_ca".into(), "anthropic-ca.pem".into());
    let token_env = api_route["token_env"].as_str().unwrap().to_string();
    let header = api_route
        .get("header")
        .and_then(|h| h.as_str())
        .unwrap_or("Authorization")
        .to_string();
    let scheme = api_route
        .get("scheme")
        .and_then(|h| h.as_str())
        .unwrap_or("Bearer")
        .to_string();
    let guest = recipe["guest"].as_table_mut().unwrap();
    let env = guest
        .entry("env")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap();
    env.insert(
        "ANTHROPIC_BASE_URL".into(),
        format!("https://{API}:{}", standin.port).into(),
    );
    let mut hosts = toml::Table::new();
    hosts.insert(API.into(), "host-gateway".into());
    let mut network = toml::Table::new();
    network.insert("hosts".into(), hosts.into());
    recipe.insert("network".into(), network.into());
    let path = ctx.write_recipe("claude.toml", &toml::to_string(&recipe).unwrap());
    let hash = ctx.build(&path);

    let var = format!("BOTTLE_TEST_CLAUDE_{}", std::process::id());
    // Built from pieces so that this test's own argv never holds it.
    let token = format!(
        "sk-ant-oat01-{}-{}",
        "test",
        blake3::hash(var.as_bytes()).to_hex()
    );
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
    cmd.env(&token_env, &token);
    let run = Spawned::start(cmd, &["run", &hash, "--", "sh", "-c", script, "sh", PROMPT]);
    let (code, out, err) = run.finish(Duration::from_secs(600));
    let claude = |out: &str| {
        format!(
            "claude's stdout:\n{}\nits stderr:\n{}\nbottle's stderr:\n{err}",
            try_section(out, "answer").unwrap_or("(none)"),
            try_section(out, "stderr").unwrap_or("(none)")
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
    let want = if scheme.is_empty() {
        token.clone()
    } else {
        format!("{scheme} {token}")
    };
    for r in &seen {
        assert_eq!(r.header(&header), Some(want.as_str()), "{}", r.text());
        assert!(
            !r.text().contains("egress-placeholder"),
            "the stand-in got the placeholder:\n{}",
            r.text()
        );
    }

    // The guest: the placeholder under the token's names, the token nowhere.
    let env = section(&out, "env");
    for name in [token_env.as_str(), "CLAUDE_CODE_OAUTH_TOKEN"] {
        assert!(
            env.lines()
                .any(|l| l == format!("{name}=egress-placeholder")),
            "{name} in the guest:\n{env}"
        );
    }
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the token reached the guest or bottle's output"
    );
    ctx.assert_nothing_left();
}
