//! Recipes: `Recipe::parse` on arbitrary, TOML-ish, schema-shaped and mutated text (a
//! recipe or an error located inside the input), twins (`extends`) and their bases, and
//! `plan::plan` on whatever the parser accepts (never a panic, every path inside the folder).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{TestCaseError, TestRunner};

use bottle::manifest::is_entry_path;
use bottle::plan::{self, ImagePlan};
use bottle::recipe::{Recipe, RecipeError};

use super::{CASES, Edit, VALID_RECIPE, apply, check, edits, recipe_dir};

/// Whole lines the line mutations insert: valid keys with values that stress the plan
/// (escaping paths, a symlink out of the folder, wrong kinds, fixed env names), headers, junk.
const RECIPE_LINES: &[&str] = &[
    r#"image = { archive = "../outside.tar" }"#,
    r#"image = { archive = "/etc/passwd" }"#,
    r#"image = { archive = "escape/etc/passwd" }"#,
    r#"image = { archive = "inside.tar" }"#,
    r#"image = { archive = "skills/../image.tar" }"#,
    r#"image = { archive = "./image.tar/" }"#,
    r#"image = { archive = "image.tar", context = "." }"#,
    r#"image = { dockerfile = "Dockerfile" }"#,
    r#"image = { dockerfile = "Dockerfile", context = "" }"#,
    r#"image = { dockerfile = "Dockerfile", context = ".." }"#,
    r#"image = { reference = "node@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#,
    r#"image = { reference = "node:20" }"#,
    r#"image = {}"#,
    r#"backend = "smolvm""#,
    r#"start = "image""#,
    r#"start = "pack""#,
    r#"home = "/""#,
    r#"home = "/home/../etc""#,
    r#"user = """#,
    r#"user = "root""#,
    r#"command = []"#,
    r#"env = { HOME = "/x" }"#,
    r#"env = { "1X" = "y" }"#,
    "env = { X = \"a\\u0000b\" }",
    r#"prompt = "skills""#,
    r#"prompt = "escape/etc/hostname""#,
    r#"skills = "prompt.md""#,
    r#"skills = ".""#,
    r#"skills = """#,
    r#"skills = "escape""#,
    r#"name = "UPPER""#,
    r#"name = "-x""#,
    r#"name = "é""#,
    r#"host = "*.example.com""#,
    r#"host = "https://example.com/""#,
    r#"token_env = "sk-ant-123""#,
    r#"header = "bad header""#,
    r#"identity = " ""#,
    r#"url = """#,
    r#"allow = ["https://x/", "ÄÖ.example"]"#,
    r#"dlp = "yes""#,
    r#"colour = 1"#,
    r#""é" = "ü""#,
    "[guest]",
    "[guest.env]",
    "[guest.image]",
    "[pipelock]",
    "[[egress.routes]]",
    "[[git-gate.upstreams]]",
    "[provision]",
    "[supervise]",
    "enabled = 1",
    "[[guest]]",
    "x = \"\"\"",
    "x = '''",
    "\"\"\"",
    "a.b.c = 1",
    "= 1",
    "[",
    "]",
    "\t",
    "\r",
    "",
];

/// Values for string literals: paths (good, escaping, through the symlink out), names, hosts.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "image.tar", "inside.tar", "prompt.md", "skills", "skills/git", "Dockerfile", ".",
            "", "..", "../image.tar", "escape", "escape/etc/passwd", "escape/tmp", "/tmp",
            "skills/../prompt.md", "./image.tar", "image.tar/", "skills/git/SKILL.md",
            "docker", "smolvm", "pack", "image", "node", "root", "/home/node", "/", "/home/../",
            "example.com", "*.example.com", "*.", "*", "API_TOKEN", "x-api-key", "Bearer",
            "HOME", "1X", "fuzz-demo", "-x", r"a\u0000b", "é", "node@sha256:abc",
        ])
        .prop_map(str::to_string),
        2 => "[ -~]{0,16}",
        1 => any::<String>(),
    ]
}

/// Edits that mostly keep the TOML well-formed, so the plan sees many variants.
fn plan_edits() -> impl Strategy<Value = Vec<Edit>> {
    let line = || select(RECIPE_LINES).prop_map(str::to_string);
    let one = prop_oneof![
        6 => (any::<Index>(), string_value()).prop_map(|(i, s)| Edit::ReplaceString(i, s)),
        2 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::InsertLine(i, l)),
        2 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::ReplaceLine(i, l)),
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ];
    prop::collection::vec(one, 1..4)
}

/// Text that looks a little like TOML: its punctuation, keys of the schema, newlines.
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => "[\\[\\]{}=,.\"'#\\\\ \t\n0-9a-z_-]{1,6}",
            1 => select(vec![
                "name", "guest", "backend", "image", "archive", "dockerfile", "command", "env",
                "pipelock", "egress.routes", "git-gate", "provision", "true", "1979-05-27",
                "\"\"\"", "'''", "\\u00e9", "\\U0001F600", "é", "💥", "\r\n", "inf", "nan",
            ])
            .prop_map(str::to_string),
            1 => any::<String>(),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

