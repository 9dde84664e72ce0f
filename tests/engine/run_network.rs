//! The guest's only way out is the bundle: from inside a docker guest, a test HTTP server (on
//! this host) is reached through the bundle's pipelock for an allowed host, refused with 403
//! for another (the gateway of a docker network the test makes: an address of this host where
//! the server answers the host), and unreachable directly at either; so are the docker
//! gateway, the host, and a container on another network.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::*;

const BODY: &str = "hello-from-test-server";

/// A tiny HTTP server on every address of this host; answers every request with [`BODY`].
fn serve() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer(conn));
        }
    });
    port
}

fn answer(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
}

/// The host's address on docker's default bridge (`docker0`): the host as containers see it.
fn docker0_gateway() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let gw = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        gw.parse::<std::net::Ipv4Addr>().is_ok(),
        "docker0 address: {text:?}"
    );
    gw
}

/// The host's address on a docker network: its bridge's gateway, an address of this host.
fn gateway_of(network: &str) -> String {
    let gw = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        network,
    ]);
    assert!(
        gw.parse::<std::net::Ipv4Addr>().is_ok(),
        "{network}'s gateway: {gw:?}"
    );
    gw
}

/// `GET /` from this host to `addr:port`; the whole answer.
fn get_from_host(addr: &str, port: u16) -> String {
    let mut s = TcpStream::connect((addr, port))
        .unwrap_or_else(|e| panic!("the host cannot reach {addr}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

const PROBE: &str = r#"allowed=$1; port=$2; denied=$3; other=$4
b=${HTTP_PROXY#http://}; b=${b%:*}
gw=${b%.*}.$(( ${b##*.} - 1 ))
echo "bundle=$b gateway=$gw"
# stdin stays open a moment after the request: pipelock drops a request whose client has
# half-closed before the upstream answered (hyper's default), and busybox nc half-closes at EOF.
get() { (printf 'GET http://%s:%s/ HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$1" "$port" "$1" "$port"; sleep 2) | nc -w 3 "$b" 8888 | tr -d '\r' | tr '\n' ' '; }
tunnel() { (printf 'CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n\r\n' "$1" "$port" "$1" "$port"; sleep 2) | nc -w 3 "$b" 8888 | head -1 | tr -d '\r'; }
echo "proxy-allowed: $(get "$allowed")"
echo "proxy-denied: $(get "$denied")"
echo "connect-allowed: $(tunnel "$allowed")"
echo "connect-denied: $(tunnel "$denied")"
try() { if nc -w 3 "$1" "$2" </dev/null >/dev/null 2>&1; then echo "$3: REACHED"; else echo "$3: unreachable"; fi; }
try "$allowed" "$port" direct-allowed
try "$denied" "$port" direct-denied
try "$gw" "$port" gateway
try 172.17.0.1 "$port" docker0
try "$other" 8080 other-container
try "$b" 8888 bundle
"#;

#[test]
fn the_guest_reaches_out_only_through_the_bundle() {
    let ctx = TestContext::new("run-only-way-out");
    let port = serve();
    let allowed = docker0_gateway();
    // A network of the test's own: a container on it serves on 8080, and its gateway is
    // another address of this host, where the test's server answers too (it listens on every
    // address): reachable from the host, denied to the guest.
    let net = unique("bottle-test-other");
    ctx.make_network(&net, None);
    let denied = gateway_of(&net);
    assert_ne!(denied, allowed);
    ctx.write_recipe(
        "r.toml",
        &format!(
            r#"name = "run-only-way-out"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["true"]

[pipelock]
allow = ["{allowed}"]
# docker0's address is private: pipelock connects to it only because the recipe says so.
allow_private = ["{allowed}/32"]
"#
        ),
    );
    let hash = ctx.build(&ctx.recipe());

    // A container on another network, serving on 8080; the host can reach it.
    // The guest image (busybox's httpd), loaded from its component: builds leave no image.
    let guest = ctx.entry(&hash).guest;
    let image = guest.image().id.clone();
    support::docker_ok(&[
        "load",
        "-q",
        "-i",
        guest.path(&guest.image().archive).to_str().unwrap(),
    ]);
    let name = unique("bottle-test-web");
    ctx.note_container(&name);
    let label = format!("{LABEL_STORE}={}", ctx.store_label);
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--label",
            &label,
            &image,
            "/bin/httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ])
    .trim()
    .to_string();
    let mut ok = false;
    for _ in 0..50 {
        if TcpStream::connect((other.as_str(), 8080)).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the other container does not serve on {other}:8080");
    // And the test server answers on the allowed and the denied address from the host: what
    // the guest cannot reach is there.
    for addr in [&allowed, &denied] {
        let answer = get_from_host(addr, port);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(BODY),
            "from the host, {addr}:{port}: {answer:?}"
        );
    }

    let port_s = port.to_string();
    let out = ctx.output(&[
        "run", &hash, "--", "sh", "-c", PROBE, "probe", &allowed, &port_s, &denied, &other,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = |key: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} line in:\n{stdout}"))
            .to_string()
    };
    let allowed_line = line("proxy-allowed");
    assert!(
        allowed_line.contains("200") && allowed_line.contains(BODY),
        "through the bundle, the allowed host answers:\n{stdout}"
    );
    assert!(line("proxy-denied").contains("403"), "{stdout}");
    assert!(line("connect-allowed").contains("200"), "{stdout}");
    // pipelock intercepts every CONNECT, a denied host's too: the 403 comes inside the TLS
    // session, where the guest's client reads its body (tests/offline/daemon_pipelock.rs).
    assert!(line("connect-denied").contains("200"), "{stdout}");
    for key in [
        "direct-allowed",
        "direct-denied",
        "gateway",
        "docker0",
        "other-container",
    ] {
        assert!(
            line(key).ends_with("unreachable"),
            "{key} must be unreachable:\n{stdout}"
        );
    }
    assert!(line("bundle").ends_with("REACHED"), "{stdout}");
    ctx.assert_nothing_left_but(&[&net, &name]);
}

trait NothingBut {
    fn assert_nothing_left_but(&self, ours: &[&str]);
}

impl NothingBut for TestContext {
    fn assert_nothing_left_but(&self, ours: &[&str]) {
        let left: Vec<String> = self
            .leftovers()
            .into_iter()
            .filter(|l| !ours.iter().any(|o| l.ends_with(o)))
            .collect();
        assert!(left.is_empty(), "the run left {left:?}");
    }
}
