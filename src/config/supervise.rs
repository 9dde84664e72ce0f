//! supervise's build-time half: `supervise.json` for an entry, the run's queue folder mounted,
//! and the guest's files saying where supervise is and how to ask (the guide).

use super::daemon::{GuestFile, GuestPath, GuestSide, Render};
use crate::daemons::Daemon;
use crate::daemons::audit;
use crate::daemons::supervise::{
    Config, GUEST_CONFIG, GUEST_GUIDE, PORT, QUEUE, QUEUE_RUN_DIR, any_address, guide, url,
};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub struct Supervise;

impl Render for Supervise {
    const DAEMON: Daemon = Daemon::Supervise;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        key.supervise.enabled.then(|| Config {
            port: PORT,
            queue: QUEUE.to_string(),
            listen_host: any_address(),
            audit_log: Some(audit::log_in_bundle()),
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
        let url = url(&side.bundle_ip.to_string());
        let conf = serde_json::json!({
            "url": url,
            "run": side.run_id,
            "guide": format!("~/{GUEST_GUIDE}"),
        });
        let mut bytes = serde_json::to_vec_pretty(&conf).expect("JSON serializes");
        bytes.push(b'\n');
        vec![
            GuestFile {
                path: GuestPath::Home(GUEST_CONFIG.to_string()),
                bytes,
                user_owned: true,
            },
            GuestFile {
                path: GuestPath::Home(GUEST_GUIDE.to_string()),
                bytes: guide::text(Some(&url)).into_bytes(),
                user_owned: true,
            },
        ]
    }
}
