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
