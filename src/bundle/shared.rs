//! What the daemons of one bundle share in its process: the grants a person made for this
//! run through supervise (hosts to allow, values DLP lets through), which pipelock consults on
//! every request. They live for the run only — the recipe's hash and store entry do not change
//! — and supervise keeps them in its queue folder so they survive a bundle restart.

use std::sync::RwLock;

/// What a person allowed for this run, beyond the recipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Hosts pipelock allows besides its allowlist (exact names, lowercased).
    pub hosts: Vec<String>,
    /// Findings DLP lets through besides the recipe's `dlp_allow`: each one rule's finding of
    /// exactly one value, nothing wider.
    pub dlp: Vec<DlpGrant>,
    /// Bumped on every change, so a reader can tell it must rebuild what it derived.
    pub version: u64,
}

/// A value a person let DLP pass for one rule: a finding of `rule` whose matched value is
/// exactly `value` (not one inside it, not another rule's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DlpGrant {
    pub rule: String,
    pub value: String,
}

/// The bundle's shared state, handed to every daemon.
#[derive(Debug, Default)]
pub struct Shared {
    grants: RwLock<Grants>,
}

impl Shared {
    /// The grants as they are now.
    pub fn grants(&self) -> Grants {
        self.grants.read().expect("grants lock").clone()
    }

    /// The grants' version: changes whenever they do (cheap; for a reader caching what it
    /// derived from them).
    pub fn version(&self) -> u64 {
        self.grants.read().expect("grants lock").version
    }

    /// Whether a person allowed `host` for this run.
    pub fn host_granted(&self, host: &str) -> bool {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        self.grants
            .read()
            .expect("grants lock")
            .hosts
            .contains(&host)
    }

    /// Changes the grants (and bumps their version).
    pub fn update(&self, change: impl FnOnce(&mut Grants)) {
        let mut g = self.grants.write().expect("grants lock");
        change(&mut g);
        g.hosts.sort();
        g.hosts.dedup();
        g.dlp.sort();
        g.dlp.dedup();
        g.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_change_and_are_seen() {
        let s = Shared::default();
        assert!(!s.host_granted("a.test"));
        s.update(|g| g.hosts.push("a.test".into()));
        assert!(s.host_granted("A.test."));
        assert_eq!(s.grants().version, 1);
        assert_eq!(s.version(), 1);
    }
}
