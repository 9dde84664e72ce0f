//! The command line: clap definitions and the glue from each command to the pipeline stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::hash::{self, BuildKey};
use crate::progress::Progress;
use crate::store::Store;
use crate::{build, plan, recipe};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: bad input (recipe, hash prefix, manifest) or a failed build; the message says which
  2  usage error (unknown flag, missing argument)
  3  `bottle verify` found a damaged or incomplete entry
  N  `bottle run` and `bottle exec`: the guest command's exit code (128+N after signal N);
     1 when a step of the run failed (the message names the step)";

/// Nix-style build-then-run pipeline for coding-agent sandboxes (bottles).
///
/// `bottle build RECIPE` hashes every input of a recipe before building, then builds the
/// artifact set for that hash once into an immutable store entry. `bottle run HASH` brings
/// that entry up (network, bundle, guest, chown, provisioning), runs the agent, and tears
/// everything down in reverse order whatever happens.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The store folder [default: ./cache]
    #[arg(long, global = true, env = "BOTTLE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Plain progress lines instead of spinners, even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less output: no progress, errors only
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a recipe into the store (or find it there); prints the hash as the last line
    Build {
        /// The recipe file, e.g. recipes/demo.toml
        recipe: PathBuf,
        /// Refuse inputs the hash cannot pin (unpinned FROM, ADD of a URL) instead of warning
        #[arg(long)]
        pure: bool,
        /// Also record a gc root of this name for the entry
        #[arg(long, value_name = "NAME")]
        root: Option<String>,
    },
    /// Print a recipe's hash without building: CI's cache key
    Hash {
        recipe: PathBuf,
        /// Refuse inputs the hash cannot pin instead of warning
        #[arg(long)]
        pure: bool,
    },
    /// List the store's entries
    Ls,
    /// Show an entry's manifest
    Show {
        /// A hash or unique prefix
        hash: String,
    },
    /// Rehash entries (all when no hash is given); exits 3 naming each damaged file
    Verify { hash: Option<String> },
    /// Remove entries not kept by a root or --keep, leftovers of killed builds, old layouts
    Gc {
        /// Keep this entry too (hash or prefix); repeatable
        #[arg(long, value_name = "HASH")]
        keep: Vec<String>,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Which recipe fields and input files differ between two entries ("why did CI rebuild?")
    Diff { a: String, b: String },
    /// Run a bottle: network, bundle, guest, chown, provision, the agent; then tear it all down
    Run {
        /// A hash (or unique prefix) of a store entry, or a recipe file to build first
        target: String,
        /// The pool the run's subnets are carved from (in /28s)
        #[arg(long, env = "BOTTLE_SUBNET_POOL", default_value = crate::run::net::DEFAULT_POOL, value_name = "CIDR")]
        subnet_pool: String,
        /// The command to run in the guest instead of the recipe's
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List the runs of this store (live, and stale ones a killed run left)
    Ps,
    /// Run a command in a live run's guest, as its user, with the whole guest env
    Exec {
        /// A run id or unique prefix (`bottle ps`)
        run: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Remove what a run left behind (a live run is asked to stop first)
    Down {
        /// A run id or unique prefix (`bottle ps`)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run: Option<String>,
        /// Every run of this store, and anything else labelled with it
        #[arg(long)]
        all: bool,
    },
    /// The bundle's entry point: runs the listed daemons until SIGTERM (inside the bundle)
    #[command(hide = true)]
    Sidecar(crate::sidecar::SidecarArgs),
}

/// What `main` should exit with.
pub enum Outcome {
    Success,
    Damaged,
    /// The exit code of a guest command (`bottle run`, `bottle exec`).
    Exit(u8),
}

pub fn store_of(global: &Global) -> Store {
    Store::new(
        global
            .store
            .clone()
            .unwrap_or_else(|| PathBuf::from("cache")),
    )
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    let g = &cli.global;
    let store = store_of(g);
    match &cli.command {
        Command::Build { recipe, pure, root } => {
            let progress = Progress::new(g.quiet > 0 || g.json, g.no_progress);
            let (planned, key) = keyed(recipe, *pure, g)?;
            let built = tokio::select! {
                r = build::build(&store, &planned, &key, &progress) => r?,
                _ = interrupted() => bail!("interrupted; nothing was added to the store"),
            };
            if let Some(name) = root {
                store.add_root(name, &built.hash)?;
            }
            if g.json {
                print_json(&json!({
                    "hash": built.hash,
                    "path": built.path,
                    "name": built.manifest.name,
                    "cached": built.cached,
                }));
            } else {
                if g.quiet == 0 {
                    let what = if built.cached { "cached" } else { "built" };
                    eprintln!("{what} {} at {}", built.manifest.name, built.path.display());
                }
                println!("{}", built.hash);
            }
        }
        Command::Hash { recipe, pure } => {
            let (_, key) = keyed(recipe, *pure, g)?;
            if g.json {
                print_json(&json!({ "hash": key.hash() }));
            } else {
                println!("{}", key.hash());
            }
        }
        Command::Ls => {
            let mut rows = Vec::new();
            for h in store.hashes()? {
                match store.manifest(&h) {
                    Ok(Some(m)) => rows.push(json!({
                        "hash": h,
                        "name": m.name,
                        "backend": m.guest.backend,
                        "size": m.total_size(),
                        "created": m.created,
                    })),
                    Ok(None) => rows.push(json!({ "hash": h, "error": "no manifest" })),
                    Err(e) => rows.push(json!({ "hash": h, "error": e.to_string() })),
                }
            }
            if g.json {
                print_json(&Value::Array(rows));
            } else {
                for r in rows {
                    let h = r["hash"].as_str().unwrap_or_default();
                    match r.get("error") {
                        Some(e) => println!("{h}  damaged: {}", e.as_str().unwrap_or_default()),
                        None => println!(
                            "{h}  {:<16} {:<7} {:>10}",
                            r["name"].as_str().unwrap_or_default(),
                            r["backend"].as_str().unwrap_or_default(),
                            human_bytes(r["size"].as_u64().unwrap_or(0))
                        ),
                    }
                }
            }
        }
        Command::Show { hash } => {
            let h = store.resolve(hash)?;
            let m = store.manifest(&h)?.context("the entry has no manifest")?;
            if g.json {
                print_json(&serde_json::to_value(&m)?);
            } else {
                println!("hash      {}", m.hash);
                println!("name      {}", m.name);
                println!("builder   {}", m.builder);
                println!("path      {}", store.entry_path(&h).display());
                println!(
                    "guest     {:?} ({:?}), user {} home {}",
                    m.guest.backend, m.guest.start, m.guest.user, m.guest.home
                );
                println!("command   {}", m.guest.command.join(" "));
                println!("image     {} ({})", m.guest.image_archive, m.guest.image_id);
                println!(
                    "bundle    {} ({})",
                    m.bundle.image_archive, m.bundle.image_id
                );
                println!("daemons   {}", m.bundle.daemons.join(", "));
                if !m.bundle.env_from_host.is_empty() {
                    println!(
                        "tokens    {} (names; values are read by `bottle run`)",
                        m.bundle.env_from_host.join(", ")
                    );
                }
                println!("guest env");
                for (k, v) in &m.guest.env {
                    println!("  {k}={v}");
                }
                println!("artifacts");
                for a in &m.artifacts {
                    let local = if a.machine_local {
                        "  machine-local"
                    } else {
                        ""
                    };
                    println!(
                        "  {:o} {:>10}  {}  {}{local}",
                        a.mode,
                        human_bytes(a.size),
                        &a.blake3[..16],
                        a.path
                    );
                }
            }
        }
        Command::Verify { hash } => {
            let hashes = match hash {
                Some(h) => vec![store.resolve(h)?],
                None => store.hashes()?,
            };
            let mut any = false;
            let mut report = Vec::new();
            for h in hashes {
                let damage = store.verify(&h)?;
                any |= !damage.is_empty();
                if !g.json {
                    if damage.is_empty() {
                        println!("ok       {h}");
                    } else {
                        for d in &damage {
                            println!("damaged  {h}  {}: {}", d.path, d.problem);
                        }
                    }
                }
                report.push(json!({ "hash": h, "ok": damage.is_empty(), "damage": damage }));
            }
            if g.json {
                print_json(&Value::Array(report));
            }
            if any {
                if !g.json {
                    eprintln!(
                        "error: damaged entries found; remove them with `bottle gc` and build again"
                    );
                }
                return Ok(Outcome::Damaged);
            }
        }
        Command::Gc { keep, dry_run } => {
            let keep = keep
                .iter()
                .map(|k| store.resolve(k))
                .collect::<Result<Vec<_>, _>>()?;
            let r = store.gc(&keep, *dry_run)?;
            if g.json {
                print_json(&serde_json::to_value(&r)?);
            } else {
                let verb = if *dry_run { "would remove" } else { "removed" };
                for h in &r.removed_entries {
                    println!("{verb} entry {h}");
                }
                for t in &r.removed_temporary {
                    println!("{verb} temporary {t}");
                }
                for l in &r.removed_layouts {
                    println!("{verb} layout {l}");
                }
                println!(
                    "{verb} {} entries, {} temporary folders, {} old layouts; {} freed; {} entries kept",
                    r.removed_entries.len(),
                    r.removed_temporary.len(),
                    r.removed_layouts.len(),
                    human_bytes(r.freed_bytes),
                    r.kept.len()
                );
            }
        }
        Command::Sidecar(args) => crate::sidecar::main(args.clone()).await?,
        Command::Run { .. } | Command::Ps | Command::Exec { .. } | Command::Down { .. } => {
            return run_commands(&cli, &store).await;
        }
        Command::Diff { a, b } => {
            let (ha, hb) = (store.resolve(a)?, store.resolve(b)?);
            let (ka, kb) = (store.key(&ha)?, store.key(&hb)?);
            let changes = diff_keys(&ka, &kb);
            if g.json {
                print_json(&json!({ "a": ha, "b": hb, "changes": changes }));
            } else if changes.is_empty() {
                println!("no differences in the recipe or its inputs");
            } else {
                for c in &changes {
                    let kind = c["kind"].as_str().unwrap_or_default();
                    let what = c["what"].as_str().unwrap_or_default();
                    match kind {
                        "field" => println!("field  {what}: {} → {}", c["a"], c["b"]),
                        _ => println!(
                            "input  {what}: {}",
                            c["change"].as_str().unwrap_or_default()
                        ),
                    }
                }
            }
        }
    }
    Ok(Outcome::Success)
}

/// Recipe → plan → key, with impurities warned about (or refused under `--pure`).
fn keyed(recipe: &Path, pure: bool, g: &Global) -> Result<(plan::Planned, BuildKey)> {
    let recipe = recipe::Recipe::load(recipe)?;
    let planned = plan::plan(&recipe)?;
    let (key, impurities) = hash::key(&planned)?;
    if !impurities.is_empty() {
        if pure {
            let list: Vec<String> = impurities.iter().map(|i| i.to_string()).collect();
            bail!(
                "--pure refuses inputs the hash cannot pin:\n  {}",
                list.join("\n  ")
            );
        }
        if g.quiet == 0 {
            for i in &impurities {
                eprintln!("warning: {i} (refused under --pure)");
            }
        }
    }
    Ok((planned, key))
}

/// The differences between two keys, as JSON rows.
pub fn diff_keys(a: &BuildKey, b: &BuildKey) -> Vec<Value> {
    let mut out = Vec::new();
    if a.builder != b.builder {
        out.push(json!({ "kind": "field", "what": "builder", "a": a.builder, "b": b.builder }));
    }
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(
        "",
        &serde_json::to_value(&a.plan).expect("plan serializes"),
        &mut fa,
    );
    flatten(
        "",
        &serde_json::to_value(&b.plan).expect("plan serializes"),
        &mut fb,
    );
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for k in keys {
        let (va, vb) = (fa.get(k), fb.get(k));
        if va != vb {
            out.push(json!({ "kind": "field", "what": k, "a": va.cloned().unwrap_or(Value::Null), "b": vb.cloned().unwrap_or(Value::Null) }));
        }
    }
    let paths: std::collections::BTreeSet<&String> =
        a.inputs.keys().chain(b.inputs.keys()).collect();
    for p in paths {
        let change = match (a.inputs.get(p), b.inputs.get(p)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) if x.rsplit(':').next() == y.rsplit(':').next() => {
                "executable bit changed"
            }
            (Some(_), Some(_)) => "content changed",
            (Some(_), None) => "only in the first",
            (None, Some(_)) => "only in the second",
            (None, None) => continue,
        };
        out.push(json!({ "kind": "input", "what": p, "change": change }));
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON serializes")
    );
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `bottle run`, `ps`, `exec` and `down`: the glue to [`crate::run`].
async fn run_commands(cli: &Cli, store: &Store) -> Result<Outcome> {
    use crate::run::{self, ops};
    let g = &cli.global;
    match &cli.command {
        Command::Run {
            target,
            subnet_pool,
            command,
        } => {
            let path = Path::new(target);
            let hash = if target.ends_with(".toml") || path.is_file() {
                let progress = Progress::new(g.quiet > 0 || g.json, g.no_progress);
                let (planned, key) = keyed(path, false, g)?;
                let built = tokio::select! {
                    r = build::build(store, &planned, &key, &progress) => r?,
                    _ = interrupted() => bail!("interrupted; nothing was added to the store"),
                };
                built.hash
            } else {
                store.resolve(target)?
            };
            let report = run::run(
                store,
                &hash,
                run::RunOptions {
                    subnet_pool: subnet_pool.clone(),
                    command: command.clone(),
                    quiet: g.quiet > 0 || g.json,
                },
            )
            .await?;
            if g.json {
                print_json(&serde_json::to_value(&report)?);
            }
            Ok(Outcome::Exit(report.exit_code.clamp(0, 255) as u8))
        }
        Command::Ps => {
            let rows = ops::ps(store)?;
            if g.json {
                print_json(&serde_json::to_value(&rows)?);
            } else if rows.is_empty() {
                if g.quiet == 0 {
                    eprintln!("no runs in {}", store.root().display());
                }
            } else {
                println!(
                    "{:<10}  {:<12}  {:<12}  {:<7}  {:>7}  {:<5}  BUNDLE",
                    "RUN", "NAME", "HASH", "GUEST", "PID", "STATE"
                );
                for r in rows {
                    println!(
                        "{:<10}  {:<12}  {:<12}  {:<7}  {:>7}  {:<5}  {}",
                        r.run_id,
                        r.name,
                        &r.hash[..r.hash.len().min(12)],
                        format!("{:?}", r.backend).to_lowercase(),
                        r.pid,
                        if r.live { "live" } else { "dead" },
                        r.bundle_ip.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(Outcome::Success)
        }
        Command::Exec { run, command } => {
            let code = ops::exec(store, run, command).await?;
            Ok(Outcome::Exit((code & 0xff) as u8))
        }
        Command::Down { run, all } => {
            let rows = ops::down(store, run.as_deref(), *all).await?;
            let failed = rows.iter().any(|r| r.error.is_some());
            if g.json {
                print_json(&serde_json::to_value(&rows)?);
            } else {
                for r in &rows {
                    match &r.error {
                        Some(e) => println!("{}  incomplete: {e}", r.run_id),
                        None if r.torn_down_by_run => {
                            println!("{}  stopped (the run tore itself down)", r.run_id)
                        }
                        None if r.orphan => println!("{}  removed (no record)", r.run_id),
                        None => println!("{}  removed", r.run_id),
                    }
                }
                if rows.is_empty() && g.quiet == 0 {
                    eprintln!("nothing to remove");
                }
            }
            if failed {
                bail!("some runs could not be removed entirely; see above");
            }
            Ok(Outcome::Success)
        }
        _ => unreachable!("run_commands handles run, ps, exec and down"),
    }
}
