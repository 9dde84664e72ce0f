//! One request through pipelock, in order: its target (absolute-form `http://`, or the
//! CONNECT tunnel it came through), the allowlist, DLP on what the guest sent (the URL, each
//! header as `Name: value`, then the body as it streams), the egress stage for a route host
//! (HTTPS only: the guest's credential header replaced by the real one), the upstream, and
//! back: the answer with egress's scrubber for a route. Every request ends as one audit event
//! (written by [`Outbound`] when the answer is done).

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri, Version};
use std::sync::Arc;

use super::allow::normalize;
use super::body::{BODY_IDLE, Outbound, Outcome, Pending, Scanned, full};
use super::boxed::Body;
use super::inflate::{self, Inflated};
use super::refusal::{REFUSED_HEADER, Refusal, route_rule};
use super::state::State;
use super::upstream::UpstreamError;
use crate::bundle::dlp::Scanner;
use crate::bundle::egress::Armed;
use crate::daemons::audit::Decision;

/// Where a request came in.
#[derive(Debug, Clone)]
pub enum Origin {
    /// pipelock's own port: absolute-form `http://` requests.
    Plain,
    /// Inside the intercepted TLS of a `CONNECT host:port`; `sent`: the host as the guest
    /// wrote it (case kept), which DLP reads.
    Tunnel {
        host: String,
        port: u16,
        sent: String,
    },
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Lowercased, without brackets or a trailing dot.
    pub host: String,
    /// The host as the guest wrote it, case kept: what DLP reads (a key id in a label of an
    /// allowed `*.suffix` would not match its rule lowercased).
    pub sent_host: String,
    pub port: u16,
    /// The path and query, as the guest sent them.
    pub path: String,
}

impl Target {
    /// What pipelock makes of a request arriving by `origin`.
    pub fn of(uri: &Uri, origin: &Origin) -> Result<Target, Refusal> {
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => "/".to_string(),
        };
        match origin {
            Origin::Tunnel { host, port, sent } => Ok(Target {
                https: true,
                host: host.clone(),
                sent_host: sent.clone(),
                port: *port,
                path,
            }),
            Origin::Plain => {
                let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                    return Err(Refusal::invalid(
                        "pipelock is a forward proxy: send absolute-form requests (http://host/path) or CONNECT host:port",
                    ));
                };
                if !scheme.eq_ignore_ascii_case("http") {
                    return Err(Refusal::invalid(&format!(
                        "pipelock forwards http:// requests only; for {scheme}:// use CONNECT (set the proxy for https too)"
                    )));
                }
                let host = normalize(authority.host());
                if host.is_empty() {
                    return Err(Refusal::invalid("the target has no host"));
                }
                Ok(Target {
                    https: false,
                    host,
                    sent_host: authority.host().to_string(),
                    port: authority.port_u16().unwrap_or(80),
                    path,
                })
            }
        }
    }

    /// `host` or `host:port` (the scheme's default port left out); IPv6 in brackets.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }

    /// [`Target::url`] with the host as the guest wrote it: what DLP scans.
    pub fn sent_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        let port = if self.port == default {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!("{scheme}://{}{port}{}", self.sent_host, self.path)
    }
}

/// An upstream's answer on its way back, with the route it went through.
struct Forwarded<'a> {
    response: Response<Incoming>,
    route: Option<&'a Armed>,
    /// The rule that let the host through: the allowlist, or a person's grant.
    allowed_by: &'static str,
}

