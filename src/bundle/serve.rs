//! What a daemon's server is given and gives back: [`Serve`], the one function each daemon
//! implements on the bundle's side, and its [`Context`] — everything the process learned at
//! its start (the config folder, the secrets from stdin, the run, test hooks), typed, so no
//! daemon reads the environment. Also [`accept`], the listeners' loop step every daemon uses.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use serde::de::DeserializeOwned;

use super::log::log;
use super::shared::Shared;
use crate::daemons::{Daemon, RUN_ENV};

/// For tests only: names pipelock resolves to loopback addresses (`NAME=IP|IP,...`).
pub const TEST_RESOLVE_ENV: &str = "BOTTLE_PIPELOCK_TEST_RESOLVE";

/// What a daemon gets when it starts.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Where its config file and the files its mounts put are.
    pub config_dir: PathBuf,
    /// Secret values the run handed over on stdin, by env var name (tokens). Never logged.
    pub secrets: BTreeMap<String, String>,
    /// What the bundle's daemons share in its process (supervise's grants).
    pub shared: Arc<Shared>,
    /// The run, as its audit lines name it (`-` when the process was started outside a run).
    pub run_id: String,
    /// Overrides only tests set.
    pub hooks: Hooks,
}

/// Overrides only tests set, read once at the process's start.
#[derive(Debug, Default, Clone)]
pub struct Hooks {
    /// [`TEST_RESOLVE_ENV`]'s value: names pipelock resolves to loopback addresses.
    pub test_resolve: Option<String>,
}

impl Context {
    /// The run and the hooks from the process's environment.
    pub fn from_env(
        config_dir: PathBuf,
        secrets: BTreeMap<String, String>,
        shared: Arc<Shared>,
    ) -> Context {
        Context {
            config_dir,
            secrets,
            shared,
            run_id: std::env::var(RUN_ENV).unwrap_or_else(|_| "-".into()),
            hooks: Hooks {
                test_resolve: std::env::var(TEST_RESOLVE_ENV).ok(),
            },
        }
    }
}

pub type Serving = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One daemon's server.
pub trait Serve {
    const DAEMON: Daemon;
    /// Its typed config, from the contract (`crate::daemons::pipelock::Config`, ...).
    type Config: DeserializeOwned + Send + 'static;
    /// Serves until it fails (or the process is stopped).
    fn serve(config: Self::Config, ctx: Context) -> Serving;
}

/// The next connection on a daemon's listener, with Nagle off. An error (out of file
/// descriptors and the like) is logged and waited out: a daemon never dies of one.
pub async fn accept(listener: &tokio::net::TcpListener, who: &str) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                log(who, format!("cannot accept a connection: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
