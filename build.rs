//! Digests the crate's own sources into `BOTTLE_SOURCE_DIGEST`, which `hash::BUILDER` carries.
//!
//! The bundle image holds the very `bottle` binary that built it, so a build hash must change
//! whenever that binary could: every file under `src/`, `Cargo.lock`, `Cargo.toml` and this
//! script (dotfiles skipped), in sorted order, each as its `/`-separated relative path, its length
//! and its bytes; then the profile, target, rustflags and `rustc -vV`, which change the binary too.
//! Computed at compile time, so `bottle hash` never reads the executable.

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
