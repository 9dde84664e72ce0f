//! One test per bug found, each with what it was.

mod support;

use support::{BIN, TestContext, stderr};

/// `bottle run` with the default, relative store (`./cache`) handed the engine relative bind
/// mount paths, which it refuses ("mount path must be absolute"); every test used an absolute
/// temporary store, so only the README's own command showed it.
#[test]
fn run_with_a_relative_store_path_mounts_by_absolute_path() {
    let ctx = TestContext::new("relstore");
    let out = {
        let _building = ctx.building();
        std::process::Command::new(BIN)
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
            .unwrap()
    };
    let down = std::process::Command::new(BIN)
        .current_dir(ctx.dir.path())
        .args(["--store", "store", "down", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(down.status.success(), "{}", stderr(&down));
    // The entry went into the store folder named relative to the working folder.
    assert_eq!(ctx.store().hashes().unwrap().len(), 1);
    ctx.assert_nothing_left();
}
