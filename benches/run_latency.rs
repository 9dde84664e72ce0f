//! pipelock's added time per request through a real run: N keep-alive HTTPS requests by curl
//! in a docker guest to an upstream on the host that is an egress route (as a user's API
//! would be), against the same curl in a plain container of the same image going direct, and
//! through mitmproxy on the host (an addon setting the same header, trusting the same CA).
//!
//! The chain in a run is the guest's bridge, the bundle's pipelock (TLS both ways, DLP,
//! egress's injection and scrubber, the audit log) and the bundle's outbound bridge; the
//! loopback bench (`benches/proxy_latency.sh`) measures pipelock alone. Each setup runs its
//! requests in one curl (one connection, kept alive), RUNS times; the figure is the median
//! run's total over N. Reported: ms per request for each, the time each proxy adds over
//! direct, and pipelock's added time over mitmproxy's (the issue's target: ≤ 0.1). Asserts
//! nothing about the figures; fails when a setup fails (a request not answered 200, the
//! route's token missing upstream).
//!
//! Usage: `cargo bench --bench run_latency [-- N]` (default 1000 requests, 3 runs each);
//! `HTTP=1.1` makes every curl speak HTTP/1.1 (the agent's own path) instead of h2.
//! Needs Docker Engine, mitmdump (`apt-get install -y mitmproxy`), and curl for the tools
//! guest. `SMOKE=1`: 20 requests, one run each; its figures are not measurements.

#[path = "../tests/support/mod.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the engine tests' support, of which this bench uses a part"
)]
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::upstream::{Answer, Server, TestCa};
use support::*;

const UPSTREAM: &str = "upstream.test";
const TOKEN_ENV: &str = "RUN_LATENCY_TOKEN";
const TOKEN: &str = "run-latency-real-token-0123456789";

/// The guest's loop: the URL `$1` with `?i=1` to `?i=$2` (curl's globbing), in one curl
/// with the protocol option `$3` (none: curl's choice, h2 over TLS); each request's status
/// and total time on a line of its own after the body.
const SCRIPT: &str =
    r#"curl -sS $3 --max-time 900 -w '\n@@ %{http_code} %{time_total}\n' "$1?i=[1-$2]""#;

/// The protocol option of every curl: `HTTP=1.1` in the environment gives `--http1.1`, the
/// protocol Claude Code's node client speaks; otherwise none.
fn protocol() -> String {
    match std::env::var("HTTP").as_deref() {
        Ok("1.1") => "--http1.1".into(),
        Ok("") | Err(_) => String::new(),
        Ok(other) => panic!("HTTP={other}: only HTTP=1.1 is known"),
    }
}

fn recipe() -> String {
    format!(
        r#"name = "run-latency"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["true"]

[pipelock]
allow = ["{UPSTREAM}"]

[[egress.routes]]
host = "{UPSTREAM}"
token_env = "{TOKEN_ENV}"
upstream_ca = "upstream-ca.pem"

[network]
hosts = {{ "{UPSTREAM}" = "host-gateway" }}
"#
    )
}

