//! Run: bring a bottle up from its manifest, run the agent, always tear it down.
//!
//! `bottle run HASH` consumes one manifest. It chooses the run-time values ([`net`]: run id,
//! subnets, bundle IP, names), writes the run record ([`record`]) before creating anything,
//! then runs these steps, each named in its errors ("bottle run: step 'chown' failed: …"):
//!
//! | step | docker guest | smolvm guest |
//! | --- | --- | --- |
//! | `network` | an internal network (the guest's; pinned subnet, no host address on it) and an outbound bridge (the bundle's way out) | one bridge with a pinned subnet |
//! | `image load` | bundle and guest image, each by id: loaded from the entry only when the engine lacks it | the bundle image |
//! | `bundle start` | the bundle at `.2` of the guest's network, with the spec's daemons, env (token values from bottle's own environment, in the create body only) and mounts | same |
//! | `guest create` | a container of the guest image on the internal network only, kept alive by a shell loop, with the guest env | `machine create --image ARCHIVE` or `--from PACK`, `--allow-cidr BUNDLE_IP/32`, `-e K=V` for the guest env |
//! | `guest start` | start | `machine start` |
//! | `chown` | `chown -R USER:USER HOME` as root | same |
//! | `provision` | the CA (at the trust-trio path and in the trust store when the guest has one), prompt, skills, git identity and remotes, supervise client config | same, by `machine cp` |
//! | `command` | the agent command (or the CMD after `--`) as the guest user in its home, attached to the terminal | same |
//!
//! `bundle start` runs alongside `guest create` → `guest start` → `chown` → `provision`: the
//! guest needs the bundle's address (fixed by the network step; the container guest is pinned
//! at `.3` so it never takes the bundle's `.2`), not the bundle itself; the command waits for
//! both. That takes a third off the bring-up (see `benches/run_bringup.sh`).
//!
//! Every exec re-passes the whole guest env. Each step pushes the undo of what it created on
//! an [`undo::UndoStack`]; on an error, on a normal exit, on SIGINT, SIGTERM and SIGHUP the
//! stack unwinds in reverse: the guest (a machine: stopped, then deleted) and the bundle —
//! at once, since neither needs the other gone first and without its bundle the guest has no
//! way out at all —, then the networks. After a run cut short, a sweep by the `bottle.run`
//! label removes anything a step was interrupted in the middle of creating. The run record goes
//! last. `bottle run` exits with the command's exit code (128+N after signal N).
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

pub mod net;
pub mod ops;
pub mod record;
pub mod undo;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use serde::Serialize;

use crate::hash::{self, BuildHash};
use crate::manifest::{Manifest, MountSource};
use crate::plan::{GuestBackend, GuestStart};
use crate::runtime::docker;
use crate::runtime::docker_run::{self as engine, Bind, ContainerSpec, ExecSpec, NetworkCreated};
use crate::runtime::smolvm::{MachineCreate, MachineSource, Smolvm};
use crate::store::Store;
use net::{Ipv4Net, LABEL_HASH, LABEL_RUN, LABEL_STORE, Names, SubnetPool};
use record::{Resource, RunRecord};
use undo::{UndoFuture, UndoStack};

/// The steps of a run, in order.
pub const STEPS: &[&str] = &[
    "network",
    "image load",
    "bundle start",
    "guest create",
    "guest start",
    "chown",
    "provision",
    "command",
];

/// Artifacts at most this big are rehashed before each run; bigger ones (image archives,
/// packs) are checked by size, and by the engine's image id when loaded.
const REHASH_LIMIT: u64 = 1 << 20;

pub struct RunOptions {
    /// `--subnet-pool`: where the run's subnets come from.
    pub subnet_pool: String,
    /// The command to run instead of the manifest's (after `--`).
    pub command: Vec<String>,
    /// No step lines on stderr.
    pub quiet: bool,
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

/// A running guest, however it runs.
#[derive(Clone)]
pub enum Guest {
    Docker { docker: Docker, container: String },
    Smolvm { smolvm: Smolvm, machine: String },
}

impl Guest {
    /// Runs a command to completion: (exit code, stdout, stderr).
    pub async fn exec(
        &self,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
    ) -> Result<(i64, String, String)> {
        match self {
            Guest::Docker { docker, container } => {
                let env = kv(env);
                let c = engine::exec_capture(
                    docker,
                    &ExecSpec {
                        container,
                        user,
                        workdir,
                        env: &env,
                        cmd,
                    },
                )
                .await?;
                Ok((c.code, c.stdout, c.stderr))
            }
            Guest::Smolvm { smolvm, machine } => {
                let o = smolvm
                    .machine_exec(machine, user, workdir, env, cmd)
                    .await?;
                Ok((o.code as i64, o.stdout, o.stderr))
            }
        }
    }

