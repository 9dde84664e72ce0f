//! Run: bring a bottle up from its store entry, run the agent, always tear it down.
//!
//! `bottle run HASH` opens the entry through the store, which checks every link from the hash
//! to each file it uses (`store::Store::open`), checks its local git-gate upstreams are
//! repositories ([`upstreams::check`]), pins it so `bottle gc` leaves it alone, chooses
//! the run-time values ([`names`], [`network`]: run id, subnets, bundle IP, names), writes the
//! run record ([`record`]) before creating anything, mints the run's CAs ([`ca`]) into the
//! run's folder, then runs these steps, each named in its errors ("bottle run: step 'chown'
//! failed: …"):
//!
//! | step | docker guest | smolvm guest |
//! | --- | --- | --- |
//! | `network` ([`network`]) | an internal network (the guest's; pinned subnet, no host address on it) and an outbound bridge (the bundle's way out) | one bridge with a pinned subnet |
//! | `image load` | bundle and guest image, each by id: loaded from its component only when the engine lacks it | the bundle image |
//! | `bundle start` ([`bundle`]) | the local git-gate upstreams served on their sockets ([`upstreams`]); the bundle at `.2` of the guest's network, with the spec's daemons, env (token values from bottle's own environment, in the create body only) and mounts | same |
//! | `guest create`, `guest start`, `chown` ([`guest`]) | a container of the guest image on the internal network only, kept alive by a shell loop, with the guest env; `chown -R USER:USER HOME` as root | `machine create --image ARCHIVE` or `--from PACK`, `--allow-cidr BUNDLE_IP/32`, `-e K=V` for the guest env; `machine start`; the chown |
//! | `provision` ([`provision`]) | the run's CA (at the trust-trio path and in the trust store when the guest has one), prompt, skills, git identity and remotes, supervise client config | same, by `machine cp` |
//! | `command` | the agent command (or the CMD after `--`) as the guest user in its home, attached to the terminal | same |
//!
//! `bundle start` runs alongside the guest's steps: the guest needs the bundle's address
//! (fixed by the network step), not the bundle itself; the command waits for both.
//!
//! Every exec re-passes the whole guest env. Each step pushes the undo of what it creates
//! before awaiting the creation ([`steps::tracked`]); on an error, a normal exit, SIGINT,
//! SIGTERM and SIGHUP the stack unwinds in reverse ([`undo`]): the guest and the bundle at
//! once, then the networks; an undo whose creation is still in flight waits for it. After a
//! run cut short, a sweep by the `bottle.run` label ([`down::sweep`]) removes anything left.
//! The run's folder (record, CA keys) and its pin go last. `bottle run` exits with the
//! command's exit code (128+N after signal N). The test hooks are described in [`steps`].

pub mod audit;
mod bundle;
mod ca;
pub mod down;
mod guest;
pub mod names;
pub mod network;
pub mod ops;
mod provision;
pub mod record;
mod steps;
pub mod subnet;
pub mod supervise;
pub mod undo;
pub mod upstreams;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::hash::BuildHash;
use crate::plan::GuestBackend;
use crate::runtime::docker;
use crate::runtime::docker_run as engine;
use crate::runtime::guest::Guest;
use crate::runtime::smolvm::Smolvm;
use crate::store::{GcGuard, Store, StoreError};
use names::{LABEL_HASH, LABEL_RUN, LABEL_STORE, Names, store_label};
use record::RunRecord;
use steps::{Ctx, Stacks, step};
use subnet::SubnetPool;
use undo::UndoStack;

pub use steps::STEPS;

pub struct RunOptions {
    /// `--subnet-pool`: where the run's subnets come from.
    pub subnet_pool: String,
    /// The command to run instead of the entry's (after `--`).
    pub command: Vec<String>,
    /// No step lines on stderr.
    pub quiet: bool,
    /// Plain lines instead of progress bars (`--no-progress`), e.g. for the image load.
    pub no_progress: bool,
    /// Held by a build that just made the entry: released once the run has pinned it.
    pub build_guard: Option<GcGuard>,
}

/// What a run did, for `--json` and for the benchmarks.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub hash: String,
    pub exit_code: i32,
    pub subnet: Option<String>,
    pub bundle_ip: Option<String>,
    /// Image ids that had to be loaded from the entry (empty on a second run).
    pub images_loaded: Vec<String>,
    /// Step name → milliseconds.
    pub steps: Vec<(String, u128)>,
    /// From the start of the run to the start of the command.
    pub bring_up_ms: u128,
    pub command_ms: Option<u128>,
    pub teardown_ms: u128,
    /// The signal that ended the run early, if one did.
    pub signal: Option<String>,
    /// Why the run failed, when it did (the command's own exit code is no failure).
    pub error: Option<String>,
}

