//! The upstream's host key, checked against a known_hosts file (`sshd(8)`, "SSH_KNOWN_HOSTS FILE
//! FORMAT") before anything is sent: never trust on first use.
//!
//! This module owns reading the file — plain patterns (`*` and `?` wildcards, `!` negation,
//! comma lists), hashed entries (`|1|salt|hmac-sha1`), the `[host]:port` form for a port other
//! than 22, the `@revoked` marker (`@cert-authority` lines are skipped: git-gate does not accept
//! host certificates) — and the verdict on a presented key, whose refusal names the host, the
//! key's SHA256 fingerprint and how to add it.

use std::path::Path;

use base64::Engine as _;
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey};

/// One usable line of the file.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    revoked: bool,
    patterns: String,
    key: PublicKey,
}

/// A known_hosts file, read.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    lines: Vec<Line>,
}

/// What the file says about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for the host holds this key.
    Trusted,
    /// A `@revoked` line holds this key.
    Revoked,
    /// No line names the host.
    Unknown,
    /// Lines name the host, with other keys (their algorithms).
    Mismatch(Vec<String>),
}

/// Why a host key is refused.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "cannot read known_hosts {path} for upstream {upstream:?}: {cause}; the recipe's known_hosts (default ~/.ssh/known_hosts) must be a readable file"
    )]
    Read {
        path: String,
        upstream: String,
        cause: std::io::Error,
    },
    #[error(
        "the host key of {host} ({fingerprint}) is not in upstream {upstream:?}'s known_hosts; git-gate never trusts a key on first use: check the fingerprint with the host's operator, then add it with `ssh-keyscan{port_flag} {name} >> KNOWN_HOSTS` (the recipe's known_hosts)"
    )]
    Unknown {
        upstream: String,
        host: String,
        name: String,
        port_flag: String,
        fingerprint: String,
    },
    #[error(
        "the host key of {host} ({fingerprint}) does NOT match upstream {upstream:?}'s known_hosts, which holds {known} for it: the host changed its key or someone is in the way; if the change is expected, check the new fingerprint with the host's operator, remove the old line (`ssh-keygen -R '{lookup}' -f KNOWN_HOSTS`) and add the new one with `ssh-keyscan{port_flag} {name} >> KNOWN_HOSTS`"
    )]
    Mismatch {
        upstream: String,
        host: String,
        name: String,
        lookup: String,
        port_flag: String,
        fingerprint: String,
        known: String,
    },
    #[error(
        "the host key of {host} ({fingerprint}) is marked @revoked in upstream {upstream:?}'s known_hosts"
    )]
    Revoked {
        upstream: String,
        host: String,
        fingerprint: String,
    },
}

/// The name a host is looked up by: `host`, or `[host]:port` when the port is not 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl KnownHosts {
    /// Reads `path`; lines that cannot be read (bad keys, unknown markers) are skipped, as ssh
    /// does.
    pub fn load(path: &Path, upstream: &str) -> Result<KnownHosts, Box<HostKeyError>> {
        let text = std::fs::read_to_string(path).map_err(|cause| {
            Box::new(HostKeyError::Read {
                path: path.display().to_string(),
                upstream: upstream.to_string(),
                cause,
            })
        })?;
        Ok(KnownHosts::parse(&text))
    }

    pub fn parse(text: &str) -> KnownHosts {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let mut words = raw.split_whitespace();
            let mut first = words.next().unwrap_or_default();
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                match marker {
                    "revoked" => revoked = true,
                    _ => continue,
                }
                first = words.next().unwrap_or_default();
            }
            let (Some(_algo), Some(b64)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(key) = russh::keys::parse_public_key_base64(b64) else {
                continue;
            };
            lines.push(Line {
                number: i + 1,
                revoked,
                patterns: first.to_string(),
                key,
            });
        }
        KnownHosts { lines }
    }

    /// The algorithms of the keys listed for a host (to prefer them in the key exchange).
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for l in self
            .lines
            .iter()
            .filter(|l| !l.revoked && names(&l.patterns, &name))
        {
            let a = l.key.algorithm();
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Whether a line that is not `@revoked` names the host (whatever its key): what
    /// `bottle doctor` asks before any connection, when no key has been presented yet.
    pub fn knows(&self, host: &str, port: u16) -> bool {
        let name = lookup_name(host, port);
        self.lines
            .iter()
            .any(|l| !l.revoked && names(&l.patterns, &name))
    }

    pub fn verdict(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let mut others = Vec::new();
        let mut trusted = false;
        for l in self.lines.iter().filter(|l| names(&l.patterns, &name)) {
            let same = l.key.key_data() == key.key_data();
            match (l.revoked, same) {
                (true, true) => return Verdict::Revoked,
                (true, false) => {}
                (false, true) => trusted = true,
                (false, false) => others.push(format!("{} (line {})", l.key.algorithm(), l.number)),
            }
        }
        if trusted {
            Verdict::Trusted
        } else if others.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Mismatch(others)
        }
    }

    /// `Ok` for a trusted key, else the refusal to show.
    pub fn check(
        &self,
        upstream: &str,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<(), Box<HostKeyError>> {
        let fingerprint = format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256));
        let shown = format!("{host} port {port}");
        let port_flag = if port == 22 {
            String::new()
        } else {
            format!(" -p {port}")
        };
        let refusal = match self.verdict(host, port, key) {
            Verdict::Trusted => return Ok(()),
            Verdict::Revoked => HostKeyError::Revoked {
                upstream: upstream.to_string(),
                host: shown,
                fingerprint,
            },
            Verdict::Unknown => HostKeyError::Unknown {
                upstream: upstream.to_string(),
                host: shown,
                name: host.to_string(),
                port_flag,
                fingerprint,
            },
            Verdict::Mismatch(known) => HostKeyError::Mismatch {
                upstream: upstream.to_string(),
                host: shown,
                name: host.to_string(),
                lookup: lookup_name(host, port),
                port_flag,
                fingerprint,
                known: known.join(", "),
            },
        };
        Err(Box::new(refusal))
    }
}

