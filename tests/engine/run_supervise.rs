//! supervise in real runs: a guest with Debian's curl (and busybox wget) asks a person through
//! the bundle's supervise; the test is the person, answering with `bottle supervise`. The
//! guest reaches a server this test starts on the host by names only the bundle resolves
//! (`[network] hosts = { "x.test" = "host-gateway" }`), none of them on the allowlist.
//!
//! - The denied host's 403 names the supervise request; the guest runs that very line; the
//!   request lists in `bottle supervise --json` and `bottle ps`; once `--approve` returns, the
//!   host is reachable from the guest within a second (asserted with slack for a loaded
//!   machine; `benches/supervise_approve.sh` holds the tight figure); the grant is a line of
//!   `bottle logs`.
//! - `--deny --reason` reaches the waiting agent; a question gets its `--answer`; a malformed
//!   request gets a clear 400; wrong answers are refused; `--watch` follows and ends with the
//!   run.
//! - The queue survives a bundle restart (`docker restart`): a pending request still lists
//!   and can be answered, an approved grant is still in force, and it is recorded once.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::upstream::{Answer, Server};
use support::*;

const BODY: &str = "reached-through-a-grant";
/// The slack on the one-second promise for a loaded machine (the benchmark measures it tight).
const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

fn supervise_recipe(name: &str, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| format!("\"{h}\" = \"host-gateway\""))
        .collect();
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["sleep", "600"]

[pipelock]
allow = ["allowed.test"]

[network]
hosts = {{ {} }}

[supervise]
enabled = true
"#,
        hosts.join(", ")
    )
}

