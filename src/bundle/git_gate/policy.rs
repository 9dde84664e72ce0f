//! git-gate's push policy: which ref updates an upstream accepts, and the words of a refusal.
//!
//! Rules, each with the name the audit log and the refusal use ([`Rule`]):
//! - `ref-namespace`: only `refs/heads/*` and `refs/tags/*` may be pushed;
//! - `deletion`: no ref is deleted (new id all zeros);
//! - `branches`: a branch must match one of the upstream's `branches` patterns, on its name
//!   without `refs/heads/` (`*` within a path segment, `**` across segments, `?` one character);
//! - `tags`: tags only where the upstream has `tags = true`, and never moved once they exist;
//! - `force-push`: a branch update's new commit must descend from its old one within the pushed
//!   pack, by the parents git reads, through no commit whose header is out of order
//!   ([`super::pack::Pack::descends`]);
//! - `max-push-bytes`: the request body is counted as it streams and cut at the limit.
//!
//! A push is all or nothing: when one command is refused, every command of it is refused
//! (the others with [`Rule::Together`]) and nothing reaches the upstream, so an agent never
//! leaves an upstream half-updated by a push it believes failed.

use super::pack::{Ancestry, Oid, Pack};
use crate::daemons::git_gate::Upstream;

/// One ref update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub old: Oid,
    pub new: Oid,
    pub name: String,
}

/// A policy rule, by the name logs and refusals use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    RefNamespace,
    Deletion,
    Branches,
    Tags,
    ForcePush,
    MaxPushBytes,
    /// A command refused because another command of its push was.
    Together,
    /// A request git-gate cannot read (bad pkt-lines, a bad pack).
    Malformed,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::RefNamespace => "ref-namespace",
            Rule::Deletion => "deletion",
            Rule::Branches => "branches",
            Rule::Tags => "tags",
            Rule::ForcePush => "force-push",
            Rule::MaxPushBytes => "max-push-bytes",
            Rule::Together => "together",
            Rule::Malformed => "malformed",
        }
    }
}

/// Why one command is refused: the rule, and a one-line message for `git push`'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub message: String,
}

impl Refusal {
    fn new(rule: Rule, message: String) -> Refusal {
        Refusal {
            rule,
            message: format!("git-gate: {message}"),
        }
    }
}

/// Whether `name` (a branch name without `refs/heads/`) matches `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    match_segments(&p, &n)
}

