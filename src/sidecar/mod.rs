//! The bundle's daemons, compiled into the `bottle` binary and started as
//! `bottle sidecar --daemons egress,pipelock[,git-gate][,supervise] [--config-dir /etc/bottle]`.
//!
//! The bundle image is `FROM scratch` with this executable as `/bottle` and entry point
//! `/bottle sidecar`; `bottle run` passes the daemons of the manifest's bundle spec as the
//! container's command and mounts their config files under the config folder. Each daemon
//! runs as a task; the process runs until SIGTERM or SIGINT (then exits 0), or until a daemon
//! fails (then exits 1 naming it).
//!
//! | daemon | state |
//! | --- | --- |
//! | `pipelock` | works: HTTP forward proxy with a host allowlist (absolute-form `http://` requests forwarded, `CONNECT` tunnelled), an audit line per request on stderr. DLP scanning and TLS interception are not there yet. |
//! | `egress`, `git-gate`, `supervise` | not yet implemented: each logs one line saying so and waits, so a bundle that lists them still comes up |
//!
//! Log lines go to stderr, one per event, prefixed with the daemon's name. No header value
//! and no environment value is ever logged: they may carry tokens.

pub mod pipelock;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use tokio::task::JoinSet;

/// Where `bottle run` mounts the daemons' config files inside the bundle.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/bottle";

/// `bottle sidecar`: the bundle's entry point (hidden from `--help`).
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// The daemons to start, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "DAEMON,..."
    )]
    pub daemons: Vec<Daemon>,
    /// The folder holding the daemons' config files (pipelock.json, egress.json, ...)
    #[arg(long, default_value = DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Daemon {
    Egress,
    Pipelock,
    GitGate,
    Supervise,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Egress => "egress",
            Daemon::Pipelock => "pipelock",
            Daemon::GitGate => "git-gate",
            Daemon::Supervise => "supervise",
        }
    }
}

/// One log line on stderr, prefixed with who says it.
pub fn log(who: &str, line: impl std::fmt::Display) {
    eprintln!("{who}: {line}");
}

/// Starts the daemons and runs until SIGTERM/SIGINT (`Ok`) or until one of them fails (`Err`).
pub async fn main(args: SidecarArgs) -> Result<()> {
    // Handlers first: as PID 1 of a container, a signal with no handler is ignored.
    let mut stop = Signals::install()?;
    let mut daemons: Vec<Daemon> = Vec::new();
    for d in args.daemons {
        if !daemons.contains(&d) {
            daemons.push(d);
        }
    }
    let names: Vec<&str> = daemons.iter().map(|d| d.name()).collect();
    log(
        "sidecar",
        format!(
            "starting {} (config folder {})",
            names.join(", "),
            args.config_dir.display()
        ),
    );
    let mut set: JoinSet<(Daemon, Result<()>)> = JoinSet::new();
    for d in daemons {
        match d {
            Daemon::Pipelock => {
                let path = args.config_dir.join("pipelock.json");
                let config = pipelock::Config::load(&path)?;
                let proxy = pipelock::Pipelock::bind(config).await?;
                set.spawn(async move { (d, proxy.serve().await) });
            }
            Daemon::Egress | Daemon::GitGate | Daemon::Supervise => {
                set.spawn(async move {
                    log(d.name(), "not yet implemented (daemons issue)");
                    std::future::pending::<()>().await;
                    (d, Ok(()))
                });
            }
        }
    }
    tokio::select! {
        signal = stop.recv() => {
            log("sidecar", format!("stopping on {signal}"));
            Ok(())
        }
        Some(ended) = set.join_next() => {
            let (d, r) = ended.context("a daemon task panicked")?;
            let e = r.err().unwrap_or_else(|| anyhow!("it stopped"));
            Err(e.context(format!("daemon {} failed", d.name())))
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