/// `bottle supervise RUN --json [--all]`.
fn listed(ctx: &TestContext, run: &str, all: bool) -> Vec<Value> {
    let mut args = vec!["supervise", run, "--json"];
    if all {
        args.push("--all");
    }
    serde_json::from_str::<Value>(&ctx.ok(&args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until a pending request satisfies `want`; returns it.
fn pending(ctx: &TestContext, run: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = listed(ctx, run, false).into_iter().find(&want) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no such pending request in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `bottle ARGS` that must fail; returns stderr.
fn refused(ctx: &TestContext, args: &[&str]) -> String {
    let out = ctx.output(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
    stderr(&out)
}

/// The guest's side: the 403, the line it names run as it is (in the background: it waits
/// for the answer), a loop until the host answers, then a malformed request, a request the
/// person denies and a question (busybox wget), each waiting for its answer.
fn agent_script(port: u16) -> String {
    format!(
        r#"cd /tmp
U=http://x.test:{port}/hello
echo "== env"; echo "$BOTTLE_SUPERVISE_URL"; echo "$NO_PROXY"
echo "== guide"; head -1 ~/.bottle/SUPERVISE.md
echo "== refused"; curl -sS -o body -w '%{{http_code}}\n' "$U"; cat body
grep '^ *curl ' body | head -1 > ask.sh
sh ask.sh > asked.json 2>&1 &
n=0; until curl -sf -o /dev/null "$U"; do n=$((n+1)); [ $n -gt 3000 ] && break; sleep 0.05; done
echo "== reached"; curl -sS "$U"; echo
wait
echo "== asked"; cat asked.json; echo
echo "== malformed"; curl -sS -X POST -d '{{oops' -w '\n%{{http_code}}\n' "$BOTTLE_SUPERVISE_URL/v1/requests"
echo "== denied"; curl -sS -X POST -d '{{"kind":"allow_host","host":"y.test","why":"a mirror"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait=240"; echo
echo "== question"; wget -q -O - -Y off --post-data '{{"kind":"question","text":"Which branch?"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait=240"; echo
echo "== y"; curl -sS -o /dev/null -w '%{{http_code}}\n' http://y.test:{port}/
echo "== end"
"#
    )
}

#[test]
fn an_agent_asks_and_a_person_answers_in_a_real_run() {
    let ctx = TestContext::new("supervise-run");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text(BODY.into()));
    ctx.write_recipe(
        "r.toml",
        &supervise_recipe("supervise-run", &["x.test", "y.test"]),
    );
    let hash = ctx.build(&ctx.recipe());
    let script = agent_script(server.port);
    let run = ctx.spawn(&["run", "--json", &hash, "--", "sh", "-c", &script]);
    let (id, _) = ctx.wait_live();
    let watch = ctx.spawn(&["supervise", &id, "--watch", "--json"]);

    // The agent ran the 403's line: its request waits for a person.
    let ask = pending(&ctx, &id, |v| v["host"] == "x.test");
    assert_eq!(ask["kind"], "allow_host");
    let rid = ask["id"].as_str().unwrap().to_string();
    let ps: Value = serde_json::from_str(&ctx.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["pending_requests"], 1, "{ps}");
    let table = ctx.ok(&["ps"]);
    assert!(table.lines().next().unwrap().contains("PENDING"), "{table}");
    let text = ctx.ok(&["supervise", &id]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&rid) && l.contains("allow_host") && l.contains("x.test")),
        "{text}"
    );
    // Wrong answers are refused, naming the fix.
    let e = refused(&ctx, &["supervise", &id, "--answer", &rid, "sure"]);
    assert!(e.contains("--approve"), "{e}");
    let e = refused(&ctx, &["supervise", &id, "--approve", "nosuchid"]);
    assert!(e.contains("no request"), "{e}");

    // Approved: the guest reaches the host within a second of the command's return.
    ctx.ok(&["supervise", &id, "--approve", &rid]);
    let approved = Instant::now();
    while server.requests().is_empty() {
        assert!(
            approved.elapsed() < Duration::from_secs(30),
            "never reached"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = approved.elapsed();
    eprintln!("x.test reachable from the guest {took:?} after --approve returned");
    assert!(took <= REACHABLE_WITHIN, "reachable only after {took:?}");
    let e = refused(&ctx, &["supervise", &id, "--approve", &rid]);
    assert!(e.contains("already approved"), "{e}");

    // Denied with a reason; a question answered.
    let deny = pending(&ctx, &id, |v| v["host"] == "y.test");
    let did = deny["id"].as_str().unwrap();
    ctx.ok(&[
        "supervise",
        &id,
        "--deny",
        did,
        "--reason",
        "use x.test instead",
    ]);
    let question = pending(&ctx, &id, |v| v["kind"] == "question");
    let qid = question["id"].as_str().unwrap();
    let e = refused(&ctx, &["supervise", &id, "--approve", qid]);
    assert!(e.contains("is a question"), "{e}");
    let answered = ctx.ok(&["supervise", &id, "--json", "--answer", qid, "main, please"]);
    let answered: Value = serde_json::from_str(&answered).unwrap();
    assert_eq!(answered["status"], "answered");

    let (code, out, err) = run.finish(Duration::from_secs(180));
    assert_eq!(code, Some(0), "{out}\n{err}");
    let report: Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    let ip = report["bundle_ip"].as_str().unwrap();
    let env = section(&out, "env");
    assert!(env.contains(&format!("http://{ip}:7777\n")), "{env}");
    assert!(env.contains(&format!("127.0.0.1,{ip}")), "{env}");
    assert!(section(&out, "guide").contains("Asking a person"), "{out}");
    let refusal = section(&out, "refused");
    assert!(refusal.starts_with("403\n"), "{refusal}");
    assert!(
        refusal.contains(r#"-d '{"kind":"allow_host","host":"x.test"}'"#),
        "{refusal}"
    );
    assert_eq!(section(&out, "reached").trim(), BODY);
    let asked: Value = serde_json::from_str(section(&out, "asked").trim()).unwrap();
    assert_eq!(
        (asked["id"].as_str(), asked["status"].as_str()),
        (Some(rid.as_str()), Some("approved"))
    );
    let malformed = section(&out, "malformed");
    assert!(
        malformed.contains("not JSON") && malformed.trim_end().ends_with("400"),
        "{malformed}"
    );
    let denied: Value = serde_json::from_str(section(&out, "denied").trim()).unwrap();
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["reason"], "use x.test instead");
    let answer: Value = serde_json::from_str(section(&out, "question").trim()).unwrap();
    assert_eq!(
        (answer["status"].as_str(), answer["answer"].as_str()),
        (Some("answered"), Some("main, please"))
    );
    assert_eq!(
        section(&out, "y").trim(),
        "403",
        "a denied host stays denied"
    );

    // The watch saw the three requests and ended with the run.
    let (code, watched, err) = watch.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    let kinds: Vec<String> = watched
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["allow_host", "allow_host", "question"], "{watched}");
    // The grant is in the run's log, after the run.
    let logs = ctx.ok(&["logs", "--json", &id]);
    let grants: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["decision"] == "granted")
        .collect();
    assert_eq!(grants.len(), 1, "{logs}");
    assert_eq!(grants[0]["host"], "x.test");
    assert_eq!(grants[0]["rule"], format!("supervise:{rid}"));
    ctx.assert_nothing_left();
}

/// `bottle exec RUN -- sh -c SCRIPT`; returns stdout.
fn exec(ctx: &TestContext, run: &str, script: &str) -> String {
    ctx.ok(&["exec", run, "--", "sh", "-c", script])
}

/// A guest script that waits (up to 30 s) until `url` answers `code` through the bundle.
fn until_status(url: &str, code: &str) -> String {
    format!(
        "n=0; while [ \"$(curl -s -o /dev/null -w '%{{http_code}}' {url})\" != {code} ]; do n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done"
    )
}

#[test]
fn the_queue_survives_a_bundle_restart() {
    let ctx = TestContext::new("supervise-restart");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text(BODY.into()));
    ctx.write_recipe(
        "r.toml",
        &supervise_recipe("supervise-restart", &["a.test", "b.test"]),
    );
    let hash = ctx.build(&ctx.recipe());
    let run = ctx.spawn(&["run", &hash]);
    let (id, _) = ctx.wait_live();
    let file = |host: &str| {
        let out = exec(
            &ctx,
            &id,
            &format!(
                r#"curl -sS -X POST -d '{{"kind":"allow_host","host":"{host}"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait=0""#
            ),
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], "pending", "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let a = file("a.test");
    let b = file("b.test");
    ctx.ok(&["supervise", &id, "--approve", &b]);
    let (a_url, b_url) = (
        format!("http://a.test:{}/", server.port),
        format!("http://b.test:{}/", server.port),
    );
    exec(&ctx, &id, &until_status(&b_url, "200"));

    // The bundle restarts mid-run.
    docker_ok(&["restart", "--time", "5", &format!("bottle-{id}-bundle")]);
    let url = "$BOTTLE_SUPERVISE_URL/v1/requests";
    exec(
        &ctx,
        &id,
        &format!(
            "n=0; until curl -sf -o /dev/null {url}; do n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done"
        ),
    );
    // The grant is still in force; the pending request still lists, and can be answered.
    exec(&ctx, &id, &until_status(&b_url, "200"));
    let status = exec(
        &ctx,
        &id,
        &format!("curl -s -o /dev/null -w '%{{http_code}}' {a_url}"),
    );
    assert_eq!(status, "403");
    let still = listed(&ctx, &id, false);
    assert_eq!(still.len(), 1, "{still:?}");
    assert_eq!(still[0]["id"], a.as_str());
    let seen = exec(&ctx, &id, &format!("curl -sS \"{url}/{a}?wait=0\""));
    assert!(seen.contains("\"pending\""), "{seen}");
    ctx.ok(&["supervise", &id, "--approve", &a]);
    exec(&ctx, &id, &until_status(&a_url, "200"));
    let all = listed(&ctx, &id, true);
    assert!(all.iter().all(|v| v["status"] == "approved"), "{all:?}");

    ctx.ok(&["down", &id]);
    let (code, _, err) = run.finish(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{err}");
    // Each grant recorded once, the restart's reload included.
    let logs = ctx.ok(&["logs", "--json", &id]);
    let mut granted: Vec<String> = logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["decision"] == "granted")
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    granted.sort();
    assert_eq!(granted, ["a.test", "b.test"], "{logs}");
    ctx.assert_nothing_left();
}
