//! The bundle's policy in a real run: a guest with Debian's curl (trusting only the run's CA)
//! asks a TLS server this test starts on the host, by a name only the bundle resolves.
//!
//! - A denied host gets a 403 whose body says why and how to allow it, over absolute-form
//!   `http://` and inside an intercepted `CONNECT`.
//! - Every built-in DLP rule refuses a generated secret of its kind planted in the URL, in a
//!   header and in the body, and in a body sent in two chunks with the secret split across
//!   them, with a 403 whose body names the rule; the upstream (recording bytes as they
//!   arrive) receives no byte of any body, and no form of any secret: raw, percent-encoded,
//!   JSON-escaped, either half of it, either half of the split body.
//! - Each case is exactly one refused line of `bottle logs RUN` naming its rule, after the run
//!   ended, and no line holds a secret.

#[path = "../dlp_corpus/kit.rs"]
mod kit;
#[path = "../dlp_corpus/planted.rs"]
mod planted;
#[path = "../dlp_corpus/secrets.rs"]
mod secrets;
use crate::support;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use support::upstream::{Answer, Server, TestCa};
use support::*;

/// The upstream's name: resolved by the bundle only, to the host.
const UPSTREAM: &str = "upstream.test";

/// One request the guest makes, and the rule that must refuse it.
struct Case {
    id: String,
    rule: String,
    /// `url`, `header`, `body` or `split`.
    how: &'static str,
    /// The URL (`url`), the header line (`header`), or the body.
    payload: String,
}

fn cases(secrets: &[planted::Planted]) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, p) in secrets.iter().enumerate() {
        let mut add = |how: &'static str, payload: String| {
            out.push(Case {
                id: format!("c{i}-{how}"),
                rule: p.rule.to_string(),
                how,
                payload,
            })
        };
        if let Some(q) = &p.query {
            add("url", format!("/search?{q}"));
        }
        if let Some(h) = &p.header {
            add("header", h.clone());
        }
        add("body", p.body.clone());
        add("split", p.body.clone());
    }
    out
}

/// Every form in which a planted secret, or a part of it, could reach the upstream: the secret
/// raw, percent-encoded and JSON-escaped, each line of it, each half of it, and each half of
/// its body as the split case sends it. Pieces shorter than 8 bytes are left out (they could be
/// anything).
fn forms(p: &planted::Planted) -> Vec<String> {
    let mut out = Vec::new();
    let secret = p.secret.trim();
    out.push(secret.to_string());
    out.push(kit::urlencode(secret));
    let json = kit::json_str(secret);
    out.push(json[1..json.len() - 1].to_string());
    out.extend(secret.lines().map(str::to_string));
    for text in [secret, p.body.as_str()] {
        let mid = (0..=text.len() / 2)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        out.push(text[..mid].to_string());
        out.push(text[mid..].to_string());
    }
    if let Some(q) = &p.query {
        out.push(q.clone());
    }
    if let Some(h) = &p.header {
        out.push(h.clone());
        out.extend(h.split_once(": ").map(|(_, v)| v.to_string()));
    }
    out.retain(|f| f.trim().len() >= 8);
    out.iter_mut().for_each(|f| *f = f.trim().to_string());
    out.sort();
    out.dedup();
    out
}

/// The audit path of a case's request (query values dropped).
fn audit_path(c: &Case) -> String {
    match c.how {
        "url" => {
            let query = c.payload.split_once('?').map(|(_, q)| q).unwrap_or("");
            let names: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}="),
                    None => kv.to_string(),
                })
                .collect();
            format!("/search?{}", names.join("&"))
        }
        "header" => "/h".into(),
        "body" => "/b".into(),
        _ => "/s".into(),
    }
}

/// The guest's script: each case's payload arrives base64-encoded; curl sends it over HTTPS
/// through the bundle and prints `CASE id status` and the refusal's first line.
fn script(base: &str, cases: &[Case]) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut s = String::from(
        "cd /tmp\nsend() { echo \"CASE $1 $(cat code) $(head -c 300 out | tr '\\n' ' ')\"; }\n",
    );
    for c in cases {
        let _ = writeln!(s, "echo {} | base64 -d > payload", b64(&c.payload));
        let curl = "curl -sS --max-time 20 -o out -w '%{http_code}'";
        let line = match c.how {
            "url" => format!("{curl} \"{base}$(cat payload)\" > code"),
            "header" => format!("{curl} -H \"$(cat payload)\" {base}/h > code"),
            "body" => format!("{curl} --data-binary @payload {base}/b > code"),
            _ => format!(
                "n=$(( $(wc -c < payload) / 2 )); (head -c $n payload; sleep 0.3; tail -c +$((n + 1)) payload) | {curl} -T - -X POST -H 'Transfer-Encoding: chunked' {base}/s > code"
            ),
        };
        let _ = writeln!(s, "{line}; send {}", c.id);
    }
    s
}

