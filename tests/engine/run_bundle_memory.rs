//! `[bundle] memory`: the bundle container of a real run carries the memory limit (the default
//! when unset, the recipe's when set, with no swap beyond it), and a bad value fails the
//! recipe's load with a message naming the field and the fix, before anything is created.

use crate::support;

use std::time::Duration;

use bottle::plan::{DAEMONS_BASE_MEMORY, DEFAULT_BUNDLE_MEMORY};
use bottle::run::names::LABEL_ROLE;
use support::*;

/// A run of `recipe` held open; returns the bundle container's (Memory, MemorySwap) as the
/// engine reports them, and its memory in use at rest.
fn bundle_limits(ctx: &TestContext, recipe: &std::path::Path) -> (u64, u64, String) {
    let hash = ctx.build(recipe);
    let child = ctx.spawn(&[
        "run",
        &hash,
        "--",
        "sh",
        "-c",
        "while [ ! -f /tmp/done ]; do sleep 0.1; done",
    ]);
    let (run_id, _) = ctx.wait_live();
    let ids = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label={LABEL_STORE}={}", ctx.store_label),
        "--filter",
        &format!("label={LABEL_ROLE}=bundle"),
    ]);
    let ids = lines(&ids);
    assert_eq!(ids.len(), 1, "one bundle container: {ids:?}");
    let inspect = docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
        &ids[0],
    ]);
    let (mem, swap) = inspect.trim().split_once(' ').expect("two numbers");
    let usage = docker_ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &ids[0]]);
    let out = ctx.output(&["exec", &run_id, "--", "touch", "/tmp/done"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, _, err) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "stderr: {err}");
    ctx.assert_nothing_left();
    (
        mem.parse().unwrap(),
        swap.parse().unwrap(),
        usage.trim().to_string(),
    )
}

#[test]
fn bundle_container_gets_the_default_and_the_recipes_memory_limit() {
    let ctx = TestContext::new("run-memory");
    let (mem, swap, usage) = bundle_limits(&ctx, &ctx.recipe());
    eprintln!("bundle at rest (default limit): {usage}");
    assert_eq!(mem, DEFAULT_BUNDLE_MEMORY);
    assert_eq!(mem, 512 << 20);
    assert_eq!(swap, mem, "no swap beyond the limit");

    // Set: 300 MiB (no upstreams: the daemons alone need 64 MiB).
    let set = ctx.write_recipe(
        "set.toml",
        &recipe("run-memory", "\n[bundle]\nmemory = \"300MiB\"\n"),
    );
    let (mem, swap, usage) = bundle_limits(&ctx, &set);
    eprintln!("bundle at rest (300MiB limit): {usage}");
    assert_eq!(mem, 300 << 20);
    assert_eq!(swap, 300 << 20);
}

#[test]
fn bundle_memory_default_written_out_keeps_the_hash() {
    let ctx = TestContext::new("run-memory-hash");
    let unset = ctx.hash(&ctx.recipe());
    let same = ctx.write_recipe(
        "same.toml",
        &recipe("run-memory-hash", "\n[bundle]\nmemory = \"512MiB\"\n"),
    );
    assert_eq!(ctx.hash(&same), unset);
    let other = ctx.write_recipe(
        "other.toml",
        &recipe("run-memory-hash", "\n[bundle]\nmemory = \"1GiB\"\n"),
    );
    assert_ne!(ctx.hash(&other), unset);
}

#[test]
fn bad_bundle_memory_fails_the_load_naming_the_field_and_the_fix() {
    let ctx = TestContext::new("run-memory-bad");
    let upstream = |max: &str| {
        format!(
            "\n[[git-gate.upstreams]]\nname = \"origin\"\npath = \"/nonexistent/repo\"\nmax_push_bytes = {max}\n"
        )
    };
    // (table text, the line of the value, what the message must hold)
    let cases: Vec<(String, usize, &[&str])> = vec![
        (
            "\n[bundle]\nmemory = \"0\"\n".into(),
            15,
            &["[bundle] memory must be more than 0", "\"512MiB\""],
        ),
        (
            "\n[bundle]\nmemory = \"lots\"\n".into(),
            15,
            &[
                "[bundle] memory: \"lots\" is not a size",
                "such as \"512MiB\"",
            ],
        ),
        (
            "\n[bundle]\nmemory = \"512 parsecs\"\n".into(),
            15,
            &["unknown unit \"parsecs\"", "use B, KiB, MiB, GiB or TiB"],
        ),
        (
            "\n[bundle]\nmemory = \"16MiB\"\n".into(),
            15,
            &[
                "[bundle] memory = \"16MiB\" is too small: the daemons need 64MiB",
                "set it to at least \"64MiB\"",
            ],
        ),
        (
            format!("{}\n[bundle]\nmemory = \"256MiB\"\n", upstream("104857600")),
            20,
            &[
                "[bundle] memory = \"256MiB\" is too small: the daemons need 464MiB",
                "4 git-gate pushes of max_push_bytes = 104857600",
                "set it to at least \"464MiB\"",
            ],
        ),
        (
            upstream("1073741824"),
            17,
            &[
                "[bundle] memory is unset, and its default 512MiB is too small: the daemons need 4160MiB",
                "set [bundle] memory = \"4160MiB\" or lower max_push_bytes of upstream \"origin\"",
            ],
        ),
    ];
    assert_eq!(
        DAEMONS_BASE_MEMORY,
        64 << 20,
        "the messages above assume it"
    );
    for (i, (extra, line, want)) in cases.iter().enumerate() {
        let file = format!("bad{i}.toml");
        let path = ctx.write_recipe(&file, &recipe("run-memory-bad", extra));
        for cmd in ["hash", "run"] {
            let out = ctx.output(&[cmd, path.to_str().unwrap()]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd} {file}: {err}");
            assert!(
                err.contains(&format!("{file}:{line}:")),
                "{cmd} {file}: the message names the line: {err}"
            );
            for w in *want {
                assert!(err.contains(w), "{cmd} {file}: wants {w:?} in: {err}");
            }
        }
    }
    ctx.assert_nothing_left();
}
