//! One test per bug found, each with what it was.

mod common;

use common::{Ctx, stderr};

/// `bottle run` with the default, relative store (`./cache`) handed the engine relative bind
/// mount paths, which it refuses ("mount path must be absolute"); every test used an absolute
/// temporary store, so only the README's own command showed it.
#[test]
fn run_with_a_relative_store_path_mounts_by_absolute_path() {
    let ctx = Ctx::new("relstore");
    let out = std::process::Command::new(common::BIN)
        .current_dir(ctx.dir.path())
        .env_remove("BOTTLE_STORE")
        .args([
            "--no-progress",
            "--store",
            "store",
            "run",
            "recipes/r.toml",
            "--",
            "sh",
            "-c",
            "exit 5",
        ])
        .output()
        .unwrap();
    let down = std::process::Command::new(common::BIN)
        .current_dir(ctx.dir.path())
        .args(["--store", "store", "down", "--all"])
        .output()
        .unwrap();
    let hash = std::fs::read_dir(ctx.store.join("v1/builds"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    ctx.remember(&hash.file_name().to_string_lossy());
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(down.status.success(), "{}", stderr(&down));
}
