//! What pipelock answers when it does not forward a request: a status and a plain-text body
//! that tells the agent what was refused, by which rule, and how a person can allow it.
//! Vague denials make agents work around them; these say exactly what happened.
//!
//! When supervise runs in the bundle, a refusal a person could lift for this run (a host off
//! the allowlist, a value DLP flagged) shows the exact request that asks one
//! ([`supervise_request`]): a `curl` line the agent can run as it is, or fill in.
//!
//! Each answer names its audit decision and rule ([`Refusal::decision`], [`Refusal::rule`]),
//! and carries `X-Bottle-Refused: RULE` so a client can tell pipelock's answer from the
//! upstream's.

use hyper::StatusCode;

use super::destination::{Blocked, PRIVATE_RULE};
use super::upstream::UpstreamError;
use crate::daemons::audit::Decision;
use crate::daemons::netclass::Cidr;

/// The rule of a refused `Upgrade` (WebSocket).
pub const UPGRADE_RULE: &str = "upgrade";

/// The rule of a request body DLP cannot read: its coding unknown, corrupt, or too large.
pub const CODING_RULE: &str = "content-encoding";

/// The header naming the rule behind one of pipelock's own answers.
pub const REFUSED_HEADER: &str = "x-bottle-refused";

/// One of pipelock's own answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub decision: Decision,
    pub rule: String,
    pub body: String,
}

impl Refusal {
    /// `host` is not on the allowlist; `supervise`: whether a person can be asked to allow it
    /// for this run.
    pub fn not_allowed(host: &str, supervise: bool) -> Refusal {
        let recipe = format!(
            "a person adds \"{host}\" under [pipelock] allow in the recipe (or \"*.DOMAIN\" for \
             every name below DOMAIN) and runs the bottle again.\n"
        );
        let how = if supervise {
            let ask = [("kind", "allow_host"), ("host", host)];
            format!(
                "A person can allow it for this run: ask with\n  {}\n\
                 which waits for the answer (see ~/.bottle/SUPERVISE.md); once approved, send the \
                 request again. For every run, {recipe}",
                supervise_request(&ask)
            )
        } else {
            format!("To allow it, {recipe}")
        };
        Refusal {
            status: StatusCode::FORBIDDEN,
            decision: Decision::Refused,
            rule: "allowlist".into(),
            body: format!(
                "pipelock refused this request: {host} is not on this bottle's allowlist (rule: allowlist).\n\
                 Nothing was sent to {host}. {how}"
            ),
        }
    }

    /// DLP found what looks like a credential in `place` (the URL, a header named, the body);
    /// `supervise`: whether a person can be asked to let the value through for this run. The
    /// body never holds the value.
    pub fn dlp(rule: &str, place: &str, supervise: bool) -> Refusal {
        let how = if supervise {
            let ask = [("kind", "allow_dlp"), ("rule", rule), ("value", "VALUE")];
            format!(
                "If the value is not a credential, a person can let it through for this run: ask with\n  \
                 {}\n\
                 with the exact value DLP flagged in place of VALUE (this message never shows it), \
                 which waits for the answer (see ~/.bottle/SUPERVISE.md). For every run, a person \
                 lists it under [pipelock] dlp_allow in the recipe.\n",
                supervise_request(&ask)
            )
        } else {
            "If the value is not a credential, a person can list it under [pipelock] dlp_allow \
             in the recipe.\n"
                .to_string()
        };
        Refusal {
            status: StatusCode::FORBIDDEN,
            decision: Decision::Refused,
            rule: rule.to_string(),
            body: format!(
                "pipelock refused this request: {place} holds what looks like a credential (DLP rule {rule}).\n\
                 The request was not sent on. Do not send credentials from inside the bottle: a route's \
                 token is added by pipelock itself. {how}"
            ),
        }
    }