impl State {
    /// Serves one request: the guest always gets an answer, and the audit log an event.
    pub async fn exchange(
        self: Arc<Self>,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Response<Body> {
        let mut pending = self.pending(req.method().as_str(), "-", 0);
        let outcome = pending.outcome.clone();
        if let Origin::Tunnel { host, port, sent } = &origin {
            pending.event.host = self.logged_sent_host(host, sent);
            pending.event.port = *port;
        }
        let target = match Target::of(req.uri(), &origin) {
            Ok(t) => t,
            Err(r) => return answer(r, pending),
        };
        pending.event.host = self.logged_sent_host(&target.host, &target.sent_host);
        pending.event.port = target.port;
        pending.event.path = self.logged_path(&target.path);
        match self.forward(req, &target, &outcome).await {
            Ok(f) => self.relay(f, &target, pending),
            Err(r) => answer(r, pending),
        }
    }

    async fn forward<'a>(
        &'a self,
        req: Request<Incoming>,
        t: &Target,
        outcome: &Arc<Outcome>,
    ) -> Result<Forwarded<'a>, Refusal> {
        let Some(allowed_by) = self.policy.allows(&t.host) else {
            return Err(Refusal::not_allowed(&t.host, self.supervise));
        };
        // An upgrade would turn the exchange into a stream neither DLP nor the scrubber reads.
        if let Some(protocol) = req.headers().get(header::UPGRADE) {
            let protocol = String::from_utf8_lossy(protocol.as_bytes()).into_owned();
            return Err(Refusal::upgrade(&t.host, &protocol));
        }
        let route = self.egress.route(&t.host);
        if route.is_some() && !t.https {
            return Err(Refusal::route_over_http(&t.host));
        }
        let dlp = self.policy.scanner();
        if let Some(dlp) = &dlp {
            scan_head(dlp, &t.sent_url(), req.headers(), self.supervise)?;
        }
        // A compressed body is scanned as it decodes; one pipelock cannot decode is not sent.
        let coding = match inflate::coding(req.headers()) {
            Ok(c) => c,
            Err(coding) if dlp.is_some() => {
                return Err(Refusal::undecodable_body(&coding));
            }
            Err(_) => None,
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(route) = route {
            route
                .inject(&mut parts.headers)
                .map_err(|m| Refusal::missing_token(&t.host, &m.token_env))?;
        }
        let authority = t.authority();
        parts.uri = t
            .url()
            .parse()
            .map_err(|_| Refusal::invalid("the target is not a valid URL"))?;
        parts.version = Version::HTTP_11;
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
        let scanner = dlp.as_ref().map(|d| d.body());
        let body = Scanned::new(body, scanner, coding, outcome.clone())
            .primed()
            .await;
        // Cut before it left: the upstream never hears of the request.
        if let Some(r) = body_refusal(outcome, self.supervise) {
            return Err(r);
        }
        let sent = self
            .client
            .request(Request::from_parts(parts, body.boxed_unsync()))
            .await;
        // The body was cut: whatever the upstream made of it, the guest learns why.
        if let Some(r) = body_refusal(outcome, self.supervise) {
            return Err(r);
        }
        match sent {
            Ok(response) => Ok(Forwarded {
                response,
                route,
                allowed_by,
            }),
            Err(e) => Err(upstream_refusal(t, route.is_some(), &e)),
        }
    }

    /// The upstream's answer to the guest: hop-by-hop headers dropped; for a route, the reason
    /// phrase dropped, a compressed body decoded, headers and body scrubbed of every token.
    fn relay(&self, f: Forwarded<'_>, t: &Target, mut pending: Pending) -> Response<Body> {
        let (mut parts, body) = f.response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let mut body = body.map_err(Into::into).boxed_unsync();
        let scrubber = match f.route {
            Some(route) => {
                // hyper keeps a custom reason phrase as an extension and writes it back out.
                parts.extensions.remove::<hyper::ext::ReasonPhrase>();
                match inflate::coding(&parts.headers) {
                    Ok(None) => {}
                    Ok(Some(coding)) => {
                        body = Inflated::new(body, coding).boxed_unsync();
                        parts.headers.remove(header::CONTENT_ENCODING);
                    }
                    Err(coding) => {
                        return answer(Refusal::encoded_answer(&t.host, &coding), pending);
                    }
                }
                route.scrub_headers(&mut parts.headers);
                // Scrubbing and decoding change the length.
                parts.headers.remove(header::CONTENT_LENGTH);
                Some(route.scrubber())
            }
            None => None,
        };
        pending.event.status = parts.status.as_u16();
        (pending.event.decision, pending.event.rule) = match f.route {
            Some(_) => (Decision::Injected, Some(route_rule(&t.host))),
            None => (Decision::Allowed, Some(f.allowed_by.into())),
        };
        Response::from_parts(parts, Outbound::new(body, scrubber, pending).boxed_unsync())
    }
}

/// Why the request's body was cut, if it was.
fn body_refusal(outcome: &Outcome, supervise: bool) -> Option<Refusal> {
    if let Some(rule) = outcome.finding.get() {
        return Some(Refusal::dlp(rule, "the request body", supervise));
    }
    if let Some(u) = outcome.undecodable.get() {
        return Some(Refusal::body_not_decoded(&u.why, u.too_large));
    }
    if outcome.idle.load(std::sync::atomic::Ordering::Relaxed) {
        return Some(Refusal::body_idle(BODY_IDLE.as_secs()));
    }
    None
}

/// pipelock's own answer, audited like any other.
pub fn answer(r: Refusal, mut pending: Pending) -> Response<Body> {
    pending.event.status = r.status.as_u16();
    pending.event.decision = r.decision;
    pending.event.rule = Some(r.rule.clone());
    let mut response = Response::new(Outbound::new(full(r.body), None, pending).boxed_unsync());
    *response.status_mut() = r.status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&r.rule) {
        h.insert(REFUSED_HEADER, v);
    }
    response
}

/// The host of an absolute URL (`scheme://host[:port]/…`), brackets and port left out.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host.rsplit_once(':').map_or(host, |(h, _)| h))
}

