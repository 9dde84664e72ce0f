//! The TLS of `https://` caches: rustls with ring, verified against the public roots
//! compiled into bottle, plus the CAs of `BOTTLE_CACHE_CA_FILE` (a PEM bundle), for a cache
//! behind a private CA; HTTP/1.1 only. [`super::http`] hands this configuration to its
//! client; `http://` URLs stay plain.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The variable naming extra CAs for `https://` caches.
pub const CA_ENV: &str = "BOTTLE_CACHE_CA_FILE";

/// The client's TLS configuration, or why it cannot be made (a CA file unreadable, or with
/// no CA certificate in it).
pub fn client_config() -> Result<ClientConfig, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = std::env::var_os(CA_ENV) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{CA_ENV}={}: {e}", path.to_string_lossy()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "{CA_ENV}={}: no CA certificate in it",
                path.to_string_lossy()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
