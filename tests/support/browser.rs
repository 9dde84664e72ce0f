//! A real headless browser for tests: Debian's chromium through its chromedriver (WebDriver,
//! plain HTTP on loopback), driven by fantoccini; screenshots; waiting for an element.

use std::net::TcpStream;
use std::time::{Duration, Instant};

/// chromedriver on a free loopback port, stopped when dropped.
pub struct Driver {
    child: std::process::Child,
    pub port: u16,
}

impl Driver {
    pub fn start(log: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/setup --tests installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium with a profile of its own, through `driver`.
pub async fn browser(driver: &Driver, profile: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

/// Saves a screenshot of the page as `dir/NAME.png`.
pub async fn shot(b: &fantoccini::Client, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let png = b.screenshot().await.unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}

/// Waits (120 s at most) for an element matching `css` whose text holds `text`.
pub async fn element_with(
    b: &fantoccini::Client,
    css: &str,
    text: &str,
) -> fantoccini::elements::Element {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for e in b.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
            if e.text().await.unwrap_or_default().contains(text) {
                return e;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {css} holding {text:?} in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
