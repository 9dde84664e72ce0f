//! supervise: a queue the agent files requests into and a person on the host answers. Not yet
//! serving (the people-facing daemons' issue): it logs so and waits, so a bundle that lists it
//! comes up.
//!
//! This module owns its typed config, port, the queue folder it shares with the host (a
//! read-write mount of the run's folder) and the client config it puts in the guest.

use serde::{Deserialize, Serialize};

use super::daemon::{Context, Daemon, GuestFile, GuestSide, Serving, Spec};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub const PORT: u16 = 7777;
const QUEUE: &str = "/var/lib/bottle/supervise";
/// The run folder mounted at the queue.
pub const QUEUE_RUN_DIR: &str = "supervise";
const GUEST_CONFIG: &str = ".bottle/supervise.json";

/// `supervise.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub port: u16,
    pub queue: String,
}

pub struct Supervise;

impl Spec for Supervise {
    const DAEMON: Daemon = Daemon::Supervise;
    const NAME: &'static str = "supervise";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = false;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        key.supervise.enabled.then(|| Config {
            port: PORT,
            queue: QUEUE.to_string(),
        })
    }

    fn mounts(_key: &ConfigKey) -> Vec<Mount> {
        vec![Mount {
            source: MountSource::RunDir(QUEUE_RUN_DIR.to_string()),
            target: QUEUE.to_string(),
            read_only: false,
        }]
    }

    fn guest_files(_key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
        let conf = serde_json::json!({
            "url": format!("http://{}:{PORT}", side.bundle_ip),
            "run": side.run_id,
        });
        let mut bytes = serde_json::to_vec_pretty(&conf).expect("JSON serializes");
        bytes.push(b'\n');
        vec![GuestFile {
            path: GUEST_CONFIG.to_string(),
            bytes,
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
