//! The config component: what its key renders (`crate::config::render`), written out, and
//! the provisioning files copied from the recipe's folder, each checked against the digest
//! the key holds, so the component is exactly what its name describes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::{self, paths};
use crate::digest::{Digest, HashingWriter};
use crate::hash::ConfigKey;
use crate::plan::Planned;

/// Writes the config component of `key` into `dir`.
pub fn build(key: &ConfigKey, planned: &Planned, dir: &Path) -> Result<()> {
    for f in config::render(key).files {
        crate::files::write_new(&dir.join(&f.path), &f.bytes, f.mode)?;
    }
    let p = &planned.plan.provision;
    if let (Some(rel), Some(digest)) = (&p.prompt, key.provision.prompt) {
        copy_checked(
            &planned.host_path(rel),
            &dir.join(paths::PROMPT),
            digest,
            rel,
        )?;
    }
    if let (Some(rel), Some(files)) = (&p.skills, &key.provision.skills) {
        for (inside, d) in files {
            let Some(digest) = d.file_digest() else {
                continue;
            };
            let src_rel = format!("{rel}/{inside}");
            let dest = dir.join(paths::SKILLS).join(inside);
            copy_checked(&planned.host_path(&src_rel), &dest, digest, &src_rel)?;
        }
    }
    for (guest, rel) in &p.files {
        if let Some(digest) = key.provision.files.get(guest) {
            let dest = dir.join(paths::FILES).join(guest);
            copy_checked(&planned.host_path(rel), &dest, *digest, rel)?;
        }
    }
    for (route, planned_route) in key.egress.routes.iter().zip(&planned.plan.egress.routes) {
        if let (Some(digest), Some(rel)) = (route.upstream_ca, &planned_route.upstream_ca) {
            copy_checked(
                &planned.host_path(rel),
                &dir.join(crate::daemons::egress::upstream_ca_file(&route.host)),
                digest,
                rel,
            )?;
        }
    }
    Ok(())
}

/// Copies a recipe file into the component (mode 0644), checking it still has the content
/// the key was computed from.
fn copy_checked(src: &Path, dest: &Path, digest: Digest, rel: &str) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut from =
        std::fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut w = HashingWriter::new(to);
    std::io::copy(&mut from, &mut w).with_context(|| format!("cannot copy {}", src.display()))?;
    let (got, _, file) = w.finish();
    if got != digest {
        bail!("input {rel} changed after it was hashed; run the build again");
    }
    file.sync_all()?;
    std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(())
}
