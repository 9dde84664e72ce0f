//! pipelock's policy for one request's host and content: the recipe's allowlist and DLP rules,
//! plus what a person granted for this run through supervise — hosts to allow and values DLP
//! lets through — read from the bundle's [`Shared`] state on every request, so a grant takes
//! effect on the next request, with no restart; the recipe's hash and store entry do not
//! change.
//!
//! A granted host is checked on each request that the allowlist does not allow (a read lock
//! and a short list); it lifts the allowlist only, never the private-destination rule
//! ([`super::destination`]). Granted DLP findings (a rule and the exact value it matched)
//! change the scanner itself: the first request that sees the grants' version change compiles
//! it again with them, and every request after uses it. A grant of hosts only bumps the
//! version and compiles nothing.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};

use super::allow::Allowlist;
use crate::bundle::dlp::Scanner;
use crate::bundle::log::log;
use crate::bundle::shared::{DlpGrant, Shared};
use crate::daemons::pipelock::Dlp;

/// The audit rule of a request the allowlist allows.
pub const ALLOWLIST_RULE: &str = "allowlist";
/// The audit rule of a request allowed by a host a person granted.
pub const GRANT_RULE: &str = "supervise";

/// The allowlist and DLP, with the run's grants.
pub struct Policy {
    allow: Allowlist,
    shared: Arc<Shared>,
    dlp: Dlp,
    compiled: RwLock<Compiled>,
}

/// The scanner in force and the grants it was compiled for.
struct Compiled {
    version: u64,
    granted: Vec<DlpGrant>,
    scanner: Option<Arc<Scanner>>,
}

impl Policy {
    /// Compiles the recipe's DLP rules (with any values already granted).
    pub fn new(allow: &[String], dlp: &Dlp, shared: Arc<Shared>) -> Result<Policy> {
        let grants = shared.grants();
        let scanner = compile(dlp, &grants.dlp)?;
        Ok(Policy {
            allow: Allowlist::new(allow),
            shared,
            dlp: dlp.clone(),
            compiled: RwLock::new(Compiled {
                version: grants.version,
                granted: grants.dlp,
                scanner,
            }),
        })
    }

    /// The rule that lets `host` through — the allowlist, or a person's grant for this run —
    /// or `None`: refused.
    pub fn allows(&self, host: &str) -> Option<&'static str> {
        if self.allow.allows(host) {
            Some(ALLOWLIST_RULE)
        } else if self.shared.host_granted(host) {
            Some(GRANT_RULE)
        } else {
            None
        }
    }

    /// Whether DLP is on.
    pub fn dlp_enabled(&self) -> bool {
        self.dlp.enabled
    }

    /// The DLP scanner in force (`None`: DLP is off), compiled again first when the granted
    /// values changed since the last request.
    pub fn scanner(&self) -> Option<Arc<Scanner>> {
        let version = self.shared.version();
        {
            let c = self.compiled.read().expect("scanner lock");
            if c.version == version {
                return c.scanner.clone();
            }
        }
        let grants = self.shared.grants();
        let mut c = self.compiled.write().expect("scanner lock");
        if c.version != grants.version {
            if c.granted != grants.dlp {
                match compile(&self.dlp, &grants.dlp) {
                    Ok(s) => {
                        c.scanner = s;
                        log(
                            "pipelock",
                            format!("DLP lets {} granted finding(s) through", grants.dlp.len()),
                        );
                    }
                    // The recipe's rules compiled at start, and exact values cannot break
                    // them: keep the scanner in force rather than fail open.
                    Err(e) => log("pipelock", format!("DLP keeps its rules: {e:#}")),
                }
            }
            c.version = grants.version;
            c.granted = grants.dlp;
        }
        c.scanner.clone()
    }
}

