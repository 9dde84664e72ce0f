//! Diff: what differs between two entries, component by component ("why did CI rebuild?").
//!
//! Each component's key is compared: fields of the key by their dotted path
//! (`pipelock.allow`, `guest.env.EDITOR`), and inputs by what happened to them (a context
//! file's content or executable bit, the Dockerfile, the prompt, a skills file).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::config::flatten;
use crate::digest::InputDigest;
use crate::hash::{ComponentHash, ComponentKey, ComponentKind, GuestSource};
use crate::store::Entry;

/// One difference inside a component's key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// A field of the key: its dotted path and both values.
    Field { what: String, a: Value, b: Value },
    /// An input file: its name and what happened to it.
    Input { what: String, change: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentDiff {
    pub name: ComponentKind,
    pub a: ComponentHash,
    pub b: ComponentHash,
    pub changed: bool,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryDiff {
    /// Both names, when they differ.
    pub name: Option<(String, String)>,
    pub components: Vec<ComponentDiff>,
}

impl EntryDiff {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.components.iter().all(|c| !c.changed)
    }
}

pub fn diff(a: &Entry, b: &Entry) -> EntryDiff {
    let name = (a.manifest.name != b.manifest.name)
        .then(|| (a.manifest.name.clone(), b.manifest.name.clone()));
    let components = a
        .components()
        .iter()
        .zip(b.components())
        .map(|(ca, cb)| ComponentDiff {
            name: ca.id.kind,
            a: ca.id.hash,
            b: cb.id.hash,
            changed: ca.id.hash != cb.id.hash,
            changes: key_changes(&ca.record.key, &cb.record.key),
        })
        .collect();
    EntryDiff { name, components }
}

/// The differences between two keys of one kind.
pub fn key_changes(a: &ComponentKey, b: &ComponentKey) -> Vec<Change> {
    let mut va = serde_json::to_value(a).expect("keys serialize");
    let mut vb = serde_json::to_value(b).expect("keys serialize");
    let mut changes = Vec::new();
    match (a, b) {
        (ComponentKey::Guest(ka), ComponentKey::Guest(kb)) => match (&ka.source, &kb.source) {
            (
                GuestSource::Dockerfile {
                    dockerfile: da,
                    context: xa,
                },
                GuestSource::Dockerfile {
                    dockerfile: db,
                    context: xb,
                },
            ) => {
                if da != db {
                    changes.push(input("Dockerfile", "content changed"));
                }
                changes.extend(tree_changes("context/", xa, xb));
                for v in [&mut va, &mut vb] {
                    drop_field(v, &["source", "dockerfile"]);
                    drop_field(v, &["source", "context"]);
                }
            }
            (GuestSource::Archive { archive: da }, GuestSource::Archive { archive: db }) => {
                if da != db {
                    changes.push(input("archive", "content changed"));
                }
                for v in [&mut va, &mut vb] {
                    drop_field(v, &["source", "archive"]);
                }
            }
            _ => {}
        },
        (ComponentKey::Config(ka), ComponentKey::Config(kb)) => {
            let (pa, pb) = (&ka.provision, &kb.provision);
            match (pa.prompt, pb.prompt) {
                (Some(x), Some(y)) if x != y => {
                    changes.push(input("provision.prompt", "content changed"))
                }
                (Some(_), None) => changes.push(input("provision.prompt", "only in the first")),
                (None, Some(_)) => changes.push(input("provision.prompt", "only in the second")),
                _ => {}
            }
            let empty = BTreeMap::new();
            changes.extend(tree_changes(
                "provision.skills/",
                pa.skills.as_ref().unwrap_or(&empty),
                pb.skills.as_ref().unwrap_or(&empty),
            ));
            for v in [&mut va, &mut vb] {
                drop_field(v, &["provision", "prompt"]);
                drop_field(v, &["provision", "skills"]);
            }
        }
        _ => {}
    }
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &va, &mut fa);
    flatten("", &vb, &mut fb);
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut fields: Vec<Change> = keys
        .into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| Change::Field {
            what: k.clone(),
            a: fa.get(k).cloned().unwrap_or(Value::Null),
            b: fb.get(k).cloned().unwrap_or(Value::Null),
        })
        .collect();
    fields.append(&mut changes);
    fields
}

fn input(what: &str, change: &str) -> Change {
    Change::Input {
        what: what.to_string(),
        change: change.to_string(),
    }
}

fn drop_field(v: &mut Value, path: &[&str]) {
    let mut cur = v;
    for (i, p) in path.iter().enumerate() {
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == path.len() {
            obj.remove(*p);
            return;
        }
        let Some(next) = obj.get_mut(*p) else {
            return;
        };
        cur = next;
    }
}

fn tree_changes(
    prefix: &str,
    a: &BTreeMap<String, InputDigest>,
    b: &BTreeMap<String, InputDigest>,
) -> Vec<Change> {
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for p in paths {
        let change = match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) if x == y => continue,
            (
                Some(InputDigest::File { digest: x, .. }),
                Some(InputDigest::File { digest: y, .. }),
            ) if x == y => "executable bit changed",
            (Some(_), Some(_)) => "content changed",
            (Some(_), None) => "only in the first",
            (None, Some(_)) => "only in the second",
            (None, None) => continue,
        };
        out.push(input(&format!("{prefix}{p}"), change));
    }
    out
}
