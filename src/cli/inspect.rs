//! `bottle ls`, `bottle show` and `bottle diff`: reading the store.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{Value, json};

use super::{Global, Outcome, human_bytes, out, print_json, target};
use crate::diff::{self, Change};
use crate::hash::BuildHash;
use crate::store::{Component, Entry, Store};

pub fn ls(g: &Global, store: &Store) -> Result<Outcome> {
    let keepers = keepers(store)?;
    let now = SystemTime::now();
    let mut rows = Vec::new();
    for h in store.hashes()? {
        let created = store
            .entry_time(&h)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let age = store
            .entry_time(&h)
            .map(|t| now.duration_since(t).unwrap_or_default().as_secs());
        let keep = keepers.get(&h).cloned().unwrap_or_default();
        match store.load(&h) {
            Ok(e) => rows.push(json!({
                "hash": h,
                "name": e.manifest.name,
                "backend": e.guest_key().backend,
                "created": created,
                "age_seconds": age,
                "size": e.size(),
                "roots": keep.roots,
                "pins": keep.pins,
                "components": {
                    "guest": e.guest.id.hash,
                    "bundle": e.bundle.id.hash,
                    "config": e.config.id.hash,
                },
            })),
            Err(e) => rows.push(json!({
                "hash": h,
                "created": created,
                "age_seconds": age,
                "roots": keep.roots,
                "pins": keep.pins,
                "error": format!("{e:#}"),
            })),
        }
    }
    if g.json {
        return print_json(&Value::Array(rows)).map(|()| Outcome::Success);
    }
    if rows.is_empty() {
        if g.quiet == 0 {
            eprintln!(
                "no entries in {}; `bottle build RECIPE` makes one",
                store.root().display()
            );
        }
        return Ok(Outcome::Success);
    }
    out(format!(
        "{:<12}  {:<20}  {:>5}  {:>10}  ROOTED",
        "HASH", "NAME", "AGE", "SIZE"
    ))?;
    for r in rows {
        let h = r["hash"].as_str().unwrap_or_default();
        let age = r["age_seconds"]
            .as_u64()
            .map(human_age)
            .unwrap_or_else(|| "-".into());
        let rooted = rooted_column(&r);
        let line = match r.get("error") {
            Some(e) => format!(
                "{:<12}  {:<20}  {age:>5}  {:>10}  {rooted}  damaged: {}",
                &h[..12],
                "?",
                "-",
                e.as_str().unwrap_or_default()
            ),
            None => format!(
                "{:<12}  {:<20}  {age:>5}  {:>10}  {rooted}",
                &h[..12],
                r["name"].as_str().unwrap_or_default(),
                human_bytes(r["size"].as_u64().unwrap_or(0)),
            ),
        };
        out(line)?;
    }
    Ok(Outcome::Success)
}

/// What keeps an entry from `bottle gc`.
#[derive(Debug, Default, Clone)]
struct Keepers {
    /// `latest` and `root:NAME`.
    roots: Vec<String>,
    /// Run ids.
    pins: Vec<String>,
}

fn keepers(store: &Store) -> Result<HashMap<BuildHash, Keepers>> {
    let mut map: HashMap<BuildHash, Keepers> = HashMap::new();
    for (_, h) in store.latest_list()? {
        let k = map.entry(h).or_default();
        if !k.roots.iter().any(|r| r == "latest") {
            k.roots.push("latest".to_string());
        }
    }
    for (name, h) in store.roots_list()? {
        map.entry(h).or_default().roots.push(format!("root:{name}"));
    }
    for (run, h) in store.pins_list()? {
        map.entry(h).or_default().pins.push(run);
    }
    Ok(map)
}

fn rooted_column(row: &Value) -> String {
    let strings = |k: &str| -> Vec<String> {
        row[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut all = strings("roots");
    all.extend(strings("pins").into_iter().map(|r| format!("run:{r}")));
    if all.is_empty() {
        "-".to_string()
    } else {
        all.join(",")
    }
}

/// An age as its largest whole unit: `42s`, `5m`, `3h`, `2d`, `6w`.
fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s if s < 14 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}w", s / (7 * 86_400)),
    }
}

fn component_json(c: &Component) -> Value {
    json!({
        "name": c.id.kind,
        "hash": c.id.hash,
        "path": c.dir,
        "size": c.record.total_size(),
        "image": c.record.image,
        "files": c.record.files,
    })
}

