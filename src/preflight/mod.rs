//! Preflight: everything a run needs from this machine, checked at once before anything is
//! created, each problem with its fix. `bottle doctor [TARGET]` prints the checks; `bottle run`
//! makes the same ones first and refuses with every problem listed.
//!
//! | check | what | module |
//! | --- | --- | --- |
//! | `engine` | the Docker Engine answers; permission denied on its socket is told apart from nothing listening | [`machine`] |
//! | `kvm` | `/dev/kvm` opens read-write, for a smolvm guest | [`machine`] |
//! | `disk` | free space where the store and the engine's root dir live, against the images the run loads (a fixed floor when no entry is known) | [`machine`] |
//! | `token` | each egress route's token variable is set and not empty | [`access`] |
//! | `identity` | each git-gate upstream's identity key exists, is readable, is a private key and has no passphrase | [`access`] |
//! | `known_hosts` | each upstream's host (and port) is in its known_hosts file | [`access`] |
//! | `repository` | each local upstream (`path = …`) is a git repository the host's git serves | [`access`] |
//!
//! What a target needs ([`Needs`]) comes from a plan (a recipe not built yet) or from a store
//! entry. The checks never read a token's value beyond whether it is empty, and never show it:
//! a problem names the variable only.

pub mod access;
mod check;
pub mod machine;
mod needs;

use std::fmt::Write as _;

use crate::plan::{GuestBackend, UpstreamSource};
use crate::store::Store;

pub use check::Check;
pub use needs::{ImageNeed, Needs};

/// Every check for `needs` (the machine only when `None`), in a fixed order.
pub async fn check(store: &Store, needs: Option<&Needs>) -> Vec<Check> {
    let (engine, docker) = machine::engine().await;
    let mut checks = vec![engine];
    if let Some(n) = needs {
        for (var, hosts) in n.token_vars() {
            checks.push(access::token(&var, &hosts));
        }
        for up in &n.upstreams {
            match &up.source {
                UpstreamSource::Ssh {
                    url,
                    identity,
                    known_hosts,
                } => {
                    checks.push(access::identity(&up.name, identity));
                    checks.push(access::known_host(&up.name, url, known_hosts));
                }
                UpstreamSource::Local { .. } => checks.push(access::local_repository(up).await),
            }
        }
    }
    match needs {
        Some(n) if n.backend == GuestBackend::Smolvm => {
            checks.push(machine::kvm(&machine::kvm_device(), &n.docker_twin()))
        }
        Some(_) => {}
        None => checks.push(machine::kvm_note(&machine::kvm_device())),
    }
    checks.extend(machine::disk(store, needs, docker.as_ref()).await);
    checks
}

/// The failed checks.
pub fn problems(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| !c.ok).collect()
}

/// The human lines: `✓ check  detail` (`-` for a note), or `✗ check  problem` and an
/// indented `fix: …`.
pub fn human(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        if c.ok {
            let _ = writeln!(
                s,
                "{} {:<12} {}",
                if c.note { "-" } else { "✓" },
                c.check,
                c.detail.as_deref().unwrap_or("ok")
            );
        } else {
            let _ = writeln!(
                s,
                "✗ {:<12} {}",
                c.check,
                c.problem.as_deref().unwrap_or("failed")
            );
            let _ = writeln!(s, "  {:<12} fix: {}", "", c.fix.as_deref().unwrap_or("-"));
        }
    }
    s
}

/// `bottle run`'s refusal when a check failed: every problem with its fix.
pub fn refusal(checks: &[Check]) -> Option<anyhow::Error> {
    let failed = problems(checks);
    if failed.is_empty() {
        return None;
    }
    let mut text = format!(
        "{} problem{} found before starting; nothing was created (`bottle doctor` checks again):",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" }
    );
    for c in failed {
        let _ = write!(
            text,
            "\n  ✗ {}: {}\n    fix: {}",
            c.check,
            c.problem.as_deref().unwrap_or("failed"),
            c.fix.as_deref().unwrap_or("-")
        );
    }
    Some(anyhow::anyhow!(text))
}
