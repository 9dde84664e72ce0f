//! The command line: the process's entry ([`entry`]), clap definitions ([`args`]) and one
//! function per command over library calls ([`build`], [`console`], [`doctor`], [`inspect`],
//! [`maintain`], [`runs`], [`supervise`]); [`target`] reads the TARGET argument (recipe file,
//! recipe name or hash) of every command. Results go to stdout (text, or one JSON document
//! under `--json`); progress and messages to stderr. A closed stdout (`| head`) ends the
//! command quietly.

pub mod args;
mod build;
mod console;
mod doctor;
pub mod entry;
mod inspect;
mod maintain;
mod runs;
mod share;
mod supervise;
pub mod target;

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::Value;

pub use args::{Cli, Command, Global, KeyCommand};

use crate::hash::{self, Keys};
use crate::runtime::smolvm::Smolvm;
use crate::store::Store;
use crate::{plan, recipe};

/// What `main` should exit with.
pub enum Outcome {
    Success,
    Damaged,
    /// Interrupted by SIGINT or SIGTERM (exit 130).
    Interrupted,
    /// The exit code of a guest command (`bottle run`, `bottle exec`).
    Exit(u8),
}

/// The store `--store`/`BOTTLE_STORE` names, else the person's own ([`Store::default_root`]).
pub fn store_of(global: &Global) -> Result<Store> {
    match &global.store {
        Some(dir) => Ok(Store::new(dir.clone())),
        None => Ok(Store::new(Store::default_root()?)),
    }
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    let g = &cli.global;
    // Commands that need no store (the bundle's entry point runs inside it, perhaps with no HOME).
    match &cli.command {
        Command::Sidecar(args) => {
            crate::bundle::main(args.clone()).await?;
            return Ok(Outcome::Success);
        }
        Command::Hash { recipe, pure } => return build::hash(g, recipe, *pure),
        Command::Key {
            command: KeyCommand::Generate { name, out },
        } => return share::key_generate(g, name, out),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "bottle", &mut std::io::stdout());
            return Ok(Outcome::Success);
        }
        _ => {}
    }
    let store = store_of(g)?;
    match &cli.command {
        Command::Build {
            recipe,
            pure,
            root,
            push,
        } => build::build(g, &store, recipe, *pure, root.as_deref(), push.as_deref()).await,
        Command::Ls => inspect::ls(g, &store),
        Command::Show { target } => inspect::show(g, &store, target),
        Command::Rm { target } => maintain::rm(g, &store, target).await,
        Command::Diff { a, b } => inspect::diff(g, &store, a, b),
        Command::Verify { hash } => maintain::verify(g, &store, hash.as_deref()),
        Command::Gc {
            keep,
            dry_run,
            remote: Some(url),
        } => share::gc_remote(g, url, keep, *dry_run).await,
        Command::Gc {
            keep,
            dry_run,
            remote: None,
        } => maintain::gc(g, &store, keep, *dry_run).await,
        Command::Run {
            target,
            subnet_pool,
            command,
        } => runs::run(g, &store, target, subnet_pool, command).await,
        Command::Doctor { target } => doctor::doctor(g, &store, target.as_deref()).await,
        Command::Ps => runs::ps(g, &store),
        Command::Exec { run, command } => runs::exec(&store, run, command).await,
        Command::Down { run, all } => runs::down(g, &store, run.as_deref(), *all).await,
        Command::Logs { run, follow } => runs::logs(g, &store, run, *follow).await,
        Command::Supervise {
            run,
            approve,
            deny,
            reason,
            answer,
            show,
            all,
            watch,
        } => {
            if let Some(id) = show {
                return supervise::show(g, &store, run, id);
            }
            let act = supervise::act(approve, deny, reason, answer);
            supervise::supervise(g, &store, run, act, *all, *watch).await
        }
        Command::Console { listen, open } => console::console(g, &store, *listen, *open).await,
        Command::Push { hash, to, sign_key } => {
            share::push(g, &store, hash, to, sign_key.as_deref()).await
        }
        Command::Pull {
            hash,
            from,
            trust,
            no_check_sigs,
        } => share::pull(g, &store, hash, from, trust, *no_check_sigs).await,
        Command::Sidecar(_)
        | Command::Hash { .. }
        | Command::Key { .. }
        | Command::Completions { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Recipe → its prepare program → plan → keys, with impurities warned about (or refused under `--pure`).
fn keyed(recipe: &Path, pure: bool, g: &Global) -> Result<(plan::Planned, Keys)> {
    let recipe = recipe::Recipe::load(recipe)?;
    crate::prepare::run(&recipe, g.quiet > 0)?;
    let planned = plan::plan(&recipe)?;
    let smolvm = Smolvm::pack_version(planned.plan.guest.start)?;
    let (keys, impurities) = hash::keys(&planned, smolvm.as_deref())?;
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
    Ok((planned, keys))
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes a line of results to stdout. A closed stdout is an error whose cause is the
/// `BrokenPipe` I/O error, which `main` turns into a quiet success.
pub fn out(line: impl std::fmt::Display) -> Result<()> {
    let line = line.to_string();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", crate::text::escape(&line))?;
    stdout.flush()?;
    Ok(())
}

fn print_json(v: &Value) -> Result<()> {
    out_json(&serde_json::to_string_pretty(v).expect("JSON serializes"))
}

/// One JSON text on stdout, control and bidi characters in its strings as `\uXXXX`.
pub fn out_json(json: &str) -> Result<()> {
    out(crate::text::json_safe(json))
}

/// Whether an error comes from writing to a closed stdout.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
