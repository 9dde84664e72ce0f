//! `bottle doctor [TARGET]`, and the preflight `bottle run` makes: the glue to
//! [`crate::preflight`]. Parsing the target is kept apart ([`needs_of`]) from checking what
//! it needs ([`checked`]).

use std::path::Path;

use anyhow::Result;

use super::target::{self, Target};
use super::{Global, Outcome, out, print_json};
use crate::manifest::Manifest;
use crate::preflight::{self, Check, Needs};
use crate::runtime::smolvm::Smolvm;
use crate::store::Store;
use crate::{hash, plan, recipe};

pub async fn doctor(g: &Global, store: &Store, target: Option<&str>) -> Result<Outcome> {
    let needs = match target {
        Some(t) => Some(needs_of(store, t)?),
        None => None,
    };
    let checks = preflight::check(store, needs.as_ref()).await;
    if g.json {
        print_json(&serde_json::to_value(&checks)?)?;
    } else {
        out(preflight::human(&checks).trim_end())?;
        if g.quiet == 0 {
            let n = preflight::problems(&checks).len();
            match n {
                0 => eprintln!("all {} checks passed", checks.len()),
                n => eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" }),
            }
        }
    }
    Ok(if preflight::problems(&checks).is_empty() {
        Outcome::Success
    } else {
        Outcome::Exit(1)
    })
}

/// What `input` needs, read as every TARGET is ([`super::target`]): a recipe file through its
/// plan, else a store entry by recipe name or hash.
pub fn needs_of(store: &Store, input: &str) -> Result<Needs> {
    match target::resolve(store, input)? {
        Target::Recipe(path) => {
            let planned = plan::plan(&recipe::Recipe::load(&path)?)?;
            Ok(needs_of_plan(store, &planned, &path))
        }
        Target::Entry(hash) => Ok(Needs::of_entry(&store.load(&hash)?)),
    }
}

/// A recipe's needs; the image sizes of its entry when the store holds it.
pub fn needs_of_plan(store: &Store, planned: &plan::Planned, path: &Path) -> Needs {
    let entry = Smolvm::pack_version(planned.plan.guest.start)
        .ok()
        .and_then(|smolvm| hash::keys(planned, smolvm.as_deref()).ok())
        .and_then(|(keys, _)| store.load(&Manifest::of(&keys).hash()).ok());
    Needs::of_plan(planned, path, entry.as_ref())
}

/// The checks for `needs`, or `bottle run`'s refusal naming every problem.
pub async fn checked(store: &Store, needs: &Needs) -> Result<Vec<Check>> {
    let checks = preflight::check(store, Some(needs)).await;
    match preflight::refusal(&checks) {
        Some(e) => Err(e.context(format!("bottle run of {}", needs.name))),
        None => Ok(checks),
    }
}