/// What the bring-up hands to the command step.
struct Live {
    guest: Guest,
    env: Vec<(String, String)>,
}

/// Runs the entry `hash`: brings it up, runs the command, tears everything down.
pub async fn run(store: &Store, hash: &BuildHash, mut opts: RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    use tokio::signal::unix::{SignalKind, signal};
    // Installed first and kept until the process exits: a signal that arrives while the entry
    // is checked, the record written or the CA minted is seen by the first step's select
    // (the run then tears down what it made), and a second signal during teardown cannot cut
    // it short.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let ctx = prepare(store, hash, &mut opts).await?;
    let mut stacks = Stacks::default();
    let mut bring_up_ms = 0;
    let mut command_ms = None;
    let outcome: Result<Result<i64>, (&str, i32)> = {
        let work = async {
            let live = bring_up(&ctx, &mut stacks).await?;
            bring_up_ms = started.elapsed().as_millis();
            let t = Instant::now();
            let code = command_step(&ctx, &live, &opts.command).await;
            command_ms = Some(t.elapsed().as_millis());
            code
        };
        tokio::select! {
            r = work => Ok(r),
            _ = sigint.recv() => Err(("SIGINT", 2)),
            _ = sigterm.recv() => Err(("SIGTERM", 15)),
            _ = sighup.recv() => Err(("SIGHUP", 1)),
        }
    };
    finish(&ctx, stacks, outcome, bring_up_ms, command_ms).await
}

/// Everything before the first step: the entry read, the record written, the entry pinned
/// and checked, the run's CAs minted. What fails here leaves nothing behind.
async fn prepare(store: &Store, hash: &BuildHash, opts: &mut RunOptions) -> Result<Ctx> {
    // Read (not yet trusted) for what the record needs; checked once pinned.
    let loaded = match store.load(hash) {
        Ok(loaded) => loaded,
        Err(e @ StoreError::Manifest(_)) => return Err(store.refusal(hash, e).into()),
        Err(e) => return Err(e.into()),
    };
    let backend = loaded.guest_key().backend;
    let pool = SubnetPool::parse(&opts.subnet_pool).context("bad --subnet-pool")?;
    let docker = docker::connect().await?;
    let smolvm = match backend {
        GuestBackend::Smolvm => Some(Smolvm::locate()?),
        GuestBackend::Docker => None,
    };
    // A local upstream that is not a repository is refused before anything is created.
    let local_upstreams = upstreams::check(&loaded.config_key().git_gate.upstreams).await?;
    let run_id = names::new_run_id();
    let record = record::new_record(
        &run_id,
        Some(*hash),
        &loaded.manifest.name,
        backend,
        smolvm.as_ref().and_then(|s| s.state_dir.clone()),
    );
    // Written before anything is created; the pin after it (`bottle down` removes pins of
    // runs it finds no record of). Pinned, the entry cannot go while it is checked and used.
    record.save(store)?;
    let entry = match store.pin(&run_id, hash).and_then(|()| store.open(hash)) {
        Ok(entry) => entry,
        Err(e) => {
            let _ = store.unpin(&run_id);
            let _ = RunRecord::remove(store, &run_id);
            return Err(e.into());
        }
    };
    drop(opts.build_guard.take());
    let ctx = Ctx {
        store: store.clone(),
        names: Names::new(&run_id),
        labels: HashMap::from([
            (LABEL_RUN.to_string(), run_id.clone()),
            (LABEL_HASH.to_string(), hash.to_string()),
            (LABEL_STORE.to_string(), store_label(store)),
        ]),
        pool,
        docker,
        smolvm,
        quiet: opts.quiet,
        progress: crate::progress::Progress::new(opts.quiet, opts.no_progress),
        run_dir: record::run_dir(store, &run_id),
        record: Mutex::new(record),
        active: Mutex::new(Vec::new()),
        timings: Mutex::new(Vec::new()),
        images_loaded: Mutex::new(Vec::new()),
        local_upstreams,
        entry,
    };
    ctx.say(format!(
        "run {run_id} of {} ({})",
        ctx.entry.manifest.name,
        hash.short()
    ));
    if let Err(e) = ca::mint_run_cas(&bundle::ca_dir(&ctx), &ctx.entry.manifest.name) {
        let _ = teardown(&ctx, &mut UndoStack::new(), true).await;
        return Err(e);
    }
    Ok(ctx)
}

