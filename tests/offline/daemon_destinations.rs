//! No private destinations unless the recipe says so: `bottle sidecar --daemons pipelock`
//! (the real binary) refuses to connect upstream to a loopback, private or link-local
//! address, judged on the address it connects to — an allowed name that resolves there, a
//! name rebound there after a first answer, an IPv4-mapped IPv6 form, a decimal IP — unless
//! the recipe maps the name (`[network] hosts`, the config's `mapped_hosts`) or lists the
//! range (`[pipelock] allow_private`).
//!
//! Names come from pipelock's test-only resolver hook, loopback answers only; a name it
//! answers for is a plain DNS answer, not a mapping of the recipe's. Servers listen on
//! 127.0.0.1 and 127.0.0.2.

use crate::pipelock_kit;

use pipelock_kit::*;
use serde_json::json;
use tokio::net::TcpListener;

fn setup(allow: &[&str]) -> Setup {
    Setup {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ..Setup::default()
    }
}

/// The explanatory 403 for a private destination: the address, its class and both knobs.
fn assert_private_refusal(c: &Curl, addr: &str) {
    assert_eq!(c.status, 403, "{c:?}");
    assert!(
        c.headers.contains("x-bottle-refused: private-address"),
        "{c:?}"
    );
    for needle in [addr, "loopback", "allow_private", "[network] hosts"] {
        assert!(c.body.contains(needle), "no {needle:?} in {}", c.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_at_loopback_is_refused_unless_the_recipe_maps_it() {
    let up = upstream(None).await;
    let mut s = setup(&["loop.test", "mapped.test", "six.test"]);
    s.names = vec!["mapped.test".into()];
    s.resolved = vec![
        ("loop.test".into(), "127.0.0.1".into()),
        ("six.test".into(), "::ffff:127.0.0.1".into()),
    ];
    let sidecar = Sidecar::start(s).await;

    let c = curl(&sidecar, &[&format!("http://loop.test:{}/x", up.port)]).await;
    assert_private_refusal(&c, "127.0.0.1");
    // Inside an intercepted CONNECT too.
    let c = curl(&sidecar, &[&format!("https://loop.test:{}/x", up.port)]).await;
    assert_private_refusal(&c, "127.0.0.1");
    // An IPv4-mapped IPv6 answer is the IPv4 address it carries.
    let c = curl(&sidecar, &[&format!("http://six.test:{}/x", up.port)]).await;
    assert_private_refusal(&c, "127.0.0.1");
    assert!(up.seen().is_empty(), "the upstream got {:?}", up.seen());

    // The same server, by a name the recipe maps.
    let c = curl(&sidecar, &[&format!("http://mapped.test:{}/x", up.port)]).await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /x"), "{c:?}");

    let events = sidecar.events().await;
    let e = find_event(
        &events,
        &[("host", json!("loop.test")), ("decision", json!("refused"))],
    );
    assert_eq!(e["rule"], "private-address");
    assert_eq!(e["status"], 403);
    let e = find_event(&events, &[("host", json!("mapped.test"))]);
    assert_eq!(e["decision"], "allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_of_loopback_are_refused_in_every_spelling() {
    let up = upstream(None).await;
    // Allowed by the allowlist (as a grant would allow them): the address still decides.
    let sidecar = Sidecar::start(setup(&[
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "2130706433",
    ]))
    .await;
    for host in [
        "127.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "2130706433",
    ] {
        let c = curl(&sidecar, &[&format!("http://{host}:{}/x", up.port)]).await;
        assert_private_refusal(&c, "127.0.0.1");
    }
    assert!(up.seen().is_empty(), "the upstream got {:?}", up.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_rebound_to_a_private_address_is_judged_on_the_new_answer() {
    // Two servers on one port: 127.0.0.2 (the range the recipe allows) and 127.0.0.1 (not).
    let (allowed, other) = loop {
        let a = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.1", port)).await {
            break (upstream_on(a, None), upstream_on(b, None));
        }
    };
    let mut s = setup(&["rebind.test"]);
    s.allow_private = vec!["127.0.0.2/32".into()];
    // The first lookup answers 127.0.0.2, every later one 127.0.0.1.
    s.resolved = vec![("rebind.test".into(), "127.0.0.2|127.0.0.1".into())];
    let sidecar = Sidecar::start(s).await;

    // The server closes the connection: the next request needs a new one, and a new lookup.
    let url = format!("http://rebind.test:{}/close", allowed.port);
    let c = curl(&sidecar, &[&url]).await;
    assert_eq!((c.status, c.body.as_str()), (200, "ok /close"), "{c:?}");
    assert_eq!(allowed.seen().len(), 1);
    let c = curl(&sidecar, &[&url]).await;
    assert_private_refusal(&c, "127.0.0.1");
    assert!(c.body.contains("127.0.0.1/32"), "{}", c.body);
    assert!(other.seen().is_empty(), "127.0.0.1 got {:?}", other.seen());
    assert_eq!(allowed.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_allow_private_range_stops_pipelock_naming_it() {
    let mut s = setup(&[]);
    s.allow_private = vec!["10.0.0.0/33".into()];
    // Sidecar::start waits for the listening line: the child exits first, naming the range.
    let result = tokio::spawn(Sidecar::start(s)).await;
    let Err(panic) = result else {
        panic!("pipelock must not start with a bad range");
    };
    let text = panic
        .into_panic()
        .downcast::<String>()
        .map(|b| *b)
        .unwrap_or_default();
    assert!(
        text.contains("10.0.0.0/33") && text.contains("allow_private"),
        "{text}"
    );
}
