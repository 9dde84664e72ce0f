//! supervise: the agent asks a person. The agent files a request over HTTP — allow a host,
//! let DLP pass a value, or a free-text question — and waits for the answer; a person on the
//! host answers with `bottle supervise RUN`; an approved grant takes effect in pipelock within
//! a second, for this run only (the recipe's hash and store entry do not change).
//!
//! Its typed config, port, API bounds, guide (`SUPERVISE.md`) and the queue's files it shares
//! with the host's `bottle supervise` are in `crate::daemons::supervise`; its mount and its
//! files in the guest are rendered by `crate::config::supervise`. Here, its serving:
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | the HTTP API, its limits and errors |
//! | [`service`] | requests and answers in memory, filing, waiting, grants into [`Shared`](crate::bundle::shared::Shared) and the audit log |
//!
//! Grants are recorded in the run's audit log, whose folder pipelock (which always runs)
//! mounts.

pub mod api;
pub mod service;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::audit::AuditLog;
use super::log::log;
use super::serve::{Context, Serve, Serving};
use crate::daemons::Daemon;
use crate::daemons::supervise::Config;

const WHO: &str = Daemon::Supervise.name();

pub struct Supervise;

impl Serve for Supervise {
    const DAEMON: Daemon = Daemon::Supervise;
    type Config = Config;

    fn serve(config: Config, ctx: Context) -> Serving {
        Box::pin(async move {
            let audit = match &config.audit_log {
                Some(p) => Some(AuditLog::open(Some(Path::new(p)), &ctx.run_id)?.for_daemon(WHO)),
                None => None,
            };
            let queue = crate::daemons::supervise::queue::Queue::new(&config.queue);
            let service = service::Service::open(queue, ctx.shared, audit)
                .context("supervise cannot open its queue; `bottle run` mounts the run's supervise folder there")?;
            let service = Arc::new(service);
            let addr = SocketAddr::new(config.listen_host, config.port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("supervise cannot listen on {addr}"))?;
            log(WHO, format!("listening on {addr}"));
            tokio::join!(service.clone().watch(), api::serve(service, listener));
            Ok(())
        })
    }
}
