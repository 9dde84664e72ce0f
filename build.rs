//! Digests the crate's own sources into `BOTTLE_SOURCE_DIGEST`, which `hash::BUILDER` carries.
//!
//! The bundle image holds the very `bottle` binary that built it, so a build hash must change
//! whenever that binary could: every file under `src/`, `Cargo.lock`, `Cargo.toml` and this
//! script (dotfiles skipped), in sorted order, each as its `/`-separated relative path, its length
//! and its bytes; then the profile, target, rustflags and `rustc -vV`, which change the binary too.
//! Computed at compile time, so `bottle hash` never reads the executable.
//!
//! Also `BOTTLE_GIT_COMMIT` for `--version`: `git rev-parse --short HEAD`, with `-dirty` when
//! tracked files differ from it, or `unknown` outside a git checkout (a crate tarball). The
//! string is in the binary, so it goes into the digest too: two binaries that differ by it
//! are two bundles.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut files = Vec::new();
    walk(&root, Path::new("src"), &mut files);
    for f in ["Cargo.lock", "Cargo.toml", "build.rs"] {
        if root.join(f).is_file() {
            files.push(f.to_string());
        }
    }
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for rel in &files {
        let bytes = std::fs::read(root.join(rel))
            .unwrap_or_else(|e| panic!("build.rs cannot read {rel}: {e}"));
        hasher.update(&(rel.len() as u64).to_le_bytes());
        hasher.update(rel.as_bytes());
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    // The same sources make a different binary under another profile, compiler or flags.
    for var in [
        "PROFILE",
        "TARGET",
        "OPT_LEVEL",
        "DEBUG",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        let v = std::env::var(var).unwrap_or_default();
        hasher.update(&(v.len() as u64).to_le_bytes());
        hasher.update(v.as_bytes());
    }
    let commit = git_commit(&root);
    hasher.update(&(commit.len() as u64).to_le_bytes());
    hasher.update(commit.as_bytes());
    println!("cargo:rustc-env=BOTTLE_GIT_COMMIT={commit}");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if let Ok(out) = std::process::Command::new(rustc).arg("-vV").output() {
        hasher.update(&out.stdout);
    }
    println!(
        "cargo:rustc-env=BOTTLE_SOURCE_DIGEST={}",
        hasher.finalize().to_hex()
    );
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The short commit of the checkout at `root`, `-dirty` when its tracked files changed, or
/// `unknown` when git or the checkout is missing. Asks cargo to run this script again when
/// HEAD, the branch it names or the index moves.
fn git_commit(root: &Path) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(short) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|s| !s.is_empty()) else {
        return "unknown".to_string();
    };
    for (dir_arg, file) in [
        ("--git-dir", "HEAD"),
        ("--git-dir", "index"),
        ("--git-common-dir", "packed-refs"),
    ] {
        if let Some(dir) = git(&["rev-parse", dir_arg]) {
            watch(&root.join(dir).join(file));
        }
    }
    if let (Some(dir), Some(branch)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch(&root.join(dir).join(branch));
    }
    // --no-optional-locks: a status that refreshed the index would rewrite it, and so make
    // cargo run this script again next time.
    let dirty = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{short}-dirty")
    } else {
        short
    }
}

/// Runs this script again when `path` changes (a path that does not exist is not watched:
/// cargo would run the script on every build).
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Every regular file below `rel` (symlinks followed as cargo compiles them), as
/// `/`-separated paths relative to `root`; editors' swap and lock files (dotfiles) skipped.
fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
    let walker = walkdir::WalkDir::new(root.join(rel))
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for ent in walker {
        let ent = ent.unwrap_or_else(|e| panic!("build.rs cannot read the sources: {e}"));
        if !ent.file_type().is_file() {
            continue;
        }
        let parts: Vec<String> = ent
            .path()
            .strip_prefix(root)
            .expect("below the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        out.push(parts.join("/"));
    }
}
