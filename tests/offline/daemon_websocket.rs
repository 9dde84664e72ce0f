//! WebSocket, said plainly: `bottle sidecar --daemons pipelock` (the real binary) answers a
//! request that asks to upgrade the connection with a 501 naming why, over plain http and
//! inside an intercepted CONNECT, sends nothing upstream, and writes an audit line saying so.

use crate::pipelock_kit;

use pipelock_kit::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_gets_a_501_naming_why_and_an_audit_line() {
    let up = upstream(None).await;
    let sidecar = Sidecar::start(Setup {
        allow: vec!["ws.test".into()],
        names: vec!["ws.test".into()],
        ..Setup::default()
    })
    .await;
    // HTTP/1.1: HTTP/2 has no Upgrade (curl would drop the header; pipelock's HTTP/2 server
    // offers no extended CONNECT, RFC 8441).
    let upgrade = [
        "--http1.1",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    // Plain http, and https through an intercepted tunnel (never connected upstream: port 1).
    for url in [
        format!("http://ws.test:{}/chat", up.port),
        "https://ws.test:1/chat".to_string(),
    ] {
        let mut args: Vec<&str> = upgrade.to_vec();
        args.push(&url);
        let c = curl(&sidecar, &args).await;
        assert_eq!(c.status, 501, "{c:?}");
        assert!(c.headers.contains("x-bottle-refused: upgrade"), "{c:?}");
        for needle in ["WebSocket", "\"websocket\"", "not supported", "ws.test"] {
            assert!(c.body.contains(needle), "no {needle:?} in {}", c.body);
        }
    }
    assert!(up.seen().is_empty(), "the upstream got {:?}", up.seen());
    // The same request without the upgrade goes through.
    let c = curl(&sidecar, &[&format!("http://ws.test:{}/chat", up.port)]).await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /chat"), "{c:?}");

    let events = sidecar.events().await;
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["rule"] == json!("upgrade"))
        .collect();
    assert_eq!(refused.len(), 2, "{events:#?}");
    for e in refused {
        assert_eq!(e["decision"], "refused");
        assert_eq!(e["status"], 501);
        assert_eq!(e["path"], "/chat");
    }
}
