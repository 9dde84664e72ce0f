//! One store per person: with no `--store` and no `BOTTLE_STORE`, bottle keeps its store in
//! `$XDG_CACHE_HOME/bottle`, else `~/.cache/bottle`, whatever the working folder, so `bottle
//! run HASH` finds from any folder what was built or pulled.

use crate::support;

use std::process::Command;

use support::{BIN, TestContext, stderr, stdout};

/// `bottle` with no store named, in `cwd`, with only the given XDG_CACHE_HOME and HOME.
fn bare(cwd: &std::path::Path, xdg: Option<&std::path::Path>, home: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .env_remove("BOTTLE_STORE")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home)
        .arg("--no-progress");
    if let Some(x) = xdg {
        c.env("XDG_CACHE_HOME", x);
    }
    c
}

#[test]
fn the_default_store_is_per_user_not_per_folder() {
    let ctx = TestContext::new("default-store");
    let d = ctx.dir.path();
    // Both default locations lead to the test's store, so its Drop guard sees what is built.
    let (xdg, home) = (d.join("xdg"), d.join("home"));
    std::fs::create_dir_all(&xdg).unwrap();
    // The links must not dangle: bottle creates its store with create_dir_all.
    std::fs::create_dir_all(&ctx.store).unwrap();
    std::fs::create_dir_all(home.join(".cache")).unwrap();
    std::os::unix::fs::symlink(&ctx.store, xdg.join("bottle")).unwrap();
    std::os::unix::fs::symlink(&ctx.store, home.join(".cache/bottle")).unwrap();
    let (one, two) = (d.join("one"), d.join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();

    let out = {
        let _building = ctx.building();
        let mut c = bare(&one, Some(&xdg), &d.join("nohome"));
        c.args(["build", "-q", ctx.recipe().to_str().unwrap()]);
        c.output().unwrap()
    };
    ctx.scan_store();
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).trim().to_string();
    assert_eq!(
        ctx.store().hashes().unwrap().len(),
        1,
        "built into $XDG_CACHE_HOME/bottle"
    );
    assert!(!one.join("cache").exists(), "a ./cache store appeared");

    // From another folder, with XDG_CACHE_HOME unset: ~/.cache/bottle.
    let out = bare(&two, None, &home).args(["ls"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&hash[..12]), "{}", stdout(&out));
    // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
    let out = bare(&two, Some("rel".as_ref()), &home)
        .args(["ls"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains(&hash[..12]), "{}", stdout(&out));

    // BOTTLE_STORE still chooses another: an empty one here.
    let other = d.join("other");
    let out = bare(&two, Some(&xdg), &home)
        .env("BOTTLE_STORE", &other)
        .args(["ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&hash[..12]), "{}", stdout(&out));

    // Neither set: the error names the fix.
    let out = bare(&two, None, "rel".as_ref())
        .env_remove("HOME")
        .args(["ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--store"), "{}", stderr(&out));
    // … but a command that needs no store works without one.
    let out = bare(&two, None, "rel".as_ref())
        .env_remove("HOME")
        .args(["hash", ctx.recipe().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), hash);
    ctx.assert_nothing_left();
}
