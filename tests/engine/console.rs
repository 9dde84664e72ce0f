//! `bottle console`: the local web page over a store's runs.
//!
//! - Security, against the real binary over raw HTTP (so every header is the test's own):
//!   no token, 401; a wrong token, 401; a wrong `Host` (DNS rebinding), refused even with the
//!   right token or cookie; a cross-origin `POST`, a `POST` without `Origin` or with a
//!   cross-site `Sec-Fetch-Site`, and a `POST` without or with a wrong CSRF token, refused —
//!   and none of them answered the request; agent text holding `<script>` and bidi controls
//!   comes back as JSON data, byte for byte, and the page's script sets text with
//!   `textContent` only; a non-loopback `--listen` warns.
//! - Two consoles and the CLI answering one real run's queue agree: an answer given by any
//!   of them shows in the others (the second console's live events included) and cannot be
//!   given again from any of them; two consoles racing on one request, one wins.
//! - A real headless browser (Debian's chromium through chromedriver, driven by fantoccini)
//!   sees a real run's request appear with no reload, clicks Approve, and the guest's next
//!   request passes and shows in the page's audit stream.

use crate::support;

use std::time::{Duration, Instant};

use bottle::daemons::supervise::queue::Ask;
use bottle::run::record;
use bottle::run::supervise::queue_of;
use serde_json::Value;
use support::browser::{Driver, browser, element_with, shot};
use support::console::{Console, Events, http, status_of, supervise_recipe};
use support::upstream::{Answer, Server};
use support::*;

/// A live run without containers (its queue is files; its process a `sleep` the test owns,
/// which the test's `bottle down --all` stops), and its queue.
fn fake_live_run(
    ctx: &TestContext,
    run_id: &str,
) -> (
    std::process::Child,
    bottle::daemons::supervise::queue::Queue,
) {
    let store = ctx.store();
    let sleep = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let mut r = record::new_record(
        run_id,
        None,
        "fake",
        bottle::plan::GuestBackend::Docker,
        None,
    );
    r.pid = sleep.id();
    r.pid_start = record::process_start(sleep.id());
    r.save(&store).unwrap();
    let q = queue_of(&store, run_id);
    q.prepare().unwrap();
    (sleep, q)
}

const HOSTILE: &str = "<script>alert(1)</script>\u{202e}gpj.exe\u{2066}";

