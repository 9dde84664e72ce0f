//! Helpers of the share tests: keys, cache URLs, push and pull through the real binary.

use std::path::{Path, PathBuf};

use super::{TestContext, snapshot};

/// `bottle key generate NAME --out DIR`: (secret key file, public key line).
pub fn keygen(ctx: &TestContext, name: &str) -> (PathBuf, String) {
    let dir = ctx.dir.path().join("keys");
    let out = ctx.ok(&["key", "generate", name, "--out", dir.to_str().unwrap()]);
    (dir.join(format!("{name}.sec")), out.trim().to_string())
}

pub fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

pub fn push(ctx: &TestContext, hash: &str, cache: &Path, key: &Path) -> serde_json::Value {
    let out = ctx.ok(&[
        "push",
        hash,
        "--json",
        "--to",
        &url(cache),
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    serde_json::from_str(&out).unwrap()
}

pub fn pull(ctx: &TestContext, hash: &str, cache: &Path, trust: &str) -> std::process::Output {
    ctx.output(&[
        "pull",
        hash,
        "--json",
        "--from",
        &url(cache),
        "--trust",
        trust,
    ])
}

/// Every file under a folder, by relative path.
pub fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .collect()
}