fn match_segments(p: &[&str], n: &[&str]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((&"**", rest)) => (0..=n.len()).any(|skip| match_segments(rest, &n[skip..])),
        Some((first, rest)) => match n.split_first() {
            Some((seg, nrest)) => {
                match_segment(first.as_bytes(), seg.as_bytes()) && match_segments(rest, nrest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|skip| match_segment(rest, &s[skip..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

fn patterns(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The rules that need no pack: namespace, deletion, branches, tags.
pub fn check_ref(up: &Upstream, cmd: &Command) -> Result<(), Refusal> {
    let name = &cmd.name;
    if cmd.new.is_zero() {
        return Err(Refusal::new(
            Rule::Deletion,
            format!(
                "deleting {name} is refused: this bottle never deletes refs on upstream {:?}",
                up.name
            ),
        ));
    }
    if let Some(branch) = name.strip_prefix("refs/heads/") {
        if !up.branches.iter().any(|p| glob_match(p, branch)) {
            return Err(Refusal::new(
                Rule::Branches,
                format!(
                    "branch {branch:?} is not in this bottle's [[git-gate.upstreams]] branches {}",
                    patterns(&up.branches)
                ),
            ));
        }
        return Ok(());
    }
    if let Some(tag) = name.strip_prefix("refs/tags/") {
        if !up.tags {
            return Err(Refusal::new(
                Rule::Tags,
                format!(
                    "tag {tag:?} is refused: this bottle's [[git-gate.upstreams]] {:?} has tags = false",
                    up.name
                ),
            ));
        }
        if !cmd.old.is_zero() {
            return Err(Refusal::new(
                Rule::Tags,
                format!("tag {tag:?} exists upstream; git-gate never moves a tag"),
            ));
        }
        return Ok(());
    }
    Err(Refusal::new(
        Rule::RefNamespace,
        format!("{name} is outside refs/heads/ and refs/tags/, the only refs git-gate pushes"),
    ))
}

/// The fast-forward rule for a branch update (creations pass).
pub fn check_ancestry(cmd: &Command, pack: &Pack) -> Result<(), Refusal> {
    if cmd.old.is_zero() || !cmd.name.starts_with("refs/heads/") {
        return Ok(());
    }
    let branch = cmd.name.trim_start_matches("refs/heads/");
    let short = |o: Oid| o.to_string()[..12].to_string();
    let why = match pack.descends(cmd.new, cmd.old) {
        Ancestry::FastForward => return Ok(()),
        Ancestry::NewNotInPack => format!(
            "the pushed pack does not carry {} (git-gate proves fast-forwards from the pushed commits only)",
            short(cmd.new)
        ),
        Ancestry::NotProven => format!(
            "{} does not descend from {} within the pushed commits",
            short(cmd.new),
            short(cmd.old)
        ),
        Ancestry::Disordered(c) => format!(
            "commit {} has its header out of order ({}), and git-gate does not guess what it means",
            short(c),
            pack.commits[&c].disorder.as_deref().unwrap_or("?")
        ),
    };
    Err(Refusal::new(
        Rule::ForcePush,
        format!(
            "force push to {branch:?} refused: {why}; fetch, rebase or merge onto the upstream's {branch} and push again"
        ),
    ))
}

/// The refusal of a command whose push was refused for another command's sake.
pub fn together(refused: &Command, rule: Rule) -> Refusal {
    Refusal::new(
        Rule::Together,
        format!(
            "not pushed: git-gate refuses a push as a whole, and {} was refused ({})",
            refused.name,
            rule.name()
        ),
    )
}

/// The refusal of a push larger than the upstream's limit.
pub fn too_large(up: &Upstream) -> Refusal {
    Refusal::new(
        Rule::MaxPushBytes,
        format!(
            "the push is larger than this bottle's max_push_bytes for upstream {:?} ({} bytes)",
            up.name, up.max_push_bytes
        ),
    )
}

/// The refusal of a request git-gate cannot read.
pub fn malformed(what: impl std::fmt::Display) -> Refusal {
    Refusal::new(Rule::Malformed, format!("malformed push: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(branches: &[&str], tags: bool) -> Upstream {
        Upstream {
            name: "origin".into(),
            via: crate::daemons::git_gate::Via::Local {
                socket: "/s".into(),
            },
            branches: branches.iter().map(|s| s.to_string()).collect(),
            tags,
            max_push_bytes: 100,
        }
    }

    fn cmd(old: u8, new: u8, name: &str) -> Command {
        Command {
            old: Oid([old; 20]),
            new: Oid([new; 20]),
            name: name.into(),
        }
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        assert!(glob_match("agent/*", "agent/x"));
        assert!(!glob_match("agent/*", "agent/x/y"));
        assert!(!glob_match("agent/*", "agent"));
        assert!(glob_match("agent/**", "agent/x/y"));
        assert!(glob_match("agent/**", "agent"));
        assert!(glob_match("**", "main"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("**/fix-*", "a/b/fix-1"));
        assert!(glob_match("fix-?", "fix-1"));
        assert!(!glob_match("fix-?", "fix-12"));
        assert!(glob_match("*-wip", "topic-wip"));
        assert!(!glob_match("main", "mainline"));
    }

    #[test]
    fn each_rule_names_itself_and_the_knob() {
        let u = up(&["agent/*"], false);
        assert_eq!(check_ref(&u, &cmd(0, 1, "refs/heads/agent/x")), Ok(()));
        let r = check_ref(&u, &cmd(1, 2, "refs/heads/main")).unwrap_err();
        assert_eq!(r.rule, Rule::Branches);
        assert_eq!(
            r.message,
            r#"git-gate: branch "main" is not in this bottle's [[git-gate.upstreams]] branches ["agent/*"]"#
        );
        assert_eq!(
            check_ref(&u, &cmd(1, 0, "refs/heads/agent/x"))
                .unwrap_err()
                .rule,
            Rule::Deletion
        );
        assert_eq!(
            check_ref(&u, &cmd(0, 1, "refs/tags/v1")).unwrap_err().rule,
            Rule::Tags
        );
        assert_eq!(
            check_ref(&up(&["**"], true), &cmd(0, 1, "refs/tags/v1")),
            Ok(())
        );
        assert_eq!(
            check_ref(&up(&["**"], true), &cmd(1, 2, "refs/tags/v1"))
                .unwrap_err()
                .rule,
            Rule::Tags
        );
        let r = check_ref(&u, &cmd(0, 1, "refs/notes/commits")).unwrap_err();
        assert_eq!(r.rule, Rule::RefNamespace);
        assert!(!r.message.contains('\n'));
    }

    #[test]
    fn updates_outside_the_pack_are_force_pushes() {
        let pack = Pack::default();
        let r = check_ancestry(&cmd(1, 2, "refs/heads/agent/x"), &pack).unwrap_err();
        assert_eq!(r.rule, Rule::ForcePush);
        assert!(r.message.contains("does not carry"), "{}", r.message);
        assert_eq!(
            check_ancestry(&cmd(0, 2, "refs/heads/agent/x"), &pack),
            Ok(())
        );
    }
}
