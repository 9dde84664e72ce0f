//! supervise's contract: its port, its typed config (`supervise.json`), the guest's env var
//! naming its URL, the bounds of its API, the guide the agent reads ([`guide`]) and the queue
//! it shares with the host ([`queue`]: files of the run's folder).

pub mod guide;
pub mod queue;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

pub const PORT: u16 = 7777;
/// The queue folder in the bundle ([`queue`]).
pub const QUEUE: &str = "/var/lib/bottle/supervise";
/// The run folder mounted at the queue.
pub const QUEUE_RUN_DIR: &str = "supervise";
/// The guest's files about supervise, in its home: where it is, and the guide ([`guide`]).
pub const GUEST_CONFIG: &str = ".bottle/supervise.json";
pub const GUEST_GUIDE: &str = ".bottle/SUPERVISE.md";
/// The guest env var holding supervise's URL.
pub const URL_ENV: &str = "BOTTLE_SUPERVISE_URL";

/// `supervise.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub port: u16,
    /// The queue folder (a path in the bundle).
    pub queue: String,
    /// The address to listen on: every interface unless given (tests listen on loopback).
    #[serde(default = "any_address")]
    pub listen_host: IpAddr,
    /// Where grants are recorded: the run's audit log (a path in the bundle); none: stderr.
    #[serde(default)]
    pub audit_log: Option<String>,
}

pub fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// Supervise's URL for the guest, `bundle_ip` being an address or the run-time template.
pub fn url(bundle_ip: &str) -> String {
    format!("http://{bundle_ip}:{PORT}")
}

impl Config {
    /// A config of every field, as `bottle sidecar --example supervise` prints it: on
    /// loopback. Benchmarks start from it rather than from a copy of the struct's fields.
    pub fn example() -> Config {
        Config {
            port: PORT,
            queue: QUEUE.into(),
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            audit_log: Some(super::audit::log_in_bundle()),
        }
    }
}

/// How long a request waits for its answer unless it says (`?wait=SECONDS`).
pub const DEFAULT_WAIT: u64 = 60;
/// The longest a request may wait for its answer.
pub const MAX_WAIT: u64 = 300;
/// The most requests that may wait for a person at once.
pub const MAX_PENDING: usize = 32;
/// The longest question accepted, in bytes.
pub const MAX_TEXT: usize = 4000;