/// Reports the outcome and tears the run down.
async fn finish(
    ctx: &Ctx,
    stacks: Stacks,
    outcome: Result<Result<i64>, (&str, i32)>,
    bring_up_ms: u128,
    command_ms: Option<u128>,
) -> Result<RunReport> {
    let run_id = ctx.names.run_id.clone();
    let mut report = RunReport {
        run_id: run_id.clone(),
        hash: ctx.entry.hash.to_string(),
        exit_code: 1,
        subnet: None,
        bundle_ip: None,
        images_loaded: ctx.images_loaded.lock().expect("lock").clone(),
        steps: Vec::new(),
        bring_up_ms,
        command_ms,
        teardown_ms: 0,
        signal: None,
        error: None,
    };
    {
        let rec = ctx.record.lock().expect("record lock");
        report.subnet = rec.subnet.clone();
        report.bundle_ip = rec.bundle_ip.clone();
    }
    let mut error = None;
    // Every step ran to its end (none was cut short by a signal or a failing sibling), so the
    // undo stack names all there is.
    let complete = matches!(outcome, Ok(Ok(_)));
    match outcome {
        Ok(Ok(code)) => report.exit_code = exit_code(code) as i32,
        Ok(Err(e)) => {
            report.exit_code = 1;
            error = Some(e);
        }
        Err((name, n)) => {
            report.exit_code = 128 + n;
            report.signal = Some(name.to_string());
            let active = ctx.active.lock().expect("lock").clone();
            let during = if active.is_empty() {
                "between steps".to_string()
            } else {
                let steps: Vec<String> = active.iter().map(|s| format!("step '{s}'")).collect();
                format!("during {}", steps.join(", "))
            };
            // Said even under -q: the run ends early, and why must be visible.
            eprintln!("bottle run: {name} {during}: tearing down");
        }
    }

    let t = Instant::now();
    let mut undo = stacks.joined();
    let teardown = teardown(ctx, &mut undo, complete).await;
    report.teardown_ms = t.elapsed().as_millis();
    report.steps = ctx.timings.lock().expect("lock").clone();
    match teardown {
        Ok(()) => ctx.say(format!(
            "run {run_id} torn down in {:.2}s",
            t.elapsed().as_secs_f64()
        )),
        Err(e) => {
            eprintln!("bottle run: teardown of run {run_id} was incomplete: {e:#}");
            if error.is_none() && report.exit_code == 0 {
                report.exit_code = 1;
            }
        }
    }
    if let Some(e) = error {
        report.error = Some(format!("{e:#}"));
        if report.signal.is_none() {
            return Err(e);
        }
    }
    Ok(report)
}

/// Network and image load; then the bundle's start alongside the guest's steps (create,
/// start, chown, provision), which need the bundle's address but not the bundle itself. The
/// command waits for both.
async fn bring_up(ctx: &Ctx, stacks: &mut Stacks) -> Result<Live> {
    let docker_guest = ctx.entry.guest_key().backend == GuestBackend::Docker;
    let (subnet, outbound) = step(
        ctx,
        "network",
        network::networks(ctx, &mut stacks.networks, docker_guest),
    )
    .await?;
    let bundle_ip = subnet::bundle_ip(&subnet);
    {
        let mut rec = ctx.record.lock().expect("record lock");
        rec.subnet = Some(subnet.to_string());
        rec.bundle_ip = Some(bundle_ip.to_string());
        rec.guest = Some(ctx.names.guest());
        rec.save(&ctx.store)?;
    }
    ctx.say(format!(
        "network {subnet}{}, bundle at {bundle_ip}",
        outbound
            .map(|o| format!(" (outbound {o})"))
            .unwrap_or_default()
    ));
    let loaded = step(ctx, "image load", load_images(ctx, docker_guest)).await?;
    if !loaded.is_empty() {
        ctx.say(format!("loaded {} image(s) into the engine", loaded.len()));
    }
    *ctx.images_loaded.lock().expect("lock") = loaded;

    let env = names::fill_guest_env(&ctx.entry.guest_spec().env, &bundle_ip.to_string());
    let bundle = step(
        ctx,
        "bundle start",
        bundle::start_bundle(ctx, &mut stacks.bundle, bundle_ip, outbound),
    );
    let guest = guest::guest_steps(ctx, &mut stacks.guest, &env, subnet);
    let ((), guest) = tokio::try_join!(bundle, guest)?;
    // After both chains: the clone goes through the bundle's git-gate.
    step(ctx, "workspace", provision::workspace(ctx, &guest, &env)).await?;
    Ok(Live { guest, env })
}

