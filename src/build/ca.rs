//! The bottle's certificate authorities, minted with rcgen.
//!
//! pipelock's CA always exists (it intercepts the guest's TLS); egress's only when the recipe
//! declares routes. The certificate is public (mode 0644); the private key is a machine-local
//! secret (mode 0600), marked so in the manifest and never pushed to a remote cache.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// Writes `DIR/NAME.crt` (0644) and `DIR/NAME.key` (0600) for a CA whose subject is `cn`.
pub fn mint(dir: &Path, name: &str, cn: &str) -> Result<()> {
    let key = KeyPair::generate().context("cannot generate a CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bottle");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    write_mode(
        &dir.join(format!("{name}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_mode(
        &dir.join(format!("{name}.crt")),
        cert.pem().as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Creates `path` with `mode` from the start (a key is never readable by others, not even
/// for a moment), writes and syncs it.
pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    // The umask may have cleared bits we asked for; set them exactly.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    Ok(())
}
