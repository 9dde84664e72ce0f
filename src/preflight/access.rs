//! The checks of what a run hands the bundle: each egress route's token variable, and each
//! git-gate upstream's identity key and known_hosts entry. A token's value is looked at only
//! for being empty; a key file only for being a private key without a passphrase. Neither is
//! ever put into a message.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::check::Check;
use crate::daemons::git_gate::known_hosts::KnownHosts;
use crate::daemons::git_gate::url::Target;
use crate::plan::UpstreamPlan;

/// A key file longer than this is not a key (read no further).
const KEY_LIMIT: u64 = 64 << 10;
/// A known_hosts file longer than this is refused rather than read.
const KNOWN_HOSTS_LIMIT: u64 = 16 << 20;

/// The token variable `var`, which the routes to `hosts` send upstream.
pub fn token(var: &str, hosts: &[String]) -> Check {
    let (routes, needs, sends) = match hosts {
        [one] => (format!("the egress route to {one}"), "needs", "sends"),
        _ => (
            format!("the egress routes to {}", hosts.join(", ")),
            "need",
            "send",
        ),
    };
    let fix = format!("export {var}=<the token> ({routes} {sends} it), then run again");
    let why = format!("({routes} {needs} it)");
    match std::env::var_os(var) {
        None => Check::fail("token", format!("{var} is unset {why}"), fix),
        Some(v) if v.to_str().is_none() => {
            Check::fail("token", format!("{var} is not valid UTF-8 {why}"), fix)
        }
        Some(v) if v.to_string_lossy().trim().is_empty() => {
            Check::fail("token", format!("{var} is empty {why}"), fix)
        }
        Some(_) => Check::pass("token", format!("{var} is set (for {routes})")),
    }
}

/// Why an identity key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Missing,
    Unreadable(String),
    TooLarge(u64),
    Encrypted,
    NotAKey(String),
}

/// Reads the key file at `path` (bounded) and says whether git-gate can use it unattended.
pub fn key_problem(path: &Path) -> Option<KeyProblem> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(KeyProblem::Missing),
        Err(e) => return Some(KeyProblem::Unreadable(e.kind().to_string())),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(KEY_LIMIT + 1).read_to_end(&mut bytes) {
        return Some(KeyProblem::Unreadable(e.kind().to_string()));
    }
    if bytes.len() as u64 > KEY_LIMIT {
        return Some(KeyProblem::TooLarge(KEY_LIMIT));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Some(KeyProblem::NotAKey("not text".into()));
    };
    encryption_problem(&text)
}

/// The key's text: `Encrypted`, not a key, or fine. OpenSSH keys are parsed (their cipher
/// is not "none" when encrypted); PEM keys are told by their headers; anything else must
/// decode without a passphrase as git-gate decodes it.
fn encryption_problem(text: &str) -> Option<KeyProblem> {
    use russh::keys::ssh_key::PrivateKey;
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return match PrivateKey::from_openssh(text) {
            Ok(k) if k.is_encrypted() => Some(KeyProblem::Encrypted),
            Ok(_) => None,
            // The parser's message only: never the key's text.
            Err(e) => Some(KeyProblem::NotAKey(e.to_string())),
        };
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") || text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Some(KeyProblem::Encrypted);
    }
    match russh::keys::decode_secret_key(text, None) {
        Ok(_) => None,
        Err(russh::keys::Error::KeyIsEncrypted) => Some(KeyProblem::Encrypted),
        Err(e) => Some(KeyProblem::NotAKey(e.to_string())),
    }
}

/// The identity key (`written` in the recipe) of the SSH upstream `name`.
pub fn identity(name: &str, written: &str) -> Check {
    let path = match host_path("identity", written) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let p = path.display();
    let make = "make a deploy key without a passphrase (`ssh-keygen -t ed25519 -N '' -f FILE`), add FILE.pub to the repository's deploy keys, and point the upstream's `identity` at FILE";
    match key_problem(&path) {
        None => Check::pass("identity", format!("upstream {name:?}: key {p}")),
        Some(KeyProblem::Missing) => Check::fail(
            "identity",
            format!("upstream {name:?}: identity key {p} does not exist"),
            format!("fix `identity` in the recipe, or {make}"),
        ),
        Some(KeyProblem::Unreadable(why)) => Check::fail(
            "identity",
            format!("upstream {name:?}: cannot read identity key {p} ({why})"),
            format!(
                "make it readable by this user (as its owner: `chmod 600 {p}`; or `sudo chown $USER {p}`)"
            ),
        ),
        Some(KeyProblem::TooLarge(limit)) => Check::fail(
            "identity",
            format!("upstream {name:?}: {p} is larger than {limit} bytes: not a private key"),
            format!("point `identity` at the private key file, or {make}"),
        ),
        Some(KeyProblem::Encrypted) => Check::fail(
            "identity",
            format!(
                "upstream {name:?}: identity key {p} is protected by a passphrase, which git-gate (unattended, in the bundle) cannot type"
            ),
            format!(
                "remove the passphrase from a copy (`cp {p} {p}.bottle && ssh-keygen -p -N '' -f {p}.bottle`) and point `identity` at the copy, or {make}"
            ),
        ),
        Some(KeyProblem::NotAKey(why)) => Check::fail(
            "identity",
            format!("upstream {name:?}: {p} is not a private key git-gate can read ({why})"),
            format!("point `identity` at an OpenSSH private key, or {make}"),
        ),
    }
}

