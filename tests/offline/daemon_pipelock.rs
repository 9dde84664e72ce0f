//! `bottle sidecar --daemons pipelock`: the real binary, real sockets on 127.0.0.1 only, real
//! TLS clients (curl with the bottle CA, rustls by hand through a CONNECT).
//!
//! Each test makes a bottle CA with rcgen (pipelock's `ca_cert`/`ca_key`) and its upstreams:
//! `api.test`, an egress route whose TLS server is signed by a separate upstream CA given as
//! the route's `upstream_ca`; `other.test`, allowed but not a route, whose certificate no
//! public root signs; `plain.test`, plain http. Names reach 127.0.0.1 through pipelock's
//! test-only override (`BOTTLE_PIPELOCK_TEST_RESOLVE`); `denied.test` is never resolved.

use crate::pipelock_kit;

use std::process::Command;
use std::time::{Duration, Instant};

use bottle::bundle::pipelock::body::HOLD_BACK;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use pipelock_kit::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream CA, `api.test` (a route trusting it) and `other.test` (not a route) both on
/// TLS servers it signed, `plain.test` on plain http, and pipelock set up for them.
struct World {
    sidecar: Sidecar,
    api: Upstream,
    other: Upstream,
    plain: Upstream,
}

async fn world(extra: impl FnOnce(&mut Setup)) -> World {
    let upstream_ca = Ca::new("test upstream CA");
    let api = upstream(Some(upstream_ca.leaf(&["api.test"]))).await;
    let other = upstream(Some(upstream_ca.leaf(&["other.test"]))).await;
    let plain = upstream(None).await;
    let mut setup = Setup {
        allow: ["api.test", "other.test", "plain.test"]
            .map(String::from)
            .to_vec(),
        routes: vec![("api.test".into(), Some(upstream_ca.pem()), TOKEN_ENV.into())],
        secrets: vec![(TOKEN_ENV.into(), TOKEN.into())],
        names: ["api.test", "other.test", "plain.test"]
            .map(String::from)
            .to_vec(),
        ..Setup::default()
    };
    extra(&mut setup);
    World {
        sidecar: Sidecar::start(setup).await,
        api,
        other,
        plain,
    }
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_https_host_is_intercepted_with_a_leaf_of_the_bottle_ca_and_kept_alive() {
    let w = world(|_| {}).await;
    // rustls trusting only the bottle CA and verifying the name: the leaf chains to the
    // bottle CA and names `api.test` (the upstream's own certificate would not verify).
    let tls = tls_through(
        w.sidecar.port,
        "api.test",
        w.api.port,
        &[w.sidecar.ca.der()],
    )
    .await;
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(chain.len(), 1, "the leaf alone");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = hyper::Request::get(format!("/n{i}?k=v{i}"))
            .header("host", "api.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.expect("kept alive");
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("ok /n{i}"));
    }
    // One guest connection, one upstream connection: both sides kept alive.
    assert_eq!(
        w.api.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let events = w.sidecar.events().await;
    find_event(
        &events,
        &[("method", json!("CONNECT")), ("decision", json!("allowed"))],
    );
    let e = find_event(&events, &[("path", json!("/n1?k="))]);
    assert_eq!(e["decision"], "injected");
    assert_eq!(e["rule"], "route:api.test");
    assert_eq!(e["run"], "run-under-test");
    assert_eq!(e["status"], 200);
    assert!(!w.sidecar.audit_text().contains("v1"), "no query value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_host_gets_a_403_that_says_why_over_http_and_inside_connect() {
    let w = world(|_| {}).await;
    let cases = [
        ["--http1.1", "http://denied.test/x?secret=1"],
        ["--http1.1", "https://denied.test/x?secret=1"],
        ["--http2", "https://denied.test/x?secret=1"],
    ];
    for args in cases {
        let url = args[1];
        let c = curl(&w.sidecar, &args).await;
        assert_eq!(c.status, 403, "{url}: {c:?}");
        assert!(
            c.body
                .contains("denied.test is not on this bottle's allowlist")
                && c.body.contains("[pipelock] allow"),
            "{url}: {}",
            c.body
        );
        assert!(
            c.headers
                .to_lowercase()
                .contains("x-bottle-refused: allowlist")
        );
    }
    // Not a proxy request at all; another scheme in absolute form.
    let (status, text) = exchange(
        w.sidecar.port,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("forward proxy"), "{text}");
    let events = w.sidecar.events().await;
    let refused = events
        .iter()
        .filter(|e| e["host"] == "denied.test" && e["decision"] == "refused")
        .count();
    // The absolute-form GET, and twice the CONNECT and the GET inside it.
    assert_eq!(refused, 5, "{events:#?}");
    find_event(
        &events,
        &[("decision", json!("invalid")), ("status", json!(400))],
    );
    assert!(!w.sidecar.audit_text().contains("secret=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_gets_the_real_token_in_its_header_and_never_over_plain_http() {
    let w = world(|_| {}).await;
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let url = format!("https://api.test:{}/v1/messages?model=x", w.api.port);
    let c = curl(&w.sidecar, &["-H", &auth, "-d", "hello", &url]).await;
    assert_eq!(c.status, 200, "{c:?}");
    // curl offers h2 (ALPN) inside the tunnel, and pipelock takes it.
    assert!(c.headers.contains("HTTP/2 200"), "{}", c.headers);
    let seen = w.api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), [format!("Bearer {TOKEN}")]);
    assert_eq!(seen[0].body, b"hello");
    assert!(!format!("{seen:?}").contains(PLACEHOLDER), "{seen:?}");
    assert_eq!(seen[0].header("host"), [format!("api.test:{}", w.api.port)]);

    // Plain http to the route host: refused, nothing reaches it.
    let c = curl(
        &w.sidecar,
        &["-H", &auth, &format!("http://api.test:{}/", w.api.port)],
    )
    .await;
    assert_eq!(c.status, 403, "{c:?}");
    assert!(c.body.contains("only sent over TLS") && c.body.contains("https://api.test/"));
    assert_eq!(w.api.seen().len(), 1);

    // Through absolute-form http, an allowed non-route host is forwarded as is.
    let c = curl(
        &w.sidecar,
        &[&format!("http://plain.test:{}/p", w.plain.port)],
    )
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /p"), "{c:?}");
    assert!(w.plain.seen()[0].header("authorization").is_empty());

    let events = w.sidecar.events().await;
    find_event(
        &events,
        &[
            ("method", json!("POST")),
            ("decision", json!("injected")),
            ("rule", json!("route:api.test")),
            ("bytes_in", json!(5)),
        ],
    );
    find_event(
        &events,
        &[
            ("decision", json!("refused")),
            ("rule", json!("route:api.test")),
            ("status", json!(403)),
        ],
    );
    find_event(
        &events,
        &[
            ("host", json!("plain.test")),
            ("decision", json!("allowed")),
            ("rule", json!("allowlist")),
        ],
    );
    assert_no_secret(&w.sidecar.audit_text());
    assert_no_secret(&w.sidecar.log().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_echoes_the_request_never_hands_the_token_to_the_guest() {
    let w = world(|_| {}).await;
    let url = format!("https://api.test:{}/echo", w.api.port);
    let c = curl(
        &w.sidecar,
        &["-H", &format!("Authorization: Bearer {PLACEHOLDER}"), &url],
    )
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    // The upstream got the token, and echoed it 5 bytes a chunk, and in a header.
    assert_eq!(
        w.api.seen()[0].header("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert!(c.body.starts_with("auth=Bearer "), "{}", c.body);
    assert!(c.body.contains("[removed by bottle egress]"), "{}", c.body);
    assert_no_secret(&c.body);
    assert_no_secret(&c.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_trusts_a_route_ca_and_refuses_an_unknown_one_saying_why() {
    let w = world(|_| {}).await;
    let c = curl(&w.sidecar, &[&format!("https://api.test:{}/", w.api.port)]).await;
    assert_eq!(c.status, 200, "{c:?}");
    let c = curl(
        &w.sidecar,
        &[&format!("https://other.test:{}/", w.other.port)],
    )
    .await;
    assert_eq!(c.status, 502, "{c:?}");
    assert!(
        c.body.contains("certificate of other.test") && c.body.contains("not trusted"),
        "{}",
        c.body
    );
    assert!(c.body.contains("upstream_ca"), "{}", c.body);
    assert!(w.other.seen().is_empty(), "no request reached it");
    let events = w.sidecar.events().await;
    find_event(
        &events,
        &[
            ("host", json!("other.test")),
            ("decision", json!("failed")),
            ("rule", json!("upstream-tls")),
            ("status", json!(502)),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_its_token_is_refused_naming_the_env_var() {
    let w = world(|s| s.secrets.clear()).await;
    w.sidecar
        .log()
        .iter()
        .find(|l| l.contains("NO TOKEN"))
        .expect("the start says so");
    let c = curl(&w.sidecar, &[&format!("https://api.test:{}/", w.api.port)]).await;
    assert_eq!(c.status, 502, "{c:?}");
    assert!(
        c.body.contains(TOKEN_ENV) && c.body.contains("bottle run"),
        "{}",
        c.body
    );
    assert!(w.api.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_go_through_the_upstream_proxy() {
    let (proxy_port, tunnels) = connect_proxy().await;
    let w = world(|s| s.upstream_proxy = Some(format!("http://127.0.0.1:{proxy_port}"))).await;
    let c = curl(
        &w.sidecar,
        &[&format!("https://api.test:{}/via", w.api.port)],
    )
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /via"), "{c:?}");
    let c = curl(
        &w.sidecar,
        &[&format!("http://plain.test:{}/via", w.plain.port)],
    )
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    let tunnels = tunnels.lock().unwrap().clone();
    assert!(
        tunnels.contains(&format!("api.test:{}", w.api.port)),
        "{tunnels:?}"
    );
    assert!(
        tunnels.contains(&format!("plain.test:{}", w.plain.port)),
        "{tunnels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlp_refuses_a_recipe_rule_in_the_url_a_header_and_the_body_even_split() {
    let w =
        world(|s| s.dlp_rules = vec![("test-secret".into(), "TESTSECRET[0-9]{8}".into())]).await;
    let secret = "TESTSECRET12345678";
    let base = format!("https://api.test:{}", w.api.port);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("the URL", vec![format!("{base}/x?k={secret}")]),
        (
            "the header x-note",
            vec![
                "-H".into(),
                format!("X-Note: {secret}"),
                format!("{base}/x"),
            ],
        ),
        (
            "the request body",
            vec!["-d".into(), format!("a={secret}"), format!("{base}/x")],
        ),
    ];
    for (place, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = curl(&w.sidecar, &args).await;
        assert_eq!(c.status, 403, "{place}: {c:?}");
        assert!(
            c.body.contains("test-secret") && c.body.contains(place),
            "{}",
            c.body
        );
        assert!(c.body.contains("dlp_allow"), "{}", c.body);
    }
    // A body whose secret is split across two chunks. The first: filler longer than what
    // pipelock holds back, then the secret's first half. Once the upstream has every byte of
    // it that may leave (all but the held-back tail), pipelock has dealt with the first chunk,
    // and only then does the second go: no timer decides what "later" is.
    let filler = "lorem ipsum dolor sit amet ".repeat((HOLD_BACK + 32 * 1024) / 27);
    let first = format!("{filler}TESTSECRE");
    let releasable = first.len() - HOLD_BACK;
    let mut tls = tls_through(
        w.sidecar.port,
        "api.test",
        w.api.port,
        &[w.sidecar.ca.der()],
    )
    .await;
    tls.write_all(
        format!(
            "POST /split HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
            first.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let split_body = || {
        w.api
            .seen()
            .into_iter()
            .find(|s| s.path == "/split")
            .map(|s| s.body)
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while split_body().len() < releasable {
        assert!(
            Instant::now() < deadline,
            "the upstream got {} of the {releasable} bytes pipelock may release",
            split_body().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What left is filler only: the secret's first half waits behind the hold-back.
    let got = split_body();
    assert!(
        filler.as_bytes().starts_with(&got),
        "the upstream got more than filler: {:?}",
        String::from_utf8_lossy(&got[got.len().saturating_sub(40)..])
    );
    tls.write_all(b"9\r\nT12345678\r\n0\r\n\r\n").await.unwrap();
    let mut out = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    // Neither half of the split secret left, before or after the refusal: the upstream's
    // bytes, recorded as they arrived, are a prefix of the filler.
    let got = split_body();
    assert!(
        filler.as_bytes().starts_with(&got),
        "a part of the split secret reached the upstream: {:?}",
        String::from_utf8_lossy(&got[got.len().saturating_sub(40)..])
    );
    assert!(
        w.api.seen().iter().all(|s| {
            let body = String::from_utf8_lossy(&s.body);
            !body.contains("TESTSECRE") && !body.contains("T12345678")
        }),
        "a part of the split secret reached the upstream"
    );
    assert!(
        w.api.seen().iter().all(|s| s.path != "/x"),
        "nothing reached the upstream"
    );
    let events = w.sidecar.events().await;
    let refused = events.iter().filter(|e| e["rule"] == "test-secret").count();
    assert_eq!(refused, 4, "{events:#?}");
    assert!(!w.sidecar.audit_text().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_one_connection_and_others_are_served() {
    let mut w = world(|_| {}).await;
    let port = w.sidecar.port;
    // A head that trickles in: dropped after the header timeout; meanwhile others are served.
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET http://plain.test/ HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        for _ in 0..60 {
            if s.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        started.elapsed()
    });
    // Malformed request line.
    let (status, _) = exchange(port, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(status, 400);
    // A head over 64 KiB.
    let big = format!(
        "GET http://plain.test:{}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        w.plain.port,
        "a".repeat(70_000)
    );
    let (status, _) = exchange(port, big.as_bytes()).await;
    assert_eq!(status, 431);
    // A TLS client that gives up mid-handshake.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(s);
    // An upstream that closes early: the guest sees the answer cut, not a hang.
    let c = curl(
        &w.sidecar,
        &[&format!("https://api.test:{}/close-early", w.api.port)],
    )
    .await;
    assert!(!c.ok, "{c:?}");
    // Still serving.
    let c = curl(
        &w.sidecar,
        &[&format!("http://plain.test:{}/after", w.plain.port)],
    )
    .await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /after"), "{c:?}");
    let took = trickle.await.unwrap();
    assert!(
        took < Duration::from_secs(28),
        "the trickle was cut after the header timeout: {took:?}"
    );
    let events = w.sidecar.events().await;
    find_event(
        &events,
        &[("rule", json!("malformed")), ("status", json!(400))],
    );
    find_event(
        &events,
        &[("rule", json!("headers-too-large")), ("status", json!(431))],
    );
    find_event(&events, &[("rule", json!("timeout"))]);
    find_event(
        &events,
        &[
            ("method", json!("CONNECT")),
            ("rule", json!("tls-handshake")),
        ],
    );
    find_event(
        &events,
        &[
            ("path", json!("/close-early")),
            ("decision", json!("failed")),
        ],
    );
    assert!(
        w.sidecar.child.try_wait().unwrap().is_none(),
        "pipelock is still up"
    );
}

/// Regression: a client that half-closes after sending its request (busybox `nc` does) got
/// no answer for an allowed host: hyper closed the connection on the read side's EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let w = world(|_| {}).await;
    let mut s = TcpStream::connect(("127.0.0.1", w.sidecar.port))
        .await
        .unwrap();
    let req = format!(
        "GET http://plain.test:{}/hc HTTP/1.1\r\nHost: plain.test\r\n\r\n",
        w.plain.port
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("ok /hc"),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_daemons_say_so_and_sigterm_ends_the_sidecar() {
    let mut sidecar = Sidecar::start_daemons(Setup::default(), "pipelock,git-gate,supervise").await;
    sidecar.wait_for("git-gate: listening on 127.0.0.1:").await;
    let supervise = format!(
        "supervise: listening on 127.0.0.1:{}",
        sidecar.supervise_port
    );
    sidecar.wait_for(&supervise).await;
    // An empty allowlist refuses everything.
    let (status, text) = exchange(
        sidecar.port,
        b"GET http://localhost:9/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let status = sidecar.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the sidecar with 0, got {status}"
    );
}

#[test]
fn a_missing_config_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["sidecar", "--daemons", "pipelock", "--config-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipelock.json"), "{stderr}");
}

#[test]
fn a_missing_ca_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "listen_port": free_port(), "listen_host": "127.0.0.1", "allow": [],
        "dlp": {"enabled": false, "rules": [], "allow": []},
        "ca_cert": dir.path().join("nope.crt"), "ca_key": dir.path().join("nope.key"),
        "egress": {"routes": [], "upstream_proxy": null}, "audit_log": null,
    });
    std::fs::write(dir.path().join("pipelock.json"), config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["sidecar", "--daemons", "pipelock", "--config-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nope.key") && stderr.contains("bottle run"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_daemon_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["sidecar", "--daemons", "pipelock,bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
