//! What runs in the bundle: the daemons' servers, compiled into the `bottle` binary and
//! started as `bottle sidecar --daemons pipelock[,git-gate][,supervise] [--config-dir
//! /etc/bottle] [--secrets-on-stdin]`.
//!
//! The bundle image is `FROM scratch` with this executable as `/bottle` and entry point
//! `/bottle sidecar`; `bottle run` passes the entry's daemons as the container's command and
//! mounts their config files under the config folder. Each daemon's contract — its typed
//! config, port and shared file formats — is in `crate::daemons`; each module here is its
//! server, implementing [`serve::Serve`]:
//!
//! | daemon | state |
//! | --- | --- |
//! | [`pipelock`] | the guest's only hop: allowlist, TLS interception, DLP ([`dlp`]), the egress stage ([`egress`], [`scrub`]), audit log ([`audit`]) |
//! | [`git_gate`] | the guest's git remote: fetches relayed, pushes judged by policy and forwarded over SSH with a key the guest never holds |
//! | [`supervise`] | the agent's requests to a person (allow a host, let DLP pass a value, a question), filed in the queue (`crate::daemons::supervise::queue`), and the grants pipelock applies ([`shared`]) |
//!
//! With `--secrets-on-stdin`, the run hands the secrets (the routes' tokens) over as one JSON
//! object on the container's stdin, read before any daemon starts: token values never pass
//! through the container's config (`docker inspect`), a file, an argv or a log line.
//!
//! The process runs until SIGTERM or SIGINT (then exits 0), or until a daemon fails (then
//! exits 1 naming it). Log lines go to stderr, one per event, prefixed with the daemon's name.

pub mod audit;
pub mod dlp;
pub mod egress;
pub mod git_gate;
pub mod log;
pub mod pipelock;
pub mod scrub;
pub mod serve;
pub mod shared;
pub mod supervise;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tokio::task::JoinSet;

use self::log::log;
use self::serve::{Context as DaemonContext, Serve, Serving};
use self::shared::Shared;
use crate::daemons::{CONFIG_DIR as DEFAULT_CONFIG_DIR, Daemon};

/// The most bytes of secrets read from stdin.
const SECRETS_LIMIT: u64 = 1 << 20;

/// `bottle sidecar`: the bundle's entry point (hidden from `--help`).
#[derive(Debug, Clone, Args)]
pub struct EntryArgs {
    /// The daemons to start, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "example",
        value_name = "DAEMON,..."
    )]
    pub daemons: Vec<Daemon>,
    /// The folder holding the daemons' config files (pipelock.json, ...)
    #[arg(long, default_value = DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Read the secrets (a JSON object, env var name → value) from stdin before starting
    #[arg(long)]
    pub secrets_on_stdin: bool,
    /// Print an example of a daemon's config file, every field set, and exit
    #[arg(long, value_name = "DAEMON", conflicts_with_all = ["daemons", "secrets_on_stdin"])]
    pub example: Option<Daemon>,
}

/// Reads the secrets the run writes on stdin: one JSON object of strings, then EOF.
fn read_secrets() -> Result<BTreeMap<String, String>> {
    let mut text = Vec::new();
    std::io::stdin()
        .take(SECRETS_LIMIT)
        .read_to_end(&mut text)
        .context("cannot read the secrets from stdin")?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    // The error names neither the input nor a position: either could show a secret.
    serde_json::from_slice(&text)
        .map_err(|_| anyhow!("the secrets on stdin are not a JSON object of strings"))
}

/// Starts the daemons and runs until SIGTERM/SIGINT (`Ok`) or until one of them fails (`Err`).
pub async fn main(args: EntryArgs) -> Result<()> {
    if let Some(d) = args.example {
        let text = serde_json::to_string_pretty(&d.example_config()).expect("JSON serializes");
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    // Handlers first: as PID 1 of a container, a signal with no handler is ignored.
    let mut stop = Signals::install()?;
    let secrets = if args.secrets_on_stdin {
        tokio::task::spawn_blocking(read_secrets)
            .await
            .context("the secrets reader panicked")??
    } else {
        BTreeMap::new()
    };
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
            "starting {} (config folder {}; {} secret(s))",
            names.join(", "),
            args.config_dir.display(),
            secrets.len()
        ),
    );
    let mut set: JoinSet<(Daemon, Result<()>)> = JoinSet::new();
    let ctx = DaemonContext::from_env(args.config_dir, secrets, Arc::new(Shared::default()));
    for d in daemons {
        let serving = start(d, ctx.clone())?;
        set.spawn(async move { (d, serving.await) });
    }
    drop(ctx);
    tokio::select! {
        signal = stop.recv() => {
            log("sidecar", format!("stopping on {signal}"));
            Ok(())
        }
        Some(ended) = set.join_next() => {
            let (d, r) = ended.context("a daemon task panicked")?;
            match r {
                Ok(()) => bail!("daemon {d} stopped"),
                Err(e) => Err(e.context(format!("daemon {d} failed"))),
            }
        }
    }
}

/// Reads a daemon's config from the config folder and returns it serving.
fn start(daemon: Daemon, ctx: DaemonContext) -> Result<Serving> {
    match daemon {
        Daemon::Pipelock => start_one::<pipelock::Pipelock>(ctx),
        Daemon::GitGate => start_one::<git_gate::GitGate>(ctx),
        Daemon::Supervise => start_one::<supervise::Supervise>(ctx),
    }
}

fn start_one<S: Serve>(ctx: DaemonContext) -> Result<Serving> {
    let config: S::Config = read_config(S::DAEMON, &ctx.config_dir)?;
    Ok(S::serve(config, ctx))
}

/// A daemon's config file in the config folder, parsed as its typed config.
pub fn read_config<C: serde::de::DeserializeOwned>(daemon: Daemon, config_dir: &Path) -> Result<C> {
    let path = config_dir.join(daemon.config_file());
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {daemon}'s config {}; `bottle run` mounts it from the entry's config component",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{daemon}'s config {} is not valid", path.display()))
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