/// The bundle's image and a docker guest's, each loaded only when the engine lacks it, with
/// a bar of the bytes sent (or a line when they end).
async fn load_images(ctx: &Ctx, docker_guest: bool) -> Result<Vec<String>> {
    let (b, g) = (&ctx.entry.bundle, &ctx.entry.guest);
    let load = |what: &'static str, id: String, archive: std::path::PathBuf| async move {
        if ctx.docker.inspect_image(&id).await.is_ok() {
            return Ok(false);
        }
        let size = std::fs::metadata(&archive).map(|m| m.len()).ok();
        let step = ctx.progress.step(what);
        let meter = step.meter("sent to the engine", size);
        step.finish(engine::ensure_image_metered(&ctx.docker, &id, &archive, Some(meter)).await)
    };
    let bundle = load(
        "bundle image",
        b.image().id.clone(),
        b.path(&b.image().archive),
    );
    let guest = async {
        if docker_guest {
            load(
                "guest image",
                g.image().id.clone(),
                g.path(&g.image().archive),
            )
            .await
        } else {
            Ok(false)
        }
    };
    let (bl, gl) = tokio::try_join!(bundle, guest)?;
    let mut loaded = Vec::new();
    if bl {
        loaded.push(b.image().id.clone());
    }
    if gl {
        loaded.push(g.image().id.clone());
    }
    Ok(loaded)
}

async fn command_step(ctx: &Ctx, live: &Live, command: &[String]) -> Result<i64> {
    let g = ctx.entry.guest_spec();
    let cmd: Vec<String> = if command.is_empty() {
        g.command.clone()
    } else {
        command.to_vec()
    };
    ctx.active.lock().expect("lock").push("command");
    steps::pause_at("command").await;
    {
        let mut rec = ctx.record.lock().expect("record lock");
        rec.ready = true;
        rec.save(&ctx.store)?;
    }
    ctx.say(format!("running {} as {}", shell_words(&cmd), g.user));
    let started = Instant::now();
    let r = async {
        let code = live
            .guest
            .exec_attached(&g.user, Some(provision::workdir(g)), &live.env, &cmd)
            .await?;
        if code == 126 || code == 127 {
            // Was it the command itself that could not start?
            let check = vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                "command -v \"$1\" >/dev/null 2>&1".to_string(),
                "check".to_string(),
                cmd[0].clone(),
            ];
            if let Ok(out) = live
                .guest
                .exec(&g.user, Some(&g.home), &live.env, &check)
                .await
                && out.code >= 1
            {
                bail!(
                    "`{}` is not a command in the guest (not found on its PATH, or not executable)",
                    cmd[0]
                );
            }
        }
        steps::failpoint("command")?;
        Ok(code)
    }
    .await;
    ctx.timings
        .lock()
        .expect("lock")
        .push(("command".to_string(), started.elapsed().as_millis()));
    ctx.active.lock().expect("lock").retain(|s| *s != "command");
    r.map_err(|e: anyhow::Error| e.context("bottle run: step 'command' failed"))
}

fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unwinds the undo stack, then sweeps whatever still carries the run's label, then removes
/// the run's CA keys, its pin and its folder. The record (and pin) stay, marked, when
/// something could not be removed.
async fn teardown(ctx: &Ctx, undo: &mut UndoStack, complete: bool) -> Result<()> {
    let unwound = undo
        .unwind(|what, e| eprintln!("bottle run: undo '{what}' failed: {e:#}"))
        .await;
    let mut problems: Vec<String> = unwound
        .failed
        .iter()
        .map(|(what, e)| format!("{what}: {e:#}"))
        .collect();
    // After a run cut short (a signal, a failing step), whatever still carries the run's label
    // goes too. The machine's undos ran unless one failed.
    let mut record = ctx.record.lock().expect("record lock").clone();
    if !complete || !unwound.failed.is_empty() {
        let machines = !unwound.failed.is_empty();
        if let Err(e) = down::sweep(&ctx.docker, ctx.smolvm.as_ref(), &record, machines).await {
            problems.push(format!("{e:#}"));
        }
    }
    // The CA keys go whatever else happened: nothing may use them after the run.
    let _ = std::fs::remove_dir_all(bundle::ca_dir(ctx));
    if problems.is_empty() {
        ctx.store.unpin(&record.run_id)?;
        RunRecord::end(&ctx.store, &record.run_id)?;
        Ok(())
    } else {
        let text = problems.join("; ");
        record.teardown_error = Some(text.clone());
        let _ = record.save(&ctx.store);
        Err(anyhow!(
            "{text}; `bottle down {}` tries again",
            record.run_id
        ))
    }
}

/// The exit code bottle passes on for a guest command's: 0–255 as they are (a signal's
/// 128+N included), anything else (a command whose end the engine could not tell) 1.
pub fn exit_code(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(1)
}