#[test]
fn the_console_refuses_what_it_must_and_agent_text_stays_data() {
    let ctx = TestContext::new("console-security");
    let (mut sleep, q) = fake_live_run(&ctx, "c0ffee0001");
    let asked = q
        .file(
            Ask::Question {
                text: HOSTILE.into(),
            },
            Some("<img src=x onerror=alert(2)>".into()),
        )
        .unwrap();
    let c = Console::start(&ctx);
    let h = c.host.as_str();
    let port = h.rsplit(':').next().unwrap();

    // No token: 401, for the page and the API alike; a wrong token: 401.
    for path in ["/", "/api/runs", "/api/events", "/app.js"] {
        assert_eq!(http(h, "GET", path, &[], "").status, 401, "{path}");
    }
    let wrong = format!("/?token={}", "0".repeat(64));
    assert_eq!(http(h, "GET", &wrong, &[], "").status, 401);
    // A wrong Host is refused, even with the right token (DNS rebinding).
    let evil = format!("rebind.test:{port}");
    let with_token = format!("/?token={}", c.token);
    let r = http(h, "GET", &with_token, &[("Host", &evil)], "");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("set-cookie").is_none());
    let cookie = c.sign_in();
    let r = http(
        h,
        "GET",
        "/api/runs",
        &[("Host", &evil), ("Cookie", &cookie)],
        "",
    );
    assert_eq!(r.status, 403, "{r:?}");
    // Another console's cookie (another port's name, or a made-up value) is no session.
    let (name, _) = cookie.split_once('=').unwrap();
    let forged = format!("{name}={}", "0".repeat(64));
    assert_eq!(http(h, "GET", "/", &[("Cookie", &forged)], "").status, 401);

    // Agent text is JSON data, byte for byte, never markup.
    let r = http(
        h,
        "GET",
        "/api/runs/c0ffee0001/requests",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let rows: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(rows[0]["text"], HOSTILE);
    assert_eq!(rows[0]["why"], "<img src=x onerror=alert(2)>");
    let script = http(h, "GET", "/app.js", &[("Cookie", &cookie)], "").body;
    assert!(script.contains("textContent") && !script.contains("innerHTML"));
    let page = http(h, "GET", "/", &[("Cookie", &cookie)], "");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );

    // State changes: cross-origin, origin-less, cross-site, CSRF-less, wrong CSRF: refused.
    let csrf = c.csrf(&cookie);
    let path = format!("/api/runs/c0ffee0001/requests/{}", asked.id);
    let body = r#"{"action":"answer","text":"yes"}"#;
    let own = c.origin();
    let bad: [&[(&str, &str)]; 5] = [
        &[("Origin", "http://evil.test"), ("X-Bottle-Csrf", &csrf)],
        &[("X-Bottle-Csrf", &csrf)],
        &[
            ("Origin", &own),
            ("Sec-Fetch-Site", "cross-site"),
            ("X-Bottle-Csrf", &csrf),
        ],
        &[("Origin", &own)],
        &[("Origin", &own), ("X-Bottle-Csrf", "00")],
    ];
    for extra in bad {
        let mut headers = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        let r = http(h, "POST", &path, &headers, body);
        assert_eq!(r.status, 403, "{extra:?}: {r:?}");
    }
    // A GET changes nothing; the request is still pending after all of that.
    assert_eq!(
        http(h, "GET", &path, &[("Cookie", &cookie)], "").status,
        404
    );
    assert!(
        q.answer(&asked.id).unwrap().is_none(),
        "a refused request answered"
    );
    // The page's own request is answered, as `bottle supervise --answer` would.
    let r = c.reply(&cookie, &csrf, "c0ffee0001", &asked.id, body);
    assert_eq!(r.status, 200, "{r:?}");
    let answer = q.answer(&asked.id).unwrap().expect("answered");
    assert_eq!(answer.answer.as_deref(), Some("yes"));
    let _ = sleep.kill();
    let _ = sleep.wait();
}

#[test]
fn a_console_on_another_address_than_loopback_warns() {
    let ctx = TestContext::new("console-exposed");
    let mut c = ctx.spawn(&["console", "--listen", "0.0.0.0:0"]);
    let err = c.wait_for_stderr("bottle console:", Duration::from_secs(30));
    assert!(
        err.contains("warning: --listen 0.0.0.0:") && err.contains("not a loopback address"),
        "{err}"
    );
}

