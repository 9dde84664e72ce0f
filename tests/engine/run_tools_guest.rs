//! Real network clients in a guest: a `FROM scratch` guest holding Debian's curl and git (with
//! their libraries, [`TestContext::use_tools_guest`]) reaches a server this test starts on the
//! host, by a name only the bundle resolves (`[network] hosts = { "upstream.test" =
//! "host-gateway" }`), through the bundle's pipelock — plain HTTP today. The HTTPS test waits
//! for pipelock's TLS interception: the guest trusts only the run's CA, the upstream only the
//! test's own, and egress must put the real token in the route's header upstream and keep it
//! from everything that comes back.

use crate::support;

use std::process::Command;

use support::upstream::{Answer, Server, TestCa};
use support::*;

/// The upstream's name: resolved by the bundle only, to the host.
const UPSTREAM: &str = "upstream.test";
const BODY: &str = "hello-through-the-bundle";

/// A docker-guest recipe for the tools guest that may reach [`UPSTREAM`]; `extra` appended.
fn tools_recipe(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["curl", "--version"]

[pipelock]
allow = ["{UPSTREAM}"]

[network]
hosts = {{ "{UPSTREAM}" = "host-gateway" }}
{extra}"#
    )
}

#[test]
fn curl_in_a_scratch_guest_reaches_a_host_server_through_the_bundle() {
    let ctx = TestContext::new("tools-curl");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text(BODY.into()));
    ctx.write_recipe("r.toml", &tools_recipe("tools-curl", ""));
    let hash = ctx.build(&ctx.recipe());

    // The guest runs Debian's curl itself: the host's version line, with TLS.
    let host = Command::new("/usr/bin/curl")
        .arg("--version")
        .output()
        .unwrap();
    let host_first = stdout(&host).lines().next().unwrap_or_default().to_string();
    let out = ctx.ok(&["run", &hash, "--", "curl", "--version"]);
    assert_eq!(out.lines().next(), Some(host_first.as_str()), "{out}");
    let features = out
        .lines()
        .find(|l| l.starts_with("Features:"))
        .unwrap_or_default();
    assert!(
        features.contains("SSL"),
        "curl without TLS in the guest:\n{out}"
    );

    // Through the proxy by name; without it, the name means nothing in the guest.
    let url = format!("http://{UPSTREAM}:{}/hello?from=guest", server.port);
    let script = r#"echo "== proxied"; curl -sS --max-time 30 "$1"; c=$?; echo; echo "== exit=$c"
echo "== direct"; curl -sS --noproxy '*' --max-time 15 "$1"; echo "== direct-exit=$?""#;
    let out = ctx.ok(&["run", &hash, "--", "sh", "-c", script, "sh", &url]);
    assert_eq!(section(&out, "proxied").trim(), BODY, "{out}");
    assert!(out.contains("== exit=0"), "{out}");
    assert!(
        !out.contains("== direct-exit=0"),
        "the guest reached {UPSTREAM} without the bundle:\n{out}"
    );

    let seen = server.requests();
    assert_eq!(seen.len(), 1, "one request, the proxied one: {seen:#?}");
    let req = &seen[0];
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("GET", "/hello?from=guest")
    );
    assert_eq!(
        req.header("host"),
        Some(format!("{UPSTREAM}:{}", server.port).as_str())
    );
    let version = host_first.split_whitespace().nth(1).unwrap_or("?");
    assert_eq!(
        req.header("user-agent"),
        Some(format!("curl/{version}").as_str()),
        "{req:#?}"
    );
    // The hop to the proxy is the guest's business only.
    assert_eq!(req.header("proxy-connection"), None, "{req:#?}");
    ctx.assert_nothing_left();
}

