//! Manifests: `Manifest::parse` on arbitrary bytes and strings, mutated bytes and JSON
//! values, and generated component hashes; what it accepts is sound and round-trips.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};

use bottle::hash::ComponentHash;
use bottle::manifest::{Components, MANIFEST_FORMAT, Manifest};
use bottle::plan;

use super::{CASES, apply, apply_json, check, digest, edits, json_edit, pathish};

/// A valid manifest: the recipe's name and its three components by hash.
fn valid_manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: "fuzz-demo".into(),
        components: Components {
            guest: ComponentHash(digest('1')),
            bundle: ComponentHash(digest('2')),
            config: ComponentHash(digest('3')),
        },
    }
}

/// What every accepted manifest must satisfy: the supported format, a recipe name, three
/// well-formed component hashes; hashing and naming it never panic; it writes back to JSON
/// that parses to the same manifest, with the same hash.
fn assert_accepted_manifest_sound(m: &Manifest) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.format, MANIFEST_FORMAT);
    prop_assert!(plan::is_slug(&m.name), "accepted name {:?}", m.name);
    for id in m.components.ids() {
        prop_assert!(ComponentHash::parse(&id.hash.hex()).is_some());
        prop_assert_eq!(id.hash.short().len(), 12);
        prop_assert_eq!(id, m.components.get(id.kind));
    }
    let hash = m.hash();
    prop_assert_eq!(hash.short().len(), 12);
    let again = Manifest::parse(&m.to_json(), "rewritten").map_err(|e| {
        TestCaseError::fail(format!("an accepted manifest does not parse again: {e}"))
    })?;
    prop_assert_eq!(&again, m);
    prop_assert_eq!(again.hash(), hash);
    // The hash is over the canonical form: how the JSON was laid out does not matter.
    let compact = serde_json::to_vec(m).unwrap();
    prop_assert_eq!(Manifest::parse(&compact, "compact").unwrap().hash(), hash);
    Ok(())
}

fn parse_manifest_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Manifest::parse(bytes, "fuzz/manifest.json") {
        assert_accepted_manifest_sound(&m)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Manifest properties

#[test]
fn valid_fuzz_manifest_round_trips() {
    let m = valid_manifest();
    let parsed = Manifest::parse(&m.to_json(), "base").expect("the base manifest parses");
    assert_eq!(parsed, m);
    TestRunner::default()
        .run(&Just(()), |()| assert_accepted_manifest_sound(&parsed))
        .unwrap();
}

#[test]
fn manifest_parse_never_panics_on_arbitrary_bytes() {
    check(CASES, prop::collection::vec(any::<u8>(), 0..512), |b| {
        parse_manifest_checked(&b)
    });
}

#[test]
fn manifest_parse_never_panics_on_arbitrary_strings() {
    check(CASES, any::<String>(), |s| {
        parse_manifest_checked(s.as_bytes())
    });
}

const MANIFEST_LINES: &[&str] = &[
    r#""format": 1,"#,
    r#""format": 3,"#,
    r#""format": -2,"#,
    r#""name": "UPPER","#,
    r#""name": "-x","#,
    r#""name": "","#,
    r#""name": "a/b","#,
    r#""guest": "..","#,
    r#""guest": "1111111111111111111111111111111111111111111111111111111111111111","#,
    r#""bundle": "ABCDEF0000000000000000000000000000000000000000000000000000000000","#,
    r#""config": null,"#,
    r#""extra": 1,"#,
    r#""components": {},"#,
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "",
];

#[test]
fn mutated_manifest_bytes_never_panic_and_accepted_ones_are_sound() {
    let base = valid_manifest().to_json();
    check(CASES, edits(MANIFEST_LINES), |edits| {
        parse_manifest_checked(&apply(&base, &edits))
    });
}

#[test]
fn mutated_manifest_values_never_panic_and_accepted_ones_are_sound() {
    let base = serde_json::to_value(valid_manifest()).unwrap();
    let strategy = (prop::collection::vec(json_edit(), 1..5), any::<bool>());
    check(CASES, strategy, |(edits, pretty)| {
        let v = apply_json(&base, &edits);
        let bytes = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        parse_manifest_checked(&bytes)
    });
}

/// Successor of the old manifest's regression (a hash accepted without the check
/// `BuildHash::parse` makes, whose `short()` then panicked): every component hash an
/// accepted manifest names is 64 lowercase hex digits.
#[test]
fn accepted_manifests_name_valid_component_hashes() {
    let base = serde_json::to_value(valid_manifest()).unwrap();
    let strategy = (
        select(vec!["guest", "bundle", "config"]),
        prop_oneof![pathish(), "[0-9a-fA-F]{60,68}", Just("0".repeat(64)),],
    );
    check(CASES, strategy, |(kind, h)| {
        let mut v = base.clone();
        v["components"][kind] = serde_json::Value::String(h.clone());
        let bytes = serde_json::to_vec(&v).unwrap();
        let accepted = Manifest::parse(&bytes, "fuzz/hash.json");
        prop_assert_eq!(
            accepted.is_ok(),
            ComponentHash::parse(&h).is_some(),
            "{:?}: {:?}",
            h,
            accepted.as_ref().err().map(|e| e.to_string())
        );
        if let Ok(m) = accepted {
            assert_accepted_manifest_sound(&m)?;
        }
        Ok(())
    });
}
