//! Builds and hashes that fail: bad input, a recipe error, an unpinned FROM under `--pure`,
//! a smolvm pack that cannot be made, a recipe that is not UTF-8. Each error names where, and
//! the store is left as it was (or never made).

use crate::support;

use bottle::hash::{ComponentId, ComponentKind};
use support::{TestContext, base_recipe, stderr, stdout};

#[test]
fn bad_input_gives_a_located_error_and_leaves_the_store_unchanged() {
    let ctx = TestContext::with_build_recipe("bad");
    let good = ctx.build(&ctx.recipe());
    let before = ctx.snapshot();
    let base = base_recipe("bad");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed TOML",
            base.replace("backend = \"docker\"", "backend = docker\""),
            "r.toml:4:",
        ),
        (
            "unknown key",
            format!("{base}\ncolour = \"red\"\n"),
            "unknown field `colour`",
        ),
        (
            "wrong type",
            base.replace("user = \"node\"", "user = 7"),
            "r.toml:6:8",
        ),
        (
            "path outside the folder",
            base.replace("prompt = \"prompt.md\"", "prompt = \"../outside.md\""),
            "leaves the recipe's folder",
        ),
        (
            "absolute path",
            base.replace("prompt = \"prompt.md\"", "prompt = \"/etc/passwd\""),
            "leaves the recipe's folder",
        ),
        (
            "missing input file",
            base.replace("prompt = \"prompt.md\"", "prompt = \"nope.md\""),
            "does not exist",
        ),
        (
            "unpinned image reference",
            base.replace(
                "{ dockerfile = \"guest/Dockerfile\" }",
                "{ reference = \"node:22\" }",
            ),
            "is not pinned",
        ),
        (
            "token value instead of a name",
            format!(
                "{base}\n[[egress.routes]]\nhost = \"a.example\"\ntoken_env = \"sk-ant-123\"\n"
            ),
            "NAME of an environment variable",
        ),
        (
            "reserved guest env",
            base.replace("EDITOR = \"vi\"", "HTTPS_PROXY = \"http://x\""),
            "set by bottle itself",
        ),
        (
            "two image sources",
            base.replace(
                "{ dockerfile = \"guest/Dockerfile\" }",
                "{ dockerfile = \"guest/Dockerfile\", archive = \"x.tar\" }",
            ),
            "exactly one of",
        ),
    ];
    for (what, text, expect) in &cases {
        let r = ctx.write_recipe("r.toml", text);
        for cmd in ["build", "hash"] {
            let out = ctx.output(&[cmd, r.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{what}: {cmd} should fail");
            let err = stderr(&out);
            assert!(
                err.contains(expect),
                "{what}: {cmd}: expected {expect:?} in:\n{err}"
            );
            assert!(
                err.contains("r.toml:"),
                "{what}: the error names the file: {err}"
            );
            assert!(stdout(&out).is_empty(), "{what}: nothing on stdout");
        }
    }
    let _ = std::fs::remove_file(ctx.recipes.join("x.tar"));

    // Names and hash prefixes: neither a name nor hex, unknown, ambiguous.
    let out = ctx.output(&["show", "xyz"]);
    assert!(
        stderr(&out).contains("no entry named \"xyz\""),
        "{}",
        stderr(&out)
    );
    let other = if good.starts_with('0') { "1" } else { "0" };
    let out = ctx.output(&["show", other]);
    assert!(
        stderr(&out).contains("no store entry matches"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ctx.snapshot(), before, "the store changed");

    let fake = |c: char| ctx.entry_file(&format!("ab{}", c.to_string().repeat(62)));
    std::fs::write(fake('1'), "{}").unwrap();
    std::fs::write(fake('2'), "{}").unwrap();
    let out = ctx.output(&["show", "ab"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("matches 2 entries") || err.contains("matches 3 entries"),
        "{err}"
    );
    assert!(
        err.contains(&format!("ab{}", "1".repeat(62)))
            && err.contains(&format!("ab{}", "2".repeat(62))),
        "{err}"
    );
    std::fs::remove_file(fake('1')).unwrap();
    std::fs::remove_file(fake('2')).unwrap();
    assert_eq!(ctx.snapshot(), before, "the store changed");
}

#[test]
fn a_recipe_error_never_creates_a_store() {
    let ctx = TestContext::with_build_recipe("nostore");
    let r = ctx.write_recipe("r.toml", "name = \"x\"\n[guest\n");
    let out = ctx.output(&["build", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("r.toml:2:"), "{}", stderr(&out));
    assert!(!ctx.store.exists());
}

#[test]
fn unpinned_from_is_a_warning_and_refused_under_pure() {
    let ctx = TestContext::with_build_recipe("impure");
    std::fs::write(
        ctx.recipes.join("guest/Dockerfile"),
        "FROM debian:bookworm\nRUN true\n",
    )
    .unwrap();
    let r = ctx.recipe();
    let out = ctx.output(&["hash", r.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("guest/Dockerfile:1: FROM debian:bookworm names a tag"),
        "{}",
        stderr(&out)
    );
    let out = ctx.output(&["hash", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pin it as debian@sha256:DIGEST"),
        "{}",
        stderr(&out)
    );
    let out = ctx.output(&["build", "--pure", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !ctx.store.exists(),
        "a refused build leaves no store behind"
    );
}

#[test]
fn smolvm_pack_failure_is_clear_and_leaves_nothing_behind() {
    let ctx = TestContext::with_build_recipe("smolpack");
    let text = base_recipe("smolpack").replace(
        "backend = \"docker\"",
        "backend = \"smolvm\"\nstart = \"pack\"",
    );
    let r = ctx.write_recipe("r.toml", &text);
    let keys = ctx.keys(&r);
    let hash = keys["hash"].as_str().unwrap().to_string();
    let out = ctx.output(&["build", r.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pack create cannot succeed on this machine"
    );
    let err = stderr(&out);
    assert!(err.contains("smolvm pack create failed"), "{err}");
    assert!(
        err.contains("start = \"image\""),
        "the error says what to do: {err}"
    );
    assert!(!ctx.entry_file(&hash).exists());
    let guest =
        bottle::hash::ComponentHash::parse(keys["components"]["guest"].as_str().unwrap()).unwrap();
    assert!(
        !ctx.store().has_component(&ComponentId {
            kind: ComponentKind::Guest,
            hash: guest
        }),
        "no guest component without its pack"
    );
    assert!(
        ctx.temporary().is_empty(),
        "leftovers in tmp/: {:?}",
        ctx.temporary()
    );

    // The way out the error names works: a smolvm guest created from the image archive.
    let r2 = ctx.write_recipe(
        "r2.toml",
        &text.replace("start = \"pack\"", "start = \"image\""),
    );
    let h2 = ctx.build(&r2);
    let show = ctx.show(&h2);
    assert_eq!(show["guest"]["backend"], "smolvm");
    assert_eq!(show["guest"]["start"], "image");
    assert!(show["guest"]["pack"].is_null(), "{show}");
}

#[test]
fn a_recipe_that_is_not_utf8_is_refused_naming_the_file_and_byte() {
    let ctx = TestContext::with_build_recipe("latin1");
    // A Latin-1 é in a comment, and a lone continuation byte in a value further on.
    let base = base_recipe("latin1");
    let cases: Vec<(Vec<u8>, usize)> = vec![
        {
            let mut b = b"# recipe by Jos".to_vec();
            let at = b.len();
            b.push(0xe9);
            b.extend_from_slice(b"\n");
            b.extend_from_slice(base.as_bytes());
            (b, at)
        },
        {
            let text = base.replace("EDITOR = \"vi\"", "EDITOR = \"v@\"");
            let at = text.find("v@").unwrap() + 1;
            let mut b = text.into_bytes();
            b[at] = 0x80;
            (b, at)
        },
    ];
    for (bytes, at) in cases {
        let r = ctx.recipes.join("latin1.toml");
        std::fs::write(&r, &bytes).unwrap();
        for cmd in ["build", "hash"] {
            let out = ctx.output(&[cmd, r.to_str().unwrap()]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            assert!(
                err.contains(&format!(
                    "{}:{line}: not valid UTF-8 at byte {at}",
                    r.display()
                )),
                "{cmd}: expected the file, line {line} and byte {at}:\n{err}"
            );
            assert!(stdout(&out).is_empty());
        }
    }
    assert!(!ctx.store.exists(), "a refused recipe makes no store");
}