/// Whether the SSH upstream `name`'s host (from `url`) is in its known_hosts file
/// (`written` in the recipe).
pub fn known_host(name: &str, url: &str, written: &str) -> Check {
    let target = match Target::parse(name, url) {
        Ok(t) => t,
        Err(e) => {
            return Check::fail(
                "known_hosts",
                e.to_string(),
                "fix the upstream's `url` in the recipe",
            );
        }
    };
    let path = match host_path("known_hosts", written) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let (host, port, file) = (&target.host, target.port, path.display());
    let scan = format!(
        "check the host key's fingerprint with the host's operator, then add it: ssh-keyscan -p {port} {host} >> {file}"
    );
    let text = match read_bounded(&path, KNOWN_HOSTS_LIMIT) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::fail(
                "known_hosts",
                format!("upstream {name:?}: known_hosts {file} does not exist"),
                scan,
            );
        }
        Err(e) => {
            return Check::fail(
                "known_hosts",
                format!("upstream {name:?}: cannot read known_hosts {file} ({e})"),
                format!(
                    "make {file} readable by this user, or point the upstream's `known_hosts` at a file that is"
                ),
            );
        }
    };
    if KnownHosts::parse(&text).knows(host, port) {
        Check::pass(
            "known_hosts",
            format!("upstream {name:?}: {host} port {port} is in {file}"),
        )
    } else {
        Check::fail(
            "known_hosts",
            format!(
                "upstream {name:?}: {host} port {port} is not in {file}; git-gate never trusts a host key on first use"
            ),
            scan,
        )
    }
}

/// A local upstream (`path = …`): a git repository the host's git serves, as `bottle run`
/// checks it ([`crate::run::upstreams::check`]).
pub async fn local_repository(up: &UpstreamPlan) -> Check {
    match crate::run::upstreams::check(std::slice::from_ref(up)).await {
        Ok(repos) => Check::pass(
            "repository",
            match repos.first() {
                Some(r) => format!("upstream {:?}: {}", up.name, r.path.display()),
                None => format!("upstream {:?}", up.name),
            },
        ),
        Err(e) => {
            // Its messages end with "; FIX".
            let text = format!("{e:#}");
            match text.rsplit_once("; ") {
                Some((problem, fix)) => Check::fail("repository", problem, fix),
                None => Check::fail(
                    "repository",
                    text,
                    "point path at a git repository on this machine",
                ),
            }
        }
    }
}

fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A path as the recipe wrote it, `~/` expanded; a failed check when HOME is unset.
fn host_path(check: &'static str, written: &str) -> Result<PathBuf, Check> {
    crate::files::expand_home(written).map_err(|e| {
        Check::fail(
            check,
            format!("{e:#}"),
            "set HOME, or write the path in full in the recipe",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_headers_tell_an_encrypted_key() {
        let pkcs5 = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(encryption_problem(pkcs5), Some(KeyProblem::Encrypted));
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(encryption_problem(pkcs8), Some(KeyProblem::Encrypted));
        assert!(matches!(
            encryption_problem("not a key\n"),
            Some(KeyProblem::NotAKey(_))
        ));
    }

    #[test]
    #[allow(unsafe_code)] // set_var on a variable only this test uses
    fn an_empty_token_is_refused_and_its_value_never_shown() {
        let var = format!("BOTTLE_PREFLIGHT_UNIT_{}", std::process::id());
        // SAFETY: a name no other test reads or writes.
        unsafe { std::env::set_var(&var, "  ") };
        let c = token(&var, &["api.example.com".into()]);
        assert!(
            !c.ok && c.problem.as_deref().unwrap().contains("is empty"),
            "{c:?}"
        );
        unsafe { std::env::set_var(&var, "sk-secret-value") };
        let c = token(&var, &["api.example.com".into()]);
        assert!(c.ok, "{c:?}");
        assert!(
            !serde_json::to_string(&c)
                .unwrap()
                .contains("sk-secret-value")
        );
        unsafe { std::env::remove_var(&var) };
        assert!(token(&var, &[]).problem.unwrap().contains("is unset"));
    }
}
