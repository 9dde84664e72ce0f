//! The run's certificate authorities, minted with rcgen on the machine that runs, per run.
//!
//! Per run, not per entry or per machine: the key lives only as long as the run (in
//! `runs/RUNID/ca/`, a folder of mode 0700, keys mode 0600, removed at teardown), so a CA that
//! leaks from one run cannot intercept another run's guest, no key outlives its use, and an
//! entry built or pulled from elsewhere needs nothing but this machine to run. Minting one
//! costs about a millisecond. The guest learns its CA at provisioning (trust store, and the
//! trust trio `NODE_EXTRA_CA_CERTS`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` pointing at it).
//!
//! One CA per run: pipelock's, which signs the leaf certificates of the hosts it intercepts
//! (egress is a stage of pipelock, so it needs none of its own). No CA is ever part of a
//! component or a hash.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::config::ca_files;
use crate::files::write_new;

/// Mints the run's CA into `dir` (created with mode 0700): pipelock's, which signs the
/// certificates of the hosts it intercepts. `name` is the entry's, for the subject.
pub fn mint_run_cas(dir: &Path, name: &str) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the run's CA folder {}", dir.display()))?;
    mint(
        dir,
        ca_files::PIPELOCK_CERT,
        ca_files::PIPELOCK_KEY,
        &format!("bottle {name} pipelock CA"),
    )?;
    Ok(())
}

/// Writes a CA's certificate (0644) and private key (0600) whose subject is `cn`.
fn mint(dir: &Path, cert_file: &str, key_file: &str, cn: &str) -> Result<()> {
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
    write_new(&dir.join(key_file), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&dir.join(cert_file), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_certs_public() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        mint_run_cas(&ca, "demo").unwrap();
        let mode = |f: &str| std::fs::metadata(ca.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(ca_files::PIPELOCK_KEY), 0o600);
        assert_eq!(mode(ca_files::PIPELOCK_CERT), 0o644);
        assert_eq!(
            std::fs::metadata(&ca).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let other = dir.path().join("other");
        mint_run_cas(&other, "demo").unwrap();
        assert_ne!(
            std::fs::read(ca.join(ca_files::PIPELOCK_KEY)).unwrap(),
            std::fs::read(other.join(ca_files::PIPELOCK_KEY)).unwrap(),
            "each run mints its own key"
        );
    }
}
