//! `bottle sidecar --daemons pipelock,supervise`: the real binary on 127.0.0.1, its API spoken
//! over raw sockets and curl through pipelock, and a person's answers written by the library
//! the host's `bottle supervise` uses (`Queue::reply`) into the queue folder.
//!
//! - A denied host's 403 names the request that asks a person; the request waits for its
//!   answer; once approved, pipelock lets the host through within a second, and the grant is a
//!   line of the audit log.
//! - A value DLP flagged is refused with the `allow_dlp` request (never the value); once
//!   approved, the same request goes through.
//! - Bad input (not JSON, an unknown kind or field, a body too large, a wait out of bounds, a
//!   flood of requests or of connections) gets a clear 4xx/503 and the daemon serves on.
//! - A new `bottle sidecar` on the same queue (a bundle restart) lists the pending requests and applies
//!   the approved grants again, without recording them twice.

use crate::pipelock_kit;

use std::time::{Duration, Instant};

use bottle::daemons::supervise::queue::{Queue, Reply};
use pipelock_kit::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `METHOD PATH` with `body` to supervise; returns the status and the JSON body (`Null` when
/// it is not JSON).
async fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: supervise\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = exchange(port, request.as_bytes()).await;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

async fn sidecar(names: &[&str], queue: Option<std::path::PathBuf>) -> Sidecar {
    let setup = Setup {
        allow: vec!["plain.test".into()],
        names: names.iter().map(|n| n.to_string()).collect(),
        supervise_queue: queue,
        ..Setup::default()
    };
    let mut s = Sidecar::start_daemons(setup, "pipelock,supervise").await;
    let listening = format!("supervise: listening on 127.0.0.1:{}", s.supervise_port);
    s.wait_for(&listening).await;
    s
}

/// A value the built-in `github-pat` rule flags, made at run time (the repository's files are
/// DLP's ordinary corpus).
fn flagged_value() -> String {
    let alphabet = b"q7Zk2Rv9Lm4Xw8Tn3Bc6Hd1Jf5Gs0PyW";
    let tail: String = (0..36)
        .map(|i| alphabet[(i * 7 + 3) % 32] as char)
        .collect();
    format!("ghp_{tail}")
}

/// The curl line of a 403 body, as the agent would run it.
fn curl_line(body: &str) -> String {
    body.lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl line in: {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_host_is_reachable_within_a_second_and_audited() {
    let up = upstream(None).await;
    let s = sidecar(&["plain.test", "denied.test"], None).await;
    let url = format!("http://denied.test:{}/x", up.port);
    let refused = curl(&s, &[&url]).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        curl_line(&refused.body),
        r#"curl -sS -X POST "$BOTTLE_SUPERVISE_URL/v1/requests" -H 'content-type: application/json' -d '{"kind":"allow_host","host":"denied.test"}'"#
    );

    // The agent files the request and waits; a person approves it meanwhile.
    let port = s.supervise_port;
    let waiting = tokio::spawn(async move {
        let ask = r#"{"kind":"allow_host","host":"denied.test","why":"fetch x"}"#;
        api(port, "POST", "/v1/requests?wait=30", ask).await
    });
    let queue = Queue::new(&s.queue);
    let id = loop {
        if let Some(v) = queue.views().unwrap().first() {
            break v.request.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, listed) = api(port, "GET", "/v1/requests", "").await;
    assert_eq!(status, 200);
    assert_eq!(listed["requests"][0]["status"], "pending", "{listed}");
    assert_eq!(listed["requests"][0]["why"], "fetch x");
    queue.reply(&id, Reply::Approve { reason: None }).unwrap();
    let approved = Instant::now();
    let (status, answer) = waiting.await.unwrap();
    let woke = approved.elapsed();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(answer["status"], "approved");
    assert!(
        woke < Duration::from_secs(1),
        "the waiting request woke after {woke:?}"
    );
    loop {
        let c = curl(&s, &[&url]).await;
        if c.status == 200 {
            break;
        }
        assert!(approved.elapsed() < Duration::from_secs(1), "still {c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("reachable {:?} after the approval", approved.elapsed());
    let events = s.events().await;
    let g = find_event(&events, &[("decision", json!("granted"))]);
    assert_eq!(g["host"], "denied.test");
    assert_eq!(g["rule"], format!("supervise:{id}"));
    let allowed = find_event(
        &events,
        &[
            ("host", json!("denied.test")),
            ("decision", json!("allowed")),
        ],
    );
    assert_eq!(allowed["rule"], "supervise");
    // Asking again for what is granted returns the approved request.
    let (status, again) = api(
        port,
        "POST",
        "/v1/requests?wait=0",
        r#"{"kind":"allow_host","host":"denied.test"}"#,
    )
    .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_dlp_flagged_passes_once_a_person_allows_it() {
    let up = upstream(None).await;
    let s = sidecar(&["plain.test"], None).await;
    let value = flagged_value();
    let url = format!("http://plain.test:{}/dlp", up.port);
    let header = format!("x-fixture: {value}");
    let refused = curl(&s, &["-H", &header, &url]).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(!refused.body.contains(&value), "the 403 shows the value");
    assert!(
        curl_line(&refused.body)
            .ends_with(r#"-d '{"kind":"allow_dlp","rule":"github-pat","value":"VALUE"}'"#),
        "{}",
        refused.body
    );
    let ask = json!({"kind": "allow_dlp", "rule": "github-pat", "value": value}).to_string();
    let (status, filed) = api(s.supervise_port, "POST", "/v1/requests?wait=0", &ask).await;
    assert_eq!((status, filed["status"].as_str()), (201, Some("pending")));
    let id = filed["id"].as_str().unwrap();
    Queue::new(&s.queue)
        .reply(id, Reply::Approve { reason: None })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let c = curl(&s, &["-H", &header, &url]).await;
        if c.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        up.seen()
            .iter()
            .any(|r| r.header("x-fixture") == [value.clone()])
    );
    let events = s.events().await;
    let g = find_event(&events, &[("decision", json!("granted"))]);
    assert_eq!(g["host"], "dlp:github-pat");
    assert!(
        !s.audit_text().contains(&value),
        "the audit log holds the value"
    );
    // Another credential of the same kind is still refused.
    let other = format!("ghp_{}", value[4..].chars().rev().collect::<String>());
    let c = curl(&s, &["-H", &format!("x-fixture: {other}"), &url]).await;
    assert_eq!(c.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_the_daemon_serves_on() {
    let s = sidecar(&[], None).await;
    let port = s.supervise_port;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("POST", "/v1/requests", "{not json", 400, "not JSON"),
        (
            "POST",
            "/v1/requests",
            r#"{"kind":"allow_all"}"#,
            400,
            "unknown kind",
        ),
        (
            "POST",
            "/v1/requests",
            r#"{"kind":"allow_host","hots":"a.test"}"#,
            400,
            "\"hots\"",
        ),
        (
            "POST",
            "/v1/requests",
            r#"{"kind":"allow_host"}"#,
            400,
            "needs \"host\"",
        ),
        (
            "POST",
            "/v1/requests",
            r#"{"kind":"allow_host","host":"*.a.test"}"#,
            400,
            "wildcards",
        ),
        (
            "POST",
            "/v1/requests?wait=301",
            r#"{"kind":"question","text":"q"}"#,
            400,
            "wait",
        ),
        ("GET", "/v1/requests/nosuchid?wait=0", "", 404, "no request"),
        ("DELETE", "/v1/requests", "", 405, "GET and POST"),
        ("GET", "/v2/elsewhere", "", 404, "GET /"),
    ];
    for (method, path, body, want, says) in cases {
        let (status, v) = api(port, method, path, body).await;
        assert_eq!(status, *want, "{method} {path} {body}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{method} {path} {body}: {e}");
    }
    // Too large: announced, and sent without a length.
    let big = format!(r#"{{"kind":"question","text":"{}"}}"#, "x".repeat(20_000));
    let (status, v) = api(port, "POST", "/v1/requests", &big).await;
    assert_eq!(status, 413, "{v}");
    let chunked = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    )
    .into_bytes();
    let (status, text) = exchange(port, &chunked).await;
    assert_eq!(status, 413, "{text}");

    // A flood: 32 may wait; the 33rd is refused; asking again for a pending one is no flood.
    let mut first = String::new();
    for i in 0..32 {
        let ask = format!(r#"{{"kind":"question","text":"question {i}"}}"#);
        let (status, v) = api(port, "POST", "/v1/requests?wait=0", &ask).await;
        assert_eq!(status, 201, "{i}: {v}");
        if i == 0 {
            first = v["id"].as_str().unwrap().to_string();
        }
    }
    let (status, v) = api(
        port,
        "POST",
        "/v1/requests?wait=0",
        r#"{"kind":"question","text":"one more"}"#,
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert!(v["error"].as_str().unwrap().contains("32 requests"), "{v}");
    let (status, v) = api(
        port,
        "POST",
        "/v1/requests?wait=0",
        r#"{"kind":"question","text":"question 0"}"#,
    )
    .await;
    assert_eq!((status, v["id"].as_str()), (200, Some(first.as_str())));

    // A flood of connections: past 64 open ones, a new one gets a 503 and is closed.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) = exchange(port, b"GET /v1/requests HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(status, 503, "{text}");
    for mut c in held {
        let _ = c.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // It serves on.
    let (status, v) = api(port, "GET", "/v1/requests", "").await;
    assert_eq!(status, 200);
    assert_eq!(v["requests"].as_array().unwrap().len(), 32);
    let guide = exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(guide.1.contains("POST /v1/requests"), "{}", guide.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reach_the_waiting_agent_and_a_restart_keeps_the_queue() {
    let up = upstream(None).await;
    let keep = tempfile::tempdir().unwrap();
    let queue_dir = keep.path().join("queue");
    let mut s = sidecar(&["plain.test", "a.test", "b.test"], Some(queue_dir.clone())).await;
    let port = s.supervise_port;
    let queue = Queue::new(&queue_dir);
    let file = |ask: &'static str| async move {
        let (status, v) = api(port, "POST", "/v1/requests?wait=0", ask).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let question = file(r#"{"kind":"question","text":"Which branch?"}"#).await;
    let denied = file(r#"{"kind":"allow_host","host":"b.test"}"#).await;
    let granted = file(r#"{"kind":"allow_host","host":"a.test"}"#).await;
    let pending = file(r#"{"kind":"allow_host","host":"c.test"}"#).await;
    let answer = Reply::Answer {
        text: "feature/x".into(),
    };
    queue.reply(&question, answer).unwrap();
    let no = Reply::Deny {
        reason: Some("not in this task".into()),
    };
    queue.reply(&denied, no).unwrap();
    queue
        .reply(&granted, Reply::Approve { reason: None })
        .unwrap();
    let (_, v) = api(port, "GET", &format!("/v1/requests/{question}?wait=5"), "").await;
    assert_eq!(
        (v["status"].as_str(), v["answer"].as_str()),
        (Some("answered"), Some("feature/x"))
    );
    let (_, v) = api(port, "GET", &format!("/v1/requests/{denied}?wait=5"), "").await;
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("denied"), Some("not in this task"))
    );
    let (_, v) = api(port, "GET", &format!("/v1/requests/{granted}?wait=5"), "").await;
    assert_eq!(v["status"], "approved");
    let a_url = format!("http://a.test:{}/a", up.port);
    assert_eq!(curl(&s, &[&a_url]).await.status, 200);
    let b_url = format!("http://b.test:{}/b", up.port);
    assert_eq!(curl(&s, &[&b_url]).await.status, 403);
    let granted_lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"granted\""))
            .count()
    };
    // Recorded once, by this sidecar.
    assert_eq!(granted_lines(&s.audit), 1);
    assert_eq!(s.terminate().code(), Some(0));
    drop(s);

    // A new sidecar on the same queue: the grant holds, the pending request waits on.
    let s = sidecar(&["plain.test", "a.test", "b.test"], Some(queue_dir.clone())).await;
    assert_eq!(curl(&s, &[&a_url]).await.status, 200);
    assert_eq!(curl(&s, &[&b_url]).await.status, 403);
    let (_, v) = api(
        s.supervise_port,
        "GET",
        &format!("/v1/requests/{pending}?wait=0"),
        "",
    )
    .await;
    assert_eq!(v["status"], "pending", "{v}");
    let (_, v) = api(s.supervise_port, "GET", "/v1/requests", "").await;
    assert_eq!(v["requests"].as_array().unwrap().len(), 4);
    // Not recorded again.
    assert_eq!(granted_lines(&s.audit), 0);
    assert!(
        s.log().iter().any(|l| l.contains("1 grant(s) in force")),
        "{:?}",
        s.log()
    );
}
