//! The allowlist: exact hosts (`api.example.com`) and wildcards (`*.example.com`, which
//! matches every name below `example.com` but not `example.com` itself). Matching is on the
//! lowercased host without a trailing dot; ports are not restricted.

/// Exact hosts and `*.` wildcards, lowercased.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    exact: Vec<String>,
    /// `.example.com` for `*.example.com`.
    suffixes: Vec<String>,
}

impl Allowlist {
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Allowlist {
        let mut list = Allowlist::default();
        for e in entries {
            let e = normalize(e.as_ref());
            match e.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                    list.suffixes.push(suffix.to_string())
                }
                _ => list.exact.push(e),
            }
        }
        list
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = normalize(host);
        let ipv6 = host.contains(':');
        if host.is_empty() || (!ipv6 && host.split('.').any(|label| label.is_empty())) {
            return false;
        }
        self.exact.contains(&host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.suffixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lowercase, without IPv6 brackets or one trailing dot.
pub fn normalize(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(&h);
    h.strip_suffix('.').unwrap_or(h).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_hosts() {
        let a = Allowlist::new(&["localhost", "api.example.com"]);
        assert!(a.allows("localhost"));
        assert!(a.allows("LocalHost"));
        assert!(a.allows("localhost."));
        assert!(a.allows("api.example.com"));
        assert!(!a.allows("example.com"));
        assert!(!a.allows("x.api.example.com"));
        assert!(!a.allows("127.0.0.1"));
        assert!(!a.allows("localhost.evil.com"));
        assert!(!a.allows("evillocalhost"));
        assert!(!a.allows(""));
    }

    #[test]
    fn wildcards_match_names_below_only() {
        let a = Allowlist::new(&["*.localhost", "*.example.com"]);
        assert!(a.allows("a.localhost"));
        assert!(a.allows("a.b.localhost"));
        assert!(a.allows("API.Example.COM"));
        assert!(!a.allows("localhost"));
        assert!(!a.allows("example.com"));
        assert!(!a.allows(".example.com"));
        assert!(!a.allows("a..example.com"));
        assert!(!a.allows("badexample.com"));
        assert!(!a.allows("example.com.evil.org"));
        assert!(!a.allows("a.localhost.evil.org"));
    }

    #[test]
    fn odd_entries_match_nothing_unexpected() {
        let a = Allowlist::new(&["*", "*.", "[::1]"]);
        assert!(!a.allows("example.com"));
        assert!(!a.allows("a."));
        assert!(a.allows("[::1]"));
        assert!(a.allows("::1"));
        assert!(Allowlist::new::<&str>(&[]).is_empty());
    }
}