    /// Runs a command attached to bottle's terminal; returns its exit code.
    pub async fn exec_attached(
        &self,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
    ) -> Result<i64> {
        match self {
            Guest::Docker { docker, container } => {
                let env = kv(env);
                engine::exec_attached(
                    docker,
                    &ExecSpec {
                        container,
                        user,
                        workdir,
                        env: &env,
                        cmd,
                    },
                )
                .await
            }
            Guest::Smolvm { smolvm, machine } => {
                use std::io::IsTerminal;
                let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
                let code = smolvm
                    .machine_exec_attached(machine, user, workdir, env, cmd, tty)
                    .await?;
                Ok(code as i64)
            }
        }
    }

    /// Writes files (guest path, bytes, mode) into the guest, owned by root. `scratch` is a
    /// host folder of the run for staging them where a CLI must copy from files.
    pub async fn put_files(
        &self,
        files: &[(String, Vec<u8>, u32)],
        env: &[(String, String)],
        scratch: &Path,
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        match self {
            Guest::Docker { docker, container } => {
                engine::upload(docker, container, engine::tar_of(files)?).await
            }
            Guest::Smolvm { smolvm, machine } => {
                let mut mkdir = vec!["mkdir".to_string(), "-p".to_string()];
                for (path, _, _) in files {
                    if let Some(parent) = Path::new(path).parent() {
                        mkdir.push(parent.to_string_lossy().into_owned());
                    }
                }
                mkdir.sort();
                mkdir.dedup();
                let (code, _, err) = self.exec("0", None, env, &mkdir).await?;
                if code != 0 {
                    bail!("`mkdir -p` in the guest exited {code}: {}", err.trim());
                }
                std::fs::create_dir_all(scratch)?;
                for (i, (path, bytes, mode)) in files.iter().enumerate() {
                    let staged = scratch.join(format!("file-{i}"));
                    std::fs::write(&staged, bytes)
                        .with_context(|| format!("cannot write {}", staged.display()))?;
                    smolvm.machine_cp(&staged, machine, path, *mode).await?;
                    let _ = std::fs::remove_file(&staged);
                }
                Ok(())
            }
        }
    }
}

fn kv(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Everything a run needs, fixed before the first step, and what the steps note as they go.
struct Ctx {
    store: Store,
    entry: PathBuf,
    manifest: Manifest,
    names: Names,
    labels: engine::Labels,
    pool: SubnetPool,
    docker: Docker,
    smolvm: Option<Smolvm>,
    quiet: bool,
    /// The run record; steps running at once add to it.
    record: Mutex<RunRecord>,
    /// The steps under way, for messages about signals.
    active: Mutex<Vec<&'static str>>,
    /// Step name → milliseconds, as they finish.
    timings: Mutex<Vec<(String, u128)>>,
    images_loaded: Mutex<Vec<String>>,
}

impl Ctx {
    fn say(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("bottle run: {line}");
        }
    }

    /// Notes in the record something about to be created.
    fn note(&self, r: Resource) -> Result<()> {
        self.record.lock().expect("record lock").add(&self.store, r)
    }
}

/// The undo stacks of a run. The bundle's and the guest's steps run at once, each pushing on
/// its own stack; joined, the two unwind at once (each in its own order: a machine is stopped,
/// then deleted), and the networks go after both. Neither container needs the other gone
/// first: without its bundle the guest has no way out at all.
#[derive(Default)]
struct Stacks {
    networks: UndoStack,
    bundle: UndoStack,
    guest: UndoStack,
}

impl Stacks {
    fn joined(self) -> UndoStack {
        let mut all = self.networks;
        all.push_stacks(vec![self.guest, self.bundle]);
        all
    }
}

/// What the bring-up hands to the command step.
struct Live {
    guest: Guest,
    env: Vec<(String, String)>,
}

/// Reads and checks an entry's manifest for a run: parses it and rehashes every artifact of
/// at most [`REHASH_LIMIT`] bytes (configs, CAs: what the bundle mounts), checking the size of
/// the rest.
pub fn checked_manifest(store: &Store, hash: &BuildHash) -> Result<Manifest> {
    let m = store.manifest(hash)?.with_context(|| {
        format!("the store entry {hash} has no manifest (a build was interrupted?); build it again")
    })?;
    let entry = store.entry_path(hash);
    for a in &m.artifacts {
        let path = entry.join(&a.path);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "artifact {} of {} is missing; `bottle verify {}` checks the entry, `bottle gc` and a new build repair it",
                a.path,
                hash.short(),
                hash.short()
            )
        })?;
        let damaged = if meta.len() != a.size {
            true
        } else if a.size <= REHASH_LIMIT {
            hash::file_digest(&path)
                .map(|(d, _)| d != a.blake3)
                .unwrap_or(true)
        } else {
            false
        };
        if damaged {
            bail!(
                "artifact {} of {} differs from its manifest; the entry is damaged: remove it with `bottle gc` and build again",
                a.path,
                hash.short()
            );
        }
    }
    Ok(m)
}

