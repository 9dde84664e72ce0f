//! Component records: `Record::parse` against each kind's own name only, on arbitrary bytes
//! and strings, mutated bytes and JSON values, generated file paths and sizes; what it accepts
//! is sound (paths inside the component, the key hashing to the name) and round-trips.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};

use bottle::digest::{Digest, InputDigest};
use bottle::hash::{
    ComponentId, ComponentKey, ComponentKind, GUEST_FORMAT, GuestKey, GuestSource, Keys,
};
use bottle::manifest::{Artifact, ImageRef, RECORD_FILE, RECORD_FORMAT, Record, is_entry_path};
use bottle::plan::{self, GuestBackend, GuestStart};
use bottle::recipe::Recipe;

use super::{
    CASES, VALID_RECIPE, apply, apply_json, check, digest, edits, json_edit, pathish, recipe_dir,
};

/// The real keys of the fuzz recipe (an archive guest, every section of the config).
fn fuzz_keys() -> Keys {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    let recipe = Recipe::parse(&path, VALID_RECIPE.to_string()).unwrap();
    let planned = plan::plan(&recipe).unwrap();
    bottle::hash::keys(&planned, None).unwrap().0
}

/// A guest key of the other shape: a Dockerfile and its context, started from a pack.
fn packed_guest_key() -> GuestKey {
    GuestKey {
        format: GUEST_FORMAT,
        backend: GuestBackend::Smolvm,
        start: GuestStart::Pack,
        source: GuestSource::Dockerfile {
            dockerfile: digest('d'),
            context: BTreeMap::from([
                (
                    "busybox".to_string(),
                    InputDigest::File {
                        digest: digest('b'),
                        executable: true,
                    },
                ),
                ("etc".to_string(), InputDigest::Dir),
                (
                    "etc/passwd".to_string(),
                    InputDigest::File {
                        digest: digest('c'),
                        executable: false,
                    },
                ),
                (
                    "sh".to_string(),
                    InputDigest::Symlink {
                        target: "busybox".into(),
                    },
                ),
            ]),
        },
        smolvm: Some("smolvm 1.32.2".into()),
    }
}

fn artifact(path: &str, size: u64, mode: u32, c: char) -> Artifact {
    Artifact {
        path: path.into(),
        blake3: digest(c),
        size,
        mode,
    }
}

fn image(pack: Option<&str>) -> ImageRef {
    ImageRef {
        archive: "image.tar".into(),
        id: format!("sha256:{}", "a".repeat(64)),
        pack: pack.map(str::to_string),
    }
}

/// A valid record of each kind, as the build writes them, with the component id it names.
fn valid_records() -> Vec<(Record, ComponentId)> {
    let keys = fuzz_keys();
    let guest = Record {
        format: RECORD_FORMAT,
        key: ComponentKey::Guest(packed_guest_key()),
        image: Some(image(Some("guest.smolmachine"))),
        files: vec![
            artifact("guest.smolmachine", 1 << 29, 0o644, '9'),
            artifact("image.tar", 1 << 30, 0o644, '8'),
        ],
    };
    let archive_guest = Record {
        format: RECORD_FORMAT,
        key: keys.component(ComponentKind::Guest),
        image: Some(image(None)),
        files: vec![artifact("image.tar", 1 << 20, 0o644, '7')],
    };
    let bundle = Record {
        format: RECORD_FORMAT,
        key: keys.component(ComponentKind::Bundle),
        image: Some(image(None)),
        files: vec![artifact("image.tar", 1 << 24, 0o644, '0')],
    };
    // The config: every file its key renders, and the provisioning copies.
    let key = keys.component(ComponentKind::Config);
    let ComponentKey::Config(config_key) = &key else {
        unreachable!()
    };
    let mut files: Vec<Artifact> = bottle::config::render(config_key)
        .files
        .iter()
        .map(|f| Artifact {
            path: f.path.clone(),
            blake3: Digest::of(&f.bytes),
            size: f.bytes.len() as u64,
            mode: f.mode,
        })
        .chain(
            bottle::config::copied_files(config_key)
                .into_iter()
                .map(|(path, blake3)| Artifact {
                    path,
                    blake3,
                    size: 6,
                    mode: 0o644,
                }),
        )
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let config = Record {
        format: RECORD_FORMAT,
        key,
        image: None,
        files,
    };
    [guest, archive_guest, bundle, config]
        .into_iter()
        .map(|r| {
            let id = r.key.id();
            (r, id)
        })
        .collect()
}

