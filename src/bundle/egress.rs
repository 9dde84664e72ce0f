//! egress: the stage of pipelock that holds the real credentials.
//!
//! For each route host (over TLS only) it removes whatever credential the guest sent in the
//! route's header and presents the real token there, in the route's scheme, never in URLs or
//! bodies; and it scrubs every route's token from everything a route's upstream sends back
//! (the status line's reason phrase dropped, headers, the body decoded first if compressed),
//! so an upstream that reflects a request — or another route's credential — cannot hand a
//! token to the guest. It runs inside pipelock's
//! process, after DLP: the guest cannot address it, and an injected token never trips DLP.
//!
//! Token values come from the run on the bundle's stdin (never the container's config); the
//! guest holds a placeholder under each route's `token_env` name.
//!
//! The routes' config is in `crate::daemons::egress`. This module owns [`Egress`], the routes
//! armed with their tokens as pipelock uses them: which host is a route, the header to set, and a
//! [`Scrubber`] for what comes back.

use std::collections::BTreeMap;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::scrub::{Compiled, Scrubber};
use crate::daemons::egress::{Config, Route};

/// The value of the route's header: the scheme, a space, the token (or the bare token).
pub fn header_value(route: &Route, token: &str) -> String {
    if route.scheme.is_empty() {
        token.to_string()
    } else {
        format!("{} {token}", route.scheme)
    }
}

/// A route's config that pipelock cannot use.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "egress route {host}: {header:?} is not a valid HTTP header name; fix the route's header in the recipe"
    )]
    Header { host: String, header: String },
    #[error(
        "egress route {host}: the value of {token_env} cannot go in an HTTP header (it holds a control character or a line break); fix the secret on the host"
    )]
    Token { host: String, token_env: String },
}

/// The routes armed with their tokens, by lowercased host.
#[derive(Debug, Default)]
pub struct Egress {
    routes: BTreeMap<String, Armed>,
}

/// One route and what pipelock sends for it. Never printed with its token.
pub struct Armed {
    pub route: Route,
    header: HeaderName,
    /// The header's value, `None` when the run handed over no token for the route.
    value: Option<HeaderValue>,
    token: Option<Vec<u8>>,
    /// Every route's tokens and their forms, compiled once for every response of every route.
    scrub: std::sync::Arc<Compiled>,
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Armed")
            .field("route", &self.route)
            .field("has_token", &self.token.is_some())
            .finish()
    }
}

/// The run handed over no token for a route: what a refusal names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingToken {
    pub token_env: String,
}

impl Egress {
    /// Arms each route with `secrets[route.token_env]`; a route without its token stays, and
    /// each request to it is refused naming the env var.
    pub fn new(config: &Config, secrets: &BTreeMap<String, String>) -> Result<Egress, RouteError> {
        let mut routes = BTreeMap::new();
        let tokens: Vec<&[u8]> = config
            .routes
            .iter()
            .filter_map(|r| secrets.get(&r.token_env))
            .filter(|t| !t.is_empty())
            .map(|t| t.as_bytes())
            .collect();
        let scrub = Compiled::new(&tokens);
        for route in &config.routes {
            let header = HeaderName::from_bytes(route.header.trim().as_bytes()).map_err(|_| {
                RouteError::Header {
                    host: route.host.clone(),
                    header: route.header.clone(),
                }
            })?;
            let token = secrets.get(&route.token_env).filter(|t| !t.is_empty());
            let value = match token {
                Some(t) => {
                    let mut v = HeaderValue::from_str(&header_value(route, t)).map_err(|_| {
                        RouteError::Token {
                            host: route.host.clone(),
                            token_env: route.token_env.clone(),
                        }
                    })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            };
            routes.insert(
                normalize_host(&route.host),
                Armed {
                    route: route.clone(),
                    header,
                    value,
                    scrub: scrub.clone(),
                    token: token.map(|t| t.as_bytes().to_vec()),
                },
            );
        }
        Ok(Egress { routes })
    }

    /// The route for `host`, if it is one (any port).
    pub fn route(&self, host: &str) -> Option<&Armed> {
        self.routes.get(&normalize_host(host))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl Armed {
    /// Removes whatever the guest sent in the route's header and sets the real credential.
    /// The upstream is asked for an unencoded answer, so the scrubber sees the bytes it sends.
    pub fn inject(&self, headers: &mut HeaderMap) -> Result<(), MissingToken> {
        let Some(value) = &self.value else {
            return Err(MissingToken {
                token_env: self.route.token_env.clone(),
            });
        };
        headers.remove(&self.header);
        headers.insert(self.header.clone(), value.clone());
        headers.insert(
            hyper::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        Ok(())
    }

    /// A scrubber of every route's token, for one stream the upstream sends back.
    pub fn scrubber(&self) -> Scrubber {
        self.scrub.scrubber()
    }

    /// Scrubs every route's token from every header value the upstream sent back.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            let mut s = self.scrubber();
            let mut out = s.feed(value.as_bytes()).to_vec();
            out.extend_from_slice(&s.finish());
            if out != value.as_bytes() {
                *value = HeaderValue::from_bytes(&out)
                    .unwrap_or_else(|_| HeaderValue::from_static("[removed by bottle egress]"));
            }
        }
    }
}

fn normalize_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    h.strip_suffix('.').map(str::to_string).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str, scheme: &str) -> Route {
        Route {
            host: host.into(),
            header: "Authorization".into(),
            scheme: scheme.into(),
            token_env: "TOKEN".into(),
            upstream_ca: None,
        }
    }

    #[test]
    fn the_route_header_is_replaced_with_the_real_token() {
        let config = Config {
            routes: vec![route("Api.Example.com", "Bearer")],
            upstream_proxy: None,
        };
        let secrets = BTreeMap::from([("TOKEN".to_string(), "real".to_string())]);
        let egress = Egress::new(&config, &secrets).unwrap();
        let armed = egress.route("api.example.com.").expect("a route");
        let mut h = HeaderMap::new();
        h.append(
            "authorization",
            HeaderValue::from_static("Bearer egress-placeholder"),
        );
        h.append("authorization", HeaderValue::from_static("Basic x"));
        armed.inject(&mut h).unwrap();
        let all: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(all, ["Bearer real"]);
        assert!(all[0].is_sensitive());
        assert!(egress.route("example.com").is_none());
        assert!(!format!("{armed:?}").contains("real"));
    }

    #[test]
    fn a_missing_token_names_its_env_var() {
        let config = Config {
            routes: vec![route("a.test", "")],
            upstream_proxy: None,
        };
        let egress = Egress::new(&config, &BTreeMap::new()).unwrap();
        let err = egress
            .route("a.test")
            .unwrap()
            .inject(&mut HeaderMap::new());
        assert_eq!(
            err,
            Err(MissingToken {
                token_env: "TOKEN".into()
            })
        );
    }

    #[test]
    fn bad_header_names_and_tokens_are_config_errors() {
        let mut r = route("a.test", "");
        r.header = "bad header".into();
        let config = Config {
            routes: vec![r],
            upstream_proxy: None,
        };
        assert!(matches!(
            Egress::new(&config, &BTreeMap::new()),
            Err(RouteError::Header { .. })
        ));
        let config = Config {
            routes: vec![route("a.test", "")],
            upstream_proxy: None,
        };
        let secrets = BTreeMap::from([("TOKEN".to_string(), "a\nb".to_string())]);
        let err = Egress::new(&config, &secrets).unwrap_err().to_string();
        assert!(err.contains("TOKEN") && !err.contains("a\nb"), "{err}");
    }
}