/// The total seconds of one run's requests, from curl's `code time` lines; panics on a
/// request not answered 200 or a count short of `n`.
fn total(setup: &str, out: &str, n: usize) -> f64 {
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("@@ ")).collect();
    assert_eq!(lines.len(), n, "{setup}: {n} requests wanted:\n{out}");
    lines
        .iter()
        .map(|l| {
            let (code, secs) = l.split_once(' ').unwrap_or((l, ""));
            assert_eq!(code, "200", "{setup}: {l}");
            secs.parse::<f64>().unwrap()
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A container of `image` running the guest's loop, on the default bridge, the host's
/// names mapped to the host; `env` and the CA it trusts (mounted) as given.
fn container(image: &str, ca: &std::path::Path, env: &[String], url: &str, n: usize) -> String {
    let mut c = Command::new("docker");
    c.args(["run", "--rm", "--pull", "never"])
        .args(["--add-host", &format!("{UPSTREAM}:host-gateway")])
        .args(["--add-host", "mitm.test:host-gateway"])
        .args(["-v", &format!("{}:/tmp/ca.pem:ro", ca.display())])
        .args(["-e", "CURL_CA_BUNDLE=/tmp/ca.pem"]);
    for e in env {
        c.args(["-e", e]);
    }
    c.args([
        image,
        "sh",
        "-c",
        SCRIPT,
        "sh",
        url,
        &n.to_string(),
        &protocol(),
    ]);
    let out = c.output().expect("docker run");
    assert!(
        out.status.success(),
        "docker run of {image}: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// mitmdump on the host, on a free port of every address (the containers reach it through
/// the host gateway), setting the route's header and sending every connection to the
/// upstream on loopback (the host does not resolve the upstream's name).
fn mitmproxy(dir: &std::path::Path, ca: &std::path::Path, upstream_port: u16) -> (Child, u16) {
    let port = TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addon = dir.join("inject.py");
    std::fs::write(
        &addon,
        format!(
            "def request(flow):\n    flow.request.headers[\"authorization\"] = \"Bearer {TOKEN}\"\n\n\
             def server_connect(data):\n    data.server.address = (\"127.0.0.1\", {upstream_port})\n"
        ),
    )
    .unwrap();
    let child = Command::new("mitmdump")
        .args(["-q", "--listen-host", "0.0.0.0", "-p", &port.to_string()])
        .args(["--set", &format!("confdir={}", dir.join("mitm").display())])
        .args([
            "--set",
            &format!("ssl_verify_upstream_trusted_ca={}", ca.display()),
        ])
        .arg("-s")
        .arg(&addon)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mitmdump (apt-get install -y mitmproxy)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || !dir.join("mitm/mitmproxy-ca-cert.pem").exists()
    {
        assert!(Instant::now() < deadline, "mitmdump did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

fn main() {
    let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if smoke { 20 } else { 1000 });
    let runs = if smoke { 1 } else { 3 };
    let ctx = TestContext::new("run-latency");
    ctx.use_tools_guest();
    let ca = TestCa::new("run-latency upstream CA");
    let ca_file = ctx.recipes.join("upstream-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server = Server::tls(Answer::Text("ok".into()), &ca, &[UPSTREAM]);
    ctx.write_recipe("r.toml", &recipe());
    let hash = ctx.build(&ctx.recipe());
    let url = format!("https://{UPSTREAM}:{}/v1/ping", server.port);

    let mut times: Vec<(&str, Vec<f64>)> = vec![
        ("direct", vec![]),
        ("bottle run", vec![]),
        ("mitmproxy", vec![]),
    ];
    for _ in 0..runs {
        let mut cmd = ctx.cmd();
        cmd.env(TOKEN_ENV, TOKEN);
        let out = ctx.output_of(
            cmd,
            &[
                "run",
                &hash,
                "--",
                "sh",
                "-c",
                SCRIPT,
                "sh",
                &url,
                &n.to_string(),
                &protocol(),
            ],
        );
        assert!(out.status.success(), "bottle run: {}", stderr(&out));
        times[1].1.push(total("bottle run", &stdout(&out), n));
    }
    let seen = server.requests();
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some(&format!("Bearer {TOKEN}"))),
        "the route's token did not reach the upstream on every request"
    );

    // The baselines in plain containers of the guest's own image (the run loaded it; the
    // test context removes it at the end).
    let show: serde_json::Value =
        serde_json::from_str(&ctx.ok(&["show", "--json", &hash])).unwrap();
    let image = show["guest"]["image_id"]
        .as_str()
        .expect("the guest's image id")
        .to_string();
    let image = image.as_str();
    let _images = ctx.keep_images();
    let mitm_dir = tempfile::tempdir().unwrap();
    let (mut mitm, mitm_port) = mitmproxy(mitm_dir.path(), &ca_file, server.port);
    let mitm_ca = mitm_dir.path().join("mitm/mitmproxy-ca-cert.pem");
    let proxy = format!("HTTPS_PROXY=http://mitm.test:{mitm_port}");
    for _ in 0..runs {
        let out = container(image, &ca_file, &[], &url, n);
        times[0].1.push(total("direct", &out, n));
        let out = container(image, &mitm_ca, std::slice::from_ref(&proxy), &url, n);
        times[2].1.push(total("mitmproxy", &out, n));
    }
    let _ = mitm.kill();
    let _ = mitm.wait();

    let per: Vec<(&str, f64)> = times
        .into_iter()
        .map(|(name, t)| (name, median(t) / n as f64 * 1000.0))
        .collect();
    let direct = per[0].1;
    let proto = match protocol().as_str() {
        "" => "curl's choice of protocol, h2".to_string(),
        p => p.to_string(),
    };
    println!(
        "{n} keep-alive HTTPS requests from a container to a route on the host ({proto}); median of {runs} run(s)"
    );
    println!("{:12} {:>14} {:>18}", "", "ms/request", "added ms/request");
    for (name, ms) in &per {
        println!("{name:12} {ms:14.3} {:18.3}", ms - direct);
    }
    let (pl, mp) = (per[1].1 - direct, per[2].1 - direct);
    println!(
        "bottle's added / mitmproxy's added: {:.3}  (target <= 0.1)",
        pl / mp
    );
    if smoke {
        println!(
            "run_latency: SMOKE run ({n} requests, 1 run each): the figures above show the bench works; they are not measurements"
        );
    }
}
