//! An SSH upstream's URL (`ssh://[user@]host[:port]/path` or `user@host:path`), taken apart
//! as git takes it: git-gate connects with it, and `bottle doctor` reads which host a
//! known_hosts file must hold from it.

use super::Service;

/// An upstream URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The repository's path as the remote git gets it.
    pub path: String,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "upstream {upstream:?}: url {url:?} {why}; git-gate takes ssh://[user@]host[:port]/path or user@host:path"
)]
pub struct UrlError {
    upstream: String,
    url: String,
    why: &'static str,
}

impl Target {
    pub fn parse(upstream: &str, url: &str) -> Result<Target, UrlError> {
        let bad = |why| UrlError {
            upstream: upstream.to_string(),
            url: url.to_string(),
            why,
        };
        let unschemed = url.strip_prefix("ssh://").unwrap_or(url);
        let (user, rest) = match unschemed.split_once('@') {
            Some((u, r)) => (u.to_string(), r.to_string()),
            None => ("git".to_string(), unschemed.to_string()),
        };
        if user.is_empty() {
            return Err(bad("has an empty user"));
        }
        let (host, port, path) = if url.starts_with("ssh://") {
            let (authority, path) = rest
                .find('/')
                .map(|i| (&rest[..i], &rest[i..]))
                .ok_or_else(|| bad("has no path"))?;
            let (host, port) = split_port(authority).ok_or_else(|| bad("has a bad port"))?;
            // ssh://host/~user/repo: the path from the home folder, as git passes it.
            let path = path
                .strip_prefix("/~")
                .map_or(path.to_string(), |p| format!("~{p}"));
            (host, port, path)
        } else if url.contains("://") {
            return Err(bad("is not an SSH URL"));
        } else {
            let (host, path) = rest.split_once(':').ok_or_else(|| bad("has no ':path'"))?;
            (
                host.trim_matches(['[', ']']).to_string(),
                22,
                path.to_string(),
            )
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("has no host"));
        }
        if path.is_empty() {
            return Err(bad("has no path"));
        }
        Ok(Target {
            user,
            host,
            port,
            path,
        })
    }

    /// The exec command for a git service, the path quoted as git quotes it (`sq_quote`).
    pub fn command(&self, service: Service) -> String {
        let mut q = String::from("'");
        for c in self.path.chars() {
            match c {
                '\'' => q.push_str("'\\''"),
                '!' => q.push_str("'\\!'"),
                c => q.push(c),
            }
        }
        q.push('\'');
        format!("{} {q}", service.program())
    }
}

fn split_port(authority: &str) -> Option<(String, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 22,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok().filter(|p| *p > 0)?)),
        None => Some((authority.to_string(), 22)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_both_forms() {
        let t = Target::parse("o", "ssh://root@up.test:2222/srv/repo.git").unwrap();
        assert_eq!(
            t,
            Target {
                user: "root".into(),
                host: "up.test".into(),
                port: 2222,
                path: "/srv/repo.git".into()
            }
        );
        let t = Target::parse("o", "git@github.com:me/project.git").unwrap();
        assert_eq!(
            (t.user.as_str(), t.port, t.path.as_str()),
            ("git", 22, "me/project.git")
        );
        let t = Target::parse("o", "ssh://h.test/~me/r").unwrap();
        assert_eq!((t.user.as_str(), t.path.as_str()), ("git", "~me/r"));
        let t = Target::parse("o", "ssh://u@[::1]:22/r").unwrap();
        assert_eq!(t.host, "::1");
        for bad in ["https://h/r", "ssh://h", "h", "ssh://h:x/r", "u@:r", "@h:r"] {
            assert!(Target::parse("o", bad).is_err(), "{bad}");
        }
        let e = Target::parse("origin", "https://h/r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("origin") && e.contains("ssh://"), "{e}");
    }

    #[test]
    fn paths_are_quoted_as_git_quotes_them() {
        let t = Target::parse("o", "u@h:it's!.git").unwrap();
        assert_eq!(
            t.command(Service::ReceivePack),
            r"git-receive-pack 'it'\''s'\!'.git'"
        );
    }
}