    /// A request body compressed with a coding pipelock does not decode in requests (`br`,
    /// `zstd`, `compress`, several stacked): DLP cannot read it, so it is not sent.
    pub fn undecodable_body(coding: &str) -> Refusal {
        let shown: String = coding
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            decision: Decision::Refused,
            rule: CODING_RULE.into(),
            body: format!(
                "pipelock refused this request: its body is compressed with {shown:?} (Content-Encoding), \
                 which pipelock cannot decode, and DLP sends on no body it cannot read (rule: {CODING_RULE}).\n\
                 Nothing was sent. Send the body uncompressed, or compressed once with gzip, deflate, br or zstd.\n"
            ),
        }
    }

    /// A compressed request body that did not decode, or decoded past the bounds: DLP could
    /// not read it all, so the upstream's request was aborted.
    pub fn body_not_decoded(why: &str, too_large: bool) -> Refusal {
        let (status, how) = if too_large {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Send it uncompressed, or in smaller requests.",
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                "Check that the body is what its Content-Encoding says.",
            )
        };
        Refusal {
            status,
            decision: Decision::Refused,
            rule: CODING_RULE.into(),
            body: format!(
                "pipelock refused this request: its compressed body cannot be read for DLP: {why} (rule: {CODING_RULE}).\n\
                 The upstream's request was aborted before any byte DLP had not read. {how}\n"
            ),
        }
    }

    /// An allowed host whose address is private (loopback, RFC 1918, link-local…) and which
    /// the recipe neither maps under `[network] hosts` nor covers with `allow_private`. A
    /// person's grant for the run cannot lift it: the recipe has to say so.
    pub fn private_destination(host: &str, blocked: &Blocked) -> Refusal {
        let addr = blocked.addr;
        let range = Cidr::single(addr);
        Refusal {
            status: StatusCode::FORBIDDEN,
            decision: Decision::Refused,
            rule: PRIVATE_RULE.into(),
            body: format!(
                "pipelock refused this request: {host} is at {addr}, a {} address, and pipelock does not connect to private addresses (rule: {PRIVATE_RULE}).\n\
                 Nothing was sent to {host}. To allow it, a person adds \"{range}\" (or a wider \
                 range) under [pipelock] allow_private in the recipe, or maps the name under \
                 [network] hosts, and runs the bottle again.\n",
                blocked.class
            ),
        }
    }

    /// A request to switch protocols (`Upgrade: websocket`, `h2c`…): not carried, since
    /// DLP and the scrubber read HTTP messages, not what an upgrade turns the connection into.
    pub fn upgrade(host: &str, protocol: &str) -> Refusal {
        let shown: String = protocol
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            decision: Decision::Refused,
            rule: UPGRADE_RULE.into(),
            body: format!(
                "pipelock does not carry this request: it asks {host} to switch the connection to \
                 {shown:?} (Upgrade), and pipelock carries HTTP requests only (rule: {UPGRADE_RULE}).\n\
                 WebSocket and other upgraded connections are not supported yet: DLP and credential \
                 scrubbing read HTTP messages, not upgraded streams. Nothing was sent to {host}. Use \
                 the service's plain HTTP API instead.\n"
            ),
        }
    }

    /// A route's upstream answered in a content coding pipelock cannot decode, so it cannot
    /// scrub the answer of the run's tokens.
    pub fn encoded_answer(host: &str, coding: &str) -> Refusal {
        let shown: String = coding
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            decision: Decision::Failed,
            rule: route_rule(host),
            body: format!(
                "pipelock did not pass on this answer: {host} is an egress route and answered compressed \
                 with {shown:?}, which pipelock cannot decode to remove credentials from (it decodes one of gzip, \
                 deflate, br and zstd, and asked for no compression) (rule: {}).\n",
                route_rule(host)
            ),
        }
    }

    /// Plain http to a route host: its token goes over TLS only.
    pub fn route_over_http(host: &str) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            decision: Decision::Refused,
            rule: route_rule(host),
            body: format!(
                "pipelock refused this request: {host} is an egress route, and its credential is only \
                 sent over TLS (rule: {}). Use https://{host}/ instead of http://.\n",
                route_rule(host)
            ),
        }
    }

    /// The run handed over no token for the route.
    pub fn missing_token(host: &str, token_env: &str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            decision: Decision::Failed,
            rule: route_rule(host),
            body: format!(
                "pipelock cannot send this request: {host} is an egress route whose token comes from \
                 the host's environment variable {token_env}, and the run was given none (rule: {}).\n\
                 A person sets {token_env} in the environment of `bottle run` and runs the bottle again.\n",
                route_rule(host)
            ),
        }
    }

    /// Not a request pipelock serves.
    pub fn invalid(why: &str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            decision: Decision::Invalid,
            rule: "request".into(),
            body: format!("pipelock cannot serve this request: {why}\n"),
        }
    }

    /// The guest stopped sending its body.
    pub fn body_idle(secs: u64) -> Refusal {
        Refusal {
            status: StatusCode::REQUEST_TIMEOUT,
            decision: Decision::Failed,
            rule: "timeout".into(),
            body: format!(
                "pipelock dropped this request: its body stalled for {secs} s; the upstream's request was aborted.\n"
            ),
        }
    }

    /// The upstream could not be reached, or its TLS failed.
    pub fn upstream(
        target: &str,
        route: bool,
        err: Option<&UpstreamError>,
        other: &str,
    ) -> Refusal {
        let (rule, body) = match err {
            Some(e) if e.is_certificate() => (
                "upstream-tls",
                format!(
                    "pipelock did not send this request: the TLS certificate of {target} is not trusted ({e}).\n\
                     pipelock trusts the public roots and, for an egress route, the route's own CA. {}\n",
                    if route {
                        "This host is a route: a person sets the route's upstream_ca in the recipe to the CA that signed its certificate."
                    } else {
                        "If this host uses a private CA, a person declares it as an egress route with that CA as upstream_ca in the recipe."
                    }
                ),
            ),
            Some(e) => (
                "upstream",
                format!("pipelock cannot reach {target}: {e}.\n"),
            ),
            None => (
                "upstream",
                format!("pipelock got no answer from {target}: {other}.\n"),
            ),
        };
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            decision: Decision::Failed,
            rule: rule.into(),
            body,
        }
    }
}

