//! Grants mean what the person saw: `bottle sidecar --daemons pipelock,supervise` (the real
//! binary), requests filed over supervise's API and approved with the library `bottle
//! supervise` uses (`Queue::reply`).
//!
//! - The hidden suffix: a value that is a JWT followed by an AWS key id, filed and approved
//!   as `jwt`, does not let the key id through, nor the JWT alone: only that exact value.
//! - A host grant for a loopback IP literal is listed with its class, and once approved
//!   pipelock still refuses to connect there (the private-destination rule).

use crate::pipelock_kit;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bottle::daemons::supervise::queue::{Queue, Reply};
use pipelock_kit::*;
use serde_json::{Value, json};

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

async fn sidecar() -> Sidecar {
    let setup = Setup {
        allow: vec!["plain.test".into()],
        names: vec!["plain.test".into()],
        ..Setup::default()
    };
    let mut s = Sidecar::start_daemons(setup, "pipelock,supervise").await;
    let listening = format!("supervise: listening on 127.0.0.1:{}", s.supervise_port);
    s.wait_for(&listening).await;
    s
}

/// Files `ask`, approves it, and waits until the grant is in the audit log.
async fn file_and_approve(s: &Sidecar, ask: Value) -> String {
    let (status, filed) = api(
        s.supervise_port,
        "POST",
        "/v1/requests?wait=0",
        &ask.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();
    Queue::new(&s.queue)
        .reply(&id, Reply::Approve { reason: None })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.audit_text().contains(&format!("supervise:{id}")) {
        assert!(Instant::now() < deadline, "the grant {id} is not in force");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    id
}

/// A JWT and an AWS key id, made at run time (no such literal in the repository).
fn jwt_and_key() -> (String, String) {
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(br#"{"sub":"9a2e","iat":1700000000}"#),
        b64(&[
            201u8, 7, 88, 13, 240, 61, 5, 177, 92, 18, 33, 150, 71, 9, 222, 104
        ])
    );
    let key: String = (0..16)
        .map(|i| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(i * 13 + 7) % 32] as char)
        .collect();
    (jwt, format!("AKIA{key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_grant_with_a_hidden_suffix_does_not_let_the_key_through() {
    let up = upstream(None).await;
    let s = sidecar().await;
    let url = format!("http://plain.test:{}/x", up.port);
    let (jwt, key) = jwt_and_key();
    let hidden = format!("{jwt}{key}");
    let id = file_and_approve(
        &s,
        json!({"kind": "allow_dlp", "rule": "jwt", "value": hidden}),
    )
    .await;

    // What the person saw: the value whole, or its length and fingerprint; never a cut.
    let listed = Queue::new(&s.queue).views().unwrap();
    let what = &listed
        .iter()
        .find(|v| v.request.id == id)
        .unwrap()
        .request
        .ask
        .what();
    assert!(
        what.contains(&key) || what.contains("fingerprint"),
        "the listing hides the suffix: {what}"
    );

    // The key alone, and the JWT alone (a `jwt` finding, but not the value approved).
    for (value, rule) in [(&key, "aws-access-key-id"), (&jwt, "jwt")] {
        let c = curl(&s, &["-H", &format!("x-fixture: {value}"), &url]).await;
        assert_eq!(c.status, 403, "{c:?}");
        assert!(
            c.headers.contains(&format!("x-bottle-refused: {rule}")),
            "{c:?}"
        );
    }
    assert!(
        up.seen().iter().all(|r| r.header("x-fixture").is_empty()),
        "the upstream got {:?}",
        up.seen()
    );
    // Exactly what was approved passes: DLP reads it as one JWT, the one the person saw.
    let c = curl(&s, &["-H", &format!("x-fixture: {hidden}"), &url]).await;
    assert_eq!(c.status, 200, "{c:?}");
}

/// A plain-http GET through pipelock, the target as written (curl would rewrite `2130706433`
/// as `127.0.0.1`): the status and the whole answer.
async fn get(s: &Sidecar, host: &str, port: u16) -> (u16, String) {
    let request = format!(
        "GET http://{host}:{port}/x HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    );
    exchange(s.port, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_grant_for_a_loopback_ip_is_still_refused() {
    let up = upstream(None).await;
    let s = sidecar().await;
    for host in ["2130706433", "127.0.0.1"] {
        let (status, before) = get(&s, host, up.port).await;
        assert_eq!(status, 403, "{before}");
        assert!(before.contains("x-bottle-refused: allowlist"), "{before}");
        let id = file_and_approve(&s, json!({"kind": "allow_host", "host": host})).await;
        let listed = Queue::new(&s.queue).views().unwrap();
        let what = listed
            .iter()
            .find(|v| v.request.id == id)
            .unwrap()
            .request
            .ask
            .what();
        assert!(
            what.contains("loopback") && what.contains("allow_private"),
            "{what}"
        );
        let (status, after) = get(&s, host, up.port).await;
        assert_eq!(status, 403, "{after}");
        assert!(
            after.contains("x-bottle-refused: private-address"),
            "{after}"
        );
        assert!(after.contains("is at 127.0.0.1"), "{after}");
    }
    assert!(up.seen().is_empty(), "the upstream got {:?}", up.seen());
}
