//! The DLP corpus's secret side: what is scanned ([`Item`]), and every generated secret
//! embedded in a carrier an agent would send, or split over two headers.

use super::kit::{Rng, json_str, urlencode};
use super::secrets::{KINDS, Secret};

/// What is scanned: one value (a request target, a header) or a body.
pub enum Item {
    Value(String),
    /// A request target: scanned as pipelock scans a URL (signed-URL exemption on).
    Url(String),
    Body(Vec<u8>),
}

impl Item {
    pub fn body(text: impl Into<String>) -> Item {
        Item::Body(text.into().into_bytes())
    }

    /// The first bytes, for a report line.
    pub fn preview(&self) -> String {
        let bytes = match self {
            Item::Value(v) | Item::Url(v) => v.as_bytes(),
            Item::Body(b) => b,
        };
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]);
        text.replace('\n', "⏎")
    }
}

fn chat(text: &str) -> Item {
    Item::body(format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{{"role":"user","content":[{{"type":"text","text":{}}}]}}],"stream":true}}"#,
        json_str(text)
    ))
}

fn tool_result(text: &str) -> Item {
    Item::body(format!(
        r#"{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01{}","content":{}}}]}}]}}"#,
        "A1b2C3d4E5f6G7h8J9k0Lm",
        json_str(text)
    ))
}

fn token_carrier(t: &str, n: usize) -> Item {
    match n % 10 {
        0 => chat(&format!(
            "Here is my config, the key is {t} — why does the request fail?"
        )),
        1 => Item::Value(format!("Authorization: Bearer {t}")),
        2 => Item::Value(format!("x-api-key: {t}")),
        3 => Item::Value(format!(
            "/v1/resources?page=2&api_key={}&sort=desc",
            urlencode(t)
        )),
        4 => Item::body(format!(
            "# local development\nRUST_LOG=debug\nSERVICE_TOKEN={t}\nPORT=8080\n"
        )),
        5 => tool_result(&format!(
            "import client\n\nc = client.Client(\n    api_key=\"{t}\",\n    timeout=30,\n)\nprint(c.me())\n"
        )),
        6 => Item::body(format!(
            "services:\n  api:\n    image: api:1.4\n    environment:\n      - UPSTREAM_TOKEN={t}\n"
        )),
        7 => Item::body(format!(
            "grant_type=client_credentials&client_id=ci-bot&client_secret={}",
            urlencode(t)
        )),
        8 => Item::body(format!(
            r#"{{"type":"tool_use","id":"toolu_01X","name":"bash","input":{{"command":{}}}}}"#,
            json_str(&format!(
                "curl -sS -H 'Authorization: Bearer {t}' https://api.example.com/v2/me"
            ))
        )),
        _ => Item::body(format!(
            "I rotated the credential; the new one is {t}. Please update the CI settings.\n"
        )),
    }
}

fn url_carrier(u: &str, n: usize) -> Item {
    match n % 4 {
        0 => Item::Value(format!("/fetch?target={}", urlencode(u))),
        1 => chat(&format!("The job posts to {u} and gets a 403, any idea?")),
        2 => Item::body(format!("WEBHOOK_URL={u}\nTIMEOUT=30\n")),
        _ => tool_result(&format!(
            "requests.post(\"{u}\", json={{\"text\": \"deploy done\"}})\n"
        )),
    }
}

fn text_carrier(text: &str, n: usize) -> Item {
    match n % 3 {
        0 => chat(&format!("Can you check this file?\n\n{text}\n")),
        1 => Item::body(text.to_string()),
        _ => tool_result(&format!("$ cat ./config/local\n{text}\n")),
    }
}

fn field_carrier(name: &str, value: &str, n: usize) -> Item {
    let header_name = name.replace('_', "-");
    match n % 8 {
        0 => Item::body(format!(
            r#"{{"name":"ci","{name}":"{value}","enabled":true}}"#
        )),
        1 => Item::body(format!("HOME=/home/agent\n{name}={value}\n")),
        2 => Item::Value(format!("/api/v1/login?user=ci&{name}={}", urlencode(value))),
        3 => Item::Value(format!("{header_name}: {value}")),
        4 => Item::body(format!("database:\n  host: db\n  {name}: {value}\n")),
        5 => Item::body(format!("user=ci&{name}={}&remember=1", urlencode(value))),
        6 => Item::body(format!(
            "[service]\nurl = \"https://api.example.com\"\n{name} = \"{value}\"\n"
        )),
        _ => tool_result(&format!(
            "conn = connect(host=\"db\", {name}=\"{value}\")\n"
        )),
    }
}

fn carry(secret: &Secret, n: usize) -> Item {
    match secret {
        Secret::Token(t) => token_carrier(t, n),
        Secret::Url(u) => url_carrier(u, n),
        Secret::Block(b) | Secret::Line(b) => text_carrier(b, n),
        Secret::Header(h) => Item::Value(h.clone()),
        Secret::Field(name, value) => field_carrier(name, value, n),
    }
}

/// Six secrets of every kind (twenty credential fields), each in a carrier of its own turn.
pub fn all(r: &mut Rng) -> Vec<(&'static str, Item)> {
    let mut out = Vec::new();
    let mut n = 0;
    for (rule, make) in KINDS {
        let count = if *rule == "credential-field" { 24 } else { 6 };
        for _ in 0..count {
            let secret = make(r);
            out.push((*rule, carry(&secret, n)));
            n += 1;
        }
    }
    out
}

/// Six secrets of every kind that fits a header, each split into `parts` near-equal pieces
/// over as many headers (`(name, value)` pairs, in the order sent): a token under
/// `x-note-a`, then `x-note-b`; a header value under its own name, then `x-more`; a field
/// under `x-NAME`, then `x-more`. Past two pieces, the later ones go under `x-part-3`, …
/// Multi-line secrets (PEM blocks) fit no header and are left out.
pub fn split_headers(r: &mut Rng, parts: usize) -> Vec<(&'static str, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for (rule, make) in KINDS {
        for _ in 0..6 {
            let (first, value, second) = match make(r) {
                Secret::Token(t) => ("x-note-a".to_string(), t, "x-note-b"),
                Secret::Url(u) => ("x-callback".to_string(), u, "x-more"),
                Secret::Line(l) => ("x-note".to_string(), l, "x-more"),
                Secret::Header(h) => {
                    let (name, value) = h.split_once(": ").expect("Name: value");
                    (name.to_ascii_lowercase(), value.to_string(), "x-more")
                }
                Secret::Field(name, value) => (
                    format!("x-{}", name.replace('_', "-").to_ascii_lowercase()),
                    value,
                    "x-more",
                ),
                Secret::Block(_) => continue,
            };
            let mut cuts = vec![0];
            for k in 1..parts {
                let mut at = value.len() * k / parts;
                while !value.is_char_boundary(at) {
                    at += 1;
                }
                cuts.push(at);
            }
            cuts.push(value.len());
            let headers = cuts
                .windows(2)
                .enumerate()
                .map(|(k, c)| {
                    let name = match k {
                        0 => first.clone(),
                        1 => second.to_string(),
                        _ => format!("x-part-{}", k + 1),
                    };
                    (name, value[c[0]..c[1]].to_string())
                })
                .collect();
            out.push((*rule, headers));
        }
    }
    out
}
