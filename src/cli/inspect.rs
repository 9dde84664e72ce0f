//! `bottle ls`, `bottle show` and `bottle diff`: reading the store.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Global, Outcome, human_bytes, out, print_json};
use crate::diff::{self, Change};
use crate::store::{Component, Entry, Store};

pub fn ls(g: &Global, store: &Store) -> Result<Outcome> {
    let mut rows = Vec::new();
    for h in store.hashes()? {
        match store.load(&h) {
            Ok(e) => rows.push(json!({
                "hash": h,
                "name": e.manifest.name,
                "backend": e.guest_key().backend,
                "size": e.size(),
                "components": {
                    "guest": e.guest.id.hash,
                    "bundle": e.bundle.id.hash,
                    "config": e.config.id.hash,
                },
            })),
            Err(e) => rows.push(json!({ "hash": h, "error": format!("{e:#}") })),
        }
    }
    if g.json {
        return print_json(&Value::Array(rows)).map(|()| Outcome::Success);
    }
    for r in rows {
        let h = r["hash"].as_str().unwrap_or_default();
        let line = match r.get("error") {
            Some(e) => format!("{h}  damaged: {}", e.as_str().unwrap_or_default()),
            None => {
                let c = &r["components"];
                let short = |k: &str| c[k].as_str().unwrap_or_default()[..12].to_string();
                format!(
                    "{h}  {:<16} {:<7} {:>10}  guest {} bundle {} config {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["backend"].as_str().unwrap_or_default(),
                    human_bytes(r["size"].as_u64().unwrap_or(0)),
                    short("guest"),
                    short("bundle"),
                    short("config"),
                )
            }
        };
        out(line)?;
    }
    Ok(Outcome::Success)
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

pub fn show(g: &Global, store: &Store, hash: &str) -> Result<Outcome> {
    let h = store.resolve(hash)?;
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

pub fn diff(g: &Global, store: &Store, a: &str, b: &str) -> Result<Outcome> {
    let (ha, hb) = (store.resolve(a)?, store.resolve(b)?);
    let (ea, eb) = (store.load(&ha)?, store.load(&hb)?);
    let d = diff::diff(&ea, &eb);
    if g.json {
        print_json(&json!({ "a": ha, "b": hb, "name": d.name, "components": d.components }))?;
        return Ok(Outcome::Success);
    }
    if d.is_empty() {
        out("no differences: the same name and components")?;
        return Ok(Outcome::Success);
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
    Ok(Outcome::Success)
}