pub fn show(g: &Global, store: &Store, input: &str) -> Result<Outcome> {
    let h = target::entry(g, store, input)?;
    let e = store.load(&h)?;
    if g.json {
        print_json(&show_json(store, &e))?;
        return Ok(Outcome::Success);
    }
    let key = e.guest_key();
    let spec = e.guest_spec();
    let bundle = e.bundle_spec();
    let mut lines = vec![
        format!("hash      {}", e.hash),
        format!("name      {}", e.manifest.name),
        format!("path      {}", store.entry_file(&h).display()),
        format!(
            "guest     {:?} ({:?}), user {} home {}",
            key.backend, key.start, spec.user, spec.home
        ),
        format!("command   {}", spec.command.join(" ")),
        format!(
            "daemons   {}",
            bundle
                .daemons
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    if !bundle.secrets.is_empty() {
        lines.push(format!(
            "tokens    {} (names; values are read by `bottle run`)",
            bundle.secrets.join(", ")
        ));
    }
    lines.push("components".to_string());
    for c in e.components() {
        let image = c
            .record
            .image
            .as_ref()
            .map(|i| format!("  image {}", i.id))
            .unwrap_or_default();
        lines.push(format!(
            "  {:<7} {}  {:>10}{image}",
            c.id.kind.name(),
            c.id.hash,
            human_bytes(c.record.total_size())
        ));
        for a in &c.record.files {
            lines.push(format!(
                "    {:o} {:>10}  {}  {}",
                a.mode,
                human_bytes(a.size),
                &a.blake3.hex()[..16],
                a.path
            ));
        }
    }
    lines.push("guest env".to_string());
    for (k, v) in &spec.env {
        lines.push(format!("  {k}={v}"));
    }
    for l in lines {
        out(l)?;
    }
    Ok(Outcome::Success)
}

fn show_json(store: &Store, e: &Entry) -> Value {
    let key = e.guest_key();
    json!({
        "hash": e.hash,
        "name": e.manifest.name,
        "path": store.entry_file(&e.hash),
        "size": e.size(),
        "components": e.components().iter().map(|c| component_json(c)).collect::<Vec<_>>(),
        "guest": {
            "backend": key.backend,
            "start": key.start,
            "image_id": e.guest.image().id,
            "image_archive": e.guest.path(&e.guest.image().archive),
            "pack": e.guest.image().pack.as_ref().map(|p| e.guest.path(p)),
            "spec": e.guest_spec(),
        },
        "bundle": {
            "image_id": e.bundle.image().id,
            "image_archive": e.bundle.path(&e.bundle.image().archive),
            "spec": e.bundle_spec(),
        },
        "config": e.config.dir,
    })
}

/// Exits 0 when the entries are the same, 1 when they differ (errors exit 2, in `main`).
pub fn diff(g: &Global, store: &Store, a: &str, b: &str) -> Result<Outcome> {
    let (ha, hb) = (target::entry(g, store, a)?, target::entry(g, store, b)?);
    let (ea, eb) = (store.load(&ha)?, store.load(&hb)?);
    let d = diff::diff(&ea, &eb);
    let outcome = if d.is_empty() {
        Outcome::Success
    } else {
        Outcome::Exit(1)
    };
    if g.json {
        print_json(&json!({
            "a": ha,
            "b": hb,
            "same": d.is_empty(),
            "name": d.name,
            "components": d.components,
        }))?;
        return Ok(outcome);
    }
    if d.is_empty() {
        out("no differences: the same name and components")?;
        return Ok(outcome);
    }
    if let Some((na, nb)) = &d.name {
        out(format!("name    {na:?} → {nb:?}"))?;
    }
    for c in &d.components {
        if !c.changed {
            out(format!("{:<7} unchanged", c.name.name()))?;
            continue;
        }
        out(format!(
            "{:<7} changed ({} → {})",
            c.name.name(),
            c.a.short(),
            c.b.short()
        ))?;
        for ch in &c.changes {
            match ch {
                Change::Field { what, a, b } => out(format!("  field  {what}: {a} → {b}"))?,
                Change::Input { what, change } => out(format!("  input  {what}: {change}"))?,
            }
        }
    }
    Ok(outcome)
}