/// Files a grant request for `host` from the guest; returns its id.
fn file_from_guest(ctx: &TestContext, run: &str, host: &str) -> String {
    let out = ctx.ok(&[
        "exec",
        run,
        "--",
        "sh",
        "-c",
        &format!(
            r#"curl -sS -X POST -d '{{"kind":"allow_host","host":"{host}"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait=0""#
        ),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "pending", "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn two_consoles_and_the_cli_agree_and_answer_once() {
    let ctx = TestContext::new("console-agree");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text("through".into()));
    let hosts = ["a.test", "b.test", "c.test"];
    ctx.write_recipe(
        "r.toml",
        &supervise_recipe("console-agree", &hosts, r#"["sleep", "600"]"#),
    );
    let hash = ctx.build(&ctx.recipe());
    let _run = ctx.spawn(&["run", &hash]);
    let (id, _) = ctx.wait_live();
    let (a, b, cc) = (
        file_from_guest(&ctx, &id, "a.test"),
        file_from_guest(&ctx, &id, "b.test"),
        file_from_guest(&ctx, &id, "c.test"),
    );
    let (one, two) = (Console::start(&ctx), Console::start(&ctx));
    let (k1, k2) = (one.sign_in(), two.sign_in());
    let (x1, x2) = (one.csrf(&k1), two.csrf(&k2));
    assert_ne!(x1, x2, "a CSRF token per start");
    let rows = one.requests(&k1, &id);
    assert_eq!(rows.len(), 3, "{rows:?}");

    // Console one approves a: console two's live events (a stream open before) show it, and
    // neither console nor the CLI can answer it again.
    let mut live = Events::open(&two, &k2, &id);
    live.until(|v| status_of(v, &a) == "pending");
    let approve = r#"{"action":"approve"}"#;
    let r = one.reply(&k1, &x1, &id, &a, approve);
    assert_eq!(r.status, 200, "{r:?}");
    live.until(|v| status_of(v, &a) == "approved");
    let r = two.reply(&k2, &x2, &id, &a, r#"{"action":"deny","reason":"no"}"#);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("already approved"), "{r:?}");
    let again = ctx.output(&["supervise", &id, "--approve", &a]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already approved"),
        "{}",
        stderr(&again)
    );
    // The page's approval is the CLI's truth, and in force: the guest reaches a.test.
    let all: Value = serde_json::from_str(&ctx.ok(&["supervise", &id, "--all", "--json"])).unwrap();
    assert_eq!(status_of(&all, &a), "approved", "{all}");
    ctx.ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        &format!(
            "n=0; until curl -sf -o /dev/null http://a.test:{}/; do n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done",
            server.port
        ),
    ]);

    // The CLI denies b: both consoles' open streams show it; both refuse to answer it.
    let mut streams = [Events::open(&one, &k1, &id), Events::open(&two, &k2, &id)];
    for s in &mut streams {
        s.until(|v| status_of(v, &b) == "pending");
    }
    ctx.ok(&["supervise", &id, "--deny", &b, "--reason", "not today"]);
    for s in &mut streams {
        let rows = s.until(|v| status_of(v, &b) == "denied");
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == b.as_str())
            .unwrap();
        assert_eq!(row["reason"], "not today");
    }
    for (c, k, x) in [(&one, &k1, &x1), (&two, &k2, &x2)] {
        let r = c.reply(k, x, &id, &b, approve);
        assert_eq!(r.status, 409, "{r:?}");
    }

    // Both consoles race on c: one wins, the other is told.
    let racers: Vec<_> = [(&one, &k1, &x1), (&two, &k2, &x2)]
        .into_iter()
        .map(|(c, k, x)| {
            let (host, k, x, id, cc) =
                (c.host.clone(), k.clone(), x.clone(), id.clone(), cc.clone());
            let origin = c.origin();
            std::thread::spawn(move || {
                http(
                    &host,
                    "POST",
                    &format!("/api/runs/{id}/requests/{cc}"),
                    &[
                        ("Cookie", &k),
                        ("Origin", &origin),
                        ("X-Bottle-Csrf", &x),
                        ("Content-Type", "application/json"),
                    ],
                    r#"{"action":"approve"}"#,
                )
                .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409]);

    // The grants are in the run's audit log, once each, as `granted`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = ctx.ok(&["logs", "--json", &id]);
        let mut granted: Vec<String> = logs
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["decision"] == "granted")
            .map(|e| e["host"].as_str().unwrap().to_string())
            .collect();
        granted.sort();
        if granted == ["a.test", "c.test"] {
            break;
        }
        assert!(Instant::now() < deadline, "grants not logged: {logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ctx.ok(&["down", &id]);
}

#[test]
fn a_person_approves_in_a_real_headless_browser() {
    let ctx = TestContext::new("console-browser");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text("through".into()));
    // The guest meets the 403, runs the line it names (waiting for the answer), and tries
    // again until the host answers.
    let script = format!(
        r#"cd /tmp; U=http://x.test:{}/hello
curl -sS -o body "$U"; grep '^ *curl ' body | head -1 > ask.sh; sh ask.sh > asked.json 2>&1 &
n=0; until curl -sf -o /dev/null "$U"; do n=$((n+1)); [ $n -gt 6000 ] && break; sleep 0.05; done
sleep 600"#,
        server.port
    );
    let command = serde_json::to_string(&["sh", "-c", &script]).unwrap();
    ctx.write_recipe(
        "r.toml",
        &supervise_recipe("console-browser", &["x.test"], &command),
    );
    let hash = ctx.build(&ctx.recipe());
    let _run = ctx.spawn(&["run", &hash]);
    let (id, _) = ctx.wait_live();
    let console = Console::start(&ctx);
    let shots = ctx.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let driver = Driver::start(&ctx.dir.path().join("chromedriver.log"));
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let last = rt.block_on(async {
        let b = browser(&driver, profile.path()).await;
        b.goto(&console.url).await.unwrap();
        shot(&b, &shots, "1-opened").await;
        // The request appears with no reload.
        let card = element_with(&b, "#pending .request", "x.test").await;
        assert!(b.current_url().await.unwrap().query().is_none(), "the token left the address bar");
        shot(&b, &shots, "2-request").await;
        let approve = card
            .find(fantoccini::Locator::Css("button.approve"))
            .await
            .unwrap();
        let before = server.requests().len();
        approve.click().await.unwrap();
        let clicked = Instant::now();
        // The guest's next request passes.
        while server.requests().len() == before {
            assert!(clicked.elapsed() < Duration::from_secs(120), "the guest never got through");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "figure: the guest's next request passed {} ms after the click",
            clicked.elapsed().as_millis()
        );
        shot(&b, &shots, "3-approved").await;
        // The page's audit stream shows it, and the request left the pending list.
        element_with(&b, "#audit tbody tr.d-allowed", "x.test").await;
        element_with(&b, "#audit tbody tr.d-granted", "x.test").await;
        element_with(&b, "#answered tbody tr", "approved").await;
        assert!(b.find_all(fantoccini::Locator::Css("#pending .request")).await.unwrap().is_empty());

        // Agent text with markup and bidi controls renders as text.
        ctx.ok(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            &format!(
                r#"printf '%s' '{{"kind":"question","text":"{}","why":"<i>because</i>"}}' | curl -sS -X POST --data-binary @- "$BOTTLE_SUPERVISE_URL/v1/requests?wait=0""#,
                "<script>document.title=1</script><b>bold</b>\u{202e}gpj.exe"
            ),
        ]);
        let q = element_with(&b, "#pending .request", "<script>").await;
        let seen_ms = bottle::daemons::audit::Event::now_ms();
        let qid = q.attr("data-request").await.unwrap().unwrap();
        let filed = queue_of(&ctx.store(), &id).request(&qid).unwrap().unwrap();
        eprintln!(
            "figure: request {qid} on the page {} ms after the guest filed it",
            seen_ms.saturating_sub(filed.time_ms)
        );
        let what = q
            .find(fantoccini::Locator::Css(".what"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(what, "<script>document.title=1</script><b>bold</b>\\u{202e}gpj.exe");
        let why = q
            .find(fantoccini::Locator::Css(".why"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(why, "why: <i>because</i>");
        assert!(q.find_all(fantoccini::Locator::Css("b, i, script")).await.unwrap().is_empty());
        assert_eq!(b.title().await.unwrap(), "bottle console");
        let last = shot(&b, &shots, "4-hostile-text").await;
        b.close().await.unwrap();
        last
    });
    let keep = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-test.png");
    std::fs::copy(&last, &keep).unwrap();
    eprintln!(
        "screenshots in {}; the last kept as {}",
        shots.display(),
        keep.display()
    );
    ctx.ok(&["down", &id]);
}
