//! The running daemons' build-time halves, taken together through the registry ([`Daemon`]):
//! which run for an entry, their files in the config component, what the bundle needs for them
//! and their files in the guest. The specs and the run go through these functions, so they
//! never name a daemon; each daemon's half is its module ([`super::pipelock`],
//! [`super::git_gate`], [`super::supervise`]) implementing [`Render`].

use super::daemon::{GuestFile, GuestSide, Render};
use super::files::RenderedFile;
use super::git_gate::GitGate;
use super::pipelock::Pipelock;
use super::supervise::Supervise;
use crate::daemons::{CONFIG_DIR, Daemon};
use crate::hash::ConfigKey;
use crate::manifest::{EnvVar, Mount, MountSource};

/// The daemons that run for an entry, in start order.
pub fn daemons(key: &ConfigKey) -> Vec<Daemon> {
    Daemon::ALL
        .into_iter()
        .filter(|d| match d {
            Daemon::Pipelock => Pipelock::config(key).is_some(),
            Daemon::GitGate => GitGate::config(key).is_some(),
            Daemon::Supervise => Supervise::config(key).is_some(),
        })
        .collect()
}

fn files_of<S: Render>(key: &ConfigKey) -> Vec<RenderedFile> {
    let Some(config) = S::config(key) else {
        return Vec::new();
    };
    let mut bytes = serde_json::to_vec_pretty(&config).expect("daemon configs serialize");
    bytes.push(b'\n');
    let mut files = vec![RenderedFile {
        path: S::DAEMON.config_file(),
        bytes,
        mode: 0o644,
    }];
    files.extend(S::files(key));
    files
}

/// Every running daemon's files in the config component: its config and what else it needs.
pub fn config_files(key: &ConfigKey) -> Vec<RenderedFile> {
    [
        files_of::<Pipelock>(key),
        files_of::<GitGate>(key),
        files_of::<Supervise>(key),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What the bundle needs for an entry's daemons: mounts (each config file first; a target
/// that two daemons name, once), env, and the names of the secrets it gets on stdin.
pub fn bundle_needs(key: &ConfigKey) -> (Vec<Mount>, Vec<EnvVar>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    let mut secrets = Vec::new();
    for d in daemons(key) {
        mounts.push(Mount {
            source: MountSource::Config(d.config_file()),
            target: format!("{CONFIG_DIR}/{}", d.config_file()),
            read_only: true,
        });
        let (m, e, s) = match d {
            Daemon::Pipelock => needs::<Pipelock>(key),
            Daemon::GitGate => needs::<GitGate>(key),
            Daemon::Supervise => needs::<Supervise>(key),
        };
        // A folder two daemons share (the run's audit folder) is mounted once.
        for mount in m {
            if !mounts.iter().any(|x: &Mount| x.target == mount.target) {
                mounts.push(mount);
            }
        }
        env.extend(e);
        secrets.extend(s);
    }
    secrets.sort();
    secrets.dedup();
    (mounts, env, secrets)
}

fn needs<S: Render>(key: &ConfigKey) -> (Vec<Mount>, Vec<EnvVar>, Vec<String>) {
    (S::mounts(key), S::env(key), S::secrets(key))
}

/// Every running daemon's files for the guest.
pub fn guest_files(key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
    daemons(key)
        .into_iter()
        .flat_map(|d| match d {
            Daemon::Pipelock => Pipelock::guest_files(key, side),
            Daemon::GitGate => GitGate::guest_files(key, side),
            Daemon::Supervise => Supervise::guest_files(key, side),
        })
        .collect()
}