/// Whether a line's comma-separated patterns name `name`: one matches, no negated one does.
fn names(patterns: &str, name: &str) -> bool {
    let mut hit = false;
    for p in patterns.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if one(neg, name) {
                return false;
            }
        } else if one(p, name) {
            hit = true;
        }
    }
    hit
}

fn one(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let Some((salt, mac)) = hashed.split_once('|') else {
            return false;
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(mac)) = (b64.decode(salt), b64.decode(mac)) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        return ring::hmac::verify(&key, name.as_bytes(), &mac).is_ok();
    }
    wildcard(
        pattern.to_ascii_lowercase().as_bytes(),
        name.to_ascii_lowercase().as_bytes(),
    )
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| wildcard(rest, &s[k..])),
        Some((b'?', rest)) => !s.is_empty() && wildcard(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && wildcard(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIO/E8SlZ3qZ1cHpcAV3pSEnpj6TLqRuZmfC5E/39Udly";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEUxFK+gR8psYMz5eFg8QSzMR17XLrZIzDLp0wRNXHcS";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn hashed(name: &str) -> String {
        let salt = [7u8; 20];
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
        let mac = ring::hmac::sign(&k, name.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("|1|{}|{}", b64.encode(salt), b64.encode(mac.as_ref()))
    }

    #[test]
    fn plain_hashed_and_port_forms() {
        let kh = KnownHosts::parse(&format!(
            "# comment\nup.test,other.test ssh-ed25519 {ED}\n[up.test]:2222 ssh-ed25519 {ED}\n{} ssh-ed25519 {ED} c\n",
            hashed("[hashed.test]:2200")
        ));
        assert_eq!(kh.verdict("up.test", 22, &key(ED)), Verdict::Trusted);
        assert_eq!(kh.verdict("UP.test", 2222, &key(ED)), Verdict::Trusted);
        assert_eq!(kh.verdict("up.test", 2223, &key(ED)), Verdict::Unknown);
        assert_eq!(kh.verdict("hashed.test", 2200, &key(ED)), Verdict::Trusted);
        assert_eq!(kh.verdict("hashed.test", 22, &key(ED)), Verdict::Unknown);
        assert!(kh.knows("hashed.test", 2200) && kh.knows("up.test", 2222));
        assert!(kh.knows("other.test", 22) && !kh.knows("up.test", 2223));
        assert!(!kh.knows("hashed.test", 22));
        assert!(matches!(
            kh.verdict("up.test", 2222, &key(OTHER)),
            Verdict::Mismatch(_)
        ));
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(&format!(
            "*.corp.test,!bad.corp.test ssh-ed25519 {ED}\n@revoked * ssh-ed25519 {OTHER}\n@cert-authority * ssh-ed25519 {OTHER}\n"
        ));
        assert_eq!(kh.verdict("git.corp.test", 22, &key(ED)), Verdict::Trusted);
        assert_eq!(kh.verdict("bad.corp.test", 22, &key(ED)), Verdict::Unknown);
        assert_eq!(
            kh.verdict("git.corp.test", 22, &key(OTHER)),
            Verdict::Revoked
        );
        // A host whose only line is revoked is not known.
        assert!(
            !KnownHosts::parse(&format!("@revoked x.test ssh-ed25519 {OTHER}\n"))
                .knows("x.test", 22)
        );
    }

    #[test]
    fn refusals_name_the_host_the_fingerprint_and_the_fix() {
        let kh = KnownHosts::parse(&format!("[up.test]:2222 ssh-ed25519 {OTHER}\n"));
        let e = kh
            .check("origin", "up.test", 2222, &key(ED))
            .unwrap_err()
            .to_string();
        assert!(e.contains("up.test port 2222"), "{e}");
        assert!(e.contains("ssh-ed25519 SHA256:"), "{e}");
        assert!(e.contains("does NOT match"), "{e}");
        let e = KnownHosts::default()
            .check("origin", "up.test", 2222, &key(ED))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ssh-keyscan -p 2222 up.test >> KNOWN_HOSTS"),
            "{e}"
        );
    }
}
