//! git-gate: the guest pushes to it; it forwards to the real upstream with the host's identity
//! key, which is mounted into the bundle only and never enters the guest. Not yet serving (the
//! people-facing daemons' issue): it logs so and waits, so a bundle that lists it comes up.
//!
//! This module owns its typed config, port, mounts (the pre-receive hook, one read-only
//! identity key per upstream) and the guest's git remotes pointing at it.

use serde::{Deserialize, Serialize};

use super::daemon::{Context, Daemon, GuestFile, GuestSide, Serving, Spec};
use crate::config::RenderedFile;
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub const PORT: u16 = 9418;
const HOOK_FILE: &str = "git-gate/pre-receive";
const HOOK: &str = "/etc/bottle/git-gate/pre-receive";
const KEYS: &str = "/etc/bottle/git-gate/keys";
/// The guest's git config the remotes go in (read besides `~/.gitconfig`).
const GUEST_GIT_CONFIG: &str = ".config/git/config";

/// `git-gate.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub port: u16,
    pub hook: String,
    pub upstreams: Vec<Upstream>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub url: String,
    /// The identity key's path in the bundle.
    pub identity: String,
}

pub struct GitGate;

impl Spec for GitGate {
    const DAEMON: Daemon = Daemon::GitGate;
    const NAME: &'static str = "git-gate";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = false;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        let ups = &key.git_gate.upstreams;
        (!ups.is_empty()).then(|| Config {
            port: PORT,
            hook: HOOK.to_string(),
            upstreams: ups
                .iter()
                .map(|u| Upstream {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    identity: format!("{KEYS}/{}", u.name),
                })
                .collect(),
        })
    }

    fn files(_key: &ConfigKey) -> Vec<RenderedFile> {
        vec![RenderedFile {
            path: HOOK_FILE.to_string(),
            bytes: PRE_RECEIVE.as_bytes().to_vec(),
            mode: 0o755,
        }]
    }

    fn mounts(key: &ConfigKey) -> Vec<Mount> {
        let mut mounts = vec![Mount {
            source: MountSource::Config(HOOK_FILE.to_string()),
            target: HOOK.to_string(),
            read_only: true,
        }];
        for u in &key.git_gate.upstreams {
            mounts.push(Mount {
                source: MountSource::Host(u.identity.clone()),
                target: format!("{KEYS}/{}", u.name),
                read_only: true,
            });
        }
        mounts
    }

    fn guest_files(key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
        let mut text = String::from("# Written by bottle: pushes go to the bundle's git-gate.\n");
        for u in &key.git_gate.upstreams {
            let r = &u.name;
            text.push_str(&format!(
                "[remote \"{r}\"]\n\turl = git://{}:{PORT}/{r}\n\tfetch = +refs/heads/*:refs/remotes/{r}/*\n",
                side.bundle_ip
            ));
        }
        vec![GuestFile {
            path: GUEST_GIT_CONFIG.to_string(),
            bytes: text.into_bytes(),
            user_owned: true,
        }]
    }

    fn serve(_config: Config, _ctx: Context) -> Serving {
        Box::pin(async {
            super::log(
                Self::NAME,
                "not yet implemented (people-facing daemons issue)",
            );
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// The pre-receive hook: refuses branch deletions and history rewrites.
const PRE_RECEIVE: &str = r#"#!/bin/sh
# bottle git-gate pre-receive hook: an agent may add commits, never delete or rewrite.
zero=0000000000000000000000000000000000000000
status=0
while read -r old new ref; do
  if [ "$new" = "$zero" ]; then
    echo "git-gate: refusing to delete $ref" >&2; status=1; continue
  fi
  if [ "$old" != "$zero" ] && ! git merge-base --is-ancestor "$old" "$new"; then
    echo "git-gate: refusing a non-fast-forward push to $ref" >&2; status=1
  fi
done
exit $status
"#;
