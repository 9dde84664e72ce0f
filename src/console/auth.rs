//! Who may use the console: the per-start token, the session cookie it is exchanged for, and
//! the `Host`, `Origin` and CSRF checks.
//!
//! - `GET /?token=TOKEN` with the token `bottle console` printed sets the session cookie
//!   (`HttpOnly`, `SameSite=Strict`, named after the port so two consoles on one machine keep
//!   theirs) and redirects to `/`, so the token leaves the address bar; every other request
//!   needs the cookie (401 without).
//! - `Host` must be `localhost:PORT` or an IP literal with the console's port (the listening
//!   address's own, or any when it listens on every address): a DNS name that resolves to
//!   loopback (DNS rebinding) is refused.
//! - `Origin`, when sent, must be `http://` and that `Host`; a `POST` must send it (browsers
//!   always do), and `Sec-Fetch-Site`, when sent, must be `same-origin` (or `none` for a
//!   typed address).
//! - A `POST` must carry the page's CSRF token in `X-Bottle-Csrf`.
//!
//! Token, session and CSRF token are 32 random bytes each (hex), minted at each start and
//! compared in constant time; none is written anywhere but the printed URL and the page.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{COOKIE, HOST, ORIGIN};

/// The header a `POST` carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-bottle-csrf";

/// Why a request was refused; the message is the response's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host {0:?} is not this console's address; open the URL `bottle console` printed (a name other than localhost is refused against DNS rebinding)"
    )]
    Host(String),
    #[error("Origin {0:?} is not this console's page; cross-site requests are refused")]
    Origin(String),
    #[error("a POST must come from the console's page (it sends Origin); refused")]
    NoOrigin,
    #[error("Sec-Fetch-Site {0:?}: only the console's own page may do this")]
    FetchSite(String),
    #[error("not signed in: open the URL with the token that `bottle console` printed")]
    NoSession,
    #[error("wrong token: open the URL exactly as `bottle console` printed it")]
    Token,
    #[error("missing or wrong CSRF token (header {CSRF_HEADER}); reload the page")]
    Csrf,
}

/// The secrets of one start of the console and the address they are good for.
pub struct Auth {
    token: String,
    session: String,
    csrf: String,
    listen: SocketAddr,
}

impl Auth {
    /// Fresh random secrets for a console listening on `listen` (its real port).
    pub fn new(listen: SocketAddr) -> Auth {
        Auth {
            token: random_hex(),
            session: random_hex(),
            csrf: random_hex(),
            listen,
        }
    }

    /// The URL to open: the listening address (loopback for an unspecified one) and the token.
    pub fn url(&self) -> String {
        let host = match self.listen.ip() {
            ip if ip.is_unspecified() => format!("127.0.0.1:{}", self.listen.port()),
            _ => self.listen.to_string(),
        };
        format!("http://{host}/?token={}", self.token)
    }

    /// The page's CSRF token (written into the page it serves).
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    fn cookie_name(&self) -> String {
        format!("bottle-console-{}", self.listen.port())
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name(),
            self.session
        )
    }

    /// The request's `Host`, if it names this console.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        if self.host_ok(&host) {
            Ok(host)
        } else {
            Err(Refusal::Host(host))
        }
    }

    fn host_ok(&self, host: &str) -> bool {
        let port = self.listen.port();
        let Some((name, p)) = host.rsplit_once(':') else {
            return false;
        };
        if p.parse::<u16>().ok() != Some(port) {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return self.listen.ip().is_loopback() || self.listen.ip().is_unspecified();
        }
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        match literal.parse::<IpAddr>() {
            Ok(ip) if self.listen.ip().is_unspecified() => !ip.is_unspecified(),
            Ok(ip) => ip == self.listen.ip(),
            Err(_) => false,
        }
    }

    /// `Origin` and `Sec-Fetch-Site` against the (checked) `host`; `post` requires an Origin.
    pub fn check_origin(&self, headers: &HeaderMap, host: &str, post: bool) -> Result<(), Refusal> {
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("?");
            let typed = site == "none" && !post;
            if site != "same-origin" && !typed {
                return Err(Refusal::FetchSite(site.to_string()));
            }
        }
        match headers.get(ORIGIN) {
            Some(o) => {
                let o = o.to_str().unwrap_or("?");
                if o == format!("http://{host}") {
                    Ok(())
                } else {
                    Err(Refusal::Origin(o.to_string()))
                }
            }
            None if post => Err(Refusal::NoOrigin),
            None => Ok(()),
        }
    }

    /// Whether the request carries this start's session cookie.
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        let name = self.cookie_name();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == name && same(v.as_bytes(), self.session.as_bytes()))
    }

    /// The `token` query parameter of `query`: `None` when there is none, else whether it is
    /// this start's.
    pub fn token_in(&self, query: Option<&str>) -> Option<bool> {
        let value = query?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v)?;
        Some(same(value.as_bytes(), self.token.as_bytes()))
    }

    /// Whether a `POST` carries the CSRF token.
    pub fn check_csrf(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if same(sent, self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::Csrf)
        }
    }
}

