//! `bottle console` driven over raw HTTP/1.1 (every header the test's own): a started console,
//! its sign-in, its replies, its live event stream, and a recipe with supervise on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Spawned, TestContext};

/// A started `bottle console` and the session a browser would hold.
pub struct Console {
    /// Held so the console runs as long as the test needs it (stopped when dropped).
    _process: Spawned,
    /// `127.0.0.1:PORT`
    pub host: String,
    pub url: String,
    pub token: String,
}

impl Console {
    pub fn start(ctx: &TestContext) -> Console {
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
            _process: process,
            host,
            url,
            token,
        }
    }

    /// Signs in with the token; returns the `Cookie` header value.
    pub fn sign_in(&self) -> String {
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
    pub fn csrf(&self, cookie: &str) -> String {
        let page = http(&self.host, "GET", "/", &[("Cookie", cookie)], "");
        assert_eq!(page.status, 200, "{page:?}");
        let needle = "name=\"bottle-csrf\" content=\"";
        let at = page.body.find(needle).unwrap() + needle.len();
        page.body[at..at + 64].to_string()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    /// `POST` a reply as the page does.
    pub fn reply(&self, cookie: &str, csrf: &str, run: &str, id: &str, body: &str) -> Reply {
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

    pub fn requests(&self, cookie: &str, run: &str) -> Vec<Value> {
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
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request to `host` (also the `Host` header unless `headers` give one), the
/// connection closed after it.
pub fn http(host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
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

pub fn supervise_recipe(name: &str, hosts: &[&str], command: &str) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| format!("\"{h}\" = \"host-gateway\""))
        .collect();
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = {command}

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

/// A console's live event stream for one run, opened before what it should see happens.
pub struct Events {
    lines: std::io::Lines<BufReader<TcpStream>>,
}

impl Events {
    pub fn open(c: &Console, cookie: &str, run: &str) -> Events {
        let mut s = TcpStream::connect(&c.host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /api/events?run={run} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
            c.host
        )
        .unwrap();
        Events {
            lines: BufReader::new(s).lines(),
        }
    }

    /// Reads on until a `requests` event satisfies `want` (60 s at most).
    pub fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut event = String::new();
        loop {
            let line = self.lines.next().expect("the event stream ended");
            let line = line.expect("no event in 60 s");
            assert!(Instant::now() < deadline, "no such event in 60 s");
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ")
                && event == "requests"
            {
                let v: Value = serde_json::from_str(data).unwrap();
                if want(&v) {
                    return v;
                }
            }
        }
    }
}

pub fn status_of(rows: &Value, id: &str) -> String {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}