// ---------------------------------------------------------------------------------------------
// Recipe checks

/// A located error names the file, and a line and column inside `source` (the column may be
/// one past the line's last character), and prints as `FILE:LINE:COL: message`.
fn assert_located(err: &RecipeError, path: &Path, source: &str) -> Result<(), TestCaseError> {
    let RecipeError::At {
        path: p,
        line,
        col,
        message,
    } = err
    else {
        return Err(TestCaseError::fail(format!(
            "expected a located error, got {err}"
        )));
    };
    prop_assert_eq!(p.as_path(), path);
    let lines: Vec<&str> = source.split('\n').collect();
    prop_assert!(
        *line >= 1 && *line <= lines.len(),
        "line {} outside 1..={} in {:?}",
        line,
        lines.len(),
        err.to_string()
    );
    let width = lines[line - 1].chars().count();
    prop_assert!(
        *col >= 1 && *col <= width + 1,
        "column {} outside 1..={} of line {} in {:?}",
        col,
        width + 1,
        line,
        err.to_string()
    );
    prop_assert!(
        !message.trim().is_empty(),
        "empty message: {:?}",
        err.to_string()
    );
    prop_assert_eq!(
        err.to_string(),
        format!("{}:{}:{}: {}", path.display(), line, col, message)
    );
    Ok(())
}

/// Every path of an accepted plan is relative, normalized, and leads (after symlinks) to a
/// place inside the recipe's folder.
fn assert_plan_paths_inside(planned: &plan::Planned) -> Result<(), TestCaseError> {
    let p = &planned.plan;
    let mut paths: Vec<&str> = Vec::new();
    match &p.guest.image {
        ImagePlan::Dockerfile {
            dockerfile,
            context,
        } => paths.extend([dockerfile.as_str(), context.as_str()]),
        ImagePlan::Archive { archive } => paths.push(archive),
        ImagePlan::Reference { .. } => {}
    }
    paths.extend(p.provision.prompt.as_deref());
    paths.extend(p.provision.skills.as_deref());
    let root = std::fs::canonicalize(&planned.root).unwrap();
    for rel in paths {
        prop_assert!(
            rel.is_empty() || is_entry_path(rel),
            "plan path {:?} is not a normalized relative path",
            rel
        );
        let real = std::fs::canonicalize(planned.host_path(rel))
            .map_err(|e| TestCaseError::fail(format!("plan path {rel:?} does not exist: {e}")))?;
        prop_assert!(
            real.starts_with(&root),
            "plan path {:?} leads to {} outside {}",
            rel,
            real.display(),
            root.display()
        );
    }
    Ok(())
}