/// What every record `Record::parse` accepts against `expected` must satisfy: its key is of
/// the expected kind and hashes to the expected name; every file path stays inside the
/// component (relative, no `.`/`..`/empty parts, not the record itself), listed once, in
/// order, with a possible mode; the image (guest and bundle only) names listed files and a
/// `sha256:` id; totals never overflow; it writes back to JSON that parses to the same record.
fn assert_accepted_record_sound(r: &Record, expected: &ComponentId) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.key.kind(), expected.kind);
    prop_assert_eq!(
        r.key.hash(),
        expected.hash,
        "the key does not hash to the name"
    );
    let root = Path::new("/store/components/x/0123");
    for a in &r.files {
        prop_assert!(
            is_entry_path(&a.path) && a.path != RECORD_FILE,
            "accepted file path {:?}",
            a.path
        );
        let joined = root.join(&a.path);
        prop_assert!(
            joined.starts_with(root)
                && joined
                    .components()
                    .skip(root.components().count())
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "file path {:?} leaves the component",
            a.path
        );
        prop_assert!(a.mode <= 0o7777, "mode {:o}", a.mode);
    }
    for w in r.files.windows(2) {
        prop_assert!(
            w[0].path < w[1].path,
            "{:?} before {:?}",
            w[0].path,
            w[1].path
        );
    }
    let listed = |p: &str| r.files.iter().any(|a| a.path == p);
    match (&r.image, expected.kind) {
        (None, ComponentKind::Config) => {}
        (Some(img), ComponentKind::Guest | ComponentKind::Bundle) => {
            prop_assert!(
                listed(&img.archive),
                "image archive {:?} not listed",
                img.archive
            );
            if let Some(p) = &img.pack {
                prop_assert!(listed(p), "pack {:?} not listed", p);
                prop_assert_eq!(expected.kind, ComponentKind::Guest);
            }
            let hex = img.id.strip_prefix("sha256:").unwrap_or_default();
            prop_assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "image id {:?}",
                img.id
            );
        }
        (image, kind) => {
            return Err(TestCaseError::fail(format!(
                "a {kind} record accepted with image {image:?}"
            )));
        }
    }
    // Sizes come from the file: a sum of them must not panic (ls, show, gc add them up).
    let _ = r.total_size();
    let again = Record::parse(&r.to_json(), "rewritten", expected).map_err(|e| {
        TestCaseError::fail(format!("an accepted record does not parse again: {e}"))
    })?;
    prop_assert_eq!(&again, r);
    Ok(())
}