fn compile(dlp: &Dlp, granted: &[DlpGrant]) -> Result<Option<Arc<Scanner>>> {
    Scanner::with_grants(dlp, granted).context("pipelock's DLP rules cannot be used")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dlp() -> Dlp {
        Dlp {
            enabled: true,
            rules: Vec::new(),
            allow: Vec::new(),
        }
    }

    /// A value the built-in `github-pat` rule flags, made here (the repository's files are
    /// DLP's ordinary corpus and hold no such literal).
    fn flagged() -> String {
        let tail: String = (0..36)
            .map(|i| b"q7Zk2Rv9Lm4Xw8Tn3Bc6Hd1Jf5Gs0PyW"[(i * 7 + 3) % 32] as char)
            .collect();
        format!("ghp_{tail}")
    }

    #[test]
    fn granted_hosts_pass_and_say_so() {
        let shared = Arc::new(Shared::default());
        let p = Policy::new(&["a.test".into()], &dlp(), shared.clone()).unwrap();
        assert_eq!(p.allows("a.test"), Some(ALLOWLIST_RULE));
        assert_eq!(p.allows("b.test"), None);
        shared.update(|g| g.hosts.push("b.test".into()));
        assert_eq!(p.allows("B.test."), Some(GRANT_RULE));
        assert_eq!(p.allows("c.b.test"), None);
    }

    #[test]
    fn granted_values_pass_dlp_once_the_version_changes() {
        let shared = Arc::new(Shared::default());
        let p = Policy::new(&[], &dlp(), shared.clone()).unwrap();
        let value = flagged();
        let line = format!("x-token: {value}");
        let first = p.scanner().unwrap();
        assert!(first.scan(line.as_bytes()).is_some());
        // A host grant compiles nothing.
        shared.update(|g| g.hosts.push("b.test".into()));
        assert!(Arc::ptr_eq(&first, &p.scanner().unwrap()));
        let grant = |rule: &str, value: &str| DlpGrant {
            rule: rule.into(),
            value: value.into(),
        };
        // The same value granted for another rule lets nothing through.
        shared.update(|g| g.dlp.push(grant("jwt", &value)));
        assert!(p.scanner().unwrap().scan(line.as_bytes()).is_some());
        shared.update(|g| g.dlp = vec![grant("github-pat", &value)]);
        let second = p.scanner().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.scan(line.as_bytes()), None);
        // Another credential is still found.
        let other = format!("ghp_{}", value[4..].chars().rev().collect::<String>());
        assert!(second.scan(format!("x: {other}").as_bytes()).is_some());
    }

    /// A JWT and an AWS key id, made here (no such literal in the repository).
    fn jwt_and_key() -> (String, String) {
        use base64::Engine as _;
        let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(br#"{"sub":"4f1c","iat":1700000000}"#),
            b64(&[
                7u8, 91, 200, 13, 55, 140, 3, 77, 250, 18, 99, 161, 42, 8, 230, 117
            ])
        );
        let key: String = (0..16)
            .map(|i| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(i * 11 + 5) % 32] as char)
            .collect();
        (jwt, format!("AKIA{key}"))
    }

    #[test]
    fn a_dlp_grant_lets_through_its_rule_and_exact_value_only() {
        let shared = Arc::new(Shared::default());
        let p = Policy::new(&[], &dlp(), shared.clone()).unwrap();
        let (jwt, key) = jwt_and_key();
        let scan = |text: &str| p.scanner().unwrap().scan(text.as_bytes()).map(|f| f.rule);
        assert_eq!(
            scan(&format!("x: {key}")).as_deref(),
            Some("aws-access-key-id")
        );
        assert_eq!(scan(&format!("x: {jwt}")).as_deref(), Some("jwt"));
        // The hidden suffix: a JWT and a key id in one value, approved as `jwt`.
        let hidden = format!("{jwt} {key}");
        shared.update(|g| {
            g.dlp.push(DlpGrant {
                rule: "jwt".into(),
                value: hidden.clone(),
            })
        });
        assert_eq!(
            scan(&format!("x: {key}")).as_deref(),
            Some("aws-access-key-id")
        );
        assert!(scan(&format!("x: {hidden}")).is_some());
        assert_eq!(scan(&format!("x: {jwt}")).as_deref(), Some("jwt"));
        // The JWT itself, granted as what it is, passes; the key beside it does not.
        shared.update(|g| {
            g.dlp.push(DlpGrant {
                rule: "jwt".into(),
                value: jwt.clone(),
            })
        });
        assert_eq!(scan(&format!("x: {jwt}")), None);
        assert_eq!(
            scan(&format!("x: {hidden}")).as_deref(),
            Some("aws-access-key-id")
        );
    }

    #[test]
    fn dlp_off_stays_off() {
        let shared = Arc::new(Shared::default());
        let off = Dlp {
            enabled: false,
            ..dlp()
        };
        let p = Policy::new(&[], &off, shared.clone()).unwrap();
        shared.update(|g| {
            g.dlp.push(DlpGrant {
                rule: "jwt".into(),
                value: "x".into(),
            })
        });
        assert!(p.scanner().is_none());
        assert!(!p.dlp_enabled());
    }
}