/// Runs the entry `hash`: brings it up, runs the command, tears everything down.
pub async fn run(store: &Store, hash: &BuildHash, opts: RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let manifest = checked_manifest(store, hash)?;
    let pool = SubnetPool::parse(&opts.subnet_pool).context("bad --subnet-pool")?;
    let docker = docker::connect().await?;
    let smolvm = match manifest.guest.backend {
        GuestBackend::Smolvm => Some(Smolvm::locate()?),
        GuestBackend::Docker => None,
    };
    // A run holds its entry's lock shared: `bottle gc` leaves the entry alone meanwhile.
    let _lock = lock_shared(store, hash)?;

    let run_id = net::new_run_id();
    let names = Names::new(&run_id);
    let labels = HashMap::from([
        (LABEL_RUN.to_string(), run_id.clone()),
        (LABEL_HASH.to_string(), hash.to_string()),
        (LABEL_STORE.to_string(), store_label(store)),
    ]);
    let record = record::new_record(
        &run_id,
        hash.as_str(),
        &manifest.name,
        manifest.guest.backend,
        smolvm.as_ref().and_then(|s| s.state_dir.clone()),
    );
    // Written before anything is created.
    record.save(store)?;

    let ctx = Ctx {
        store: store.clone(),
        entry: store.entry_path(hash),
        manifest,
        names,
        labels,
        pool,
        docker,
        smolvm,
        quiet: opts.quiet,
        record: Mutex::new(record),
        active: Mutex::new(Vec::new()),
        timings: Mutex::new(Vec::new()),
        images_loaded: Mutex::new(Vec::new()),
    };
    ctx.say(format!(
        "run {run_id} of {} ({})",
        ctx.manifest.name,
        hash.short()
    ));

    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the first step and kept until the process exits, so a second signal
    // during teardown cannot cut it short.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

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
    let mut report = RunReport {
        run_id: run_id.clone(),
        hash: hash.to_string(),
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
        Ok(Ok(code)) => report.exit_code = (code & 0xff) as i32,
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
    let teardown = teardown(&ctx, &mut undo, complete).await;
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

/// Marks the step under way, honours the test hooks, runs it, names it in its error.
async fn step<T>(
    ctx: &Ctx,
    name: &'static str,
    work: impl std::future::Future<Output = Result<T>>,
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

async fn pause_at(name: &str) {
    if hook_matches("BOTTLE_PAUSE_AT", name) {
        eprintln!("bottle run: paused at step '{name}' (BOTTLE_PAUSE_AT)");
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

fn failpoint(name: &str) -> Result<()> {
    if hook_matches("BOTTLE_FAILPOINT", name) {
        bail!("fail point BOTTLE_FAILPOINT={name} (a test hook)");
    }
    Ok(())
}

/// Network and image load; then the bundle's start alongside the guest's steps (create,
/// start, chown, provision), which need the bundle's address but not the bundle itself. The
/// command waits for both.
async fn bring_up(ctx: &Ctx, stacks: &mut Stacks) -> Result<Live> {
    let m = &ctx.manifest;
    let docker_guest = m.guest.backend == GuestBackend::Docker;

    let (subnet, outbound) = step(
        ctx,
        "network",
        networks(ctx, &mut stacks.networks, docker_guest),
    )
    .await?;
    let bundle_ip = subnet.bundle_ip();
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

    let loaded = step(ctx, "image load", async {
        let bundle_archive = ctx.entry.join(&m.bundle.image_archive);
        let bundle = engine::ensure_image(&ctx.docker, &m.bundle.image_id, &bundle_archive);
        let guest = async {
            if docker_guest {
                engine::ensure_image(
                    &ctx.docker,
                    &m.guest.image_id,
                    &ctx.entry.join(&m.guest.image_archive),
                )
                .await
            } else {
                Ok(false)
            }
        };
        let (b, g) = tokio::try_join!(bundle, guest)?;
        let mut loaded = Vec::new();
        if b {
            loaded.push(m.bundle.image_id.clone());
        }
        if g {
            loaded.push(m.guest.image_id.clone());
        }
        Ok(loaded)
    })
    .await?;
    if !loaded.is_empty() {
        ctx.say(format!("loaded {} image(s) into the engine", loaded.len()));
    }
    *ctx.images_loaded.lock().expect("lock") = loaded;

    let env = net::fill_guest_env(&m.guest.env, &bundle_ip.to_string());
    let bundle = step(
        ctx,
        "bundle start",
        start_bundle(ctx, &mut stacks.bundle, bundle_ip, docker_guest),
    );
    let guest = guest_steps(ctx, &mut stacks.guest, &env, subnet, docker_guest);
    let ((), guest) = tokio::try_join!(bundle, guest)?;
    Ok(Live { guest, env })
}

/// The guest's steps, in order: create, start, chown, provision.
async fn guest_steps(
    ctx: &Ctx,
    undo: &mut UndoStack,
    env: &[(String, String)],
    subnet: Ipv4Net,
    docker_guest: bool,
) -> Result<Guest> {
    let m = &ctx.manifest;
    let guest_name = ctx.names.guest();
    let bundle_ip = subnet.bundle_ip();
    let guest = step(ctx, "guest create", async {
        if docker_guest {
            ctx.note(Resource::Container {
                name: guest_name.clone(),
            })?;
            let mut labels = ctx.labels.clone();
            labels.insert("bottle.role".into(), "guest".into());
            engine::create_container(
                &ctx.docker,
                ContainerSpec {
                    name: guest_name.clone(),
                    image: m.guest.image_id.clone(),
                    entrypoint: Some(engine::KEEPALIVE.iter().map(|s| s.to_string()).collect()),
                    cmd: None,
                    env: kv(env),
                    binds: Vec::new(),
                    user: None,
                    network: ctx.names.guest_net(),
                    // Pinned too: created while the bundle starts, it must not take `.2`.
                    ip: Some(subnet.host(3)),
                    labels,
                    cap_drop: vec!["NET_RAW".into()],
                    no_new_privileges: false,
                },
            )
            .await?;
            let (docker, name) = (ctx.docker.clone(), guest_name.clone());
            undo.push(format!("remove guest container {guest_name}"), async move {
                engine::remove_container(&docker, &name).await
            });
            Ok(Guest::Docker {
                docker: ctx.docker.clone(),
                container: guest_name.clone(),
            })
        } else {
            let smolvm = ctx
                .smolvm
                .clone()
                .expect("smolvm located for a smolvm guest");
            ctx.note(Resource::Machine {
                name: guest_name.clone(),
            })?;
            let source_path = match m.guest.start {
                GuestStart::Image => ctx.entry.join(&m.guest.image_archive),
                GuestStart::Pack => ctx.entry.join(
                    m.guest
                        .pack
                        .as_deref()
                        .context("the manifest names no pack for a pack-started guest")?,
                ),
            };
            let source = match m.guest.start {
                GuestStart::Image => MachineSource::Image(&source_path),
                GuestStart::Pack => MachineSource::Pack(&source_path),
            };
            let labels: Vec<(String, String)> = ctx
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Pushed first: a create that fails half-way may still leave the machine.
            let (s, name) = (smolvm.clone(), guest_name.clone());
            undo.push(format!("delete machine {guest_name}"), async move {
                s.machine_delete(&name).await
            });
            smolvm
                .machine_create(&MachineCreate {
                    name: &guest_name,
                    source,
                    allow_cidr: &format!("{bundle_ip}/32"),
                    env,
                    labels: &labels,
                })
                .await?;
            Ok(Guest::Smolvm {
                smolvm,
                machine: guest_name.clone(),
            })
        }
    })
    .await?;

    step(ctx, "guest start", async {
        match &guest {
            Guest::Docker { docker, container } => engine::start(docker, container).await,
            Guest::Smolvm { smolvm, machine } => {
                let (s, name) = (smolvm.clone(), machine.clone());
                undo.push(format!("stop machine {machine}"), async move {
                    s.machine_stop(&name).await
                });
                smolvm.machine_start(machine).await
            }
        }
    })
    .await?;

    let user = &m.guest.user;
    let home = &m.guest.home;
    step(ctx, "chown", async {
        let cmd = vec![
            "chown".to_string(),
            "-R".to_string(),
            format!("{user}:{user}"),
            home.clone(),
        ];
        let (code, _, err) = guest.exec("0", None, env, &cmd).await?;
        if code != 0 {
            bail!(
                "`chown -R {user}:{user} {home}` exited {code} in the guest: {}; the guest image must have the user {user} and the folder {home}",
                err.trim()
            );
        }
        Ok(())
    })
    .await?;

    step(ctx, "provision", provision(ctx, &guest, env, bundle_ip)).await?;
    Ok(guest)
}

/// The run's networks: the guest's (internal for a docker guest) and, for a docker guest, the
/// bundle's outbound one, on two free blocks of the pool, created at once; their undos go
/// together.
async fn networks(
    ctx: &Ctx,
    undo: &mut UndoStack,
    docker_guest: bool,
) -> Result<(Ipv4Net, Option<Ipv4Net>)> {
    let mut used = engine::used_subnets(&ctx.docker).await?;
    let seed = net::seed_of(&ctx.names.run_id);
    let mut wanted = vec![(ctx.names.guest_net(), docker_guest)];
    if docker_guest {
        wanted.push((ctx.names.outbound_net(), false));
    }
    let picks: Vec<Ipv4Net> = ctx
        .pool
        .candidates(seed)
        .filter(|c| !used.iter().any(|u| u.overlaps(c)))
        .take(wanted.len())
        .collect();
    if picks.len() < wanted.len() {
        return Err(no_free_subnet(ctx, 0));
    }
    for (name, _) in &wanted {
        ctx.note(Resource::Network { name: name.clone() })?;
    }
    let created = futures_util::future::join_all(wanted.iter().zip(&picks).map(
        |((name, internal), subnet)| {
            engine::create_network(&ctx.docker, name, *subnet, *internal, &ctx.labels)
        },
    ))
    .await;
    used.extend(picks.iter().copied());
    let mut together: Vec<(String, UndoFuture)> = Vec::new();
    let mut retry = Vec::new();
    let mut first_error = None;
    let mut got: Vec<Option<Ipv4Net>> = vec![None; wanted.len()];
    for (i, r) in created.into_iter().enumerate() {
        let name = wanted[i].0.clone();
        match r {
            Ok(NetworkCreated::Created) => {
                got[i] = Some(picks[i]);
                let docker = ctx.docker.clone();
                together.push((
                    format!("remove network {name}"),
                    Box::pin(async move { engine::remove_network(&docker, &name).await }),
                ));
            }
            // Taken since we listed (another run starting at this moment): try further on.
            Ok(NetworkCreated::Overlap(_)) => retry.push(i),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    undo.push_together(together);
    if let Some(e) = first_error {
        return Err(e);
    }
    for i in retry {
        let (name, internal) = &wanted[i];
        got[i] = Some(allocate(ctx, undo, name, *internal, seed, &mut used).await?);
    }
    let subnet = got[0].expect("the guest's network exists");
    Ok((subnet, got.get(1).copied().flatten()))
}

fn no_free_subnet(ctx: &Ctx, overlaps: usize) -> anyhow::Error {
    anyhow!(
        "no free /{} subnet left in pool {} ({} blocks; {} taken while choosing): docker networks use them; remove stale runs with `bottle down --all`, or give another pool with --subnet-pool or BOTTLE_SUBNET_POOL",
        net::SUBNET_PREFIX,
        ctx.pool.net,
        ctx.pool.blocks(),
        overlaps
    )
}

/// Takes the next free block of the pool and creates network `name` on it; pushes its undo.
async fn allocate(
    ctx: &Ctx,
    undo: &mut UndoStack,
    name: &str,
    internal: bool,
    seed: u64,
    used: &mut Vec<Ipv4Net>,
) -> Result<Ipv4Net> {
    let mut overlaps = 0;
    for cand in ctx.pool.candidates(seed) {
        if used.iter().any(|u| u.overlaps(&cand)) {
            continue;
        }
        match engine::create_network(&ctx.docker, name, cand, internal, &ctx.labels).await? {
            NetworkCreated::Created => {
                let (docker, n) = (ctx.docker.clone(), name.to_string());
                undo.push(format!("remove network {name}"), async move {
                    engine::remove_network(&docker, &n).await
                });
                used.push(cand);
                return Ok(cand);
            }
            NetworkCreated::Overlap(_) => {
                overlaps += 1;
                used.push(cand);
            }
        }
    }
    Err(no_free_subnet(ctx, overlaps))
}

async fn start_bundle(
    ctx: &Ctx,
    undo: &mut UndoStack,
    bundle_ip: Ipv4Addr,
    docker_guest: bool,
) -> Result<()> {
    let spec = &ctx.manifest.bundle;
    let mut env = spec.env.clone();
    for name in &spec.env_from_host {
        // The value goes into the create body only: never on an argv, in a log or a file.
        match std::env::var(name) {
            Ok(value) => env.push(format!("{name}={value}")),
            Err(_) => bail!(
                "the bundle needs {name} from bottle's environment (the recipe's egress routes send it upstream), and it is not set: export {name}=... and run again"
            ),
        }
    }
    let run_dir = record::run_dir(&ctx.store, &ctx.names.run_id);
    let mut binds = Vec::new();
    for mount in &spec.mounts {
        let source = match &mount.source {
            MountSource::Entry(p) => ctx.entry.join(p),
            MountSource::Host(h) => {
                let path = expand_home(h)?;
                if !path.exists() {
                    bail!(
                        "the bundle mounts {} at {}, and it does not exist; create it or fix the recipe",
                        path.display(),
                        mount.target
                    );
                }
                path
            }
            MountSource::RunDir(d) => {
                let dir = run_dir.join(d);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                dir
            }
        };
        binds.push(Bind {
            source: source.to_string_lossy().into_owned(),
            target: mount.target.clone(),
            read_only: mount.read_only,
        });
    }
    let name = ctx.names.bundle();
    ctx.note(Resource::Container { name: name.clone() })?;
    let mut labels = ctx.labels.clone();
    labels.insert("bottle.role".into(), "bundle".into());
    engine::create_container(
        &ctx.docker,
        ContainerSpec {
            name: name.clone(),
            image: spec.image_id.clone(),
            entrypoint: None,
            cmd: Some(vec!["--daemons".to_string(), spec.daemons.join(",")]),
            env,
            binds,
            user: None,
            network: ctx.names.guest_net(),
            ip: Some(bundle_ip),
            labels,
            cap_drop: Vec::new(),
            no_new_privileges: true,
        },
    )
    .await?;
    let (docker, n) = (ctx.docker.clone(), name.clone());
    undo.push(format!("remove bundle container {name}"), async move {
        engine::remove_container(&docker, &n).await
    });
    let probe_net = if docker_guest {
        let out = ctx.names.outbound_net();
        engine::connect(&ctx.docker, &name, &out).await?;
        out
    } else {
        ctx.names.guest_net()
    };
    engine::start(&ctx.docker, &name).await?;
    let port = spec.ports.get("pipelock").copied();
    wait_ready(ctx, &name, &probe_net, port).await
}

/// Waits until the bundle listens (probed from the host on `network`), or fails with its log
/// when it exits.
async fn wait_ready(ctx: &Ctx, name: &str, network: &str, port: Option<u16>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = engine::address(&ctx.docker, name, network).await?;
    loop {
        let (running, code) = engine::state(&ctx.docker, name).await?;
        if !running {
            let log = engine::logs_tail(&ctx.docker, name, 20).await;
            bail!(
                "the bundle exited (code {}) right after starting; its last lines:\n{}",
                code.unwrap_or(-1),
                log.trim_end()
            );
        }
        let (Some(ip), Some(port)) = (addr, port) else {
            return Ok(());
        };
        let probe = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(SocketAddr::from((ip, port))),
        )
        .await;
        match probe {
            Ok(Ok(_)) => return Ok(()),
            // Refused: up but not listening yet. Anything else: keep trying until the deadline.
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => bail!(
                "the bundle runs but nothing listens on {ip}:{port} after 15s ({e}); its log: `docker logs {name}`"
            ),
            Err(_) => {
                // The host cannot reach the bundle's network (not Linux?): go on unprobed.
                tracing::warn!("cannot probe the bundle at {ip}:{port}; going on");
                return Ok(());
            }
        }
    }
}

fn expand_home(p: &str) -> Result<PathBuf> {
    if let Some(rest) = p.strip_prefix("~/") {
        let home = std::env::var_os("HOME")
            .context("the recipe names a path under ~/ and HOME is not set")?;
        Ok(PathBuf::from(home).join(rest))
    } else {
        Ok(PathBuf::from(p))
    }
}

/// Where provisioned files go in the guest, relative to its home.
pub mod guest_paths {
    pub const PROMPT: &str = ".claude/CLAUDE.md";
    pub const SKILLS: &str = ".claude/skills";
    pub const GITCONFIG: &str = ".gitconfig";
    pub const SUPERVISE: &str = ".bottle/supervise.json";
    /// Where the CA also goes when the guest has a Debian-style trust store.
    pub const TRUST_STORE_CA: &str = "/usr/local/share/ca-certificates/bottle.crt";
}

async fn provision(
    ctx: &Ctx,
    guest: &Guest,
    env: &[(String, String)],
    bundle_ip: Ipv4Addr,
) -> Result<()> {
    let m = &ctx.manifest;
    let g = &m.guest;
    let p = &g.provision;
    let home = g.home.trim_end_matches('/');
    let in_home = |rel: &str| format!("{home}/{rel}");
    let read = |rel: &str| -> Result<Vec<u8>> {
        let path = ctx.entry.join(rel);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    // Owned by the guest user afterwards; the CA stays root's.
    let mut users: Vec<String> = Vec::new();
    files.push((g.ca_guest_path.clone(), read(&g.ca)?, 0o644));
    if let Some(prompt) = &p.prompt {
        files.push((in_home(guest_paths::PROMPT), read(prompt)?, 0o644));
        users.push(in_home(".claude"));
    }
    if let Some(skills) = &p.skills {
        let root = ctx.entry.join(skills);
        for (rel, bytes) in walk_files(&root)? {
            files.push((
                in_home(&format!("{}/{rel}", guest_paths::SKILLS)),
                bytes,
                0o644,
            ));
        }
        users.push(in_home(".claude"));
    }
    if p.git_name.is_some() || p.git_email.is_some() || !p.git_remotes.is_empty() {
        let port = m.bundle.ports.get("git-gate").copied().unwrap_or(9418);
        let mut text = String::from("# Written by bottle: pushes go to the bundle's git-gate.\n");
        if p.git_name.is_some() || p.git_email.is_some() {
            text.push_str("[user]\n");
            if let Some(n) = &p.git_name {
                text.push_str(&format!("\tname = {}\n", git_quote(n)));
            }
            if let Some(e) = &p.git_email {
                text.push_str(&format!("\temail = {}\n", git_quote(e)));
            }
        }
        for r in &p.git_remotes {
            text.push_str(&format!(
                "[remote \"{r}\"]\n\turl = git://{bundle_ip}:{port}/{r}\n\tfetch = +refs/heads/*:refs/remotes/{r}/*\n"
            ));
        }
        files.push((in_home(guest_paths::GITCONFIG), text.into_bytes(), 0o644));
        users.push(in_home(guest_paths::GITCONFIG));
    }
    if p.supervise {
        let port = m.bundle.ports.get("supervise").copied().unwrap_or(7777);
        let conf = serde_json::json!({
            "url": format!("http://{bundle_ip}:{port}"),
            "run": ctx.names.run_id,
        });
        let mut bytes = serde_json::to_vec_pretty(&conf)?;
        bytes.push(b'\n');
        files.push((in_home(guest_paths::SUPERVISE), bytes, 0o644));
        users.push(in_home(".bottle"));
    }
    users.sort();
    users.dedup();

    let scratch = record::run_dir(&ctx.store, &ctx.names.run_id).join("provision");
    guest.put_files(&files, env, &scratch).await?;

    // As root: the CA into the guest's trust store when it has one; the files to the user.
    let script = r#"ca="$1"; owner="$2"; shift 2
if command -v update-ca-certificates >/dev/null 2>&1; then
  mkdir -p /usr/local/share/ca-certificates && cp "$ca" "$TRUST_CA" && update-ca-certificates >/dev/null 2>&1 || exit 3
elif [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cat "$ca" >> /etc/ssl/certs/ca-certificates.crt || exit 3
fi
if [ $# -gt 0 ]; then chown -R "$owner:$owner" "$@" || exit 4; fi"#
        .replace("$TRUST_CA", guest_paths::TRUST_STORE_CA);
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script,
        "provision".to_string(),
        g.ca_guest_path.clone(),
        g.user.clone(),
    ];
    cmd.extend(users);
    let (code, _, err) = guest.exec("0", None, env, &cmd).await?;
    match code {
        0 => Ok(()),
        3 => bail!(
            "cannot add the bottle's CA to the guest's trust store: {}",
            err.trim()
        ),
        4 => bail!(
            "cannot give the provisioned files to {}: {}",
            g.user,
            err.trim()
        ),
        _ => bail!("the provisioning script exited {code}: {}", err.trim()),
    }
}

fn git_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Every regular file below `root`: (`/`-separated relative path, bytes), sorted.
fn walk_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for ent in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = ent.file_type()?;
            if ft.is_dir() {
                stack.push((ent.path(), child));
            } else if ft.is_file() {
                out.push((child, std::fs::read(ent.path())?));
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn command_step(ctx: &Ctx, live: &Live, command: &[String]) -> Result<i64> {
    let m = &ctx.manifest;
    let cmd: Vec<String> = if command.is_empty() {
        m.guest.command.clone()
    } else {
        command.to_vec()
    };
    ctx.active.lock().expect("lock").push("command");
    pause_at("command").await;
    ctx.say(format!("running {} as {}", shell_words(&cmd), m.guest.user));
    let started = Instant::now();
    let r = async {
        let code = live
            .guest
            .exec_attached(&m.guest.user, Some(&m.guest.home), &live.env, &cmd)
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
            if let Ok((1.., _, _)) = live
                .guest
                .exec(&m.guest.user, Some(&m.guest.home), &live.env, &check)
                .await
            {
                bail!(
                    "`{}` is not a command in the guest (not found on its PATH, or not executable)",
                    cmd[0]
                );
            }
        }
        failpoint("command")?;
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
/// the run record. The record stays (marked) when something could not be removed.
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
    // goes too: a create interrupted half-way pushed no undo. The machine's undos ran unless
    // one failed (a machine's delete is pushed before its create).
    let mut record = ctx.record.lock().expect("record lock").clone();
    if !complete || !unwound.failed.is_empty() {
        let machines = !unwound.failed.is_empty();
        if let Err(e) = ops::sweep(&ctx.docker, ctx.smolvm.as_ref(), &record, machines).await {
            problems.push(format!("{e:#}"));
        }
    }
    if problems.is_empty() {
        RunRecord::remove(&ctx.store, &record.run_id)?;
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

/// The label value naming a store: its absolute path.
pub fn store_label(store: &Store) -> String {
    std::fs::canonicalize(store.root())
        .unwrap_or_else(|_| store.root().to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Holds the entry's lock shared while the run lasts: builds and `bottle gc` take it
/// exclusively.
fn lock_shared(store: &Store, hash: &BuildHash) -> Result<std::fs::File> {
    let dir = store.root().join(crate::store::LAYOUT).join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{hash}.lock"));
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock_shared()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}
