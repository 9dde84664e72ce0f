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

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bottle::run::record;
use bottle::run::supervise::queue_of;
use bottle::sidecar::supervise::queue::Ask;
use serde_json::Value;
use support::upstream::{Answer, Server};
use support::*;

/// A started `bottle console` and the session a browser would hold.
struct Console {
    process: Spawned,
    /// `127.0.0.1:PORT`
    host: String,
    url: String,
    token: String,
}

impl Console {
    fn start(ctx: &TestContext) -> Console {
        let mut process = ctx.spawn(&["console", "--listen", "127.0.0.1:0"]);
        let err = process.wait_for_stderr("bottle console:", Duration::from_secs(30));
        assert!(!err.contains("warning"), "a loopback console warns: {err}");
        let url = err
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("the URL on stderr")
            .to_string();
        let host = url["http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let token = url.split("token=").nth(1).unwrap().to_string();
        Console {
            process,
            host,
            url,
            token,
        }
    }

    /// Signs in with the token; returns the `Cookie` header value.
    fn sign_in(&self) -> String {
        let r = http(
            &self.host,
            "GET",
            &format!("/?token={}", self.token),
            &[],
            "",
        );
        assert_eq!(r.status, 303, "{r:?}");
        let set = r.header("set-cookie").expect("a cookie");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap().to_string()
    }

    /// The page's CSRF token (from the page itself).
    fn csrf(&self, cookie: &str) -> String {
        let page = http(&self.host, "GET", "/", &[("Cookie", cookie)], "");
        assert_eq!(page.status, 200, "{page:?}");
        let needle = "name=\"bottle-csrf\" content=\"";
        let at = page.body.find(needle).unwrap() + needle.len();
        page.body[at..at + 64].to_string()
    }

    fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    /// `POST` a reply as the page does.
    fn reply(&self, cookie: &str, csrf: &str, run: &str, id: &str, body: &str) -> Reply {
        http(
            &self.host,
            "POST",
            &format!("/api/runs/{run}/requests/{id}"),
            &[
                ("Cookie", cookie),
                ("Origin", &self.origin()),
                ("X-Bottle-Csrf", csrf),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    fn requests(&self, cookie: &str, run: &str) -> Vec<Value> {
        let r = http(
            &self.host,
            "GET",
            &format!("/api/runs/{run}/requests"),
            &[("Cookie", cookie)],
            "",
        );
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request to `host` (also the `Host` header unless `headers` give one), the
/// connection closed after it.
fn http(host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(host).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A live run without containers (its queue is files; its process a `sleep` the test owns,
/// which the test's `bottle down --all` stops), and its queue.
fn fake_live_run(
    ctx: &TestContext,
    run_id: &str,
) -> (
    std::process::Child,
    bottle::sidecar::supervise::queue::Queue,
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

fn supervise_recipe(name: &str, hosts: &[&str], command: &str) -> String {
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
command = {command}

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

/// Reads a console's event stream until a `requests` event satisfies `want` (60 s at most).
fn until_event(c: &Console, cookie: &str, run: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut s = TcpStream::connect(&c.host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /api/events?run={run} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        c.host
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut event = String::new();
    for line in BufReader::new(s).lines() {
        let line = line.expect("the event stream ended");
        assert!(Instant::now() < deadline, "no such event in 60 s");
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "requests"
        {
            let v: Value = serde_json::from_str(data).unwrap();
            if want(&v) {
                return v;
            }
        }
    }
    panic!("the event stream ended");
}

fn status_of(rows: &Value, id: &str) -> String {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
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

    // Console one approves a: console two's live events show it, and neither console nor the
    // CLI can answer it again.
    let approve = r#"{"action":"approve"}"#;
    let r = one.reply(&k1, &x1, &id, &a, approve);
    assert_eq!(r.status, 200, "{r:?}");
    until_event(&two, &k2, &id, |v| status_of(v, &a) == "approved");
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

    // The CLI denies b: both consoles show it and refuse to answer it.
    ctx.ok(&["supervise", &id, "--deny", &b, "--reason", "not today"]);
    for (c, k, x) in [(&one, &k1, &x1), (&two, &k2, &x2)] {
        until_event(c, k, &id, |v| status_of(v, &b) == "denied");
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