/// Parses `source` as the recipe at `path`; checks the result is a recipe or a located error.
fn parse_checked(path: &Path, source: &str) -> Result<Option<Recipe>, TestCaseError> {
    match Recipe::parse(path, source.to_string()) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            assert_located(&e, path, source)?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe properties

#[test]
fn valid_fuzz_recipe_parses_and_plans() {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    let recipe = Recipe::parse(&path, VALID_RECIPE.to_string()).expect("the base recipe parses");
    let planned = plan::plan(&recipe).expect("the base recipe plans");
    assert_eq!(
        planned.plan.guest.image,
        ImagePlan::Archive {
            archive: "image.tar".into()
        }
    );
    assert_eq!(planned.plan.provision.skills.as_deref(), Some("skills"));
    TestRunner::default()
        .run(&Just(()), |()| assert_plan_paths_inside(&planned))
        .unwrap();
}

#[test]
fn recipe_parse_never_panics_on_arbitrary_strings() {
    let path = PathBuf::from("fuzz/any.toml");
    check(CASES, any::<String>(), |s| {
        parse_checked(&path, &s)?;
        Ok(())
    });
}

#[test]
fn recipe_parse_never_panics_on_arbitrary_bytes_read_lossily() {
    let path = PathBuf::from("fuzz/bytes.toml");
    check(CASES, prop::collection::vec(any::<u8>(), 0..256), |b| {
        parse_checked(&path, &String::from_utf8_lossy(&b))?;
        Ok(())
    });
}

#[test]
fn recipe_errors_on_tomlish_text_point_inside_the_input() {
    let path = PathBuf::from("recipes/tomlish.toml");
    check(CASES, tomlish(), |s| {
        parse_checked(&path, &s)?;
        Ok(())
    });
}

#[test]
fn recipe_errors_on_schema_shaped_text_point_inside_the_input() {
    // Valid TOML with the schema's keys but random shapes and values: errors come from serde's
    // deserializer (spans of values), not only from the TOML syntax.
    let value = prop_oneof![
        Just("1".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[\"sh\"]".to_string()),
        Just("{ archive = \"image.tar\" }".to_string()),
        "\"[a-zé ./*-]{0,12}\"",
    ];
    let key = select(vec![
        "name",
        "backend",
        "image",
        "user",
        "home",
        "command",
        "env",
        "start",
        "allow",
        "dlp",
        "host",
        "token_env",
        "enabled",
        "prompt",
        "skills",
        "colour",
    ]);
    let table = select(vec![
        "",
        "[guest]",
        "[pipelock]",
        "[[egress.routes]]",
        "[provision]",
        "[supervise]",
        "[guest.image]",
    ]);
    let entry = (table, key, value).prop_map(|(t, k, v)| format!("{t}\n{k} = {v}"));
    let path = PathBuf::from("recipes/shaped.toml");
    check(CASES, prop::collection::vec(entry, 0..8), |entries| {
        parse_checked(&path, &entries.join("\n"))?;
        Ok(())
    });
}

#[test]
fn twins_load_or_give_errors_located_in_the_twin_or_its_base() {
    // A twin (`extends`) beside a valid base: arbitrary shapes for its keys and values, and
    // mutations of the base. Each load is a recipe or an error located in the file it names.
    let dir = recipe_dir();
    let base = dir.path().join("base.toml");
    let twin = dir.path().join("twin.toml");
    let value = prop_oneof![
        Just("1".to_string()),
        Just("\"base.toml\"".to_string()),
        Just("\"twin.toml\"".to_string()),
        Just("\"../base.toml\"".to_string()),
        Just("\"docker\"".to_string()),
        Just("\"smolvm\"".to_string()),
        "\"[a-zé ./*-]{0,12}\"",
    ];
    let key = select(vec!["extends", "name", "backend", "start", "colour"]);
    let table = select(vec!["", "[guest]", "[pipelock]"]);
    let entry = (table, key, value).prop_map(|(t, k, v)| format!("{t}\n{k} = {v}"));
    let twins = prop::collection::vec(entry, 0..6)
        .prop_map(|e| format!("extends = \"base.toml\"\nname = \"t\"\n{}", e.join("\n")));
    check(CASES, (twins, edits(RECIPE_LINES)), |(twin_text, edits)| {
        let base_text =
            String::from_utf8_lossy(&apply(VALID_RECIPE.as_bytes(), &edits)).into_owned();
        std::fs::write(&base, &base_text).unwrap();
        std::fs::write(&twin, &twin_text).unwrap();
        match Recipe::load(&twin) {
            Ok(r) => prop_assert_eq!(r.path.as_path(), base.as_path()),
            Err(e @ RecipeError::At { .. }) => {
                let at_twin = matches!(&e, RecipeError::At { path, .. } if path == &twin);
                if at_twin {
                    assert_located(&e, &twin, &twin_text)?;
                } else {
                    assert_located(&e, &base, &base_text)?;
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("not located: {e}"))),
        }
        Ok(())
    });
}

#[test]
fn mutated_recipes_parse_or_give_located_errors() {
    let path = PathBuf::from("recipes/mutant.toml");
    check(CASES, edits(RECIPE_LINES), |edits| {
        let text = String::from_utf8_lossy(&apply(VALID_RECIPE.as_bytes(), &edits)).into_owned();
        parse_checked(&path, &text)?;
        Ok(())
    });
}

#[test]
fn planning_mutated_recipes_never_panics_and_keeps_paths_inside() {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    // The base recipe with its guest's backend and image swapped for one of these lines, so
    // every image kind (and the escaping ones) reaches the plan.
    let images: Vec<&str> = RECIPE_LINES
        .iter()
        .copied()
        .filter(|l| l.starts_with("image = "))
        .collect();
    let backends = vec![
        r#"backend = "docker""#,
        "backend = \"smolvm\"",
        "backend = \"smolvm\"\nstart = \"image\"",
        "backend = \"docker\"\nstart = \"pack\"",
    ];
    let strategy = (
        select(backends),
        select(images),
        prop_oneof![1 => edits(RECIPE_LINES), 3 => plan_edits()],
    );
    check(CASES, strategy, |(backend, image, edits)| {
        let base = VALID_RECIPE
            .replace(r#"backend = "docker""#, backend)
            .replace(r#"image = { archive = "image.tar" }"#, image);
        let text = String::from_utf8_lossy(&apply(base.as_bytes(), &edits)).into_owned();
        let Some(recipe) = parse_checked(&path, &text)? else {
            return Ok(());
        };
        match plan::plan(&recipe) {
            Ok(planned) => assert_plan_paths_inside(&planned)?,
            Err(e) => assert_located(&e, &path, &text)?,
        }
        Ok(())
    });
}