/// DLP on the head: the URL (its host as the guest wrote it, and that host upper-cased: DNS
/// ignores case, so a key id written in lower case reaches the name server as good as
/// upper), each header as `Name: value`, then values joined as `Name: value1value2…` (a key
/// split over headers): each to the next, each name's all, and all of them. Public for the
/// DLP corpus, which measures it.
pub fn scan_head(
    dlp: &Scanner,
    url: &str,
    headers: &HeaderMap,
    supervise: bool,
) -> Result<(), Refusal> {
    if let Some(f) = dlp.scan_url(url.as_bytes()) {
        return Err(Refusal::dlp(&f.rule, "the URL", supervise));
    }
    if let Some(host) = url_host(url).filter(|h| h.bytes().any(|b| b.is_ascii_lowercase()))
        && let Some(f) = dlp.scan(host.to_ascii_uppercase().as_bytes())
    {
        return Err(Refusal::dlp(
            &f.rule,
            "the URL's host (read without case, as DNS reads it)",
            supervise,
        ));
    }
    let mut line = Vec::with_capacity(256);
    for (name, value) in headers {
        line.clear();
        line.extend_from_slice(name.as_str().as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(value.as_bytes());
        if let Some(f) = dlp.scan(&line) {
            return Err(Refusal::dlp(
                &f.rule,
                &format!("the header {name}"),
                supervise,
            ));
        }
    }
    // A key split over headers: each value joined to the next, then each name's values all
    // joined, then every value joined, in the order they go upstream (a name's several values
    // are next to each other there), under the first's name (a credential-looking name reads
    // as one). Three passes over the head, whatever the number of pieces.
    type Header<'h> = (&'h HeaderName, &'h HeaderValue);
    let all: Vec<Header> = headers.iter().collect();
    let mut joins: Vec<(&HeaderName, &HeaderName, &[Header])> = all
        .windows(2)
        .map(|pair| (pair[0].0, pair[1].0, pair))
        .collect();
    let mut at = 0;
    while at < all.len() {
        let name = all[at].0;
        let run = all[at..].iter().take_while(|(n, _)| *n == name).count();
        if run > 2 {
            joins.push((name, name, &all[at..at + run]));
        }
        at += run;
    }
    if all.len() > 2 {
        joins.push((all[0].0, all[all.len() - 1].0, &all));
    }
    for (first, last, values) in joins {
        line.clear();
        line.extend_from_slice(first.as_str().as_bytes());
        line.extend_from_slice(b": ");
        for (_, value) in values {
            line.extend_from_slice(value.as_bytes());
        }
        if let Some(f) = dlp.scan(&line) {
            let which = if first == last {
                format!("the {} {first} headers, joined,", values.len())
            } else if values.len() == 2 {
                format!("the headers {first} and {last}, joined,")
            } else {
                format!("the {} headers {first} to {last}, joined,", values.len())
            };
            return Err(Refusal::dlp(&f.rule, &which, supervise));
        }
    }
    Ok(())
}

fn upstream_refusal(t: &Target, route: bool, e: &hyper_util::client::legacy::Error) -> Refusal {
    let target = format!("{}:{}", t.host, t.port);
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = Vec::new();
    while let Some(c) = cause {
        if let Some(u) = c.downcast_ref::<UpstreamError>() {
            if let UpstreamError::Private { host, blocked } = u {
                return Refusal::private_destination(host, blocked);
            }
            return Refusal::upstream(&target, route, Some(u), "");
        }
        chain.push(c.to_string());
        cause = c.source();
    }
    Refusal::upstream(&target, route, None, &chain.join(": "))
}

/// Drops the headers that describe one hop, not the request: the fixed list and every header
/// `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn targets_come_from_the_absolute_form_or_the_tunnel() {
        let uri: Uri = "http://A.Test:8080/x?q=1".parse().unwrap();
        let t = Target::of(&uri, &Origin::Plain).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.https), ("a.test", 8080, false));
        assert_eq!(t.url(), "http://a.test:8080/x?q=1");
        assert_eq!(t.sent_url(), "http://A.Test:8080/x?q=1");
        let tunnel = Origin::Tunnel {
            host: "b.test".into(),
            port: 443,
            sent: "B.test".into(),
        };
        // Inside a tunnel, the tunnel names the host, whatever the request says.
        let uri: Uri = "https://other.test/y".parse().unwrap();
        assert_eq!(Target::of(&uri, &tunnel).unwrap().url(), "https://b.test/y");
        let uri: Uri = "/z".parse().unwrap();
        assert!(Target::of(&uri, &Origin::Plain).is_err());
        let uri: Uri = "https://c.test/".parse().unwrap();
        assert!(Target::of(&uri, &Origin::Plain).is_err());
        let v6 = Target {
            https: true,
            host: "::1".into(),
            sent_host: "[::1]".into(),
            port: 8443,
            path: "/".into(),
        };
        assert_eq!(v6.authority(), "[::1]:8443");
    }
}
