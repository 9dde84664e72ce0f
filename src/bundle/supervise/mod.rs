//! supervise: the agent asks a person. The agent files a request over HTTP — allow a host,
//! let DLP pass a value, or a free-text question — and waits for the answer; a person on the
//! host answers with `bottle supervise RUN`; an approved grant takes effect in pipelock within
//! a second, for this run only (the recipe's hash and store entry do not change).
//!
//! This module owns supervise's typed config, its port, its mount (the run's queue folder,
//! read-write), its files in the guest (`~/.bottle/supervise.json` with the URL and
//! `~/.bottle/SUPERVISE.md`, the guide) and its serving. The rest:
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | the HTTP API, its limits and errors |
//! | [`service`] | requests and answers in memory, filing, waiting, grants into [`Shared`](crate::bundle::shared::Shared) and the audit log |
//! | [`queue`] | the queue's files, shared with the host's `bottle supervise` |
//! | [`guide`] | `SUPERVISE.md` |
//!
//! Grants are recorded in the run's audit log, whose folder pipelock (which always runs)
//! mounts.

pub mod api;
pub mod guide;
pub mod queue;
pub mod service;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::audit::AuditLog;
use super::daemon::{Context, Daemon, GuestFile, GuestSide, Serving, Spec};
use super::pipelock::{AUDIT_DIR, AUDIT_FILE};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub const PORT: u16 = 7777;
const QUEUE: &str = "/var/lib/bottle/supervise";
/// The run folder mounted at the queue.
pub const QUEUE_RUN_DIR: &str = "supervise";
const GUEST_CONFIG: &str = ".bottle/supervise.json";
const GUEST_GUIDE: &str = ".bottle/SUPERVISE.md";
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

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// Supervise's URL for the guest, `bundle_ip` being an address or the run-time template.
pub fn url(bundle_ip: &str) -> String {
    format!("http://{bundle_ip}:{PORT}")
}

pub struct Supervise;

impl Spec for Supervise {
    const DAEMON: Daemon = Daemon::Supervise;
    const NAME: &'static str = "supervise";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = true;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        key.supervise.enabled.then(|| Config {
            port: PORT,
            queue: QUEUE.to_string(),
            listen_host: any_address(),
            audit_log: Some(format!("{AUDIT_DIR}/{AUDIT_FILE}")),
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
                path: GUEST_CONFIG.to_string(),
                bytes,
                user_owned: true,
            },
            GuestFile {
                path: GUEST_GUIDE.to_string(),
                bytes: guide::text(Some(&url)).into_bytes(),
                user_owned: true,
            },
        ]
    }

    fn serve(config: Config, ctx: Context) -> Serving {
        Box::pin(async move {
            let run = std::env::var("BOTTLE_RUN").unwrap_or_else(|_| "-".into());
            let audit = match &config.audit_log {
                Some(p) => Some(AuditLog::open(Some(Path::new(p)), &run)?.for_daemon(Self::NAME)),
                None => None,
            };
            let queue = queue::Queue::new(&config.queue);
            let service = service::Service::open(queue, ctx.shared, audit)
                .context("supervise cannot open its queue; `bottle run` mounts the run's supervise folder there")?;
            let service = Arc::new(service);
            let addr = SocketAddr::new(config.listen_host, config.port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("supervise cannot listen on {addr}"))?;
            super::log(Self::NAME, format!("listening on {addr}"));
            tokio::join!(service.clone().watch(), api::serve(service, listener));
            Ok(())
        })
    }
}