fn parse_record_checked(bytes: &[u8], expected: &ComponentId) -> Result<(), TestCaseError> {
    if let Ok(r) = Record::parse(bytes, "fuzz/record.json", expected) {
        assert_accepted_record_sound(&r, expected)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Record properties

#[test]
fn valid_fuzz_records_parse_against_their_own_name_only() {
    let all = valid_records();
    for (r, id) in &all {
        let parsed = Record::parse(&r.to_json(), "base", id).expect("a base record parses");
        assert_eq!(&parsed, r);
        TestRunner::default()
            .run(&Just(()), |()| assert_accepted_record_sound(&parsed, id))
            .unwrap();
        // Against any other component's name, it is refused.
        for (_, other) in &all {
            if other != id {
                assert!(
                    Record::parse(&r.to_json(), "base", other).is_err(),
                    "{id} parsed as {other}"
                );
            }
        }
    }
}

#[test]
fn record_parse_never_panics_on_arbitrary_bytes() {
    let ids: Vec<ComponentId> = valid_records().into_iter().map(|(_, id)| id).collect();
    let strategy = (select(ids), prop::collection::vec(any::<u8>(), 0..512));
    check(CASES, strategy, |(id, b)| parse_record_checked(&b, &id));
}

#[test]
fn record_parse_never_panics_on_arbitrary_strings() {
    let ids: Vec<ComponentId> = valid_records().into_iter().map(|(_, id)| id).collect();
    check(CASES, (select(ids), any::<String>()), |(id, s)| {
        parse_record_checked(s.as_bytes(), &id)
    });
}

const RECORD_LINES: &[&str] = &[
    r#""path": "../escape","#,
    r#""path": "/etc/passwd","#,
    r#""path": "a//b","#,
    r#""path": "record.json","#,
    r#""path": "guest\\image.tar","#,
    r#""path": "a\u0000b","#,
    r#""archive": "../image.tar","#,
    r#""pack": "image.tar","#,
    r#""id": "sha256:xyz","#,
    r#""mode": 4095,"#,
    r#""mode": 4096,"#,
    r#""size": 18446744073709551615,"#,
    r#""format": 2,"#,
    r#""kind": "bundle","#,
    r#""kind": "config","#,
    r#""builder": "another-builder","#,
    r#""image": null,"#,
    r#""extra": 1,"#,
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "",
];

#[test]
fn mutated_record_bytes_never_panic_and_accepted_ones_are_sound() {
    let records = valid_records();
    let strategy = (0..records.len(), edits(RECORD_LINES));
    check(CASES, strategy, |(i, edits)| {
        let (r, id) = &records[i];
        parse_record_checked(&apply(&r.to_json(), &edits), id)
    });
}

#[test]
fn mutated_record_values_never_panic_and_an_edited_key_is_always_refused() {
    let records = valid_records();
    let strategy = (
        0..records.len(),
        prop::collection::vec(json_edit(), 1..5),
        any::<bool>(),
    );
    check(CASES, strategy, |(i, edits, pretty)| {
        let (r, id) = &records[i];
        let v = apply_json(&serde_json::to_value(r).unwrap(), &edits);
        let bytes = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        let accepted = Record::parse(&bytes, "fuzz/record.json", id);
        // A key edited into another key never passes for the component it was.
        let key: Option<ComponentKey> = serde_json::from_value(v["key"].clone()).ok();
        if key.as_ref().is_some_and(|k| *k != r.key) {
            prop_assert!(accepted.is_err(), "an edited key passed: {:?}", key);
        }
        if let Ok(r) = accepted {
            assert_accepted_record_sound(&r, id)?;
        }
        Ok(())
    });
}

#[test]
fn records_with_generated_file_paths_accept_only_paths_inside_the_component() {
    let records = valid_records();
    let strategy = (0..records.len(), prop::collection::vec(pathish(), 1..6));
    check(CASES, strategy, |(i, paths)| {
        let (base, id) = &records[i];
        let mut r = base.clone();
        let mut unique: Vec<String> = paths.clone();
        unique.sort();
        unique.dedup();
        r.files = unique.iter().map(|p| artifact(p, 1, 0o644, 'e')).collect();
        if let Some(img) = &mut r.image {
            img.archive = paths[0].clone();
            img.pack =
                (id.kind == ComponentKind::Guest && paths.len() > 1).then(|| paths[1].clone());
        }
        let accepted = Record::parse(&r.to_json(), "fuzz/generated.json", id);
        if let Ok(r) = &accepted {
            assert_accepted_record_sound(r, id)?;
        }
        // The converse: when every path is one inside the component, nothing else stops it.
        if unique.iter().all(|p| is_entry_path(p) && p != RECORD_FILE) {
            prop_assert!(
                accepted.is_ok(),
                "{:?}",
                accepted.err().map(|e| e.to_string())
            );
        }
        Ok(())
    });
}

#[test]
fn records_with_any_file_sizes_are_sound() {
    // Sizes are what the record says, up to u64::MAX: whatever `Record::parse` accepts, the
    // listing commands add up.
    let records = valid_records();
    let size = prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just(0u64),
    ];
    let strategy = (0..records.len(), prop::collection::vec(size, 1..4));
    check(CASES, strategy, |(i, sizes)| {
        let (base, id) = &records[i];
        let mut r = base.clone();
        for (a, s) in r.files.iter_mut().zip(sizes.iter().cycle()) {
            a.size = *s;
        }
        parse_record_checked(&r.to_json(), id)
    });
}
