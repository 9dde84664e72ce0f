//! The daemons' contract: what the build, the run and the bundle's servers agree on, and
//! nothing else of bottle. The registry ([`Daemon`]: names, ports, which ports the run waits
//! for), where the bundle finds their configs ([`CONFIG_DIR`]), each daemon's typed config and
//! constants, and the files the host and the bundle both read or write:
//!
//! | module | owns |
//! | --- | --- |
//! | [`pipelock`] | `pipelock.json`, its port, the CA's place in the bundle |
//! | [`egress`] | egress's part of `pipelock.json`, the placeholder token, upstream CA paths |
//! | [`git_gate`] | `git-gate.json`, its port and paths, upstream URLs, known_hosts, the local upstreams' socket protocol |
//! | [`supervise`] | `supervise.json`, its port, URL variable and API bounds, the guide, the queue of the run's folder |
//! | [`audit`] | the audit log's line and where the log lives |
//! | [`netclass`] | address classes and CIDR ranges, as pipelock's destination rule and the recipe's `allow_private` read them |
//!
//! The build renders these configs from the entry's key (`crate::config`), the run mounts
//! them, and `bottle sidecar` (`crate::bundle`) reads them and serves. Adding a daemon adds a
//! variant here and a module on each side; a misspelled daemon does not compile.

pub mod audit;
pub mod egress;
pub mod git_gate;
pub mod netclass;
pub mod pipelock;
pub mod supervise;

/// Where `bottle run` mounts the daemons' config files inside the bundle.
pub const CONFIG_DIR: &str = "/etc/bottle";
/// The bundle's env var naming its run (set by `bottle run`; audit lines carry it).
pub const RUN_ENV: &str = "BOTTLE_RUN";

/// The bundle's daemons: the registry.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Daemon {
    /// The guest's only hop out: allowlist, TLS interception, DLP, egress, audit log.
    Pipelock,
    /// Pushes through the bundle to the real upstream, with a key the guest never holds.
    GitGate,
    /// Requests from the agent, answered by a person on the host.
    Supervise,
}

impl Daemon {
    pub const ALL: [Daemon; 3] = [Daemon::Pipelock, Daemon::GitGate, Daemon::Supervise];

    pub const fn name(self) -> &'static str {
        match self {
            Daemon::Pipelock => "pipelock",
            Daemon::GitGate => "git-gate",
            Daemon::Supervise => "supervise",
        }
    }

    /// Its config file in the config component, and inside the bundle under [`CONFIG_DIR`].
    pub fn config_file(self) -> String {
        format!("{}.json", self.name())
    }

    /// The port it listens on in the bundle, if any.
    pub const fn port(self) -> Option<u16> {
        match self {
            Daemon::Pipelock => Some(pipelock::PORT),
            Daemon::GitGate => Some(git_gate::PORT),
            Daemon::Supervise => Some(supervise::PORT),
        }
    }

    /// Whether the run waits for its port before the guest's command starts.
    pub const fn probed(self) -> bool {
        match self {
            Daemon::Pipelock | Daemon::GitGate | Daemon::Supervise => true,
        }
    }
}

impl Daemon {
    /// An example of its config, every field set, as the daemon reads it (`bottle sidecar
    /// --example DAEMON`).
    pub fn example_config(self) -> serde_json::Value {
        let value = match self {
            Daemon::Pipelock => serde_json::to_value(pipelock::Config::example()),
            Daemon::GitGate => serde_json::to_value(git_gate::Config::example()),
            Daemon::Supervise => serde_json::to_value(supervise::Config::example()),
        };
        value.expect("daemon configs serialize")
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_example_config_is_read_back_as_the_daemon_reads_it() {
        for d in Daemon::ALL {
            let v = d.example_config();
            let back = match d {
                Daemon::Pipelock => serde_json::from_value::<pipelock::Config>(v.clone())
                    .map(|c| serde_json::to_value(c).unwrap()),
                Daemon::GitGate => serde_json::from_value::<git_gate::Config>(v.clone())
                    .map(|c| serde_json::to_value(c).unwrap()),
                Daemon::Supervise => serde_json::from_value::<supervise::Config>(v.clone())
                    .map(|c| serde_json::to_value(c).unwrap()),
            };
            assert_eq!(back.unwrap(), v, "{d}");
        }
    }
}