#[test]
fn git_in_a_scratch_guest_clones_over_http_through_the_bundle() {
    let ctx = TestContext::new("tools-git");
    ctx.use_tools_guest();
    // A repository served as plain files: git's dumb HTTP protocol.
    let work = ctx.dir.path().join("work");
    let served = ctx.dir.path().join("served");
    let git = |args: &[&str]| {
        let out = Command::new("/usr/bin/git")
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", ctx.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    };
    let w = work.to_str().unwrap();
    git(&["init", "-q", "-b", "main", w]);
    std::fs::write(work.join("README"), "cloned-through-the-bundle\n").unwrap();
    git(&["-C", w, "add", "README"]);
    git(&[
        "-C",
        w,
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@t.invalid",
        "commit",
        "-qm",
        "first commit",
    ]);
    let bare = served.join("repo.git");
    git(&["clone", "-q", "--bare", w, bare.to_str().unwrap()]);
    git(&["--git-dir", bare.to_str().unwrap(), "update-server-info"]);
    let server = Server::plain(Answer::Files(served));
    ctx.write_recipe("r.toml", &tools_recipe("tools-git", ""));
    let hash = ctx.build(&ctx.recipe());

    let url = format!("http://{UPSTREAM}:{}/repo.git", server.port);
    let script = r#"git clone -q "$1" repo && cat repo/README && git -C repo log --format=%s"#;
    let out = ctx.ok(&["run", &hash, "--", "sh", "-c", script, "sh", &url]);
    assert_eq!(out, "cloned-through-the-bundle\nfirst commit\n");

    // git-remote-http asked first for the smart protocol, then fetched the files.
    let seen = server.requests();
    let first = seen.first().expect("git asked the server");
    assert_eq!(first.target, "/repo.git/info/refs?service=git-upload-pack");
    assert!(
        first
            .header("user-agent")
            .is_some_and(|u| u.starts_with("git/")),
        "{first:#?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.target.starts_with("/repo.git/objects/")),
        "no object fetched: {seen:#?}"
    );
    ctx.assert_nothing_left();
}

#[test]
fn https_through_the_bundle_carries_the_real_token_upstream_and_never_back() {
    let ctx = TestContext::new("tools-https-egress");
    ctx.use_tools_guest();
    let ca = TestCa::new("tools-https-egress upstream CA");
    std::fs::write(ctx.recipes.join("upstream-ca.pem"), ca.pem()).unwrap();
    let server = Server::tls(Answer::Echo, &ca, &[UPSTREAM]);
    let var = format!("BOTTLE_TEST_TOKEN_{}", std::process::id());
    // Built from pieces so that this test's own argv never holds it.
    let token = format!(
        "tok{}-{}",
        "en-value",
        blake3::hash(var.as_bytes()).to_hex()
    );
    ctx.write_recipe(
        "r.toml",
        &tools_recipe(
            "tools-https-egress",
            &format!(
                "\n[[egress.routes]]\nhost = \"{UPSTREAM}\"\ntoken_env = \"{var}\"\nheader = \"x-api-key\"\nscheme = \"\"\nupstream_ca = \"upstream-ca.pem\"\n"
            ),
        ),
    );
    let hash = ctx.build(&ctx.recipe());

    // The guest sends its placeholder in the route's header; what comes back is kept in a
    // file, and the script shows it, the env and every file the guest could have written.
    let url = format!("https://{UPSTREAM}:{}/echo?q=1", server.port);
    let script = r#"curl -sS --max-time 30 -D - -H "x-api-key: $(printenv "$2")" "$1" > /home/node/out.txt 2> /home/node/err.txt
echo "== exit=$?"
echo "== curl"; cat /home/node/out.txt /home/node/err.txt
echo "== env"; env
echo "== files"; find /home /tmp /etc -type f -exec cat {} + 2>/dev/null
echo "== end""#;
    let mut cmd = ctx.cmd();
    cmd.env(&var, &token);
    let out = ctx.output_of(
        cmd,
        &["run", &hash, "--", "sh", "-c", script, "sh", &url, &var],
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}\n{err}");
    assert!(
        text.contains("== exit=0"),
        "curl failed in the guest:\n{text}"
    );

    // Upstream: the real token in the declared header, never the placeholder.
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].target, "/echo?q=1");
    assert_eq!(
        seen[0].header("x-api-key"),
        Some(token.as_str()),
        "{seen:#?}"
    );
    for r in &seen {
        assert!(
            !r.text().contains("egress-placeholder"),
            "the upstream got the placeholder:\n{}",
            r.text()
        );
    }

    // The echo came back to the guest (its request line and the header's line), without the
    // token: not in curl's output, the env, or a file.
    let curl = section(&text, "curl");
    assert!(
        curl.contains("GET /echo?q=1"),
        "no echo reached the guest:\n{curl}"
    );
    assert!(curl.contains("x-api-key: "), "{curl}");
    assert!(
        !text.contains(&token) && !err.contains(&token),
        "the token reached the guest:\n{text}"
    );
    assert!(
        section(&text, "env").contains(&format!("{var}=egress-placeholder\n")),
        "{text}"
    );
    ctx.assert_nothing_left();
}
