//! No private destinations unless the recipe says so.
//!
//! The bundle sits on the host's outbound network, so an allowed name that resolves to a
//! loopback, private, link-local (cloud metadata), CGNAT, multicast or unspecified address —
//! or is rebound to one after the allowlist said yes — would hand the guest the host's own
//! services or the cloud's instance credentials. pipelock judges the address it actually
//! connects to: [`super::upstream`] resolves a name once, passes each answer through
//! [`Destinations::check`], and connects to that very address; nothing is looked up twice.
//!
//! Exempt: a name the recipe maps under `[network] hosts` (the recipe said where it goes),
//! and an address inside a range of `[pipelock] allow_private`. A host a person grants through
//! supervise is not: a grant lifts the allowlist, never this rule.
//!
//! Through an `upstream_proxy`, the proxy resolves names and pipelock never sees the address:
//! an IP literal target is still judged, a name is the proxy's to judge. The proxy itself is
//! named by the recipe and is exempt.

use std::collections::HashSet;
use std::net::IpAddr;

use super::allow::normalize;
use crate::daemons::netclass::{AddrClass, Cidr, CidrError, classify};

/// The rule of an audit line and a refusal for a private destination.
pub const PRIVATE_RULE: &str = "private-address";

/// Which addresses pipelock may connect to.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    mapped: HashSet<String>,
    allow: Vec<Cidr>,
}

/// An address pipelock will not connect to, and what kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub addr: IpAddr,
    pub class: AddrClass,
}

impl Destinations {
    /// `mapped`: the names of `[network] hosts`; `allow_private`: CIDRs.
    pub fn new(mapped: &[String], allow_private: &[String]) -> Result<Destinations, CidrError> {
        Ok(Destinations {
            mapped: mapped.iter().map(|h| normalize(h)).collect(),
            allow: allow_private
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the recipe maps `host` under `[network] hosts`.
    pub fn is_mapped(&self, host: &str) -> bool {
        self.mapped.contains(&normalize(host))
    }

    /// Whether `host` may be reached at `addr`.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Blocked> {
        let class = classify(addr);
        if !class.is_private()
            || self.is_mapped(host)
            || self.allow.iter().any(|c| c.contains(addr))
        {
            return Ok(());
        }
        Err(Blocked { addr, class })
    }

    /// For a target named by an IP literal (also through an upstream proxy): the literal's
    /// verdict; a name: `Ok` (judged where it is resolved).
    pub fn check_literal(&self, host: &str) -> Result<(), Blocked> {
        match host.parse::<IpAddr>() {
            Ok(addr) => self.check(host, addr),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_answers_are_refused_unless_mapped_or_listed() {
        let d = Destinations::new(&["Mapped.Test".into()], &["10.1.0.0/16".into()]).unwrap();
        let refused = d.check("a.test", ip("127.0.0.1")).unwrap_err();
        assert_eq!(refused.class, AddrClass::Loopback);
        assert!(d.check("a.test", ip("::ffff:127.0.0.1")).is_err());
        assert!(d.check("a.test", ip("::ffff:169.254.169.254")).is_err());
        assert!(d.check("a.test", ip("fd00::1")).is_err());
        assert!(d.check("a.test", ip("10.2.0.1")).is_err());
        assert!(d.check("a.test", ip("10.1.9.9")).is_ok());
        assert!(d.check("a.test", ip("::ffff:10.1.9.9")).is_ok());
        assert!(d.check("mapped.test.", ip("127.0.0.1")).is_ok());
        assert!(d.check("a.test", ip("8.8.8.8")).is_ok());
        assert!(d.check_literal("127.0.0.1").is_err());
        assert!(d.check_literal("::1").is_err());
        assert!(d.check_literal("a.test").is_ok());
        assert!(Destinations::new(&[], &["nope".into()]).is_err());
    }
}
