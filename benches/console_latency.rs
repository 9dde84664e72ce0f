//! The console's two latencies, in a real run watched by a real headless chromium (Debian's
//! chromium through chromedriver, driven by fantoccini), over TRIALS requests (default 20):
//!
//! - filed → shown: from the time supervise files a guest's `allow_host` request (its
//!   `time_ms`) to its card being on the page (found by WebDriver, polled every 10 ms);
//! - click → through: from the click on Approve to the first request of a guest loop (curl
//!   every 20 ms through pipelock) reaching the host's server.
//!
//! Reported: median and max of each; the issue's target is ≤ 1 s each. Asserts nothing about
//! the figures.
//!
//! Usage: `cargo bench --bench console_latency [-- TRIALS]`. Needs what
//! `tests/engine/console.rs` needs: Docker Engine, chromium and chromium-driver, curl and git
//! for the tools guest. `SMOKE=1 cargo bench --bench console_latency`: a smoke run, one trial
//! (unless TRIALS is given); it fails when a step does (panics), and its figures are not
//! measurements.

#[path = "../tests/support/mod.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the engine tests' support, of which this bench uses a part"
)]
mod support;

use std::time::{Duration, Instant};

use support::upstream::{Answer, Server};
use support::*;

fn recipe(hosts: usize) -> String {
    let hosts: Vec<String> = (0..hosts)
        .map(|i| format!("\"h{i}.test\" = \"host-gateway\""))
        .collect();
    format!(
        r#"name = "console-latency"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["sleep", "3600"]

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

fn summary(name: &str, mut ms: Vec<u128>) {
    ms.sort();
    println!(
        "{name}: median {} ms, max {} ms over {} trials",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}

fn main() {
    let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if smoke { 1 } else { 20 });
    let ctx = TestContext::new("console-latency");
    ctx.use_tools_guest();
    let server = Server::plain(Answer::Text("through".into()));
    ctx.write_recipe("r.toml", &recipe(trials));
    let hash = ctx.build(&ctx.recipe());
    let _run = ctx.spawn(&["run", &hash]);
    let (id, _) = ctx.wait_live();
    let mut console = ctx.spawn(&["console", "--listen", "127.0.0.1:0"]);
    let err = console.wait_for_stderr("bottle console:", Duration::from_secs(30));
    let url = err
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let driver = support::browser::Driver::start(&ctx.dir.path().join("chromedriver.log"));
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (shown, through) = rt.block_on(async {
        let b = support::browser::browser(&driver, profile.path()).await;
        b.goto(&url).await.unwrap();
        let (mut shown, mut through) = (Vec::new(), Vec::new());
        let queue = bottle::run::supervise::queue_of(&ctx.store(), &id);
        for i in 0..trials {
            let host = format!("h{i}.test");
            let out = ctx.ok(&["exec", &id, "--", "sh", "-c", &format!(
                r#"curl -sS -X POST -d '{{"kind":"allow_host","host":"{host}"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait=0""#
            )]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let rid = v["id"].as_str().unwrap().to_string();
            let filed = queue.request(&rid).unwrap().unwrap().time_ms;
            let css = format!("#pending .request[data-request=\"{rid}\"] button.approve");
            let approve = loop {
                if let Ok(e) = b.find(fantoccini::Locator::Css(&css)).await {
                    break e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            shown.push(u128::from(
                bottle::daemons::audit::Event::now_ms().saturating_sub(filed),
            ));
            // The guest's loop, refused until the grant is in force.
            let target = format!("http://{host}:{}/", server.port);
            let mut looping = ctx.spawn(&["exec", &id, "--", "sh", "-c", &format!(
                "echo looping >&2; until curl -sf -o /dev/null {target}; do sleep 0.02; done"
            )]);
            looping.wait_for_stderr("looping", Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = server.requests().len();
            approve.click().await.unwrap();
            let clicked = Instant::now();
            while server.requests().len() == before {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            through.push(clicked.elapsed().as_millis());
            looping.wait(Duration::from_secs(60));
        }
        b.close().await.unwrap();
        (shown, through)
    });
    drop(driver);
    summary("filed → shown on the page", shown);
    summary(
        "Approve clicked → the guest's next request through",
        through,
    );
    ctx.ok(&["down", &id]);
    if smoke {
        println!(
            "console_latency: SMOKE run ({trials} trial(s)): the figures above show the bench works; they are not measurements"
        );
    }
}