/// The shell command that files `ask` (JSON fields in this order) with supervise
/// (`BOTTLE_SUPERVISE_URL` is in the guest's env when supervise runs): one line, the JSON
/// single-quoted for `sh`.
pub fn supervise_request(ask: &[(&str, &str)]) -> String {
    let fields: Vec<String> = ask
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    let json = format!("{{{}}}", fields.join(",")).replace('\'', "'\\''");
    format!(
        "curl -sS -X POST \"$BOTTLE_SUPERVISE_URL/v1/requests\" -H 'content-type: application/json' -d '{json}'"
    )
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The audit rule of a route host.
pub fn route_rule(host: &str) -> String {
    format!("route:{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_which_rule_and_how_to_allow() {
        let r = Refusal::not_allowed("evil.test", false);
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("evil.test") && r.body.contains("[pipelock] allow"));
        assert!(!r.body.contains("SUPERVISE"));
        let r = Refusal::dlp("aws-key", "the URL", false);
        assert!(r.body.contains("aws-key") && r.body.contains("dlp_allow"));
        assert_eq!(r.rule, "aws-key");
        let r = Refusal::missing_token("api.test", "API_TOKEN");
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.body.contains("API_TOKEN") && r.rule == "route:api.test");
        assert!(
            Refusal::route_over_http("api.test")
                .body
                .contains("https://api.test/")
        );
    }

    #[test]
    fn with_supervise_refusals_show_the_request_that_asks_a_person() {
        let r = Refusal::not_allowed("denied.test", true);
        let line = r
            .body
            .lines()
            .find(|l| l.trim_start().starts_with("curl "))
            .expect("a curl line");
        assert_eq!(
            line.trim(),
            r#"curl -sS -X POST "$BOTTLE_SUPERVISE_URL/v1/requests" -H 'content-type: application/json' -d '{"kind":"allow_host","host":"denied.test"}'"#
        );
        assert!(r.body.contains("[pipelock] allow"), "{}", r.body);
        let r = Refusal::dlp("github-pat", "the header authorization", true);
        assert!(
            r.body
                .contains(r#"-d '{"kind":"allow_dlp","rule":"github-pat","value":"VALUE"}'"#),
            "{}",
            r.body
        );
        // A quote in a name cannot end the shell's quoting.
        let odd = supervise_request(&[("host", "a'b")]);
        assert!(odd.ends_with(r#"-d '{"host":"a'\''b"}'"#), "{odd}");
    }
}