#[test]
fn denied_hosts_and_every_dlp_rule_are_refused_with_a_body_saying_why_and_logged() {
    let ctx = TestContext::new("traffic-policy");
    ctx.use_tools_guest();
    let ca = TestCa::new("traffic-policy upstream CA");
    std::fs::write(ctx.recipes.join("upstream-ca.pem"), ca.pem()).unwrap();
    let server = Server::tls(Answer::Echo, &ca, &[UPSTREAM]);
    ctx.write_recipe(
        "r.toml",
        &format!(
            r#"name = "traffic-policy"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["true"]

[pipelock]
allow = ["{UPSTREAM}"]

[[egress.routes]]
host = "{UPSTREAM}"
token_env = "TRAFFIC_TEST_TOKEN"
upstream_ca = "upstream-ca.pem"

[network]
hosts = {{ "{UPSTREAM}" = "host-gateway" }}
"#
        ),
    );
    let hash = ctx.build(&ctx.recipe());
    let mut rng = kit::Rng::new(0x7e57_0ff1c);
    let planted = planted::one_per_rule(&mut rng);
    assert!(planted.len() >= 40, "{} kinds", planted.len());
    let cases = cases(&planted);
    let base = format!("https://{UPSTREAM}:{}", server.port);
    let denied = "curl -sS --max-time 20 -o out -w '%{http_code}' http://denied.test/x > code; send denied-http\n\
                  curl -sS --max-time 20 -o out -w '%{http_code}' https://denied.test/x > code; send denied-https\n";
    let text = format!("{}{denied}", script(&base, &cases));
    let mut cmd = ctx.cmd();
    cmd.env("TRAFFIC_TEST_TOKEN", "traffic-test-route-token");
    let out = ctx.output_of(cmd, &["run", "--json", &hash, "--", "sh", "-c", &text]);
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let results: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CASE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(id, rest)| (id.to_string(), rest.to_string()))
        .collect();

    // Denied hosts: 403 with a body saying what and how, over http:// and inside CONNECT.
    for id in ["denied-http", "denied-https"] {
        let r = &results[id];
        assert!(r.starts_with("403 "), "{id}: {r}");
        assert!(
            r.contains("denied.test") && r.contains("[pipelock] allow"),
            "{id}: {r}"
        );
    }
    // Every planted secret: refused, the body naming the rule; the upstream got none.
    for c in &cases {
        let r = results
            .get(&c.id)
            .unwrap_or_else(|| panic!("no result for {}", c.id));
        assert!(r.starts_with("403 "), "{} ({}): {r}", c.id, c.rule);
        assert!(
            r.contains(&format!("(DLP rule {})", c.rule)),
            "{} ({}): the refusal does not name its rule: {r}",
            c.id,
            c.rule
        );
    }
    let seen = server.requests();
    for s in &seen {
        assert!(
            s.body.is_empty(),
            "the upstream got {} bytes of a body ({} {})",
            s.body.len(),
            s.method,
            s.target
        );
        let text = s.text();
        for p in &planted {
            for form in forms(p) {
                assert!(
                    !text.contains(&form),
                    "the upstream got (a part of) a {} secret in {} {}",
                    p.rule,
                    s.method,
                    s.target
                );
            }
        }
    }
    // The audit log, after the run: a refused line per case with its rule, no secret.
    let report: serde_json::Value =
        serde_json::from_str(&stdout[stdout.find("{\n").expect("the run's report")..]).unwrap();
    let run_id = report["run_id"].as_str().unwrap();
    let logs = ctx.ok(&["logs", "--json", run_id]);
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["decision"] == "refused")
        .collect();
    for c in &cases {
        let path = audit_path(c);
        let lines = refused
            .iter()
            .filter(|e| e["rule"] == c.rule.as_str() && e["path"] == path.as_str())
            .count();
        assert_eq!(
            lines, 1,
            "{} ({}): refused lines for {path} in the audit log",
            c.id, c.rule
        );
    }
    // The denied host: its http:// request, its CONNECT (answered, to refuse inside TLS) and
    // the request inside.
    let denied: Vec<&&serde_json::Value> = refused
        .iter()
        .filter(|e| e["rule"] == "allowlist" && e["host"] == "denied.test")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert_eq!(refused.len(), cases.len() + 3, "{logs}");
    for p in &planted {
        for line in p.body.lines().filter(|l| l.len() > 16) {
            assert!(!logs.contains(line), "the log holds a {} secret", p.rule);
        }
    }
    let human = ctx.ok(&["logs", run_id]);
    assert!(
        human
            .lines()
            .any(|l| l.contains("denied.test:80/x") && l.contains("refused (allowlist)")),
        "{human}"
    );
    ctx.assert_nothing_left();
}
