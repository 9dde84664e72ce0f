//! `bottle run`, `bottle ps`, `bottle exec` and `bottle down`: the glue to [`crate::run`].
//! A run is preceded by the preflight checks (`super::doctor::checked`).

use anyhow::{Result, bail};

use super::build::build_interruptible;
use super::target::{self, Target};
use super::{Global, Outcome, keyed, out, out_json, print_json};
use crate::hash::BuildHash;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::run::{self, audit, down, ops};
use crate::store::{Store, StoreError};

pub async fn run(
    g: &Global,
    store: &Store,
    target: &str,
    subnet_pool: &str,
    command: &[String],
) -> Result<Outcome> {
    let (hash, build_guard) = match resolve_or_substitute(g, store, target).await? {
        Target::Recipe(path) => {
            let progress = Progress::new(g.quiet > 0 || g.json, g.no_progress);
            let (planned, keys) = keyed(&path, false, g)?;
            let hash = Manifest::of(&keys).hash();
            // Checked before anything is built, pulled or created.
            let entry = store.load(&hash).ok();
            let needs = crate::preflight::Needs::of_plan(&planned, &path, entry.as_ref());
            super::doctor::checked(store, &needs).await?;
            super::share::substitute(g, store, &hash).await?;
            let built = build_interruptible(g, store, &planned, &keys, &progress).await?;
            let Some(built) = built else {
                return Ok(Outcome::Interrupted);
            };
            (built.hash, built.guard)
        }
        Target::Entry(hash) => {
            // Checked before anything is created; an entry that cannot be read is refused by
            // the run itself, with its own message.
            if let Ok(entry) = store.load(&hash) {
                super::doctor::checked(store, &crate::preflight::Needs::of_entry(&entry)).await?;
            }
            (hash, None)
        }
    };
    let report = run::run(
        store,
        &hash,
        run::RunOptions {
            subnet_pool: subnet_pool.to_string(),
            command: command.to_vec(),
            quiet: g.quiet > 0 || g.json,
            no_progress: g.no_progress,
            build_guard,
        },
    )
    .await?;
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    }
    Ok(Outcome::Exit(run::exit_code(report.exit_code as i64)))
}

/// What `target` names (`cli::target`); a full hash the store lacks is pulled from the
/// substituters first.
async fn resolve_or_substitute(g: &Global, store: &Store, input: &str) -> Result<Target> {
    match target::resolve(store, input) {
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::Unknown { .. })) => {
            if let Some(hash) = BuildHash::parse(input.trim())
                && super::share::substitute(g, store, &hash).await?
            {
                return Ok(Target::Entry(hash));
            }
            Err(e)
        }
        other => other,
    }
}

pub fn ps(g: &Global, store: &Store) -> Result<Outcome> {
    let rows = ops::ps(store)?;
    if g.json {
        print_json(&serde_json::to_value(&rows)?)?;
    } else if rows.is_empty() {
        if g.quiet == 0 {
            eprintln!("no runs in {}", store.root().display());
        }
    } else {
        out(format!(
            "{:<10}  {:<12}  {:<12}  {:<7}  {:>7}  {:<5}  {:>7}  BUNDLE",
            "RUN", "NAME", "HASH", "GUEST", "PID", "STATE", "PENDING"
        ))?;
        for r in rows {
            out(format!(
                "{:<10}  {:<12}  {:<12}  {:<7}  {:>7}  {:<5}  {:>7}  {}",
                r.run_id,
                r.name,
                r.hash.map(|h| h.short()).unwrap_or_else(|| "-".into()),
                format!("{:?}", r.backend).to_lowercase(),
                r.pid,
                match (r.live, r.ready) {
                    (true, true) => "up",
                    (true, false) => "start",
                    (false, _) => "dead",
                },
                r.pending_requests
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.bundle_ip.as_deref().unwrap_or("-")
            ))?;
        }
    }
    Ok(Outcome::Success)
}

pub async fn exec(store: &Store, run: &str, command: &[String]) -> Result<Outcome> {
    let code = ops::exec(store, run, command).await?;
    Ok(Outcome::Exit(run::exit_code(code)))
}

pub async fn down(g: &Global, store: &Store, run: Option<&str>, all: bool) -> Result<Outcome> {
    let rows = down::down(store, run, all).await?;
    let failed = rows.iter().any(|r| r.error.is_some());
    if g.json {
        print_json(&serde_json::to_value(&rows)?)?;
    } else {
        for r in &rows {
            match &r.error {
                Some(e) => out(format!("{}  incomplete: {e}", r.run_id))?,
                None if r.torn_down_by_run => {
                    out(format!("{}  stopped (the run tore itself down)", r.run_id))?
                }
                None if r.orphan => out(format!("{}  removed (no record)", r.run_id))?,
                None => out(format!("{}  removed", r.run_id))?,
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

pub async fn logs(g: &Global, store: &Store, run: &str, follow: bool) -> Result<Outcome> {
    let mut log = audit::AuditReader::open(store, run)?;
    loop {
        for event in log.read_new()? {
            if g.json {
                out_json(&serde_json::to_string(&event)?)?;
            } else {
                out(audit::audit_line(&event))?;
            }
        }
        if !follow || log.ended() {
            // One last read: lines written between the read and the end.
            if follow {
                for event in log.read_new()? {
                    if g.json {
                        out_json(&serde_json::to_string(&event)?)?;
                    } else {
                        out(audit::audit_line(&event))?;
                    }
                }
            }
            return Ok(Outcome::Success);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
