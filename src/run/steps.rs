//! What every step of a run shares: the run's context ([`Ctx`]), the step wrapper that names a
//! step in its errors and honours the test hooks, and [`tracked`] creation, whose undo waits
//! for a creation in flight.
//!
//! Test hooks (environment variables, for the integration tests; harmless otherwise):
//!
//! - `BOTTLE_FAILPOINT=STEP`: the step fails right after doing its work (so its undo runs),
//!   with the message "fail point BOTTLE_FAILPOINT=STEP".
//! - `BOTTLE_PAUSE_AT=STEP`: before the step starts, print
//!   `bottle run: paused at step 'STEP' (BOTTLE_PAUSE_AT)` to stderr and sleep (up to 10
//!   minutes) so a test can send a signal while the run is in that step.
//!
//! STEP is one of [`STEPS`] (a `-` may stand for the space: `image-load`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bollard::Docker;

use super::names::Names;
use super::record::{Resource, RunRecord};
use super::subnet::SubnetPool;
use super::undo::{UndoFuture, UndoStack};
use super::upstreams::LocalRepo;
use crate::runtime::docker_run::Labels;
use crate::runtime::smolvm::Smolvm;
use crate::store::{Entry, Store};

/// The steps of a run, in order.
pub const STEPS: &[&str] = &[
    "network",
    "image load",
    "bundle start",
    "guest create",
    "guest start",
    "chown",
    "provision",
    "workspace",
    "command",
];

/// Everything a run needs, fixed before the first step, and what the steps note as they go.
pub struct Ctx {
    pub store: Store,
    pub entry: Entry,
    pub names: Names,
    pub labels: Labels,
    pub pool: SubnetPool,
    pub docker: Docker,
    pub smolvm: Option<Smolvm>,
    pub quiet: bool,
    /// Bars (or lines) for the long steps, such as loading an image.
    pub progress: crate::progress::Progress,
    /// The run's folder (`runs/RUNID`): its record, CA and mounted folders.
    pub run_dir: PathBuf,
    /// The run record; steps running at once add to it.
    pub record: Mutex<RunRecord>,
    /// The steps under way, for messages about signals.
    pub active: Mutex<Vec<&'static str>>,
    /// Step name → milliseconds, as they finish.
    pub timings: Mutex<Vec<(String, u128)>>,
    pub images_loaded: Mutex<Vec<String>>,
    /// The local git-gate upstreams, checked before anything was created.
    pub local_upstreams: Vec<LocalRepo>,
}

impl Ctx {
    pub fn say(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("bottle run: {line}");
        }
    }

    /// Notes in the record something about to be created.
    pub fn note(&self, r: Resource) -> Result<()> {
        self.record.lock().expect("record lock").add(&self.store, r)
    }
}

/// The undo stacks of a run. The bundle's and the guest's steps run at once, each pushing on
/// its own stack; joined, the two unwind at once (each in its own order: a machine is stopped,
/// then deleted), and the networks go after both. Neither container needs the other gone
/// first: without its bundle the guest has no way out at all.
#[derive(Default)]
pub struct Stacks {
    pub networks: UndoStack,
    pub bundle: UndoStack,
    pub guest: UndoStack,
}

impl Stacks {
    pub fn joined(self) -> UndoStack {
        let mut all = self.networks;
        all.push_stacks(vec![self.guest, self.bundle]);
        all
    }
}

/// Runs `create` as a task of its own, so it completes even when the step awaiting it is cut
/// short (a signal drops the step), and returns with it the undo (`what`, `remove()`) to push
/// at once: the undo first waits for the creation to end, then removes what it made. Removal
/// must succeed when there is nothing to remove.
pub fn tracked<T: Send + 'static>(
    what: String,
    create: impl Future<Output = T> + Send + 'static,
    remove: impl FnOnce() -> UndoFuture + Send + 'static,
) -> (tokio::task::JoinHandle<T>, (String, UndoFuture)) {
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let r = create.await;
        let _ = done.send(());
        r
    });
    let undo: UndoFuture = Box::pin(async move {
        // Err: the task ended without sending (it panicked): the creation is over either way.
        let _ = ended.await;
        remove().await
    });
    (handle, (what, undo))
}

/// Marks the step under way, honours the test hooks, runs it, names it in its error.
pub async fn step<T>(
    ctx: &Ctx,
    name: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    ctx.active.lock().expect("lock").push(name);
    pause_at(name).await;
    let t = Instant::now();
    let r = async {
        let v = work.await?;
        failpoint(name)?;
        Ok(v)
    }
    .await;
    ctx.timings
        .lock()
        .expect("lock")
        .push((name.to_string(), t.elapsed().as_millis()));
    ctx.active.lock().expect("lock").retain(|s| *s != name);
    r.map_err(|e: anyhow::Error| e.context(format!("bottle run: step '{name}' failed")))
}

fn hook_matches(var: &str, name: &str) -> bool {
    std::env::var(var)
        .map(|v| v.trim().replace('-', " ") == name)
        .unwrap_or(false)
}

pub async fn pause_at(name: &str) {
    if hook_matches("BOTTLE_PAUSE_AT", name) {
        eprintln!("bottle run: paused at step '{name}' (BOTTLE_PAUSE_AT)");
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

pub fn failpoint(name: &str) -> Result<()> {
    if hook_matches("BOTTLE_FAILPOINT", name) {
        bail!("fail point BOTTLE_FAILPOINT={name} (a test hook)");
    }
    Ok(())
}