/// Equality in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes from the system's generator, in hex.
fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_are_the_listening_address_or_localhost() {
        let a = Auth::new("127.0.0.1:4000".parse().unwrap());
        for ok in ["127.0.0.1:4000", "localhost:4000", "LOCALHOST:4000"] {
            assert!(a.check_host(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "evil.test:4000",
            "127.0.0.1:4001",
            "127.0.0.2:4000",
            "127.0.0.1",
            "localhost.evil.test:4000",
        ] {
            assert!(a.check_host(&headers(&[("host", bad)])).is_err(), "{bad}");
        }
        assert!(a.check_host(&HeaderMap::new()).is_err());
        let any = Auth::new("0.0.0.0:4000".parse().unwrap());
        assert!(
            any.check_host(&headers(&[("host", "10.1.2.3:4000")]))
                .is_ok()
        );
        assert!(
            any.check_host(&headers(&[("host", "a.test:4000")]))
                .is_err()
        );
        let v6 = Auth::new("[::1]:4000".parse().unwrap());
        assert!(v6.check_host(&headers(&[("host", "[::1]:4000")])).is_ok());
    }

    #[test]
    fn origins_and_csrf() {
        let a = Auth::new("127.0.0.1:4000".parse().unwrap());
        let host = "127.0.0.1:4000";
        let same_site = headers(&[("origin", "http://127.0.0.1:4000")]);
        assert!(a.check_origin(&same_site, host, true).is_ok());
        let cross = headers(&[("origin", "http://evil.test")]);
        assert!(a.check_origin(&cross, host, false).is_err());
        assert_eq!(
            a.check_origin(&HeaderMap::new(), host, true),
            Err(Refusal::NoOrigin)
        );
        let site = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(a.check_origin(&site, host, false).is_err());
        assert!(a.check_csrf(&HeaderMap::new()).is_err());
        assert!(a.check_csrf(&headers(&[(CSRF_HEADER, "x")])).is_err());
        assert!(a.check_csrf(&headers(&[(CSRF_HEADER, a.csrf())])).is_ok());
    }

    #[test]
    fn the_token_buys_the_cookie() {
        let a = Auth::new("127.0.0.1:4000".parse().unwrap());
        let url = a.url();
        let query = url.split_once('?').unwrap().1;
        assert_eq!(a.token_in(Some(query)), Some(true));
        assert_eq!(a.token_in(Some("token=00")), Some(false));
        assert_eq!(a.token_in(Some("x=1")), None);
        let cookie = a.set_cookie();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let pair = cookie.split(';').next().unwrap();
        assert!(a.has_session(&headers(&[("cookie", &format!("a=b; {pair}"))])));
        assert!(!a.has_session(&headers(&[("cookie", "bottle-console-4000=00")])));
        let b = Auth::new("127.0.0.1:4000".parse().unwrap());
        assert_ne!(a.url(), b.url(), "a token per start");
    }
}
