//! One test per bug found, each with what it was.

use crate::support;

use support::{BIN, TestContext, stderr};

/// `bottle run` with a relative store path (`--store store`) handed the engine relative bind
/// mount paths, which it refuses ("mount path must be absolute"); every test used an absolute
/// temporary store, so only the README's own command (then with the default `./cache`) showed
/// it.
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

/// The same through the default store, with no `--store` and no `BOTTLE_STORE`: the person's
/// own, `$HOME/.cache/bottle` here (HOME a folder of the test, XDG_CACHE_HOME unset), run from
/// another folder. The run mounts from it, and `down --all` finds its runs.
#[test]
fn run_with_the_default_store_mounts_from_it() {
    let mut ctx = TestContext::new("defaultstore");
    let home = ctx.dir.path().join("home");
    let elsewhere = ctx.dir.path().join("elsewhere");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // The test's guard looks where bottle will keep its store.
    ctx.store = home.join(".cache/bottle");
    ctx.store_label = std::fs::canonicalize(&home)
        .unwrap()
        .join(".cache/bottle")
        .to_string_lossy()
        .into_owned();
    let bare = || {
        let mut c = ctx.cmd();
        c.current_dir(&elsewhere)
            .env_remove("BOTTLE_STORE")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", &home);
        c
    };
    let recipe = ctx.recipe();
    let out = ctx.output_of(
        bare(),
        &["run", recipe.to_str().unwrap(), "--", "sh", "-c", "exit 5"],
    );
    let down = ctx.output_of(bare(), &["down", "--all"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(
        ctx.store().hashes().unwrap().len(),
        1,
        "the entry is in $HOME/.cache/bottle"
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "bottle wrote into the working folder"
    );
    assert!(!ctx.dir.path().join("store").exists());
    ctx.assert_nothing_left();
}
