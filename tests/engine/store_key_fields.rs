//! A component's key read back from its record (`bottle verify`, `bottle run`) holds nothing
//! its types do not name. A key hashes to the component's name through its canonical JSON,
//! which a field the types ignore would not be part of: such a field would pass every check
//! while saying something the key does not mean. So every type inside a key refuses an
//! unknown field, and the refusal names it.
use crate::support;

use bottle::hash::ComponentKind;
use bottle::manifest::RECORD_FILE;
use support::{TestContext, stderr, stdout};

/// What the test adds to the key: a name no key type has.
const EXTRA: &str = "extra_field";

/// Every place in the config key holding an object of its own type (JSON pointers into the
/// key), the brief's case (`/network`) first.
const PLACES: &[&str] = &[
    "/network",
    "",
    "/guest",
    "/pipelock",
    "/pipelock/dlp_rules/0",
    "/egress",
    "/git_gate",
    "/git_gate/upstreams/0",
    "/supervise",
    "/provision",
];

fn recipe(name: &str) -> String {
    support::recipe(
        name,
        r#"dlp_rules = [{ id = "acme-key", regex = "acme_[a-z0-9]{32}" }]

[network]
hosts = { "api.internal.test" = "10.0.0.5" }

[[git-gate.upstreams]]
name = "origin"
path = "~/src/project"

[supervise]
enabled = true
"#,
    )
}

#[test]
fn verify_and_run_refuse_a_config_key_with_a_field_it_does_not_know() {
    let ctx = TestContext::new("key-fields");
    ctx.write_recipe("r.toml", &recipe("key-fields"));
    let hash = ctx.build(&ctx.recipe());
    let record_path = ctx
        .component_dir(&hash, ComponentKind::Config)
        .join(RECORD_FILE);
    let original = std::fs::read_to_string(&record_path).unwrap();
    let with_extra = |place: &str| {
        let mut record: serde_json::Value = serde_json::from_str(&original).unwrap();
        let at = record["key"]
            .pointer_mut(place)
            .and_then(|v| v.as_object_mut())
            .unwrap_or_else(|| panic!("the key has an object at {place:?}: {original}"));
        at.insert(EXTRA.into(), 1.into());
        serde_json::to_vec(&record).unwrap()
    };
    for place in PLACES {
        std::fs::write(&record_path, with_extra(place)).unwrap();
        let out = ctx.output(&["verify", &hash]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !out.status.success(),
            "verify accepted {EXTRA} at {place:?}: {said}"
        );
        assert!(
            said.contains(&format!("unknown field `{EXTRA}`")),
            "verify's refusal of {EXTRA} at {place:?} does not name it: {said}"
        );
    }
    // A run refuses it too, before creating anything.
    std::fs::write(&record_path, with_extra("/network")).unwrap();
    let out = ctx.output(&["run", &hash, "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("unknown field `{EXTRA}`")), "{err}");
    ctx.assert_nothing_left();
    // The record as built passes: the refusals were the field's.
    std::fs::write(&record_path, &original).unwrap();
    let out = ctx.output(&["verify", &hash]);
    assert!(out.status.success(), "{}", stderr(&out));
}
