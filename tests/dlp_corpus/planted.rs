//! Secrets as the traffic test plants them in real requests: one of every built-in kind.

use super::kit::{Rng, json_str, urlencode};
use super::secrets::{KINDS, Secret};

/// One secret of a built-in kind as a run test plants it in a real request: where it can go.
pub struct Planted {
    pub rule: &'static str,
    /// The secret itself, as generated.
    pub secret: String,
    /// A query parameter (`name=value`, percent-encoded), when the secret fits in a URL.
    pub query: Option<String>,
    /// A whole header line (`Name: value`), when the secret is one line.
    pub header: Option<String>,
    /// A body holding it.
    pub body: String,
}

/// One secret of every built-in kind, with the places it can go in a request.
pub fn one_per_rule(r: &mut Rng) -> Vec<Planted> {
    let mut out = Vec::new();
    for (rule, make) in KINDS {
        let p = match make(r) {
            Secret::Token(t) => Planted {
                rule,
                secret: t.clone(),
                query: Some(format!("note={}", urlencode(&t))),
                header: Some(format!("X-Note: {t}")),
                body: format!("{{\"note\": {}}}", json_str(&t)),
            },
            Secret::Url(u) => Planted {
                rule,
                secret: u.clone(),
                query: None,
                header: Some(format!("X-Callback: {u}")),
                body: format!("{{\"callback\": {}}}", json_str(&u)),
            },
            Secret::Block(b) => Planted {
                rule,
                secret: b.clone(),
                query: None,
                header: None,
                body: b,
            },
            Secret::Line(l) => Planted {
                rule,
                secret: l.clone(),
                query: None,
                header: None,
                body: format!("{l}\n"),
            },
            Secret::Header(h) => Planted {
                rule,
                secret: h.clone(),
                query: None,
                header: Some(h.clone()),
                body: format!("{h}\n"),
            },
            Secret::Field(name, value) => Planted {
                rule,
                secret: value.clone(),
                query: Some(format!("{name}={}", urlencode(&value))),
                header: None,
                body: format!("{{\"{name}\": {}}}", json_str(&value)),
            },
        };
        out.push(p);
    }
    out
}
