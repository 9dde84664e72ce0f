//! The run's CA in pipelock: leaf certificates for the hosts it intercepts, minted on demand
//! and kept in a bounded cache as ready TLS server configs.
//!
//! Every leaf shares one key, made when pipelock starts (signing a leaf then costs one ECDSA
//! signature, not a key generation); each has its own random serial, a SAN of exactly the
//! host (a DNS name, or an IP address for a literal), and a validity of a day back to a year
//! ahead. The cache holds [`CACHE_LIMIT`] hosts and drops the least recently used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The most hosts whose leaf is kept.
pub const CACHE_LIMIT: usize = 512;

/// What the guest may negotiate inside an intercepted tunnel.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "cannot read the run's CA {which} {path}; `bottle run` mints it into the run's ca/ folder and mounts it"
    )]
    Read {
        which: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the run's CA {which} {path} is not a usable PEM {which}")]
    Parse {
        which: &'static str,
        path: PathBuf,
        source: rcgen::Error,
    },
    #[error("cannot make pipelock's leaf key: {0}")]
    Key(rcgen::Error),
    #[error("cannot sign a certificate for {host:?} (not a DNS name or an IP address?)")]
    Sign { host: String, source: rcgen::Error },
    #[error("cannot make a TLS server config for {host}")]
    Server { host: String, source: rustls::Error },
}

/// Mints and caches leaves signed by the run's CA.
pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    provider: Arc<CryptoProvider>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    hosts: HashMap<String, (Arc<ServerConfig>, u64)>,
    tick: u64,
}

impl Minter {
    /// Loads the CA's certificate and key (PEM files).
    pub fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Minter, MintError> {
        let read = |which, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| MintError::Read {
                which,
                path: path.to_path_buf(),
                source,
            })
        };
        let parse = |which, path: &Path| {
            let path = path.to_path_buf();
            move |source| MintError::Parse {
                which,
                path,
                source,
            }
        };
        let key_pem = read("key", key)?;
        let cert_pem = read("certificate", cert)?;
        let ca_key = KeyPair::from_pem(&key_pem).map_err(parse("key", key))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, ca_key).map_err(parse("certificate", cert))?;
        Ok(Minter {
            issuer,
            leaf_key: KeyPair::generate().map_err(MintError::Key)?,
            provider,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The TLS server config presenting a leaf for `host` (lowercased, no brackets).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, MintError> {
        if let Some(config) = self.cached(host) {
            return Ok(config);
        }
        let config = self.mint(host)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.hosts.len() >= CACHE_LIMIT {
            let oldest = cache
                .hosts
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                cache.hosts.remove(&h);
            }
        }
        cache.tick += 1;
        let tick = cache.tick;
        cache.hosts.insert(host.to_string(), (config.clone(), tick));
        Ok(config)
    }

    /// How many leaves the cache holds.
    pub fn cached_len(&self) -> usize {
        self.cache.lock().map(|c| c.hosts.len()).unwrap_or(0)
    }

    fn cached(&self, host: &str) -> Option<Arc<ServerConfig>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.tick += 1;
        let tick = cache.tick;
        let (config, used) = cache.hosts.get_mut(host)?;
        *used = tick;
        Some(config.clone())
    }

    fn mint(&self, host: &str) -> Result<Arc<ServerConfig>, MintError> {
        let sign = |source| MintError::Sign {
            host: host.to_string(),
            source,
        };
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(sign)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        params.serial_number = Some(serial(host));
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(sign)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let server = |source| MintError::Server {
            host: host.to_string(),
            source,
        };
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(server)?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
            .map_err(server)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A serial no other leaf of this CA has: 16 bytes of a hash of the host, the time, the
/// process and a counter (every leaf shares a key, so rcgen's key-derived serial would repeat).
fn serial(host: &str) -> SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(host.as_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&now.to_le_bytes());
    let mut bytes = h.finalize().as_bytes()[..16].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa};

    fn minter(dir: &Path) -> Minter {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Minter::load(&dir.join("ca.crt"), &dir.join("ca.key"), provider).unwrap()
    }

    #[test]
    fn leaves_are_cached_and_the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let m = minter(dir.path());
        let a = m.server_config("a.test").unwrap();
        let again = m.server_config("a.test").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        m.server_config("127.0.0.1").unwrap();
        for i in 0..CACHE_LIMIT + 5 {
            m.server_config(&format!("h{i}.test")).unwrap();
        }
        assert_eq!(m.cached_len(), CACHE_LIMIT);
    }

    #[test]
    fn a_missing_ca_names_the_file_and_who_makes_it() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let err = Minter::load(
            Path::new("/nonexistent/ca.crt"),
            Path::new("/nonexistent/ca.key"),
            provider,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("/nonexistent/ca.key") && err.contains("bottle run"),
            "{err}"
        );
    }

    #[test]
    fn serials_differ() {
        assert_ne!(serial("a").as_ref(), serial("a").as_ref());
    }
}
