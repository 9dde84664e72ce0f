//! `bottle verify` and `bottle gc`: keeping the store sound and small.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Global, Outcome, human_bytes, out, print_json};
use crate::store::Store;

pub fn verify(g: &Global, store: &Store, hash: Option<&str>) -> Result<Outcome> {
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
                out(format!("ok       {h}"))?;
            }
            for d in &damage {
                out(format!("damaged  {h}  {}: {}", d.path, d.problem))?;
            }
        }
        report.push(json!({ "hash": h, "ok": damage.is_empty(), "damage": damage }));
    }
    if g.json {
        print_json(&Value::Array(report))?;
    }
    if any {
        if !g.json {
            eprintln!(
                "error: damaged entries found; remove them with `bottle gc` and build them again"
            );
        }
        return Ok(Outcome::Damaged);
    }
    Ok(Outcome::Success)
}

pub fn gc(g: &Global, store: &Store, keep: &[String], dry_run: bool) -> Result<Outcome> {
    let keep = keep
        .iter()
        .map(|k| store.resolve(k))
        .collect::<Result<Vec<_>, _>>()?;
    let r = store.gc(&keep, dry_run)?;
    if g.json {
        print_json(&serde_json::to_value(&r)?)?;
        return Ok(Outcome::Success);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for h in &r.removed_entries {
        out(format!("{verb} entry {h}"))?;
    }
    for c in &r.removed_components {
        out(format!("{verb} component {c}"))?;
    }
    for t in &r.removed_temporary {
        out(format!("{verb} temporary {t}"))?;
    }
    for l in &r.removed_layouts {
        out(format!("{verb} layout {l}"))?;
    }
    for run in &r.removed_runs {
        out(format!("{verb} ended run {run} (its audit log)"))?;
    }
    out(format!(
        "{verb} {} entries, {} components, {} temporary folders, {} old layouts; {} freed; {} entries kept",
        r.removed_entries.len(),
        r.removed_components.len(),
        r.removed_temporary.len(),
        r.removed_layouts.len(),
        human_bytes(r.freed_bytes),
        r.kept.len()
    ))?;
    Ok(Outcome::Success)
}
